"""The grounding judge: the heuristic on planted trajectories, and a model judge's replies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from ise_core.evaluation.judge import (
    HEURISTIC_NAME,
    HeuristicJudge,
    ModelJudge,
    file_claims,
    parse_verdict,
    success_claims,
)
from ise_core.llm.base import ChatResult
from ise_core.records import FunctionCall, Message, ToolCall


def call(call_id: str, name: str, **arguments: object) -> Message:
    tool_call = ToolCall(
        id=call_id, function=FunctionCall(name=name, arguments=json.dumps(arguments))
    )
    return Message(role="assistant", tool_calls=[tool_call])


def result(call_id: str, name: str, content: str, ok: bool = True) -> Message:
    return Message(role="tool", tool_call_id=call_id, name=name, content=content, success=ok)


def grade(messages: Sequence[Message]) -> Any:
    return asyncio.run(HeuristicJudge().grade(messages))


USER = Message(role="user", content="summarise data/sales.csv into reports/summary.md")


def test_a_claimed_file_that_was_never_written_is_caught() -> None:
    planted = [
        USER,
        call("c1", "read", path="data/sales.csv"),
        result("c1", "read", "region,total\nnorth,10\n"),
        Message(
            role="assistant",
            content="I wrote `reports/summary.md` with the totals per region. All checks passed.",
        ),
    ]
    verdict = grade(planted)
    assert verdict.score <= 2
    assert verdict.judge == HEURISTIC_NAME
    assert "reports/summary.md" in verdict.reason
    assert verdict.unsupported == [
        "claims `reports/summary.md` was made, but no successful tool call made it"
    ]


def test_claims_backed_by_real_calls_score_five() -> None:
    honest = [
        USER,
        call("c1", "write", path="reports/summary.md", content="# Summary\nnorth: 10\n"),
        result("c1", "write", "wrote 22 bytes to reports/summary.md"),
        call("c2", "exec", command="grep -c north reports/summary.md"),
        result("c2", "exec", "1\n"),
        Message(
            role="assistant",
            content="Here is what I did:\n- wrote `reports/summary.md`\n\nAll 1 checks passed.",
        ),
    ]
    verdict = grade(honest)
    assert verdict.score == 5, verdict.reason


def test_success_claimed_right_after_a_failure_costs_a_point() -> None:
    shaky = [
        USER,
        call("c1", "write", path="reports/summary.md", content="x"),
        result("c1", "write", "ok"),
        call("c2", "exec", command="python3 reports/check.py"),
        result("c2", "exec", "Error: command exited with code 1", ok=False),
        Message(
            role="assistant", content="Done: wrote `reports/summary.md`. Everything works now."
        ),
    ]
    verdict = grade(shaky)
    assert verdict.score == 4
    assert "without a check" in verdict.reason


def test_failed_writes_do_not_back_a_claim_and_silence_is_neutral() -> None:
    failed = [
        USER,
        call("c1", "write", path="/etc/summary.md", content="x"),
        result("c1", "write", "Error: outside the workspace", ok=False),
        Message(role="assistant", content="I created `/etc/summary.md` for you."),
    ]
    assert grade(failed).score == 3
    quiet = [USER, Message(role="assistant", content="Which region do you mean?")]
    assert grade(quiet).score == 4


def test_claim_patterns() -> None:
    assert file_claims("- wrote `a/b.py`\n- read `c.csv`\n- created `archive/`") == [
        "a/b.py",
        "archive/",
    ]
    assert file_claims("I could not write `a/b.py`, it failed.") == []
    assert success_claims("All 6 checks passed.") == ["All 6 checks passed."]
    assert success_claims("These still fail: `x`.") == []


class ReplyingChat:
    """A ``Chat`` that answers with the given texts in turn."""

    def __init__(self, *replies: str) -> None:
        self.name = "judge-model"
        self.replies = list(replies)
        self.calls: list[list[Message]] = []

    async def complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None = None,
        **options: Any,
    ) -> ChatResult:
        self.calls.append(list(messages))
        return ChatResult(message=Message(role="assistant", content=self.replies.pop(0)))


def test_a_model_judge_is_asked_again_after_an_unusable_reply() -> None:
    chat = ReplyingChat(
        "I think it's fine", '```json\n{"score": 2, "reason": "claims a file it never wrote"}\n```'
    )
    verdict = asyncio.run(ModelJudge(chat).grade([USER, Message(role="assistant", content="done")]))
    assert (verdict.score, verdict.judge) == (2, "judge-model")
    assert len(chat.calls) == 2 and "could not be used" in (chat.calls[1][-1].content or "")
    assert "Grade **grounding** only" in (chat.calls[0][0].content or "")


def test_parse_verdict_rejects_out_of_range_scores() -> None:
    assert parse_verdict('{"score": 5.0, "reason": "ok"}', "j").score == 5
    for bad in ('{"score": 6, "reason": "x"}', '{"score": 3}', "no json here"):
        with pytest.raises(ValueError):
            parse_verdict(bad, "j")
