"""LoadBalancerPolicy's strategies at run time (fsmfast.proxy.upstream), compiled and as the twin:
which BackendState a backend gets, round robin per request, and hashing on the client address."""

from __future__ import annotations

import subprocess
import sys
import zlib
from collections import Counter

from fsmfast.proxy.roles import WorkerState
from fsmfast.proxy.upstream import BackendState, HashingBackendState, Pool, backend_state
from fsmfast.snapshot import Backend, BackendPolicies, Endpoint, LoadBalancing

ENDPOINTS = (Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80), Endpoint("10.0.0.3", 80))


def make(lb_type: str | None, endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> BackendState:
    resilience = None
    if lb_type is not None:
        resilience = BackendPolicies(lb=LoadBalancing(policy="LoadBalancerPolicy ns/lb", type=lb_type))  # type: ignore[arg-type]
    backend = Backend(name="ns/svc:80", endpoints=endpoints, resilience=resilience)
    ctx = WorkerState()
    return backend_state(backend, [Pool(ctx, e.host, e.port, None, backend.name) for e in endpoints])


def test_a_backend_without_a_policy_or_with_round_robin_or_least_connections_gets_plain_round_robin() -> None:
    for lb_type in (None, "RoundRobinLoadBalancer", "LeastConnectionLoadBalancer"):
        state = make(lb_type)
        assert type(state) is BackendState and not state.keyed
        # Per request, evenly: endpoints carry no weights, so smooth weighted round robin is this.
        picks = [state.pick() for _ in range(9)]
        assert [p.address for p in picks if p is not None] == ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"] * 3
        # The keyed entry point ignores the key for these.
        assert state.pick_for(b"127.0.0.2") is not None


def test_hashing_sends_one_client_to_one_endpoint_by_crc32_of_its_address() -> None:
    state = make("HashingLoadBalancer")
    assert type(state) is HashingBackendState and state.keyed
    for n in range(2, 40):
        ip = f"192.0.2.{n}".encode()
        chosen = {p.address for p in (state.pick_for(ip) for _ in range(5)) if p is not None}
        # Stable, and the one a fresh state (another worker) chooses: no per-process salt.
        expected = ENDPOINTS[zlib.crc32(ip) % 3]
        assert chosen == {f"{expected.host}:{expected.port}"}
        other = make("HashingLoadBalancer").pick_for(ip)
        assert other is not None and other.address == chosen.pop()


def test_hashing_spreads_many_clients_over_every_endpoint() -> None:
    state = make("HashingLoadBalancer")
    counts = Counter(p.address for n in range(300) if (p := state.pick_for(f"10.1.{n // 256}.{n % 256}".encode())))
    assert set(counts) == {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
    assert min(counts.values()) >= 60  # 100 each on average


def test_hashing_without_a_key_is_round_robin_and_without_endpoints_none() -> None:
    state = make("HashingLoadBalancer")
    assert [p.address for p in (state.pick(), state.pick(), state.pick()) if p is not None] == [
        "10.0.0.1:80",
        "10.0.0.2:80",
        "10.0.0.3:80",
    ]
    empty = make("HashingLoadBalancer", ())
    assert empty.pick_for(b"127.0.0.1") is None and empty.pick() is None


def test_workers_in_other_processes_agree_on_the_endpoint() -> None:
    # Python's hash() of bytes is salted per process; the choice must not be.
    code = (
        "from tests.unit.test_load_balancers import make\n"
        "print(','.join(make('HashingLoadBalancer').pick_for(f'198.51.100.{n}'.encode()).address for n in range(20)))"
    )
    runs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    here = ",".join(
        p.address for n in range(20) if (p := make("HashingLoadBalancer").pick_for(f"198.51.100.{n}".encode()))
    )
    assert runs == {here + "\n"}
