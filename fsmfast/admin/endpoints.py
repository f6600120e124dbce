"""What each admin path answers, from what the master knows (an :class:`AdminView`).

    /healthz   200 while the master's loop runs (it answered, so it does).
    /readyz    200 when every worker serves the current generation; 503 with the reasons while
               starting, during a stop, or with a worker missing or behind. ``?verbose`` lists
               every check, as Kubernetes' /readyz does.
    /metrics   Prometheus text 0.0.4, or OpenMetrics 1.0.0 when the scraper's Accept asks for it.
    /config    the generation being served as JSON (``fsmfast.admin.dump``): no key or Secret data.
    /status    the master's view for ``fsmfast status``: workers, generation, the last reload.

Mutations are not offered: reloads and log reopening stay signals (HUP, USR1), which need the
rights over the process that an operator of the machine has, not just a route to a port.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from fsmfast.admin.server import Handler, Request, Response

JSON = "application/json"


class AdminView(Protocol):
    def readiness(self) -> list[tuple[str, bool, str]]:
        """Every readiness check: (name, passed, why it failed or "")."""
        ...

    def status(self) -> dict[str, Any]: ...

    def config(self) -> dict[str, Any] | None:
        """The dump of the generation served now; None before the first one."""
        ...

    def metrics(self, accept: str | None) -> tuple[str, bytes]: ...


def handler(view: AdminView) -> Handler:
    def handle(request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if path == "/healthz":
            return Response(200, b"ok\n")
        if path == "/readyz":
            return _readyz(view, "verbose" in request.query)
        if path == "/metrics":
            content_type, body = view.metrics(request.headers.get("accept"))
            return Response(200, body, content_type)
        if path == "/config":
            dump = view.config()
            if dump is None:
                return Response(503, b"no configuration is served yet\n")
            return Response(200, _json(dump), JSON)
        if path == "/status":
            return Response(200, _json(view.status()), JSON)
        return Response(404, b"not found: try /metrics, /healthz, /readyz, /config or /status\n")

    return handle


def _readyz(view: AdminView, verbose: bool) -> Response:
    checks = view.readiness()
    failed = [f"{name}: {why}" for name, ok, why in checks if not ok]
    status = 503 if failed else 200
    if verbose:
        lines = [f"[{'+' if ok else '-'}]{name} {'ok' if ok else 'failed: ' + why}" for name, ok, why in checks]
        lines.append("readyz check passed" if not failed else "readyz check failed")
        return Response(status, ("\n".join(lines) + "\n").encode())
    return Response(status, b"ready\n" if not failed else ("not ready: " + "; ".join(failed) + "\n").encode())


def _json(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
