"""Stub for the compiled twin of ``fsmfast.codec.http1`` (same names, same signatures)."""

from typing import Final

FRAME_NONE: Final = -1
FRAME_CHUNKED: Final = -2
FRAME_CLOSE: Final = -3

HOP_BY_HOP: Final[frozenset[bytes]]
GATEWAY_OWNED: Final[frozenset[bytes]]

class ResponseHead:
    @property
    def buf(self) -> bytes | None: ...
    def __init__(self) -> None: ...

def parse_content_length(value: bytes) -> int: ...
def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]: ...
def build_request_head(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    client_ip: bytes,
    proto: bytes,
    host: bytes,
    framing: int,
) -> bytes: ...
def build_response_head(
    http11: bool,
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    framing: int,
    keep_alive: bool,
) -> bytes: ...
def chunk(data: bytes) -> list[bytes]: ...
def scan_request(
    headers: list[tuple[bytes, bytes]], max_field: int
) -> tuple[bytes | None, int, bytes | None, bytes | None, bytes | None, tuple[int, str] | None]: ...
def valid_host(value: bytes) -> bool: ...
def scan_request_line(data: bytes) -> int: ...
def read_request_head(
    data: bytes, start: int, max_head: int, max_headers: int
) -> tuple[int, bytes, bytes, bool, list[tuple[bytes, bytes]], bool] | None: ...
def read_response_head(
    data: bytes, start: int, max_head: int, head: ResponseHead | None = None
) -> tuple[int, int, int, bool] | None: ...
def normalize_target(target: bytes) -> tuple[bytes, bytes, str | None]: ...
def response_framing(headers: list[tuple[bytes, bytes]]) -> tuple[int, bool]: ...
def normalize_host(value: bytes) -> bytes: ...
def parse_response_head(buf: bytes, start: int, end: int) -> tuple[int, bytes, list[tuple[bytes, bytes]]]: ...
def scan_response_head(buf: bytes, start: int, end: int) -> tuple[int, int, bool]: ...
def relay_response_head(
    buf: bytes,
    start: int,
    end: int,
    http11: bool,
    framing: int,
    keep_alive: bool,
    body_end: int = 0,
    head: ResponseHead | None = None,
) -> bytes: ...
