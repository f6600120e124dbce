"""Fleet-wide rate limits (RateLimitPolicy ``mode: Global``, issue 20): one quota shared by every
gateway pointed at the same Redis (``--ratelimit-redis``), in the manner of Envoy's global rate-limit
service and Kong's Redis policy.

One Lua script call decides all of a request's global limits at once, all or nothing: it runs GCRA
(as ``fsmfast.edge.ratelimit`` does in the arena) on each limit's key, which holds the theoretical
arrival time in microseconds of the Redis server's own clock (``TIME``, so gateways on different
machines agree on "now"); if any limit refuses, the first refusal is the answer and no key is
charged (a request never spends a token of one limit when another turns it away); otherwise every
key is charged and the answer is the longest wait. A key expires once its bucket is full again, so
idle quotas cost Redis nothing. A request whose token is free within the policy's backlog gets a
slot and waits for it, as locally.

Requests are batched per worker: a decision asked is queued with a future (no task per request),
and one ``call_soon`` flush sends everything asked in that loop iteration as one redis-py pipeline
(an EVALSHA per request, one round trip) under one timeout, in one task per batch. A batch in flight
does not hold back the next one, up to ``IN_FLIGHT`` of them.

A decision that Redis does not give within ``--ratelimit-redis-timeout`` (or at all: Redis down,
refused, a protocol error) fails open by default: the request goes through, a warning is logged
(at most once every ten seconds per worker) and ``fsmfast_ratelimit_redis_failures_total`` counts
it; ``--ratelimit-fail closed`` answers 503 instead. The client is redis-py's asyncio client, made
once per worker on first use; only requests under a Global limit pay for any of this.

Cost of one Global limit's decision, in the asking process (development machine, 2 cores shared,
redis-server on loopback; ``python -m tests.unit.test_redis_batch``; redis-py 8.2; the machine was
not quiet, so about ±10 %):

=====================================  ===============  ================
per decision                           1 ask at a time  64 asked at once
=====================================  ===============  ================
before: a task per request, wait_for   ~125 µs CPU      ~72 µs CPU
now, redis-py's Python parser          ~110 µs CPU      ~17 µs CPU
now, with hiredis (the redis extra)    ~105 µs CPU      ~9 µs CPU
=====================================  ===============  ================

One ask alone still pays a whole round trip through redis-py and the loop (the wait for the
reply, several wake-ups); asked together, requests share it. Before, a rule with two Global limits
paid two round trips in turn; now one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from fsmfast.edge.ratelimit import Decision

log = logging.getLogger("fsmfast.edge")

# KEYS[1..N]: a request's quotas, in order. ARGV: three numbers per key, in µs: emission interval,
# burst tolerance, the backlog's longest wait. Returns {1, 0, longest wait, 0} when every limit
# gives a token or a backlog slot (all keys charged), or {0, i, wait until a token, reset} for the
# first limit i (from 1) that refuses (nothing charged). A key given twice is charged twice (``seen``).
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local new = {}
local seen = {}
local longest = 0
for i, key in ipairs(KEYS) do
  local a = (i - 1) * 3
  local emission = tonumber(ARGV[a + 1])
  local tolerance = tonumber(ARGV[a + 2])
  local max_wait = tonumber(ARGV[a + 3])
  local tat = seen[key] or tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  if tat - now > tolerance + max_wait then
    return {0, i, tat - tolerance - now, tat - now}
  end
  new[i] = tat + emission
  seen[key] = new[i]
  if tat - tolerance - now > longest then longest = tat - tolerance - now end
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, new[i], 'PX', math.floor((new[i] - now) / 1000) + 1000)
end
return {1, 0, longest, 0}
"""

_US = 1_000_000
QUIET = 10.0  # seconds between two "Redis failed" warnings of one worker

# Batches of one worker in flight at once, each on its own pooled connection. More than one, so the
# requests asked while a batch is out go at once instead of after its round trip; few, because Redis
# runs scripts one at a time (more connections queue there, not here), and because when Redis is
# slow or gone every batch holds a connection (or an attempt to make one) for up to the timeout:
# the bound keeps that to a few sockets per worker. Requests asked meanwhile queue and go together
# when a batch returns, so they wait at most about twice the timeout.
IN_FLIGHT = 4

Reply = list[int]  # the script's answer for one request (see GCRA)


class FleetLimit:
    """One Global limit's arguments to the script, and its refusal as a Decision."""

    __slots__ = ("args", "emission", "requests", "tolerance")

    def __init__(self, requests: int, window: float, burst: int, max_wait: float) -> None:
        self.requests = requests
        self.emission = max(1, -(-int(window * _US) // requests))
        self.tolerance = (burst - 1) * self.emission
        self.args = (self.emission, self.tolerance, int(max_wait * _US))

    def refused(self, wait: int, reset: int) -> Decision:
        """The Decision of a refusal the script gave (µs until a token, until the bucket is full)."""
        reset = max(0, reset)
        remaining = max(0, (self.tolerance + self.emission - reset) // self.emission)
        return Decision(False, max(0, wait) / _US, remaining, reset / _US, self.requests)


class GlobalQuotas:
    """One worker's connection to the fleet's Redis, and its batch of decisions being asked."""

    __slots__ = (
        "_client", "_flushing", "_in_flight", "_queue", "_sending", "_sha", "_warned",
        "batches", "fail_closed", "failed", "timeout", "url",
    )  # fmt: skip

    def __init__(self, url: str, timeout: float, fail_closed: bool) -> None:
        self.url = url
        self.timeout = timeout
        self.fail_closed = fail_closed
        self._client: Any = None
        self._sha = ""
        self._warned = 0.0
        self.failed: Any = None  # called with (policy, why) on each failure (the worker's metrics)
        self._queue: list[tuple[Sequence[str], Sequence[int], asyncio.Future[Reply | None]]] = []
        self._flushing = False  # a flush is scheduled
        self._in_flight = 0
        self._sending: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self.batches = 0  # round trips sent (the tests count them)

    def ask(self, keys: Sequence[str], args: Sequence[int]) -> asyncio.Future[Reply | None]:
        """The fleet's decision for a request under the quotas ``keys`` (``args``: their limits'
        ``FleetLimit.args``, in order, flat), soon: the script's reply, or None when Redis did not give
        one in time (the caller fails open or closed). The future never holds an exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply | None] = loop.create_future()
        self._queue.append((keys, args, future))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        """Send what was asked since the last flush, as one batch (unless ``IN_FLIGHT`` batches are
        out: then the batch that returns first sends it)."""
        self._flushing = False
        if not self._queue or self._in_flight >= IN_FLIGHT:
            return
        batch = self._queue
        self._queue = []
        self._in_flight += 1
        self.batches += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Sequence[str], Sequence[int], asyncio.Future[Reply | None]]]) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:  # asyncio.timeout needs 3.11, and wait_for costs a task of its own
            nonlocal expired
            expired = True
            task.cancel()

        timer = loop.call_later(self.timeout, expire)
        replies: list[Any] | None = None
        try:
            replies = await self._round_trip(batch)
        except asyncio.CancelledError:
            if not expired:
                raise  # the loop is closing, not our timer
            self._failure(batch, asyncio.TimeoutError())
        except Exception as exc:  # refused, reset, a protocol error: all are "no answer"
            self._failure(batch, exc)
        finally:
            timer.cancel()
            self._in_flight -= 1
            if self._queue and not self._flushing:
                self._flushing = True
                loop.call_soon(self._flush)
        if replies is None:
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)
            return
        for (keys, args, future), reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):  # this request's script failed (a key of another type...)
                self._failure([(keys, args, future)], reply)
                reply = None
            if not future.done():
                future.set_result(reply)

    async def _round_trip(self, batch: list[tuple[Sequence[str], Sequence[int], Any]]) -> list[Any]:
        """One pipeline of EVALSHAs, one reply (or error) per request. redis-py's Script objects in a
        pipeline would ask SCRIPT EXISTS before every batch (a second round trip each time), so the
        script is loaded here only when Redis says NOSCRIPT (first use, a restarted Redis), and
        only the requests that got it are asked again (they ran nothing)."""
        from redis.exceptions import NoScriptError

        client = self._connect()
        replies = await self._pipeline(client, batch)
        missing = [k for k, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            self._sha = await client.script_load(GCRA)
            again = await self._pipeline(client, [batch[k] for k in missing])
            for k, reply in zip(missing, again, strict=True):
                replies[k] = reply
        if len(replies) != len(batch):  # never seen; a request must not wait for ever on it
            raise RuntimeError(f"{len(replies)} replies to {len(batch)} script calls")
        return replies

    async def _pipeline(self, client: Any, batch: list[tuple[Sequence[str], Sequence[int], Any]]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        sha = self._sha
        for keys, args, _ in batch:
            pipe.pipeline_execute_command("EVALSHA", sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    def _connect(self) -> Any:
        if self._client is None:
            # Only with --ratelimit-redis: an optional dependency (pip install fsmfast[redis]).
            import hashlib

            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # No retries: a pipeline sent again after a dropped connection may charge its requests
            # twice, and the timeout (milliseconds) leaves no time for one anyway. No socket_timeout:
            # the batch's own timer bounds the round trip (a cancelled read drops its connection),
            # and redis-py would spend a wait_for (a task) on each send for it.
            self._client = redis.asyncio.Redis.from_url(
                self.url,
                socket_timeout=None,
                socket_connect_timeout=max(self.timeout, 0.05),
                retry=Retry(NoBackoff(), 0),
            )
            self._sha = hashlib.sha1(GCRA.encode()).hexdigest()
        return self._client

    def _failure(self, batch: Sequence[tuple[Sequence[str], Any, Any]], exc: BaseException) -> None:
        why = "timeout" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
        now = time.monotonic()
        if now - self._warned >= QUIET:
            self._warned = now
            action = "refusing (503)" if self.fail_closed else "letting requests through"
            what = batch[0][0][0] if len(batch) == 1 else f"{len(batch)} requests"
            log.warning("rate-limit Redis %s gave no decision for %s (%s): %s", self.url, what, why, action)
        if self.failed is not None:
            mode = "closed" if self.fail_closed else "open"
            for keys, _, _ in batch:
                for key in keys:
                    self.failed(key.split("|", 1)[0].removeprefix(KEY_PREFIX), mode)


KEY_PREFIX = "fsmfast:rl:"


def quota_key(policy: str, scope: str, client: bytes | None = None) -> str:
    """The Redis key of a quota: the same in every gateway with the same configuration."""
    key = f"{KEY_PREFIX}{policy}|{scope}"
    return key if client is None else f"{key}|{client.decode('latin-1')}"
