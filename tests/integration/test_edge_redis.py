"""Fleet-wide rate limits (issue 20): two gateways pointed at one real Redis (Debian's redis-server,
started here on a loopback port) share one quota exactly; without Redis, a gateway fails open (the
default: counted and logged) or closed (503)."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.test_edge import edge_policy, get
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.redis_server import RedisServer
from tests.support.resilience import HOST, metrics_with, upstreams, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is installed by .ci/sysdeps"),
]

POLICY = edge_policy(
    "RateLimitPolicy",
    "  http:\n  - match: {path: {type: PathPrefix, value: /}}\n"
    "    config: {requests: 20, statTimeWindow: 60, backlog: 1, mode: Global}\n",
)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_two_gateways_share_one_quota_exactly_then_fail_open_or_closed(tmp_path: Path, redis: RedisServer) -> None:
    ports = [free_port(), free_port()]
    with upstreams(1) as ups:
        configs = [write_config(tmp_path / f"gw{i}.yaml", p, [ups[0].port], POLICY) for i, p in enumerate(ports)]
        args = ["--ratelimit-redis", redis.url, "--ratelimit-redis-timeout", "1"]
        with Gateway(configs[0], [ports[0]], workers=2, args=args) as a, Gateway(configs[1], [ports[1]], args=args):
            # 100 requests at once, half to each gateway: one quota of 20, and one more in the backlog
            # for the next token (3 s later).
            with ThreadPoolExecutor(10) as pool:
                answers = list(pool.map(lambda i: get(ports[i % 2]), range(100)))
            statuses = Counter(status for status, _, _ in answers)
            assert statuses == {200: 21, 429: 79}, statuses
            assert sum(1 for status, _, took in answers if status == 200 and took >= 2.0) == 1
            assert len(ups[0].requests) == 21
            refused = [body for status, body, _ in answers if status == 429]
            assert set(refused) == {b"rate limit exceeded\n"}
            # Every one of the 100 was Redis's decision (one script call each), none a local guess.
            assert redis.calls("evalsha", "eval") >= 100
            # Run with --ratelimit-redis, the master does not say the limit needs it (fsmfast check does).
            assert "applied only by a gateway run with --ratelimit-redis" not in a.stderr_text()

            # Redis gone: the default fails open, logs it and counts it.
            redis.stop()
            assert [get(ports[0])[0] for _ in range(5)] == [200] * 5
            text = metrics_with(a, "fsmfast_ratelimit_redis_failures_total")
            assert 'mode="open"} ' in text and 'policy="RateLimitPolicy lb/ratelimitpolicy"' in text
            wait_for(lambda: "gave no decision" in a.stderr_text(), 5, "the fail-open warning")

        # Failing closed instead: 503, and nothing reaches the upstream. A port of its own: the gateway
        # just stopped may still hold the old one while it drains.
        before = len(ups[0].requests)
        closed = [*args, "--ratelimit-fail", "closed"]
        port = free_port()
        config = write_config(tmp_path / "closed.yaml", port, [ups[0].port], POLICY)
        with Gateway(config, [port], workers=1, args=closed):
            status, body, took = get(port)
            assert (status, body) == (503, b"rate limit unavailable\n") and took < 5
        assert len(ups[0].requests) == before


def test_without_redis_configured_a_global_limit_is_not_applied_and_the_check_says_so(tmp_path: Path) -> None:
    port = free_port()
    with upstreams(1) as ups:
        config = write_config(tmp_path / "gw.yaml", port, [ups[0].port], POLICY)
        started = time.monotonic()
        with Gateway(config, [port], workers=1) as gw:
            assert Counter(get(port)[0] for _ in range(30)) == {200: 30}
            assert "applied only by a gateway run with --ratelimit-redis" in gw.stderr_text()
        assert time.monotonic() - started < 30


def test_a_route_limit_that_refuses_spends_no_token_of_the_hostname_limit(tmp_path: Path, redis: RedisServer) -> None:
    # Hostname: 10 a minute (a token every 6 s); route: 2 every 4 s and one in the backlog (2 s
    # later); both Global. Of 6 requests at once the route forwards 3 and refuses 3, which the
    # hostname admitted: its quota must show 3 tokens spent (the TAT 18 s ahead), not 6 (36 s).
    import redis as redis_py

    host = edge_policy(
        "RateLimitPolicy",
        f"  hostnames:\n  - hostname: {HOST}\n"
        "    config: {requests: 10, statTimeWindow: 60, backlog: 1, mode: Global}\n",
    ).replace("name: ratelimitpolicy", "name: host")
    route = edge_policy(
        "RateLimitPolicy",
        "  http:\n  - match: {path: {type: PathPrefix, value: /}}\n"
        "    config: {requests: 2, statTimeWindow: 4, backlog: 1, mode: Global}\n",
    ).replace("name: ratelimitpolicy", "name: route")
    port = free_port()
    with upstreams(1) as ups:
        config = write_config(tmp_path / "gw.yaml", port, [ups[0].port], host, route)
        args = ["--ratelimit-redis", redis.url, "--ratelimit-redis-timeout", "1"]
        with Gateway(config, [port], workers=1, args=args), ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: get(port), range(6)))
    assert Counter(status for status, _, _ in answers) == {200: 3, 429: 3}
    client = redis_py.Redis(port=redis.port)
    (host_key,) = [k for k in client.keys("fsmfast:rl:*") if b"lb/host|" in k]
    pttl = client.pttl(host_key)  # the TAT's distance from now, plus 1 s
    client.close()
    assert 12_000 < pttl <= 19_000, pttl
