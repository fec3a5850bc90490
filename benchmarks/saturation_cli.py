"""Does `ise simulate` keep a model endpoint at its concurrency limit, and at what CPU cost?

200 intents (from the scripted writer) are simulated by `ise simulate` against the loopback
OpenAI-compatible server (tests/fakes/both_roles.py, in its own process) that plays both the
role-locked user and the agent with a fixed latency per request (300 ms). The client's limit
is C = llm.max_concurrency = 16 requests in flight; 32 episodes run at once, so that while
some episodes open sandboxes, run tool calls or write files, 16 others have a request out.
Every tool call runs for real in a local (bubblewrap) sandbox; the response cache is on and
starts empty, as on a first run.

Figures:

* efficiency = achieved request rate / (C / latency), over the whole stage (start-up of the
  episodes and the tail included) - target >= 0.9; also the mean number of requests the
  server had in flight during its busy window, divided by C (the steady state); and two
  ceilings to read it against: the workload's (what a pipeline with no overhead would reach,
  below 1 only because the endpoint cannot be full once fewer episodes remain than C) and the
  machine's (a bare HTTP client keeping C requests in flight for 8 s right after the run);
* episodes per hour;
* pipeline CPU per model request: CPU time of the simulate process (its threads, not the
  sandboxes it starts) / requests; the sandboxes' CPU is reported per request beside it.

The default episode shape (8 user turns, 3 tool calls per turn: 41 requests, 24 tool calls,
~64 dialogue turns per episode) is close to the published averages (8.1 user turns, 29 tool
calls, 68 dialogue turns), so request bodies grow as in real runs.

    python benchmarks/saturation_cli.py                      # the default run (~3 min)
    python benchmarks/saturation_cli.py --intents 50 --user-turns 3 --json /tmp/s.json
    python benchmarks/saturation_cli.py --profile /tmp/simulate.txt   # pyinstrument profile
    python benchmarks/saturation_cli.py --profile /tmp/simulate.prof  # cProfile stats
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import deque
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
from ise_core.records import write_json

TARGET = 0.9


def workload_ceiling(episodes: int, requests_per_episode: int, at_once: int, limit: int) -> float:
    """The efficiency a pipeline with no overhead at all would reach on this workload.

    Every request takes one latency; episodes are chains of requests; ``at_once`` episodes
    run, sharing ``limit`` slots first come first served. Below 1 only because of the end of
    the stage, when fewer episodes remain than slots.
    """
    queue: deque[int] = deque()
    remaining: dict[int, int] = {}
    started = 0
    for _ in range(min(at_once, episodes)):
        remaining[started] = requests_per_episode
        queue.append(started)
        started += 1
    rounds = 0
    while queue:
        batch = [queue.popleft() for _ in range(min(limit, len(queue)))]
        rounds += 1
        for episode in batch:
            remaining[episode] -= 1
            if remaining[episode]:
                queue.append(episode)
            elif started < episodes:
                remaining[started] = requests_per_episode
                queue.append(started)
                started += 1
    return episodes * requests_per_episode / (rounds * limit) if rounds else 0.0


def measure(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    project = scratch / "project"
    server = LoopbackServer(
        latency_s=args.latency,
        user_turns=args.user_turns,
        tool_calls=args.tool_calls,
        limit=args.limit,
        report=scratch / "server.json",
    )
    try:
        params = bench_params(
            project,
            server.base_url,
            intents=args.intents,
            max_concurrency=args.limit,
            episodes_at_once=args.episodes_at_once,
        )
        n_intents = write_scripted_intents(params)
        load_before = load_average()
        run = run_simulate(
            params, args.episodes_at_once, log=scratch / "simulate.log", profile=args.profile
        )
        load_after = load_average()
    finally:
        server.stop()
    served = server.report()
    ceiling = bare_client_ceiling(args.latency, args.limit) if args.ceiling else None
    episodes = episode_counts(params)
    requests = int(served["requests"])
    ideal_rps = args.limit / args.latency
    achieved_rps = requests / run["wall_s"]
    efficiency = achieved_rps / ideal_rps
    steady = served["mean_in_flight"] / args.limit
    figures: dict[str, Any] = {
        "benchmark": "saturation_cli",
        "measured_at": now_iso(),
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "intents": n_intents,
        "latency_s": args.latency,
        "max_concurrency": args.limit,
        "episodes_at_once": args.episodes_at_once,
        "episode_shape": {
            "user_turns": args.user_turns,
            "tool_calls_per_turn": args.tool_calls,
            "requests_per_episode": served["requests_per_episode"],
        },
        "requests": requests,
        "wall_s": rounded(run["wall_s"]),
        "achieved_rps": rounded(achieved_rps, 2),
        "ideal_rps": rounded(ideal_rps, 2),
        "efficiency": rounded(efficiency, 4),
        "target": TARGET,
        "target_met": efficiency >= TARGET,
        "workload_ceiling": rounded(
            workload_ceiling(
                episodes["n_episodes"],
                served["requests_per_episode"],
                args.episodes_at_once,
                args.limit,
            ),
            4,
        ),
        "machine_ceiling": ceiling,
        "efficiency_vs_ceiling": (
            rounded(efficiency / ceiling["efficiency"], 4) if ceiling else None
        ),
        "steady_state": {
            "busy_window_s": served["busy_window_s"],
            "mean_in_flight": served["mean_in_flight"],
            "utilisation": rounded(steady, 4),
            "share_of_time_at_limit": served["share_at_limit"],
            "max_in_flight": served["max_in_flight"],
        },
        "episodes_per_hour": round(episodes["n_episodes"] / run["wall_s"] * 3600),
        "pipeline_cpu_s": rounded(run["cpu_s"]),
        "pipeline_cpu_ms_per_request": rounded(1000 * run["cpu_s"] / requests),
        "pipeline_cpu_share_of_one_core": rounded(run["cpu_s"] / run["wall_s"]),
        "sandbox_cpu_ms_per_request": rounded(1000 * run["children_cpu_s"] / requests),
        "startup": {
            "wall_s": rounded(run["startup_wall_s"]),
            "cpu_s": rounded(run["startup_cpu_s"]),
        },
        "peak_rss_mib": rounded(run["peak_rss_mib"], 1),
        "episodes": episodes,
        "profile": str(args.profile) if args.profile else None,
        "command": " ".join(sys.argv),
    }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intents", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.3, help="server seconds per reply")
    parser.add_argument("--limit", type=int, default=16, help="llm.max_concurrency (C)")
    parser.add_argument("--episodes-at-once", type=int, default=32, help="simulate concurrency")
    parser.add_argument("--user-turns", type=int, default=8)
    parser.add_argument("--tool-calls", type=int, default=3, help="tool calls per user turn")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="profile the simulate process: pyinstrument text, or cProfile stats for *.prof",
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "saturation_cli.json")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
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

    started = time.perf_counter()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        figures = measure(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="ise-saturation-") as scratch:
            figures = measure(args, Path(scratch))
    figures["benchmark_wall_s"] = round(time.perf_counter() - started, 1)
    write_json(args.json, figures)
    print(
        f"saturation_cli: {figures['achieved_rps']} req/s of an ideal {figures['ideal_rps']} "
        f"(efficiency {figures['efficiency']}, target {TARGET}; steady state "
        f"{figures['steady_state']['utilisation']}); {figures['episodes_per_hour']} episodes/h; "
        f"pipeline CPU {figures['pipeline_cpu_ms_per_request']} ms/request "
        f"(+ sandboxes {figures['sandbox_cpu_ms_per_request']}); "
        f"load {figures['load_average_before']} -> {args.json}"
    )
    return 1 if args.strict and not figures["target_met"] else 0


if __name__ == "__main__":
    sys.exit(main())
