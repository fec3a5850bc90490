"""``ise eval``, ``ise eval-report`` and ``ise gate eval`` from the command line: output,
exit codes and the messages for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ise_core.cli import main
from ise_core.evaluation.split import tasks_path
from ise_core.evaluation.tasks import write_tasks
from tests.evaluation.conftest import eval_settings, input_task, sandbox_or_fail


def params_file(root: Path, with_tasks: bool = True) -> Path:
    settings = eval_settings(root, k=1)
    data = settings.model_dump(mode="json")
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    if with_tasks:
        write_tasks(tasks_path(settings), [input_task()])
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
    assert "| pass@1 |" in text and "### By domain" in text
    assert main(["eval-report", "--params", params, "a", "nope"]) == 2
    assert "no eval metrics for run 'nope'" in capsys.readouterr().err


def test_bad_input_gets_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = str(params_file(tmp_path, with_tasks=False))
    assert main(["eval", "--params", params, "--model", "scripted"]) == 2
    assert "eval task file not found" in capsys.readouterr().err
    write_tasks(tasks_path(eval_settings(tmp_path)), [input_task()])
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
