"""Token accounting, the cost estimate and the budget cap of one run.

An ``Accountant`` belongs to one run in one process. Every ``Chat`` the factory builds for
that run records into it, broken down by role, by model and by episode tag (the ``episode``
option of ``complete``, e.g. the intent id). Tokens are counted twice over: what was *sent*
(requests the endpoint answered, including malformed replies) and what was *replayed* from
the cache (free). Retries, failures, malformed replies and cache hits are counted too.

Cost: ``llm.prices`` maps a model name to prices per million prompt and completion tokens; a
model without a price counts as free and is listed under ``unpriced_models``.

Budget: ``llm.budget.tokens`` caps the tokens sent, ``llm.budget.cost`` the estimated cost
sent. ``check_budget()`` is called before each new request is sent (never between the
retries of one request, never for a cache hit) and raises ``BudgetExceeded`` once the cap is
reached. Requests already in flight finish, so a run overshoots by at most what its
concurrent requests use. Callers stop cleanly by checking ``exhausted`` before starting an
episode, and by abandoning an episode that meets ``BudgetExceeded`` without writing its
output file: work not started stays for the next run, nothing is half-written.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ise_core.errors import BudgetExceeded
from ise_core.llm.base import Usage

if TYPE_CHECKING:
    from ise_core.config import LLMSettings, PriceSettings

PER_MILLION = 1_000_000.0


@dataclass
class Tally:
    """Counts for one slice (a role, a model, an episode, or the whole run)."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    malformed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    cost: float = 0.0
    cost_saved_by_cache: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_tokens"] = self.total_tokens
        data["cost"] = round(self.cost, 6)
        data["cost_saved_by_cache"] = round(self.cost_saved_by_cache, 6)
        return data


class Accountant:
    """Thread-safe counters of one run, with the optional price table and budget."""

    def __init__(
        self,
        prices: Mapping[str, PriceSettings] | None = None,
        *,
        budget_tokens: int | None = None,
        budget_cost: float | None = None,
    ) -> None:
        self.prices = dict(prices or {})
        self.budget_tokens = budget_tokens
        self.budget_cost = budget_cost
        self.total = Tally()
        self.by_role: dict[str, Tally] = {}
        self.by_model: dict[str, Tally] = {}
        self.by_episode: dict[str, Tally] = {}
        self.unpriced_models: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, llm: LLMSettings) -> Accountant:
        """This process's accountant for ``llm`` (``llm.factory.build_accountant`` picks the
        run-wide one under a Redis limiter)."""
        return cls(llm.prices, budget_tokens=llm.budget.tokens, budget_cost=llm.budget.cost)

    def __repr__(self) -> str:
        return (
            f"Accountant(tokens={self.total.total_tokens}, cost={self.total.cost:.4f}, "
            f"budget_tokens={self.budget_tokens}, budget_cost={self.budget_cost})"
        )

    def cost_of(self, model: str, usage: Usage) -> float | None:
        """Estimated cost of ``usage`` on ``model``, or None when the model has no price."""
        price = self.prices.get(model)
        if price is None:
            return None
        return (
            usage.prompt_tokens * price.prompt + usage.completion_tokens * price.completion
        ) / PER_MILLION

    def _slices(self, role: str, model: str, episode: str | None) -> list[Tally]:
        slices = [
            self.total,
            self.by_role.setdefault(role, Tally()),
            self.by_model.setdefault(model, Tally()),
        ]
        if episode is not None:
            slices.append(self.by_episode.setdefault(episode, Tally()))
        return slices

    def record(
        self,
        *,
        role: str,
        model: str,
        usage: Usage,
        cached: bool = False,
        retries: int = 0,
        malformed: bool = False,
        episode: str | None = None,
        billable: bool = True,
    ) -> None:
        """Count one answered request (sent, or replayed from the cache when ``cached``).

        ``billable=False`` (the scripted programs) counts tokens but never a price.
        """
        cost = self.cost_of(model, usage) if billable else 0.0
        with self._lock:
            if cost is None:
                self.unpriced_models.add(model)
            for tally in self._slices(role, model, episode):
                if cached:
                    tally.cache_hits += 1
                    tally.cached_prompt_tokens += usage.prompt_tokens
                    tally.cached_completion_tokens += usage.completion_tokens
                    tally.cost_saved_by_cache += cost or 0.0
                else:
                    tally.requests += 1
                    tally.prompt_tokens += usage.prompt_tokens
                    tally.completion_tokens += usage.completion_tokens
                    tally.cost += cost or 0.0
                tally.retries += retries
                tally.malformed += int(malformed)

    def record_failure(
        self, *, role: str, model: str, retries: int = 0, episode: str | None = None
    ) -> None:
        """Count a request that failed for good (its retries included)."""
        with self._lock:
            for tally in self._slices(role, model, episode):
                tally.failures += 1
                tally.retries += retries

    def budget_reason(self) -> str | None:
        """Why the budget is exhausted, or None while there is budget left."""
        with self._lock:
            spent_tokens = self.total.total_tokens
            spent_cost = self.total.cost
        if self.budget_tokens is not None and spent_tokens >= self.budget_tokens:
            return f"{spent_tokens:,} tokens sent of a budget of {self.budget_tokens:,}"
        if self.budget_cost is not None and spent_cost >= self.budget_cost:
            return f"estimated cost {spent_cost:.4f} of a budget of {self.budget_cost:.4f}"
        return None

    @property
    def exhausted(self) -> bool:
        return self.budget_reason() is not None

    def check_budget(self) -> None:
        """Raise ``BudgetExceeded`` when no new request may be sent."""
        reason = self.budget_reason()
        if reason is not None:
            raise BudgetExceeded(
                f"llm budget reached ({reason}); no new request was sent. Finished work is "
                "kept; raise llm.budget or re-run later to continue."
            )

    def episode(self, tag: str) -> dict[str, Any]:
        """The counts of one episode tag (zeros when it made no request)."""
        with self._lock:
            return (self.by_episode.get(tag) or Tally()).as_dict()

    def pop_episode(self, tag: str) -> dict[str, Any]:
        """The counts of one episode tag, forgetting them (keeps week-long runs small)."""
        with self._lock:
            return (self.by_episode.pop(tag, None) or Tally()).as_dict()

    def snapshot(self) -> dict[str, Any]:
        """Everything as plain JSON-ready values, for stats.json."""
        with self._lock:
            data = self.total.as_dict()
            data["by_role"] = {k: v.as_dict() for k, v in sorted(self.by_role.items())}
            data["by_model"] = {k: v.as_dict() for k, v in sorted(self.by_model.items())}
            data["episodes_tracked"] = len(self.by_episode)
            data["unpriced_models"] = sorted(self.unpriced_models)
        data["budget"] = {
            "tokens": self.budget_tokens,
            "cost": self.budget_cost,
            "exhausted": self.exhausted,
        }
        return data
