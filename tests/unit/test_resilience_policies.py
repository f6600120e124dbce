"""Issue 19 inputs: FSM's LoadBalancer, HealthCheck, Retry, CircuitBreaking and SessionSticky
policies, HTTPRoute rules[].retry / sessionPersistence and BackendLBPolicy, as read, validated,
merged, resolved to Service ports, reported (conflicts, missing targets) and shown by
``fsmfast check``, ``fsmfast explain`` and /config. What the data plane does with them is tested
end to end in tests/integration.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsmfast import snapshot as s
from fsmfast.admin.dump import config_json
from fsmfast.cli import main
from fsmfast.compile import Build
from fsmfast.explain import explain
from tests.unit.test_compile import compile_docs, cwd, endpoint_slice, gateway, route, service
from tests.unit.test_config_loading import errors_of

__all__ = ["cwd"]

ROUTE = route(
    "r",
    """\
    parentRefs: [{name: gw}]
    rules:
    - backendRefs: [{name: svc, port: 8080}]
    """,
)
SVC = service(ports="[{name: http, port: 8080}, {name: grpc, port: 9090}]")
ES = endpoint_slice(
    body="endpoints: [{addresses: [10.0.0.1]}]\nports: [{name: http, port: 8080}, {name: grpc, port: 9090}]\n"
)
BASE = (gateway(), SVC, ES, ROUTE)


def policy(kind: str, name: str, spec: str, created: str | None = None, ns: str = "ns") -> str:
    meta = f"name: {name}, namespace: {ns}" + (f", creationTimestamp: '{created}'" if created else "")
    body = "\n".join("  " + line for line in spec.strip("\n").splitlines())
    return f"apiVersion: gateway.flomesh.io/v1alpha1\nkind: {kind}\nmetadata: {{{meta}}}\nspec:\n{body}\n"


def backend(result: Build, key: str = "ns/svc:8080") -> s.Backend:
    return result.snapshot.backends[key]


# --- decoding and CRD defaults ------------------------------------------------------------------


def test_the_fsm_guide_examples_with_their_defaults(cwd: Path) -> None:
    # The shapes of the FSM guide: targetRef without group, ports[] with config, spec config.
    result = compile_docs(
        *BASE,
        policy(
            "RetryPolicy",
            "retry",
            """
targetRef: {kind: Service, name: svc, namespace: ns}
ports:
- port: 8080
  config: {retryOn: ["5xx"], numRetries: 5, backoffBaseInterval: 2}
""",
        ),
        policy(
            "HealthCheckPolicy",
            "health",
            """
targetRef: {group: "", kind: Service, name: svc}
ports:
- port: 8080
  config:
    interval: 10
    maxFails: 3
    failTimeout: 1
    path: /healthz
    matches:
    - statusCodes: [200, 201]
      body: ok
      headers: [{name: Content-Type, value: text/plain}]
""",
        ),
        policy(
            "CircuitBreakingPolicy",
            "cb",
            """
targetRef: {kind: Service, name: svc}
ports:
- port: 8080
  config: {minRequestAmount: 10, statTimeWindow: 60, slowTimeThreshold: 0.2, slowAmountThreshold: 5,
           degradedTimeWindow: 10, degradedResponseContent: "Service Unavailable"}
""",
        ),
        policy("SessionStickyPolicy", "sticky", "targetRef: {kind: Service, name: svc}\nports: [{port: 8080}]"),
        policy("LoadBalancerPolicy", "lb", "targetRef: {kind: Service, name: svc}\nports: [{port: 8080}]"),
    )
    p = backend(result).resilience
    assert p == s.BackendPolicies(
        lb=s.LoadBalancing(policy="LoadBalancerPolicy ns/lb", type="RoundRobinLoadBalancer"),
        health=s.HealthCheck(
            policy="HealthCheckPolicy ns/health",
            interval=10,
            max_fails=3,
            fail_timeout=1,
            path="/healthz",
            matches=(
                s.HealthMatch(
                    status_codes=(200, 201), body="ok", headers=(s.HeaderValue("Content-Type", "text/plain"),)
                ),
            ),
        ),
        retry=s.Retry(policy="RetryPolicy ns/retry", on=("5xx",), attempts=5, backoff=2.0),
        circuit=s.CircuitBreaker(
            policy="CircuitBreakingPolicy ns/cb",
            min_request_amount=10,
            stat_time_window=60,
            degraded_time_window=10,
            degraded_status_code=503,
            slow_time_threshold=0.2,
            slow_amount_threshold=5,
            degraded_response_content="Service Unavailable",
        ),
        sticky=s.StickyCookie(policy="SessionStickyPolicy ns/sticky", cookie_name="_srv_id", expires=3600),
    )
    # The other port of the Service has none of them.
    assert "ns/svc:9090" not in result.snapshot.backends
    assert result.warnings == []  # valid policies, none conflicting or overridden: nothing to warn about
    assert "5 policies" in result.summary


def test_health_check_defaults_tcp_without_path_and_200_with_one(cwd: Path) -> None:
    result = compile_docs(
        *BASE,
        policy(
            "HealthCheckPolicy",
            "h",
            "targetRef: {kind: Service, name: svc}\nports: [{port: 8080}, {port: 9090, config: {path: /}}]\n"
            "config: {interval: 5, maxFails: 2}",
        ),
        route("r2", "parentRefs: [{name: gw}]\nrules: [{backendRefs: [{name: svc, port: 9090}]}]"),
    )
    assert backend(result).resilience == s.BackendPolicies(
        health=s.HealthCheck(policy="HealthCheckPolicy ns/h", interval=5, max_fails=2)
    )
    assert backend(result, "ns/svc:9090").resilience == s.BackendPolicies(
        health=s.HealthCheck(
            policy="HealthCheckPolicy ns/h",
            interval=5,
            max_fails=2,
            path="/",
            matches=(s.HealthMatch(status_codes=(200,)),),
        )
    )


@pytest.mark.parametrize(
    ("spec", "errors"),
    [
        (
            "targetRef: {kind: Service, name: svc}\nports: [{port: 8080, config: {numRetries: 0}}]",
            ["spec.ports[0].config.numRetries: must be at least 1, got 0"],
        ),
        (
            "targetRef: {kind: Service, name: svc}\nports: [{port: 8080, config: {retryOn: ['5xx', '5XX', '600']}}]",
            [
                "spec.ports[0].config.retryOn[1]: expected \"5xx\" or a status code (100-599), got '5XX'",
                "spec.ports[0].config.retryOn[2]: expected \"5xx\" or a status code (100-599), got '600'",
            ],
        ),
        (
            "targetRef: {kind: Service, name: svc}\nports: [{port: 8080}, {port: 8080}]",
            [
                "spec.ports[0].config.retryOn: required (here or in spec.config)",
                "spec.ports[1].port: duplicate port 8080 (also spec.ports[0])",
                "spec.ports[1].config.retryOn: required (here or in spec.config)",
            ],
        ),
        (
            "targetRef: {group: apps, kind: Deployment, name: svc}\nports: [{port: 8080}]\nconfig: {retryOn: ['503']}",
            ['spec.targetRef: must reference a Service (group "", kind Service), got apps/Deployment'],
        ),
    ],
)
def test_invalid_retry_policies(cwd: Path, spec: str, errors: list[str]) -> None:
    assert errors_of_docs(policy("RetryPolicy", "p", spec)) == [f"all.yaml#1 RetryPolicy ns/p: {e}" for e in errors]


def errors_of_docs(*docs: str) -> list[str]:
    Path("all.yaml").write_text("".join("---\n" + d for d in docs))
    return errors_of("all.yaml")


def test_invalid_health_circuit_sticky_and_lb_policies(cwd: Path) -> None:
    target = "targetRef: {kind: Service, name: svc}\n"
    assert errors_of_docs(
        policy("HealthCheckPolicy", "h", target + "ports: [{port: 80, config: {interval: 5, path: healthz}}]"),
        policy(
            "CircuitBreakingPolicy",
            "c",
            target + "ports: [{port: 80, config: {minRequestAmount: 1, errorRatioThreshold: 1.5}}]",
        ),
        policy("CircuitBreakingPolicy", "c2", target + "ports: [{port: 80}]\nconfig: {minRequestAmount: 1}"),
        policy("SessionStickyPolicy", "st", target + "ports: [{port: 80, config: {cookieName: 'a b'}}]"),
        policy("LoadBalancerPolicy", "lb", target + "ports: [{port: 80, type: Random}]"),
    ) == [
        "all.yaml#1 HealthCheckPolicy ns/h: spec.ports[0].config.path: must start with /, got 'healthz'",
        "all.yaml#1 HealthCheckPolicy ns/h: spec.ports[0].config.maxFails: required (here or in spec.config)",
        "all.yaml#2 CircuitBreakingPolicy ns/c: spec.ports[0].config.errorRatioThreshold:"
        " must be between 0 and 1, got 1.5",
        "all.yaml#3 CircuitBreakingPolicy ns/c2: spec.ports[0].config.statTimeWindow: required"
        " (here or in spec.config)",
        "all.yaml#3 CircuitBreakingPolicy ns/c2: spec.ports[0].config.degradedTimeWindow: required"
        " (here or in spec.config)",
        "all.yaml#4 SessionStickyPolicy ns/st: spec.ports[0].config.cookieName: 'a b' is not a valid cookie name",
        "all.yaml#5 LoadBalancerPolicy ns/lb: spec.ports[0].type: must be one of HashingLoadBalancer,"
        ' LeastConnectionLoadBalancer, RoundRobinLoadBalancer; got "Random"',
    ]


def test_degraded_status_code_must_be_a_status_the_gateway_can_answer_with(cwd: Path) -> None:
    # FSM's CRD takes 1-10000; the breaker answers with this status and its content.
    target = "targetRef: {kind: Service, name: svc}\n"
    required = "minRequestAmount: 1, statTimeWindow: 1, degradedTimeWindow: 1"
    docs = [
        policy(
            "CircuitBreakingPolicy",
            f"c{code}",
            target + f"ports: [{{port: 80, config: {{degradedStatusCode: {code}}}}}]\nconfig: {{{required}}}",
        )
        for code in (1, 103, 199, 200, 204, 205, 304, 409, 599, 600, 10000)
    ]
    assert errors_of_docs(*docs) == [
        f"all.yaml#{i} CircuitBreakingPolicy ns/c{code}: spec.ports[0].config.degradedStatusCode:"
        f" expected a status 200-599 other than 204, 205, 304; got {code}"
        for i, code in ((1, 1), (2, 103), (3, 199), (5, 204), (6, 205), (7, 304), (10, 600), (11, 10000))
    ]


# --- merging a port's config over the spec-level config -----------------------------------------


def test_port_config_is_merged_over_the_spec_config_field_by_field(cwd: Path) -> None:
    result = compile_docs(
        *BASE,
        policy(
            "RetryPolicy",
            "p",
            """
targetRef: {kind: Service, name: svc}
ports:
- port: 8080
  config: {numRetries: 5}
- port: 9090
config: {retryOn: ["503", "5xx"], backoffBaseInterval: 0.5}
""",
        ),
        policy(
            "LoadBalancerPolicy",
            "lb",
            "targetRef: {kind: Service, name: svc}\n"
            "ports: [{port: 8080}, {port: 9090, type: LeastConnectionLoadBalancer}]\n"
            "type: HashingLoadBalancer",
        ),
        route("r2", "parentRefs: [{name: gw}]\nrules: [{backendRefs: [{name: svc, port: 9090}]}]"),
    )
    p80, p90 = backend(result).resilience, backend(result, "ns/svc:9090").resilience
    assert p80 is not None and p90 is not None
    assert p80.retry == s.Retry(policy="RetryPolicy ns/p", on=("503", "5xx"), attempts=5, backoff=0.5)
    assert p90.retry == s.Retry(policy="RetryPolicy ns/p", on=("503", "5xx"), attempts=3, backoff=0.5)
    assert p80.lb is not None and p80.lb.type == "HashingLoadBalancer"
    assert p90.lb is not None and p90.lb.type == "LeastConnectionLoadBalancer"
    assert result.warnings == []


def test_a_bare_config_without_ports_has_no_effect(cwd: Path) -> None:
    result = compile_docs(
        *BASE, policy("SessionStickyPolicy", "p", "targetRef: {kind: Service, name: svc}\nconfig: {expires: 60}")
    )
    assert backend(result).resilience is None
    assert result.warnings == [
        "all.yaml#5 SessionStickyPolicy ns/p: spec.ports: none listed, so this policy has no effect"
        " (only spec.ports[] entries take effect)"
    ]


# --- conflicts: the older policy wins --------------------------------------------------------


OLD = policy(
    "RetryPolicy",
    "old",
    "targetRef: {kind: Service, name: svc}\nports: [{port: 8080, config: {retryOn: ['503']}}]",
    created="2024-01-01T00:00:00Z",
)
NEW = policy(
    "RetryPolicy",
    "new",
    "targetRef: {kind: Service, name: svc}\nports: [{port: 9090}, {port: 8080}]\nconfig: {retryOn: ['5xx']}",
    created="2024-06-01T00:00:00Z",
)


@pytest.mark.parametrize("order", ["old first", "new first"])
def test_the_older_policy_wins_and_the_other_is_conflicted(cwd: Path, order: str) -> None:
    docs = (OLD, NEW) if order == "old first" else (NEW, OLD)
    result = compile_docs(*BASE, *docs)
    p = backend(result).resilience
    assert p is not None and p.retry is not None
    assert (p.retry.policy, p.retry.on) == ("RetryPolicy ns/old", ("503",))
    doc = 6 if order == "old first" else 5
    assert result.warnings == [
        f"all.yaml#{doc} RetryPolicy ns/new: spec.ports[1]: Conflicted: conflicts with RetryPolicy ns/old (older)"
        " on service ns/svc port 8080; ignored there"
    ]


def test_same_age_orders_by_namespace_and_name_and_equal_configs_do_not_conflict(cwd: Path) -> None:
    spec = "targetRef: {kind: Service, name: svc}\nports: [{port: 8080, config: {expires: %d}}]"
    result = compile_docs(
        *BASE,
        policy("SessionStickyPolicy", "b", spec % 10),
        policy("SessionStickyPolicy", "a", spec % 20),
        policy("SessionStickyPolicy", "c", spec % 20),  # same config as the winner: not a conflict
    )
    p = backend(result).resilience
    assert p is not None and p.sticky == s.StickyCookie(
        policy="SessionStickyPolicy ns/a", cookie_name="_srv_id", expires=20
    )
    assert result.warnings == [
        "all.yaml#5 SessionStickyPolicy ns/b: spec.ports[0]: Conflicted: conflicts with SessionStickyPolicy ns/a"
        " (older) on service ns/svc port 8080; ignored there"
    ]


# --- missing targets -----------------------------------------------------------------------------


def test_policies_whose_service_or_port_does_not_exist(cwd: Path) -> None:
    result = compile_docs(
        *BASE,
        policy("LoadBalancerPolicy", "a", "targetRef: {kind: Service, name: nope}\nports: [{port: 8080}]"),
        policy("LoadBalancerPolicy", "b", "targetRef: {kind: Service, name: svc}\nports: [{port: 8081}, {port: 8080}]"),
        policy(
            "LoadBalancerPolicy",
            "c",
            "targetRef: {kind: ServiceImport, group: flomesh.io, name: svc}\nports: [{port: 8080}]",
        ),
    )
    assert result.warnings == [
        "all.yaml#5 LoadBalancerPolicy ns/a: spec.targetRef: service ns/nope not found; policy has no effect",
        "all.yaml#6 LoadBalancerPolicy ns/b: spec.ports[0].port: service ns/svc has no port 8081;"
        " this entry has no effect",
        "all.yaml#7 LoadBalancerPolicy ns/c: spec.targetRef: ServiceImport targets are not supported; policy ignored",
    ]
    p = backend(result).resilience
    assert p is not None and p.lb is not None and p.lb.policy == "LoadBalancerPolicy ns/b"


def test_check_prints_every_conflict_and_missing_target(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Path("all.yaml").write_text(
        "".join(
            "---\n" + d
            for d in (
                *BASE,
                OLD,
                NEW,
                policy(
                    "RetryPolicy",
                    "lost",
                    "targetRef: {kind: Service, name: gone}\nports: [{port: 1}]\nconfig: {retryOn: ['502']}",
                ),
            )
        )
    )
    assert main(["check", "-c", "all.yaml"]) == 0
    err = capsys.readouterr().err
    assert (
        "all.yaml#6 RetryPolicy ns/new: spec.ports[1]: Conflicted: conflicts with RetryPolicy ns/old (older)"
        " on service ns/svc port 8080; ignored there"
    ) in err
    assert "all.yaml#7 RetryPolicy ns/lost: spec.targetRef: service ns/gone not found; policy has no effect" in err
    assert "RetryPolicy ns/old:" not in err  # the winner is valid and applied: nothing to say about it


# --- Gateway API: HTTPRoute retry and sessionPersistence, BackendLBPolicy ----------------------


ROUTE_WITH_FIELDS = route(
    "r",
    """\
    parentRefs: [{name: gw}]
    rules:
    - backendRefs: [{name: svc, port: 8080}]
      retry: {codes: [500, 503], attempts: 2, backoff: 100ms}
      sessionPersistence:
        sessionName: session
        type: Cookie
        absoluteTimeout: 1h
        cookieConfig: {lifetimeType: Permanent}
    """,
)
BLP = """\
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: BackendLBPolicy
metadata: {name: blp, namespace: ns}
spec:
  targetRefs: [{group: "", kind: Service, name: svc}]
  sessionPersistence: {sessionName: x-session, type: Header, idleTimeout: 30m}
"""
RETRY = policy(
    "RetryPolicy", "retry", "targetRef: {kind: Service, name: svc}\nports: [{port: 8080, config: {retryOn: ['5xx']}}]"
)
STICKY = policy("SessionStickyPolicy", "sticky", "targetRef: {kind: Service, name: svc}\nports: [{port: 8080}]")


def test_route_fields_and_policies_are_both_recorded(cwd: Path) -> None:
    result = compile_docs(gateway(), SVC, ES, ROUTE_WITH_FIELDS, BLP, RETRY, STICKY)
    rule = result.snapshot.listeners[0].vhosts[0].rules[0]
    assert rule.retry == s.Retry(
        policy="HTTPRoute ns/r spec.rules[0].retry", on=("500", "503"), attempts=2, backoff=0.1
    )
    assert rule.session_persistence == s.Persistence(
        policy="HTTPRoute ns/r spec.rules[0].sessionPersistence",
        type="Cookie",
        session_name="session",
        absolute_timeout=3600.0,
        lifetime_type="Permanent",
    )
    p = backend(result).resilience
    assert p is not None
    assert p.session == s.Persistence(
        policy="BackendLBPolicy ns/blp", type="Header", session_name="x-session", idle_timeout=1800.0
    )
    assert p.retry is not None and p.retry.policy == "RetryPolicy ns/retry"
    assert p.sticky is not None
    assert result.warnings == [
        "all.yaml#7 SessionStickyPolicy ns/sticky: spec.ports[0]: overridden by BackendLBPolicy ns/blp for service"
        " ns/svc port 8080 (Gateway API's session persistence wins)"
    ]


def test_invalid_route_retry_session_persistence_and_backend_lb_policy(cwd: Path) -> None:
    bad_route = route(
        "r",
        """\
        rules:
        - backendRefs: [{name: svc, port: 8080}]
          retry: {codes: [200], backoff: soon}
        - backendRefs: [{name: svc, port: 8080}]
          retry: {backoff: soon}
          sessionPersistence: {type: Header, sessionName: "a b", cookieConfig: {lifetimeType: Permanent}}
        """,
    )
    blp = BLP.replace("kind: Service, name: svc", "kind: Deployment, name: svc").replace("30m", "'30'")
    assert errors_of_docs(bad_route) == [
        "all.yaml#1 HTTPRoute ns/r: spec.rules[0].retry.codes[0]: must be between 400 and 599, got 200",
    ]
    assert errors_of_docs(bad_route.replace("codes: [200], ", ""), blp) == [
        "all.yaml#1 HTTPRoute ns/r: spec.rules[0].retry.backoff: 'soon' is not a Gateway API duration"
        ' (like "10s", "1m30s", "500ms")',
        "all.yaml#1 HTTPRoute ns/r: spec.rules[1].retry.backoff: 'soon' is not a Gateway API duration"
        ' (like "10s", "1m30s", "500ms")',
        "all.yaml#1 HTTPRoute ns/r: spec.rules[1].sessionPersistence.absoluteTimeout: required when"
        " cookieConfig.lifetimeType is Permanent",
        "all.yaml#1 HTTPRoute ns/r: spec.rules[1].sessionPersistence.cookieConfig: only allowed when type is Cookie",
        "all.yaml#1 HTTPRoute ns/r: spec.rules[1].sessionPersistence.sessionName: 'a b' is not a valid header name",
        'all.yaml#2 BackendLBPolicy ns/blp: spec.targetRefs[0]: must reference a Service (group "", kind Service),'
        " got Deployment",
        "all.yaml#2 BackendLBPolicy ns/blp: spec.sessionPersistence.idleTimeout: '30' is not a Gateway API duration"
        ' (like "10s", "1m30s", "500ms")',
    ]


def test_backend_lb_policy_conflicts_and_missing_service(cwd: Path) -> None:
    older = BLP.replace("name: blp,", "name: a, creationTimestamp: '2024-01-01T00:00:00Z',")
    other = BLP.replace("x-session", "y-session").replace("name: svc}", "name: svc}, {kind: Service, name: nope}")
    result = compile_docs(*BASE, other, older)
    p = backend(result).resilience
    assert p is not None and p.session is not None and p.session.policy == "BackendLBPolicy ns/a"
    assert result.warnings == [
        "all.yaml#5 BackendLBPolicy ns/blp: spec.targetRefs[1]: service ns/nope not found; this target has no effect",
        "all.yaml#5 BackendLBPolicy ns/blp: spec.targetRefs[0]: Conflicted: conflicts with BackendLBPolicy ns/a"
        " (older) on service ns/svc; ignored there",
    ]


# --- fsmfast explain and /config ---------------------------------------------------------------


def test_explain_shows_the_policies_and_which_one_wins(cwd: Path) -> None:
    result = compile_docs(gateway(), SVC, ES, ROUTE_WITH_FIELDS, BLP, RETRY, STICKY)
    text = explain(result.snapshot, 8000, "any.example", "/x")
    lines = text.splitlines()
    start = lines.index("policies")
    assert lines[start + 1 : start + 6] == [
        "           rule: retry on 500, 503; 2 retries; backoff 100ms (HTTPRoute ns/r spec.rules[0].retry)",
        "           rule: session persistence cookie session; permanent cookie; absolute timeout 1h"
        " (HTTPRoute ns/r spec.rules[0].sessionPersistence)",
        "           ns/svc:8080: retry on 5xx; 3 retries; backoff 1s (RetryPolicy ns/retry)"
        " [overridden: the rule's retry wins]",
        "           ns/svc:8080: sticky session cookie _srv_id, expires 3600s (SessionStickyPolicy ns/sticky)"
        " [overridden: the rule's sessionPersistence wins]",
        "           ns/svc:8080: session persistence header x-session; idle timeout 30m (BackendLBPolicy ns/blp)"
        " [overridden: the rule's sessionPersistence wins]",
    ]
    assert lines[start + 6].startswith("result ")
    # Without any policy, explain prints no policies section.
    plain = compile_docs(*BASE)
    assert "policies" not in explain(plain.snapshot, 8000, "any.example", "/x")


def test_explain_without_route_fields_lets_the_backend_policies_govern(cwd: Path) -> None:
    result = compile_docs(*BASE, BLP, RETRY, STICKY)
    text = explain(result.snapshot, 8000, "any.example", "/x")
    assert (
        "           ns/svc:8080: retry on 5xx; 3 retries; backoff 1s (RetryPolicy ns/retry)\n"
        "           ns/svc:8080: sticky session cookie _srv_id, expires 3600s (SessionStickyPolicy ns/sticky)"
        " [overridden: BackendLBPolicy's session persistence wins]\n"
        "           ns/svc:8080: session persistence header x-session; idle timeout 30m (BackendLBPolicy ns/blp)\n"
    ) in text


def test_config_dump_lists_the_policies_per_backend(cwd: Path) -> None:
    result = compile_docs(*BASE, BLP, RETRY)
    dump = config_json(result.snapshot)
    (entry,) = [b for b in dump["backends"] if b["name"] == "ns/svc:8080"]
    assert entry["policies"] == [
        {
            "kind": "retry",
            "policy": "RetryPolicy ns/retry",
            "settings": {"on": ["5xx"], "attempts": 3, "backoff": 1.0},
            "text": "on 5xx; 3 retries; backoff 1s",
        },
        {
            "kind": "session persistence",
            "policy": "BackendLBPolicy ns/blp",
            "settings": {"type": "Header", "session_name": "x-session", "idle_timeout": 1800.0},
            "text": "header x-session; idle timeout 30m",
        },
    ]
    # The route rules' own fields appear with the routes (the whole rule is dumped).
    fields = compile_docs(gateway(), SVC, ES, ROUTE_WITH_FIELDS)
    (rule,) = config_json(fields.snapshot)["listeners"][0]["virtual_hosts"][0]["routes"]
    assert json.loads(json.dumps(rule["retry"])) == {
        "policy": "HTTPRoute ns/r spec.rules[0].retry",
        "on": ["500", "503"],
        "attempts": 2,
        "backoff": 0.1,
    }


def test_snapshot_round_trips_and_old_snapshots_still_decode(cwd: Path) -> None:
    result = compile_docs(gateway(), SVC, ES, ROUTE_WITH_FIELDS, BLP, RETRY)
    data = s.encode(result.snapshot)
    assert s.decode(data) == result.snapshot
    # A snapshot without the new fields (an older master's) decodes with their defaults.
    plain = compile_docs(*BASE).snapshot
    assert s.decode(s.encode(plain)).backends["ns/svc:8080"].resilience is None


def test_load_balancing_in_explain_and_the_config_dump(cwd: Path) -> None:
    hashing = policy(
        "LoadBalancerPolicy",
        "lb",
        "targetRef: {kind: Service, name: svc}\nports: [{port: 8080, type: HashingLoadBalancer}]",
    )
    result = compile_docs(*BASE, hashing)
    assert result.warnings == []
    text = explain(result.snapshot, 8000, "any.example", "/x")
    assert (
        "\npolicies\n           ns/svc:8080: load balancing HashingLoadBalancer (LoadBalancerPolicy ns/lb)\nresult "
    ) in text
    (entry,) = [b for b in config_json(result.snapshot)["backends"] if b["name"] == "ns/svc:8080"]
    assert entry["policies"] == [
        {
            "kind": "load balancing",
            "policy": "LoadBalancerPolicy ns/lb",
            "settings": {"type": "HashingLoadBalancer"},
            "text": "HashingLoadBalancer",
        }
    ]
    # Least connections too (its slots in the shared arena are the master's, not shown).
    least = policy(
        "LoadBalancerPolicy",
        "lb",
        "targetRef: {kind: Service, name: svc}\nports: [{port: 8080, type: LeastConnectionLoadBalancer}]",
    )
    result = compile_docs(*BASE, least)
    assert result.warnings == []
    (entry,) = [b for b in config_json(result.snapshot)["backends"] if b["name"] == "ns/svc:8080"]
    assert [(p["kind"], p["settings"]) for p in entry["policies"]] == [
        ("load balancing", {"type": "LeastConnectionLoadBalancer"})
    ]
    # With another policy on the backend, both are listed under the one heading.
    mixed = compile_docs(*BASE, hashing, RETRY)
    assert (
        "\npolicies\n"
        "           ns/svc:8080: load balancing HashingLoadBalancer (LoadBalancerPolicy ns/lb)\n"
        "           ns/svc:8080: retry on 5xx; 3 retries; backoff 1s (RetryPolicy ns/retry)\n"
        "result "
    ) in explain(mixed.snapshot, 8000, "any.example", "/x")
