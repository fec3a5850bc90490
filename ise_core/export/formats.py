"""SFT record layouts: ISE's OpenAI chat layout, ShareGPT, and the Parquet table.

The OpenAI layout is the contract (``train.jsonl`` / ``valid.jsonl``)::

    {"messages": [system, user, assistant(tool_calls), tool, ...],
     "tools": [...], "final_output": "...", "metadata": {...}}

Assistant ``tool_calls`` carry ``function.arguments`` as a JSON *string* (calls the model
wrote as text are stored the same way); tool messages carry ``tool_call_id``, ``name``,
``content`` and ``success``. An episode whose requests were compacted is exported as the
model saw it, in parts (ise_core.export.seen), with ``"weight": 0`` on the replies a part
does not train. ShareGPT and Parquet are derived from the OpenAI record, so all formats hold
the same (redacted) text; ShareGPT has no per-turn weight, so there every reply of a part is
a training turn.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

from ise_core.export.seen import context_parts, part_final_output, part_messages, part_metadata
from ise_core.records import Message, Trajectory, normalize_text

# Metadata copied from the trajectory when present, in this order (then any other keys).
METADATA_ORDER = (
    "persona",
    "domains",
    "tasks",
    "complexity",
    "user_turns",
    "dialogue_turns",
    "tool_calls",
    "distinct_tools",
    "tool_errors",
    "recovered_errors",
    "token_usage",
)

SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}


def export_message(message: Message, *, reasoning: bool = True) -> dict[str, Any]:
    """One message in the export layout (OpenAI fields, no empty optionals); ``reasoning``
    False leaves ``reasoning_content`` out (export.reasoning: drop)."""
    out: dict[str, Any] = {"role": message.role}
    if message.content is not None or message.role != "assistant" or not message.tool_calls:
        out["content"] = message.content or ""
    else:
        # An assistant turn that only calls tools has null content in the OpenAI layout.
        out["content"] = None
    if message.reasoning_content and reasoning:
        out["reasoning_content"] = message.reasoning_content
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": call.type,
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ]
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id or ""
        out["name"] = message.name or ""
        out["success"] = message.success  # None when the backend did not say
    return out


def first_user_request(messages: Sequence[Message] | Sequence[dict[str, Any]]) -> str:
    """The opening user request: the text the export is de-duplicated on."""
    for message in messages:
        role = message.role if isinstance(message, Message) else message.get("role")
        content = message.content if isinstance(message, Message) else message.get("content")
        if role == "user":
            return str(content or "")
    return ""


def to_openai_record(trajectory: Trajectory, *, reasoning: bool = True) -> dict[str, Any]:
    """A kept trajectory as one SFT line in ISE's OpenAI layout, holding the full record
    (``reasoning``: see ``export_message``)."""
    return {
        "messages": [export_message(m, reasoning=reasoning) for m in trajectory.messages],
        "tools": list(trajectory.tools),
        "final_output": trajectory.final_output,
        "metadata": export_metadata(trajectory),
    }


def to_openai_records(
    trajectory: Trajectory, *, reasoning: bool = True, context: str = "seen"
) -> list[dict[str, Any]]:
    """A kept trajectory as SFT lines: one line, or with ``context`` "seen" one line per part
    of an episode whose requests were compacted (ise_core.export.seen)."""
    parts = context_parts(trajectory) if context == "seen" else []
    if not parts:
        return [to_openai_record(trajectory, reasoning=reasoning)]
    records = []
    for index, part in enumerate(parts):
        messages = part_messages(trajectory, part)
        exported = [export_message(m, reasoning=reasoning) for m in messages]
        for position, message in enumerate(exported):
            if message["role"] == "assistant" and position not in part.trained:
                message["weight"] = 0  # trained in the part whose context it saw
        last = index == len(parts) - 1
        metadata = export_metadata(trajectory)
        metadata["context_part"] = part_metadata(part, index, len(parts))
        records.append(
            {
                "messages": exported,
                "tools": list(trajectory.tools),
                "final_output": trajectory.final_output if last else part_final_output(messages),
                "metadata": metadata,
            }
        )
    return records


def is_last_part(record: dict[str, Any]) -> bool:
    """Whether an exported line ends its conversation (every line of an episode exported
    whole; the last part of one exported as the model saw it)."""
    part = record.get("metadata", {}).get("context_part")
    return not isinstance(part, dict) or part.get("index") == part.get("count")


def export_metadata(trajectory: Trajectory) -> dict[str, Any]:
    """The exported line's metadata: identity, the known keys in order, then the rest."""
    source = dict(trajectory.metadata)
    metadata: dict[str, Any] = {
        "intent_id": trajectory.intent_id,
        "session_id": trajectory.session_id,
        "stop_reason": trajectory.stop_reason,
    }
    for key in METADATA_ORDER:
        if key in source:
            metadata[key] = source.pop(key)
    for key in sorted(source):
        metadata.setdefault(key, source[key])
    metadata["normalized_request"] = normalize_text(first_user_request(trajectory.messages))
    return metadata


def _sharegpt_call(call: dict[str, Any]) -> dict[str, Any]:
    arguments = call["function"]["arguments"]
    try:
        parsed: Any = json.loads(arguments)
    except json.JSONDecodeError:
        parsed = arguments
    return {"name": call["function"]["name"], "arguments": parsed}


def to_sharegpt_record(record: dict[str, Any]) -> dict[str, Any]:
    """ShareGPT layout as LLaMA-Factory reads it: ``conversations`` of ``{from, value}``
    alternating (``human`` | ``observation``) and (``gpt`` | ``function_call``), with the
    system prompt in ``system`` and ``tools`` / ``metadata`` as JSON strings.

    An assistant turn's tool calls become one ``function_call`` turn (one call object, or a
    list for parallel calls); the tool results that answer it become one ``observation``
    (the content, or a JSON list of contents). Text an assistant wrote alongside tool calls
    has no slot in this layout and is kept only in the OpenAI layout. Consecutive user or
    assistant texts are joined so the turns keep alternating.
    """
    conversations: list[dict[str, str]] = []
    pending_results: list[str] = []
    system = ""

    def add(role: str, value: str) -> None:
        if conversations and conversations[-1]["from"] == role and role in ("human", "gpt"):
            conversations[-1]["value"] += "\n\n" + value
        else:
            conversations.append({"from": role, "value": value})

    def flush_results() -> None:
        if pending_results:
            value = (
                pending_results[0]
                if len(pending_results) == 1
                else json.dumps(pending_results, ensure_ascii=False)
            )
            conversations.append({"from": "observation", "value": value})
            pending_results.clear()

    for index, message in enumerate(record["messages"]):
        role = message["role"]
        content = message.get("content") or ""
        if role == "tool":
            pending_results.append(content)
            continue
        flush_results()
        if role == "system" and index == 0:
            system = content
        elif role == "assistant" and message.get("tool_calls"):
            calls = [_sharegpt_call(call) for call in message["tool_calls"]]
            value = calls[0] if len(calls) == 1 else calls
            conversations.append(
                {"from": "function_call", "value": json.dumps(value, ensure_ascii=False)}
            )
        else:
            add(SHAREGPT_ROLES[role], content)
    flush_results()
    return {
        "conversations": conversations,
        "system": system,
        "tools": json.dumps(record["tools"], ensure_ascii=False, sort_keys=True),
        "final_output": record["final_output"],
        "metadata": json.dumps(record["metadata"], ensure_ascii=False, sort_keys=True),
    }


def jsonl_text(records: Sequence[dict[str, Any]]) -> str:
    """One compact JSON object per line, key order as built: byte-stable for equal input."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def parquet_bytes(records: Sequence[dict[str, Any]]) -> bytes:
    """The OpenAI records as a Parquet table.

    ``messages`` stay a list of structs (one schema for every message); ``tools`` and
    ``metadata`` are JSON strings, because their shapes differ between tools and backends
    and a union schema inferred from one file would reject the next.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    function = pa.struct([("name", pa.string()), ("arguments", pa.string())])
    tool_call = pa.struct([("id", pa.string()), ("type", pa.string()), ("function", function)])
    message = pa.struct(
        [
            ("role", pa.string()),
            ("content", pa.string()),
            ("reasoning_content", pa.string()),
            ("tool_calls", pa.list_(tool_call)),
            ("tool_call_id", pa.string()),
            ("name", pa.string()),
            ("success", pa.bool_()),
            ("weight", pa.int64()),  # 0 on a reply trained in another part (export.seen)
        ]
    )
    schema = pa.schema(
        [
            ("messages", pa.list_(message)),
            ("tools", pa.string()),
            ("final_output", pa.string()),
            ("metadata", pa.string()),
        ]
    )
    rows = [
        {
            "messages": record["messages"],
            "tools": json.dumps(record["tools"], ensure_ascii=False, sort_keys=True),
            "final_output": record["final_output"],
            "metadata": json.dumps(record["metadata"], ensure_ascii=False, sort_keys=True),
        }
        for record in records
    ]
    table = pa.Table.from_pylist(rows, schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()
