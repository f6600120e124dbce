"""``fsmfast routes`` and ``fsmfast explain``: the compiled route table, and one request walked through it.

Both read the snapshot ``fsmfast.compile.build`` makes and ask the worker's own router
(``fsmfast.proxy.router``) every question: which virtual host a Host selects, which rule
matches first, why each other candidate does not. ``explain`` walks the request through the
worker's own pipeline stages (``fsmfast.pipeline``): the request-target is normalized or refused
as the worker does it (dot segments, ``%2e``, ``//``, absolute-form, ``*``, CONNECT), then
``route.find`` and ``route.choose`` decide. Nothing here matches on its own, so what these
commands print is what the data plane does.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from fsmfast.columns import table
from fsmfast.config.duration import format_duration
from fsmfast.pipeline import route
from fsmfast.pipeline import target as target_stage
from fsmfast.pipeline.decision import Choice, Delayed, LocalReply, Redirect
from fsmfast.policytext import edge_lines, policy_lines
from fsmfast.proxy.conditions import RequestView
from fsmfast.proxy.filters import RequestPlan
from fsmfast.proxy.router import HostTable, Router, RouteRule, VHost, normalize_host
from fsmfast.snapshot import (
    Backend,
    BackendRef,
    Filters,
    HeaderModifier,
    Listener,
    PathModifier,
    Rule,
    Snapshot,
    Timeouts,
    UpstreamTLS,
)

OK, NO, LATER = "✓", "✗", "·"


# -- describing compiled rules -------------------------------------------------------------


def path_text(rule: Rule) -> str:
    kind = {"Exact": "Exact", "PathPrefix": "Prefix", "RegularExpression": "Regex"}[rule.path.type]
    return f"{kind} {rule.path.value}"


def conditions_text(rule: Rule) -> str:
    parts = [rule.method] if rule.method else []
    for h in rule.headers:
        parts.append(f"header {h.name} " + (f"= {h.value!r}" if h.type == "Exact" else f"~ /{h.value}/"))
    for q in rule.query:
        parts.append(f"query {q.name} " + (f"= {q.value!r}" if q.type == "Exact" else f"~ /{q.value}/"))
    return ", ".join(parts) or "-"


def _modifier_text(label: str, mod: HeaderModifier) -> str:
    parts = [f"set {h.name}: {h.value}" for h in mod.set]
    parts += [f"add {h.name}: {h.value}" for h in mod.add]
    parts += [f"remove {name}" for name in mod.remove]
    return f"{label} " + "; ".join(parts)


def _path_mod_text(mod: PathModifier) -> str:
    if mod.type == "ReplaceFullPath":
        return f"path → {mod.value}"
    return f"prefix → {mod.value or '(empty)'}"


def filters_text(filters: Filters | None, timeouts: Timeouts | None = None) -> list[str]:
    out = []
    if filters is not None:
        if filters.redirect is not None:
            r = filters.redirect
            parts = [f"{k} {v}" for k, v in (("scheme", r.scheme), ("hostname", r.hostname), ("port", r.port)) if v]
            if r.path is not None:
                parts.append(_path_mod_text(r.path))
            out.append(f"redirect {r.status}" + (f" ({', '.join(parts)})" if parts else ""))
        if filters.rewrite is not None:
            w = filters.rewrite
            parts = [f"host → {w.hostname}"] if w.hostname else []
            if w.path is not None:
                parts.append(_path_mod_text(w.path))
            out.append("rewrite " + ", ".join(parts))
        if filters.request_headers is not None:
            out.append(_modifier_text("request headers:", filters.request_headers))
        if filters.response_headers is not None:
            out.append(_modifier_text("response headers:", filters.response_headers))
        for m in filters.mirrors:
            share = "" if m.percent >= 100 else f" ({m.percent:g}%)"
            out.append(f"mirror → {m.backend}{share}" if m.backend else f"mirror dropped: {m.error}")
    if timeouts is not None:
        parts = []
        if timeouts.request:
            parts.append(f"request {format_duration(timeouts.request)}")
        if timeouts.backend_request:
            parts.append(f"backendRequest {format_duration(timeouts.backend_request)}")
        out.append("timeouts " + ", ".join(parts))
    return out


def backends_text(refs: Sequence[BackendRef]) -> str:
    if not refs:
        return "none (500)"
    parts = []
    for ref in refs:
        target = ref.backend if ref.backend is not None else f"{NO} {ref.error} (500)"
        if len(refs) > 1:
            target += f" w{ref.weight}"
        if ref.filters is not None:
            target += " [" + "; ".join(filters_text(ref.filters)) + "]"
        parts.append(target)
    return ", ".join(parts)


# -- fsmfast routes ----------------------------------------------------------------------------


def _listener_head(listener: Listener) -> str:
    return f"port {listener.port} ({listener.protocol}): listeners {', '.join(listener.names) or '-'}"


def render_routes(snapshot: Snapshot) -> str:
    lines = []
    for listener in snapshot.listeners:
        lines.append(_listener_head(listener))
        if not listener.vhosts:
            lines.append("  (no HTTP routes)")
        for vh in listener.vhosts:
            lines.append(f"  host {vh.hostname}  [{', '.join(vh.listeners)}]")
            if not vh.rules:
                lines.append("    (no rules: 404)")
                continue
            rows = [["#", "route/rule/match", "path", "conditions", "backends", "filters"]]
            for n, rule in enumerate(vh.rules, 1):
                extras = filters_text(rule.filters, rule.timeouts)
                rows.append(
                    [
                        str(n),
                        rule.name,
                        path_text(rule),
                        conditions_text(rule),
                        "- (redirect)" if rule.filters and rule.filters.redirect else backends_text(rule.backends),
                        "; ".join(extras) or "-",
                    ]
                )
            lines += table(rows, indent="    ")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# -- fsmfast explain ---------------------------------------------------------------------------


def path_reason(rule: RouteRule, path: bytes) -> str:
    p = path.decode("latin-1")
    if rule.exact is not None:
        return f"path {p} is not exactly {rule.exact.decode()}"
    if rule.prefix is not None:
        return f"path {p} is not {rule.prefix.decode()} or below it"
    assert rule.regex is not None
    return f"path {p} does not fully match /{rule.regex.pattern.decode()}/"


def reject_reason(rule: RouteRule, path: bytes, req: RequestView) -> str | None:
    """Why ``rule`` does not match, or None when it does (the router's own predicates)."""
    if not rule.matches(path):
        return path_reason(rule, path)
    if rule.conditions is not None:
        return rule.conditions.explain(req)
    return None


def _tls_text(tls: UpstreamTLS) -> str:
    trust = "system CAs" if tls.system_ca else ("the policy's CA" if tls.ca_pem else "no CA")
    parts = [f"TLS via {tls.policy}", f"SNI {tls.server_name or '(none)'}", f"trust {trust}"]
    if tls.subject_alt_names:
        parts.append("SAN " + " | ".join(s.value for s in tls.subject_alt_names))
    elif tls.server_name:
        parts.append(f"name checked: {tls.server_name}")
    if tls.client_cert_pem:
        parts.append("client certificate")
    if tls.error:
        parts.append(f"{NO} unusable: {tls.error} (502)")
    return ", ".join(parts)


def _backend_lines(rule: RouteRule, method: bytes, headers: list[tuple[bytes, bytes]], target: bytes) -> list[str]:
    total = sum(c.weight for c in rule.choices)
    rows = []
    for choice in rule.choices:
        share = f"{100 * choice.weight / total:.0f}%" if total else "-"
        if choice.backend is None:
            rows.append([NO, choice.name or "(invalid ref)", share, f"{choice.error} → 500"])
            continue
        backend: Backend = choice.backend
        eps = ", ".join(f"{e.host}:{e.port}" for e in backend.endpoints) or "no ready endpoints → 503"
        detail = [f"endpoints {eps}", _tls_text(backend.tls) if backend.tls else "plain HTTP"]
        plan: RequestPlan | None = choice.plan
        if plan is not None and (plan.request_ops or plan.host is not None or plan.path is not None):
            sent_headers, sent_target = plan.request(headers, target)
            host = next((v for n, v in sent_headers if n.lower() == b"host"), b"")
            detail.append(f"sent as {method.decode()} {sent_target.decode('latin-1')} Host {host.decode('latin-1')}")
        if plan is not None and plan.mirrors:
            detail.append("mirrored to " + ", ".join(m.name for m in plan.mirrors))
        rows.append([OK, backend.name, share, "; ".join(detail)])
    ignored = [ref for ref in rule.source.backends if ref.weight <= 0]
    rows += [[LATER, ref.backend or "(invalid)", "0%", "weight 0: never chosen"] for ref in ignored]
    return table(rows, indent="           ")


class Walk:
    """One request through the pipeline's stages as the worker takes it (``walk``)."""

    __slots__ = ("decision", "headers", "host", "path", "rule", "table", "target")

    def __init__(self) -> None:
        self.decision: Choice | LocalReply | Redirect | None = None  # None: no listener serves HTTP there
        self.rule: RouteRule | None = None
        self.table: HostTable | None = None  # None when the target stage refused the request
        self.path = b""  # as routed: normalized, without the query
        self.target = b""  # as forwarded (before any URLRewrite)
        self.host = b""  # the Host routed by (absolute-form replaces it)
        self.headers: list[tuple[bytes, bytes]] = []

    @property
    def status(self) -> int:
        """What the client gets from the gateway itself, or 0 when the request is forwarded."""
        return 0 if self.decision is None or isinstance(self.decision, Choice) else self.decision.status


def walk(
    router: Router, port: int, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], scheme: bytes = b"http"
) -> Walk:
    """The decision of stages 2-5 (fsmfast.pipeline) for one request head, as the worker makes it."""
    out = Walk()
    headers = list(headers)
    host = next((v for n, v in headers if n.lower() == b"host"), b"")
    form = target_stage.normalize(method, target, host, headers)
    if isinstance(form, LocalReply):
        out.decision = form
        return out
    out.path, out.target, out.host = form
    out.headers = headers
    out.table = router.tables.get(port)
    found = route.find(out.table, out.host, out.path, method, headers, out.target)
    if not isinstance(found, RouteRule):
        out.decision = found
        return out
    out.rule = found
    decision = route.choose(found, scheme, out.host, port, method, headers, out.target, out.path, b"-")
    # Only the worker's hooks delay (fault injection); a pure router has none, so never a Delayed here.
    assert not isinstance(decision, Delayed)
    out.decision = decision
    return out


def explain(
    snapshot: Snapshot,
    port: int,
    host: str,
    path: str,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    query: Sequence[tuple[str, str]] = (),
) -> str:
    """A readable account of how the data plane routes one request."""
    # A path given without its leading slash gets one; a target the worker would read otherwise
    # (absolute-form, *, CONNECT's authority-form) is kept as given, to be normalized or refused
    # as the worker does it.
    as_given = path.startswith("/") or path == "*" or "://" in path or method.upper() == "CONNECT"
    target = path if as_given else "/" + path
    if query:
        extra = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
        target += ("&" if "?" in target else "?") + extra
    raw_target = target.encode()
    raw_headers = [(b"Host", host.encode())] + [(k.encode(), v.encode()) for k, v in headers]
    raw_method = method.upper().encode()
    lines = [f"request    {method.upper()} {target}  Host: {host}  port {port}"]
    lines += [f"           {k}: {v}" for k, v in headers]

    listener = next((li for li in snapshot.listeners if li.port == port), None)
    if listener is None:
        ports = ", ".join(str(li.port) for li in snapshot.listeners) or "none"
        return "\n".join([*lines, f"listener   {NO} no listener on port {port} (ports: {ports})"]) + "\n"
    if listener.protocol not in ("HTTP", "HTTPS"):
        return "\n".join([*lines, f"listener   {NO} port {port} serves {listener.protocol}, not HTTP routes"]) + "\n"
    router = Router(snapshot)
    table_ = router.tables[port]
    scheme = b"https" if listener.protocol == "HTTPS" else b"http"
    walked = walk(router, port, raw_method, raw_target, raw_headers, scheme)
    if walked.table is None:
        reply = walked.decision
        assert isinstance(reply, LocalReply)
        lines.append(f"target     {NO} refused before routing: {reply.text}")
        lines.append(f"result     {NO} {reply.status} ({reply.code}), answered by the gateway")
        return "\n".join(lines) + "\n"
    # What the worker routes by from here on: the normalized path and target, absolute-form's host.
    raw_path, raw_target, raw_headers = walked.path, walked.target, walked.headers
    name = normalize_host(walked.host)
    vhost = table_.find(name)
    names = ", ".join(vh.hostname for vh in listener.vhosts) or "none"
    if vhost is None:
        lines.append(f"listener   {NO} no hostname on port {port} matches {name.decode()} → 404 (hostnames: {names})")
        return "\n".join(lines) + "\n"
    lines.append(
        f"listener   {OK} port {port} host {name.decode()} → virtual host {vhost.hostname} ({_how(table_, vhost)}),"
        f" owned by {', '.join(vhost.listeners) or '-'}"
    )
    others = [vh.hostname for vh in listener.vhosts if vh.hostname != vhost.hostname]
    if others:
        lines.append(f"           other hostnames on this port: {', '.join(others)}")
    shown = raw_path.decode("latin-1")
    given = target.split("?", 1)[0]
    lines.append(f"path       {shown}" + (f"  (normalized from {given})" if given != shown else ""))
    lines += _candidates(vhost, raw_path, raw_method, raw_headers, raw_target)
    winner = walked.rule
    if winner is None:
        lines.append(f"result     {NO} no rule matches → 404")
        return "\n".join(lines) + "\n"
    rule = winner.source
    lines.append(f"matched    {winner.name}")
    if listener.edge is not None or any(vh.edge for vh in listener.vhosts):
        compiled = next((vh for vh in listener.vhosts if vh.hostname == vhost.hostname), None)
        lines += edge_lines(port, listener.edge, compiled.edge.get(rule.name) if compiled is not None else None)
    extras = filters_text(rule.filters, rule.timeouts)
    if extras:
        lines.append("filters    " + extras[0])
        lines += ["           " + e for e in extras[1:]]
    decision = walked.decision
    if isinstance(decision, Redirect):
        location = decision.location.decode("latin-1")
        lines.append(f"result     {OK} {decision.status} redirect, Location: {location}")
        return "\n".join(lines) + "\n"
    if not winner.choices:
        lines.append(f"result     {NO} no backend to send to → 500")
        return "\n".join(lines) + "\n"
    if isinstance(decision, LocalReply) and decision.code != "invalid_backend":
        # A policy hook answered (fsmfast.pipeline.hooks).
        lines.append(f"result     {NO} {decision.status} ({decision.code}): {decision.text}")
        return "\n".join(lines) + "\n"
    lines.append("backends")
    lines += _backend_lines(winner, raw_method, raw_headers, raw_target)
    lines += policy_lines(rule, [c.backend for c in winner.choices if c.backend is not None])
    if all(c.backend is None for c in winner.choices):
        lines.append(f"result     {NO} no usable backend → 500")
    else:
        lines.append(f"result     {OK} proxied to one of the backends above, by weight")
    return "\n".join(lines) + "\n"


def _how(table_: HostTable, vhost: VHost) -> str:
    if vhost is table_.any:
        return "any hostname"
    if vhost.hostname.startswith("*."):
        return "wildcard"
    return "exact"


def _candidates(
    vhost: VHost, path: bytes, method: bytes, headers: list[tuple[bytes, bytes]], target: bytes
) -> list[str]:
    if not vhost.rules:
        return ["candidates (none: every request for this hostname gets 404)"]
    req = RequestView(method, headers, target)
    winner = vhost.match(path, method, headers, target)
    rows = [["", "#", "route/rule/match", "path", "conditions", "result"]]
    seen_winner = False
    for n, rule in enumerate(vhost.rules, 1):
        src = rule.source
        why = reject_reason(rule, path, req)
        if rule is winner:
            mark, result = OK, "matches: chosen"
            seen_winner = True
        elif why is None:
            mark, result = LATER, "matches too, but a rule above takes precedence"
        else:
            mark, result = NO, why
        rows.append([mark, str(n), src.name, path_text(src), conditions_text(src), result])
    assert winner is None or seen_winner
    return [f"candidates for {vhost.hostname}, in precedence order:", *table(rows, indent="  ")]
