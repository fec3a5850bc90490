"""The eval split made by ``ise intents``: off by default, held out or drawn apart, and never
in the training data, by id or by near-duplicate request (the dedup threshold)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ise_core.catalog import Catalog
from ise_core.config import Settings, settings_from_dict
from ise_core.evaluation.split import held_out_ids
from ise_core.evaluation.tasks import load_tasks
from ise_core.intents.embed import embed_texts
from ise_core.intents.stage import intents_stage
from ise_core.llm.base import ChatResult
from ise_core.records import Intent, Message, read_jsonl
from ise_core.scripted import ScriptedChat
from tests.fakes.params import PERMISSIVE_GATES
from tests.simulate.helpers import REPO

MINILM = "all-MiniLM-L6-v2"


def project(tmp_path: Path, **eval_block: Any) -> Settings:
    data = {
        "seed": 7,
        "intents": {"count": 8, "taxonomy": str(REPO / "ise_core" / "taxonomy")},
        "embedding": {"model": MINILM, "batch_size": 16, "model_dir": str(tmp_path / "models")},
        "workspace": {
            "backend": "local",
            "template": str(REPO / "ise_core" / "workspace" / "template"),
            "root": str(tmp_path / "sandboxes"),
        },
        "simulate": {"concurrency": 2},
        "gates": PERMISSIVE_GATES,
        "eval": eval_block,
    }
    return settings_from_dict(data, "test params", base_dir=tmp_path)


class CopyingWriter:
    """The scripted writer, except that two eval samples copy a training request: one word
    for word and one with a few words added (a near duplicate)."""

    def __init__(self, training: Sequence[Intent]) -> None:
        self.inner = ScriptedChat("writer", seed=7)
        self.name = self.inner.name  # recorded in each intent: the training lines stay equal
        self.copies = {
            "ev-000000-": training[0].request,
            "ev-000001-": training[1].request + " Thanks a lot.",
        }

    async def complete(
        self, messages: Sequence[Message], tools: Any = None, **options: Any
    ) -> ChatResult:
        result = await self.inner.complete(messages, tools, **options)
        asked = messages[-1].content or ""
        for marker, request in self.copies.items():
            if marker in asked:
                spec = json.loads(result.message.content or "{}")
                spec["request"] = request
                return result.model_copy(
                    update={"message": Message(role="assistant", content=json.dumps(spec))}
                )
        return result


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def intents_file(settings: Settings) -> Path:
    return settings.path("data/intents/intents.jsonl")


def test_held_out_ids_are_stable_and_sized() -> None:
    ids = [f"it-{i:06d}" for i in range(200)]
    chosen = held_out_ids(ids, 0.1, seed=7)
    assert len(chosen) == 20
    assert held_out_ids(list(reversed(ids)), 0.1, seed=7) == chosen
    # growing the set keeps most of the earlier choice (chosen by hash, not by position)
    grown = held_out_ids([*ids, *(f"it-{i:06d}" for i in range(200, 400))], 0.1, seed=7)
    assert len(chosen & grown) >= 10
    assert held_out_ids(ids[:3], 0.1, seed=7) and not held_out_ids(ids, 0.0, seed=7)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, list[Intent]]:
    settings = project(tmp_path_factory.mktemp("no-split"))
    intents_stage(settings, log=lambda _: None)
    return settings, read_jsonl(intents_file(settings), Intent)


def test_no_split_by_default(baseline: tuple[Settings, list[Intent]]) -> None:
    settings, _ = baseline
    assert not Catalog.of(settings).eval_tasks.exists()
    stats = json.loads(settings.path("data/intents/stats.json").read_text())
    assert "eval_split" not in stats


def test_a_held_out_share_leaves_intents_jsonl(
    baseline: tuple[Settings, list[Intent]], tmp_path: Path
) -> None:
    _, training = baseline
    settings = project(tmp_path, fraction=0.25)
    stats = intents_stage(settings, log=lambda _: None)
    kept = read_jsonl(intents_file(settings), Intent)
    tasks = load_tasks(Catalog.of(settings).eval_tasks)
    assert len(tasks) == 2 and len(kept) == len(training) - 2
    assert {t.id for t in tasks} | {i.id for i in kept} == {i.id for i in training}
    assert not {t.id for t in tasks} & {i.id for i in kept}
    assert stats["eval_split"]["n_eval"] == 2 and stats["n_unique"] == len(kept)
    assert stats["unique_share"] == 1.0  # de-duplication, not the hold-out


def test_extra_eval_intents_leave_the_training_intents_byte_identical(
    baseline: tuple[Settings, list[Intent]], tmp_path: Path
) -> None:
    base_settings, training = baseline
    settings = project(tmp_path, count=6, seed=11)
    stats = intents_stage(settings, writer=CopyingWriter(training), log=lambda _: None)
    assert sha(intents_file(settings)) == sha(intents_file(base_settings))
    tasks = load_tasks(Catalog.of(settings).eval_tasks)
    ids = [t.id for t in tasks]
    assert all(i.startswith("ev-") for i in ids)
    # the exact and the near copy of a training request are gone, the other four are kept
    assert not any(i.startswith(("ev-000000-", "ev-000001-")) for i in ids)
    assert len(tasks) == 4 and stats["eval_split"]["n_duplicates"] == 2
    assert_disjoint([t.intent for t in tasks], training, settings)


def assert_disjoint(held: Sequence[Intent], training: Sequence[Intent], settings: Settings) -> None:
    """No shared id and no pair at or above the dedup threshold (the same cosine as dedup)."""
    assert not {i.id for i in held} & {i.id for i in training}
    vectors = embed_texts(
        [i.request for i in [*held, *training]],
        MINILM,
        batch_size=16,
        cache_dir=settings.path(".cache/embeddings"),
        model_dir=settings.path("models"),
    ).vectors
    similarity = vectors[: len(held)] @ vectors[len(held) :].T
    assert float(np.max(similarity)) < settings.dedup.threshold


def test_eval_tasks_never_reach_train_or_valid(tmp_path: Path) -> None:
    """The whole pipeline with both splits: nothing held out is simulated or exported."""
    from ise_core.export import export_stage
    from ise_core.simulate.stage import collect_stage, simulate_stage

    for mode, block in (("fraction", {"fraction": 0.25}), ("count", {"count": 3})):
        settings = project(tmp_path / mode, **block)
        settings.export.valid_fraction = 0.25
        intents_stage(settings, log=lambda _: None)
        simulate_stage(settings, progress=False)
        collect_stage(settings)
        export_stage(settings)
        tasks = load_tasks(Catalog.of(settings).eval_tasks)
        assert tasks, mode
        rows = []
        for split in ("train", "valid"):
            path = settings.path(f"data/sft/{split}.jsonl")
            rows += [json.loads(line) for line in path.read_text().splitlines() if line]
        exported = {row["metadata"]["intent_id"] for row in rows}
        assert exported and not exported & {t.id for t in tasks}, mode
        episodes = {p.stem for p in settings.path("data/trajectories/episodes").glob("*.json")}
        assert not episodes & {t.id for t in tasks}, mode
        training = [i for i in read_jsonl(intents_file(settings), Intent) if i.id in exported]
        assert_disjoint([t.intent for t in tasks], training, settings)
