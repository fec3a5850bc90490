"""Arguments every ``ise`` command shares, defined once for cli.py and the cli_* modules."""

from __future__ import annotations

from typing import Any

from ise_core.config import DEFAULT_PARAMS


def add_params(parser: Any) -> None:
    """``--params``: the params file a command reads."""
    parser.add_argument(
        "--params", default=str(DEFAULT_PARAMS), help="params file (default: ./params.yaml)"
    )
