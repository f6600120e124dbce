"""fsmfast.shared.slots: the master's stable slot numbers for endpoint keys, over reloads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fsmfast
from fsmfast.shared.slots import SlotTable, SlotTableFull, stable_hash


def test_a_key_keeps_its_slot_across_reloads_while_it_exists() -> None:
    table = SlotTable(capacity=4)
    first = table.assign(["web/10.0.0.1:80", "web/10.0.0.2:80", "api/10.0.1.1:8080"])
    assert sorted(first.values()) == [0, 1, 2]
    assert table.reassigned == ()
    # Reload: one endpoint gone, one new. The others do not move; the new key takes the never-used
    # slot rather than the one just freed.
    second = table.assign(["web/10.0.0.2:80", "api/10.0.1.1:8080", "web/10.0.0.3:80"])
    assert second["web/10.0.0.2:80"] == first["web/10.0.0.2:80"]
    assert second["api/10.0.1.1:8080"] == first["api/10.0.1.1:8080"]
    assert second["web/10.0.0.3:80"] == 3
    assert table.reassigned == ()
    # Same keys again: nothing changes.
    assert table.assign(reversed(list(second))) == second
    # Full of never-used slots: the slot freed longest ago is reused, and said to be.
    third = table.assign([*second, "web/10.0.0.4:80"])
    assert third["web/10.0.0.4:80"] == first["web/10.0.0.1:80"]
    assert table.reassigned == (first["web/10.0.0.1:80"],)
    assert {k: third[k] for k in second} == second


def test_freed_slots_are_reused_oldest_first() -> None:
    table = SlotTable(capacity=3)
    table.assign(["a", "b", "c"])  # a=0 b=1 c=2
    table.assign(["b", "c"])  # 0 freed
    table.assign(["c"])  # 1 freed later
    assert table.assign(["c", "x", "y"]) == {"c": 2, "x": 0, "y": 1}
    assert table.reassigned == (0, 1)


def test_assignment_does_not_depend_on_the_order_of_keys() -> None:
    keys = [f"backend-{i}/10.0.{i}.1:80" for i in range(50)]
    a, b = SlotTable(64), SlotTable(64)
    assert a.assign(keys) == b.assign(reversed(keys))


def test_a_full_table_says_so_and_changes_nothing() -> None:
    table = SlotTable(capacity=2)
    before = table.assign(["a", "b"])
    with pytest.raises(SlotTableFull, match="3 endpoint keys do not fit the shared state's 2 slots"):
        table.assign(["a", "c", "d"])
    assert table.slots == before
    assert table.assign(["b", "c"]) == {"b": 1, "c": 0}
    with pytest.raises(ValueError):
        SlotTable(0)


def test_stable_hash_is_the_same_in_every_process() -> None:
    # hash() differs between these two interpreters; stable_hash must not.
    root = os.path.dirname(os.path.dirname(os.path.abspath(fsmfast.__file__)))
    code = "from fsmfast.shared.slots import stable_hash; print(stable_hash('web/10.0.0.1:80'), hash('x'))"
    outs = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root},
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
        for seed in ("1", "2")
    ]
    assert outs[0][1] != outs[1][1]
    assert outs[0][0] == outs[1][0] == str(stable_hash("web/10.0.0.1:80"))
    assert 0 <= stable_hash("") < 1 << 64
