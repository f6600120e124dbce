"""HTTPRoute matches, filters and timeouts -> their snapshot form.

The model has been validated (``fsmfast.config.httproute``); this only resolves and
normalises: a PathPrefix loses its trailing "/", header names are lower-cased, duplicate
header and query names keep their first entry, durations become seconds ("0s" = none),
mirror backendRefs become backend keys.
"""

from __future__ import annotations

from collections.abc import Callable

from fsmfast.config import model as m
from fsmfast.config.duration import parse_duration
from fsmfast.snapshot import (
    Filters,
    HeaderMatch,
    HeaderModifier,
    HeaderValue,
    Mirror,
    PathMatch,
    PathModifier,
    QueryMatch,
    Redirect,
    Rewrite,
    Timeouts,
)

# (reference, field path of the reference) -> (backend key, None) or (None, why it is invalid)
ResolveRef = Callable[[m.BackendObjectRef, str], tuple[str | None, str | None]]


def path_match(match: m.HTTPPathMatch) -> PathMatch:
    value = match.value
    # PathPrefix matches whole segments and ignores a trailing "/", so "/foo/" is "/foo".
    if match.type == "PathPrefix" and len(value) > 1:
        value = value.rstrip("/") or "/"
    return PathMatch(type=match.type, value=value)


def header_matches(match: m.HTTPRouteMatch) -> tuple[HeaderMatch, ...]:
    out: dict[str, HeaderMatch] = {}
    for h in match.headers:
        name = h.name.lower()
        if name not in out:  # Gateway API: the first entry of an equivalent name wins
            out[name] = HeaderMatch(type=h.type, name=name, value=h.value)
    return tuple(out.values())


def query_matches(match: m.HTTPRouteMatch) -> tuple[QueryMatch, ...]:
    out: dict[str, QueryMatch] = {}
    for q in match.query_params:
        if q.name not in out:
            out[q.name] = QueryMatch(type=q.type, name=q.name, value=q.value)
    return tuple(out.values())


def timeouts(rule: m.HTTPRouteRule) -> Timeouts | None:
    t = rule.timeouts
    if t is None:
        return None
    # Validated already; "0s" means no timeout.
    request = parse_duration(t.request) if t.request is not None else None
    backend = parse_duration(t.backend_request) if t.backend_request is not None else None
    if not request and not backend:
        return None
    return Timeouts(request=request or None, backend_request=backend or None)


def _header_modifier(body: m.HTTPHeaderFilter | None) -> HeaderModifier | None:
    if body is None or not (body.set or body.add or body.remove):
        return None
    return HeaderModifier(
        set=tuple(HeaderValue(h.name, h.value) for h in body.set),
        add=tuple(HeaderValue(h.name, h.value) for h in body.add),
        remove=tuple(dict.fromkeys(name.lower() for name in body.remove)),
    )


def _path_modifier(body: m.HTTPPathModifier | None) -> PathModifier | None:
    if body is None:
        return None
    if body.type == "ReplaceFullPath":
        return PathModifier(type="ReplaceFullPath", value=body.replace_full_path or "/")
    return PathModifier(type="ReplacePrefixMatch", value=body.replace_prefix_match or "")


def _mirror(body: m.HTTPRequestMirrorFilter, field: str, resolve: ResolveRef) -> Mirror:
    backend, error = resolve(body.backend_ref, f"{field}.backendRef")
    percent = 100.0
    if body.percent is not None:
        percent = float(body.percent)
    elif body.fraction is not None:
        percent = 100.0 * body.fraction.numerator / body.fraction.denominator
    return Mirror(backend=backend, error=error, percent=percent)


def filters(rule_filters: list[m.HTTPRouteFilter], field: str, resolve: ResolveRef) -> Filters | None:
    """The filters of a rule or a backendRef (``field`` is where they are, for warnings).

    Unsupported filters are not represented: the caller turns them into 500s.
    """
    request_headers = response_headers = None
    redirect = rewrite = None
    mirrors = []
    for k, f in enumerate(rule_filters):
        if f.type == "RequestHeaderModifier":
            request_headers = _header_modifier(f.request_header_modifier)
        elif f.type == "ResponseHeaderModifier":
            response_headers = _header_modifier(f.response_header_modifier)
        elif f.type == "RequestRedirect" and f.request_redirect is not None:
            r = f.request_redirect
            redirect = Redirect(
                status=r.status_code, scheme=r.scheme, hostname=r.hostname, port=r.port, path=_path_modifier(r.path)
            )
        elif f.type == "URLRewrite" and f.url_rewrite is not None:
            w = f.url_rewrite
            if w.hostname is not None or w.path is not None:
                rewrite = Rewrite(hostname=w.hostname, path=_path_modifier(w.path))
        elif f.type == "RequestMirror" and f.request_mirror is not None:
            mirrors.append(_mirror(f.request_mirror, f"{field}.filters[{k}].requestMirror", resolve))
    result = Filters(
        request_headers=request_headers,
        response_headers=response_headers,
        redirect=redirect,
        rewrite=rewrite,
        mirrors=tuple(mirrors),
    )
    return None if result == Filters() else result
