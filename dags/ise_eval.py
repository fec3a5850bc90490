"""ise_eval: benchmark the agent under test on the held-out eval tasks after each refresh.

Scheduled on the ``ise_sft`` Asset (published when ``ise_refresh`` passes its SFT gate): a user
who retrains on each refresh and serves the new model at a known endpoint (``eval.agent`` in
params.yaml, or the run's conf) gets its scores, compared with the previous run's, without
leaving Airflow. Parsing this file reads params.yaml and nothing else; every task imports the
evaluation code when it runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, Variable, chain, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from ise_core import pipeline
from ise_core.catalog import Catalog

PROJECT_DIR = Path(__file__).resolve().parent.parent
PARAMS_VARIABLE = "ise_params"
PARAMS_PATH = pipeline.resolve_params_path(os.environ.get("AIRFLOW_VAR_ISE_PARAMS"), PROJECT_DIR)
SETTINGS = pipeline.load_settings(PARAMS_PATH)
AIRFLOW = SETTINGS.airflow
# Mapped instances at once: the refresh DAG's plan (airflow.max_active_tis_per_dag when set).
PLAN = pipeline.concurrency_plan(SETTINGS)
OUTPUTS = pipeline.output_paths(SETTINGS)
FILES = Catalog.of(SETTINGS)

# The same Asset ise_refresh publishes (an Asset is its name and URI).
SFT_ASSET = Asset(name="ise_sft", uri=OUTPUTS["sft"].as_uri(), group="ise")
EVAL_ASSET = Asset(name="ise_eval", uri=FILES.eval_metrics.as_uri(), group="ise")

DOC_MD = f"""
### ISE eval

Runs when `ise_sft` is updated (or by hand): every task of `{FILES.eval_tasks}` is tried
`eval.k` times by the agent under test, each try a clean episode and one with injected tool
faults, in fresh sandboxes.

1. **plan** batches the task ids (`eval.tasks_per_batch`) within `[core] max_map_length`.
2. **evaluate** runs one mapped instance per batch, in pool `{AIRFLOW.pool}`; a re-run skips
   tasks already scored with the same settings and agent.
3. **finish** writes `results.jsonl`, `metrics.json` and the plot data, and adds the run to
   the history; **gate_eval** fails when the score dropped more than `eval.gate.max_score_drop`
   below the previous run's on the same task set, and publishes `ise_eval` when it passes.
4. **record_lineage** runs `dvc commit eval` (and `dvc push` with a remote), so the eval
   stage of `dvc.yaml` is clean too.

**Trigger with config** to test another model: `{{"model": "my-model-v2", "endpoint":
"http://host:8000/v1", "k": 3, "run": "v2"}}` (every key optional). The key and the
simulated user's endpoint come from the `ise_llm` connection when it exists, as in
`ise_refresh`.
"""

CONF_KEYS = ("model", "endpoint", "k", "run")
_FINAL_ERRORS = (
    pipeline.ConfigError,
    pipeline.InputError,
    pipeline.GateFailed,
    pipeline.BudgetExceeded,
)


@contextmanager
def _errors() -> Iterator[None]:
    """Fail without retries on what a retry cannot fix (bad config or input, a failed gate)."""
    try:
        yield
    except _FINAL_ERRORS as exc:
        report = getattr(exc, "report", "")
        raise AirflowFailException(f"{exc}\n{report}".rstrip()) from None


def _llm_hook() -> Any:
    try:
        from ise_llm_hook import ISELLMHook
    except ImportError:  # plugins/ is not on sys.path (e.g. [core] plugins_folder elsewhere)
        import sys

        sys.path.append(str(PROJECT_DIR / "plugins"))
        from ise_llm_hook import ISELLMHook
    return ISELLMHook()


@contextmanager
def _eval_settings() -> Iterator[tuple[Any, Any]]:
    """This run's settings (params + the ``ise_llm`` connection) and EvalRequest (the run's
    conf), with the connection's key exported to this process only while the block runs."""
    from ise_core.evaluation.stage import EvalRequest

    conf = dict(get_current_context()["dag_run"].conf or {})
    params = pipeline.resolve_params_path(Variable.get(PARAMS_VARIABLE, default=None), PROJECT_DIR)
    hook = _llm_hook()
    with _errors():
        unknown = sorted(set(conf) - set(CONF_KEYS))
        if unknown:
            raise pipeline.ConfigError(
                f"dag_run.conf: unknown key(s) {', '.join(unknown)} "
                f"(allowed: {', '.join(CONF_KEYS)})"
            )
        request = EvalRequest(**{key: conf.get(key) for key in CONF_KEYS})
        settings = request.apply(
            pipeline.load_run_settings(params, None, hook.settings_overrides())
        )
    with hook.exported_key(), _errors():
        yield settings, request


@contextmanager
def _context() -> Iterator[Any]:
    """The eval context (agent, paths, fingerprint) of this run."""
    from ise_core.evaluation.stage import build_context

    with _eval_settings() as (settings, request):
        yield build_context(settings, request)


DEFAULT_ARGS: dict[str, Any] = {
    "owner": "ise",
    "retries": AIRFLOW.retries,
    "retry_delay": timedelta(seconds=AIRFLOW.retry_delay_s),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(seconds=AIRFLOW.max_retry_delay_s),
}


@dag(
    dag_id="ise_eval",
    schedule=[SFT_ASSET],
    start_date=datetime.fromisoformat(AIRFLOW.start_date).replace(tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # runs share the run folder
    default_args=DEFAULT_ARGS,
    tags=["ise", "eval", "llm"],
    doc_md=DOC_MD,
)
def ise_eval() -> None:
    @task
    def plan() -> list[list[str]]:
        """Eval task ids in batches of eval.tasks_per_batch, within [core] max_map_length."""
        from airflow.sdk import conf

        from ise_core.evaluation.stage import select_tasks

        with _eval_settings() as (settings, _):
            ids = [t.id for t in select_tasks(settings)]
            limit = conf.getint("core", "max_map_length", fallback=1024)
            batches = pipeline.plan_batches(ids, settings.eval.tasks_per_batch, limit)
        print(f"{len(ids)} eval tasks in {len(batches)} mapped instances")
        return batches

    @task(
        pool=AIRFLOW.pool,
        max_active_tis_per_dag=PLAN.active_tasks,
        map_index_template="{{ task.op_kwargs['task_ids'] | join(', ') }}",
    )
    def evaluate(task_ids: list[str]) -> dict[str, Any]:
        """Every try of these tasks (a clean and a faulted episode each); resumable."""
        from dataclasses import asdict

        from ise_core.evaluation.stage import run_eval_tasks, select_tasks

        with _context() as ctx:
            tasks = select_tasks(ctx.settings, task_ids)
            report = run_eval_tasks(ctx, tasks, progress=False)
            print(f"{ctx.agent.label}: {report.summary()}")
            if report.budget_exhausted:
                raise pipeline.BudgetExceeded("llm.budget exhausted during the eval")
            return pipeline.small_values(asdict(report))

    @task
    def finish() -> dict[str, Any]:
        """results.jsonl, metrics.json, plot data and a history line."""
        from ise_core.evaluation.stage import finish_eval, select_tasks

        with _context() as ctx:
            metrics = finish_eval(ctx, select_tasks(ctx.settings), log=print)
            return pipeline.small_values(metrics["overall"])

    @task(outlets=[EVAL_ASSET])
    def gate_eval() -> str:
        with _eval_settings() as (settings, _):
            return pipeline.run_gate("eval", settings, log=print)

    @task
    def record_lineage() -> dict[str, Any]:
        """``dvc commit`` the eval stage's outputs (``dvc push`` with a remote)."""
        skipped = pipeline.lineage_skipped(get_current_context()["dag_run"].conf)
        if skipped is not None:
            return skipped
        with _eval_settings() as (settings, _):
            return pipeline.record_lineage(settings.base_dir, stages=["eval"])

    batches = plan()
    chain(batches, evaluate.expand(task_ids=batches), finish(), gate_eval(), record_lineage())


ise_eval_dag = ise_eval()

if __name__ == "__main__":
    ise_eval_dag.test()
