"""The bad-input corpus (bad_inputs/cases.yaml): a clear error or a counted rejection, never a
traceback and never a partial output file."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.reliability.project import REPO, make_project, run_ise
from tests.simulate.helpers import local_sandbox_reason

CORPUS = Path(__file__).with_name("bad_inputs")
CASES: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "cases.yaml").read_text("utf-8"))
VALID_INTENTS = CORPUS / "valid" / "intents.jsonl"
FILE_KINDS = ("params", "taxonomy", "intents", "episodes", "trajectories")


def _cases(kind: str) -> list[Any]:
    return [
        pytest.param(name, expected, id=f"{kind}/{name}") for name, expected in CASES[kind].items()
    ]


def test_the_corpus_is_complete() -> None:
    """Every file in the corpus has an expectation and every expectation a file."""
    for kind in (*FILE_KINDS, "responses"):
        on_disk = sorted(p.name for p in (CORPUS / kind).iterdir())
        assert on_disk == sorted(CASES[kind]), kind
    assert sum(len(CASES[kind]) for kind in CASES) >= 25


def _fingerprint(folder: Path) -> dict[str, str]:
    """relative path → content hash of every file under ``folder``."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _setup(kind: str, name: str, project: Path) -> str:
    """Put the bad input in place; returns the `ise` command that reads it."""
    bad = CORPUS / kind / name
    if kind == "params":
        project.mkdir(parents=True)
        shutil.copy(bad, project / "params.yaml")
        return "collect"
    if kind == "taxonomy":
        taxonomy = project / "taxonomy"
        shutil.copytree(REPO / "ise_core" / "taxonomy", taxonomy)
        for replacement in bad.iterdir():
            shutil.copy(replacement, taxonomy / replacement.name)
        make_project(project, intents={"taxonomy": str(taxonomy)})
        return "intents"
    make_project(project)
    intents = project / "data" / "intents"
    intents.mkdir(parents=True)
    if kind == "intents":
        shutil.copy(bad, intents / "intents.jsonl")
        return "simulate"
    shutil.copy(VALID_INTENTS, intents / "intents.jsonl")
    if kind == "episodes":
        shutil.copytree(bad, project / "data" / "trajectories" / "episodes")
        return "collect"
    (project / "data" / "trajectories").mkdir(parents=True)
    shutil.copy(bad, project / "data" / "trajectories" / "trajectories.jsonl")
    return "export"


def _check_error(
    kind: str, expected: list[str], project: Path, code: int, stdout: str, stderr: str
) -> None:
    assert code == 2, (code, stderr[-3000:])
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    assert stderr.startswith("ise: error: "), stderr
    for fragment in expected:
        assert fragment in stderr, (fragment, stderr)
    if kind == "params":
        assert str(project / "params.yaml") in stderr


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        pytest.param(kind, name, expected, id=f"{kind}/{name}")
        for kind in FILE_KINDS
        for name, expected in CASES[kind].items()
    ],
)
def test_bad_file_is_a_clear_error(
    kind: str, name: str, expected: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the CLI's entry point in this process (each case costs milliseconds)."""
    from ise_core.cli import main

    project = tmp_path / "project"
    command = _setup(kind, name, project)
    before = _fingerprint(project)
    code = main([command, "--params", str(project / "params.yaml")])
    out, err = capsys.readouterr()
    _check_error(kind, expected, project, code, out, err)
    # Nothing written, nothing changed (and no temp file left behind).
    assert _fingerprint(project) == before


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_the_ise_process_says_the_same(kind: str, tmp_path: Path) -> None:
    """The first case of each kind through a real `ise` process: exit 2, no traceback."""
    name, expected = next(iter(CASES[kind].items()))
    project = tmp_path / "project"
    command = _setup(kind, name, project)
    before = _fingerprint(project)
    done = run_ise(project, command, timeout=120)
    _check_error(kind, expected, project, done.returncode, done.stdout, done.stderr)
    assert _fingerprint(project) == before


# --- model responses ----------------------------------------------------------------------


def _responder(case: dict[str, Any]) -> Any:
    from tests.fakes.openai_server import Reply, completion, tool_call

    def respond(request: dict[str, Any]) -> Any:
        if "status" in case:
            return Reply(case["status"], case["body"])
        if "body" in case:
            return case["body"]
        calls = [
            tool_call(call["name"], call["arguments"], f"call_{i}")
            for i, call in enumerate(case.get("tool_calls") or [])
        ]
        return completion(request, content=case.get("content"), tool_calls=calls or None)

    return respond


def _settings(tmp_path: Path, role: str, base_url: str) -> Any:
    from ise_core.config import settings_from_dict

    data = {
        "seed": 7,
        "intents": {"count": 2, "taxonomy": str(REPO / "ise_core" / "taxonomy")},
        "llm": {
            "provider": "scripted",
            "cache": "off",
            "max_retries": 0,
            "timeout_s": 10,
            "roles": {role: {"provider": "openai", "base_url": base_url, "model": "fake-model"}},
        },
        "workspace": {
            "backend": "local",
            "template": str(REPO / "ise_core" / "workspace" / "template"),
            "root": str(tmp_path / "sandboxes"),
        },
        "simulate": {"max_turns": 3, "max_steps_per_turn": 2, "concurrency": 1},
    }
    return settings_from_dict(data, "response test params", base_dir=tmp_path)


def _metadata_value(metadata: dict[str, Any], dotted: str) -> Any:
    value: Any = metadata
    for part in dotted.split("."):
        value = value[part]
    return value


@pytest.mark.parametrize(("name", "expected"), _cases("responses"))
def test_bad_model_response_is_contained(
    name: str, expected: dict[str, Any], tmp_path: Path
) -> None:
    from tests.fakes.openai_server import FakeOpenAIServer

    case = json.loads((CORPUS / "responses" / name).read_text("utf-8"))
    role = case["role"]
    with FakeOpenAIServer(_responder(case)) as server:
        settings = _settings(tmp_path, role, server.base_url)
        if role == "writer":
            _check_writer(settings, expected)
        else:
            _check_episode(settings, expected)
        assert server.requests >= 1


def _check_writer(settings: Any, expected: dict[str, Any]) -> None:
    from ise_core.intents.render import render_intents
    from ise_core.intents.sample import sample_intents
    from ise_core.intents.taxonomy import load_taxonomy
    from ise_core.llm.factory import build_chat

    samples = sample_intents(
        load_taxonomy(settings.path(settings.intents.taxonomy)), settings.intents, settings.seed
    )
    writer = build_chat("writer", settings.llm, base_dir=settings.base_dir, seed=settings.seed)
    outcome = asyncio.run(render_intents(samples, writer, max_attempts=2, concurrency=2))
    assert outcome.intents == []
    assert len(outcome.rejected) == expected["rejected"]
    for rejection in outcome.rejected:
        assert str(rejection.model_dump()).strip()  # each says why


def _check_episode(settings: Any, expected: dict[str, Any]) -> None:
    if local_sandbox_reason() is not None:
        pytest.skip("episodes need the local sandbox")
    from ise_core.catalog import EpisodeStore
    from ise_core.records import Intent, read_jsonl
    from ise_core.simulate.stage import collect_stage, simulate_stage
    from tests.simulate.helpers import write_intents

    intents = read_jsonl(VALID_INTENTS, Intent)
    write_intents(settings, intents)
    report = simulate_stage(settings, progress=False)
    assert report.n_run == 1
    episode = json.loads(EpisodeStore.of(settings).path(intents[0].id).read_text("utf-8"))
    assert episode["status"] == expected["status"], episode["stop_reason"]
    if "stop_reason" in expected:
        assert episode["stop_reason"] == expected["stop_reason"]
    if "counted" in expected:
        counted = _metadata_value(episode["metadata"], expected["counted"])
        assert (len(counted) if isinstance(counted, list) else counted) > 0
    if expected["status"] == "failed":
        assert episode["metadata"]["error"]  # says what went wrong
    stats = collect_stage(settings)
    assert stats["stop_reasons"] == {episode["stop_reason"]: 1}
    assert stats["n_" + expected["status"]] == 1
