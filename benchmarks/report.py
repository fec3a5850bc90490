"""benchmarks/results/SUMMARY.md: every benchmark's figures, its target, and the machine.

``make bench`` calls this three ways:

    python benchmarks/report.py --begin                      # machine + load before anything runs
    python benchmarks/report.py --record SCRIPT EXIT SECONDS # after each benchmark script
    python benchmarks/report.py                              # the summary, from results/*.json

Run with no arguments it only reads what is in benchmarks/results/ (a figure whose JSON is
missing is listed as not measured), so it is cheap and safe to run at any time. Every figure
is shown with the load average recorded when it was measured: on a shared machine the same
code gives different numbers at load 1 and at load 10.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, machine_info, now_iso
from ise_core.atomic import atomic_write_text
from ise_core.records import write_json

SESSION = RESULTS / "session.json"
SUMMARY = RESULTS / "SUMMARY.md"

Row = tuple[str, str, str, str]  # figure, value, target, met


def _read(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _get(data: dict[str, Any] | None, *keys: str | int) -> Any:
    value: Any = data
    for key in keys:
        if isinstance(value, dict):
            value = value.get(str(key))
        elif isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
            value = value[key]
        else:
            return None
    return value


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "not measured"
    if isinstance(value, float):
        text = f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def _mtime(path: Path) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")


def _met(flag: Any) -> str:
    if flag is None:
        return "-"
    return "yes" if flag else "**no**"


def _at_most(value: Any, limit: float) -> bool | None:
    return None if not isinstance(value, int | float) else value <= limit


def _load(value: Any) -> str:
    if isinstance(value, list) and value:
        return " / ".join(f"{x:g}" for x in value[:3])
    if isinstance(value, int | float):
        return f"{value:g}"
    return "?"


# --- one section per benchmark ------------------------------------------------------------------


def saturation_cli(data: dict[str, Any]) -> tuple[str, list[Row]]:
    note = (
        f"{data.get('intents')} intents a run, latency {data.get('latency_s')} s, C = "
        f"{data.get('max_concurrency')}; saturation = achieved req/s / (C / latency); each shape "
        f"with default settings and with the old explicit flags; load "
        f"{_load(data.get('load_average_before'))} (1/5/15 min) at the start, "
        f"{_load(data.get('load_average_after'))} at the end"
    )
    rows: list[Row] = []
    for run in data.get("runs") or []:
        target = run.get("target")
        rows.append(
            (
                f"{run.get('shape')}, {run.get('config')} ({run.get('episodes_at_once')} at "
                f"once, {run.get('requests_per_episode')} requests an episode; load "
                f"{_load(run.get('load_average_before'))})",
                f"{_fmt(run.get('saturation'))} (ceiling {_fmt(run.get('workload_ceiling'))}; "
                f"{_fmt(run.get('wall_s'), 's')}; "
                f"{_fmt(run.get('pipeline_cpu_ms_per_request'), 'ms')} CPU a request)",
                f">= {target}" if target is not None else "-",
                _met(run.get("target_met")),
            )
        )
    ceiling = _get(data, "machine_ceiling", "efficiency")
    rows.append(("bare HTTP client at the same moment (machine ceiling)", _fmt(ceiling), "-", "-"))
    return note, rows


def saturation_airflow(data: dict[str, Any]) -> tuple[str, list[Row]]:
    note = (
        f"{data.get('intents')} intents, "
        f"{_get(data, 'episode_shape', 'requests_per_episode')} requests per episode, "
        f"simulate.concurrency {data.get('episodes_at_once')}; `ise simulate` on the same "
        f"intents: {_fmt(_get(data, 'cli', 'wall_s'), 's')} at load "
        f"{_load(_get(data, 'cli', 'load_average_before'))}. dag.test() runs instances one "
        "after another in one process; LocalExecutor runs each in its own process"
    )
    rows: list[Row] = []
    for run in data.get("runs") or []:
        name = (
            f"{run.get('runner')}, parallelism {run.get('parallelism')}, "
            f"intents_per_task={run.get('intents_per_task')}"
        )
        load = _load(run.get("load_average_before"))
        rows.append(
            (
                f"{name}: overhead per mapped instance (load {load})",
                f"{_fmt(run.get('overhead_per_ti_ms'), 'ms')} over "
                f"{run.get('mapped_instances')} instances",
                "-",
                "-",
            )
        )
        rows.append(
            (
                f"{name}: Airflow simulate span / CLI wall",
                f"{_fmt(run.get('ratio_to_cli'))}x ({_fmt(run.get('span_s'), 's')}; whole DAG "
                f"run {_fmt(run.get('dag_run_wall_s'), 's')})",
                "-",
                "-",
            )
        )
    return note, rows


def intents_scale(data: dict[str, Any]) -> tuple[str, list[Row]]:
    targets = data.get("targets") or {}
    cold = data.get("cold") or {}
    counts = cold.get("counts") or {}
    settings = data.get("settings") or {}
    machine = data.get("machine") or {}
    note = (
        f"{_fmt(data.get('count'))} intents sampled, embedding {settings.get('model', '?')} on "
        f"{settings.get('backend', '?')}; load {_load(machine.get('load_average_at_start'))}"
        f" at the start, {_load(machine.get('load_average_at_end'))} at the end"
    )
    rows: list[Row] = []
    equivalence = data.get("equivalence") or {}
    for backend, figures in sorted((equivalence.get("backends") or {}).items()):
        vs = figures.get("vs_torch") or {}
        value = f"{_fmt(figures.get('sentences_per_s'), 'sentences/s')}"
        if vs:
            value += (
                f"; cosine {_fmt(vs.get('mean_cosine'))}, pairs {_fmt(vs.get('pair_agreement'))},"
                f" Vendi diff {_fmt(vs.get('vendi_relative_difference'))}"
            )
        rows.append(
            (
                f"equivalence, {backend} ({_fmt(equivalence.get('n_texts'))} requests)",
                value,
                "bounds" if vs else "-",
                _met(vs.get("within_bounds")) if vs else "-",
            )
        )
    if equivalence:
        rows.append(
            (
                "fastest backend within the bounds",
                str(equivalence.get("fastest_within_bounds")),
                str(equivalence.get("default_backend")),
                _met(
                    equivalence.get("fastest_within_bounds") == equivalence.get("default_backend")
                ),
            )
        )
    if cold:
        rows += [
            (
                "write-out (scripted writer)",
                _fmt(_get(cold, "sample_and_write_out", "wall_s"), "s"),
                "-",
                "-",
            ),
            (
                f"embedding ({_fmt(_get(cold, 'embedding', 'n_computed'))} texts)",
                f"{_fmt(targets.get('embedding_s'), 's')}; "
                f"{_fmt(_get(cold, 'embedding', 'sentences_per_s'), 'sentences/s')}",
                "<= 600 s",
                _met(targets.get("embedding_within_10_min")),
            ),
            (
                "near de-duplication + Vendi",
                _fmt(targets.get("near_dedup_plus_vendi_s"), "s"),
                "<= 20 s",
                _met(targets.get("near_dedup_plus_vendi_within_20_s")),
            ),
            (
                "peak memory of de-duplication",
                _fmt(targets.get("dedup_peak_rss_gib"), "GiB"),
                "<= 4 GiB",
                _met(targets.get("dedup_within_4_gib")),
            ),
            (
                "unique intents; Vendi (published: 43,956; 61.57)",
                f"{_fmt(counts.get('n_unique'))}; {_fmt(counts.get('vendi_score'))}",
                "-",
                "-",
            ),
            (
                "warm re-run (texts embedded)",
                f"{_fmt(targets.get('warm_total_s'), 's')} ({_fmt(targets.get('warm_embedded'))})",
                "<= 60 s",
                _met(targets.get("warm_within_60_s")),
            ),
        ]
    return note, rows


def workspace_overhead(data: dict[str, Any]) -> tuple[str, list[Row]]:
    note = (
        f"{data.get('calls')} calls of `echo hi` per backend; load "
        f"{_load(data.get('load_average_before'))} before, "
        f"{_load(data.get('load_average_after'))} after"
    )
    targets = data.get("targets_ms") or {}
    backends = data.get("backends") or {}
    rows: list[Row] = [
        (
            "plain subprocess, median",
            _fmt(_get(data, "plain_subprocess", "median_ms"), "ms"),
            "-",
            "-",
        )
    ]
    for name in sorted(backends):
        figures = backends[name]
        if not isinstance(figures, dict) or "exec" not in figures:
            reason = figures.get("skipped") if isinstance(figures, dict) else figures
            rows.append((f"{name} backend", f"skipped: {reason}", "-", "-"))
            continue
        exec_ms = _get(figures, "exec", "median_ms")
        exec_target = _get(targets, name, "exec")
        rows.append(
            (
                f"{name}: exec median (p95)",
                f"{_fmt(exec_ms, 'ms')} ({_fmt(_get(figures, 'exec', 'p95_ms'), 'ms')})",
                f"<= {exec_target:g} ms" if exec_target else "-",
                _met(_at_most(exec_ms, exec_target)) if exec_target else "-",
            )
        )
        open_ms = _get(figures, "open_close", "median_ms")
        open_target = _get(targets, name, "open_close")
        rows.append(
            (
                f"{name}: open + close median",
                _fmt(open_ms, "ms"),
                f"<= {open_target:g} ms" if open_target else "-",
                _met(_at_most(open_ms, open_target)) if open_target else "-",
            )
        )
        if "pool_acquire" not in figures:
            continue
        acquire_ms = _get(figures, "pool_acquire", "median_ms")
        acquire_target = _get(targets, name, "pool_acquire")
        rows.append(
            (
                f"{name}: cold open median",
                _fmt(_get(figures, "cold_open", "median_ms"), "ms"),
                "-",
                "-",
            )
        )
        rows.append(
            (
                f"{name}: acquire from the pool median (p95)",
                f"{_fmt(acquire_ms, 'ms')} ({_fmt(_get(figures, 'pool_acquire', 'p95_ms'), 'ms')})",
                f"<= {acquire_target:g} ms" if acquire_target else "-",
                _met(_at_most(acquire_ms, acquire_target)) if acquire_target else "-",
            )
        )
        rows.append(
            (
                f"{name}: give back to the pool (wipe) median",
                _fmt(_get(figures, "pool_release", "median_ms"), "ms"),
                "-",
                "-",
            )
        )
    return note, rows


def llm_throughput(data: dict[str, Any]) -> tuple[str, list[Row]]:
    note = (
        f"{data.get('requests')} requests at concurrency {data.get('concurrency')}, latency "
        f"{data.get('server_latency_s')} s; load {_load(data.get('load_average_1m'))} (1 min)"
    )
    rows: list[Row] = [
        (
            "client efficiency (achieved / ideal req/s)",
            f"{_fmt(data.get('efficiency'))} ({_fmt(data.get('throughput_rps'))} of "
            f"{_fmt(data.get('ideal_rps'))} req/s)",
            f">= {data.get('target', 0.9)}",
            _met(data.get("target_met")),
        ),
        (
            "bare HTTP library, same load (machine floor)",
            _fmt(_get(data, "bare_transport", "efficiency")),
            "-",
            "-",
        ),
        ("client CPU per request", _fmt(data.get("client_cpu_ms_per_request"), "ms"), "-", "-"),
    ]
    return note, rows


def limiter_fairness(data: dict[str, Any]) -> tuple[str, list[Row]]:
    params = data.get("params") or {}
    note = (
        f"{params.get('workers')} workers sending {params.get('small')}-token requests for "
        f"{params.get('seconds')} s at {params.get('tpm')} tokens/min, one "
        f"{params.get('large')}-token request arriving {params.get('arrive')} s in; load "
        f"{_load(data.get('load_average_before'))} (1/5/15 min)"
    )
    rows: list[Row] = []
    for policy, label in (("greedy", "previous (retry loop)"), ("fifo", "arrival order")):
        run = data.get(policy) or {}
        rows.append(
            (
                f"{label}: large request's wait (bound {_fmt(run.get('large_wait_bound_s'))} s)",
                _fmt(run.get("large_wait_s"), "s"),
                "<= bound + 0.5 s" if policy == "fifo" else "-",
                _met(data.get("target_met")) if policy == "fifo" else "-",
            )
        )
        rows.append(
            (f"{label}: tokens/s granted / limit", _fmt(run.get("throughput_ratio")), "-", "-")
        )
    return note, rows


def viewer_scale(data: dict[str, Any]) -> tuple[str, list[Row]]:
    note = (
        f"{data.get('episodes'):,} episodes served by `ise view`, "
        f"{_get(data, 'list', 'n')} list and {_get(data, 'episode', 'n')} episode requests; load "
        f"{_load(_get(data, 'load_average', 'before'))} before, "
        f"{_load(_get(data, 'load_average', 'after'))} after"
    )
    targets = data.get("targets_ms") or {}
    rows: list[Row] = []
    for label, key, target in (
        ("list page p95 (median)", "list", targets.get("list")),
        ("list page p95, first request of each filter", "list_first_request_per_filter", None),
        ("episode page p95 (median)", "episode", targets.get("episode")),
    ):
        p95 = _get(data, key, "p95_ms")
        rows.append(
            (
                label,
                f"{_fmt(p95, 'ms')} ({_fmt(_get(data, key, 'median_ms'), 'ms')})",
                f"<= {target:g} ms" if target else "-",
                _met(_at_most(p95, target)) if target else "-",
            )
        )
    rows.append(
        (
            "server ready (index and intent offsets read)",
            _fmt(data.get("server_ready_s"), "s"),
            "-",
            "-",
        )
    )
    rows.append(("server memory (RSS)", _fmt(data.get("server_rss_mib"), "MiB"), "-", "-"))
    return note, rows


def real_model(data: dict[str, Any]) -> tuple[str, list[Row]]:
    runs = data.get("runs") or []
    episodes = runs[0].get("episodes") if runs else None
    note = (
        f"llama-server with SmolLM2-135M-Instruct, {episodes} intents per configuration "
        f"(user and agent on the server); load {_load(_get(data, 'machine', 'load_average'))} "
        "at the start"
    )
    rows: list[Row] = []
    for run in runs:
        slots, limit = run.get("server_slots"), run.get("max_concurrency")
        label = (
            "scripted program"
            if run.get("config") == "scripted"
            else f"{slots} slots, llm.max_concurrency {limit}"
        )
        rows.append((f"{label}: episodes/hour", _fmt(run.get("episodes_per_hour")), "-", "-"))
        tokens = (
            f"{_fmt(run.get('completion_tokens_per_s'))} / {_fmt(run.get('total_tokens_per_s'))}"
        )
        rows.append((f"{label}: completion / total tokens/s", tokens, "-", "-"))
        rows.append(
            (
                f"{label}: kept share, busy slots, stop reasons",
                f"{_fmt(run.get('kept_share'))}, {_fmt(run.get('mean_busy_slots'))}, "
                f"{run.get('stop_reasons')}",
                "-",
                "-",
            )
        )
        calls = " / ".join(
            str(run.get(key)) for key in ("tool_calls", "tool_calls_ok", "text_tool_calls")
        )
        rows.append((f"{label}: tool calls / successful / read from text", calls, "-", "-"))
    return note, rows


def quota_overshoot(data: dict[str, Any]) -> tuple[str, list[Row]]:
    quota, bound = data.get("quota_mb"), data.get("bound_mb")
    note = (
        f"{data.get('runs')} runs per backend of `{data.get('filler')}` in a workspace with a "
        f"{quota} MB quota; load {_load(data.get('load_average_before'))} (1/5/15 min)"
    )
    rows: list[Row] = []
    for backend, run in (data.get("backends") or {}).items():
        if run.get("skipped"):
            rows.append((f"{backend}: skipped", str(run["skipped"]), "-", "-"))
            continue
        rows.append(
            (
                f"{backend}: most past the quota (writer ~{run.get('writer_mb_per_s')} MB/s)",
                _fmt(run.get("max_overshoot_mb"), "MB"),
                f"<= {bound} MB",
                _met(run.get("within_bound")),
            )
        )
    return note, rows


SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], tuple[str, list[Row]]]]] = [
    ("saturation_cli", "Saturation: `ise simulate` against the loopback endpoint", saturation_cli),
    ("saturation_airflow", "Saturation: the same work through the Airflow DAG", saturation_airflow),
    ("intents_scale", "Stage 1 at scale", intents_scale),
    ("workspace_overhead", "Workspace overhead per call", workspace_overhead),
    ("quota_overshoot", "Workspace quota against a fast disk filler", quota_overshoot),
    ("viewer_scale", "The viewer at 50,000 episodes", viewer_scale),
    ("llm_throughput", "LLM client throughput", llm_throughput),
    (
        "limiter_fairness",
        "Tokens-per-minute limiter: a large request in a small stream",
        limiter_fairness,
    ),
    ("real_model", "A real model on this machine (llama-server)", real_model),
]


def render(session: dict[str, Any] | None, results: Path = RESULTS) -> str:
    """The summary's markdown from the JSON files in ``results`` (and the session record)."""
    machine = (session or {}).get("machine") or machine_info()
    lines = [
        "# Benchmark summary",
        "",
        f"Written {now_iso()} by `benchmarks/report.py` from `benchmarks/results/*.json`.",
        "",
        "| machine | |",
        "|---|---|",
        f"| nproc | {machine.get('nproc')} |",
        f"| memory | {machine.get('memory_gib')} GiB |",
        f"| CPU model | {machine.get('cpu_model')} |",
        f"| platform | {machine.get('platform')}, Python {machine.get('python')} |",
        f"| load average at start (1/5/15 min) | {_load(machine.get('load_average'))} |",
    ]
    if session:
        lines.append(f"| `make bench` started | {session.get('started')} |")
    lines.append("")
    runs = (session or {}).get("runs") or {}
    if runs:
        lines += ["| script | exit | seconds |", "|---|---|---|"]
        for script, run in runs.items():
            lines.append(f"| {script} | {run['exit']} | {run['seconds']} |")
        lines.append("")
    for name, title, section in SECTIONS:
        data = _read(results, name)
        lines += [f"## {title}", ""]
        if data is None:
            lines += [f"Not measured: `benchmarks/results/{name}.json` is missing.", ""]
            continue
        when = data.get("measured_at") or data.get("started") or _mtime(results / f"{name}.json")
        try:
            note, rows = section(data)
        except (TypeError, KeyError, AttributeError) as exc:
            lines += [f"`{name}.json` has an unexpected shape ({exc}); see the file.", ""]
            continue
        lines += [f"Measured {when}. {note}.", ""]
        lines += ["| figure | value | target | met |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--begin", action="store_true", help="record the machine before a run")
    parser.add_argument(
        "--record", nargs=3, metavar=("SCRIPT", "EXIT", "SECONDS"), help="record one script"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of results JSON")
    parser.add_argument("--out", type=Path, default=None, help="default: RESULTS/SUMMARY.md")
    args = parser.parse_args(argv)
    session_path = args.results / SESSION.name
    if args.begin:
        write_json(session_path, {"started": now_iso(), "machine": machine_info(), "runs": {}})
        return 0
    session = None
    if session_path.exists():
        session = json.loads(session_path.read_text(encoding="utf-8"))
    if args.record:
        script, code, seconds = args.record
        session = session or {"started": now_iso(), "machine": machine_info(), "runs": {}}
        session["runs"][Path(script).name] = {"exit": int(code), "seconds": int(seconds)}
        write_json(session_path, session)
        return 0
    out = args.out or args.results / SUMMARY.name
    atomic_write_text(out, render(session, args.results) + "\n")
    print(f"summary written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
