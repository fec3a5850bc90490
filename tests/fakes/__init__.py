"""Test doubles shared by every test area (and the benchmarks)."""

from tests.fakes.openai_server import (
    FAULT_KINDS,
    FakeOpenAIServer,
    Faults,
    Reply,
    completion,
    echo_responder,
    fake_openai_server,
    tool_call,
)

__all__ = [
    "FAULT_KINDS",
    "FakeOpenAIServer",
    "Faults",
    "Reply",
    "completion",
    "echo_responder",
    "fake_openai_server",
    "tool_call",
]
