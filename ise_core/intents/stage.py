"""Stage 1 wiring: sample → write out → exact and semantic de-duplication → Vendi diversity.

Outputs (``intents.out_dir``, default data/intents/):
    sampled.jsonl     every sampled point of the 4D space (byte-identical for a seed)
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
from typing import Any

from ise_core.atomic import remove_stale_temp_files
from ise_core.catalog import Catalog
from ise_core.config import Settings
from ise_core.evaluation.split import freeze_split, split_eval
from ise_core.intents.dedup import exact_duplicates, near_duplicates
from ise_core.intents.diversity import plot_vendi_curve, vendi_curve
from ise_core.intents.embed import embed_for_settings
from ise_core.intents.render import render_intents
from ise_core.intents.sample import sample_intents
from ise_core.intents.taxonomy import Taxonomy, load_taxonomy
from ise_core.intents.threads import pinned_threads
from ise_core.llm.base import Chat
from ise_core.records import Intent, IntentSample, normalize_text, write_json, write_jsonl
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


def _deduplicate(
    settings: Settings, written: list[Intent], log: Callable[[str], None]
) -> Deduplicated:
    """Exact duplicates (normalised request) first, then semantic ones (cosine)."""
    exact = exact_duplicates([normalize_text(intent.request) for intent in written])
    after_exact = [written[i] for i in exact.keep]
    log(f"removed {len(exact.removed)} exact duplicates; embedding {len(after_exact)} requests")

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


def _sample(
    settings: Settings, files: Catalog, taxonomy: Taxonomy
) -> tuple[Ledger, list[IntentSample]]:
    """The base samples [0, intents.count) and the batch of every refresh period so far."""
    ledger = Ledger.load(files.periods)
    indices = ledger.sample_indices(settings.intents.count) if ledger else None
    samples = sample_intents(taxonomy, settings.intents, settings.seed, indices=indices)
    write_jsonl(files.sampled, samples)
    return ledger, samples


def run_intents(settings: Settings, options: StageOptions) -> StageResult:
    """The stage table's entry point for stage 1."""
    return StageResult.of("intents", intents_stage(settings), SUMMARY_KEYS)


def intents_stage(
    settings: Settings,
    *,
    writer: Chat | None = None,
    log: Callable[[str], None] = _log,
) -> dict[str, Any]:
    """Run stage 1 end to end and return its stats (also written to stats.json)."""
    started = time.perf_counter()
    files = Catalog.of(settings)
    remove_stale_temp_files(files.intents_dir)  # left by a run that was killed mid-write
    taxonomy = load_taxonomy(files.taxonomy_dir)

    ledger, samples = _sample(settings, files, taxonomy)
    log(f"sampled {len(samples)} intents from the 4D space")

    if writer is None:
        from ise_core.llm.factory import build_chat

        writer = build_chat("writer", settings.llm, base_dir=settings.base_dir, seed=settings.seed)
    outcome = asyncio.run(
        render_intents(
            samples,
            writer,
            max_attempts=settings.intents.max_render_attempts,
            concurrency=settings.llm.max_concurrency,
        )
    )
    write_jsonl(files.rejected, [r.model_dump() for r in outcome.rejected])
    written = ledger.stamp(outcome.intents)
    log(f"wrote out {len(written)} intents ({len(outcome.rejected)} rejected)")

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

    n_sampled = len(samples)
    stats: dict[str, Any] = {
        "n_sampled": n_sampled,
        "n_rejected": len(outcome.rejected),
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
    if ledger:
        stats["periods"] = intents_by_period(ledger, samples, kept)
    write_json(files.intents_stats, stats)
    # How much work the run did (embeddings not found in the cache) is a run record, like
    # its time: a re-run over the same intents writes the very same stats.json.
    write_json(
        files.intents_timing,
        {"seconds": round(time.perf_counter() - started, 3), "n_embedded": dedup.n_embedded},
    )
    return stats
