"""File contents the scripted agent writes: valid for their type, carrying required texts.

Every generator is deterministic (no clock, no set iteration, no randomness beyond the rng it
is given) so scripted episodes are byte-for-byte reproducible. Scripts print a few lines
derived from their own data, exit 0, and never depend on the network or the time of day.

``broken_variant`` gives the realistic mistake for a script (a missing colon, a missing
parenthesis, a missing ``then``, a trailing comma) together with the exact edit that repairs it,
so the agent can make the mistake, read the real error and fix it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

SCRIPT_EXTENSIONS = (".py", ".js", ".sh")


@dataclass(frozen=True)
class Breakage:
    """A broken version of a file and the edit (``old`` → ``new``) that repairs it."""

    content: str
    old: str
    new: str
    line: int


def slug_words(slug: str) -> str:
    return slug.replace("-", " ").replace("_", " ").strip()


def _comment_lines(prefix: str, texts: Sequence[str]) -> list[str]:
    lines = []
    for text in texts:
        for part in text.splitlines() or [text]:
            lines.append(f"{prefix} {part}".rstrip())
    return lines


def _sample_rows(topic: str, rng: random.Random, count: int = 5) -> list[tuple[str, int]]:
    words = [w for w in slug_words(topic).split() if len(w) > 2] or ["item"]
    rows = []
    for index in range(count):
        label = f"{words[index % len(words)]}-{index + 1}"
        rows.append((label, rng.randint(3, 97)))
    return rows


def python_script(topic: str, texts: Sequence[str], rng: random.Random, *, writes: str = "") -> str:
    """A small, runnable Python script over embedded data (optionally writing ``writes``)."""
    rows = _sample_rows(topic, rng)
    header = [
        "#!/usr/bin/env python3",
        f'"""{slug_words(topic).capitalize()}: summarise the figures and report the totals."""',
        "",
        "# requirements:",
        *_comment_lines("# -", texts),
        "",
        "from pathlib import Path",
        "",
        "ROWS = [",
        *[f"    ({label!r}, {value})," for label, value in rows],
        "]",
        "",
        "",
        "def summarise(rows):",
        "    total = sum(value for _, value in rows)",
        "    top = max(rows, key=lambda row: row[1])",
        "    return total, top",
        "",
        "",
        "def main() -> int:",
        "    total, top = summarise(ROWS)",
        '    lines = [f"rows: {len(ROWS)}", f"total: {total}", f"top: {top[0]} ({top[1]})"]',
    ]
    if writes:
        header += [
            f"    out = Path({writes!r})",
            "    out.parent.mkdir(parents=True, exist_ok=True)",
            '    out.write_text("\\n".join(lines) + "\\n", encoding="utf-8")',
            '    lines.append(f"wrote {out}")',
        ]
    header += [
        '    print("\\n".join(lines))',
        "    return 0",
        "",
        "",
        'if __name__ == "__main__":',
        "    raise SystemExit(main())",
        "",
    ]
    return "\n".join(header)


def node_script(topic: str, texts: Sequence[str], rng: random.Random) -> str:
    rows = _sample_rows(topic, rng)
    items = ", ".join(f"{{ name: {json.dumps(label)}, value: {value} }}" for label, value in rows)
    lines = [
        f"// {slug_words(topic).capitalize()}: list the entries and their total.",
        "// requirements:",
        *_comment_lines("// -", texts),
        "",
        f"const entries = [{items}];",
        "",
        "function main() {",
        "  const total = entries.reduce((sum, entry) => sum + entry.value, 0);",
        "  for (const entry of entries) {",
        "    console.log(`${entry.name}: ${entry.value}`);",
        "  }",
        "  console.log(`total: ${total}`);",
        "}",
        "",
        "main();",
        "",
    ]
    return "\n".join(lines)


def shell_script(topic: str, texts: Sequence[str], *, log: str = "") -> str:
    lines = [
        "#!/bin/sh",
        f"# {slug_words(topic).capitalize()}: run the routine steps and report.",
        "# requirements:",
        *_comment_lines("# -", texts),
        "set -eu",
        "",
        "if [ -d . ]; then",
        f'  echo "step 1: checking inputs for {slug_words(topic)}"',
        "fi",
        "count=$(find . -maxdepth 2 -type f | wc -l)",
        'echo "step 2: $count files in the workspace"',
    ]
    if log:
        lines.append(f'echo "run complete" > {log}')
        lines.append(f'echo "step 3: log written to {log}"')
    lines += ['echo "done"', ""]
    return "\n".join(lines)


def json_document(topic: str, texts: Sequence[str], rng: random.Random) -> str:
    rows = _sample_rows(topic, rng, 3)
    document = {
        "name": slug_words(topic),
        "notes": list(texts),
        "items": [{"id": label, "value": value} for label, value in rows],
        "version": 1,
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def text_document(path: str, topic: str, texts: Sequence[str], rng: random.Random) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    if suffix == ".csv":
        rows = _sample_rows(topic, rng)
        lines = ["name,value", *[f"{label},{value}" for label, value in rows], *texts]
        return "\n".join(lines) + "\n"
    if suffix in (".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".env"):
        separator = ": " if suffix in (".yaml", ".yml") else " = "
        setting = f"name{separator}{json.dumps(slug_words(topic))}"
        return "\n".join([*_comment_lines("#", texts), setting, ""])
    if suffix in (".html", ".htm"):
        body = "\n".join(f"    <p>{text}</p>" for text in texts)
        title = slug_words(topic).capitalize()
        return (
            f"<!doctype html>\n<html>\n  <head><title>{title}</title></head>\n  <body>\n"
            f"    <h1>{title}</h1>\n{body}\n  </body>\n</html>\n"
        )
    title = slug_words(topic).capitalize() or "Notes"
    bullets = [f"- {text}" for text in texts] or ["- (to be filled in)"]
    return "\n".join([f"# {title}", "", *bullets, ""])


def file_content(
    path: str, topic: str, texts: Sequence[str], rng: random.Random, *, writes: str = ""
) -> str:
    """Content for ``path`` by its extension, containing every text in ``texts`` verbatim."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix == ".py":
        return python_script(topic, texts, rng, writes=writes)
    if suffix == ".js":
        return node_script(topic, texts, rng)
    if suffix == ".sh":
        return shell_script(topic, texts)
    if suffix == ".json":
        return json_document(topic, texts, rng)
    return text_document(path, topic, texts, rng)


def broken_variant(path: str, content: str) -> Breakage | None:
    """The same file with one realistic syntax error, or None when the type has none."""
    suffix = PurePosixPath(path).suffix.lower()
    targets = {
        ".py": ("def main() -> int:", "def main() -> int"),
        ".js": ("function main() {", "function main( {"),
        ".sh": ("if [ -d . ]; then", "if [ -d . ];"),
        ".json": ('  "version": 1\n}', '  "version": 1,\n}'),
    }
    if suffix not in targets:
        return None
    good, bad = targets[suffix]
    if content.count(good) != 1:
        return None
    line = content[: content.index(good)].count("\n") + 1
    # The repairing edit touches only the first (changed) line.
    return Breakage(content.replace(good, bad), bad.splitlines()[0], good.splitlines()[0], line)


__all__ = [
    "SCRIPT_EXTENSIONS",
    "Breakage",
    "broken_variant",
    "file_content",
    "json_document",
    "node_script",
    "python_script",
    "shell_script",
    "slug_words",
    "text_document",
]
