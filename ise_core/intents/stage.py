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
from typing import Any

from ise_core.config import Settings, fingerprint
from ise_core.evaluation.split import freeze_split, split_eval
from ise_core.intents.dedup import exact_duplicates, near_duplicates
from ise_core.intents.diversity import plot_vendi_curve, vendi_curve, vendi_score
from ise_core.intents.embed import embed_for_settings
from ise_core.intents.render import render_intents
from ise_core.intents.sample import sample_intents
from ise_core.intents.taxonomy import Taxonomy, load_taxonomy
from ise_core.intents.threads import pinned_threads
from ise_core.llm.base import Chat
from ise_core.records import (
    Intent,
    canonical_json,
    normalize_text,
    remove_stale_temp_files,
    text_hash,
    write_json,
    write_jsonl,
)

# The settings this stage reads; their hash goes into stats.json and decides re-runs.
FINGERPRINT_KEYS = (
    "seed",
    "intents",
    "embedding",
    "dedup",
    "diversity",
    "eval.fraction",
    "eval.count",
    "eval.seed",
    "eval.safety.secret_path",
    "llm.roles.writer",
)


def stage_fingerprint(settings: Settings) -> str:
    # The writer's resolved endpoint/model/sampling matter; cache mode and limits do not.
    base = fingerprint(settings, *(k for k in FINGERPRINT_KEYS if k != "llm.roles.writer"))
    writer = settings.llm.role("writer")
    return text_hash(canonical_json({"base": base, "writer": writer}))[:16]


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


def run_intents_stage(
    settings: Settings,
    *,
    writer: Chat | None = None,
    log: Callable[[str], None] = _log,
) -> dict[str, Any]:
    """Run stage 1 end to end and return its stats (also written to stats.json)."""
    started = time.perf_counter()
    out_dir = settings.path(settings.intents.out_dir)
    remove_stale_temp_files(out_dir)  # left by a run that was killed mid-write
    taxonomy = load_taxonomy(settings.path(settings.intents.taxonomy))

    samples = sample_intents(taxonomy, settings.intents, settings.seed)
    write_jsonl(out_dir / "sampled.jsonl", samples)
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
    write_jsonl(out_dir / "rejected.jsonl", [r.model_dump() for r in outcome.rejected])
    written = outcome.intents
    log(f"wrote out {len(written)} intents ({len(outcome.rejected)} rejected)")

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
    vectors = embedded.vectors[near.keep_mask]
    log(f"removed {len(near.removed)} near duplicates (cosine >= {settings.dedup.threshold})")
    n_deduplicated = len(kept)
    # The held-out eval intents (none unless eval.fraction or eval.count is set).
    split = split_eval(settings, taxonomy, writer, kept, vectors, log)
    kept, vectors = split.train, split.train_vectors

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
    write_jsonl(out_dir / "duplicates.jsonl", duplicates)
    write_jsonl(out_dir / "intents.jsonl", kept)
    freeze_split(settings, split)

    with pinned_threads(settings.embedding.threads):
        score = vendi_score(vectors) if len(kept) else 0.0
        curve = vendi_curve(vectors, settings.diversity.curve_points, seed=settings.seed)
    plot_vendi_curve(
        curve,
        out_dir / "vendi_curve.png",
        title=f"Vendi score vs. intents ({settings.embedding.model})",
    )
    log(f"Vendi score {score:.2f} over {len(kept)} unique intents")

    n_sampled = len(samples)
    stats: dict[str, Any] = {
        "n_sampled": n_sampled,
        "n_rejected": len(outcome.rejected),
        "n_written": len(written),
        "n_exact_duplicates": len(exact.removed),
        "n_near_duplicates": len(near.removed),
        "n_unique": len(kept),
        "unique_share": round(n_deduplicated / n_sampled, 6) if n_sampled else 0.0,
        "vendi_score": round(float(score), 6),
        "vendi_curve": curve,
        "embedding_model": settings.embedding.model,
        "embedding_space": embedded.model,
        "dedup_threshold": settings.dedup.threshold,
        "n_embedded": embedded.n_computed,
        "coverage": coverage(kept, taxonomy),
        "writer": writer.name,
        "params_fingerprint": stage_fingerprint(settings),
    }
    if split.stats:
        stats["eval_split"] = split.stats
    write_json(out_dir / "stats.json", stats)
    write_json(out_dir / "timing.json", {"seconds": round(time.perf_counter() - started, 3)})
    return stats
