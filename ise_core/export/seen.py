"""What the model saw: an episode whose requests were compacted, exported reply by reply.

An episode file keeps the full record: every tool output whole. When a request went out
with older tool outputs cut to fit the context window (ise_core.llm.context), the episode's
``metadata.compacted_context`` says, per reply of such a request, which outputs were cut.
Training a reply on the full record would teach it from a context it never had, so by
default (``export.context: seen``) such an episode is exported as several lines, one *part*
per run of consecutive replies that saw the same context:

- part k holds the conversation up to its last reply (and the tool results answering that
  reply's calls; the last part runs to the end), with the outputs its replies saw cut,
  cut the same way again (``apply_cuts``);
- the replies of part k are trained; earlier replies in it, which saw another context and
  are trained in their own part, carry ``"weight": 0`` (the OpenAI fine-tuning layout's
  per-message switch);
- ``metadata.context_part`` is ``{index, count, cut}``.

An episode that was never compacted is one line, exactly as before. ``export.context: full``
exports every episode as one line holding the full record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ise_core.llm.context import apply_cuts
from ise_core.records import Message, Trajectory


@dataclass(frozen=True)
class Part:
    """One line of a compacted episode: ``messages[:end]`` with ``cut`` applied, training
    the assistant messages at ``trained``."""

    end: int
    cut: tuple[int, ...]
    trained: frozenset[int]


def _views(trajectory: Trajectory) -> dict[int, tuple[int, ...]]:
    views: dict[int, tuple[int, ...]] = {}
    for view in trajectory.metadata.get("compacted_context") or []:
        if isinstance(view, dict) and isinstance(view.get("reply"), int):
            views[view["reply"]] = tuple(sorted(int(i) for i in view.get("cut") or []))
    return views


def context_parts(trajectory: Trajectory) -> list[Part]:
    """The parts of a compacted episode, in order; [] when no request was compacted."""
    views = _views(trajectory)
    if not views:
        return []
    messages = trajectory.messages
    groups: list[tuple[tuple[int, ...], list[int]]] = []
    for position, message in enumerate(messages):
        if message.role != "assistant":
            continue
        seen = views.get(position, ())
        if groups and groups[-1][0] == seen:
            groups[-1][1].append(position)
        else:
            groups.append((seen, [position]))
    parts = []
    for index, (cut, replies) in enumerate(groups):
        end = len(messages)
        if index < len(groups) - 1:
            end = replies[-1] + 1
            while end < len(messages) and messages[end].role == "tool":
                end += 1  # the results answering the part's last calls
        parts.append(Part(end, cut, frozenset(replies)))
    return parts


def part_messages(trajectory: Trajectory, part: Part) -> list[Message]:
    return apply_cuts(trajectory.messages[: part.end], part.cut)


def part_final_output(messages: list[Message]) -> str:
    """The last thing the agent said to the user within a part."""
    said = [m.content for m in messages if m.role == "assistant" and m.content]
    return said[-1] if said else ""


def part_metadata(part: Part, index: int, count: int) -> dict[str, Any]:
    return {"index": index + 1, "count": count, "cut": list(part.cut)}


__all__ = ["Part", "context_parts", "part_final_output", "part_messages", "part_metadata"]
