"""Gate after export: is every SFT line trainable, and are the splits clean?

Reads ``<export.out_dir>/train.jsonl`` and ``valid.jsonl``; writes ``gate_result.json``
beside them. One row per exported conversation: its schema, its role order, empty content
where content is required, tool-call arguments, and the intent and normalised request it came
from (train and valid must not share an intent; no request may be exported twice).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ise_core.catalog import Catalog
from ise_core.config import Settings
from ise_core.quality.runner import (
    Expect,
    GateReport,
    Table,
    parses_as_json,
    run_gate,
    schema_problem,
)
from ise_core.records import Message, normalize_text, read_raw_jsonl


class SFTMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    intent_id: str = Field(min_length=1)
    session_id: str = Field(min_length=1)


class SFTMessage(Message):
    """An exported message: ``weight`` 0 marks a reply this line does not train (one part
    of an episode exported as the model saw it, ise_core.export.seen)."""

    weight: Literal[0, 1] | None = None


class SFTLine(BaseModel):
    """The schema of one exported line (OpenAI layout)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[SFTMessage] = Field(min_length=2)
    tools: list[dict[str, Any]]
    final_output: str
    metadata: SFTMetadata


def role_order_problem(messages: list[dict[str, Any]]) -> str:
    """'' when the order is trainable: system first, then user; a tool message only inside
    the block that follows an assistant tool call, answering one of its calls once."""
    roles = [m.get("role") for m in messages]
    if not roles or roles[0] != "system":
        return "first message is not system"
    if len(roles) < 2 or roles[1] != "user":
        return "second message is not user"
    open_calls: set[str] = set()
    for index, message in enumerate(messages[1:], start=1):
        role = message.get("role")
        if role == "system":
            return f"message {index}: system after the start"
        if role == "tool":
            call_id = str(message.get("tool_call_id"))
            if call_id not in open_calls:
                return f"message {index}: tool message without a pending assistant tool call"
            open_calls.discard(call_id)
            continue
        if open_calls:
            return f"message {index}: {role} before every tool call was answered"
        if role == "assistant":
            open_calls = {
                str(c.get("id")) for c in message.get("tool_calls") or [] if isinstance(c, dict)
            }
        elif role != "user":
            return f"message {index}: unknown role {role!r}"
    if open_calls:
        return "conversation ends with unanswered tool calls"
    return ""


def empty_content_count(messages: list[dict[str, Any]]) -> int:
    """Messages missing content they need: system and user always; an assistant needs
    content or tool calls; a tool message needs a string (empty output is legitimate)."""
    count = 0
    for message in messages:
        role, content = message.get("role"), message.get("content")
        text = content.strip() if isinstance(content, str) else ""
        if (
            (role in ("system", "user") and not text)
            or (role == "assistant" and not text and not message.get("tool_calls"))
            or (role == "tool" and not isinstance(content, str))
        ):
            count += 1
    return count


def bad_arguments_count(messages: list[dict[str, Any]]) -> int:
    calls = [c for m in messages for c in m.get("tool_calls") or [] if isinstance(c, dict)]
    return sum(1 for c in calls if not parses_as_json(c.get("function", {}).get("arguments")))


def _conversation_row(split: str, source: str, lineno: int, data: dict[str, Any]) -> dict[str, Any]:
    raw = data.get("messages")
    messages = [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []
    first_user = next((m.get("content") for m in messages if m.get("role") == "user"), "")
    raw_metadata = data.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    return {
        "line": f"{source}:{lineno}",
        "split": split,
        "schema_problem": schema_problem(data, SFTLine),
        "role_order_problem": role_order_problem(messages),
        "empty_content": empty_content_count(messages),
        "bad_arguments": bad_arguments_count(messages),
        "intent_id": str(metadata.get("intent_id", "")),
        "normalized_request": _request_key(first_user, metadata.get("context_part")),
    }


def _request_key(first_user: Any, part: Any) -> str:
    """The normalised opening request; the later parts of one episode (exported as the
    model saw it) share their first part's request, so they are told apart by number."""
    request = normalize_text(first_user if isinstance(first_user, str) else "")
    index = part.get("index") if isinstance(part, dict) else None
    return f"{request} (part {index})" if isinstance(index, int) and index > 1 else request


def gate_sft(settings: Settings) -> GateReport:
    """Validate the exported splits against ``gates.sft``."""
    import pandas as pd

    files = Catalog.of(settings)
    sources = {"train": files.train, "valid": files.valid}
    lines = {split: read_raw_jsonl(path) for split, path in sources.items()}
    rows = [
        _conversation_row(split, sources[split].name, lineno, data)
        for split, split_lines in lines.items()
        for lineno, data in split_lines
    ]
    splits_of: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        splits_of[row["intent_id"]].add(row["split"])
    for row in rows:
        row["intent_in_one_split"] = len(splits_of[row["intent_id"]]) == 1
    columns = [*_conversation_row("train", "", 0, {}).keys(), "intent_in_one_split"]
    conversations = pd.DataFrame(rows, columns=columns)
    counts = pd.DataFrame(
        [{"source": "splits", "n_train": len(lines["train"]), "n_valid": len(lines["valid"])}]
    )
    tables = [
        Table("conversations", conversations, "line", _CONVERSATION_CHECKS),
        Table("split_sizes", counts, "source", _size_checks(settings)),
    ]
    return run_gate("sft", tables, files.sft_gate_result)


_CONVERSATION_CHECKS = [
    Expect(
        "every line matches the SFT schema",
        "ExpectColumnValuesToBeInSet",
        {"column": "schema_problem", "value_set": [""]},
        "no schema problem",
    ),
    Expect(
        "valid role order",
        "ExpectColumnValuesToBeInSet",
        {"column": "role_order_problem", "value_set": [""]},
        "system, user, then tool messages only after an assistant tool call",
    ),
    Expect(
        "no empty content where content is required",
        "ExpectColumnValuesToBeBetween",
        {"column": "empty_content", "min_value": 0, "max_value": 0},
        "0 empty messages",
    ),
    Expect(
        "tool-call arguments parse as JSON",
        "ExpectColumnValuesToBeBetween",
        {"column": "bad_arguments", "min_value": 0, "max_value": 0},
        "0 unparseable arguments",
    ),
    Expect(
        "train and valid are disjoint by intent",
        "ExpectColumnValuesToBeInSet",
        {"column": "intent_in_one_split", "value_set": [True]},
    ),
    Expect(
        "no two conversations from the same normalised request",
        "ExpectColumnValuesToBeUnique",
        {"column": "normalized_request"},
    ),
]


def _size_checks(settings: Settings) -> list[Expect]:
    params = settings.gates.sft
    return [
        Expect(
            f"at least {params.min_train_rows} train conversations",
            "ExpectColumnValuesToBeBetween",
            {"column": "n_train", "min_value": params.min_train_rows},
        ),
        Expect(
            f"at least {params.min_valid_rows} valid conversations",
            "ExpectColumnValuesToBeBetween",
            {"column": "n_valid", "min_value": params.min_valid_rows},
        ),
    ]
