"""Golden tests: ``tests/golden/<case>/in/*.yaml`` compile to ``out/snapshot.json`` and ``out/warnings.txt``.

After an intended change, regenerate with ``FSMFAST_REGEN_GOLDEN=1 python -m pytest tests/unit/test_compile_golden.py``
and review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsmfast.compile import build
from fsmfast.snapshot import to_json

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "in").is_dir())


def test_there_are_cases() -> None:
    assert {"founding", "multi-route"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root = GOLDEN / case
    # Relative path, so warnings read "in/routes.yaml#2 ..." wherever the checkout lives.
    monkeypatch.chdir(root)
    result = build("in")
    actual = {
        "snapshot.json": to_json(result.snapshot) + b"\n",
        "warnings.txt": "".join(w + "\n" for w in result.warnings).encode(),
    }
    out = root / "out"
    if os.environ.get("FSMFAST_REGEN_GOLDEN") == "1":
        out.mkdir(exist_ok=True)
        for name, data in actual.items():
            (out / name).write_bytes(data)
    for name, data in actual.items():
        assert data.decode() == (out / name).read_text(), (
            f"{case}/out/{name} differs (FSMFAST_REGEN_GOLDEN=1 rewrites it)"
        )
