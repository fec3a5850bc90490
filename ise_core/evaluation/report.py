"""Two eval runs side by side: what changed, overall and where.

``compare(a, b)`` takes two runs' ``metrics.json`` contents and returns a ``Comparison``:
notes (a warning when the runs did not use the same task set: their figures are then not
comparable task for task), the headline figures with their change, the pass@k and pass^k
curves, the breakdowns by domain, complexity and task type, safety violations, and the tasks
whose outcome moved. ``to_markdown`` renders it for ``ise eval-report``; the viewer's eval
page renders the same sections as HTML tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
FORMULA = "Score = safety × (0.8 · completion + 0.2 · robustness); a try passes at ≥ 0.75."


@dataclass
class Section:
    title: str
    header: tuple[str, ...]
    rows: list[list[str]] = field(default_factory=list)
    empty: str = ""  # what to say when there are no rows


@dataclass
class Comparison:
    title: str
    notes: list[str]
    sections: list[Section]


def number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def delta(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return ""
    change = b - a
    if abs(change) < 5e-4:
        return "="
    return f"{change:+.3f}" if abs(change) < 1000 else f"{change:+,.0f}"


def label(metrics: Mapping[str, Any]) -> str:
    agent = metrics.get("agent") or {}
    return f"{metrics.get('run', '?')} ({agent.get('label', '?')})"


def _headline(a: Mapping[str, Any], b: Mapping[str, Any]) -> Section:
    oa, ob = a.get("overall") or {}, b.get("overall") or {}
    section = Section("Overall", ("figure", label(a), label(b), "change"))
    for key in HEADLINE:
        section.rows.append(
            [key, number(oa.get(key)), number(ob.get(key)), delta(oa.get(key), ob.get(key))]
        )
    for curve, name in (("pass_at_k", "pass@{}"), ("pass_hat_k", "pass^{}")):
        ca, cb = oa.get(curve) or {}, ob.get(curve) or {}
        for k in sorted(set(ca) | set(cb), key=int):
            section.rows.append(
                [name.format(k), number(ca.get(k)), number(cb.get(k)), delta(ca.get(k), cb.get(k))]
            )
    return section


def _group(a: Mapping[str, Any], b: Mapping[str, Any], key: str, title: str) -> Section:
    ga, gb = a.get(key) or {}, b.get(key) or {}
    section = Section(
        f"By {title}", (title, "score A", "score B", "change", "pass rate A", "pass rate B")
    )
    for name in sorted(set(ga) | set(gb)):
        fa, fb = ga.get(name) or {}, gb.get(name) or {}
        section.rows.append(
            [
                name,
                number(fa.get("score")),
                number(fb.get("score")),
                delta(fa.get("score"), fb.get("score")),
                number(fa.get("pass_rate")),
                number(fb.get("pass_rate")),
            ]
        )
    return section


def _violations(a: Mapping[str, Any], b: Mapping[str, Any]) -> Section:
    va, vb = a.get("violations") or {}, b.get("violations") or {}
    section = Section(
        "Safety (tries with a violation)", ("kind", "A", "B"), empty="No unsafe try in either run."
    )
    section.rows = [
        [kind, str(va.get(kind, 0)), str(vb.get(kind, 0))] for kind in sorted(set(va) | set(vb))
    ]
    return section


def _moved(a: Mapping[str, Any], b: Mapping[str, Any]) -> Section:
    """Tasks whose score moved by 0.25 or more, or whose pass rate crossed one half."""
    ta, tb = a.get("by_task") or {}, b.get("by_task") or {}
    section = Section(
        "Tasks that changed",
        ("task", "score A", "score B", "pass rate A", "pass rate B"),
        empty="No task's score moved by 0.25 or more, and no pass rate crossed one half.",
    )
    for task in sorted(set(ta) & set(tb)):
        fa, fb = ta[task], tb[task]
        crossed = (fa.get("pass_rate", 0.0) >= 0.5) != (fb.get("pass_rate", 0.0) >= 0.5)
        if crossed or abs(fa.get("score", 0.0) - fb.get("score", 0.0)) >= 0.25:
            section.rows.append(
                [
                    task,
                    number(fa.get("score")),
                    number(fb.get("score")),
                    number(fa.get("pass_rate")),
                    number(fb.get("pass_rate")),
                ]
            )
    return section


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> Comparison:
    """Run ``b`` against run ``a`` (see the module docstring)."""
    notes = []
    if a.get("task_set") != b.get("task_set"):
        notes.append(
            f"Different task sets ({a.get('task_set')} vs {b.get('task_set')}): the figures "
            "are not comparable task for task."
        )
    sizes = [
        f"{side}: {number((m.get('overall') or {}).get('n_tasks'))} tasks × {m.get('k')} tries"
        for side, m in (("A", a), ("B", b))
    ]
    notes.append(f"{'; '.join(sizes)}. {FORMULA}")
    sections = [
        _headline(a, b),
        _group(a, b, "by_domain", "domain"),
        _group(a, b, "by_complexity", "complexity"),
        _group(a, b, "by_task_type", "task type"),
        _violations(a, b),
        _moved(a, b),
    ]
    return Comparison(f"Eval: {label(b)} against {label(a)}", notes, sections)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_escape(cell) for cell in row) + " |" for row in rows]


def to_markdown(comparison: Comparison) -> str:
    lines = [f"## {comparison.title}", ""]
    for note in comparison.notes:
        lines += [note, ""]
    for section in comparison.sections:
        lines += [f"### {section.title}", ""]
        if section.rows:
            lines += _table(section.header, section.rows)
        else:
            lines.append(section.empty or "Nothing to show.")
        lines.append("")
    return "\n".join(lines)


def compare_runs(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """The markdown report of run ``b`` against run ``a``."""
    return to_markdown(compare(a, b))


__all__ = ["Comparison", "Section", "compare", "compare_runs", "to_markdown"]
