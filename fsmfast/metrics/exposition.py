"""Metric families rendered as Prometheus text 0.0.4 or OpenMetrics 1.0.0.

A ``Family`` is a name, a type, a help text and its samples; each renderer writes HELP and TYPE
first, then the samples, one group per family. The differences between the two formats:

- OpenMetrics names a counter family without its ``_total`` (the samples keep it), calls an
  info metric ``info`` (0.0.4 has no such type: a gauge of value 1), and ends with ``# EOF``;
- the HELP text escapes double quotes too in OpenMetrics.

One name clash follows from issue 18's names: the gauge ``fsmfast_downstream_connections`` and
the counter ``fsmfast_downstream_connections_total`` are two families in 0.0.4 but would both be
the family ``fsmfast_downstream_connections`` in OpenMetrics, where family names must be unique.
Such a counter is typed ``unknown`` in OpenMetrics, under its full name (its samples unchanged);
``rate()`` and everything else read it the same, only its TYPE metadata says less.

Label values are escaped (backslash, double quote, line feed) as both formats require. Histogram
buckets come in as per-bucket counts and go out cumulative, with ``+Inf`` equal to ``_count``;
``le`` values are written as OpenMetrics' canonical numbers (``1.0``, ``0.005``), which 0.0.4
reads alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

Kind = Literal["counter", "gauge", "histogram", "info"]
Labels = tuple[tuple[str, str], ...]


@dataclass
class Histogram:
    """One histogram series: per-bucket counts for ``bounds`` then one above the last, and the sum."""

    bounds: Sequence[float]
    buckets: Sequence[int]
    total: float


@dataclass
class Family:
    """``name`` is the samples' name as 0.0.4 writes it (a counter's ends with ``_total``)."""

    name: str
    kind: Kind
    help: str
    samples: list[tuple[Labels, float | int]] = field(default_factory=list)
    histograms: list[tuple[Labels, Histogram]] = field(default_factory=list)

    def add(self, value: float | int, **labels: str) -> None:
        self.samples.append((tuple(labels.items()), value))


def wants_openmetrics(accept: str | None) -> bool:
    """Whether the scraper's Accept header asks for OpenMetrics text (with a q above 0). The
    version asked for is not compared: 1.0.0 is the only one there is to answer with, and
    Prometheus lists it first when it wants OpenMetrics at all."""
    if not accept:
        return False
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() != "application/openmetrics-text":
            continue
        q = next((p.partition("=")[2] for p in params if p.lower().startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            continue
    return False


def render(families: Iterable[Family], openmetrics: bool) -> tuple[str, bytes]:
    """(Content-Type, body) of an exposition of ``families`` in the chosen format."""
    families = list(families)
    if openmetrics:
        return OPENMETRICS, _openmetrics(families).encode()
    return TEXT, _text(families).encode()


def _text(families: list[Family]) -> str:
    out: list[str] = []
    for fam in families:
        kind = "gauge" if fam.kind == "info" else fam.kind
        out.append(f"# HELP {fam.name} {_escape_help(fam.help, False)}\n")
        out.append(f"# TYPE {fam.name} {kind}\n")
        _samples(out, fam)
    return "".join(out)


def _openmetrics(families: list[Family]) -> str:
    names = {fam.name for fam in families}
    out: list[str] = []
    for fam in families:
        name, kind = fam.name, str(fam.kind)
        if kind == "counter":
            base = name.removesuffix("_total")
            if base in names:  # see the module docstring
                kind = "unknown"
            else:
                name = base
        elif kind == "info":
            name = name.removesuffix("_info")
        out.append(f"# TYPE {name} {kind}\n")
        out.append(f"# HELP {name} {_escape_help(fam.help, True)}\n")
        _samples(out, fam)
    out.append("# EOF\n")
    return "".join(out)


def _samples(out: list[str], fam: Family) -> None:
    for labels, value in fam.samples:
        out.append(f"{fam.name}{_labels(labels)} {_number(value)}\n")
    for labels, hist in fam.histograms:
        count = 0
        for bound, n in zip(hist.bounds, hist.buckets, strict=False):
            count += n
            out.append(f"{fam.name}_bucket{_labels((*labels, ('le', _number(float(bound)))))} {count}\n")
        count = sum(hist.buckets)
        out.append(f"{fam.name}_bucket{_labels((*labels, ('le', '+Inf')))} {count}\n")
        out.append(f"{fam.name}_sum{_labels(labels)} {_number(hist.total)}\n")
        out.append(f"{fam.name}_count{_labels(labels)} {count}\n")


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape_value(value)}"' for name, value in labels) + "}"


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str, quotes: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quotes else text


def _number(value: float | int) -> str:
    """Integers without a decimal point; floats as Python's shortest repr (``1.0``, ``0.005``,
    ``1e-07``), which is OpenMetrics' canonical form for the ``le`` values used here."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)
