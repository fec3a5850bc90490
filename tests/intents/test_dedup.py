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
    # The definition: cosines in float64 of the float32 unit rows, greedy keep-first.
    unit = unit_rows(vectors).astype(np.float64)
    sims = unit @ unit.T
    keep = np.ones(len(unit), dtype=bool)
    removed: list[tuple[int, int]] = []
    for i in range(len(unit)):
        earlier = [j for j in range(i) if keep[j] and sims[i, j] >= threshold]
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
        for method in ("exact", "faiss"):
            result = near_duplicates(vectors, 0.9, block_size=block_size, method=method)
            assert np.array_equal(result.keep_mask, keep), (block_size, method)
            assert [(r, k) for r, k, _ in result.removed] == removed, (block_size, method)
    assert np.array_equal(vectors, original)  # the caller's matrix is left alone


def planted_clusters(n: int, d: int, seed: int) -> np.ndarray:
    """Random unit rows where a third are noisy copies (cosine ~0.82-0.96 to a source, so the
    0.9 threshold cuts through the clusters), copies of copies, and exact repeats."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    copies = rng.choice(np.arange(1, n), n // 3, replace=False)
    copies.sort()
    for target in copies:
        source = int(rng.integers(0, target))
        sigma = rng.uniform(0.3, 0.7)
        moved = vectors[source] + sigma * rng.standard_normal(d).astype(np.float32) / np.sqrt(d)
        vectors[target] = moved / np.linalg.norm(moved)
    repeats = rng.choice(np.arange(1, n), n // 50, replace=False)
    vectors[repeats] = vectors[rng.integers(0, n, repeats.size)]
    return vectors


def test_faiss_equals_exact_greedy_keep_first_on_20000_vectors() -> None:
    vectors = planted_clusters(20_000, 768, seed=11)
    exact = near_duplicates(vectors, threshold=0.9, method="exact")
    faiss = near_duplicates(vectors, threshold=0.9, method="faiss")
    assert 2_000 < exact.n_removed < 10_000  # both outcomes are exercised, at scale
    assert np.array_equal(exact.keep_mask, faiss.keep_mask)
    assert exact.removed == faiss.removed  # same matches and the same float64 cosines
    # And "auto" takes FAISS at this size, with the same answer.
    assert near_duplicates(vectors, 0.9, method="auto").removed == exact.removed


def test_the_float64_decision_is_exact_at_the_threshold() -> None:
    # Pairs whose float32 cosine rounds across the threshold are decided on float64 cosines,
    # identically by both candidate searches.
    rng = np.random.default_rng(5)
    base = rng.standard_normal(64)
    base /= np.linalg.norm(base)
    other = rng.standard_normal(64)
    other -= other @ base * base
    other /= np.linalg.norm(other)
    rows = [base]
    for angle in np.linspace(np.arccos(0.9) - 1e-6, np.arccos(0.9) + 1e-6, 9):
        rows.append(np.cos(angle) * base + np.sin(angle) * other)
    vectors = np.stack(rows).astype(np.float32)
    expected_keep, expected_removed = _brute_force(vectors, 0.9)
    for method in ("exact", "faiss"):
        result = near_duplicates(vectors, 0.9, block_size=4, method=method)
        assert np.array_equal(result.keep_mask, expected_keep)
        assert [(r, k) for r, k, _ in result.removed] == expected_removed


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
    with pytest.raises(ValueError, match="method"):
        near_duplicates(np.eye(3), threshold=0.9, method="hnsw")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["exact", "faiss"])
def test_near_duplicates_on_empty_input(method: str) -> None:
    empty = np.zeros((0, 8), dtype=np.float32)
    result = near_duplicates(empty, threshold=0.9, block_size=8, method=method)  # type: ignore[arg-type]
    assert result.keep_mask.shape == (0,)
    assert result.removed == []
