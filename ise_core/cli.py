"""The ``ise`` command: the entry point people, ``dvc.yaml`` and Airflow's operators share.

Each stage command is an entry of the stage table (ise_core.stages): it loads params once,
runs that stage and prints its one-line summary.
Exit codes: 0 success, 1 a gate or check failed, 2 bad input or configuration, 128 + N when
signal N (SIGTERM: 143, SIGINT: 130) stopped it (ise_core.shutdown).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ise_core.cli_args import add_params
from ise_core.config import Settings, load_settings
from ise_core.errors import GateFailed, Interrupted, ISEError
from ise_core.shutdown import Shutdown
from ise_core.stages import GATES, STAGES, Stage, StageOptions, run_all, run_gate, stage

Handler = Callable[[argparse.Namespace], int]

# Libraries that would otherwise try the network or phone home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.params))


# --- stage commands: one per entry of the stage table ---------------------------------------


def _shutdown(settings: Settings) -> Shutdown:
    """SIGTERM / SIGINT stop a stage gracefully (see ise_core.shutdown)."""
    return Shutdown(grace_s=settings.simulate.shutdown_grace_s)


def cmd_stage(args: argparse.Namespace) -> int:
    settings = _settings(args)
    shutdown = _shutdown(settings)
    options = StageOptions(
        only=tuple(args.only) if getattr(args, "only", None) else None,
        concurrency=getattr(args, "concurrency", None),
        shutdown=shutdown,
    )
    with shutdown.handling_signals():
        result = stage(args.command).execute(settings, options)
    print(f"{result.stage}: {result.summary}")
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    run_gate(args.stage, _settings(args), log=print)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """All stages in order, each followed by its gate: what ``dvc repro`` also does."""
    settings = _settings(args)
    shutdown = _shutdown(settings)
    with shutdown.handling_signals():
        run_all(settings, log=print, options=StageOptions(shutdown=shutdown))
    return 0


# --- parser ---------------------------------------------------------------------------------


def _add_stage_options(parser: argparse.ArgumentParser, entry: Stage) -> None:
    if "only" in entry.options:
        parser.add_argument("--only", nargs="+", metavar="ID", help="run only these intent ids")
    if "concurrency" in entry.options:
        parser.add_argument("--concurrency", type=int, default=None, help="episodes at once")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ise",
        description="ISE: synthesise execution-grounded multi-turn tool-use training data.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for entry in STAGES:
        p = sub.add_parser(entry.name, help=entry.help)
        add_params(p)
        _add_stage_options(p, entry)
        p.set_defaults(handler=cmd_stage)

    p = sub.add_parser("gate", help="validate a stage's outputs (exit 1 when it fails)")
    add_params(p)
    p.add_argument("stage", choices=list(GATES))
    p.set_defaults(handler=cmd_gate)

    p = sub.add_parser("run", help="every stage and gate in order")
    add_params(p)
    p.set_defaults(handler=cmd_run)

    for module in (
        "ise_core.cli_workspace",
        "ise_core.cli_llm",
        "ise_core.cli_view",
        "ise_core.cli_eval",
        "ise_core.cli_estimate",
        "ise_core.cli_refresh",
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
    except Interrupted as exc:
        print(f"ise: {exc}", file=sys.stderr)
        return exc.exit_code
    except ISEError as exc:
        print(f"ise: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ise: interrupted; finished work is kept, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
