"""Errors that carry an exit code and a message a person can act on.

ISEError                 base; ``exit_code`` says how the CLI ends
├── ConfigError          params.yaml missing, unknown key, wrong type or range   (exit 2)
├── InputError           a data file is malformed: names file, line, field       (exit 2)
│   └── TaxonomyError    the taxonomy files disagree with each other             (exit 2)
├── BackendError         a backend cannot do what was asked (no isolation, ...)  (exit 2)
├── LLMError             an LLM request failed for good: names endpoint, model,  (exit 1)
│   │                    status and attempts, never the key
│   ├── MalformedResponse  the endpoint answered but the reply is unusable;      (exit 1)
│   │                      ``kind`` + ``detail``, the caller may turn it into an
│   │                      observation or retry with ``attempt=n``
│   └── ContextOverflow    the server refused the request as longer than its     (exit 1)
│                          context window (a 400 naming the context length)
├── BudgetExceeded       ``llm.budget`` reached: raised before a request is sent (exit 1)
└── GateFailed           a quality gate's expectations did not hold              (exit 1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ise_core.llm.base import ChatResult


class ISEError(Exception):
    """Base of every error the CLI turns into a message and an exit code."""

    exit_code: int = 2


class ConfigError(ISEError):
    """Bad configuration: the message names the file, the key path and what was expected."""


class InputError(ISEError):
    """A malformed input file: the message names the file, the line and the problem."""


class TaxonomyError(InputError):
    """The taxonomy files are inconsistent (unknown domain, duplicate id, ...)."""


class BackendError(ISEError):
    """A backend (LLM, workspace, embeddings) cannot run as configured."""


class LLMError(ISEError):
    """An LLM request failed after its retries (or at once, for a non-retryable status).

    The message names the endpoint, the model, the last status and the number of attempts;
    it never contains the API key. ``status`` is the HTTP status code, or a word such as
    ``"timeout"`` or ``"connection"`` when no response arrived.
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        model: str = "",
        status: int | str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.model = model
        self.status = status
        self.attempts = attempts

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword arguments survive pickling (process pools, orchestrators' result passing).
        return (_rebuild, (type(self), (str(self),), self.__dict__, self.args))


class MalformedResponse(LLMError):
    """The endpoint answered, but the reply cannot be used as an assistant turn.

    ``kind`` is one of ``no_choices``, ``invalid_tool_arguments``, ``unknown_tool``,
    ``invalid_tool_call`` or ``empty``; ``detail`` says what exactly was wrong. ``result``
    is the best-effort ``ChatResult`` (usage, the raw message as far as it could be read),
    so the tokens are still accounted and the caller can show the model its own mistake.
    """

    KINDS = (
        "no_choices",
        "invalid_tool_arguments",
        "unknown_tool",
        "invalid_tool_call",
        "empty",
        "truncated",  # finish_reason "length": cut off at max_tokens
        "repetition",  # degenerate output: one piece repeated, or a run of blank lines
    )

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        result: ChatResult | None = None,
        endpoint: str = "",
        model: str = "",
    ) -> None:
        super().__init__(
            f"malformed response ({kind}) from {endpoint or 'the endpoint'}, "
            f"model {model or '?'}: {detail}",
            endpoint=endpoint,
            model=model,
            status=200,
            attempts=1,
        )
        self.kind = kind
        self.detail = detail
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (self.kind, self.detail), self.__dict__, self.args))

    def observation(self) -> str:
        """An ``Error: ...`` text to hand back to the model as feedback on its last reply."""
        return f"Error: your last reply could not be used ({self.kind}): {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "model": self.model}


class ContextOverflow(LLMError):
    """The request did not fit the model's context window (the server said so with a 400).

    A caller that can shorten the conversation compacts it and tries once more; otherwise the
    episode ends with stop reason ``context_overflow``.
    """

    stop_reason = "context_overflow"


def _rebuild(
    cls: type[Exception], init: tuple[Any, ...], state: dict[str, Any], args: tuple[Any, ...]
) -> Exception:
    error = cls(*init)
    error.__dict__.update(state)
    error.args = args
    return error


class BudgetExceeded(ISEError):
    """``llm.budget`` is reached; raised *before* sending, so no new work was started."""

    exit_code = 1


class GateFailed(ISEError):
    """A quality gate failed; ``report`` lists each failed expectation."""

    exit_code = 1

    def __init__(self, message: str, report: str = "") -> None:
        super().__init__(message)
        self.report = report
