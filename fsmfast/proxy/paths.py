"""Request-target normalization: the one place that decides which path a request has.

Routing matches the normalized path and the upstream receives the normalized target, so the
two cannot disagree: no request routes as ``/public/...`` and then means ``/admin`` upstream.
``normalize_target`` is the pure-Python specification; ``fsmfast/_parser.pyx`` has a twin that
scans in C and calls ``normalize_slow`` from here for the rare target that needs rewriting.

Rules for an origin-form target (``/path?query``), decided like nginx's location matching
and Envoy's ``normalize_path`` + ``merge_slashes``, with every doubt resolved by refusing:

- refused anywhere: a fragment (``#``), ``"``, ``<``, ``>``, control characters, space,
  DEL and non-ASCII bytes (browsers percent-encode all of them);
- refused in the path: ``\\`` (a separator to Windows servers; browsers send ``/``) and a
  ``%`` not followed by two hex digits;
- in the path, ``%XX`` of an unreserved character (``A-Z a-z 0-9 - . _ ~``) is decoded, so
  ``%2e%2e`` is ``..``; other escapes keep their encoding with upper-case hex (``%2f`` ->
  ``%2F``): an encoded ``/`` is data, not a separator (``group%2Fproject`` stays one segment);
- ``//`` runs become one ``/``; ``.`` and ``..`` segments are removed (RFC 3986 §5.2.4); a
  ``..`` above the root is refused (nginx answers 400 too);
- a ``.`` or ``..`` next to an encoded separator (``..%2F``, ``%5C..``) is refused: it cannot be
  normalized without decoding the separator, and a server that decodes it would see a
  traversal the router never saw;
- the query is forwarded untouched (apart from the character check).

The result is ``(path, target, problem)``: ``path`` for routing (no query), ``target`` for the
upstream, ``problem`` None or why the request must be refused with 400. A target that needs no
change is returned as the same object.
"""

from __future__ import annotations

import re

UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
HEXDIGITS = frozenset(b"0123456789ABCDEFabcdef")
# Refused anywhere in the target (llhttp already refuses CTL, SP and non-ASCII; checked again here
# because the absolute-form path comes from httptools.parse_url).
BAD_ANY = frozenset(b'#"<>\x7f' + bytes(range(0x21)) + bytes(range(0x80, 0x100)))
BAD_PATH = BAD_ANY | {0x5C}  # "\"
# The same sets as regular expressions: the scan then runs in C in the pure twin too.
_BAD_ANY_RE = re.compile(b"[" + b"".join(re.escape(bytes([c])) for c in sorted(BAD_ANY)) + b"]")
_BAD_PATH_RE = re.compile(b"[" + b"".join(re.escape(bytes([c])) for c in sorted(BAD_PATH)) + b"]")
# Anything that may need a second look: a byte outside the usual ones (a refused one, "%"), "//", "/.".
_LOOK = re.compile(rb"[^A-Za-z0-9\-._~!$&'()*+,;=:@/?]|//|/\.").search

BAD_CHAR = "invalid character in request-target"
BAD_ESCAPE = "invalid percent-encoding in request path"
ABOVE_ROOT = "request path goes above the root"
HIDDEN_DOTS = "dot-segment next to an encoded separator in request path"


def normalize_target(target: bytes) -> tuple[bytes, bytes, str | None]:
    """``(path, target, problem)`` of an origin-form request-target; see the module docstring."""
    q = target.find(b"?")
    path = target if q < 0 else target[:q]
    if _LOOK(target) is None:
        return path, target, None  # the usual target: nothing to refuse or rewrite, found in C
    if (q >= 0 and _BAD_ANY_RE.search(target, q + 1) is not None) or _BAD_PATH_RE.search(path) is not None:
        return path, target, BAD_CHAR
    if b"%" not in path and b"//" not in path and b"/." not in path:
        return path, target, None
    return normalize_slow(path, target, q)


def normalize_slow(path: bytes, target: bytes, q: int) -> tuple[bytes, bytes, str | None]:
    """The rewriting part, for a path already free of refused characters (shared by both twins)."""
    out = bytearray()
    i = 0
    n = len(path)
    while i < n:
        c = path[i]
        if c != 0x25:
            out.append(c)
            i += 1
            continue
        if i + 2 >= n:
            return path, target, BAD_ESCAPE
        h1, h2 = path[i + 1], path[i + 2]
        if h1 not in HEXDIGITS or h2 not in HEXDIGITS:
            return path, target, BAD_ESCAPE
        value = int(path[i + 1 : i + 3], 16)
        if value in UNRESERVED:
            out.append(value)
        else:
            out += b"%" + path[i + 1 : i + 3].upper()
        i += 3
    segments = bytes(out).split(b"/")[1:]  # the path starts with "/"
    kept: list[bytes] = []
    trailing = False
    last = len(segments) - 1
    for k, seg in enumerate(segments):
        if seg == b"." or seg == b"":
            trailing = k == last
            continue
        if seg == b"..":
            if not kept:
                return path, target, ABOVE_ROOT
            kept.pop()
            trailing = k == last
            continue
        if b"%" in seg and _hides_dots(seg):
            return path, target, HIDDEN_DOTS
        kept.append(seg)
        trailing = False
    new_path = b"/" + b"/".join(kept) + (b"/" if trailing and kept else b"")
    if new_path == path:
        return path, target, None
    return new_path, new_path if q < 0 else new_path + target[q:], None


def _hides_dots(segment: bytes) -> bool:
    parts = segment.replace(b"%5C", b"%2F").split(b"%2F")
    return any(p == b"." or p == b".." for p in parts)
