"""Periods: the intervals of the refresh schedule, and the ledger of the ones that ran.

A period is one interval of ``airflow.schedule`` (a preset or a cron expression), named by its
start in UTC: ``2026-01-04`` at midnight, ``2026-01-04T0600`` otherwise (the form fits a file
name and a git tag). Its *index* k counts the schedule's intervals from
``airflow.start_date``: the first interval starting on or after that date is k = 0.

The ledger (``<refresh.out_dir>/periods.json``, a params file for DVC) lists every period the
dataset covers, with what it did, fixed when the period is first registered:

- ``grow``: the sample indices it added, ``[first, first + count)`` with
  ``first = intents.count + k * intents_per_period``. The sampler draws sample *i* from its
  own seeded stream, so a re-run or a backfill of a period draws the very same batch, in
  whatever order the periods ran;
- ``renew``: the share of intents it re-simulated. Intent x is renewed by the period of index
  k when ``bucket(x) == k mod m`` (m = round(1 / share), bucket a seeded hash of the id):
  every intent once every m periods, decided by the id alone.

With an empty ledger, nothing here changes a byte of any stage's output.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ise_core.atomic import atomic_write_text
from ise_core.config import Settings
from ise_core.errors import ConfigError, InputError, validation_problems
from ise_core.records import Intent

# The schedule presets as cron expressions (the ones Airflow's presets stand for).
PRESETS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}
BASE = "base"  # what the table calls the intents and episodes of no period (intents.count)
_RENEW_STREAM = "ise-refresh-renew"
_ONE_SECOND = timedelta(seconds=1)


def schedule_cron(settings: Settings) -> str:
    """The cron expression of ``airflow.schedule``; a ConfigError when it has no intervals."""
    schedule = settings.airflow.schedule
    if schedule is None or schedule == "@once":
        raise ConfigError(
            f"airflow.schedule: periods are intervals of the schedule, but it is {schedule!r}; "
            "set a preset (@daily, @weekly, ...) or a cron expression"
        )
    return PRESETS.get(schedule, schedule)


def period_id(start: datetime) -> str:
    """The id of the period starting at ``start`` (converted to UTC)."""
    moment = start.astimezone(UTC) if start.tzinfo else start.replace(tzinfo=UTC)
    if (moment.hour, moment.minute) == (0, 0):
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%dT%H%M")


def parse_period(text: str) -> datetime:
    """A period id, a date or an ISO date-time (UTC unless it says otherwise)."""
    value = text.strip()
    for form in ("%Y-%m-%dT%H%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, form).replace(tzinfo=UTC)
        except ValueError:
            pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"period {text!r}: expected a date (2026-01-04) or a date-time "
            "(2026-01-04T06:00, UTC unless an offset is given)"
        ) from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def normalize_period(text: str) -> str:
    """The period id of ``text`` (an id, a date or an ISO date-time)."""
    return period_id(parse_period(text))


def _start_date(settings: Settings) -> datetime:
    return datetime.fromisoformat(settings.airflow.start_date).replace(tzinfo=UTC)


def period_index(settings: Settings, start: datetime) -> int:
    """k of the period starting at ``start``: intervals of the schedule since its start date.

    A ConfigError names the neighbouring interval starts when ``start`` is not one."""
    from croniter import croniter

    cron = schedule_cron(settings)
    first = _start_date(settings)
    moment = start.astimezone(UTC)
    ticks = croniter(cron, first - _ONE_SECOND)  # the first tick may be the start date itself
    index, tick = 0, ticks.get_next(datetime)
    if moment < tick:
        raise ConfigError(
            f"period {period_id(moment)}: before the first interval of airflow.schedule "
            f"{settings.airflow.schedule!r} from airflow.start_date {settings.airflow.start_date}"
            f" (it starts {period_id(tick)})"
        )
    previous = tick
    while tick < moment:
        previous, tick = tick, ticks.get_next(datetime)
        index += 1
    if tick != moment:
        raise ConfigError(
            f"period {period_id(moment)}: not the start of an interval of airflow.schedule "
            f"{settings.airflow.schedule!r} (the nearest are {period_id(previous)} and "
            f"{period_id(tick)})"
        )
    return index


class PeriodEntry(BaseModel):
    """One period of the ledger: what it added, fixed when it was first registered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    period: str = Field(min_length=10, max_length=15, pattern=r"^\d{4}-\d{2}-\d{2}(T\d{4})?$")
    index: int = Field(ge=0)
    mode: Literal["grow", "renew"]
    first: int | None = Field(None, ge=0, exclude_if=lambda v: v is None)  # grow
    count: int | None = Field(None, ge=1, exclude_if=lambda v: v is None)  # grow
    share: float | None = Field(None, gt=0, le=1, exclude_if=lambda v: v is None)  # renew

    def indices(self) -> range:
        if self.mode != "grow" or self.first is None or self.count is None:
            return range(0)
        return range(self.first, self.first + self.count)

    def cycle(self) -> int:
        """m: a renew period renews the intents of bucket ``index mod m``."""
        return max(1, round(1 / self.share)) if self.share else 1


def renew_bucket(seed: int, intent_id: str, cycle: int) -> int:
    digest = hashlib.sha256(f"{_RENEW_STREAM}:{seed}:{intent_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % cycle


@dataclass(frozen=True)
class Ledger:
    """The periods a dataset covers, sorted by period id (``periods.json``)."""

    entries: tuple[PeriodEntry, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(sorted(self.entries, key=lambda e: e.period)))

    @classmethod
    def load(cls, path: Path) -> Ledger:
        """The ledger at ``path``; an empty one when the file does not exist."""
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: not a JSON period list ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("periods"), list):
            raise InputError(f'{path}: expected {{"periods": [...]}}')
        entries = []
        for number, item in enumerate(data["periods"], start=1):
            try:
                entries.append(PeriodEntry.model_validate(item))
            except ValidationError as exc:
                problem = "; ".join(validation_problems(exc, limit=2))
                raise InputError(f"{path}: period {number}: {problem}") from None
        ledger = cls(tuple(entries))
        ledger.check(str(path))
        return ledger

    def save(self, path: Path) -> None:
        periods = [entry.model_dump(mode="json") for entry in self.entries]
        atomic_write_text(path, json.dumps({"periods": periods}, indent=2, sort_keys=True) + "\n")

    def check(self, where: str) -> None:
        """Each period once, and no two grow batches sharing a sample index."""
        seen: dict[str, PeriodEntry] = {}
        for entry in self.entries:
            if entry.period in seen:
                raise InputError(f"{where}: period {entry.period} is listed twice")
            seen[entry.period] = entry
        grown = sorted((e for e in self.entries if e.mode == "grow"), key=lambda e: e.first or 0)
        for earlier, later in itertools.pairwise(grown):
            if later.indices().start < earlier.indices().stop:
                raise InputError(
                    f"{where}: the batches of periods {earlier.period} and {later.period} "
                    "overlap (was refresh.intents_per_period changed between them?)"
                )

    def __bool__(self) -> bool:
        return bool(self.entries)

    def get(self, period: str) -> PeriodEntry | None:
        return next((e for e in self.entries if e.period == period), None)

    def with_entry(self, entry: PeriodEntry) -> Ledger:
        return Ledger((*(e for e in self.entries if e.period != entry.period), entry))

    @property
    def renews(self) -> bool:
        """Whether any period renewed episodes (then older episodes stay current)."""
        return any(entry.mode == "renew" for entry in self.entries)

    # --- intents ---------------------------------------------------------------------------

    def sample_indices(self, base: int) -> list[int]:
        """The sample indices of the dataset: ``[0, base)`` and every grow batch, in order."""
        grown = [i for entry in self.entries for i in entry.indices()]
        clash = [i for i in grown if i < base]
        if clash:
            owner = next(e for e in self.entries if clash[0] in e.indices())
            raise ConfigError(
                f"intents.count: {base} reaches into the batch of period {owner.period} "
                f"(sample indices {owner.indices().start}-{owner.indices().stop - 1}); a grown "
                f"dataset keeps its base: set intents.count to at most {min(clash)}"
            )
        return [*range(base), *sorted(grown)]

    def period_of_index(self) -> dict[int, str]:
        return {i: entry.period for entry in self.entries for i in entry.indices()}

    def stamp(self, intents: Iterable[Intent]) -> list[Intent]:
        """The intents with the period that added them (none for the base intents)."""
        owner = self.period_of_index()
        return [
            intent.model_copy(update={"period": owner[intent.index]})
            if intent.index in owner
            else intent
            for intent in intents
        ]

    # --- episodes --------------------------------------------------------------------------

    def renewed_by(self, entry: PeriodEntry, intent: Intent, seed: int) -> bool:
        """Whether the renew period ``entry`` re-simulates ``intent``."""
        if entry.mode != "renew" or (intent.period is not None and intent.period >= entry.period):
            return False
        return renew_bucket(seed, intent.id, entry.cycle()) == entry.index % entry.cycle()

    def episode_period(self, intent: Intent, seed: int) -> str | None:
        """The period the intent's current episode belongs to: the last one that added or
        renewed the intent (None for a base intent never renewed)."""
        latest = intent.period
        for entry in self.entries:
            if self.renewed_by(entry, intent, seed) and (latest is None or entry.period > latest):
                latest = entry.period
        return latest

    def renewed(self, entry: PeriodEntry, intents: Sequence[Intent], seed: int) -> list[str]:
        return [intent.id for intent in intents if self.renewed_by(entry, intent, seed)]

    def as_stats(self) -> dict[str, Any]:
        return {entry.period: entry.model_dump(mode="json") for entry in self.entries}


def new_entry(settings: Settings, period: str, ledger: Ledger) -> PeriodEntry:
    """The ledger entry of ``period`` under the current ``refresh`` settings (an entry
    registered earlier is kept as it was: a period's batch never changes)."""
    registered = ledger.get(period)
    if registered is not None:
        return registered
    mode = settings.refresh.mode
    if mode == "fixed":
        raise ConfigError("refresh.mode: fixed runs have no periods (set grow or renew)")
    index = period_index(settings, parse_period(period))
    if mode == "grow":
        size = settings.refresh.intents_per_period
        first = settings.intents.count + index * size
        return PeriodEntry(period=period, index=index, mode="grow", first=first, count=size)
    return PeriodEntry(period=period, index=index, mode="renew", share=settings.refresh.renew_share)


__all__ = [
    "BASE",
    "PRESETS",
    "Ledger",
    "PeriodEntry",
    "new_entry",
    "normalize_period",
    "parse_period",
    "period_id",
    "period_index",
    "renew_bucket",
    "schedule_cron",
]
