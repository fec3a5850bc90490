"""Grow-mode refresh periods for the DAG tests: the params, each period's batch, and the checks
that a project's periods added exactly their batches and built the dataset that
``ise refresh --period`` builds over the same periods in order (scripted LLM)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from tests.dags.airflow_env import BIN, subprocess_env, tiny_params

BASE, PER_PERIOD = 2, 2
# @weekly from a Sunday: the period starting START + k weeks has index k.
START = "2026-01-04"
REFRESH: dict[str, Any] = {
    "intents": {"count": BASE},
    "refresh": {"mode": "grow", "intents_per_period": PER_PERIOD},
    "airflow": {"schedule": "@weekly", "start_date": START, "retries": 0, "retry_delay_s": 1},
}
RUN_RECORDS = {"timing.json"}
# What a period's history line says it did (the rest is timing and cost).
HISTORY_FACTS = ("period", "index", "mode", "intents_added", "episodes", "episodes_kept", "batch")


def period_index(period: str) -> int:
    """k of a weekly period: whole weeks from START (counted here, not by ise_core)."""
    return (date.fromisoformat(period) - date.fromisoformat(START)).days // 7


def batch(period: str) -> list[int]:
    """The sample indices the period adds: [BASE + k·n, BASE + (k+1)·n)."""
    first = BASE + period_index(period) * PER_PERIOD
    return list(range(first, first + PER_PERIOD))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file the runs produced, without run records (how long it took)."""
    files: dict[str, bytes] = {}
    for path in sorted((root / "data").rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and path.name not in RUN_RECORDS and "/timing/" not in relative:
            files[relative] = path.read_bytes()
    return files


def lines(root: Path, name: str) -> list[str]:
    return (root / name).read_text(encoding="utf-8").splitlines()


def check_added_exactly_its_batch(root: Path, before: Mapping[str, bytes], period: str) -> None:
    """The period's intents are its batch; every record an earlier period wrote is unchanged."""
    intents = [json.loads(line) for line in lines(root, "data/intents/intents.jsonl")]
    mine = sorted(row["index"] for row in intents if row.get("period") == period)
    assert mine == batch(period), (period, mine)
    old_intents = before.get("data/intents/intents.jsonl", b"").decode().splitlines()
    now = lines(root, "data/intents/intents.jsonl")
    assert set(old_intents) <= set(now), "an earlier intent record changed"
    # The first period to run also builds the base (intents.count, of no period).
    added = PER_PERIOD if old_intents else PER_PERIOD + BASE
    assert len(now) == len(old_intents) + added
    if not old_intents:
        assert sorted(row["index"] for row in intents if "period" not in row) == list(range(BASE))

    # One episode per new intent, stamped with the period; earlier episodes untouched.
    episodes = {
        name: data
        for name, data in snapshot(root).items()
        if name.startswith("data/trajectories/episodes/")
    }
    new = {name: data for name, data in episodes.items() if name not in before}
    assert len(new) == added, sorted(new)
    periods = [json.loads(data)["metadata"].get("period") for data in new.values()]
    assert sorted(periods, key=str) == sorted(
        [period] * PER_PERIOD + [None] * (added - PER_PERIOD), key=str
    )
    assert all(before[name] == data for name, data in episodes.items() if name in before)
    old_kept = before.get("data/trajectories/trajectories.jsonl", b"").decode().splitlines()
    assert set(old_kept) <= set(lines(root, "data/trajectories/trajectories.jsonl"))


@contextmanager
def built_in_order(project: Path, periods: Sequence[str]) -> Iterator[Callable[[], None]]:
    """``ise refresh --period`` over ``periods`` in order, in another project, started in the
    background (it runs while the test drives Airflow); yields the function that waits for it
    and checks it succeeded. Stopped on the way out if still running."""
    params = tiny_params(project, **REFRESH)
    steps = " && ".join(
        f"{BIN / 'ise'} refresh --params {params} --period {period} --no-lineage"
        for period in periods
    )
    process = subprocess.Popen(
        ["bash", "-c", steps],
        cwd=project,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def wait(timeout: float = 900) -> None:
        log, _ = process.communicate(timeout=timeout)
        assert process.returncode == 0, log[-4000:]

    try:
        yield wait
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def check_same_dataset(built: Path, reference: Path) -> None:
    """``built`` holds the intents, trajectories, SFT files and history facts of ``reference``
    (the periods run in order by ``built_in_order``)."""
    mine, theirs = snapshot(built), snapshot(reference)
    compared = [
        name
        for name in theirs
        if name.startswith(("data/intents/", "data/trajectories/", "data/sft/"))
    ]
    assert "data/sft/train.jsonl" in compared
    assert [name for name in compared if mine.get(name) != theirs[name]] == []
    history = [json.loads(line) for line in lines(built, "data/refresh/history.jsonl")]
    expected = [json.loads(line) for line in lines(reference, "data/refresh/history.jsonl")]
    assert [[h.get(k) for k in HISTORY_FACTS] for h in history] == [
        [h.get(k) for k in HISTORY_FACTS] for h in expected
    ]
