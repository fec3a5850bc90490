"""``ise refresh``: one refresh period without Airflow, and the periods so far.

``ise refresh --period 2026-01-04`` builds that period of ``airflow.schedule`` as the
scheduled DAG run would (ise_core/refresh/run.py): it registers the period, runs every stage
and gate, holds the published dataset until the export's gate passes, appends the period to
``data/refresh/history.jsonl`` and records its lineage. Running it again resumes it (the
same batch, finished episodes skipped) and changes no byte once it has finished.

``ise refresh --history`` prints the periods recorded so far.

Exit codes: 0 success, 1 a gate failed (the previous dataset is published again), 2 bad
input or configuration (a period off the schedule, ``refresh.mode: fixed``, ...).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ise_core.catalog import Catalog
from ise_core.cli_args import add_params
from ise_core.config import load_settings
from ise_core.errors import ConfigError

__all__ = ["cmd_refresh", "register"]


def register(subparsers: Any) -> None:
    """Add ``refresh`` to the ``ise`` command's subparsers."""
    parser = subparsers.add_parser(
        "refresh", help="build one refresh period (what a scheduled DAG run does)"
    )
    add_params(parser)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--period",
        metavar="ID",
        help="the period's start: an interval start of airflow.schedule (2026-01-04)",
    )
    what.add_argument("--history", action="store_true", help="print the periods recorded so far")
    parser.add_argument(
        "--no-lineage",
        action="store_true",
        help="skip dvc commit and the git tag (the history is still recorded)",
    )
    parser.set_defaults(handler=cmd_refresh)


def cmd_refresh(args: argparse.Namespace) -> int:
    from ise_core.refresh.periods import normalize_period
    from ise_core.refresh.run import refresh_period

    settings = load_settings(Path(args.params))
    if args.history:
        return _print_history(Catalog.of(settings).history)
    if settings.refresh.mode == "fixed":
        raise ConfigError(
            f"{args.params}: key 'refresh.mode' is fixed: a period adds nothing (use `ise run`, "
            "or set grow or renew)"
        )
    outcome = refresh_period(settings, normalize_period(args.period), lineage=not args.no_lineage)
    print(f"refresh: period {outcome['period']} done")
    return 0


def _print_history(path: Path) -> int:
    from ise_core.refresh.history import read_history

    lines = read_history(path)
    if not lines:
        print(f"no period recorded yet ({path})")
        return 0
    print(f"{'period':<16} {'mode':<6} {'+intents':>9} {'kept':>6} {'tokens':>10} gates")
    for line in lines:
        gates = " ".join(
            f"{name}:{'ok' if gate.get('passed') else 'FAILED'}"
            for name, gate in (line.get("gates") or {}).items()
        )
        print(
            f"{line['period']:<16} {line.get('mode', ''):<6} {line.get('intents_added', 0):>9} "
            f"{line.get('episodes_kept', 0):>6} {line.get('tokens', 0):>10} {gates}"
        )
    return 0
