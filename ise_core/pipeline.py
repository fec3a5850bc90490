"""A cheap facade over the stage table for orchestrators (the Airflow DAG imports only this).

Importing this module costs the config loader, the stage table and the catalog, nothing
else: the table names each stage's entry point without importing it, so every stage module
(and with it torch, Great Expectations, the openai SDK) loads only when its stage runs and a
scheduler parses the DAG file in milliseconds. Functions here take the settings or a path and
return small values — ids, paths and counts — never datasets.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ise_core.capacity import ConcurrencyPlan, concurrency_plan, longest_first
from ise_core.catalog import Catalog, EpisodeStore
from ise_core.config import Settings, deep_merge, load_settings
from ise_core.errors import (
    BudgetExceeded,
    ConfigError,
    EpisodesFailed,
    GateFailed,
    InputError,
    ISEError,
)
from ise_core.refresh.lineage import record_lineage
from ise_core.refresh.periods import Ledger, schedule_cron
from ise_core.refresh.run import finish_period, period_of_run, period_step
from ise_core.shutdown import Shutdown
from ise_core.stages import (
    STAGE_NAMES,
    STAGES,
    Scalar,
    StageOptions,
    run_gate,
    small_values,
    stage,
)

__all__ = [
    "BudgetExceeded",
    "Catalog",
    "ConcurrencyPlan",
    "ConfigError",
    "EpisodesFailed",
    "GateFailed",
    "ISEError",
    "InputError",
    "Settings",
    "batch_ids",
    "batch_label",
    "check_data_root",
    "check_failed_share",
    "check_map_length",
    "check_simulation",
    "check_sole_run",
    "concurrency_plan",
    "embed_intents_shard",
    "finish_period",
    "list_intent_ids",
    "load_run_settings",
    "load_settings",
    "mark_data_root",
    "min_intents_per_task",
    "output_paths",
    "overrides_from_conf",
    "period_of_run",
    "period_step",
    "plan_batches",
    "plan_intent_embedding",
    "record_lineage",
    "record_run_lineage",
    "resolve_params_path",
    "run_estimate",
    "run_gate",
    "run_intents_after_shards",
    "run_stage",
    "schedule_cron",
    "small_values",
    "unfinished_episodes",
]

PARAMS_ENV = "ISE_PARAMS"

# Keys a single run may override, and the params path each one lands on.
RUN_OVERRIDE_KEYS = ("intent_count", "seed", "model", "models", "llm")

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- params and run-time overrides -----------------------------------------------------------


def resolve_params_path(
    explicit: str | os.PathLike[str] | None,
    project_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """The params file to use: ``explicit`` (e.g. an Airflow Variable), else $ISE_PARAMS,
    else ``<project_dir>/params.yaml``."""
    env = os.environ if environ is None else environ
    chosen = explicit or env.get(PARAMS_ENV) or project_dir / "params.yaml"
    path = Path(chosen).expanduser()
    return path if path.is_absolute() else (project_dir / path)


def overrides_from_conf(conf: Mapping[str, Any] | None) -> dict[str, Any]:
    """Translate a run's ``conf`` into params overrides; values are checked by the config code.

    Accepted keys: ``intent_count`` → intents.count, ``seed`` → seed, ``model`` → llm.model,
    ``models`` ({writer|user|agent: name}) → llm.roles.<role>.model, ``llm`` → a partial llm block.
    """
    if not conf:
        return {}
    if not isinstance(conf, Mapping):
        raise ConfigError(f"dag_run.conf: expected a JSON object, got {type(conf).__name__}")
    unknown = sorted(set(conf) - set(RUN_OVERRIDE_KEYS))
    if unknown:
        raise ConfigError(
            f"dag_run.conf: unknown key(s) {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join(RUN_OVERRIDE_KEYS)})"
        )
    overrides: dict[str, Any] = {}
    if "intent_count" in conf:
        overrides["intents"] = {"count": conf["intent_count"]}
    if "seed" in conf:
        overrides["seed"] = conf["seed"]
    llm: dict[str, Any] = {}
    if "llm" in conf:
        if not isinstance(conf["llm"], Mapping):
            raise ConfigError("dag_run.conf: key 'llm' must be an object of llm settings")
        llm = deep_merge(llm, dict(conf["llm"]))
    if "model" in conf:
        llm["model"] = conf["model"]
    if "models" in conf:
        models = conf["models"]
        if not isinstance(models, Mapping):
            raise ConfigError(
                "dag_run.conf: key 'models' must map roles (writer, user, agent) to model names"
            )
        llm = deep_merge(llm, {"roles": {role: {"model": name} for role, name in models.items()}})
    if llm:
        overrides["llm"] = llm
    return overrides


def load_run_settings(
    params_path: str | os.PathLike[str],
    conf: Mapping[str, Any] | None = None,
    base_overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings for one run: params file, then ``base_overrides`` (e.g. from an LLM
    connection), then the run's ``conf``; a bad value raises ConfigError naming the key."""
    overrides = deep_merge(dict(base_overrides or {}), overrides_from_conf(conf))
    try:
        return load_settings(Path(params_path), overrides or None)
    except ConfigError as exc:
        if conf:
            raise ConfigError(f"{exc}\n(the run's conf was {dict(conf)!r})") from None
        raise


# --- mapping arithmetic ------------------------------------------------------------------------


def list_intent_ids(settings: Settings) -> list[str]:
    """Ids of the unique intents stage 1 wrote, longest episode first (the order ``ise
    simulate`` starts them, so the DAG's first mapped instances hold the long episodes)."""
    return [intent.id for intent in longest_first(Catalog.of(settings).load_intents())]


def batch_ids(ids: Sequence[str], per_task: int) -> list[list[str]]:
    """Consecutive batches of at most ``per_task`` ids (the last one may be shorter)."""
    if per_task < 1:
        raise ConfigError(f"simulate.intents_per_task must be >= 1 (got {per_task})")
    return [list(ids[start : start + per_task]) for start in range(0, len(ids), per_task)]


def min_intents_per_task(n_intents: int, max_map_length: int) -> int:
    """The smallest ``intents_per_task`` that keeps the mapping within ``max_map_length``."""
    return max(1, math.ceil(n_intents / max_map_length))


def check_map_length(
    n_batches: int,
    max_map_length: int,
    *,
    n_intents: int | None = None,
    per_task: int | None = None,
    mapping: tuple[str, str, str] = ("simulation", "intents", "simulate.intents_per_task"),
) -> None:
    """Raise ConfigError saying what to change when a mapping would exceed the limit.
    ``mapping``: what is mapped, what its instances hold, and the setting that sizes them."""
    if n_batches <= max_map_length:
        return
    what, items, key = mapping
    detail = ""
    if n_intents is not None and per_task is not None:
        detail = (
            f" ({n_intents} {items} at {key}={per_task});"
            f" set {key} to at least {min_intents_per_task(n_intents, max_map_length)}"
        )
    raise ConfigError(
        f"the {what} would map {n_batches} task instances, above Airflow's "
        f"[core] max_map_length={max_map_length}{detail}, or raise [core] max_map_length "
        f"(AIRFLOW__CORE__MAX_MAP_LENGTH) to at least {n_batches}"
    )


def plan_batches(ids: Sequence[str], per_task: int, max_map_length: int) -> list[list[str]]:
    """Batches for the mapped simulation, checked against the mapping limit."""
    batches = batch_ids(ids, per_task)
    check_map_length(len(batches), max_map_length, n_intents=len(ids), per_task=per_task)
    return batches


def batch_label(ids: Sequence[str], limit: int = 3) -> str:
    """A short readable name for a mapped instance: its intent id(s)."""
    if len(ids) <= limit:
        return ", ".join(ids)
    return f"{ids[0]} … {ids[-1]} ({len(ids)} intents)"


# --- running stages ------------------------------------------------------------------------------


# Airflow's task supervisor follows the SIGTERM it sends a task with SIGKILL 5 s later, so a
# task's grace period is capped to leave time for closing its sandboxes before that.
TASK_GRACE_CAP_S = 2.0


def run_stage(
    name: str,
    settings: Settings,
    *,
    only: Sequence[str] | None = None,
    stop_on_signals: bool = False,
) -> dict[str, Scalar]:
    """Run one stage of the table on ``settings``; return its small values (counts, rates).

    ``stop_on_signals`` (a task's simulate): SIGTERM / SIGINT stop it gracefully, within
    ``simulate.shutdown_grace_s`` capped at ``TASK_GRACE_CAP_S``, and raise ``Interrupted``
    (see ise_core.shutdown)."""
    shutdown = None
    if stop_on_signals:
        shutdown = Shutdown(grace_s=min(settings.simulate.shutdown_grace_s, TASK_GRACE_CAP_S))
    options = StageOptions(only=tuple(only) if only else None, progress=False, shutdown=shutdown)
    with shutdown.handling_signals() if shutdown else contextlib.nullcontext():
        result = stage(name).execute(settings, options)
    _stderr(f"{name}: {result.summary}")
    return result.values


# --- stage 1 with its embedding in mapped shards -------------------------------------------


def plan_intent_embedding(settings: Settings, max_map_length: int) -> list[dict[str, Any]]:
    """Write the intents out (``written.jsonl``) and plan the embedding of what exact
    de-duplication leaves: one small dict (index, start, stop, digest) per mapped shard."""
    from ise_core.intents import stage as intents

    plan = intents.plan_embedding(settings, intents.write_out_intents(settings))
    check_map_length(
        len(plan.shards),
        max_map_length,
        n_intents=plan.n_texts,
        per_task=settings.embedding.shard_size,
        mapping=("embedding", "texts", "embedding.shard_size"),
    )
    _stderr(
        f"{plan.n_texts} texts to embed in {len(plan.shards)} shards of up to "
        f"{settings.embedding.shard_size} (embedding.shard_size)"
    )
    return [
        {"index": s.index, "start": s.start, "stop": s.stop, "digest": plan.digest}
        for s in plan.shards
    ]


def embed_intents_shard(settings: Settings, shard: Mapping[str, Any]) -> dict[str, Scalar]:
    """Embed one planned shard into the embedding cache; only texts it lacks are computed."""
    from ise_core.intents import stage as intents
    from ise_core.intents.embed import Shard

    planned = Shard(int(shard["index"]), int(shard["start"]), int(shard["stop"]))
    computed = intents.embed_intent_shard(settings, planned, str(shard["digest"]))
    _stderr(
        f"shard {planned.index}: texts {planned.start}-{planned.stop}, "
        f"{computed} of {planned.size} embedded now, {planned.size - computed} from the cache"
    )
    return {"shard": planned.index, "n_texts": planned.size, "n_computed": computed}


def run_intents_after_shards(settings: Settings) -> dict[str, Scalar]:
    """Stage 1 from ``written.jsonl`` on: de-duplication and Vendi once over the merged
    matrix (every vector comes from the cache the shards filled)."""
    from ise_core.intents import stage as intents

    result = intents.run_finish_intents(settings)
    _stderr(f"intents: {result.summary}")
    return result.values


def run_estimate(settings: Settings, pilot: int) -> dict[str, Any]:
    """``ise estimate --pilot N``: the projection's figures (printed too); raises
    ``BudgetExceeded`` when the projected spend exceeds ``llm.budget``."""
    from ise_core.estimate import check_budget, estimate_stage, report_lines

    estimate = estimate_stage(settings, pilot=pilot)
    for line in report_lines(estimate):
        print(line, flush=True)
    print(f"-> {Catalog.of(settings).estimate}", flush=True)
    check_budget(estimate)
    return {
        "episodes": estimate.run.episodes,
        "simulate_tokens": round(estimate.to_spend_tokens.expected),
        "simulate_wall_s": round(estimate.wall_s.expected, 1),
        "budget_tokens": estimate.budget_tokens,
        "budget_cost": estimate.budget_cost,
    }


def check_simulation(values: Mapping[str, Any], ids: Sequence[str]) -> None:
    """Raise when a simulation call left episodes failed or not started.

    ``BudgetExceeded`` when the LLM budget ran out (a retry cannot help), else
    ``EpisodesFailed`` (a retry can)."""
    if values.get("budget_exhausted"):
        raise BudgetExceeded(
            f"llm.budget exhausted while simulating {batch_label(ids)}; raise llm.budget "
            "and clear the task to continue"
        )
    failed = int(values.get("n_failed", 0)) + int(values.get("n_not_started", 0))
    if failed:
        raise EpisodesFailed(
            f"{failed} of {len(ids)} episodes failed or did not start ({batch_label(ids)}); "
            "their episode files say why, and a retry runs only those again"
        )


def unfinished_episodes(settings: Settings, ids: Iterable[str]) -> list[str]:
    """Intent ids without a finished current episode (missing, stale or failed: their
    simulation did not finish), in the order given."""
    wanted = list(ids)
    chosen = set(wanted)
    intents = [intent for intent in Catalog.of(settings).load_intents() if intent.id in chosen]
    store = EpisodeStore.of(settings)
    done = {intent.id for intent in intents if store.is_done(intent)}
    return [intent_id for intent_id in wanted if intent_id not in done]


def check_failed_share(n_missing: int, n_total: int, tolerated: float) -> None:
    """Raise GateFailed when a larger share of intents is unfinished than is tolerated."""
    if n_total == 0 or n_missing == 0:
        return
    share = n_missing / n_total
    if share > tolerated:
        raise GateFailed(
            f"{n_missing} of {n_total} intents have no finished episode ({share:.1%}), above "
            f"airflow.tolerate_failed_share={tolerated}; clear the failed simulate instances "
            "to retry them, or raise the tolerance"
        )


def check_sole_run(running: int, dag_id: str) -> None:
    """Raise ConfigError when other runs of the DAG are running besides this one (``running``
    counts it): runs build on each other in one data folder. The DAG's ``max_active_runs=1``
    does not bind backfill runs, which Airflow limits by the backfill's own max_active_runs
    (10 unless given), nor a scheduled run against a backfill's."""
    others = running - 1
    if others < 1:
        return
    raise ConfigError(
        f"{others} other run{'s' if others > 1 else ''} of {dag_id} running: runs build on "
        "each other in one data folder, so they must run one at a time; nothing was written. "
        f"Create backfills with max_active_runs 1 (airflow backfill create --dag-id {dag_id} "
        "--from-date ... --to-date ... --max-active-runs 1), and clear this run once the others "
        "have finished (mark failed a run left running by a killed scheduler or dag.test())"
    )


def output_paths(settings: Settings) -> dict[str, Path]:
    """Per gate, the file its stage publishes when the gate passes (what a downstream
    consumer watches): the first output of the stage in the table."""
    files = Catalog.of(settings)
    return {s.gate.name: files.path(s.outputs[0]) for s in STAGES if s.gate is not None}


# --- one data root for every worker ---------------------------------------------------------

# Written by plan_simulation, checked by every simulate and collect task: a worker whose data
# folder is not the one the run planned in (no shared volume, a volume mounted elsewhere, a
# stale copy) fails at once instead of writing episodes nobody will collect. A run record,
# beside the per-episode timing files, outside every dataset version.


def data_root_marker(settings: Settings) -> Path:
    return Catalog.of(settings).data_root_marker


def mark_data_root(settings: Settings, run_id: str) -> str:
    """Write the marker of this run's data root; returns its token (for XCom)."""
    import socket
    import uuid

    from ise_core.records import write_json

    token = uuid.uuid4().hex
    write_json(
        data_root_marker(settings),
        {
            "token": token,
            "run_id": run_id,
            "host": socket.gethostname(),
            "path": str(settings.path(settings.simulate.out_dir).resolve()),
        },
    )
    return token


def check_data_root(settings: Settings, token: str | None) -> None:
    """Raise ConfigError, saying what to fix, unless this process sees the marker of the
    run's data root with ``token`` (None: the run wrote no marker, nothing to check)."""
    if not token:
        return
    import socket

    marker = data_root_marker(settings)
    try:
        seen = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        seen = None
    if isinstance(seen, dict) and seen.get("token") == token:
        return
    found = (
        "it is missing"
        if seen is None
        else f"it belongs to run {seen.get('run_id')!r} planned on host {seen.get('host')!r}"
        if isinstance(seen, dict)
        else "it is unreadable"
    )
    raise ConfigError(
        f"host {socket.gethostname()!r} does not see this run's data root: {marker} was "
        f"written by plan_simulation, but here {found}. Every worker must see the scheduler's "
        "data: mount one shared volume (NFS, EFS, a ReadWriteMany volume) at the same path on "
        "every machine (README: Deployment, shared data)"
    )


def lineage_skipped(conf: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A DAG run with ``dag_run.conf`` overrides made outputs that are not what ``dvc.yaml``
    makes from params.yaml: say so and leave ``dvc.lock`` alone (the result), else None."""
    if not conf:
        return None
    print(
        "lineage: this run used dag_run.conf overrides; its outputs do not match "
        "params.yaml, so dvc.lock is left as it was"
    )
    return {"committed": False, "pushed": False}


def record_run_lineage(settings: Settings, period: str | None) -> dict[str, Any]:
    """The end of a run: for a refresh period, its history line and lineage
    (``finish_period``); otherwise ``record_lineage`` of the project. ``dvc.yaml`` reads the
    period list as params, so an empty one is written first when there is none."""
    if period is not None:
        return finish_period(settings, period)
    ledger = Catalog.of(settings).periods
    if not ledger.exists() and (settings.base_dir / "dvc.yaml").is_file():
        Ledger().save(ledger)
    # The dataset stages only: the eval stage is the ise_eval DAG's to record.
    return record_lineage(settings.base_dir, stages=STAGE_NAMES)
