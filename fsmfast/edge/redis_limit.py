"""Fleet-wide rate limits (RateLimitPolicy ``mode: Global``, issue 20): one quota shared by every
gateway pointed at the same Redis (``--ratelimit-redis``), in the manner of Envoy's global rate-limit
service and Kong's Redis policy.

Each decision is one atomic round trip: a Lua script runs GCRA (as ``fsmfast.edge.ratelimit`` does
in the arena) on one key holding the theoretical arrival time, in microseconds of the Redis server's
own clock (``TIME``), so gateways on different machines agree on "now". The key expires once the
bucket is full again, so idle quotas cost Redis nothing. A request whose token is free within the
policy's backlog gets a slot and waits for it, as locally.

A decision that Redis does not give within ``--ratelimit-redis-timeout`` (or at all: Redis down,
refused, a protocol error) fails open by default: the request goes through, a warning is logged
(at most once every ten seconds per worker) and ``fsmfast_ratelimit_redis_failures_total`` counts
it; ``--ratelimit-fail closed`` answers 503 instead. The client is redis-py's asyncio client, made
once per worker on first use; each decision is one task on the worker's loop (only requests under a
Global limit pay for it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fsmfast.edge.ratelimit import Decision

log = logging.getLogger("fsmfast.edge")

# KEYS[1]: the quota. ARGV: emission interval, burst tolerance, the backlog's longest wait (µs).
# Returns {admitted (0/1), wait µs (until the slot, or until a token for a refusal), reset µs}.
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if tat - now > tolerance + max_wait then
  return {0, tat - tolerance - now, tat - now}
end
local new = tat + emission
redis.call('SET', KEYS[1], new, 'PX', math.floor((new - now) / 1000) + 1000)
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
return {1, wait, new - now}
"""

_US = 1_000_000
QUIET = 10.0  # seconds between two "Redis failed" warnings of one worker


class GlobalQuotas:
    """One worker's connection to the fleet's Redis."""

    __slots__ = ("_client", "_script", "_warned", "fail_closed", "failed", "timeout", "url")

    def __init__(self, url: str, timeout: float, fail_closed: bool) -> None:
        self.url = url
        self.timeout = timeout
        self.fail_closed = fail_closed
        self._client: Any = None
        self._script: Any = None
        self._warned = 0.0
        self.failed: Any = None  # called with (policy, why) on each failure (the worker's metrics)

    def _connect(self) -> Any:
        if self._script is None:
            import redis.asyncio  # only with --ratelimit-redis: an optional dependency (pip install fsmfast[redis])

            self._client = redis.asyncio.Redis.from_url(
                self.url, socket_timeout=max(self.timeout, 0.05), socket_connect_timeout=max(self.timeout, 0.05)
            )
            self._script = self._client.register_script(GCRA)
        return self._script

    async def take(self, key: str, requests: int, window: float, burst: int, max_wait: float) -> Decision | None:
        """The fleet's decision for one request under quota ``key``, or None when Redis did not give
        one in time (the caller fails open or closed)."""
        emission = max(1, -(-int(window * _US) // requests))
        tolerance = (burst - 1) * emission
        try:
            script = self._connect()
            admitted, wait, reset = await asyncio.wait_for(
                script(keys=[key], args=[emission, tolerance, int(max_wait * _US)]), self.timeout
            )
        except Exception as exc:  # timeout, refused, reset, a script error: all are "no answer"
            self._failure(key, exc)
            return None
        reset_s = max(0, int(reset)) / _US
        remaining = max(0, (tolerance + emission - max(0, int(reset))) // emission)
        return Decision(bool(admitted), max(0, int(wait)) / _US, remaining, reset_s, requests)

    def _failure(self, key: str, exc: BaseException) -> None:
        why = "timeout" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
        now = time.monotonic()
        if now - self._warned >= QUIET:
            self._warned = now
            action = "refusing (503)" if self.fail_closed else "letting requests through"
            log.warning("rate-limit Redis %s gave no decision for %s (%s): %s", self.url, key, why, action)
        if self.failed is not None:
            self.failed(key.split("|", 1)[0].removeprefix(KEY_PREFIX), "closed" if self.fail_closed else "open")


KEY_PREFIX = "fsmfast:rl:"


def quota_key(policy: str, scope: str, client: bytes | None = None) -> str:
    """The Redis key of a quota: the same in every gateway with the same configuration."""
    key = f"{KEY_PREFIX}{policy}|{scope}"
    return key if client is None else f"{key}|{client.decode('latin-1')}"
