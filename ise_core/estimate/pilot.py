"""The pilot: the run's first intents through the real writer and ``ise simulate``.

The pilot writes out the first ``n`` samples of the run (the same samples ``ise intents``
draws first: sample *i* depends only on the seed and *i*) with the configured writer, then
simulates them with the configured user and agent, in the run's own response cache: when the
run itself comes to those intents, their requests are answered from the cache and cost
nothing. Its files (the pilot's intents, episodes and timings) live in their own folder
(``Catalog.estimate_dir``), never among the run's outputs; an estimate run again reuses the
finished pilot episodes and their measured timings.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass, field
from typing import Any

from ise_core.catalog import Catalog, EpisodeStore
from ise_core.config import Settings
from ise_core.errors import EpisodesFailed
from ise_core.llm.base import Usage
from ise_core.records import Intent, read_json, write_jsonl


@dataclass(frozen=True)
class PilotEpisode:
    """What one pilot episode used and how long its parts took."""

    intent_id: str
    status: str
    tokens: dict[str, tuple[int, int]]  # role -> (prompt, completion)
    requests: int  # requests it made (sent, or answered from the cache)
    cached: int  # of which answered from the cache
    llm_s: float  # waiting on the endpoint
    other_s: float  # everything else: sandbox, tools, checks


@dataclass
class Pilot:
    """The pilot's measurements."""

    writer: list[tuple[int, int]] = field(default_factory=list)  # per sample (prompt, completion)
    written: int = 0  # samples the writer turned into intents
    episodes: list[PilotEpisode] = field(default_factory=list)
    latency_s: float = 0.0  # one request's time at the endpoint
    latency_from: str = ""
    elapsed_s: float = 0.0

    @property
    def requests_per_episode(self) -> float:
        return statistics.fmean(e.requests for e in self.episodes) if self.episodes else 0.0


def pilot_settings(settings: Settings) -> Settings:
    """The run's settings with the pilot's intents and episodes in the estimate folder (the
    simulate fingerprint, the cache and the sandboxes stay the run's)."""
    folder = Catalog.of(settings).estimate_dir
    intents = settings.intents.model_copy(update={"out_dir": str(folder / "intents")})
    simulate = settings.simulate.model_copy(update={"out_dir": str(folder / "trajectories")})
    return settings.model_copy(update={"intents": intents, "simulate": simulate})


async def _write_out(settings: Settings, n: int) -> tuple[list[Intent], list[Usage]]:
    from ise_core.intents.render import render_intents
    from ise_core.intents.sample import sample_intents
    from ise_core.intents.taxonomy import load_taxonomy
    from ise_core.llm.factory import build_chat

    taxonomy = load_taxonomy(Catalog.of(settings).taxonomy_dir)
    samples = sample_intents(taxonomy, settings.intents, settings.seed, count=n)
    writer = build_chat("writer", settings.llm, base_dir=settings.base_dir, seed=settings.seed)
    gate = asyncio.Semaphore(settings.llm.max_concurrency)

    async def one(sample: Any) -> Any:
        async with gate:  # one sample per call: its own usage
            return await render_intents(
                [sample], writer, max_attempts=settings.intents.max_render_attempts
            )

    outcomes = await asyncio.gather(*(one(sample) for sample in samples))
    intents = [intent for outcome in outcomes for intent in outcome.intents]
    return intents, [outcome.usage for outcome in outcomes]


def _episode(store: EpisodeStore, intent: Intent) -> PilotEpisode | None:
    """The pilot episode of ``intent`` when it finished with these params (kept or not)."""
    if not store.is_done(intent):
        return None
    path = store.path(intent.id)
    trajectory = store.load(path)
    timing_path = store.timing_path(intent.id)
    timing = read_json(timing_path) if timing_path.exists() else {}
    usage = trajectory.metadata.get("token_usage") or {}
    tokens = {
        role: (int(counts.get("prompt_tokens", 0)), int(counts.get("completion_tokens", 0)))
        for role in ("user", "agent")
        for counts in [usage.get(role) or {}]
    }
    llm = timing.get("llm") or {}
    requests = int(llm.get("requests", 0)) + int(llm.get("cache_hits", 0))
    llm_s = float(timing.get("user_llm_s", 0.0)) + float(timing.get("agent_llm_s", 0.0))
    return PilotEpisode(
        intent_id=intent.id,
        status=trajectory.status,
        tokens=tokens,
        requests=requests,
        cached=int(llm.get("cache_hits", 0)),
        llm_s=llm_s,
        other_s=max(0.0, float(timing.get("wall_s", 0.0)) - llm_s),
    )


def _answered(stats: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, float]]:
    """Per endpoint: attempts answered and the seconds they took, so far in this process."""
    return {
        (entry["endpoint"], entry["model"]): (
            int(entry.get("answered") or 0),
            float(entry.get("answered_s") or 0.0),
        )
        for entry in stats
    }


def _latency(
    episodes: list[PilotEpisode],
    before: dict[tuple[str, str], tuple[int, float]],
    after: dict[tuple[str, str], tuple[int, float]],
) -> tuple[float, str]:
    """One request's time at the endpoint: measured by the limiters on the requests the pilot
    sent, else from the episodes' recorded timings (a pilot finished earlier, or the scripted
    programs, whose "requests" are program calls)."""
    answered = seconds = 0.0
    for key, (count, total) in after.items():
        count0, total0 = before.get(key, (0, 0.0))
        answered += count - count0
        seconds += total - total0
    if answered:
        return seconds / answered, f"measured on {int(answered)} requests"
    requests = sum(e.requests - e.cached for e in episodes)
    if requests:
        llm_s = sum(e.llm_s for e in episodes if e.requests > e.cached)
        return llm_s / requests, "from the pilot episodes' timings"
    return 0.0, "no request reached an endpoint"


def run_pilot(settings: Settings, n: int, *, progress: bool = True) -> Pilot:
    """Write out and simulate the run's first ``n`` samples; their measurements."""
    import time

    from ise_core.llm.limits import endpoint_stats
    from ise_core.simulate.stage import simulate_stage

    started = time.monotonic()
    scratch = pilot_settings(settings)
    intents, usages = asyncio.run(_write_out(settings, n))
    write_jsonl(Catalog.of(scratch).intents, intents)
    before = _answered(endpoint_stats())
    if intents:
        simulate_stage(scratch, progress=progress)
    store = EpisodeStore.of(scratch)
    episodes = [e for e in (_episode(store, intent) for intent in intents) if e is not None]
    if intents and not episodes:
        raise EpisodesFailed(
            f"ise estimate: none of the pilot's {len(intents)} episodes finished, so there is "
            f"nothing to project from; `ise llm check` probes the endpoint "
            f"(the pilot's files: {store.folder})"
        )
    latency, source = _latency(episodes, before, _answered(endpoint_stats()))
    return Pilot(
        writer=[(u.prompt_tokens, u.completion_tokens) for u in usages],
        written=len(intents),
        episodes=episodes,
        latency_s=latency,
        latency_from=source,
        elapsed_s=round(time.monotonic() - started, 3),
    )


__all__ = ["Pilot", "PilotEpisode", "pilot_settings", "run_pilot"]
