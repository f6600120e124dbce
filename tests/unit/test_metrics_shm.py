"""fsmfast.metrics.shm: the region a worker shares with the master, across real forks.

What must hold: the master reads either the previous blob or the new one, whole, never a mix,
while the worker writes, and after the worker is SIGKILLed in the middle of a write.
"""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import time

import pytest

from fsmfast.metrics.shm import StatsRegion


def _blob(n: int, size: int) -> bytes:
    """A blob that says whether it is whole: its number, a body of that number's bytes, a digest."""
    body = struct.pack("<Q", n) + bytes([n % 251]) * size
    return body + hashlib.sha256(body).digest()


def _whole(blob: bytes) -> int:
    """The blob's number; fails on a torn blob."""
    body, digest = blob[:-32], blob[-32:]
    assert hashlib.sha256(body).digest() == digest, "a torn blob"
    return int(struct.unpack_from("<Q", body)[0])


def _fork(child: object) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            child()  # type: ignore[operator]
        finally:
            os._exit(0)
    return pid


def _reap(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return status


def test_nothing_before_the_first_publish_and_no_beat_before_the_first() -> None:
    region = StatsRegion(1 << 16)
    try:
        assert region.read() is None
        assert region.heartbeat() == 0.0
    finally:
        region.close()


def test_publish_read_and_beat_round_trip() -> None:
    region = StatsRegion(1 << 16)
    try:
        assert region.publish(b"first")
        assert region.read() == b"first"
        assert region.publish(b"second, longer")
        assert region.read() == b"second, longer"
        assert region.publish(b"")
        assert region.read() == b""
        region.beat(1234.5)
        assert region.heartbeat() == 1234.5
    finally:
        region.close()


def test_a_blob_that_does_not_fit_is_refused_and_the_previous_stays() -> None:
    region = StatsRegion(1 << 16)
    try:
        assert region.capacity < 1 << 15
        assert region.publish(b"kept")
        assert not region.publish(b"x" * (region.capacity + 1))
        assert region.read() == b"kept"
        assert region.publish(b"y" * region.capacity)
        assert region.read() == b"y" * region.capacity
    finally:
        region.close()


def test_close_is_idempotent_and_a_closed_region_reads_nothing() -> None:
    region = StatsRegion(1 << 16)
    region.publish(b"x")
    region.close()
    region.close()
    assert region.closed and region.read() is None and region.heartbeat() == 0.0
    assert not region.publish(b"y")
    region.beat(1.0)  # a worker's last tick after its region went: nothing, no error


def test_the_master_sees_what_a_forked_worker_publishes_and_its_heartbeat() -> None:
    region = StatsRegion(1 << 16)
    try:

        def worker() -> None:
            region.beat(time.monotonic())
            region.publish(b"from the child")

        assert os.WEXITSTATUS(_reap(_fork(worker))) == 0
        assert region.read() == b"from the child"
        # The child's monotonic clock is the master's: the age of its beat is small and not negative.
        assert 0.0 <= time.monotonic() - region.heartbeat() < 5.0
    finally:
        region.close()


def test_reads_while_the_worker_writes_are_each_a_whole_blob() -> None:
    region = StatsRegion(1 << 20)
    size = 200_000  # each publish copies this much: many reads land during one
    try:
        region.publish(_blob(0, size))

        def worker() -> None:
            n = 1
            while True:
                region.publish(_blob(n, size))
                n += 1

        pid = _fork(worker)
        try:
            seen: list[int] = []
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                blob = region.read()
                if blob is not None:  # None: the writer kept overtaking this copy
                    seen.append(_whole(blob))
        finally:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        assert len(seen) > 50
        assert seen == sorted(seen), "a read went back to an older blob"
        assert seen[-1] > seen[0], "the worker's publishes were never seen"
    finally:
        region.close()


def test_a_worker_killed_in_the_middle_of_a_write_leaves_the_previous_blob() -> None:
    # Deterministic: the child writes half of a new blob into the slot a publish writes, exactly as
    # publish() begins, and is SIGKILLed there.
    region = StatsRegion(1 << 16)
    try:
        region.publish(b"the previous one")

        def worker() -> None:
            mm = region._map
            assert mm is not None
            sequence = struct.unpack_from("<Q", mm, 8)[0]
            start = region._slot((sequence + 1) & 1) + 16
            mm[start : start + 8] = b"torn-new"
            struct.pack_into("<Q", mm, region._slot((sequence + 1) & 1), 1000)  # its length, crc not yet
            os.kill(os.getpid(), signal.SIGKILL)

        status = _reap(_fork(worker))
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert region.read() == b"the previous one"
        assert region.publish(b"a respawn's first")  # the slot is written afresh, as any other time
        assert region.read() == b"a respawn's first"
    finally:
        region.close()


@pytest.mark.parametrize("delay", [0.0, 0.0005, 0.002])
def test_a_worker_killed_at_any_moment_of_a_stream_of_writes_leaves_a_whole_blob(delay: float) -> None:
    # The race as it happens: SIGKILL lands wherever the writer is (copying, between the header
    # and the sequence, between publishes); what is left must be one whole blob it had published.
    region = StatsRegion(4 << 20)
    size = 1_500_000  # a copy long enough for a kill to land inside one often
    try:
        region.publish(_blob(0, size))
        for _attempt in range(5):
            r, w = os.pipe()

            def worker(w: int = w) -> None:
                os.write(w, b"go")
                n = 1
                while True:
                    region.publish(_blob(n, size))
                    n += 1

            pid = _fork(worker)
            os.close(w)
            os.read(r, 2)
            os.close(r)
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
            blob = region.read()
            assert blob is not None
            _whole(blob)
    finally:
        region.close()


def test_regions_too_small_are_refused() -> None:
    with pytest.raises(ValueError):
        StatsRegion(100)
