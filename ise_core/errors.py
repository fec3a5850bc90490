"""Errors that carry an exit code and a message a person can act on.

ISEError                 base; ``exit_code`` says how the CLI ends
├── ConfigError          params.yaml missing, unknown key, wrong type or range   (exit 2)
├── InputError           a data file is malformed: names file, line, field       (exit 2)
│   └── TaxonomyError    the taxonomy files disagree with each other             (exit 2)
├── BackendError         a backend cannot do what was asked (no isolation, ...)  (exit 2)
└── GateFailed           a quality gate's expectations did not hold              (exit 1)
"""

from __future__ import annotations


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


class GateFailed(ISEError):
    """A quality gate failed; ``report`` lists each failed expectation."""

    exit_code = 1

    def __init__(self, message: str, report: str = "") -> None:
        super().__init__(message)
        self.report = report
