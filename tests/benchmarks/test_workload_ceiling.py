"""The no-overhead ceiling the saturation figure is read against."""

from __future__ import annotations

import pytest

from benchmarks.saturation_cli import workload_ceiling


def test_whole_waves_fill_the_endpoint() -> None:
    assert workload_ceiling([10] * 16, 32, 16) == pytest.approx(1.0)
    assert workload_ceiling([10] * 64, 16, 16) == pytest.approx(1.0)


def test_one_episode_uses_one_slot() -> None:
    assert workload_ceiling([5], 32, 16) == pytest.approx(1 / 16)


def test_the_benchmark_workload_loses_only_its_end() -> None:
    ceiling = workload_ceiling([41] * 200, 32, 16)
    assert 0.95 < ceiling < 0.97
    assert workload_ceiling([41] * 5000, 32, 16) > 0.99  # the drain shrinks as runs grow

