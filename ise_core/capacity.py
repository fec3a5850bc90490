"""How much runs at once: one answer for ``ise simulate``, ``ise estimate`` and the DAG.

``llm.max_concurrency`` is the endpoint's capacity: the requests it serves at once. An episode
has at most one request out at a time and spends the rest of its time opening a sandbox,
running tools and writing its file, so a model-backed run keeps ``EPISODES_PER_SLOT`` episodes
in flight per slot: while some are between requests, others have theirs queued for the slot
that frees next. That number is bounded by what this machine's workspace holds (free memory,
the process limit, or ``workspace.max_sandboxes`` when set). A run on the scripted programs
has no endpoint to fill; its episodes are CPU work (the programs and the tool calls), so it
runs ``SCRIPTED_EPISODES_PER_CORE`` per usable core. ``simulate.concurrency`` (or
``ise simulate --concurrency``) overrides all of this.

The Airflow DAG derives its numbers from the same plan: each mapped ``simulate`` task runs
its batch of ``simulate.intents_per_task`` intents at most ``episodes`` at once, and as many
tasks run at once (``max_active_tis_per_dag``, and the pool's size) as keep ``episodes`` in
flight. With ``llm.limiter: process`` every task process has the whole ``max_concurrency`` to
itself, so there the DAG runs only as many tasks as keep the endpoint's capacity (tasks x
episodes per task <= max_concurrency) and the endpoint is never sent more than it serves;
``llm.limiter: redis`` shares one cap, and the DAG runs the full ``episodes``.

Episodes start longest first (``longest_first``, in ``ise simulate`` and in the order of the
DAG's mapped instances): the run's end then drains short episodes, not one long episode
started last while the other slots sit idle.

Importing this module costs nothing beyond the settings (the DAG file imports it at parse
time).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ise_core.config import Settings, WorkspaceSettings

if TYPE_CHECKING:
    from ise_core.records import Intent

IntentT = TypeVar("IntentT", bound="Intent")

# Episodes in flight per endpoint slot: room for half of every episode's time to go to its
# sandbox, tools and writes while the endpoint stays full (benchmarks/saturation_cli.py).
EPISODES_PER_SLOT = 2
# Episodes per usable core for the scripted programs (CPU-bound on both sides).
SCRIPTED_EPISODES_PER_CORE = 2
# Host memory counted per sandbox in flight. Measured: an idle local sandbox (bwrap and its
# supervisor) holds ~14 MiB; the tools an episode runs inside (python, node, git) add tens.
SANDBOX_MEMORY_MIB = 128
# Share of the free memory the sandboxes may take (the rest: this process, the OS, a model
# server on the same machine).
MEMORY_SHARE = 0.5
# Processes and threads counted per sandbox in flight (bwrap, supervisor, a tool's children,
# this process's worker threads).
SANDBOX_PIDS = 32

_MEMINFO = Path("/proc/meminfo")
_PID_MAX = Path("/proc/sys/kernel/pid_max")
_CGROUP_V2 = Path("/sys/fs/cgroup")
_CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")
_CGROUP_V1_PIDS = Path("/sys/fs/cgroup/pids")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _available_memory_mib() -> int | None:
    """Free memory for new work: MemAvailable, capped by this cgroup's remaining limit."""
    free: int | None = None
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        free = None
    for limit_file, usage_file in (
        (_CGROUP_V2 / "memory.max", _CGROUP_V2 / "memory.current"),
        (_CGROUP_V1_MEMORY / "memory.limit_in_bytes", _CGROUP_V1_MEMORY / "memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            left = max(0, limit - usage) // (1 << 20)
            free = left if free is None else min(free, left)
    return free


def _available_pids() -> int | None:
    """Processes this process may still start: the cgroup's pids.max, else the kernel's."""
    for limit_file, usage_file in (
        (_CGROUP_V2 / "pids.max", _CGROUP_V2 / "pids.current"),
        (_CGROUP_V1_PIDS / "pids.max", _CGROUP_V1_PIDS / "pids.current"),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None:
            return max(0, limit - usage)
    pid_max = _read_int(_PID_MAX)
    if pid_max is None:
        return None
    try:
        running = sum(1 for name in os.listdir("/proc") if name.isdigit())
    except OSError:
        return None
    return max(0, pid_max - running)


def machine_sandboxes(workspace: WorkspaceSettings) -> tuple[int, str]:
    """Sandboxes this machine can hold at once, and what bounds it."""
    if workspace.max_sandboxes is not None:
        return workspace.max_sandboxes, "workspace.max_sandboxes"
    bounds: list[tuple[int, str]] = []
    memory = _available_memory_mib()
    if memory is not None:
        per_sandbox = min(workspace.memory_mb, SANDBOX_MEMORY_MIB)
        bounds.append((int(memory * MEMORY_SHARE) // per_sandbox, f"free memory ({memory} MiB)"))
    pids = _available_pids()
    if pids is not None:
        bounds.append((pids // SANDBOX_PIDS, f"the process limit ({pids} free)"))
    if not bounds:
        return 1024, "no limit known"
    count, why = min(bounds)
    return max(1, count), why


def model_backed(settings: Settings) -> bool:
    """Whether an episode's user or agent talks to an endpoint (not the scripted programs)."""
    return any(settings.llm.role(role)["provider"] == "openai" for role in ("user", "agent"))


def available_cores() -> int:
    from ise_core.intents.threads import available_cores as cores

    return cores()


@dataclass(frozen=True)
class ConcurrencyPlan:
    """Episodes in flight for one simulate process, and the DAG's numbers derived from it."""

    episodes: int  # episodes at once in one `ise simulate` (and in one DAG task, at most)
    why: str  # where that number comes from, for people
    endpoint_slots: int | None  # llm.max_concurrency of a model-backed run
    machine_sandboxes: int
    per_task: int  # episodes at once in one mapped simulate task
    active_tasks: int  # mapped simulate tasks at once (max_active_tis_per_dag)
    pool_slots: int  # the LLM pool's size

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def episodes_in_flight(settings: Settings, override: int | None = None) -> tuple[int, str]:
    """Episodes one simulate process runs at once, and why that many."""
    if override is not None:
        return max(1, override), "--concurrency"
    if settings.simulate.concurrency is not None:
        return settings.simulate.concurrency, "simulate.concurrency"
    machine, bound = machine_sandboxes(settings.workspace)
    if model_backed(settings):
        wanted = EPISODES_PER_SLOT * settings.llm.max_concurrency
        why = f"{EPISODES_PER_SLOT} x llm.max_concurrency"
    else:
        wanted = SCRIPTED_EPISODES_PER_CORE * available_cores()
        why = f"{SCRIPTED_EPISODES_PER_CORE} per core (scripted)"
    if machine < wanted:
        return machine, f"{why} = {wanted}, bounded by {bound}"
    return wanted, why


def concurrency_plan(settings: Settings, override: int | None = None) -> ConcurrencyPlan:
    """The run's concurrency: episodes per process, and the DAG's tasks and pool."""
    episodes, why = episodes_in_flight(settings, override)
    machine, _ = machine_sandboxes(settings.workspace)
    per_task = max(1, min(settings.simulate.intents_per_task, episodes))
    slots = settings.llm.max_concurrency if model_backed(settings) else None
    tasks = math.ceil(episodes / per_task)
    if slots is not None and settings.llm.limiter == "process":
        # Each task process has the whole cap to itself: keep the sum within the endpoint's.
        tasks = min(tasks, max(1, slots // min(per_task, slots)))
    airflow = settings.airflow
    active = airflow.max_active_tis_per_dag or tasks
    return ConcurrencyPlan(
        episodes=episodes,
        why=why,
        endpoint_slots=slots,
        machine_sandboxes=machine,
        per_task=per_task,
        active_tasks=active,
        pool_slots=airflow.pool_size or active,
    )


_COMPLEXITY_RANK = {"simple": 0, "medium": 1, "complex": 2}


def expected_turns(intent: Intent) -> int:
    """User turns an intent implies: the request, one turn per hidden detail the user has
    to reveal, and the closing double-check (what the scripted user plans, and what a model
    user told to reveal details one at a time does)."""
    return 2 + len(intent.hidden_details)


def longest_first(intents: Sequence[IntentT]) -> list[IntentT]:
    """``intents`` in the order to start them: most expected turns first, then the more
    complex, with more tasks and checks; ties keep their order (the run stays reproducible)."""

    def length(intent: IntentT) -> tuple[int, int, int, int]:
        return (
            expected_turns(intent),
            _COMPLEXITY_RANK.get(intent.complexity, 0),
            len(intent.tasks),
            len(intent.checks),
        )

    return sorted(intents, key=length, reverse=True)


__all__ = [
    "EPISODES_PER_SLOT",
    "ConcurrencyPlan",
    "concurrency_plan",
    "episodes_in_flight",
    "expected_turns",
    "longest_first",
    "machine_sandboxes",
    "model_backed",
]
