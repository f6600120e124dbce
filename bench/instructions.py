"""User-space instructions per request of each proxy, counted by callgrind: figures noise cannot move.

``python -m bench`` measures CPU time, which on a shared machine moves by ±15 % from run to run.
This runs each system under ``valgrind --tool=callgrind`` (all its processes: a forked worker stays
under valgrind), sends N requests one after another on one keep-alive connection (S6: a new
connection each), stops the system, and sums the instructions of its processes. Two runs with
different N give the cost of one request without start-up and shutdown (fsmfast runs with a fixed
PYTHONHASHSEED, so that its start-up costs the same in both):

    (instructions(N2) - instructions(N1)) / (N2 - N1)

Only user space is counted (callgrind does not see the kernel), so this compares the work each
proxy's own code does per request; the kernel's share (the same syscalls for every system, see
bench/README.md) comes on top. Loopback only, bounded by the request counts.

    python -m bench instructions [--scenarios S1,S2,S3] [--systems fsmfast,nginx,haproxy] [--requests 200,1200]

S7 (three endpoints, health check, retries) counts what the configured policies cost on the same one
connection; its active checks run on the clock, so the longer run carries a few more of them. S8 counts what a
rate limit that never triggers costs on top of S1. S9 counts fsmfast's side of a fleet-wide one (``mode:
Global``): each counted run gets a fresh redis-server (bench/fleet.py), outside valgrind, so Redis's own work is
not in the figure, only fsmfast's asking (redis-py, the round trip on its event loop); the run fails unless
Redis made a decision for every request and fsmfast logged none missing. nginx and HAProxy count S8's local
limit there, having no Redis-backed one.
"""

from __future__ import annotations

import argparse
import glob
import os
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

from bench import configs, deps, fleet, procs
from bench.scenarios import HOST, SCENARIOS, Case, Scenario
from bench.systems import make

# S5 moves megabytes: its cost is the copies, timed in python -m bench
SUPPORTED = ("S1", "S2", "S3", "S4", "S6", "S7", "S8", "S9")
PROXIES = ("fsmfast", "nginx", "haproxy")
FLOOR = "floor"  # bench/floor.py, S1 only: what uvloop and the kernel interface cost with no HTTP work at all


def _connect(port: int, tls: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the S3 certificate is self-signed; wrk does not verify either
        sock = ctx.wrap_socket(sock, server_hostname=HOST)
    return sock


def _request(case: Case, close: bool) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"{case.method} {case.path} HTTP/1.1\r\nHost: {case.host}\r\n{extra}\r\n".encode()


def _read_response(sock: socket.socket, size: int) -> None:
    """Reads one response whose body is ``size`` bytes (the scenarios' small answers carry Content-Length)."""
    got = b""
    while True:
        head_end = got.find(b"\r\n\r\n")
        if head_end >= 0 and len(got) >= head_end + 4 + size:
            if not got.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {got[:120]!r}")
            return
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed after {got[:120]!r}")
        got += chunk


def drive(port: int, tls: bool, case: Case, n: int, churn: bool) -> None:
    sock = None if churn else _connect(port, tls)
    for _ in range(n):
        if churn:
            with _connect(port, tls) as one:
                one.sendall(_request(case, close=True))
                _read_response(one, case.expect_size)
            continue
        assert sock is not None
        sock.sendall(_request(case, close=False))
        _read_response(sock, case.expect_size)
    if sock is not None:
        sock.close()


def count(
    system_name: str, scenario: Scenario, n: int, up: configs.UpstreamPorts, certs: configs.Certs, tmp: Path
) -> int:
    """Instructions of all the system's processes over start-up, ``n`` requests and shutdown."""
    run = Path(tempfile.mkdtemp(prefix=f"{system_name}-{scenario.id}-{n}-", dir=tmp))
    # nginx's worker drops root for its configured user: it must still write its callgrind file here.
    run.chmod(0o777)
    system = make(system_name, run, up, certs, None)
    system.wrapper = [deps.tool("valgrind"), "--tool=callgrind", f"--callgrind-out-file={run}/callgrind.%p"]
    # S9: a Redis of its own, so both counts start alike (no quota key, no script cached from the other run).
    redis = fleet.start(run / "redis", None) if scenario.fleet_limit and system_name == "fsmfast" else None
    try:
        if redis is not None:
            # Under callgrind everything is tens of times slower: a generous timeout, so that what is
            # counted is Redis's decisions, never the fail-open path.
            system.fleet_args = fleet.fsmfast_args(redis, timeout=30.0)
        system.start(scenario, run)
        try:
            system.wait_ready(180)
            time.sleep(0.5)  # let every worker finish booting before the count matters
            drive(system.port, system.tls, scenario.cases[0], n, churn=scenario.id == "S6")
        finally:
            assert system.proc is not None
            system.proc.stop(grace=120)  # valgrind writes its counts at exit: never SIGKILL it
        if redis is not None:
            # Counting the fail-open path instead of Redis's decisions would be a wrong figure, not a slow one.
            decided = fleet.decisions(redis)
            if decided < n or "gave no decision" in system.proc.stderr.read_text(errors="replace"):
                raise RuntimeError(f"{system_name} {scenario.id}: Redis decided {decided} of {n} requests")
        system.proc = None
    finally:
        if redis is not None:
            redis.stop()
    total = 0
    for path in glob.glob(str(run / "callgrind.*")):
        with open(path) as f:
            for line in f:
                if line.startswith("summary:"):
                    total += int(line.split()[1])
                    break
    if not total:
        raise RuntimeError(f"{system_name} {scenario.id}: no callgrind output")
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench instructions", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default="S1,S2,S3", help=f"any of {','.join(SUPPORTED)} (default S1,S2,S3)")
    p.add_argument("--systems", default=",".join(PROXIES), help="default fsmfast,nginx,haproxy; floor for S1")
    p.add_argument("--requests", default="200,1200", help="the two request counts N1,N2 (default 200,1200)")
    p.add_argument(
        "--no-install", dest="install", action="store_false", help="never install; fail if a tool is missing"
    )
    ns = p.parse_args(argv)
    # One hash seed for every fsmfast process: with a random one, its start-up (dicts and sets over
    # the snapshot: 10,000 rules in S4) costs a different number of instructions in each run, and the
    # difference of two runs no longer isolates the requests. Inherited by the systems' processes.
    os.environ["PYTHONHASHSEED"] = "0"
    scenarios = [s.strip() for s in ns.scenarios.split(",") if s.strip()]
    systems = [s.strip() for s in ns.systems.split(",") if s.strip()]
    n1, n2 = (int(x) for x in ns.requests.split(","))
    bad = [s for s in scenarios if s not in SUPPORTED] + [s for s in systems if s not in (*PROXIES, FLOOR)]
    if FLOOR in systems and scenarios != ["S1"]:
        bad.append(f"{FLOOR} outside S1")
    if bad or n2 <= n1 or n1 < 1:
        p.error(f"unsupported {bad} or request counts {ns.requests!r} (need 0 < N1 < N2)")
    if fleet.needed(scenarios, systems) and (missing := fleet.client_missing()) is not None:
        p.error(missing)
    needed = ["valgrind", "nginx", *(["haproxy"] if "haproxy" in systems else [])]
    needed += ["redis-server"] if fleet.needed(scenarios, systems) else []
    if ns.install:
        deps.ensure_debian(needed)
    for tool in needed:
        deps.tool(tool)

    from fsmfast._compiled import describe

    print(f"user-space instructions per request (callgrind; N = {n1} and {n2}); fsmfast: {describe()}")
    print()
    print("| scenario | " + " | ".join(systems) + " | fsmfast/nginx |")
    print("|---|" + "---:|" * (len(systems) + 1))
    with tempfile.TemporaryDirectory(prefix="fsmfast-instructions-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # see count(): nginx's worker runs as another user
        certs = configs.make_certs(tmp / "certs")
        up = configs.upstream_ports(procs.free_port)
        conf = configs.write_upstream(tmp / "upstream", up, certs)
        nginx = deps.tool("nginx")
        upstream = procs.Proc(
            "upstream", [nginx, "-p", str(tmp / "upstream"), "-c", str(conf), "-e", str(tmp / "upstream" / "err.log")],
            tmp / "upstream", None,
        )  # fmt: skip
        try:
            for port in (up.http, *up.more_http, up.https):
                procs.wait_port(port, 30, upstream.proc)
            for sid in scenarios:
                scenario = SCENARIOS[sid]
                per: dict[str, float] = {}
                for name in systems:
                    a = count(name, scenario, n1, up, certs, tmp)
                    b = count(name, scenario, n2, up, certs, tmp)
                    per[name] = (b - a) / (n2 - n1)
                    print(f"{sid} {name}: {per[name]:,.0f} instructions/request", file=sys.stderr, flush=True)
                ratio = per["fsmfast"] / per["nginx"] if "fsmfast" in per and per.get("nginx") else None
                cells = " | ".join(f"{per[s]:,.0f}" for s in systems)
                print(f"| {sid} {scenario.name} | {cells} | {'n/a' if ratio is None else f'{ratio:.2f}'} |", flush=True)
        finally:
            upstream.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
