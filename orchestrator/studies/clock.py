"""Virtual time for the simulator: the epoch, and a clock with its event heap.

Where this sits: the bottom of ``orchestrator.studies``; every simulated part (the in-memory database,
the provider, the workers, the executor's virtual effects) schedules its next step here, so a day of
virtual time runs in seconds.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

EPOCH = datetime(2026, 11, 2, tzinfo=UTC)  # virtual t=0 (a Monday, midnight UTC)


def at(t: float) -> datetime:
    """Virtual seconds -> the datetime the policy sees."""
    return EPOCH + timedelta(seconds=t)


def iso(t: float) -> str:
    return at(t).isoformat()


class Clock:
    """A virtual clock and its event heap. ``schedule`` returns nothing: cancellation is by epoch."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = 0

    def schedule(self, delay: float, fn: Callable[[], object]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self.now + max(0.0, delay), self._seq, fn))

    def run_until(self, end: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= end:
            t, _seq, fn = heapq.heappop(heap)
            self.now = t
            fn()
        self.now = end
