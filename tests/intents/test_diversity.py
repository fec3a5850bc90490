"""Vendi score: equal to the reference implementation, bounded as theory says, curve nested."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from vendi_score import vendi

from ise_core.intents.diversity import (
    curve_sizes,
    plot_vendi_curve,
    vendi_curve,
    vendi_score,
)
from ise_core.intents.embed import MINILM, embed_texts

SENTENCES = [
    "Rebase my feature branch onto main and resolve the conflicts in the parser module.",
    "Book a table for four at an Italian place near the office on Thursday evening.",
    "Summarise the last ten support tickets about login failures.",
    "Resize every image in the assets folder to 800 pixels wide.",
    "Set a reminder to renew the TLS certificate two weeks before it expires.",
    "Compare the memory usage of the two services over the last hour.",
    "Rebase my feature branch onto main and fix the merge conflicts in the parser.",
    "Translate the onboarding guide into Spanish and keep the formatting.",
]


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    cache = tmp_path_factory.mktemp("embeddings")
    return embed_texts(SENTENCES, MINILM, batch_size=8, cache_dir=cache, model_dir=cache).vectors


# vendi_score's kernel form touches a scipy namespace that scipy now flags as deprecated.
@pytest.mark.filterwarnings("ignore:Please import `csr_matrix`:DeprecationWarning")
def test_vendi_equals_the_reference_on_real_embeddings(embeddings: np.ndarray) -> None:
    ours = vendi_score(embeddings)
    x = embeddings.astype(np.float64)
    assert ours == pytest.approx(vendi.score_dual(x, q=1), rel=1e-9)
    # The dual form and the n × n kernel form agree on the cosine kernel.
    assert ours == pytest.approx(vendi.score_K(x @ x.T, q=1, normalize=True), rel=1e-6)
    # Two near-paraphrases among eight sentences: clearly diverse, clearly below 8.
    assert 4.0 < ours < 8.0


def test_vendi_ignores_vector_length() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 16))
    scaled = x * rng.uniform(0.1, 10.0, size=(50, 1))
    before = scaled.copy()
    assert vendi_score(scaled) == pytest.approx(vendi_score(x), rel=1e-9)
    assert np.array_equal(scaled, before)  # scaled in a copy, never in place
    assert vendi_score(x.astype(np.float32)) == pytest.approx(vendi_score(x), rel=1e-5)


def test_vendi_of_identical_items_is_one_and_of_orthogonal_items_is_n() -> None:
    same = np.tile(np.array([[0.3, -1.2, 0.5, 2.0]]), (25, 1))
    assert vendi_score(same) == pytest.approx(1.0, abs=1e-9)
    assert vendi_score(np.eye(12)) == pytest.approx(12.0, rel=1e-9)
    # k orthogonal directions, each repeated equally often: exactly k.
    repeated = np.repeat(np.eye(6)[:3], 7, axis=0)
    assert vendi_score(repeated) == pytest.approx(3.0, rel=1e-9)


def test_vendi_of_no_items_is_zero() -> None:
    assert vendi_score(np.zeros((0, 4))) == 0.0


def test_curve_is_nested_deterministic_and_ends_at_n() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 64))
    curve = vendi_curve(x, points=[200, 50, 10, 1000], seed=7)
    assert [point["n"] for point in curve] == [10, 50, 200, 300]
    assert curve == vendi_curve(x, points=[10, 50, 200, 1000], seed=7)
    assert curve[-1]["vendi_score"] == pytest.approx(vendi_score(x), rel=1e-12)
    # The 50-item subset is the first 50 of the seeded permutation.
    order = np.random.default_rng(7).permutation(300)
    assert curve[1]["vendi_score"] == pytest.approx(vendi_score(x[order[:50]]), rel=1e-12)
    scores = [point["vendi_score"] for point in curve]
    assert scores == sorted(scores)  # random gaussian directions: more items, more diversity
    assert vendi_curve(x, points=[10, 50], seed=8)[0] != curve[0]


def test_curve_sizes() -> None:
    assert curve_sizes([200, 500, 1000], 700) == [200, 500, 700]
    assert curve_sizes([200, 200, 0, -5], 200) == [200]
    assert curve_sizes([10], 0) == []


def test_plot_writes_a_png(tmp_path: Path) -> None:
    curve = [
        {"n": 200, "vendi_score": 12.5},
        {"n": 500, "vendi_score": 19.0},
        {"n": 2000, "vendi_score": 31.2},
    ]
    target = plot_vendi_curve(curve, tmp_path / "plots" / "vendi_curve.png", "Vendi score")
    data = target.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert [p.name for p in target.parent.iterdir()] == ["vendi_curve.png"]  # no temp left
