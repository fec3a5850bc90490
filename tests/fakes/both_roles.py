"""A loopback responder that plays both the role-locked user simulator and the agent.

    with FakeOpenAIServer(BothRoles(user_turns=3, tool_calls_per_turn=2)) as server: ...

It answers from the request alone (no state between requests), so any number of episodes can
share one server:

- a request whose system prompt carries the user simulator's role lock gets the next user
  turn as JSON: up to ``user_turns`` turns ("Put 'hello 42' in greetings/hi.txt please."),
  the simulator's own first turn included, and then ``completed: true``. With
  ``written_opening`` (``simulate.first_turn: request``, the default) that first turn is the
  intent's request, which the simulator records without asking; with ``tag_episodes`` the
  text also carries a tag drawn from the simulator's system prompt, so no two episodes send
  the same agent request (otherwise the response cache would answer most of them, unlike a
  real run);
- any other request is the agent's: it reads the path and text from the latest user
  message (turn k's defaults when it does not say, as the intent's request does not),
  writes the file with the ``write`` tool, reads it back with ``exec cat``
  (``tool_calls_per_turn - 1`` times), then answers with the file's content.

One episode therefore costs ``requests_per_episode`` requests, and ``user_turns`` x
``tool_calls_per_turn`` real tool calls in the workspace. With ``turns_by_details`` the user
turns follow the intent instead, as a model revealing one hidden detail per turn would: an
episode whose simulator prompt lists *d* hidden details takes ``turns_by_details[d]`` turns
(the last entry for longer lists), so a run mixes episode lengths and the length can be read
from the intent.

Run as a server process (the benchmarks do, so the pipeline's CPU figures are its own):
``python -m tests.fakes.both_roles --latency 0.3 --user-turns 8 --tool-calls 3
--report OUT.json`` prints one JSON line with ``base_url``, serves until stdin closes, then
writes what it saw to ``OUT.json``: requests, and requests in flight sampled every 10 ms
(mean over the busy window, share of time at the limit ``--limit``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes.openai_server import FakeOpenAIServer, completion, tool_call

# A phrase of the user simulator's system prompt (ise_core/prompts), absent from the agent's.
USER_SIMULATOR_MARK = "You are NOT an assistant"
_DETAILS = re.compile(r"Details you have in mind(?P<body>.*?)You will consider", re.S)
_NUMBERED = re.compile(r"^\s*\d+\. ", re.M)
_ASKED = re.compile(r"put '(?P<text>[^']*)' in (?P<path>\S+) please", re.IGNORECASE)


def is_user_simulator(request: dict[str, Any]) -> bool:
    system = (request.get("messages") or [{}])[0].get("content") or ""
    return USER_SIMULATOR_MARK in system


def hidden_detail_count(system_prompt: str) -> int:
    """How many hidden details the user simulator's prompt lists."""
    found = _DETAILS.search(system_prompt)
    return len(_NUMBERED.findall(found["body"])) if found else 0


def turn_file(turn: int, tag: str = "") -> tuple[str, str]:
    """The path and the text the k-th user turn asks for."""
    suffix = f" {tag}" if tag else ""
    if turn <= 1:
        return "greetings/hi.txt", f"hello 42{suffix}"
    return f"greetings/hi{turn}.txt", f"hello {40 + turn}{suffix}"


@dataclass(frozen=True)
class BothRoles:
    """The responder; ``BothRoles()`` is one user turn with a write and a read-back."""

    user_turns: int = 1
    tool_calls_per_turn: int = 2
    tag_episodes: bool = False
    written_opening: bool = True  # the first user message is the intent's request
    turns_by_details: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.user_turns < 1 or self.tool_calls_per_turn < 1:
            raise ValueError("user_turns and tool_calls_per_turn must be at least 1")
        if any(turns < 1 for turns in self.turns_by_details):
            raise ValueError("turns_by_details must be at least 1 each")

    @property
    def requests_per_episode(self) -> int:
        """Requests of one episode of ``user_turns`` turns."""
        return self.requests_for(self.user_turns)

    def requests_for(self, turns: int) -> int:
        user_requests = turns + (0 if self.written_opening else 1)
        return user_requests + turns * (self.tool_calls_per_turn + 1)

    def turns_of(self, system_prompt: str) -> int:
        """The user turns of the episode whose simulator has this system prompt."""
        if not self.turns_by_details:
            return self.user_turns
        details = hidden_detail_count(system_prompt)
        return self.turns_by_details[min(details, len(self.turns_by_details) - 1)]

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        messages = request["messages"]
        if is_user_simulator(request):
            return self._user(request, messages)
        return self._agent(request, messages)

    def _user(self, request: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
        # The simulator's own earlier turns are the assistant messages of its history.
        done = sum(1 for m in messages if m["role"] == "assistant")
        if done < self.turns_of(messages[0]["content"]):
            tag = ""
            if self.tag_episodes:
                tag = hashlib.sha256(messages[0]["content"].encode()).hexdigest()[:8]
            path, text = turn_file(done + 1, tag)
            opening = "Put" if done == 0 else "Now also put"
            turn = {
                "completed": False,
                "query": f"{opening} '{text}' in {path} please.",
                "reason": "next step",
                "is_success": None,
            }
        else:
            turn = {"completed": True, "query": "Thanks!", "reason": "done", "is_success": True}
        return completion(request, content=json.dumps(turn))

    def _agent(self, request: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
        offered = {t["function"]["name"] for t in request.get("tools") or []}
        if not offered >= {"exec", "write"}:
            raise ValueError(f"the agent was offered {sorted(offered)}, not exec and write")
        turn = sum(1 for m in messages if m["role"] == "user")
        since_user = 0
        asked = ""
        for message in reversed(messages):
            if message["role"] == "user":
                asked = message.get("content") or ""
                break
            since_user += message["role"] == "tool"
        found = _ASKED.search(asked)
        path, text = (found["path"], found["text"]) if found else turn_file(turn)
        if since_user == 0:
            args = json.dumps({"path": path, "content": text + "\n"})
            return completion(request, tool_calls=[tool_call("write", args, f"call_{turn}_w")])
        if since_user < self.tool_calls_per_turn:
            args = json.dumps({"command": f"cat {path}"})
            return completion(
                request, tool_calls=[tool_call("exec", args, f"call_{turn}_{since_user}")]
            )
        last = messages[-1].get("content") or ""
        return completion(request, content=f"Done; the file reads: {last.strip()}")


def _sample_in_flight(
    server: FakeOpenAIServer, stop: threading.Event, samples: list[tuple[float, int, int]]
) -> None:
    while not stop.wait(0.01):
        stats = server.stats()
        samples.append((time.monotonic(), stats["in_flight"], stats["requests"]))


def in_flight_summary(samples: list[tuple[float, int, int]], limit: int) -> dict[str, Any]:
    """Mean requests in flight between the first request and the last reply."""
    busy = [i for i, (_, in_flight, requests) in enumerate(samples) if requests and in_flight]
    if not busy:
        return {"busy_window_s": 0.0, "mean_in_flight": 0.0, "share_at_limit": 0.0}
    window = samples[busy[0] : busy[-1] + 1]
    levels = [in_flight for _, in_flight, _ in window]
    return {
        "busy_window_s": round(window[-1][0] - window[0][0], 3),
        "mean_in_flight": round(sum(levels) / len(levels), 3),
        "share_at_limit": round(sum(1 for v in levels if v >= limit) / len(levels), 4),
        "samples": len(levels),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="loopback server playing user and agent")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per reply")
    parser.add_argument("--user-turns", type=int, default=1)
    parser.add_argument("--tool-calls", type=int, default=2, help="tool calls per user turn")
    parser.add_argument("--limit", type=int, default=16, help="the client's concurrency limit")
    parser.add_argument(
        "--same-requests",
        action="store_true",
        help="do not tag episodes (identical agent requests across episodes)",
    )
    parser.add_argument(
        "--mix",
        action="store_true",
        help="--long-turns user turns for intents with at least --long-from hidden details, "
        "--user-turns for the others",
    )
    parser.add_argument("--long-turns", type=int, default=8)
    parser.add_argument("--long-from", type=int, default=8, help="hidden details")
    parser.add_argument("--report", type=Path, default=None, help="write what was served here")
    args = parser.parse_args(argv)
    by_details: tuple[int, ...] = ()
    if args.mix:
        by_details = (args.user_turns,) * args.long_from + (args.long_turns,)
    responder = BothRoles(
        args.user_turns, args.tool_calls, not args.same_requests, turns_by_details=by_details
    )
    server = FakeOpenAIServer(responder, latency_s=args.latency).start()
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_in_flight, args=(server, stop, samples), daemon=True)
    sampler.start()
    print(json.dumps({"base_url": server.base_url, "port": server.port}), flush=True)
    try:
        sys.stdin.read()  # serve until the parent closes our stdin
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        sampler.join(timeout=2)
        server.stop()
    if args.report is not None:
        report = {**server.stats(), **in_flight_summary(samples, args.limit)}
        report["requests_per_episode"] = responder.requests_per_episode
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
