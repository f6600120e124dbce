#!/usr/bin/env bash
# Smoke-test one built wheel the way a user installs it: a fresh venv, `pip install --only-binary=:all:
# fsmfast-*.whl` (binary dependencies only: nothing is compiled), then
#   1. import: the compiled fsmfast._parser and the compiled .py modules are the ones in use, and platform.machine() is printed;
#   2. `fsmfast check` on tests/manifests/founding, its ${UPSTREAM_PORT} placeholder replaced by a port;
#   3. `fsmfast run` on the same manifests (listener moved to a free port) in front of a plain-HTTP upstream
#      (`python3 -m http.server`), and one request through it with Host: foo.example.com -> 200, upstream body.
#
#   wheels/smoke_test.sh --wheel WHEEL [--python PY] [--manifests DIR]
#
# Runs anywhere the wheel's platform runs: build_aarch64.sh runs it inside the arm64 chroot. Only loopback
# addresses are used. Exit status 0 means all three passed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=wheels/_lib.sh
source "$here/_lib.sh"

wheel=""
python=python3
manifests="$here/../tests/manifests/founding"
while [ "$#" -gt 0 ]; do
    case "$1" in
    --wheel) wheel=${2:?--wheel needs a value}; shift 2 ;;
    --python) python=${2:?--python needs a value}; shift 2 ;;
    --manifests) manifests=${2:?--manifests needs a value}; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ -f "$wheel" ] || die "no wheel at '$wheel' (--wheel)"
[ -f "$manifests/service.yaml" ] || die "no founding manifests in $manifests"
wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")
manifests=$(cd "$manifests" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fsmfast-smoke.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        # Each background process leads its own session (setsid): end its whole group.
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    sleep 1
    for pid in "${pids[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
# Run from an empty directory with no PYTHONPATH: only the installed wheel can be imported.
cd "$tmp"
unset PYTHONPATH FSMFAST_NO_EXTENSIONS

say "smoke: fresh venv with $python, pip install $(basename "$wheel")"
"$python" -m venv "$tmp/venv"
start=$(date +%s)
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: "$wheel"
say "smoke: installed in $(($(date +%s) - start)) s"
vpy="$tmp/venv/bin/python"
fsmfast="$tmp/venv/bin/fsmfast"

say "smoke: import"
"$vpy" - <<'EOF'
import platform, sys
import fsmfast, fsmfast._accel, fsmfast._parser
assert fsmfast._accel.USING_EXTENSION, "fsmfast is not using its compiled fsmfast._parser"
from fsmfast._compiled import COMPILED, compiled_modules
assert compiled_modules() == COMPILED, f"compiled: {compiled_modules()} of {COMPILED}"
assert fsmfast.__file__.startswith(sys.prefix), fsmfast.__file__
print(f"import ok: fsmfast {fsmfast.__version__} on {platform.machine()}, CPython {platform.python_version()}, "
      f"extension {fsmfast._parser.__file__.rsplit('/', 1)[-1]}")
EOF

free_port() { "$vpy" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
upstream_port=$(free_port)
gateway_port=$(free_port)

say "smoke: fsmfast check on the founding manifests (\${UPSTREAM_PORT} = $upstream_port)"
mkdir "$tmp/check"
for f in "$manifests"/*.yaml; do
    sed "s/\${UPSTREAM_PORT}/$upstream_port/g" "$f" >"$tmp/check/$(basename "$f")"
done
"$fsmfast" check -c "$tmp/check"

say "smoke: fsmfast run on 127.0.0.1:$gateway_port in front of python3 -m http.server on 127.0.0.1:$upstream_port"
mkdir "$tmp/run" "$tmp/www"
for f in "$tmp"/check/*.yaml; do
    # The listener (and the route's parentRef) move from the manifests' port 8000 to a free one.
    sed "s/port: 8000\$/port: $gateway_port/" "$f" >"$tmp/run/$(basename "$f")"
done
echo "hello from the upstream" >"$tmp/www/hello.txt"
setsid "$vpy" -m http.server "$upstream_port" --bind 127.0.0.1 --directory "$tmp/www" \
    >"$tmp/upstream.log" 2>&1 </dev/null &
pids+=("$!")
setsid "$fsmfast" run -c "$tmp/run" --workers 1 --listen-address 127.0.0.1 \
    >"$tmp/access.log" 2>"$tmp/gateway.log" </dev/null &
pids+=("$!")

"$vpy" - "$gateway_port" "$upstream_port" "$tmp/gateway.log" <<'EOF' || {
import http.client, socket, sys, time

gateway, upstream, log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + 180  # under qemu user emulation the first start takes a while
for port in (upstream, gateway):
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"nothing listens on 127.0.0.1:{port}")
            time.sleep(0.2)
conn = http.client.HTTPConnection("127.0.0.1", gateway, timeout=60)
conn.request("GET", "/hello.txt", headers={"Host": "foo.example.com"})
resp = conn.getresponse()
body = resp.read().decode(errors="replace")
print(f"GET http://foo.example.com/hello.txt via 127.0.0.1:{gateway} -> HTTP {resp.status}: {body.strip()!r}")
if resp.status != 200 or body.strip() != "hello from the upstream":
    sys.exit("the proxied request did not return the upstream's file")
EOF
    echo "--- gateway log ---" >&2
    cat "$tmp/gateway.log" >&2
    die "smoke: the proxied request failed"
}
sleep 0.5
say "smoke: access log: $(tail -n 1 "$tmp/access.log")"
say "smoke: all passed"
