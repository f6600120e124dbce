"""A real Prometheus (Debian's ``prometheus`` package) on loopback, scraping what a test tells it to.

    with Prometheus(targets=[f"127.0.0.1:{gw.admin_port}"], rule_files=[RULES]) as prom:
        prom.wait_for_target_up()
        prom.vector('sum by (code) (fsmfast_http_requests_total)')

The test writes the scrape config (one job, ``fsmfast`` by default, 1 s interval), Prometheus gets an ephemeral
port, a temporary TSDB directory and its own process group, and :meth:`start` returns once ``/-/ready``
answers 200. Queries go through the HTTP API as a dashboard's would (``/api/v1/query``). ``promtool`` (same
package) is run by :func:`promtool`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fsmfast.demo import SetupError
from fsmfast.demo.procs import ChildProcess, free_port, stop_group, wait_for

# Debian installs both in /usr/bin; PATH may be narrower in a CI shell.
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

Labels = frozenset[tuple[str, str]]


class QueryError(AssertionError):
    """Prometheus answered a query with ``status: error`` (a parse or evaluation error)."""


def promtool(*args: str, stdin: str | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS`` (``stdin`` as its input) with its output captured; the caller checks the return code."""
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False)


class Prometheus(ChildProcess):
    """``prometheus`` scraping ``targets`` every ``scrape_interval`` under job ``job``, with ``rule_files``
    evaluated at the same interval. :attr:`port` is its HTTP port on 127.0.0.1."""

    def __init__(
        self,
        targets: Sequence[str],
        rule_files: Sequence[Path] = (),
        job: str = "fsmfast",
        scrape_interval: str = "1s",
        start_timeout: float = 20.0,
    ) -> None:
        self.targets = list(targets)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.job = job
        self.scrape_interval = scrape_interval
        self.start_timeout = start_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.log_path = Path("/dev/null")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        """The prometheus.yml this instance runs with."""
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": self.job, "scrape_timeout": self.scrape_interval,
                 "static_configs": [{"targets": self.targets}]}
            ],
        }  # fmt: skip

    def start(self) -> Prometheus:
        self._tmp = tempfile.TemporaryDirectory(prefix="fsmfast-prometheus-")
        tmp = Path(self._tmp.name)
        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config()))
        self.log_path = tmp / "prometheus.log"
        self.port = free_port()
        cmd = [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_for(self._ready, self.start_timeout, f"prometheus /-/ready on port {self.port}", interval=0.1)
        except (TimeoutError, SetupError) as exc:
            self.close()
            raise SetupError(f"prometheus did not start: {exc}\n--- prometheus log ---\n{self.log_text()}") from exc
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise SetupError(f"prometheus exited with {self.proc.returncode}:\n{self.log_text()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def logs(self) -> dict[str, Path]:
        return {"prometheus log": self.log_path}

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        stop_group(self.proc, grace=5.0)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- HTTP API --------------------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET ``/api/v1/PATH?params`` and return the decoded JSON, whatever its status (an error
        answer comes with HTTP 400 or 422, which is read rather than raised)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        answer: dict[str, Any] = json.loads(body)
        return answer

    def query(self, expr: str) -> dict[str, Any]:
        """The ``data`` of an instant query at now; QueryError when Prometheus refuses or fails it."""
        answer = self.api("query", query=expr)
        if answer.get("status") != "success":
            raise QueryError(f"{expr!r}: {answer.get('errorType')}: {answer.get('error')}")
        data: dict[str, Any] = answer["data"]
        return data

    def vector(self, expr: str) -> dict[Labels, float]:
        """An instant query whose result is a vector, as ``{labels: value}``."""
        data = self.query(expr)
        if data["resultType"] != "vector":
            raise QueryError(f"{expr!r} gave a {data['resultType']}, not a vector")
        return {frozenset(r["metric"].items()): float(r["value"][1]) for r in data["result"]}

    def wait_for_target_up(self, timeout: float = 15.0) -> None:
        """Wait until every target has been scraped successfully at least once (``up == 1``)."""

        def all_up() -> bool:
            up = self.vector(f'up{{job="{self.job}"}}')
            return len(up) == len(self.targets) and all(v == 1.0 for v in up.values())

        try:
            wait_for(all_up, timeout, "every scrape target up", interval=0.2)
        except TimeoutError as exc:
            targets = self.api("targets")
            raise TimeoutError(f"{exc}; targets: {json.dumps(targets)[:2000]}") from None

    def wait_for_value(self, expr: str, expected: dict[Labels, float], timeout: float = 10.0) -> None:
        """Wait until ``expr`` returns exactly ``expected``; on timeout say what it returned last."""
        last: list[dict[Labels, float]] = [{}]

        def equal() -> bool:
            last[0] = self.vector(expr)
            return last[0] == expected

        start = time.monotonic()
        try:
            wait_for(equal, timeout, f"{expr} == {expected}", interval=0.2)
        except TimeoutError:
            raise AssertionError(
                f"{expr}: after {time.monotonic() - start:.1f}s still {_show(last[0])}, expected {_show(expected)}"
            ) from None


# -- the text exposition format (0.0.4), just enough to compare scrapes -----------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass
class Exposition:
    """A parsed scrape: ``types`` by family name (``# TYPE``), ``samples`` by (sample name, labels)."""

    types: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def names(self) -> set[str]:
        """Every metric name a query could select: sample names, and the names of declared families even
        without a sample (with a histogram's ``_bucket``, ``_sum`` and ``_count``)."""
        found = {name for name, _ in self.samples}
        for family, kind in self.types.items():
            found.add(family)
            if kind == "histogram":
                found.update(f"{family}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        return found

    def family_of(self, sample_name: str) -> str | None:
        """The declared family a sample belongs to (``x_bucket`` belongs to histogram ``x``; ``x_total`` to a
        counter declared as ``x``, the OpenMetrics way)."""
        if sample_name in self.types:
            return sample_name
        for suffix, kind in (("_bucket", "histogram"), ("_sum", "histogram"), ("_count", "histogram"),
                             ("_total", "counter")):  # fmt: skip
            base = sample_name.removesuffix(suffix)
            if base != sample_name and self.types.get(base) == kind:
                return base
        return None

    def monotonic(self) -> dict[tuple[str, Labels], float]:
        """The samples that may never decrease: counters and histograms' buckets, sums and counts."""
        return {
            key: value
            for key, value in self.samples.items()
            if (family := self.family_of(key[0])) is not None and self.types[family] in ("counter", "histogram")
        }


def parse_text(text: str) -> Exposition:
    """Parse the Prometheus text format 0.0.4; ValueError on a line that is not a comment or a sample."""
    out = Exposition()
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[1] == "TYPE":
                out.types[parts[2]] = parts[3].strip()
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ValueError(f"not a sample line: {line!r}")
        name, labels_text, value = match.groups()
        labels = []
        pos = 0
        labels_text = labels_text or ""
        while pos < len(labels_text):
            lab = _LABEL.match(labels_text, pos)
            if lab is None:
                raise ValueError(f"bad labels in {line!r}")
            raw = lab.group(2)
            labels.append((lab.group(1), re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], raw)))
            pos = lab.end()
        out.samples[(name, frozenset(labels))] = float(value)
    return out


def _show(vector: dict[Labels, float]) -> str:
    return "{" + ", ".join(f"{dict(sorted(k))}: {v:g}" for k, v in sorted(vector.items(), key=str)) + "}"
