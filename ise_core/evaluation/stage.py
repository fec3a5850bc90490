"""``ise eval`` as functions over settings: run the tries, then write the run's outputs.

``eval_stage`` does both (the CLI and DVC); the Airflow DAG calls ``run_eval_tasks`` once per
mapped batch of task ids and ``finish_eval`` once at the end, with the same settings and the
same agent, so every path writes the same files.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ise_core.catalog import Catalog
from ise_core.config import Settings
from ise_core.errors import ConfigError, InputError
from ise_core.evaluation.agent import AgentUnderTest, resolve_agent
from ise_core.evaluation.judge import build_judge
from ise_core.evaluation.results import append_history, load_rows, write_outputs
from ise_core.evaluation.runner import (
    ChatFactory,
    EvalContext,
    RunReport,
    WorkspaceFactory,
    run_fingerprint,
    run_tasks,
    try_seed,
)
from ise_core.evaluation.tasks import EvalTask, load_tasks
from ise_core.llm.base import Chat

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"[eval] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate: the agent (--model/--endpoint), tries per task and the run name."""

    model: str | None = None
    endpoint: str | None = None
    k: int | None = None
    run: str | None = None

    def apply(self, settings: Settings) -> Settings:
        """The settings with ``k`` and ``run`` from the request (each validated as params)."""
        from pydantic import ValidationError

        from ise_core.config import EvalSettings, describe_validation_error

        update: dict[str, Any] = {}
        if self.k is not None:
            update["k"] = self.k
        if self.run is not None:
            update["run"] = self.run
        if not update:
            return settings
        try:
            block = EvalSettings.model_validate({**settings.eval.model_dump(), **update})
        except ValidationError as exc:
            raise ConfigError(describe_validation_error("eval (--k/--run)", exc)) from None
        return settings.model_copy(update={"eval": block})


def select_tasks(settings: Settings, only: Sequence[str] | None = None) -> list[EvalTask]:
    tasks = load_tasks(Catalog.of(settings).eval_tasks)
    if not only:
        return tasks
    known = {task.id for task in tasks}
    unknown = [task_id for task_id in only if task_id not in known]
    if unknown:
        where = Catalog.of(settings).eval_tasks
        raise InputError(f"--only: unknown eval task id(s) {', '.join(unknown)} (not in {where})")
    wanted = set(only)
    return [task for task in tasks if task.id in wanted]


def default_factories(
    settings: Settings, agent: AgentUnderTest
) -> tuple[ChatFactory, WorkspaceFactory, Any]:
    """Chats for the user (configured) and the agent under test, seeded per try; sandboxes."""
    from ise_core.config import ScriptedShapeSettings
    from ise_core.llm.factory import build_accountant, build_chat
    from ise_core.scripted import EpisodeBrief
    from ise_core.workspace import open_workspace

    accountant = build_accountant(settings.llm)
    # The scripted agent under test runs with its profile's shape (the program's defaults
    # overridden), the scripted user with the configured one.
    agent_shape = {k: v for k, v in agent.shape.items() if k != "recover"}
    agent_recovers = bool(agent.shape.get("recover", True))

    def chat_for(role: str, task: EvalTask, index: int) -> Chat:
        seed = try_seed(settings.seed, index)
        brief = EpisodeBrief(
            intent=task.intent,
            shape=ScriptedShapeSettings(**agent_shape)
            if role == "agent"
            else settings.simulate.scripted,
            seed=seed,
            max_steps_per_turn=settings.simulate.max_steps_per_turn,
            recover=agent_recovers if role == "agent" else True,
        )
        llm = agent.llm if role == "agent" else settings.llm
        return build_chat(
            role,  # type: ignore[arg-type]
            llm,
            base_dir=settings.base_dir,
            seed=seed,
            accountant=accountant,
            episode=f"{task.id}-t{index}",
            brief=brief,
        )

    def workspace_for(session_id: str) -> Any:
        return open_workspace(settings.workspace, base_dir=settings.base_dir, session_id=session_id)

    return chat_for, workspace_for, accountant


def build_context(
    settings: Settings,
    request: EvalRequest,
    *,
    chat_factory: ChatFactory | None = None,
    workspace_factory: WorkspaceFactory | None = None,
) -> EvalContext:
    agent = resolve_agent(settings, model=request.model, endpoint=request.endpoint)
    judge = build_judge(settings)
    chat_for, workspace_for, _ = default_factories(settings, agent)
    return EvalContext(
        settings=settings,
        agent=agent,
        paths=Catalog.of(settings).eval_run(settings.eval.run),
        fingerprint=run_fingerprint(settings, agent, judge),
        chat_for=chat_factory or chat_for,
        workspace_for=workspace_factory or workspace_for,
        judge=judge,
    )


def run_eval_tasks(
    ctx: EvalContext,
    tasks: Sequence[EvalTask],
    *,
    concurrency: int | None = None,
    progress: bool = True,
) -> RunReport:
    """Run the tries of ``tasks`` not yet done (reaping dead runs' sandboxes first)."""
    settings = ctx.settings
    if settings.simulate.reap_first and tasks:
        from ise_core.workspace import reap

        reap(settings.workspace, settings.base_dir)
    limit = concurrency or settings.eval.concurrency
    return asyncio.run(run_tasks(ctx, tasks, concurrency=limit, progress=progress))


def finish_eval(ctx: EvalContext, tasks: Sequence[EvalTask], log: Log = _stderr) -> dict[str, Any]:
    """results.jsonl, metrics.json, plots and a history line from the task files."""
    rows, missing = load_rows(ctx.paths, tasks, ctx.fingerprint)
    if missing:
        raise InputError(
            f"{len(missing)} eval task(s) have no results for this run "
            f"({', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}); run `ise eval` again"
        )
    header = {"agent": ctx.agent.describe(), "fingerprint": ctx.fingerprint}
    header["user"] = ctx.settings.llm.role("user")["provider"]
    metrics = write_outputs(
        ctx.paths, tasks, rows, run=ctx.settings.eval.run, k=ctx.settings.eval.k, header=header
    )
    overall = metrics["overall"]
    if overall.get("n_tasks"):  # an empty task set is no run to compare with
        append_history(ctx.paths, ctx.settings.eval.run, metrics)
    if overall.get("n_tasks"):
        log(
            f"{ctx.agent.label}: score {overall['score']:.3f}, pass@1 "
            f"{overall['pass_at_k']['1']:.3f}, completion {overall['completion']:.3f}, "
            f"robustness {overall['robustness']:.3f}, safety {overall['safety']:.3f} "
            f"over {overall['n_tasks']} tasks x {ctx.settings.eval.k} tries -> {ctx.paths.metrics}"
        )
    else:
        where = Catalog.of(ctx.settings).eval_tasks
        log(f"no eval tasks in {where}: set eval.fraction or eval.count")
    return metrics


def eval_stage(
    settings: Settings,
    request: EvalRequest | None = None,
    *,
    only: Sequence[str] | None = None,
    concurrency: int | None = None,
    progress: bool = True,
    chat_factory: ChatFactory | None = None,
    workspace_factory: WorkspaceFactory | None = None,
    log: Log = _stderr,
) -> dict[str, Any]:
    """Evaluate the agent under test on the frozen task set; returns metrics.json's content."""
    request = request or EvalRequest()
    settings = request.apply(settings)
    tasks = select_tasks(settings, only)
    ctx = build_context(
        settings, request, chat_factory=chat_factory, workspace_factory=workspace_factory
    )
    log(
        f"evaluating {ctx.agent.label} on {len(tasks)} tasks x {settings.eval.k} tries "
        f"(a clean and a faulted episode each) -> {ctx.paths.root}"
    )
    if tasks:  # a configuration error (an unset key variable) before any sandbox starts
        ctx.chat_for("agent", tasks[0], 0)
    for folder in (ctx.paths.task_results_dir, ctx.paths.episodes_dir):
        folder.mkdir(parents=True, exist_ok=True)  # outputs even of an empty task set
    report = run_eval_tasks(ctx, tasks, concurrency=concurrency, progress=progress)
    log(report.summary())
    metrics = finish_eval(ctx, tasks, log)
    metrics["report"] = asdict(report)
    return metrics


__all__ = [
    "EvalRequest",
    "build_context",
    "default_factories",
    "eval_stage",
    "finish_eval",
    "run_eval_tasks",
    "select_tasks",
]
