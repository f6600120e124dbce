"""Picks the Cython hot paths or their pure-Python twins, once, at import.

``FSMFAST_NO_EXTENSIONS=1`` forces the pure-Python twins (the test suite runs both;
the switch is ``fsmfast._compiled.EXTENSIONS_OFF``).
A missing extension falls back with one warning rather than failing: a source checkout
without a compiler still runs, only slower.
"""

from __future__ import annotations

import warnings

from fsmfast._compiled import EXTENSIONS_OFF
from fsmfast.proxy import headers as _pure

USING_EXTENSION = False

if EXTENSIONS_OFF:
    impl = _pure
else:
    try:
        from fsmfast import _parser as impl  # type: ignore[no-redef]

        USING_EXTENSION = True
    except ImportError as exc:  # pragma: no cover - depends on the build
        warnings.warn(f"fsmfast._parser is not built ({exc}); using the pure-Python twin", stacklevel=1)
        impl = _pure

parse_content_length = impl.parse_content_length
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


def describe() -> str:
    """What runs compiled in this process, for reports and test headers."""
    from fsmfast._compiled import compiled_modules
    from fsmfast.tls.link import direct_unavailable

    parts = ["fsmfast._parser"] if USING_EXTENSION else []
    parts += ["tls._records"] if direct_unavailable() is None else []
    parts += [n.removeprefix("fsmfast.") for n in compiled_modules()]
    return f"compiled {', '.join(parts)}" if parts else "pure-Python twins"


__all__ = [
    "USING_EXTENSION",
    "build_request_head",
    "build_response_head",
    "chunk",
    "describe",
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
]
