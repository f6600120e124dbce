"""The load: wrk (closed loop, fixed connection count), a generated Lua script per case, JSON out of ``done``.

The Lua script sets the method, headers and body of the case and, when wrk finishes, prints one line
``BENCH-JSON {...}`` with wrk's own summary: completed requests, duration, bytes, socket errors by kind,
non-2xx/3xx responses (``errors.status``) and latency percentiles from wrk's histogram (microseconds).
"""

from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path

from bench.scenarios import Case
from fsmfast.demo.procs import connection

MARK = "BENCH-JSON "

_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"mean_us":%.1f,"max_us":%d}\\n',
    "MARK", summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
"""


def _lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_script(path: Path, case: Case) -> Path:
    lines = [f"wrk.method = {_lua_str(case.method)}", f'wrk.headers["Host"] = {_lua_str(case.host)}']
    for name, value in case.headers:
        lines.append(f"wrk.headers[{_lua_str(name)}] = {_lua_str(value)}")
    if case.body_size:
        # wrk adds Content-Length from wrk.body.
        lines.append(f'wrk.body = string.rep("x", {case.body_size})')
        lines.append('wrk.headers["Content-Type"] = "application/octet-stream"')
    path.write_text("\n".join(lines) + "\n" + _DONE.replace('"MARK"', _lua_str(MARK)))
    return path


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    connections: int,
    duration: float,
    threads: int,
    cpus: str | None,
    timeout_s: float = 5.0,
) -> tuple[dict, str]:
    """Run wrk once; return (the parsed JSON summary, wrk's full stdout)."""
    cmd = ["taskset", "-c", cpus] if cpus is not None else []
    cmd += [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            data = json.loads(line[len(MARK) :])
            # As a person would type it in the scenario's directory: no machine paths in the record.
            shown = ["wrk", *cmd[cmd.index(wrk) + 1 :]]
            shown[shown.index(str(script))] = script.name
            data["cmd"] = " ".join(shown)
            return data, proc.stdout
    raise RuntimeError(f"wrk gave no summary (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout[-500:]}")


def preflight(port: int, case: Case, tls: bool) -> str | None:
    """One request like the load's; None if the answer is 200 with the expected body size, else what went wrong."""
    conn = connection(port, tls)
    try:
        headers = {"Host": case.host, **dict(case.headers)}
        body = b"x" * case.body_size if case.body_size else None
        conn.request(case.method, case.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"{case.method} {case.path}: {exc.__class__.__name__}: {exc}"
    finally:
        conn.close()
    if resp.status != 200 or len(data) != case.expect_size:
        return f"{case.method} {case.path}: status {resp.status}, {len(data)} body bytes: {data[:200]!r}"
    return None
