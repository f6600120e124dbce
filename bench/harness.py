"""The side-by-side run: one upstream, every system, every scenario, systems alternating round by round.

Order of work, per scenario: start every system on that scenario's config, check one request per case
against each (a misconfigured system must not be measured), then for each round, for each case, run the
systems one after another (fsmfast, nginx, haproxy, direct, fsmfast, nginx, ...), each run preceded by
a short warm-up of the same load. Then stop them and go to the next scenario.

Per run: requests/s and latency percentiles from wrk; CPU time (user+sys) of the system's whole process
tree from /proc/<pid>/stat before and after the run, divided by completed requests; peak RSS as the
maximum, over samples every 0.2 s during the run, of the summed VmRSS of that tree (VmHWM is recorded too);
the upstream's CPU and wrk's CPU over the same window (to tell when the harness side, not the proxy, was
the bottleneck); and how many connections the upstream accepted (nginx stub_status), proving pool reuse.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import configs, deps, fleet, load, procs
from bench.configs import UpstreamPorts
from bench.scenarios import SCENARIOS, Case, Scenario
from bench.scrape import Scraper
from bench.systems import System, make
from tests.support.redis_server import RedisServer


@dataclass
class Options:
    scenarios: list[str]
    systems: list[str]
    rounds: int
    duration: float
    warmup: float
    connections: int
    threads: int
    pin: str  # "split" or "none"
    install: bool
    start_timeout: float = 120.0


@dataclass
class Outcome:
    runs: list[dict] = field(default_factory=list)
    unsupported: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    logs: list[dict] = field(default_factory=list)
    idle: list[dict] = field(default_factory=list)  # worker RSS after start-up, before any load
    versions: dict = field(default_factory=dict)
    cpus: dict = field(default_factory=dict)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_layout(pin: str) -> dict:
    """Where things run. "split": proxy alone on CPU 1; wrk, the upstream and the harness on CPU 0."""
    n = os.cpu_count() or 1
    if pin == "split" and n >= 2:
        return {"proxy": "1", "harness": "0"}
    return {"proxy": None, "harness": None}


def _stub_status(port: int) -> tuple[int, int] | None:
    """(accepted connections, requests) of the upstream so far, from its stub_status page."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        text = conn.getresponse().read().decode()
        conn.close()
    except (OSError, http.client.HTTPException):
        return None
    m = re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)", text)
    return (int(m.group(1)), int(m.group(3))) if m else None


def scrub(text: str, tmp: Path | None = None) -> str:
    """Machine paths out of text kept in the record (tracebacks, log tails): the results JSON is committed."""
    pairs = [(str(Path(__file__).resolve().parent.parent), "<repo>"), (sys.prefix, "<venv>")]
    pairs += [(sys.base_prefix, "<python>"), (tempfile.gettempdir(), "<tmp>"), (str(Path.home()), "~")]
    if tmp is not None:
        pairs.insert(0, (str(tmp), "<workdir>"))
    for path, name in pairs:
        if path and path != "/":
            text = text.replace(path, name)
    return text


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


_INTERESTING = re.compile(r"traceback|error|exception|critical|warn|crash|died|killed|respawn", re.I)


def _new_log_lines(path: Path, offset: int, limit: int = 8) -> tuple[list[str], int]:
    """Lines of ``path`` past ``offset`` that look like trouble (at most ``limit``), and the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    lines = [ln for ln in data.decode(errors="replace").splitlines() if _INTERESTING.search(ln)]
    return [scrub(ln) for ln in lines[:limit]], offset + len(data)


class Harness:
    def __init__(self, opts: Options, wrk: str, tmp: Path) -> None:
        self.opts = opts
        self.wrk = wrk
        self.tmp = tmp
        self.cpus = cpu_layout(opts.pin)
        self.out = Outcome(cpus=self.cpus)
        self.upstream: procs.Proc | None = None
        self.up: UpstreamPorts | None = None
        self.redis: RedisServer | None = None  # S9's, while that scenario runs (bench/fleet.py)
        self.total_runs = 0
        self.done_runs = 0

    # -- upstream ------------------------------------------------------------------------------------

    def start_upstream(self, certs: configs.Certs) -> None:
        self.up = configs.upstream_ports(procs.free_port)
        prefix = self.tmp / "upstream"
        conf = configs.write_upstream(prefix, self.up, certs)
        argv = [deps.tool("nginx"), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        self.upstream = procs.Proc("upstream", argv, prefix, self.cpus["harness"])
        for port in (self.up.http, *self.up.more_http, self.up.https, self.up.sink, self.up.status):
            procs.wait_port(port, 30, self.upstream.proc)

    # -- one run -------------------------------------------------------------------------------------

    def measure(self, system: System, scenario: Scenario, case: Case, rnd: int, script: Path) -> dict:
        assert self.upstream is not None and self.up is not None
        url = system.url(case.path)
        cpus = self.cpus["harness"]
        # S9: fsmfast's decisions Redis did not give (read before the warm-up, so that it counts too).
        redis = self.redis if system.fleet_args else None
        metrics_url = system.metrics_url
        fails0 = fleet.failures(metrics_url) if redis is not None and metrics_url is not None else None
        if self.opts.warmup > 0:
            load.run_wrk(self.wrk, url, script, self.opts.connections, self.opts.warmup, self.opts.threads, cpus)
        root = system.root_pid
        pids = procs.tree(root) if root is not None else []
        up_pids = procs.tree(self.upstream.pid)
        # Redis runs on CPU 0 with wrk and the upstream: its CPU is theirs, not the proxy's, nor other load.
        redis_pids = procs.tree(self.redis.pid) if self.redis is not None else []
        decisions0 = fleet.decisions(redis) if redis is not None else 0
        log_path = system.proc.stderr if system.proc is not None else None
        log_offset = log_path.stat().st_size if log_path is not None and log_path.exists() else 0

        stub0 = _stub_status(self.up.status)
        busy0 = procs.busy_seconds()
        up_cpu0, wrk_cpu0, (user0, sys0) = procs.cpu_seconds(up_pids), _children_cpu(), procs.cpu_times(pids)
        redis_cpu0 = procs.cpu_seconds(redis_pids)
        t0 = time.monotonic()
        sampler = procs.RssSampler(root) if root is not None else contextlib.nullcontext()
        scraper = Scraper(metrics_url) if metrics_url is not None else None
        with sampler, scraper or contextlib.nullcontext():
            res, _ = load.run_wrk(
                self.wrk, url, script, self.opts.connections, self.opts.duration, self.opts.threads, cpus
            )
        wall = time.monotonic() - t0
        (user1, sys1), wrk_cpu1, up_cpu1 = procs.cpu_times(pids), _children_cpu(), procs.cpu_seconds(up_pids)
        redis_cpu1 = procs.cpu_seconds(redis_pids)
        cpu0, cpu1 = user0 + sys0, user1 + sys1
        busy1 = procs.busy_seconds()
        side = (wrk_cpu1 - wrk_cpu0) + (up_cpu1 - up_cpu0) + (redis_cpu1 - redis_cpu0)  # CPU 0's work
        ours = (cpu1 - cpu0) + side
        stub1 = _stub_status(self.up.status)

        requests = int(res["requests"])
        duration = res["duration_us"] / 1e6
        per_req = (lambda s: s / requests * 1e6) if requests else (lambda s: None)
        run: dict = {
            "scenario": scenario.id,
            "case": case.name,
            "system": system.name,
            "round": rnd,
            "url": url,
            "wrk": res.pop("cmd"),
            "requests": requests,
            "duration_s": round(duration, 3),
            "rps": round(requests / duration, 1) if duration else 0.0,
            "latency_us": {k[:-3]: res[k] for k in ("p50_us", "p90_us", "p99_us", "p999_us", "mean_us", "max_us")},
            "errors": {k: res[k] for k in ("connect", "read", "write", "timeout")},
            "non_2xx_3xx": res["status"],
            "bytes": res["bytes"],
            "upstream_cpu_us_per_req": per_req(up_cpu1 - up_cpu0),
            "wrk_cpu_us_per_req": per_req(wrk_cpu1 - wrk_cpu0),
            # CPU 0 (wrk + upstream) busy share in the split layout: near 100 % means the harness side, not
            # the proxy, limited the rate.
            "harness_cpu_util": round(side / wall, 3),
            # Everything else the machine ran meanwhile (other users' jobs, the harness itself), in cores: runs
            # with much of it are noisy, whatever the medians say.
            "other_load_cores": round(max(0.0, busy1 - busy0 - ours) / wall, 2),
        }
        if scraper is not None:
            # Scrapes answered during the measured load (bench.scrape), and the size of the last one.
            run["metrics_scrapes"] = scraper.scrapes
            run["metrics_scrape_failures"] = scraper.failures
            run["metrics_bytes"] = scraper.last_bytes
        if self.redis is not None:
            run["redis_cpu_us_per_req"] = per_req(redis_cpu1 - redis_cpu0)
        if redis is not None:
            # One script call per request that Redis decided; failures: the requests fsmfast let through
            # without a decision (fail-open), over the warm-up and the run.
            run["redis_decisions"] = fleet.decisions(redis) - decisions0
            fails1 = fleet.failures(metrics_url) if metrics_url is not None else None
            run["redis_failures"] = None if fails0 is None or fails1 is None else fails1 - fails0
        if stub0 is not None and stub1 is not None:
            run["upstream_new_conns"] = stub1[0] - stub0[0] - 1  # minus the stub_status request's own
            run["upstream_requests"] = stub1[1] - stub0[1] - 1
        if root is not None:
            after = procs.tree(root)
            run.update(
                {
                    "cpu_s": round(cpu1 - cpu0, 3),
                    "cpu_us_per_req": per_req(cpu1 - cpu0),
                    # The split: the kernel's share (loopback TCP, TLS-free syscalls) is much the same for
                    # every proxy; what differs between them is mostly user time.
                    "cpu_user_us_per_req": per_req(user1 - user0),
                    "cpu_sys_us_per_req": per_req(sys1 - sys0),
                    "cpu_util": round((cpu1 - cpu0) / wall, 3),
                    "rss_peak_kib": sampler.peak_kib,  # type: ignore[union-attr]
                    "vmhwm_kib": procs.hwm_kib(after),
                    "processes": len(after),
                    "alive": system.proc is not None and system.proc.alive(),
                }
            )
            if after != pids:
                run["process_change"] = {"before": pids, "after": after}
            if log_path is not None:
                lines, _ = _new_log_lines(log_path, log_offset)
                if lines:
                    run["log"] = lines
        for key in (
            "upstream_cpu_us_per_req",
            "redis_cpu_us_per_req",
            "wrk_cpu_us_per_req",
            "cpu_us_per_req",
            "cpu_user_us_per_req",
            "cpu_sys_us_per_req",
        ):
            if run.get(key) is not None:
                run[key] = round(run[key], 2)
        return run

    def progress(self, run: dict) -> None:
        self.done_runs += 1
        lat = run["latency_us"]
        text = (
            f"[{self.done_runs:3d}/{self.total_runs}] {run['scenario']} {run['case']:<8} round {run['round']} "
            f"{run['system']:<8} {run['rps']:>10,.0f} req/s  p50 {lat['p50'] / 1000:6.2f} ms  "
            f"p99 {lat['p99'] / 1000:7.2f} ms"
        )
        if run.get("cpu_us_per_req") is not None:
            text += (
                f"  cpu {run['cpu_us_per_req']:7.1f} us/req ({run['cpu_util'] * 100:3.0f}% of a core)"
                f"  rss {run['rss_peak_kib'] / 1024:6.1f} MiB"
            )
        errors = sum(run["errors"].values())
        text += f"  cpu0 {run['harness_cpu_util'] * 100:3.0f}%  other {run['other_load_cores']:.2f} cores"
        text += f"  errors {errors}  non-2xx {run['non_2xx_3xx']}"
        if "redis_decisions" in run:
            text += f"  redis decisions {run['redis_decisions']} failed-open {run['redis_failures']}"
        if run.get("process_change"):
            text += "  PROCESS CHANGE"
        if run.get("alive") is False:
            text += "  DIED"
        _log(text)

    # -- one scenario --------------------------------------------------------------------------------

    def scenario(self, scenario: Scenario, certs: configs.Certs) -> None:
        assert self.up is not None
        sdir = self.tmp / scenario.id
        active: list[System] = []
        redis_error = ""
        try:
            if scenario.fleet_limit and "fsmfast" in self.opts.systems:
                try:
                    self.redis = fleet.start(sdir / "redis", self.cpus["harness"])
                    _log(f"{scenario.id} {scenario.name}: redis-server ready on port {self.redis.port}")
                except Exception as exc:  # fsmfast is then reported as failed to start, with this reason
                    redis_error = scrub(f"redis-server did not start: {exc}", self.tmp)
            for name in self.opts.systems:
                system = make(name, sdir, self.up, certs, self.cpus["proxy"])
                try:
                    reason = system.unsupported(scenario, sdir / name / "check")
                except Exception as exc:  # e.g. the compiler rejects the scenario's manifests
                    reason = scrub(f"configuration rejected: {exc.__class__.__name__}: {exc}", self.tmp)
                if reason is not None:
                    self.out.unsupported.append({"scenario": scenario.id, "system": name, "reason": reason})
                    _log(f"{scenario.id} {scenario.name}: {name}: n/a ({reason})")
                    self.total_runs -= self.opts.rounds * len(scenario.cases)
                    continue
                wdir = sdir / name
                wdir.mkdir(parents=True, exist_ok=True)
                t0 = time.monotonic()
                try:
                    if scenario.fleet_limit and name == "fsmfast":
                        if self.redis is None:
                            raise RuntimeError(redis_error)
                        system.fleet_args = fleet.fsmfast_args(self.redis)
                    system.start(scenario, wdir)
                    system.wait_ready(self.opts.start_timeout)
                    for case in scenario.cases:
                        problem = load.preflight(system.port, case, system.tls)
                        if problem is not None:
                            raise RuntimeError(f"pre-flight request failed: {problem}")
                except Exception as exc:
                    tail = scrub(system.proc.stderr_tail(), self.tmp) if system.proc is not None else ""
                    system.stop()
                    self.out.failures.append(
                        {"scenario": scenario.id, "system": name, "error": scrub(str(exc), self.tmp), "stderr": tail}
                    )
                    _log(f"{scenario.id} {scenario.name}: {name}: FAILED to start: {exc}\n{tail}")
                    self.total_runs -= self.opts.rounds * len(scenario.cases)
                    continue
                took = time.monotonic() - t0
                idle = ""
                if system.proc is not None:  # "direct" runs no proxy
                    idle_kib = procs.worker_rss_kib(system.proc.pid)
                    self.out.idle.append({"scenario": scenario.id, "system": name, "worker_rss_kib": idle_kib})
                    idle = f", idle worker RSS {idle_kib / 1024:.1f} MiB"
                _log(f"{scenario.id} {scenario.name}: {name} ready on port {system.port} in {took:.1f}s{idle}")
                active.append(system)

            scripts = {case.name: load.write_script(sdir / f"{case.name}.lua", case) for case in scenario.cases}
            dead: set[str] = set()
            for rnd in range(1, self.opts.rounds + 1):
                for case in scenario.cases:
                    for system in active:
                        if system.name in dead:
                            self.total_runs -= 1
                            continue
                        try:
                            run = self.measure(system, scenario, case, rnd, scripts[case.name])
                        except Exception as exc:
                            tail = scrub(system.proc.stderr_tail(), self.tmp) if system.proc is not None else ""
                            self.out.failures.append(
                                {
                                    "scenario": scenario.id,
                                    "case": case.name,
                                    "system": system.name,
                                    "round": rnd,
                                    "error": scrub(f"{exc.__class__.__name__}: {exc}", self.tmp),
                                    "stderr": tail,
                                }
                            )
                            _log(f"{scenario.id} {case.name} round {rnd} {system.name}: run FAILED: {exc}")
                            self.total_runs -= 1
                            continue
                        self.out.runs.append(run)
                        self.progress(run)
                        if run.get("alive") is False:
                            dead.add(system.name)
                            self.out.failures.append(
                                {
                                    "scenario": scenario.id,
                                    "case": case.name,
                                    "system": system.name,
                                    "round": rnd,
                                    "error": "the system's root process exited during the run",
                                    "stderr": scrub(system.proc.stderr_tail(), self.tmp) if system.proc else "",
                                }
                            )
        finally:
            for system in active:
                # Anything the system logged over the whole scenario that looks like trouble.
                if system.proc is not None:
                    lines, _ = _new_log_lines(system.proc.stderr, 0, limit=20)
                    if lines:
                        self.out.logs.append({"scenario": scenario.id, "system": system.name, "lines": lines})
                system.stop()
            if self.redis is not None:
                self.redis.stop()
                self.redis = None

    # -- everything ----------------------------------------------------------------------------------

    def run(self) -> Outcome:
        scenarios = [SCENARIOS[s] for s in self.opts.scenarios]
        self.total_runs = sum(len(s.cases) for s in scenarios) * len(self.opts.systems) * self.opts.rounds
        certs = configs.make_certs(self.tmp / "certs")
        try:
            self.start_upstream(certs)
            for scenario in scenarios:
                _log(f"== {scenario.id} {scenario.name}: {scenario.summary}")
                self.scenario(scenario, certs)
        finally:
            if self.upstream is not None:
                self.upstream.stop()
        return self.out


def run(opts: Options) -> Outcome:
    needed = ["nginx", "wrk"] + (["haproxy"] if "haproxy" in opts.systems else [])
    needed += ["redis-server"] if fleet.needed(opts.scenarios, opts.systems) else []
    if opts.install:
        deps.ensure_debian(needed)
    wrk = deps.tool("wrk")
    for command in needed:
        deps.tool(command)
    layout = cpu_layout(opts.pin)
    if layout["harness"] is not None:
        # The harness (its sampler thread, stub_status polls) stays off the proxy's CPU.
        os.sched_setaffinity(0, {int(layout["harness"])})
    with tempfile.TemporaryDirectory(prefix="fsmfast-bench-") as tmp:
        # nginx workers run as an unprivileged user when started as root: they must reach the files below.
        os.chmod(tmp, 0o711)
        harness = Harness(opts, wrk, Path(tmp))
        return harness.run()
