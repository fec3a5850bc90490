"""Scrub secrets and host paths from everything the export writes.

Trajectories come from real shells, so tool output can echo an API key, a token from the
environment or the absolute path of the machine that produced them. Nothing of that may
reach a published dataset. The ``Redactor`` replaces:

- provider key shapes (``sk-…``, ``ghp_…``, ``hf_…``, ``AKIA…``, ``xox?-…``) and bearer tokens;
- the value of every environment variable whose *name* looks secret (``*KEY*``, ``*TOKEN*``,
  ``*SECRET*``, ``*PASSWORD*``, …) present when the export runs, raw and JSON-escaped, since
  tool-call arguments are JSON strings;
- host paths: the project directory, ``$HOME`` and the sandbox root, longest first, only as
  whole paths (``/root`` does not touch ``/rootfs``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

API_KEY_MARK = "[REDACTED_API_KEY]"
TOKEN_MARK = "[REDACTED_TOKEN]"
SECRET_MARK = "[REDACTED_SECRET]"

SECRET_NAME_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
# Shorter values are too likely to be ordinary words or numbers ("1", "true") to replace.
MIN_SECRET_LENGTH = 6
_HARMLESS_VALUES = frozenset({"true", "false", "none", "null", "yes", "no", "unset"})

_KEY_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bsk-[A-Za-z0-9][A-Za-z0-9_\-]{15,}"), API_KEY_MARK),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), API_KEY_MARK),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), API_KEY_MARK),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), API_KEY_MARK),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), API_KEY_MARK),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"), API_KEY_MARK),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 " + TOKEN_MARK),
)


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


@dataclass
class Redactor:
    """Replaces secrets and host paths in text; build it with ``build_redactor``."""

    secrets: list[str] = field(default_factory=list)
    host_paths: list[tuple[str, str]] = field(default_factory=list)  # (path, placeholder)
    _path_patterns: list[tuple[re.Pattern[str], str]] = field(default_factory=list, init=False)
    _secret_forms: list[str] = field(default_factory=list, init=False)

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
        for secret in self._secret_forms:
            if secret in value:
                value = value.replace(secret, SECRET_MARK)
        for pattern, mark in _KEY_PATTERNS:
            value = pattern.sub(mark, value)
        for pattern, placeholder in self._path_patterns:
            value = pattern.sub(placeholder, value)
        return value

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
