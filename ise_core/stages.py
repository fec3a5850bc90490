"""The one table of stages: ``STAGES``, read by ``ise run``, ``ise <stage>``, the Airflow DAG
and the ``dvc.yaml`` consistency test.

Each ``Stage`` says, once:

- ``name``: the CLI command, the DAG task and the ``dvc.yaml`` stage;
- ``run``: where its entry point lives (``"module:function"``, taking the settings and
  ``StageOptions`` and returning a ``StageResult``). A reference, not an import, so reading
  the table (a DAG file being parsed) costs nothing: torch, Great Expectations and the LLM SDK
  load only when a stage runs;
- ``gate``: the quality gate that must pass before the next stage starts, if any;
- ``fingerprint_keys``: exactly the params that decide its output (their hash goes into its
  ``stats.json`` and decides which episodes are current); ``roles`` adds the *resolved*
  settings of LLM roles (role overrides over the llm block); ``scripted_keys`` count only
  when one of ``scripted_roles`` is played by the scripted program (its shape parameters
  say nothing about episodes a model made);
- ``outputs``: the catalog entries it writes (``ise_core.catalog.Catalog``), the first being
  the file a downstream consumer watches.

Adding a stage means adding one entry here, its entry point and its ``dvc.yaml`` stage (the
consistency test says what is missing); the CLI and the DAG pick it up from the table (the DAG
needs a line of its own only for a stage that is more than one plain task).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ise_core.config import Role, RoleName, Settings, fingerprint
from ise_core.errors import ConfigError, GateFailed
from ise_core.records import canonical_json, text_hash

if TYPE_CHECKING:
    from ise_core.quality.runner import GateReport
    from ise_core.shutdown import Shutdown

Scalar = bool | int | float | str
Log = Callable[[str], None]


@dataclass(frozen=True)
class StageOptions:
    """How to run a stage; nothing here changes what it produces."""

    only: tuple[str, ...] | None = None  # simulate: just these intent ids
    concurrency: int | None = None  # simulate: episodes at once (default from params)
    progress: bool = True  # a progress bar on stderr (off under an orchestrator)
    # simulate: stops taking episodes when a stop signal came (ise_core.shutdown)
    shutdown: Shutdown | None = None


@dataclass(frozen=True)
class StageResult:
    """What a stage run returns: small values (counts, rates, names; fit for an XCom) and
    one line for people."""

    stage: str
    values: dict[str, Scalar] = field(default_factory=dict)
    summary: str = ""

    @classmethod
    def of(cls, stage: str, stats: Mapping[str, Any], shown: Sequence[str]) -> StageResult:
        """From a stats dict: its scalar entries, and the ``shown`` ones as the summary."""
        line = ", ".join(f"{key}={_short(stats[key])}" for key in shown if key in stats)
        return cls(stage, small_values(stats), line)


def small_values(stats: Mapping[str, Any]) -> dict[str, Scalar]:
    """The scalar entries of a stats dict (counts, rates, short names): what fits an XCom."""
    return {
        str(key): value
        for key, value in stats.items()
        if isinstance(value, bool | int | float | str)
        and not (isinstance(value, str) and len(value) >= 200)
    }


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _resolve(reference: str) -> Callable[..., Any]:
    module, _, name = reference.partition(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return function


@dataclass(frozen=True)
class Gate:
    """A quality gate: ``check`` (``"module:function"``) validates a stage's outputs."""

    name: str
    check: str

    def __call__(self, settings: Settings, **options: Any) -> GateReport:
        report: GateReport = _resolve(self.check)(settings, **options)
        return report


@dataclass(frozen=True)
class Stage:
    name: str
    run: str
    gate: Gate | None
    fingerprint_keys: tuple[str, ...]
    outputs: tuple[str, ...]
    help: str
    roles: tuple[RoleName, ...] = ()
    scripted_keys: tuple[str, ...] = ()
    scripted_roles: tuple[Role, ...] = ()
    options: tuple[str, ...] = ()  # the StageOptions fields it honours (CLI flags)

    def keys(self, settings: Settings) -> tuple[str, ...]:
        """The params hashed into the fingerprint under ``settings``."""
        scripted = any(settings.llm.role(r)["provider"] == "scripted" for r in self.scripted_roles)
        return self.fingerprint_keys + (self.scripted_keys if scripted else ())

    def fingerprint(self, settings: Settings) -> str:
        """Hash of exactly the params this stage reads (see ``fingerprint_keys``, ``roles``)."""
        base = fingerprint(settings, *self.keys(settings))
        if not self.roles:
            return base
        # The roles' resolved endpoint, model and sampling matter; cache mode and limits do not.
        resolved = {role: settings.llm.role(role) for role in self.roles}
        return text_hash(canonical_json({"base": base, **resolved}))[:16]

    def execute(self, settings: Settings, options: StageOptions | None = None) -> StageResult:
        result: StageResult = _resolve(self.run)(settings, options or StageOptions())
        return result


# Exactly the settings that change what an episode contains (not where it is written, how
# many run at once, nor the cache). Collect counts only the episodes made with them.
_EPISODE_KEYS: tuple[str, ...] = (
    "seed",
    "simulate.max_turns",
    "simulate.max_steps_per_turn",
    "simulate.user_retries",
    "simulate.drift_retries",
    "simulate.episode_token_budget",
    "simulate.episode_time_limit_s",
    "simulate.require_checks",
    "simulate.judge_min_score",
    "simulate.show_workspace_files",
    "simulate.workspace_listing_limit",
    "simulate.first_turn",
    "llm.provider",
    "llm.base_url",
    "llm.model",
    "llm.temperature",
    "llm.top_p",
    "llm.max_tokens",
    # how calls are offered and read, what replies may be, when requests are compacted
    "llm.tool_calling",
    "llm.constrained_output",
    "llm.context_window",
    "llm.roles.user",
    "llm.roles.agent",
    "llm.roles.judge",
    "workspace.backend",
    "workspace.template",
    "workspace.call_timeout_s",
    "workspace.output_limit",
    "workspace.network_allowlist",
    "workspace.web_search",  # off (the default) counts as absent: see config.NEUTRAL_DEFAULTS
)

# The embedding settings that decide the vectors; batch size, threads, shard size and the
# cache and model folders only change how fast they are made (or where they are kept).
EMBEDDING_KEYS: tuple[str, ...] = (
    "embedding.provider",
    "embedding.model",
    "embedding.backend",
    "embedding.base_url",
    "embedding.dimensions",
)

# The shape of the scripted user's and agent's episodes (programs, not models).
_SCRIPTED_KEYS: tuple[str, ...] = ("simulate.scripted",)

STAGES: tuple[Stage, ...] = (
    Stage(
        name="intents",
        run="ise_core.intents.stage:run_intents",
        gate=Gate("intents", "ise_core.quality.intents_gate:gate_intents"),
        fingerprint_keys=(
            "seed",
            "intents",
            *EMBEDDING_KEYS,
            "dedup",
            "diversity",
            "eval.fraction",
            "eval.count",
            "eval.seed",
            "eval.safety.secret_path",
        ),
        roles=("writer",),
        outputs=(
            "intents",
            "sampled",
            "written",
            "duplicates",
            "rejected",
            "intents_stats",
            "vendi_curve",
            "eval_tasks",
        ),
        help="sample, write out, de-duplicate and score intents",
    ),
    Stage(
        name="simulate",
        run="ise_core.simulate.stage:run_simulate",
        gate=None,
        fingerprint_keys=_EPISODE_KEYS,
        scripted_keys=_SCRIPTED_KEYS,
        scripted_roles=("user", "agent"),
        outputs=("episodes_dir",),
        help="run one episode per intent (resumable)",
        options=("only", "concurrency"),
    ),
    Stage(
        name="collect",
        run="ise_core.simulate.stage:run_collect",
        gate=Gate("trajectories", "ise_core.quality.trajectories_gate:gate_trajectories"),
        fingerprint_keys=_EPISODE_KEYS,
        scripted_keys=_SCRIPTED_KEYS,
        scripted_roles=("user", "agent"),
        outputs=("trajectories", "episode_index", "trajectories_stats"),
        help="gather kept episodes into trajectories.jsonl + stats",
    ),
    Stage(
        name="export",
        run="ise_core.export.stage:run_export",
        gate=Gate("sft", "ise_core.quality.sft_gate:gate_sft"),
        fingerprint_keys=("seed", "export"),
        outputs=("train", "valid", "sft_stats", "card", "plots_dir"),
        help="write the SFT dataset, its stats, card and plots",
    ),
)

# What decides an eval try besides the agent under test, the user and the judge (resolved by
# ise_core.evaluation.runner.run_fingerprint): the episodes' settings, the tries, the faults
# and the safety rules. Not the pass threshold or the gate's margin: they judge, not produce.
_EVAL_KEYS: tuple[str, ...] = (
    # what shapes an episode (the simulate stage's keys) but the llm block, which the agent,
    # user and judge resolution covers, and what decides ``kept``: eval scores by itself
    *(
        k
        for k in _EPISODE_KEYS
        if not k.startswith("llm.")
        and k not in ("simulate.require_checks", "simulate.judge_min_score")
    ),
    "eval.k",
    "eval.agent",
    "eval.faults",
    "eval.safety.forbidden_commands",
)

# Measurements beside the dataset pipeline: ``ise eval`` benchmarks the agent under test on
# the held-out tasks stage 1 froze. It is a ``dvc.yaml`` stage (``dvc metrics diff`` compares
# two runs) with its gate, but not part of ``ise run`` or the refresh DAG: its own DAG,
# ``ise_eval``, runs it when the SFT data is refreshed. ``ise eval`` has its own command line
# (ise_core/cli_eval.py: --model, --endpoint, --k, --run).
MEASUREMENTS: tuple[Stage, ...] = (
    Stage(
        name="eval",
        run="ise_core.evaluation.stage:run_eval",
        gate=Gate("eval", "ise_core.quality.eval_gate:gate_eval"),
        fingerprint_keys=_EVAL_KEYS,
        roles=("user", "agent", "judge"),
        scripted_keys=_SCRIPTED_KEYS,
        scripted_roles=("user", "agent"),
        outputs=(
            "eval_metrics",
            "eval_results",
            "eval_plots_dir",
            "eval_task_results_dir",
            "eval_episodes_dir",
            "eval_gate_result",
        ),
        help="benchmark the agent under test on the held-out eval tasks",
        options=("only", "concurrency"),
    ),
)

# Gates that follow no stage of the pipeline: ``ise gate eval`` checks the latest eval run.
STANDALONE_GATES: tuple[Gate, ...] = tuple(m.gate for m in MEASUREMENTS if m.gate is not None)

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
GATES: dict[str, Gate] = {
    gate.name: gate for gate in (*(stage.gate for stage in STAGES if stage.gate), *STANDALONE_GATES)
}


def stage(name: str) -> Stage:
    """The stage called ``name``; a ConfigError lists the known ones."""
    for candidate in STAGES:
        if candidate.name == name:
            return candidate
    raise ConfigError(f"unknown stage {name!r} (expected one of {', '.join(STAGE_NAMES)})")


def measurement(name: str) -> Stage:
    """The measurement called ``name`` (``eval``); a ConfigError lists the known ones."""
    for candidate in MEASUREMENTS:
        if candidate.name == name:
            return candidate
    known = ", ".join(m.name for m in MEASUREMENTS)
    raise ConfigError(f"unknown measurement {name!r} (expected one of {known})")


def gate_of(name: str) -> Gate:
    """The gate called ``name``; a ConfigError lists the known ones."""
    if name not in GATES:
        raise ConfigError(f"unknown gate {name!r} (expected one of {', '.join(GATES)})")
    return GATES[name]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_gate(name: str, settings: Settings, log: Log = _stderr, **options: Any) -> str:
    """Run a gate; return its one-line summary, or raise GateFailed with the full report.
    ``options`` go to the gate (e.g. ``run=`` for the eval gate)."""
    report = gate_of(name)(settings, **options)
    if not report.passed:
        raise GateFailed(f"gate {name} failed", report=report.text)
    summary = str(report.summary())
    log(f"gate {name}: passed ({summary})")
    return summary


def run_all(
    settings: Settings, log: Log = _stderr, options: StageOptions | None = None
) -> list[StageResult]:
    """Every stage in order, each followed by its gate: what ``dvc repro`` also does."""
    results = []
    for entry in STAGES:
        result = entry.execute(settings, options)
        log(f"{entry.name}: {result.summary}")
        if entry.gate is not None:
            run_gate(entry.gate.name, settings, log)
        results.append(result)
    return results


__all__ = [
    "GATES",
    "MEASUREMENTS",
    "STAGES",
    "STAGE_NAMES",
    "STANDALONE_GATES",
    "Gate",
    "Stage",
    "StageOptions",
    "StageResult",
    "gate_of",
    "measurement",
    "run_all",
    "run_gate",
    "small_values",
    "stage",
]
