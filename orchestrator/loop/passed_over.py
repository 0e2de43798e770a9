"""Tasks a worker sat idle beside: set aside from the demand, so no new worker is bought for them.

Where this sits: the controller notes one when a drain for ``idle_while_tasks_waited`` (the backstop
of :mod:`orchestrator.core.staffing`) has been applied, and narrows each later snapshot's queue with
it before the pure policy reads it (:func:`narrow`). A worker that polled for ``GPU_IDLE_TIMEOUT_SEC``
beside a task without taking it says that the claimable view counts work the worker's own claim
refuses; a replacement would sit beside it too, and the fleet would spawn, idle and drain for as long
as the task stays queued. Set aside, the task buys no worker; tasks queued after it still do.

It ends when those tasks do: once the oldest claimable task was queued after the ones passed over
(they were claimed, failed or deleted), or once they are fewer. It also ends after
:data:`RETRY_AFTER_SEC`, so that a view fixed without a restart, or a claim that failed for a while,
gets one more worker an hour rather than none: one spawn-idle-drain cycle an hour instead of one after
another. The memory is this process's: a restart forgets it, and costs one more cycle to learn again.
What the operator sees is the daemon's word for it (``tasks_set_aside``, ``tasks_set_aside_ended``) and
the tick summary's ``queued`` (the real count: the recorder reads the snapshot as the database gave it).
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
    """The tasks a worker sat idle beside: how many, of which types, queued since when."""

    count: int
    by_type: Mapping[str, int]
    queued_since: datetime  # when the oldest of them was queued
    noted_at: datetime

    def to_log(self) -> dict[str, Any]:
        return {
            "tasks": self.count,
            "by_type": dict(self.by_type),
            "queued_since": self.queued_since.isoformat(),
            "retry_after_sec": RETRY_AFTER_SEC,
        }


def note(unclaimed: Mapping[str, Any] | None, now: datetime) -> PassedOver | None:
    """From a drain's ``metadata.unclaimed_work`` ({claimable, by_type, oldest_queued_sec, ...}), or
    None when it does not say enough (a drain of an older version, a hand edit)."""
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
    return PassedOver(count, freeze(by_type), now - timedelta(seconds=float(oldest)), now)


def narrow(snapshot: Snapshot, passed: PassedOver) -> tuple[Snapshot, str | None]:
    """The snapshot with the tasks passed over taken out of the claimable count, or unchanged with
    why the set-aside has ended (``retry``, ``claimed_or_gone``)."""
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
    left = queue.claimable - passed.count
    by_type = {
        t: max(0, n - int(passed.by_type.get(t, 0)))
        for t, n in queue.claimable_by_type.items()
        if n - int(passed.by_type.get(t, 0)) > 0
    }
    narrowed = replace(
        queue,
        claimable=left,
        claimable_by_type=freeze(by_type),
        # Their age is theirs: what is left are later tasks, whose own ages the snapshot does not give.
        oldest_claimable_age_sec=oldest if left > 0 else None,
    )
    return replace(snapshot, queue=narrowed), None
