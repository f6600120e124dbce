"""Access control (FSM's AccessControlPolicy, issue 20): address lists, the allow/deny rule, and the
client address behind trusted proxies. Pure decisions: the listener and the request path call them.

Address lists (``AddressSet``). Entries are IPv4 or IPv6 addresses or CIDRs; a bare address is a
/32 or /128. They are parsed once, into one set of network numbers per prefix length present, so a
lookup is one parse of the address and at most one set probe per distinct prefix length (a list of
32 bare addresses: one probe), never a loop over entries. Choices, each tested:

- A CIDR with host bits set (``10.1.2.3/8``) is read as its network (``10.0.0.0/8``), as nginx's
  ``allow``/``deny`` read it (with a warning), rather than refusing a list FSM may have accepted;
  ``AddressSet.loose`` lists such entries for ``fsmfast check`` to warn about.
- Anything else that is not an address or ``address/prefix`` (decimal prefix; no netmask form, no
  zone, no port, no surrounding spaces; IPv4 in strict dotted decimal, no leading zeros) raises
  ``ValueError`` naming the entry.
- IPv4-mapped IPv6 is IPv4: the address ``::ffff:10.0.0.1`` (what a dual-stack socket reports for
  an IPv4 client) matches the IPv4 entries, and an entry ``::ffff:a.b.c.d/n`` with n >= 96 is the
  IPv4 entry ``a.b.c.d/(n-96)``. Other IPv6 entries never match an IPv4 client, as in nginx:
  ``::/0`` is every IPv6 client; everyone is ``0.0.0.0/0`` plus ``::/0``.
- An address that does not parse (``b"-"``, the codec's stand-in when a connection has no IP peer)
  is in no list: a whitelist denies it, a blacklist lets it pass. A zone (``fe80::1%eth0``, as
  Python reports a link-local peer) is ignored.

The rule (``AccessRule``) is FSM's: when the whitelist has entries only whitelisted addresses pass
and the blacklist is ignored; otherwise blacklisted addresses are denied; an empty list is no list.
A denial answers ``statusCode`` (403 when 0 or unset, FSM's ``Status || 403``) with ``message`` as
the body. Cost of ``allows`` (timeit, best of 5 x 200,000 calls, CPython 3.11 on the 2-core
development machine): 32 bare IPv4 addresses (one probe) 0.39 µs; 32 IPv4 CIDRs of 8 prefix
lengths, address in none (8 probes) 0.68 µs; an IPv6 address against 32 IPv6 CIDRs of 8 lengths
0.76 µs; no lists 0.05 µs. Parsing the address is ~0.2 µs of it. ``client_address`` over a
three-entry X-Forwarded-For: 1.2 µs with 2 trusted hops, 1.6 µs with trusted proxies. Where the
client address is the peer, the wiring can decide once per connection rather than per request.

Port level (``connection_allowed``): a function of the peer address only, run **once per
connection**, in ``connection_made``, before any byte is read; a denied connection is aborted. No
header is read there, so ``enableXFF`` means nothing at port level.

The client address (``client_address``). FSM's ``enableXFF`` checks **every** address in
X-Forwarded-For and not the peer: a client that talks to the gateway directly and sends
``X-Forwarded-For: <a whitelisted address>`` passes a whitelist, and one that omits XFF is checked
by its peer only; XFF is whatever the client wrote. fsmfast instead derives **one** client address
from XFF only through what the operator trusts, like nginx's ``set_real_ip_from`` with
``real_ip_recursive on`` and Envoy's ``xff_num_trusted_hops``: starting at the peer, it steps left
through the joined X-Forwarded-For (several headers in order, entries split on commas) while the
current address is trusted, either by position (the peer and the rightmost ``trusted_hops - 1``
entries: ``trusted_hops`` proxies in front of the gateway) or by being in ``trusted_proxies``
(both given: either). An entry that is not an address stops the walk at the last trusted address,
the one on its right or the peer (nginx); a list that runs
out gives its leftmost entry (nginx; Envoy falls back to the peer when XFF has fewer entries than
the trusted hops, and on an invalid entry). So with nothing trusted the address is the peer,
and what a client writes on the left of XFF never wins. ``fsm_xff_allows`` is FSM's own rule, for
a compatibility switch.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import msgspec

_V4_BITS = 32
_V6_BITS = 128
# IPv6 numbers carry this bit so both families share one integer space: an IPv6 number is never
# below it, an IPv4 one always is, and a shifted IPv6 number keeps it (so the sets need no family).
_V6_TAG = 1 << _V6_BITS
_MAPPED = 0xFFFF  # ::ffff:0:0/96, IPv4-mapped IPv6, is the number's bits 32..47 all ones
_MAPPED_PREFIX = 96

_pton = socket.inet_pton
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_from_bytes = int.from_bytes


def _number(address: bytes | str) -> int:
    """The address as a number (IPv6 tagged with ``_V6_TAG``, IPv4-mapped as IPv4), or -1."""
    text = address.decode("latin-1") if isinstance(address, bytes) else address
    try:
        if ":" not in text:
            return _from_bytes(_pton(_AF_INET, text), "big")
        if "%" in text:
            text = text[: text.index("%")]
        n = _from_bytes(_pton(_AF_INET6, text), "big")
    except (OSError, ValueError, TypeError):  # ValueError: an embedded NUL
        return -1
    if n >> _V4_BITS == _MAPPED:
        return n & 0xFFFFFFFF
    return n | _V6_TAG


class Entry(msgspec.Struct, frozen=True):
    """One parsed list entry: its network (an IPv4-mapped one as IPv4) and whether host bits were set."""

    text: str  # as written
    version: int  # 4 or 6
    network: int  # the network number, host bits cleared (no tag)
    prefix: int
    loose: bool  # host bits were set in the entry; they were cleared

    @property
    def normalized(self) -> str:
        cls = ipaddress.IPv4Network if self.version == 4 else ipaddress.IPv6Network
        return str(cls((self.network, self.prefix)))


def parse_entry(text: object) -> Entry:
    """One whitelist or blacklist entry; ``ValueError`` naming it when it is not an address or CIDR."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an IP address or CIDR (not a string)")
    address, slash, length = text.partition("/")
    if "%" in address or not address:
        raise ValueError(f"{text!r} is not an IP address or CIDR")
    n = _number(address)
    if n < 0:
        raise ValueError(f"{text!r} is not an IP address or CIDR: {address!r} is not an IP address")
    mapped = ":" in address and n < _V6_TAG
    bits = _V4_BITS if n < _V6_TAG else _V6_BITS
    written_bits = _V6_BITS if mapped else bits
    if slash:
        if not (length.isascii() and length.isdigit()) or int(length) > written_bits:
            raise ValueError(f"{text!r} is not an IP address or CIDR: the prefix length must be 0..{written_bits}")
        prefix = int(length)
    else:
        prefix = written_bits
    if mapped:
        if prefix < _MAPPED_PREFIX:
            # Wider than the mapped range: an IPv6 entry, which no IPv4 client matches.
            n = _MAPPED << _V4_BITS | n | _V6_TAG
            bits = _V6_BITS
        else:
            prefix -= _MAPPED_PREFIX
    n &= ~_V6_TAG
    host = bits - prefix
    network = n >> host << host
    return Entry(text, 4 if bits == _V4_BITS else 6, network, prefix, network != n)


class AddressSet:
    """IPv4 and IPv6 addresses and CIDRs, for membership tests of one address at a time."""

    __slots__ = ("_v4", "_v6", "entries")

    def __init__(self, entries: Iterable[object]) -> None:
        self.entries: tuple[Entry, ...] = tuple(parse_entry(e) for e in entries)
        v4: dict[int, set[int]] = {}
        v6: dict[int, set[int]] = {}
        for e in self.entries:
            if e.version == 4:
                shift = _V4_BITS - e.prefix
                v4.setdefault(shift, set()).add(e.network >> shift)
            else:
                shift = _V6_BITS - e.prefix
                v6.setdefault(shift, set()).add((e.network | _V6_TAG) >> shift)
        # (shift, networks) per prefix length present, longest prefix first (order does not change
        # the answer; fixed so that probe counts are reproducible).
        self._v4 = tuple((s, frozenset(v4[s])) for s in sorted(v4))
        self._v6 = tuple((s, frozenset(v6[s])) for s in sorted(v6))

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"AddressSet({[e.normalized for e in self.entries]!r})"

    @property
    def loose(self) -> tuple[tuple[str, str], ...]:
        """Entries written with host bits set, and the network each was read as."""
        return tuple((e.text, e.normalized) for e in self.entries if e.loose)

    def contains(self, address: bytes | str) -> bool:
        """Whether the address (as the codec gives the peer, e.g. ``b"127.0.0.2"``) is in the set;
        False for anything that is not an address."""
        n = _number(address)
        return n >= 0 and self._has(n)

    def _has(self, n: int) -> bool:
        # A loop that stops at the first hit: any() over a generator costs more than the probes.
        for shift, networks in self._v4 if n < _V6_TAG else self._v6:
            if n >> shift in networks:
                break
        else:
            return False
        return True


class Denial(msgspec.Struct, frozen=True):
    """What a denied request is answered: FSM sends ``message`` as it is, as the whole body."""

    status: int
    body: bytes


class AccessRule:
    """One AccessControlConfig: whitelist, blacklist, the denial's status and message, ``enableXFF``."""

    __slots__ = ("blacklist", "deny_reply", "enable_xff", "whitelist")

    def __init__(
        self,
        whitelist: Iterable[object] | None = None,
        blacklist: Iterable[object] | None = None,
        status: int | None = 403,
        message: str | None = "",
        enable_xff: bool = False,
    ) -> None:
        white = AddressSet(whitelist or ())
        black = AddressSet(blacklist or ())
        # FSM: an empty list is no list (its parseIpList gives undefined), and with a whitelist the
        # blacklist is never looked at.
        self.whitelist: AddressSet | None = white if len(white) else None
        self.blacklist: AddressSet | None = black if len(black) and not len(white) else None
        status = status or 403  # FSM's `Status || 403`
        if not 100 <= status <= 999:
            raise ValueError(f"statusCode {status} is not an HTTP status (100..999)")
        self.deny_reply = Denial(status, (message or "").encode("utf-8"))
        self.enable_xff = enable_xff

    def allows(self, address: bytes | str) -> bool:
        """Whether a request or connection from ``address`` passes."""
        if self.whitelist is not None:
            return self.whitelist.contains(address)
        if self.blacklist is not None:
            return not self.blacklist.contains(address)
        return True


def peer_host(peername: object) -> str | None:
    """The host of ``transport.get_extra_info("peername")``: a (host, port[, flow, scope]) tuple for
    IP sockets; None for anything else (a Unix socket's path)."""
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        return peername[0]
    return None


def connection_allowed(rule: AccessRule, peername: object) -> bool:
    """Port level: whether a new connection may stay. Runs once per connection, in
    ``connection_made`` and before any byte is read; the listener aborts the transport when False.
    A peer that is not an IP address passes a blacklist and fails a whitelist."""
    host = peer_host(peername)
    return rule.allows(host if host is not None else "")


def client_address(
    peer: bytes, xff_values: list[bytes], trusted_hops: int, trusted_proxies: AddressSet | None
) -> bytes:
    """The request's client address: ``peer``, or an X-Forwarded-For entry reached through trusted
    hops only (see the module's docstring). ``xff_values`` are the X-Forwarded-For header values in
    the order they came; the answer is the entry as written, spaces stripped."""
    if not xff_values:
        return peer
    n = _number(peer)
    if trusted_hops <= 0 and (trusted_proxies is None or n < 0 or not trusted_proxies._has(n)):
        return peer
    current = peer
    position = 0  # of ``current``: 0 is the peer, 1 the rightmost XFF entry, ...
    for value in reversed(xff_values):
        end = len(value)
        while end >= 0:
            comma = value.rfind(b",", 0, end)
            # ``current`` is trusted here: step left to the next entry.
            entry = value[comma + 1 : end].strip(b" \t")
            n = _number(entry)
            if n < 0:
                return current
            current = entry
            position += 1
            if position >= trusted_hops and (trusted_proxies is None or not trusted_proxies._has(n)):
                return current
            end = comma
    return current


def fsm_xff_allows(rule: AccessRule, peer: bytes, xff_values: list[bytes]) -> bool:
    """FSM's ``enableXFF``, for compatibility only (a client can claim any address): with an
    X-Forwarded-For header every entry in it must pass and the peer is not checked; without one the
    peer is. (FSM reads one header; here several are joined.)"""
    if not any(xff_values):  # FSM: an empty header is no header
        return rule.allows(peer)
    return all(rule.allows(part.strip(b" \t")) for value in xff_values for part in value.split(b","))
