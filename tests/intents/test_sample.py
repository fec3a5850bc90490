"""The 4D sampler: distributions over 10,000 samples, determinism and prefix stability."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from ise_core.config import ComplexityPriors, IntentsSettings
from ise_core.errors import ConfigError, TaxonomyError
from ise_core.intents.sample import sample_intents
from ise_core.intents.taxonomy import Taxonomy, load_taxonomy
from ise_core.records import IntentSample, write_jsonl

TAXONOMY = Path(__file__).resolve().parents[2] / "ise_core" / "taxonomy"


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy(TAXONOMY)


@pytest.fixture(scope="module")
def ten_thousand(taxonomy: Taxonomy) -> list[IntentSample]:
    return sample_intents(taxonomy, IntentsSettings(), seed=7, count=10_000)


def test_each_sample_has_2_to_3_domains_and_3_to_6_tasks_from_them(
    ten_thousand: list[IntentSample], taxonomy: Taxonomy
) -> None:
    task_domain = {task.id: task.domain for task in taxonomy.tasks}
    for sample in ten_thousand:
        assert 2 <= len(sample.domains) <= 3
        assert len(set(sample.domains)) == len(sample.domains)
        assert 3 <= len(sample.tasks) <= 6
        ids = [task.id for task in sample.tasks]
        assert len(set(ids)) == len(ids), "a task is drawn at most once per intent"
        for task in sample.tasks:
            assert task.domain in sample.domains
            assert task_domain[task.id] == task.domain
        assert {task.domain for task in sample.tasks} == set(sample.domains)


def test_every_size_and_value_is_reached(
    ten_thousand: list[IntentSample], taxonomy: Taxonomy
) -> None:
    assert Counter(len(s.domains) for s in ten_thousand).keys() == {2, 3}
    assert Counter(len(s.tasks) for s in ten_thousand).keys() == {3, 4, 5, 6}
    assert {d for s in ten_thousand for d in s.domains} == set(taxonomy.domain_ids)
    assert {t.id for s in ten_thousand for t in s.tasks} == {t.id for t in taxonomy.tasks}
    assert len({s.persona.id for s in ten_thousand}) >= 0.99 * len(taxonomy.personas)


def test_complexity_shares_match_the_default_priors(ten_thousand: list[IntentSample]) -> None:
    counts: Counter[str] = Counter(s.complexity for s in ten_thousand)
    for level, prior in {"simple": 0.10, "medium": 0.40, "complex": 0.50}.items():
        assert abs(counts[level] / len(ten_thousand) - prior) <= 0.02, (level, counts)


def test_complexity_shares_follow_custom_priors(taxonomy: Taxonomy) -> None:
    settings = IntentsSettings(
        complexity_priors=ComplexityPriors(simple=0.3, medium=0.3, complex=0.4)
    )
    samples = sample_intents(taxonomy, settings, seed=11, count=10_000)
    counts: Counter[str] = Counter(s.complexity for s in samples)
    assert abs(counts["simple"] / 10_000 - 0.3) <= 0.02
    assert abs(counts["medium"] / 10_000 - 0.3) <= 0.02
    assert abs(counts["complex"] / 10_000 - 0.4) <= 0.02


def test_ids_are_unique_readable_and_indexed(ten_thousand: list[IntentSample]) -> None:
    assert len({s.id for s in ten_thousand}) == len(ten_thousand)
    for index, sample in enumerate(ten_thousand[:500]):
        assert sample.index == index
        assert re.fullmatch(rf"it-{index:06d}-[0-9a-f]{{6}}", sample.id)


def test_same_seed_gives_byte_identical_file(taxonomy: Taxonomy, tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(first, sample_intents(taxonomy, IntentsSettings(), seed=3, count=800))
    write_jsonl(second, sample_intents(taxonomy, IntentsSettings(), seed=3, count=800))
    assert first.read_bytes() == second.read_bytes()


def test_different_seed_gives_different_samples(taxonomy: Taxonomy) -> None:
    a = sample_intents(taxonomy, IntentsSettings(), seed=3, count=200)
    b = sample_intents(taxonomy, IntentsSettings(), seed=4, count=200)
    same = sum(
        x.model_dump(exclude={"id"}) == y.model_dump(exclude={"id"})
        for x, y in zip(a, b, strict=True)
    )
    assert same == 0
    assert {s.id for s in a}.isdisjoint({s.id for s in b})


def test_raising_count_appends_without_reshuffling(taxonomy: Taxonomy) -> None:
    short = sample_intents(taxonomy, IntentsSettings(), seed=5, count=150)
    long = sample_intents(taxonomy, IntentsSettings(), seed=5, count=600)
    assert [s.model_dump() for s in long[:150]] == [s.model_dump() for s in short]


def test_count_defaults_to_settings(taxonomy: Taxonomy) -> None:
    assert len(sample_intents(taxonomy, IntentsSettings(count=37), seed=1)) == 37
    assert sample_intents(taxonomy, IntentsSettings(), seed=1, count=0) == []


def test_custom_ranges_are_respected(taxonomy: Taxonomy) -> None:
    settings = IntentsSettings(domains_per_intent=(1, 1), tasks_per_intent=(1, 2))
    for sample in sample_intents(taxonomy, settings, seed=2, count=500):
        assert len(sample.domains) == 1
        assert 1 <= len(sample.tasks) <= 2
        assert {t.domain for t in sample.tasks} == set(sample.domains)


def test_more_domains_than_the_taxonomy_has_is_a_config_error(taxonomy: Taxonomy) -> None:
    settings = IntentsSettings(domains_per_intent=(11, 12), tasks_per_intent=(12, 12))
    with pytest.raises(ConfigError, match=r"domains_per_intent.*has 10"):
        sample_intents(taxonomy, settings, seed=1, count=1)


def test_fewer_tasks_than_domains_is_a_config_error(taxonomy: Taxonomy) -> None:
    settings = IntentsSettings(domains_per_intent=(3, 3), tasks_per_intent=(2, 2))
    with pytest.raises(ConfigError, match="tasks_per_intent"):
        sample_intents(taxonomy, settings, seed=1, count=1)


def test_too_few_tasks_per_domain_for_the_draw_is_a_taxonomy_error(taxonomy: Taxonomy) -> None:
    # Two domains must be able to hold 40 tasks: no domain of the shipped taxonomy has 20.
    settings = IntentsSettings(domains_per_intent=(2, 3), tasks_per_intent=(3, 40))
    with pytest.raises(TaxonomyError, match="sampling needs at least 20 per domain"):
        sample_intents(taxonomy, settings, seed=1, count=1)
