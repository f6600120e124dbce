"""The HTTP/1 codec: the one import point for its functions and constants.

- ``fsmfast.codec.http1`` is the specification: pure Python, the rules and their RFC references;
- ``fsmfast._parser`` is its compiled twin (``_parser.pyx``; ``_parser.pxd`` declares it for the
  compiled proxy modules, which call it in C, and holds the framing constants as a C enum;
  ``_parser.pyi`` is its stub). It returns byte-identical results (tests/unit/test_parser_twin.py),
  and tests/unit/test_codec_api.py keeps the four API descriptions in step.

This package exports whichever of the two ``fsmfast._compiled.extension`` selects (the compiled one
unless FSMFAST_NO_EXTENSIONS is set or it is not built), functions and constants alike: import them
from here, never from either implementation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fsmfast._compiled import extension
from fsmfast.codec import http1

if TYPE_CHECKING:
    impl = http1
else:
    impl = extension("fsmfast._parser") or http1

USING_EXTENSION = impl is not http1

# The constants are the same values in both (a C enum in _parser.pxd); the spec's are exported.
FRAME_NONE = http1.FRAME_NONE
FRAME_CHUNKED = http1.FRAME_CHUNKED
FRAME_CLOSE = http1.FRAME_CLOSE
HOP_BY_HOP = http1.HOP_BY_HOP
GATEWAY_OWNED = http1.GATEWAY_OWNED

ResponseHead = impl.ResponseHead
parse_content_length = impl.parse_content_length
connection_tokens = impl.connection_tokens
build_request_head = impl.build_request_head
build_response_head = impl.build_response_head
chunk = impl.chunk
scan_request = impl.scan_request
response_framing = impl.response_framing
parse_response_head = impl.parse_response_head
scan_response_head = impl.scan_response_head
relay_response_head = impl.relay_response_head
normalize_target = impl.normalize_target
normalize_host = impl.normalize_host
scan_request_line = impl.scan_request_line
read_request_head = impl.read_request_head
read_response_head = impl.read_response_head
valid_host = impl.valid_host
valid_request_id = impl.valid_request_id
valid_traceparent = impl.valid_traceparent

__all__ = [
    "FRAME_CHUNKED",
    "FRAME_CLOSE",
    "FRAME_NONE",
    "GATEWAY_OWNED",
    "HOP_BY_HOP",
    "USING_EXTENSION",
    "ResponseHead",
    "build_request_head",
    "build_response_head",
    "chunk",
    "connection_tokens",
    "impl",
    "normalize_host",
    "normalize_target",
    "parse_content_length",
    "parse_response_head",
    "read_request_head",
    "read_response_head",
    "relay_response_head",
    "response_framing",
    "scan_request",
    "scan_request_line",
    "scan_response_head",
    "valid_host",
    "valid_request_id",
    "valid_traceparent",
]
