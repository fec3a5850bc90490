"""Injected tool faults: a seeded share of distinct calls fails once, then goes through."""

from __future__ import annotations

from typing import Any

from ise_core.evaluation.faults import FaultyWorkspace
from ise_core.records import Check, CheckResult
from ise_core.workspace.base import ToolResult


class RecordingWorkspace:
    """Runs nothing: records the calls that reached it."""

    backend = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        self.calls.append((name, arguments))
        return ToolResult(ok=True, content="done")

    def run_check(self, check: Check) -> CheckResult:
        return CheckResult(check=check, passed=True)

    def close(self) -> None:
        self.closed = True


def commands(n: int) -> list[dict[str, Any]]:
    return [{"command": f"echo {i}"} for i in range(n)]


def test_a_share_of_calls_fails_first_and_a_retry_goes_through() -> None:
    inner = RecordingWorkspace()
    faulty = FaultyWorkspace(inner, rate=0.3, timeout_share=0.5, seed="task-1:0")  # type: ignore[arg-type]
    first = [faulty.call("exec", args) for args in commands(400)]
    failed = [i for i, r in enumerate(first) if not r.ok]
    assert 0.2 < len(failed) / 400 < 0.4  # about the configured rate
    assert len(inner.calls) == 400 - len(failed)  # a faulted call never reached the sandbox
    kinds = {f.kind for f in faulty.injected}
    assert kinds == {"error", "timeout"}
    assert any("timed out" in first[i].content for i in failed)
    assert any("temporarily unavailable" in first[i].content for i in failed)
    again = [faulty.call("exec", commands(400)[i]) for i in failed]
    assert all(r.ok for r in again)  # the same call made again is not faulted
    assert len(faulty.injected) == len(failed)


def test_faults_depend_on_the_seed_and_the_call_only() -> None:
    def failures(seed: str, order: list[int]) -> set[int]:
        faulty = FaultyWorkspace(RecordingWorkspace(), rate=0.3, timeout_share=0.5, seed=seed)  # type: ignore[arg-type]
        return {i for i in order if not faulty.call("exec", {"command": f"echo {i}"}).ok}

    forward = failures("s", list(range(100)))
    assert failures("s", list(reversed(range(100)))) == forward
    assert failures("other", list(range(100))) != forward


def test_rate_zero_and_checks_pass_straight_through() -> None:
    inner = RecordingWorkspace()
    faulty = FaultyWorkspace(inner, rate=0.0, timeout_share=0.5, seed="x")  # type: ignore[arg-type]
    assert all(faulty.call("exec", args).ok for args in commands(50))
    check = Check(kind="file_exists", path="a.txt")
    assert faulty.run_check(check).passed
    assert faulty.backend == "recording"
    faulty.close()
    assert inner.closed
