"""The floor: a bare byte relay on uvloop, the least CPU per request any proxy built the way fsmfast is can spend.

fsmfast's data plane is uvloop with ``asyncio.Protocol`` callbacks (the design fixes that). This relay keeps
exactly that shape and drops everything else: no HTTP parsing, no routing, no header rewriting, no pool
(each client connection gets its own upstream connection, opened once). Per keep-alive request it does
what no proxy on uvloop can avoid: uvloop reads the request and calls ``data_received``, which writes it
to the upstream transport; the same for the response. Measured in the same run as nginx (``--systems
...,floor``), it shows how much of fsmfast's CPU per request is the event loop's and the kernel's, and
how much is fsmfast's own work on top.

Only S1 compares like with like: keep-alive, no TLS, one route. Started by the harness as
``python -m bench.floor LISTEN_PORT UPSTREAM_PORT [ADDRESS]``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.early: list[bytes] = []  # what arrives before the upstream connection is open
        self.up: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have Transport's methods without subclassing it: a cast, not a check.
        self.transport = cast(asyncio.Transport, transport)
        # Once per client connection, never per request: keep-alive runs reuse it.
        self.opening = asyncio.get_running_loop().create_task(self.open())

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            up, _ = await loop.create_connection(lambda: Upstream(self), *self.upstream)
        except OSError:
            self.transport.close()
            return
        if self.transport.is_closing():
            up.close()
            return
        self.up = up
        up.writelines(self.early)
        self.early = []

    def data_received(self, data: bytes) -> None:
        if self.up is None:
            self.early.append(data)
        else:
            self.up.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.up is not None:
            self.up.close()


async def serve(port: int, upstream_port: int, address: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client((address, upstream_port)), address, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m bench.floor LISTEN_PORT UPSTREAM_PORT [ADDRESS]", file=sys.stderr)
        return 2
    address = argv[2] if len(argv) == 3 else "127.0.0.1"
    uvloop.run(serve(int(argv[0]), int(argv[1]), address))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
