#!/usr/bin/env bash
# Build fsmfast's manylinux wheels for this machine's architecture (x86_64 here), one per CPython found,
# without Docker. Each is repaired by auditwheel and checked; see wheels/README.md for what they support.
#
#   wheels/build_host.sh [--python PY]... [--out DIR] [--src DIR] [--smoke]
#
#   --python PY  build for this interpreter (repeatable). Default: every CPython 3.10-3.13 found, one per
#                minor version: pyenv's versions first, then python3.1X on PATH (Debian 12 has only 3.11).
#   --out DIR    output directory (default: wheels/dist in the checkout)
#   --src DIR    build this source tree (e.g. an unpacked sdist or `git archive`) instead of the checkout's
#                work tree (its tracked and untracked, not ignored, files)
#   --smoke      also run wheels/smoke_test.sh on each wheel (fresh venv, `fsmfast check`, one proxied request)
#
# On Debian it installs what is missing (gcc, libc6-dev, and the python3.X-dev/-venv of Debian interpreters)
# with one apt-get update. Build venvs are cached under ~/.cache/fsmfast (FSMFAST_CACHE_DIR). Wheels are built
# one after another: no parallel builds.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=wheels/_lib.sh
source "$here/_lib.sh"
root=$(fsmfast_repo_root)

pythons=()
out="$root/wheels/dist"
smoke=0
src_arg=""
while [ "$#" -gt 0 ]; do
    case "$1" in
    --python) pythons+=("${2:?--python needs a value}"); shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --src) src_arg=${2:?--src needs a value}; shift 2 ;;
    --smoke) smoke=1; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

# --- interpreters ---------------------------------------------------------------------------------------------
# A pyenv shim named python3.12 exists even when 3.12 is not selected, and then fails: run each candidate.
works() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1; }
if [ "${#pythons[@]}" -eq 0 ]; then
    pyenv_root=""
    if command -v pyenv >/dev/null 2>&1; then
        pyenv_root=$(pyenv root 2>/dev/null || true)
    fi
    for minor in 10 11 12 13; do
        found=""
        if [ -n "$pyenv_root" ]; then
            # The newest patch release of 3.<minor> that pyenv has (sort -V), free-threaded builds excluded.
            for cand in $(printf '%s\n' "$pyenv_root"/versions/3."$minor".* | grep -v -e 't$' -e '\*$' | sort -V -r); do
                if works "$cand/bin/python3.$minor"; then
                    found="$cand/bin/python3.$minor"
                    break
                fi
            done
        fi
        if [ -z "$found" ]; then
            for cand in "/usr/bin/python3.$minor" "$(command -v "python3.$minor" 2>/dev/null || true)"; do
                if [ -n "$cand" ] && [ -x "$cand" ] && works "$cand"; then
                    found=$cand
                    break
                fi
            done
        fi
        [ -n "$found" ] && pythons+=("$found")
    done
    if [ "${#pythons[@]}" -eq 0 ]; then
        works python3 || fsmfast_apt_install python3
        pythons=("$(command -v python3)")
    fi
fi
say "interpreters: ${pythons[*]}"

# --- Debian packages that are missing ------------------------------------------------------------------------
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
for py in "${pythons[@]}"; do
    works "$py" || die "$py is not a working CPython >= 3.10"
    real=$(readlink -f "$(command -v "$py")")
    ver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if ! "$py" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
        case "$real" in
        /usr/bin/*) missing+=("python$ver-dev") ;;
        *) die "$py has no Python.h; install its headers" ;;
        esac
    fi
    if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        case "$real" in
        /usr/bin/*) missing+=("python$ver-venv") ;;
        *) die "$py cannot create venvs (no ensurepip)" ;;
        esac
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    fsmfast_apt_install "${missing[@]}"
fi

# --- build, one interpreter at a time ------------------------------------------------------------------------
mkdir -p "$out"
src=$(mktemp -d "${TMPDIR:-/tmp}/fsmfast-src.XXXXXX")
trap 'rm -rf "$src"' EXIT
if [ -n "$src_arg" ]; then
    [ -f "$src_arg/pyproject.toml" ] || die "--src $src_arg has no pyproject.toml"
    cp -a "$src_arg/." "$src/tree/"
else
    fsmfast_export_source "$src/tree"
fi

built=()
for py in "${pythons[@]}"; do
    built+=("$(bash "$here/build_wheel.sh" --python "$py" --src "$src/tree" --out "$out")")
done

if [ "$smoke" -eq 1 ]; then
    for i in "${!built[@]}"; do
        bash "$here/smoke_test.sh" --python "${pythons[$i]}" --wheel "${built[$i]}" \
            --manifests "$src/tree/tests/manifests/founding" >&2
    done
fi

say "done; wheels in $out:"
for w in "${built[@]}"; do
    printf '  %-80s %s\n' "$(basename "$w")" "$(fsmfast_size "$w")" >&2
done
# stdout: one wheel path per line, for callers.
printf '%s\n' "${built[@]}"
