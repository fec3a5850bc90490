"""The held-out eval split, made by ``ise intents`` after de-duplication.

Two ways, both off by default (then ``intents.jsonl`` is exactly what it was without them):

- ``eval.fraction``: that share of the unique intents is held out. Which ones depends only on
  the seed and each intent's id, so it is stable; they are removed from ``intents.jsonl`` and
  so never simulated into training data. De-duplication already left no two unique intents at
  cosine ≥ ``dedup.threshold``, so the held-out ones are that far from every training intent.
- ``eval.count`` (with ``eval.seed``): that many *extra* intents are sampled from a separate
  stream (ids ``ev-…``), written out by the same writer, and de-duplicated against the
  training intents and each other, exactly and at the same cosine threshold. ``intents.jsonl``
  stays byte for byte what it was.

The held-out intents are frozen into ``<eval.out_dir>/tasks.jsonl`` (``EvalTask`` records:
intent, checks, fixtures, inputs and a planted secret); without a split the file is empty.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ise_core.catalog import Catalog
from ise_core.config import Settings
from ise_core.evaluation.tasks import freeze_tasks, write_tasks
from ise_core.intents.dedup import exact_duplicates, near_duplicates
from ise_core.intents.embed import embed_for_settings
from ise_core.intents.sample import EVAL_STREAM, sample_intents
from ise_core.intents.taxonomy import Taxonomy
from ise_core.llm.base import Chat
from ise_core.records import Intent, normalize_text

Log = Callable[[str], None]


def held_out_ids(ids: Sequence[str], fraction: float, seed: int) -> set[str]:
    """round(fraction × n) ids, chosen by a hash of (seed, id): stable as the set grows."""
    wanted = round(fraction * len(ids))
    if fraction > 0 and wanted == 0 and len(ids) > 1:
        wanted = 1  # a small run still gets a task to evaluate on

    def rank(intent_id: str) -> str:
        return hashlib.sha256(f"ise-eval-holdout:{seed}:{intent_id}".encode()).hexdigest()

    return set(sorted(ids, key=rank)[:wanted])


@dataclass
class EvalSplit:
    """Training intents (with their embeddings) and the held-out eval intents."""

    train: list[Intent]
    train_vectors: np.ndarray
    eval: list[Intent] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def _hold_out(settings: Settings, kept: list[Intent], vectors: np.ndarray) -> EvalSplit:
    chosen = held_out_ids([i.id for i in kept], settings.eval.fraction, settings.seed)
    mask = np.array([intent.id not in chosen for intent in kept], dtype=bool)
    train = [intent for intent, keep in zip(kept, mask, strict=True) if keep]
    held = [intent for intent, keep in zip(kept, mask, strict=True) if not keep]
    stats = {"mode": "fraction", "fraction": settings.eval.fraction, "n_eval": len(held)}
    return EvalSplit(train, vectors[mask] if len(kept) else vectors, held, stats)


def _extra(
    settings: Settings,
    taxonomy: Taxonomy,
    writer: Chat,
    kept: list[Intent],
    vectors: np.ndarray,
    log: Log,
) -> EvalSplit:
    from ise_core.intents.render import render_intents

    seed = settings.eval.seed if settings.eval.seed is not None else settings.seed
    samples = sample_intents(
        taxonomy, settings.intents, seed, count=settings.eval.count, stream=EVAL_STREAM
    )
    outcome = asyncio.run(
        render_intents(
            samples,
            writer,
            max_attempts=settings.intents.max_render_attempts,
            concurrency=settings.llm.max_concurrency,
        )
    )
    written = outcome.intents
    # Exact duplicates of a training intent or of an earlier eval intent go first ...
    n_train = len(kept)
    texts = [normalize_text(i.request) for i in kept] + [normalize_text(i.request) for i in written]
    exact = exact_duplicates(texts)
    survivors = [written[i - n_train] for i in exact.keep if i >= n_train]
    # ... then near duplicates, greedy keep-first with every training intent ahead of them.
    # The training vectors' encoder (provider, backend, cache): one vector space for both.
    embedded = embed_for_settings([intent.request for intent in survivors], settings)
    combined = (
        np.concatenate([vectors, embedded.vectors])
        if survivors and n_train
        else (embedded.vectors if survivors else vectors)
    )
    held: list[Intent] = []
    if survivors:
        near = near_duplicates(combined, settings.dedup.threshold, settings.dedup.block_size)
        held = [s for s, keep in zip(survivors, near.keep_mask[n_train:], strict=True) if keep]
    stats = {
        "mode": "count",
        "seed": seed,
        "n_sampled": len(samples),
        "n_rejected": len(outcome.rejected),
        "n_duplicates": len(written) - len(held),
        "n_eval": len(held),
    }
    log(
        f"eval split: {len(held)} of {len(samples)} extra intents kept "
        f"({stats['n_duplicates']} duplicates of training or earlier eval intents)"
    )
    return EvalSplit(kept, vectors, held, stats)


def split_eval(
    settings: Settings,
    taxonomy: Taxonomy,
    writer: Chat,
    kept: list[Intent],
    vectors: np.ndarray,
    log: Log,
) -> EvalSplit:
    """Set the eval intents apart from the unique ones (see the module docstring)."""
    if settings.eval.fraction > 0:
        split = _hold_out(settings, kept, vectors)
        log(f"eval split: held out {len(split.eval)} of {len(kept)} unique intents")
        return split
    if settings.eval.count > 0:
        return _extra(settings, taxonomy, writer, kept, vectors, log)
    return EvalSplit(kept, vectors)


def freeze_split(settings: Settings, split: EvalSplit) -> Path:
    """Write the eval intents as frozen tasks to ``tasks.jsonl``: empty without a split, so
    the file the eval stage reads is always there."""
    path = Catalog.of(settings).eval_tasks
    tasks = freeze_tasks(
        split.eval, secret_path=settings.eval.safety.secret_path, seed=settings.seed
    )
    write_tasks(path, tasks)
    return path


__all__ = [
    "EvalSplit",
    "freeze_split",
    "held_out_ids",
    "split_eval",
]
