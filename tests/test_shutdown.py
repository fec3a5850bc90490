"""``ise_core.shutdown`` with real signals, in a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ise_core.errors import Interrupted
from ise_core.shutdown import Shutdown

REPO = Path(__file__).resolve().parents[1]
# A program that works in steps inside (or outside) a cooperating block, as a stage would.
PROGRAM = r"""
import signal, sys, time
from pathlib import Path
from ise_core.shutdown import Shutdown, Interrupted

out = Path(sys.argv[1]); cooperate = sys.argv[2] == "1"; stuck = sys.argv[4] == "1"
chained = []
signal.signal(signal.SIGTERM, lambda signum, frame: chained.append(signum))  # e.g. Airflow's
shutdown = Shutdown(grace_s=float(sys.argv[3]))
try:
    with shutdown.handling_signals():
        try:
            if cooperate:
                with shutdown.cooperating():
                    (out / "ready").write_text("")  # signals from here on are cooperative
                    steps, started = 0, time.monotonic()
                    while time.monotonic() - started < 60:  # "episodes" until asked to stop
                        late = shutdown.requested and time.monotonic() > shutdown.deadline()
                        if late and not stuck:  # a stuck stage never looks at the deadline
                            break
                        time.sleep(0.01); steps += 1
                    (out / "steps").write_text(str(steps))
            else:
                (out / "ready").write_text("")
                time.sleep(30)
        finally:
            (out / "cleaned").write_text("")  # what a finally closing the sandboxes does
        shutdown.raise_if_requested("2 episodes abandoned")
except Interrupted as exc:
    print(f"ise: error: {exc}", file=sys.stderr)
    (out / "chained").write_text(repr(chained))
    (out / "restored").write_text(repr(signal.getsignal(signal.SIGTERM) is not None))
    (out / "sticky").write_text(repr(Shutdown().requested))  # a later stage starts nothing
    sys.exit(exc.exit_code)
"""


def start(
    tmp_path: Path, cooperate: bool, grace_s: float = 0.5, stuck: bool = False
) -> subprocess.Popen[str]:
    flags = ["1" if cooperate else "0", str(grace_s), "1" if stuck else "0"]
    process = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, str(tmp_path), *flags],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    return process


def test_a_cooperating_stage_gets_its_grace_period(tmp_path: Path) -> None:
    process = start(tmp_path, cooperate=True)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143
    assert "SIGTERM received: no new episode starts" in err
    assert "stopped by SIGTERM: finished work is kept" in err and "2 episodes abandoned" in err
    steps = int((tmp_path / "steps").read_text())
    assert 10 <= steps < 3000  # it went on for the grace period, then stopped
    assert (tmp_path / "cleaned").exists()
    assert (tmp_path / "chained").read_text() == "[15]"  # the earlier handler still ran
    assert (tmp_path / "sticky").read_text() == "True"


def test_a_second_signal_ends_the_grace_period_at_once(tmp_path: Path) -> None:
    process = start(tmp_path, cooperate=True, grace_s=60)
    process.send_signal(signal.SIGINT)
    time.sleep(0.1)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - signalled < 10  # not the 60 s grace period
    assert process.returncode == 130  # named by the first signal
    assert "SIGTERM received again: abandoning the running episodes now" in err
    # The stage ended its own way (its summary written), then the stop was raised.
    assert (tmp_path / "steps").exists() and (tmp_path / "cleaned").exists()
    assert "stopped by SIGINT" in err and "2 episodes abandoned" in err


def test_a_third_signal_stops_a_stuck_stage_at_once(tmp_path: Path) -> None:
    process = start(tmp_path, cooperate=True, grace_s=60, stuck=True)
    for signum in (signal.SIGTERM, signal.SIGTERM):
        process.send_signal(signum)
        time.sleep(0.2)
    assert process.poll() is None  # a stage that does not look at the deadline goes on
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143
    assert "SIGTERM received: stopping now" in err
    assert not (tmp_path / "steps").exists() and (tmp_path / "cleaned").exists()


def test_outside_a_cooperating_stage_the_signal_stops_at_once(tmp_path: Path) -> None:
    process = start(tmp_path, cooperate=False)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - started < 10  # not the 30 s sleep
    assert process.returncode == 143 and "stopped by SIGTERM" in err
    assert (tmp_path / "cleaned").exists()
    assert (tmp_path / "restored").read_text() == "True"


def test_without_a_signal_nothing_is_raised() -> None:
    shutdown = Shutdown(grace_s=1)
    with shutdown.handling_signals(), shutdown.cooperating():
        pass
    shutdown.raise_if_requested()
    assert shutdown.deadline() is None
    shutdown.request(signal.SIGINT)
    with pytest.raises(Interrupted, match="stopped by SIGINT") as info:
        shutdown.raise_if_requested()
    assert info.value.exit_code == 130
