"""Gateway API durations (GEP-2257): ``1h``, ``500ms``, ``1h2m3s500ms``.

The grammar is ``^([0-9]{1,5}(h|m|s|ms)){1,4}$``; components are summed, so ``1h2h`` is three
hours, as Go's ``time.ParseDuration`` reads it. ``0s`` is valid (a timeout of zero means "none"
where the API says so); ``0`` alone and the empty string are not.
"""

from __future__ import annotations

import re

_COMPONENT = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
_WHOLE = re.compile(r"(?:[0-9]{1,5}(?:ms|h|m|s)){1,4}")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float | None:
    """Seconds, or None when ``text`` is not a Gateway API duration."""
    if not _WHOLE.fullmatch(text):
        return None
    return sum(int(n) * _SECONDS[unit] for n, unit in _COMPONENT.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest Gateway API spelling of ``seconds`` (for messages and ``fsmfast routes``)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)
