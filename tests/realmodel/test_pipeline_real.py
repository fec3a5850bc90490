"""The Done-when run: ``ise run`` on 3 intents, user and agent on the real local model server.

The writer stays scripted (its specs carry the executable checks); the user simulator and the
agent run on llama-server with params.local.yaml's settings (prompted tool calling, constrained
output), and the conversation opens with each intent's written request
(``simulate.first_turn: request``). Every episode must end with a recorded stop reason, at least
one agent tool call must run in the sandbox, and nothing may crash. Episodes are kept short
(2 user turns of at most 3 agent steps) so the test takes minutes on 2 shared cores: SmolLM2 is
far too small for its episodes to be kept, and that is not what this test is about.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ise_core.llm.local_server import LocalModelServer
from ise_core.records import Message, StopReason
from ise_core.simulate.agent_loop import ran_in_workspace
from tests.realmodel.project import REPO, local_model_params

# The stop reasons of an episode that ran to an end of its own; llm_error, workspace_error and
# error mean something failed.
RECORDED_STOP_REASONS = {
    StopReason.COMPLETED, StopReason.EMPTY_QUERY, StopReason.MAX_TURNS, StopReason.TOKEN_BUDGET,
    StopReason.TIME_LIMIT, StopReason.USER_ERROR, StopReason.ROLE_DRIFT,
    StopReason.CONTEXT_OVERFLOW,
}  # fmt: skip


def test_ise_run_on_three_intents_with_the_real_model(
    model_server: LocalModelServer, tmp_path: Path
) -> None:
    short = {"max_turns": 2, "max_steps_per_turn": 3, "episode_time_limit_s": 240.0}
    params = local_model_params(tmp_path, model_server, intents=3, concurrency=2, simulate=short)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "ise_core.cli", "run", "--params", str(params)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    episodes = [
        json.loads(path.read_text())
        for path in sorted((tmp_path / "data/trajectories/episodes").glob("*.json"))
    ]
    assert len(episodes) == 3
    for episode in episodes:
        assert episode["status"] in ("kept", "rejected"), episode["metadata"].get("error")
        assert episode["stop_reason"] in RECORDED_STOP_REASONS
        assert episode["metadata"]["llm"]["agent"] == f"openai:agent:{model_server.model_name}"
        # The opening user turn is the intent's written request, not a generated one.
        assert episode["metadata"]["user_simulator"]["turns"][0]["reason"] == (
            "the intent's written request"
        )
    tool_messages = [
        Message.model_validate(m) for e in episodes for m in e["messages"] if m["role"] == "tool"
    ]
    assert any(ran_in_workspace(m) for m in tool_messages), tool_messages[:3]
    # SmolLM2 writes its calls as text (prompted mode): they are recovered, stored as OpenAI
    # tool_calls and counted, in each episode and in the stage's stats.
    recovered = sum(e["metadata"]["text_tool_calls"] for e in episodes)
    assert recovered > 0
    stats = json.loads((tmp_path / "data/trajectories/stats.json").read_text())
    assert stats["text_tool_calls"]["total"] == recovered
    assert sum(stats["stop_reasons"].values()) == 3
    assert (tmp_path / "data/sft/train.jsonl").exists()
