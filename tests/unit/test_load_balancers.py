"""LoadBalancerPolicy's strategies at run time (fsmfast.proxy.upstream's PolicyBackend, built by
fsmfast.resilience.runtime), compiled and as the twin: which state a backend gets, round robin per
request, hashing on the client address, least connections over the shared arena; and the master's
side of the arena (fsmfast.shared.endpoints)."""

from __future__ import annotations

import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Iterator

import msgspec
import pytest

from fsmfast import snapshot as snapmod
from fsmfast.proxy.roles import WorkerState
from fsmfast.proxy.upstream import HASHING, LEAST_CONN, BackendState, PolicyBackend, Pool
from fsmfast.resilience.runtime import BackendStates
from fsmfast.shared.arena import Arena
from fsmfast.shared.endpoints import SharedState
from fsmfast.snapshot import Backend, BackendPolicies, Endpoint, LoadBalancing

ENDPOINTS = (Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80), Endpoint("10.0.0.3", 80))


class Client:
    """What a backend's ``pick_for`` reads of an exchange's client."""

    def __init__(self, ip: bytes) -> None:
        self.client_ip = ip
        self.scheme = b"http"
        self.ctx = WorkerState()
        self.ctx.clock = 0.0


class Ex:
    """What a backend's ``pick_for`` reads of an exchange."""

    def __init__(self, ip: bytes = b"-") -> None:
        self.client = Client(ip)
        self.headers: list[tuple[bytes, bytes]] = []
        self.attempts: object = None
        self.plan: object = None


def make(
    lb_type: str | None,
    endpoints: tuple[Endpoint, ...] = ENDPOINTS,
    slots: tuple[int, ...] = (),
    arena: Arena | None = None,
    row: int = 0,
) -> BackendState:
    resilience = None
    if lb_type is not None:
        lb = LoadBalancing(policy="LoadBalancerPolicy ns/lb", type=lb_type, slots=slots)  # type: ignore[arg-type]
        resilience = BackendPolicies(lb=lb)
    backend = Backend(name="ns/svc:80", endpoints=endpoints, resilience=resilience)
    ctx = WorkerState()
    ctx.clock = 0.0
    pools = [Pool(ctx, e.host, e.port, None, backend.name) for e in endpoints]
    return BackendStates(arena, row).add(backend, pools)


def test_a_backend_without_a_policy_or_with_round_robin_gets_plain_round_robin() -> None:
    # Least connections without the shared counters (no arena, or its endpoints did not fit) too.
    for lb_type in (None, "RoundRobinLoadBalancer", "LeastConnectionLoadBalancer"):
        state = make(lb_type)
        assert type(state) is BackendState and not state.keyed
        # Per request, evenly: endpoints carry no weights, so smooth weighted round robin is this.
        picks = [state.pick() for _ in range(9)]
        assert [p.address for p in picks if p is not None] == ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"] * 3
        # The keyed entry point is round robin too.
        assert state.pick_for(Ex(b"127.0.0.2")) is not None


def test_hashing_sends_one_client_to_one_endpoint_by_crc32_of_its_address() -> None:
    state = make("HashingLoadBalancer")
    assert type(state) is PolicyBackend and state.keyed and state.lb == HASHING
    for n in range(2, 40):
        ip = f"192.0.2.{n}".encode()
        chosen = {p.address for p in (state.pick_for(Ex(ip)) for _ in range(5)) if p is not None}
        # Stable, and the one a fresh state (another worker) chooses: no per-process salt.
        expected = ENDPOINTS[zlib.crc32(ip) % 3]
        assert chosen == {f"{expected.host}:{expected.port}"}
        other = make("HashingLoadBalancer").pick_for(Ex(ip))
        assert other is not None and other.address == chosen.pop()


def test_hashing_spreads_many_clients_over_every_endpoint() -> None:
    state = make("HashingLoadBalancer")
    counts = Counter(p.address for n in range(300) if (p := state.pick_for(Ex(f"10.1.{n // 256}.{n % 256}".encode()))))
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
    assert empty.pick_for(Ex(b"127.0.0.1")) is None and empty.pick() is None


def test_workers_in_other_processes_agree_on_the_endpoint() -> None:
    # Python's hash() of bytes is salted per process; the choice must not be.
    code = (
        "from tests.unit.test_load_balancers import Ex, make\n"
        "picks = (make('HashingLoadBalancer').pick_for(Ex(f'198.51.100.{n}'.encode())) for n in range(20))\n"
        "print(','.join(p.address for p in picks))"
    )
    runs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    here = ",".join(
        p.address for n in range(20) if (p := make("HashingLoadBalancer").pick_for(Ex(f"198.51.100.{n}".encode())))
    )
    assert runs == {here + "\n"}


@pytest.fixture
def arena() -> Iterator[Arena]:
    shared = Arena(workers=2, slots=16)
    try:
        yield shared
    finally:
        shared.close()


def test_least_connections_picks_the_endpoint_with_fewest_in_flight_over_every_worker(arena: Arena) -> None:
    slots = (5, 9, 2)  # the master's slots, in the endpoints' order
    w0 = make("LeastConnectionLoadBalancer", slots=slots, arena=arena, row=0)
    w1 = make("LeastConnectionLoadBalancer", slots=slots, arena=arena, row=1)
    assert type(w0) is PolicyBackend and w0.keyed and w0.lb == LEAST_CONN
    # Idle: ties go round robin, and each pick counts in the picking worker's row.
    first = [w0.pick_for(Ex()) for _ in range(3)]
    assert [p.address for p in first if p is not None] == ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
    assert [arena.counters.get(0, s) for s in slots] == [1, 1, 1]
    # Worker 1 holds two more on the first endpoint: both workers now avoid it.
    arena.counters.add(1, 5, 2)
    assert {p.address for p in (w0.pick_for(Ex()), w1.pick_for(Ex())) if p is not None} == {
        "10.0.0.2:80",
        "10.0.0.3:80",
    }
    # Ending the requests gives the counts back; only an endpoint this state picked is counted.
    for pool in first:
        assert pool is not None
        w0.settle(pool, False)
    assert [arena.counters.total(s) for s in slots] == [2, 1, 1]
    stranger = Pool(WorkerState(), "10.9.9.9", 80, None, "other")
    w0.settle(stranger, False)
    assert [arena.counters.total(s) for s in slots] == [2, 1, 1]
    # The master clears a dead worker's row: what it held stops counting (worker 0's second pick,
    # on the second endpoint, is still in flight).
    arena.counters.clear_row(1)
    assert [arena.counters.total(s) for s in slots] == [0, 1, 0]


def test_least_connections_steers_a_stream_of_requests_away_from_a_busy_endpoint(arena: Arena) -> None:
    state = make("LeastConnectionLoadBalancer", slots=(0, 1, 2), arena=arena)
    arena.counters.add(1, 0, 10)  # another worker's ten slow requests on the first endpoint
    picked = Counter(p.address for _ in range(20) if (p := state.pick_for(Ex())) is not None)
    assert picked["10.0.0.1:80"] == 0 and picked["10.0.0.2:80"] == picked["10.0.0.3:80"] == 10
    assert make("LeastConnectionLoadBalancer", (), (), arena).pick_for(Ex()) is None


def _snapshot(*backends: Backend) -> bytes:
    return snapmod.encode(
        snapmod.Snapshot(schema=snapmod.SCHEMA, generation=1, listeners=(), backends={b.name: b for b in backends})
    )


def _backend(name: str, lb_type: str | None, endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> Backend:
    lb = None if lb_type is None else LoadBalancing(policy="LoadBalancerPolicy ns/lb", type=lb_type)  # type: ignore[arg-type]
    return Backend(name=name, endpoints=endpoints, resilience=BackendPolicies(lb=lb) if lb else None)


def _slots(data: bytes, name: str) -> tuple[int, ...]:
    lb = snapmod.decode(data).backends[name].resilience.lb  # type: ignore[union-attr]
    assert lb is not None
    return lb.slots


def _prepare(shared: SharedState, data: bytes, forked: bool) -> bytes:
    """``prepare`` as the master calls it; the bytes it returns, checked against the Snapshot it returns."""
    snap, out = shared.prepare(snapmod.decode(data), data, forked)
    assert snapmod.decode(out) == snap
    return out


def test_the_master_makes_the_arena_with_the_first_build_and_keeps_slots_across_reloads() -> None:
    shared = SharedState(workers=2)
    try:
        # Made whatever the first configuration asks for: a reload may add a policy later.
        plain = _snapshot(_backend("ns/a:80", None), _backend("ns/b:80", "HashingLoadBalancer"))
        assert _prepare(shared, plain, forked=False) == plain and shared.arena is not None
        # A reload first asking for least connections gets it: the slots are sent, the others untouched.
        data = _snapshot(_backend("ns/a:80", None), _backend("ns/l:80", "LeastConnectionLoadBalancer"))
        out = _prepare(shared, data, forked=True)
        first = _slots(out, "ns/l:80")
        assert sorted(first) == [0, 1, 2]
        assert snapmod.decode(out).backends["ns/a:80"] == snapmod.decode(data).backends["ns/a:80"]
        # A reload that drops one endpoint and adds another: the others keep their slots; the new
        # one never reuses a slot while unused ones remain.
        shared.arena.counters.add(0, first[1], 3)
        moved = (ENDPOINTS[0], ENDPOINTS[1], Endpoint("10.0.0.4", 80))
        again = _slots(
            _prepare(shared, _snapshot(_backend("ns/l:80", "LeastConnectionLoadBalancer", moved)), True), "ns/l:80"
        )
        assert again[:2] == first[:2] and again[2] == 3
        # A dead worker's row is cleared before its respawn.
        shared.worker_gone(0)
        assert shared.arena.counters.total(first[1]) == 0
    finally:
        shared.close()


def test_least_connections_without_its_slots_is_round_robin() -> None:
    # A snapshot the master did not place (no arena: the pure tools), or whose endpoints did not fit.
    assert type(make("LeastConnectionLoadBalancer")) is BackendState
    data = _snapshot(_backend("ns/l:80", "LeastConnectionLoadBalancer"))
    assert msgspec.structs.asdict(snapmod.decode(data).backends["ns/l:80"].resilience.lb)["slots"] == ()  # type: ignore[arg-type]
