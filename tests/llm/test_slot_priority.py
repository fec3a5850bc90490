"""The slot gate serves waiters by rank (``REQUEST_PRIORITY``), then in order of arrival."""

from __future__ import annotations

import asyncio

import pytest

from ise_core.llm.limits import REQUEST_PRIORITY, SlotGate


async def _waiter(gate: SlotGate, name: str, rank: int, granted: list[str]) -> None:
    REQUEST_PRIORITY.set(rank)  # this task's own context, as each episode's
    await gate.acquire()
    granted.append(name)
    gate.release()


def test_a_full_gate_serves_the_lowest_rank_first_then_by_arrival() -> None:
    async def scenario() -> list[str]:
        gate = SlotGate(lambda: 1)
        await gate.acquire()  # the one slot is taken: everyone below waits
        granted: list[str] = []
        tasks = []
        for name, rank in (("late-short", 0), ("long-1", -8), ("mid", -4), ("long-2", -8)):
            tasks.append(asyncio.create_task(_waiter(gate, name, rank, granted)))
            await asyncio.sleep(0)  # arrive in this order
        assert granted == []
        gate.release()
        await asyncio.gather(*tasks)
        return granted

    assert asyncio.run(scenario()) == ["long-1", "long-2", "mid", "late-short"]


def test_equal_ranks_are_first_come_first_served_and_a_cancelled_waiter_leaves() -> None:
    async def scenario() -> list[str]:
        gate = SlotGate(lambda: 1)
        await gate.acquire()
        granted: list[str] = []
        first = asyncio.create_task(_waiter(gate, "first", 0, granted))
        await asyncio.sleep(0)
        gone = asyncio.create_task(_waiter(gate, "gone", -1, granted))
        await asyncio.sleep(0)
        second = asyncio.create_task(_waiter(gate, "second", 0, granted))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        gate.release()
        await asyncio.gather(first, second)
        assert gate.held == 0
        return granted

    assert asyncio.run(scenario()) == ["first", "second"]
