"""``python -m bench [options]``: the side-by-side run. ``python -m bench lookup [options]``: route lookup timing.

Progress (one line per run) goes to stderr; the Markdown report goes to stdout; the JSON (and the PNG
chart) go to ``bench/results/`` unless ``--results-dir`` says otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _list(choices: Sequence[str]):
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}; got {text!r}")
        return list(dict.fromkeys(items))

    return parse


def make_parser() -> argparse.ArgumentParser:
    from bench.scenarios import SCENARIOS
    from bench.systems import ALL_SYSTEMS

    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="fsmfast, nginx and HAProxy side by side on loopback (bench/README.md). "
        "'python -m bench lookup --help' for the route-lookup micro-benchmark.",
    )
    p.add_argument("--scenarios", type=_list(list(SCENARIOS)), default=list(SCENARIOS), help="e.g. S1,S4")
    p.add_argument("--systems", type=_list(ALL_SYSTEMS), default=list(ALL_SYSTEMS), help="default: all, in order")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3; --quick: 1)")
    p.add_argument("--duration", type=float, default=None, help="seconds per measured run (default 10; --quick: 3)")
    p.add_argument(
        "--warmup", type=float, default=None, help="seconds of warm-up before each run (default 2; --quick: 1)"
    )
    p.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument(
        "--pin",
        choices=("split", "none"),
        default="split",
        help="split (default): proxy on CPU 1, wrk + upstream on CPU 0; none: no taskset",
    )
    p.add_argument("--quick", action="store_true", help="development mode: 1 round x 3 s unless told otherwise")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON and PNG go")
    p.add_argument(
        "--no-install", dest="install", action="store_false", help="never install; fail if a tool is missing"
    )
    p.add_argument("--no-chart", dest="chart", action="store_false", help="no PNG (and no matplotlib install)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "instructions":
        from bench.instructions import main as instructions_main

        return instructions_main(args[1:])
    if args and args[0] == "lookup":
        from bench.route_lookup import main as lookup_main

        return lookup_main(args[1:])

    ns = make_parser().parse_args(args)
    quick = ns.quick
    rounds = ns.rounds if ns.rounds is not None else (1 if quick else 3)
    duration = ns.duration if ns.duration is not None else (3.0 if quick else 10.0)
    warmup = ns.warmup if ns.warmup is not None else (1.0 if quick else 2.0)
    if rounds < 1 or duration < 1 or warmup < 0 or ns.connections < 1 or ns.threads < 1:
        print("bench: --rounds, --duration (s), --connections and --threads must be >= 1", file=sys.stderr)
        return 2

    from bench import deps, harness, report

    opts = harness.Options(
        scenarios=ns.scenarios,
        systems=ns.systems,
        rounds=rounds,
        duration=duration,
        warmup=warmup,
        connections=ns.connections,
        threads=ns.threads,
        pin=ns.pin,
        install=ns.install,
    )
    want_chart = ns.chart and (deps.ensure_matplotlib() if ns.install else deps.have_matplotlib())
    command = "python -m bench" + ("" if not args else " " + " ".join(args))
    started = dt.datetime.now().astimezone()
    t0 = time.monotonic()
    try:
        out = harness.run(opts)
    except deps.MissingTool as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    out.versions = report.versions()
    doc = report.document(out, opts, command, started, time.monotonic() - t0)
    partial = quick or ns.scenarios != harness_defaults()[0] or ns.systems != harness_defaults()[1]
    path = report.write_json(doc, ns.results_dir, "-quick" if quick else ("-partial" if partial else ""))
    print(report.markdown(doc))
    print(f"bench: JSON written to {_shown(path)}", file=sys.stderr)
    if want_chart:
        png = path.with_suffix(".png")
        try:
            report.chart(doc, png)
            print(f"bench: chart written to {_shown(png)}", file=sys.stderr)
        except Exception as exc:  # a chart problem must not lose the measurements
            print(f"bench: no chart: {exc.__class__.__name__}: {exc}", file=sys.stderr)
    return 0


def harness_defaults() -> tuple[list[str], list[str]]:
    from bench.scenarios import SCENARIOS
    from bench.systems import ALL_SYSTEMS

    return list(SCENARIOS), list(ALL_SYSTEMS)


def _shown(path: Path) -> str:
    """The path relative to the working directory when it is below it (no machine paths in logs people paste)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
