"""fsmfast status: the report from fixed /status and /config JSON, and how it asks the admin listener."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from fsmfast import cli
from fsmfast.admin import status as st
from tests.support.procs import free_port

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY = 86400.0

STATUS: dict[str, Any] = {
    "version": "0.9.0",
    "pid": 4242,
    "state": "serving",
    "generation": 3,
    "started": NOW - 2 * 3600 - 5 * 60,
    "workers": [
        {"slot": 1, "pid": 4251, "generation": 3, "ready": True, "uptime_seconds": 312.4, "rss_bytes": 44040192},
        {"slot": 0, "pid": 4250, "generation": 2, "ready": False, "uptime_seconds": 7500, "rss_bytes": 43200000},
    ],
    "last_reload": {
        "result": "failure",
        "generation": 3,
        "at": NOW - 90,
        "error": "all.yaml#4 Secret httpbin/www-cert: data.tls.key does not match\nsecond line",
        "trigger": "watch",
    },
}


def _cert(secret: str, usage: str, subject: str, not_after: float, kind: str = "Secret") -> dict[str, Any]:
    return {
        "namespace": "httpbin",
        "secret": secret,
        "kind": kind,
        "usage": usage,
        "position": 0,
        "subject": subject,
        "issuer": "CN=flomesh.io",
        "serial": "01",
        "sans": [],
        "not_before": "2026-01-01T00:00:00Z",
        "not_after": st.rfc3339(not_after),
        "not_after_epoch": not_after,
        "used_by": [],
    }


CONFIG: dict[str, Any] = {
    "generation": 3,
    "listeners": [
        {"port": 8000, "protocol": "HTTP", "tls_mode": None, "names": ["httpbin/gw/http"], "hostnames": ["*"]},
        {
            "port": 8443,
            "protocol": "HTTPS",
            "tls_mode": "Terminate",
            "names": ["httpbin/gw/a", "httpbin/gw/b"],
            "hostnames": ["a.example.com", "*.example.com"],
            "client_certificates": {"required": True, "trusted_cas": []},
        },
        {"port": 9443, "protocol": "TLS", "tls_mode": "Passthrough", "names": ["httpbin/gw/pt"], "hostnames": []},
    ],
    "certificates": [
        _cert("far", "listener", "CN=far.example.com", NOW + 200 * DAY),
        _cert("soon", "listener", "CN=www.example.com", NOW + 9 * DAY + 3600),
        _cert("bundle-ca", "upstream-ca", "CN=other-ca", NOW - 2 * DAY, kind="ConfigMap"),
        _cert("edge", "upstream-client", "CN=gateway", NOW + 30 * DAY),
    ],
}

EXPECTED = """\
fsmfast 0.9.0, master pid 4242: serving
generation 3, master up 2h 5m (since 2027-01-15T05:55:00Z)

workers
  slot  pid   uptime  RSS       generation  ready
  0     4250  2h 5m   41.2 MiB  2           no
  1     4251  5m 12s  42.0 MiB  3           yes

listeners
  port  protocol                     hostnames                     listeners
  8000  HTTP                         *                             httpbin/gw/http
  8443  HTTPS (client certificates)  a.example.com, *.example.com  httpbin/gw/a, httpbin/gw/b
  9443  TLS Passthrough              -                             httpbin/gw/pt

certificates expiring within 30 days
  httpbin/bundle-ca (ConfigMap)  upstream-ca      CN=other-ca         expired 2d 0h ago, 2027-01-13T08:00:00Z
  httpbin/soon                   listener         CN=www.example.com  expires in 9d 1h, 2027-01-24T09:00:00Z
  httpbin/edge                   upstream-client  CN=gateway          expires in 30d 0h, 2027-02-14T08:00:00Z

last reload
  failure 2027-01-15T07:58:30Z (1m 30s ago), kept generation 3, by watch
  error: all.yaml#4 Secret httpbin/www-cert: data.tls.key does not match
  error: second line
"""


def test_render_fixed_json() -> None:
    assert st.render(STATUS, CONFIG, now=NOW) == EXPECTED


def test_render_with_nothing_expiring_no_reload_and_no_workers() -> None:
    status = {**STATUS, "workers": [], "last_reload": None, "state": "starting"}
    config = {**CONFIG, "certificates": [c for c in CONFIG["certificates"] if c["secret"] == "far"]}
    text = st.render(status, config, now=NOW)
    assert "master pid 4242: starting\n" in text
    assert "workers\n  none running\n" in text
    assert "certificates expiring within 30 days\n  none\n" in text
    assert text.endswith("last reload\n  none since the master started\n")


def test_render_before_any_configuration_is_served() -> None:
    text = st.render({**STATUS, "last_reload": None}, None, now=NOW)
    assert "listeners\n  no configuration is served yet\n" in text
    assert "certificates" not in text


def test_a_successful_reload() -> None:
    last = {"result": "success", "generation": 4, "at": NOW - 3 * DAY, "error": None, "trigger": "signal"}
    assert st.render({**STATUS, "last_reload": last}, CONFIG, now=NOW).endswith(
        "last reload\n  success 2027-01-12T08:00:00Z (3d 0h ago), now serving generation 4, by signal\n"
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.9, "59s"), (61, "1m 1s"), (3600, "1h 0m"), (90061, "1d 1h"), (-5, "0s")]
)
def test_duration(seconds: float, text: str) -> None:
    assert st.duration(seconds) == text


# --- asking the admin listener ---------------------------------------------------------------------------


class _Admin(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, bytes]] = {}

    def do_GET(self) -> None:
        code, body = self.answers.get(self.path, (404, b"not found\n"))
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def admin() -> Iterator[tuple[int, dict[str, tuple[int, bytes]]]]:
    answers: dict[str, tuple[int, bytes]] = {}
    handler = type("Handler", (_Admin,), {"answers": answers})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], answers
    finally:
        server.shutdown()
        server.server_close()


def _run(port: int) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = st.main("127.0.0.1", port, out, err)
    return code, out.getvalue(), err.getvalue()


def test_main_prints_the_report(
    admin: tuple[int, dict[str, tuple[int, bytes]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, answers = admin
    answers["/status"] = (200, json.dumps(STATUS).encode())
    answers["/config"] = (200, json.dumps(CONFIG).encode())
    monkeypatch.setattr(st, "time", SimpleNamespace(time=lambda: NOW))  # the report's clock only
    code, out, err = _run(port)
    assert (code, out, err) == (0, EXPECTED, "")


def test_main_before_the_first_generation(admin: tuple[int, dict[str, tuple[int, bytes]]]) -> None:
    port, answers = admin
    answers["/status"] = (200, json.dumps({**STATUS, "state": "starting"}).encode())
    answers["/config"] = (503, b"no configuration is served yet\n")
    code, out, _ = _run(port)
    assert code == 0 and "no configuration is served yet" in out


def test_main_refuses_what_is_not_the_admin_listener(admin: tuple[int, dict[str, tuple[int, bytes]]]) -> None:
    port, _ = admin
    code, out, err = _run(port)
    assert (code, out) == (1, "")
    assert err == f"fsmfast status: GET /status at 127.0.0.1:{port} answered 404, not the master's status\n"


def test_cannot_connect_is_exit_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert cli.main(["status", "--admin-address", f"127.0.0.1:{port}"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"fsmfast status: cannot reach the admin listener at 127.0.0.1:{port}: Connection refused\n"


def test_a_silent_listener_times_out() -> None:
    import socket

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)  # accepted by the kernel, never answered
        port = listening.getsockname()[1]
        with pytest.raises(st.Unreachable, match=rf"at 127.0.0.1:{port}: timed out after 0.2 s"):
            st.fetch("127.0.0.1", port, "/status", timeout=0.2)


def test_status_needs_an_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--admin-address", ""]) == 2
    assert "needs the admin listener's HOST:PORT" in capsys.readouterr().err
