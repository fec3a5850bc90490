"""Baselines of ``ise eval`` on what runs here: the scripted agent program, its careless profile
and a real small model (SmolLM2-135M-Instruct on llama-server), on one held-out task set.

A fresh project samples its training intents and ``--tasks`` extra eval intents (``eval.count``,
scripted writer, MiniLM embeddings), then evaluates each agent with the scripted user
simulator: every task ``--k`` times for the programs, and the first ``--real-tasks`` tasks once
for the model (it is slow on a CPU; each episode is capped at ``--time-limit`` seconds, for the
programs too). Prints one row per agent and writes benchmarks/results/eval_baselines.json.

    python benchmarks/eval_baselines.py                    # 20 tasks x 3, the model on 2 x 1
    python benchmarks/eval_baselines.py --tasks 50 --k 5 --no-real
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, machine_info, now_iso
from ise_core.catalog import Catalog
from ise_core.config import Settings, settings_from_dict
from ise_core.evaluation.stage import EvalRequest, eval_stage, select_tasks
from ise_core.intents.stage import intents_stage
from ise_core.records import write_json

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("score", "completion", "robustness", "safety", "pass_rate", "tokens", "tool_calls")


def project(folder: Path, tasks: int, k: int, time_limit: float) -> Settings:
    data = {
        "seed": 7,
        "intents": {"count": 40, "taxonomy": str(ROOT / "ise_core" / "taxonomy")},
        "embedding": {"model": "all-MiniLM-L6-v2", "batch_size": 16},
        "workspace": {
            "backend": "local",
            "template": str(ROOT / "ise_core" / "workspace" / "template"),
            "root": str(folder / "sandboxes"),
        },
        "simulate": {"episode_time_limit_s": time_limit},
        "llm": {"max_tokens": 160},  # endpoint replies only; the programs ignore it
        "eval": {"count": tasks, "k": k, "concurrency": 2},
    }
    return settings_from_dict(data, "eval baselines", base_dir=folder)


def evaluate(settings: Settings, request: EvalRequest, only: list[str] | None) -> dict[str, Any]:
    started = time.monotonic()
    metrics = eval_stage(settings, request, only=only, progress=False, log=lambda _: None)
    overall = metrics["overall"]
    return {
        "agent": metrics["agent"]["label"],
        "n_tasks": overall["n_tasks"],
        "k": metrics["k"],
        **{key: overall[key] for key in FIGURES},
        "pass_at_k": overall["pass_at_k"],
        "pass_hat_k": overall["pass_hat_k"],
        "violations": metrics["violations"],
        "episode_outcomes": metrics["episode_outcomes"],
        "wall_s": round(time.monotonic() - started, 1),
    }


def real_model(settings: Settings, ids: list[str]) -> dict[str, Any]:
    from ise_core.llm.local_server import LocalModelServer

    with LocalModelServer() as server:
        request = EvalRequest(model=server.model_name, endpoint=server.base_url, k=1, run="smollm2")
        return evaluate(settings, request, ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20, help="eval tasks (eval.count)")
    parser.add_argument("--k", type=int, default=3, help="tries per task for the programs")
    parser.add_argument("--real-tasks", type=int, default=2, help="tasks the model tries once")
    parser.add_argument("--no-real", action="store_true", help="skip the llama-server model")
    parser.add_argument("--time-limit", type=float, default=90.0, help="seconds per episode")
    parser.add_argument("--out", type=Path, default=RESULTS / "eval_baselines.json")
    args = parser.parse_args(argv)
    before = machine_info()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ise-eval-baselines-") as folder:
        settings = project(Path(folder), args.tasks, args.k, args.time_limit)
        intents_stage(settings, log=lambda _: None)
        print(f"{len(select_tasks(settings))} eval tasks in {Catalog.of(settings).eval_tasks}")
        for model in ("scripted", "scripted:careless"):
            request = EvalRequest(model=model, run=model.replace(":", "-"))
            rows.append(evaluate(settings, request, None))
        if not args.no_real:
            ids = [task.id for task in select_tasks(settings)[: args.real_tasks]]
            rows.append(real_model(settings, ids))
    print(f"{'agent':24} {'tasks':>5} {'k':>2} " + " ".join(f"{f:>10}" for f in FIGURES))
    for row in rows:
        cells = " ".join(
            f"{row[f]:>10.3f}" if isinstance(row[f], float) else f"{row[f]:>10}" for f in FIGURES
        )
        print(f"{row['agent']:24} {row['n_tasks']:>5} {row['k']:>2} {cells}")
    print("tokens of the scripted programs are estimates (4 characters per token)")
    write_json(
        args.out,
        {"when": now_iso(), "machine": before, "load_after": machine_info()["load_average"],
         "args": {k: str(v) for k, v in vars(args).items()}, "baselines": rows},
    )  # fmt: skip
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
