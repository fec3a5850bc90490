"""``ise eval`` and ``ise eval-report``: argument parsing and printing around
``ise_core.evaluation``.

    ise eval [--model M] [--endpoint URL] [--k K] [--run NAME] [--only ID…] [--concurrency N]
             [--gate]
    ise eval-report RUN_A RUN_B [--out FILE]
    ise gate eval [--params PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ise_core.cli_args import add_params
from ise_core.config import load_settings
from ise_core.errors import InputError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_eval(args: argparse.Namespace) -> int:
    from ise_core.evaluation.stage import EvalRequest, eval_stage

    settings = load_settings(Path(args.params))
    request = EvalRequest(model=args.model, endpoint=args.endpoint, k=args.k, run=args.run)
    metrics = eval_stage(settings, request, only=args.only, concurrency=args.concurrency)
    overall = metrics["overall"]
    if not overall.get("n_tasks"):
        print("eval: no tasks (set eval.fraction or eval.count and run `ise intents`)")
        return 0
    print(
        f"eval: agent={metrics['agent']['label']}, tasks={overall['n_tasks']}, k={metrics['k']}, "
        f"score={overall['score']:.4g}, pass@1={overall['pass_at_k']['1']:.4g}, "
        f"pass^{metrics['k']}={overall['pass_hat_k'][str(metrics['k'])]:.4g}, "
        f"completion={overall['completion']:.4g}, robustness={overall['robustness']:.4g}, "
        f"safety={overall['safety']:.4g}"
    )
    if args.gate:
        from ise_core.stages import run_gate

        run_gate("eval", settings, log=print, run=metrics["run"])
    return 0


def _metrics_of(settings: Any, name: str) -> dict[str, Any]:
    """A run's metrics.json: by run name under eval.out_dir, or a path to the file or folder."""
    from ise_core.catalog import Catalog
    from ise_core.records import read_json

    candidate = Path(name)
    if candidate.is_file():
        path = candidate
    elif (candidate / "metrics.json").is_file():
        path = candidate / "metrics.json"
    else:
        path = Catalog.of(settings).eval_run(name).metrics
    if not path.is_file():
        raise InputError(f"{path}: no eval metrics for run {name!r} (run `ise eval --run {name}`)")
    data = read_json(path)
    if not isinstance(data, dict) or "overall" not in data:
        raise InputError(f"{path}: not an eval metrics.json (no 'overall' key)")
    return data


def cmd_eval_report(args: argparse.Namespace) -> int:
    from ise_core.atomic import atomic_write_text
    from ise_core.evaluation.report import compare_runs

    settings = load_settings(Path(args.params))
    text = compare_runs(_metrics_of(settings, args.run_a), _metrics_of(settings, args.run_b))
    if args.out:
        atomic_write_text(args.out, text)
        print(f"eval-report: written to {args.out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="benchmark an agent on the held-out eval tasks (completion, robustness, safety)",
    )
    add_params(p)
    p.add_argument(
        "--model",
        help="the model under test; 'scripted' or 'scripted:careless' for the offline "
        "scripted agent program (default: eval.agent, else llm.roles.agent)",
    )
    p.add_argument("--endpoint", help="OpenAI-compatible base URL serving --model")
    p.add_argument("--k", type=_positive, help="tries per task (default: eval.k)")
    p.add_argument("--run", help="name of the run folder under eval.out_dir (default: eval.run)")
    p.add_argument("--only", nargs="+", metavar="ID", help="evaluate only these task ids")
    p.add_argument(
        "--concurrency", type=_positive, help="tries at once (default: eval.concurrency)"
    )
    p.add_argument(
        "--gate",
        action="store_true",
        help="then check the run with the eval gate (exit 1 when the score dropped too far)",
    )
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("eval-report", help="compare two eval runs side by side (markdown)")
    add_params(p)
    p.add_argument("run_a", help="the baseline run: a run name, or a metrics.json path")
    p.add_argument("run_b", help="the run compared with it")
    p.add_argument("--out", help="write the report to this file instead of stdout")
    p.set_defaults(handler=cmd_eval_report)
