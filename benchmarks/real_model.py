"""The pipeline on a real model on this machine: episodes/hour, tokens/s, kept share, stop reasons.

Runs `ise intents` (scripted writer) and `ise simulate` + `ise collect` on N intents with the
user simulator and the agent on llama-server (SmolLM2-135M-Instruct, params.local.yaml), once
per configuration of server slots (-np) and llm.max_concurrency (= simulate.concurrency), each
in a fresh project with an empty response cache, so every request reaches the server.

Figures per configuration: episodes/hour, completion and total tokens per second of simulate's
wall time (from the episodes' token usage), kept share, stop reasons, tool calls (run in the
sandbox, successful, read from reply text), and the mean number of busy slots (sampled from
/slots every second) against the slots and the client's limit. The load average is recorded
before and after each configuration. A ``scripted`` configuration runs the same intents with
the same settings on the scripted program (no server), for its figures beside the model's.

    python benchmarks/real_model.py                        # 4 intents x scripted 1:1 2:2 2:4
    python benchmarks/real_model.py --intents 8 --configs scripted 2:2 4:4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, machine_info, now_iso
from ise_core.llm.local_server import LocalModelServer
from ise_core.records import Trajectory, write_json
from ise_core.simulate.agent_loop import ran_in_workspace
from ise_core.simulate.metrics import episode_count
from tests.realmodel.project import local_model_params


class SlotSampler:
    """Samples llama-server's /slots once a second: how many slots are busy."""

    def __init__(self, root_url: str) -> None:
        self.url = f"{root_url}/slots"
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    slots = json.loads(response.read())
            except (OSError, ValueError):
                continue
            self.samples.append(sum(1 for slot in slots if slot.get("is_processing")))

    def __enter__(self) -> SlotSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def ise(params: Path, *stage: str) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ise_core.cli", *stage, "--params", str(params)],
        cwd=params.parent, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"ise {' '.join(stage)} exited {done.returncode}: {done.stderr[-2000:]}")
    return time.monotonic() - started


def episode_figures(project: Path, wall_s: float) -> dict[str, Any]:
    episodes = [
        Trajectory.model_validate_json(path.read_text())
        for path in sorted((project / "data/trajectories/episodes").glob("*.json"))
    ]
    usage = [e.metadata.get("token_usage", {}) for e in episodes]
    completion = sum(
        u.get(role, {}).get("completion_tokens", 0) for u in usage for role in ("user", "agent")
    )
    total = sum(u.get("total_tokens", 0) for u in usage)
    tools = [m for e in episodes for m in e.messages if m.role == "tool"]
    return {
        "episodes": len(episodes),
        "episodes_per_hour": round(len(episodes) * 3600 / wall_s, 1) if wall_s else None,
        "completion_tokens_per_s": round(completion / wall_s, 2) if wall_s else None,
        "total_tokens_per_s": round(total / wall_s, 1) if wall_s else None,
        "kept_share": round(sum(e.kept for e in episodes) / max(len(episodes), 1), 3),
        "stop_reasons": dict(Counter(str(e.stop_reason) for e in episodes)),
        "user_turns_mean": round(
            sum(int(e.metadata.get("user_turns", 0)) for e in episodes) / max(len(episodes), 1), 2
        ),
        "tool_calls": len(tools),
        "tool_calls_run": sum(1 for m in tools if ran_in_workspace(m)),
        "tool_calls_ok": sum(1 for m in tools if m.success),
        "text_tool_calls": sum(episode_count(e, "text_tool_calls") for e in episodes),
        "compactions": sum(episode_count(e, "compactions") for e in episodes),
        "checks_passed": sum(1 for e in episodes for c in e.checks if c.passed),
        "checks_total": sum(len(e.checks) for e in episodes),
    }


def simulate_project(project: Path, params: Path, root_url: str | None) -> dict[str, Any]:
    ise(params, "intents")
    if root_url is None:
        wall, busy = ise(params, "simulate"), None
    else:
        with SlotSampler(root_url) as sampler:
            wall = ise(params, "simulate")
        busy = round(sum(sampler.samples) / len(sampler.samples), 2) if sampler.samples else None
    ise(params, "collect")
    return {"simulate_wall_s": round(wall, 1), "mean_busy_slots": busy,
            **episode_figures(project, wall)}  # fmt: skip


def run_scripted(intents: int) -> dict[str, Any]:
    """The same intents on the scripted program: the figures beside the model's. Its episodes
    get the default turn limits (params.local.yaml's 4 turns would cut every one of them)."""
    with tempfile.TemporaryDirectory(prefix="ise-real-") as tmp:
        project = Path(tmp)
        server = LocalModelServer(port=1)  # never started: only its URL goes into params
        params = local_model_params(project, server, intents=intents, concurrency=4)
        settings = yaml.safe_load(params.read_text())
        settings["llm"]["provider"] = "scripted"
        for key in ("max_turns", "max_steps_per_turn", "episode_time_limit_s"):
            settings["simulate"].pop(key, None)
        params.write_text(yaml.safe_dump(settings), encoding="utf-8")
        figures = simulate_project(project, params, None)
    return {"config": "scripted", "server_slots": None, "max_concurrency": 4, **figures}


def run_config(slots: int, limit: int, intents: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ise-real-") as tmp:
        project = Path(tmp)
        with LocalModelServer(context=8192 * slots, slots=slots) as server:
            params = local_model_params(project, server, intents=intents, concurrency=limit)
            figures = simulate_project(project, params, server.root_url)
        return {"config": f"{slots}:{limit}", "server_slots": slots, "max_concurrency": limit,
                **figures}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intents", type=int, default=4)
    parser.add_argument(
        "--configs", nargs="+", default=["scripted", "1:1", "2:2", "2:4"],
        help="SLOTS:MAX_CONCURRENCY pairs, or scripted (default: scripted 1:1 2:2 2:4)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=RESULTS / "real_model.json")
    args = parser.parse_args()
    result: dict[str, Any] = {"started": now_iso(), "machine": machine_info(), "runs": []}
    for pair in args.configs:
        before = machine_info()["load_average"]
        if pair == "scripted":
            run = run_scripted(args.intents)
        else:
            slots, limit = (int(x) for x in pair.split(":"))
            run = run_config(slots, limit, args.intents)
        run["load_average_before"] = before
        run["load_average_after"] = machine_info()["load_average"]
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
    header = ("config", "ep/h", "tok/s", "kept", "busy", "calls", "run", "ok", "text")
    print("{:>8} {:>7} {:>7} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}  stop reasons".format(*header))
    for run in result["runs"]:
        print(
            f"{run['config']:>8} {run['episodes_per_hour']:>7} "
            f"{run['completion_tokens_per_s']:>7} {run['kept_share']:>5} "
            f"{run['mean_busy_slots']!s:>5} {run['tool_calls']:>5} {run['tool_calls_run']:>5} "
            f"{run['tool_calls_ok']:>5} {run['text_tool_calls']:>5}  {run['stop_reasons']}"
        )
    write_json(args.json, result)


if __name__ == "__main__":
    main()
