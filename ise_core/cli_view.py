"""``ise view``: argument parsing only; the server lives in ``ise_core.viewer.serve``."""

from __future__ import annotations

import argparse
from typing import Any

from ise_core.cli_args import add_params
from ise_core.viewer import DEFAULT_PORT


def cmd_view(args: argparse.Namespace) -> int:
    from ise_core.viewer.serve import cmd_view as serve

    return serve(args)


def register(sub: Any) -> None:
    p = sub.add_parser("view", help="browse the run's episodes, stats and gates in a browser")
    add_params(p)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; anything else is reachable without a login)",
    )
    p.add_argument(
        "--compare",
        action="append",
        metavar="[NAME=]PATH",
        help="a second dataset version to compare with: a data folder (intents/, "
        "trajectories/, sft/), a project folder or a params file; repeatable",
    )
    p.set_defaults(handler=cmd_view)
