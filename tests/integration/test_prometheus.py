"""fsmfast's metrics through a real Prometheus, and the contrib dashboard and rules checked against it.

One module-wide set-up: a two-worker gateway (an HTTP listener with routes ``ok`` to the in-process ``Upstream``
and ``dead`` to a port nothing listens on, and an HTTPS listener whose certificate expires in 10 days) and
Debian's ``prometheus`` scraping the gateway's admin listener every second with ``contrib/prometheus/alerts.yml``
loaded. Every HTTP request a test sends goes through the Stack, which counts the statuses, so any test can
require Prometheus to return exactly those counts, whatever ran before it.

- promtool accepts the rules (``check rules --lint=all --lint-fatal``) and their unit tests pass;
- every PromQL expression of the dashboard and the rules parses and evaluates in that Prometheus, and every
  metric they name is in a real scrape of ``/metrics`` (a renamed metric fails here, not in an operator's
  empty panel);
- the issue's metrics carry exactly the issue's labels, and ``promtool check metrics`` finds nothing;
- after 200s, 404s and 502s and a SIGKILLed worker, Prometheus returns exactly the sums sent, no counter went
  backwards (checked by Prometheus's ``resets`` and by scraping every 20 ms across the kill), and the restart
  is counted and alerted on;
- reloads move the generation and the result counters, a broken one fires FsmfastConfigReloadFailing until the
  next good one, and no counter resets when the workers change generation.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import manifests, pki
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.prometheus import Exposition, Labels, Prometheus, parse_text, promtool
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "fsmfast.json"
RULES = ROOT / "contrib" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "contrib" / "prometheus" / "alerts_test.yml"
NS = "metrics"
JOB = "fsmfast"

# The issue's metrics and their labels, exactly (histograms: the labels of _sum and _count; _bucket adds le).
ISSUE_METRICS: dict[str, set[str]] = {
    "fsmfast_http_requests_total": {"listener", "route", "backend", "code"},
    "fsmfast_http_request_duration_seconds_count": {"listener", "route", "backend"},
    "fsmfast_http_request_duration_seconds_sum": {"listener", "route", "backend"},
    "fsmfast_upstream_errors_total": {"backend", "reason"},
    "fsmfast_downstream_connections": {"listener"},
    "fsmfast_downstream_connections_total": {"listener"},
    "fsmfast_tls_handshake_errors_total": {"listener", "reason"},
    "fsmfast_config_generation": set(),
    "fsmfast_config_reloads_total": {"result"},
    "fsmfast_config_last_reload_success_timestamp_seconds": set(),
    "fsmfast_certificate_expiry_timestamp_seconds": {"namespace", "secret", "usage"},
    "fsmfast_workers": set(),
    "fsmfast_worker_restarts_total": {"reason"},
    "fsmfast_worker_resident_memory_bytes": {"worker"},
}


# -- the gateway, its upstream and Prometheus --------------------------------------------------------------


@dataclass
class Stack:
    gw: Gateway
    prom: Prometheus
    http_port: int
    tls_port: int
    config: Path
    sent: Counter[str] = field(default_factory=Counter)  # every status any test received, by code

    def send(self, path: str, count: int, expect: int) -> None:
        """``count`` GETs of ``path``, each on a new connection (so the kernel spreads them over both
        workers), each answered ``expect``."""
        for _ in range(count):
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
            try:
                conn.request("GET", path, headers={"Host": "metrics.test", "Connection": "close"})
                resp = conn.getresponse()
                resp.read()
            finally:
                conn.close()
            assert resp.status == expect, f"GET {path}: {resp.status}, expected {expect}"
            self.sent[str(resp.status)] += 1

    def send_on_one_connection(self, path: str, count: int, expect: int) -> int:
        """``count`` GETs of ``path`` on one keep-alive connection, each answered ``expect``; returns the pid
        of the worker that served them (the process holding the gateway's end of the connection)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            for _ in range(count):
                conn.request("GET", path, headers={"Host": "metrics.test"})
                resp = conn.getresponse()
                resp.read()
                assert resp.status == expect, f"GET {path}: {resp.status}, expected {expect}"
                self.sent[str(resp.status)] += 1
            assert conn.sock is not None
            return worker_holding(self.gw, self.http_port, conn.sock.getsockname()[1])
        finally:
            conn.close()

    def scrape(self) -> tuple[str, str]:
        """GET /metrics of the admin listener, as curl would (no Accept): (content type, body)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.gw.admin_port}/metrics", timeout=5) as resp:
            return resp.headers.get("Content-Type", ""), resp.read().decode()

    def exposition(self) -> Exposition:
        return parse_text(self.scrape()[1])

    def expect_request_sums(self, timeout: float = 10.0) -> None:
        """Prometheus's ``sum by (code)`` of the request counter equals what this module sent."""
        expected = {frozenset({("code", code)}): float(n) for code, n in self.sent.items()}
        self.prom.wait_for_value(f'sum by (code) (fsmfast_http_requests_total{{job="{JOB}"}})', expected, timeout)

    def expect_no_resets(self) -> None:
        """Prometheus saw no reset in any series of a counter or histogram, one name at a time: resets() drops
        the metric name, and two names' series could then collide."""
        names = sorted({name for name, _ in self.exposition().monotonic()})
        assert "fsmfast_http_requests_total" in names and "fsmfast_http_request_duration_seconds_bucket" in names
        for name in names:
            resets = self.prom.vector(f'max(resets({name}{{job="{JOB}"}}[5m]))')
            assert resets == {frozenset(): 0.0}, (name, resets)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prometheus")
    ca = pki.blog_pki(tmp / "ca")
    soon = pki.short_lived(tmp / "soon", ca, "metrics.example.com", days=10)
    http_port, tls_port, dead_port = free_port(), free_port(), free_port()
    with Upstream("metrics") as up:
        config = manifests.live_and_dead(
            tmp / "gw.yaml",
            namespace=NS,
            http_port=http_port,
            https_port=tls_port,
            cert_secret="soon-cert",
            cert=soon.server_cert,
            key=soon.server_key,
            live=("/status", "up", up.port),
            dead=("/dead", "dead", dead_port),
        )
        with Gateway(config, [http_port, tls_port], workers=2) as gw:
            wait_for(lambda: admin_status(gw, "/readyz") == 200, 20, "the admin listener's /readyz 200")
            with Prometheus([f"127.0.0.1:{gw.admin_port}"], rule_files=[RULES], job=JOB) as prom:
                prom.wait_for_target_up()
                yield Stack(gw, prom, http_port, tls_port, config)


def worker_holding(gw: Gateway, server_port: int, client_port: int) -> int:
    """The worker whose socket is the server end of the loopback connection 127.0.0.1:client_port ->
    127.0.0.1:server_port: its inode from /proc/net/tcp, then the worker with that socket open."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1].split(":"), fields[2].split(":")
            if int(local[1], 16) == server_port and int(remote[1], 16) == client_port:
                inodes.add(f"socket:[{fields[9]}]")
    assert len(inodes) == 1, inodes
    holders = []
    for pid in gw.worker_pids():
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    holders.append(pid)
    assert len(holders) == 1, holders
    return holders[0]


def admin_status(gw: Gateway, path: str) -> int:
    """The admin listener's status for GET ``path``; 0 while nothing answers (a worker or master starting)."""
    try:
        return gw.admin(path, timeout=2)[0]
    except OSError:
        return 0


# -- expressions of the dashboard and the rules ----------------------------------------------------------

# What Grafana puts in place of its variables: intervals become durations, the dashboard's own variables
# (used only in =~ matchers) match everything.
_GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "5m"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$", re.S)


def grafana_to_promql(expr: str) -> str:
    for name, value in _GRAFANA_INTERVALS.items():
        expr = expr.replace(name, value)
    expr = _VARIABLE.sub(".*", expr)
    assert "$" not in expr, expr
    return expr


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and query variable of the dashboard."""
    board = dashboard()
    found: list[tuple[str, str]] = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", grafana_to_promql(target["expr"])))
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            found.append((f"annotation {annotation['name']!r}", grafana_to_promql(annotation["expr"])))
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = _LABEL_VALUES.match(query)
            assert match, f"variable {var['name']}: {query!r} is not label_values(selector, label)"
            found.append((f"variable {var['name']!r}", grafana_to_promql(match.group(1))))
    return found


def rule_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for g in groups for r in g["rules"]]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_METRIC = re.compile(r"(?<![\w:])((?:fsmfast|process)_[a-zA-Z0-9_]+|up)(?![\w:])")
_SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (fsmfast_*, process_*, up): label values are blanked first,
    and every name written before a ``{`` must be one of them (so a metric of another prefix is not missed)."""
    bare = _STRING.sub('""', expr)
    names = set(_METRIC.findall(bare))
    keywords = {"by", "without", "on", "ignoring", "group_left", "group_right"}
    for selector in _SELECTOR.findall(bare):
        assert selector in names or selector in keywords, f"{selector!r} in {expr!r}: not a known metric prefix"
    return names


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_pass() -> None:
    """contrib/prometheus/alerts_test.yml: each alert fires on the series it is written for and not on the
    near misses (an idle gateway's few 5xx, a reload fixed since, a certificate with 60 days left)."""
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_arguments_are_checked() -> None:
    """The two tests above would pass on a promtool that ignores its input: a broken rule must fail."""
    broken = RULES.read_text().replace("expr: fsmfast_workers == 0", "expr: fsmfast_workers == == 0")
    assert broken != RULES.read_text()
    result = promtool("check", "rules", "/dev/stdin", stdin=broken)
    assert result.returncode != 0, result.stdout


def test_dashboard_model() -> None:
    """What both import paths need: UI import fills ``__inputs``; provisioning resolves ``${DS_PROMETHEUS}``
    through the datasource variable of that name. A stable uid keeps links and provisioned copies one."""
    board = dashboard()
    assert board["schemaVersion"] >= 37
    assert board["uid"] == "fsmfast-gateway"
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Traffic", "Upstreams", "Connections", "Workers", "TLS"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert 1 <= panel["gridPos"]["w"] <= 24 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"], panel["title"]


def test_every_expression_evaluates(stack: Stack) -> None:
    """Each expression, as Grafana or the rule manager would send it, parses and evaluates (status success),
    after some traffic so the histogram and ratio expressions have data to work on."""
    stack.send("/status/200", 3, 200)
    stack.send("/dead", 1, 502)
    expressions = dashboard_expressions() + rule_expressions()
    assert len(expressions) > 30
    failed = []
    for where, expr in expressions:
        answer = stack.prom.api("query", query=expr)
        if answer.get("status") != "success":
            failed.append(f"{where}: {expr}\n  {answer.get('errorType')}: {answer.get('error')}")
    assert not failed, "\n".join(failed)
    # And the query API does refuse a bad expression, so the loop above can fail.
    assert stack.prom.api("query", query="sum by (code) (rate(fsmfast_http_requests_total[1m])")["status"] == "error"


def test_every_metric_used_is_scraped(stack: Stack) -> None:
    """Every metric named by the dashboard and the rules is in the gateway's /metrics (``up`` is Prometheus's
    own), and the issue's metrics carry exactly its labels."""
    fail_tls_handshake(stack.tls_port)
    stack.send("/dead", 1, 502)
    used: dict[str, set[str]] = {}
    for where, expr in dashboard_expressions() + rule_expressions():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    assert "fsmfast_http_requests_total" in used and "process_resident_memory_bytes" in used
    scrape = metrics_with_samples(stack)
    missing = {name: sorted(wheres) for name, wheres in used.items() if name != "up" and name not in scrape.names()}
    assert not missing, f"used but not in /metrics: {missing}"
    assert stack.prom.vector(f'up{{job="{JOB}"}}')

    wrong = {}
    for name, labels in ISSUE_METRICS.items():
        seen = {frozenset(k for k, _ in key) for (n, key) in scrape.samples if n == name}
        if seen != {frozenset(labels)}:
            wrong[name] = (sorted(labels), [sorted(s) for s in seen])
    assert not wrong, f"labels (expected, seen): {wrong}"
    buckets = {frozenset(k for k, _ in key) for (n, key) in scrape.samples if n.endswith("_duration_seconds_bucket")}
    assert buckets == {frozenset({"listener", "route", "backend", "le"})}
    assert ("fsmfast_build_info", "gauge") in scrape.types.items()
    assert {name for name in scrape.types if name.startswith("process_")} >= {
        "process_resident_memory_bytes", "process_cpu_seconds_total", "process_start_time_seconds",
        "process_open_fds",
    }  # fmt: skip


def metrics_with_samples(stack: Stack, timeout: float = 5.0) -> Exposition:
    """A scrape once every issue metric has a sample (the workers publish their counts each tick; counters
    with a known label set, such as reload results and restart reasons, are there at 0 from the start)."""
    deadline = time.monotonic() + timeout
    while True:
        scrape = stack.exposition()
        missing = set(ISSUE_METRICS) - {name for name, _ in scrape.samples}
        if not missing:
            return scrape
        if time.monotonic() > deadline:
            raise AssertionError(f"no sample in /metrics for {sorted(missing)}")
        time.sleep(0.1)


def fail_tls_handshake(port: int) -> None:
    """A client that does not trust the listener's certificate: it aborts the handshake with an alert."""
    ctx = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(raw, server_hostname="metrics.example.com")


def test_promtool_check_metrics_is_clean(stack: Stack) -> None:
    stack.send("/status/200", 1, 200)
    content_type, body = stack.scrape()
    assert content_type.startswith("text/plain") and "version=0.0.4" in content_type, content_type
    result = promtool("check", "metrics", stdin=body)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )


def test_certificate_expiry_is_exported_and_alerted(stack: Stack) -> None:
    """The listener certificate expires in 10 days: Prometheus has its expiry, and the 14-day alert is pending
    (it fires after its ``for: 10m``)."""
    expiry = stack.prom.vector(f'fsmfast_certificate_expiry_timestamp_seconds{{job="{JOB}", usage="listener"}}')
    assert len(expiry) == 1
    (labels, value), = expiry.items()  # fmt: skip
    assert dict(labels)["namespace"] == NS and dict(labels)["secret"] == "soon-cert"
    assert 9 * 86400 < value - time.time() <= 10 * 86400 + 60
    wait_for(
        lambda: stack.prom.vector('ALERTS{alertname="FsmfastCertificateExpiringSoon", secret="soon-cert"}'),
        10, "FsmfastCertificateExpiringSoon pending",
    )  # fmt: skip


# -- the exact sums across a worker's death ------------------------------------------------------------------


class Watcher(threading.Thread):
    """Scrapes /metrics every 20 ms and records any counter or histogram sample that went down, or vanished."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.stop = threading.Event()
        self.scrapes = 0
        self.decreases: list[str] = []

    def run(self) -> None:
        last: dict[tuple[str, Labels], float] = {}
        while not self.stop.is_set():
            now = self.stack.exposition().monotonic()
            self.scrapes += 1
            for key, before in last.items():
                after = now.get(key)
                if after is None or after < before:
                    self.decreases.append(f"{key[0]}{dict(key[1])}: {before:g} -> {after}")
            last = now
            time.sleep(0.02)


def test_exact_sums_across_a_worker_kill(stack: Stack) -> None:
    # The worker to kill serves 7 requests for sure, on one connection; the rest spread over both workers.
    victim = stack.send_on_one_connection("/status/200", 7, 200)
    stack.send("/nowhere", 5, 404)  # no route matches
    stack.send("/dead", 3, 502)  # the backend's only endpoint refuses connections
    stack.expect_request_sums()
    restarts_before = stack.prom.vector(f'sum(fsmfast_worker_restarts_total{{job="{JOB}"}})')
    assert restarts_before in ({}, {frozenset(): 0.0})

    watcher = Watcher(stack)
    watcher.start()
    try:
        assert len(stack.gw.worker_pids()) == 2
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(p := stack.gw.worker_pids()) == 2 and victim not in p, 10, "a new worker")
        wait_for(lambda: admin_status(stack.gw, "/readyz") == 200, 10, "/readyz 200 after the respawn")
        stack.send("/status/200", 4, 200)
        stack.send("/nowhere", 2, 404)
        stack.send("/dead", 2, 502)
        stack.expect_request_sums()
    finally:
        watcher.stop.set()
        watcher.join(timeout=10)
    assert watcher.scrapes > 20, watcher.scrapes
    assert not watcher.decreases, watcher.decreases[:20]

    assert stack.prom.vector(f'sum by (reason) (fsmfast_worker_restarts_total{{job="{JOB}"}}) > 0') == {
        frozenset({("reason", "signal")}): 1.0
    }
    stack.prom.wait_for_value(f'sum(fsmfast_workers{{job="{JOB}"}})', {frozenset(): 2.0})
    wait_for(
        lambda: stack.prom.vector('ALERTS{alertname="FsmfastWorkerRestarts", alertstate="firing", reason="signal"}'),
        10, "FsmfastWorkerRestarts firing",
    )  # fmt: skip
    stack.expect_no_resets()


def test_reloads_are_counted_and_a_failed_one_alerts(stack: Stack) -> None:
    """A good reload: generation +1, success +1, its timestamp, and no counter reset although the workers
    change generation. A broken config: failure +1 and FsmfastConfigReloadFailing fires; reloading the fixed
    file clears it."""

    def value(expr: str) -> float:
        vector = stack.prom.vector(expr)
        assert len(vector) == 1, (expr, vector)
        return next(iter(vector.values()))

    generation = f'fsmfast_config_generation{{job="{JOB}"}}'
    success = f'fsmfast_config_reloads_total{{job="{JOB}", result="success"}}'
    failure = f'fsmfast_config_reloads_total{{job="{JOB}", result="failure"}}'
    alert = 'ALERTS{alertname="FsmfastConfigReloadFailing", alertstate="firing"}'
    gen0, ok0, bad0 = value(generation), value(success), value(failure)
    stack.send("/status/200", 2, 200)
    before = time.time()
    stack.gw.reload()
    wait_for(lambda: value(generation) == gen0 + 1 and value(success) == ok0 + 1, 10, "the reload in Prometheus")
    assert value(failure) == bad0
    assert value(f'fsmfast_config_last_reload_success_timestamp_seconds{{job="{JOB}"}}') >= before - 1
    stack.send("/status/200", 2, 200)
    stack.expect_request_sums()

    good = stack.config.read_text()
    try:
        stack.config.write_text(good + "---\n{unclosed: [\n")  # not YAML
        stack.gw.reload(expect="reload failed")
        wait_for(lambda: value(failure) == bad0 + 1, 10, "the failed reload in Prometheus")
        wait_for(lambda: stack.prom.vector(alert), 10, "FsmfastConfigReloadFailing firing")
        assert value(generation) == gen0 + 1
    finally:
        stack.config.write_text(good)
    stack.gw.reload()
    wait_for(lambda: not stack.prom.vector(alert), 10, "FsmfastConfigReloadFailing resolved")
    assert value(generation) == gen0 + 2
    wait_for(lambda: admin_status(stack.gw, "/readyz") == 200, 10, "/readyz 200 after the reloads")
    stack.send("/nowhere", 1, 404)
    stack.expect_request_sums()
    stack.expect_no_resets()
