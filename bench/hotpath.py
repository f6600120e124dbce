"""Per-request Python cost of the proxy core, without sockets: a repeatable profile target.

A ClientConnection and an UpstreamConnection are wired to in-memory transports; each
iteration feeds one request head, which the proxy forwards, then one response, which it
relays. What remains is exactly fsmfast's own work per proxied request (parsing, routing,
header rewriting, state changes), free of kernel and load-generator noise:

    python -m bench.hotpath                 # µs per request, both implementations
    valgrind --tool=callgrind python -m bench.hotpath --iterations 2000 --once
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

REQUEST = b"GET /get?x=1 HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 18:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n"
)


class MemoryTransport:
    """Just enough of a uvloop transport for the protocols: collects what is written."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        self.written: list[bytes] = []
        self.peer = peer
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, pieces: list[bytes]) -> None:
        self.written.extend(pieces)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def build_context(loop: asyncio.AbstractEventLoop):
    from fsmfast.settings import Settings
    from fsmfast.snapshot import SCHEMA, Backend, BackendRef, Endpoint, Listener, PathMatch, Rule, Snapshot, VirtualHost
    from fsmfast.worker.context import Context

    snap = Snapshot(
        schema=SCHEMA,
        generation=1,
        listeners=(
            Listener(
                port=8000,
                protocol="HTTP",
                names=("b/gw/http",),
                vhosts=(
                    VirtualHost(
                        hostname="bench.test",
                        rules=(
                            Rule(
                                name="httproute/b/r/rule/0/match/0",
                                path=PathMatch(type="PathPrefix", value="/"),
                                backends=(BackendRef(weight=1, backend="b/up:80"),),
                            ),
                        ),
                    ),
                ),
            ),
        ),
        backends={"b/up:80": Backend(name="b/up:80", endpoints=(Endpoint(host="127.0.0.1", port=19001),))},
    )
    ctx = Context(loop, Settings(config_path="", access_log=False), 0)
    ctx.apply(snap)
    return ctx


def run(iterations: int) -> float:
    from fsmfast.proxy.downstream import ClientConnection
    from fsmfast.proxy.upstream import UpstreamConnection

    loop = asyncio.new_event_loop()
    ctx = build_context(loop)
    pool = ctx.pools[("127.0.0.1", 19001, None)]
    up = UpstreamConnection(pool)
    up_t = MemoryTransport(("127.0.0.1", 19001))
    up.connection_made(up_t)  # type: ignore[arg-type]
    pool.give_back(up)
    client = ClientConnection(ctx, 8000)
    client_t = MemoryTransport()
    client.connection_made(client_t)  # type: ignore[arg-type]
    start = time.perf_counter()
    for _ in range(iterations):
        client.data_received(REQUEST)
        up.data_received(RESPONSE)
        if len(client_t.written) > 1000:
            client_t.written.clear()
            up_t.written.clear()
    elapsed = time.perf_counter() - start
    assert client_t.written and client_t.written[-1].endswith(b"hello world\n"), client_t.written[-3:]
    loop.close()
    return elapsed / iterations * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50_000)
    parser.add_argument("--once", action="store_true", help="one run in this process (for callgrind)")
    args = parser.parse_args(argv)
    if args.once:
        print(f"{run(args.iterations):.2f} us/request")
        return 0
    for label, env in (("compiled", {}), ("pure-Python", {"FSMFAST_NO_EXTENSIONS": "1"})):
        best = min(
            float(
                subprocess.run(
                    [sys.executable, "-m", "bench.hotpath", "--once", "--iterations", str(args.iterations)],
                    env={**os.environ, **env},
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()[0]
            )
            for _ in range(3)
        )
        print(f"{label:12s} {best:6.2f} us/request (best of 3, {args.iterations} requests)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
