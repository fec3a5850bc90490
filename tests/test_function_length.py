"""Every function in ise_core reads at once: none is longer than 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import ise_core

PACKAGE = Path(ise_core.__file__).resolve().parent
LIMIT = 80


def test_no_function_in_ise_core_is_over_80_lines() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > LIMIT:
                    where = path.relative_to(PACKAGE.parent)
                    too_long.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    assert too_long == []
