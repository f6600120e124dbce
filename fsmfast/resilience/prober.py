"""Active health checks, run by the workers on their own loops, off the request path.

One prober per endpoint per machine: worker ``index`` of ``workers`` probes the endpoints whose
health words start at a base with ``base // HEALTH_CELLS % workers == index``, and writes the
result into the arena (``fsmfast.resilience.health``), where every worker reads it. N workers
therefore send one probe per endpoint per ``interval``, not N. The base, not the endpoint, picks
the worker: the master assigns it and keeps it across reloads, so an endpoint keeps its prober.

A probe, every ``interval`` seconds (jittered by up to 10 % either way, so endpoints are not
probed in lock step; the first one within a second of the snapshot that asks for it):

- TCP (``path`` unset): the connection opens, and the TLS handshake completes when the Service
  port has upstream TLS.
- HTTP (``path`` set): ``GET path HTTP/1.1`` with ``Host`` the upstream TLS ``server_name`` when
  there is one, else the endpoint's ``host:port``, ``Connection: close`` and ``User-Agent:
  fsmfast-health-check``. It passes when any of the policy's matches holds: the status is one of
  ``status_codes`` (any 2xx when the match lists none), ``body`` is in the first 64 KiB of the
  body, and every ``headers`` entry has a field of that name with exactly that value.
- Over the Service port's upstream TLS, with its trust, SNI, subjectAltNames and client
  certificate (FSM probed in plain HTTP, so a plaintext answer on a TLS port passed there); a
  policy whose ``error`` is set fails every probe with that reason.
- A probe that has not finished in min(interval, 5) seconds fails ("no answer in ...").
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from typing import Any

from fsmfast.resilience.health import HEALTH_CELLS, Cells, EndpointHealth
from fsmfast.snapshot import Backend, Endpoint, HealthCheck, HealthMatch, Snapshot, UpstreamTLS
from fsmfast.tls import upstream as tlsmod

log = logging.getLogger("fsmfast.health")

MAX_TIMEOUT = 5.0  # seconds: a probe's timeout is min(interval, this)
FIRST_WITHIN = 1.0  # seconds: the first probe of a new endpoint comes within this of apply()
JITTER = 0.1  # each interval is interval * (1 +- JITTER)
BODY_LIMIT = 64 * 1024  # bytes of the body a body match reads
HEAD_LIMIT = 64 * 1024  # a longer response head fails the probe

_ANY_2XX = HealthMatch()  # the match of a check with a path and no matches (the compiler adds 200)

# What a worker does with a transition: (backend name, endpoint address, healthy).
ChangeHook = Callable[[str, str, bool], None]


class _Failed(Exception):
    """A probe failed; the message says why."""


class _Target:
    """One endpoint this worker probes. ``policy`` and ``tls`` follow the latest snapshot; the task
    reads them at each probe, so a reload that only changes them keeps the schedule."""

    __slots__ = ("address", "backend", "endpoint", "health", "policy", "ssl_error", "sslctx", "task", "tls")

    def __init__(self, backend: Backend, endpoint: Endpoint, health: EndpointHealth, policy: HealthCheck) -> None:
        self.backend = backend.name
        self.endpoint = endpoint
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        self.address = f"{host}:{endpoint.port}"
        self.health = health
        self.policy = policy
        self.tls: UpstreamTLS | None = None
        self.sslctx: ssl.SSLContext | None = None
        self.ssl_error: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.update(backend, health, policy)

    def update(self, backend: Backend, health: EndpointHealth, policy: HealthCheck) -> None:
        self.health = health
        self.policy = policy
        if backend.tls != self.tls:
            self.tls = backend.tls
            self.sslctx = None
            self.ssl_error = None

    def context(self) -> ssl.SSLContext:
        """The TLS client context, built once per trust (as the upstream pool does)."""
        tls = self.tls
        assert tls is not None
        if tls.error:
            raise _Failed(f"{tls.policy}: {tls.error}")
        if self.sslctx is None and self.ssl_error is None:
            try:
                self.sslctx = tlsmod.client_context(tls)
            except (ssl.SSLError, ValueError, OSError) as exc:
                self.ssl_error = f"cannot load TLS material of {tls.policy}: {tlsmod.describe_error(exc)}"
        if self.sslctx is None:
            raise _Failed(self.ssl_error or "TLS context unavailable")
        return self.sslctx


class Prober:
    """The active checks worker ``index`` of ``workers`` runs; ``cells`` is ``Arena.cells``.

    ``apply(snapshot)`` on every snapshot, ``close()`` when the worker stops. ``probes`` counts
    probes per (backend, "passed" | "failed"); ``on_change``, when set, hears every transition
    this worker's probes make.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, index: int, workers: int, cells: Cells) -> None:
        if not 0 <= index < workers:
            raise ValueError(f"worker index {index} is outside 0..{workers - 1}")
        self.loop = loop
        self.index = index
        self.workers = workers
        self.cells = cells
        self.on_change: ChangeHook | None = None
        # The worker's metrics (fsmfast.metrics.counters.WorkerStats), counting every probe's result.
        self.stats: Any = None
        self.probes: dict[tuple[str, str], int] = {}
        self._targets: dict[tuple[str, str, int, int], _Target] = {}

    def mine(self, base: int) -> bool:
        return base // HEALTH_CELLS % self.workers == self.index

    @property
    def endpoints(self) -> list[tuple[str, str]]:
        """(backend, address) of every endpoint this worker probes."""
        return [(t.backend, t.address) for t in self._targets.values()]

    def apply(self, snapshot: Snapshot) -> None:
        """Probe what ``snapshot`` asks of this worker: keep the endpoints that stay (same backend,
        address and cells), start the new ones, stop the rest."""
        wanted: dict[tuple[str, str, int, int], tuple[Backend, Endpoint, EndpointHealth, HealthCheck]] = {}
        for backend in snapshot.backends.values():
            res = backend.resilience
            if res is None or res.health is None or res.cells is None:
                continue
            bases = res.cells.endpoints
            if len(bases) != len(backend.endpoints):
                continue  # the master found no room for them: not checked, never out
            for endpoint, base in zip(backend.endpoints, bases, strict=True):
                if base >= 0 and self.mine(base):
                    key = (backend.name, endpoint.host, endpoint.port, base)
                    wanted[key] = (backend, endpoint, EndpointHealth(self.cells, (base,), res.health), res.health)
        for key in [k for k in self._targets if k not in wanted]:
            self._stop(self._targets.pop(key))
        for key, (backend, endpoint, health, policy) in wanted.items():
            target = self._targets.get(key)
            if target is not None:
                target.update(backend, health, policy)
                continue
            target = _Target(backend, endpoint, health, policy)
            target.task = self.loop.create_task(self._run(target))
            self._targets[key] = target

    def close(self) -> None:
        for target in self._targets.values():
            self._stop(target)
        self._targets.clear()

    @staticmethod
    def _stop(target: _Target) -> None:
        if target.task is not None:
            target.task.cancel()
            target.task = None

    async def _run(self, target: _Target) -> None:
        loop = self.loop
        await asyncio.sleep(random.uniform(0.0, min(FIRST_WITHIN, float(target.policy.interval))))
        while True:
            started = loop.time()
            policy = target.policy
            reason = await _probe(target, policy)
            self._record(target, reason)
            delay = policy.interval * random.uniform(1.0 - JITTER, 1.0 + JITTER)
            await asyncio.sleep(max(0.0, started + delay - loop.time()))

    def _record(self, target: _Target, reason: str | None) -> None:
        key = (target.backend, "passed" if reason is None else "failed")
        self.probes[key] = self.probes.get(key, 0) + 1
        if self.stats is not None:
            self.stats.event("health_check", target.backend, "pass" if reason is None else "fail")
        change = target.health.probed(0, reason is None, int(time.monotonic() * 1000))
        if reason is not None and change == 0:
            log.debug("backend %s endpoint %s failed a health check: %s", target.backend, target.address, reason)
        if change < 0:
            log.warning(
                "backend %s endpoint %s is out after %d failed health checks: %s",
                target.backend,
                target.address,
                target.health.probe_failures(0),
                reason,
            )
        elif change > 0:
            log.warning("backend %s endpoint %s is back (health check passed)", target.backend, target.address)
        if change and self.on_change is not None:
            try:
                self.on_change(target.backend, target.address, change > 0)
            except Exception:  # the metrics' hook must not end this endpoint's probing
                log.exception("health change hook failed")


async def _probe(target: _Target, policy: HealthCheck) -> str | None:
    """One probe of ``target``: None when it passed, else why it failed."""
    timeout = min(float(policy.interval), MAX_TIMEOUT)
    try:
        return await asyncio.wait_for(_attempt(target, policy), timeout)
    except _Failed as exc:
        return str(exc)
    except TimeoutError:
        return f"no answer in {timeout:g}s"
    except Exception as exc:  # a surprise must not end this endpoint's probing
        log.exception("health check of backend %s endpoint %s broke", target.backend, target.address)
        return f"probe failed: {exc!r}"


async def _attempt(target: _Target, policy: HealthCheck) -> None:
    endpoint = target.endpoint
    tls = target.tls
    sslctx = target.context() if tls is not None else None
    try:
        # The context's wrap_bio sends the configured SNI (or none), whatever host we pass here.
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port, ssl=sslctx, limit=HEAD_LIMIT)
    except ssl.SSLError as exc:
        raise _Failed(f"TLS handshake failed: {tlsmod.describe_error(exc)}") from None
    except OSError as exc:
        raise _Failed(f"connect to {target.address} failed: {_strerror(exc)}") from None
    try:
        if tls is not None:
            sslobj = writer.get_extra_info("ssl_object")
            problem = tlsmod.check_subject_alt_names(tls, sslobj) if sslobj is not None else None
            if problem:
                raise _Failed(f"TLS verification failed: {problem}")
        if policy.path is None:
            return
        host = tls.server_name if tls is not None and tls.server_name else target.address
        writer.write(
            f"GET {policy.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fsmfast-health-check\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        matches = policy.matches or (_ANY_2XX,)
        try:
            status, headers, body = await _response(reader, any(m.body is not None for m in matches))
        except ssl.SSLError as exc:
            raise _Failed(f"TLS failed: {tlsmod.describe_error(exc)}") from None
        except OSError as exc:
            raise _Failed(f"connection to {target.address} failed: {_strerror(exc)}") from None
        problem = _mismatch(matches, status, headers, body)
        if problem:
            raise _Failed(f"GET {policy.path} answered {status}: {problem}")
    finally:
        writer.close()


def _strerror(exc: OSError) -> str:
    # The system's words: asyncio's own loop says "Connect call failed (...)" where uvloop says
    # "Connection refused".
    return os.strerror(exc.errno) if exc.errno else str(exc) or exc.__class__.__name__


async def _response(reader: asyncio.StreamReader, want_body: bool) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, header fields (lower-case names) and up to BODY_LIMIT bytes of the body (only when
    ``want_body``) of the response, skipping interim 1xx ones."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise _Failed(f"response head longer than {HEAD_LIMIT} bytes") from None
        except asyncio.IncompleteReadError as exc:
            what = "truncated response head" if exc.partial else "connection closed before a response"
            raise _Failed(what) from None
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise _Failed(f"not an HTTP/1 response: {lines[0][:80]!r}")
        status = int(code)
        if not 100 <= status < 200 or status == 101:
            break
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip().lower(), value.strip(" \t")))
    if not want_body or status in (204, 304):
        return status, headers, b""
    fields = dict(headers)
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return status, headers, await _chunked(reader)
    length = fields.get("content-length")
    if length is not None and length.isdigit():
        want = min(int(length), BODY_LIMIT)
        try:
            return status, headers, await reader.readexactly(want)
        except asyncio.IncompleteReadError as exc:
            return status, headers, exc.partial
    body = bytearray()  # delimited by the close
    while len(body) < BODY_LIMIT:
        data = await reader.read(BODY_LIMIT - len(body))
        if not data:
            break
        body += data
    return status, headers, bytes(body)


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    try:
        while len(body) < BODY_LIMIT:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                break
            body += await reader.readexactly(min(size, BODY_LIMIT - len(body)))
            if len(body) >= BODY_LIMIT:
                break
            await reader.readexactly(2)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        pass  # a broken or cut body: match what arrived
    return bytes(body[:BODY_LIMIT])


def _mismatch(matches: tuple[HealthMatch, ...], status: int, headers: list[tuple[str, str]], body: bytes) -> str | None:
    """None when any match holds, else why the first one does not."""
    first: str | None = None
    for match in matches:
        problem = _check(match, status, headers, body)
        if problem is None:
            return None
        first = first or problem
    if len(matches) > 1:
        return f"none of the {len(matches)} matches holds (the first: {first})"
    return first


def _check(match: HealthMatch, status: int, headers: list[tuple[str, str]], body: bytes) -> str | None:
    if match.status_codes:
        if status not in match.status_codes:
            return "expected " + ", ".join(str(c) for c in match.status_codes)
    elif not 200 <= status < 300:
        return "expected a 2xx status"
    if match.body is not None and match.body.encode() not in body:
        return f"body does not contain {match.body!r}"
    for want in match.headers:
        name = want.name.lower()
        values = [v for k, v in headers if k == name]
        if want.value not in values:
            got = f"{values[0]!r}" if values else "absent"
            return f"header {want.name} is {got}, expected {want.value!r}"
    return None
