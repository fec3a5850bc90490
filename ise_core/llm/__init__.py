"""LLM layer: the Chat protocol and its backends."""

from ise_core.llm.base import Chat, ChatResult, Usage

__all__ = ["Chat", "ChatResult", "Usage"]
