"""De-duplication of intents: exact (normalised text) then near (cosine on embeddings).

Both passes are greedy keep-first in sample order, so the result depends only on the order
of the input: an item is removed when it matches an earlier item that was *kept*.

The near pass has two steps, so that how candidates are found cannot change what is decided:

1. **Candidates.** Every pair (i, j < i) whose float32 cosine is within ``CANDIDATE_MARGIN``
   of the threshold or above it, found block by block over the unit-length rows, either with
   blocked numpy products (``method="exact"``, never more than ``block_size²`` similarities in
   memory) or with a FAISS ``IndexFlatIP`` range search (``method="faiss"``, an exhaustive
   inner-product search in FAISS's own blocked BLAS loop). The margin is far larger than the
   rounding error of a float32 dot product of unit vectors (≤ d·2⁻²⁴ ≈ 5·10⁻⁵ at d = 768), so
   no pair at or above the threshold is missed by either search.
2. **Decision.** Each candidate pair's cosine is recomputed in float64 from the stored float32
   rows, and rows are resolved in order: row i is removed when some *kept* j < i has cosine ≥
   the threshold; its match is the most similar such j (lowest index on ties).

So both methods return the same result by construction, and the tests check it on 20,000
vectors. ``method="auto"`` (the ``dedup.method`` default) takes FAISS from
``dedup.faiss_min_rows`` rows on, where it was measured faster (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ise_core.intents.threads import pinned_threads

Method = Literal["auto", "exact", "faiss"]
# Candidates are pairs at or above threshold - CANDIDATE_MARGIN (see the module docstring).
CANDIDATE_MARGIN = 1e-3
# method="auto" uses FAISS from this many rows on (dedup.faiss_min_rows overrides it).
FAISS_MIN_ROWS = 20_000
# Candidate pairs re-checked in float64 at once (8,192 × 768 × 2 rows × 8 bytes ≈ 100 MB).
_PAIR_CHUNK = 8192


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


def _check(threshold: float, block_size: int) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")


def _blocked_candidates(
    x: np.ndarray, low: np.float32, block_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per row block, in order: its candidate pairs (rows, cols) with cols < rows."""
    n = x.shape[0]
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        block = x[start:stop]
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        for tile_start in range(0, stop, block_size):
            tile_stop = min(tile_start + block_size, stop)
            sims = block @ x[tile_start:tile_stop].T
            hit_r, hit_c = np.nonzero(sims >= low)
            hit_r, hit_c = hit_r + start, hit_c + tile_start
            earlier = hit_c < hit_r
            rows.append(hit_r[earlier])
            cols.append(hit_c[earlier])
        yield np.concatenate(rows), np.concatenate(cols)


def _faiss_candidates(
    x: np.ndarray, low: np.float32, block_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Like ``_blocked_candidates``, with a FAISS flat inner-product index grown block by block."""
    try:
        import faiss
    except ImportError:
        raise RuntimeError("dedup.method faiss needs the faiss-cpu package") from None
    n, d = x.shape
    index = faiss.IndexFlatIP(d)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        block = x[start:stop]
        index.add(block)  # the index holds rows [0, stop): earlier blocks and this one
        lims, _, found = index.range_search(block, float(low))
        rows = np.repeat(np.arange(start, stop), np.diff(lims).astype(np.int64))
        cols = found.astype(np.int64)
        earlier = cols < rows
        yield rows[earlier], cols[earlier]


def _resolve_block(
    x: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    keep: np.ndarray,
    threshold: float,
    removed: list[tuple[int, int, float]],
) -> None:
    """Decide the candidate rows of one block, in order, on float64 cosines (see above)."""
    if rows.size == 0:
        return
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    sims = np.empty(rows.size, dtype=np.float64)
    for at in range(0, rows.size, _PAIR_CHUNK):  # bounded memory when clusters are large
        part = slice(at, at + _PAIR_CHUNK)
        left = x[rows[part]].astype(np.float64)
        sims[part] = np.einsum("ij,ij->i", left, x[cols[part]].astype(np.float64))
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    for begin, end in zip(starts, [*starts[1:], rows.size], strict=True):
        row = int(rows[begin])
        pair_cols, pair_sims = cols[begin:end], sims[begin:end]
        hits = keep[pair_cols] & (pair_sims >= threshold)
        if hits.any():
            candidates = np.flatnonzero(hits)
            best = int(candidates[np.argmax(pair_sims[candidates])])  # first max: lowest j
            keep[row] = False
            removed.append((row, int(pair_cols[best]), float(pair_sims[best])))


def choose_method(method: Method, n: int, faiss_min_rows: int = FAISS_MIN_ROWS) -> str:
    """``exact`` or ``faiss`` for ``n`` rows (``auto``: FAISS from ``faiss_min_rows`` on)."""
    if method == "auto":
        return "faiss" if n >= faiss_min_rows else "exact"
    if method not in ("exact", "faiss"):
        raise ValueError(f"method must be auto, exact or faiss, got {method!r}")
    return method


def near_duplicates(
    vectors: np.ndarray,
    threshold: float,
    block_size: int = 2048,
    method: Method = "exact",
    faiss_min_rows: int = FAISS_MIN_ROWS,
    threads: int | None = None,
) -> NearDupResult:
    """Greedy keep-first near-duplicate removal at cosine ≥ ``threshold``.

    ``method`` picks how candidate pairs are found (``exact``: blocked numpy; ``faiss``; or
    ``auto``); the decisions are the same either way. Memory beyond the input: one float32
    copy of it (two with FAISS) and one block's candidate pairs. BLAS and FAISS run on
    ``threads`` threads (None: the cores available; see ise_core.intents.threads).
    """
    _check(threshold, block_size)
    x = unit_rows(vectors)
    keep = np.ones(x.shape[0], dtype=bool)
    removed: list[tuple[int, int, float]] = []
    low = np.float32(threshold - CANDIDATE_MARGIN)
    use_faiss = choose_method(method, x.shape[0], faiss_min_rows) == "faiss"
    search = _faiss_candidates if use_faiss else _blocked_candidates
    with pinned_threads(threads):
        for rows, cols in search(x, low, block_size):
            _resolve_block(x, rows, cols, keep, threshold, removed)
    return NearDupResult(keep_mask=keep, removed=removed)
