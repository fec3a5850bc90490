"""ise_refresh: the scheduled refresh of the ISE dataset (intents → simulate → export).

The tasks follow the stage table (ise_core.stages.STAGES): one task per stage, then its gate,
in table order. Stage 1 embeds in mapped shards (``write_out`` before them, ``intents`` after),
simulation is mapped over batches of intents (``plan_simulation`` before it) and collect checks
the share of unfinished episodes first; every other stage is one plain task. Parsing this file
reads params.yaml (schedule, retries, pool) and the table, nothing else: every stage runs inside
its task, through ise_core.pipeline, which imports the heavy libraries lazily.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import (
    Asset,
    CronDataIntervalTimetable,
    TriggerRule,
    Variable,
    chain,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException

from ise_core import pipeline
from ise_core.stages import STAGES, Stage

PROJECT_DIR = Path(__file__).resolve().parent.parent
# The params file: Variable ``ise_params`` (at parse time only its environment form
# AIRFLOW_VAR_ISE_PARAMS, so parsing never touches the metadata database), else $ISE_PARAMS,
# else <project>/params.yaml.
PARAMS_VARIABLE = "ise_params"
PARAMS_PATH = pipeline.resolve_params_path(os.environ.get("AIRFLOW_VAR_ISE_PARAMS"), PROJECT_DIR)
SETTINGS = pipeline.load_settings(PARAMS_PATH)
AIRFLOW = SETTINGS.airflow
# Episodes in flight, and the mapped tasks and pool slots that hold them: one plan, from
# llm.max_concurrency and this machine (ise_core.capacity), shared with `ise simulate`.
PLAN = pipeline.concurrency_plan(SETTINGS)
OUTPUTS = pipeline.output_paths(SETTINGS)
CATALOG = pipeline.Catalog.of(SETTINGS)

# Published when the stage's gate passes, so a consumer (e.g. a training DAG scheduled on
# ASSETS["sft"]) only ever sees validated data.
ASSETS = {
    gate: Asset(name=f"ise_{gate}", uri=path.as_uri(), group="ise")
    for gate, path in OUTPUTS.items()
}
# Stages whose task calls an LLM endpoint run in the LLM pool.
LLM_STAGES = {"intents", "simulate"}

# With a tolerance, collect runs once every mapped instance is done, failed or not, and
# checks the share of missing episodes itself; without one, any failure stops the run there.
COLLECT_TRIGGER = (
    TriggerRule.ALL_DONE if AIRFLOW.tolerate_failed_share > 0 else TriggerRule.NONE_FAILED
)

DOC_MD = f"""
### ISE dataset refresh

Rebuilds the training dataset from `{PARAMS_PATH}` on schedule `{AIRFLOW.schedule}`:

0. **estimate** (with `airflow.estimate_pilot`, now {AIRFLOW.estimate_pilot}) runs a pilot of
   that many intents and fails the run when the projected spend exceeds `llm.budget`.
1. **write_out** samples and writes out intents; **embed** embeds them, one mapped instance
   per `embedding.shard_size` texts (a re-run computes only the texts new to the cache);
   **intents** de-duplicates them and scores diversity once over the merged vectors →
   `{OUTPUTS["intents"]}`; **gate_intents** checks the dedup and coverage statistics.
2. **plan_simulation** batches the intent ids (`simulate.intents_per_task`) and checks the
   mapping against `[core] max_map_length`.
3. **simulate** runs one mapped instance per intent (or batch), named by intent id, in pool
   `{AIRFLOW.pool}` ({PLAN.pool_slots} slots), at most {PLAN.active_tasks} at once, each running
   up to {PLAN.per_task} episodes at once ({PLAN.why}); each episode runs its
   tool calls in a live workspace. Re-running an instance skips finished episodes.
4. **collect** gathers kept episodes (tolerates {AIRFLOW.tolerate_failed_share:.0%} failed
   instances) → `{OUTPUTS["trajectories"]}`; **gate_trajectories** checks turn counts.
5. **export** writes the SFT dataset and card → `{OUTPUTS["sft"]}`; **gate_sft** checks it.
6. **record_lineage** runs `dvc commit` (and `dvc push` with a remote) so `dvc status` is clean.

**Periods** (`refresh.mode: {SETTINGS.refresh.mode}`): a scheduled or backfilled run builds the
period named by its data interval's start. `grow` adds `refresh.intents_per_period` new intents
(the same batch on every re-run or backfill of that period), `renew` re-simulates a rolling
share of the intents, `fixed` rebuilds params.yaml's dataset. **intents** registers the period
in `{CATALOG.periods}`; **export** holds the published dataset until **gate_sft** passes (a
failed period puts it back); **record_lineage** adds the period to `{CATALOG.history}`, then
commits (and, with `refresh.git_tag`, tags `ise-refresh-<period>` in git). Clearing a failed
run resumes its period.

Each gate publishes its stage's Asset only when it passes. A failed gate stops the run and
its log shows the failed expectations.

**Trigger with config** to override one run: `{{"intent_count": 50, "seed": 11,
"model": "...", "models": {{"agent": "..."}}}}`. Bad values fail the first task with a
message naming the key. The LLM endpoint and key come from the `ise_llm` connection when it
exists (host = base URL, password = key, extra = model and limits), else from params.yaml.
"""

# Errors no retry can fix: bad config or input, a failed gate.
_FINAL_ERRORS = (
    pipeline.ConfigError,
    pipeline.InputError,
    pipeline.GateFailed,
    pipeline.BudgetExceeded,
)


@contextmanager
def _stage_errors() -> Iterator[None]:
    """Fail the task without retries on errors a retry cannot fix, with the readable report."""
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
def _run_settings() -> Iterator[pipeline.Settings]:
    """This run's settings (params + ``ise_llm`` connection + dag_run.conf), with the
    connection's key exported to this process only while the block runs."""
    context = get_current_context()
    params = pipeline.resolve_params_path(Variable.get(PARAMS_VARIABLE, default=None), PROJECT_DIR)
    hook = _llm_hook()
    dag_run = context["dag_run"]
    with _stage_errors():
        settings = pipeline.load_run_settings(params, dag_run.conf or {}, hook.settings_overrides())
    if settings.llm.budget_key is None:  # under a Redis limiter, the run's tasks share one budget
        settings.llm.budget_key = f"{dag_run.dag_id}/{dag_run.run_id}"
    with hook.exported_key(), _stage_errors():
        yield settings


# XCom key of the token plan_simulation writes into the data root (pipeline.mark_data_root).
DATA_ROOT_KEY = "data_root"


def _data_root_token() -> str | None:
    value = get_current_context()["ti"].xcom_pull(task_ids="plan_simulation", key=DATA_ROOT_KEY)
    return str(value) if value else None


def _max_map_length() -> int:
    """Airflow's [core] max_map_length: how many instances one mapped task may have."""
    from airflow.sdk import conf

    return conf.getint("core", "max_map_length", fallback=1024)


def _check_sole_run() -> None:
    """Fail the run's first task, before it writes, while another run of the DAG is running
    (a backfill's runs are not bound by max_active_runs below)."""
    ti = get_current_context()["ti"]
    with _stage_errors():
        pipeline.check_sole_run(ti.get_dr_count(dag_id=ti.dag_id, states=["running"]), ti.dag_id)


DEFAULT_ARGS: dict[str, Any] = {
    "owner": "ise",
    "retries": AIRFLOW.retries,
    "retry_delay": timedelta(seconds=AIRFLOW.retry_delay_s),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(seconds=AIRFLOW.max_retry_delay_s),
}


def _run_period(settings: pipeline.Settings, *, say: bool = False) -> str | None:
    """The refresh period this run builds (its data interval's start), or None for a plain
    rebuild (refresh.mode fixed, a run with conf, a manual run without a data interval)."""
    context = get_current_context()
    if context["dag_run"].conf:
        return None
    start = context.get("data_interval_start")
    return pipeline.period_of_run(settings, start, log=print if say else lambda _: None)


# Periods are the schedule's data intervals: a run covers [start, end) and builds the period
# named by its start (a cron string alone would make point-in-time runs with no interval).
SCHEDULE: Any = (
    CronDataIntervalTimetable(pipeline.schedule_cron(SETTINGS), timezone="UTC")
    if AIRFLOW.schedule not in (None, "@once")
    else AIRFLOW.schedule
)


@dag(
    dag_id="ise_refresh",
    schedule=SCHEDULE,
    start_date=datetime.fromisoformat(AIRFLOW.start_date).replace(tzinfo=UTC),
    catchup=AIRFLOW.catchup,
    # Periods build on each other and share the output folders: one run at a time, in order
    # (backfill runs are limited by the backfill's own max_active_runs: _check_sole_run).
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["ise", "dataset", "llm"],
    doc_md=DOC_MD,
)
def ise_refresh() -> None:
    def stage_task(entry: Stage) -> Any:
        pool = {"pool": AIRFLOW.pool} if entry.name in LLM_STAGES else {}

        @task(task_id=entry.name, doc_md=entry.help, **pool)
        def run() -> dict[str, Any]:
            with _run_settings() as settings:
                period = _run_period(settings)
                with pipeline.period_step(settings, entry, period, log=print):
                    return pipeline.run_stage(entry.name, settings)

        return run()

    def gate_task(entry: Stage, name: str) -> Any:
        @task(task_id=f"gate_{name}", outlets=[ASSETS[name]])
        def gate() -> str:
            with _run_settings() as settings:
                period = _run_period(settings)
                with pipeline.period_step(settings, entry, period, gate=True, log=print):
                    return pipeline.run_gate(name, settings)

        return gate()

    @task(pool=AIRFLOW.pool)
    def write_out() -> list[dict[str, Any]]:
        """Stage 1: sample and write out intents, then plan the embedding shards."""
        _check_sole_run()
        with _run_settings() as settings:
            conf = get_current_context()["dag_run"].conf or {}
            if conf:
                print(f"run overrides: {pipeline.overrides_from_conf(conf)}")
            limit = _max_map_length()
            # Stage 1 begins here: the refresh period (if any) is registered first.
            period = _run_period(settings, say=True)
            with pipeline.period_step(settings, STAGES[0], period, log=print):
                return pipeline.plan_intent_embedding(settings, limit)

    @task(
        map_index_template="{{ task.op_kwargs['shard']['start'] }}-"
        "{{ task.op_kwargs['shard']['stop'] }}"
    )
    def embed(shard: dict[str, Any]) -> dict[str, Any]:
        """Stage 1: embed one shard of texts into the shared cache (only what it lacks)."""
        with _run_settings() as settings:
            return pipeline.embed_intents_shard(settings, shard)

    def intents_tasks(entry: Stage) -> Any:
        # NONE_FAILED: with nothing to embed the mapped task is skipped, not failed.
        @task(
            task_id=entry.name,
            doc_md=entry.help,
            pool=AIRFLOW.pool,
            trigger_rule=TriggerRule.NONE_FAILED,
        )
        def finish() -> dict[str, Any]:
            with _run_settings() as settings:
                return pipeline.run_intents_after_shards(settings)

        shards = write_out()
        return [shards, embed.expand(shard=shards), finish()]

    @task
    def plan_simulation() -> list[list[str]]:
        """Intent ids in batches of simulate.intents_per_task, within [core] max_map_length."""
        with _run_settings() as settings:
            ids = pipeline.list_intent_ids(settings)
            per_task = settings.simulate.intents_per_task
            limit = _max_map_length()
            batches = pipeline.plan_batches(ids, per_task, limit)
            print(f"{len(ids)} intents in {len(batches)} mapped instances of up to {per_task}")
            context = get_current_context()
            token = pipeline.mark_data_root(settings, context["dag_run"].run_id)
            context["ti"].xcom_push(key=DATA_ROOT_KEY, value=token)
            return batches

    @task(
        pool=AIRFLOW.pool,
        max_active_tis_per_dag=PLAN.active_tasks,
        # The intent id(s) name each instance: from its argument while it runs, then the
        # label the task sets (short for a batch).
        map_index_template=(
            "{{ intent_label if intent_label is defined"
            " else task.op_kwargs['intent_ids'] | join(', ') }}"
        ),
    )
    def simulate(intent_ids: list[str]) -> dict[str, Any]:
        """Stage 2–3 for one intent (or batch): episodes in live workspaces; resumable."""
        context = get_current_context()
        context["intent_label"] = pipeline.batch_label(intent_ids)  # type: ignore[typeddict-unknown-key]
        with _run_settings() as settings:
            pipeline.check_data_root(settings, _data_root_token())
            # SIGTERM (the task killed or its worker stopping) ends it gracefully: no new
            # episode, running ones abandoned after a short grace, every sandbox closed.
            values = pipeline.run_stage("simulate", settings, only=intent_ids, stop_on_signals=True)
            pipeline.check_simulation(values, intent_ids)  # failed episodes: retry the task
            return values

    def simulate_tasks(entry: Stage) -> Any:
        batches = plan_simulation()
        return [batches, simulate.expand(intent_ids=batches)]

    @task(trigger_rule=COLLECT_TRIGGER)
    def collect() -> dict[str, Any]:
        """Gather kept episodes; checks the share of intents without an episode."""
        batches = get_current_context()["ti"].xcom_pull(task_ids="plan_simulation")
        if batches is None:
            raise AirflowFailException("plan_simulation did not succeed: nothing to collect")
        ids = [intent_id for batch in batches for intent_id in batch]
        with _run_settings() as settings:
            pipeline.check_data_root(settings, _data_root_token())
            missing = pipeline.unfinished_episodes(settings, ids)
            if missing:
                print(
                    f"{len(missing)} intents have no finished episode: "
                    f"{pipeline.batch_label(missing)}"
                )
            pipeline.check_failed_share(
                len(missing), len(ids), settings.airflow.tolerate_failed_share
            )
            return pipeline.run_stage("collect", settings)

    @task(pool=AIRFLOW.pool)
    def estimate() -> dict[str, Any]:
        """`ise estimate`: a pilot projects the run; fails the run when it exceeds llm.budget."""
        _check_sole_run()
        with _run_settings() as settings:
            return pipeline.run_estimate(settings, AIRFLOW.estimate_pilot or 1)

    @task
    def record_lineage() -> dict[str, Any]:
        """``dvc commit`` the outputs (``dvc push`` with a remote): ``dvc status`` is clean."""
        skipped = pipeline.lineage_skipped(get_current_context()["dag_run"].conf)
        if skipped is not None:
            return skipped
        with _run_settings() as settings:
            return pipeline.record_run_lineage(settings, _run_period(settings))

    # The stage table in order, each stage followed by its gate; three stages need more than
    # a plain task (two mappings and their planners; collect's tolerance check).
    special: dict[str, Callable[[Stage], Any]] = {
        "intents": intents_tasks,
        "simulate": simulate_tasks,
        "collect": lambda entry: collect(),
    }
    steps: list[Any] = [estimate()] if AIRFLOW.estimate_pilot else []
    for entry in STAGES:
        made = special.get(entry.name, stage_task)(entry)
        steps += made if isinstance(made, list) else [made]
        if entry.gate is not None:
            steps.append(gate_task(entry, entry.gate.name))
    chain(*steps, record_lineage())


ise_refresh_dag = ise_refresh()

if __name__ == "__main__":
    ise_refresh_dag.test()
