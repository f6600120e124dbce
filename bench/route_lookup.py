"""Route-lookup micro-benchmark: fsmfast's router with 10, 100, 1,000 and 10,000 HTTPRoutes.

Each HTTPRoute has its own hostname (``h00000.example.com`` ...) and 10 PathPrefix rules (``/svc-0`` ...
``/svc-9``), like scenario S4. The timed operation is what a worker does per request once it has the Host
header and the path: ``HostTable.find(host)`` then ``VHost.match(path)``, for a host near the end of the
table and a path that only the last rule matches. Printed: nanoseconds per lookup for each size (the best
of several repeats, each timing many lookups), plus the time to build the router.

    python -m bench lookup                 # Snapshot built directly (fast)
    python -m bench lookup --yaml          # manifests written as YAML and compiled by fsmfast.compile.build
    python -m bench lookup --one-host      # every route on one hostname, under /route-N/svc-0 ... /svc-9

``--one-host`` is the other way a route table grows: many teams' routes under one hostname, told apart
by their paths. The lookup is then one host and a path among 10 x N rules of that host.
    python -m bench.route_lookup --sizes 10,1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import timeit
from collections.abc import Sequence
from pathlib import Path

from fsmfast.proxy.router import Router
from fsmfast.snapshot import SCHEMA, Backend, BackendRef, Endpoint, Listener, PathMatch, Rule, Snapshot, VirtualHost

PORT = 8080
PATHS = 10
BACKEND = "bench/upstream:80"


def hostname(i: int) -> str:
    return f"h{i:05d}.example.com"


def _rule(route: int, j: int, prefix: str) -> Rule:
    return Rule(
        name=f"httproute/bench/route-{route}/rule/{j}/match/0",
        path=PathMatch(type="PathPrefix", value=prefix),
        backends=(BackendRef(weight=1, backend=BACKEND),),
    )


def snapshot(routes: int, one_host: bool = False) -> Snapshot:
    """The compiled form of ``routes`` HTTPRoutes, written directly (what ``fsmfast.compile`` would produce)."""
    if one_host:
        # Every prefix is as long as the others: any order is the compiler's precedence order.
        rules = tuple(_rule(i, j, f"/route-{i}/svc-{j}") for i in range(routes) for j in range(PATHS))
        return _with((VirtualHost(hostname=hostname(0), rules=rules),))
    vhosts = tuple(
        VirtualHost(hostname=hostname(i), rules=tuple(_rule(i, j, f"/svc-{j}") for j in range(PATHS)))
        for i in range(routes)
    )
    return _with(vhosts)


def _with(vhosts: tuple[VirtualHost, ...]) -> Snapshot:
    return Snapshot(
        schema=SCHEMA,
        generation=1,
        listeners=(Listener(port=PORT, protocol="HTTP", names=("bench/gw/http",), vhosts=vhosts),),
        backends={BACKEND: Backend(name=BACKEND, endpoints=(Endpoint(host="127.0.0.1", port=9),))},
    )


def snapshot_from_yaml(routes: int) -> Snapshot:
    """Write the same routes as Gateway API YAML and compile them with ``fsmfast.compile.build``."""
    import yaml

    from fsmfast.compile import build

    docs: list[dict] = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "bench"},
            "spec": {
                "gatewayClassName": "fsm",
                "listeners": [{"name": "http", "protocol": "HTTP", "port": PORT}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "upstream", "namespace": "bench"},
            "spec": {"ports": [{"port": 80, "targetPort": 9}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "upstream-slice",
                "namespace": "bench",
                "labels": {"kubernetes.io/service-name": "upstream"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 9, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        },
    ]
    for i in range(routes):
        docs.append(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": f"route-{i}", "namespace": "bench"},
                "spec": {
                    "parentRefs": [{"name": "gw"}],
                    "hostnames": [hostname(i)],
                    "rules": [
                        {
                            "matches": [{"path": {"type": "PathPrefix", "value": f"/svc-{j}"}}],
                            "backendRefs": [{"name": "upstream", "port": 80}],
                        }
                        for j in range(PATHS)
                    ],
                },
            }
        )
    with tempfile.TemporaryDirectory(prefix="fsmfast-lookup-") as tmp:
        path = Path(tmp) / "routes.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return build(str(path)).snapshot


def measure(routes: int, use_yaml: bool, repeat: int, min_time: float, one_host: bool = False) -> dict:
    t0 = time.perf_counter()
    snap = snapshot_from_yaml(routes) if use_yaml else snapshot(routes, one_host)
    router = Router(snap)
    build_s = time.perf_counter() - t0
    table = router.tables[PORT]
    # Near the end: the last-but-one route (the very last could be special-cased by an ordered structure).
    near_end = max(0, routes - 2)
    if one_host:
        host, path = hostname(0).encode(), f"/route-{near_end}/svc-{PATHS - 1}/items/42".encode()
    else:
        host, path = hostname(near_end).encode(), f"/svc-{PATHS - 1}/items/42".encode()
    vh = table.find(host)
    assert vh is not None, "host not found"
    rule = vh.match(path)
    assert rule is not None and rule.name.endswith(f"rule/{PATHS - 1}/match/0"), rule and rule.name

    def lookup(find=table.find, host=host, path=path) -> None:
        find(host).match(path)

    timer = timeit.Timer(lookup)
    number, _ = timer.autorange()
    number = max(number, int(number * min_time / 0.2))
    best = min(timer.repeat(repeat=repeat, number=number)) / number
    return {"routes": routes, "rules": routes * PATHS, "ns_per_lookup": best * 1e9, "build_s": build_s}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench lookup", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10,100,1000,10000", help="HTTPRoute counts (default 10,100,1000,10000)")
    p.add_argument("--yaml", action="store_true", help="build through fsmfast.compile.build on generated YAML")
    p.add_argument("--one-host", action="store_true", help="every route on one hostname, told apart by path")
    p.add_argument("--repeat", type=int, default=5, help="repeats per size; the best is kept (default 5)")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per repeat, at least (default 0.2)")
    ns = p.parse_args(argv)
    if ns.one_host and ns.yaml:
        p.error("--one-host builds the snapshot directly; it does not combine with --yaml")
    sizes = [int(x) for x in ns.sizes.split(",") if x.strip()]
    from fsmfast._compiled import describe

    impl = describe()
    layout = "all on one hostname" if ns.one_host else "one hostname each"
    print(f"route lookup: HostTable.find + VHost.match, 10 PathPrefix rules per route ({layout}), last rule hit")
    print(f"({impl})")
    print("| HTTPRoutes | rules | ns per lookup | router build (s) |")
    print("|---:|---:|---:|---:|")
    for n in sizes:
        r = measure(n, ns.yaml, ns.repeat, ns.min_time, ns.one_host)
        print(f"| {r['routes']:,} | {r['rules']:,} | {r['ns_per_lookup']:,.0f} | {r['build_s']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
