"""fsmfast.metrics.exposition: Prometheus text 0.0.4 and OpenMetrics 1.0.0, and which one a scraper gets.

The formats are checked by rule here (HELP/TYPE per family, escaping, cumulative buckets, the
OpenMetrics family names) and by Prometheus' own parsers in test_metrics_master.py (promtool).
"""

from __future__ import annotations

import re

import pytest

from fsmfast.metrics.exposition import OPENMETRICS, TEXT, Family, Histogram, render, wants_openmetrics

PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/plain;version=0.0.4", False),
        ("text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0", False),
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", True),
        ("Application/OpenMetrics-Text", True),
        (PROMETHEUS_2, True),
        (PROMETHEUS_3, True),
    ],
)
def test_openmetrics_only_when_the_scraper_asks_for_it(accept: str | None, openmetrics: bool) -> None:
    assert wants_openmetrics(accept) is openmetrics
    content_type, _ = render([], openmetrics)
    assert content_type == (OPENMETRICS if openmetrics else TEXT)


def _families() -> list[Family]:
    requests = Family("app_requests_total", "counter", 'Requests, by "path".\nSecond line \\ backslash.')
    requests.add(3, path="/a", code="200")
    requests.add(1, path='/quo"te\\back\nline', code="404")
    latency = Family("app_latency_seconds", "histogram", "Latency.")
    latency.histograms.append(((("path", "/a"),), Histogram((0.005, 0.1, 1.0), [2, 0, 1, 1], 1.6)))
    latency.histograms.append(((("path", "/b"),), Histogram((0.005, 0.1, 1.0), [0, 0, 0, 0], 0.0)))
    open_now = Family("app_connections", "gauge", "Open now.")
    open_now.add(2)
    accepted = Family("app_connections_total", "counter", "Accepted.")
    accepted.add(7)
    build = Family("app_build_info", "info", "Build.")
    build.add(1, version="1.2.3")
    stamp = Family("app_stamp_seconds", "gauge", "A float.")
    stamp.add(1767225600.25)
    return [requests, latency, open_now, accepted, build, stamp]


def test_text_format() -> None:
    _, body = render(_families(), openmetrics=False)
    text = body.decode()
    assert text.startswith(
        '# HELP app_requests_total Requests, by "path".\\nSecond line \\\\ backslash.\n'
        "# TYPE app_requests_total counter\n"
        'app_requests_total{path="/a",code="200"} 3\n'
        'app_requests_total{path="/quo\\"te\\\\back\\nline",code="404"} 1\n'
    )
    # Buckets cumulative, le as canonical floats, +Inf equal to _count.
    assert (
        "# TYPE app_latency_seconds histogram\n"
        'app_latency_seconds_bucket{path="/a",le="0.005"} 2\n'
        'app_latency_seconds_bucket{path="/a",le="0.1"} 2\n'
        'app_latency_seconds_bucket{path="/a",le="1.0"} 3\n'
        'app_latency_seconds_bucket{path="/a",le="+Inf"} 4\n'
        'app_latency_seconds_sum{path="/a"} 1.6\n'
        'app_latency_seconds_count{path="/a"} 4\n'
    ) in text
    assert 'app_latency_seconds_count{path="/b"} 0\n' in text
    assert "# TYPE app_connections gauge\napp_connections 2\n" in text
    assert "# TYPE app_connections_total counter\napp_connections_total 7\n" in text
    assert '# TYPE app_build_info gauge\napp_build_info{version="1.2.3"} 1\n' in text
    assert "app_stamp_seconds 1767225600.25\n" in text
    assert "# EOF" not in text
    # One HELP and one TYPE per family, before its samples.
    assert len(re.findall(r"^# HELP ", text, re.M)) == len(re.findall(r"^# TYPE ", text, re.M)) == 6


def test_openmetrics_format() -> None:
    _, body = render(_families(), openmetrics=True)
    text = body.decode()
    assert text.endswith("\n# EOF\n")
    assert "# TYPE app_requests counter\n" in text and 'app_requests_total{path="/a",code="200"} 3\n' in text
    assert '# HELP app_requests Requests, by \\"path\\".\\nSecond line \\\\ backslash.\n' in text
    assert "# TYPE app_build info\n" in text and 'app_build_info{version="1.2.3"} 1\n' in text
    # A counter whose OpenMetrics family name would be a gauge's keeps its name, typed unknown.
    assert "# TYPE app_connections gauge\n" in text
    assert (
        "# TYPE app_connections_total unknown\n# HELP app_connections_total Accepted.\napp_connections_total 7\n"
        in text
    )
    check_openmetrics(text)


SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "unknown": ("",),
}


def check_openmetrics(text: str) -> None:
    """The rules of OpenMetrics 1.0 text that Prometheus' parser leaves unchecked: family names
    unique, TYPE before the samples, every sample named as its family's type allows, ``# EOF`` last."""
    lines = text.split("\n")
    assert lines[-2:] == ["# EOF", ""], "no final # EOF"
    families: dict[str, str] = {}
    current: tuple[str, str] | None = None
    for line in lines[:-2]:
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in families, f"family {name} twice"
            families[name] = kind
            current = (name, kind)
        elif line.startswith("# HELP "):
            assert current is not None and line.split(" ")[2] == current[0], f"HELP outside its family: {line}"
        else:
            assert not line.startswith("#"), line
            assert current is not None, f"a sample before any TYPE: {line}"
            sample = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            assert sample is not None, line
            name, kind = current
            assert any(sample.group(0) == name + s for s in SUFFIXES[kind]), f"{sample.group(0)} in {kind} {name}"


def test_the_checker_catches_a_clash() -> None:
    clash = "# TYPE a counter\na_total 1\n# TYPE a gauge\na 1\n# EOF\n"
    with pytest.raises(AssertionError, match="family a twice"):
        check_openmetrics(clash)


def test_numbers() -> None:
    fam = Family("x", "gauge", "x")
    for value in (0, 5, -2, 0.5, 1e-7, 3.0, float("inf"), float("-inf"), float("nan"), True):
        fam.add(value, v=str(value))
    _, body = render([fam], openmetrics=True)
    values = [line.rsplit(" ", 1)[1] for line in body.decode().splitlines() if line.startswith("x{")]
    assert values == ["0", "5", "-2", "0.5", "1e-07", "3.0", "+Inf", "-Inf", "NaN", "1"]
