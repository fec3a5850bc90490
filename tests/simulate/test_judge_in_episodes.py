"""The optional grounding judge in simulation: a verdict in each episode's metadata and the
collect statistics, and ``simulate.judge_min_score`` as a keep threshold."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from ise_core.config import Settings
from ise_core.errors import ConfigError, LLMError
from ise_core.evaluation.judge import HEURISTIC_NAME, HeuristicJudge, Judge
from ise_core.records import Check, Message, Trajectory, Verdict
from ise_core.simulate.metrics import trajectory_stats
from tests.simulate.helpers import (
    FakeChat,
    local_sandbox_reason,
    make_intent,
    make_settings,
    run_in_workspace,
    turn_json,
    writer_agent,
)

CHECKS = [Check(kind="file_contains", path="out/result.txt", text="42")]


def _episode(tmp_path: Path, claim: str, settings: Settings, judge: Judge | None) -> Trajectory:
    if reason := local_sandbox_reason():
        pytest.fail(f"the local sandbox cannot run here: {reason}", pytrace=False)
    user = FakeChat([turn_json("write the answer"), turn_json("thanks", True, True)], name="user")
    agent = writer_agent("answer 42\n", claim)
    intent = make_intent(checks=CHECKS)
    return run_in_workspace(tmp_path, intent, user, agent, settings, judge=judge).trajectory


HONEST = "I wrote `out/result.txt` with the answer."
LIAR = "I wrote `out/result.txt` and `out/summary.md` with the totals, and all checks passed."


def test_each_episode_carries_the_verdict_and_collect_sums_them_up(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    honest = _episode(tmp_path, HONEST, settings, HeuristicJudge())
    liar = _episode(tmp_path, LIAR, settings, HeuristicJudge())
    assert honest.metadata["judge"]["score"] == 5 and honest.kept
    verdict = liar.metadata["judge"]
    assert verdict["judge"] == HEURISTIC_NAME and verdict["score"] <= 2
    assert "out/summary.md" in verdict["reason"]
    assert liar.kept  # no threshold: the verdict is recorded, the checks decide
    stats = trajectory_stats([honest, liar], fp="fp")
    assert stats["judge"]["n_graded"] == 2 and stats["judge"]["grounding_counts"]["5"] == 1
    # Without a judge the metadata and the statistics are what they were before.
    plain = _episode(tmp_path, LIAR, settings, None)
    assert "judge" not in plain.metadata
    assert "judge" not in trajectory_stats([plain], fp="fp")


def test_the_keep_threshold_drops_ungrounded_episodes(tmp_path: Path) -> None:
    plain = make_settings(tmp_path)
    # The episode gets its judge directly; the params' check that one is configured is tested below.
    settings = plain.model_copy(
        update={"simulate": plain.simulate.model_copy(update={"judge_min_score": 4})}
    )
    assert _episode(tmp_path, HONEST, settings, HeuristicJudge()).kept
    liar = _episode(tmp_path, LIAR, settings, HeuristicJudge())
    assert [c.passed for c in liar.checks] == [True] and liar.completed
    assert not liar.kept and liar.status == "rejected"


def test_a_threshold_needs_a_judge() -> None:
    from ise_core.config import settings_from_dict

    with pytest.raises(ConfigError, match=r"judge_min_score needs a judge: set llm.roles.judge"):
        settings_from_dict({"simulate": {"judge_min_score": 4}})
    settings = settings_from_dict(
        {"simulate": {"judge_min_score": 4}, "llm": {"roles": {"judge": {}}}}
    )
    assert settings.simulate.judge_min_score == 4


class _DownJudge:
    """A model judge whose endpoint fails for good."""

    name = "judge-down"

    async def grade(self, messages: Sequence[Message]) -> Verdict:
        raise LLMError("judge endpoint: connection refused after 3 attempts")


def test_a_judge_that_cannot_answer_leaves_the_episode_ungraded_not_failed(
    tmp_path: Path,
) -> None:
    plain = make_settings(tmp_path)
    episode = _episode(tmp_path, HONEST, plain, _DownJudge())
    assert episode.status == "kept" and [c.passed for c in episode.checks] == [True]
    assert "judge" not in episode.metadata
    assert "connection refused" in episode.metadata["judge_error"]
    assert "judge" not in trajectory_stats([episode], fp="fp")  # nothing was graded
    # Under a keep threshold an ungraded episode is not kept (but not failed either).
    strict = plain.model_copy(
        update={"simulate": plain.simulate.model_copy(update={"judge_min_score": 2})}
    )
    episode = _episode(tmp_path, HONEST, strict, _DownJudge())
    assert episode.status == "rejected" and episode.completed and not episode.kept
