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

from ise_core.config import Settings, load_settings
from ise_core.errors import ConfigError, InputError, NotInRoot
from ise_core.records import Trajectory, read_json, validate_record
from ise_core.simulate.episode_index import INDEX_FILE, read_index, rows_from_episodes
from ise_core.viewer.listing import EpisodeIndex

StageFolder = Literal["intents", "trajectories", "episodes", "timing", "sft", "plots", "eval"]
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
    """The stage folders of one dataset version; ``name`` is how pages refer to it."""

    name: str
    intents: Path
    trajectories: Path
    sft: Path
    eval: Path | None = None  # the eval task set, history and one folder per eval run

    @classmethod
    def from_settings(cls, name: str, settings: Settings) -> DataRoot:
        return cls(
            name=name,
            intents=settings.path(settings.intents.out_dir),
            trajectories=settings.path(settings.simulate.out_dir),
            sft=settings.path(settings.export.out_dir),
            eval=settings.path(settings.eval.out_dir),
        )

    @classmethod
    def from_path(cls, name: str, path: Path) -> DataRoot:
        """A params file, a project folder holding params.yaml, or a data folder holding
        ``intents/``, ``trajectories/`` and ``sft/`` (e.g. a second checkout's ``data/``)."""
        if not ROOT_NAME.fullmatch(name):
            raise ConfigError(
                f"data root name {name!r}: expected letters, digits, '-' or '_' (at most 40)"
            )
        path = path.expanduser()
        if path.is_file():
            return cls.from_settings(name, load_settings(path))
        if (path / "params.yaml").is_file() and not (path / "trajectories").is_dir():
            return cls.from_settings(name, load_settings(path / "params.yaml"))
        if path.is_dir():
            return cls(name, path / "intents", path / "trajectories", path / "sft", path / "eval")
        raise ConfigError(
            f"{path}: not found (expected a params file, a project folder with params.yaml, "
            "or a data folder with intents/, trajectories/ and sft/)"
        )

    def folder(self, stage: StageFolder) -> Path:
        return {
            "intents": self.intents,
            "trajectories": self.trajectories,
            "episodes": self.trajectories / "episodes",
            "timing": self.trajectories / "timing",
            "sft": self.sft,
            "plots": self.sft / "plots",
            "eval": self.eval or self.sft.parent / "eval",
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
        path = root.file("trajectories", INDEX_FILE)
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
        path = root.file("intents", "intents.jsonl")
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
