"""Turning runs into the report: medians per (scenario, case, system), per-round ratios, Markdown, JSON, PNG.

Ratios are computed round by round (fsmfast's run against nginx's run of the same round and case, which ran
seconds apart) and the median of those per-round ratios is reported, with every round's value beside it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
from pathlib import Path

from bench import deps
from bench.harness import Options, Outcome
from bench.scenarios import SCENARIOS
from bench.systems import ALL_SYSTEMS

SCHEMA = 1


# --- the machine and the software -------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_tag(model: str | None = None) -> str:
    """A short file-name-safe name for the CPU model: "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz" ->
    "intel-xeon-platinum-8375c", "AMD EPYC 7B13 64-Core Processor" -> "amd-epyc-7b13"."""
    text = model if model is not None else cpu_model()
    text = re.sub(r"\((R|TM|tm|r)\)", " ", text)
    text = re.sub(r"@.*$", " ", text)
    text = re.sub(r"\b(CPU|Processor|\d+-Core|with .*)\b", " ", text, flags=re.I)
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "unknown-cpu"


def _first_line(cmd: list[str]) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[0].strip() if text else None


def versions() -> dict:
    import fsmfast
    from fsmfast._compiled import describe

    out: dict = {"python": platform.python_version(), "fsmfast": fsmfast.__version__}
    out["fsmfast_hot_paths"] = describe()
    for mod in ("uvloop", "httptools", "redis"):  # redis: redis-py, fsmfast's client in S9
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    for name, cmd in (
        ("nginx", ["nginx", "-v"]),
        ("haproxy", ["haproxy", "-v"]),
        ("wrk", ["wrk", "-v"]),
        ("openssl", ["openssl", "version"]),
        ("redis-server", ["redis-server", "--version"]),
    ):
        path = deps.which(cmd[0])
        line = _first_line([path, *cmd[1:]]) if path else None
        # "nginx version: nginx/1.22.1", "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://...",
        # "wrk debian/4.1.0-3+b2 [epoll] Copyright ...", "Redis server v=7.0.15 sha=...": keep the name and version.
        out[name] = (
            re.sub(r"^nginx version: |\s+-\s+https?://\S+$|\s+Copyright.*$|\s+sha=.*$", "", line) if line else None
        )
    out["kernel"] = platform.release()
    commit = _first_line(["git", "-C", str(Path(__file__).resolve().parent.parent), "rev-parse", "--short", "HEAD"])
    exported = os.environ.get("FSMFAST_BENCH_REVISION")
    if exported:
        # A run from an exported tree (git archive), which has no .git: the exporter says which commit it was.
        out["fsmfast_commit"] = exported
        out["fsmfast_uncommitted_changes"] = False
    elif commit and re.fullmatch(r"[0-9a-f]{4,40}", commit):
        out["fsmfast_commit"] = commit
        # Read-only check (diff-index never writes the index): did fsmfast/ differ from that commit?
        proc = subprocess.run(
            [
                "git",
                "-C",
                str(Path(__file__).resolve().parent.parent),
                "diff-index",
                "--quiet",
                "HEAD",
                "--",
                "fsmfast",
            ],
            capture_output=True,
            check=False,
        )
        out["fsmfast_uncommitted_changes"] = proc.returncode == 1
    return out


def machine() -> dict:
    model = cpu_model()
    return {"cpu_model": model, "cpus": os.cpu_count(), "host_tag": host_tag(model)}


# --- aggregation -------------------------------------------------------------------------------------


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ratio(doc: dict, sid: str, case: str, vs: str, system: str) -> dict | None:
    """One ratio entry; records written before the floor existed have no "system" (all were fsmfast's)."""
    for x in doc["ratios"]:
        if (x["scenario"], x["case"], x["vs"], x.get("system", "fsmfast")) == (sid, case, vs, system):
            return x
    return None


def _label(scenario: str, case: str) -> str:
    s = SCENARIOS[scenario]
    return f"{s.id} {s.name}" + (f" ({case})" if len(s.cases) > 1 else "")


def summarise(out: Outcome, opts: Options) -> tuple[list[dict], list[dict]]:
    summary: list[dict] = []
    ratios: list[dict] = []
    for sid in opts.scenarios:
        for case in SCENARIOS[sid].cases:
            by_system: dict[str, dict[int, dict]] = {}
            for run in out.runs:
                if run["scenario"] == sid and run["case"] == case.name:
                    by_system.setdefault(run["system"], {})[run["round"]] = run
            for system in opts.systems:
                runs = list(by_system.get(system, {}).values())
                if not runs:
                    continue
                rps = [r["rps"] for r in runs]
                summary.append(
                    {
                        "scenario": sid,
                        "case": case.name,
                        "system": system,
                        "rounds": len(runs),
                        "rps_median": _median(rps),
                        "rps_min": min(rps),
                        "rps_max": max(rps),
                        "p50_us_median": _median([r["latency_us"]["p50"] for r in runs]),
                        "p99_us_median": _median([r["latency_us"]["p99"] for r in runs]),
                        "cpu_us_per_req_median": _median([r.get("cpu_us_per_req") for r in runs]),
                        "cpu_user_us_per_req_median": _median([r.get("cpu_user_us_per_req") for r in runs]),
                        "cpu_sys_us_per_req_median": _median([r.get("cpu_sys_us_per_req") for r in runs]),
                        "cpu_util_median": _median([r.get("cpu_util") for r in runs]),
                        "rss_peak_kib_max": max((r.get("rss_peak_kib") or 0) for r in runs) or None,
                        "harness_cpu_util_median": _median([r["harness_cpu_util"] for r in runs]),
                        "other_load_cores_median": _median([r.get("other_load_cores") for r in runs]),
                        "upstream_new_conns_median": _median([r.get("upstream_new_conns") for r in runs]),
                        "socket_errors": sum(sum(r["errors"].values()) for r in runs),
                        "non_2xx_3xx": sum(r["non_2xx_3xx"] for r in runs),
                        "requests": sum(r["requests"] for r in runs),
                    }
                )
            # fsmfast against each peer; the floor relay against nginx, to show what the event loop alone costs.
            for subject, other in (("fsmfast", "nginx"), ("fsmfast", "haproxy"), ("floor", "nginx")):
                ours = by_system.get(subject, {})
                theirs = by_system.get(other, {})
                rounds = sorted(set(ours) & set(theirs))
                if not rounds:
                    continue
                rps_r = [ours[r]["rps"] / theirs[r]["rps"] if theirs[r]["rps"] else None for r in rounds]
                cpu_r = []
                for r in rounds:
                    a, b = ours[r].get("cpu_us_per_req"), theirs[r].get("cpu_us_per_req")
                    cpu_r.append(a / b if a and b else None)
                ratios.append(
                    {
                        "scenario": sid,
                        "case": case.name,
                        "system": subject,
                        "vs": other,
                        "rounds": rounds,
                        "rps_ratio_per_round": [None if x is None else round(x, 3) for x in rps_r],
                        "rps_ratio_median": _median(rps_r),
                        "cpu_per_req_ratio_per_round": [None if x is None else round(x, 3) for x in cpu_r],
                        "cpu_per_req_ratio_median": _median(cpu_r),
                    }
                )
    return summary, ratios


# --- output ------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _split(row: dict) -> str:
    user, system = row.get("cpu_user_us_per_req_median"), row.get("cpu_sys_us_per_req_median")
    return "—" if user is None or system is None else f"{user:.1f} / {system:.1f}"


def markdown(doc: dict) -> str:
    s = doc["settings"]
    mach, ver = doc["machine"], doc["versions"]
    pin = "proxy on CPU 1; wrk, upstream and harness on CPU 0" if s["pin"] == "split" else "no pinning"
    lines = [
        f"## fsmfast vs nginx vs HAProxy — {doc['date']}, {mach['cpu_model']} ({mach['cpus']} CPUs)",
        "",
        f"`{doc['command']}` — {s['rounds']} round(s) x {s['duration']:g} s per run (+{s['warmup']:g} s warm-up), "
        f"{s['connections']} connections, wrk -t{s['threads']}, {pin}. "
        f"fsmfast {ver.get('fsmfast')} ({ver.get('fsmfast_hot_paths')}), {ver.get('nginx')}, "
        f"{ver.get('haproxy')}, {ver.get('wrk')}, Python {ver.get('python')}, "
        f"uvloop {ver.get('uvloop')}.",
        "",
        "Medians over rounds. CPU = user+sys of all the proxy's processes per completed request (user / sys: "
        "the two parts); "
        "CPU % = share of one core the proxy used; RSS = peak of the summed VmRSS of its processes; "
        "CPU0 % = wrk + upstream (+ Redis in S9) busy share (near 100 % means the harness side capped the rate); "
        "other = CPU the rest of the machine used meanwhile, in cores (in proxy runs: other jobs competing; "
        "in direct runs CPU 1 is idle by design and other jobs fill it).",
        "",
        "| scenario | system | req/s (min–max) | p50 ms | p99 ms | CPU µs/req | user / sys µs | CPU % "
        "| peak RSS MiB | CPU0 % | other | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    unsupported = {(u["scenario"], u["system"]): u["reason"] for u in doc["unsupported"]}
    failed = {(f["scenario"], f["system"]): f["error"] for f in doc["failures"] if "round" not in f}
    for sid in s["scenarios"]:
        for case in SCENARIOS[sid].cases:
            label = _label(sid, case.name)
            for system in s["systems"]:
                row = next(
                    (
                        r
                        for r in doc["summary"]
                        if r["scenario"] == sid and r["case"] == case.name and r["system"] == system
                    ),
                    None,
                )
                if row is None:
                    why = unsupported.get((sid, system))
                    text = f"n/a ({why})" if why else f"failed ({(failed.get((sid, system)) or '?').splitlines()[0]})"
                    lines.append(f"| {label} | {system} | {text} | | | | | | | | | |")
                    continue
                errors = row["socket_errors"] + row["non_2xx_3xx"]
                err = str(errors) if not errors else f"{row['socket_errors']} sock, {row['non_2xx_3xx']} non-2xx"
                cpu_pct = None if row["cpu_util_median"] is None else row["cpu_util_median"] * 100
                rss = None if row["rss_peak_kib_max"] is None else row["rss_peak_kib_max"] / 1024
                spread = f" ({row['rps_min']:,.0f}–{row['rps_max']:,.0f})" if row["rounds"] > 1 else ""
                lines.append(
                    f"| {label} | {system} | {_fmt(row['rps_median'], ',.0f')}{spread} "
                    f"| {_fmt(row['p50_us_median'] / 1000, '.2f')} | {_fmt(row['p99_us_median'] / 1000, '.2f')} "
                    f"| {_fmt(row['cpu_us_per_req_median'], '.1f')} | {_split(row)} | {_fmt(cpu_pct, '.0f')} "
                    f"| {_fmt(rss, '.1f')} "
                    f"| {_fmt(row['harness_cpu_util_median'] * 100, '.0f')} "
                    f"| {_fmt(row['other_load_cores_median'], '.2f')} | {err} |"
                )
    lines += [
        "",
        "Ratios: median of per-round ratios (each round's values in brackets). req/s above 1 = fsmfast faster; "
        "CPU/req above 1 = fsmfast spends more CPU per request.",
        "",
        "| scenario | fsmfast/nginx req/s | fsmfast/haproxy req/s | fsmfast/nginx CPU/req | fsmfast/haproxy CPU/req |",
        "|---|---|---|---|---|",
    ]

    def cell(sid: str, case: str, vs: str, key: str, system: str = "fsmfast") -> str:
        r = _ratio(doc, sid, case, vs, system)
        if r is None or r[f"{key}_median"] is None:
            return "n/a"
        per = ", ".join("—" if v is None else f"{v:.2f}" for v in r[f"{key}_per_round"])
        return f"{r[f'{key}_median']:.2f} ({per})"

    for sid in s["scenarios"]:
        for case in SCENARIOS[sid].cases:
            cells = [
                cell(sid, case.name, vs, k) for k in ("rps_ratio", "cpu_per_req_ratio") for vs in ("nginx", "haproxy")
            ]
            lines.append(f"| {_label(sid, case.name)} | {' | '.join(cells)} |")
    floors = [
        f"{_label(sid, case.name)}: {cell(sid, case.name, 'nginx', 'cpu_per_req_ratio', 'floor')}"
        for sid in s["scenarios"]
        for case in SCENARIOS[sid].cases
        if _ratio(doc, sid, case.name, "nginx", "floor") is not None
    ]
    if floors:
        lines += [
            "",
            "The floor (bench/floor.py: a bare uvloop byte relay, no HTTP) against nginx, CPU/req: "
            + "; ".join(floors)
            + ". No proxy built on uvloop's Protocol callbacks spends less than the floor.",
        ]
    lines += _fleet(doc)
    idle = doc.get("idle") or []
    if idle:
        sids = [sid for sid in s["scenarios"] if any(i["scenario"] == sid for i in idle)]
        lines += [
            "",
            "Idle worker RSS, MiB: the largest serving process (a master's children, else the one process) once "
            "the system is up and has answered the pre-flight request, before any load.",
            "",
            "| system | " + " | ".join(sids) + " |",
            "|---|" + "---:|" * len(sids),
        ]
        for system in [x for x in s["systems"] if any(i["system"] == x for i in idle)]:
            cells = []
            for sid in sids:
                kib = next((i["worker_rss_kib"] for i in idle if i["scenario"] == sid and i["system"] == system), None)
                cells.append("n/a" if kib is None else f"{kib / 1024:.1f}")
            lines.append(f"| {system} | {' | '.join(cells)} |")
    problems = doc["failures"]
    if problems or doc["logs"]:
        lines += ["", "Problems seen during the run:", ""]
        for f in problems:
            where = " ".join(str(f[k]) for k in ("scenario", "case", "system", "round") if k in f)
            lines.append(f"- {where}: {(f.get('error') or '').splitlines()[0] if f.get('error') else ''}")
        for entry in doc["logs"]:
            lines.append(f"- {entry['scenario']} {entry['system']} logged: {entry['lines'][0][:200]}")
    return "\n".join(lines) + "\n"


def _fleet(doc: dict) -> list[str]:
    """S9's paragraph: that Redis decided fsmfast's requests, what Redis spent, and fsmfast's CPU per request in
    S9 against its own S1 and S8 of the same run (nginx and HAProxy run S8's local limit in S9)."""
    runs = [r for r in doc["runs"] if "redis_decisions" in r]
    if not runs:
        return []
    per_run = [
        f"{r['scenario']} round {r['round']}: {r['redis_decisions'] / r['requests'] if r['requests'] else 0:.2f} "
        f"decisions per request, {'?' if r['redis_failures'] is None else r['redis_failures']} without one, "
        f"Redis {_fmt(r.get('redis_cpu_us_per_req'), '.1f')} µs/req"
        for r in runs
    ]
    text = (
        "Fleet-wide limit (fsmfast with --ratelimit-redis; nginx and HAProxy have no Redis-backed limiter and run "
        "S8's local one in S9). Redis decisions per fsmfast request, requests let through without one (fail-open), "
        "Redis's own CPU (on CPU 0, not in fsmfast's figure): " + "; ".join(per_run) + "."
    )
    medians = {
        r["scenario"]: r["cpu_us_per_req_median"]
        for r in doc["summary"]
        if r["system"] == "fsmfast" and r["scenario"] in ("S1", "S8", "S9")
    }
    growth = [
        f"S9/{base} {medians['S9'] / medians[base]:.2f}"
        for base in ("S1", "S8")
        if medians.get(base) and medians.get("S9")
    ]
    if growth:
        text += " fsmfast CPU/req (medians of this run): " + ", ".join(growth) + "."
    return ["", text]


def chart(doc: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [_label(sid, c.name) for sid in doc["settings"]["scenarios"] for c in SCENARIOS[sid].cases]
    keys = [(sid, c.name) for sid in doc["settings"]["scenarios"] for c in SCENARIOS[sid].cases]
    fig, axes = plt.subplots(2, 1, figsize=(max(7.0, 1.3 * len(labels)), 8.0))
    width = 0.38
    for ax, key, title in (
        (axes[0], "rps_ratio_median", "throughput: fsmfast / X req/s (higher is better)"),
        (axes[1], "cpu_per_req_ratio_median", "CPU per request: fsmfast / X (lower is better)"),
    ):
        for k, (vs, color) in enumerate((("nginx", "#4c72b0"), ("haproxy", "#dd8452"))):
            xs, ys = [], []
            for i, (sid, case) in enumerate(keys):
                r = _ratio(doc, sid, case, vs, "fsmfast")
                value = r[key] if r is not None else None
                x = i + (k - 0.5) * width
                if value is None:
                    ax.text(x, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
                    continue
                xs.append(x)
                ys.append(value)
            bars = ax.bar(xs, ys, width, label=f"vs {vs}", color=color)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    mach = doc["machine"]
    fig.suptitle(
        f"fsmfast ratios, median of {doc['settings']['rounds']} rounds — {doc['date']}, {mach['cpu_model']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def document(out: Outcome, opts: Options, command: str, started: dt.datetime, elapsed: float) -> dict:
    summary, ratios = summarise(out, opts)
    return {
        "schema": SCHEMA,
        "date": started.strftime("%Y-%m-%d"),
        "started": started.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "command": command,
        "machine": machine(),
        "versions": out.versions,
        "settings": {
            "scenarios": opts.scenarios,
            "systems": opts.systems,
            "rounds": opts.rounds,
            "duration": opts.duration,
            "warmup": opts.warmup,
            "connections": opts.connections,
            "threads": opts.threads,
            "pin": opts.pin,
            "cpus": out.cpus,
        },
        "scenarios": {
            sid: {
                "name": SCENARIOS[sid].name,
                "summary": SCENARIOS[sid].summary,
                "cases": [c.name for c in SCENARIOS[sid].cases],
            }
            for sid in opts.scenarios
        },
        "summary": summary,
        "ratios": ratios,
        "unsupported": out.unsupported,
        "failures": out.failures,
        "logs": out.logs,
        "idle": out.idle,
        "runs": out.runs,
    }


def write_json(doc: dict, results_dir: Path, suffix: str = "") -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{doc['date']}-{doc['machine']['host_tag']}{suffix}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


__all__ = ["ALL_SYSTEMS", "chart", "document", "markdown", "versions", "write_json"]
