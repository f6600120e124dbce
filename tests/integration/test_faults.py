"""Faults, with real processes that the tests kill: upstreams that die, lie or stall, TLS that
must not verify, and gateway workers killed, reloaded and stopped under load.

Upstream faults use ``tests.support.fault_server`` processes behind one gateway (module
fixture ``faults``, short timeouts); every fault must give the client the right answer (502,
504, or an aborted connection once the response has begun, so a truncated body never passes
for a whole one) and leave a reason code in the access log. Process faults use a two-worker
gateway in front of the in-process ``Upstream``.
"""

from __future__ import annotations

import datetime
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import manifests
from tests.support.procs import Gateway, child_env, free_port, wait_for
from tests.support.upstreams import Client, Upstream, build_request

NS = manifests.NAMESPACE


# -- certificates (cryptography: expired and mismatched ones are what the tests need) -------------


def _certs(dir: Path) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn: str) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - day)
            .not_valid_after(now + 30 * day)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cert, key

    out: dict[str, Path] = {}

    def leaf(label: str, san: str, issuer: tuple[Any, Any], start: datetime.datetime, end: datetime.datetime) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(san))
            .issuer_name(issuer[0].subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
            .sign(issuer[1], hashes.SHA256())
        )
        (dir / f"{label}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (dir / f"{label}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        out[label] = dir / label

    trusted = ca("fsmfast test CA")
    other = ca("some other CA")
    (dir / "ca.crt").write_bytes(trusted[0].public_bytes(serialization.Encoding.PEM))
    out["ca"] = dir / "ca.crt"
    leaf("good", "good.test", trusted, now - day, now + 10 * day)
    leaf("expired", "expired.test", trusted, now - 10 * day, now - day)
    leaf("wronghost", "other.test", trusted, now - day, now + 10 * day)
    leaf("wrongca", "wrongca.test", other, now - day, now + 10 * day)
    return out


# -- fault-server processes ------------------------------------------------------------------------


class FaultServer:
    """``python -m tests.support.fault_server`` as a child process the test may kill and restart."""

    def __init__(self, dir: Path, label: str, cert: Path | None = None) -> None:
        self.dir = dir
        self.label = label
        self.cert = cert
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = dir / f"{label}.log"

    def start(self) -> FaultServer:
        port_file = self.dir / f"{self.label}.port"
        port_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "tests.support.fault_server", str(port_file), "--port", str(self.port)]
        if self.cert is not None:
            cmd += ["--certfile", f"{self.cert}.crt", "--keyfile", f"{self.cert}.key"]
        root = str(Path(__file__).resolve().parents[2])
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=root, env=child_env(),
                start_new_session=True,
            )  # fmt: skip
        wait_for(port_file.exists, 15, f"fault server {self.label} to listen")
        self.port = int(port_file.read_text())
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def saw(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")


@dataclass
class Faults:
    gw: Gateway
    port: int
    detailed_port: int  # the same routes on a Gateway annotated fsmfast.io/detailed-errors
    servers: dict[str, FaultServer]
    hold: list[socket.socket] = field(default_factory=list)


def _doc(d: dict[str, Any]) -> str:
    return yaml.safe_dump(d, sort_keys=False)


def _gateway(port: int, name: str = "gw", annotations: dict[str, str] | None = None) -> str:
    return _doc(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": NS, **({"annotations": annotations} if annotations else {})},
            "spec": {"gatewayClassName": "fsmfast", "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]},
        }
    )


def _route(host: str, service: str) -> str:
    return _doc(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": host.split(".")[0], "namespace": NS},
            "spec": {
                "parentRefs": [{"name": "gw"}, {"name": "gw-detailed"}],
                "hostnames": [host],
                "rules": [{"backendRefs": [{"name": service, "port": 80}]}],
            },
        }
    )


def _backend(service: str, port: int) -> list[str]:
    return [manifests.service(service, 80, port), manifests.endpoint_slice(service, port)]


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    tmp = tmp_path_factory.mktemp("faults")
    certs = _certs(tmp)
    servers = {"plain": FaultServer(tmp, "plain")}
    for label in ("good", "expired", "wronghost", "wrongca"):
        servers[label] = FaultServer(tmp, label, certs[label])
    with ExitStack() as stack:
        for server in servers.values():
            server.start()
            stack.callback(server.kill)
        # A listener whose backlog is full: a connect to it hangs (SYNs dropped), like a black hole.
        blackhole = socket.socket()
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        stack.callback(blackhole.close)
        hold = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(blackhole.getsockname())
            except BlockingIOError:
                pass
            hold.append(s)
            stack.callback(s.close)
        port, detailed_port = free_port(), free_port()
        docs = [_gateway(port), manifests.ca_configmap("test-ca", certs["ca"])]
        docs.append(_gateway(detailed_port, "gw-detailed", {"fsmfast.io/detailed-errors": "true"}))
        docs += _backend("svc-plain", servers["plain"].port)
        docs += _backend("svc-refused", free_port())
        docs += _backend("svc-blackhole", blackhole.getsockname()[1])
        for label in ("good", "expired", "wronghost", "wrongca"):
            docs += _backend(f"svc-{label}", servers[label].port)
            docs.append(
                manifests.backend_tls_policy(
                    f"{label}.test", ca_configmap="test-ca", service=f"svc-{label}", name=f"tls-{label}"
                )
            )
        for label in ("plain", "refused", "blackhole", "good", "expired", "wronghost", "wrongca"):
            docs.append(_route(f"{label}.test", f"svc-{label}"))
        config = tmp / "gw.yaml"
        config.write_text(manifests.documents(*docs))
        args = ("--response-timeout", "2", "--connect-timeout", "1")
        gw = stack.enter_context(Gateway(config, [port, detailed_port], args=args))
        yield Faults(gw, port, detailed_port, servers, hold)


def request(port: int, host: str, target: str, method: str = "GET", body: bytes = b"") -> tuple[int, bytes]:
    headers = [("Host", host)] + ([("Content-Length", str(len(body)))] if body or method == "POST" else [])
    with Client(port, timeout=15) as c:
        resp = c.request(method, target, headers, body)
        return resp.status, resp.body


def logged(gw: Gateway, path: str, timeout: float = 5.0) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((e for e in gw.access_log() if e.get("path") == path), None)

    return wait_for(find, timeout, f"an access-log entry for {path}")


# -- upstream faults --------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_connect_refused_is_502(faults: Faults) -> None:
    path = f"/refused-{uuid.uuid4().hex[:6]}"
    status, body = request(faults.port, "refused.test", path)
    assert status == 502, body
    assert b"refused" in body
    assert logged(faults.gw, path)["reason"] == "upstream_connect_refused"


@pytest.mark.timeout(30)
def test_connect_timeout_is_504(faults: Faults) -> None:
    path = f"/blackhole-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    status, body = request(faults.port, "blackhole.test", path)
    assert status == 504, body
    assert time.monotonic() - t0 < 5
    assert logged(faults.gw, path)["reason"] == "upstream_connect_timeout"


@pytest.mark.timeout(30)
def test_upstream_killed_before_responding_is_502(faults: Faults) -> None:
    server = faults.servers["plain"]
    path = f"/stall?{uuid.uuid4().hex[:6]}"
    result: list[tuple[int, bytes]] = []
    # POST: not idempotent, so no retry may hide the reset.
    client = threading.Thread(target=lambda: result.append(request(faults.port, "plain.test", path, "POST", b"x")))
    client.start()
    try:
        wait_for(lambda: server.saw(f"got POST {path}"), 10, "the request to reach the upstream")
        server.kill()
        client.join(10)
        assert result and result[0][0] == 502, result
        assert logged(faults.gw, path)["reason"] == "upstream_reset"
    finally:
        server.restart()


@pytest.mark.timeout(30)
def test_upstream_killed_mid_body_aborts_the_client(faults: Faults) -> None:
    server = faults.servers["plain"]
    n = 5_000_000
    path = f"/stream?n={n}&{uuid.uuid4().hex[:6]}"
    try:
        with Client(faults.port, timeout=15) as c:
            c.send(build_request("GET", path, [("Host", "plain.test")]))
            head = c.read_head()
            if head.status != 200:
                raise AssertionError(f"{head.status}: {b''.join(c.iter_body(head))!r}")
            assert head.header("Content-Length") == str(n)
            received = 0
            pieces = c.iter_body(head)
            for piece in pieces:
                received += len(piece)
                if received >= 200_000:
                    break
            server.kill()
            for piece in pieces:
                received += len(piece)
            # The connection ended before Content-Length bytes: the client cannot mistake the
            # truncated body for a complete one.
            assert not head.complete
            assert received < n
        assert logged(faults.gw, path)["reason"] == "upstream_reset_mid_body"
    finally:
        server.restart()


@pytest.mark.timeout(30)
def test_invalid_response_is_502(faults: Faults) -> None:
    status, body = request(faults.port, "plain.test", "/invalid")
    assert status == 502, body
    assert logged(faults.gw, "/invalid")["reason"] == "upstream_invalid_response"


@pytest.mark.timeout(30)
def test_slow_upstream_is_504(faults: Faults) -> None:
    path = f"/stall?{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    status, body = request(faults.port, "plain.test", path)
    assert status == 504, body
    assert 1.5 < time.monotonic() - t0 < 6
    assert logged(faults.gw, path)["reason"] == "upstream_timeout"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("path", "upstream_did"),
    [
        # The upstream's read timeout (1.5 s) ends the wait: it closes without an answer.
        ("/read-timeout?s=1.5", "read timeout after 5 of 10"),
        # The upstream waits forever: the gateway's response timeout (2 s) ends it.
        ("/stall", "got POST /stall"),
    ],
)
def test_client_stalling_its_body_is_408_not_an_upstream_failure(faults: Faults, path: str, upstream_did: str) -> None:
    """A client that sends half its body and stops: whoever gives up first, the upstream or the
    gateway's response timeout, the cause is the client's stall, so it gets 408 (its own body
    timeout), not a 502/504 blaming the upstream; the access log says body_timeout."""
    server = faults.servers["plain"]
    path = f"{path}&{uuid.uuid4().hex[:6]}" if "?" in path else f"{path}?{uuid.uuid4().hex[:6]}"
    with Client(faults.port, timeout=10) as c:
        c.send(build_request("POST", path, [("Host", "plain.test"), ("Content-Length", "10")]) + b"hello")
        t0 = time.monotonic()
        resp = c.read_response("POST")
        assert resp.status == 408, (resp.status, resp.body)
        assert 1.0 < time.monotonic() - t0 < 5
        assert "close" in resp.tokens("connection")
    assert server.saw(upstream_did)
    entry = logged(faults.gw, path)
    assert entry["reason"] == "body_timeout", entry
    assert entry["status"] == 408
    assert entry["backend"] and entry["upstream"], entry  # which upstream gave up stays in the log


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("label", "why"),
    [("expired", "expired"), ("wronghost", "Hostname mismatch"), ("wrongca", "unable to get local issuer")],
)
def test_tls_verification_failures_are_502_with_a_reason(faults: Faults, label: str, why: str) -> None:
    assert request(faults.port, "good.test", "/ok")[0] == 200, "the same CA and policy verify a good certificate"
    path = f"/{label}-{uuid.uuid4().hex[:6]}"
    status, body = request(faults.port, f"{label}.test", path)
    assert status == 502, body
    # The client reads what failed; OpenSSL's reason, which may quote names, is the operator's
    # (error log, and the body where detailed errors are on).
    assert body == b"upstream TLS handshake failed: certificate verify failed\n", body
    entry = logged(faults.gw, path)
    assert entry["reason"] == "upstream_tls_error"
    assert entry["upstream"] == f"127.0.0.1:{faults.servers[label].port}", entry
    status, body = request(faults.detailed_port, f"{label}.test", path)
    assert status == 502, body
    endpoint = f"{NS}/svc-{label}:80 (127.0.0.1:{faults.servers[label].port}): TLS handshake failed"
    assert endpoint.encode() in body and why.encode() in body, body


@pytest.mark.timeout(30)
def test_upstream_answering_before_the_body(faults: Faults) -> None:
    """Expect: 100-continue, and an upstream that answers after the first body bytes without
    reading the rest: the client gets the 100 (from the gateway), then the upstream's answer
    with Connection: close; the rest of the body is read and dropped, and whatever follows it
    is never taken for a next request."""
    body = b"x" * 300_000
    with Client(faults.port, timeout=10) as c:
        c.send(
            build_request(
                "POST",
                "/early",
                [("Host", "plain.test"), ("Content-Length", str(len(body))), ("Expect", "100-continue")],
            )
        )
        interim = c.reader.read_response("POST", interim=True)
        assert interim is not None and interim.status == 100
        c.send(body[:1000])
        final = c.read_response("POST")
        assert final.status == 200 and final.body == b"early\n"
        assert "close" in final.tokens("connection"), final.headers
        try:
            c.send(body[1000:] + build_request("GET", "/ok?smuggled", [("Host", "plain.test")]))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert c.closed_by_peer(5)
    time.sleep(0.2)
    assert not faults.servers["plain"].saw("got GET /ok?smuggled")


# -- process faults: a two-worker gateway under load -----------------------------------------------


@dataclass
class Cluster:
    gw: Gateway
    port: int
    config: Path
    up: Upstream


def _cluster_config(path: Path, port: int, up: Upstream, generation: int = 0) -> None:
    route = yaml.safe_load(_route("load.test", "svc-load"))
    route["spec"]["hostnames"] = []
    route["metadata"]["annotations"] = {"reload": str(generation)}
    path.write_text(manifests.documents(_gateway(port), *_backend("svc-load", up.port), _doc(route)))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Upstream("load", echo_all=True) as up:
        port = free_port()
        config = tmp_path / "gw.yaml"
        _cluster_config(config, port, up)
        with Gateway(config, [port], workers=2, args=("--graceful-timeout", "15")) as gw:
            wait_for(lambda: len(gw.worker_pids()) == 2, 10, "two workers")
            yield Cluster(gw, port, config, up)


class Load:
    """``n`` keep-alive clients sending GETs until stopped; failures reconnect and are counted."""

    def __init__(self, port: int, n: int, tag: str) -> None:
        self.port = port
        self.tag = tag
        self.stop = threading.Event()
        self.ok = [0] * n
        self.failures: list[list[str]] = [[] for _ in range(n)]
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(20)

    def _run(self, i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        n = 0
        while not self.stop.is_set():
            try:
                conn.request("GET", f"/{self.tag}?c={i}&n={n}", headers={"Host": "load.test"})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    self.ok[i] += 1
                else:
                    self.failures[i].append(f"status {resp.status}")
            except (OSError, http.client.HTTPException) as e:
                self.failures[i].append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            n += 1
            time.sleep(0.005)  # a bounded rate: the point is correctness, not throughput
        conn.close()


@pytest.mark.timeout(90)
def test_worker_killed_under_load_loses_nothing_elsewhere(cluster: Cluster) -> None:
    gw = cluster.gw
    before = gw.worker_pids()
    with Load(cluster.port, 12, "kill") as load:
        # Which worker serves each client connection: its first request's access-log line.
        def owners() -> dict[int, int] | None:
            entries = [e for e in gw.access_log() if e.get("path", "").startswith("/kill?") and "&n=0" in e["path"]]
            found = {int(e["path"].split("c=")[1].split("&")[0]): e["pid"] for e in entries}
            return found if len(found) == 12 else None

        owner = wait_for(owners, 10, "every client's first request in the access log")
        if len(set(owner.values())) < 2:
            pytest.skip("the kernel hashed every client connection to one worker")
        victim = before[0]
        survivor_clients = [i for i, pid in owner.items() if pid != victim]
        counts = [load.ok[i] for i in survivor_clients]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: len(gw.worker_pids()) == 2 and victim not in gw.worker_pids(), 1.0, "a new worker")
        respawn = time.monotonic() - killed
        time.sleep(1.5)
    assert respawn < 1.0
    for i in survivor_clients:
        assert load.failures[i] == [], f"client {i} on a surviving worker failed: {load.failures[i]}"
    assert all(load.ok[i] > c for i, c in zip(survivor_clients, counts, strict=True)), "survivors kept going"
    for i, pid in owner.items():
        if pid == victim:
            # Its one in-flight request may fail with the worker; the reconnect succeeds.
            assert len(load.failures[i]) <= 1, load.failures[i]


@pytest.mark.timeout(120)
def test_twenty_reloads_under_load_fail_nothing(cluster: Cluster) -> None:
    with Load(cluster.port, 6, "reload") as load:
        time.sleep(0.3)
        for generation in range(2, 22):
            _cluster_config(cluster.config, cluster.port, cluster.up, generation)
            assert f"reloaded: generation {generation}" in cluster.gw.reload()
        time.sleep(0.3)
    assert [f for fs in load.failures for f in fs] == []
    assert all(n > 0 for n in load.ok), load.ok
    assert "did not ack" not in cluster.gw.stderr_text()


@pytest.mark.timeout(60)
def test_sigterm_under_load_completes_every_in_flight_request(cluster: Cluster) -> None:
    results: list[int | str] = []
    lock = threading.Lock()

    def slow(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=20)
        try:
            conn.request("GET", f"/slow?s=1.5&i={i}", headers={"Host": "load.test"})
            resp = conn.getresponse()
            outcome: int | str = resp.status if resp.read() == b"slow\n" else "bad body"
        except (OSError, http.client.HTTPException) as e:
            outcome = f"{type(e).__name__}: {e}"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=slow, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    wait_for(lambda: len(cluster.up.requests_for("/slow")) == 10, 10, "every slow request upstream")
    started = time.monotonic()
    assert cluster.gw.stop(signal.SIGTERM, timeout=30) == 0
    for t in threads:
        t.join(10)
    assert results == [200] * 10
    assert time.monotonic() - started < 15  # within the grace period
