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

Resume: an intent is skipped when its episode file exists, was produced with the same params
fingerprint (``simulate_fingerprint``) for the same intent record, and did not fail; failed
episodes (an endpoint down, a sandbox lost) are run again. Each file is written atomically
when its episode ends, so a killed run leaves whole files only; the next run reaps the
sandboxes it left.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ise_core.config import Settings, fingerprint
from ise_core.errors import BudgetExceeded, InputError
from ise_core.llm.base import Chat
from ise_core.records import (
    Intent,
    Trajectory,
    read_json,
    read_jsonl,
    remove_stale_temp_files,
    validate_record,
    write_json,
    write_jsonl,
)
from ise_core.simulate.episode import EpisodeResult, intent_hash, run_episode
from ise_core.simulate.episode_index import write_index
from ise_core.simulate.metrics import summarize
from ise_core.workspace.base import Workspace

# Exactly the settings that change what an episode contains (not where it is written, nor
# how many run at once, nor the cache).
SIMULATE_KEYS: tuple[str, ...] = (
    "seed",
    "simulate.max_turns",
    "simulate.max_steps_per_turn",
    "simulate.user_retries",
    "simulate.drift_retries",
    "simulate.episode_token_budget",
    "simulate.episode_time_limit_s",
    "simulate.require_checks",
    "simulate.show_workspace_files",
    "simulate.workspace_listing_limit",
    "simulate.scripted",
    "llm.provider",
    "llm.base_url",
    "llm.model",
    "llm.temperature",
    "llm.top_p",
    "llm.max_tokens",
    "llm.roles.user",
    "llm.roles.agent",
    "workspace.backend",
    "workspace.template",
    "workspace.call_timeout_s",
    "workspace.output_limit",
    "workspace.network_allowlist",
)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
STALE_TEMP_S = 60.0

ChatFactory = Callable[[str, Intent], Chat]
WorkspaceFactory = Callable[[str], Workspace]


def simulate_fingerprint(settings: Settings) -> str:
    return fingerprint(settings, *SIMULATE_KEYS)


def trajectories_dir(settings: Settings) -> Path:
    return settings.path(settings.simulate.out_dir)


def episode_path(settings: Settings, intent_id: str) -> Path:
    return trajectories_dir(settings) / "episodes" / f"{intent_id}.json"


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
    budget_exhausted: bool = False
    reaped: int = 0
    params_fingerprint: str = ""
    episodes_dir: str = ""
    elapsed_s: float = 0.0
    failed_ids: list[str] = field(default_factory=list)

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
        if self.n_not_started:
            parts.append(f"{self.n_not_started} not started")
        if self.budget_exhausted:
            parts.append("LLM budget exhausted: re-run with a larger llm.budget to continue")
        if self.reaped:
            parts.append(f"{self.reaped} stale sandbox(es) reaped")
        return f"{', '.join(parts)} in {self.elapsed_s:.1f}s -> {self.episodes_dir}"


def load_intents(settings: Settings) -> list[Intent]:
    path = settings.path(settings.intents.out_dir) / "intents.jsonl"
    if not path.exists():
        raise InputError(f"{path}: intents file not found (run `ise intents` first)")
    intents = read_jsonl(path, Intent)
    first_line: dict[str, int] = {}
    for lineno, intent in enumerate(intents, start=1):
        if not _SAFE_ID.match(intent.id):
            raise InputError(
                f"{path}:{lineno}: field id: {intent.id!r} cannot name an episode file "
                "(expected letters, digits, '_', '.', '-')"
            )
        if intent.id in first_line:
            # Two intents would share (and overwrite) one episode file.
            raise InputError(
                f"{path}:{lineno}: field id: {intent.id!r} is already the id of line "
                f"{first_line[intent.id]} (each intent needs its own id)"
            )
        first_line[intent.id] = lineno
    return intents


def is_current(path: Path, fp: str, intent: Intent) -> bool:
    """Whether the episode at ``path`` can be kept as is (same params and intent, not failed)."""
    try:
        data = read_json(path)
        episode = validate_record(data, Trajectory, str(path))
    except InputError:
        return False  # unreadable or outdated: simulate it again
    return (
        episode.params_fingerprint == fp
        and episode.metadata.get("intent_hash") == intent_hash(intent)
        and episode.status != "failed"
    )


def _remove_stale_temp_files(folder: Path) -> None:
    # Left by a killed run's atomic write; a live writer's temp file is milliseconds old.
    now = time.time()
    for temp in folder.glob(".*.tmp"):
        try:
            if now - temp.stat().st_mtime > STALE_TEMP_S:
                temp.unlink()
        except FileNotFoundError:
            continue


def _default_factories(
    settings: Settings,
) -> tuple[ChatFactory, WorkspaceFactory, Any]:
    from ise_core.llm.accounting import Accountant
    from ise_core.llm.factory import build_chat
    from ise_core.workspace import open_workspace

    accountant = Accountant.from_settings(settings.llm)
    shape = settings.simulate.scripted.model_dump(mode="json")

    def chat_for(role: str, intent: Intent) -> Chat:
        context = {
            "intent": intent.model_dump(mode="json"),
            "shape": shape,
            "seed": settings.seed,
            "max_steps_per_turn": settings.simulate.max_steps_per_turn,
            "episode": intent.id,
        }
        return build_chat(
            role,  # type: ignore[arg-type]
            settings.llm,
            base_dir=settings.base_dir,
            seed=settings.seed,
            accountant=accountant,
            context=context,
        )

    def workspace_for(session_id: str) -> Workspace:
        return open_workspace(settings.workspace, base_dir=settings.base_dir, session_id=session_id)

    return chat_for, workspace_for, accountant


async def _simulate_one(
    intent: Intent,
    settings: Settings,
    fp: str,
    chat_for: ChatFactory,
    workspace_for: WorkspaceFactory,
) -> EpisodeResult:
    user, agent = chat_for("user", intent), chat_for("agent", intent)
    # The sandbox gets a fresh name (a killed run may have left one behind); the episode's
    # session id is stable so re-runs stay byte-identical.
    sandbox_id = f"{intent.id[:40]}-{uuid.uuid4().hex[:8]}"
    workspace = await asyncio.to_thread(workspace_for, sandbox_id)
    try:
        return await run_episode(
            intent,
            user=user,
            agent=agent,
            workspace=workspace,
            settings=settings.simulate,
            session_id=f"{intent.id}-{fp[:8]}",
            params_fingerprint=fp,
        )
    finally:
        await asyncio.to_thread(workspace.close)


def _write_episode_files(
    settings: Settings, timing_dir: Path, trajectory: Trajectory, timing: dict[str, Any]
) -> None:
    write_json(timing_dir / f"{trajectory.intent_id}.json", timing)
    write_json(episode_path(settings, trajectory.intent_id), trajectory.model_dump(mode="json"))


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


async def simulate_async(
    settings: Settings,
    *,
    only: Sequence[str] | None = None,
    concurrency: int | None = None,
    progress: bool = True,
    chat_factory: ChatFactory | None = None,
    workspace_factory: WorkspaceFactory | None = None,
) -> SimulateReport:
    """``simulate_stage`` inside a running event loop (factories injectable for tests)."""
    started = time.monotonic()
    intents = load_intents(settings)
    if only:
        known = {intent.id for intent in intents}
        unknown = [i for i in only if i not in known]
        if unknown:
            raise InputError(
                f"--only: unknown intent id(s) {', '.join(unknown)} "
                f"(not in {settings.path(settings.intents.out_dir) / 'intents.jsonl'})"
            )
        wanted = set(only)
        intents_selected = [intent for intent in intents if intent.id in wanted]
    else:
        intents_selected = intents
    fp = simulate_fingerprint(settings)
    out = trajectories_dir(settings)
    episodes_dir, timing_dir = out / "episodes", out / "timing"
    episodes_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(episodes_dir)
    for folder in (episodes_dir, timing_dir):  # and what killed runs of this host left
        remove_stale_temp_files(folder)
    report = SimulateReport(
        n_intents=len(intents),
        n_selected=len(intents_selected),
        params_fingerprint=fp,
        episodes_dir=str(episodes_dir),
    )
    todo = [
        intent
        for intent in intents_selected
        if not (
            episode_path(settings, intent.id).exists()
            and is_current(episode_path(settings, intent.id), fp, intent)
        )
    ]
    report.n_skipped = len(intents_selected) - len(todo)
    accountant: Any = None
    if chat_factory is None or workspace_factory is None:
        default_chat, default_workspace, accountant = _default_factories(settings)
        chat_factory = chat_factory or default_chat
        workspace_factory = workspace_factory or default_workspace
    if settings.simulate.reap_first and todo:
        from ise_core.workspace import reap

        reaped = await asyncio.to_thread(reap, settings.workspace, settings.base_dir)
        report.reaped = len(reaped.directories)
    limit = max(1, concurrency or settings.simulate.concurrency)
    # Workspace calls run in threads: give every concurrent episode room for its tool call
    # and its bookkeeping instead of the small default pool.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=2 * limit + 4, thread_name_prefix="ise-simulate")
    )
    gate = asyncio.Semaphore(limit)
    bar = _progress(len(todo), progress)
    stop = asyncio.Event()

    async def worker(intent: Intent) -> None:
        async with gate:
            if stop.is_set() or (accountant is not None and accountant.exhausted):
                report.n_not_started += 1
                stop.set()
                return
            try:
                result = await _simulate_one(intent, settings, fp, chat_factory, workspace_factory)
            except BudgetExceeded:
                # Abandoned, not written: the intent stays for the next run.
                report.budget_exhausted = True
                report.n_not_started += 1
                stop.set()
                return
            trajectory = result.trajectory
            timing = dict(result.timing)
            if accountant is not None:
                # Requests, retries, failures and cache hits depend on the endpoint's day, not
                # on the params: they live beside the timings, not in the episode.
                timing["llm"] = accountant.pop_episode(intent.id)
            # Serialised and written (with fsync) in a worker thread, so the event loop keeps
            # serving the other episodes' requests meanwhile.
            await asyncio.to_thread(_write_episode_files, settings, timing_dir, trajectory, timing)
            report.n_run += 1
            if trajectory.status == "kept":
                report.n_kept += 1
            elif trajectory.status == "failed":
                report.n_failed += 1
                report.failed_ids.append(intent.id)
            else:
                report.n_rejected += 1
            if bar is not None:
                bar.set_postfix(kept=report.n_kept, failed=report.n_failed, refresh=False)
                bar.update(1)

    try:
        await asyncio.gather(*(worker(intent) for intent in todo))
    finally:
        if bar is not None:
            bar.close()
    report.budget_exhausted = report.budget_exhausted or bool(
        accountant is not None and accountant.exhausted and report.n_not_started
    )
    report.failed_ids.sort()
    report.elapsed_s = round(time.monotonic() - started, 3)
    return report


def simulate_stage(
    settings: Settings,
    *,
    only: Sequence[str] | None = None,
    concurrency: int | None = None,
    progress: bool = True,
    chat_factory: ChatFactory | None = None,
    workspace_factory: WorkspaceFactory | None = None,
) -> SimulateReport:
    """Simulate every (or each ``only``) intent not yet simulated with these params."""
    return asyncio.run(
        simulate_async(
            settings,
            only=only,
            concurrency=concurrency,
            progress=progress,
            chat_factory=chat_factory,
            workspace_factory=workspace_factory,
        )
    )


# --- collect -------------------------------------------------------------------------------------


def load_episode(path: Path) -> Trajectory:
    """One episode file, validated; a malformed file is an InputError naming it."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object (one Trajectory)")
    episode = validate_record(data, Trajectory, str(path))
    if episode.intent_id != path.stem:
        raise InputError(
            f"{path}: field intent_id: {episode.intent_id!r} does not match the file name"
        )
    return episode


def _usage(episodes: Sequence[Trajectory]) -> dict[str, Any]:
    totals: dict[str, Counter[str]] = {"user": Counter(), "agent": Counter()}
    for episode in episodes:
        usage = episode.metadata.get("token_usage") or {}
        for role in totals:
            for key, value in (usage.get(role) or {}).items():
                totals[role][key] += int(value)
    roles = {role: dict(sorted(counter.items())) for role, counter in totals.items()}
    return {
        **roles,
        "total_tokens": sum(counter.get("total_tokens", 0) for counter in totals.values()),
    }


def trajectory_stats(
    episodes: Sequence[Trajectory], *, fp: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The trajectory statistics of DESIGN §3 over ``episodes`` (shape stats over kept ones)."""
    kept = [e for e in episodes if e.kept]

    def values(name: str) -> list[float]:
        return [float(e.metadata.get(name, 0)) for e in kept]

    user_turns = values("user_turns")
    generations = sum(
        int((e.metadata.get("role_drift") or {}).get("generations", 0)) for e in episodes
    )
    drift_events = sum(
        len((e.metadata.get("role_drift") or {}).get("events", [])) for e in episodes
    )
    checked = [e for e in episodes if e.status != "failed"]
    checks_total = sum(len(e.checks) for e in checked)
    tool_usage: Counter[str] = Counter()
    for episode in kept:
        tool_usage.update(episode.metadata.get("tool_usage") or {})
    recovered = values("recovered_errors")
    return {
        **(extra or {}),
        "n_episodes": len(episodes),
        "n_kept": len(kept),
        "n_rejected": sum(1 for e in episodes if e.status == "rejected"),
        "n_failed": sum(1 for e in episodes if e.status == "failed"),
        "completion_rate": round(len(kept) / len(episodes), 4) if episodes else 0.0,
        "user_turns": summarize(user_turns),
        "user_turns_share_6_10": (
            round(sum(1 for v in user_turns if 6 <= v <= 10) / len(user_turns), 4)
            if user_turns
            else 0.0
        ),
        "dialogue_turns": summarize(values("dialogue_turns")),
        "tool_calls": summarize(values("tool_calls")),
        "distinct_tools": summarize(values("distinct_tools")),
        "tool_errors": {
            "total": int(sum(values("tool_errors"))),
            **summarize(values("tool_errors")),
        },
        "recovered_errors": {
            "total": int(sum(recovered)),
            **summarize(recovered),
            "share_of_kept_with_recovery": (
                round(sum(1 for v in recovered if v > 0) / len(kept), 4) if kept else 0.0
            ),
        },
        "role_drift_rate": round(drift_events / generations, 6) if generations else 0.0,
        "role_drift_events": drift_events,
        "user_generations": generations,
        "stop_reasons": dict(sorted(Counter(e.stop_reason for e in episodes).items())),
        "checks_pass_rate": (
            round(sum(1 for e in checked for c in e.checks if c.passed) / checks_total, 4)
            if checks_total
            else 0.0
        ),
        "tool_usage": dict(sorted(tool_usage.items())),
        "complexity": dict(
            sorted(Counter(str(e.metadata.get("complexity")) for e in kept).items())
        ),
        "backends": dict(sorted(Counter(str(e.metadata.get("backend")) for e in episodes).items())),
        "llm_usage": _usage(episodes),
        "params_fingerprint": fp,
    }


def collect_stage(settings: Settings) -> dict[str, Any]:
    """Gather kept episodes into trajectories.jsonl and write stats.json; returns the stats.

    Only episodes of intents in the current intents.jsonl, made with the current params, are
    counted; others are reported as ``n_stale`` and left out.
    """
    out = trajectories_dir(settings)
    episodes_dir = out / "episodes"
    remove_stale_temp_files(out)  # left by a collect that was killed mid-write
    if not episodes_dir.is_dir():
        raise InputError(f"{episodes_dir}: episodes folder not found (run `ise simulate` first)")
    fp = simulate_fingerprint(settings)
    intents = {intent.id: intent for intent in load_intents(settings)}
    current: list[Trajectory] = []
    stale = 0
    for path in sorted(episodes_dir.glob("*.json")):
        episode = load_episode(path)
        intent = intents.get(episode.intent_id)
        if (
            intent is None
            or episode.params_fingerprint != fp
            or episode.metadata.get("intent_hash") != intent_hash(intent)
        ):
            stale += 1
            continue
        current.append(episode)
    current.sort(key=lambda e: e.intent_id)
    kept = [e for e in current if e.kept]
    write_jsonl(out / "trajectories.jsonl", kept)
    write_index(out, current)  # what the viewer's episode list reads
    stats = trajectory_stats(
        current,
        fp=fp,
        extra={
            "n_intents": len(intents),
            "n_missing": len(set(intents) - {e.intent_id for e in current}),
            "n_stale": stale,
        },
    )
    stats["llm_usage"].update(_request_counts(out / "timing", [e.intent_id for e in current]))
    write_json(out / "stats.json", stats)
    write_json(out / "timing.json", _timing_summary(out / "timing", [e.intent_id for e in current]))
    return stats


REQUEST_COUNTS = ("requests", "retries", "failures", "malformed", "cache_hits")


def _request_counts(folder: Path, ids: Sequence[str]) -> dict[str, int]:
    """LLM requests, retries, failures, malformed replies and cache hits of the episodes,
    from the records written beside their timings."""
    totals = dict.fromkeys(REQUEST_COUNTS, 0)
    for row in _timing_rows(folder, ids):
        llm = row.get("llm")
        if isinstance(llm, dict):
            for key in REQUEST_COUNTS:
                value = llm.get(key, 0)
                totals[key] += value if isinstance(value, int) else 0
    return totals


def _timing_rows(folder: Path, ids: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for intent_id in ids:
        path = folder / f"{intent_id}.json"
        if path.exists():
            try:
                data = read_json(path)
            except InputError:
                continue
            if isinstance(data, dict):
                rows.append(data)
    return rows


def _timing_summary(folder: Path, ids: Sequence[str]) -> dict[str, Any]:
    rows = _timing_rows(folder, ids)
    summary: dict[str, Any] = {"n_episodes": len(rows)}
    for key in ("wall_s", "open_s", "user_llm_s", "agent_llm_s", "tool_s", "checks_s"):
        summary[key] = summarize(float(r.get(key, 0.0)) for r in rows)
    summary["total_wall_s"] = round(sum(float(r.get("wall_s", 0.0)) for r in rows), 3)
    return summary


__all__ = [
    "SIMULATE_KEYS",
    "SimulateReport",
    "collect_stage",
    "episode_path",
    "is_current",
    "load_episode",
    "load_intents",
    "simulate_async",
    "simulate_fingerprint",
    "simulate_stage",
    "trajectory_stats",
]
