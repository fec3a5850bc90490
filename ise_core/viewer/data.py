"""What the viewer reads, and only from inside a data root.

A ``DataRoot`` is the three stage folders of one dataset version (intents, trajectories,
sft), named so pages can refer to it without a path. Every file the viewer opens is found by
``DataRoot.file``: a stage from a fixed set, a name that must look like a file name (no
separators, no ``..``, no leading dot), and a real path that must stay inside the stage
folder after symlinks are resolved (or inside the project's DVC cache, where DVC's
``symlink`` cache type points). Request parameters never become paths any other way.

Large files are read once and kept while unchanged (size and mtime): the episode index and
the byte offset of each intent in ``intents.jsonl``, so an episode page reads one line.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from ise_core.catalog import Catalog
from ise_core.config import Settings, load_settings, settings_from_dict
from ise_core.errors import ConfigError, InputError, NotInRoot
from ise_core.records import Trajectory, read_json, validate_record
from ise_core.simulate.episode_index import read_index, rows_from_episodes
from ise_core.viewer.listing import EpisodeIndex

StageFolder = Literal["intents", "trajectories", "episodes", "timing", "sft", "plots", "eval"]
CATALOG_FOLDERS: tuple[StageFolder, ...] = ("intents", "trajectories", "sft", "plots")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
ROOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")

T = TypeVar("T")


def safe_name(name: str) -> bool:
    """True when ``name`` can only name a file directly inside a folder."""
    return bool(SAFE_NAME.fullmatch(name)) and ".." not in name


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


@functools.cache
def _dvc_caches(folder: str) -> tuple[str, ...]:
    """The DVC cache of the project holding ``folder``, if any: with DVC's ``symlink`` cache
    type every data file is a link into it, and those links are the data root's own files."""
    for parent in Path(folder).parents:
        cache = parent / ".dvc" / "cache"
        if cache.is_dir():
            return (os.path.realpath(cache),)
        if (parent / ".git").exists():
            break
    return ()


@dataclass(frozen=True)
class DataRoot:
    """The files of one dataset version (its ``Catalog``); ``name`` is how pages refer to it."""

    name: str
    files: Catalog
    eval: Path  # the eval task set, history and one folder per eval run

    @classmethod
    def from_settings(cls, name: str, settings: Settings) -> DataRoot:
        if not ROOT_NAME.fullmatch(name):
            raise ConfigError(
                f"data root name {name!r}: expected letters, digits, '-' or '_' (at most 40)"
            )
        return cls(name, Catalog.of(settings), settings.path(settings.eval.out_dir))

    @classmethod
    def from_path(cls, name: str, path: Path) -> DataRoot:
        """A params file, a project folder holding params.yaml, or a data folder holding
        ``intents/``, ``trajectories/`` and ``sft/`` (e.g. a second checkout's ``data/``)."""
        path = path.expanduser()
        if path.is_file():
            return cls.from_settings(name, load_settings(path))
        if (path / "params.yaml").is_file() and not (path / "trajectories").is_dir():
            return cls.from_settings(name, load_settings(path / "params.yaml"))
        if path.is_dir():
            folders = {"intents": "intents", "simulate": "trajectories", "export": "sft"}
            blocks = {block: {"out_dir": str(path / sub)} for block, sub in folders.items()}
            blocks["eval"] = {"out_dir": str(path / "eval")}
            return cls.from_settings(name, settings_from_dict(blocks, f"data folder {path}"))
        raise ConfigError(
            f"{path}: not found (expected a params file, a project folder with params.yaml, "
            "or a data folder with intents/, trajectories/ and sft/)"
        )

    @property
    def intents(self) -> Path:
        return self.files.intents_dir

    @property
    def trajectories(self) -> Path:
        return self.files.trajectories_dir

    @property
    def sft(self) -> Path:
        return self.files.sft_dir

    def catalogued(self, name: str) -> Path:
        """The catalog's file called ``name`` (e.g. ``trajectories_stats``), found through
        ``file`` like any other: by its stage folder and its file name."""
        path = self.files.path(name)
        stage = next(s for s in CATALOG_FOLDERS if path.parent == self.folder(s))
        return self.file(stage, path.name)

    def stats(self, stage: str) -> dict[str, Any] | None:
        """A stage's stats.json (intents, trajectories, sft), or None."""
        return self._catalogued_json(f"{stage}_stats")

    def gate_result(self, stage: str) -> dict[str, Any] | None:
        """A gate's gate_result.json (intents, trajectories, sft), or None."""
        return self._catalogued_json(f"{stage}_gate_result")

    def _catalogued_json(self, name: str) -> dict[str, Any] | None:
        try:
            value = read_json(self.catalogued(name))
        except (NotInRoot, InputError, KeyError):
            return None
        return value if isinstance(value, dict) else None

    def folder(self, stage: StageFolder) -> Path:
        return {
            "intents": self.files.intents_dir,
            "trajectories": self.files.trajectories_dir,
            "episodes": self.files.episodes_dir,
            "timing": self.files.timing_dir,
            "sft": self.files.sft_dir,
            "plots": self.files.plots_dir,
            "eval": self.eval,
        }[stage]

    def file(self, stage: StageFolder, name: str) -> Path:
        """The file ``name`` directly inside the stage folder, or NotInRoot.

        Refused: names with separators, ``..``, a leading dot or other characters (whatever
        their URL encoding was), and anything whose real path (symlinks resolved) leaves the
        stage folder.
        """
        if not safe_name(name):
            raise NotInRoot(name)
        folder = os.path.realpath(self.folder(stage))
        real = os.path.realpath(os.path.join(folder, name))
        allowed = (folder, *_dvc_caches(folder))
        if not any(_inside(real, place) for place in allowed) or not os.path.isfile(real):
            raise NotInRoot(name)
        return Path(real)

    def optional_json(self, stage: StageFolder, name: str) -> dict[str, Any] | None:
        """A JSON object file of the root, or None when absent or not an object."""
        try:
            value = read_json(self.file(stage, name))
        except (NotInRoot, InputError):
            return None
        return value if isinstance(value, dict) else None

    def eval_runs(self) -> dict[str, dict[str, Any]]:
        """Each eval run folder's metrics.json, by run name (folders with a safe name only,
        and only a metrics file whose real path stays inside that folder)."""
        folder = self.folder("eval")
        runs: dict[str, dict[str, Any]] = {}
        if not folder.is_dir():
            return runs
        base = os.path.realpath(folder)
        for entry in sorted(folder.iterdir()):
            if not safe_name(entry.name) or not entry.is_dir():
                continue
            real = os.path.realpath(entry / "metrics.json")
            if not _inside(real, os.path.realpath(entry)) or not _inside(real, base):
                continue
            try:
                value = read_json(real) if os.path.isfile(real) else None
            except InputError:
                value = None
            if isinstance(value, dict) and isinstance(value.get("overall"), dict):
                runs[entry.name] = value
        return runs

    def episode(self, intent_id: str) -> Trajectory:
        """One episode file, validated (NotInRoot when there is none by that id)."""
        path = self.file("episodes", f"{intent_id}.json")
        return validate_record(read_json(path), Trajectory, str(path))


@dataclass
class _Entry:
    key: tuple[int, int, int]
    value: Any


@dataclass
class FileCache:
    """Values derived from a file, kept until its size, mtime or inode change."""

    _entries: dict[str, _Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, path: Path, build: Callable[[Path], T]) -> T:
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        name = str(path)
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and entry.key == key:
                return entry.value
        value = build(path)
        with self._lock:
            self._entries[name] = _Entry(key, value)
        return value


CACHE = FileCache()


def episode_index(root: DataRoot) -> EpisodeIndex:
    """The root's episode index: from the index file collect wrote or, for a root collected
    before the index existed, from scanning the episode files once (``from_file`` False)."""
    try:
        path = root.catalogued("episode_index")
    except NotInRoot:
        folder = root.folder("episodes")
        if not folder.is_dir():
            return EpisodeIndex([], from_file=False)
        # Keyed by the folder's own mtime, which changes when an episode is added or replaced.
        return CACHE.get(folder, lambda f: EpisodeIndex(rows_from_episodes(f), from_file=False))
    return CACHE.get(path, lambda p: EpisodeIndex(read_index(p), from_file=True))


def _intent_offsets(path: Path) -> dict[str, int]:
    offsets: dict[str, int] = {}
    position = 0
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if isinstance(record, dict) and isinstance(record.get("id"), str):
                    offsets[record["id"]] = position
            position += len(line)
    return offsets


def intent_record(root: DataRoot, intent_id: str) -> dict[str, Any] | None:
    """The intent's line of ``intents.jsonl`` as a dict, or None when it is not there."""
    try:
        path = root.catalogued("intents")
    except NotInRoot:
        return None
    offset = CACHE.get(path, _intent_offsets).get(intent_id)
    if offset is None:
        return None
    with path.open("rb") as handle:
        handle.seek(offset)
        line = handle.readline()
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("id") == intent_id else None


def warm(root: DataRoot) -> EpisodeIndex:
    """Read what the first list and episode pages would otherwise read: the episode index
    and the offset of each intent's line (seconds at 50,000 episodes)."""
    index = episode_index(root)
    intent_record(root, "")
    return index


__all__ = [
    "CACHE",
    "DataRoot",
    "FileCache",
    "NotInRoot",
    "episode_index",
    "intent_record",
    "safe_name",
    "warm",
]
