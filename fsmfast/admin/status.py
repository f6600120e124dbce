"""``fsmfast status``: what a running gateway does, for a person, from its admin listener.

Reads GET /status (the master: state, workers, the last reload) and GET /config (the served
generation: listeners and certificates, ``fsmfast.admin.dump``) over plain HTTP on loopback and
prints generation and state, the workers (pid, uptime, RSS), the listeners, the certificates
that expire within 30 days (expired ones included) and the last reload's result. Only the
standard library's http.client: this runs on a machine where the gateway runs, maybe without
anything else installed.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from typing import Any, TextIO

from fsmfast.columns import table
from fsmfast.tls.certs import rfc3339

EXPIRY_DAYS = 30
TIMEOUT = 3.0  # seconds per request: the admin listener answers at once or not at all
MIB = 1024 * 1024


class Unreachable(Exception):
    """The admin listener did not answer (the message says why, for the person)."""


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fetch(host: str, port: int, path: str, timeout: float = TIMEOUT) -> tuple[int, Any]:
    """(status, JSON body or None when the body is not JSON) of GET ``path``."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    where = _where(host, port)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    except TimeoutError:
        raise Unreachable(f"cannot reach the admin listener at {where}: timed out after {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise Unreachable(f"cannot reach the admin listener at {where}: {reason}") from None
    finally:
        conn.close()
    try:
        return resp.status, json.loads(body)
    except ValueError:
        return resp.status, None


def duration(seconds: float) -> str:
    """``3d 4h``, ``2h 5m``, ``4m 10s``, ``12s``: the two largest units."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _when(epoch: float, now: float) -> str:
    delta = now - epoch
    relative = f"{duration(delta)} ago" if delta >= 0 else f"in {duration(-delta)}"
    return f"{rfc3339(epoch)} ({relative})"


def _workers(status: dict[str, Any], now: float) -> list[str]:
    workers = status.get("workers") or []
    if not workers:
        return ["workers", "  none running"]
    rows = [["slot", "pid", "uptime", "RSS", "generation", "ready"]]
    for w in sorted(workers, key=lambda w: w.get("slot", 0)):
        rss = w.get("rss_bytes")
        rows.append(
            [
                str(w.get("slot", "-")),
                str(w.get("pid", "-")),
                duration(w["uptime_seconds"]) if w.get("uptime_seconds") is not None else "-",
                f"{rss / MIB:.1f} MiB" if rss is not None else "-",
                str(w.get("generation", "-")),
                "yes" if w.get("ready") else "no",
            ]
        )
    return ["workers", *table(rows)]


def _protocol(listener: dict[str, Any]) -> str:
    if listener.get("protocol") == "TLS":
        return f"TLS {listener.get('tls_mode') or 'Terminate'}"
    return str(listener.get("protocol", "-"))


def _listeners(config: dict[str, Any]) -> list[str]:
    listeners = config.get("listeners") or []
    if not listeners:
        return ["listeners", "  none"]
    rows = [["port", "protocol", "hostnames", "listeners"]]
    for li in listeners:
        protocol = _protocol(li)
        if li.get("client_certificates"):
            protocol += " (client certificates)"
        rows.append(
            [
                str(li.get("port", "-")),
                protocol,
                ", ".join(li.get("hostnames") or []) or "-",
                ", ".join(li.get("names") or []) or "-",
            ]
        )
    return ["listeners", *table(rows)]


def expiring(config: dict[str, Any], now: float, days: int = EXPIRY_DAYS) -> list[dict[str, Any]]:
    """The certificates of ``config`` whose not-after is within ``days`` of ``now`` (or past), soonest first."""
    limit = now + days * 86400
    soon = [c for c in config.get("certificates") or [] if c["not_after_epoch"] <= limit]
    return sorted(soon, key=lambda c: (c["not_after_epoch"], c["namespace"], c["secret"], c["usage"]))


def _certificates(config: dict[str, Any], now: float) -> list[str]:
    head = f"certificates expiring within {EXPIRY_DAYS} days"
    soon = expiring(config, now)
    if not soon:
        return [head, "  none"]
    rows = []
    for c in soon:
        left = c["not_after_epoch"] - now
        when = f"expired {duration(-left)} ago" if left <= 0 else f"expires in {duration(left)}"
        kind = "" if c.get("kind", "Secret") == "Secret" else f" ({c['kind']})"
        rows.append(
            [f"{c['namespace']}/{c['secret']}{kind}", c["usage"], c["subject"] or "-", f"{when}, {c['not_after']}"]
        )
    return [head, *table(rows)]


def _reload(status: dict[str, Any], now: float) -> list[str]:
    last = status.get("last_reload")
    if not last:
        return ["last reload", "  none since the master started"]
    # "generation" is the one served after the reload: the new one, or the one a failure kept.
    result = last.get("result", "?")
    served = "kept" if result == "failure" else "now serving"
    line = f"  {result} {_when(last['at'], now)}, {served} generation {last.get('generation', '?')}"
    if last.get("trigger"):
        line += f", by {last['trigger']}"
    lines = ["last reload", line]
    if last.get("error"):
        lines += ["  error: " + row for row in str(last["error"]).splitlines()]
    return lines


def render(status: dict[str, Any], config: dict[str, Any] | None, now: float | None = None) -> str:
    """The report for ``status`` (GET /status) and ``config`` (GET /config, None when none is served)."""
    now = time.time() if now is None else now
    head = f"fsmfast {status.get('version', '?')}, master pid {status.get('pid', '?')}: {status.get('state', '?')}"
    served = f"generation {status.get('generation', '?')}"
    if status.get("started"):
        served += f", master up {duration(now - status['started'])} (since {rfc3339(status['started'])})"
    lines = [head, served, ""]
    lines += [*_workers(status, now), ""]
    if config is None:
        lines += ["listeners", "  no configuration is served yet", ""]
    else:
        lines += [*_listeners(config), "", *_certificates(config, now), ""]
    lines += _reload(status, now)
    return "\n".join(lines) + "\n"


def main(host: str, port: int, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``fsmfast status``: 0 with the report, 1 when the admin listener cannot be asked."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        code, status = fetch(host, port, "/status")
        if code != 200 or not isinstance(status, dict):
            err.write(f"fsmfast status: GET /status at {_where(host, port)} answered {code}, not the master's status\n")
            return 1
        code, config = fetch(host, port, "/config")
    except Unreachable as exc:
        err.write(f"fsmfast status: {exc}\n")
        return 1
    # 503 before the first generation is served: the master's part is still worth printing.
    out.write(render(status, config if code == 200 and isinstance(config, dict) else None))
    return 0
