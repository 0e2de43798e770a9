"""The leader lease: one daemon acts at a time, and a stale one's writes change nothing.

Where this sits: the first thing a tick does (``orchestrator.loop.controller``). The lease is a row
with a fencing token (``orch_lease_acquire`` / ``orch_lease_renew`` / ``orch_lease_release``,
``docs/database.md``); every mutating SQL function checks the token, so a replica that lost the lease
and does not know it yet is refused (``LeaseLost``). Provider calls cannot be refused that way, so
:meth:`Lease.fence` renews the lease right before each one.
"""

from __future__ import annotations

import os
import socket
import uuid

import structlog

from orchestrator.core import errors
from orchestrator.ports import Database

log = structlog.get_logger(__name__)


def default_holder() -> str:
    """A lease holder name that tells an operator which process holds it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Lease:
    """This process's view of the lease: the token while it leads, None otherwise."""

    def __init__(self, db: Database, holder: str, ttl_sec: float) -> None:
        self.db = db
        self.holder = holder
        self.ttl_sec = ttl_sec
        self.token: int | None = None

    def ensure(self) -> tuple[int | None, bool]:
        """Acquire or renew; ``(token, newly acquired)`` while we lead, ``(None, False)`` while another
        process does."""
        answer = self.db.lease_acquire(self.holder, self.ttl_sec)
        if answer.get("acquired"):
            token = int(answer["token"])
            fresh = token != self.token
            if fresh:
                log.info(
                    "lease_acquired", holder=self.holder, token=token, expires_at=answer.get("expires_at")
                )
            self.token = token
            return token, fresh
        if self.token is not None:
            log.warning("lease_lost", holder=self.holder, now_held_by=answer.get("holder"))
        else:
            log.info(
                "lease_held_elsewhere",
                holder=self.holder,
                leader=answer.get("holder"),
                expires_at=answer.get("expires_at"),
            )
        self.token = None
        return None, False

    def fence(self, token: int, before: str) -> None:
        """Prove we still lead right before a provider side effect no SQL function can refuse.

        An action may wait in the pool, or in a slow SSH call, past a handover; the database writes
        that follow it are fenced, but the pod is already touched by then. Renewing the lease with our
        token is the check (and it keeps the lease alive through a long apply step).
        """
        answer = self.db.lease_renew(self.holder, token, self.ttl_sec)
        if not answer.get("renewed"):
            raise errors.LeaseLost(
                "orch_lease_renew", f"lease no longer held by {self.holder} (before {before})"
            )

    def release(self) -> None:
        if self.token is None:
            return
        try:
            self.db.lease_release(self.holder, self.token)
            log.info("lease_released", holder=self.holder)
        except errors.OrchestratorError as exc:
            log.warning("lease_release_failed", error=str(exc)[:300])
        self.token = None
