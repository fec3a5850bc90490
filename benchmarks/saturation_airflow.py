"""The same simulation work through the Airflow DAG: what each mapped task instance costs.

dags/ise_refresh.py maps `simulate` over batches of ``simulate.intents_per_task`` intent
ids. This benchmark runs the whole DAG with ``dag.test()`` against a private AIRFLOW_HOME
(SQLite), with the user and the agent on the loopback server (tests/fakes/both_roles.py,
its own process, fixed latency), once per setting, and then runs `ise simulate` over the
very intents the DAG produced, with the same params, for reference. Two ways of running:

* ``dag.test()`` without an executor (``--per-task``): task instances run one after another
  in this one process, so mapped instances never overlap and the ratio to the CLI (which
  runs ``simulate.concurrency`` episodes at once in one event loop) is large by design;
* ``dag.test(use_executor=True)`` with the LocalExecutor (``--local-per-task``, at
  ``[core] parallelism`` = ``--parallelism``) and an API server on 127.0.0.1: each instance
  runs in its own worker process, up to ``parallelism`` at once, as under the scheduler
  (which would also apply the pool and ``max_active_tis_per_dag``).

Per run it reports:

* ``span_s``: end of plan_simulation to start of collect, i.e. the simulate stage as the DAG
  run sees it (scheduling included);
* ``overhead_per_ti_ms``: (slots x span - time spent inside the stage function, summed) /
  instances, slots = instances that can run at once: everything Airflow adds per mapped
  instance (task start-up and bookkeeping, settings, XCom, gaps, idle slots);
* ``inside_ti_overhead_ms``: mean (instance duration - stage time);
* ``ratio_to_cli``: span / wall time of `ise simulate` on the same intents (and the whole
  DAG run's wall time over it, for context).

    python benchmarks/saturation_airflow.py          # 8 intents; dag.test() at 1 and 4 per
                                                     # task, LocalExecutor at 4 per task, 2 slots
    python benchmarks/saturation_airflow.py --intents 24 --per-task 1 8 24 --local-per-task
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    KEY_ENV,
    RESULTS,
    ROOT,
    LoopbackServer,
    bench_params,
    load_average,
    machine_info,
    now_iso,
    rounded,
    run_simulate,
)
from ise_core.records import write_json

BIN = Path(sys.executable).parent

# dag.test() of ise_refresh in a fresh interpreter (the DAG reads ISE_PARAMS when parsed);
# prints one line with every task instance's timing and each simulate instance's XCom.
_DAG_TEST = r"""
import json, runpy, sys, time
wall0 = time.perf_counter()
namespace = runpy.run_path(sys.argv[1], run_name="ise_dag_under_benchmark")
dag = namespace["ise_refresh_dag"]
run = dag.test(use_executor=sys.argv[2] == "executor")
wall_s = time.perf_counter() - wall0
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
with create_session() as session:
    tis = session.query(TaskInstance).filter(
        TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run.run_id
    ).all()
    rows = [
        {"task_id": ti.task_id, "map_index": ti.map_index, "state": str(ti.state),
         "start": ti.start_date.isoformat() if ti.start_date else None,
         "end": ti.end_date.isoformat() if ti.end_date else None}
        for ti in tis
    ]
    xcoms = session.query(XComModel).filter(
        XComModel.dag_id == dag.dag_id, XComModel.run_id == run.run_id,
        XComModel.task_id == "simulate", XComModel.key == "return_value",
    ).all()
    values = {}
    for x in xcoms:
        value = x.value
        if isinstance(value, (str, bytes)):
            value = json.loads(value)
        values[x.map_index] = value
print("DAG_TEST_RESULT " + json.dumps(
    {"state": str(run.state), "wall_s": wall_s, "tis": rows, "simulate_values": values}
))
"""


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "DVC_NO_ANALYTICS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            KEY_ENV: "sk-benchmark-not-a-real-key",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.pop("AIRFLOW_VAR_ISE_PARAMS", None)
    env.update(extra)
    return env


def migrate(home: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"],
        env=airflow_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"airflow db migrate failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - started


def dag_test(
    home: Path,
    params: Path,
    log: Path,
    timeout_s: float,
    executor_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``dag.test()`` in a fresh interpreter; with ``executor_env``, through the executor."""
    mode = "executor" if executor_env else "in-process"
    executor_env = executor_env or {}
    with log.open("w", encoding="utf-8") as handle:
        done = subprocess.run(
            [sys.executable, "-c", _DAG_TEST, str(ROOT / "dags" / "ise_refresh.py"), mode],
            env=airflow_env(home, ISE_PARAMS=str(params), **executor_env),
            cwd=params.parent,
            stdout=subprocess.PIPE,
            stderr=handle,
            text=True,
            timeout=timeout_s,
        )
        handle.write(done.stdout)
    for line in done.stdout.splitlines():
        if line.startswith("DAG_TEST_RESULT "):
            result: dict[str, Any] = json.loads(line[len("DAG_TEST_RESULT ") :])
            return result
    tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
    raise SystemExit(f"dag.test() printed no result (exit {done.returncode}):\n{tail}")


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def simulate_figures(result: dict[str, Any], slots: int) -> dict[str, Any]:
    """Span, durations and stage time of the mapped simulate instances of one run."""
    # map_index -1 is the task before expansion (not run); the instances are 0..n-1.
    mapped = [
        row for row in result["tis"] if row["task_id"] == "simulate" and row["map_index"] >= 0
    ]
    single = {row["task_id"]: row for row in result["tis"] if row["map_index"] < 0}
    if (
        result["state"] != "success"
        or not mapped
        or any(row["start"] is None or row["end"] is None for row in mapped)
    ):
        states = {(row["task_id"], row["map_index"]): row["state"] for row in result["tis"]}
        raise SystemExit(f"the DAG run did not succeed ({result['state']}): {states}")
    span_s = _seconds(single["plan_simulation"]["end"], single["collect"]["start"])
    instances_span_s = _seconds(min(r["start"] for r in mapped), max(r["end"] for r in mapped))
    durations = [_seconds(row["start"], row["end"]) for row in mapped]
    values = result["simulate_values"]
    stage_s = [float(values[str(row["map_index"])]["elapsed_s"]) for row in mapped]
    episodes = sum(int(values[str(row["map_index"])]["n_run"]) for row in mapped)
    n = len(mapped)
    slots = min(slots, n)
    others = {
        task_id: round(_seconds(row["start"], row["end"]), 2)
        for task_id, row in single.items()
        if task_id != "simulate" and row["start"] and row["end"]
    }
    return {
        "mapped_instances": n,
        "instances_at_once": slots,
        "episodes": episodes,
        "span_s": round(span_s, 3),
        "instances_span_s": round(instances_span_s, 3),
        "stage_time_s": round(sum(stage_s), 3),
        "mean_ti_duration_s": round(sum(durations) / n, 3),
        "overhead_per_ti_ms": round(1000 * (slots * span_s - sum(stage_s)) / n, 1),
        "inside_ti_overhead_ms": round(1000 * (sum(durations) - sum(stage_s)) / n, 1),
        "other_tasks_s": others,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def api_server(home: Path, parallelism: int, log: Path) -> Iterator[dict[str, str]]:
    """An API server on a free loopback port (LocalExecutor workers report to its execution
    API); yields the environment a ``dag.test(use_executor=True)`` needs; stopped after."""
    port = _free_port()
    env = {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
    }
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [str(BIN / "airflow"), "api-server"],
            env=airflow_env(home, **env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                url = f"http://127.0.0.1:{port}/api/v2/version"
                with urllib.request.urlopen(url, timeout=5) as reply:  # loopback only
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
                raise SystemExit(f"the Airflow API server did not come up:\n{tail}")
            time.sleep(1)
        yield env
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def measure(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    home = scratch / "airflow_home"
    home.mkdir()
    migrate_s = migrate(home)
    server = LoopbackServer(
        latency_s=args.latency,
        user_turns=args.user_turns,
        tool_calls=args.tool_calls,
        limit=args.limit,
        report=scratch / "server.json",
    )
    runs: list[dict[str, Any]] = []
    # One project folder for every run: the DAG's assets are named by their file URIs, and a
    # second URI for the same asset name would make the first one inactive in the database.
    project = scratch / "dag"
    intents_copy = scratch / "intents-of-the-dag"

    def one_run(per_task: int, executor_env: dict[str, str] | None, slots: int) -> None:
        shutil.rmtree(project, ignore_errors=True)
        params = bench_params(
            project,
            server.base_url,
            intents=args.intents,
            max_concurrency=args.limit,
            episodes_at_once=args.episodes_at_once,
            extra={"simulate": {"intents_per_task": per_task}},
        )
        runner = "LocalExecutor" if executor_env else "dag.test"
        load_before = load_average()
        log = scratch / f"dag-{runner}-{per_task}.log"
        result = dag_test(home, params, log, args.timeout, executor_env)
        figures = {
            "runner": runner,
            "intents_per_task": per_task,
            "parallelism": slots if executor_env else 1,
            **simulate_figures(result, slots),
            "dag_run_wall_s": round(result["wall_s"], 2),
            "load_average_before": load_before,
        }
        runs.append(figures)
        print(f"  {figures}", flush=True)
        if not intents_copy.exists():
            shutil.copytree(project / "data" / "intents", intents_copy)

    try:
        for per_task in args.per_task:
            one_run(per_task, None, 1)
        if args.local_per_task:
            with api_server(home, args.parallelism, scratch / "api-server.log") as env:
                for per_task in args.local_per_task:
                    one_run(per_task, env, args.parallelism)
        # `ise simulate` over the intents the DAG produced, with the same params.
        cli_project = scratch / "cli"
        cli_params = bench_params(
            cli_project,
            server.base_url,
            intents=args.intents,
            max_concurrency=args.limit,
            episodes_at_once=args.episodes_at_once,
        )
        shutil.copytree(intents_copy, cli_project / "data" / "intents")
        load_before = load_average()
        cli = run_simulate(cli_params, args.episodes_at_once, log=scratch / "cli.log")
        cli["load_average_before"] = load_before
    finally:
        server.stop()
    for figures in runs:
        figures["ratio_to_cli"] = round(figures["span_s"] / cli["wall_s"], 2)
        figures["dag_run_to_cli"] = round(figures["dag_run_wall_s"] / cli["wall_s"], 2)
    return {
        "benchmark": "saturation_airflow",
        "measured_at": now_iso(),
        "machine": machine_info(),
        "intents": args.intents,
        "latency_s": args.latency,
        "max_concurrency": args.limit,
        "episodes_at_once": args.episodes_at_once,
        "episode_shape": {
            "user_turns": args.user_turns,
            "tool_calls_per_turn": args.tool_calls,
            "requests_per_episode": server.report()["requests_per_episode"],
        },
        "airflow_db_migrate_s": round(migrate_s, 2),
        "cli": {
            "wall_s": rounded(cli["wall_s"]),
            "cpu_s": rounded(cli["cpu_s"]),
            "load_average_before": cli["load_average_before"],
        },
        "runs": runs,
        "command": " ".join(sys.argv),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intents", type=int, default=8)
    parser.add_argument(
        "--per-task",
        type=int,
        nargs="*",
        default=[1, 4],
        help="intents_per_task values run with dag.test() (serial)",
    )
    parser.add_argument(
        "--local-per-task",
        type=int,
        nargs="*",
        default=[4],
        help="intents_per_task values run through the LocalExecutor (none: skip it)",
    )
    parser.add_argument("--parallelism", type=int, default=2, help="LocalExecutor slots")
    parser.add_argument("--latency", type=float, default=0.3, help="server seconds per reply")
    parser.add_argument("--limit", type=int, default=16, help="llm.max_concurrency")
    parser.add_argument("--episodes-at-once", type=int, default=16, help="simulate.concurrency")
    parser.add_argument("--user-turns", type=int, default=2)
    parser.add_argument("--tool-calls", type=int, default=2, help="tool calls per user turn")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per DAG run")
    parser.add_argument("--json", type=Path, default=RESULTS / "saturation_airflow.json")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    if args.keep is not None:
        shutil.rmtree(args.keep, ignore_errors=True)
        args.keep.mkdir(parents=True)
        figures = measure(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="ise-saturation-airflow-") as scratch:
            figures = measure(args, Path(scratch))
    figures["benchmark_wall_s"] = round(time.perf_counter() - started, 1)
    write_json(args.json, figures)
    for run in figures["runs"]:
        print(
            f"saturation_airflow: {run['runner']} (parallelism {run['parallelism']}), "
            f"intents_per_task={run['intents_per_task']}: {run['mapped_instances']} instances, "
            f"overhead {run['overhead_per_ti_ms']} ms per instance; simulate span "
            f"{run['span_s']} s = {run['ratio_to_cli']}x the CLI's {figures['cli']['wall_s']} s"
        )
    print(f"  -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
