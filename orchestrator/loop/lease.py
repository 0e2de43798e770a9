"""The leader lease: one daemon acts at a time, and a stale one's writes change nothing.

Where this sits: the first thing a tick does (``orchestrator.loop.controller``). The lease is a row
with a fencing token (``orch_lease_acquire`` / ``orch_lease_renew`` / ``orch_lease_release``,
``docs/database.md``); every mutating SQL function checks the token, so a replica that lost the lease
and does not know it yet is refused (``LeaseLost``). Provider calls cannot be refused that way, so
:meth:`Lease.fence` renews the lease right before each one.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid

import structlog

from orchestrator.core import errors
from orchestrator.ports import Database

log = structlog.get_logger(__name__)


def default_holder() -> str:
    """A lease holder name that tells an operator which process holds it: ``host:pid:nonce@space``,
    where ``space`` names this boot of the machine and this process namespace (:func:`process_space`),
    so that a later process can tell whether the holder's pid is one it can look up."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}@{process_space()}"


def process_space() -> str:
    """This boot of this machine and this PID namespace, as a short tag ('' when unknown).

    A pid means the same process only within one PID namespace during one boot: a container restart
    gets a new namespace, a reboot a new boot id, and then the old holder's pid says nothing."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return hashlib.sha256(f"{boot}|{namespace}".encode()).hexdigest()[:10]


def dead_here(holder: str | None, me: str) -> bool:
    """Whether ``holder`` was a process of this machine and namespace that no longer runs.

    True only when that is certain: the same host name and process space, and no process with its pid.
    Anything else (a holder of another machine or namespace, an unreadable name, a pid that runs,
    perhaps reused, or this process's own, which may hold another lease object) is left to the lease's
    expiry."""
    if not holder or holder == me:
        return False
    name, _, space = holder.rpartition("@")
    parts = name.split(":")
    mine = me.rpartition("@")[2]
    if not space or space != mine or len(parts) != 3 or parts[0] != socket.gethostname():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's process): not ours to call dead
        return False
    # Exited, but not yet reaped by its parent (a slow supervisor): a zombie runs nothing.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[:1] == ["Z"]
    except OSError:
        return False


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
        previous = answer.get("holder")
        if not answer.get("acquired") and dead_here(previous, self.holder):
            # Our own predecessor, killed without releasing it: waiting out its TTL would leave the
            # fleet unmanaged that long. The database hands it over only while that holder still has it.
            answer = self.db.lease_take_over(self.holder, str(previous), self.ttl_sec)
            if answer.get("acquired"):
                log.info("lease_taken_over", holder=self.holder, previous_holder=previous)
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
