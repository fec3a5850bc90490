"""The ``ise`` command: the entry point people, ``dvc.yaml`` and Airflow's operators share.

Each subcommand loads params once, calls one stage function and prints a short summary.
Exit codes: 0 success, 1 a gate or check failed, 2 bad input or configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ise_core.config import DEFAULT_PARAMS, Settings, load_settings
from ise_core.errors import GateFailed, ISEError

Handler = Callable[[argparse.Namespace], int]

# Libraries that would otherwise try the network or phone home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.params))


def _print_summary(title: str, values: dict[str, Any], keys: Sequence[str]) -> None:
    shown = {key: values[key] for key in keys if key in values}
    print(f"{title}: " + ", ".join(f"{k}={_short(v)}" for k, v in shown.items()))


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --- stage commands -----------------------------------------------------------------------


def cmd_intents(args: argparse.Namespace) -> int:
    from ise_core.intents.stage import run_intents_stage

    stats = run_intents_stage(_settings(args))
    _print_summary(
        "intents",
        stats,
        [
            "n_sampled",
            "n_rejected",
            "n_exact_duplicates",
            "n_near_duplicates",
            "n_unique",
            "vendi_score",
            "embedding_model",
        ],
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from ise_core.simulate.stage import simulate_stage

    report = simulate_stage(_settings(args), only=args.only or None, concurrency=args.concurrency)
    print(f"simulate: {report.summary()}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from ise_core.simulate.stage import collect_stage

    stats = collect_stage(_settings(args))
    _print_summary("collect", stats, ["n_episodes", "n_kept", "completion_rate", "role_drift_rate"])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ise_core.export import export_stage

    stats = export_stage(_settings(args))
    _print_summary("export", stats, ["n_train", "n_valid", "formats"])
    return 0


GATES = ("intents", "trajectories", "sft", "eval")


def run_gate(stage: str, settings: Settings) -> None:
    """Run one stage's gate; raise GateFailed with the report when it does not hold."""
    from ise_core import quality

    report = getattr(quality, f"gate_{stage}")(settings)
    if not report.passed:
        raise GateFailed(f"gate {stage} failed", report=report.text)
    print(f"gate {stage}: passed ({report.summary()})")


def cmd_gate(args: argparse.Namespace) -> int:
    run_gate(args.stage, _settings(args))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """All stages in order, each followed by its gate: what ``dvc repro`` also does."""
    settings = _settings(args)
    from ise_core.export import export_stage
    from ise_core.intents.stage import run_intents_stage
    from ise_core.simulate.stage import collect_stage, simulate_stage

    run_intents_stage(settings)
    run_gate("intents", settings)
    report = simulate_stage(settings, only=None, concurrency=None)
    print(f"simulate: {report.summary()}")
    collect_stage(settings)
    run_gate("trajectories", settings)
    stats = export_stage(settings)
    run_gate("sft", settings)
    _print_summary("export", stats, ["n_train", "n_valid", "formats"])
    return 0


# --- parser ---------------------------------------------------------------------------------


def _add_params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params",
        default=str(DEFAULT_PARAMS),
        help="params file (default: ./params.yaml)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ise",
        description="ISE: synthesise execution-grounded multi-turn tool-use training data.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("intents", help="sample, write out, de-duplicate and score intents")
    _add_params(p)
    p.set_defaults(handler=cmd_intents)

    p = sub.add_parser("simulate", help="run one episode per intent (resumable)")
    _add_params(p)
    p.add_argument("--only", nargs="+", metavar="ID", help="run only these intent ids")
    p.add_argument("--concurrency", type=int, default=None, help="episodes at once")
    p.set_defaults(handler=cmd_simulate)

    p = sub.add_parser("collect", help="gather kept episodes into trajectories.jsonl + stats")
    _add_params(p)
    p.set_defaults(handler=cmd_collect)

    p = sub.add_parser("export", help="write the SFT dataset, its stats, card and plots")
    _add_params(p)
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("gate", help="validate a stage's outputs (exit 1 when it fails)")
    _add_params(p)
    p.add_argument("stage", choices=GATES)
    p.set_defaults(handler=cmd_gate)

    p = sub.add_parser("run", help="every stage and gate in order")
    _add_params(p)
    p.set_defaults(handler=cmd_run)

    for module in (
        "ise_core.cli_workspace",
        "ise_core.cli_llm",
        "ise_core.cli_view",
        "ise_core.cli_eval",
    ):
        _register(module, sub)
    return parser


def _register(module_name: str, sub: Any) -> None:
    # Imported by name so each command group keeps its own module (and its own imports).
    import importlib

    module = importlib.import_module(module_name)
    module.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except GateFailed as exc:
        print(f"ise: {exc}", file=sys.stderr)
        if exc.report:
            print(exc.report, file=sys.stderr)
        return exc.exit_code
    except ISEError as exc:
        print(f"ise: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ise: interrupted; finished work is kept, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
