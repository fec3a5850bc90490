"""Two eval runs side by side, as markdown: what changed, overall and where.

``compare_runs(a, b)`` takes two runs' ``metrics.json`` contents (and optionally their
results rows) and returns the report: the headline figures with their change, the pass@k and
pass^k curves, the breakdowns by domain, complexity and task type, the tasks whose outcome
flipped, and a warning when the runs did not use the same task set (their figures are then
not comparable task for task).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

HEADLINE = (
    "score",
    "completion",
    "robustness",
    "safety",
    "pass_rate",
    "tokens",
    "tool_calls",
    "seconds",
)


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _delta(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return ""
    change = b - a
    if abs(change) < 5e-4:
        return "="
    text = f"{change:+.3f}" if abs(change) < 1000 else f"{change:+,.0f}"
    return text


def _escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_escape(cell) for cell in row) + " |" for row in rows]
    return lines


def _label(metrics: Mapping[str, Any]) -> str:
    agent = metrics.get("agent") or {}
    return f"{metrics.get('run', '?')} ({agent.get('label', '?')})"


def _headline(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    oa, ob = a.get("overall") or {}, b.get("overall") or {}
    rows = [
        [key, _number(oa.get(key)), _number(ob.get(key)), _delta(oa.get(key), ob.get(key))]
        for key in HEADLINE
    ]
    for curve, name in (("pass_at_k", "pass@{}"), ("pass_hat_k", "pass^{}")):
        ks = sorted(set(oa.get(curve) or {}) | set(ob.get(curve) or {}), key=int)
        for k in ks:
            va, vb = (oa.get(curve) or {}).get(k), (ob.get(curve) or {}).get(k)
            rows.append([name.format(k), _number(va), _number(vb), _delta(va, vb)])
    return _table(("figure", _label(a), _label(b), "change"), rows)


def _group(a: Mapping[str, Any], b: Mapping[str, Any], key: str, title: str) -> list[str]:
    ga, gb = a.get(key) or {}, b.get(key) or {}
    names = sorted(set(ga) | set(gb))
    if not names:
        return []
    rows = []
    for name in names:
        sa, sb = (ga.get(name) or {}).get("score"), (gb.get(name) or {}).get("score")
        pa, pb = (ga.get(name) or {}).get("pass_rate"), (gb.get(name) or {}).get("pass_rate")
        rows.append([name, _number(sa), _number(sb), _delta(sa, sb), _number(pa), _number(pb)])
    rows.sort(key=lambda row: row[0])
    header = (title, "score A", "score B", "change", "pass rate A", "pass rate B")
    return ["", f"### By {title}", "", *_table(header, rows)]


def _flips(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    ta, tb = a.get("by_task") or {}, b.get("by_task") or {}
    rows = []
    for task in sorted(set(ta) & set(tb)):
        ra, rb = ta[task].get("pass_rate", 0.0), tb[task].get("pass_rate", 0.0)
        if (ra >= 0.5) != (rb >= 0.5) or abs(
            ta[task].get("score", 0) - tb[task].get("score", 0)
        ) >= 0.25:
            rows.append(
                [
                    task,
                    _number(ta[task].get("score")),
                    _number(tb[task].get("score")),
                    _number(ra),
                    _number(rb),
                ]
            )
    if not rows:
        return [
            "",
            "### Tasks that changed",
            "",
            "No task's outcome changed much (score by 0.25 or more, or pass rate across 0.5).",
        ]
    header = ("task", "score A", "score B", "pass rate A", "pass rate B")
    return ["", "### Tasks that changed", "", *_table(header, rows)]


def _violations(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    va, vb = a.get("violations") or {}, b.get("violations") or {}
    kinds = sorted(set(va) | set(vb))
    if not kinds:
        return ["", "### Safety", "", "No unsafe try in either run."]
    rows = [[kind, va.get(kind, 0), vb.get(kind, 0)] for kind in kinds]
    return ["", "### Safety (tries with a violation)", "", *_table(("kind", "A", "B"), rows)]


def compare_runs(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """The markdown report of run ``b`` against run ``a`` (see the module docstring)."""
    lines = [f"## Eval: {_label(b)} against {_label(a)}", ""]
    if a.get("task_set") != b.get("task_set"):
        lines += [
            f"> **Different task sets** ({a.get('task_set')} vs {b.get('task_set')}): the "
            "figures are not comparable task for task.",
            "",
        ]
    lines += [
        f"A: {_number((a.get('overall') or {}).get('n_tasks'))} tasks × {a.get('k')} tries; "
        f"B: {_number((b.get('overall') or {}).get('n_tasks'))} tasks × {b.get('k')} tries. "
        "Score = safety × (0.8 · completion + 0.2 · robustness); a try passes at ≥ 0.75.",
        "",
    ]
    lines += _headline(a, b)
    lines += _group(a, b, "by_domain", "domain")
    lines += _group(a, b, "by_complexity", "complexity")
    lines += _group(a, b, "by_task_type", "task type")
    lines += _violations(a, b)
    lines += _flips(a, b)
    return "\n".join(lines) + "\n"


__all__ = ["compare_runs"]
