"""From a pilot's episodes to the whole run: totals with a range, and the wall time.

Pure functions over numbers. A per-unit figure (tokens of one episode, of one intent's
write-out) is projected to ``units`` as ``units x mean``; its range is ``units x`` the 90%
confidence interval of the mean, from the pilot's spread (Student's t, since a pilot is small):
what the full run will use, not what one more episode might.

The wall time comes from replaying the run's schedule: ``at_once`` episodes in flight, each a
chain of requests that take the endpoint's measured latency and share its ``slots``, with the
episode's other time (sandbox, tools, checks) spread between them, first come first served;
episodes start longest first, as ``ise simulate`` starts them.
"""

from __future__ import annotations

import heapq
import itertools
import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass

CONFIDENCE = 0.90
# Runs longer than this many episodes are replayed at this size and scaled (the steady state
# dominates; replaying 50,000 episodes request by request would take a minute).
REPLAYED_EPISODES = 2000


@dataclass(frozen=True)
class Range:
    """A projected figure: the expected value and a range."""

    expected: float
    low: float
    high: float

    def scaled(self, factor: float) -> Range:
        return Range(self.expected * factor, self.low * factor, self.high * factor)

    def __add__(self, other: Range) -> Range:
        return Range(
            self.expected + other.expected, self.low + other.low, self.high + other.high
        )

    def rounded(self, digits: int = 0) -> dict[str, float]:
        return {key: round(value, digits) for key, value in asdict(self).items()}


ZERO = Range(0.0, 0.0, 0.0)


# Two-sided 90% Student's t quantiles (t at 0.95) for 1 to 30 degrees of freedom: a pilot is
# small, and the table keeps `ise estimate` free of a statistics library.
_T90 = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782,
        1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725, 1.721, 1.717, 1.714, 1.711,
        1.708, 1.706, 1.703, 1.701, 1.699, 1.697)  # fmt: skip


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student's t quantile for ``df`` degrees of freedom: from the table at
    90%, else the Cornish-Fisher expansion around the normal quantile (within 0.001 from 30
    degrees of freedom on, within a few percent at 3 or fewer)."""
    if df < 1:
        raise ValueError("t_quantile needs at least one degree of freedom")
    if confidence == 0.90 and df <= len(_T90):
        return _T90[df - 1]
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def mean_range(values: Sequence[float], confidence: float = CONFIDENCE) -> Range:
    """The mean of ``values`` and its confidence interval (one value: no spread known)."""
    if not values:
        return ZERO
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Range(mean, mean, mean)
    half = t_quantile(len(values) - 1, confidence) * statistics.stdev(values) / math.sqrt(
        len(values)
    )
    return Range(mean, max(0.0, mean - half), mean + half)


def project(values: Sequence[float], units: float) -> Range:
    """``units`` of a per-unit figure measured on the pilot's units."""
    return mean_range(values).scaled(units)


@dataclass(frozen=True)
class EpisodeProfile:
    """One pilot episode as the schedule sees it."""

    requests: int
    other_s: float  # seconds not waiting on the endpoint: sandbox, tools, checks

    def work(self, latency_s: float) -> float:
        return self.requests * latency_s + self.other_s


@dataclass
class _Running:
    left: int  # requests still to send
    gap_s: float  # other time after each request


def replay_schedule(
    profiles: Sequence[EpisodeProfile],
    episodes: int,
    *,
    at_once: int,
    slots: int | None,
    latency_s: float,
) -> float:
    """Seconds to run ``episodes`` episodes shaped like ``profiles`` (cycled), ``at_once`` at a
    time, their requests sharing ``slots`` (None: no endpoint limit) at ``latency_s`` each."""
    if episodes <= 0 or not profiles:
        return 0.0
    replayed = min(episodes, max(REPLAYED_EPISODES, 20 * at_once))
    cycle = itertools.islice(itertools.cycle(profiles), replayed)
    waiting = deque(sorted(cycle, key=lambda p: p.work(latency_s), reverse=True))
    events: list[tuple[float, int, str, _Running]] = []
    order = itertools.count()
    free = slots if slots is not None else math.inf
    queued: deque[_Running] = deque()  # first come first served, as the slot gate serves them
    end = 0.0

    def start(now: float) -> None:
        if waiting:
            profile = waiting.popleft()
            steps = max(1, profile.requests)
            running = _Running(profile.requests, profile.other_s / steps)
            kind = "ready" if profile.requests else "done"
            heapq.heappush(events, (now + (0.0 if profile.requests else profile.other_s),
                                    next(order), kind, running))  # fmt: skip

    for _ in range(min(at_once, replayed)):
        start(0.0)
    while events:
        now, _, kind, running = heapq.heappop(events)
        if kind == "ready":
            if free > 0:
                free -= 1
                heapq.heappush(events, (now + latency_s, next(order), "answered", running))
            else:
                queued.append(running)
        elif kind == "answered":
            running.left -= 1
            at_once_again = running.left > 0 and running.gap_s <= 0
            if at_once_again:  # its next request already waits when this slot frees
                queued.append(running)
            if queued:
                first = queued.popleft()
                heapq.heappush(events, (now + latency_s, next(order), "answered", first))
            else:
                free += 1
            if not at_once_again:
                kind_next = "ready" if running.left else "done"
                heapq.heappush(events, (now + running.gap_s, next(order), kind_next, running))
        else:  # done
            end = max(end, now)
            start(now)
    return end * episodes / replayed


__all__ = [
    "CONFIDENCE",
    "ZERO",
    "EpisodeProfile",
    "Range",
    "mean_range",
    "project",
    "replay_schedule",
    "t_quantile",
]
