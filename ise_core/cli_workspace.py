"""``ise workspace ...``: run a command in a fresh workspace, reap leftovers, inspect backends.

``ise workspace run [--backend auto|local|docker] [--params PATH] [--timeout S] -- CMD...``
    opens a workspace (template only), runs CMD with the ``exec`` tool, closes it and prints
    exactly one JSON line ``{"ok", "exit_code", "output", "duration_s"}``. A single CMD word is
    a shell command line (``-- 'ls | wc -l'``); several words are quoted and joined.
    Exit codes: 0 the command ran and exited 0; 1 it ran and failed (non-zero exit or killed
    at the time limit; the JSON line is still printed); 2 bad input, bad params, or no backend
    can run (message on stderr, no JSON line).
``ise workspace reap [--params PATH]``
    removes sandboxes, bwrap processes and containers left by crashed runs and prints one JSON
    line saying what it removed. Exit 0, or 1 when something could not be removed.
``ise workspace backends``
    prints, as one JSON line, each backend and why it cannot run here (null when it can).
``ise workspace build-image [--params PATH] [--cache-dir DIR]``
    builds the docker backend's image offline (needs root, debootstrap and an engine).

--params defaults to ./params.yaml; when that default file does not exist, the defaults of
the ``workspace`` block are used (an explicitly given file must exist).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from ise_core.config import DEFAULT_PARAMS, WorkspaceSettings, load_settings
from ise_core.errors import InputError


def _workspace_settings(params: str | None) -> tuple[WorkspaceSettings, Path]:
    if params is None:
        if not DEFAULT_PARAMS.exists():
            return WorkspaceSettings(), Path.cwd()
        params = str(DEFAULT_PARAMS)
    settings = load_settings(Path(params))
    return settings.workspace, settings.base_dir


def _print_line(value: dict[str, Any]) -> None:
    print(json.dumps(value, ensure_ascii=False, sort_keys=True))


def cmd_workspace_run(args: argparse.Namespace) -> int:
    from ise_core.workspace import open_workspace

    words = list(args.cmd)
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise InputError("workspace run: no command given (usage: ise workspace run -- CMD...)")
    command = words[0] if len(words) == 1 else shlex.join(words)
    settings, base_dir = _workspace_settings(args.params)
    arguments: dict[str, Any] = {"command": command}
    if args.timeout is not None:
        arguments["timeout"] = args.timeout
    with open_workspace(settings, base_dir=base_dir, backend=args.backend) as workspace:
        workspace.open()
        result = workspace.call("exec", arguments)
    output = result.content
    if not result.ok:  # the observation starts with an "Error: ..." line; the output follows
        first, _, rest = output.partition("\n")
        output = rest if first.startswith("Error: command") else output
    _print_line(
        {
            "ok": result.ok,
            "exit_code": result.exit_code,
            "output": "" if output == "(no output)" else output,
            "duration_s": round(result.duration_s, 6),
        }
    )
    return 0 if result.ok else 1


def cmd_workspace_reap(args: argparse.Namespace) -> int:
    from ise_core.workspace import reap

    settings, base_dir = _workspace_settings(args.params)
    report = reap(settings, base_dir)
    _print_line(report.model_dump())
    return 1 if report.errors else 0


def cmd_workspace_backends(args: argparse.Namespace) -> int:
    from ise_core.workspace import backend_status

    settings, _ = _workspace_settings(args.params)
    _print_line(backend_status(settings))
    return 0


def cmd_workspace_build_image(args: argparse.Namespace) -> int:
    from ise_core.workspace.docker_backend import docker_client
    from ise_core.workspace.image import build_workspace_image

    settings, base_dir = _workspace_settings(args.params)
    client = docker_client()
    try:
        tag = build_workspace_image(
            client, tag=settings.docker_image, cache_dir=base_dir / args.cache_dir
        )
    finally:
        client.close()
    print(f"workspace image: {tag}", file=sys.stderr)
    return 0


def register(subparsers: Any) -> None:
    """Add ``workspace run|reap|backends|build-image`` to the ``ise`` command's subparsers."""
    workspace = subparsers.add_parser(
        "workspace", help="the live OS workspace: run a command, reap leftovers, backends"
    )
    sub = workspace.add_subparsers(dest="workspace_command", required=True, metavar="ACTION")

    def with_params(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--params",
            default=None,
            help="params file (default: ./params.yaml, or built-in defaults if absent)",
        )

    run = sub.add_parser("run", help="run one command in a fresh workspace; one JSON line")
    with_params(run)
    run.add_argument(
        "--backend", choices=("auto", "local", "docker"), default=None, help="override params"
    )
    run.add_argument("--timeout", type=float, default=None, help="seconds before it is killed")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command")
    run.set_defaults(handler=cmd_workspace_run)

    reap = sub.add_parser("reap", help="remove sandboxes and containers left by crashed runs")
    with_params(reap)
    reap.set_defaults(handler=cmd_workspace_reap)

    backends = sub.add_parser("backends", help="which backends can run here, and why not")
    with_params(backends)
    backends.set_defaults(handler=cmd_workspace_backends)

    build = sub.add_parser("build-image", help="build the docker backend's image offline")
    with_params(build)
    build.add_argument(
        "--cache-dir", default=".cache/workspace-image", help="where the base rootfs is cached"
    )
    build.set_defaults(handler=cmd_workspace_build_image)
