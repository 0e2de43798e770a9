"""Tasks workers sat idle beside: noted after the first worker, set aside from the demand after a
second, and when that ends (``orchestrator.loop.passed_over``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from orchestrator.core.observed import Queue, Snapshot
from orchestrator.loop import passed_over

NOTED = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
UNCLAIMED = {"claimable": 2, "by_type": {"lora": 2}, "oldest_queued_sec": 900.0, "worker_idle_sec": 700.0}


def _snapshot(at: datetime, claimable: int, oldest_sec: float | None, by_type: dict[str, int]) -> Snapshot:
    queue = Queue(
        claimable=claimable,
        queued_total=claimable,
        oldest_claimable_age_sec=oldest_sec,
        claimable_by_type=by_type,
    )
    return Snapshot(now=at, paused=False, queue=queue, workers=())


def _confirmed() -> passed_over.PassedOver:
    first = passed_over.note(UNCLAIMED, NOTED)
    # The replacement, drained ten minutes later beside the same two tasks, ten minutes older.
    second = passed_over.note(
        {**UNCLAIMED, "oldest_queued_sec": 1500.0}, NOTED + timedelta(minutes=10), first
    )
    assert first is not None and not first.confirmed and second is not None and second.confirmed
    return second


def test_the_first_worker_passing_tasks_over_only_marks_them() -> None:
    first = passed_over.note(UNCLAIMED, NOTED)
    assert first is not None and first.queued_since == NOTED - timedelta(seconds=900)
    snapshot = _snapshot(NOTED + timedelta(minutes=5), 2, 1200.0, {"lora": 2})
    narrowed, ended = passed_over.narrow(snapshot, first)
    assert ended is None and narrowed == replace(snapshot, passed_over_once=True)
    # Other tasks passed over by the next worker: a new first note, not a confirmation.
    other = passed_over.note({**UNCLAIMED, "oldest_queued_sec": 60.0}, NOTED + timedelta(minutes=10), first)
    assert other is not None and not other.confirmed


def test_tasks_passed_over_twice_leave_the_demand_and_later_ones_stay() -> None:
    passed = _confirmed()
    later = NOTED + timedelta(minutes=15)
    narrowed, ended = passed_over.narrow(_snapshot(later, 2, 1800.0, {"lora": 2}), passed)
    assert ended is None and narrowed.passed_over_once
    assert (narrowed.queue.claimable, dict(narrowed.queue.claimable_by_type)) == (0, {})
    assert narrowed.queue.oldest_claimable_age_sec is None
    # A task queued since, of another type: it stays, and so does the figure operators read.
    narrowed, ended = passed_over.narrow(_snapshot(later, 3, 1800.0, {"lora": 2, "generate": 1}), passed)
    assert ended is None and narrowed.queue.claimable == 1
    assert dict(narrowed.queue.claimable_by_type) == {"generate": 1} and narrowed.queue.queued_total == 3


def test_the_set_aside_ends_when_its_tasks_go_or_an_hour_after_the_first_note() -> None:
    passed = _confirmed()
    later = NOTED + timedelta(minutes=15)
    # One of them was claimed or failed: fewer than were passed over, in total or of their type (here a
    # later task of another type makes up the total: it must not be starved).
    assert passed_over.narrow(_snapshot(later, 1, 1800.0, {"lora": 1}), passed)[1] == "claimed_or_gone"
    gone = _snapshot(later, 2, 1800.0, {"lora": 1, "generate": 1})
    assert passed_over.narrow(gone, passed) == (gone, "claimed_or_gone")
    # Both gone: the oldest waiting now was queued after them.
    assert passed_over.narrow(_snapshot(later, 2, 60.0, {"lora": 2}), passed)[1] == "claimed_or_gone"
    assert passed_over.narrow(_snapshot(later, 0, None, {}), passed)[1] == "claimed_or_gone"
    # Still there an hour after the first note: one more worker is let through.
    hour = NOTED + timedelta(seconds=passed_over.RETRY_AFTER_SEC)
    snapshot = _snapshot(hour, 2, 4500.0, {"lora": 2})
    assert passed_over.narrow(snapshot, passed) == (snapshot, "retry")


def test_a_drain_that_does_not_say_enough_notes_nothing() -> None:
    for unclaimed in (None, {}, {"claimable": 0, "oldest_queued_sec": 5}, {"claimable": "2"}, [1, 2]):
        assert passed_over.note(unclaimed, NOTED) is None  # type: ignore[arg-type]
    assert passed_over.note({"claimable": 1, "oldest_queued_sec": 5, "by_type": "x"}, NOTED) is not None
