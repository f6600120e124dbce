"""Soak: a bounded, mixed load for a long time, watching the workers' memory.

    python -m bench.soak                        # 10 minutes, 150 req/s, 2 workers
    python -m bench.soak --duration 120 --json soak.json
    python -m bench.soak --client-tls           # also terminate TLS at the listener

Not a timed test: it answers "does a worker's RSS grow while it serves?", which takes minutes
and a quiet machine, so it is run by hand and its figure recorded in ``bench/README.md``.

The gateway (``fsmfast run``, real processes) serves two hosts: ``plain.soak`` in front of the
test suite's threaded upstream (bodies of 0 B to 1 MiB, chunked responses, uploads) and
``tls.soak`` in front of httpbin on gunicorn over TLS (the founding blog's certificates and
UpstreamTLSPolicy). ``--clients`` threads share a token bucket of ``--rate`` requests per
second, pick a request kind at random (weighted toward small ones), keep connections alive and
open a new one every ``--churn`` requests. Every response is checked (status, length).

Memory: the summed VmRSS of the workers is sampled every ``--sample`` seconds. The first
``--warmup`` seconds are excluded (pools fill, allocators settle); the report gives RSS after
warm-up, at the end and at its peak, and the least-squares slope over the rest, in KiB per
minute. A worker respawn (pids change) is reported as a failure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.procs import rss_kib
from fsmfast.demo.pki import blog_pki
from fsmfast.demo.procs import Gateway, children_of, connection, free_port
from fsmfast.demo.upstream import Gunicorn
from tests.support import manifests as m
from tests.support.upstreams import Upstream

# (weight, host, method, target, upload bytes, expected body length or None)
KINDS = [
    (30, "plain.soak", "GET", "/echo", 0, None),
    (20, "plain.soak", "GET", "/bytes/1024", 0, 1024),
    (10, "plain.soak", "GET", "/bytes/65536", 0, 65536),
    (2, "plain.soak", "GET", "/bytes/1048576", 0, 1048576),
    (8, "plain.soak", "GET", "/chunked/20000", 0, 20000),
    (6, "plain.soak", "POST", "/upload", 100_000, None),
    (14, "tls.soak", "GET", "/get", 0, None),
    (6, "tls.soak", "GET", "/bytes/16384", 0, 16384),
    (4, "tls.soak", "POST", "/post", 4096, None),
]


@dataclass
class Report:
    duration_s: float
    rate: int
    workers: int
    client_tls: bool
    requests: int = 0
    failures: int = 0
    failure_samples: list[str] = field(default_factory=list)
    respawned: bool = False
    rss_after_warmup_kib: int = 0
    rss_end_kib: int = 0
    rss_peak_kib: int = 0
    slope_kib_per_min: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)


class Bucket:
    """A token bucket shared by the client threads: at most ``rate`` requests per second."""

    def __init__(self, rate: int) -> None:
        self.interval = 1.0 / rate
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> None:
        with self.lock:
            now = time.monotonic()
            self.next = max(self.next + self.interval, now)
            wait = self.next - now
        if wait > 0:
            time.sleep(wait)


def _config(dir: Path, port: int, plain: int, tls: int, client_tls: bool) -> Path:
    pki = blog_pki(dir / "pki")
    listener: dict = {"name": "web", "protocol": "HTTP", "port": port}
    docs = []
    if client_tls:
        listener = {
            "name": "web",
            "protocol": "HTTPS",
            "port": port,
            "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "listener-cert"}]},
        }
        docs.append(m.tls_secret("listener-cert", pki.server_cert, pki.server_key))
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": m.NAMESPACE},
        "spec": {"gatewayClassName": "fsmfast", "listeners": [listener]},
    }
    docs.append(m.to_yaml(gateway))
    docs += [m.service("plain", 80, plain), m.endpoint_slice("plain", plain)]
    docs += [m.service("httpbin", 8443, tls), m.endpoint_slice("httpbin", tls)]
    docs += [m.ca_secret("https-cert", pki.ca_cert), m.upstream_tls_policy(secret="https-cert", port=8443)]
    for host, service, svc_port in (("plain.soak", "plain", 80), ("tls.soak", "httpbin", 8443)):
        route = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": host.split(".")[0], "namespace": m.NAMESPACE},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "hostnames": [host],
                "rules": [{"backendRefs": [{"name": service, "port": svc_port}]}],
            },
        }
        docs.append(m.to_yaml(route))
    path = dir / "gateway.yaml"
    path.write_text(m.documents(*docs))
    return path


def _client(port: int, client_tls: bool) -> http.client.HTTPConnection:
    return connection(port, client_tls, timeout=30)


def _load(port: int, args: argparse.Namespace, bucket: Bucket, stop: threading.Event, report: Report) -> None:
    rng = random.Random()
    kinds = [k for k in KINDS if args.only is None or k[1].startswith(args.only)]
    weights = [k[0] for k in kinds]
    conn = _client(port, args.client_tls)
    served = 0
    lock = threading.Lock()
    while not stop.is_set():
        bucket.take()
        _, host, method, target, upload, length = rng.choices(kinds, weights)[0]
        problem = None
        try:
            body = b"u" * upload if upload else None
            conn.request(method, target, body=body, headers={"Host": host})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                problem = f"{host}{target}: status {resp.status} {data[:120]!r}"
            elif length is not None and len(data) != length:
                problem = f"{host}{target}: {len(data)} bytes, want {length}"
        except (OSError, http.client.HTTPException) as e:
            problem = f"{host}{target}: {type(e).__name__}: {e}"
        with lock:
            report.requests += 1
            if problem:
                report.failures += 1
                if len(report.failure_samples) < 10:
                    report.failure_samples.append(problem)
        served += 1
        if problem or served % args.churn == 0:
            conn.close()
            conn = _client(port, args.client_tls)
    conn.close()


def _slope(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS (KiB) over time, in KiB per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mr = sum(r for _, r in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return 60 * sum((t - mt) * (r - mr) for t, r in points) / den if den else 0.0


def run(args: argparse.Namespace) -> Report:
    report = Report(duration_s=args.duration, rate=args.rate, workers=args.workers, client_tls=args.client_tls)
    with tempfile.TemporaryDirectory(prefix="fsmfast-soak-") as tmp, Upstream("soak") as plain:
        pki = blog_pki(Path(tmp) / "pki")
        with Gunicorn(pki.server_cert, pki.server_key, workers=args.upstream_workers) as httpbin:
            port = free_port()
            config = _config(Path(tmp), port, plain.port, httpbin.port, args.client_tls)
            with Gateway(config, [port], workers=args.workers, args=("--no-access-log",)) as gw:
                time.sleep(0.5)
                pids = children_of(gw.pid)
                stop = threading.Event()
                bucket = Bucket(args.rate)
                threads = [
                    threading.Thread(target=_load, args=(port, args, bucket, stop, report), daemon=True)
                    for _ in range(args.clients)
                ]
                start = time.monotonic()
                for t in threads:
                    t.start()
                try:
                    while (elapsed := time.monotonic() - start) < args.duration:
                        time.sleep(min(args.sample, args.duration - elapsed))
                        now = children_of(gw.pid)
                        if sorted(now) != sorted(pids):
                            report.respawned = True
                            pids = now
                        sample = (round(time.monotonic() - start, 1), rss_kib(pids))
                        report.samples.append(sample)
                        if not args.quiet:
                            print(f"{sample[0]:7.1f}s  rss {sample[1] / 1024:7.1f} MiB  requests {report.requests}"
                                  f"  failures {report.failures}", file=sys.stderr, flush=True)  # fmt: skip
                finally:
                    stop.set()
                    for t in threads:
                        t.join(60)
    steady = [(t, r) for t, r in report.samples if t >= args.warmup] or report.samples
    if steady:
        report.rss_after_warmup_kib = steady[0][1]
        report.rss_end_kib = steady[-1][1]
        report.rss_peak_kib = max(r for _, r in steady)
        report.slope_kib_per_min = round(_slope(steady), 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (default: %(default)g)")
    parser.add_argument("--rate", type=int, default=150, help="requests per second, all clients (default: %(default)d)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (default: %(default)d)")
    parser.add_argument("--workers", type=int, default=2, help="gateway workers (default: %(default)d)")
    parser.add_argument("--upstream-workers", type=int, default=4, help="gunicorn workers (default: %(default)d)")
    parser.add_argument("--churn", type=int, default=50, help="requests per client connection (default: %(default)d)")
    parser.add_argument("--warmup", type=float, default=60, help="seconds left out of the trend (default: %(default)g)")
    parser.add_argument("--sample", type=float, default=5, help="seconds between RSS samples (default: %(default)g)")
    parser.add_argument("--client-tls", action="store_true", help="an HTTPS listener (TLS terminated by fsmfast)")
    parser.add_argument("--only", choices=["plain", "tls"], help="one upstream only, to tell which one grows")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    args.warmup = min(args.warmup, args.duration / 3)
    report = run(args)
    summary = {k: v for k, v in asdict(report).items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    ok = report.failures == 0 and not report.respawned
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
