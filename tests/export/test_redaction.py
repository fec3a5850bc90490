"""No API key, environment secret or host path reaches any exported file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ise_core.export import build_redactor, export_stage
from ise_core.export.redact import SECRET_MARK, Redactor, secret_env_values
from ise_core.records import FunctionCall, Message, ToolCall
from tests.export.secret_corpus import NEWLY_CAUGHT_KINDS, secret_samples
from tests.quality.stage_outputs import (
    make_intent,
    make_trajectory,
    settings_for,
    write_intents,
    write_trajectories,
)

OPENAI_KEY = "sk-proj-PLANTEDkey0123456789abcdefXYZ"
BEARER = "eyPLANTEDbearer.token-9876543210"
ENV_SECRET = 'tok"PLANTED-env-secret-42'  # a quote, so it is JSON-escaped inside arguments


def _exported_text(out: Path) -> str:
    """Every exported file as text; Parquet through pyarrow, since its pages are compressed."""
    import pyarrow.parquet as pq

    parts = []
    for path in sorted(out.rglob("*")):
        if path.suffix in (".jsonl", ".json", ".md", ".csv"):
            parts.append(path.read_text())
        elif path.suffix == ".parquet":
            parts.append(json.dumps(pq.read_table(path).to_pylist()))
    return "\n".join(parts)


def test_planted_secrets_and_paths_are_redacted_everywhere(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    home = tmp_path_factory.mktemp("home") / "alice"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ISE_TEST_SERVICE_TOKEN", ENV_SECRET)
    settings = settings_for(
        project, export={"formats": ["openai", "sharegpt", "parquet"], "valid_fraction": 0.3}
    )
    sandbox = project.resolve() / ".cache/sandboxes/ep-1/workspace"
    intents = [make_intent(i) for i in range(6)]
    write_intents(settings, intents)
    trajectories = [make_trajectory(intent) for intent in intents]
    leaky = trajectories[0]
    arguments = json.dumps(
        {
            "command": f"curl -H 'Authorization: Bearer {BEARER}' "
            f"-d '{ENV_SECRET}' {project.resolve()}/api"
        }
    )
    leaky.messages += [
        Message(role="user", content=f"my key is {OPENAI_KEY}, notes in {home}/notes.txt"),
        Message(
            role="assistant",
            content=None,
            tool_calls=[
                ToolCall(id="leak", function=FunctionCall(name="exec", arguments=arguments))
            ],
        ),
        Message(
            role="tool",
            tool_call_id="leak",
            name="exec",
            success=False,
            content=f"error in {sandbox}/run.py; OPENAI_API_KEY={OPENAI_KEY}",
        ),
        Message(role="assistant", content=f"Saved to {project.resolve()}/data/out.md"),
    ]
    leaky.final_output = f"token {ENV_SECRET} stored under {home}"
    leaky.metadata["error"] = f'Traceback: File "{sandbox}/x.py"'
    write_trajectories(settings, trajectories)

    export_stage(settings)
    text = _exported_text(project / "data/sft")

    for planted in (
        OPENAI_KEY,
        BEARER,
        ENV_SECRET,
        json.dumps(ENV_SECRET)[1:-1],
        str(project.resolve()),
        str(home),
        str(sandbox),
    ):
        assert planted not in text, planted
    assert "[REDACTED_API_KEY]" in text and "Bearer [REDACTED_TOKEN]" in text
    stats = json.loads((project / "data/sft/stats.json").read_text())
    by_kind = stats["redactions"]["by_kind"]
    assert by_kind == {
        "environment_secret": 2,  # the exec arguments (JSON-escaped) and the final output
        "openai_token": 2,  # the user's message and the tool's output
        "authorization_header": 1,  # the bearer token in the curl command
        "host_path": 6,  # project x2, home x2, sandbox x2
    }
    assert stats["redactions"]["total"] == sum(by_kind.values())
    assert SECRET_MARK in text
    assert "<sandbox>/ep-1/workspace/run.py" in text and "~/notes.txt" in text
    assert "<project>/data/out.md" in text
    # Arguments stay valid JSON strings after redaction.
    for line in (project / "data/sft/train.jsonl").read_text().splitlines():
        for message in json.loads(line)["messages"]:
            for call in message.get("tool_calls") or []:
                json.loads(call["function"]["arguments"])


def test_paths_are_replaced_only_at_path_boundaries() -> None:
    redactor = build_redactor(project_dir="/srv/ise", environ={"HOME": "/root"})
    assert redactor.text("see /root/x and /root.") == "see ~/x and ~."
    assert (
        redactor.text("/rootfs/a /srv/ise-old /srv/ise/b") == "/rootfs/a /srv/ise-old <project>/b"
    )
    assert (
        redactor.text("/home/bob/srv/ise file:///srv/ise") == "/home/bob/srv/ise file://<project>"
    )
    # "/" as a home would match everything and mean nothing: it is ignored.
    assert build_redactor(None, environ={"HOME": "/"}).text("/usr/bin") == "/usr/bin"


def test_only_secret_looking_env_values_are_collected() -> None:
    env = {
        "MY_API_KEY": "abcdef123456",
        "DB_PASSWORD": "hunter2hunter2",
        "GITHUB_TOKEN": "short",  # too short to be worth replacing everywhere
        "FEATURE_SECRET_ENABLED": "true",
        "PATH": "/usr/bin:/bin",
        "EDITOR": "vim-with-long-name",
    }
    assert secret_env_values(env) == ["hunter2hunter2", "abcdef123456"]
    assert Redactor(secrets=["hunter2hunter2"]).text("pw=hunter2hunter2") == f"pw={SECRET_MARK}"


def test_new_secret_kinds_are_redacted_and_counted_in_stats(tmp_path: Path) -> None:
    """The kinds the earlier redactor let through, through the export stage end to end."""
    project = tmp_path / "project"
    settings = settings_for(project, export={"formats": ["openai", "sharegpt"]})
    intents = [make_intent(i) for i in range(4)]
    write_intents(settings, intents)
    trajectories = [make_trajectory(intent) for intent in intents]
    wanted = NEWLY_CAUGHT_KINDS
    planted = {}
    for sample in secret_samples():
        assert sample.secret is not None
        if sample.secret.kind in wanted and sample.secret.kind not in planted:
            planted[sample.secret.kind] = sample.secret
    leaky = trajectories[0]
    for number, (kind, secret) in enumerate(planted.items()):
        arguments = json.dumps({"path": f"{kind}.txt", "content": f"{secret.text}\n"})
        leaky.messages += [
            Message(
                role="assistant",
                content=None,
                tool_calls=[
                    ToolCall(
                        id=f"w{number}", function=FunctionCall(name="write", arguments=arguments)
                    )
                ],
            ),
            Message(
                role="tool", tool_call_id=f"w{number}", name="write", content="ok", success=True
            ),
            Message(role="tool", tool_call_id=f"r{number}", name="read", content=secret.text),
        ]
    write_trajectories(settings, trajectories)

    export_stage(settings)
    text = _exported_text(project / "data/sft")
    for kind, secret in planted.items():
        for part in secret.must_go:
            assert part not in text and json.dumps(part)[1:-1] not in text, (kind, part)
    stats = json.loads((project / "data/sft/stats.json").read_text())
    # Each secret twice (in the write's arguments and in the read's output), in every record
    # once: the counts are of the records, not of the formats written from them.
    assert stats["redactions"]["by_kind"] == {kind: 2 for kind in wanted}
    card = (project / "data/sft/README.md").read_text()
    assert "(14 replacements: authorization_header 2," in card
