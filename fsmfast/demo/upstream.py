"""The founding scenario's HTTPS upstream: real httpbin on gunicorn, or a small built-in echo server.

Both serve the blog's server certificate (CN=foo.example.com, signed by the private CA). The echo server
answers like httpbin for the paths the demo and its printed curl commands use, so the demo runs where
httpbin and gunicorn are not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fsmfast.demo import SetupError
from fsmfast.demo.pki import Pki
from fsmfast.demo.procs import ChildProcess, child_env, free_port, stop_group, tail, wait_tls

# gunicorn reads this config file: its default server context would follow Python 3.13's VERIFY_X509_STRICT and
# reject the blog's CA (no keyUsage) when verifying the gateway's client certificate. The upstream must behave
# the same on every Python so the tests measure the gateway, not the interpreter.
_GUNICORN_CONF = """\
import ssl


def ssl_context(conf, default_ssl_context_factory):
    ctx = default_ssl_context_factory()
    ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    return ctx
"""


class Gunicorn(ChildProcess):
    """Real httpbin on gunicorn over TLS: ``python -m gunicorn -b 127.0.0.1:PORT httpbin:app --certfile ...``.

    ``ca_certs``/``cert_reqs`` turn on client-certificate checking (``cert_reqs=2`` is ssl.CERT_REQUIRED),
    as in the mTLS variant of the blog. Two sync workers. Entering the context waits until the server
    completes a TLS handshake (so a worker is serving); ``port`` is where it listens. Leaving kills the group.
    """

    def __init__(
        self,
        certfile: Path,
        keyfile: Path,
        ca_certs: Path | None = None,
        cert_reqs: int | None = None,
        workers: int = 2,
        start_timeout: float = 60.0,
    ) -> None:
        self.certfile = Path(certfile)
        self.keyfile = Path(keyfile)
        self.ca_certs = Path(ca_certs) if ca_certs is not None else None
        self.cert_reqs = cert_reqs
        self.workers = workers
        self.start_timeout = start_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.log_path = Path(os.devnull)

    def start(self) -> Gunicorn:
        self._tmp = tempfile.TemporaryDirectory(prefix="fsmfast-gunicorn-")
        tmp = Path(self._tmp.name)
        self.log_path = tmp / "gunicorn.log"
        conf = tmp / "gunicorn_conf.py"
        conf.write_text(_GUNICORN_CONF)
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "gunicorn", "-c", str(conf), "-b", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers), "--certfile", str(self.certfile), "--keyfile", str(self.keyfile),
        ]  # fmt: skip
        if self.ca_certs is not None:
            cmd += ["--ca-certs", str(self.ca_certs)]
        if self.cert_reqs is not None:
            cmd += ["--cert-reqs", str(self.cert_reqs)]
        cmd.append("httpbin:app")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=tmp, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                env=child_env(),
            )  # fmt: skip
        try:
            wait_tls(self.port, self.start_timeout, self.proc)
        except (TimeoutError, RuntimeError) as exc:
            text = tail(self.log_path)
            self.close()
            raise SetupError(f"gunicorn did not start: {exc}\n--- gunicorn log ---\n{text}") from exc
        return self

    def logs(self) -> dict[str, Path]:
        return {"gunicorn log": self.log_path}

    def close(self) -> None:
        """Kill gunicorn's whole group and remove its temporary directory. Idempotent."""
        stop_group(self.proc, signal.SIGKILL)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


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


class EchoServer(ThreadingHTTPServer):
    """The built-in HTTPS echo upstream on ``127.0.0.1:port``, served from a daemon thread."""

    daemon_threads = True

    def __init__(self, port: int, certfile: Path, keyfile: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)
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


def have_httpbin() -> bool:
    """True when httpbin and gunicorn are installed (``pip install 'fsmfast[demo]'``)."""
    return importlib.util.find_spec("httpbin") is not None and importlib.util.find_spec("gunicorn") is not None


@contextlib.contextmanager
def https_upstream(pki: Pki, kind: str = "auto") -> Iterator[tuple[int, str]]:
    """Start the HTTPS upstream with ``pki``'s server certificate; yield ``(port, description)``; stop it on exit.

    ``kind``: ``httpbin`` (gunicorn), ``builtin`` (the echo server) or ``auto`` (httpbin when installed).
    """
    if kind == "httpbin" and not have_httpbin():
        raise SetupError("--upstream httpbin needs the httpbin and gunicorn packages (pip install 'fsmfast[demo]')")
    if kind == "httpbin" or (kind == "auto" and have_httpbin()):
        # Not the context manager: that prints gunicorn's log on any exception, Ctrl-C included.
        gunicorn = Gunicorn(pki.server_cert, pki.server_key).start()
        try:
            yield gunicorn.port, f"httpbin on gunicorn, https://127.0.0.1:{gunicorn.port}"
        finally:
            gunicorn.close()
        return
    server = EchoServer(free_port(), pki.server_cert, pki.server_key)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="demo-echo", daemon=True)
    thread.start()
    try:
        why = "" if kind == "builtin" else " (httpbin/gunicorn not installed)"
        yield port, f"built-in HTTPS echo server{why}, https://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
