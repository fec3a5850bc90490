"""``ise estimate [--pilot N]``: a pilot of N intents, then the whole run's tokens, cost, wall
time and the budget to set, each with a range (ise_core.estimate).

Exit codes: 0 the estimate is written (and fits ``llm.budget`` when one is set); 1 the
expected spend exceeds ``llm.budget``; 2 bad input or configuration.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ise_core.cli_args import add_params
from ise_core.config import load_settings
from ise_core.errors import ConfigError

DEFAULT_PILOT = 10


def register(subparsers: Any) -> None:
    """Add ``estimate`` to the ``ise`` command's subparsers."""
    parser = subparsers.add_parser(
        "estimate",
        help="run a pilot of N intents and project the run's tokens, cost, time and budget",
    )
    add_params(parser)
    parser.add_argument(
        "--pilot",
        type=int,
        default=DEFAULT_PILOT,
        metavar="N",
        help=f"intents in the pilot (default {DEFAULT_PILOT})",
    )
    parser.set_defaults(handler=cmd_estimate)


def cmd_estimate(args: argparse.Namespace) -> int:
    from ise_core.pipeline import run_estimate

    if args.pilot < 1:
        raise ConfigError(f"--pilot: expected a number of intents of at least 1, got {args.pilot}")
    run_estimate(load_settings(Path(args.params)), args.pilot)  # BudgetExceeded: exit 1
    return 0
