"""Stage 2: the request-target as routed and forwarded (RFC 9112 §3.2), or the refusal of it.

Origin-form (``/path?query``) is normalized once by the codec's ``normalize_target`` (dot
segments, percent-encoded unreserved bytes, ``//``; ``..`` above the root is refused), and the
upstream receives that same target, so matching and forwarding cannot disagree. The compiled
client side calls ``normalize_target`` itself for origin-form, the usual case, and ``other_form``
for the rest; ``normalize`` is both, for callers without a fast path (``fsmfast explain``).
"""

from __future__ import annotations

from fsmfast.codec import normalize_target, valid_host
from fsmfast.pipeline.decision import LocalReply

Target = tuple[bytes, bytes, bytes]  # (path for routing, target to forward, Host)


def normalize(method: bytes, target: bytes, host: bytes, headers: list[tuple[bytes, bytes]]) -> Target | LocalReply:
    """``(path, target, host)`` for any request-target, or the local reply refusing it.

    ``headers`` may be rewritten (absolute-form replaces the Host header by its authority)."""
    if target.startswith(b"/"):
        path, target, bad = normalize_target(target)
        if bad is not None:
            return LocalReply(400, bad, "bad_request")
        return path, target, host
    return other_form(method, target, host, headers)


def other_form(method: bytes, target: bytes, host: bytes, headers: list[tuple[bytes, bytes]]) -> Target | LocalReply:
    """``(path, target, host)`` for a request-target that is not origin-form, or a refusal."""
    if method == b"CONNECT":
        return LocalReply(405, "CONNECT is not supported", "method_not_allowed")
    if target == b"*":
        if method != b"OPTIONS":
            return LocalReply(400, "request-target * is only valid with OPTIONS", "bad_request")
        return b"*", b"*", host
    sep = target.find(b"://")
    scheme = target[:sep].lower() if sep > 0 else b""
    if scheme != b"http" and scheme != b"https":
        return LocalReply(400, "unsupported request-target form", "bad_request")
    # Absolute-form (RFC 9112 §3.2.2): the authority names the host, the upstream gets
    # origin-form, and the Host header is replaced by the authority so that routing and
    # upstream agree on one host.
    rest = target[sep + 3 :]
    end = len(rest)
    for stop in (b"/", b"?"):
        i = rest.find(stop, 0, end)
        if i >= 0:
            end = i
    authority = rest[:end]
    if b"@" in authority:
        return LocalReply(400, "userinfo in request-target", "bad_request")  # RFC 9110 §4.2.4
    if not authority or not valid_host(authority):
        return LocalReply(400, "invalid authority in request-target", "bad_request")
    origin = rest[end:]
    path, origin, bad = normalize_target(origin if origin.startswith(b"/") else b"/" + origin)
    if bad is not None:
        return LocalReply(400, bad, "bad_request")
    if any(len(n) == 4 and n.lower() == b"host" for n, _ in headers):
        if not same_authority(host, authority, 443 if scheme == b"https" else 80):
            # HAProxy refuses this too: two different hosts in one request is how a route is
            # chosen for one and the request served for the other.
            return LocalReply(400, "Host header does not match the request-target", "bad_request")
        headers[:] = [(n, authority) if len(n) == 4 and n.lower() == b"host" else (n, v) for n, v in headers]
    else:
        headers.append((b"Host", authority))
    return path, origin, authority


def same_authority(a: bytes, b: bytes, default_port: int) -> bool:
    """Two valid Host values name the same host and port (case, a trailing dot and the
    scheme's default port aside)."""
    return host_port(a, default_port) == host_port(b, default_port)


def host_port(value: bytes, default_port: int) -> tuple[bytes, int]:
    if value.startswith(b"["):
        end = value.find(b"]") + 1
        host, port = value[:end], value[end + 1 :]
    else:
        host, _, port = value.partition(b":")
    # valid_host() has checked the port is digits only.
    return host.rstrip(b".").lower(), int(port) if port else default_port
