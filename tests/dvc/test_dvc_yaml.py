"""dvc.yaml is complete and precise: params, deps, outs, metrics and plots match the code.

params  each stage lists exactly the keys the stage table says decide its output (its
        fingerprint keys and roles in ise_core/stages.py) plus the keys its gate and dataset
        card read.
deps    checked against what the stages really do: a traced ``dvc repro`` records, for every
        ``ise`` process, the modules it loaded, the functions it ran and the files it opened.
        A stage must list every ise_core module whose code ran in it and every prompt,
        taxonomy or template file it read, and nothing it never loads.
outs    everything a stage writes is an out, a metric or a run record; git sees exactly the
        files a dataset version commits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from ise_core.catalog import Catalog
from ise_core.config import Settings
from ise_core.stages import MEASUREMENTS, measurement
from ise_core.stages import STAGES as PIPELINE
from ise_core.stages import stage as table_stage
from tests.dvc.conftest import Built
from tests.dvc.project import COMMITTED_DATA, REPO, RUN_RECORD_DIRS, RUN_RECORDS, STAGES
from tests.dvc.project import interpolate as project_interpolate

SPEC = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def interpolate(text: str) -> str:
    return project_interpolate(text, PARAMS)


# The stage table's entries in dvc.yaml order: the dataset pipeline, then the measurements.
TABLE = (*PIPELINE, *MEASUREMENTS)
# The module of each stage's gate, from the stage table's "module:function" reference.
GATE_MODULES = {
    entry.name: entry.gate.check.split(":")[0].replace(".", "/") + ".py"
    for entry in TABLE
    if entry.gate is not None
}
BLOCKS = {name for name, value in Settings() if isinstance(value, BaseModel)}
# The eval run dvc.yaml's eval stage writes (eval.run) and the plot folders git versions.
EVAL_RUN = PARAMS["eval"]["run"]
PLOT_DIRS = ("data/sft/plots", f"data/eval/{EVAL_RUN}/plots")
# Settings that say where outputs go; dvc.yaml's outs name those places.
LOCATION_KEYS = {"out_dir"}
# The `ise` command line: argument parsing, printing and signal handling around the stage
# functions.
CLI_MODULES = {
    "ise_core/shutdown.py",  # how the process stops on a signal, never what a stage makes
    "ise_core/cli.py",
    "ise_core/cli_args.py",
    "ise_core/cli_estimate.py",
    "ise_core/cli_eval.py",
    "ise_core/cli_llm.py",
    "ise_core/cli_refresh.py",
    "ise_core/cli_view.py",
    "ise_core/cli_workspace.py",
}
# Programs a stage runs inside the sandbox rather than imports (bound in read-only and started
# there as PID 1), so the trace of the `ise` process never sees them load.
SANDBOX_PROGRAMS = {"ise_core/workspace/supervisor.py"}
COMMANDS = {
    ("intents",): "intents",
    ("gate", "intents"): "intents",
    ("simulate",): "simulate",
    ("collect",): "collect",
    ("gate", "trajectories"): "collect",
    ("export",): "export",
    ("eval",): "eval",
    ("gate", "eval"): "eval",
    ("gate", "sft"): "export",
}


# --- params --------------------------------------------------------------------------------


# The refresh period list: a params file of its own, read whole by the stages it shapes.
LEDGER = "${refresh.out_dir}/periods.json"
LEDGER_STAGES = ("intents", "simulate", "collect")


def listed_params(stage: str) -> list[str]:
    """The params.yaml keys a stage lists (the period list is checked on its own)."""
    keys: list[str] = []
    for entry in SPEC["stages"][stage].get("params", []):
        if isinstance(entry, dict):
            (name, values), *rest = entry.items()
            if name == LEDGER:
                continue
            assert not rest and name == "params.yaml", entry
            keys += values
        else:
            keys.append(entry)
    return keys


def test_the_stages_a_refresh_period_shapes_read_the_period_list() -> None:
    files = Catalog.of(Settings(base_dir=REPO))
    assert LEDGER.replace("${refresh.out_dir}", Settings().refresh.out_dir) == (
        files.periods.relative_to(REPO).as_posix()
    )
    for stage in STAGES:
        listed = [
            entry
            for entry in SPEC["stages"][stage].get("params", [])
            if isinstance(entry, dict) and LEDGER in entry
        ]
        if stage in LEDGER_STAGES:
            assert listed == [{LEDGER: None}], (stage, listed)  # the whole file
        else:
            assert listed == [], stage
    # A clone has the (empty) list, so `dvc repro` finds it.
    assert json.loads(files.periods.read_text(encoding="utf-8")) == {"periods": []}


def covers(key: str, other: str) -> bool:
    return other == key or other.startswith(key + ".")


def minimal(keys: Iterable[str]) -> set[str]:
    """The keys without those a listed parent block already covers."""
    keys = set(keys)
    return {k for k in keys if not any(o != k and covers(o, k) for o in keys)}


def settings_reads(relative: str) -> set[str]:
    """``settings.<block>.<key>`` and ``settings.seed`` read in a module's source."""
    text = (REPO / relative).read_text(encoding="utf-8")
    keys = {
        f"{block}.{key}"
        for block, key in re.findall(r"\bsettings\.(\w+)\.(\w+)\b", text)
        if block in BLOCKS
    }
    if re.search(r"\bsettings\.seed\b", text):
        keys.add("seed")
    # settings.llm.role(...) resolves several keys: handled where it is used.
    return {k for k in keys if k.split(".")[-1] not in LOCATION_KEYS and k != "llm.role"}


def role_keys(role: str) -> set[str]:
    """A fingerprint over a role hashes llm.role(role): each llm key it resolves."""
    resolved = Settings().llm.role(role)  # type: ignore[arg-type]
    return {f"llm.{key}" for key in resolved if key != "seed"} | {f"llm.roles.{role}"}


def card_keys() -> set[str]:
    """The dataset card prints each role's resolved backend, model and sampling."""
    text = (REPO / "ise_core/export/card.py").read_text(encoding="utf-8")
    body = text.split("def role_backend", 1)[1].split("\ndef ", 1)[0]
    used = set(re.findall(r"resolved(?:\[|\.get\()\s*[\"'](\w+)[\"']", body))
    assert {"provider", "model"} <= used, used
    return {f"llm.{key}" for key in used} | {"llm.roles"}


def expected_params(stage: str) -> set[str]:
    entry = measurement(stage) if stage in {m.name for m in MEASUREMENTS} else table_stage(stage)
    # DVC cannot tell which backend plays a role, so it tracks the scripted keys always.
    keys = set(entry.fingerprint_keys) | set(entry.scripted_keys)
    for role in entry.roles:
        keys |= role_keys(role)
    if stage == "export":
        keys |= card_keys()
        keys |= settings_reads("ise_core/export/stage.py") | settings_reads(
            "ise_core/export/card.py"
        )
        keys.add("workspace.root")  # the catalog's sandbox root, redacted from the export
    if stage in GATE_MODULES:
        keys |= settings_reads(GATE_MODULES[stage])
    return minimal(keys)


def test_dvc_stages_are_the_stage_table_in_order() -> None:
    assert list(SPEC["stages"]) == [entry.name for entry in TABLE] == list(STAGES)
    for entry in TABLE:
        command = SPEC["stages"][entry.name]["cmd"]
        expected = f"ise {entry.name}"
        if entry.gate is not None:
            expected += f" && ise gate {entry.gate.name}"
        assert command == expected, entry.name


def test_stage_outputs_are_declared_in_dvc_yaml() -> None:
    files = Catalog.of(Settings(base_dir=REPO))
    declared = declared_outputs()
    for entry in TABLE:
        stage_spec = SPEC["stages"][entry.name]
        listed = {
            interpolate(next(iter(e)) if isinstance(e, dict) else e)
            for field in ("outs", "metrics")
            for e in stage_spec.get(field, [])
        }
        for name in entry.outputs:
            relative = files.path(name).relative_to(REPO).as_posix()
            assert relative in listed, f"{entry.name}: {relative} is not among its outs"
            assert relative in declared


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_lists_exactly_the_params_its_code_reads(stage: str) -> None:
    listed = listed_params(stage)
    assert len(listed) == len(set(listed)), f"{stage}: a key is listed twice"
    assert minimal(listed) == set(listed), f"{stage}: a key is covered by a listed block"
    expected = expected_params(stage)
    assert set(listed) == expected, (
        f"{stage}: missing {sorted(expected - set(listed))}, "
        f"not read {sorted(set(listed) - expected)}"
    )


def _lookup(data: Any, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def test_every_listed_param_is_written_in_params_yaml() -> None:
    # DVC compares params.yaml itself: a key left to the code's default is not tracked and
    # makes `dvc repro` fail with "Parameters ... are missing".
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    missing = [
        (stage, key) for stage in STAGES for key in listed_params(stage) if not _lookup(params, key)
    ]
    assert missing == []


# --- deps, from traced runs ------------------------------------------------------------------


def _relative(paths: Iterable[str], root: Path) -> set[str]:
    prefix = str(root) + "/"
    return {p[len(prefix) :] for p in paths if p.startswith(prefix + "ise_core/")}


def traced(runs: list[tuple[Path, Path]]) -> dict[str, dict[str, set[str]]]:
    """Per stage: modules called / imported and data files opened, over all traced runs."""
    out: dict[str, dict[str, set[str]]] = {
        s: {"called": set(), "imported": set(), "opened": set()} for s in STAGES
    }
    seen = set()
    for root, trace_dir in runs:
        for record_path in sorted(trace_dir.glob("*.json")):
            record = json.loads(record_path.read_text(encoding="utf-8"))
            stage = COMMANDS.get(tuple(record["argv"][1:]))
            if stage is None:
                continue
            seen.add(tuple(record["argv"][1:]))
            bucket = out[stage]
            bucket["imported"] |= _relative(record["imported"], root)
            if record["called"] is not None:
                bucket["called"] |= _relative(record["called"], root) - CLI_MODULES
            bucket["opened"] |= {
                p
                for p in _relative(record["opened"], root)
                if not p.endswith((".py", ".pyc")) and "__pycache__" not in p
            }
    assert seen == set(COMMANDS), f"traced commands: {sorted(seen)}"
    for stage, bucket in out.items():  # the trace itself worked
        package = {"collect": "simulate", "eval": "evaluation"}.get(stage, stage)
        assert f"ise_core/{package}/stage.py" in bucket["called"], f"{stage}: no calls traced"
    return out


def locked_deps(root: Path, stage: str) -> tuple[set[str], set[str]]:
    """(ise_core modules, other ise_core files) a stage depends on, from dvc.lock."""
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))
    code: set[str] = set()
    data: set[str] = set()
    for dep in lock["stages"][stage]["deps"]:
        path = root / dep["path"]
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            relative = file.relative_to(root).as_posix()
            if relative.startswith("ise_core/"):
                (code if relative.endswith(".py") else data).add(relative)
    return code, data


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_deps_are_the_code_and_files_each_stage_runs(stage: str, built: Built) -> None:
    seen = traced([(built.project.root, built.trace_dir)])[stage]
    code, data = locked_deps(built.project.root, stage)

    ran_unlisted = sorted(seen["called"] - code)
    assert ran_unlisted == [], f"{stage} runs code of these modules but does not list them"
    never_loaded = sorted(code - seen["imported"] - SANDBOX_PROGRAMS)
    assert never_loaded == [], f"{stage} lists modules it never loads"

    read_unlisted = sorted(seen["opened"] - data)
    assert read_unlisted == [], f"{stage} reads these files but does not list them"
    # A prompt read only on a rare path (invalid JSON, role drift) is named in the code.
    sources = "".join(
        (built.project.root / module).read_text(encoding="utf-8") for module in seen["imported"]
    )
    never_read = sorted(
        f
        for f in data - seen["opened"]
        if f'"{Path(f).stem}"' not in sources and f'"{Path(f).name}"' not in sources
    )
    assert never_read == [], f"{stage} lists files it never reads"


# --- outs, metrics, plots -------------------------------------------------------------------


def declared_outputs() -> dict[str, dict[str, Any]]:
    """Every out / metric / plot path of every stage, with its options."""
    declared: dict[str, dict[str, Any]] = {}
    for stage in SPEC["stages"].values():
        for field in ("outs", "metrics", "plots"):
            for entry in stage.get(field, []):
                path, options = (
                    next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
                )
                declared[interpolate(path)] = {"field": field, **(options or {})}
    return declared


def test_metrics_and_plots_live_in_git_and_data_in_the_cache() -> None:
    declared = declared_outputs()
    metrics = sorted(p for p, o in declared.items() if o["field"] == "metrics")
    assert metrics == [
        f"data/eval/{EVAL_RUN}/metrics.json",
        "data/intents/stats.json",
        "data/sft/stats.json",
        "data/trajectories/stats.json",
    ]
    for path, options in declared.items():
        in_git = path in metrics or path in PLOT_DIRS
        assert options.get("cache", True) is (not in_git), path
    for entry in SPEC["plots"]:
        ((path, _),) = entry.items()
        path = interpolate(path)
        assert path.startswith(tuple(f"{d}/" for d in PLOT_DIRS)) and path.endswith(".csv"), path


@pytest.mark.slow
def test_every_file_a_stage_writes_is_declared_and_git_sees_a_version(built: Built) -> None:
    root = built.project.root
    declared = declared_outputs()
    undeclared = []
    for path in sorted((root / "data").rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not path.is_file() or path.name in RUN_RECORDS or relative in COMMITTED_DATA:
            continue  # a run record, or an input the clone has (the refresh period list)
        if any(relative.startswith(folder) for folder in RUN_RECORD_DIRS):
            continue
        if not any(relative == d or relative.startswith(d + "/") for d in declared):
            undeclared.append(relative)
    assert undeclared == []
    assert all((root / d).exists() for d in declared), "a declared output was not written"

    # What git sees after a build is exactly what a dataset version commits.
    status = built.project.git("status", "--porcelain", "--untracked-files=all").stdout
    untracked = sorted(line[3:] for line in status.splitlines())
    plots = sorted(p.relative_to(root).as_posix() for d in PLOT_DIRS for p in (root / d).iterdir())
    stats = [f"data/{s}/stats.json" for s in ("intents", "sft", "trajectories")]
    eval_metrics = f"data/eval/{EVAL_RUN}/metrics.json"
    expected = sorted(["dvc.lock", *stats, eval_metrics, *plots])
    assert untracked == expected


@pytest.mark.slow
def test_metrics_show_and_plots_show_read_the_stats(built: Built) -> None:
    metrics = built.project.dvc_json("metrics", "show", "--json")
    data = next(iter(metrics.values()))["data"]
    assert data["data/intents/stats.json"]["data"]["n_unique"] >= 1
    assert data["data/trajectories/stats.json"]["data"]["n_kept"] >= 1
    sft = data["data/sft/stats.json"]["data"]
    assert sft["n_train"] + sft["n_valid"] == data["data/trajectories/stats.json"]["data"]["n_kept"]

    plots = built.project.dvc_json("plots", "show", "--json")
    for entry in SPEC["plots"]:
        ((path, _),) = entry.items()
        path = interpolate(path)
        assert path in plots["data"], path
        values = plots["data"][path][0]["content"]["data"]["values"]
        assert values, f"{path} has no points"
