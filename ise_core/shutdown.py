"""Graceful shutdown on SIGTERM and SIGINT: stop cleanly instead of dying mid-episode.

SIGTERM is what ``kill``, systemd, Kubernetes and Airflow (a task killed from the UI, or its
worker going away) send; SIGINT is Ctrl-C. Python's default for SIGTERM ends the process at
once: no ``finally``, no ``atexit``, and the sandboxes of the episodes in flight stay behind.

    shutdown = Shutdown(grace_s=settings.simulate.shutdown_grace_s)
    with shutdown.handling_signals():
        report = simulate_stage(settings, shutdown=shutdown)   # polls shutdown.requested
    shutdown.raise_if_requested(report.summary())              # -> Interrupted

While a stage cooperates (``with shutdown.cooperating():`` around the simulate loop), the first
signal only asks for a stop: no new episode starts, the running ones get ``grace_s`` seconds to
finish and be written (whole, as always), the rest are abandoned (not written, so a re-run does
them), every sandbox is torn down, and the command ends with ``Interrupted`` (exit 128 + the
signal number: 143 for SIGTERM, 130 for SIGINT). A second signal ends the grace period at
once (the same teardown, now); it is not raised where it lands, because an exception raised
in the middle of the event loop's work could end up in a task nobody waits for, or be taken
for an episode's failure. A third signal, and any signal outside such a stage (intents,
collect, export, gates), raises ``Interrupted`` at once: those stages write every file
atomically, so nothing is torn, and the ``finally`` blocks on the way out close what is open.
A handler that was installed before (Airflow's, which calls the operator's ``on_kill``) is
still called.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from ise_core.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The first stop signal this process received: a process asked to stop starts no new work,
# even in a later stage or task it runs (``dag.test()`` runs every task in one process).
_received: int | None = None


class Shutdown:
    """Whether a stop was asked for, by which signal, and how long running work may take."""

    def __init__(self, grace_s: float = 30.0, *, stream: Any = None) -> None:
        self.grace_s = grace_s
        self.signum: int | None = _received
        self._deadline: float | None = None if _received is None else time.monotonic()
        self.signals = 0  # how many stop signals this object has handled
        self._cooperative = 0
        self._lock = threading.Lock()
        self._stream = stream

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def deadline(self) -> float | None:
        """When the grace period ends (``time.monotonic()``), once a stop is requested."""
        return self._deadline

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a stop (what the first signal does; tests and callers may call it too)."""
        with self._lock:
            if self.signum is not None:
                return
            self.signum = signum
            self._deadline = time.monotonic() + self.grace_s

    def hurry(self) -> None:
        """End the grace period now (what a second signal does)."""
        with self._lock:
            self._deadline = time.monotonic()

    def interrupted(self, detail: str = "") -> Interrupted:
        name = self.signal_name or "a signal"
        message = f"stopped by {name}: finished work is kept; re-run the same command to resume"
        return Interrupted(f"{message}\n{detail}".rstrip(), self.signum or signal.SIGTERM)

    def raise_if_requested(self, detail: str = "") -> None:
        if self.requested:
            raise self.interrupted(detail)

    @contextlib.contextmanager
    def cooperating(self) -> Iterator[Shutdown]:
        """Within this block the first signal only sets ``requested`` (the caller polls it)."""
        with self._lock:
            self._cooperative += 1
        try:
            yield self
        finally:
            with self._lock:
                self._cooperative -= 1

    def _say(self, text: str) -> None:
        stream = self._stream or sys.stderr
        # A closed stream must not turn a clean stop into a traceback.
        with contextlib.suppress(OSError, ValueError):
            print(f"ise: {text}", file=stream, flush=True)

    def _on_signal(self, signum: int, frame: FrameType | None, previous: Any) -> None:
        global _received
        if _received is None:
            _received = signum
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)  # e.g. Airflow's handler, which calls on_kill()
        name = signal.Signals(signum).name
        self.signals += 1
        if not self._cooperative or self.signals > 2:
            self.request(signum)
            self._say(f"{name} received: stopping now")
            raise self.interrupted()
        if self.signals == 2:
            self.hurry()
            self._say(
                f"{name} received again: abandoning the running episodes now and closing "
                "every sandbox (once more stops at once)"
            )
            return
        self.request(signum)
        self._say(
            f"{name} received: no new episode starts; the running ones have {self.grace_s:g}s "
            f"to finish, then they are abandoned and every sandbox is closed "
            f"({name} again abandons them now)"
        )

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[Shutdown]:
        """Install the handlers for SIGTERM and SIGINT (main thread only; elsewhere a no-op,
        since Python delivers signals to the main thread) and restore the previous ones."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous: dict[int, Any] = {}
        try:
            for signum in SIGNALS:
                before = signal.getsignal(signum)
                previous[signum] = before
                signal.signal(signum, _handler(self, before))
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler if handler is not None else signal.SIG_DFL)


def _handler(shutdown: Shutdown, previous: Any) -> Callable[[int, FrameType | None], None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        shutdown._on_signal(signum, frame, previous)

    return handle
