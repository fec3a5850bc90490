"""De-duplication of intents: exact (normalised text) then near (cosine on embeddings).

Both passes are greedy keep-first in sample order, so the result depends only on the order
of the input: an item is removed when it matches an earlier item that was *kept*. The near
pass works on row blocks of the unit-length embedding matrix and never holds more than
``block_size × block_size`` similarities at once (50,000 × 768 takes ~10 s on 2 cores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExactDupResult:
    """``keep``: indices of first occurrences, ascending; ``removed``: (removed, kept) pairs."""

    keep: list[int]
    removed: list[tuple[int, int]]


@dataclass(frozen=True)
class NearDupResult:
    """``keep_mask``: boolean mask over the input rows; ``removed``: (removed, kept, cosine).

    ``kept`` is the earlier kept row most similar to the removed one (lowest index on ties).
    """

    keep_mask: np.ndarray
    removed: list[tuple[int, int, float]]

    @property
    def n_removed(self) -> int:
        return len(self.removed)


def exact_duplicates(normalized: Sequence[str]) -> ExactDupResult:
    """Keep the first of each group of identical normalised strings (``records.normalize_text``)."""
    first_seen: dict[str, int] = {}
    keep: list[int] = []
    removed: list[tuple[int, int]] = []
    for index, text in enumerate(normalized):
        earlier = first_seen.setdefault(text, index)
        if earlier == index:
            keep.append(index)
        else:
            removed.append((index, earlier))
    return ExactDupResult(keep=keep, removed=removed)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as contiguous float32 (zero rows stay zero)."""
    # One float32 copy, scaled in place (the caller's array is never modified).
    matrix = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if matrix.ndim != 2:
        raise ValueError(f"expected an n × d matrix, got shape {matrix.shape}")
    # einsum, not linalg.norm: the latter squares into a temporary as large as the matrix.
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))[:, None]
    matrix /= np.maximum(norms, np.finfo(np.float32).tiny)
    return matrix


def _upper_mask(size: int) -> np.ndarray:
    return np.triu(np.ones((size, size), dtype=bool))


def near_duplicates(vectors: np.ndarray, threshold: float, block_size: int = 2048) -> NearDupResult:
    """Greedy keep-first near-duplicate removal at cosine ≥ ``threshold``.

    Rows are processed in blocks of ``block_size``. Each block is compared with the kept rows
    of every earlier block (one tile at a time), then resolved against itself in order. Only
    rows with at least one hit enter the Python loop, so the cost is the matrix products.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    x = unit_rows(vectors)
    n = x.shape[0]
    keep = np.ones(n, dtype=bool)
    removed: list[tuple[int, int, float]] = []
    # Compare in float32 everywhere, so a pair never passes one test and fails another.
    limit = np.float32(threshold)
    limit_f = float(limit)

    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        block = x[start:stop]
        # Best earlier kept match per row of this block, found tile by tile.
        best_sim = np.full(stop - start, -np.inf, dtype=np.float32)
        best_idx = np.full(stop - start, -1, dtype=np.int64)
        for tile_start in range(0, start, block_size):
            tile_stop = min(tile_start + block_size, start)
            kept_cols = np.flatnonzero(keep[tile_start:tile_stop]) + tile_start
            if kept_cols.size == 0:
                continue
            sims = block @ x[kept_cols].T
            # A row maximum is one reduction pass; a boolean matrix would be another B × B.
            hit_rows = np.flatnonzero(sims.max(axis=1) >= limit)
            if hit_rows.size == 0:
                continue
            cols = sims[hit_rows].argmax(axis=1)  # first maximum: lowest index on ties
            vals = sims[hit_rows, cols]
            better = vals > best_sim[hit_rows]
            best_sim[hit_rows[better]] = vals[better]
            best_idx[hit_rows[better]] = kept_cols[cols[better]]

        inner = block @ block.T
        # Only earlier rows of the block count: blank the diagonal and everything above it.
        np.putmask(inner, _upper_mask(stop - start), -np.inf)
        inner_hits = inner.max(axis=1) >= limit
        candidates = np.flatnonzero(inner_hits | (best_sim >= limit))
        for candidate in candidates:
            row = int(candidate)
            sim, match = float(best_sim[row]), int(best_idx[row])
            if inner_hits[row]:
                earlier = inner[row, :row]
                earlier_kept = np.flatnonzero(keep[start : start + row] & (earlier >= limit))
                if earlier_kept.size:
                    pick = int(earlier_kept[np.argmax(earlier[earlier_kept])])
                    # Prefer the in-block match only when strictly more similar, so ties go
                    # to the lower (earlier-block) index.
                    if float(earlier[pick]) > sim:
                        sim, match = float(earlier[pick]), start + pick
            if match >= 0 and sim >= limit_f:
                keep[start + row] = False
                removed.append((start + row, match, sim))
    return NearDupResult(keep_mask=keep, removed=removed)
