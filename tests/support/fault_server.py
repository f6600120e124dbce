"""An HTTP/1.1 upstream that runs as its own process, so fault tests can kill it mid-exchange.

    python -m tests.support.fault_server PORT_FILE [--port N] [--certfile F --keyfile K]

Listens on 127.0.0.1:N (ephemeral by default; a restarted server takes its old port back),
writes the port to PORT_FILE once listening, and logs one
line per event to stdout (``got GET /stall``) so a test can wait for the moment to strike.
Paths:

- ``/ok``: 200 with a short body;
- ``/stall``: reads the request and never answers (kill it: a reset before the response);
- ``/stream?n=N``: ``Content-Length: N``, then the body in 64 KiB pieces 50 ms apart (kill it:
  a reset mid-body);
- ``/early``: answers 200 at once, without reading the request body (an upstream that
  answers before the body), then closes;
- ``/invalid``: a response with two different Content-Length values.
- ``/read-timeout?s=S``: reads the request body (Content-Length) with a read timeout of S
  seconds, as servers do; when the client's bytes stop for that long, closes without an answer.

Threads, blocking sockets, no parsing beyond the head: small enough to trust in a fault test.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs


def log(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def read_head(conn: socket.socket) -> bytes | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    return buf


def serve(conn: socket.socket) -> None:
    try:
        while True:
            head = read_head(conn)
            if head is None:
                return
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, target, _ = line.split(" ", 2)
            log(f"got {method} {target}")
            path, _, query = target.partition("?")
            if path == "/stall":
                time.sleep(3600)
            elif path == "/stream":
                n = int(parse_qs(query).get("n", ["1000000"])[0])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                sent = 0
                while sent < n:
                    k = min(65536, n - sent)
                    conn.sendall(b"s" * k)
                    sent += k
                    log(f"sent {sent}")
                    time.sleep(0.05)
            elif path == "/early":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nearly\n")
                return
            elif path == "/read-timeout":
                conn.settimeout(float(parse_qs(query).get("s", ["1"])[0]))
                want = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                got = len(head) - head.index(b"\r\n\r\n") - 4
                try:
                    while got < want:
                        data = conn.recv(65536)
                        if not data:
                            return
                        got += len(data)
                except TimeoutError:
                    log(f"read timeout after {got} of {want} body bytes")
                    return
                conn.settimeout(None)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            elif path == "/invalid":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
                return
            else:
                body = f"ok {target}\n".encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    except (OSError, ValueError):
        return
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port_file")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args()
    ctx = None
    if args.certfile:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.certfile, args.keyfile)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(128)
    tmp = Path(args.port_file + ".tmp")
    tmp.write_text(str(listener.getsockname()[1]))
    tmp.rename(args.port_file)
    while True:
        conn, _ = listener.accept()
        if ctx is not None:
            try:
                conn = ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log(f"tls error {exc}")
                conn.close()
                continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
