"""fsmfast.edge.redis_limit against a real redis-server (Debian's, on a loopback port): one script call
decides all of a request's global limits, all or nothing; the decisions asked in one loop iteration go
as one pipeline; no answer in time is None, counted. Nothing compiled is involved, so it runs the same
with FSMFAST_NO_EXTENSIONS=1.

``python -m tests.unit.test_redis_batch`` prints the micro-measure in ``redis_limit``'s docstring.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fsmfast import snapshot as s
from fsmfast.edge.hooks import UNAVAILABLE, RateLimitHook, edge_hooks
from fsmfast.edge.redis_limit import IN_FLIGHT, FleetLimit, GlobalQuotas, quota_key
from fsmfast.pipeline.decision import Delayed, LocalReply
from fsmfast.pipeline.hooks import PolicyRequest
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is installed by .ci/sysdeps")

HOST = "RateLimitPolicy ns/host"
ROUTE = "RateLimitPolicy ns/route"


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    pytest.importorskip("redis")
    with RedisServer() as server:
        yield server


def global_limit(policy: str, requests: int, backlog: int = 0, **extra: Any) -> s.RateLimit:
    return s.RateLimit(
        policy=policy, requests=requests, window=60, burst=requests, backlog=backlog, mode="Global", **extra
    )


def request(client: bytes = b"127.0.0.1") -> PolicyRequest:
    return PolicyRequest(b"GET", b"h", b"/", b"/", [], client, None)


def hook_of(edge: s.EdgeRule, fleet: GlobalQuotas) -> RateLimitHook:
    gate, hooks = edge_hooks(edge, None, 0, fleet)
    assert gate is None and len(hooks) == 1 and isinstance(hooks[0], RateLimitHook)
    return hooks[0]


async def decide(hook: RateLimitHook, req: PolicyRequest) -> Any:
    """What the exchange does with the hook's Delayed: wait for the future, then ``resolve`` it."""
    delayed = hook(req)
    assert isinstance(delayed, Delayed) and delayed.future is not None
    await delayed.future
    return delayed.resolve(delayed.future)


def tat(server: RedisServer, key: str) -> bytes:
    return server.call("GET", key)


def test_a_refusal_by_one_limit_charges_no_other(redis: RedisServer) -> None:
    # Host: 5 a minute; route: 1 a minute, no backlog. The second request passes the host limit
    # (4 left) but the route refuses it: the host's key must be as the first request left it.
    host = global_limit(HOST, 5, scope="hostname ns/r h")
    route = global_limit(ROUTE, 1, scope="match r/0", headers=(s.HeaderValue(name="X-Why", value="route"),))

    async def run() -> None:
        fleet = GlobalQuotas(redis.url, 1.0, False)
        hook = hook_of(s.EdgeRule(rate_limits=(host, route)), fleet)
        host_key, route_key = quota_key(HOST, host.scope), quota_key(ROUTE, route.scope)
        assert await decide(hook, request()) is None  # both gave a token at once
        host_after_one, route_after_one = tat(redis, host_key), tat(redis, route_key)
        assert host_after_one and route_after_one
        calls = redis.calls("evalsha", "eval")
        for _ in range(3):
            refused = await decide(hook, request())
            assert isinstance(refused, LocalReply)
            assert (refused.status, refused.text, refused.code) == (429, "rate limit exceeded", "rate_limited")
            assert refused.detail == f"rate limit exceeded ({ROUTE})"  # shown with detailed errors
            names = dict(refused.headers)
            assert names[b"X-Why"] == b"route"  # the route's refusal, not the host's
            assert names[b"RateLimit-Limit"] == b"1" and names[b"RateLimit-Remaining"] == b"0"
            assert 59 <= int(names[b"Retry-After"]) <= 60
        assert tat(redis, host_key) == host_after_one  # refused three times, never charged
        assert tat(redis, route_key) == route_after_one
        assert redis.calls("evalsha", "eval") == calls + 3  # one script call per request, not per limit

    asyncio.run(run())


def test_the_first_refusal_in_order_is_the_answer(redis: RedisServer) -> None:
    first = global_limit(HOST, 1, scope="first", headers=(s.HeaderValue(name="X-Which", value="first"),))
    second = global_limit(ROUTE, 1, scope="second", headers=(s.HeaderValue(name="X-Which", value="second"),))

    async def run() -> None:
        hook = hook_of(s.EdgeRule(rate_limits=(first, second)), GlobalQuotas(redis.url, 1.0, False))
        assert await decide(hook, request()) is None
        answer = await decide(hook, request())
        assert isinstance(answer, LocalReply) and dict(answer.headers)[b"X-Which"] == b"first"

    asyncio.run(run())


def test_concurrent_decisions_go_in_few_round_trips_and_admit_exactly(redis: RedisServer) -> None:
    # 300 requests at once, per client (3 clients, 40 a minute each, 5 in the backlog): 45 of each
    # client's 100 get a token or a slot, and they are asked in a handful of pipelines.
    spec = global_limit(HOST, 40, backlog=5, scope="batch", key=s.ClientKey(type="ClientIP"))

    async def run() -> None:
        fleet = GlobalQuotas(redis.url, 2.0, False)
        hook = hook_of(s.EdgeRule(rate_limits=(spec,)), fleet)
        clients = [f"10.0.0.{k % 3}".encode() for k in range(300)]
        answers = await asyncio.gather(*(decide(hook, request(c)) for c in clients))
        for c in set(clients):
            mine = [a for a, who in zip(answers, clients, strict=True) if who == c]
            waits = sorted(a for a in mine if not isinstance(a, LocalReply) and a is not None)
            assert sum(1 for a in mine if a is None) == 40  # a token at once
            assert len(waits) == 5 and waits[0] > 1.4 and waits[-1] <= 7.6  # backlog slots, 1.5 s apart
            assert sum(1 for a in mine if isinstance(a, LocalReply) and a.status == 429) == 55
        assert fleet.batches == 1  # all asked in one loop iteration: one pipeline

    asyncio.run(run())


def test_the_script_is_loaded_again_when_redis_lost_it(redis: RedisServer) -> None:
    # 1,000 a minute: each token moves the key's TAT 60 ms on, and its expiry (PX) with it.
    args = FleetLimit(1000, 60, 1000, 0.0).args
    key = "fsmfast:rl:t|reload"

    async def run() -> None:
        fleet = GlobalQuotas(redis.url, 1.0, False)
        first = await fleet.ask([key], args)  # the first ask of a worker: NOSCRIPT, loaded
        assert first is not None and first[0] == 1
        redis.call("SCRIPT", "FLUSH")  # a restarted Redis, as far as scripts go
        replies = await asyncio.gather(*(fleet.ask([key], args) for _ in range(5)))
        assert [r[0] if r else None for r in replies] == [1] * 5
        # Six tokens: the TAT is 360 ms ahead, the key lives 1 s past it. A request asked again
        # after NOSCRIPT counted twice would show 660 ms more.
        assert 1300 < int(redis.call("PTTL", key)) <= 1360

    asyncio.run(run())


async def silent_server() -> tuple[asyncio.Server, int]:
    """A TCP server that reads and never answers: a Redis that hangs."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_no_answer_in_time_is_none_counted_once_per_limit_and_batches_in_flight_are_bounded() -> None:
    async def run() -> None:
        server, port = await silent_server()
        fleet = GlobalQuotas(f"redis://127.0.0.1:{port}/0", 0.3, False)
        failed: list[tuple[str, str]] = []
        fleet.failed = lambda policy, mode: failed.append((policy, mode))
        started = time.monotonic()
        futures = []
        for k in range(IN_FLIGHT + 3):  # one ask per loop iteration: one batch each, if it could go
            futures.append(fleet.ask([quota_key("P", f"s{k}"), quota_key("Q", f"s{k}")], [1, 0, 0, 1, 0, 0]))
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert fleet.batches == IN_FLIGHT  # the rest wait for a batch to come back
        assert await asyncio.gather(*futures) == [None] * (IN_FLIGHT + 3)
        took = time.monotonic() - started
        assert 0.29 <= took < 1.5, took  # the first batches' timeout, then the rest's
        assert fleet.batches == IN_FLIGHT + 1  # the waiting ones went together
        assert sorted(failed) == sorted([("P", "open"), ("Q", "open")] * (IN_FLIGHT + 3))
        server.close()

    asyncio.run(run())


def test_redis_down_fails_open_or_closed_through_the_hook() -> None:
    async def run(fail_closed: bool) -> Any:
        # A port nobody listens on: refused at once.
        fleet = GlobalQuotas("redis://127.0.0.1:1/0", 0.5, fail_closed)
        hook = hook_of(s.EdgeRule(rate_limits=(global_limit(HOST, 5, scope="down"),)), fleet)
        return await decide(hook, request())

    assert asyncio.run(run(False)) is None
    assert asyncio.run(run(True)) is UNAVAILABLE


def measure(url: str, rounds: int = 4000) -> None:
    """Time per decision, one ask at a time and 64 at once, in this process (wall and CPU)."""

    async def run() -> None:
        fleet = GlobalQuotas(url, 1.0, False)
        args = FleetLimit(10**9, 1, 10**9, 0.0).args
        await fleet.ask(["fsmfast:rl:measure|warm"], args)
        for batch in (1, 64):
            keys = [[f"fsmfast:rl:measure|{k}"] for k in range(batch)]
            started, cpu = time.perf_counter(), time.process_time()
            for _ in range(rounds // batch):
                for future in [fleet.ask(key, args) for key in keys]:
                    await future
            n = rounds // batch * batch
            wall, cpu = (time.perf_counter() - started) / n * 1e6, (time.process_time() - cpu) / n * 1e6
            print(f"{batch} at once: {wall:.1f} us wall, {cpu:.1f} us CPU per decision")

    asyncio.run(run())


if __name__ == "__main__":
    with RedisServer() as server:
        measure(server.url)
