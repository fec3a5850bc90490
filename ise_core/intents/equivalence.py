"""Is a faster embedding backend the same measurement? Figures and bounds, one home for both.

A backend may replace the torch reference when, on the same texts:

- the mean cosine between its vector and the reference vector of each text is ≥ 0.995;
- the de-duplication decision "cosine ≥ threshold" agrees on ≥ 99.5% of all text pairs;
- the Vendi score differs by at most 1%.

Pair agreement over all pairs is dominated by pairs far below the threshold, so the figures
also give the stricter views: how many duplicate pairs each side finds and their overlap
(intersection over union), and on how many texts greedy keep-first de-duplication decides
differently. The benchmark (``benchmarks/intents_scale.py --equivalence``) prints all of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ise_core.intents.dedup import near_duplicates
from ise_core.intents.diversity import vendi_score

MIN_MEAN_COSINE = 0.995
MIN_PAIR_AGREEMENT = 0.995
MAX_VENDI_RELATIVE_DIFFERENCE = 0.01


def _duplicate_pairs(vectors: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """Every pair i < j with cosine ≥ ``threshold`` (rows are unit length), blockwise."""
    limit = np.float32(threshold)
    pairs: set[tuple[int, int]] = set()
    n = vectors.shape[0]
    for start in range(0, n, 1024):
        sims = vectors[start : start + 1024] @ vectors.T
        rows, cols = np.nonzero(sims >= limit)
        rows = rows + start
        upper = cols > rows
        pairs.update(zip(rows[upper].tolist(), cols[upper].tolist(), strict=True))
    return pairs


def compare(reference: np.ndarray, candidate: np.ndarray, threshold: float) -> dict[str, Any]:
    """Equivalence figures of ``candidate`` against ``reference`` (same texts, same order)."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {candidate.shape}")
    n = reference.shape[0]
    cosines = np.einsum("ij,ij->i", reference.astype(np.float64), candidate.astype(np.float64))
    ref_pairs = _duplicate_pairs(reference, threshold)
    cand_pairs = _duplicate_pairs(candidate, threshold)
    all_pairs = n * (n - 1) // 2
    disagree = len(ref_pairs ^ cand_pairs)
    union = ref_pairs | cand_pairs
    ref_keep = near_duplicates(reference, threshold).keep_mask
    cand_keep = near_duplicates(candidate, threshold).keep_mask
    ref_vendi = vendi_score(reference)
    cand_vendi = vendi_score(candidate)
    figures: dict[str, Any] = {
        "n_texts": n,
        "mean_cosine": round(float(cosines.mean()), 6) if n else 1.0,
        "min_cosine": round(float(cosines.min()), 6) if n else 1.0,
        "pair_agreement": round(1 - disagree / all_pairs, 6) if all_pairs else 1.0,
        "duplicate_pairs": [len(ref_pairs), len(cand_pairs)],
        "duplicate_pair_overlap": round(len(ref_pairs & cand_pairs) / len(union), 4)
        if union
        else 1.0,
        "keep_decisions_differ": int((ref_keep != cand_keep).sum()),
        "vendi": [round(ref_vendi, 4), round(cand_vendi, 4)],
        "vendi_relative_difference": round(abs(cand_vendi - ref_vendi) / ref_vendi, 6)
        if ref_vendi
        else 0.0,
    }
    figures["within_bounds"] = within_bounds(figures)
    return figures


def within_bounds(figures: dict[str, Any]) -> bool:
    return bool(
        figures["mean_cosine"] >= MIN_MEAN_COSINE
        and figures["pair_agreement"] >= MIN_PAIR_AGREEMENT
        and figures["vendi_relative_difference"] <= MAX_VENDI_RELATIVE_DIFFERENCE
    )
