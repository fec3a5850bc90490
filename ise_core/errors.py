"""Every error of ISE, with an exit code and a message a person can act on.

ISEError                 base; ``exit_code`` says how the CLI ends
├── ConfigError          params.yaml missing, unknown key, wrong type or range   (exit 2)
├── InputError           a data file is malformed: names file, line, field       (exit 2)
│   └── TaxonomyError    the taxonomy files disagree with each other             (exit 2)
├── BackendError         a backend cannot do what was asked (no isolation, ...)  (exit 2)
│   └── EmbeddingResponseError  an embedding endpoint's vectors are unusable     (exit 2)
├── LLMError             an LLM request failed for good: names endpoint, model,  (exit 1)
│   │                    status and attempts, never the key
│   ├── MalformedResponse  the endpoint answered but the reply is unusable       (exit 1)
│   │                      (ise_core.llm.replies: the malformed-reply contract, it
│   │                      carries the best-effort ChatResult)
│   └── ContextOverflow    the server refused the request as longer than its     (exit 1)
│                          context window (a 400 naming the context length)
├── BudgetExceeded       ``llm.budget`` reached: raised before a request is sent (exit 1)
├── EpisodesFailed       some episodes of a simulation call failed or did not    (exit 1)
│                        start; a retry runs only those again
├── GateFailed           a quality gate's expectations did not hold              (exit 1)
└── Interrupted          SIGTERM / SIGINT stopped the run (ise_core.shutdown);   (128 + N)
                         finished work is kept, a re-run resumes

Raised and caught inside one layer, each turned into something the model sees; they never
reach the CLI:

Exception
├── ToolError            a tool reports a failure          → a failed tool result
├── FileAccessError      a workspace file operation refused → a failed tool result
├── FetchError           web_fetch refused or failed        → a failed tool result
├── SearchError          web_search refused or failed       → a failed tool result
├── SandboxDied          the sandbox stopped answering      → restarted on the next call
├── ValueError
│   └── UserTurnError    the user simulator's output is not a valid turn → a correction
└── LookupError
    └── NotInRoot        the viewer was asked for a file outside its data root → 404

``validation_problems`` is the one place a pydantic ``ValidationError`` becomes text
(``field.path: what is wrong``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError
    from pydantic_core import ErrorDetails


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


class EmbeddingResponseError(BackendError):
    """The endpoint answered with vectors that cannot be used (wrong length, not finite)."""


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
        return (rebuild_error, (type(self), (str(self),), self.__dict__, self.args))


class ContextOverflow(LLMError):
    """The request did not fit the model's context window (the server said so with a 400).

    A caller that can shorten the conversation compacts it and tries once more; otherwise the
    episode ends with stop reason ``context_overflow``.
    """

    stop_reason = "context_overflow"


def rebuild_error(
    cls: type[Exception], init: tuple[Any, ...], state: dict[str, Any], args: tuple[Any, ...]
) -> Exception:
    """Unpickle an error whose ``__init__`` takes other arguments than its message."""
    error = cls(*init)
    error.__dict__.update(state)
    error.args = args
    return error


class BudgetExceeded(ISEError):
    """``llm.budget`` is reached; raised *before* sending, so no new work was started."""

    exit_code = 1


class EpisodesFailed(ISEError):
    """Some episodes of a simulation call failed (endpoint down, sandbox lost): a retry
    runs just those again, since finished episodes are skipped."""

    exit_code = 1


class GateFailed(ISEError):
    """A quality gate failed; ``report`` lists each failed expectation."""

    exit_code = 1

    def __init__(self, message: str, report: str = "") -> None:
        super().__init__(message)
        self.report = report


class Interrupted(ISEError):
    """A stop signal ended the run (see ise_core.shutdown); the exit code is 128 + its number
    (143 for SIGTERM, 130 for SIGINT), as a shell reports a process a signal ended."""

    def __init__(self, message: str, signum: int = 15) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


# --- caught inside one layer ---------------------------------------------------------------


class ToolError(Exception):
    """Raised inside a tool to report a failure the agent should see as an observation."""


class FileAccessError(Exception):
    """A file operation the workspace refuses or cannot do; the message is for the agent."""


class FetchError(Exception):
    """A refused or failed fetch; the message is for the agent."""


class SearchError(Exception):
    """A refused or failed search; the message is for the agent."""


class SandboxDied(Exception):
    """The sandbox stopped answering; the workspace restarts it on the next call."""


class UserTurnError(ValueError):
    """The simulator's output is not a valid turn; the message says what is wrong."""


class NotInRoot(LookupError):
    """A requested file is not a file of the data root (absent, or a name that is refused)."""


# --- validation errors as text -------------------------------------------------------------


def _message(error: ErrorDetails) -> str:
    return str(error["msg"])


def validation_problems(
    exc: ValidationError,
    *,
    limit: int | None = None,
    root: str = "(record)",
    form: str = "{where}: {what}",
    explain: Callable[[ErrorDetails], str] = _message,
) -> list[str]:
    """One line per error of ``exc`` (the first ``limit`` ones), laid out by ``form``.

    ``{where}`` is the error's location joined by dots (``root`` for the object itself);
    ``{what}`` is pydantic's message unless ``explain`` says otherwise.
    """
    return [
        form.format(where=".".join(str(p) for p in error["loc"]) or root, what=explain(error))
        for error in exc.errors()[:limit]
    ]


__all__ = [
    "BackendError",
    "BudgetExceeded",
    "ConfigError",
    "ContextOverflow",
    "EmbeddingResponseError",
    "EpisodesFailed",
    "FetchError",
    "FileAccessError",
    "GateFailed",
    "ISEError",
    "InputError",
    "Interrupted",
    "LLMError",
    "NotInRoot",
    "SandboxDied",
    "SearchError",
    "TaxonomyError",
    "ToolError",
    "UserTurnError",
    "rebuild_error",
    "validation_problems",
]
