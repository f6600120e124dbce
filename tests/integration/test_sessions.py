"""Session persistence end to end (issue 19): FSM's SessionStickyPolicy cookie and Gateway API's
``sessionPersistence`` (Cookie and Header), with a gateway of two workers and real echo upstreams.

Every request goes on a new connection, so the kernel hands them to either worker: a session
must mean the same endpoint in both (they share only the master's session key). Every response
names its upstream (``X-Upstream``).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import re
import ssl
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from fsmfast.demo.manifests import documents, service, to_yaml
from tests.support import resilience
from tests.support.manifests import tls_secret
from tests.support.pki import san_pki
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.resilience import HOST, NS, service_policy, upstreams
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.slow

STICKY = service_policy("SessionStickyPolicy", {"cookieName": "srv", "expires": 600}, "sticky")
RETRY = service_policy("RetryPolicy", {"retryOn": ["5xx"], "numRetries": 2, "backoffBaseInterval": 0.01}, "retry")
HEALTH = service_policy("HealthCheckPolicy", {"interval": 1, "maxFails": 1, "path": "/healthz"}, "health")


class Reply:
    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.status = resp.status
        self.upstream = resp.headers.get("X-Upstream", "")
        self.cookies: list[str] = resp.headers.get_all("Set-Cookie") or []
        self.headers = resp.headers


def get(port: int, path: str = "/x", headers: dict[str, str] | None = None, tls: ssl.SSLContext | None = None) -> Reply:
    """One request on a new connection (either worker takes it)."""
    if tls is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=tls)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": HOST, **(headers or {})})
        resp = conn.getresponse()
        resp.read()
        return Reply(resp)
    finally:
        conn.close()


def cookie(reply: Reply, name: str) -> tuple[str, list[str]]:
    """The value and the attributes of the one Set-Cookie of ``name``."""
    (line,) = [c for c in reply.cookies if c.startswith(name + "=")]
    first, *attributes = line.split("; ")
    return first[len(name) + 1 :], attributes


def route_rule(*paths: str, **fields: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"backendRefs": [{"name": "svc", "port": 80}], **fields}
    if paths:
        rule["matches"] = [{"path": {"type": "PathPrefix", "value": path}} for path in paths]
    return rule


def write_config(
    path: Path,
    port: int,
    ups: Sequence[Upstream],
    *policies: str,
    rules: Sequence[dict[str, Any]] = (),
    second: Sequence[Upstream] = (),
) -> Path:
    """``tests.support.resilience.write_config`` with the route's rules replaced by ``rules`` (when
    given), and a second Service ``svc2`` port 80 whose endpoints are ``second``."""
    resilience.write_config(path, port, [u.port for u in ups], *policies)
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    if rules:
        (route,) = [d for d in docs if d["kind"] == "HTTPRoute"]
        route["spec"]["rules"] = list(rules)
    extra = []
    if second:
        svc2 = yaml.safe_load(service("svc2", 80, 0, namespace=NS, port_name="http"))
        svc2["spec"]["ports"][0]["targetPort"] = "http"
        extra.append(svc2)
        for i, u in enumerate(second):
            extra.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"svc2-{i}",
                        "namespace": NS,
                        "labels": {"kubernetes.io/service-name": "svc2"},
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": u.port, "protocol": "TCP"}],
                    "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
                }
            )
    path.write_text(documents(*(to_yaml(d) for d in docs + extra)))
    return path


def base36(n: int) -> str:
    digits = ""
    while n:
        n, d = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + digits
    return digits or "0"


def served_pids(gw: Gateway, n: int) -> set[int]:
    return {e["pid"] for e in gw.access_log(min_entries=n) if e.get("upstream")}


def reveals(value: str, port: int) -> bool:
    """Whether a session value shows the endpoint's address or port, as text or base64-decoded."""
    texts = [value.encode()]
    for token in re.split(r"[.]", value):
        for decode in (base64.urlsafe_b64decode, base64.b64decode):
            try:
                texts.append(decode(token + "=" * (-len(token) % 4)))
            except (binascii.Error, ValueError):
                pass
    return any(b"127.0.0.1" in t or str(port).encode() in t for t in texts)


# -- FSM SessionStickyPolicy -----------------------------------------------------------------------


def test_sticky_cookie_pins_every_worker_and_clients_without_it_go_round_robin(tmp_path: Path) -> None:
    port = free_port()
    with upstreams(3) as ups:
        config = write_config(tmp_path / "s.yaml", port, ups, STICKY)
        by_name = {u.name: u for u in ups}
        with Gateway(config, [port], workers=2) as gw:
            first = get(port)
            assert first.status == 200
            value, attributes = cookie(first, "srv")
            assert attributes == ["Path=/", "Max-Age=600", "HttpOnly", "SameSite=Strict"]  # no Secure: plain HTTP
            assert first.headers["Cache-Control"] == "private"
            assert not reveals(value, by_name[first.upstream].port)

            # With the cookie: that endpoint, whichever worker serves, and nothing more to set.
            pinned = [get(port, headers={"Cookie": f"other=1; srv={value}"}) for _ in range(200)]
            assert Counter(r.upstream for r in pinned) == {first.upstream: 200}
            assert all(r.status == 200 and not r.cookies for r in pinned)
            assert len(served_pids(gw, 201)) == 2, "both workers should have served"

            # Without: round robin (each worker's is exact), each response a cookie naming its endpoint.
            fresh = [get(port) for _ in range(150)]
            counts = Counter(r.upstream for r in fresh)
            assert all(48 <= counts[u.name] <= 52 for u in ups), counts
            values: dict[str, set[str]] = {}
            for r in fresh:
                assert r.status == 200
                values.setdefault(r.upstream, set()).add(cookie(r, "srv")[0])
            # One value per endpoint, the same from both workers, and none shows its address.
            assert all(len(v) == 1 for v in values.values()), values
            assert values[first.upstream] == {value}
            assert len({v for vs in values.values() for v in vs}) == 3
            for name, (v,) in values.items():
                assert not reveals(v, by_name[name].port)
                assert Counter(get(port, headers={"Cookie": f"srv={v}"}).upstream for _ in range(10)) == {name: 10}
            # A value that is not ours (garbage, or a token of another name) is no session.
            for junk in ("nonsense", value[:-1], value + "x", base64.urlsafe_b64encode(b"127.0.0.1:1").decode()):
                r = get(port, headers={"Cookie": f"srv={junk}"})
                assert r.status == 200 and cookie(r, "srv")[0] in values[r.upstream]


# -- Gateway API sessionPersistence ----------------------------------------------------------------


def persistence(**fields: Any) -> dict[str, Any]:
    return {"sessionPersistence": fields}


def test_route_cookie_and_header_sessions(tmp_path: Path) -> None:
    port = free_port()
    rules = [
        route_rule(
            "/perm",
            **persistence(sessionName="perm", absoluteTimeout="10m", cookieConfig={"lifetimeType": "Permanent"}),
        ),
        route_rule("/sess", **persistence(absoluteTimeout="10m")),  # Session lifetime, the default name
        route_rule("/hdr", **persistence(type="Header", sessionName="X-Pin", idleTimeout="1h")),
        # Two matches, one rule: one session (the echo's /header answers with the headers asked for).
        route_rule("/hdr2", "/header", **persistence(type="Header", sessionName="X-Pin")),
    ]
    with upstreams(3) as ups:
        config = write_config(tmp_path / "s.yaml", port, ups, rules=rules)
        with Gateway(config, [port], workers=2) as gw:
            # Permanent: Max-Age is the absolute timeout; the value carries the session's start.
            first = get(port, "/perm")
            value, attributes = cookie(first, "perm")
            assert attributes == ["Path=/", "Max-Age=600", "HttpOnly", "SameSite=Strict"]
            assert first.headers["Cache-Control"] == "private"
            token, issued = value.split(".")
            assert abs(int(issued, 36) - time.time()) < 5 and base36(int(issued, 36)) == issued
            pinned = [get(port, "/perm", {"Cookie": f"perm={value}"}) for _ in range(100)]
            assert Counter(r.upstream for r in pinned) == {first.upstream: 100}
            assert all(r.status == 200 and not r.cookies for r in pinned)
            # The start is read: a value issued 590 s ago still pins, one issued 601 s ago does not.
            recent = f"{token}.{base36(int(time.time()) - 590)}"
            assert Counter(get(port, "/perm", {"Cookie": f"perm={recent}"}).upstream for _ in range(6)) == {
                first.upstream: 6
            }
            # Past its absolute timeout the value is no session: the balancer chooses and a new one is set.
            old = f"{token}.{base36(int(time.time()) - 601)}"
            expired = [get(port, "/perm", {"Cookie": f"perm={old}"}) for _ in range(6)]
            assert len({r.upstream for r in expired}) > 1
            assert all(cookie(r, "perm")[0] != old for r in expired)

            # Session lifetime: no Max-Age (the browser drops it on exit); no sessionName, a name of its own.
            first = get(port, "/sess")
            (line,) = first.cookies
            match = re.fullmatch(r"(fsmfast-[0-9a-f]{8})=([^;]+); Path=/; HttpOnly; SameSite=Strict", line)
            assert match, line
            name, value = match.groups()
            pinned = [get(port, "/sess", {"Cookie": f"{name}={value}"}) for _ in range(100)]
            assert Counter(r.upstream for r in pinned) == {first.upstream: 100}

            # Header: the response carries the header and no cookie; sending it back pins. With an
            # idle timeout every response carries it anew (its clock restarts).
            first = get(port, "/hdr")
            assert not first.cookies
            value = first.headers["X-Pin"]
            assert value and first.headers["Cache-Control"] == "private"
            pinned = [get(port, "/hdr", {"x-pin": value}) for _ in range(100)]
            assert Counter(r.upstream for r in pinned) == {first.upstream: 100}
            assert all(r.headers["X-Pin"].split(".")[0] == value.split(".")[0] for r in pinned)
            # The idle clock: a value last seen 58 minutes ago pins, one seen 61 minutes ago does not.
            token = value.split(".")[0]
            idle = get(port, "/hdr", {"X-Pin": f"{token}.{base36(int(time.time()) - 3500)}"})
            assert idle.upstream == first.upstream and idle.headers["X-Pin"].split(".")[0] == token
            gone = [get(port, "/hdr", {"X-Pin": f"{token}.{base36(int(time.time()) - 3660)}"}) for _ in range(6)]
            assert len({r.upstream for r in gone}) > 1
            # The session's header is the gateway's: an upstream's own of that name does not reach the
            # client, on the response that pins nor on those of the session (without an idle timeout).
            first = get(port, "/hdr2")
            value = first.headers["X-Pin"]
            assert "." not in value
            for pin in ({}, {"X-Pin": value}):
                r = get(port, "/header?X-Pin=forged", pin)
                assert r.status == 200 and len(r.headers.get_all("X-Pin") or []) == 1
                assert r.headers["X-Pin"] != "forged", r.headers
            assert Counter(get(port, "/header?X-Pin=forged", {"X-Pin": value}).upstream for _ in range(10)) == {
                first.upstream: 10
            }
            unpinned = Counter(get(port, "/hdr").upstream for _ in range(30))
            assert len(unpinned) == 3, unpinned
            assert len(served_pids(gw, 350)) == 2


def test_cookies_over_tls_are_secure(tmp_path: Path) -> None:
    port = free_port()
    pki = san_pki(tmp_path / "pki", None, HOST)
    rules = [route_rule("/route", **persistence(sessionName="rs")), route_rule("/")]
    with upstreams(2) as ups:
        config = write_config(tmp_path / "s.yaml", port, ups, STICKY, rules=rules)
        docs = [d for d in yaml.safe_load_all(config.read_text()) if d]
        (gateway,) = [d for d in docs if d["kind"] == "Gateway"]
        gateway["spec"]["listeners"] = [
            {"name": "https", "protocol": "HTTPS", "port": port, "tls": {"certificateRefs": [{"name": "cert"}]}}
        ]
        secret = tls_secret("cert", pki.server_cert, pki.server_key, namespace=NS)
        config.write_text(documents(*(to_yaml(d) for d in docs), secret))
        # Whether the connection is TLS is what counts here, not whom the certificate names.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

        with Gateway(config, [port], workers=2):
            for path, name in (("/x", "srv"), ("/route", "rs")):
                first = get(port, path, tls=context)
                value, attributes = cookie(first, name)
                assert attributes[-1] == "Secure", attributes
                pinned = [get(port, path, {"Cookie": f"{name}={value}"}, tls=context) for _ in range(10)]
                assert Counter(r.upstream for r in pinned) == {first.upstream: 10}


# -- failover ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("checked", [False, True], ids=["retry", "retry+health"])
def test_session_to_a_killed_endpoint_fails_over_without_error_and_is_re_pinned(tmp_path: Path, checked: bool) -> None:
    port = free_port()
    policies = [STICKY, RETRY] + ([HEALTH] if checked else [])
    with upstreams(3) as ups:
        config = write_config(tmp_path / "s.yaml", port, ups, *policies)
        by_name = {u.name: u for u in ups}
        with Gateway(config, [port], workers=2) as gw:
            first = get(port)
            old = cookie(first, "srv")[0]
            # Both workers' pools hold connections to the endpoint (its death resets them too).
            assert Counter(get(port, headers={"Cookie": f"srv={old}"}).upstream for _ in range(20)) == {
                first.upstream: 20
            }
            dead = by_name[first.upstream]
            dead.stop()
            # The first request after the kill: retried elsewhere, answered, and re-pinned there.
            moved = get(port, headers={"Cookie": f"srv={old}"})
            assert moved.status == 200, moved.status
            assert moved.upstream != dead.name
            new = cookie(moved, "srv")[0]
            assert new != old
            later = [get(port, headers={"Cookie": f"srv={new}"}) for _ in range(100)]
            assert Counter(r.upstream for r in later) == {moved.upstream: 100}
            assert all(r.status == 200 and not r.cookies for r in later)
            # Other clients still holding the old value, in either worker, are served and re-pinned,
            # and so are clients without a session (the balancer's first pick may be the dead one).
            # Without a health check each request sent there costs a retry, which the retry budget
            # allows beyond its share (20 % of the requests) at 10 a second: a few here.
            stale = [get(port, headers={"Cookie": f"srv={old}"}) for _ in range(40 if checked else 4)]
            fresh = [get(port) for _ in range(40 if checked else 4)]
            assert all(r.status == 200 and r.upstream != dead.name for r in stale + fresh)
            values = {(r.upstream, cookie(r, "srv")[0]) for r in [moved, *stale, *fresh]}
            assert len(values) == len({name for name, _ in values}), values  # one value per endpoint
            assert (moved.upstream, new) in values and old not in {v for _, v in values}
            entries = gw.access_log(min_entries=22 + 100 + len(stale) + len(fresh))
            assert {e["status"] for e in entries} == {200}
            assert len({e["pid"] for e in entries}) == 2
            retried = [e for e in entries if e.get("retries")]
            assert all(dead_port(e) == dead.port for e in retried)
            if checked:
                # The first refused connection (or a probe, if one came first) took it out for both
                # workers: no more retries.
                assert len(retried) <= 1, retried
            else:
                assert len(retried) >= 1 + len(stale), retried


def dead_port(entry: dict[str, Any]) -> int:
    (retry,) = entry["retries"]
    return int(retry.split()[0].rsplit(":", 1)[1])


def pinned_to(port: int, value: str) -> str:
    return get(port, headers={"Cookie": f"srv={value}"}).upstream


def next_probe(upstream: Upstream) -> None:
    """Until the next active probe reached ``upstream``, and a moment for its verdict."""
    probes = len(upstream.requests_for("/healthz"))
    wait_for(lambda: len(upstream.requests_for("/healthz")) > probes or None, 5, f"a probe of {upstream.name}")
    time.sleep(0.5)


def test_session_to_an_endpoint_out_of_service_fails_over_and_returns_when_it_recovers(tmp_path: Path) -> None:
    port = free_port()
    with upstreams(3) as ups:
        config = write_config(tmp_path / "s.yaml", port, ups, STICKY, HEALTH)
        by_name = {u.name: u for u in ups}
        with Gateway(config, [port], workers=2):
            first = get(port)
            old = cookie(first, "srv")[0]
            sick = by_name[first.upstream]
            # The active check takes it out: wait for a probe answered 503.
            sick.fail_status = 503
            next_probe(sick)
            served = len(sick.requests) - len(sick.requests_for("/healthz"))
            moved = get(port, headers={"Cookie": f"srv={old}"})
            assert moved.status == 200 and moved.upstream != sick.name
            new = cookie(moved, "srv")[0]
            assert new != old
            later = [get(port, headers={"Cookie": f"srv={new}"}) for _ in range(100)]
            assert Counter(r.upstream for r in later) == {moved.upstream: 100}
            stale = [get(port, headers={"Cookie": f"srv={old}"}) for _ in range(20)]
            assert all(r.status == 200 and r.upstream != sick.name for r in stale)
            assert len(sick.requests) - len(sick.requests_for("/healthz")) == served, "no request reached it"

            # Back in service after one good probe: the new session stays where it is, and the old
            # value names its endpoint again (a session names an endpoint, not a worker's memory).
            sick.fail_status = None
            wait_for(lambda: pinned_to(port, old) == sick.name or None, 5, f"{sick.name} back in service")
            assert Counter(get(port, headers={"Cookie": f"srv={new}"}).upstream for _ in range(30)) == {
                moved.upstream: 30
            }
            back = [get(port, headers={"Cookie": f"srv={old}"}) for _ in range(30)]
            assert Counter(r.upstream for r in back) == {sick.name: 30}
            assert all(not r.cookies for r in back)


def test_backend_session_re_pins_past_a_503_and_a_removed_endpoint_and_survives_reloads(tmp_path: Path) -> None:
    port = free_port()
    # Gateway API's Service-level session (BackendLBPolicy) beats FSM's SessionStickyPolicy.
    blp = to_yaml(
        {
            "apiVersion": "gateway.networking.k8s.io/v1alpha2",
            "kind": "BackendLBPolicy",
            "metadata": {"name": "blp", "namespace": NS},
            "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "svc"}], "sessionPersistence": {}},
        }
    )
    with upstreams(3) as ups:
        by_name = {u.name: u for u in ups}
        config = write_config(tmp_path / "s.yaml", port, ups, STICKY, RETRY, blp)
        with Gateway(config, [port], workers=2) as gw:
            first = get(port)
            (line,) = first.cookies
            name, value = line.split(";")[0].split("=", 1)
            assert re.fullmatch("fsmfast-[0-9a-f]{8}", name), line
            assert "Max-Age" not in line  # a Session cookie, not the sticky policy's
            # Answering 503: the retry goes elsewhere, and its response re-pins the session there.
            by_name[first.upstream].fail_status = 503
            moved = get(port, headers={"Cookie": f"{name}={value}"})
            assert moved.status == 200 and moved.upstream != first.upstream
            (line,) = moved.cookies
            new = line.split(";")[0].split("=", 1)[1]
            assert new != value
            assert Counter(get(port, headers={"Cookie": f"{name}={new}"}).upstream for _ in range(30)) == {
                moved.upstream: 30
            }
            by_name[first.upstream].fail_status = None

            # A reload that removes the new session's endpoint from the EndpointSlices: that session
            # is re-pinned; the others keep their endpoints (the key and the tokens outlive reloads).
            write_config(config, port, [u for u in ups if u.name != moved.upstream], STICKY, RETRY, blp)
            gw.reload()
            gone = [get(port, headers={"Cookie": f"{name}={new}"}) for _ in range(10)]
            assert all(r.status == 200 and r.upstream != moved.upstream for r in gone)
            assert all(len(r.cookies) == 1 and f"{name}={new};" not in r.cookies[0] for r in gone)
            kept = [get(port, headers={"Cookie": f"{name}={value}"}) for _ in range(30)]
            assert Counter(r.upstream for r in kept) == {first.upstream: 30}
            assert all(not r.cookies for r in kept)


# -- routes: persistence beats weights, and every rule its own sessions ---------------------------------


def test_route_session_beats_the_weights_of_its_backends(tmp_path: Path) -> None:
    port = free_port()
    rule = route_rule(**persistence(sessionName="rs"))
    rule["backendRefs"] = [{"name": "svc", "port": 80, "weight": 99}, {"name": "svc2", "port": 80, "weight": 1}]
    with upstreams(2) as ups, Upstream("v0", echo_all=True) as v0, Upstream("v1", echo_all=True) as v1:
        config = write_config(tmp_path / "s.yaml", port, ups, rules=[rule], second=[v0, v1])
        with Gateway(config, [port], workers=2) as gw:
            # One keep-alive connection (one worker): the weights send 1 request in 100 to svc2.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            seen: dict[str, str] = {}
            counts: Counter[str] = Counter()
            for _ in range(200):
                conn.request("GET", "/x", headers={"Host": HOST})
                resp = conn.getresponse()
                resp.read()
                name = resp.headers["X-Upstream"]
                counts[name] += 1
                (line,) = resp.headers.get_all("Set-Cookie") or []
                assert line.startswith("rs=")  # one name for every backend of the rule
                seen.setdefault(name, line.split(";")[0][3:])
            conn.close()
            assert counts["v0"] + counts["v1"] == 2 and counts["u0"] + counts["u1"] == 198, counts
            assert {"u0", "u1"} <= set(seen) and seen.keys() & {"v0", "v1"}
            # A session on svc2's endpoint keeps going there (not to svc, not to svc2's other endpoint).
            for name, value in seen.items():
                pinned = [get(port, headers={"Cookie": f"rs={value}"}) for _ in range(100 if name[0] == "v" else 20)]
                assert Counter(r.upstream for r in pinned) == {name: len(pinned)}
                assert all(r.status == 200 and not r.cookies for r in pinned)
            assert len(served_pids(gw, 200 + 100 + 3 * 20)) == 2


def test_route_session_to_a_backend_out_of_service_falls_over_to_another_backend(tmp_path: Path) -> None:
    port = free_port()
    rule = route_rule(**persistence(sessionName="rs"))
    rule["backendRefs"] = [{"name": "svc", "port": 80, "weight": 99}, {"name": "svc2", "port": 80, "weight": 1}]
    health = to_yaml(
        {
            "apiVersion": "gateway.flomesh.io/v1alpha1",
            "kind": "HealthCheckPolicy",
            "metadata": {"name": "health2", "namespace": NS},
            "spec": {
                "targetRef": {"group": "", "kind": "Service", "name": "svc2"},
                "ports": [{"port": 80, "config": {"interval": 1, "maxFails": 1, "path": "/healthz"}}],
            },
        }
    )
    with upstreams(2) as ups, Upstream("v0", echo_all=True) as v0:
        config = write_config(tmp_path / "s.yaml", port, ups, health, rules=[rule], second=[v0])
        with Gateway(config, [port], workers=2):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            value = ""
            for _ in range(200):
                conn.request("GET", "/x", headers={"Host": HOST})
                resp = conn.getresponse()
                resp.read()
                if resp.headers["X-Upstream"] == "v0":
                    value = resp.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
                    break
            conn.close()
            assert value, "one request in 100 goes to svc2"
            # svc2's only endpoint out: the session no longer beats the weights, which choose svc
            # (their 1 in 100 for svc2 gets svc2's 503), and the response re-pins it there.
            v0.fail_status = 503
            next_probe(v0)
            served = len(v0.requests) - len(v0.requests_for("/healthz"))
            moved = [get(port, headers={"Cookie": f"rs={value}"}) for _ in range(10)]
            assert sum(r.status == 200 for r in moved) >= 8, [r.status for r in moved]
            assert all(r.status == 503 or (r.upstream in ("u0", "u1") and len(r.cookies) == 1) for r in moved)
            assert len(v0.requests) - len(v0.requests_for("/healthz")) == served
            r = next(r for r in moved if r.status == 200)
            new = cookie(r, "rs")[0]
            assert new != value
            assert Counter(get(port, headers={"Cookie": f"rs={new}"}).upstream for _ in range(30)) == {r.upstream: 30}


def test_each_rule_has_its_own_sessions(tmp_path: Path) -> None:
    port = free_port()
    shared = persistence(sessionName="shared")
    rules = [route_rule("/a", **shared), route_rule("/b", **shared), route_rule("/c")]
    with upstreams(3) as ups:
        # The Service's own sticky cookie applies where a rule has no sessionPersistence (/c).
        config = write_config(tmp_path / "s.yaml", port, ups, STICKY, rules=rules)
        with Gateway(config, [port], workers=2):
            a = get(port, "/a")
            # The rule's session wins over the Service's SessionStickyPolicy: no "srv" cookie.
            assert [c.split("=")[0] for c in a.cookies] == ["shared"]
            a_value = cookie(a, "shared")[0]
            assert Counter(get(port, "/a", {"Cookie": f"shared={a_value}"}).upstream for _ in range(20)) == {
                a.upstream: 20
            }
            # /a's value means nothing on /b: the balancer chooses, and /b sets a value of its own.
            on_b = [get(port, "/b", {"Cookie": f"shared={a_value}"}) for _ in range(60)]
            counts = Counter(r.upstream for r in on_b)
            assert all(18 <= counts[u.name] <= 22 for u in ups), counts
            b_values = {r.upstream: cookie(r, "shared")[0] for r in on_b}
            assert a_value not in b_values.values() and len(set(b_values.values())) == 3
            # Both values in one Cookie header: each rule takes its own.
            other = next(name for name in b_values if name != a.upstream)
            both = {"Cookie": f"shared={b_values[other]}; shared={a_value}"}
            assert Counter(get(port, "/a", both).upstream for _ in range(10)) == {a.upstream: 10}
            assert Counter(get(port, "/b", both).upstream for _ in range(10)) == {other: 10}
            c = get(port, "/c")
            assert [x.split("=")[0] for x in c.cookies] == ["srv"]
            assert cookie(c, "srv")[0] not in {a_value, *b_values.values()}
