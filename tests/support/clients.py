"""Client threads that keep sending requests to a gateway until stopped: the traffic a test runs
while it rotates logs, kills an endpoint or reloads. A subclass says what one client does."""

from __future__ import annotations

import threading
from typing import TypeVar

T = TypeVar("T", bound="ClientThreads")


class ClientThreads:
    """``with Sub(port, clients) as load:`` runs ``Sub._run(i)`` in ``clients`` threads; leaving
    the block stops them (``stopping`` is set) and waits for them."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self: T) -> T:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self._threads:
            t.join(timeout=10)

    def _run(self, client: int) -> None:
        raise NotImplementedError
