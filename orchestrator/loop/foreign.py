"""Worker rows with our prefix that this leader did not create: another orchestrator on the same prefix.

The leader lease fences every write of ours, so while this process leads, a row with ``WORKER_ID_PREFIX``
created after it took the lease is its own spawn's, unless something outside the lease made it: most
often the orchestrator this one replaces, still running (it names its workers ``gpu-...`` too and takes
no lease), or a worker started by hand under such an id (its heartbeat inserts a missing row). The two
controllers would fight: each counts the other's workers as its own capacity, drains and ends them. Only
the operator can end that, so it is said once per row (``foreign_workers``), with what to do.
"""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator.core.observed import Snapshot


class ForeignWatch:
    """Which rows this leader created (its spawns), since when it leads, and which others it has named."""

    def __init__(self) -> None:
        self._token: int | None = None
        self._since: datetime | None = None
        self._ours: set[str] = set()
        self._said: set[str] = set()

    def lead(self, token: int, now: datetime | None) -> None:
        """Called each tick as leader: a new lease token starts a new watch from the database's ``now``."""
        if token != self._token:
            # Without the database's time (an older snapshot), ours: rows are stamped by its clock, so
            # a skew of seconds at most misses the first moments.
            self._token, self._since = token, now or datetime.now(UTC)
            self._said.clear()

    def spawned(self, worker_id: str) -> None:
        self._ours.add(worker_id)

    def check(self, snapshot: Snapshot) -> list[str]:
        """Rows created since this leadership began by something else, not named before."""
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
        self._said.update(found)
        return found
