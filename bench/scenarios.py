"""The scenarios S1–S9: what the load generator sends, and what each system must be configured to do.

A scenario has one or more *cases* (S5 has two: 1 MiB downloads and 1 MiB uploads). A case is one wrk
load: method, path, Host header, extra headers, body, and the response the pre-flight check expects.
The per-system configuration is written by ``bench/configs.py`` from the same :class:`Scenario`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HOST = "foo.example.com"
SMALL_BODY = b"Hello World!"  # 12 bytes, the upstream's `return 200`
BIG_SIZE = 1 << 20  # 1 MiB, the static file and the upload body
BIG_PATH = "/1m.bin"
UPLOAD_PATH = "/upload"

# S4: 1,000 HTTPRoutes, one distinct hostname each, 10 PathPrefix rules each; the load hits the last rule
# of the last route.
ROUTES_HOSTS = 1000
ROUTES_PATHS = 10

# S8, S9: requests per second (and burst) of their rate limit: far above what one core can serve, so nothing is refused.
RATE_LIMIT = 10_000_000


def route_host(i: int) -> str:
    return f"h{i:04d}.example.com"


def route_prefix(j: int) -> str:
    return f"/svc-{j}"


@dataclass(frozen=True)
class Case:
    name: str  # "get", "download", "upload", ...
    path: str
    method: str = "GET"
    host: str = HOST
    headers: tuple[tuple[str, str], ...] = ()
    body_size: int = 0  # request body bytes (POST)
    expect_size: int = len(SMALL_BODY)  # response body bytes the pre-flight check wants


@dataclass(frozen=True)
class Scenario:
    id: str
    name: str
    summary: str
    cases: tuple[Case, ...]
    listener_tls: bool = False  # S3: the proxies terminate TLS
    upstream_tls: bool = False  # S2: the proxies speak TLS to the upstream
    many_routes: bool = False  # S4
    # S7: the Service has this many endpoints (the upstream listens on as many ports), balanced round robin,
    # with an active health check and retries configured on it (see bench/configs.py for each system).
    endpoints: int = 1
    resilience: bool = False
    # S8: a local rate limit of this many requests per second (burst the same) on the route, one quota for every
    # client; 0: none. The bench's value never triggers: it measures what checking the limit costs.
    rate_limit: int = 0
    # S9: fsmfast's limit is fleet-wide (`mode: Global`), decided by a redis-server the harness starts on loopback
    # (bench/fleet.py). nginx and HAProxy have no Redis-backed limiter: they run S8's local one.
    fleet_limit: bool = False
    notes: tuple[str, ...] = field(default=())


SCENARIOS: dict[str, Scenario] = {
    s.id: s
    for s in (
        Scenario(
            "S1",
            "plain",
            "HTTP listener -> HTTP upstream, keep-alive both sides, 12-byte response",
            (Case("get", "/"),),
        ),
        Scenario(
            "S2",
            "seed",
            "HTTP listener -> HTTPS upstream verified against a private CA (the founding scenario)",
            (Case("get", "/"),),
            upstream_tls=True,
        ),
        Scenario(
            "S3",
            "terminate",
            "HTTPS listener (TLS 1.3, ECDSA P-256 cert) -> HTTP upstream, keep-alive clients",
            (Case("get", "/"),),
            listener_tls=True,
        ),
        Scenario(
            "S4",
            "routes",
            f"{ROUTES_HOSTS:,} HTTPRoutes x {ROUTES_PATHS} PathPrefix rules; requests hit the last rule of the last",
            (Case("get", f"{route_prefix(ROUTES_PATHS - 1)}/x", host=route_host(ROUTES_HOSTS - 1)),),
            many_routes=True,
        ),
        Scenario(
            "S5",
            "big",
            "1 MiB responses (GET a static file); 1 MiB uploads (POST, upstream reads the body)",
            (
                Case("download", BIG_PATH, expect_size=BIG_SIZE),
                Case("upload", UPLOAD_PATH, method="POST", body_size=BIG_SIZE),
            ),
        ),
        Scenario(
            "S6",
            "churn",
            "a new client connection for every request (Connection: close); upstream keep-alive",
            (Case("get", "/", headers=(("Connection", "close"),)),),
        ),
        Scenario(
            "S7",
            "resilient",
            "as S1 against three endpoints: round robin, an active health check and retries configured",
            (Case("get", "/"),),
            endpoints=3,
            resilience=True,
        ),
        Scenario(
            "S8",
            "limited",
            "as S1 with a local rate limit on the route (one quota for all clients) that never triggers",
            (Case("get", "/"),),
            rate_limit=RATE_LIMIT,
        ),
        Scenario(
            "S9",
            "fleet-limited",
            "as S8 with fsmfast's limit fleet-wide (mode: Global) in a local redis-server; "
            "nginx and HAProxy, which have no Redis-backed limiter, run S8's local limit",
            (Case("get", "/"),),
            rate_limit=RATE_LIMIT,
            fleet_limit=True,
        ),
    )
}
