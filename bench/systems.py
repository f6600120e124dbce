"""The systems measured: fsmfast, nginx, HAProxy (proxies), ``floor`` (a bare uvloop byte relay: the least a
proxy built like fsmfast can spend, see bench/floor.py) and ``direct`` (wrk straight to the upstream).

Each one is started per scenario from that scenario's config and stopped after its rounds. A system that
cannot serve a scenario says why (:meth:`System.unsupported`), and the report shows that reason instead of
numbers.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from bench import configs, deps, fleet
from bench.configs import Certs, UpstreamPorts
from bench.procs import Proc, free_port, wait_port
from bench.scenarios import Scenario
from fsmfast.demo.procs import child_env

PROXIES = ("fsmfast", "nginx", "haproxy")
ALL_SYSTEMS = (*PROXIES, "floor", "direct")


class System:
    name = ""

    def __init__(self, workdir: Path, up: UpstreamPorts, certs: Certs, cpus: str | None) -> None:
        self.workdir = workdir
        self.up = up
        self.certs = certs
        self.cpus = cpus
        self.proc: Proc | None = None
        self.port = 0
        self.tls = False
        self.wrapper: list[str] = []  # prefixed to the command line (bench/instructions.py: valgrind)
        self.fleet_args: list[str] = []  # S9: fsmfast's --ratelimit-redis flags (bench/fleet.py)

    def unsupported(self, scenario: Scenario, dir: Path) -> str | None:
        return None

    def start(self, scenario: Scenario, dir: Path) -> None:
        raise NotImplementedError

    def wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        try:
            wait_port(self.port, timeout, self.proc.proc)
        except (RuntimeError, TimeoutError) as exc:
            err = self.proc.stderr_tail()
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc}\n{err}") from exc

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    @property
    def root_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def metrics_url(self) -> str | None:
        """Where the benchmark scrapes metrics while it measures (bench.scrape), if the system has them."""
        return None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


class Fsmfast(System):
    name = "fsmfast"

    def unsupported(self, scenario: Scenario, dir: Path) -> str | None:
        """Compile the scenario's manifests the way ``fsmfast check`` does: a listener the compiler drops (e.g.
        HTTPS, not implemented yet) makes the scenario n/a, with the compiler's own warning as the reason. S9
        without redis-py would measure the fail-open path, not Redis's decisions: n/a too."""
        from fsmfast.compile import build

        if scenario.fleet_limit and (missing := fleet.client_missing()) is not None:
            return missing

        port = free_port()
        configs.write_fsmfast(dir, scenario, port, self.up, self.certs)
        result = build(str(dir))
        if port in {listener.port for listener in result.snapshot.listeners}:
            return None
        # Warnings read "file#doc Kind ns/name: field: message": keep "field: message" (no paths in reports).
        found = [re.search(r"spec\.listeners\S*: .*", w) for w in result.warnings]
        why = next((f"fsmfast check: {m.group(0)}" for m in found if m), "listener not served")
        if scenario.listener_tls:
            return f"HTTPS listeners not implemented yet; {why}"
        return why

    def start(self, scenario: Scenario, dir: Path) -> None:
        self.port = free_port()
        self.tls = scenario.listener_tls
        configs.write_fsmfast(dir, scenario, self.port, self.up, self.certs)
        env = child_env()
        env.pop("FSMFAST_WORKERS", None)
        argv = [sys.executable, "-m", "fsmfast", "run", "-c", str(dir), "--workers", "1", "--no-access-log"]
        # The admin listener on, as in production: its /metrics is scraped while the load runs.
        self.admin_port = free_port()
        argv += ["--listen-address", "127.0.0.1", "--admin-address", f"127.0.0.1:{self.admin_port}"]
        if scenario.fleet_limit:
            if not self.fleet_args:
                raise RuntimeError(f"{scenario.id}: fsmfast's fleet-wide limit needs the harness's Redis")
            argv += self.fleet_args
        self.proc = Proc("fsmfast", argv, dir, self.cpus, env=env, cwd=dir, wrapper=self.wrapper)

    @property
    def metrics_url(self) -> str | None:
        return f"http://127.0.0.1:{self.admin_port}/metrics" if self.proc is not None else None


class Nginx(System):
    name = "nginx"

    def start(self, scenario: Scenario, dir: Path) -> None:
        self.port = free_port()
        self.tls = scenario.listener_tls
        conf = configs.write_nginx(dir, scenario, self.port, self.up, self.certs)
        argv = [deps.tool("nginx"), "-p", str(dir), "-c", str(conf), "-e", str(dir / "error.log")]
        self.proc = Proc("nginx", argv, dir, self.cpus, wrapper=self.wrapper)


class Haproxy(System):
    name = "haproxy"

    def start(self, scenario: Scenario, dir: Path) -> None:
        self.port = free_port()
        self.tls = scenario.listener_tls
        conf = configs.write_haproxy(dir, scenario, self.port, self.up, self.certs)
        # -db: foreground, no daemon; one process, nbthread 1 in the config.
        argv = [deps.tool("haproxy"), "-db", "-f", str(conf)]
        self.proc = Proc("haproxy", argv, dir, self.cpus, wrapper=self.wrapper)


class Floor(System):
    name = "floor"

    def unsupported(self, scenario: Scenario, dir: Path) -> str | None:
        if scenario.id != "S1":
            return "the floor relay does no HTTP, TLS or routing: it compares like with like in S1 only"
        return None

    def start(self, scenario: Scenario, dir: Path) -> None:
        self.port = free_port()
        env = child_env()
        argv = [sys.executable, "-m", "bench.floor", str(self.port), str(self.up.http)]
        self.proc = Proc("floor", argv, dir, self.cpus, env=env, cwd=dir, wrapper=self.wrapper)


class Direct(System):
    """wrk to the upstream itself, over the protocol the proxies use to reach it (TLS in S2): the ceiling."""

    name = "direct"

    def start(self, scenario: Scenario, dir: Path) -> None:
        self.tls = scenario.upstream_tls
        self.port = self.up.https if scenario.upstream_tls else self.up.http

    def wait_ready(self, timeout: float) -> None:
        wait_port(self.port, timeout)


def make(name: str, workdir: Path, up: UpstreamPorts, certs: Certs, cpus: str | None) -> System:
    cls = {"fsmfast": Fsmfast, "nginx": Nginx, "haproxy": Haproxy, "floor": Floor, "direct": Direct}[name]
    return cls(workdir, up, certs, cpus)
