from __future__ import annotations

import pytest

from ise_core.simulate.drift import detect_role_drift, drift_rules


@pytest.mark.parametrize(
    ("message", "rule"),
    [
        ("How can I help you with the report today?", "offers_help"),
        ("Is there anything else I can help with?", "offers_help"),
        ("Could you specify which columns you need?", "asks_what_user_wants"),
        ("Would you like me to add a chart as well?", "asks_what_user_wants"),
        ("I'll run the tests now and report back.", "narrates_tool_use"),
        ("Let me check the log file first.", "narrates_tool_use"),
        ("I have created scripts/report.py for you.", "narrates_tool_use"),
        ("Here is the updated script with the fix.", "narrates_tool_use"),
        ('{"command": "ls -la"}', "narrates_tool_use"),
        ("Sure, here is what you asked for.", "answers_own_request"),
        ("Certainly! The totals are below.", "answers_own_request"),
        (
            "Use this:\n```python\nimport csv\nrows = []\nfor r in rows:\n    print(r)\n```",
            "answers_own_request",
        ),
    ],
)
def test_assistant_speak_is_flagged_with_its_rule(message: str, rule: str) -> None:
    hits = detect_role_drift(message)
    assert rule in [hit.rule for hit in hits]
    assert all(hit.rule in [*drift_rules(), "answers_own_request"] for hit in hits)


@pytest.mark.parametrize(
    "message",
    [
        "Could you double-check that the script still runs?",
        "please run it again, I saw an error",
        "Let me know when it's done.",
        "Also, the report goes in reports/q3.md.",
        "I'll run `python3 -m json.tool out/list.json` myself, so it has to pass.",
        "I saw `SyntaxError: expected ':'` in your reply. Make sure it's fixed.",
        "Thanks, that's all I needed.",
        "```\nTraceback: boom\n```",  # a short pasted error is fine
    ],
)
def test_a_person_asking_for_things_is_not_flagged(message: str) -> None:
    assert detect_role_drift(message) == []


def test_code_spans_do_not_hide_drift_outside_them() -> None:
    hits = detect_role_drift("Running `make test` is fine, but let me check the logs myself.")
    assert [hit.rule for hit in hits] == ["narrates_tool_use"]


@pytest.mark.parametrize(
    "message",
    [
        "Please write your opening message to the assistant as the JSON object described above.",
        "The conversation has not started. Write your opening message to the assistant.",
        "Write your next message as Dana, as the JSON object described above.",
        "I am not an assistant. Speak only as Dana, in the first person, about your own task.",
    ],
)
def test_a_user_turn_echoing_the_simulator_instructions_is_drift(message: str) -> None:
    hits = detect_role_drift(message)
    assert "echoes_instructions" in [hit.rule for hit in hits]


def test_quoting_the_intent_request_itself_is_not_an_echo() -> None:
    # The request fills a placeholder of the template: sending it verbatim is the job.
    request = "Set up a small script that reads sales.csv and writes the totals per region."
    assert detect_role_drift(request) == []
    assert detect_role_drift("Opening message: the assistant should fix the build.") == []
