"""The soak in CI: fewer episodes than `make soak` (500), the same checks.

After the baseline episodes, the process's open files, descendant processes and memory must
stay within 10% of their level; throughput must not sag as episodes pile up.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from tests.reliability.soak import run_soak
from tests.simulate.helpers import local_sandbox_reason

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox"),
]

EPISODES, CONCURRENCY, BATCH, BASELINE = 80, 16, 20, 40


def test_soak_leaks_nothing_and_keeps_its_pace(tmp_path: Path) -> None:
    report = run_soak(tmp_path, episodes=EPISODES, concurrency=CONCURRENCY, batch_size=BATCH)
    assert report.episodes >= EPISODES * 0.9  # a few samples may be rejected by the writer
    assert sum(b.episodes for b in report.batches) == report.episodes
    assert sum(b.failed for b in report.batches) == 0

    growth = report.growth(BASELINE)
    assert growth["fds"] <= 1.10, report.samples
    assert growth["rss"] <= 1.10, report.samples
    assert growth["objects"] <= 1.10, report.samples
    # Session-scoped services of other tests (e.g. a test dockerd) may be children too: what
    # matters is that episodes leave none of their own behind.
    assert report.samples[-1].children <= report.at(BASELINE).children
    # While a batch runs: bounded by its concurrency, not by how many ran before.
    assert max(b.peak_children for b in report.batches) <= CONCURRENCY * 8
    peaks = [b.peak_fds for b in report.batches]
    assert max(peaks) <= 2 * min(peaks) + 16, peaks

    pace = report.throughput()
    print(f"\nsoak: growth since {BASELINE} episodes {growth}; episodes/s per batch {pace}")
    assert min(pace) >= 0.5 * statistics.median(pace), pace
    second_half = statistics.mean(pace[len(pace) // 2 :])
    assert second_half >= 0.7 * statistics.mean(pace[: len(pace) // 2]), pace
