"""``ise estimate``: what the run will cost and how long it will take, before it runs.

A pilot (ise_core.estimate.pilot) writes out and simulates the run's first N intents against
the configured endpoint, in the run's own cache. From its spread this projects, for the whole
run (ise_core.estimate.projection):

- tokens per role (writer per sample, user and agent per episode), prompt and completion;
- cost, with ``llm.prices`` (per role's model; a model without a price is named, not priced);
- the simulate stage's wall time at the run's concurrency (ise_core.capacity) and the
  endpoint's measured latency;
- what the simulate stage still has to send (episodes not done yet; the pilot's own are
  answered from the cache), and the ``llm.budget`` to set for it: the high end of that range
  plus ``BUDGET_HEADROOM``.

Each figure comes with a 90% range. ``check_budget`` fails (``BudgetExceeded``) when the
expected spend exceeds the configured ``llm.budget``; ``ise estimate`` then exits 1, and the
Airflow DAG's optional first task (``airflow.estimate_pilot``) fails the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ise_core.capacity import episodes_in_flight, model_backed
from ise_core.catalog import Catalog, EpisodeStore
from ise_core.config import Settings
from ise_core.errors import BudgetExceeded
from ise_core.estimate.pilot import Pilot, run_pilot
from ise_core.estimate.projection import (
    ZERO,
    EpisodeProfile,
    Range,
    mean_range,
    project,
    replay_schedule,
)
from ise_core.records import Intent, read_json, read_jsonl, write_json

ROLES = ("writer", "user", "agent")
# The budget to set is the high end of the projected spend plus this share.
BUDGET_HEADROOM = 0.10
PER_MILLION = 1_000_000.0


@dataclass
class RunShape:
    """The run the pilot is projected onto."""

    samples: int  # intents.count: samples the writer writes out
    episodes: int  # episodes simulate runs
    episodes_known: bool  # from the run's intents.jsonl (else projected from the samples)
    done: int  # episodes already finished with these params
    at_once: int
    slots: int | None  # the endpoint's requests in flight (None: no endpoint)


@dataclass
class Estimate:
    pilot: Pilot
    run: RunShape
    tokens: dict[str, dict[str, Range]]  # role -> prompt / completion / total
    cost: dict[str, Range | None]  # role -> cost (None: the role's model has no price)
    wall_s: Range  # the simulate stage, all episodes
    to_spend_tokens: Range  # the simulate stage, episodes not done and not in the cache
    to_spend_cost: Range | None
    budget_tokens: int
    budget_cost: float | None
    configured: dict[str, Any]  # llm.budget as set

    def over_budget(self) -> str | None:
        """Why the expected spend does not fit the configured budget (None: it fits)."""
        tokens, cost = self.configured.get("tokens"), self.configured.get("cost")
        if tokens is not None and self.to_spend_tokens.expected > tokens:
            return (
                f"the simulate stage is projected to send {self.to_spend_tokens.expected:,.0f} "
                f"tokens ({self.to_spend_tokens.low:,.0f}-{self.to_spend_tokens.high:,.0f}), "
                f"above llm.budget.tokens={tokens:,}"
            )
        if cost is not None and self.to_spend_cost and self.to_spend_cost.expected > cost:
            return (
                f"the simulate stage is projected to cost {self.to_spend_cost.expected:.2f} "
                f"({self.to_spend_cost.low:.2f}-{self.to_spend_cost.high:.2f}), above "
                f"llm.budget.cost={cost}"
            )
        return None

    def as_dict(self) -> dict[str, Any]:
        pilot = self.pilot
        return {
            "pilot": {
                "intents": len(pilot.writer),
                "written": pilot.written,
                "episodes": len(pilot.episodes),
                "statuses": _statuses(pilot),
                "requests_per_episode": round(pilot.requests_per_episode, 2),
                "cached_requests": sum(e.cached for e in pilot.episodes),
                "latency_s": round(pilot.latency_s, 4),
                "latency_from": pilot.latency_from,
                "elapsed_s": pilot.elapsed_s,
            },
            "run": vars(self.run),
            "tokens": {
                role: {kind: r.rounded() for kind, r in kinds.items()}
                for role, kinds in self.tokens.items()
            },
            "cost": {role: r.rounded(4) if r else None for role, r in self.cost.items()},
            "simulate_wall_s": self.wall_s.rounded(1),
            "simulate_to_spend": {
                "tokens": self.to_spend_tokens.rounded(),
                "cost": self.to_spend_cost.rounded(4) if self.to_spend_cost else None,
            },
            "budget_to_set": {"tokens": self.budget_tokens, "cost": self.budget_cost},
            "budget_configured": self.configured,
            "over_budget": self.over_budget(),
        }


def _statuses(pilot: Pilot) -> dict[str, int]:
    counts: dict[str, int] = {}
    for episode in pilot.episodes:
        counts[episode.status] = counts.get(episode.status, 0) + 1
    return dict(sorted(counts.items()))


def run_shape(settings: Settings, pilot: Pilot) -> RunShape:
    """How many samples and episodes the run has, and how many are done.

    The run's intents.jsonl counts when it exists and was made with these params; otherwise
    the episodes are projected as the samples the pilot's writer would keep (before the
    de-duplication, which only the intents stage knows: an upper bound)."""
    files = Catalog.of(settings)
    samples = settings.intents.count
    at_once, _ = episodes_in_flight(settings)
    slots = settings.llm.max_concurrency if model_backed(settings) else None
    if files.intents.exists() and _intents_current(settings):
        intents = read_jsonl(files.intents, Intent)
        store = EpisodeStore.of(settings)
        done = sum(1 for intent in intents if store.is_done(intent))
        return RunShape(samples, len(intents), True, done, at_once, slots)
    share = pilot.written / len(pilot.writer) if pilot.writer else 1.0
    return RunShape(samples, round(samples * share), False, 0, at_once, slots)


def _intents_current(settings: Settings) -> bool:
    from ise_core.stages import stage

    stats = Catalog.of(settings).intents_stats
    if not stats.exists():
        return True  # written by hand or by a tool: take it as the run's
    recorded = read_json(stats).get("params_fingerprint")
    return bool(recorded == stage("intents").fingerprint(settings))


def _per_unit(pilot: Pilot, role: str) -> list[tuple[int, int]]:
    if role == "writer":
        return pilot.writer
    return [episode.tokens.get(role, (0, 0)) for episode in pilot.episodes]


def _tokens(pilot: Pilot, run: RunShape) -> dict[str, dict[str, Range]]:
    result: dict[str, dict[str, Range]] = {}
    for role in ROLES:
        units = run.samples if role == "writer" else run.episodes
        rows = _per_unit(pilot, role)
        result[role] = {
            "prompt": project([p for p, _ in rows], units),
            "completion": project([c for _, c in rows], units),
            "total": project([p + c for p, c in rows], units),
        }
    return result


def _unit_costs(settings: Settings, pilot: Pilot, role: str) -> list[float] | None:
    model = settings.llm.role(role)["model"]  # type: ignore[arg-type]
    provider = settings.llm.role(role)["provider"]  # type: ignore[arg-type]
    if provider == "scripted":
        return [0.0 for _ in _per_unit(pilot, role)]
    price = settings.llm.prices.get(model or "")
    if price is None:
        return None
    return [
        (p * price.prompt + c * price.completion) / PER_MILLION for p, c in _per_unit(pilot, role)
    ]


def _costs(settings: Settings, pilot: Pilot, run: RunShape) -> dict[str, Range | None]:
    result: dict[str, Range | None] = {}
    for role in ROLES:
        units = run.samples if role == "writer" else run.episodes
        costs = _unit_costs(settings, pilot, role)
        result[role] = None if costs is None else project(costs, units)
    return result


def _wall(pilot: Pilot, run: RunShape, episodes: int) -> Range:
    profiles = [EpisodeProfile(e.requests, e.other_s) for e in pilot.episodes]
    if not profiles or episodes <= 0:
        return ZERO
    central = replay_schedule(
        profiles, episodes, at_once=run.at_once, slots=run.slots, latency_s=pilot.latency_s
    )
    work = mean_range([p.work(pilot.latency_s) for p in profiles])
    spread = (work.high - work.expected) / work.expected if work.expected else 0.0
    return Range(central, central * max(0.0, 1 - spread), central * (1 + spread))


def _to_spend(settings: Settings, pilot: Pilot, run: RunShape) -> tuple[Range, Range | None]:
    """What the simulate stage still has to send: episodes not done, less the pilot's (its
    requests are in the cache)."""
    left = max(0, run.episodes - run.done - len(pilot.episodes))
    per_episode = [
        sum(episode.tokens.get(role, (0, 0))[i] for role in ("user", "agent") for i in (0, 1))
        for episode in pilot.episodes
    ]
    tokens = project(per_episode, left)
    user, agent = _unit_costs(settings, pilot, "user"), _unit_costs(settings, pilot, "agent")
    if user is None or agent is None:
        return tokens, None
    return tokens, project([u + a for u, a in zip(user, agent, strict=True)], left)


def _round_up(value: float, digits: int = 2) -> float:
    """``value`` rounded up to ``digits`` significant digits (a budget is a round number)."""
    if value <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(value)) - digits + 1)
    return math.ceil(value / scale) * scale


def project_run(settings: Settings, pilot: Pilot) -> Estimate:
    """The whole run, projected from ``pilot``."""
    run = run_shape(settings, pilot)
    to_spend, to_spend_cost = _to_spend(settings, pilot, run)
    budget = settings.llm.budget
    return Estimate(
        pilot=pilot,
        run=run,
        tokens=_tokens(pilot, run),
        cost=_costs(settings, pilot, run),
        wall_s=_wall(pilot, run, run.episodes),
        to_spend_tokens=to_spend,
        to_spend_cost=to_spend_cost,
        budget_tokens=max(1, int(_round_up(to_spend.high * (1 + BUDGET_HEADROOM)))),
        budget_cost=(
            _round_up(to_spend_cost.high * (1 + BUDGET_HEADROOM)) if to_spend_cost else None
        ),
        configured={"tokens": budget.tokens, "cost": budget.cost},
    )


def estimate_stage(settings: Settings, *, pilot: int = 10, progress: bool = True) -> Estimate:
    """Run the pilot, project the run, write ``estimate.json``; the estimate."""
    if pilot < 1:
        raise ValueError("the pilot needs at least one intent")
    measured = run_pilot(settings, min(pilot, settings.intents.count), progress=progress)
    estimate = project_run(settings, measured)
    write_json(Catalog.of(settings).estimate, estimate.as_dict())
    return estimate


def check_budget(estimate: Estimate) -> None:
    """Raise ``BudgetExceeded`` when the expected spend exceeds the configured budget."""
    reason = estimate.over_budget()
    if reason is not None:
        raise BudgetExceeded(
            f"ise estimate: {reason}; raise llm.budget (the estimate suggests tokens: "
            f"{estimate.budget_tokens:,}) or run fewer intents"
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _row(label: str, value: Range, fmt: str) -> str:
    return (
        f"  {label:<20} {format(value.expected, fmt):>14} {format(value.low, fmt):>14} "
        f"{format(value.high, fmt):>14}"
    )


def report_lines(estimate: Estimate) -> list[str]:
    """The estimate for people (the figures of ``estimate.json``)."""
    pilot, run = estimate.pilot, estimate.run
    statuses = ", ".join(f"{n} {status}" for status, n in _statuses(pilot).items())
    lines = [
        f"pilot: {len(pilot.writer)} intents written out ({pilot.written} kept), "
        f"{len(pilot.episodes)} simulated ({statuses or 'none'}) in {pilot.elapsed_s:.1f} s; "
        f"{pilot.requests_per_episode:.1f} requests per episode; endpoint latency "
        f"{pilot.latency_s:.3f} s ({pilot.latency_from})",
        f"run: {run.samples} samples -> {run.episodes} episodes"
        f"{'' if run.episodes_known else ' (before de-duplication: at most)'}, {run.done} done; "
        f"{run.at_once} episodes at once"
        + (f", {run.slots} requests in flight" if run.slots else ", no endpoint"),
        f"  {'tokens (90% range)':<20} {'expected':>14} {'low':>14} {'high':>14}",
    ]
    for role, kinds in estimate.tokens.items():
        lines.append(_row(role, kinds["total"], ",.0f"))
    lines.append(_row("total", _sum(k["total"] for k in estimate.tokens.values()), ",.0f"))
    for role, cost in estimate.cost.items():
        lines.append(
            _row(f"cost {role}", cost, ",.4f") if cost else f"  cost {role:<15} no llm.prices"
        )
    wall = estimate.wall_s
    lines.append(
        f"simulate wall time: {_duration(wall.expected)} ({_duration(wall.low)} - "
        f"{_duration(wall.high)})"
    )
    spend = estimate.to_spend_tokens
    lines.append(
        f"simulate still to send: {spend.expected:,.0f} tokens ({spend.low:,.0f} - "
        f"{spend.high:,.0f})"
        + (f", cost {estimate.to_spend_cost.expected:.4f}" if estimate.to_spend_cost else "")
    )
    priced = f", cost: {estimate.budget_cost}" if estimate.budget_cost is not None else ""
    lines.append(f"budget to set: llm.budget: {{tokens: {estimate.budget_tokens}{priced}}}")
    reason = estimate.over_budget()
    if reason:
        lines.append(f"OVER BUDGET: {reason}")
    return lines


def _sum(ranges: Sequence[Range] | Any) -> Range:
    total = ZERO
    for value in ranges:
        total = total + value
    return total


__all__ = [
    "BUDGET_HEADROOM",
    "Estimate",
    "RunShape",
    "check_budget",
    "estimate_stage",
    "project_run",
    "report_lines",
    "run_shape",
]
