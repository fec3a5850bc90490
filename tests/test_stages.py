"""The stage table: every entry resolves, and its fingerprint hashes exactly what it says."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from ise_core.catalog import Catalog
from ise_core.config import Settings, settings_from_dict
from ise_core.errors import ConfigError
from ise_core.stages import (
    GATES,
    MEASUREMENTS,
    STAGE_NAMES,
    STAGES,
    StageResult,
    _resolve,
    gate_of,
    measurement,
    stage,
)


def test_every_entry_point_and_gate_resolves() -> None:
    assert len(set(STAGE_NAMES)) == len(STAGES)
    for entry in (*STAGES, *MEASUREMENTS):
        run = _resolve(entry.run)
        assert list(inspect.signature(run).parameters) == ["settings", "options"], entry.name
        assert inspect.signature(run).return_annotation in ("StageResult", StageResult)
        files = Catalog.of(Settings(base_dir=Path("/p")))
        assert all(files.path(name) for name in entry.outputs)
        if entry.gate is not None:
            assert callable(_resolve(entry.gate.check))
    assert list(GATES) == ["intents", "trajectories", "sft", "eval"]


def test_unknown_names_say_what_exists() -> None:
    with pytest.raises(ConfigError, match="expected one of intents, simulate, collect, export"):
        stage("clean")
    with pytest.raises(ConfigError, match="expected one of intents, trajectories, sft, eval"):
        gate_of("export")
    with pytest.raises(ConfigError, match=r"measurement 'simulate' \(expected one of eval\)"):
        measurement("simulate")


def _settings(**blocks: object) -> Settings:
    return settings_from_dict(dict(blocks))


def test_scripted_shape_counts_only_when_the_program_plays_a_role() -> None:
    simulate = stage("simulate")
    shape = {"scripted": {"mistake_rate": 0.5}}
    # The scripted user and agent: their shape decides the episodes.
    assert simulate.fingerprint(_settings()) != simulate.fingerprint(_settings(simulate=shape))
    # A model plays both roles: the scripted shape says nothing about its episodes.
    model = {"provider": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"}
    assert simulate.fingerprint(_settings(llm=model)) == simulate.fingerprint(
        _settings(llm=model, simulate=shape)
    )
    assert "simulate.scripted" not in simulate.keys(_settings(llm=model))
    # One scripted role is enough for the shape to count.
    mixed = {**model, "roles": {"user": {"provider": "scripted"}}}
    assert simulate.fingerprint(_settings(llm=mixed)) != simulate.fingerprint(
        _settings(llm=mixed, simulate=shape)
    )


def test_intents_fingerprint_follows_the_writers_resolved_settings() -> None:
    intents = stage("intents")
    base = intents.fingerprint(_settings())
    assert intents.fingerprint(_settings(llm={"roles": {"writer": {"temperature": 0.1}}})) != base
    # Only the writer role counts for stage 1, and speed settings never do.
    assert intents.fingerprint(_settings(llm={"roles": {"agent": {"temperature": 0.1}}})) == base
    assert intents.fingerprint(_settings(llm={"max_concurrency": 2})) == base


def test_intents_fingerprint_counts_the_vectors_not_how_fast_they_are_made() -> None:
    intents = stage("intents")
    base = intents.fingerprint(_settings())
    for speed in ({"shard_size": 7}, {"threads": 1}, {"batch_size": 8}, {"cache_dir": "c"}):
        assert intents.fingerprint(_settings(embedding=speed)) == base, speed
    for vectors in ({"backend": "torch"}, {"model": "all-MiniLM-L6-v2"}):
        assert intents.fingerprint(_settings(embedding=vectors)) != base, vectors
