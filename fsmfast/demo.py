"""``fsmfast demo``: the founding blog scenario on one machine, with no set-up.

The blog (FSM Gateway, "SSL proxy and TLS upstream") puts httpbin behind HTTPS with a certificate for
foo.example.com signed by a private CA (CN=flomesh.io), routes foo.example.com to it through a plain-HTTP
gateway listener, and shows two requests: without upstream TLS configuration the request fails; after an
``UpstreamTLSPolicy`` naming a Secret with the CA is applied, it returns httpbin's JSON. This module does all
of that in a temporary directory:

1. certificates: the blog's openssl commands, or the ``cryptography`` package when openssl is missing;
2. the HTTPS upstream: real httpbin on gunicorn when both are installed, else a small built-in echo server;
3. manifests without the policy, then ``fsmfast run`` as a child process;
4. request 1 (expect 502 and the reason), the policy, SIGHUP, request 2 (expect 200 and httpbin's JSON).

Then it keeps running for the user's own curl until Ctrl-C or SIGTERM (``--no-keep-running`` exits instead,
0 only when the two requests gave 502 then 200). Children and the temporary directory are always cleaned up.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

HOSTNAME = "foo.example.com"
NAMESPACE = "httpbin"
SERVICE_PORT = 8443
START_TIMEOUT = 30.0
RELOAD_TIMEOUT = 15.0


class DemoError(Exception):
    """A step failed in a way the user can act on; the message says what and how."""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _heading(text: str) -> None:
    _say()
    _say(f"=== {text} " + "=" * max(3, 76 - len(text)))


# --- certificates ------------------------------------------------------------------------------------


def _openssl(cwd: Path, *args: str, stdout: Path | None = None) -> None:
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(stdout, "wb")) if stdout is not None else subprocess.DEVNULL
        proc = subprocess.run(
            ["openssl", *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE, timeout=60
        )
    if proc.returncode != 0:
        raise DemoError(f"openssl {' '.join(args)} failed: {proc.stderr.decode(errors='replace').strip()}")


def _certs_with_openssl(d: Path) -> None:
    """The founding blog's five commands, verbatim."""
    _say("$ openssl genrsa 2048 > ca-key.pem")
    _openssl(d, "genrsa", "2048", stdout=d / "ca-key.pem")
    _say("$ openssl req -new -x509 -nodes -days 365000 -key ca-key.pem -out ca-cert.pem -subj '/CN=flomesh.io'")
    _openssl(d, "req", "-new", "-x509", "-nodes", "-days", "365000", "-key", "ca-key.pem", "-out", "ca-cert.pem",
             "-subj", "/CN=flomesh.io")  # fmt: skip
    _say("$ openssl genrsa -out server-key.pem 2048")
    _openssl(d, "genrsa", "-out", "server-key.pem", "2048")
    _say(f"$ openssl req -new -key server-key.pem -out server.csr -subj '/CN={HOSTNAME}'")
    _openssl(d, "req", "-new", "-key", "server-key.pem", "-out", "server.csr", "-subj", f"/CN={HOSTNAME}")
    _say("$ openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem "
         "-days 365")  # fmt: skip
    _openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
             "-out", "server-cert.pem", "-days", "365")  # fmt: skip


def _certs_with_cryptography(d: Path) -> None:
    """The same two certificates as the blog's commands: a CA with no keyUsage, a leaf with no extensions."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def key_pem(key: rsa.RSAPrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flomesh.io")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca-key.pem").write_bytes(key_pem(ca_key))
    (d / "ca-cert.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (d / "server-key.pem").write_bytes(key_pem(key))
    (d / "server-cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_certificates(d: Path) -> None:
    """CA ``ca-cert.pem`` (CN=flomesh.io) and ``server-cert.pem``/``server-key.pem`` (CN=foo.example.com)."""
    if shutil.which("openssl"):
        _certs_with_openssl(d)
    elif importlib.util.find_spec("cryptography") is not None:
        _say("(openssl not found: making the same certificates with the cryptography package)")
        _certs_with_cryptography(d)
    else:
        raise DemoError(
            "the demo needs the openssl command or the cryptography package to make its certificates: "
            "install one (Debian: apt-get install openssl; or pip install cryptography)"
        )


# --- the HTTPS upstream -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _tls_ready(port: int) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw):
            return True
    except OSError:
        return False


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers like httpbin for the paths the demo and the printed curl commands use."""

    protocol_version = "HTTP/1.1"
    server_version = "fsmfast-demo-echo"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the gateway's access log already shows every request

    def _reply(self, status: int, doc: dict[str, Any]) -> None:
        body = (json.dumps(doc, indent=2) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        headers = {k.title(): v for k, v in self.headers.items()}
        if path == "/headers":
            self._reply(200, {"headers": headers})
        elif path == "/get":
            host = self.headers.get("Host", "")
            args = {k: v[0] if len(v) == 1 else v for k, v in urllib.parse.parse_qs(query).items()}
            self._reply(200, {"args": args, "headers": headers, "origin": self.client_address[0],
                              "url": f"https://{host}{self.path}"})  # fmt: skip
        elif path == "/ip":
            self._reply(200, {"origin": self.client_address[0]})
        else:
            self._reply(404, {"error": f"the built-in echo server has no {path} (install httpbin for all of it)"})

    do_HEAD = do_GET


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__(("127.0.0.1", port), _EchoHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs here, in the connection's own thread, so one slow or plain-HTTP client (the gateway
        # before the policy exists) never blocks accept().
        try:
            request.settimeout(30)
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with tls:
            super().finish_request(tls, client_address)


def _have_httpbin() -> bool:
    return importlib.util.find_spec("httpbin") is not None and importlib.util.find_spec("gunicorn") is not None


@contextlib.contextmanager
def https_upstream(certs: Path, kind: str = "auto") -> Iterator[tuple[int, str]]:
    """Start the HTTPS upstream; yield ``(port, description)``; stop it on exit.

    ``kind``: ``httpbin`` (gunicorn), ``builtin`` (the echo server) or ``auto`` (httpbin when installed).
    """
    port = _free_port()
    cert, key = certs / "server-cert.pem", certs / "server-key.pem"
    if kind == "httpbin" and not _have_httpbin():
        raise DemoError("--upstream httpbin needs the httpbin and gunicorn packages (pip install 'fsmfast[demo]')")
    if kind == "httpbin" or (kind == "auto" and _have_httpbin()):
        log = open(certs / "gunicorn.log", "wb")  # noqa: SIM115 - closed in the finally below
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "--workers", "2",
             "--certfile", str(cert), "--keyfile", str(key), "httpbin:app"],
            cwd=certs, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _tls_ready(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (certs / "gunicorn.log").read_text(errors="replace")[-2000:]
                    raise DemoError(f"httpbin on gunicorn did not start:\n{tail}")
                time.sleep(0.1)
            yield port, f"httpbin on gunicorn, https://127.0.0.1:{port}"
        finally:
            _stop_group(proc, signal.SIGTERM)
            log.close()
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server = _EchoServer(port, ctx)
        thread = threading.Thread(target=server.serve_forever, name="demo-echo", daemon=True)
        thread.start()
        try:
            why = "" if kind == "builtin" else " (httpbin/gunicorn not installed)"
            yield port, f"built-in HTTPS echo server{why}, https://127.0.0.1:{port}"
        finally:
            server.shutdown()
            server.server_close()


def _stop_group(proc: subprocess.Popen[bytes], sig: int, grace: float = 10.0) -> None:
    """Signal the child's whole process group, wait ``grace`` seconds, then SIGKILL what is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived their master
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


# --- manifests ----------------------------------------------------------------------------------------


def _manifests(gateway_port: int, upstream_port: int) -> dict[str, str]:
    """The blog's Gateway, HTTPRoute and Service, plus the EndpointSlice Kubernetes would have made."""
    return {
        "gateway.yaml": f"""\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata:
  name: simple-fsm-gateway
  namespace: {NAMESPACE}
spec:
  gatewayClassName: fsm-gateway-cls
  listeners:
  - protocol: HTTP
    port: {gateway_port}
    name: http
    allowedRoutes:
      namespaces:
        from: Same
""",
        "route.yaml": f"""\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata:
  name: http-route-foo
  namespace: {NAMESPACE}
spec:
  parentRefs:
  - name: simple-fsm-gateway
    port: {gateway_port}
  hostnames:
  - {HOSTNAME}
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /
    backendRefs:
    - name: httpbin
      port: {SERVICE_PORT}
""",
        "service.yaml": f"""\
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  namespace: {NAMESPACE}
spec:
  selector:
    app: httpbin
  ports:
  - port: {SERVICE_PORT}
    protocol: TCP
    targetPort: {upstream_port}
---
# On bare metal there are no pods: this is the EndpointSlice Kubernetes would make for the Service.
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: httpbin-demo
  namespace: {NAMESPACE}
  labels:
    kubernetes.io/service-name: httpbin
addressType: IPv4
ports:
- name: ""
  port: {upstream_port}
  protocol: TCP
endpoints:
- addresses:
  - 127.0.0.1
  conditions:
    ready: true
""",
    }


def _policy(ca_pem: bytes) -> str:
    """``kubectl create secret generic https-cert --from-file=ca.crt=ca-cert.pem`` and the blog's policy."""
    return f"""\
apiVersion: v1
kind: Secret
metadata:
  name: https-cert
  namespace: {NAMESPACE}
data:
  ca.crt: {base64.b64encode(ca_pem).decode()}
---
apiVersion: gateway.flomesh.io/v1alpha1
kind: UpstreamTLSPolicy
metadata:
  name: upstream-tls-policy-sample
  namespace: {NAMESPACE}
spec:
  targetRef:
    group: ""
    kind: Service
    name: httpbin
    namespace: {NAMESPACE}
  ports:
  - port: {SERVICE_PORT}
    config:
      certificateRef:
        namespace: {NAMESPACE}
        name: https-cert
      mTLS: false
"""


def _shorten_base64(text: str) -> str:
    """Show ``ca.crt: LS0tLS1CRUdJTi...`` instead of 1,500 characters of base64."""
    out = []
    for line in text.splitlines(keepends=True):
        key, sep, value = line.partition(": ")
        if key.strip() == "ca.crt" and len(value) > 40:
            line = f"{key}{sep}{value[:24]}...  # base64 of ca-cert.pem\n"
        out.append(line)
    return "".join(out)


# --- the gateway --------------------------------------------------------------------------------------


class _Gateway:
    """``fsmfast run`` as a child in its own session (so Ctrl-C reaches only the demo, which stops it in order)."""

    def __init__(self, config: Path, port: int, workers: int, logs: Path) -> None:
        self.port = port
        self.out_path = logs / "access.log"
        self.err_path = logs / "gateway.log"
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Run the same fsmfast as this process, installed or from a checkout.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "fsmfast", "run", "-c", str(config), "--workers", str(workers),
               "--listen-address", "127.0.0.1"]  # fmt: skip
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True, env=env
            )
        self._shown = 0  # bytes of the gateway's log already echoed
        self._access_shown = 0

    def log_text(self) -> str:
        return self.err_path.read_text(errors="replace")

    def echo_log(self, prefix: str = "gateway: ") -> str:
        """Print the gateway's new log lines (complete ones) and return them."""
        data = self.err_path.read_bytes()[self._shown :]
        complete = data[: data.rfind(b"\n") + 1]
        self._shown += len(complete)
        text = complete.decode(errors="replace")
        for line in text.splitlines():
            _say(f"{prefix}{line}")
        return text

    def echo_access_log(self) -> None:
        data = self.out_path.read_bytes()[self._access_shown :]
        complete = data[: data.rfind(b"\n") + 1]
        self._access_shown += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            _say(f"access: {line}")

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise DemoError(f"fsmfast run exited with {self.proc.returncode}:\n{self.log_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise DemoError(f"fsmfast run did not listen on port {self.port}:\n{self.log_text()}")
            time.sleep(0.05)

    def reload(self) -> str:
        """SIGHUP the master; return its ``reloaded`` line, or raise with what it logged instead."""
        seen = self.err_path.stat().st_size
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoError(f"fsmfast run exited with {self.proc.returncode} on reload:\n{self.log_text()}")
            fresh = self.err_path.read_bytes()[seen:].decode(errors="replace")
            for line in fresh.splitlines(keepends=True):
                if line.endswith("\n") and "reloaded" in line:
                    return line.strip()
            time.sleep(0.05)
        fresh = self.err_path.read_bytes()[seen:].decode(errors="replace")
        raise DemoError(f"no 'reloaded' line within {RELOAD_TIMEOUT:g}s of SIGHUP; the gateway logged:\n{fresh}")

    def stop(self) -> None:
        _stop_group(self.proc, signal.SIGTERM)


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
    except DemoError as exc:
        print(f"fsmfast demo: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        _say("\nstopped")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    if not _port_is_free(args.port):
        raise DemoError(f"port {args.port} on 127.0.0.1 is in use; pick another with --port")
    with tempfile.TemporaryDirectory(prefix="fsmfast-demo-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        certs, config = tmp / "certs", tmp / "config"
        certs.mkdir()
        config.mkdir()

        _heading("Certificates: CA CN=flomesh.io signs the upstream's CN=foo.example.com (the blog's commands)")
        make_certificates(certs)

        _heading("The HTTPS upstream")
        upstream_port, description = stack.enter_context(https_upstream(certs, args.upstream))
        _say(description)

        _heading("Manifests: Gateway (HTTP listener), HTTPRoute foo.example.com -> Service httpbin:8443")
        for name, text in _manifests(args.port, upstream_port).items():
            (config / name).write_text(text)
            _say(f"# {name}")
            _say(text.rstrip("\n"))

        _heading(f"fsmfast run -c {config} --workers {args.workers}")
        gateway = _Gateway(config, args.port, args.workers, tmp)
        stack.callback(gateway.stop)
        gateway.wait_listening()
        gateway.echo_log()

        curl = f"curl -i -H 'Host: {HOSTNAME}' http://127.0.0.1:{args.port}/headers"
        _heading("Request 1: no upstream TLS policy yet, so the gateway speaks plain HTTP to an HTTPS port")
        _say(f"$ {curl}")
        first = _request(args.port, "/headers")
        _show_response(*first)
        _say("(FSM v1.2 answered with an empty reply here; fsmfast says 502 and why)")
        time.sleep(0.2)  # the worker logs the failure just after replying
        gateway.echo_log()

        _heading("Apply Secret https-cert (ca.crt = the CA) and the UpstreamTLSPolicy, then SIGHUP the master")
        policy = _policy((certs / "ca-cert.pem").read_bytes())
        (config / "policy.yaml").write_text(policy)
        _say("# policy.yaml (ca.crt shortened here)")
        _say(_shorten_base64(policy).rstrip("\n"))
        _say(f"$ kill -HUP {gateway.proc.pid}")
        gateway.reload()
        gateway.echo_log()

        _heading("Request 2: the gateway now verifies the upstream against the CA and forwards over TLS")
        _say(f"$ {curl}")
        second = _request(args.port, "/headers")
        _show_response(*second)

        ok = first[0] == 502 and second[0] == 200
        if not ok:
            _say()
            _say(f"unexpected: wanted 502 then 200, got {first[0]} then {second[0]}; the gateway logged:")
            _say(gateway.log_text().rstrip("\n"))
            return 1

        _heading("Try it yourself")
        _say(f"curl -H 'Host: {HOSTNAME}' http://127.0.0.1:{args.port}/headers")
        _say(f"curl --connect-to {HOSTNAME}:80:127.0.0.1:{args.port} http://{HOSTNAME}/get")
        _say(f"kill -HUP {gateway.proc.pid}    # reload after editing {config}")
        if not args.keep_running:
            return 0
        _say()
        _say("Running until Ctrl-C. Access log:")
        while True:
            if gateway.proc.poll() is not None:
                gateway.echo_log()
                raise DemoError(f"fsmfast run exited with {gateway.proc.returncode}")
            gateway.echo_access_log()
            gateway.echo_log()
            time.sleep(0.2)
