"""Stage 1 wiring: sample → write out → exact and semantic de-duplication → Vendi diversity.

Outputs (``intents.out_dir``, default data/intents/):
    sampled.jsonl     every sampled point of the 4D space (byte-identical for a seed)
    written.jsonl     every written-out intent, before de-duplication
    intents.jsonl     the unique, written-out intents: the input of simulation
    duplicates.jsonl  removed intents with the intent they duplicate and the similarity
    rejected.jsonl    samples whose write-out stayed invalid after the retries
    stats.json        counts, Vendi score and curve, coverage, params fingerprint
    vendi_curve.png   the Vendi scaling curve
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ise_core.atomic import remove_stale_temp_files
from ise_core.catalog import Catalog
from ise_core.config import Settings
from ise_core.errors import InputError
from ise_core.evaluation.split import freeze_split, split_eval
from ise_core.intents.dedup import ExactDupResult, exact_duplicates, near_duplicates
from ise_core.intents.diversity import plot_vendi_curve, vendi_curve
from ise_core.intents.embed import Shard, embed_for_settings, embed_shard, plan_shards
from ise_core.intents.render import render_intents
from ise_core.intents.sample import sample_intents
from ise_core.intents.taxonomy import Taxonomy, load_taxonomy
from ise_core.intents.threads import pinned_threads
from ise_core.llm.base import Chat
from ise_core.records import (
    Intent,
    IntentSample,
    canonical_json,
    normalize_text,
    read_jsonl,
    text_hash,
    write_json,
    write_jsonl,
)
from ise_core.refresh.history import intents_by_period
from ise_core.refresh.periods import Ledger
from ise_core.stages import StageOptions, StageResult, stage

SUMMARY_KEYS = (
    "n_sampled",
    "n_rejected",
    "n_exact_duplicates",
    "n_near_duplicates",
    "n_unique",
    "vendi_score",
    "embedding_model",
)


def _log(message: str) -> None:
    print(f"[intents] {message}", file=sys.stderr, flush=True)


def coverage(intents: Sequence[Intent], taxonomy: Taxonomy) -> dict[str, Any]:
    """How much of each dimension of the space the kept intents cover."""
    n = max(len(intents), 1)
    complexity = Counter(intent.complexity for intent in intents)
    return {
        "personas": len({i.persona.id for i in intents}),
        "personas_total": len(taxonomy.personas),
        "industries": len({i.persona.industry for i in intents}),
        "domains": dict(sorted(Counter(d for i in intents for d in i.domains).items())),
        "tasks": len({t.id for i in intents for t in i.tasks}),
        "tasks_total": len(taxonomy.tasks),
        "complexity": {
            level: round(complexity.get(level, 0) / n, 4)
            for level in ("simple", "medium", "complex")
        },
    }


@dataclass
class Deduplicated:
    """The unique intents in sample order, their embeddings, and what was removed."""

    kept: list[Intent]
    vectors: Any  # float32 array, one row per kept intent
    duplicates: list[dict[str, Any]]
    n_exact: int
    n_near: int
    n_embedded: int  # embeddings computed (not read from the cache)
    space: str  # the embedding model that made the vectors


def texts_to_embed(written: Sequence[Intent]) -> tuple[ExactDupResult, list[Intent]]:
    """Exact duplicates (normalised request) of the written-out intents, and the intents left,
    in order: their requests are what the embedding step embeds (whole, or in shards)."""
    exact = exact_duplicates([normalize_text(intent.request) for intent in written])
    return exact, [written[i] for i in exact.keep]


def _deduplicate(
    settings: Settings, written: list[Intent], log: Callable[[str], None]
) -> Deduplicated:
    """Exact duplicates (normalised request) first, then semantic ones (cosine)."""
    exact, after_exact = texts_to_embed(written)
    log(f"removed {len(exact.removed)} exact duplicates; embedding {len(after_exact)} requests")

    # After the DAG's mapped shards (embed_intent_shard) every vector is cached already.
    embedded = embed_for_settings([intent.request for intent in after_exact], settings)
    near = near_duplicates(
        embedded.vectors,
        settings.dedup.threshold,
        block_size=settings.dedup.block_size,
        method=settings.dedup.method,
        faiss_min_rows=settings.dedup.faiss_min_rows,
        threads=settings.embedding.threads,
    )
    kept = [intent for intent, keep in zip(after_exact, near.keep_mask, strict=True) if keep]
    log(f"removed {len(near.removed)} near duplicates (cosine >= {settings.dedup.threshold})")
    duplicates: list[dict[str, Any]] = [
        {"kind": "exact", "removed_id": written[r].id, "kept_id": written[k].id, "similarity": 1.0}
        for r, k in exact.removed
    ] + [
        {
            "kind": "near",
            "removed_id": after_exact[r].id,
            "kept_id": after_exact[k].id,
            "similarity": round(float(sim), 6),
        }
        for r, k, sim in near.removed
    ]
    return Deduplicated(
        kept,
        embedded.vectors[near.keep_mask],
        duplicates,
        len(exact.removed),
        len(near.removed),
        embedded.n_computed,
        embedded.model,
    )


# --- the stage in two halves, with the embedding between them -------------------------------
#
# ``ise intents`` runs write_out_intents then finish_intents in one process. The Airflow DAG
# runs write_out_intents in one task, embed_intent_shard in one mapped task per shard (so
# workers share the embedding) and finish_intents in the last one, which finds every vector
# in the embedding cache: the same files either way.


@dataclass(frozen=True)
class EmbeddingPlan:
    """The texts to embed (after exact de-duplication) cut into shards, with their digest."""

    n_texts: int
    digest: str  # of the texts in order: a shard checks it embeds the texts that were planned
    shards: list[Shard]


def _digest(texts: Sequence[str]) -> str:
    return text_hash(canonical_json(list(texts)))[:16]


def write_out_intents(
    settings: Settings, *, writer: Chat | None = None, log: Callable[[str], None] = _log
) -> list[Intent]:
    """Sample the 4D space and write the samples out; writes sampled, rejected and written."""
    files = Catalog.of(settings)
    remove_stale_temp_files(files.intents_dir)  # left by a run that was killed mid-write
    taxonomy = load_taxonomy(files.taxonomy_dir)

    ledger, samples = _sample(settings, files, taxonomy)
    log(f"sampled {len(samples)} intents from the 4D space")

    outcome = asyncio.run(
        render_intents(
            samples,
            writer or _build_writer(settings),
            max_attempts=settings.intents.max_render_attempts,
            concurrency=settings.llm.max_concurrency,
        )
    )
    write_jsonl(files.rejected, [r.model_dump() for r in outcome.rejected])
    written = ledger.stamp(outcome.intents)
    write_jsonl(files.written, written)
    log(f"wrote out {len(written)} intents ({len(outcome.rejected)} rejected)")
    return written


def _sample(
    settings: Settings, files: Catalog, taxonomy: Taxonomy
) -> tuple[Ledger, list[IntentSample]]:
    """The base samples [0, intents.count) and the batch of every refresh period so far."""
    ledger = Ledger.load(files.periods)
    indices = ledger.sample_indices(settings.intents.count) if ledger else None
    samples = sample_intents(taxonomy, settings.intents, settings.seed, indices=indices)
    write_jsonl(files.sampled, samples)
    return ledger, samples


def _build_writer(settings: Settings) -> Chat:
    from ise_core.llm.factory import build_chat

    return build_chat("writer", settings.llm, base_dir=settings.base_dir, seed=settings.seed)


def load_written(settings: Settings) -> list[Intent]:
    """The written-out intents of the current run (``written.jsonl``)."""
    path = Catalog.of(settings).written
    if not path.exists():
        raise InputError(f"{path}: written-out intents not found (the write-out step runs first)")
    return read_jsonl(path, Intent)


def plan_embedding(settings: Settings, written: Sequence[Intent]) -> EmbeddingPlan:
    """The shards (``embedding.shard_size`` texts each) of the texts ``written`` leaves to embed."""
    texts = [intent.request for intent in texts_to_embed(written)[1]]
    return EmbeddingPlan(
        len(texts), _digest(texts), plan_shards(len(texts), settings.embedding.shard_size)
    )


def embed_intent_shard(settings: Settings, shard: Shard, digest: str) -> int:
    """Embed one planned shard of the written-out intents into the embedding cache; returns how
    many vectors were computed (0 on a re-run: only texts new to the cache are embedded)."""
    texts = [intent.request for intent in texts_to_embed(load_written(settings))[1]]
    if _digest(texts) != digest:
        raise InputError(
            f"{Catalog.of(settings).written}: the written-out intents changed after the shards "
            "were planned (another run wrote into this data folder); run the stage again"
        )
    return embed_shard(texts, shard, settings)


def run_intents(settings: Settings, options: StageOptions) -> StageResult:
    """The stage table's entry point for stage 1."""
    return StageResult.of("intents", intents_stage(settings), SUMMARY_KEYS)


def run_finish_intents(settings: Settings) -> StageResult:
    """Stage 1 after the DAG's write-out and embedding tasks: from ``written.jsonl`` on."""
    return StageResult.of("intents", finish_intents(settings), SUMMARY_KEYS)


def intents_stage(
    settings: Settings,
    *,
    writer: Chat | None = None,
    log: Callable[[str], None] = _log,
) -> dict[str, Any]:
    """Run stage 1 end to end and return its stats (also written to stats.json)."""
    started = time.perf_counter()
    writer = writer or _build_writer(settings)
    written = write_out_intents(settings, writer=writer, log=log)
    return finish_intents(settings, written, writer=writer, log=log, started=started)


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def finish_intents(
    settings: Settings,
    written: list[Intent] | None = None,
    *,
    writer: Chat | None = None,
    log: Callable[[str], None] = _log,
    started: float | None = None,
) -> dict[str, Any]:
    """De-duplicate, split off eval intents, score diversity and write the stage's outputs.

    ``written`` defaults to ``written.jsonl`` (the DAG's write-out task made it); returns the
    stats, also written to stats.json.
    """
    started = time.perf_counter() if started is None else started
    files = Catalog.of(settings)
    taxonomy = load_taxonomy(files.taxonomy_dir)
    written = load_written(settings) if written is None else written
    writer = writer or _build_writer(settings)

    dedup = _deduplicate(settings, written, log)
    n_deduplicated = len(dedup.kept)
    # The held-out eval intents (none unless eval.fraction or eval.count is set).
    split = split_eval(settings, taxonomy, writer, dedup.kept, dedup.vectors, log)
    kept, vectors = split.train, split.train_vectors
    write_jsonl(files.duplicates, dedup.duplicates)
    write_jsonl(files.intents, kept)
    freeze_split(settings, split)

    with pinned_threads(settings.embedding.threads):
        curve = vendi_curve(vectors, settings.diversity.curve_points, seed=settings.seed)
    # The curve's last point is the whole set, computed exactly as vendi_score(vectors) would.
    score = float(curve[-1]["vendi_score"]) if len(kept) else 0.0
    plot_vendi_curve(
        curve, files.vendi_curve, title=f"Vendi score vs. intents ({settings.embedding.model})"
    )
    log(f"Vendi score {score:.2f} over {len(kept)} unique intents")

    samples = read_jsonl(files.sampled, IntentSample)
    n_sampled = len(samples)
    stats: dict[str, Any] = {
        "n_sampled": n_sampled,
        "n_rejected": _count_lines(files.rejected),
        "n_written": len(written),
        "n_exact_duplicates": dedup.n_exact,
        "n_near_duplicates": dedup.n_near,
        "n_unique": len(kept),
        "unique_share": round(n_deduplicated / n_sampled, 6) if n_sampled else 0.0,
        "vendi_score": round(float(score), 6),
        "vendi_curve": curve,
        "embedding_model": settings.embedding.model,
        "embedding_space": dedup.space,
        "dedup_threshold": settings.dedup.threshold,
        "coverage": coverage(kept, taxonomy),
        "writer": writer.name,
        "params_fingerprint": stage("intents").fingerprint(settings),
    }
    if split.stats:
        stats["eval_split"] = split.stats
    ledger = Ledger.load(files.periods)
    if ledger:
        stats["periods"] = intents_by_period(ledger, samples, kept)
    write_json(files.intents_stats, stats)
    # How many vectors this process computed is a run record (0 on a re-run, or after the
    # DAG's shards), not a property of the data: timing.json, beside the seconds.
    timing = {"seconds": round(time.perf_counter() - started, 3), "n_embedded": dedup.n_embedded}
    write_json(files.intents_timing, timing)
    return stats
