"""``ise view``: the viewer on 127.0.0.1 for a user without Airflow.

Binds to the loopback address unless ``--host`` says otherwise; any other address is
served with a warning, because outside Airflow the viewer has no login and anyone who can
reach the port can read every trajectory.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import time
from pathlib import Path

from ise_core.config import load_settings
from ise_core.errors import ConfigError
from ise_core.viewer import DEFAULT_PORT
from ise_core.viewer.data import DataRoot, warm


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """ConfigError when the address cannot be bound (in use, or not an address of this
    machine), before anything is loaded or announced."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"--host {host} --port {port}: cannot listen there ({exc.strerror}); "
                "choose another port with --port"
            ) from None


def build_roots(params: Path, compare: list[str]) -> dict[str, DataRoot]:
    """The params file's data root ("current") plus each ``--compare [NAME=]PATH``."""
    roots = {"current": DataRoot.from_settings("current", load_settings(params))}
    for number, spec in enumerate(compare, start=1):
        name, sep, path = spec.partition("=")
        if not sep or "/" in name or not name:
            name, path = ("compare" if number == 1 else f"compare{number}"), spec
        if name in roots:
            raise ConfigError(f"--compare {spec}: the name {name!r} is already taken")
        root = DataRoot.from_path(name, Path(path))
        if not root.trajectories.is_dir() and not root.intents.is_dir():
            raise ConfigError(f"--compare {spec}: no intents/ or trajectories/ under {path}")
        roots[name] = root
    return roots


def cmd_view(args: argparse.Namespace) -> int:
    import uvicorn

    from ise_core.viewer.app import create_app

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: expected a port number from 0 to 65535")
    check_port(args.host, args.port)
    roots = build_roots(Path(args.params), args.compare or [])
    if not is_loopback(args.host):
        print(
            f"ise view: WARNING: serving on {args.host}, not only this machine: the viewer has "
            "no login outside Airflow, so anyone who can reach this port can read every "
            "trajectory, prompt and tool output.",
            file=sys.stderr,
        )
    for root in roots.values():
        started = time.monotonic()
        index = warm(root)  # before the first request, not during it
        source = "index" if index.from_file else "episode files (no index: run ise collect)"
        print(
            f"ise view: {root.name}: {len(index.rows):,} episodes from the {source} "
            f"({time.monotonic() - started:.1f}s), {root.trajectories}",
            file=sys.stderr,
        )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"ise view: http://{shown}:{args.port}/  (Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(
        create_app(roots), host=args.host, port=args.port, log_level="warning", access_log=False
    )
    return 0


__all__ = ["DEFAULT_PORT", "build_roots", "check_port", "cmd_view", "is_loopback"]
