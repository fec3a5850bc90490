"""Scrub secrets and host paths from everything the export writes.

Trajectories come from real shells, files the agent read or wrote, fixtures and web pages, so
any text can carry a key, a token from the environment or the absolute path of the machine
that produced it. Nothing of that may reach a published dataset. The ``Redactor`` replaces:

- the value of every environment variable whose *name* looks secret (``*KEY*``, ``*TOKEN*``,
  ``*SECRET*``, ``*PASSWORD*``, …) present when the export runs, raw and JSON-escaped, since
  tool-call arguments are JSON strings;
- every secret shape of ``ise_core.export.secret_rules``: detect-secrets' plugins (entropy
  detectors off) plus rules for PEM blocks, Google keys, Stripe keys, passwords in URLs,
  ``Authorization`` headers, bearer tokens and the common provider keys;
- host paths: the project directory, ``$HOME`` and the sandbox root, longest first, only as
  whole paths (``/root`` does not touch ``/rootfs``).

It counts what it replaced, by kind (``counts``), for the export's ``stats.json``. A
replacement never splits a JSON escape, so tool-call arguments stay valid JSON.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ise_core.export.secret_rules import (
    API_KEY_MARK,
    PRIVATE_KEY_MARK,
    SECRET_MARK,
    TOKEN_MARK,
    Rule,
    default_rules,
)

__all__ = [
    "API_KEY_MARK",
    "ENV_SECRET_KIND",
    "HOST_PATH_KIND",
    "PRIVATE_KEY_MARK",
    "SECRET_MARK",
    "TOKEN_MARK",
    "Redactor",
    "build_redactor",
    "looks_secret",
    "secret_env_values",
]

ENV_SECRET_KIND = "environment_secret"
HOST_PATH_KIND = "host_path"

SECRET_NAME_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
# Shorter values are too likely to be ordinary words or numbers ("1", "true") to replace.
MIN_SECRET_LENGTH = 6
_HARMLESS_VALUES = frozenset({"true", "false", "none", "null", "yes", "no", "unset"})
# Strings up to this long are remembered with their result (bounded: cleared when full).
MEMO_MAX_CHARS = 4096
MEMO_MAX_ENTRIES = 100_000


# A host path counts only as a whole path: not the tail of a longer one (/home/bob/srv/ise
# for /srv/ise) and not the head of a sibling (/rootfs for /root); a sentence's full stop ends it.
_PATH_START = r"(?<![\w.\-])"
_PATH_END = r"(?![\w\-]|\.[\w\-])"


def looks_secret(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_NAME_MARKERS)


def secret_env_values(environ: Mapping[str, str]) -> list[str]:
    """Values of secret-looking environment variables worth redacting, longest first."""
    values = {
        value
        for name, value in environ.items()
        if looks_secret(name)
        and len(value.strip()) >= MIN_SECRET_LENGTH
        and value.strip().lower() not in _HARMLESS_VALUES
    }
    return sorted(values, key=lambda v: (-len(v), v))


def _clean_host_path(path: str | os.PathLike[str] | None) -> str | None:
    if path is None or str(path) == "":
        return None
    text = str(Path(path)).rstrip("/")
    # "/" or a relative path would match everywhere and mean nothing.
    if not text.startswith("/") or text == "":
        return None
    return text


def _backslashes_before(text: str, index: int) -> int:
    count = 0
    while index - count > 0 and text[index - count - 1] == "\\":
        count += 1
    return count


def _whole_escapes(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen (start, end) so it neither starts nor ends inside a backslash escape."""
    if _backslashes_before(text, start) % 2:
        start -= 1  # the span began on the escaped character: take its backslash too
    if _backslashes_before(text, end) % 2:
        end += 1  # the span ended on a backslash: take the character it escapes
    return start, min(end, len(text))


@dataclass
class Redactor:
    """Replaces secrets and host paths in text; build it with ``build_redactor``."""

    secrets: list[str] = field(default_factory=list)
    host_paths: list[tuple[str, str]] = field(default_factory=list)  # (path, placeholder)
    rules: Sequence[Rule] = field(default_factory=default_rules)
    counts: Counter[str] = field(default_factory=Counter, init=False)  # replacements by kind
    _path_patterns: list[tuple[re.Pattern[str], str]] = field(default_factory=list, init=False)
    _secret_forms: list[str] = field(default_factory=list, init=False)
    _memo: dict[str, tuple[str, tuple[tuple[str, int], ...]]] = field(
        default_factory=dict, init=False
    )

    def __post_init__(self) -> None:
        forms: set[str] = set()
        for value in self.secrets:
            forms.add(value)
            forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
        self._secret_forms = sorted(forms, key=lambda v: (-len(v), v))
        ordered = sorted(self.host_paths, key=lambda item: -len(item[0]))
        self._path_patterns = [
            (re.compile(_PATH_START + re.escape(path) + _PATH_END), placeholder)
            for path, placeholder in ordered
        ]

    def text(self, value: str) -> str:
        # Records repeat many strings (keys, roles, tool schemas): each is scanned once.
        memo = self._memo.get(value)
        if memo is None:
            memo = self._redact(value)
            if len(value) <= MEMO_MAX_CHARS:
                if len(self._memo) >= MEMO_MAX_ENTRIES:
                    self._memo.clear()
                self._memo[value] = memo
        result, found = memo
        for kind, n in found:
            self.counts[kind] += n
        return result

    def _redact(self, value: str) -> tuple[str, tuple[tuple[str, int], ...]]:
        found: Counter[str] = Counter()
        for secret in self._secret_forms:
            if secret in value:
                found[ENV_SECRET_KIND] += value.count(secret)
                value = value.replace(secret, SECRET_MARK)
        value = self._apply_rules(value, found)
        for pattern, placeholder in self._path_patterns:
            value, n = pattern.subn(placeholder, value)
            if n:
                found[HOST_PATH_KIND] += n
        return value, tuple(sorted(found.items()))

    def _apply_rules(self, value: str, found: Counter[str]) -> str:
        """Replace every span a rule finds; overlapping spans merge, the first rule's kind."""
        lowered = value.lower()
        spans = [
            (*_whole_escapes(value, start, end), order)
            for order, rule in enumerate(self.rules)
            if rule.may_match(lowered)
            for start, end in rule.spans(value)
        ]
        if not spans:
            return value
        spans.sort(key=lambda span: (span[0], -span[1], span[2]))
        merged: list[list[int]] = []
        for start, end, order in spans:
            if merged and start < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end, order])
        parts: list[str] = []
        cursor = 0
        for start, end, order in merged:
            rule = self.rules[order]
            parts += [value[cursor:start], rule.mark]
            cursor = end
            found[rule.kind] += 1
        parts.append(value[cursor:])
        return "".join(parts)

    def summary(self) -> dict[str, Any]:
        """What was replaced so far, for stats.json: ``{"total": n, "by_kind": {kind: n}}``."""
        by_kind = {kind: n for kind, n in sorted(self.counts.items()) if n}
        return {"total": sum(by_kind.values()), "by_kind": by_kind}

    def value(self, value: Any) -> Any:
        """Redact every string inside a JSON-like value (dict keys included)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


def build_redactor(
    project_dir: str | os.PathLike[str] | None,
    sandbox_root: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    extra_paths: Iterable[tuple[str, str]] = (),
) -> Redactor:
    """A redactor for this machine: its secret env values and its host paths."""
    env = os.environ if environ is None else environ
    candidates: list[tuple[str | os.PathLike[str] | None, str]] = [
        (sandbox_root, "<sandbox>"),
        (project_dir, "<project>"),
        (env.get("HOME"), "~"),
        *extra_paths,
    ]
    paths: dict[str, str] = {}
    for raw, placeholder in candidates:
        cleaned = _clean_host_path(raw)
        if cleaned is not None and cleaned not in paths:
            paths[cleaned] = placeholder
        # A symlinked home or project dir may appear in either spelling.
        if cleaned is not None:
            resolved = _clean_host_path(os.path.realpath(cleaned))
            if resolved is not None and resolved not in paths:
                paths[resolved] = placeholder
    return Redactor(secrets=secret_env_values(env), host_paths=list(paths.items()))
