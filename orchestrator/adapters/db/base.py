"""The Database port: one typed facade over a dumb RPC transport.

Every state change is a SQL function (see ``docs/database.md``). A transport knows only how to call a
function by name with named JSON arguments and return its JSON result; it maps server errors to
``orchestrator.core.errors`` types and retries transient faults. Two transports implement it:
``orchestrator.adapters.db.supabase.SupabaseTransport`` (supabase-py ``rpc`` over PostgREST) and
``orchestrator.adapters.db.postgres.PostgresTransport`` (psycopg 3). ``Database`` adds names and types on top
and is the only thing the rest of the daemon sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from orchestrator import telemetry
from orchestrator.core import errors

DEFAULT_LEASE = "orchestrator"

# SQLSTATEs raised by our functions (migrations) -> our exception types. Shared by both transports so
# the same server error becomes the same Python error whichever way it travelled.
SQLSTATE_TO_ERROR: dict[str, type[errors.DatabaseError]] = {
    "OR001": errors.LeaseLost,
    "OR002": errors.IllegalTransition,
    "OR003": errors.NotFound,
    # A task cannot go In Progress for a worker the orchestrator is ending (the tasks guard).
    "OR004": errors.IllegalTransition,
    # draining -> terminating (or -> stopping, into the warm pool) while the worker still holds an In
    # Progress task.
    "OR005": errors.IllegalTransition,
    "22023": errors.InvalidArgument,
    "22004": errors.InvalidArgument,
    "22P02": errors.InvalidArgument,
    "22007": errors.InvalidArgument,
    "22008": errors.InvalidArgument,
    "22003": errors.InvalidArgument,
    "23502": errors.InvalidArgument,
    "23514": errors.InvalidArgument,
    "42883": errors.InvalidArgument,  # no function with those argument names / types
    "23505": errors.Conflict,
    "23503": errors.Conflict,
    "40001": errors.TransientDatabaseError,  # serialization failure
    "40P01": errors.TransientDatabaseError,  # deadlock detected
    "57014": errors.TransientDatabaseError,  # statement timeout / query cancelled
    "57P01": errors.TransientDatabaseError,  # admin shutdown
    "57P02": errors.TransientDatabaseError,  # crash shutdown
    "57P03": errors.TransientDatabaseError,  # cannot connect now (starting up)
    "53300": errors.TransientDatabaseError,  # too many connections
    "55P03": errors.TransientDatabaseError,  # lock not available (lock_timeout)
    "08000": errors.TransientDatabaseError,
    "08003": errors.TransientDatabaseError,
    "08006": errors.TransientDatabaseError,
}


def retry_reason(exc: BaseException | None) -> str:
    """The ``reason`` label of ``orchestrator_api_retries_total`` for a retried database fault."""
    text = str(exc).lower()
    code = str(getattr(exc, "code", "") or "")
    if "timeout" in text or "timed out" in text or code in ("57014", "55P03"):
        return telemetry.TIMEOUT
    if code.startswith("08") or "connect" in text or "reset" in text or "closed" in text:
        return telemetry.CONNECTION
    if code.startswith(("5", "PGRST0")) or "503" in text or "502" in text or "504" in text:
        return telemetry.SERVER_ERROR
    return telemetry.OTHER


def error_for(
    function: str,
    message: str,
    code: str | None,
    *,
    details: str | None = None,
    hint: str | None = None,
) -> errors.DatabaseError:
    """Build the project exception for a server error, by SQLSTATE."""
    cls = SQLSTATE_TO_ERROR.get(code or "", errors.DatabaseError)
    if code and code.startswith("08"):
        cls = errors.TransientDatabaseError
    return cls(function, message, code=code, details=details, hint=hint)


class Transport(Protocol):
    """Calls one SQL function with named arguments and returns its JSON-decoded result."""

    name: str

    def call(self, function: str, args: Mapping[str, Any]) -> Any: ...

    def close(self) -> None: ...


class Database:
    """Typed access to the SQL functions of ``docs/database.md``; holds no state but the transport."""

    def __init__(self, transport: Transport, *, lease: str = DEFAULT_LEASE) -> None:
        self.transport = transport
        self.lease = lease

    def close(self) -> None:
        self.transport.close()

    def _call(self, function: str, **args: Any) -> Any:
        return self.transport.call(function, args)

    # -- orchestrator: reads ------------------------------------------------------------------------

    def snapshot(self, prefix: str | None = None) -> dict[str, Any]:
        return self._call("orch_snapshot", p_prefix=prefix)

    def queue_probe(self) -> dict[str, Any]:
        """``{newest_queued_at, requeues, enqueued}``: changes when a transaction that queued a task or
        moved one back to Queued commits; the wake-up signal for transports that cannot LISTEN."""
        return self._call("orch_queue_probe") or {}

    def events(self, limit: int = 50, worker_id: str | None = None) -> list[dict[str, Any]]:
        return self._call("orch_events", p_limit=limit, p_worker_id=worker_id) or []

    # -- orchestrator: lease --------------------------------------------------------------------------

    def lease_acquire(self, holder: str, ttl_sec: float) -> dict[str, Any]:
        return self._call("orch_lease_acquire", p_holder=holder, p_ttl_sec=ttl_sec, p_lease=self.lease)

    def lease_renew(self, holder: str, token: int, ttl_sec: float) -> dict[str, Any]:
        return self._call(
            "orch_lease_renew", p_holder=holder, p_token=token, p_ttl_sec=ttl_sec, p_lease=self.lease
        )

    def lease_release(self, holder: str, token: int) -> bool:
        return bool(self._call("orch_lease_release", p_holder=holder, p_token=token, p_lease=self.lease))

    def lease_take_over(self, holder: str, from_holder: str, ttl_sec: float) -> dict[str, Any]:
        return self._call(
            "orch_lease_take_over", p_holder=holder, p_from=from_holder, p_ttl_sec=ttl_sec, p_lease=self.lease
        )

    # -- orchestrator: writes (fenced) ----------------------------------------------------------------

    def register_worker(
        self, token: int, worker_id: str, instance_type: str, metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._call(
            "orch_register_worker",
            p_token=token,
            p_worker_id=worker_id,
            p_instance_type=instance_type,
            p_metadata=dict(metadata),
            p_lease=self.lease,
        )

    def transition_worker(
        self,
        token: int,
        worker_id: str,
        to: str,
        reason: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return self._call(
            "orch_transition_worker",
            p_token=token,
            p_worker_id=worker_id,
            p_to=to,
            p_reason=reason,
            p_metadata=dict(metadata or {}),
            p_lease=self.lease,
        )

    def merge_worker_metadata(
        self, token: int, worker_id: str, metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._call(
            "orch_merge_worker_metadata",
            p_token=token,
            p_worker_id=worker_id,
            p_metadata=dict(metadata),
            p_lease=self.lease,
        )

    def requeue_worker_tasks(
        self, token: int, worker_id: str, reason: str, max_attempts: int = 3
    ) -> dict[str, Any]:
        return self._call(
            "orch_requeue_worker_tasks",
            p_token=token,
            p_worker_id=worker_id,
            p_reason=reason,
            p_max_attempts=max_attempts,
            p_lease=self.lease,
        )

    def requeue_stranded_tasks(
        self, token: int, worker_id: str, task_ids: Sequence[str], reason: str, max_attempts: int = 3
    ) -> dict[str, Any]:
        """Requeue those of ``task_ids`` the worker still holds while it holds a newer task (the
        database checks): ``{requeued: [ids], failed: [ids]}`` (failed = dead-lettered)."""
        return self._call(
            "orch_requeue_stranded_tasks",
            p_token=token,
            p_worker_id=worker_id,
            p_task_ids=list(task_ids),
            p_reason=reason,
            p_max_attempts=max_attempts,
            p_lease=self.lease,
        )

    def requeue_unowned_tasks(
        self, token: int, older_than_sec: float, reason: str, max_attempts: int = 3
    ) -> dict[str, Any]:
        """Requeue the In Progress tasks that name no worker, In Progress longer than ``older_than_sec``
        by the database's clock: ``{requeued: [ids], failed: [ids]}`` (failed = dead-lettered)."""
        return self._call(
            "orch_requeue_unowned_tasks",
            p_token=token,
            p_older_than_sec=older_than_sec,
            p_reason=reason,
            p_max_attempts=max_attempts,
            p_lease=self.lease,
        )

    def release_parents(self, token: int, worker_id: str, reason: str) -> dict[str, Any]:
        """Let go the parents (``*_orchestrator``) the worker holds In Progress: ``{released: [ids]}``;
        they stay In Progress with no worker, for the app to complete with their last child."""
        return self._call(
            "orch_release_parents", p_token=token, p_worker_id=worker_id, p_reason=reason, p_lease=self.lease
        )

    def set_task_attempt_limit(self, token: int, max_attempts: int) -> int:
        """Store ``MAX_TASK_ATTEMPTS`` where the tasks guard reads it: the limit also applies to the
        app's writes (a task requeued at the limit through an Edge Function is dead-lettered)."""
        return int(
            self._call(
                "orch_set_task_attempt_limit", p_token=token, p_max_attempts=max_attempts, p_lease=self.lease
            )
        )

    def prune_events(self, token: int, retention_days: int, batch: int) -> dict[str, Any]:
        """Delete at most ``batch`` events older than ``retention_days`` (``EVENTS_RETENTION_DAYS``):
        ``{deleted, more, cutoff, oldest_kept_at}``. The log stays append-only for every other writer."""
        return dict(
            self._call(
                "orch_prune_events",
                p_token=token,
                p_retention_days=retention_days,
                p_batch=batch,
                p_lease=self.lease,
            )
        )

    def append_event(
        self,
        token: int,
        kind: str,
        *,
        worker_id: str | None = None,
        runpod_id: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        cost_usd: float | None = None,
    ) -> int:
        return int(
            self._call(
                "orch_append_event",
                p_token=token,
                p_kind=kind,
                p_worker_id=worker_id,
                p_runpod_id=runpod_id,
                p_reason=reason,
                p_details=dict(details or {}),
                p_cost_usd=cost_usd,
                p_lease=self.lease,
            )
        )

    # -- operator -----------------------------------------------------------------------------------

    def set_paused(self, paused: bool, by: str, reason: str | None = None) -> dict[str, Any]:
        return self._call("orch_set_paused", p_paused=paused, p_by=by, p_reason=reason)

    def request_termination(self, worker_id: str, by: str) -> dict[str, Any]:
        return self._call("orch_request_termination", p_worker_id=worker_id, p_by=by)
