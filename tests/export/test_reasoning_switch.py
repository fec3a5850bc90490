"""export.reasoning: keep (the default) or drop the assistant's reasoning in every format."""

from __future__ import annotations

import pytest

from ise_core.config import settings_from_dict
from ise_core.errors import ConfigError
from ise_core.export.formats import to_openai_record, to_sharegpt_record
from ise_core.records import Message, Trajectory


def trajectory() -> Trajectory:
    return Trajectory(
        intent_id="it-1",
        session_id="it-1",
        status="kept",
        stop_reason="completed",
        completed=True,
        kept=True,
        messages=[
            Message(role="system", content="s"),
            Message(role="user", content="What is 12 times 3?"),
            Message(role="assistant", content="36.", reasoning_content="12 x 3 = 36"),
        ],
    )


def test_reasoning_is_kept_by_default_and_dropped_on_request() -> None:
    kept = to_openai_record(trajectory())
    assert kept["messages"][2]["reasoning_content"] == "12 x 3 = 36"
    dropped = to_openai_record(trajectory(), reasoning=False)
    assert "reasoning_content" not in dropped["messages"][2]
    assert dropped["messages"][2]["content"] == "36."
    assert "12 x 3" not in str(to_sharegpt_record(dropped))


def test_the_switch_is_validated() -> None:
    assert settings_from_dict({}).export.reasoning == "keep"
    assert settings_from_dict({"export": {"reasoning": "drop"}}).export.reasoning == "drop"
    with pytest.raises(ConfigError, match=r"export\.reasoning"):
        settings_from_dict({"export": {"reasoning": "maybe"}})
