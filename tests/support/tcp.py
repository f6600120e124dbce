"""A TCP echo origin and a client round trip through an L4 port: the L4 tests' and the edge tests'
(a port's byte rate)."""

from __future__ import annotations

import socket
import ssl
import threading


class Echo:
    """A TCP server that sends ``<name>\\n`` and then echoes everything until the client's EOF."""

    def __init__(self, name: str, tls: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.tls = tls
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Echo:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=2)
        self.sock.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.sendall(f"{self.name}\n".encode())
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
            if self.tls is None:
                conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()


def tcp_roundtrip(port: int, payload: bytes) -> tuple[str, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = sock.makefile("rb")
        name = reader.readline().decode().strip()
        got = bytearray()
        done = threading.Event()

        def drain() -> None:
            while True:
                data = reader.read1(1 << 20)
                if not data:
                    break
                got.extend(data)
            done.set()

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        view = memoryview(payload)
        for i in range(0, len(payload), 1 << 20):
            sock.sendall(view[i : i + (1 << 20)])
        sock.shutdown(socket.SHUT_WR)  # half-close: the echo answers everything, then closes
        assert done.wait(30), f"only {len(got)} of {len(payload)} bytes came back"
    return name, bytes(got)
