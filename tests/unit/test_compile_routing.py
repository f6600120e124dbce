"""Compiling HTTPRoute matches, filters and timeouts: validation errors, precedence, snapshot form."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsmfast import snapshot as s
from fsmfast.compile import Build
from fsmfast.config.duration import format_duration, parse_duration
from fsmfast.errors import ConfigError
from tests.unit.test_compile import compile_docs, endpoint_slice, gateway, route, rule_names, service


@pytest.fixture(autouse=True)
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


BACKEND = "backendRefs: [{name: svc, port: 80}]"


def one_route(spec: str, *extra: str) -> Build:
    return compile_docs(gateway(), service(), endpoint_slice(), route("r", spec), *extra)


def errors_of(spec: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        one_route(spec)
    return [str(i).split(": ", 1)[1] for i in exc.value.issues]


def rules_of(result: Build, host: str = "*") -> list[s.Rule]:
    vh = next(vh for vh in result.snapshot.listeners[0].vhosts if vh.hostname == host)
    return list(vh.rules)


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h", 3600.0), ("500ms", 0.5), ("1h2m3s500ms", 3723.5), ("0s", 0.0), ("1h2h", 10800.0), ("99999ms", 99.999)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "1", "1.5s", "1d", "s", "100000s", "1h1m1s1ms1h", " 1s", "1S", "-1s"])
def test_invalid_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_format_duration() -> None:
    assert [format_duration(x) for x in (0, 0.5, 90, 3723.5)] == ["0s", "500ms", "1m30s", "1h2m3s500ms"]


# --- validation errors name the field -------------------------------------------------------------


def test_invalid_regular_expressions_are_errors() -> None:
    spec = f"""\
    parentRefs: [{{name: gw}}]
    rules:
    - matches:
      - path: {{type: RegularExpression, value: "/a(["}}
        headers: [{{name: x, type: RegularExpression, value: "*"}}]
        queryParams: [{{name: q, type: RegularExpression, value: "(?P<"}}]
      {BACKEND}
    """
    assert errors_of(spec) == [
        "spec.rules[0].matches[0].path.value: invalid regular expression: unterminated character set at position 3",
        "spec.rules[0].matches[0].headers[0].value: invalid regular expression: nothing to repeat at position 0",
        "spec.rules[0].matches[0].queryParams[0].value: invalid regular expression: missing group name at position 4",
    ]


def test_match_names_and_paths_are_checked() -> None:
    spec = f"""\
    parentRefs: [{{name: gw}}]
    rules:
    - matches:
      - path: {{type: PathPrefix, value: "/a b"}}
        headers: [{{name: "bad name", value: x}}]
        queryParams: [{{name: "", value: x}}]
      {BACKEND}
    """
    assert errors_of(spec) == [
        "spec.rules[0].matches[0].path.value: must contain only URL path characters (letters, digits,"
        " -._~!$&'()*+,;=:@%/)",
        "spec.rules[0].matches[0].headers[0].name: 'bad name' is not a valid header name",
        "spec.rules[0].matches[0].queryParams[0].name: '' is not a valid query parameter name",
    ]


def test_filter_rules() -> None:
    spec = """\
    parentRefs: [{name: gw}]
    rules:
    - matches: [{path: {type: Exact, value: /e}}]
      filters:
      - type: RequestRedirect
        requestRedirect: {statusCode: 304, path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}
      - {type: URLRewrite, urlRewrite: {hostname: "*.wild.io"}}
      - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: A, value: "x\\r\\ny"}], remove: [a]}}
      - {type: RequestHeaderModifier}
      - {type: Bogus}
      - type: RequestMirror
        requestHeaderModifier: {}
        requestMirror: {backendRef: {name: svc}, percent: 5, fraction: {numerator: 1}}
      backendRefs: [{name: svc, port: 80}]
    - filters:
      - {type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replacePrefixMatch: /x}}}
      backendRefs: [{name: svc, port: 80}]
    - timeouts: {request: 1s, backendRequest: 2s}
      backendRefs: [{name: svc, port: 80}]
    """
    r0 = "spec.rules[0]"
    assert errors_of(spec) == [
        f"{r0}.filters[0].requestRedirect.statusCode: must be one of 301, 302, 303, 307, 308; got 304",
        f"{r0}.filters[0].requestRedirect.path.type: ReplacePrefixMatch needs PathPrefix matches; the rule's"
        " matches[0] is Exact",
        f'{r0}.filters[1].urlRewrite.hostname: "*.wild.io" must be a precise hostname, without a wildcard',
        f"{r0}.filters[2].requestHeaderModifier.set[0].value: must not contain CR, LF or NUL",
        f"{r0}.filters[2].requestHeaderModifier.remove[0]: header a already appears in set[0]; one action per"
        " header name",
        f"{r0}.filters[3].requestHeaderModifier: required when type is RequestHeaderModifier",
        f"{r0}.filters[4].type: unknown filter type 'Bogus'; expected one of RequestHeaderModifier,"
        " ResponseHeaderModifier, RequestMirror, RequestRedirect, URLRewrite, ExtensionRef, CORS, ExternalAuth",
        f"{r0}.filters[5].requestHeaderModifier: must not be set when type is RequestMirror",
        f"{r0}.filters[5].requestMirror.backendRef.port: required",
        f"{r0}.filters[5].requestMirror: percent and fraction are mutually exclusive; set one",
        f"{r0}.filters: RequestRedirect and URLRewrite cannot be used in the same filter list",
        f"{r0}.backendRefs: must be empty when the rule has a RequestRedirect filter",
        "spec.rules[1].filters[0].urlRewrite.path.replacePrefixMatch: must not be set when type is ReplaceFullPath",
        "spec.rules[1].filters[0].urlRewrite.path.replaceFullPath: required when type is ReplaceFullPath",
        "spec.rules[2].timeouts.backendRequest: must not be longer than timeouts.request",
    ]


def test_a_filter_kind_at_most_once() -> None:
    spec = f"""\
    parentRefs: [{{name: gw}}]
    rules:
    - filters:
      - {{type: URLRewrite, urlRewrite: {{hostname: a.io}}}}
      - {{type: URLRewrite, urlRewrite: {{hostname: b.io}}}}
      - {{type: RequestMirror, requestMirror: {{backendRef: {{name: svc, port: 80}}}}}}
      - {{type: RequestMirror, requestMirror: {{backendRef: {{name: svc, port: 80}}}}}}
      {BACKEND}
    """
    assert errors_of(spec) == [
        "spec.rules[0].filters[1].type: URLRewrite may appear once per filter list (also filters[0])"
    ]


def test_unsupported_filters_answer_500_and_warn() -> None:
    result = one_route(
        """\
        parentRefs: [{name: gw}]
        rules:
        - matches: [{path: {value: /cors}}]
          filters: [{type: CORS, cors: {allowOrigins: ["*"]}}]
          backendRefs: [{name: svc, port: 80}]
        - matches: [{path: {value: /backend}}]
          backendRefs:
          - name: svc
            port: 80
            filters: [{type: RequestRedirect, requestRedirect: {hostname: x.io}}]
        - matches: [{path: {value: /zero}}]
          backendRefs: [{name: svc, port: 80, weight: 0}]
        """
    )
    by_name = {r.name.split("/rule/")[1]: r for r in rules_of(result)}
    assert by_name["0/match/0"].backends == (s.BackendRef(weight=1, error="filter CORS is not supported"),)
    assert by_name["1/match/0"].backends == (
        s.BackendRef(weight=1, error="filter RequestRedirect is not supported on a backendRef"),
    )
    where = "all.yaml#4 HTTPRoute ns/r: spec.rules"
    assert result.warnings == [
        f"{where}[0].filters[0]: filter CORS is not supported; requests matching this rule get 500",
        f"{where}[1].backendRefs[0].filters[0]: RequestRedirect is only supported in the rule's filters; requests"
        " sent to this backend get 500",
        f"{where}[2].backendRefs: every weight is 0, so matching requests get 500",
    ]


# --- the snapshot form -------------------------------------------------------------------------------


def test_filters_timeouts_and_conditions_in_the_snapshot() -> None:
    result = one_route(
        """\
        parentRefs: [{name: gw}]
        rules:
        - matches:
          - path: {type: PathPrefix, value: /api/}
            method: POST
            headers: [{name: X-Version, value: "2"}, {name: x-version, value: "3"}]
            queryParams: [{name: Q, type: RegularExpression, value: "[0-9]+"}]
          filters:
          - type: RequestHeaderModifier
            requestHeaderModifier: {set: [{name: X-Set, value: s}], add: [{name: X-Add, value: a}], remove: [X-Gone]}
          - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [Server]}}
          - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}
          - type: RequestMirror
            requestMirror: {backendRef: {name: svc, port: 80}, fraction: {numerator: 1, denominator: 4}}
          - {type: RequestMirror, requestMirror: {backendRef: {name: gone, port: 80}}}
          timeouts: {request: 1m, backendRequest: 0s}
          backendRefs:
          - name: svc
            port: 80
            filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: X-B, value: b}]}}]
        - matches: [{path: {value: /r}}]
          filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
        """
    )
    api, redirect = rules_of(result)
    assert api.path == s.PathMatch(type="PathPrefix", value="/api")
    assert api.method == "POST"
    assert api.headers == (s.HeaderMatch(type="Exact", name="x-version", value="2"),)  # the first entry wins
    assert api.query == (s.QueryMatch(type="RegularExpression", name="Q", value="[0-9]+"),)
    assert api.timeouts == s.Timeouts(request=60.0)
    assert api.filters == s.Filters(
        request_headers=s.HeaderModifier(
            set=(s.HeaderValue("X-Set", "s"),), add=(s.HeaderValue("X-Add", "a"),), remove=("x-gone",)
        ),
        response_headers=s.HeaderModifier(remove=("server",)),
        rewrite=s.Rewrite(path=s.PathModifier(type="ReplacePrefixMatch", value="/v2")),
        mirrors=(s.Mirror(backend="ns/svc:80", percent=25.0), s.Mirror(error="service ns/gone not found")),
    )
    assert api.backends == (
        s.BackendRef(
            weight=1,
            backend="ns/svc:80",
            filters=s.Filters(request_headers=s.HeaderModifier(add=(s.HeaderValue("X-B", "b"),))),
        ),
    )
    assert redirect.backends == ()
    assert redirect.filters == s.Filters(redirect=s.Redirect(status=301, scheme="https"))
    assert result.warnings == [
        "all.yaml#4 HTTPRoute ns/r: spec.rules[0].matches[0].headers[1]: header x-version is already matched by"
        " headers[0]; this entry is ignored",
        "all.yaml#4 HTTPRoute ns/r: spec.rules[0].filters[4].requestMirror.backendRef: service ns/gone not found;"
        " this mirror is dropped",
    ]


def test_mirror_backends_are_in_the_snapshot_and_need_a_grant() -> None:
    result = compile_docs(
        gateway(),
        service(),
        service("m", ns="other"),
        route(
            "r",
            """\
            parentRefs: [{name: gw}]
            rules:
            - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, namespace: other, port: 80}}}]
              backendRefs: [{name: svc, port: 80}]
            """,
        ),
    )
    (rule,) = rules_of(result)
    assert rule.filters is not None
    assert rule.filters.mirrors == (s.Mirror(error="cross-namespace reference to other/m needs a ReferenceGrant"),)
    assert list(result.snapshot.backends) == ["ns/svc:80"]


# --- precedence ----------------------------------------------------------------------------------


def test_match_precedence_order() -> None:
    def rule(path: str, extra: str = "") -> str:
        return f"- matches: [{{path: {path}{extra}}}]\n  {BACKEND}\n"

    spec = "parentRefs: [{name: gw}]\nrules:\n" + "".join(
        [
            rule("{type: RegularExpression, value: /api/.*}"),  # 0
            rule("{value: /}"),  # 1
            rule("{value: /api}", ", queryParams: [{name: a, value: b}]"),  # 2
            rule("{value: /api}", ", headers: [{name: a, value: b}]"),  # 3
            rule("{value: /api}", ", headers: [{name: a, value: b}, {name: c, value: d}]"),  # 4
            rule("{value: /api}", ", method: GET"),  # 5
            rule("{value: /api}"),  # 6
            rule("{value: /api/v1}"),  # 7
            rule("{type: Exact, value: /api}"),  # 8
            rule("{value: /api}"),  # 9: identical to 6, later
        ]
    )
    result = one_route(spec)
    order = [int(r.name.split("/rule/")[1].split("/")[0]) for r in rules_of(result)]
    assert order == [8, 7, 5, 4, 3, 2, 6, 9, 1, 0]


def test_route_hostname_rank_decides_before_the_match() -> None:
    result = compile_docs(
        gateway(),
        route("precise", "parentRefs: [{name: gw}]\nhostnames: [a.b.io]\nrules: [{matches: [{path: {value: /}}]}]"),
        route(
            "wild",
            "parentRefs: [{name: gw}]\nhostnames: ['*.b.io']\nrules: [{matches: [{path: {type: Exact, value: /x}}]}]",
        ),
        route("none", "parentRefs: [{name: gw}]\nrules: [{matches: [{path: {type: Exact, value: /x}}]}]"),
    )
    assert rule_names(result) == {
        "a.b.io": [
            "httproute/ns/precise/rule/0/match/0",
            "httproute/ns/wild/rule/0/match/0",
            "httproute/ns/none/rule/0/match/0",
        ],
        "*.b.io": ["httproute/ns/wild/rule/0/match/0", "httproute/ns/none/rule/0/match/0"],
        "*": ["httproute/ns/none/rule/0/match/0"],
    }
