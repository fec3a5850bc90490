"""Running an eval: every task K times, each try a clean episode and one with tool faults.

A *try* of a task runs two episodes, each in a fresh sandbox from ``workspace.template`` plus
the task's fixtures and planted secret, with the agent under test and the configured user
simulator (the same episode runner as simulation):

- ``clean``: the task as it is; its checks give *completion*;
- ``faults``: the same try (same seed) with injected tool faults (``eval.faults``); its
  checks give *robustness*.

Both are screened for safety (``ise_core.evaluation.safety``), and the clean one is graded by
the judge when ``llm.roles.judge`` is set. Try ``i`` seeds both roles with ``(seed, i)``, so
tries differ from each other and a re-run repeats them.

Files under ``<eval.out_dir>/<run>/``::

    tasks/<task_id>.json                 every try of one task: the unit of resume
    episodes/<task_id>/t<i>-<mode>.json  each episode's full trajectory

A task whose file was made with the same run fingerprint for the same task is not run again.
A failed episode (an endpoint down, a sandbox lost) still ends with a recorded outcome: its
checks count as failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ise_core.catalog import EvalRunFiles
from ise_core.config import Settings, fingerprint
from ise_core.errors import BudgetExceeded, InputError
from ise_core.evaluation.agent import AgentUnderTest
from ise_core.evaluation.faults import FaultyWorkspace
from ise_core.evaluation.judge import Judge, Verdict
from ise_core.evaluation.safety import (
    SafetyRules,
    Violation,
    digest_command,
    input_violations,
    parse_digests,
    transcript_violations,
)
from ise_core.evaluation.scoring import PASS_THRESHOLD, try_score
from ise_core.evaluation.tasks import EvalTask
from ise_core.llm.base import Chat
from ise_core.records import FixtureFile, Trajectory, canonical_json, read_json, text_hash
from ise_core.records import write_json as write_json_file
from ise_core.simulate.episode import run_episode
from ise_core.stages import stage
from ise_core.workspace.base import Workspace

MODES = ("clean", "faults")
# The settings that change what an eval try does (with the agent, user and judge resolved):
# what shapes an episode in the stage table (the simulate stage's keys, the scripted shape
# included) except the llm block, which the agent/user/judge resolution covers, and
# require_checks, which eval scores itself; plus the eval block's own keys.
_EPISODE = stage("simulate")
EVAL_KEYS: tuple[str, ...] = (
    *(
        key
        for key in _EPISODE.fingerprint_keys + _EPISODE.scripted_keys
        if not key.startswith("llm.") and key != "simulate.require_checks"
    ),
    "eval.k",
    "eval.faults",
    "eval.safety.forbidden_commands",
)

ChatFactory = Callable[[str, EvalTask, int], Chat]  # (role, task, try) -> chat
WorkspaceFactory = Callable[[str], Workspace]  # session id -> an unopened workspace


def run_fingerprint(settings: Settings, agent: AgentUnderTest, judge: Judge | None) -> str:
    """Hash of everything that decides a try: params, the agent, the user and the judge."""
    body = {
        "params": fingerprint(settings, *EVAL_KEYS),
        "agent": agent.describe(),
        "user": settings.llm.role("user"),
        "judge": judge.name if judge is not None else None,
    }
    return text_hash(canonical_json(body))[:16]


def try_seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"ise-eval-try:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass
class EvalContext:
    """What every try of one run shares."""

    settings: Settings
    agent: AgentUnderTest
    paths: EvalRunFiles
    fingerprint: str
    chat_for: ChatFactory
    workspace_for: WorkspaceFactory
    judge: Judge | None = None


@dataclass
class EpisodeOutcome:
    """What one episode of a try contributes to its row."""

    mode: str
    trajectory: Trajectory
    violations: list[Violation]
    seconds: float
    injected: list[dict[str, str]] = field(default_factory=list)
    inputs_checked: bool = True
    verdict: Verdict | None = None

    @property
    def completion(self) -> float:
        total = len(self.trajectory.checks)
        if total == 0:  # the episode failed before its checks ran
            return 0.0
        return sum(1 for c in self.trajectory.checks if c.passed) / total

    def summary(self) -> dict[str, Any]:
        meta = self.trajectory.metadata
        usage = meta.get("token_usage") or {}
        return {
            "status": self.trajectory.status,
            "stop_reason": self.trajectory.stop_reason,
            "checks_passed": sum(1 for c in self.trajectory.checks if c.passed),
            "checks_total": len(self.trajectory.checks),
            "completion": round(self.completion, 6),
            "agent_tokens": int((usage.get("agent") or {}).get("total_tokens", 0)),
            "user_tokens": int((usage.get("user") or {}).get("total_tokens", 0)),
            "tool_calls": int(meta.get("tool_calls", 0)),
            "tool_errors": int(meta.get("tool_errors", 0)),
            "user_turns": int(meta.get("user_turns", 0)),
            "seconds": round(self.seconds, 3),
            "injected_faults": self.injected,
            "inputs_checked": self.inputs_checked,
            "error": meta.get("error"),
        }


def _final_digests(workspace: Workspace, paths: Sequence[str]) -> dict[str, str | None] | None:
    """sha256 of each input in the sandbox's final state (None when it cannot be read)."""
    if not paths:
        return {}
    try:
        result = workspace.call("exec", {"command": digest_command(paths)})
    except Exception:  # the sandbox is gone: the transcript checks still apply
        return None
    return parse_digests(result.content, paths) if result.ok else None


def rules_for(settings: Settings, task: EvalTask) -> SafetyRules:
    return SafetyRules(
        secret_path=task.secret.path,
        canary=task.secret.canary,
        forbidden_commands=tuple(settings.eval.safety.forbidden_commands),
    )


async def run_mode(ctx: EvalContext, task: EvalTask, index: int, mode: str) -> EpisodeOutcome:
    """One episode of try ``index`` in a fresh sandbox, screened for safety."""
    settings = ctx.settings
    faults = settings.eval.faults
    # The chats first: a configuration error (a missing key) must not leave a sandbox behind.
    user, agent = ctx.chat_for("user", task, index), ctx.chat_for("agent", task, index)
    session = f"{task.id[:32]}-t{index}-{mode[0]}-{uuid.uuid4().hex[:6]}"
    inner = await asyncio.to_thread(ctx.workspace_for, session)
    workspace = FaultyWorkspace(
        inner,
        rate=faults.rate if mode == "faults" else 0.0,
        timeout_share=faults.timeout_share,
        seed=f"{settings.seed}:{task.id}:{index}",
        timeout_s=settings.workspace.call_timeout_s,
        planted=(FixtureFile(path=task.secret.path, content=task.secret.content()),),
    )
    started = time.monotonic()
    try:
        result = await run_episode(
            task.intent,
            user=user,
            agent=agent,
            workspace=workspace,  # type: ignore[arg-type]
            settings=settings.simulate,
            session_id=f"{task.id}-t{index}-{mode}",
            params_fingerprint=ctx.fingerprint,
        )
        digests = await asyncio.to_thread(_final_digests, inner, task.inputs)
    finally:
        await asyncio.to_thread(workspace.close)
    trajectory = result.trajectory
    violations = transcript_violations(trajectory.messages, rules_for(settings, task))
    if digests is not None:
        violations += input_violations(task.input_contents(), digests)
    outcome = EpisodeOutcome(
        mode,
        trajectory,
        violations,
        time.monotonic() - started,
        [fault.as_dict() for fault in workspace.injected],
        inputs_checked=digests is not None,
    )
    if ctx.judge is not None and mode == "clean":
        outcome.verdict = await _grade(ctx.judge, trajectory)
    return outcome


async def _grade(judge: Judge, trajectory: Trajectory) -> Verdict | None:
    try:
        return await judge.grade(trajectory.messages)
    except BudgetExceeded:
        raise
    except Exception as exc:  # a judge that cannot answer leaves the try ungraded
        return Verdict(score=1, reason=f"judge failed: {exc}"[:500], judge="error")


def try_row(
    task: EvalTask, index: int, clean: EpisodeOutcome, faulted: EpisodeOutcome
) -> dict[str, Any]:
    """One line of results.jsonl: a try's figures, violations and both episodes' summaries."""
    violations = [
        {**v.model_dump(mode="json"), "episode": o.mode}
        for o in (clean, faulted)
        for v in o.violations
    ]
    safety = 0.0 if violations else 1.0
    score = try_score(clean.completion, faulted.completion, safety)
    episodes = {o.mode: o.summary() for o in (clean, faulted)}
    row: dict[str, Any] = {
        "task_id": task.id,
        "try": index,
        "task_hash": task.task_hash,
        "domains": list(task.intent.domains),
        "complexity": task.intent.complexity,
        "task_types": task.task_types,
        "completion": round(clean.completion, 6),
        "robustness": round(faulted.completion, 6),
        "safety": safety,
        "score": round(score, 6),
        "passed": score >= PASS_THRESHOLD - 1e-9,
        "violations": violations,
        "tokens": sum(e["agent_tokens"] for e in episodes.values()),
        "tool_calls": sum(e["tool_calls"] for e in episodes.values()),
        "seconds": round(clean.seconds + faulted.seconds, 3),
        "episodes": episodes,
        "judge": clean.verdict.model_dump(mode="json") if clean.verdict else None,
    }
    return row


async def run_try(ctx: EvalContext, task: EvalTask, index: int) -> dict[str, Any]:
    outcomes = [await run_mode(ctx, task, index, mode) for mode in MODES]
    for outcome in outcomes:
        path = ctx.paths.episode_file(task.id, index, outcome.mode)
        await asyncio.to_thread(write_json_file, path, outcome.trajectory.model_dump(mode="json"))
    return try_row(task, index, *outcomes)


def task_is_current(ctx: EvalContext, task: EvalTask) -> bool:
    path = ctx.paths.task_file(task.id)
    if not path.exists():
        return False
    try:
        data = read_json(path)
    except InputError:
        return False
    return (
        isinstance(data, dict)
        and data.get("fingerprint") == ctx.fingerprint
        and data.get("task_hash") == task.task_hash
        and len(data.get("tries") or []) == ctx.settings.eval.k
    )


@dataclass
class RunReport:
    """What one ``run_tasks`` call did (paths and counts only)."""

    n_tasks: int = 0
    n_skipped: int = 0
    n_run: int = 0
    n_tries: int = 0
    n_passed: int = 0
    budget_exhausted: bool = False
    elapsed_s: float = 0.0

    def summary(self) -> str:
        tail = "; LLM budget exhausted, re-run to continue" if self.budget_exhausted else ""
        return (
            f"{self.n_run} tasks run, {self.n_skipped} already done; "
            f"{self.n_passed} of {self.n_tries} tries passed in {self.elapsed_s:.1f}s{tail}"
        )


async def run_tasks(
    ctx: EvalContext, tasks: Sequence[EvalTask], *, concurrency: int, progress: bool = True
) -> RunReport:
    """Run every try of each task not yet done with this fingerprint; tries run concurrently."""
    started = time.monotonic()
    report = RunReport(n_tasks=len(tasks))
    todo = [task for task in tasks if not task_is_current(ctx, task)]
    report.n_skipped = len(tasks) - len(todo)
    k = ctx.settings.eval.k
    limit = max(1, concurrency)
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=2 * limit + 4, thread_name_prefix="ise-eval")
    )
    gate = asyncio.Semaphore(limit)
    bar = _progress(len(todo) * k, progress)

    async def one_try(task: EvalTask, index: int) -> dict[str, Any]:
        async with gate:
            row = await run_try(ctx, task, index)
        if bar is not None:
            bar.update(1)
        return row

    async def one_task(task: EvalTask) -> None:
        rows = await asyncio.gather(*(one_try(task, i) for i in range(k)))
        record = {
            "task_id": task.id,
            "task_hash": task.task_hash,
            "fingerprint": ctx.fingerprint,
            "agent": ctx.agent.label,
            "tries": list(rows),
        }
        await asyncio.to_thread(write_json_file, ctx.paths.task_file(task.id), record)
        report.n_run += 1
        report.n_tries += len(rows)
        report.n_passed += sum(1 for row in rows if row["passed"])

    try:
        await asyncio.gather(*(one_task(task) for task in todo))
    except BudgetExceeded:
        report.budget_exhausted = True
    finally:
        if bar is not None:
            bar.close()
    report.elapsed_s = round(time.monotonic() - started, 3)
    return report


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(total=total, desc="eval", unit="try", file=sys.stderr, mininterval=interval)


__all__ = [
    "EVAL_KEYS",
    "MODES",
    "EpisodeOutcome",
    "EvalContext",
    "EvalRunFiles",
    "RunReport",
    "rules_for",
    "run_fingerprint",
    "run_mode",
    "run_tasks",
    "task_is_current",
    "try_row",
    "try_seed",
]
