"""fsmfast.edge.access: address lists, FSM's whitelist/blacklist rule, the client address behind
trusted proxies, and the port-level check on real loopback connections (issue 20)."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket

import pytest
import uvloop

from fsmfast.edge.access import (
    AccessRule,
    AddressSet,
    Denial,
    client_address,
    connection_allowed,
    fsm_xff_allows,
    parse_entry,
    peer_host,
)

# -- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "version", "normalized", "loose"),
    [
        ("10.0.0.1", 4, "10.0.0.1/32", False),
        ("10.0.0.0/8", 4, "10.0.0.0/8", False),
        ("0.0.0.0/0", 4, "0.0.0.0/0", False),
        ("10.1.2.3/8", 4, "10.0.0.0/8", True),  # host bits: read as the network, reported as loose
        ("10.0.0.1/32", 4, "10.0.0.1/32", False),
        ("::1", 6, "::1/128", False),
        ("::/0", 6, "::/0", False),
        ("2001:db8::1/32", 6, "2001:db8::/32", True),
        ("2001:DB8::/32", 6, "2001:db8::/32", False),
        ("::ffff:10.0.0.1", 4, "10.0.0.1/32", False),  # IPv4-mapped: an IPv4 entry
        ("::ffff:10.0.0.0/104", 4, "10.0.0.0/8", False),
        ("::ffff:0:0/96", 4, "0.0.0.0/0", False),
        ("::ffff:0:0/80", 6, "::/80", True),  # wider than the mapped range: IPv6 (and its ffff is host bits)
    ],
)
def test_entries_parse_to_their_network(text: str, version: int, normalized: str, loose: bool) -> None:
    entry = parse_entry(text)
    assert (entry.version, entry.normalized, entry.loose) == (version, normalized, loose)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/8",
        "10.0.0.256",
        "10.0.0",
        "010.0.0.1",  # leading zeros (octal to some parsers): refused
        " 10.0.0.1",
        "10.0.0.1 ",
        "10.0.0.1/33",
        "10.0.0.0/",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10.0.0.0/8/8",
        "10.0.0.0/255.0.0.0",
        "::1/129",
        "::ffff:10.0.0.1/129",
        "fe80::1%eth0",
        "[::1]",
        "10.0.0.1:80",
        "1::2::3",
        "example.com",
        "10.0.0.1\x00",
    ],
)
def test_invalid_entries_raise_naming_the_entry(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_entry(text)
    assert repr(text) in str(caught.value)
    with pytest.raises(ValueError) as caught:
        AccessRule(whitelist=["10.0.0.1", text])
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("value", [10, None, b"10.0.0.1"])
def test_entries_that_are_not_strings_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="not a string"):
        AddressSet([value])


def test_loose_lists_entries_with_host_bits() -> None:
    s = AddressSet(["10.1.2.3/8", "192.168.0.0/16", "2001:db8::5/64"])
    assert s.loose == (("10.1.2.3/8", "10.0.0.0/8"), ("2001:db8::5/64", "2001:db8::/64"))
    assert s.contains(b"10.200.0.1")  # the whole /8, not just 10.1.2.3
    assert AddressSet(["10.0.0.0/8"]).loose == ()


# -- matching ------------------------------------------------------------------------------------


def test_cidr_bounds_ipv4() -> None:
    s = AddressSet(["192.168.4.0/22"])
    assert s.contains(b"192.168.4.0") and s.contains(b"192.168.7.255") and s.contains("192.168.5.17")
    assert not s.contains(b"192.168.3.255") and not s.contains(b"192.168.8.0")


def test_cidr_bounds_ipv6() -> None:
    s = AddressSet(["2001:db8:0:10::/60"])
    assert s.contains(b"2001:db8:0:10::") and s.contains(b"2001:db8:0:1f:ffff:ffff:ffff:ffff")
    assert not s.contains(b"2001:db8:0:f:ffff:ffff:ffff:ffff") and not s.contains(b"2001:db8:0:20::")


def test_a_bare_address_matches_only_itself() -> None:
    s = AddressSet(["127.0.0.2", "::2"])
    assert s.contains(b"127.0.0.2") and s.contains(b"::2") and s.contains(b"0:0::2")
    assert not s.contains(b"127.0.0.3") and not s.contains(b"127.0.0.1") and not s.contains(b"::3")


def test_everything_is_both_zero_prefixes() -> None:
    v4 = AddressSet(["0.0.0.0/0"])
    v6 = AddressSet(["::/0"])
    for address in (b"0.0.0.0", b"255.255.255.255", b"127.0.0.2", b"::ffff:8.8.8.8"):
        assert v4.contains(address) and not v6.contains(address)
    for address in (b"::", b"::1", b"2001:db8::1", b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"):
        assert v6.contains(address) and not v4.contains(address)


def test_ipv4_mapped_addresses_are_ipv4() -> None:
    s = AddressSet(["10.0.0.0/8", "127.0.0.2"])
    assert s.contains(b"::ffff:10.1.2.3") and s.contains(b"::FFFF:127.0.0.2") and s.contains(b"::ffff:a00:1")
    assert not s.contains(b"::ffff:11.0.0.1")
    assert not s.contains(b"::10.1.2.3")  # IPv4-compatible (deprecated) is not mapped
    mapped = AddressSet(["::ffff:127.0.0.2"])
    assert mapped.contains(b"127.0.0.2") and mapped.contains(b"::ffff:127.0.0.2")
    # An IPv6 entry wider than the mapped range still matches no IPv4 client (nginx's rule).
    assert not AddressSet(["::ffff:0:0/80"]).contains(b"127.0.0.2")


def test_what_is_not_an_address_is_in_no_list() -> None:
    s = AddressSet(["0.0.0.0/0", "::/0"])
    for address in (
        b"-",
        b"",
        b"unix",
        b"10.0.0.1:80",
        b"[::1]",
        b"010.0.0.1",
        b"10.0.0.1 ",
        b"\xff\xfe",
        "10.0.0.1\x00",
    ):
        assert not s.contains(address), address


def test_a_zone_is_ignored() -> None:
    assert AddressSet(["fe80::/10"]).contains(b"fe80::1%eth0")
    assert not AddressSet(["fe80::2"]).contains(b"fe80::1%eth0")


def test_matching_agrees_with_ipaddress() -> None:
    """Random lists and addresses, both families and mapped ones, against the standard library."""
    rng = random.Random(20)

    def address(version: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        # Near 10.0.0.0 and 2001:db8:: so that addresses often fall inside the networks.
        if version == 4:
            return ipaddress.IPv4Address(0x0A000000 + rng.getrandbits(rng.choice((4, 12, 20))))
        return ipaddress.IPv6Address((0x20010DB8 << 96) + rng.getrandbits(rng.choice((8, 40, 72))))

    for _ in range(200):
        nets = []
        for _ in range(rng.randint(1, 32)):
            version = rng.choice((4, 6))
            bits = 32 if version == 4 else 128
            nets.append(ipaddress.ip_network(f"{address(version)}/{rng.randint(bits - 24, bits)}", strict=False))
        s = AddressSet([str(n) for n in nets])
        for _ in range(10):
            probe = address(rng.choice((4, 6)))
            expected = any(probe in n for n in nets)
            assert s.contains(str(probe).encode()) == expected, (probe, nets)
            if probe.version == 4:
                assert s.contains(f"::ffff:{probe}".encode()) == expected


# -- cost: probes, not wall time -----------------------------------------------------------------


class _Counted(frozenset[int]):
    probes = 0

    def __contains__(self, item: object) -> bool:
        _Counted.probes += 1
        return super().__contains__(item)


def _probes(s: AddressSet, address: bytes) -> tuple[bool, int]:
    """The answer and the number of set probes ``contains`` made."""
    s._v4 = tuple((shift, _Counted(nets)) for shift, nets in s._v4)
    s._v6 = tuple((shift, _Counted(nets)) for shift, nets in s._v6)
    _Counted.probes = 0
    return s.contains(address), _Counted.probes


def test_32_addresses_cost_one_probe() -> None:
    s = AddressSet([f"10.0.{i}.{i + 1}" for i in range(32)] + [f"2001:db8::{i:x}" for i in range(32)])
    assert _probes(s, b"10.0.31.32") == (True, 1)
    assert _probes(s, b"10.0.31.33") == (False, 1)
    assert _probes(s, b"2001:db8::1f") == (True, 1)
    assert _probes(s, b"2001:db8::20") == (False, 1)


def test_probes_are_at_most_one_per_prefix_length_of_the_family() -> None:
    v4 = [f"10.{i}.0.0/{16 + i % 8}" for i in range(32)]  # 8 lengths
    v6 = [f"2001:db8:{i:x}::/{48 + i % 4}" for i in range(32)]  # 4 lengths
    s = AddressSet(v4 + v6)
    assert _probes(s, b"192.168.0.1") == (False, 8)
    assert _probes(s, b"::ffff:192.168.0.1") == (False, 8)
    assert _probes(s, b"2001:db9::1") == (False, 4)
    hit, probes = _probes(s, b"10.31.0.1")  # 10.31.0.0/23
    assert hit and probes <= 8
    assert _probes(s, b"-") == (False, 0)
    assert _probes(AddressSet(v4), b"::1") == (False, 0)  # no IPv6 entries: nothing to probe


def test_duplicates_and_overlaps_cost_nothing_more() -> None:
    s = AddressSet(["10.0.0.0/8"] * 32 + ["10.1.0.0/8", "::ffff:10.0.0.0/104"])
    assert _probes(s, b"10.9.9.9") == (True, 1)


# -- the rule ------------------------------------------------------------------------------------


def test_the_whitelist_beats_the_blacklist() -> None:
    rule = AccessRule(whitelist=["127.0.0.2", "10.0.0.0/8"], blacklist=["127.0.0.2", "127.0.0.3", "10.1.0.0/16"])
    assert rule.blacklist is None  # never looked at
    assert rule.allows(b"127.0.0.2")  # on both lists: whitelisted
    assert rule.allows(b"10.1.2.3")  # inside a blacklisted CIDR too
    assert not rule.allows(b"127.0.0.4")  # on neither: not whitelisted, denied
    assert not rule.allows(b"-")


def test_the_blacklist_alone_denies_its_addresses() -> None:
    rule = AccessRule(blacklist=["127.0.0.3", "2001:db8::/32"])
    assert not rule.allows(b"127.0.0.3") and not rule.allows(b"::ffff:127.0.0.3") and not rule.allows(b"2001:db8::9")
    assert rule.allows(b"127.0.0.2") and rule.allows(b"::1") and rule.allows(b"-")


def test_empty_lists_are_no_lists() -> None:
    for rule in (AccessRule(), AccessRule(whitelist=[], blacklist=[]), AccessRule(whitelist=None, blacklist=None)):
        assert rule.whitelist is None and rule.blacklist is None
        assert rule.allows(b"127.0.0.2") and rule.allows(b"-")
    assert not AccessRule(whitelist=[], blacklist=["127.0.0.2"]).allows(b"127.0.0.2")


def test_32_entries_each() -> None:
    white = [f"10.{i}.0.0/{8 + i % 17}" for i in range(32)]
    black = [f"192.168.{i}.1" for i in range(32)]
    assert AccessRule(whitelist=white, blacklist=black).allows(b"10.31.0.9")
    rule = AccessRule(blacklist=black)
    assert all(not rule.allows(f"192.168.{i}.1".encode()) for i in range(32))
    assert all(rule.allows(f"192.168.{i}.2".encode()) for i in range(32))


def test_deny_reply() -> None:
    assert AccessRule().deny_reply == Denial(403, b"")
    assert AccessRule(status=0, message=None).deny_reply == Denial(403, b"")  # FSM's `Status || 403`
    assert AccessRule(status=451, message="Nope ✋").deny_reply == Denial(451, "Nope ✋".encode())
    for status in (1, 99, 1000, -403):
        with pytest.raises(ValueError, match=str(status)):
            AccessRule(status=status)


# -- the client address --------------------------------------------------------------------------

PEER = b"127.0.0.2"  # a trusted proxy, in the tests that trust it
PROXIES = AddressSet(["127.0.0.0/29", "10.0.0.0/8"])


def test_nothing_trusted_means_the_peer() -> None:
    assert client_address(PEER, [b"203.0.113.7"], 0, None) == PEER
    assert client_address(PEER, [], 3, PROXIES) == PEER
    assert client_address(b"127.0.0.9", [b"203.0.113.7"], 0, PROXIES) == b"127.0.0.9"  # peer untrusted


def test_trusted_proxies_take_the_rightmost_untrusted_entry() -> None:
    xff = [b"198.51.100.1, 203.0.113.7, 10.0.0.5"]
    assert client_address(PEER, xff, 0, PROXIES) == b"203.0.113.7"
    # All trusted: the leftmost (nginx).
    assert client_address(PEER, [b"10.0.0.1, 10.0.0.2"], 0, PROXIES) == b"10.0.0.1"


def test_trusted_hops_count_from_the_right() -> None:
    xff = [b"198.51.100.1, 203.0.113.7, 10.0.0.5"]
    assert client_address(PEER, xff, 0, None) == PEER
    assert client_address(PEER, xff, 1, None) == b"10.0.0.5"
    assert client_address(PEER, xff, 2, None) == b"203.0.113.7"
    assert client_address(PEER, xff, 3, None) == b"198.51.100.1"
    assert client_address(PEER, xff, 4, None) == b"198.51.100.1"  # too few entries: the leftmost


def test_hops_and_proxies_together_trust_either() -> None:
    xff = [b"198.51.100.1, 203.0.113.7, 10.0.0.5, 192.0.2.1"]
    assert client_address(b"192.0.2.50", xff, 2, PROXIES) == b"203.0.113.7"


@pytest.mark.parametrize(("hops", "proxies"), [(1, None), (2, None), (0, PROXIES)])
def test_a_client_cannot_claim_an_address_by_sending_xff(hops: int, proxies: AddressSet | None) -> None:
    """The client 203.0.113.66 sends its own XFF; the trusted proxies append what they saw. Whatever
    it writes, including trusted proxies' addresses and whitelisted ones, it is 203.0.113.66."""
    for claimed in (b"10.0.0.1", b"127.0.0.2", b"10.0.0.1, 10.0.0.2", b"::1", b"garbage", b""):
        if hops == 2:
            xff = [claimed, b"203.0.113.66, 10.0.0.9"]  # two proxies: 10.0.0.9 and the peer
        else:
            xff = [claimed, b"203.0.113.66"]
        assert client_address(PEER, xff, hops, proxies) == b"203.0.113.66", claimed
    rule = AccessRule(whitelist=["10.0.0.1"])
    assert not rule.allows(client_address(PEER, [b"10.0.0.1, 203.0.113.66"], 1, None))


def test_a_direct_client_sending_xff_is_its_peer_with_proxies() -> None:
    assert client_address(b"203.0.113.66", [b"10.0.0.1"], 0, PROXIES) == b"203.0.113.66"


def test_an_invalid_entry_stops_the_walk() -> None:
    assert client_address(PEER, [b"203.0.113.7, unknown, 10.0.0.5"], 0, PROXIES) == b"10.0.0.5"
    assert client_address(PEER, [b"203.0.113.7, 10.0.0.5:8080"], 0, PROXIES) == PEER
    assert client_address(PEER, [b"203.0.113.7,, 10.0.0.5"], 0, PROXIES) == b"10.0.0.5"
    assert client_address(PEER, [b""], 0, PROXIES) == PEER
    assert client_address(PEER, [b"203.0.113.7, 10.0.0.5,"], 3, None) == PEER
    assert client_address(PEER, [b"203.0.113.7, [::1]"], 2, None) == PEER


def test_a_long_xff_is_walked_only_as_far_as_trusted() -> None:
    xff = [b", ".join(b"10.%d.%d.1" % (i >> 8, i & 255) for i in range(5000)) + b", 203.0.113.7, 127.0.0.3"]
    assert client_address(PEER, xff, 2, None) == b"203.0.113.7"
    assert client_address(PEER, xff, 0, PROXIES) == b"203.0.113.7"
    assert client_address(PEER, xff, 0, AddressSet(["0.0.0.0/0"])) == b"10.0.0.1"  # all trusted: leftmost


def test_several_headers_are_one_list_in_order() -> None:
    xff = [b"198.51.100.1", b"203.0.113.7,10.0.0.4", b"\t10.0.0.5 "]
    assert client_address(PEER, xff, 0, PROXIES) == b"203.0.113.7"
    assert client_address(PEER, xff, 4, None) == b"198.51.100.1"
    assert client_address(PEER, xff, 1, None) == b"10.0.0.5"  # stripped as written


def test_ipv6_and_mapped_proxies() -> None:
    proxies = AddressSet(["2001:db8::/64", "127.0.0.1"])
    xff = [b"2001:db8:1::7, 2001:db8::2"]
    assert client_address(b"::ffff:127.0.0.1", xff, 0, proxies) == b"2001:db8:1::7"
    assert client_address(b"::1", xff, 0, proxies) == b"::1"


def test_fsm_enable_xff_is_gameable_and_kept_only_for_compatibility() -> None:
    rule = AccessRule(whitelist=["10.0.0.1"])
    # FSM: a direct client naming a whitelisted address passes; the peer is not checked.
    assert fsm_xff_allows(rule, b"203.0.113.66", [b"10.0.0.1"])
    assert not fsm_xff_allows(rule, b"203.0.113.66", [b"10.0.0.1, 203.0.113.66"])  # every entry must pass
    assert not fsm_xff_allows(rule, b"203.0.113.66", [])
    assert fsm_xff_allows(rule, b"10.0.0.1", [b""])  # an empty header is no header
    assert not fsm_xff_allows(AccessRule(blacklist=["10.0.0.1"]), b"127.0.0.2", [b"127.0.0.3", b"10.0.0.1"])
    # fsmfast: without trusted hops or proxies the peer decides.
    assert not rule.allows(client_address(b"203.0.113.66", [b"10.0.0.1"], 0, None))


# -- port level ----------------------------------------------------------------------------------


def test_peer_host_forms() -> None:
    assert peer_host(("127.0.0.2", 5000)) == "127.0.0.2"
    assert peer_host(("fe80::1%lo", 5000, 0, 1)) == "fe80::1%lo"
    assert peer_host("/run/fsmfast.sock") is None and peer_host("") is None and peer_host(None) is None
    rule = AccessRule(whitelist=["127.0.0.2"])
    assert connection_allowed(rule, ("127.0.0.2", 5000)) and not connection_allowed(rule, "/run/fsmfast.sock")
    assert connection_allowed(AccessRule(blacklist=["127.0.0.2"]), "/run/fsmfast.sock")


def test_denied_connections_are_closed_before_a_byte_is_read() -> None:
    """A listener on uvloop applies connection_allowed in connection_made; clients bound to
    127.0.0.2 and 127.0.0.3 send a request: the allowed one is answered, the denied one is closed
    and its bytes never reach data_received."""
    rule = AccessRule(blacklist=["127.0.0.3"])
    received: list[bytes] = []

    class Listener(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            if not connection_allowed(rule, transport.get_extra_info("peername")):
                transport.abort()  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            received.append(data)
            self.transport.write(b"ok")  # type: ignore[attr-defined]

    def client(source: str, port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
            s.sendall(b"hello from " + source.encode())
            try:
                return s.recv(16)
            except ConnectionResetError:
                return b""

    async def main() -> tuple[bytes, bytes]:
        server = await asyncio.get_running_loop().create_server(Listener, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            allowed = await asyncio.to_thread(client, "127.0.0.2", port)
            denied = await asyncio.to_thread(client, "127.0.0.3", port)
        finally:
            server.close()
        return allowed, denied

    assert uvloop.run(main()) == (b"ok", b"")
    assert received == [b"hello from 127.0.0.2"]
