"""HTTPRoute validation beyond types: matches, filters, timeouts, and the defaults they need.

Everything Gateway API's CRD validation (OpenAPI patterns and CEL rules) would refuse at
``kubectl apply`` is an error here, so a typo never reaches the data plane as a surprise:
invalid regular expressions, path values that would break the request line, header values
with line breaks, filters that contradict each other. Things Gateway API accepts but fsmfast
does not implement (ExtensionRef, CORS, ExternalAuth filters) are warnings, and the data plane
answers 500 for them rather than skipping them, as the spec requires for ExtensionRef.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from msgspec.structs import replace

from fsmfast.config import policies
from fsmfast.config.duration import parse_duration
from fsmfast.config.model import (
    HTTPHeaderFilter,
    HTTPPathModifier,
    HTTPRequestRedirectFilter,
    HTTPRoute,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRule,
    HTTPURLRewriteFilter,
)

if TYPE_CHECKING:
    from fsmfast.config.checks import Checker

# Path values Gateway API rejects (HTTPPathMatch CEL rules).
_FORBIDDEN_IN_PATH = ("//", "/./", "/../", "%2f", "%2F", "#")
_FORBIDDEN_PATH_ENDS = ("/..", "/.")
# RFC 3986 path characters (pchar and "/"): anything else would corrupt the request line.
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*")
# RFC 9110 token, Gateway API's HTTPHeaderName pattern.
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_BAD_VALUE_CHARS = ("\r", "\n", "\0")

REDIRECT_CODES = (301, 302, 303, 307, 308)
# filter type -> the HTTPRouteFilter field that holds its body
FILTER_BODIES = {
    "RequestHeaderModifier": "request_header_modifier",
    "ResponseHeaderModifier": "response_header_modifier",
    "RequestMirror": "request_mirror",
    "RequestRedirect": "request_redirect",
    "URLRewrite": "url_rewrite",
    "ExtensionRef": "extension_ref",
    "CORS": "cors",
    "ExternalAuth": "external_auth",
}
_CAMEL = {
    "request_header_modifier": "requestHeaderModifier",
    "response_header_modifier": "responseHeaderModifier",
    "request_mirror": "requestMirror",
    "request_redirect": "requestRedirect",
    "url_rewrite": "urlRewrite",
    "extension_ref": "extensionRef",
    "cors": "cors",
    "external_auth": "externalAuth",
}
# At most one of each per filter list (Gateway API CEL); RequestMirror may repeat.
_ONCE = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "CORS")
# Filters fsmfast does not implement: never skipped silently, the request gets 500 instead.
UNSUPPORTED = ("ExtensionRef", "CORS", "ExternalAuth")


def path_problem(value: str) -> str | None:
    if not value.startswith("/"):
        return 'must start with "/"'
    for bad in _FORBIDDEN_IN_PATH:
        if bad in value:
            return f'must not contain "{bad}"'
    for bad in _FORBIDDEN_PATH_ENDS:
        if value.endswith(bad):
            return f'must not end with "{bad}"'
    if len(value) > 1024:
        return "must be at most 1024 characters"
    if not _PATH_CHARS.fullmatch(value):
        return "must contain only URL path characters (letters, digits, -._~!$&'()*+,;=:@%/)"
    return None


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable regular expression (compiled as the worker does), or None."""
    try:
        re.compile(pattern.encode())
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    return None


def check_httproute(c: Checker, route: HTTPRoute) -> HTTPRoute | None:
    spec = route.spec
    hostnames = c.route_hostnames(spec.hostnames)
    if not spec.parent_refs:
        c.warn("spec.parentRefs", "none listed, so this route is not attached to any Gateway")
    # CRD defaults: no rules means one rule, no matches means PathPrefix "/".
    rules = spec.rules or [HTTPRouteRule()]
    out_rules = [_rule(c, f"spec.rules[{i}]", rule) for i, rule in enumerate(rules)]
    if not c.ok:
        return None
    return replace(route, spec=replace(spec, hostnames=hostnames, rules=out_rules))


def _rule(c: Checker, path: str, rule: HTTPRouteRule) -> HTTPRouteRule:
    matches = rule.matches or [HTTPRouteMatch()]
    for j, match in enumerate(matches):
        _match(c, f"{path}.matches[{j}]", match)
    filters = _filters(c, path, rule.filters, matches, "requests matching this rule get 500")
    redirect = any(f.type == "RequestRedirect" for f in filters)
    if redirect and rule.backend_refs:
        c.error(f"{path}.backendRefs", "must be empty when the rule has a RequestRedirect filter")
    if not rule.backend_refs and not redirect:
        c.warn(path, "no backendRefs, so matching requests get 500")
    elif rule.backend_refs and all(ref.weight == 0 for ref in rule.backend_refs):
        c.warn(f"{path}.backendRefs", "every weight is 0, so matching requests get 500")
    refs = []
    for k, ref in enumerate(rule.backend_refs):
        rpath = f"{path}.backendRefs[{k}]"
        if ref.group == "" and ref.kind == "Service" and ref.port is None:
            c.error(f"{rpath}.port", "required")
        ref_filters = _filters(c, rpath, ref.filters, matches, "requests sent to this backend get 500")
        for n, f in enumerate(ref_filters):
            if f.type == "RequestRedirect":
                c.warn(
                    f"{rpath}.filters[{n}]",
                    "RequestRedirect is only supported in the rule's filters; requests sent to this backend get 500",
                )
        refs.append(replace(ref, filters=ref_filters))
    if rule.timeouts is not None:
        _timeouts(c, f"{path}.timeouts", rule.timeouts.request, rule.timeouts.backend_request)
    if rule.retry is not None:
        policies.check_retry(c, f"{path}.retry", rule.retry)
    if rule.session_persistence is not None:
        policies.check_session_persistence(c, f"{path}.sessionPersistence", rule.session_persistence)
    return replace(rule, matches=matches, filters=filters, backend_refs=refs)


def _match(c: Checker, path: str, match: HTTPRouteMatch) -> None:
    if match.path.type == "RegularExpression":
        problem = regex_problem(match.path.value)
    else:
        problem = path_problem(match.path.value)
    if problem:
        c.error(f"{path}.path.value", problem)
    seen: dict[str, int] = {}
    for k, h in enumerate(match.headers):
        hpath = f"{path}.headers[{k}]"
        if not _TOKEN.fullmatch(h.name):
            c.error(f"{hpath}.name", f"{h.name!r} is not a valid header name")
        key = h.name.lower()
        if key in seen:
            # Gateway API: only the first entry with an equivalent name counts.
            c.warn(hpath, f"header {h.name} is already matched by headers[{seen[key]}]; this entry is ignored")
        seen.setdefault(key, k)
        if h.type == "RegularExpression":
            problem = regex_problem(h.value)
            if problem:
                c.error(f"{hpath}.value", problem)
    seen = {}
    for k, q in enumerate(match.query_params):
        qpath = f"{path}.queryParams[{k}]"
        if not _TOKEN.fullmatch(q.name):
            c.error(f"{qpath}.name", f"{q.name!r} is not a valid query parameter name")
        if q.name in seen:
            c.warn(qpath, f"query parameter {q.name} is already matched by queryParams[{seen[q.name]}]; ignored")
        seen.setdefault(q.name, k)
        if q.type == "RegularExpression":
            problem = regex_problem(q.value)
            if problem:
                c.error(f"{qpath}.value", problem)


def _filters(
    c: Checker, path: str, filters: list[HTTPRouteFilter], matches: list[HTTPRouteMatch], consequence: str
) -> list[HTTPRouteFilter]:
    out = []
    first: dict[str, int] = {}
    for k, f in enumerate(filters):
        fpath = f"{path}.filters[{k}]"
        body = FILTER_BODIES.get(f.type)
        if body is None:
            c.error(f"{fpath}.type", f"unknown filter type {f.type!r}; expected one of {', '.join(FILTER_BODIES)}")
            continue
        for other in FILTER_BODIES.values():
            if other != body and getattr(f, other) is not None:
                c.error(f"{fpath}.{_CAMEL[other]}", f"must not be set when type is {f.type}")
        if getattr(f, body) is None and f.type not in UNSUPPORTED:
            c.error(f"{fpath}.{_CAMEL[body]}", f"required when type is {f.type}")
            continue
        if f.type in _ONCE:
            if f.type in first:
                c.error(f"{fpath}.type", f"{f.type} may appear once per filter list (also filters[{first[f.type]}])")
            first.setdefault(f.type, k)
        if f.type in UNSUPPORTED:
            c.warn(fpath, f"filter {f.type} is not supported; {consequence}")
        elif f.type in ("RequestHeaderModifier", "ResponseHeaderModifier"):
            _header_filter(c, f"{fpath}.{_CAMEL[body]}", getattr(f, body))
        elif f.type == "RequestRedirect":
            f = replace(f, request_redirect=_redirect(c, f"{fpath}.requestRedirect", f, matches))
        elif f.type == "URLRewrite":
            f = replace(f, url_rewrite=_rewrite(c, f"{fpath}.urlRewrite", f, matches))
        elif f.type == "RequestMirror":
            _mirror(c, f"{fpath}.requestMirror", f)
        out.append(f)
    if "RequestRedirect" in first and "URLRewrite" in first:
        c.error(f"{path}.filters", "RequestRedirect and URLRewrite cannot be used in the same filter list")
    return out


def _header_filter(c: Checker, path: str, body: HTTPHeaderFilter) -> None:
    owner: dict[str, str] = {}
    for action, entries in (("set", body.set), ("add", body.add)):
        for k, h in enumerate(entries):
            hpath = f"{path}.{action}[{k}]"
            if not _TOKEN.fullmatch(h.name):
                c.error(f"{hpath}.name", f"{h.name!r} is not a valid header name")
            if any(ch in h.value for ch in _BAD_VALUE_CHARS):
                c.error(f"{hpath}.value", "must not contain CR, LF or NUL")
            _one_action(c, hpath, h.name.lower(), owner)
    for k, name in enumerate(body.remove):
        if not _TOKEN.fullmatch(name):
            c.error(f"{path}.remove[{k}]", f"{name!r} is not a valid header name")
        _one_action(c, f"{path}.remove[{k}]", name.lower(), owner)


def _one_action(c: Checker, path: str, key: str, owner: dict[str, str]) -> None:
    if key in owner:
        c.error(path, f"header {key} already appears in {owner[key]}; one action per header name")
    owner.setdefault(key, path.rsplit(".", 1)[-1])


def _path_modifier(c: Checker, path: str, mod: HTTPPathModifier, matches: list[HTTPRouteMatch]) -> None:
    if mod.type == "ReplaceFullPath":
        value, other = mod.replace_full_path, "replacePrefixMatch"
        field = "replaceFullPath"
        if mod.replace_prefix_match is not None:
            c.error(f"{path}.{other}", "must not be set when type is ReplaceFullPath")
    else:
        value, other = mod.replace_prefix_match, "replaceFullPath"
        field = "replacePrefixMatch"
        if mod.replace_full_path is not None:
            c.error(f"{path}.{other}", "must not be set when type is ReplacePrefixMatch")
        for j, match in enumerate(matches):
            if match.path.type != "PathPrefix":
                c.error(
                    f"{path}.type",
                    f"ReplacePrefixMatch needs PathPrefix matches; the rule's matches[{j}] is {match.path.type}",
                )
                break
    if value is None:
        c.error(f"{path}.{field}", f"required when type is {mod.type}")
        return
    if value == "" and mod.type == "ReplacePrefixMatch":
        return  # replace the prefix with nothing (Gateway API's table: /foo/bar -> /bar)
    problem = path_problem(value)
    if problem:
        c.error(f"{path}.{field}", problem)


def _redirect(c: Checker, path: str, f: HTTPRouteFilter, matches: list[HTTPRouteMatch]) -> HTTPRequestRedirectFilter:
    body = f.request_redirect
    assert body is not None
    if body.status_code not in REDIRECT_CODES:
        c.error(f"{path}.statusCode", f"must be one of {', '.join(map(str, REDIRECT_CODES))}; got {body.status_code}")
    if body.hostname is not None:
        body = replace(body, hostname=c.hostname(f"{path}.hostname", body.hostname, wildcard=False))
    if body.path is not None:
        _path_modifier(c, f"{path}.path", body.path, matches)
    return body


def _rewrite(c: Checker, path: str, f: HTTPRouteFilter, matches: list[HTTPRouteMatch]) -> HTTPURLRewriteFilter:
    body = f.url_rewrite
    assert body is not None
    if body.hostname is not None:
        body = replace(body, hostname=c.hostname(f"{path}.hostname", body.hostname, wildcard=False))
    if body.path is not None:
        _path_modifier(c, f"{path}.path", body.path, matches)
    return body


def _mirror(c: Checker, path: str, f: HTTPRouteFilter) -> None:
    body = f.request_mirror
    assert body is not None
    ref = body.backend_ref
    if ref.group == "" and ref.kind == "Service" and ref.port is None:
        c.error(f"{path}.backendRef.port", "required")
    if body.percent is not None and body.fraction is not None:
        c.error(path, "percent and fraction are mutually exclusive; set one")
    if body.fraction is not None and body.fraction.numerator > body.fraction.denominator:
        c.error(f"{path}.fraction", "numerator must not exceed denominator")


def _timeouts(c: Checker, path: str, request: str | None, backend: str | None) -> None:
    limits = {}
    for field, text in (("request", request), ("backendRequest", backend)):
        if text is None:
            continue
        seconds = parse_duration(text)
        if seconds is None:
            c.error(f"{path}.{field}", f'{text!r} is not a Gateway API duration (like "10s", "1m30s", "500ms")')
        else:
            limits[field] = seconds
    req, back = limits.get("request"), limits.get("backendRequest")
    if req and back and back > req:
        c.error(f"{path}.backendRequest", "must not be longer than timeouts.request")
