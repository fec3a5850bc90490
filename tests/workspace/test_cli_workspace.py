"""``workspace run|reap|backends`` through the subparsers that ``register`` adds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from ise_core.cli_workspace import register
from ise_core.errors import ISEError
from tests.workspace.fixtures import require_backend


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ise")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ISEError as exc:
        return exc.exit_code
    return code


@pytest.fixture
def params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(f"workspace:\n  root: {tmp_path / 'sandboxes'}\n  call_timeout_s: 5\n")
    return path


def _line(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    value: dict[str, object] = json.loads(out)
    return value


def test_run_prints_one_json_line(params: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_backend("local")
    code = run_cli(
        [
            "workspace",
            "run",
            "--backend",
            "local",
            "--params",
            str(params),
            "--",
            "echo",
            "hello world",
        ]
    )
    line = _line(capsys)
    assert code == 0
    assert set(line) == {"ok", "exit_code", "output", "duration_s"}
    assert line["ok"] is True and line["exit_code"] == 0 and line["output"] == "hello world\n"
    assert isinstance(line["duration_s"], float)
    assert not list((params.parent / "sandboxes").glob("ise-sbx-*"))


def test_run_failures_and_bad_input(params: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_backend("local")
    base = ["workspace", "run", "--backend", "local", "--params", str(params)]
    assert run_cli([*base, "--", "echo oops >&2; exit 5"]) == 1
    line = _line(capsys)
    assert line == {
        "ok": False,
        "exit_code": 5,
        "output": "oops\n",
        "duration_s": line["duration_s"],
    }
    assert run_cli([*base, "--timeout", "0.3", "--", "sleep 5"]) == 1
    timed_out = _line(capsys)
    assert timed_out["ok"] is False and timed_out["exit_code"] is None
    assert run_cli([*base, "--"]) == 2
    assert (
        run_cli(["workspace", "run", "--params", str(params.parent / "missing.yaml"), "--", "true"])
        == 2
    )


def test_reap_and_backends(params: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["workspace", "reap", "--params", str(params)]) == 0
    report = _line(capsys)
    assert report["directories"] == [] and report["errors"] == []
    assert run_cli(["workspace", "backends", "--params", str(params)]) == 0
    status = _line(capsys)
    assert set(status) == {"local", "docker"}
