"""A throwaway Docker engine for the docker-backend tests and the overhead benchmark.

``engine()`` returns a ``DockerEngine`` whose ``docker_host`` has the workspace image, or the
reason it cannot (then the caller skips and prints it). When an engine already answers at
``DOCKER_HOST`` it is used as is; otherwise, as root, a private ``dockerd`` is started with
``--bridge=none --iptables=false --ip-forward=false`` and its data root, exec root, pid file
and socket under a temp dir, stopped by pid at the end. The image is built offline once per
process (``ise_core.workspace.image``); the debootstrap tarball is cached in
``.cache/workspace-image`` so later sessions only import it. Set ``ISE_DOCKER_TESTS=0`` to
skip all of it, or ``ISE_DOCKER_TESTS=1`` to make the docker tests fail (not skip) when no
engine or image can be had (CI does: the suite must run on both backends there).
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]
IMAGE_CACHE = PROJECT / ".cache" / "workspace-image"
IMAGE_TAG = "ise-workspace:test"
START_TIMEOUT_S = 60.0


@dataclass
class DockerEngine:
    docker_host: str
    image: str
    process: subprocess.Popen[bytes] | None = None
    root: Path | None = None


_state: dict[str, DockerEngine | str] = {}


def _client(docker_host: str) -> Any:
    docker = importlib.import_module("docker")  # the project's docker/ folder shadows it for mypy
    return docker.DockerClient(base_url=docker_host, timeout=30)


def _answers(docker_host: str) -> bool:
    try:
        client = _client(docker_host)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


def _start_private_dockerd() -> DockerEngine | str:
    if os.geteuid() != 0:
        return "a private dockerd needs root and no Docker engine answers at DOCKER_HOST"
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (apt-get install -y docker.io debootstrap)"
    root = Path(tempfile.mkdtemp(prefix="ise-dockerd-"))
    socket_path = root / "docker.sock"
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 (owned by the child)
    command = [
        "dockerd",
        "--bridge=none",
        "--iptables=false",
        "--ip-forward=false",
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--pidfile={root / 'dockerd.pid'}",
        f"--host=unix://{socket_path}",
    ]
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    engine = DockerEngine(f"unix://{socket_path}", IMAGE_TAG, process, root)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if socket_path.exists() and _answers(engine.docker_host):
            return engine
        time.sleep(0.25)
    tail = (root / "dockerd.log").read_text(errors="replace")[-600:]
    _stop(engine)
    return f"dockerd did not start: {tail.strip() or 'no output'}"


def _stop(engine: DockerEngine) -> None:
    process = engine.process
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if engine.root is not None:
        root, engine.root = engine.root, None
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        inside = [m.split()[1] for m in mounts if m.split()[1].startswith(str(root))]
        for target in sorted(inside, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)
        # Deleting the ~0.5 GB of image layers takes seconds (tens with shutil.rmtree on a
        # disk mounted with discard): let rm do it after the test run instead of during it.
        subprocess.Popen(
            ["rm", "-rf", "--one-file-system", str(root)],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def _build_image(engine: DockerEngine) -> str | None:
    from ise_core.errors import BackendError
    from ise_core.workspace.image import build_workspace_image

    client = _client(engine.docker_host)
    try:
        build_workspace_image(client, tag=engine.image, cache_dir=IMAGE_CACHE)
    except BackendError as exc:
        return f"cannot build the workspace image offline: {exc}"
    except Exception as exc:  # whatever the engine says, the private dockerd must be stopped
        return f"cannot build the workspace image offline: {type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def required() -> bool:
    """Whether a missing engine fails the docker tests instead of skipping them."""
    return os.environ.get("ISE_DOCKER_TESTS") == "1"


def engine() -> DockerEngine | str:
    """The shared engine of this process, or why there is none (computed once)."""
    if "engine" in _state:
        return _state["engine"]
    result: DockerEngine | str
    if os.environ.get("ISE_DOCKER_TESTS") == "0":
        result = "ISE_DOCKER_TESTS=0"
    else:
        existing = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        if _answers(existing):
            result = DockerEngine(existing, IMAGE_TAG)
        else:
            result = _start_private_dockerd()
        if isinstance(result, DockerEngine):
            problem = _build_image(result)
            if problem is not None:
                _stop(result)
                result = problem
    _state["engine"] = result
    if isinstance(result, DockerEngine):
        atexit.register(_stop, result)
    return result


def stop() -> None:
    """Stop the private engine, if one was started (idempotent)."""
    result = _state.get("engine")
    if isinstance(result, DockerEngine) and result.process is not None:
        _stop(result)
        result.process = None
