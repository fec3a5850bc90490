"""embedding.provider openai against a real llama.cpp server started with ``--embedding``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ise_core.config import Settings
from ise_core.errors import BackendError
from ise_core.intents.embed import embed_for_settings
from ise_core.llm.embeddings import EmbeddingResponseError
from ise_core.llm.local_server import LocalModelServer

# SmolLM2-135M's hidden size: llama-server returns the mean-pooled last hidden state.
SMOLLM2_DIM = 576
TEXTS = [
    "Back up my notes folder to an archive.",
    "Plot last quarter's revenue as a bar chart.",
    "Email the team that Friday's meeting moves to 3 pm.",
    "Back up my notes folder to an archive.",
    "Find every TODO comment in the repository.",
]


@pytest.fixture(scope="module")
def embedding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModelServer]:
    log_dir = tmp_path_factory.mktemp("llama-embedding")
    server = LocalModelServer(
        log_path=log_dir / "llama-server.log",
        context=2048,
        slots=2,
        extra_args=["--embedding", "--pooling", "mean"],
    )
    try:
        server.start()
    except BackendError as exc:
        pytest.fail(f"the local model server could not start: {exc}", pytrace=False)
    yield server
    server.stop()


def _settings(server: LocalModelServer, cache: Path, **embedding: object) -> Settings:
    block = {
        "provider": "openai",
        "model": server.model_name,
        "base_url": server.base_url,
        "cache_dir": str(cache),
        "batch_size": 2,
        **embedding,
    }
    return Settings.model_validate({"embedding": block, "llm": {"max_concurrency": 2}})


def test_a_real_server_embeds_normalised_vectors_once(
    embedding_server: LocalModelServer, tmp_path: Path
) -> None:
    settings = _settings(embedding_server, tmp_path, dimensions=SMOLLM2_DIM)
    first = embed_for_settings(TEXTS, settings)
    assert first.vectors.shape == (5, SMOLLM2_DIM)
    assert first.n_computed == 4  # the repeated text is embedded once
    np.testing.assert_allclose(np.linalg.norm(first.vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(first.vectors[0], first.vectors[3])
    sims = first.vectors @ first.vectors.T
    assert (sims[np.triu_indices(5, 1)] < 0.99999).sum() >= 9  # distinct texts, distinct rows
    again = embed_for_settings(TEXTS, settings)
    assert again.n_computed == 0
    np.testing.assert_array_equal(again.vectors, first.vectors)


def test_a_wrong_dimension_from_a_real_server_is_refused(
    embedding_server: LocalModelServer, tmp_path: Path
) -> None:
    settings = _settings(embedding_server, tmp_path, dimensions=768)
    with pytest.raises(EmbeddingResponseError, match=f"{SMOLLM2_DIM} dimensions, expected 768"):
        embed_for_settings(TEXTS[:2], settings)
