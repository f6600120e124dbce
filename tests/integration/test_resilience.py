"""Health checks and retries end to end (issue 19): three real echo endpoints behind one Service
port, a gateway with two workers, traffic running while one endpoint dies, answers 503 for a while,
or all of them fail.

Each request carries its own X-Request-Id (the gateway keeps a valid one), so the access log's
entries, which say which endpoint served and which failed before (``retries``), are matched with
the time the client sent them.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support import manifests
from tests.support.clients import ClientThreads
from tests.support.pki import Pki
from tests.support.procs import Gateway, Gunicorn, free_port, wait_for
from tests.support.resilience import HOST, NS, metrics_with, service_policy, upstreams, write_config
from tests.support.resilience import samples as metric_samples
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.slow

BACKEND = f"{NS}/svc:80"
HEALTH = service_policy("HealthCheckPolicy", {"interval": 1, "maxFails": 2, "path": "/healthz"})
RETRY = service_policy("RetryPolicy", {"retryOn": ["5xx"], "numRetries": 2, "backoffBaseInterval": 0.01})


class Traffic(ClientThreads):
    """Clients on keep-alive connections sending GETs until stopped; every answer is recorded with
    the time its request was sent."""

    def __init__(self, port: int, clients: int = 4) -> None:
        super().__init__(port, clients)
        self.sent: dict[str, float] = {}
        self.answers: list[tuple[float, int, str | None]] = []
        self._lock = threading.Lock()

    def _run(self, n: int) -> None:
        count = 0
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stopping.is_set():
            count += 1
            rid = f"{n:04x}{count:028x}"
            sent = time.monotonic()
            try:
                conn.request("GET", "/echo", headers={"Host": HOST, "X-Request-Id": rid})
                resp = conn.getresponse()
                resp.read()
                status, upstream = resp.status, resp.headers.get("X-Upstream")
            except OSError as e:
                status, upstream = 0, repr(e)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            with self._lock:
                self.sent[rid] = sent
                self.answers.append((sent, status, upstream))
            time.sleep(0.005)
        conn.close()


def _config(tmp_path: Path, port: int, ups: list[Upstream], *policies: str, not_ready: tuple[int, ...] = ()) -> Path:
    return write_config(tmp_path / "r.yaml", port, [u.port for u in ups], *policies, not_ready=not_ready)


def _entries(gw: Gateway, n: int) -> list[dict[str, Any]]:
    return [e for e in gw.access_log(min_entries=n, timeout=10) if e.get("route")]


def test_one_of_three_endpoints_dies_under_traffic_and_no_request_fails(tmp_path: Path) -> None:
    port = free_port()
    with upstreams(3) as ups, Gateway(_config(tmp_path, port, ups, HEALTH, RETRY), [port], workers=2) as gw:
        with Traffic(port) as traffic:
            time.sleep(1.0)
            killed = time.monotonic()
            ups[1].stop()  # its port now refuses connections
            time.sleep(3.0)
        answers = list(traffic.answers)
        dead = f"127.0.0.1:{ups[1].port}"
        entries = _entries(gw, len(answers))
        # The metrics say the same (workers publish at most once a second).
        out = f'fsmfast_upstream_endpoint_transitions_total{{backend="{BACKEND}",state="out"}}'
        samples = metric_samples(metrics_with(gw, out))
        healthy = f'fsmfast_upstream_endpoint_healthy{{backend="{BACKEND}",endpoint="127.0.0.1:'
        assert samples[f'{healthy}{ups[1].port}"}}'] == 0 and samples[f'{healthy}{ups[0].port}"}}'] == 1
        assert samples[out] >= 1
        retried_total = sum(v for k, v in samples.items() if k.startswith("fsmfast_upstream_retries_total{"))
        assert retried_total >= 1
    assert len(answers) > 200
    assert Counter(status for _, status, _ in answers) == {200: len(answers)}, "a client saw an error"
    before = Counter(up for sent, _, up in answers if sent < killed)
    assert set(before) == {"u0", "u1", "u2"}
    # The dead endpoint failed a few attempts (each retried elsewhere), then was out for every worker.
    retried = [e for e in entries if any(r.startswith(dead) for r in e.get("retries", ()))]
    assert retried and all(e["status"] == 200 and e["attempts"] >= 2 for e in retried)
    # Refused or failed (a new connection), or reset (a pooled one it had open when it died).
    reasons = {r.split()[1] for e in retried for r in e["retries"] if r.startswith(dead)}
    assert reasons <= {"upstream_connect_refused", "upstream_connect_failed", "upstream_reset"}, reasons
    last = max(traffic.sent[e["request_id"]] for e in retried)
    assert last - killed < 1.5, f"the dead endpoint was still tried {last - killed:.2f}s after it died"
    # Two workers, maxFails 2: a handful of failed attempts in all, not one per request.
    assert len(retried) <= 6
    after = Counter(up for sent, _, up in answers if sent > last)
    assert set(after) == {"u0", "u2"} and min(after.values()) > 0.4 * max(after.values())


def test_an_endpoint_answering_503_for_a_while_is_retried_then_out_then_back(tmp_path: Path) -> None:
    port = free_port()
    with upstreams(3) as ups, Gateway(_config(tmp_path, port, ups, HEALTH, RETRY), [port], workers=2) as gw:
        with Traffic(port) as traffic:
            time.sleep(0.5)
            ups[2].fail_status = 503  # every path, the health check's too
            broke = time.monotonic()
            time.sleep(3.0)
            ups[2].fail_status = None
            healed = time.monotonic()
            time.sleep(3.0)
        answers = list(traffic.answers)
        entries = _entries(gw, len(answers))
    assert Counter(status for _, status, _ in answers) == {200: len(answers)}, "a client saw the 503"
    during = Counter(up for sent, _, up in answers if broke + 2.5 < sent < healed)
    assert during and "u2" not in during, "out by its health check while it failed"
    back = [sent for sent, _, up in answers if sent > healed and up == "u2"]
    assert back and back[0] - healed < 2.5, "back once a health check passed"
    retried = [e for e in entries if e.get("retries")]
    assert retried and all("status_503" in " ".join(e["retries"]) for e in retried)


def test_every_endpoint_out_answers_503_naming_the_backend(tmp_path: Path) -> None:
    port = free_port()
    with upstreams(3) as ups:
        for u in ups:
            u.fail_status = 500
        config = _config(tmp_path, port, ups, HEALTH)
        with Gateway(config, [port], workers=2, args=["--detailed-errors"]) as gw:
            # Out once each failed two health checks (interval 1 s).
            def no_endpoint() -> bool:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/echo", headers={"Host": HOST})
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                return resp.status == 503 and b"no healthy upstream" in body

            wait_for(no_endpoint, 6, "every endpoint out")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/echo", headers={"Host": HOST})
            resp = conn.getresponse()
            body = resp.read().decode()
            assert resp.status == 503 and BACKEND in body and "health checks" in body
            refused = wait_for(
                lambda: [e for e in gw.access_log() if e["reason"] == "no_healthy_upstream"], 5, "the access log"
            )
            assert all(e["backend"] == BACKEND and e["upstream"] is None for e in refused)
            # One passes again: it is back, for every worker.
            ups[0].fail_status = None
            wait_for(lambda: not no_endpoint(), 4, "an endpoint back")


def test_endpoints_not_ready_in_the_endpoint_slice_are_never_used(tmp_path: Path) -> None:
    port = free_port()
    with upstreams(3) as ups, Gateway(_config(tmp_path, port, ups, HEALTH, not_ready=(1,)), [port], workers=2):
        seen: Counter[str] = Counter()
        for _ in range(30):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/echo", headers={"Host": HOST})
            resp = conn.getresponse()
            resp.read()
            seen[resp.headers["X-Upstream"]] += 1
            conn.close()
        assert set(seen) == {"u0", "u2"} and not ups[1].requests


def _post(port: int, body: bytes) -> tuple[int, dict[str, Any] | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/echo", body=body, headers={"Host": HOST})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    import json

    return resp.status, json.loads(data) if resp.status == 200 else None


def test_a_request_body_is_replayed_on_another_endpoint_only_when_it_was_kept(tmp_path: Path) -> None:
    port = free_port()
    retry = service_policy("RetryPolicy", {"retryOn": ["503"], "numRetries": 2, "backoffBaseInterval": 0.01})
    with upstreams(2) as ups, Gateway(_config(tmp_path, port, ups, retry), [port], workers=1) as gw:
        dead = ups[0].port
        ups[0].stop()
        small = bytes(range(256)) * 200  # 51,200 bytes: kept, replayed whole
        for _ in range(4):
            status, echo = _post(port, small)
            assert status == 200 and echo is not None
            assert echo["body_sha256"] == hashlib.sha256(small).hexdigest() and echo["body_length"] == len(small)
        big = b"x" * (70 * 1024)  # over 64 KiB: streamed, not kept, so never retried
        statuses = Counter(_post(port, big)[0] for _ in range(4))
        assert statuses[502] >= 1 and sum(statuses.values()) == 4
        entries = wait_for(lambda: (lambda e: e if len(e) >= 8 else None)(gw.access_log()), 5, "8 entries")
        replayed = [e for e in entries if e.get("attempts") == 2]
        assert len(replayed) >= 2 and all(f":{dead} upstream_connect_refused" in e["retries"][0] for e in replayed)
        assert all(e["method"] == "POST" and e["status"] == 200 for e in replayed)
        assert all("attempts" not in e for e in entries if e["status"] == 502)
        # POST is not idempotent: a listed status it got is its answer (nginx: non_idempotent off).
        ups[1].fail_status = 503
        assert _post(port, b"abc")[0] == 503


def test_the_retry_budget_caps_retries_when_every_endpoint_fails(tmp_path: Path) -> None:
    port = free_port()
    with upstreams(3) as ups, Gateway(_config(tmp_path, port, ups, RETRY), [port], workers=2):
        for u in ups:
            u.fail_status = 503
        start = time.monotonic()
        sent = 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() - start < 2.0:
            conn.request("GET", "/echo", headers={"Host": HOST})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 503
            sent += 1
        conn.close()
        elapsed = time.monotonic() - start
        retries = sum(len(u.requests) for u in ups) - sent
    # Without a budget: two retries a request. With it: 20 % of the requests, or 10 a second.
    assert sent > 100
    assert 10 <= retries <= 0.2 * sent + 10 * (elapsed + 1), (sent, retries)


# --- the founding scenario's TLS upstream: probes go over its TLS, with its trust -------------------


def _health_policy(path: str) -> str:
    return (
        "apiVersion: gateway.flomesh.io/v1alpha1\nkind: HealthCheckPolicy\n"
        "metadata: {name: health, namespace: httpbin}\n"
        "spec:\n  targetRef: {group: '', kind: Service, name: httpbin}\n"
        f"  ports: [{{port: 8443, config: {{interval: 1, maxFails: 2, path: {path}}}}}]\n"
    )


@pytest.mark.timeout(60)
def test_health_checks_of_a_tls_upstream_speak_its_tls(pki: Pki, httpbin_tls: Gunicorn, config_dir: Path) -> None:
    port = free_port()
    manifests.write_founding(config_dir, port, httpbin_tls.port, with_policy=True, ca_pem=pki.ca_cert)
    (config_dir / "health.yaml").write_text(_health_policy("/status/200"))
    backend = "httpbin/httpbin:8443"
    passed = f'fsmfast_upstream_health_checks_total{{backend="{backend}",result="pass"}}'
    with Gateway(config_dir, [port], workers=2, args=["--detailed-errors"]) as gw:
        # httpbin answers 200 to a GET /status/200 only over TLS (FSM's plain-HTTP probe failed here).
        samples = metric_samples(metrics_with(gw, passed))
        assert samples[passed] >= 1 and samples.get(passed.replace('"pass"', '"fail"'), 0) == 0
        endpoint = f"127.0.0.1:{httpbin_tls.port}"
        assert samples[f'fsmfast_upstream_endpoint_healthy{{backend="{backend}",endpoint="{endpoint}"}}'] == 1
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/get", headers={"Host": "foo.example.com"})
        assert conn.getresponse().status == 200
        conn.close()
        # A check the endpoint fails (over that same TLS): out after two intervals, 503 naming the backend.
        (config_dir / "health.yaml").write_text(_health_policy("/status/503"))
        gw.reload()

        def refused() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/get", headers={"Host": "foo.example.com"})
            resp = conn.getresponse()
            body = resp.read().decode()
            conn.close()
            return resp.status == 503 and backend in body

        wait_for(refused, 6, "the endpoint out of service")
