"""Servers the viewer tests start on 127.0.0.1 and stop: ``ise view``, Airflow's API server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, str]:
    """GET without following redirects; (status, body) for any status."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", errors="replace")


@contextmanager
def running(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    ready_url: str,
    timeout: float,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` in its own process group, wait until ``ready_url`` answers, and stop
    the whole group afterwards (also when the wait fails, with the log's end in the error)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"{argv[0]} exited with {process.returncode} before answering:\n"
                    + log.read_text(errors="replace")[-4000:]
                )
            try:
                get(ready_url)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{ready_url} did not answer within {timeout:.0f}s:\n"
                        + log.read_text(errors="replace")[-4000:]
                    ) from None
                time.sleep(0.5)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def ise_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ise_core.cli", *args]


def python_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env
