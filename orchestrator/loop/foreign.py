"""Worker rows with our prefix that this leader did not create: another orchestrator on the same prefix.

The leader lease fences every write of ours, so while this process leads, a row with ``WORKER_ID_PREFIX``
created after it took the lease is its own spawn's, unless something outside the lease made it: most
often the orchestrator this one replaces, still running (it names its workers ``gpu-...`` too and takes
no lease), or a worker started by hand under such an id (its heartbeat inserts a missing row). The two
controllers would fight: each counts the other's workers as its own capacity, drains and ends them. Only
the operator can end that, so it is said once per row (``foreign_workers``), with what to do.
"""

from __future__ import annotations

from datetime import datetime

from orchestrator.core.observed import Snapshot


class ForeignWatch:
    """Which rows this leader created (its spawns), since when it leads, and which others it has named."""

    # A spawn of ours is forgotten once its row has been out of the live list this many checks (ended,
    # or never written): long enough for a row registered during a slow action to show up first.
    FORGET_AFTER_CHECKS = 10

    def __init__(self) -> None:
        self._token: int | None = None
        self._since: datetime | None = None
        self._ours: dict[str, int] = {}  # worker id -> the check it was last seen (or spawned) at
        self._said: set[str] = set()
        self._checks = 0

    def lead(self, token: int, now: datetime | None) -> None:
        """Called each tick as leader with the database's ``now``: a new lease token starts a new watch.
        Without the database's time the watch waits for it (rows are stamped by its clock)."""
        if token != self._token:
            self._token, self._since = token, now
            self._said.clear()
        elif self._since is None:
            self._since = now

    def spawned(self, worker_id: str) -> None:
        self._ours[worker_id] = self._checks

    def check(self, snapshot: Snapshot) -> list[str]:
        """Rows created since this leadership began by something else, not named before."""
        self._checks += 1
        live = {w.id for w in snapshot.workers}
        for worker_id in [i for i, seen in self._ours.items() if i not in live]:
            if self._checks - self._ours[worker_id] > self.FORGET_AFTER_CHECKS:
                del self._ours[worker_id]
        for worker_id in live & self._ours.keys():
            self._ours[worker_id] = self._checks
        if self._since is None:
            return []
        found = [
            w.id
            for w in snapshot.workers
            if w.created_at is not None
            and w.created_at > self._since
            and w.id not in self._ours
            and w.id not in self._said
        ]
        # Named rows that left the live list are forgotten, so the set stays the size of the live foreign
        # rows over a leadership of months; one that comes back (a worker beating under an old id) is
        # named once more.
        self._said &= live
        self._said.update(found)
        return found
