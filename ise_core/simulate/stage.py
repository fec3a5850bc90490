"""Stages 2–3 as functions over paths and settings: ``simulate_stage`` and ``collect_stage``.

Layout under ``simulate.out_dir`` (default ``data/trajectories``)::

    episodes/<intent_id>.json   one Trajectory per intent, any status (the unit of resume)
    timing/<intent_id>.json     wall-clock timings of that episode (never reproducible, so
                                kept apart: episode files are byte-identical across re-runs
                                with the scripted roles)
    trajectories.jsonl          kept episodes, sorted by intent id      (collect)
    episode_index.jsonl         one row per current episode, any status (collect; the viewer)
    stats.json                  shape statistics of DESIGN §3            (collect)
    timing.json                 timing summary                           (collect)

Resume: an intent is skipped when its episode is current (``EpisodeStore.is_done``: made with
the same params fingerprint for the same intent record) and did not fail; failed
episodes (an endpoint down, a sandbox lost) are run again. Each file is written atomically
when its episode ends, so a killed run leaves whole files only; the next run reaps the
sandboxes it left.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ise_core.atomic import remove_stale_temp_files
from ise_core.capacity import episodes_in_flight, longest_first
from ise_core.catalog import Catalog, EpisodeStore
from ise_core.config import Settings
from ise_core.errors import BackendError, BudgetExceeded, InputError
from ise_core.llm.base import Chat
from ise_core.llm.limits import adaptive_summary, endpoint_stats
from ise_core.records import Intent, read_json, write_json, write_jsonl
from ise_core.refresh.history import episodes_by_period
from ise_core.shutdown import Shutdown
from ise_core.simulate.episode import EpisodeResult, run_episode
from ise_core.simulate.episode_index import write_index
from ise_core.simulate.metrics import summarize, trajectory_stats
from ise_core.stages import StageOptions, StageResult, small_values
from ise_core.workspace.base import Workspace

if TYPE_CHECKING:
    from ise_core.workspace.pool import WorkspacePool

SHUTDOWN_POLL_S = 0.1  # how often a run checks whether a stop signal came
ChatFactory = Callable[[str, Intent], Chat]
WorkspaceFactory = Callable[[str], Workspace]


@dataclass
class SimulateReport:
    """What one ``simulate_stage`` call did (small: paths and counts)."""

    n_intents: int = 0
    n_selected: int = 0
    n_skipped: int = 0
    n_run: int = 0
    n_kept: int = 0
    n_rejected: int = 0
    n_failed: int = 0
    n_not_started: int = 0
    n_abandoned: int = 0  # running when a stop signal's grace period ended; not written
    interrupted: str = ""  # the stop signal that ended the run early (SIGTERM, SIGINT)
    budget_exhausted: bool = False
    reaped: int = 0
    params_fingerprint: str = ""
    episodes_dir: str = ""
    elapsed_s: float = 0.0
    episodes_at_once: int = 0
    episodes_at_once_from: str = ""  # why that many (ise_core.capacity.episodes_in_flight)
    failed_ids: list[str] = field(default_factory=list)
    # The endpoints' limiters after the run: in flight, latency, the adaptive cap's moves.
    limits: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for people: what ran, what was kept, what failed."""
        parts = [
            f"{self.n_run} run",
            f"{self.n_skipped} skipped (already done)",
            f"{self.n_kept} kept",
            f"{self.n_rejected} rejected",
            f"{self.n_failed} failed",
        ]
        if self.n_abandoned:
            parts.append(f"{self.n_abandoned} abandoned")
        if self.n_not_started:
            parts.append(f"{self.n_not_started} not started")
        if self.n_run:
            parts.append(f"{self.episodes_at_once} at once ({self.episodes_at_once_from})")
        if self.budget_exhausted:
            parts.append("LLM budget exhausted: re-run with a larger llm.budget to continue")
        if self.reaped:
            parts.append(f"{self.reaped} stale sandbox(es) reaped")
        moved = adaptive_summary(self.limits)
        if moved:
            parts.append(moved)
        return f"{', '.join(parts)} in {self.elapsed_s:.1f}s -> {self.episodes_dir}"

    def result(self) -> StageResult:
        return StageResult("simulate", small_values(self.as_dict()), self.summary())


def run_simulate(settings: Settings, options: StageOptions) -> StageResult:
    """The stage table's entry point for stages 2-3."""
    report = simulate_stage(
        settings,
        only=list(options.only) if options.only else None,
        concurrency=options.concurrency,
        progress=options.progress,
        shutdown=options.shutdown,
    )
    if options.shutdown is not None:
        options.shutdown.raise_if_requested(f"simulate: {report.summary()}")
    return report.result()


def run_collect(settings: Settings, options: StageOptions) -> StageResult:
    """The stage table's entry point for collect."""
    shown = ("n_episodes", "n_kept", "completion_rate", "role_drift_rate")
    return StageResult.of("collect", collect_stage(settings), shown)


def _default_factories(
    settings: Settings, pool: WorkspacePool | None
) -> tuple[ChatFactory, WorkspaceFactory, Any]:
    from ise_core.llm.factory import build_accountant, build_chat
    from ise_core.scripted import EpisodeBrief
    from ise_core.workspace import open_workspace

    accountant = build_accountant(settings.llm)

    def chat_for(role: str, intent: Intent) -> Chat:
        return build_chat(
            role,  # type: ignore[arg-type]
            settings.llm,
            base_dir=settings.base_dir,
            seed=settings.seed,
            accountant=accountant,
            episode=intent.id,
            brief=EpisodeBrief.of(intent, settings),
        )

    def workspace_for(session_id: str) -> Workspace:
        if pool is not None:
            return pool.acquire()  # a warm sandbox, given back wiped by its close()
        return open_workspace(settings.workspace, base_dir=settings.base_dir, session_id=session_id)

    return chat_for, workspace_for, accountant


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    # In a log file (Airflow, CI, nohup) a redraw per episode is noise: one line every 30 s.
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(
        total=total,
        desc="simulate",
        unit="ep",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=interval,
        maxinterval=max(interval, 10.0),
    )


def _select(intents: Sequence[Intent], only: Sequence[str] | None, source: Path) -> list[Intent]:
    """The intents to simulate: all, or those named by ``--only`` (each must exist)."""
    if not only:
        return list(intents)
    known = {intent.id for intent in intents}
    unknown = [i for i in only if i not in known]
    if unknown:
        raise InputError(f"--only: unknown intent id(s) {', '.join(unknown)} (not in {source})")
    wanted = set(only)
    return [intent for intent in intents if intent.id in wanted]


@dataclass
class _Simulation:
    """One ``simulate_async`` call: its episodes share the store, the report, the LLM
    accounting, the concurrency gate and the stop signals (budget spent, or a stop asked
    for by SIGTERM / SIGINT through ``shutdown``)."""

    settings: Settings
    store: EpisodeStore
    report: SimulateReport
    chat_for: ChatFactory
    workspace_for: WorkspaceFactory
    accountant: Any
    gate: asyncio.Semaphore
    bar: Any
    shutdown: Shutdown
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    running: set[asyncio.Task[Any]] = field(default_factory=set)
    opened: set[Workspace] = field(default_factory=set)  # sandboxes not yet closed
    abandoning: bool = False  # the grace period is over: running episodes are cancelled

    def _stopping(self) -> bool:
        exhausted = self.accountant is not None and self.accountant.exhausted
        return self.stop.is_set() or exhausted or self.shutdown.requested

    async def episode(self, intent: Intent) -> None:
        """Simulate and write one intent's episode, unless the run has to stop."""
        async with self.gate:
            if self._stopping():
                self.report.n_not_started += 1
                self.stop.set()
                return
            task = asyncio.current_task()
            assert task is not None
            self.running.add(task)
            try:
                result = await self._run(intent)
            except BudgetExceeded:
                # Abandoned, not written: the intent stays for the next run.
                self.report.budget_exhausted = True
                self.report.n_not_started += 1
                self.stop.set()
                return
            except asyncio.CancelledError:
                if not self.abandoning:
                    raise
                self.report.n_abandoned += 1  # not written: the next run does it again
                return
            finally:
                self.running.discard(task)
            timing = dict(result.timing)
            if self.accountant is not None:
                # Requests, retries, failures and cache hits depend on the endpoint's day, not
                # on the params: they live beside the timings, not in the episode.
                timing["llm"] = self.accountant.pop_episode(intent.id)
            # Serialised and written (with fsync) in a worker thread, so the event loop keeps
            # serving the other episodes' requests meanwhile. A finished episode is always
            # written, whole: a stop signal never cancels this step.
            trajectory = self.store.stamped(result.trajectory, intent)  # its refresh period
            await asyncio.to_thread(self.store.save, trajectory, timing)
            self._count(trajectory.status, intent.id)

    def _open(self, sandbox_id: str) -> Workspace:
        workspace = self.workspace_for(sandbox_id)
        self.opened.add(workspace)  # set.add is atomic; read only after the threads end
        return workspace

    async def _run(self, intent: Intent) -> EpisodeResult:
        user, agent = self.chat_for("user", intent), self.chat_for("agent", intent)
        fp = self.store.fingerprint
        # The sandbox gets a fresh name (a killed run may have left one behind); the episode's
        # session id is stable so re-runs stay byte-identical.
        sandbox_id = f"{intent.id[:40]}-{uuid.uuid4().hex[:8]}"
        workspace = await asyncio.to_thread(self._open, sandbox_id)
        try:
            return await run_episode(
                intent,
                user=user,
                agent=agent,
                workspace=workspace,
                settings=self.settings.simulate,
                session_id=f"{intent.id}-{fp[:8]}",
                params_fingerprint=fp,
            )
        finally:
            # Once a stop is asked for nothing is reused: a pooled sandbox is destroyed, not
            # wiped (a wipe would first wait for a tool call an abandoned episode left running).
            close = workspace.close
            if self.shutdown.requested:
                close = getattr(workspace, "discard", close)
            await asyncio.to_thread(close)
            self.opened.discard(workspace)

    async def watch_shutdown(self) -> None:
        """Once a stop is asked for: no new episode starts (``_stopping``); the running ones
        get the grace period, then are cancelled (abandoned, their sandboxes closed)."""
        while not self.shutdown.requested:
            await asyncio.sleep(SHUTDOWN_POLL_S)
        self.report.interrupted = self.shutdown.signal_name
        # Read again on every round: a second signal moves the deadline to now.
        while self.running and time.monotonic() < (self.shutdown.deadline() or 0.0):
            await asyncio.sleep(SHUTDOWN_POLL_S)
        self.abandoning = True
        for task in list(self.running):
            task.cancel()

    def close_leftovers(self) -> None:
        """Close what a cancelled episode could not (its sandbox was still being opened);
        pooled sandboxes are destroyed, not wiped for reuse."""
        for workspace in list(self.opened):
            try:
                getattr(workspace, "discard", workspace.close)()
            except BackendError:
                continue  # the next run's reaper removes what could not be closed now
        self.opened.clear()

    def _count(self, status: str, intent_id: str) -> None:
        report = self.report
        report.n_run += 1
        if status == "kept":
            report.n_kept += 1
        elif status == "failed":
            report.n_failed += 1
            report.failed_ids.append(intent_id)
        else:
            report.n_rejected += 1
        if self.bar is not None:
            self.bar.set_postfix(kept=report.n_kept, failed=report.n_failed, refresh=False)
            self.bar.update(1)

    def finish(self, started: float) -> SimulateReport:
        report = self.report
        if self.bar is not None:
            self.bar.close()
        report.budget_exhausted = report.budget_exhausted or bool(
            self.accountant is not None and self.accountant.exhausted and report.n_not_started
        )
        if self.shutdown.requested:
            report.interrupted = self.shutdown.signal_name
        report.failed_ids.sort()
        report.limits = endpoint_stats()
        report.elapsed_s = round(time.monotonic() - started, 3)
        return report


async def simulate_async(
    settings: Settings,
    *,
    only: Sequence[str] | None = None,
    concurrency: int | None = None,
    progress: bool = True,
    chat_factory: ChatFactory | None = None,
    workspace_factory: WorkspaceFactory | None = None,
    shutdown: Shutdown | None = None,
) -> SimulateReport:
    """``simulate_stage`` inside a running event loop (factories injectable for tests)."""
    started = time.monotonic()
    files = Catalog.of(settings)
    intents = files.load_intents()
    selected = _select(intents, only, files.intents)
    store = EpisodeStore.of(settings)
    store.folder.mkdir(parents=True, exist_ok=True)
    store.remove_stale_temp_files()  # what killed runs left
    report = SimulateReport(
        n_intents=len(intents),
        n_selected=len(selected),
        params_fingerprint=store.fingerprint,
        episodes_dir=str(store.folder),
    )
    todo = longest_first([intent for intent in selected if not store.is_done(intent)])
    report.n_skipped = len(selected) - len(todo)
    accountant: Any = None
    pool = _pool_for(settings) if workspace_factory is None and todo else None
    if chat_factory is None or workspace_factory is None:
        default_chat, default_workspace, accountant = _default_factories(settings, pool)
        chat_factory = chat_factory or default_chat
        workspace_factory = workspace_factory or default_workspace
    if settings.simulate.reap_first and todo:
        from ise_core.workspace import reap

        reaped = await asyncio.to_thread(reap, settings.workspace, settings.base_dir)
        report.reaped = len(reaped.directories)
    limit, report.episodes_at_once_from = episodes_in_flight(settings, concurrency)
    report.episodes_at_once = limit
    # Workspace calls run in threads: give every concurrent episode room for its tool call
    # and its bookkeeping instead of the small default pool.
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=2 * limit + 4, thread_name_prefix="ise-simulate")
    )
    run = _Simulation(
        settings,
        store,
        report,
        chat_factory,
        workspace_factory,
        accountant,
        asyncio.Semaphore(limit),
        _progress(len(todo), progress),
        shutdown or Shutdown(),
    )
    watcher = asyncio.create_task(run.watch_shutdown())
    try:
        with run.shutdown.cooperating():
            await asyncio.gather(*(run.episode(intent) for intent in todo))
    finally:
        watcher.cancel()
        if run.shutdown.requested or sys.exc_info()[1] is not None:
            # Stopped early (a signal, a task timeout): tool calls of abandoned episodes end
            # as their sandboxes close; wait for them, then close what nothing closed yet.
            await loop.shutdown_default_executor()
            run.close_leftovers()
        if pool is not None:
            pool.close()
        run.finish(started)
    return report


def _pool_for(settings: Settings) -> WorkspacePool | None:
    """A warm pool when ``workspace.pool_size`` asks for one (see ise_core.workspace.pool)."""
    if not settings.workspace.pool_size:
        return None
    from ise_core.workspace import WorkspacePool

    return WorkspacePool(settings.workspace, base_dir=settings.base_dir)


def simulate_stage(
    settings: Settings,
    *,
    only: Sequence[str] | None = None,
    concurrency: int | None = None,
    progress: bool = True,
    chat_factory: ChatFactory | None = None,
    workspace_factory: WorkspaceFactory | None = None,
    shutdown: Shutdown | None = None,
) -> SimulateReport:
    """Simulate every (or each ``only``) intent not yet simulated with these params.

    With ``shutdown`` (whose signal handlers the caller installed), a stop signal ends the
    run early: see ``ise_core.shutdown``; ``report.interrupted`` then names the signal."""
    return asyncio.run(
        simulate_async(
            settings,
            only=only,
            concurrency=concurrency,
            progress=progress,
            chat_factory=chat_factory,
            workspace_factory=workspace_factory,
            shutdown=shutdown,
        )
    )


# --- collect -------------------------------------------------------------------------------------


def collect_stage(settings: Settings) -> dict[str, Any]:
    """Gather kept episodes into trajectories.jsonl and write stats.json; returns the stats.

    Only episodes of intents in the current intents.jsonl, made with the current params, are
    counted; others are reported as ``n_stale`` and left out.
    """
    files = Catalog.of(settings)
    remove_stale_temp_files(files.trajectories_dir)  # left by a collect killed mid-write
    store = EpisodeStore.of(settings)
    store.paths()  # a missing episodes folder is reported before the intents are read
    intents = files.load_intents()
    current, stale = store.current(intents)
    current = store.with_fallbacks(current, intents)  # renewed, not kept: the last kept one
    kept = [e for e in current if e.kept]
    write_jsonl(files.trajectories, kept)
    write_index(files.episode_index, current)  # what the viewer's episode list reads
    ids = [e.intent_id for e in current]
    stats = trajectory_stats(
        current,
        fp=store.fingerprint,
        extra={
            "n_intents": len(intents),
            "n_missing": len({intent.id for intent in intents} - set(ids)),
            "n_stale": stale,
        },
    )
    stats["llm_usage"].update(_request_counts(store, ids))
    if store.ledger:
        stats["periods"] = episodes_by_period(current, settings.llm.prices)
    write_json(files.trajectories_stats, stats)
    write_json(files.trajectories_timing, _timing_summary(store, ids))
    return stats


REQUEST_COUNTS = ("requests", "retries", "failures", "malformed", "cache_hits")


def _request_counts(store: EpisodeStore, ids: Sequence[str]) -> dict[str, int]:
    """LLM requests, retries, failures, malformed replies and cache hits of the episodes,
    from the records written beside their timings."""
    totals = dict.fromkeys(REQUEST_COUNTS, 0)
    for row in _timing_rows(store, ids):
        llm = row.get("llm")
        if isinstance(llm, dict):
            for key in REQUEST_COUNTS:
                value = llm.get(key, 0)
                totals[key] += value if isinstance(value, int) else 0
    return totals


def _timing_rows(store: EpisodeStore, ids: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for intent_id in ids:
        path = store.timing_path(intent_id)
        if path.exists():
            try:
                data = read_json(path)
            except InputError:
                continue
            if isinstance(data, dict):
                rows.append(data)
    return rows


def _timing_summary(store: EpisodeStore, ids: Sequence[str]) -> dict[str, Any]:
    rows = _timing_rows(store, ids)
    summary: dict[str, Any] = {"n_episodes": len(rows)}
    for key in ("wall_s", "open_s", "user_llm_s", "agent_llm_s", "tool_s", "checks_s"):
        summary[key] = summarize(float(r.get(key, 0.0)) for r in rows)
    summary["total_wall_s"] = round(sum(float(r.get("wall_s", 0.0)) for r in rows), 3)
    return summary


__all__ = [
    "SimulateReport",
    "collect_stage",
    "run_collect",
    "run_simulate",
    "simulate_async",
    "simulate_stage",
]
