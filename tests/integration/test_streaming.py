"""Large bodies stream through the gateway without being held in memory.

100 MiB each way, hashed on both ends as the bytes pass (neither the test nor the upstream
ever holds a whole body), while the worker's resident set size is sampled from
/proc/<pid>/status. A proxy that buffers a body shows it as RSS growth close to the body
size; one that streams with back-pressure stays within a few socket buffers.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import manifests
from tests.support.procs import Gateway, free_port
from tests.support.upstreams import (
    Client,
    Upstream,
    build_request,
    pattern_bytes,
    pattern_chunks,
    pattern_sha256,
)

MiB = 1024 * 1024
BIG = 100 * MiB
# Generous: the worker's buffers are a few hundred KiB; the bodies are 100 MiB.
RSS_GROWTH_LIMIT = 64 * MiB
# The slow reader's body is 50 MiB, so this bound must sit well below it to mean anything.
SLOW_RSS_GROWTH_LIMIT = 24 * MiB


def rss(pid: int) -> int:
    """VmRSS of ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread; ``peak`` is the maximum seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.start_rss = rss(pid)
        self.peak = self.start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.peak = max(self.peak, rss(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, rss(self.pid))
            except OSError:
                return

    @property
    def growth(self) -> int:
        return self.peak - self.start_rss


@dataclass
class Env:
    gw: Gateway
    port: int
    up: Upstream

    @property
    def worker(self) -> int:
        pids = self.gw.worker_pids()
        assert len(pids) == 1, pids
        return pids[0]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("streaming")
    with ExitStack() as stack:
        up = stack.enter_context(Upstream("big"))
        port = free_port()
        config = tmp / "gw.yaml"
        config.write_text(
            manifests.documents(
                manifests.founding_gateway(port),
                manifests.founding_route(port, hostname="big.test", service="svc-big", service_port=80),
                manifests.service("svc-big", 80, up.port),
                manifests.endpoint_slice("svc-big", up.port),
            )
        )
        # The access log is irrelevant here; keep stdout quiet.
        gw = stack.enter_context(Gateway(config, [port], args=("--no-access-log",)))
        e = Env(gw, port, up)
        warm_up(e)
        yield e


def warm_up(env: Env) -> None:
    """Bring the worker to steady state (imports, pools, buffers) before any RSS baseline."""
    with Client(env.port) as c:
        for _ in range(3):
            resp = c.request("GET", "/bytes/1048576", [("Host", "big.test")])
            assert resp.status == 200 and len(resp.body) == MiB
            resp = c.request("POST", "/upload", [("Host", "big.test"), ("Content-Length", str(MiB))], b"x" * MiB)
            assert resp.status == 200


@pytest.mark.timeout(180)
def test_upload_100mib(env: Env) -> None:
    sent = hashlib.sha256()
    with Client(env.port, timeout=60) as c, RssSampler(env.worker) as sampler:
        c.send(build_request("POST", "/upload", [("Host", "big.test"), ("Content-Length", str(BIG))]))
        for piece in pattern_chunks(BIG):
            sent.update(piece)
            c.send(piece)
        resp = c.read_response()
    assert resp.status == 200, resp.text
    assert resp.json()["length"] == BIG
    assert resp.json()["sha256"] == sent.hexdigest()
    assert sampler.growth < RSS_GROWTH_LIMIT, f"worker RSS grew by {sampler.growth / MiB:.1f} MiB"


@pytest.mark.timeout(180)
def test_chunked_upload_100mib(env: Env) -> None:
    sent = hashlib.sha256()
    headers = [("Host", "big.test"), ("Transfer-Encoding", "chunked")]
    with Client(env.port, timeout=60) as c, RssSampler(env.worker) as sampler:
        c.send(build_request("POST", "/upload", headers))
        for piece in pattern_chunks(BIG):
            sent.update(piece)
            c.send(b"%x\r\n%b\r\n" % (len(piece), piece))
        c.send(b"0\r\n\r\n")
        resp = c.read_response()
    assert resp.status == 200, resp.text
    assert resp.json() == {"upstream": "big", "length": BIG, "sha256": sent.hexdigest()}
    assert sampler.growth < RSS_GROWTH_LIMIT, f"worker RSS grew by {sampler.growth / MiB:.1f} MiB"


@pytest.mark.timeout(180)
def test_download_100mib(env: Env) -> None:
    got = hashlib.sha256()
    n = 0
    with Client(env.port, timeout=60) as c, RssSampler(env.worker) as sampler:
        c.send(build_request("GET", f"/bytes/{BIG}", [("Host", "big.test")]))
        resp = c.read_head()
        assert resp.status == 200
        for piece in c.iter_body(resp):
            got.update(piece)
            n += len(piece)
        assert resp.complete
    assert n == BIG
    assert got.hexdigest() == pattern_sha256(BIG)
    assert sampler.growth < RSS_GROWTH_LIMIT, f"worker RSS grew by {sampler.growth / MiB:.1f} MiB"


@pytest.mark.timeout(180)
def test_slow_reader_is_back_pressured(env: Env) -> None:
    size = 50 * MiB
    got = hashlib.sha256()
    n = 0
    sent_before = env.up.bytes_sent
    # A small receive buffer so the kernel can't absorb the body for us.
    with Client(env.port, timeout=60, rcvbuf=64 * 1024) as c, RssSampler(env.worker) as sampler:
        c.send(build_request("GET", f"/bytes/{size}", [("Host", "big.test")]))
        resp = c.read_head()
        assert resp.status == 200
        c.recv_size = 16 * 1024
        body = c.iter_body(resp)
        slow_until = time.monotonic() + 4.0
        for piece in body:
            got.update(piece)
            n += len(piece)
            if time.monotonic() < slow_until:
                time.sleep(0.02)
            else:
                break
        slow_growth = sampler.growth
        upstream_sent = env.up.bytes_sent - sent_before
        # Now drain at full speed and check every byte arrived.
        c.recv_size = 256 * 1024
        for piece in body:
            got.update(piece)
            n += len(piece)
        assert resp.complete
    assert n == size
    assert got.hexdigest() == pattern_sha256(size)
    assert slow_growth < SLOW_RSS_GROWTH_LIMIT, (
        f"worker RSS grew by {slow_growth / MiB:.1f} MiB while the client read slowly "
        f"(upstream had sent {upstream_sent / MiB:.1f} MiB)"
    )


@pytest.mark.timeout(60)
def test_client_abort_mid_download(env: Env) -> None:
    """A client that hangs up mid-body costs nothing lasting: the same worker keeps serving."""
    worker = env.worker
    with RssSampler(worker) as sampler:
        for _ in range(3):
            with Client(env.port, timeout=30) as c:
                c.send(build_request("GET", f"/bytes/{BIG}", [("Host", "big.test")]))
                resp = c.read_head()
                assert resp.status == 200
                read = 0
                for piece in c.iter_body(resp):
                    read += len(piece)
                    if read > 5 * MiB:
                        break
        # The upstream connection of an aborted response can't be reused: it must not poison the pool.
        with Client(env.port) as c:
            for _ in range(3):
                resp = c.request("GET", "/bytes/100000", [("Host", "big.test")])
                assert resp.status == 200 and resp.body == pattern_bytes(100000)
    assert env.gw.worker_pids() == [worker], "the worker died or was replaced"
    assert sampler.growth < RSS_GROWTH_LIMIT, f"worker RSS grew by {sampler.growth / MiB:.1f} MiB"
