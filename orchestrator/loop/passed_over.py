"""Tasks workers sat idle beside: set aside from the demand, so no more workers are bought for them.

Where this sits: the controller notes one when a drain for ``idle_while_tasks_waited`` (the backstop
of :mod:`orchestrator.core.staffing`) has been applied, and hands each later snapshot to the pure
policy through :func:`narrow`. A worker that polled for ``GPU_IDLE_TIMEOUT_SEC`` beside a task without
taking it says either that the claimable view counts work the worker's own claim refuses, or that this
worker was hung (the real worker's heartbeat runs in a process of its own and goes on while its main
loop is stuck). So the first such drain is only noted: the policy buys a replacement as before. When a
second worker is drained beside the same tasks (the oldest of them queued at the same time), they are
not taken whoever polls, and they are set aside: that tick buys no replacement
(``Snapshot.passed_over_once``), and from the next they are left out of the claimable count. Tasks
queued after them still get workers.

The set-aside (or the first note) ends when those tasks do: once the oldest claimable task was queued
after them, or once fewer of them wait, in total or of one of their types. It also ends
:data:`RETRY_AFTER_SEC` after it was first noted, so that a view fixed without a restart gets one more
worker an hour rather than none: at worst one boot and one idle spell an hour instead of one after
another. The memory is this process's: a restart forgets it and learns it again the same way. What
the operator sees is the daemon's word for it (``tasks_set_aside``, ``tasks_set_aside_ended``) and the
tick summary's ``queued`` (the real count: the recorder reads the snapshot as the database gave it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from orchestrator.core.observed import Snapshot, freeze

# One more worker an hour for tasks set aside, in case the view was fixed or the claim came back.
RETRY_AFTER_SEC = 3600.0
# Creation times come back through float seconds of age: a task is the same one within this much.
SAME_TASK_SEC = 1.0


@dataclass(frozen=True)
class PassedOver:
    """The tasks workers sat idle beside: how many, of which types, queued since when; ``confirmed``
    once a second worker passed them over too."""

    count: int
    by_type: Mapping[str, int]
    queued_since: datetime  # when the oldest of them was queued
    noted_at: datetime  # when the first worker was drained beside them
    confirmed: bool = False

    def to_log(self) -> dict[str, Any]:
        return {
            "tasks": self.count,
            "by_type": dict(self.by_type),
            "queued_since": self.queued_since.isoformat(),
            "retry_after_sec": RETRY_AFTER_SEC,
        }


def note(
    unclaimed: Mapping[str, Any] | None, now: datetime, previous: PassedOver | None = None
) -> PassedOver | None:
    """From a drain's ``metadata.unclaimed_work`` ({claimable, by_type, oldest_queued_sec, ...}), or
    None when it does not say enough (a drain of an older version, a hand edit). Confirmed when
    ``previous`` (the last note) was about the same tasks."""
    if not isinstance(unclaimed, Mapping):
        return None
    count, oldest = unclaimed.get("claimable"), unclaimed.get("oldest_queued_sec")
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        return None
    if isinstance(oldest, bool) or not isinstance(oldest, int | float) or oldest < 0:
        return None
    raw = unclaimed.get("by_type")
    by_type = (
        {str(k): v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0}
        if isinstance(raw, Mapping)
        else {}
    )
    since = now - timedelta(seconds=float(oldest))
    passed = PassedOver(count, freeze(by_type), since, now)
    if previous is not None and abs((previous.queued_since - since).total_seconds()) <= SAME_TASK_SEC:
        # The same tasks, passed over by a second worker: counted as they wait now, noted when first.
        return replace(passed, noted_at=previous.noted_at, confirmed=True)
    return passed


def narrow(snapshot: Snapshot, passed: PassedOver) -> tuple[Snapshot, str | None]:
    """The snapshot as the policy should read it, or unchanged with why the note has ended (``retry``,
    ``claimed_or_gone``): marked ``passed_over_once`` while the tasks noted still wait, and with them
    taken out of the claimable count once ``confirmed``."""
    now = snapshot.now
    queue = snapshot.queue
    if now is None:
        return snapshot, None
    if (now - passed.noted_at).total_seconds() >= RETRY_AFTER_SEC:
        return snapshot, "retry"
    oldest = queue.oldest_claimable_age_sec
    if oldest is None or queue.claimable < passed.count:
        return snapshot, "claimed_or_gone"
    if now - timedelta(seconds=oldest) > passed.queued_since + timedelta(seconds=SAME_TASK_SEC):
        return snapshot, "claimed_or_gone"  # the oldest waiting now came after them
    if any(queue.claimable_by_type.get(t, 0) < n for t, n in passed.by_type.items()):
        return snapshot, "claimed_or_gone"  # fewer of one of their types: some were taken after all
    if not passed.confirmed:
        return replace(snapshot, passed_over_once=True), None
    typed = sum(queue.claimable_by_type.values())
    by_type = {
        t: n - int(passed.by_type.get(t, 0))
        for t, n in queue.claimable_by_type.items()
        if n - int(passed.by_type.get(t, 0)) > 0
    }
    # With the types known, what is left is counted by type (a later task of another type stays even
    # when the total alone could not tell it from theirs); without them, from the total.
    left = (
        sum(by_type.values()) + max(0, queue.claimable - typed)
        if passed.by_type
        else queue.claimable - passed.count
    )
    narrowed = replace(
        queue,
        claimable=max(0, left),
        claimable_by_type=freeze(by_type),
        # Their age is theirs: what is left are later tasks, whose own ages the snapshot does not give.
        oldest_claimable_age_sec=oldest if left > 0 else None,
    )
    return replace(snapshot, queue=narrowed, passed_over_once=True), None
