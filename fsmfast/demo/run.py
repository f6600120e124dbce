"""``fsmfast demo``: the founding blog scenario on one machine, with no set-up.

The blog (FSM Gateway, "SSL proxy and TLS upstream") puts httpbin behind HTTPS with a certificate for
foo.example.com signed by a private CA (CN=flomesh.io), routes foo.example.com to it through a plain-HTTP
gateway listener, and shows two requests: without upstream TLS configuration the request fails; after an
``UpstreamTLSPolicy`` naming a Secret with the CA is applied, it returns httpbin's JSON. This module does all
of that in a temporary directory, from the parts beside it that the tests and the benchmark use too:

1. certificates: the blog's openssl commands, or the ``cryptography`` package when openssl is missing;
2. the HTTPS upstream: real httpbin on gunicorn when both are installed, else a small built-in echo server;
3. manifests without the policy, then ``fsmfast run`` as a child process;
4. request 1 (expect 502 and the reason), the policy, SIGHUP, request 2 (expect 200 and httpbin's JSON).

Then it keeps running for the user's own curl until Ctrl-C or SIGTERM (``--no-keep-running`` exits instead,
0 only when the two requests gave 502 then 200). Children and the temporary directory are always cleaned up.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from fsmfast.demo import SetupError
from fsmfast.demo.manifests import write_founding
from fsmfast.demo.pki import HOSTNAME, founding_pki
from fsmfast.demo.procs import Gateway, port_is_free
from fsmfast.demo.upstream import https_upstream

START_TIMEOUT = 30.0
RELOAD_TIMEOUT = 15.0


def _say(text: str = "") -> None:
    print(text, flush=True)


def _heading(text: str) -> None:
    _say()
    _say(f"=== {text} " + "=" * max(3, 76 - len(text)))


def _shorten_base64(text: str) -> str:
    """Show ``ca.crt: LS0tLS1CRUdJTi...`` instead of 1,500 characters of base64."""
    out = []
    for line in text.splitlines(keepends=True):
        key, sep, value = line.partition(": ")
        if key.strip() == "ca.crt" and len(value) > 40:
            line = f"{key}{sep}{value[:24]}...  # base64 of ca-cert.pem\n"
        out.append(line)
    return "".join(out)


class _LogEcho:
    """Prints the complete lines a log file gained since the last call, each with ``prefix``."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.path = path
        self.prefix = prefix
        self._shown = 0  # bytes already printed

    def __call__(self) -> None:
        data = self.path.read_bytes()[self._shown :]
        complete = data[: data.rfind(b"\n") + 1]
        self._shown += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            _say(f"{self.prefix}{line}")


def _request(port: int, path: str) -> tuple[int, str, str]:
    """``GET path`` with ``Host: foo.example.com`` to the gateway; ``(status, reason, body)``, or status 0 and
    the error when no response came (what FSM v1.2 did: an empty reply)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": HOSTNAME, "User-Agent": "fsmfast-demo"})
        resp = conn.getresponse()
        return resp.status, resp.reason, resp.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return 0, "no response", f"{exc.__class__.__name__}: {exc}"
    finally:
        conn.close()


def _show_response(status: int, reason: str, body: str) -> None:
    _say(f"HTTP {status} {reason}" if status else f"(no HTTP response: {body})")
    if status:
        _say(body.rstrip("\n"))


# --- main ---------------------------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="fsmfast demo",
        description="Run the founding scenario here: HTTP in, verified HTTPS to httpbin out, before/after the policy.",
    )
    p.add_argument("--port", type=int, default=8000, help="gateway listener port on 127.0.0.1 (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="gateway worker processes (default 1)")
    p.add_argument(
        "--upstream",
        choices=("auto", "httpbin", "builtin"),
        default="auto",
        help="the HTTPS upstream: httpbin on gunicorn, the built-in echo server, or httpbin when installed (default)",
    )
    p.add_argument(
        "--keep-running",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the two requests keep everything up for your own curl until Ctrl-C (default: keep running)",
    )
    return p.parse_args(argv)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwind through the same cleanup as Ctrl-C.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(args)
    except (SetupError, TimeoutError) as exc:
        print(f"fsmfast demo: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        _say("\nstopped")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    if not port_is_free(args.port):
        raise SetupError(f"port {args.port} on 127.0.0.1 is in use; pick another with --port")
    with tempfile.TemporaryDirectory(prefix="fsmfast-demo-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        config = tmp / "config"

        _heading("Certificates: CA CN=flomesh.io signs the upstream's CN=foo.example.com (the blog's commands)")
        pki = founding_pki(tmp / "certs", say=_say)

        _heading("The HTTPS upstream")
        upstream_port, description = stack.enter_context(https_upstream(pki, args.upstream))
        _say(description)

        _heading("Manifests: Gateway (HTTP listener), HTTPRoute foo.example.com -> Service httpbin:8443")
        write_founding(config, args.port, upstream_port)
        for name in ("gateway.yaml", "route.yaml", "service.yaml"):
            _say(f"# {name}")
            _say((config / name).read_text().rstrip("\n"))
        _say("# (on bare metal there are no pods: the EndpointSlice is the one Kubernetes would make for the Service)")

        _heading(f"fsmfast run -c {config} --workers {args.workers}")
        # Not the context manager: that prints the gateway's log tail on any exception, Ctrl-C included.
        gateway = Gateway(config, [args.port], workers=args.workers, start_timeout=START_TIMEOUT)
        stack.callback(gateway.close, signal.SIGTERM)
        gateway.start()
        echo_log = _LogEcho(gateway.stderr_path, "gateway: ")
        echo_access_log = _LogEcho(gateway.stdout_path, "access: ")
        echo_log()

        curl = f"curl -i -H 'Host: {HOSTNAME}' http://127.0.0.1:{args.port}/headers"
        _heading("Request 1: no upstream TLS policy yet, so the gateway speaks plain HTTP to an HTTPS port")
        _say(f"$ {curl}")
        first = _request(args.port, "/headers")
        _show_response(*first)
        _say("(FSM v1.2 answered with an empty reply here; fsmfast says 502 and why)")
        time.sleep(0.2)  # the worker logs the failure just after replying
        echo_log()

        _heading("Apply Secret https-cert (ca.crt = the CA) and the UpstreamTLSPolicy, then SIGHUP the master")
        write_founding(config, args.port, upstream_port, with_policy=True, ca_pem=pki.ca_cert)
        _say("# policy.yaml (ca.crt shortened here)")
        _say(_shorten_base64((config / "policy.yaml").read_text()).rstrip("\n"))
        _say(f"$ kill -HUP {gateway.pid}")
        gateway.reload(timeout=RELOAD_TIMEOUT)
        echo_log()

        _heading("Request 2: the gateway now verifies the upstream against the CA and forwards over TLS")
        _say(f"$ {curl}")
        second = _request(args.port, "/headers")
        _show_response(*second)

        ok = first[0] == 502 and second[0] == 200
        if not ok:
            _say()
            _say(f"unexpected: wanted 502 then 200, got {first[0]} then {second[0]}; the gateway logged:")
            _say(gateway.stderr_text().rstrip("\n"))
            return 1

        _heading("Try it yourself")
        _say(f"curl -H 'Host: {HOSTNAME}' http://127.0.0.1:{args.port}/headers")
        _say(f"curl --connect-to {HOSTNAME}:80:127.0.0.1:{args.port} http://{HOSTNAME}/get")
        _say(f"kill -HUP {gateway.pid}    # reload after editing {config}")
        if not args.keep_running:
            return 0
        _say()
        _say("Running until Ctrl-C. Access log:")
        while True:
            if gateway.proc is not None and gateway.proc.poll() is not None:
                echo_log()
                raise SetupError(f"fsmfast run exited with {gateway.proc.returncode}")
            echo_access_log()
            echo_log()
            time.sleep(0.2)
