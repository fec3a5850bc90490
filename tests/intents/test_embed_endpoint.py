"""embedding.provider openai: batches to a loopback /v1/embeddings with the chat's machinery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ise_core.config import Settings
from ise_core.errors import BackendError, ConfigError, LLMError
from ise_core.intents.embed import (
    EmbeddingStore,
    EndpointEncoder,
    embed_for_settings,
    embed_shard,
    embed_with,
    encoder_for,
    plan_shards,
)
from ise_core.llm.embeddings import EmbeddingResponseError, OpenAIEmbeddings
from ise_core.llm.limits import LimitSettings, reset_limiters
from tests.fakes.openai_server import (
    FakeOpenAIServer,
    Reply,
    embedding_vector,
    hash_embedder,
)

TEXTS = [f"Request number {i}: tidy the folder and mail the report." for i in range(23)]


@pytest.fixture(autouse=True)
def _fresh_limiters() -> None:
    reset_limiters()


def _settings(
    tmp_path: Path, base_url: str, llm: dict[str, Any] | None = None, **embedding: Any
) -> Settings:
    block = {"provider": "openai", "model": "fake-embedder", "batch_size": 5, **embedding}
    llm_block = {"base_url": base_url, "max_concurrency": 3, "backoff_base_s": 0.01, **(llm or {})}
    return Settings.model_validate(
        {"embedding": {"cache_dir": str(tmp_path / "cache"), **block}, "llm": llm_block}
    ).model_copy(update={"base_dir": tmp_path})


def test_vectors_are_unit_length_in_input_order_and_cached(tmp_path: Path) -> None:
    with FakeOpenAIServer(latency_s=0.02) as server:
        settings = _settings(tmp_path, server.base_url)
        first = embed_for_settings(TEXTS, settings)
        sent = server.requests
        again = embed_for_settings([*TEXTS, "one new text"], settings)
        bodies = server.bodies
    assert first.vectors.shape == (23, 16) and first.n_computed == 23
    np.testing.assert_allclose(np.linalg.norm(first.vectors, axis=1), 1.0, rtol=1e-6)
    for text, row in zip(TEXTS, first.vectors, strict=True):
        expected = np.array(embedding_vector(text, 16))
        np.testing.assert_allclose(row, expected / np.linalg.norm(expected), atol=1e-6)
    assert sent == 5  # 23 texts in batches of 5
    assert all(len(body["input"]) <= 5 and body["model"] == "fake-embedder" for body in bodies)
    # The re-run sent only the one new text: the cache is per text, not per batch.
    assert again.n_computed == 1 and len(bodies) == 6 and bodies[-1]["input"] == ["one new text"]
    np.testing.assert_array_equal(again.vectors[:23], first.vectors)


def test_batches_share_the_llm_limiter_and_retry_429_and_500(tmp_path: Path) -> None:
    with FakeOpenAIServer(latency_s=0.05) as server:
        server.script("rate_limit", "server_error", "drop")
        settings = _settings(tmp_path, server.base_url)
        result = embed_for_settings(TEXTS, settings)
        stats = server.stats()
    assert result.n_computed == 23
    assert stats["max_in_flight"] <= 3  # llm.max_concurrency
    assert stats["requests"] == 5 + 3  # three faults, each retried once
    assert stats["faults"]["rate_limit"] == 1 and stats["faults"]["server_error"] == 1


def test_a_reply_without_vectors_is_retried_then_fails_naming_the_endpoint(
    tmp_path: Path,
) -> None:
    def broken(request: dict[str, Any]) -> dict[str, Any] | Reply:
        return {"object": "list", "data": []}

    with FakeOpenAIServer(embedder=broken) as server:
        settings = _settings(tmp_path, server.base_url, llm={"max_retries": 2})
        with pytest.raises(LLMError, match="embedding request failed after 3 attempts") as info:
            embed_for_settings(["a", "b"], settings)
        assert server.requests == 3
    assert server.base_url in str(info.value) and "fake-embedder" in str(info.value)
    assert "expected 2 vectors" in str(info.value)
    space = encoder_for(settings).space
    with EmbeddingStore(tmp_path / "cache", space) as store:
        assert len(store) == 0  # nothing was cached from the failed call


def test_wrong_dimension_fails_at_once(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        settings = _settings(tmp_path, server.base_url, dimensions=768)
        with pytest.raises(EmbeddingResponseError, match="16 dimensions, expected 768"):
            embed_for_settings(TEXTS[:3], settings)
        assert server.requests == 1  # not retried: a configuration problem


def test_a_model_change_behind_the_same_name_is_caught_by_the_cache(tmp_path: Path) -> None:
    wide = 16

    def embedder(request: dict[str, Any]) -> dict[str, Any]:
        return hash_embedder(request, dim=wide)

    with FakeOpenAIServer(embedder=embedder) as server:
        settings = _settings(tmp_path, server.base_url)
        embed_for_settings(TEXTS[:3], settings)
        wide = 32
        with pytest.raises(BackendError, match="32 dimensions but the cache holds 16"):
            embed_for_settings(TEXTS[3:6], settings)


def test_non_finite_or_zero_vectors_are_refused(tmp_path: Path) -> None:
    def zero(request: dict[str, Any]) -> dict[str, Any]:
        reply = hash_embedder(request)
        reply["data"][0]["embedding"] = [0.0] * 16
        return reply

    with (
        FakeOpenAIServer(embedder=zero) as server,
        pytest.raises(EmbeddingResponseError, match="all zeros"),
    ):
        embed_for_settings(["x", "y"], _settings(tmp_path, server.base_url))


def test_the_key_is_sent_as_a_header_and_never_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISE_EMBED_KEY", "sk-embed-secret-123")
    with FakeOpenAIServer() as server:
        settings = _settings(tmp_path, server.base_url, api_key_env="ISE_EMBED_KEY")
        embed_for_settings(TEXTS[:2], settings)
        headers = server.headers
    assert {k.lower(): v for k, v in headers[0].items()}["authorization"] == (
        "Bearer sk-embed-secret-123"
    )
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert b"sk-embed-secret-123" not in path.read_bytes()


def test_spaces_differ_by_endpoint_and_model(tmp_path: Path) -> None:
    def space(base_url: str, model: str) -> str:
        client = OpenAIEmbeddings(model=model, base_url=base_url, limits=LimitSettings())
        return EndpointEncoder(client, 8).space

    a = space("http://127.0.0.1:1/v1", "bge-small")
    assert a.startswith("openai.bge-small.")
    assert a != space("http://127.0.0.1:2/v1", "bge-small") != space("http://127.0.0.1:1/v1", "e5")


def test_settings_check_the_provider_and_endpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="any model name works with provider openai"):
        Settings.model_validate({"embedding": {"model": "bge-small"}})
    settings = Settings.model_validate({"embedding": {"provider": "openai", "model": "bge"}})
    with pytest.raises(ConfigError, match=r"embedding\.base_url \(or llm\.base_url\)"):
        encoder_for(settings)
    inherited = Settings.model_validate(
        {
            "embedding": {"provider": "openai", "model": "bge"},
            "llm": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "MY_KEY"},
        }
    )
    encoder = encoder_for(inherited)
    assert isinstance(encoder, EndpointEncoder)
    assert encoder.client.base_url == "http://127.0.0.1:9/v1"
    assert encoder.client.api_key_env == "MY_KEY"


def test_embed_with_an_empty_list_sends_nothing(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        client = OpenAIEmbeddings(model="m", base_url=server.base_url)
        result = embed_with([], EndpointEncoder(client, 4), cache_dir=tmp_path)
        assert result.vectors.shape[0] == 0 and server.requests == 0


def test_reply_order_follows_index(tmp_path: Path) -> None:
    # hash_embedder answers in reverse order; the rows must still match their inputs.
    with FakeOpenAIServer() as server:
        client = OpenAIEmbeddings(model="m", base_url=server.base_url)
        rows = EndpointEncoder(client, 4).encode(["first", "second", "third"])
    expected = np.array(embedding_vector("first", 16))
    np.testing.assert_allclose(rows[0], expected / np.linalg.norm(expected), atol=1e-6)
    assert json.dumps(rows.shape) == "[3, 16]"


# --- shards -------------------------------------------------------------------------------------


def test_shards_cover_the_texts_and_share_one_cache(tmp_path: Path) -> None:
    assert plan_shards(0, 5) == []
    shards = plan_shards(23, 5)
    assert [(s.start, s.stop) for s in shards] == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    assert sum(s.size for s in shards) == 23 and [s.index for s in shards] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="shard_size"):
        plan_shards(3, 0)

    with FakeOpenAIServer() as server:
        settings = _settings(tmp_path, server.base_url, shard_size=10)
        plan = plan_shards(len(TEXTS), settings.embedding.shard_size)
        computed = [embed_shard(TEXTS, shard, settings) for shard in reversed(plan)]
        sent = server.requests
        merged = embed_for_settings(TEXTS, settings)  # the reducer: every vector from the cache
        again = [embed_shard(TEXTS, shard, settings) for shard in plan]  # a re-run
        assert server.requests == sent
        unsharded = embed_with(TEXTS, encoder_for(settings), cache_dir=tmp_path / "unsharded")
    assert computed == [3, 10, 10] and again == [0, 0, 0]
    assert merged.n_computed == 0 and merged.vectors.shape == (23, 16)
    np.testing.assert_array_equal(merged.vectors, unsharded.vectors)
    with pytest.raises(ValueError, match="does not fit"):
        embed_shard(TEXTS[:3], plan[1], settings)
