"""Diversity of a set of intents: the Vendi score and how it grows with the number of intents.

The Vendi score (q = 1) is the exponential of the Shannon entropy of the eigenvalues of the
similarity kernel K/n. With the cosine kernel K = XXᵀ on unit-length rows, XᵀX/n (d × d) has
the same non-zero eigenvalues, so it is computed in O(n·d²) instead of O(n³), as
``vendi_score.vendi.score_dual`` does: about a second at 50,000 × 768. It ranges from 1 (all
items identical) to min(n, d) (all mutually orthogonal).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ise_core.atomic import atomic_write_bytes


def _unit_float64(vectors: np.ndarray) -> np.ndarray:
    # One float64 copy, scaled in place: at 50,000 × 768 each extra copy is 300 MB.
    matrix = np.array(vectors, dtype=np.float64, copy=True)
    if matrix.ndim != 2:
        raise ValueError(f"expected an n × d matrix, got shape {matrix.shape}")
    # einsum, not linalg.norm: the latter squares into a temporary as large as the matrix.
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))[:, None]
    matrix /= np.maximum(norms, np.finfo(np.float64).tiny)
    return matrix


def _gram_score(gram: np.ndarray, n: int) -> float:
    """The score of ``n`` unit rows from their d × d Gram matrix XᵀX, as ``score_dual``."""
    import scipy.linalg
    from vendi_score import vendi

    if n == 0:
        return 0.0
    return float(np.exp(vendi.entropy_q(scipy.linalg.eigvalsh(gram / n), q=1)))


def vendi_score(vectors: np.ndarray) -> float:
    """Vendi score (q = 1, cosine kernel) of the rows of ``vectors``; 0.0 for no rows."""
    unit = _unit_float64(vectors)
    return _gram_score(unit.T @ unit, unit.shape[0])


def curve_sizes(points: Sequence[int], n: int) -> list[int]:
    """The subset sizes a curve is measured at: the requested points up to ``n``, then ``n``."""
    sizes = sorted({int(p) for p in points if 0 < int(p) < n})
    if n > 0:
        sizes.append(n)
    return sizes


def vendi_curve(vectors: np.ndarray, points: Sequence[int], seed: int) -> list[dict[str, Any]]:
    """Vendi score of nested random subsets: ``[{"n": size, "vendi_score": v}, ...]``.

    Each subset is a prefix of one seeded permutation, so subsets are nested (the curve shows
    what adding intents buys) and the curve is the same for the same seed and vectors.
    """
    unit = _unit_float64(vectors)
    n, dims = unit.shape
    order = np.random.default_rng(seed).permutation(n)
    # Nested subsets: each point adds the outer products of its new rows to the previous
    # point's Gram matrix, so the whole curve costs one XᵀX, as the score alone does.
    gram = np.zeros((dims, dims))
    done = 0
    curve: list[dict[str, Any]] = []
    for size in curve_sizes(points, n):
        added = unit[order[done:size]]
        gram += added.T @ added
        done = size
        curve.append({"n": size, "vendi_score": _gram_score(gram, size)})
    return curve


def plot_vendi_curve(curve: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Draw the curve (log-scaled x) to a PNG at ``path``, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure on the Agg canvas: no pyplot global state, no display needed.
    figure = Figure(figsize=(6.4, 4.0), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    sizes = [int(point["n"]) for point in curve]
    scores = [float(point["vendi_score"]) for point in curve]
    axes.plot(sizes, scores, marker="o", color="#2b6cb0")
    for size, score in zip(sizes[-1:], scores[-1:], strict=True):
        axes.annotate(
            f"{score:.2f}",
            (size, score),
            textcoords="offset points",
            xytext=(-10, 6),
            ha="right",
        )
    if sizes and min(sizes) > 0 and max(sizes) > 10 * min(sizes):
        axes.set_xscale("log")
        axes.minorticks_off()
    # Label the measured sizes themselves (200, 1,000, 43,956), not powers of ten.
    axes.set_xticks(sizes, [f"{size:,}" for size in sizes], rotation=45 if len(sizes) > 6 else 0)
    # From zero, so a flattening curve is not drawn as a steep one.
    axes.set_ylim(bottom=0, top=max(scores, default=1.0) * 1.12)
    axes.set_xlabel("number of intents (nested random subsets)")
    axes.set_ylabel("Vendi score (q = 1, cosine)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())
