"""The 4D sampler: persona × 2–3 domains × 3–6 tasks from those domains × complexity.

Each sample draws from its own random stream, derived from ``(seed, index)`` alone. Sample
``i`` is therefore the same whatever ``count`` is: raising ``count`` appends samples and never
reshuffles the earlier ones, and the same seed always gives a byte-identical sampled.jsonl.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ise_core.config import IntentsSettings
from ise_core.errors import ConfigError
from ise_core.intents.taxonomy import Taxonomy, check_task_counts
from ise_core.records import COMPLEXITIES, IntentSample, TaskRef, canonical_json

# Namespaces the per-sample streams, so other seeded draws from the same seed never align.
STREAM_LABEL = "ise-intents-sample"


@dataclass(frozen=True)
class Stream:
    """A sequence of samples: the label seeding its random streams and its id prefix."""

    label: str
    prefix: str


TRAINING_STREAM = Stream(STREAM_LABEL, "it")
EVAL_STREAM = Stream("ise-eval-sample", "ev")


def sample_rng(seed: int, index: int, stream: str = STREAM_LABEL) -> random.Random:
    """The random stream of sample ``index`` under ``seed`` (independent of every other)."""
    digest = hashlib.sha256(f"{stream}:{seed}:{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def intent_id(
    index: int,
    seed: int,
    persona_id: str,
    task_ids: list[str],
    complexity: str,
    prefix: str = "it",
) -> str:
    """A readable, stable id: ``it-<index>-<6 hex of the sample's content and seed>``."""
    content = canonical_json(
        {"seed": seed, "persona": persona_id, "tasks": task_ids, "complexity": complexity}
    )
    return f"{prefix}-{index:06d}-{hashlib.sha256(content.encode()).hexdigest()[:6]}"


def check_sampling_space(taxonomy: Taxonomy, settings: IntentsSettings) -> None:
    """Fail early, with the reason, when the taxonomy cannot satisfy the sampling ranges."""
    low_domains, high_domains = settings.domains_per_intent
    low_tasks, high_tasks = settings.tasks_per_intent
    if len(taxonomy.domains) < high_domains:
        raise ConfigError(
            f"intents.domains_per_intent: asks for up to {high_domains} domains but the "
            f"taxonomy at {taxonomy.source} has {len(taxonomy.domains)}"
        )
    if high_tasks < high_domains:
        raise ConfigError(
            f"intents.tasks_per_intent: the upper bound {high_tasks} must be at least the upper "
            f"bound of domains_per_intent ({high_domains}), since every domain gives a task"
        )
    # Two domains of the smallest size must still hold the largest task draw.
    check_task_counts(taxonomy, math.ceil(high_tasks / low_domains))
    if not taxonomy.personas:
        raise ConfigError(f"intents.taxonomy: {taxonomy.source} has no personas")
    del low_tasks  # the lower bound is raised per sample to the domain count; always feasible


def _draw_sample(
    taxonomy: Taxonomy,
    settings: IntentsSettings,
    seed: int,
    index: int,
    weights: list[float],
    refs: dict[str, TaskRef],
    stream: Stream,
) -> IntentSample:
    rng = sample_rng(seed, index, stream.label)
    persona = rng.choice(taxonomy.personas)
    n_domains = rng.randint(*settings.domains_per_intent)
    domains = rng.sample(taxonomy.domain_ids, n_domains)
    low_tasks, high_tasks = settings.tasks_per_intent
    n_tasks = rng.randint(max(low_tasks, n_domains), high_tasks)
    # One task from each chosen domain first, so every domain is represented ...
    chosen = [rng.choice(taxonomy.tasks_by_domain[domain]) for domain in domains]
    # ... then the rest from the pooled tasks of the chosen domains, without repeats.
    taken = {task.id for task in chosen}
    pool = [
        task for domain in domains for task in taxonomy.tasks_by_domain[domain]
        if task.id not in taken
    ]
    chosen += rng.sample(pool, n_tasks - n_domains)
    rng.shuffle(chosen)
    complexity = rng.choices(COMPLEXITIES, weights=weights, k=1)[0]
    task_ids = [task.id for task in chosen]
    return IntentSample(
        id=intent_id(index, seed, persona.id, task_ids, complexity, stream.prefix),
        index=index,
        persona=persona,
        domains=domains,
        tasks=[refs[task_id] for task_id in task_ids],
        complexity=complexity,
    )


def sample_intents(
    taxonomy: Taxonomy,
    settings: IntentsSettings,
    seed: int,
    count: int | None = None,
    stream: Stream | None = None,
    indices: Sequence[int] | None = None,
) -> list[IntentSample]:
    """Draw ``count`` (default ``settings.count``) points of the 4D space, deterministically.

    ``stream`` names a separate sequence of samples (the eval split's: ``EVAL_STREAM``) whose
    ids carry their own prefix, so they never collide with the training intents' ids.
    ``indices`` draws exactly those samples instead of the first ``count`` (the refresh
    periods' batches: sample *i* is the same whichever other samples are drawn)."""
    chosen = stream or TRAINING_STREAM
    total = settings.count if count is None else count
    if total < 0:
        raise ConfigError(f"intents.count: expected a non-negative number, got {total}")
    check_sampling_space(taxonomy, settings)
    priors = settings.complexity_priors.as_dict()
    weights = [priors[level] for level in COMPLEXITIES]
    # Built once and shared: a TaskRef is the same value in every sample that draws the task.
    refs = {
        task.id: TaskRef(id=task.id, domain=task.domain, title=task.title)
        for task in taxonomy.tasks
    }
    return [
        _draw_sample(taxonomy, settings, seed, index, weights, refs, chosen)
        for index in (range(total) if indices is None else indices)
    ]


__all__ = [
    "EVAL_STREAM",
    "TRAINING_STREAM",
    "Stream",
    "check_sampling_space",
    "intent_id",
    "sample_intents",
    "sample_rng",
]
