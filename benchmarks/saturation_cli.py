"""Does `ise simulate` keep a model endpoint at its concurrency limit by default?

Three episode shapes are simulated by `ise simulate` against the loopback OpenAI-compatible
server (tests/fakes/both_roles.py, in its own process) that plays both the role-locked user and
the agent with a fixed latency per request (300 ms); the client's limit is C =
llm.max_concurrency = 16 requests in flight:

* ``short``: 3 user turns, 3 tool calls each (15 requests an episode);
* ``published``: 8 user turns, 3 tool calls each (40 requests, 24 tool calls, ~64 dialogue
  turns), close to the published averages (8.1 user turns, 29 tool calls, 68 dialogue turns);
* ``mix``: each intent's length follows its hidden details (8 turns from 8 details on, else 3):
  about half of each, in the intents' order, so the run's end depends on which start first.

Each shape runs with default settings apart from the endpoint (``default``: no
``simulate.concurrency``, no flag) and, side by side, with the explicit flags users needed
before (``--concurrency 4``, the old default, and ``--concurrency 16``, one episode per slot).
Every tool call runs for real in a local (bubblewrap) sandbox; the response cache starts empty,
as on a first run.

Figures, per run:

* saturation = achieved request rate / (C / latency), over the whole stage (start-up of the
  episodes and the tail included); targets with default settings: >= 0.9 on ``short``,
  >= 0.95 on ``published``;
* the mean number of requests the server had in flight during its busy window, / C;
* the workload's ceiling: what a pipeline with no overhead would reach with the same episodes
  in flight (below 1 only because the endpoint cannot be full once fewer episodes remain than C);
* episodes per hour, and the pipeline's CPU per request (the simulate process; the sandboxes'
  CPU beside it).

    python benchmarks/saturation_cli.py                      # 3 shapes x 3 settings (~8 min)
    python benchmarks/saturation_cli.py --shapes short --configs default,16
    python benchmarks/saturation_cli.py --shapes published --configs default \\
        --profile /tmp/simulate.txt                          # pyinstrument (*.prof: cProfile)
    python benchmarks/saturation_cli.py --keep /tmp/sat      # keep episodes, logs, reports
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    RESULTS,
    LoopbackServer,
    bare_client_ceiling,
    bench_params,
    episode_counts,
    load_average,
    machine_info,
    now_iso,
    rounded,
    run_simulate,
    write_scripted_intents,
)
from ise_core.capacity import episodes_in_flight
from ise_core.catalog import EpisodeStore
from ise_core.config import load_settings
from ise_core.estimate.projection import EpisodeProfile, replay_schedule
from ise_core.records import read_json, write_json


@dataclass(frozen=True)
class Shape:
    """An episode shape: the loopback server's arguments and the saturation to reach."""

    user_turns: int
    tool_calls: int
    target: float | None
    server_args: tuple[str, ...] = ()


SHAPES = {
    "short": Shape(3, 3, 0.9),
    "published": Shape(8, 3, 0.95),
    "mix": Shape(3, 3, None, ("--mix", "--long-turns", "8", "--long-from", "8")),
}
# Episodes at once: the default (None: from llm.max_concurrency), then the old explicit flags
# (`--configs` also takes any other number).
CONFIGS = ("default", "4", "16")


def workload_ceiling(requests: Sequence[int], at_once: int, limit: int) -> float:
    """The saturation a pipeline with no overhead at all would reach on these episodes.

    Every request takes one latency; episodes are chains of ``requests[i]`` requests, started
    longest first as ``ise simulate`` starts them; ``at_once`` run, sharing ``limit`` slots
    first come first served (the schedule ``ise estimate`` replays). Below 1 only because of
    the end of the stage, when fewer episodes remain than slots.
    """
    profiles = [EpisodeProfile(count, 0.0) for count in requests]
    wall = replay_schedule(profiles, len(profiles), at_once=at_once, slots=limit, latency_s=1.0)
    return sum(requests) / (wall * limit) if wall else 0.0
def episode_requests(params: Path) -> list[int]:
    """Requests each finished episode made (its timing record)."""
    store = EpisodeStore.of(load_settings(params))
    counts = []
    for path in store.paths():
        timing_path = store.timing_path(path.stem)
        timing = read_json(timing_path) if timing_path.exists() else {}
        llm = timing.get("llm") or {}
        counts.append(int(llm.get("requests", 0)) + int(llm.get("cache_hits", 0)))
    return counts


def measure(
    args: argparse.Namespace, scratch: Path, shape_name: str, config: str
) -> dict[str, Any]:
    """One ``ise simulate`` run of ``shape_name`` with ``config``'s episodes at once."""
    shape, flag = SHAPES[shape_name], None if config == "default" else int(config)
    project = scratch / shape_name / config / "project"
    server = LoopbackServer(
        latency_s=args.latency,
        user_turns=shape.user_turns,
        tool_calls=shape.tool_calls,
        limit=args.limit,
        report=project.parent / "server.json",
        extra_args=shape.server_args,
    )
    try:
        params = bench_params(
            project,
            server.base_url,
            intents=args.intents,
            max_concurrency=args.limit,
            episodes_at_once=None,
        )
        n_intents = write_scripted_intents(params)
        at_once, why = episodes_in_flight(load_settings(params), flag)
        load_before = load_average()
        run = run_simulate(params, flag, log=project.parent / "simulate.log", profile=args.profile)
        load_after = load_average()
    finally:
        server.stop()
    served = server.report()
    requests = int(served["requests"])
    saturation = requests / run["wall_s"] / (args.limit / args.latency)
    episodes = episode_counts(params)
    target = shape.target if config == "default" else None
    return {
        "shape": shape_name,
        "config": "default" if flag is None else f"--concurrency {flag}",
        "intents": n_intents,
        "episodes_at_once": at_once,
        "episodes_at_once_from": why,
        "requests": requests,
        "requests_per_episode": rounded(requests / max(1, episodes["n_episodes"]), 2),
        "wall_s": rounded(run["wall_s"]),
        "saturation": rounded(saturation, 4),
        "target": target,
        "target_met": None if target is None else saturation >= target,
        "steady_state": rounded(served["mean_in_flight"] / args.limit, 4),
        # The stage's time outside the server's busy window: start-up and wind-down.
        "outside_busy_window_s": rounded(run["wall_s"] - served["busy_window_s"]),
        "max_in_flight": served["max_in_flight"],
        "workload_ceiling": rounded(
            workload_ceiling(episode_requests(params), at_once, args.limit), 4
        ),
        "episodes_per_hour": round(episodes["n_episodes"] / run["wall_s"] * 3600),
        "pipeline_cpu_ms_per_request": rounded(1000 * run["cpu_s"] / requests),
        "sandbox_cpu_ms_per_request": rounded(1000 * run["children_cpu_s"] / requests),
        "peak_rss_mib": rounded(run["peak_rss_mib"], 1),
        "episodes": episodes,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }


def table(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The runs side by side: one row per shape, one column per setting."""
    configs = list(dict.fromkeys(run["config"] for run in runs))
    lines = [f"{'shape':<10} " + " ".join(f"{c:>26}" for c in configs) + "   target (default)"]
    for shape in dict.fromkeys(run["shape"] for run in runs):
        cells = []
        for config in configs:
            found = [r for r in runs if r["shape"] == shape and r["config"] == config]
            cells.append(
                f"{found[0]['saturation']:.2f} ({found[0]['episodes_at_once']:>2} at once, "
                f"{found[0]['wall_s']:>5.0f} s)"
                if found
                else "-"
            )
        target = SHAPES[shape].target
        lines.append(
            f"{shape:<10} "
            + " ".join(f"{cell:>26}" for cell in cells)
            + f"   {'>= ' + format(target, '.2f') if target else '-'}"
        )
    return lines


def _names(text: str, known: Sequence[str], flag: str, numbers: bool = False) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [n for n in names if n not in known and not (numbers and n.isdigit() and int(n))]
    if unknown or not names:
        also = " or episode counts" if numbers else ""
        raise SystemExit(f"{flag}: expected a comma-separated list of {', '.join(known)}{also}")
    return names


def run_all(args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    runs = []
    for shape in args.shapes:
        for config in args.configs:
            figures = measure(args, scratch, shape, config)
            print(
                f"  {shape:<10} {figures['config']:<16} saturation {figures['saturation']:.3f} "
                f"({figures['episodes_at_once']} at once, {figures['wall_s']:.1f} s, "
                f"ceiling {figures['workload_ceiling']:.3f}, load "
                f"{figures['load_average_before'][0]:.2f})",
                flush=True,
            )
            runs.append(figures)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intents", type=int, default=64, help="intents per run")
    parser.add_argument("--latency", type=float, default=0.3, help="server seconds per reply")
    parser.add_argument("--limit", type=int, default=16, help="llm.max_concurrency (C)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shapes")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="default and/or --concurrency values"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="profile the simulate process: pyinstrument text, or cProfile stats for *.prof",
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "saturation_cli.json")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--no-ceiling",
        dest="ceiling",
        action="store_false",
        help="skip the 8 s bare-client run that measures what the machine allows right now",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="work in this folder and keep it (episodes, logs)"
    )
    args = parser.parse_args(argv)
    args.shapes = _names(args.shapes, list(SHAPES), "--shapes")
    args.configs = _names(args.configs, CONFIGS, "--configs", numbers=True)

    started = time.perf_counter()
    load_before = load_average()
    print(f"saturation_cli: C = {args.limit}, latency {args.latency} s, {args.intents} intents")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        runs = run_all(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="ise-saturation-") as scratch:
            runs = run_all(args, Path(scratch))
    ceiling = bare_client_ceiling(args.latency, args.limit) if args.ceiling else None
    figures = {
        "benchmark": "saturation_cli",
        "measured_at": now_iso(),
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "intents": args.intents,
        "latency_s": args.latency,
        "max_concurrency": args.limit,
        "runs": runs,
        "machine_ceiling": ceiling,
        "target_met": all(r["target_met"] for r in runs if r["target_met"] is not None),
        "command": " ".join(sys.argv),
        "benchmark_wall_s": round(time.perf_counter() - started, 1),
    }
    write_json(args.json, figures)
    print("saturation (achieved req/s / (C / latency)), side by side:")
    for line in table(runs):
        print(f"  {line}")
    if ceiling:
        print(f"  bare HTTP client ceiling on this machine now: {ceiling['efficiency']}")
    loads = f"{figures['load_average_before']} -> {figures['load_average_after']}"
    print(f"load {loads}; -> {args.json}")
    return 1 if args.strict and not figures["target_met"] else 0


if __name__ == "__main__":
    sys.exit(main())
