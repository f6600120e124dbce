"""Issue 20 inputs: FSM's RateLimitPolicy, AccessControlPolicy and FaultInjectionPolicy as read,
validated, merged, put in their one category, resolved to Gateway ports, route hostnames and rule
matches, reported (conflicts, missing targets) and shown by ``fsmfast explain`` and /config. The
data plane does not apply them yet; its building blocks are tested on their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fsmfast import snapshot as s
from fsmfast.admin.dump import config_json
from fsmfast.compile import Build
from fsmfast.errors import ConfigError
from fsmfast.explain import explain
from tests.unit.test_compile import compile_docs, cwd, endpoint_slice, gateway, route, service

__all__ = ["cwd"]

G = "group: gateway.networking.k8s.io"
ROUTE = route(
    "r",
    """\
    parentRefs: [{name: gw}]
    hostnames: [a.example.com, "*.b.example.com"]
    rules:
    - matches: [{path: {type: PathPrefix, value: /x}}, {path: {value: /y}, headers: [{name: X-A, value: "1"}]}]
      backendRefs: [{name: svc, port: 8080}]
    - backendRefs: [{name: svc, port: 8080}]
    """,
)
SVC = service(ports="[{port: 8080}]")
ES = endpoint_slice(body="endpoints: [{addresses: [10.0.0.1]}]\nports: [{port: 8080}]\n")
BASE = (gateway(), SVC, ES, ROUTE)
TO_ROUTE = f"targetRef: {{{G}, kind: HTTPRoute, name: r}}"
TO_GW = f"targetRef: {{{G}, kind: Gateway, name: gw}}"
R00 = "httproute/ns/r/rule/0/match/0"
R01 = "httproute/ns/r/rule/0/match/1"
R10 = "httproute/ns/r/rule/1/match/0"


def policy(kind: str, name: str, spec: str, created: str | None = None, ns: str = "ns") -> str:
    meta = f"name: {name}, namespace: {ns}" + (f", creationTimestamp: '{created}'" if created else "")
    body = "\n".join("  " + line for line in spec.strip("\n").splitlines())
    return f"apiVersion: gateway.flomesh.io/v1alpha1\nkind: {kind}\nmetadata: {{{meta}}}\nspec:\n{body}\n"


def others(result: Build) -> list[str]:
    """The warnings other than what a policy needs to be applied ("applied only by a gateway run with
    --ratelimit-redis")."""
    return [w for w in result.warnings if "applied only by" not in w]


def vhost(result: Build, hostname: str, port: int = 8000) -> s.VirtualHost:
    listener = next(li for li in result.snapshot.listeners if li.port == port)
    return next(vh for vh in listener.vhosts if vh.hostname == hostname)


def listener(result: Build, port: int = 8000) -> s.Listener:
    return next(li for li in result.snapshot.listeners if li.port == port)


# --- decoding, merging and CRD defaults -----------------------------------------------------------


def test_rate_limit_defaults_and_merge_over_spec_config(cwd: Path) -> None:
    result = compile_docs(
        *BASE,
        policy(
            "RateLimitPolicy",
            "rl",
            f"""
{TO_ROUTE}
http:
- match: {{path: {{value: /x}}}}
  config: {{requests: 5, responseHeadersToAdd: [{{name: RateLimit-Limit, value: "5"}}]}}
- match: {{path: {{value: /y}}, headers: [{{type: Exact, name: X-A, value: "1"}}]}}
  config: {{mode: Global, backlog: 2, burst: 7, responseStatusCode: 503, key: {{type: ClientIP}}}}
config: {{requests: 100, statTimeWindow: 60}}
""",
        ),
    )
    assert others(result) == []
    # One entry is fleet-wide (mode: Global): its quota lives in the fleet's Redis.
    assert result.warnings == [
        "all.yaml#5 RateLimitPolicy ns/rl: mode: Global: applied only by a gateway run with --ratelimit-redis"
        " (its quotas live in Redis)"
    ]
    edge = vhost(result, "a.example.com").edge
    assert edge[R00] == s.EdgeRule(
        rate_limits=(
            s.RateLimit(
                policy="RateLimitPolicy ns/rl",
                requests=5,
                window=60,
                burst=5,  # defaults to requests
                backlog=10,
                status=429,
                headers=(s.HeaderValue("RateLimit-Limit", "5"),),
                scope=f"match {R00}",  # a route-match entry: this rule's own quota
            ),
        )
    )
    assert edge[R01].rate_limits == (
        s.RateLimit(
            policy="RateLimitPolicy ns/rl",
            requests=100,
            window=60,
            burst=7,
            backlog=2,
            status=503,
            mode="Global",
            key=s.ClientKey(type="ClientIP"),
            scope=f"match {R01}",
        ),
    )
    assert R10 not in edge
    # The rules of the other hostname are the same rules: route-level settings follow them.
    assert vhost(result, "*.b.example.com").edge == edge


def test_access_control_defaults_canonical_networks_and_whitelist_over_blacklist(cwd: Path) -> None:
    result = compile_docs(
        *BASE,
        policy(
            "AccessControlPolicy",
            "ac",
            f"""
{TO_GW}
ports:
- port: 8000
  config:
    whitelist: [10.1.2.3/8, 192.0.2.7, "2001:DB8::1/32", "::1"]
    enableXFF: true
    trustedHops: 1
    trustedProxies: [172.16.0.0/12]
config: {{blacklist: [203.0.113.0/24], message: go away}}
""",
        ),
    )
    assert others(result) == [
        "all.yaml#5 AccessControlPolicy ns/ac: spec.ports[0].config.whitelist[0]: host bits set in '10.1.2.3/8';"
        " read as 10.0.0.0/8",
        "all.yaml#5 AccessControlPolicy ns/ac: spec.ports[0].config.whitelist[2]: host bits set in"
        " '2001:DB8::1/32'; read as 2001:db8::/32",
        "all.yaml#5 AccessControlPolicy ns/ac: spec.ports[0].config.blacklist: ignored: a whitelist is set"
        " (FSM's rule)",
    ]
    assert listener(result).edge == s.PortEdge(
        access=s.AccessControl(
            policy="AccessControlPolicy ns/ac",
            whitelist=("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128"),
            blacklist=(),
            status=403,
            message="go away",
            enable_xff=True,
            trusted_hops=1,
            trusted_proxies=("172.16.0.0/12",),
        )
    )


def test_fault_injection_units_range_and_merge(cwd: Path) -> None:
    result = compile_docs(
        *BASE,
        policy(
            "FaultInjectionPolicy",
            "fi",
            f"""
{TO_ROUTE}
http:
- match: {{path: {{value: /x}}}}
  config: {{delay: {{percent: 10, range: {{min: 1, max: 3}}}}}}
- match: {{path: {{value: /}}}}
  config: {{delay: {{percent: 100, fixed: 2, unit: h}}}}
config: {{abort: {{percent: 5, statusCode: 503, message: boom}}}}
unit: s
""",
        ),
    )
    assert others(result) == []
    edge = vhost(result, "a.example.com").edge
    abort = s.Abort(percent=5, status=503, message="boom")
    assert edge[R00].fault == s.FaultInjection(
        policy="FaultInjectionPolicy ns/fi", delay=s.Delay(percent=10, min=1.0, max=3.0), abort=abort
    )
    # delay.unit wins over spec.unit; fsmfast honours h (FSM's script read it as ms).
    assert edge[R10].fault == s.FaultInjection(
        policy="FaultInjectionPolicy ns/fi", delay=s.Delay(percent=100, min=7200.0, max=7200.0), abort=abort
    )
    # spec.unit defaults to ms
    result = compile_docs(
        *BASE,
        policy(
            "FaultInjectionPolicy",
            "fi",
            f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\nconfig: {{delay: {{percent: 50, fixed: 250}}}}",
        ),
    )
    fault = vhost(result, "a.example.com").edge[R10].fault
    assert fault is not None and fault.delay == s.Delay(percent=50, min=0.25, max=0.25) and fault.abort is None


def test_snapshots_without_edge_policies_do_not_change(cwd: Path) -> None:
    result = compile_docs(*BASE)
    assert b'"edge"' not in s.to_json(result.snapshot)
    assert s.decode(s.encode(result.snapshot)) == result.snapshot
    built = compile_docs(*BASE, policy("RateLimitPolicy", "rl", f"{TO_GW}\nports: [{{port: 8000}}]\nbps: 2048"))
    assert built.warnings == []  # a byte rate on an HTTP port is applied: nothing to warn about
    with_edge = built.snapshot
    assert s.decode(s.encode(with_edge)) == with_edge
    assert listener_edge(with_edge) == s.PortEdge(bandwidth=s.Bandwidth(policy="RateLimitPolicy ns/rl", bps=2048))


def listener_edge(snap: s.Snapshot) -> s.PortEdge | None:
    return snap.listeners[0].edge


# --- every error names file, document and field -----------------------------------------------------

ERRORS = [
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\nconfig: {{statTimeWindow: 1}}",
        "spec.hostnames[0].config.requests: required (here or in spec.config)",
    ),
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com, config: {{requests: 1}}}}]",
        "spec.hostnames[0].config.statTimeWindow: required (here or in spec.config)",
    ),
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\nconfig: {{requests: 0, statTimeWindow: 1}}",
        "spec.config.requests: must be at least 1, got 0",
    ),
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\nconfig: {{requests: 1, statTimeWindow: 1, backlog: 0}}",
        "spec.config.backlog: must be at least 1, got 0",
    ),
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\n"
        "config: {requests: 1, statTimeWindow: 1, responseStatusCode: 10001}",
        "spec.config.responseStatusCode: must be between 1 and 10000, got 10001",
    ),
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\n"
        "config: {requests: 1, statTimeWindow: 1, responseStatusCode: 204}",
        "spec.config.responseStatusCode: expected a status 200-599 other than 204, 205, 304; got 204",
    ),
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\n"
        "config: {requests: 1, statTimeWindow: 1, responseHeadersToAdd: [{name: 'a b', value: x}]}",
        "spec.config.responseHeadersToAdd[0].name: 'a b' is not a valid header name",
    ),
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\n"
        "config: {requests: 1, statTimeWindow: 1, mode: Cluster}",
        'spec.config.mode: must be one of Global, Local; got "Cluster"',
    ),
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\n"
        "config: {requests: 1, statTimeWindow: 1, key: {type: Header}}",
        "spec.config.key.name: required when type is Header",
    ),
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\n"
        "config: {requests: 1, statTimeWindow: 1, key: {type: ClientIP, name: X-Key}}",
        "spec.config.key.name: only allowed when type is Header",
    ),
    ("RateLimitPolicy", f"{TO_GW}\nports: [{{port: 8000}}]", "spec.ports[0].bps: required (here or in spec.bps)"),
    ("RateLimitPolicy", f"{TO_GW}\nports: [{{port: 8000, bps: 0}}]", "spec.ports[0].bps: must be at least 1, got 0"),
    (
        "RateLimitPolicy",
        f"{TO_GW}\nports: [{{port: 8000}}, {{port: 8000}}]\nbps: 10",
        "spec.ports[1].port: duplicate port 8000 (also spec.ports[0])",
    ),
    (
        "RateLimitPolicy",
        "targetRef: {kind: Service, name: svc}\nports: [{port: 8000}]\nbps: 10",
        "spec.targetRef: must reference a Gateway, HTTPRoute or GRPCRoute (group gateway.networking.k8s.io),"
        " got Service",
    ),
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}, {{hostname: A.example.com}}]\n"
        "config: {requests: 1, statTimeWindow: 1}",
        "spec.hostnames[1].hostname: duplicate hostname a.example.com (also spec.hostnames[0])",
    ),
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: 'a..com'}}]\nconfig: {{requests: 1, statTimeWindow: 1}}",
        "spec.hostnames[0].hostname:",
    ),
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhttp: [{{match: {{path: {{value: x}}}}}}]\nconfig: {{requests: 1, statTimeWindow: 1}}",
        "spec.http[0].match.path.value:",
    ),
    (
        "RateLimitPolicy",
        f"{TO_ROUTE}\nhttp: [{{match: {{path: {{type: RegularExpression, value: '('}}}}}}]\n"
        "config: {requests: 1, statTimeWindow: 1}",
        "spec.http[0].match.path.value:",
    ),
    (
        "RateLimitPolicy",
        f"{G.replace('group', 'targetRef: {group')}, kind: GRPCRoute, name: g}}\n"
        "grpc: [{match: {method: {type: Exact}}}]\nconfig: {requests: 1, statTimeWindow: 1}",
        "spec.grpc[0].match.method: one of service or method is required",
    ),
    (
        "AccessControlPolicy",
        f"{TO_GW}\nports: [{{port: 8000, config: {{whitelist: [10.0.0.0/33]}}}}]",
        "spec.ports[0].config.whitelist[0]: '10.0.0.0/33' is not an IP address or CIDR:"
        " the prefix length must be 0..32",
    ),
    (
        "AccessControlPolicy",
        f"{TO_GW}\nports: [{{port: 8000}}]\nconfig: {{blacklist: ['2001:db8::g']}}",
        "spec.config.blacklist[0]: '2001:db8::g' is not an IP address or CIDR",
    ),
    (
        "AccessControlPolicy",
        f"{TO_GW}\nports: [{{port: 8000}}]\nconfig: {{whitelist: [1.2.3.4], enableXFF: true, trustedProxies: [proxy]}}",
        "spec.config.trustedProxies[0]: 'proxy' is not an IP address or CIDR",
    ),
    (
        "AccessControlPolicy",
        f"{TO_GW}\nports: [{{port: 8000}}]\nconfig: {{whitelist: [1.2.3.4], enableXFF: true, trustedHops: -1}}",
        "spec.config.trustedHops: must be between 0 and 64, got -1",
    ),
    (
        "AccessControlPolicy",
        f"{TO_GW}\nports: [{{port: 8000}}]\nconfig: {{whitelist: [1.2.3.4], statusCode: 99}}",
        "spec.config.statusCode: expected a status 200-599 other than 204, 205, 304; got 99",
    ),
    (
        "AccessControlPolicy",
        f"{TO_GW}\nports: [{{port: 8000}}]\nconfig: {{whitelist: [{', '.join(f'10.0.0.{n}' for n in range(33))}]}}",
        "spec.config.whitelist: at most 32 entries, got 33",
    ),
    (
        "FaultInjectionPolicy",
        f"{TO_GW}\nhostnames: [{{hostname: a.example.com}}]\nconfig: {{abort: {{percent: 1, statusCode: 500}}}}",
        "spec.targetRef: must reference an HTTPRoute or GRPCRoute (group gateway.networking.k8s.io),"
        " got gateway.networking.k8s.io/Gateway",
    ),
    (
        "FaultInjectionPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]",
        "spec.hostnames[0].config: delay or abort is required (here or in spec.config)",
    ),
    (
        "FaultInjectionPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\nconfig: {{delay: {{percent: 101, fixed: 1}}}}",
        "spec.config.delay.percent: must be between 0 and 100, got 101",
    ),
    (
        "FaultInjectionPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\nconfig: {{delay: {{percent: 1}}}}",
        "spec.config.delay: fixed or range is required",
    ),
    (
        "FaultInjectionPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\n"
        "config: {delay: {percent: 1, fixed: 1, range: {min: 1, max: 2}}}",
        "spec.config.delay: fixed and range are mutually exclusive; set one",
    ),
    (
        "FaultInjectionPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\n"
        "config: {delay: {percent: 1, range: {min: 3, max: 2}}}",
        "spec.config.delay.range: min (3) must not exceed max (2)",
    ),
    (
        "FaultInjectionPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\n"
        "config: {delay: {percent: 1, range: {min: 0, max: 0}}}",
        "spec.config.delay.range.max: must be at least 1, got 0",
    ),
    (
        "FaultInjectionPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\nconfig: {{delay: {{percent: 1, fixed: 1, unit: w}}}}",
        'spec.config.delay.unit: must be one of d, h, m, ms, s; got "w"',
    ),
    (
        "FaultInjectionPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\nconfig: {{delay: {{percent: 1, fixed: 1}}}}\nunit: y",
        'spec.unit: must be one of d, h, m, ms, s; got "y"',
    ),
    (
        "FaultInjectionPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\nconfig: {{abort: {{percent: 1}}}}",
        "spec.config.abort.statusCode: required",
    ),
    (
        "FaultInjectionPolicy",
        f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\nconfig: {{abort: {{percent: 1, statusCode: 0}}}}",
        "spec.config.abort.statusCode: must be between 1 and 10000, got 0",
    ),
]


@pytest.mark.parametrize(
    ("kind", "spec", "message"), ERRORS, ids=[f"{n}-{e[2].split(':')[0]}" for n, e in enumerate(ERRORS)]
)
def test_every_error_names_file_document_and_field(cwd: Path, kind: str, spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        compile_docs(*BASE, policy(kind, "p", spec))
    errors = [str(issue) for issue in exc.value.issues]
    assert len(errors) == 1 and errors[0].startswith(f"all.yaml#5 {kind} ns/p: {message}"), errors


# --- categories, warnings and targets -----------------------------------------------------------------


def test_one_category_per_policy_and_what_it_leaves_without_effect(cwd: Path) -> None:
    rl = "config: {requests: 1, statTimeWindow: 1}"
    result = compile_docs(
        *BASE,
        # Gateway with ports: the port category; hostnames and http are FSM's other categories.
        policy(
            "RateLimitPolicy",
            "gw",
            f"{TO_GW}\nports: [{{port: 8000, bps: 10}}]\nhostnames: [{{hostname: a.example.com}}]\n{rl}",
        ),
        # HTTPRoute with hostnames and http: hostnames is tested first.
        policy(
            "RateLimitPolicy",
            "both",
            f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\nhttp: [{{match: {{path: {{value: /x}}}}}}]\n"
            f"ports: [{{port: 8000}}]\nbps: 5\n{rl}",
        ),
        # A Gateway target without ports: nothing.
        policy("AccessControlPolicy", "none", f"{TO_GW}\nhostnames: [{{hostname: a.example.com}}]"),
        # An unknown field is a warning, as everywhere.
        policy(
            "FaultInjectionPolicy",
            "typo",
            f"{TO_ROUTE}\nhttp: [{{match: {{}}}}]\nconfig: {{abort: {{percent: 1, statusCode: 500, mesage: x}}}}",
        ),
    )
    assert others(result) == [
        "all.yaml#5 RateLimitPolicy ns/gw: spec.hostnames: ignored (only for an HTTPRoute or GRPCRoute target;"
        " a policy takes effect in one category only)",
        "all.yaml#5 RateLimitPolicy ns/gw: spec.config: ignored (a Gateway port takes bps only)",
        "all.yaml#6 RateLimitPolicy ns/both: spec.ports: ignored (only for a Gateway target;"
        " a policy takes effect in one category only)",
        "all.yaml#6 RateLimitPolicy ns/both: spec.http: ignored (spec.hostnames is used;"
        " a policy takes effect in one category only)",
        "all.yaml#6 RateLimitPolicy ns/both: spec.bps: ignored (only for ports of a Gateway target)",
        "all.yaml#7 AccessControlPolicy ns/none: spec.hostnames[0].config: neither whitelist nor blacklist,"
        " so this entry allows everyone",
        "all.yaml#7 AccessControlPolicy ns/none: spec: no ports entries for a Gateway target, so this policy"
        " has no effect",
        "all.yaml#8 FaultInjectionPolicy ns/typo: spec.config.abort.mesage: unknown field, ignored"
        " (did you mean message?)",
    ]
    # The route-level entry of ns/both is ignored: rule /x has only the hostname-level limit.
    (limit,) = vhost(result, "a.example.com").edge[R00].rate_limits
    assert limit.policy == "RateLimitPolicy ns/both"
    assert listener(result).edge == s.PortEdge(bandwidth=s.Bandwidth(policy="RateLimitPolicy ns/gw", bps=10))


def test_missing_targets_ports_hostnames_and_matches_are_reported(cwd: Path) -> None:
    rl = "config: {requests: 1, statTimeWindow: 1}"
    grpc = f"targetRef: {{{G}, kind: GRPCRoute, name: g}}\ngrpc: [{{match: {{method: {{service: a.B}}}}}}]\n{rl}"
    result = compile_docs(
        *BASE,
        policy(
            "RateLimitPolicy", "nogw", f"targetRef: {{{G}, kind: Gateway, name: nope}}\nports: [{{port: 8000, bps: 1}}]"
        ),
        policy("RateLimitPolicy", "noport", f"{TO_GW}\nports: [{{port: 9000}}, {{port: 8000}}]\nbps: 1"),
        policy(
            "RateLimitPolicy",
            "noroute",
            f"targetRef: {{{G}, kind: HTTPRoute, name: nope}}\nhostnames: [{{hostname: a.example.com}}]\n{rl}",
        ),
        policy(
            "RateLimitPolicy",
            "nohost",
            f"{TO_ROUTE}\nhostnames: [{{hostname: c.example.com}}, {{hostname: x.b.example.com}}]\n{rl}",
        ),
        policy(
            "FaultInjectionPolicy",
            "nomatch",
            f"{TO_ROUTE}\nhttp: [{{match: {{path: {{type: Exact, value: /x}}}}}}, {{match: {{path: {{value: /y}}}}}}]\n"
            "config: {abort: {percent: 1, statusCode: 500}}",
        ),
        policy("RateLimitPolicy", "grpc", grpc),
    )
    assert others(result) == [
        "all.yaml#5 RateLimitPolicy ns/nogw: spec.targetRef: gateway ns/nope not found; policy has no effect",
        "all.yaml#6 RateLimitPolicy ns/noport: spec.ports[0].port: gateway ns/gw has no listener on port 9000;"
        " this entry has no effect",
        "all.yaml#7 RateLimitPolicy ns/noroute: spec.targetRef: HTTPRoute ns/nope not found; policy has no effect",
        "all.yaml#8 RateLimitPolicy ns/nohost: spec.hostnames[0].hostname: HTTPRoute ns/r has no hostname matching"
        " c.example.com (it has a.example.com, *.b.example.com); this entry has no effect",
        "all.yaml#9 FaultInjectionPolicy ns/nomatch: spec.http[0].match: equals no match of HTTPRoute ns/r"
        " (compared field by field after defaults); this entry has no effect",
        "all.yaml#9 FaultInjectionPolicy ns/nomatch: spec.http[1].match: equals no match of HTTPRoute ns/r"
        " (compared field by field after defaults); this entry has no effect",
        "all.yaml#10 RateLimitPolicy ns/grpc: spec.targetRef: GRPCRoute is not served by fsmfast;"
        " this policy has no effect",
    ]
    # What did resolve: port 8000 of ns/noport, and x.b.example.com (inside *.b.example.com).
    assert listener(result).edge == s.PortEdge(bandwidth=s.Bandwidth(policy="RateLimitPolicy ns/noport", bps=1))
    assert all(not vh.edge for vh in listener(result).vhosts)  # x.b.example.com has no virtual host of its own


def test_route_matches_are_compared_after_defaults(cwd: Path) -> None:
    # The route wrote type PathPrefix and a header without type; the policy the other way round.
    spec = (
        f"{TO_ROUTE}\nhttp:\n"
        "- match: {path: {value: /x}}\n"
        "- match: {path: {type: PathPrefix, value: /y}, headers: [{type: Exact, name: X-A, value: '1'}]}\n"
        "- match: {}\n"
        "config: {whitelist: [10.0.0.0/8]}"
    )
    result = compile_docs(*BASE, policy("AccessControlPolicy", "ac", spec))
    assert others(result) == []
    assert sorted(vhost(result, "a.example.com").edge) == [R00, R01, R10]


# --- conflicts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["old first", "new first"])
def test_the_older_policy_wins_and_the_other_is_conflicted(cwd: Path, order: str) -> None:
    old = policy(
        "AccessControlPolicy",
        "old",
        f"{TO_GW}\nports: [{{port: 8000, config: {{whitelist: [10.0.0.1]}}}}]",
        "2024-01-01T00:00:00Z",
    )
    new = policy(
        "AccessControlPolicy",
        "new",
        f"{TO_GW}\nports: [{{port: 8000, config: {{whitelist: [10.0.0.2]}}}}]",
        "2024-06-01T00:00:00Z",
    )
    docs = (old, new) if order == "old first" else (new, old)
    result = compile_docs(*BASE, *docs)
    edge = listener(result).edge
    assert edge is not None and edge.access is not None and edge.access.policy == "AccessControlPolicy ns/old"
    doc = 6 if order == "old first" else 5
    assert others(result) == [
        f"all.yaml#{doc} AccessControlPolicy ns/new: spec.ports[0]: Conflicted: conflicts with AccessControlPolicy"
        " ns/old (older) on gateway port 8000; ignored there"
    ]


def test_conflicts_per_hostname_and_per_rule_by_name_at_equal_age(cwd: Path) -> None:
    host = f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\nconfig: {{requests: %d, statTimeWindow: 1}}"
    rule = (
        f"{TO_ROUTE}\nhttp: [{{match: {{path: {{value: /x}}}}}}]\nconfig: {{abort: {{percent: %d, statusCode: 500}}}}"
    )
    result = compile_docs(
        *BASE,
        policy("RateLimitPolicy", "b", host % 2),
        policy("RateLimitPolicy", "a", host % 1),
        policy("RateLimitPolicy", "c", host % 1),  # the winner's setting: not a conflict
        policy("FaultInjectionPolicy", "z", rule % 2),
        policy("FaultInjectionPolicy", "y", rule % 1),
    )
    assert others(result) == [
        "all.yaml#5 RateLimitPolicy ns/b: spec.hostnames[0]: Conflicted: conflicts with RateLimitPolicy ns/a"
        " (older) on HTTPRoute ns/r hostname a.example.com; ignored there",
        "all.yaml#8 FaultInjectionPolicy ns/z: spec.http[0]: Conflicted: conflicts with FaultInjectionPolicy ns/y"
        " (older) on HTTPRoute ns/r spec.rules[0].matches[0]; ignored there",
    ]
    edge = vhost(result, "a.example.com").edge[R00]
    assert [r.policy for r in edge.rate_limits] == ["RateLimitPolicy ns/a"]
    assert edge.fault is not None and edge.fault.policy == "FaultInjectionPolicy ns/y"


# --- levels -------------------------------------------------------------------------------------------


def test_hostname_then_route_level_and_fault_override(cwd: Path) -> None:
    result = compile_docs(
        *BASE,
        policy(
            "RateLimitPolicy",
            "host",
            f"{TO_ROUTE}\nhostnames: [{{hostname: '*.b.example.com'}}, {{hostname: a.example.com}}]\n"
            "config: {requests: 10, statTimeWindow: 1}",
        ),
        policy(
            "RateLimitPolicy",
            "rule",
            f"{TO_ROUTE}\nhttp: [{{match: {{path: {{value: /x}}}}, config: {{requests: 2, statTimeWindow: 1}}}}]",
        ),
        policy(
            "FaultInjectionPolicy",
            "fhost",
            f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\nconfig: {{abort: {{percent: 1, statusCode: 500}}}}",
        ),
        policy(
            "FaultInjectionPolicy",
            "frule",
            f"{TO_ROUTE}\nhttp: [{{match: {{path: {{value: /x}}}}}}]\n"
            "config: {abort: {percent: 2, statusCode: 502}}",
        ),
        policy(
            "AccessControlPolicy",
            "acl",
            f"{TO_ROUTE}\nhostnames: [{{hostname: '*.example.com'}}]\nconfig: {{blacklist: ['::1']}}",
        ),
    )
    a = vhost(result, "a.example.com").edge
    assert [r.policy for r in a[R00].rate_limits] == ["RateLimitPolicy ns/host", "RateLimitPolicy ns/rule"]
    assert a[R00].fault is not None and a[R00].fault.policy == "FaultInjectionPolicy ns/frule"
    assert a[R10].fault is not None and a[R10].fault.policy == "FaultInjectionPolicy ns/fhost"
    assert [r.policy for r in a[R10].rate_limits] == ["RateLimitPolicy ns/host"]
    assert [x.policy for x in a[R10].access] == ["AccessControlPolicy ns/acl"]  # a wildcard covers a.example.com
    b = vhost(result, "*.b.example.com").edge
    assert [r.policy for r in b[R00].rate_limits] == ["RateLimitPolicy ns/host", "RateLimitPolicy ns/rule"]
    assert b[R10].fault is None and b[R10].access[0].blacklist == ("::1/128",)


# --- explain and /config ------------------------------------------------------------------------------


def test_explain_and_config_show_the_edge_policies(cwd: Path) -> None:
    result = compile_docs(
        *BASE,
        policy(
            "AccessControlPolicy",
            "port",
            f"{TO_GW}\nports: [{{port: 8000, config: {{whitelist: [10.0.0.0/8], enableXFF: true, trustedHops: 2}}}}]",
        ),
        policy("RateLimitPolicy", "bw", f"{TO_GW}\nports: [{{port: 8000}}]\nbps: 4096"),
        policy(
            "RateLimitPolicy",
            "rl",
            f"{TO_ROUTE}\nhostnames: [{{hostname: a.example.com}}]\n"
            "config: {requests: 20, statTimeWindow: 60, key: {type: ClientIP}}",
        ),
        policy(
            "FaultInjectionPolicy",
            "fi",
            f"{TO_ROUTE}\nhttp: [{{match: {{path: {{value: /x}}}}}}]\n"
            "config: {delay: {percent: 10, range: {min: 100, max: 300}},"
            " abort: {percent: 1, statusCode: 503, message: nope}}",
        ),
    )
    text = explain(result.snapshot, 8000, "a.example.com", "/x/1")
    assert (
        "matched    httproute/ns/r/rule/0/match/0\n"
        "edge       (explain draws no fault and takes no token)\n"
        "           port 8000: access control allow only 10.0.0.0/8; refused with 403; client from X-Forwarded-For"
        " past 2 trusted hops (AccessControlPolicy ns/port)\n"
        "           port 8000: bandwidth 4096 bytes/s per connection, each direction (RateLimitPolicy ns/bw)\n"
        "           rule: rate limit 20 requests per 1m per client address; burst 20; 10 may wait; then 429"
        " (RateLimitPolicy ns/rl)\n"
        "           rule: fault injection delay 100ms-300ms for 10%; abort with 503 for 1% 'nope'"
        " (FaultInjectionPolicy ns/fi)\n"
    ) in text
    # Another hostname: the port's only.
    other = explain(result.snapshot, 8000, "x.b.example.com", "/z")
    assert "port 8000: access control" in other and "rule:" not in other
    dump = config_json(result.snapshot)["listeners"][0]
    assert [p["policy"] for p in dump["edge"]] == ["AccessControlPolicy ns/port", "RateLimitPolicy ns/bw"]
    routes = {r["name"]: r for r in dump["virtual_hosts"][0]["routes"]}
    assert routes[R00]["edge"]["policies"] == [
        {
            "kind": "rate limit",
            "policy": "RateLimitPolicy ns/rl",
            "text": "20 requests per 1m per client address; burst 20; 10 may wait; then 429",
        },
        {
            "kind": "fault injection",
            "policy": "FaultInjectionPolicy ns/fi",
            "text": "delay 100ms-300ms for 10%; abort with 503 for 1% 'nope'",
        },
    ]
    assert routes[R00]["edge"]["settings"]["fault"]["delay"] == {"percent": 10, "min": 0.1, "max": 0.3}
    # Without edge policies neither explain nor /config says anything about them.
    plain = compile_docs(*BASE)
    assert "edge" not in explain(plain.snapshot, 8000, "a.example.com", "/x")
    plain_dump = config_json(plain.snapshot)["listeners"][0]
    assert plain_dump["edge"] == [] and all("edge" not in r for r in plain_dump["virtual_hosts"][0]["routes"])
