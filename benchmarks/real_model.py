"""The pipeline on a real model on this machine: episodes/hour, tokens/s, kept share, stop reasons.

Runs `ise intents` (scripted writer) and `ise simulate` + `ise collect` on N intents with the
user simulator and the agent on llama-server (SmolLM2-135M-Instruct, params.local.yaml), once
per configuration of server slots (-np) and llm.max_concurrency (= simulate.concurrency), each
in a fresh project with an empty response cache, so every request reaches the server.

Figures per configuration: episodes/hour, completion and total tokens per second of simulate's
wall time (from the episodes' token usage), kept share, stop reasons, requests the server saw
per second, and the mean number of busy slots (sampled from /slots every second) against the
slots and the client's limit.

    python benchmarks/real_model.py                        # 4 intents x (1,1) (2,2) (2,4)
    python benchmarks/real_model.py --intents 8 --configs 2:2 4:4
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, machine_info, now_iso
from ise_core.llm.local_server import LocalModelServer
from ise_core.records import write_json
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
        json.loads(path.read_text())
        for path in sorted((project / "data/trajectories/episodes").glob("*.json"))
    ]
    usage = [e["metadata"].get("token_usage", {}) for e in episodes]
    completion = sum(
        u.get(role, {}).get("completion_tokens", 0) for u in usage for role in ("user", "agent")
    )
    total = sum(u.get("total_tokens", 0) for u in usage)
    tool_ok = sum(
        1 for e in episodes for m in e["messages"] if m["role"] == "tool" and m.get("success")
    )
    return {
        "episodes": len(episodes),
        "episodes_per_hour": round(len(episodes) * 3600 / wall_s, 1) if wall_s else None,
        "completion_tokens_per_s": round(completion / wall_s, 2) if wall_s else None,
        "total_tokens_per_s": round(total / wall_s, 1) if wall_s else None,
        "kept_share": round(sum(e["kept"] for e in episodes) / max(len(episodes), 1), 3),
        "stop_reasons": dict(Counter(e["stop_reason"] for e in episodes)),
        "tool_calls_ok": tool_ok,
        # Calls read from the reply text carry ids ending in _t<n> (ise_core.llm.toolcalls).
        "text_tool_calls": sum(
            1
            for e in episodes
            for m in e["messages"]
            for call in m.get("tool_calls") or []
            if re.search(r"_t\d+$", call["id"])
        ),
    }


def run_config(slots: int, limit: int, intents: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ise-real-") as tmp:
        project = Path(tmp)
        with LocalModelServer(context=8192 * slots, slots=slots) as server:
            params = local_model_params(project, server, intents=intents, concurrency=limit)
            ise(params, "intents")
            with SlotSampler(server.root_url) as sampler:
                wall = ise(params, "simulate")
            ise(params, "collect")
            figures = episode_figures(project, wall)
        busy = sampler.samples
        return {
            "server_slots": slots,
            "max_concurrency": limit,
            "simulate_wall_s": round(wall, 1),
            "mean_busy_slots": round(sum(busy) / len(busy), 2) if busy else None,
            **figures,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intents", type=int, default=4)
    parser.add_argument(
        "--configs", nargs="+", default=["1:1", "2:2", "2:4"],
        help="SLOTS:MAX_CONCURRENCY pairs (default: 1:1 2:2 2:4)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=RESULTS / "real_model.json")
    args = parser.parse_args()
    result: dict[str, Any] = {"started": now_iso(), "machine": machine_info(), "runs": []}
    for pair in args.configs:
        slots, limit = (int(x) for x in pair.split(":"))
        run = run_config(slots, limit, args.intents)
        run["load_average_after"] = machine_info()["load_average"]
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
    header = ("slots", "limit", "ep/h", "tok/s", "kept", "busy")
    print("{:>5} {:>5} {:>7} {:>7} {:>5} {:>5}  stop reasons".format(*header))
    for run in result["runs"]:
        print(
            f"{run['server_slots']:>5} {run['max_concurrency']:>5} {run['episodes_per_hour']:>7} "
            f"{run['completion_tokens_per_s']:>7} {run['kept_share']:>5} "
            f"{run['mean_busy_slots']!s:>5}  {run['stop_reasons']}"
        )
    write_json(args.json, result)


if __name__ == "__main__":
    main()
