"""Local embedding backends: ONNX export cached with its hash, equivalence to torch, threads."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ise_core.config import Settings
from ise_core.errors import BackendError
from ise_core.intents import onnx_backend
from ise_core.intents.embed import (
    MINILM,
    MPNET,
    LocalEncoder,
    embed_texts,
    encoder_for,
    resolve_model_path,
)
from ise_core.intents.equivalence import MIN_MEAN_COSINE, MIN_PAIR_AGREEMENT, compare
from ise_core.intents.render import render_intents
from ise_core.intents.sample import sample_intents
from ise_core.intents.taxonomy import load_taxonomy
from ise_core.intents.threads import available_cores, pinned_threads
from ise_core.scripted import ScriptedChat

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_MODELS = PROJECT_ROOT / ".cache" / "models"


def real_requests(count: int) -> list[str]:
    """Requests as the intents stage writes them (scripted writer, default settings)."""
    settings = Settings(base_dir=PROJECT_ROOT)
    taxonomy = load_taxonomy(settings.path(settings.intents.taxonomy))
    samples = sample_intents(taxonomy, settings.intents, settings.seed, count)
    outcome = asyncio.run(
        render_intents(samples, ScriptedChat("writer", settings.seed), max_attempts=3)
    )
    return [intent.request for intent in outcome.intents]


# --- export and its cache ------------------------------------------------------------------------


def test_onnx_export_is_cached_with_its_hash_and_rebuilt_when_damaged(tmp_path: Path) -> None:
    source = resolve_model_path(MINILM, tmp_path)
    model_file = onnx_backend.exported_model(MINILM, source, tmp_path, "fp32")
    folder = model_file.parent
    assert folder.name == f"{MINILM}.onnx-{onnx_backend.source_hash(source)[:12]}"
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["files"]["model.onnx"]
    assert entry["sha256"] == onnx_backend._sha256(model_file)
    assert entry["size"] == model_file.stat().st_size
    assert manifest["source_sha256"] == onnx_backend.source_hash(source)
    assert oct(folder.stat().st_mode & 0o777) == "0o755"

    stamp = model_file.stat().st_mtime_ns
    assert onnx_backend.exported_model(MINILM, source, tmp_path, "fp32") == model_file
    assert model_file.stat().st_mtime_ns == stamp  # reused, not exported again

    # int8 is added beside the fp32 graph; a truncated file is rebuilt, not loaded.
    int8 = onnx_backend.exported_model(MINILM, source, tmp_path, "int8")
    assert int8.parent == folder and int8.stat().st_size < model_file.stat().st_size
    with model_file.open("r+b") as handle:
        handle.truncate(1000)
    rebuilt = onnx_backend.exported_model(MINILM, source, tmp_path, "fp32")
    assert rebuilt.stat().st_size == entry["size"]
    assert (folder / "model.int8.onnx").stat().st_size == int8.stat().st_size  # kept
    leftovers = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith(".")]
    assert not leftovers  # no temp build folder left behind


def test_a_model_without_mean_pooling_is_refused(tmp_path: Path) -> None:
    source = resolve_model_path(MINILM, tmp_path)
    copy = tmp_path / "cls-model"
    (copy / "1_Pooling").mkdir(parents=True)
    for name in ("config.json", "sentence_bert_config.json"):
        (copy / name).write_bytes((source / name).read_bytes())
    (copy / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    with pytest.raises(BackendError, match="mean pooling only"):
        onnx_backend.read_model_info(copy)


def test_each_backend_has_its_own_cache(tmp_path: Path) -> None:
    def space(backend: str) -> str:
        return LocalEncoder(MPNET, backend=backend, model_dir=tmp_path, batch_size=8).space

    assert space("torch") == MPNET  # the cache written before backends existed stays valid
    assert space("onnx") == f"{MPNET}.onnx" != space("onnx-int8")
    with pytest.raises(BackendError, match="unknown embedding backend"):
        LocalEncoder(MPNET, backend="tensorrt", model_dir=tmp_path, batch_size=8)


def test_settings_choose_the_backend(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"embedding": {"backend": "onnx-int8", "threads": 1, "batch_size": 16}}
    )
    encoder = encoder_for(settings)
    assert isinstance(encoder, LocalEncoder)
    assert (encoder.backend, encoder.threads, encoder.batch_size) == ("onnx-int8", 1, 16)
    with pytest.raises(ValueError, match="backend"):
        Settings.model_validate({"embedding": {"backend": "tensorrt"}})


# --- equivalence on real requests (CI's small sample; the benchmark runs 2,000) ----------------


@pytest.fixture(scope="module")
def requests_sample() -> list[str]:
    return real_requests(48)


@pytest.mark.parametrize("model", [MINILM, MPNET])
def test_onnx_backends_measure_what_torch_measures(
    model: str, requests_sample: list[str], tmp_path: Path
) -> None:
    def vectors(backend: str) -> np.ndarray:
        return embed_texts(
            requests_sample,
            model,
            batch_size=16,
            cache_dir=tmp_path / backend,
            model_dir=PROJECT_MODELS,
            backend=backend,
        ).vectors

    reference = vectors("torch")
    onnx = compare(reference, vectors("onnx"), threshold=0.9)
    # The same fp32 network: equal to float rounding, so within every bound by far.
    assert onnx["within_bounds"], json.dumps(onnx)
    assert onnx["min_cosine"] > 0.99999 and onnx["keep_decisions_differ"] == 0
    assert onnx["vendi_relative_difference"] < 1e-4
    # int8 keeps each vector close (cosine >= 0.995) and the dedup decisions, but shifts the
    # Vendi score by 1.4-2.5% on mpnet: outside the 1% bound, so it is not the default.
    int8 = compare(reference, vectors("onnx-int8"), threshold=0.9)
    assert int8["mean_cosine"] >= MIN_MEAN_COSINE, json.dumps(int8)
    assert int8["pair_agreement"] >= MIN_PAIR_AGREEMENT, json.dumps(int8)
    assert Settings().embedding.backend != "onnx-int8" or int8["within_bounds"]


def test_onnx_tokenisation_follows_sentence_transformers(tmp_path: Path) -> None:
    # Leading/trailing whitespace is stripped and long texts are truncated at max_seq_length
    # (256 word pieces for MiniLM), as sentence-transformers does.
    long_text = "checksum " * 600
    texts = ["  Back up my notes.  ", long_text, "Plot the revenue."]

    def run(backend: str) -> np.ndarray:
        return embed_texts(
            texts,
            MINILM,
            batch_size=2,
            cache_dir=tmp_path / backend,
            model_dir=tmp_path,
            backend=backend,
        ).vectors

    cosines = np.einsum("ij,ij->i", run("torch"), run("onnx"))
    assert cosines.min() > 0.99999


# --- threads -------------------------------------------------------------------------------------


def test_threads_are_pinned_to_the_available_cores() -> None:
    import torch
    from threadpoolctl import threadpool_info

    cores = available_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    with pinned_threads(1) as count:
        assert count == 1 and torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before
    with pinned_threads(None) as count:
        assert count == cores
