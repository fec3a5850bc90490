"""``ise eval``, ``ise eval-report`` and ``ise gate eval`` from the command line: output,
exit codes and the messages for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ise_core.catalog import Catalog
from ise_core.cli import main
from ise_core.evaluation.tasks import write_tasks
from tests.evaluation.conftest import eval_settings, input_task, sandbox_or_fail


def params_file(root: Path, with_tasks: bool = True) -> Path:
    settings = eval_settings(root, k=1)
    data = settings.model_dump(mode="json")
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    if with_tasks:
        write_tasks(Catalog.of(settings).eval_tasks, [input_task()])
    return path


def test_eval_then_report_and_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sandbox_or_fail()
    params = str(params_file(tmp_path))
    assert main(["eval", "--params", params, "--model", "scripted", "--run", "a", "--gate"]) == 0
    out = capsys.readouterr().out
    assert "eval: agent=scripted, tasks=1, k=1, score=" in out and "gate eval: passed" in out
    assert main(["eval", "--params", params, "--model", "scripted:careless", "--run", "b"]) == 0
    capsys.readouterr()
    report = tmp_path / "report.md"
    assert main(["eval-report", "--params", params, "a", "b", "--out", str(report)]) == 0
    text = report.read_text()
    assert text.startswith("## Eval: b (scripted:careless) against a (scripted)")
    assert "### Overall" in text
    assert "| pass@1 |" in text and "### By domain" in text
    assert main(["eval-report", "--params", params, "a", "nope"]) == 2
    assert "no eval metrics for run 'nope'" in capsys.readouterr().err


def test_bad_input_gets_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = str(params_file(tmp_path, with_tasks=False))
    assert main(["eval", "--params", params, "--model", "scripted"]) == 2
    assert "eval task file not found" in capsys.readouterr().err
    write_tasks(Catalog.of(eval_settings(tmp_path)).eval_tasks, [input_task()])
    assert main(["eval", "--params", params, "--model", "gpt-9"]) == 2
    assert "--model gpt-9: no endpoint to reach it" in capsys.readouterr().err
    assert main(["eval", "--params", params, "--model", "scripted:sloppy"]) == 2
    assert "unknown scripted agent profile" in capsys.readouterr().err
    assert main(["eval", "--params", params, "--only", "ev-nope"]) == 2
    assert "unknown eval task id(s) ev-nope" in capsys.readouterr().err
    assert main(["eval", "--params", params, "--run", "../x"]) == 2
    assert "key 'run': String should match pattern" in capsys.readouterr().err
    assert main(["gate", "eval", "--params", params]) == 2
    assert "no eval run 'latest' to check" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["eval", "--params", params, "--k", "0"])
    assert exited.value.code == 2


def test_an_empty_task_set_is_a_quiet_no_op(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without an eval split `ise intents` freezes no task: `ise eval` says so, writes empty
    outputs (a pipeline's eval stage still has them) and leaves no history line."""
    params = str(params_file(tmp_path, with_tasks=False))
    write_tasks(Catalog.of(eval_settings(tmp_path)).eval_tasks, [])
    assert main(["eval", "--params", params, "--model", "scripted"]) == 0
    assert "eval: no tasks" in capsys.readouterr().out
    run = tmp_path / "data" / "eval" / "latest"
    assert (run / "results.jsonl").read_text() == ""
    assert (run / "tasks").is_dir() and (run / "episodes").is_dir()
    assert (run / "plots" / "pass_at_k.csv").read_text() == "k,pass_at_k,pass_hat_k\n"
    assert not (tmp_path / "data" / "eval" / "history.jsonl").exists()
    assert main(["gate", "eval", "--params", params]) == 0


def test_an_endpoint_key_that_is_not_set_stops_before_any_sandbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    params = str(params_file(tmp_path))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # the hosted endpoint needs one
    code = main(
        ["eval", "--params", params, "--model", "gpt-x", "--endpoint", "https://api.openai.com/v1"]
    )
    assert code == 2
    assert "environment variable OPENAI_API_KEY is not set" in capsys.readouterr().err
    assert not list((tmp_path / "sandboxes").glob("ise-sbx-*"))
