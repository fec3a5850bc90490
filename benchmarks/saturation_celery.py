"""The refresh DAG on the CeleryExecutor: episodes/hour with 1 vs 2 workers, and what Airflow
adds per mapped instance there, side by side with the LocalExecutor, in one run.

Each Celery run starts scripts/airflow_celery.py (Postgres, Redis, scheduler, dag-processor,
API server, N workers with ``--concurrency`` slots each) on 127.0.0.1, triggers ise_refresh
over the REST API on a fresh project whose user and agent talk to the loopback endpoint
(tests/fakes/both_roles.py, its own process, fixed latency), reads every task instance back
and stops everything. The LocalExecutor run is benchmarks/saturation_airflow.py's
``dag.test(use_executor=True)`` with as many slots as the two workers have together.

Per run (figures as in saturation_airflow.py):

* ``episodes_per_hour``: episodes / simulate span x 3600, the span running from the end of
  plan_simulation to the start of collect (scheduling included);
* ``overhead_per_ti_ms``: (slots x span - time inside the stage function, summed) / instances;
* ``inside_ti_overhead_ms``: mean (instance duration - stage time).

    python benchmarks/saturation_celery.py                    # 24 intents, 2 slots per worker
    python benchmarks/saturation_celery.py --intents 48 --concurrency 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    KEY_ENV,
    RESULTS,
    LoopbackServer,
    bench_params,
    load_average,
    machine_info,
    now_iso,
)
from benchmarks.saturation_airflow import api_server, dag_test, migrate, simulate_figures
from ise_core.records import write_json
from scripts.airflow_celery import CeleryDeployment
from tests.dags.rest import DAG_ID, Api, failure_report, run_state, wait_for


def _tis(api: Api, run_id: str) -> list[dict[str, Any]]:
    status, body = api.call(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=10000"
    )
    if status != 200:
        raise SystemExit(f"cannot list task instances: {status} {body}")
    return list(body["task_instances"])


def _xcom(api: Api, run_id: str, map_index: int) -> dict[str, Any]:
    path = (
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/simulate/xcomEntries/"
        f"return_value?map_index={map_index}&deserialize=true"
    )
    status, body = api.call("GET", path)
    if status != 200:
        raise SystemExit(f"cannot read simulate[{map_index}]'s XCom: {status} {body}")
    value = body["value"]
    return dict(json.loads(value) if isinstance(value, str) else value)


def celery_run(
    args: argparse.Namespace, scratch: Path, base_url: str, workers: int
) -> dict[str, Any]:
    """One DAG run on ``workers`` Celery workers; its figures."""
    project = scratch / f"celery-{workers}"
    shutil.rmtree(project, ignore_errors=True)
    params = _params(args, project, base_url, slots=workers * args.concurrency)
    home = Path(tempfile.mkdtemp(prefix="ise-bench-celery-"))
    home.chmod(0o755)  # the postgres user reaches its cluster inside
    deployment = CeleryDeployment(
        home, params=params, workers=workers, concurrency=args.concurrency, triggerer=False
    )
    try:
        started = time.perf_counter()
        deployment.start()
        startup_s = time.perf_counter() - started
        api = Api(deployment.api_url)
        api.login(deployment.secrets.admin_password)
        wait_for(
            "the DAG to be parsed",
            lambda: api.call("GET", f"/api/v2/dags/{DAG_ID}")[0] == 200,
            300,
            deployment.logs,
        )
        api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        load_before = load_average()
        status, run = api.call(
            "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {}}
        )
        if status != 200:
            raise SystemExit(f"cannot trigger the run: {status} {run}")
        run_id = run["dag_run_id"]
        t0 = time.perf_counter()
        state = wait_for(
            "the run", lambda: run_state(api, run_id), args.timeout, deployment.logs
        )
        wall_s = time.perf_counter() - t0
        if state != "success":
            raise SystemExit(f"the Celery run failed:\n{failure_report(api, run_id)}")
        tis = _tis(api, run_id)
        rows = [
            {"task_id": ti["task_id"], "map_index": ti["map_index"], "state": ti["state"],
             "start": ti["start_date"], "end": ti["end_date"], "hostname": ti["hostname"]}
            for ti in tis
        ]  # fmt: skip
        values = {
            str(row["map_index"]): _xcom(api, run_id, row["map_index"])
            for row in rows
            if row["task_id"] == "simulate" and row["map_index"] >= 0
        }
        result = {"state": state, "tis": rows, "simulate_values": values}
        figures = simulate_figures(result, workers * args.concurrency)
        hosts = sorted({r["hostname"] for r in rows if r["task_id"] == "simulate"})
        return {
            "runner": "CeleryExecutor",
            "workers": workers,
            "concurrency_per_worker": args.concurrency,
            "slots": workers * args.concurrency,
            **figures,
            "episodes_per_hour": round(figures["episodes"] / figures["span_s"] * 3600),
            "simulate_hosts": hosts,
            "dag_run_wall_s": round(wall_s, 2),
            "deployment_startup_s": round(startup_s, 1),
            "load_average_before": load_before,
        }
    finally:
        deployment.stop()
        shutil.rmtree(home, ignore_errors=True)


def local_run(args: argparse.Namespace, scratch: Path, base_url: str) -> dict[str, Any]:
    """The same run through the LocalExecutor, with as many slots as two workers have."""
    slots = 2 * args.concurrency
    home = scratch / "local-home"
    home.mkdir()
    migrate(home)
    project = scratch / "local"
    params = _params(args, project, base_url, slots=slots)
    with api_server(home, slots, scratch / "api-server.log") as env:
        load_before = load_average()
        result = dag_test(home, params, scratch / "dag-local.log", args.timeout, env)
    figures = simulate_figures(result, slots)
    return {
        "runner": "LocalExecutor",
        "workers": 1,
        "concurrency_per_worker": slots,
        "slots": slots,
        **figures,
        "episodes_per_hour": round(figures["episodes"] / figures["span_s"] * 3600),
        "dag_run_wall_s": round(result["wall_s"], 2),
        "load_average_before": load_before,
    }


def _params(args: argparse.Namespace, project: Path, base_url: str, slots: int) -> Path:
    return bench_params(
        project,
        base_url,
        intents=args.intents,
        max_concurrency=args.limit,
        episodes_at_once=args.episodes_at_once,
        extra={
            "airflow": {"max_active_tis_per_dag": slots, "pool_size": slots},
            "simulate": {"intents_per_task": 1},
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intents", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=2, help="slots per Celery worker")
    parser.add_argument("--latency", type=float, default=0.3, help="server seconds per reply")
    parser.add_argument("--limit", type=int, default=16, help="llm.max_concurrency")
    parser.add_argument("--episodes-at-once", type=int, default=4, help="simulate.concurrency")
    parser.add_argument("--user-turns", type=int, default=2)
    parser.add_argument("--tool-calls", type=int, default=2, help="tool calls per user turn")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per DAG run")
    parser.add_argument("--json", type=Path, default=RESULTS / "saturation_celery.json")
    args = parser.parse_args(argv)
    os.environ.setdefault(KEY_ENV, "sk-benchmark-not-a-real-key")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ise-saturation-celery-") as scratch_name:
        scratch = Path(scratch_name)
        server = LoopbackServer(
            latency_s=args.latency,
            user_turns=args.user_turns,
            tool_calls=args.tool_calls,
            limit=args.limit,
            report=scratch / "server.json",
        )
        runs = []
        try:
            for workers in (1, 2):
                runs.append(celery_run(args, scratch, server.base_url, workers))
                print(f"  {runs[-1]}", flush=True)
            runs.append(local_run(args, scratch, server.base_url))
            print(f"  {runs[-1]}", flush=True)
        finally:
            server.stop()
    one, two = runs[0], runs[1]
    figures = {
        "benchmark": "saturation_celery",
        "measured_at": now_iso(),
        "machine": machine_info(),
        "intents": args.intents,
        "latency_s": args.latency,
        "episode_shape": {"user_turns": args.user_turns, "tool_calls_per_turn": args.tool_calls},
        "runs": runs,
        "two_workers_over_one": round(two["episodes_per_hour"] / one["episodes_per_hour"], 2),
        "benchmark_wall_s": round(time.perf_counter() - started, 1),
        "command": " ".join(sys.argv),
    }
    write_json(args.json, figures)
    for run in runs:
        print(
            f"saturation_celery: {run['runner']} {run['workers']} worker(s) x "
            f"{run['concurrency_per_worker']} slots: {run['episodes_per_hour']} episodes/hour, "
            f"overhead {run['overhead_per_ti_ms']} ms per mapped instance "
            f"(inside {run['inside_ti_overhead_ms']} ms)"
        )
    print(f"  2 workers / 1 worker: {figures['two_workers_over_one']}x  -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
