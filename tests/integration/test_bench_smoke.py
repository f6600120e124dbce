"""The benchmark harness runs end to end in a tiny mode and writes its JSON record.

Only the harness's plumbing is checked: every system starts on scenario S1's config, answers the pre-flight
request, serves a one-second wrk run, and the JSON has the documented keys. Benchmark numbers are never
asserted: this box runs other work, and a test that depends on speed fails for reasons unrelated to the code.
S7's configs are checked for what makes the comparison fair (the same endpoints, rotation, retries), not timed.
S8's configs are checked to limit for real (given a tiny rate) and to let the bench's load through.
S9's fsmfast is checked to ask the Redis the harness starts for every request; nginx and HAProxy to get S8's configs.
nginx, haproxy, wrk and redis-server come from ``.ci/sysdeps`` (purpose ``test``); the harness is told not to install.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEMS = ("fsmfast", "nginx", "haproxy", "floor", "direct")


@pytest.mark.timeout(150)
def test_quick_run_writes_json_with_requests_for_every_system(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "bench", "--quick", "--scenarios", "S1", "--systems", ",".join(SYSTEMS),
        "--rounds", "1", "--duration", "1", "--warmup", "0", "--connections", "8",
        "--no-install", "--no-chart", "--results-dir", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=140, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"

    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1, files
    assert files[0].name.endswith("-quick.json")
    doc = json.loads(files[0].read_text())
    for key in ("schema", "date", "command", "machine", "versions", "settings", "summary", "ratios", "runs"):
        assert key in doc, key
    assert doc["settings"]["scenarios"] == ["S1"]
    assert doc["failures"] == [], doc["failures"]
    for system in SYSTEMS:
        runs = [r for r in doc["runs"] if r["system"] == system]
        assert len(runs) == 1, (system, runs)
        run = runs[0]
        assert run["requests"] > 0, run
        assert run["non_2xx_3xx"] == 0, run
        for key in ("rps", "latency_us", "errors", "harness_cpu_util"):
            assert key in run, (system, key)
        if system != "direct":
            assert run["cpu_us_per_req"] is not None and run["cpu_us_per_req"] > 0, run
            # Each of the three is rounded to 0.01 µs.
            assert abs(run["cpu_user_us_per_req"] + run["cpu_sys_us_per_req"] - run["cpu_us_per_req"]) <= 0.02, run
            assert run["rss_peak_kib"] > 0, run
    assert {(r["system"], r["vs"], r["scenario"]) for r in doc["ratios"]} == {
        ("fsmfast", "nginx", "S1"),
        ("fsmfast", "haproxy", "S1"),
        ("floor", "nginx", "S1"),
    }
    # Each proxy's idle worker RSS, measured once it is up (direct runs no proxy).
    idle = {i["system"]: i["worker_rss_kib"] for i in doc["idle"] if i["scenario"] == "S1"}
    assert set(idle) == {"fsmfast", "nginx", "haproxy", "floor"}, doc["idle"]
    assert all(kib > 1024 for kib in idle.values()), idle
    # The Markdown report goes to stdout, one row per system, and one idle-RSS row per proxy.
    for system in SYSTEMS:
        assert f"| S1 plain | {system} |" in proc.stdout
    for system in idle:
        assert f"\n| {system} | {idle[system] / 1024:.1f} |" in proc.stdout, proc.stdout
    floor = next(r for r in doc["ratios"] if r["system"] == "floor")
    assert f"S1 plain: {floor['cpu_per_req_ratio_median']:.2f} (" in proc.stdout, proc.stdout


@pytest.mark.timeout(60)
def test_floor_relays_bytes_and_refuses_other_scenarios(tmp_path: Path) -> None:
    # The floor is only a fair lower bound if it relays every byte unchanged, both ways, on one
    # keep-alive connection; and it must say n/a (not a number) where it cannot compare.
    import socket
    import threading

    from bench.procs import free_port, wait_port
    from bench.scenarios import SCENARIOS
    from bench.systems import make

    upstream = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def echo_upper(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                got.append(data)
                conn.sendall(data.upper())

    def accept() -> None:  # wait_port's probe opens (and drops) an upstream connection too
        while True:
            try:
                conn, _ = upstream.accept()
            except OSError:
                return
            threading.Thread(target=echo_upper, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    port = free_port()
    floor = subprocess.Popen(
        [sys.executable, "-m", "bench.floor", str(port), str(upstream.getsockname()[1])],
        cwd=REPO, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port, 20, floor)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            for message in (b"first request\r\n", b"x" * 100_000):
                c.sendall(message)
                answer = b""
                while len(answer) < len(message):
                    answer += c.recv(65536)
                assert answer == message.upper()
        assert b"".join(got) == b"first request\r\n" + b"x" * 100_000
    finally:
        floor.terminate()
        floor.wait(10)
        upstream.close()
    system = make("floor", tmp_path, None, None, None)  # type: ignore[arg-type]
    assert system.unsupported(SCENARIOS["S1"], tmp_path) is None
    for sid in ("S2", "S3", "S4", "S5", "S6"):
        assert "S1 only" in (system.unsupported(SCENARIOS[sid], tmp_path) or ""), sid


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layout", [[], ["--one-host"]])
def test_route_lookup_prints_ns_per_lookup(layout: list[str]) -> None:
    cmd = [sys.executable, "-m", "bench", "lookup", "--sizes", "10,100", "--repeat", "1", "--min-time", "0.01"]
    proc = subprocess.run(cmd + layout, cwd=REPO, capture_output=True, text=True, timeout=50, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 10")]
    assert len(rows) == 2, proc.stdout
    assert ("all on one hostname" in proc.stdout) is bool(layout), proc.stdout


@pytest.mark.timeout(240)
def test_instruction_counts_per_request_for_fsmfast_and_nginx() -> None:
    # Small counts: the plumbing (valgrind around each system, the request loop, the subtraction), not figures.
    # 200 requests apart, so the per-request work outweighs what start-up and timers add to one run or the other.
    cmd = [
        sys.executable, "-m", "bench", "instructions", "--scenarios", "S1", "--systems", "fsmfast,nginx",
        "--requests", "20,220", "--no-install",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=230, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| S1 plain |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    fsmfast, nginx, ratio = (float(c.replace(",", "")) for c in cells[1:4])
    # Both proxies did work per request (a system left outside valgrind or a lost count gives 0).
    assert fsmfast > 1000 and nginx > 1000, row
    assert ratio == pytest.approx(fsmfast / nginx, abs=0.006), row  # printed with two decimals


@pytest.mark.timeout(90)
@pytest.mark.parametrize("system_name", ["fsmfast", "nginx", "haproxy"])
def test_s7_config_balances_three_endpoints_and_retries_5xx(tmp_path: Path, system_name: str) -> None:
    # S7 compares like with like only if every system gets the same three endpoints, rotates over them
    # per request on one client connection, and tries a request that keeps failing with a 5xx 1 + 2 times;
    # fsmfast and HAProxy also check each endpoint with GET / (open-source nginx has no active check).
    # Three threaded origins stand in for the upstream's three ports.
    import http.client

    from bench.configs import HEALTH_INTERVAL, RETRIES, UpstreamPorts, write_fsmfast
    from bench.scenarios import HOST, SCENARIOS
    from bench.systems import make
    from fsmfast.compile import build
    from tests.support.procs import wait_for
    from tests.support.upstreams import Upstream

    scenario = SCENARIOS["S7"]
    ups = [Upstream(f"u{i}", echo_all=True) for i in range(scenario.endpoints)]
    for u in ups:
        u.start()
    up = UpstreamPorts(ups[0].port, 0, 0, 0, more_http=tuple(u.port for u in ups[1:]))
    if system_name == "fsmfast":
        result = build(str(write_fsmfast(tmp_path / "check", scenario, 1, up, None)))  # type: ignore[arg-type]
        (backend,) = result.snapshot.backends.values()
        assert sorted(e.port for e in backend.endpoints) == sorted(u.port for u in ups)
        policies = backend.resilience
        assert policies is not None and policies.lb is not None and policies.health is not None
        assert policies.lb.type == "RoundRobinLoadBalancer"
        assert (policies.health.interval, policies.health.max_fails, policies.health.path) == (2, 3, "/")
        assert policies.retry is not None and (policies.retry.on, policies.retry.attempts) == (("5xx",), RETRIES)
    system = make(system_name, tmp_path, up, None, None)  # type: ignore[arg-type]  # no TLS in S7
    try:
        system.start(scenario, tmp_path / system_name)
        system.wait_ready(30)
        conn = http.client.HTTPConnection("127.0.0.1", system.port, timeout=10)

        def get(path: str) -> int:
            conn.request("GET", path, headers={"Host": HOST})
            resp = conn.getresponse()
            resp.read()
            return resp.status

        assert [get("/x") for _ in range(30)] == [200] * 30
        assert [len(u.requests_for("/x")) for u in ups] == [10, 10, 10]
        assert get("/status/503") == 503
        assert sum(len(u.requests_for("/status/503")) for u in ups) == RETRIES + 1
        conn.close()

        def checked() -> list[bool]:
            return [any(r.method == "GET" and r.target == "/" for r in list(u.requests)) for u in ups]

        if system_name == "nginx":
            assert checked() == [False] * len(ups)
        else:
            wait_for(lambda: all(checked()), 2 * HEALTH_INTERVAL + 1, "a health check of every endpoint")
    finally:
        system.stop()
        for u in ups:
            u.stop()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("system_name", ["fsmfast", "nginx", "haproxy"])
def test_s8_config_limits_with_a_tiny_rate_and_not_with_the_bench_rate(tmp_path: Path, system_name: str) -> None:
    # S8 compares a rate limit's cost only if every system really checks one: given 3 per second, a burst of
    # 10 at once on 10 connections gets 3 through (fsmfast lets one more wait for the next token, its least
    # backlog) and 429 for the rest. With the bench's own rate, the same burst all passes.
    import dataclasses
    import http.client
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    from bench.configs import UpstreamPorts, write_fsmfast
    from bench.scenarios import HOST, RATE_LIMIT, SCENARIOS
    from bench.systems import make
    from fsmfast.compile import build
    from tests.support.upstreams import Upstream

    def burst(port: int) -> Counter[int]:
        def get(_: int) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/x", headers={"Host": HOST})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            return resp.status

        with ThreadPoolExecutor(10) as pool:
            return Counter(pool.map(get, range(10)))

    origin = Upstream("u", echo_all=True)
    origin.start()
    up = UpstreamPorts(origin.port, 0, 0, 0)
    try:
        for rate in (3, RATE_LIMIT):
            scenario = dataclasses.replace(SCENARIOS["S8"], rate_limit=rate)
            if system_name == "fsmfast":
                result = build(str(write_fsmfast(tmp_path / f"check-{rate}", scenario, 1, up, None)))  # type: ignore[arg-type]
                assert not [w for w in result.warnings if "rate" in w.lower()], result.warnings
                rules = [r for listener in result.snapshot.listeners for r in _edge_rules(listener) if r.rate_limits]
                limits = [[(x.requests, x.window, x.burst, x.key) for x in r.rate_limits] for r in rules]
                assert limits == [[(rate, 1, rate, None)]]
            system = make(system_name, tmp_path, up, None, None)  # type: ignore[arg-type]  # no TLS in S8
            before = len(origin.requests_for("/x"))
            try:
                system.start(scenario, tmp_path / f"{system_name}-{rate}")
                system.wait_ready(30)
                statuses = burst(system.port)
            finally:
                system.stop()
            passed = len(origin.requests_for("/x")) - before
            if rate == RATE_LIMIT:
                assert statuses == {200: 10}, statuses
            else:
                assert 3 <= statuses[200] <= (4 if system_name == "fsmfast" else 3), statuses
                assert statuses[429] == 10 - statuses[200], statuses
            assert passed == statuses[200]
    finally:
        origin.stop()


def _edge_rules(node: object) -> list:
    """Every EdgeRule under a snapshot node (a listener's virtual hosts keep them by rule name)."""
    from fsmfast.snapshot import EdgeRule

    if isinstance(node, EdgeRule):
        return [node]
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, tuple | list):
        return [r for x in node for r in _edge_rules(x)]
    fields = getattr(node, "__struct_fields__", None)
    if fields is None:
        return []
    return [r for f in fields for r in _edge_rules(getattr(node, f))]


@pytest.mark.timeout(90)
def test_s9_fsmfast_asks_the_harness_redis_for_every_request_and_the_others_run_s8(tmp_path: Path) -> None:
    # S9's figure is fsmfast's cost of a fleet-wide limit only if every request really waited for Redis's
    # decision (not the fail-open path), and nginx and HAProxy, which have no Redis-backed limiter, are
    # compared on exactly S8's configs.
    import http.client

    from bench import configs, fleet
    from bench.configs import UpstreamPorts, write_fsmfast
    from bench.scenarios import HOST, SCENARIOS
    from bench.systems import make
    from fsmfast.compile import build
    from tests.support.upstreams import Upstream

    s8, s9 = SCENARIOS["S8"], SCENARIOS["S9"]
    assert s9.fleet_limit and s9.rate_limit == s8.rate_limit
    for write in (configs.write_nginx, configs.write_haproxy):
        a, b = (
            write(tmp_path / f"{write.__name__}-{s.id}", s, 1, UpstreamPorts(2, 3, 4, 5), None)  # type: ignore[arg-type]
            .read_text()
            .replace(str(tmp_path / f"{write.__name__}-{s.id}"), "DIR")
            for s in (s8, s9)
        )
        assert a == b, write.__name__

    origin = Upstream("u", echo_all=True)
    origin.start()
    up = UpstreamPorts(origin.port, 0, 0, 0)
    redis = fleet.start(tmp_path / "redis", None)
    system = make("fsmfast", tmp_path, up, None, None)  # type: ignore[arg-type]  # no TLS in S9
    try:
        result = build(str(write_fsmfast(tmp_path / "check", s9, 1, up, None)))  # type: ignore[arg-type]
        limits = [x for listener in result.snapshot.listeners for r in _edge_rules(listener) for x in r.rate_limits]
        assert [(x.mode, x.requests, x.key) for x in limits] == [("Global", s9.rate_limit, None)]
        system.fleet_args = fleet.fsmfast_args(redis)
        system.start(s9, tmp_path / "fsmfast")
        system.wait_ready(30)
        conn = http.client.HTTPConnection("127.0.0.1", system.port, timeout=10)
        statuses = []
        for _ in range(20):
            conn.request("GET", "/x", headers={"Host": HOST})
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
        conn.close()
        assert statuses == [200] * 20
        assert len(origin.requests_for("/x")) == 20
        # One script call per request (redis-py loads the script once, on the first).
        assert 20 <= fleet.decisions(redis) <= 22
        assert system.metrics_url is not None and fleet.failures(system.metrics_url) == 0
    finally:
        system.stop()
        redis.stop()
        origin.stop()
