"""The ``openai`` embedding provider: batches of texts to any OpenAI-compatible ``/embeddings``.

Works with vLLM, text-embeddings-inference, llama.cpp's server started with ``--embedding``,
Ollama and hosted APIs. Built on ``OpenAIEndpoint``, the chat client's base: the same pooled
connections, the same limiter of (endpoint, model) with the ``llm`` block's concurrency,
requests-per-minute and tokens-per-minute limits (process-wide, or shared through Redis when
``llm.limiter`` says so), and the same retries with
backoff on 429/5xx/timeouts/dropped connections honouring ``Retry-After``. Vectors are cached
per text by the caller (ise_core.intents.embed), so a re-run sends nothing.

Each reply is checked before it is used: one vector per input, each finite, non-zero, and of
the expected length (``embedding.dimensions`` when set, else the length of the first vector
this client received), then scaled to unit length. A reply that is not JSON or lacks vectors is
retried like a server error; a wrong length or a non-finite value is a configuration or model
problem and fails at once with ``EmbeddingResponseError`` naming the endpoint and model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ise_core.errors import EmbeddingResponseError
from ise_core.llm.limits import LimitSettings
from ise_core.llm.openai_chat import OpenAIEndpoint

if TYPE_CHECKING:
    from ise_core.llm.base import Limiter


class OpenAIEmbeddings(OpenAIEndpoint):
    """Embeddings from one endpoint and model; ``embed`` returns unit-length float32 rows."""

    settings_block = "embedding"
    what = "embedding"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        limits: LimitSettings | None = None,
        limiter: Limiter | None = None,
        dimensions: int | None = None,
    ) -> None:
        super().__init__(
            model=model,
            base_url=base_url,
            api_key_env=api_key_env,
            timeout_s=timeout_s,
            limits=limits,
            limiter=limiter,
        )
        self.dimensions = dimensions
        self.requests = 0
        self.retries = 0

    def __repr__(self) -> str:
        return f"OpenAIEmbeddings(endpoint={self.base_url!r}, model={self.model!r})"

    async def embed(
        self,
        texts: Sequence[str],
        batch_size: int,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Unit-length rows for ``texts`` (input order); batches run as the limiter allows."""
        batches = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]

        async def one(batch: list[str]) -> np.ndarray:
            rows = await self.embed_batch(batch)
            if progress is not None:
                progress(len(batch))
            return rows

        results = await asyncio.gather(*(one(batch) for batch in batches))
        if not results:
            return np.zeros((0, self.dimensions or 0), dtype=np.float32)
        return np.concatenate(results)

    async def embed_batch(self, texts: list[str]) -> np.ndarray:
        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        # Tokens-per-minute reservation: ~4 characters a token, as for chat prompts.
        tokens_limited = self.limiter.limits.tokens_per_minute is not None
        estimate = sum(len(text) for text in texts) // 4 if tokens_limited else 0

        def decode(content: bytes) -> np.ndarray:
            return self._vectors(json.loads(content), len(texts))

        rows, retries = await self._post("/embeddings", body, None, estimate, decode)
        self.requests += 1
        self.retries += retries
        return rows

    def _vectors(self, reply: Any, expected: int) -> np.ndarray:
        """The reply's vectors in input order, checked and scaled to unit length."""
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            got = len(data) if isinstance(data, list) else "no"
            raise ValueError(f"expected {expected} vectors in 'data', got {got}")
        try:
            ordered = sorted(data, key=lambda item: int(item.get("index", 0)))
            lists = [item["embedding"] for item in ordered]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"'data' items must hold an index and an 'embedding' ({exc})"
            ) from None
        if not all(isinstance(row, list) and row for row in lists):
            raise ValueError("each 'embedding' must be a non-empty list of numbers")
        if len({len(row) for row in lists}) != 1:
            raise self._unusable("vectors of different lengths in one reply")
        try:
            matrix = np.array(lists, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"an 'embedding' holds something other than numbers ({exc})") from None
        self._check_dimension(int(matrix.shape[1]))
        if not np.isfinite(matrix).all():
            raise self._unusable("a vector holds NaN or infinity")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if (norms == 0).any():
            raise self._unusable("a vector is all zeros")
        return (matrix / norms).astype(np.float32)

    def _check_dimension(self, dim: int) -> None:
        if self.dimensions is None:
            self.dimensions = dim  # the first reply fixes it for the rest of the run
        elif dim != self.dimensions:
            raise self._unusable(
                f"vectors have {dim} dimensions, expected {self.dimensions} "
                "(embedding.dimensions, or the length of the first reply)"
            )

    def _unusable(self, what: str) -> EmbeddingResponseError:
        return EmbeddingResponseError(
            f"embedding endpoint {self.base_url}, model {self.model}: {what}"
        )
