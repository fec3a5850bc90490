"""Run code-defined Great Expectations suites over pandas tables and report the failures.

A gate describes its checks as ``Table``s (a dataframe, the columns that name a row, and the
``Expect``ations on it); this module turns them into GX 1.x suites, validates each table as
one whole-dataframe batch in an ephemeral context, writes the full validation results as
JSON, and summarises every failed expectation as ``{expectation, observed, expected}``.

Great Expectations (≈2.5 s to import) and pandas are imported lazily; the context is created
once per process and reused.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from ise_core.errors import validation_problems
from ise_core.records import write_json

if TYPE_CHECKING:
    import pandas as pd

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Expect:
    """One expectation: a readable label, the GX class name and its arguments."""

    label: str
    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    expected: str = ""  # how to say what was expected; derived from kwargs when empty


@dataclass
class Table:
    name: str
    frame: pd.DataFrame
    row_id: str  # the column that names a row in the report ("train.jsonl:3", a file name)
    expectations: list[Expect]


@dataclass
class GateReport:
    """The outcome of one gate. ``passed`` False is a data problem (exit 1), not an error."""

    gate: str
    passed: bool
    failures: list[dict[str, Any]]
    report: str
    result_path: Path | None = None
    n_expectations: int = 0

    @property
    def text(self) -> str:
        return self.report

    def summary(self) -> str:
        """One line: how many expectations held, and where the full result is."""
        held = self.n_expectations - len(self.failures)
        return f"{held} of {self.n_expectations} expectations held; result {self.result_path}"


@functools.cache
def _context() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _describe_expected(expect: Expect) -> str:
    if expect.expected:
        return expect.expected
    kw = expect.kwargs
    if "value_set" in kw:
        return f"every value in {sorted(kw['value_set'], key=str)}"
    if "value" in kw:
        return f"exactly {kw['value']}"
    low, high = kw.get("min_value"), kw.get("max_value")
    subject = "mean" if "Mean" in expect.kind else "value"
    if low is not None and high is not None:
        return f"{subject} {low}" if low == high else f"{subject} between {low} and {high}"
    if low is not None:
        return f"{subject} >= {low}"
    if high is not None:
        return f"{subject} <= {high}"
    if "Unique" in expect.kind:
        return "every value unique"
    if "NotBeNull" in expect.kind:
        return "no missing values"
    return expect.kind


def _describe_observed(result: dict[str, Any], column: str | None, row_id: str) -> str:
    exception = result.get("exception_info") or {}
    if exception.get("raised_exception"):
        return f"error: {exception.get('exception_message')}"
    body = result.get("result") or {}
    if "observed_value" in body:
        return _short(body["observed_value"])
    count, total = body.get("unexpected_count"), body.get("element_count")
    if count is None:
        return "(no observation)"
    examples = []
    for row in (body.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES]:
        name = row.get(row_id)
        if column and column != row_id:
            examples.append(f"{name} ({_short(row.get(column))})")
        else:
            examples.append(str(name))
    if total == 1 and count == 1 and examples:
        return examples[0].replace(" (", ": ", 1).rstrip(")")
    text = f"{count} of {total} rows unexpected"
    return text + (f", e.g. {', '.join(examples)}" if examples else "")


def _short(value: Any, limit: int = 100) -> str:
    """A value as it reads in a report: numpy scalars as plain numbers, long text cut."""
    if hasattr(value, "item"):
        value = value.item()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _validate(table: Table) -> dict[str, Any]:
    import great_expectations as gx

    context = _context()
    source = context.data_sources.add_or_update_pandas(f"ise_{table.name}")
    asset = source.add_dataframe_asset(table.name)
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(
        batch_parameters={"dataframe": table.frame}
    )
    suite = gx.ExpectationSuite(name=f"ise_{table.name}")
    for expect in table.expectations:
        cls = getattr(gx.expectations, expect.kind)
        suite.add_expectation(cls(**expect.kwargs, meta={"label": expect.label}))
    result = batch.validate(
        suite,
        result_format={"result_format": "SUMMARY", "unexpected_index_column_names": [table.row_id]},
    )
    return _without_load_time(dict(result.to_json_dict()))


def _without_load_time(validation: dict[str, Any]) -> dict[str, Any]:
    """The validation without the moment GX loaded the batch: that says when the gate ran,
    not what it found, and a re-run over the same data must write the same result."""
    markers = (validation.get("meta") or {}).get("batch_markers")
    if isinstance(markers, dict):
        markers.pop("ge_load_time", None)
    return validation


def parses_as_json(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def schema_problem(data: Any, model: type[BaseModel]) -> str:
    """'' when ``data`` validates as ``model``, else the first problem, for a gate column."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return validation_problems(exc, limit=1)[0]
    return ""


def run_gate(
    gate: str,
    tables: Sequence[Table],
    result_path: Path,
    context: dict[str, Any] | None = None,
) -> GateReport:
    """Validate every table, write all results to ``result_path`` and report failures.

    ``context`` holds facts about the inputs worth keeping with the result (counts skipped).
    """
    for table in tables:
        labels = [e.label for e in table.expectations]
        if len(set(labels)) != len(labels):
            raise ValueError(f"table {table.name}: expectation labels must be unique")
    failures: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    n_expectations = 0
    for table in tables:
        validation = _validate(table)
        results[table.name] = validation
        by_label = {e.label: e for e in table.expectations}
        n_expectations += len(table.expectations)
        outcomes = {
            r["expectation_config"].get("meta", {}).get("label"): r for r in validation["results"]
        }
        # Report in the order the gate declared its expectations, not GX's order.
        for expect in table.expectations:
            outcome = outcomes.get(expect.label)
            if outcome is None or outcome["success"]:
                continue
            column = by_label[expect.label].kwargs.get("column")
            failures.append(
                {
                    "table": table.name,
                    "expectation": expect.label,
                    "type": outcome["expectation_config"]["type"],
                    "column": column,
                    "observed": _describe_observed(outcome, column, table.row_id),
                    "expected": _describe_expected(expect),
                }
            )
    passed = not failures
    write_json(
        result_path,
        {
            "gate": gate,
            "success": passed,
            "failures": failures,
            "context": context or {},
            "validations": results,
        },
    )
    return GateReport(
        gate=gate,
        passed=passed,
        failures=failures,
        report=format_report(gate, failures, n_expectations, result_path),
        result_path=result_path,
        n_expectations=n_expectations,
    )


def _kind_name(snake: str) -> str:
    """``expect_column_mean_to_be_between`` → ``ExpectColumnMeanToBeBetween``."""
    return "".join(part.title() for part in snake.split("_"))


def describe_outcome(outcome: dict[str, Any]) -> dict[str, Any]:
    """One expectation of a saved validation result as a report row: its label, kind,
    column, what was observed, the bound it was held to, and whether it held."""
    config = outcome.get("expectation_config") or {}
    kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
    column = kwargs.get("column")
    label = str((config.get("meta") or {}).get("label") or config.get("type", ""))
    indexed = (outcome.get("result") or {}).get("partial_unexpected_index_list") or [{}]
    # The saved result names its rows by the table's id column: the row key that is not
    # the checked column.
    row_id = next((key for key in indexed[0] if key != column), column or "")
    expect = Expect(label=label, kind=_kind_name(str(config.get("type", ""))), kwargs=kwargs)
    return {
        "expectation": label,
        "type": config.get("type", ""),
        "column": column,
        "observed": _describe_observed(outcome, column, row_id),
        "expected": _describe_expected(expect),
        "success": bool(outcome.get("success")),
    }


def result_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every expectation of a gate's ``gate_result.json`` as a row (``table`` added)."""
    rows = []
    for table, validation in (result.get("validations") or {}).items():
        for outcome in (validation or {}).get("results") or []:
            rows.append({"table": table, **describe_outcome(outcome)})
    return rows


def format_report(
    gate: str, failures: Sequence[dict[str, Any]], n_expectations: int, result_path: Path
) -> str:
    if not failures:
        return f"gate {gate}: passed ({n_expectations} expectations)\nfull result: {result_path}\n"
    lines = [f"gate {gate}: FAILED ({len(failures)} of {n_expectations} expectations)"]
    for failure in failures:
        where = failure["table"] + (f".{failure['column']}" if failure["column"] else "")
        lines.append(f"  FAIL {failure['expectation']}  [{where}]")
        lines.append(f"       observed: {failure['observed']}")
        lines.append(f"       expected: {failure['expected']}")
    lines.append(f"full result: {result_path}")
    return "\n".join(lines) + "\n"
