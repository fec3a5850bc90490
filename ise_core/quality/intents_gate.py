"""Gate after the intent stage: is ``intents.jsonl`` sound and diverse enough to simulate?

Reads ``<intents.out_dir>/intents.jsonl`` and ``stats.json``; writes ``gate_result.json``
beside them. Lines are read leniently (a malformed record is a finding, not a crash), so a
planted empty request fails the gate with its line named rather than stopping the read.
"""

from __future__ import annotations

import math
from typing import Any

from ise_core.catalog import Catalog
from ise_core.config import Settings
from ise_core.quality.runner import (
    Expect,
    GateReport,
    Table,
    run_gate,
    schema_problem,
)
from ise_core.records import COMPLEXITIES, Intent, normalize_text, read_json, read_raw_jsonl


def complexity_bounds(prior: float, n: int, tolerance: float, sigmas: float) -> tuple[float, float]:
    """Allowed share of one complexity level among ``n`` intents.

    The larger of the fixed tolerance and ``sigmas`` binomial standard errors: a 200-intent
    demo legitimately strays further from the priors than a 50,000-intent run.
    """
    spread = sigmas * math.sqrt(prior * (1 - prior) / n) if n else 1.0
    margin = max(tolerance, spread)
    return round(max(0.0, prior - margin), 4), round(min(1.0, prior + margin), 4)


def _text_length(value: Any) -> int:
    return len(value.strip()) if isinstance(value, str) else 0


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    return value if isinstance(value, list) else []


def _intent_row(lineno: int, data: dict[str, Any]) -> dict[str, Any]:
    domains = _list(data, "domains")
    tasks = _list(data, "tasks")
    task_domains = [t.get("domain") for t in tasks if isinstance(t, dict)]
    checks = _list(data, "checks")
    request = data.get("request")
    return {
        "line": f"intents.jsonl:{lineno}",
        "id": str(data.get("id", "")),
        "schema_problem": schema_problem(data, Intent),
        "normalized_request": normalize_text(request if isinstance(request, str) else ""),
        "request_chars": _text_length(data.get("request")),
        "goal_chars": _text_length(data.get("goal")),
        "n_checks": len(checks),
        "n_domains": len(set(map(str, domains))),
        "n_tasks": len(tasks),
        "tasks_in_domains": all(d in domains for d in task_domains) and bool(task_domains),
        "complexity": str(data.get("complexity", "")),
    }


def gate_intents(settings: Settings) -> GateReport:
    """Validate the unique intents and their statistics against ``gates.intents``."""
    import pandas as pd

    files = Catalog.of(settings)
    rows = [_intent_row(n, d) for n, d in read_raw_jsonl(files.intents)]
    stats = read_json(files.intents_stats)
    intents = pd.DataFrame(rows, columns=list(_intent_row(0, {}).keys()))
    counts = intents["complexity"].value_counts().to_dict() if rows else {}
    summary_row, summary_checks = _stats_checks(settings, len(rows), counts, stats)
    return run_gate(
        "intents",
        [
            Table("intents", intents, "line", _intent_checks(settings)),
            Table("intent_stats", pd.DataFrame([summary_row]), "source", summary_checks),
        ],
        files.intents_gate_result,
    )


def _intent_checks(settings: Settings) -> list[Expect]:
    d_low, d_high = settings.intents.domains_per_intent
    t_low, t_high = settings.intents.tasks_per_intent
    return [
        Expect("at least one intent", "ExpectTableRowCountToBeBetween", {"min_value": 1}),
        Expect(
            "every line is a valid Intent record",
            "ExpectColumnValuesToBeInSet",
            {"column": "schema_problem", "value_set": [""]},
            "no schema problem",
        ),
        Expect("intent ids are unique", "ExpectColumnValuesToBeUnique", {"column": "id"}),
        Expect(
            "normalised requests are unique",
            "ExpectColumnValuesToBeUnique",
            {"column": "normalized_request"},
        ),
        Expect(
            "no empty request",
            "ExpectColumnValuesToBeBetween",
            {"column": "request_chars", "min_value": 1},
            "a non-blank request",
        ),
        Expect(
            "no empty goal",
            "ExpectColumnValuesToBeBetween",
            {"column": "goal_chars", "min_value": 1},
            "a non-blank goal",
        ),
        Expect(
            "at least one check per intent",
            "ExpectColumnValuesToBeBetween",
            {"column": "n_checks", "min_value": 1},
        ),
        Expect(
            f"{d_low}-{d_high} domains per intent",
            "ExpectColumnValuesToBeBetween",
            {"column": "n_domains", "min_value": d_low, "max_value": d_high},
        ),
        Expect(
            f"{t_low}-{t_high} tasks per intent",
            "ExpectColumnValuesToBeBetween",
            {"column": "n_tasks", "min_value": t_low, "max_value": t_high},
        ),
        Expect(
            "every task belongs to one of the intent's domains",
            "ExpectColumnValuesToBeInSet",
            {"column": "tasks_in_domains", "value_set": [True]},
        ),
        Expect(
            "complexity is a known level",
            "ExpectColumnValuesToBeInSet",
            {"column": "complexity", "value_set": list(COMPLEXITIES)},
        ),
    ]


def _stats_checks(
    settings: Settings, n: int, counts: dict[str, int], stats: Any
) -> tuple[dict[str, Any], list[Expect]]:
    """The one-row table of shares and reported statistics, and its expectations."""
    params = settings.gates.intents
    summary_row: dict[str, Any] = {"source": "stats.json"}
    summary_checks: list[Expect] = []
    for level, prior in settings.intents.complexity_priors.as_dict().items():
        summary_row[f"share_{level}"] = counts.get(level, 0) / n if n else None
        low, high = complexity_bounds(
            prior, n, params.complexity_tolerance, params.complexity_sigmas
        )
        summary_checks.append(
            Expect(
                f"share of {level} intents near its prior {prior}",
                "ExpectColumnValuesToBeBetween",
                {"column": f"share_{level}", "min_value": low, "max_value": high},
            )
        )
    for key in ("unique_share", "vendi_score", "n_unique"):
        value = stats.get(key) if isinstance(stats, dict) else None
        summary_row[key] = float(value) if isinstance(value, int | float) else None
        summary_checks.append(
            Expect(
                f"stats.json reports {key}",
                "ExpectColumnValuesToNotBeNull",
                {"column": key},
                "a number",
            )
        )
    min_vendi = round(min(params.min_vendi_score, params.min_vendi_share * n), 4)
    summary_checks += [
        Expect(
            "unique share at or above the minimum",
            "ExpectColumnValuesToBeBetween",
            {"column": "unique_share", "min_value": params.min_unique_share},
        ),
        Expect(
            "Vendi score at or above the minimum",
            "ExpectColumnValuesToBeBetween",
            {"column": "vendi_score", "min_value": min_vendi},
            f"value >= {min_vendi} (min of {params.min_vendi_score} and "
            f"{params.min_vendi_share} x {n} intents)",
        ),
        Expect(
            "stats.json n_unique matches intents.jsonl",
            "ExpectColumnValuesToBeBetween",
            {"column": "n_unique", "min_value": n, "max_value": n},
        ),
    ]
    return summary_row, summary_checks
