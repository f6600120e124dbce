"""Request ids and trace context end to end, and the combined access-log format, against real gateways.

- the id in the access log is the one the upstream received: httpbin (on gunicorn, over TLS, as in the
  founding scenario) echoes the headers it got, and a client's own valid id is the one both see;
- a W3C traceparent reaches httpbin byte for byte; an invalid one does not, nor does its tracestate;
- 1,000 ids made by two workers are all different, and so are those of a worker that replaces a
  killed one (each worker draws its own random prefix when it starts);
- ``--access-log-format combined`` writes nginx's combined lines (the request id quoted at the end),
  escaped as nginx escapes them, one atomic write each even for a long target.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from fsmfast.logsink import PIPE_BUF
from tests.support import manifests as m
from tests.support.pki import Pki
from tests.support.procs import Gateway, Gunicorn, free_port, wait_for
from tests.support.upstreams import Client, Upstream, raw_exchange

HOST = "foo.example.com"
GENERATED = re.compile(r"[0-9a-f]{32}")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
# nginx's combined format, then the request id in quotes. Inside quotes nginx writes '"' as \x22,
# so a quoted field is [^"]*.
COMBINED = re.compile(
    r"(?P<addr>\S+) - (?P<user>\S+) \[(?P<time>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" '
    r'"(?P<rid>[^"]*)"'
)


def get_json(port: int, path: str, headers: dict[str, str] | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers={"Host": HOST, **(headers or {})})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body)
        return json.loads(body)  # type: ignore[no-any-return]
    finally:
        conn.close()


# --- the upstream sees the id the log shows ------------------------------------------------------------


@pytest.fixture(scope="module")
def founding(pki: Pki, httpbin_tls: Gunicorn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("founding")
    port = free_port()
    m.write_founding(config, port, httpbin_tls.port, with_policy=True, ca_pem=pki.ca_cert)
    with Gateway(config, [port]) as gw:
        yield gw


def _entry_for(gw: Gateway, path: str) -> dict:
    return wait_for(lambda: next((e for e in gw.access_log() if e.get("path") == path), None), 5, f"log of {path}")


@pytest.mark.timeout(60)
def test_the_logged_id_is_the_one_httpbin_saw(founding: Gateway) -> None:
    # show_env: httpbin hides X-Request-Id (and X-Forwarded-*) by default, as Heroku's router adds them.
    port = founding.ports[0]
    made = get_json(port, "/headers?show_env=1&made")["headers"]["X-Request-Id"]
    assert GENERATED.fullmatch(made), made
    assert _entry_for(founding, "/headers?show_env=1&made")["request_id"] == made

    kept = get_json(port, "/headers?show_env=1&kept", {"X-Request-Id": "client-1:a/b+c=d"})["headers"]["X-Request-Id"]
    assert kept == "client-1:a/b+c=d"
    assert _entry_for(founding, "/headers?show_env=1&kept")["request_id"] == kept

    # Invalid (a space): replaced by the gateway's, which the log shows.
    replaced = get_json(port, "/headers?show_env=1&replaced", {"X-Request-Id": "a b"})["headers"]["X-Request-Id"]
    assert GENERATED.fullmatch(replaced) and replaced != made, replaced
    assert _entry_for(founding, "/headers?show_env=1&replaced")["request_id"] == replaced


@pytest.mark.timeout(60)
def test_traceparent_reaches_httpbin_unchanged_or_not_at_all(founding: Gateway) -> None:
    port = founding.ports[0]
    seen = get_json(port, "/headers", {"traceparent": TRACEPARENT, "tracestate": TRACESTATE})["headers"]
    assert seen["Traceparent"] == TRACEPARENT and seen["Tracestate"] == TRACESTATE, seen
    bad = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"  # all-zero parent-id
    seen = get_json(port, "/headers", {"traceparent": bad, "tracestate": TRACESTATE})["headers"]
    assert "Traceparent" not in seen and "Tracestate" not in seen, seen


# --- unique across workers and restarts -----------------------------------------------------------------


def _requests(port: int, connections: int, per_connection: int) -> None:
    for _ in range(connections):
        with Client(port) as client:
            for _ in range(per_connection):
                resp = client.request("GET", "/ids", [("Host", "ids.test")])
                assert resp.status == 200, resp


def _two_workers(gw: Gateway) -> list[int]:
    return wait_for(lambda: pids if len(pids := gw.worker_pids()) == 2 else None, 10, "two workers")


@pytest.mark.timeout(90)
def test_generated_ids_are_unique_across_workers_and_restarts(tmp_path: Path) -> None:
    with Upstream("ids", echo_all=True) as up:
        port = free_port()
        config = m.one_route(tmp_path / "gw.yaml", port, up.port)
        with Gateway(config, [port], workers=2) as gw:
            pids = _two_workers(gw)
            _requests(port, connections=100, per_connection=10)
            entries = gw.access_log(min_entries=1000)
            seen = [r.header_all("X-Request-Id") for r in up.requests]
            assert len(seen) == 1000 and all(len(ids) == 1 for ids in seen)
            upstream_ids = [ids[0] for ids in seen]
            assert all(GENERATED.fullmatch(i) for i in upstream_ids)
            assert len(set(upstream_ids)) == 1000
            assert sorted(e["request_id"] for e in entries) == sorted(upstream_ids)
            # Both workers made some (SO_REUSEPORT spreads 100 connections), each under its own prefix.
            prefixes = {pid: {e["request_id"][:16] for e in entries if e["pid"] == pid} for pid in pids}
            assert all(len(p) == 1 for p in prefixes.values()), prefixes
            assert len(set.union(*prefixes.values())) == 2, prefixes

            # A replacement worker counts from 1 again, under a prefix of its own.
            os.kill(pids[0], signal.SIGKILL)
            wait_for(lambda: pids[0] not in gw.worker_pids() and len(gw.worker_pids()) == 2, 10, "a new worker")
            up.clear()
            _requests(port, connections=50, per_connection=2)
            later = [r.header("X-Request-Id") for r in up.requests]
            assert len(later) == 100 and len(set(later) | set(upstream_ids)) == 1100
            fresh = {e["request_id"][:16] for e in gw.access_log(min_entries=1100)[1000:]}
            assert fresh - set.union(*prefixes.values()), "the new worker reused a prefix"


# --- the combined format ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_combined_lines_have_nginx_shape(tmp_path: Path) -> None:
    with Upstream("combined", echo_all=True) as up:
        port = free_port()
        config = m.one_route(tmp_path / "gw.yaml", port, up.port)
        with Gateway(config, [port], args=["--access-log-format", "combined"]) as gw:
            started = time.time()
            with Client(port) as client:
                ok = client.request(
                    "GET",
                    "/page?q=1",
                    [
                        ("Host", "c.test"),
                        ("Referer", "https://example.com/from"),
                        ("User-Agent", 'agent "quoted" \\ back\tslash \xe9'),
                        ("X-Request-Id", "abc-123"),
                    ],
                )
                assert ok.status == 200
                long_path = "/" + "p" * 6000
                assert client.request("GET", long_path, [("Host", "c.test")]).status == 200
            # Refused before any route: no User-Agent was kept, the id is a new one.
            raw, _ = raw_exchange(port, b"GET /bad HTTP/1.1\r\nHost: c.test\r\nContent-Length: x\r\n\r\n")
            assert raw.startswith(b"HTTP/1.1 400")

            def lines() -> list[bytes] | None:
                found = gw.stdout_path.read_bytes().splitlines()
                return found if len(found) >= 3 else None

            first, second, third = wait_for(lines, 5, "three combined lines")[:3]
            # Nothing else on stdout: no JSON line among them.
            assert not any(line.startswith(b"{") for line in (first, second, third))

            parsed = COMBINED.fullmatch(first.decode("ascii"))
            assert parsed is not None, first
            assert parsed["addr"] == "127.0.0.1" and parsed["user"] == "-"
            logged = datetime.strptime(parsed["time"], "%d/%b/%Y:%H:%M:%S %z")
            assert abs(logged.timestamp() - started) < 30
            assert logged.utcoffset() == datetime.fromtimestamp(started).astimezone().utcoffset()
            assert parsed["request"] == "GET /page?q=1 HTTP/1.1"
            assert parsed["status"] == "200" and int(parsed["bytes"]) == len(ok.body)
            assert parsed["referer"] == "https://example.com/from"
            # nginx's escapes: '"' \x22, '\' \x5C, a tab \x09, a byte above 0x7E \xHH.
            assert parsed["agent"] == r"agent \x22quoted\x22 \x5C back\x09slash \xE9"
            assert parsed["rid"] == "abc-123"

            assert len(second) + 1 <= PIPE_BUF, len(second)
            parsed = COMBINED.fullmatch(second.decode("ascii"))
            assert parsed is not None, second
            cut = f"...[cut from {len(f'GET {long_path} HTTP/1.1')}]"
            assert parsed["request"].startswith("GET /ppp") and parsed["request"].endswith(cut), parsed["request"]
            assert parsed["referer"] == "-" and parsed["agent"] == "-"
            assert parsed["rid"] == up.requests[1].header("X-Request-Id")

            parsed = COMBINED.fullmatch(third.decode("ascii"))
            assert parsed is not None, third
            assert parsed["request"] == "GET /bad HTTP/1.1" and parsed["status"] == "400"
            assert GENERATED.fullmatch(parsed["rid"]), third
