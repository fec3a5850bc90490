"""Where every file of a run lives, and the store that owns episode files.

``Catalog.of(settings)`` derives each path from the settings exactly once; stage code, the
gates, the CLI and the DAG ask it instead of joining folder and file names themselves::

    data/intents/        sampled.jsonl written.jsonl intents.jsonl duplicates.jsonl
                         rejected.jsonl stats.json timing.json vendi_curve.png gate_result.json
    data/trajectories/   episodes/<intent_id>.json timing/<intent_id>.json
                         trajectories.jsonl stats.json timing.json gate_result.json
    data/sft/            train.jsonl valid.jsonl sharegpt/ parquet/ plots/
                         stats.json README.md gate_result.json
    data/eval/           tasks.jsonl (stage 1's held-out tasks) history.jsonl (one line a run)
    data/eval/<run>/     tasks/<task_id>.json episodes/<task_id>/t<i>-<mode>.json
                         results.jsonl metrics.json plots/ gate_result.json
    data/estimate/       estimate.json, and the pilot's intents/ and trajectories/
                         (`ise estimate`: a run record, in no dataset version)

``EpisodeStore`` owns ``episodes/`` and ``timing/``: the path of an intent's episode, loading
and saving it, and the one answer to "is this episode current?" (made with the current
simulate fingerprint for the same intent record) that simulate, collect, the trajectories
gate and the DAG's planner share.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ise_core.atomic import remove_stale_temp_files
from ise_core.config import Settings
from ise_core.errors import InputError
from ise_core.records import (
    Intent,
    Trajectory,
    canonical_json,
    read_json,
    read_jsonl,
    text_hash,
    validate_record,
    write_json,
)
from ise_core.refresh.periods import BASE, Ledger
from ise_core.stages import stage

# The files of each export format, relative to ``export.out_dir`` (train, valid).
FORMAT_FILES: dict[str, tuple[str, str]] = {
    "openai": ("train.jsonl", "valid.jsonl"),
    "sharegpt": ("sharegpt/train.jsonl", "sharegpt/valid.jsonl"),
    "parquet": ("parquet/train.parquet", "parquet/valid.parquet"),
}
# The episode index's file name, inside the trajectories folder of any data root.
EPISODE_INDEX = "episode_index.jsonl"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class EvalRunFiles:
    """The files of one ``ise eval`` run, ``<eval.out_dir>/<run>/``, and the runs' history."""

    root: Path
    task_results_dir: Path  # one file per task with its tries: the unit of resume
    episodes_dir: Path
    results: Path
    metrics: Path
    plots_dir: Path
    gate_result: Path
    history: Path

    @classmethod
    def at(cls, eval_dir: Path, run: str) -> EvalRunFiles:
        root = eval_dir / run
        return cls(
            root=root,
            task_results_dir=root / "tasks",
            episodes_dir=root / "episodes",
            results=root / "results.jsonl",
            metrics=root / "metrics.json",
            plots_dir=root / "plots",
            gate_result=root / "gate_result.json",
            history=eval_dir / "history.jsonl",
        )

    def task_file(self, task_id: str) -> Path:
        return self.task_results_dir / f"{task_id}.json"

    def episode_file(self, task_id: str, index: int, mode: str) -> Path:
        return self.episodes_dir / task_id / f"t{index}-{mode}.json"


@dataclass(frozen=True)
class Catalog:
    """Every path of a run, resolved against the params file's folder."""

    taxonomy_dir: Path
    embedding_cache_dir: Path
    embedding_model_dir: Path
    sandbox_root: Path

    intents_dir: Path
    sampled: Path
    written: Path  # every written-out intent, before de-duplication
    intents: Path
    duplicates: Path
    rejected: Path
    intents_stats: Path
    intents_timing: Path
    vendi_curve: Path
    intents_gate_result: Path
    eval_tasks: Path  # the held-out eval tasks stage 1 freezes (eval.fraction / eval.count)

    trajectories_dir: Path
    episodes_dir: Path
    timing_dir: Path
    data_root_marker: Path  # a run record: which data folder the run planned in
    trajectories: Path
    episode_index: Path  # one row per current episode, for the viewer's list
    trajectories_stats: Path
    trajectories_timing: Path
    trajectories_gate_result: Path
    estimate_dir: Path  # `ise estimate`: the pilot's own intents and episodes, and its figures
    estimate: Path

    sft_dir: Path
    train: Path
    valid: Path
    sft_stats: Path
    card: Path
    plots_dir: Path
    sft_gate_result: Path

    refresh_dir: Path
    periods: Path  # the ledger of refresh periods (a DVC params file, committed to git)
    history: Path  # one line per finished period
    episode_archive_dir: Path  # renew: the episodes a newer period replaced
    held_dir: Path  # the published dataset, held while a period builds its successor
    eval_dir: Path
    eval_history: Path
    # the run named by eval.run (``ise eval --run`` names another: ``eval_run(name)``)
    eval_task_results_dir: Path
    eval_episodes_dir: Path
    eval_results: Path
    eval_metrics: Path
    eval_plots_dir: Path
    eval_gate_result: Path

    @classmethod
    def of(cls, settings: Settings) -> Catalog:
        intents = settings.path(settings.intents.out_dir)
        trajectories = settings.path(settings.simulate.out_dir)
        sft = settings.path(settings.export.out_dir)
        refresh = settings.path(settings.refresh.out_dir)
        eval_dir = settings.path(settings.eval.out_dir)
        run = EvalRunFiles.at(eval_dir, settings.eval.run)
        return cls(
            taxonomy_dir=settings.path(settings.intents.taxonomy),
            embedding_cache_dir=settings.path(settings.embedding.cache_dir),
            embedding_model_dir=settings.path(settings.embedding.model_dir),
            sandbox_root=settings.path(settings.workspace.root),
            intents_dir=intents,
            sampled=intents / "sampled.jsonl",
            written=intents / "written.jsonl",
            intents=intents / "intents.jsonl",
            duplicates=intents / "duplicates.jsonl",
            rejected=intents / "rejected.jsonl",
            intents_stats=intents / "stats.json",
            intents_timing=intents / "timing.json",
            vendi_curve=intents / "vendi_curve.png",
            intents_gate_result=intents / "gate_result.json",
            eval_tasks=eval_dir / "tasks.jsonl",
            trajectories_dir=trajectories,
            episodes_dir=trajectories / "episodes",
            timing_dir=trajectories / "timing",
            data_root_marker=trajectories / "timing" / "data-root.json",
            trajectories=trajectories / "trajectories.jsonl",
            episode_index=trajectories / EPISODE_INDEX,
            trajectories_stats=trajectories / "stats.json",
            trajectories_timing=trajectories / "timing.json",
            trajectories_gate_result=trajectories / "gate_result.json",
            estimate_dir=trajectories.parent / "estimate",
            estimate=trajectories.parent / "estimate" / "estimate.json",
            sft_dir=sft,
            train=sft / FORMAT_FILES["openai"][0],
            valid=sft / FORMAT_FILES["openai"][1],
            sft_stats=sft / "stats.json",
            card=sft / "README.md",
            plots_dir=sft / "plots",
            sft_gate_result=sft / "gate_result.json",
            refresh_dir=refresh,
            periods=refresh / "periods.json",
            history=refresh / "history.jsonl",
            episode_archive_dir=refresh / "episodes",
            held_dir=refresh / "held",
            eval_dir=eval_dir,
            eval_history=run.history,
            eval_task_results_dir=run.task_results_dir,
            eval_episodes_dir=run.episodes_dir,
            eval_results=run.results,
            eval_metrics=run.metrics,
            eval_plots_dir=run.plots_dir,
            eval_gate_result=run.gate_result,
        )

    def eval_run(self, run: str) -> EvalRunFiles:
        """The files of the eval run called ``run`` (a folder name under eval.out_dir)."""
        return EvalRunFiles.at(self.eval_dir, run)

    def path(self, name: str) -> Path:
        """The path called ``name`` (a field of this catalog); for the stage table's outputs."""
        value = getattr(self, name, None)
        if not isinstance(value, Path):
            raise KeyError(f"the catalog has no path called {name!r}")
        return value

    def format_files(self, fmt: str) -> tuple[Path, Path]:
        """The (train, valid) files of one export format."""
        train, valid = FORMAT_FILES[fmt]
        return self.sft_dir / train, self.sft_dir / valid

    def sft_folders(self) -> list[Path]:
        """The export's folders: the splits, the plots and each extra format's folder."""
        extra = [self.sft_dir / Path(train).parent for train, _ in FORMAT_FILES.values()]
        return list(dict.fromkeys([self.sft_dir, self.plots_dir, *extra]))

    def load_intents(self) -> list[Intent]:
        """The unique intents stage 1 wrote, checked to name one episode file each."""
        path = self.intents
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


def intent_hash(intent: Intent) -> str:
    """Hash of the whole intent record: an episode is stale when its intent changed."""
    return text_hash(canonical_json(intent.model_dump(mode="json")))[:16]


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


def _stamp(episode: Trajectory | Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    """(intent id, params fingerprint, intent hash, period) recorded in an episode, typed or
    raw."""
    intent_id: Any
    fingerprint: Any
    metadata: Any
    if isinstance(episode, Trajectory):
        metadata = episode.metadata
        intent_id, fingerprint = episode.intent_id, episode.params_fingerprint
    else:
        metadata = episode.get("metadata")
        intent_id, fingerprint = episode.get("intent_id"), episode.get("params_fingerprint")
    if not isinstance(metadata, Mapping):
        return intent_id, fingerprint, None, None
    return intent_id, fingerprint, metadata.get("intent_hash"), metadata.get("period")


@dataclass(frozen=True)
class EpisodeStore:
    """The episode files of one simulate fingerprint: one JSON file per intent, any status,
    plus a timing record beside it (timings are never reproducible, so they live apart)."""

    folder: Path
    timing_folder: Path
    fingerprint: str
    # The refresh periods (ise_core/refresh): which period each intent's episode belongs to.
    # Empty, the store behaves exactly as without periods.
    ledger: Ledger = field(default_factory=Ledger)
    seed: int = 0
    archive_folder: Path | None = None  # where renewed episodes keep their predecessors

    @classmethod
    def of(cls, settings: Settings) -> EpisodeStore:
        """The store of the episodes the current simulate params make."""
        files = Catalog.of(settings)
        return cls(
            files.episodes_dir,
            files.timing_dir,
            stage("simulate").fingerprint(settings),
            ledger=Ledger.load(files.periods),
            seed=settings.seed,
            archive_folder=files.episode_archive_dir,
        )

    def path(self, intent_id: str) -> Path:
        return self.folder / f"{intent_id}.json"

    def timing_path(self, intent_id: str) -> Path:
        return self.timing_folder / f"{intent_id}.json"

    def paths(self) -> list[Path]:
        """Every episode file present, sorted by name."""
        if not self.folder.is_dir():
            raise InputError(f"{self.folder}: episodes folder not found (run `ise simulate` first)")
        return sorted(self.folder.glob("*.json"))

    def load(self, path: Path) -> Trajectory:
        return load_episode(path)

    def load_raw(self) -> list[tuple[Path, dict[str, Any]]]:
        """Every episode file as a JSON object, unvalidated (for the gate, whose findings
        include schema problems)."""
        loaded = []
        for path in self.paths():
            data = read_json(path)
            if not isinstance(data, dict):
                raise InputError(f"{path}: expected a JSON object (one Trajectory)")
            loaded.append((path, data))
        return loaded

    def remove_stale_temp_files(self) -> int:
        """Remove what killed writers left in the store's folders; returns how many."""
        return sum(remove_stale_temp_files(f) for f in (self.folder, self.timing_folder))

    def save(self, trajectory: Trajectory, timing: Mapping[str, Any]) -> None:
        """Write the timing record, then the episode (the episode's presence means done).

        When periods renew episodes, the episode it replaces moves to the archive first
        (unless it failed or belongs to the same period), so no kept episode is lost."""
        path = self.path(trajectory.intent_id)
        if self.ledger.renews and self.archive_folder is not None and path.exists():
            self._archive(path, trajectory)
        write_json(self.timing_path(trajectory.intent_id), dict(timing))
        write_json(path, trajectory.model_dump(mode="json"))

    def _archive(self, path: Path, successor: Trajectory) -> None:
        try:
            previous = read_json(path)
        except InputError:
            return  # unreadable: nothing worth keeping
        if not isinstance(previous, dict) or previous.get("status") == "failed":
            return
        period = _stamp(previous)[3]
        if period == successor.metadata.get("period"):
            return  # the same period made it: a re-run, not a renewal
        assert self.archive_folder is not None
        write_json(self.archive_folder / successor.intent_id / f"{period or BASE}.json", previous)

    def expected_period(self, intent: Intent) -> str | None:
        """The period the intent's current episode belongs to (None without periods)."""
        return self.ledger.episode_period(intent, self.seed) if self.ledger else None

    def stamped(self, trajectory: Trajectory, intent: Intent) -> Trajectory:
        """The trajectory with its period in the metadata (none, not null, without one)."""
        period = self.expected_period(intent)
        if period is None:
            return trajectory
        return trajectory.model_copy(update={"metadata": {**trajectory.metadata, "period": period}})

    def is_current(self, episode: Trajectory | Mapping[str, Any], intent: Intent | None) -> bool:
        """Whether ``episode`` was made with this store's params for this very intent record
        (and, with periods, in the period the intent's episode belongs to). Once periods renew
        episodes, an episode made with earlier params stays current until its turn comes."""
        intent_id, fingerprint, recorded, period = _stamp(episode)
        return (
            intent is not None
            and intent_id == intent.id
            and (fingerprint == self.fingerprint or self.ledger.renews)
            and recorded == intent_hash(intent)
            and period == self.expected_period(intent)
        )

    def is_done(self, intent: Intent) -> bool:
        """Whether ``intent`` has a current episode that did not fail (simulate skips it)."""
        path = self.path(intent.id)
        if not path.exists():
            return False
        try:
            episode = validate_record(read_json(path), Trajectory, str(path))
        except InputError:
            return False  # unreadable or outdated: simulate it again
        return self.is_current(episode, intent) and episode.status != "failed"

    def unfinished(self, intents: Iterable[Intent]) -> list[str]:
        """Ids of the intents without a finished current episode (missing, stale or failed)."""
        return [intent.id for intent in intents if not self.is_done(intent)]

    def current(self, intents: Sequence[Intent]) -> tuple[list[Trajectory], int]:
        """The current episodes of ``intents`` (any status), sorted by intent id, and how
        many episode files were stale (other params, a changed or removed intent)."""
        by_id = {intent.id: intent for intent in intents}
        current: list[Trajectory] = []
        stale = 0
        for path in self.paths():
            episode = self.load(path)
            if self.is_current(episode, by_id.get(episode.intent_id)):
                current.append(episode)
            else:
                stale += 1
        current.sort(key=lambda e: e.intent_id)
        return current, stale

    # --- renewed episodes: the newest kept one stands in for a newer one that was not kept --

    def _newest_kept_archived(self, intent: Intent) -> tuple[Path, dict[str, Any]] | None:
        if self.archive_folder is None:
            return None
        folder = self.archive_folder / intent.id
        # base first, then the periods in order: the last kept one is the newest
        paths = sorted(folder.glob("*.json"), key=lambda p: ("" if p.stem == BASE else p.stem))
        for path in reversed(paths):
            data = read_json(path)
            if (
                isinstance(data, dict)
                and data.get("kept") is True
                and _stamp(data)[2] == intent_hash(intent)
            ):
                return path, data
        return None

    def with_fallbacks_raw(
        self, episodes: Sequence[tuple[Path, dict[str, Any]]], intents: Mapping[str, Intent]
    ) -> list[tuple[Path, dict[str, Any]]]:
        """Each not-kept episode replaced by its intent's newest kept archived one, if any
        (only when periods renew episodes; otherwise ``episodes`` as given)."""
        if not self.ledger.renews:
            return list(episodes)
        chosen = []
        for path, data in episodes:
            intent = intents.get(str(data.get("intent_id")))
            fallback = None
            if data.get("kept") is not True and intent is not None:
                fallback = self._newest_kept_archived(intent)
            chosen.append(fallback or (path, data))
        return chosen

    def with_fallbacks(
        self, episodes: Sequence[Trajectory], intents: Sequence[Intent]
    ) -> list[Trajectory]:
        """``with_fallbacks_raw`` over typed episodes."""
        if not self.ledger.renews:
            return list(episodes)
        by_id = {intent.id: intent for intent in intents}
        raw = [(self.path(e.intent_id), e.model_dump(mode="json")) for e in episodes]
        return [
            validate_record(data, Trajectory, str(path))
            for path, data in self.with_fallbacks_raw(raw, by_id)
        ]


__all__ = [
    "FORMAT_FILES",
    "Catalog",
    "EpisodeStore",
    "EvalRunFiles",
    "intent_hash",
    "load_episode",
]
