"""Exact and near de-duplication: planted duplicates are caught, distinct intents are kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ise_core.intents.dedup import exact_duplicates, near_duplicates, unit_rows
from ise_core.intents.embed import MINILM, embed_texts
from ise_core.records import normalize_text

DISTINCT = [
    "Can you find out why the CI checks on my pull request keep failing and fix the flaky test?",
    "Set up a nightly cron job that backs up the project folder to a compressed archive.",
    "Set up a nightly cron job that deletes log files older than thirty days.",
    "Search the web for our three biggest competitors and summarise their pricing in a table.",
    "Write a Python script that renames the photos in my Downloads folder by the date taken.",
    "Draft a friendly email to the team announcing that Friday's meeting moves to 3 pm.",
    "Remember that my preferred deployment region is eu-west-1 for all future projects.",
    "Check how much disk space is left on the server and list the ten largest directories.",
    "Convert the quarterly sales spreadsheet to CSV and plot revenue per month as a bar chart.",
    "Scrape the headlines from the company blog and save them to a JSON file.",
    "Create a new git branch, bump the version number to 2.1.0 and write a changelog entry.",
    "Transcribe the audio of yesterday's customer call and pull out the action items.",
    "Find every TODO comment in the repository and group them by file in a markdown report.",
]

# (index of the original in DISTINCT, a reworded request meaning the same thing)
PARAPHRASES = [
    (
        0,
        "Could you figure out why the CI checks on my pull request keep failing and fix the "
        "flaky test?",
    ),
    (
        1,
        "Set up a nightly cron job which backs up the project directory into a compressed archive.",
    ),
    (3, "Search online for our three biggest competitors and summarize their pricing in a table."),
    (7, "Check how much disk space is left on the server and list the 10 largest directories."),
    (10, "Create a new git branch, bump the version to 2.1.0 and add a changelog entry."),
]


def test_exact_duplicates_fold_case_punctuation_and_whitespace() -> None:
    requests = [
        "Back up my notes folder.",
        "Plot last month's revenue.",
        "  back UP my   notes folder  ",
        "Back up my notes folder!!",
        "Plot last month’s revenue",  # a typographic apostrophe
        "Back up my photos folder.",
    ]
    result = exact_duplicates([normalize_text(text) for text in requests])
    assert result.keep == [0, 1, 5]
    assert result.removed == [(2, 0), (3, 0), (4, 1)]


def test_exact_duplicates_on_empty_input() -> None:
    assert exact_duplicates([]).keep == []


@pytest.fixture(scope="module")
def fixture_vectors(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    texts = DISTINCT + [text for _, text in PARAPHRASES]
    cache = tmp_path_factory.mktemp("embeddings")
    return embed_texts(
        texts, MINILM, batch_size=16, cache_dir=cache, model_dir=Path(cache / "models")
    ).vectors


def test_near_duplicates_catch_paraphrases_and_keep_distinct_intents(
    fixture_vectors: np.ndarray,
) -> None:
    result = near_duplicates(fixture_vectors, threshold=0.9, block_size=4)
    n = len(DISTINCT)
    # Every distinct request survives, including the two cron jobs that share a frame.
    assert result.keep_mask[:n].all()
    assert not result.keep_mask[n:].any()
    pairs = {(removed, kept) for removed, kept, _ in result.removed}
    assert pairs == {(n + k, original) for k, (original, _) in enumerate(PARAPHRASES)}
    assert all(0.9 <= sim <= 1.0 + 1e-6 for *_, sim in result.removed)


def test_paraphrase_placed_first_keeps_the_paraphrase(fixture_vectors: np.ndarray) -> None:
    # Keep-first is about sample order, not about which wording is "original".
    n = len(DISTINCT)
    order = [n, *range(n)]  # the first paraphrase, then all distinct requests
    result = near_duplicates(fixture_vectors[order], threshold=0.9, block_size=5)
    assert result.keep_mask[0]
    assert [(r, k) for r, k, _ in result.removed] == [(1, 0)]  # DISTINCT[0] is now the copy


def _brute_force(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
    unit = unit_rows(vectors)
    sims = unit @ unit.T
    limit = np.float32(threshold)
    keep = np.ones(len(unit), dtype=bool)
    removed: list[tuple[int, int]] = []
    for i in range(len(unit)):
        earlier = [j for j in range(i) if keep[j] and sims[i, j] >= limit]
        if earlier:
            keep[i] = False
            removed.append((i, max(earlier, key=lambda j: (sims[i, j], -j))))
    return keep, removed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blocked_search_equals_brute_force_for_any_block_size(seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((400, 24)).astype(np.float32)
    planted = rng.choice(400, 120, replace=False)
    sources = rng.integers(0, 400, 120)
    noise = rng.standard_normal((120, 24)).astype(np.float32)
    vectors[planted] = vectors[sources] + 0.3 * noise  # chains and clusters of near-copies
    original = vectors.copy()
    keep, removed = _brute_force(vectors, 0.9)
    assert 30 < len(removed) < 120  # the data really exercises both outcomes
    for block_size in (1, 7, 64, 150, 400, 4096):
        result = near_duplicates(vectors, threshold=0.9, block_size=block_size)
        assert np.array_equal(result.keep_mask, keep), block_size
        assert [(r, k) for r, k, _ in result.removed] == removed, block_size
    assert np.array_equal(vectors, original)  # the caller's matrix is left alone


def test_removed_item_does_not_remove_later_items() -> None:
    # b is close to a, c is close to b but not to a: greedy keep-first keeps a and c.
    a = np.array([1.0, 0.0])
    b = np.array([np.cos(0.4), np.sin(0.4)])
    c = np.array([np.cos(0.8), np.sin(0.8)])
    result = near_duplicates(np.stack([a, b, c]), threshold=float(np.cos(0.45)), block_size=2)
    assert result.keep_mask.tolist() == [True, False, True]
    assert [(r, k) for r, k, _ in result.removed] == [(1, 0)]


def test_near_duplicates_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="threshold"):
        near_duplicates(np.eye(3), threshold=0.0, block_size=8)
    with pytest.raises(ValueError, match="block_size"):
        near_duplicates(np.eye(3), threshold=0.9, block_size=0)
    with pytest.raises(ValueError, match="n × d"):
        near_duplicates(np.ones(3), threshold=0.9, block_size=8)


def test_near_duplicates_on_empty_input() -> None:
    result = near_duplicates(np.zeros((0, 8), dtype=np.float32), threshold=0.9, block_size=8)
    assert result.keep_mask.shape == (0,)
    assert result.removed == []
