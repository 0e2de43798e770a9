"""Record, the last step of a tick: the summary line, the breaker's changes, the metrics, retention.

Where this sits: ``orchestrator.loop.controller`` calls it after apply. The SQL functions append the
transitions to ``orchestrator_events`` themselves and the executor adds spawns, terminations and
failures with their cost; this adds one ``tick_summary`` log line with the old system's fields (what
the demo and operators read), an event when the breaker stops or resumes spawning, the Prometheus
metrics, and the bounded pruning of expired events (``EVENTS_RETENTION_DAYS``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from orchestrator.core import errors
from orchestrator.core.actions import Plan
from orchestrator.core.config import Settings
from orchestrator.core.observed import PodView, Snapshot
from orchestrator.core.states import Blocked, BreakerState, WorkerState
from orchestrator.loop.metrics import Metrics
from orchestrator.ports import Database

log = structlog.get_logger(__name__)

# Event retention: one delete of at most this many rows per tick while a backlog remains, then a
# check every EVENTS_PRUNE_SEC.
EVENTS_PRUNE_BATCH = 5000
EVENTS_PRUNE_SEC = 600.0


class Recorder:
    """What the controller remembers between ticks for the record: the breaker's last state and when
    to prune next."""

    def __init__(
        self, db: Database, settings: Settings, metrics: Metrics, clock: Callable[[], float]
    ) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._next_prune_at = 0.0
        # The breaker's state at the previous tick (None before the first): its changes become events.
        self._last_breaker: BreakerState | None = None

    def record(
        self,
        tick_no: int,
        snapshot: Snapshot,
        pods: Sequence[PodView] | None,
        plan: Plan,
        outcomes: Sequence[dict[str, Any]],
        duration: float,
        token: int | None,
    ) -> dict[str, Any]:
        """Log ``tick_summary``, record the breaker's change, update the metrics; the summary."""
        states = Counter(w.status.value for w in snapshot.workers)
        by_kind = Counter(
            o["kind"] for o in outcomes if o.get("outcome") not in ("in_flight", "stale", "lease_lost")
        )
        started = ("started", "initialized", "already_running")
        actions = {
            "promoted": sum(1 for o in outcomes if o["kind"] == "promote" and o.get("outcome") == "ok"),
            "failed": by_kind.get("fail_worker", 0),
            "spawned": sum(1 for o in outcomes if o["kind"] == "spawn" and o.get("runpod_id")),
            "terminated": by_kind.get("mark_terminated", 0),
            "terminate_requested": by_kind.get("terminate_pod", 0),
            "drained": by_kind.get("drain", 0),
            "initialized": sum(
                1
                for o in outcomes
                if o["kind"] in ("initialize", "start_process") and o.get("outcome") in started
            ),
            # The warm pool: stops the provider accepted, resumes it started, resumes refused for lack
            # of a GPU (the pod was terminated; a spawn replaces it).
            "stopped": sum(1 for o in outcomes if o["kind"] == "stop_pod" and o.get("stop_accepted")),
            "resumed": sum(
                1 for o in outcomes if o["kind"] == "resume_pod" and o.get("outcome") == "resumed"
            ),
            "resume_no_gpu": sum(
                1 for o in outcomes if o["kind"] == "resume_pod" and o.get("outcome") == "no_gpu"
            ),
            "tasks_reset": sum(int(o.get("tasks_reset") or 0) for o in outcomes),
            # Parents let go by workers leaving (ReleaseParents).
            "parents_released": sum(int(o.get("parents_released") or 0) for o in outcomes),
            "in_flight": sum(1 for o in outcomes if o.get("outcome") == "in_flight"),
            # Decided on a row an earlier tick's action changed meanwhile: dropped, decided again next tick.
            "stale": sum(1 for o in outcomes if o.get("outcome") == "stale"),
            "errors": sum(
                1 for o in outcomes if o.get("outcome") in ("failed", "crashed") or o.get("skipped_steps")
            ),
        }
        status = {
            "queued": snapshot.queue.claimable,
            "queued_total": snapshot.queue.queued_total,
            "running": snapshot.queue.running,
            "running_without_worker": snapshot.queue.unowned_running,
            "oldest_queued_age_sec": snapshot.queue.oldest_claimable_age_sec,
            **{s.value: states.get(s.value, 0) for s in WorkerState if s is not WorkerState.TERMINATED},
            "pods": None if pods is None else len(pods),
        }
        summary = {
            "timestamp": (snapshot.now or datetime.now(UTC)).isoformat(),
            "tick": tick_no,
            "actions": actions,
            "status": status,
            "desired": plan.desired,
            "capacity": plan.capacity,
            "spend_per_hr": round(plan.spend_per_hr, 4),
            "paused": plan.paused,
            "breaker": plan.breaker.value,
            "spawn_blocked": [b.value for b in plan.spawn_blocked],
            # Why the fleet is the size it is: the wait target's model (empty when WAIT_TARGET_SEC is 0).
            "sizing": dict(plan.sizing),
            "duration_ms": round(duration * 1000, 1),
        }
        log.info("tick_summary", **summary)
        self._record_breaker(plan, token)
        self.metrics.observe_tick(
            duration=duration,
            workers_by_state=states,
            claimable=snapshot.queue.claimable,
            running=snapshot.queue.running,
            oldest_queued_age=snapshot.queue.oldest_claimable_age_sec,
            spend_rate=plan.spend_per_hr,
            blocked={b.value: b in plan.spawn_blocked for b in Blocked},
            leader=token is not None,
        )
        return summary

    def _record_breaker(self, plan: Plan, token: int | None) -> None:
        """An event and a log line when spawning stops for consecutive failures, and when it resumes.

        The breaker itself lives in the policy, derived from the database (``recent_boots``), so it
        survives restarts; only its changes are remembered here. After a restart an open breaker is
        announced again (the previous process may have died before saying so).
        """
        previous, current = self._last_breaker, plan.breaker
        self._last_breaker = current
        if current is previous or (previous is None and current is BreakerState.CLOSED):
            return
        failures = plan.consecutive_failures
        limit = self.settings.max_consecutive_failures
        until = plan.breaker_until.isoformat() if plan.breaker_until else None
        was = previous.value if previous is not None else None
        details = {
            "consecutive_failures": failures,
            "max_consecutive_failures": limit,
            "until": until,
            "previous": was,
        }
        # Literal event names, so that the operations guide's generated table lists them for alerts.
        if current is BreakerState.OPEN:
            kind, reason = "spawning_stopped", "max_consecutive_failures"
            log.warning(
                "spawning_stopped",
                reason=reason,
                consecutive_failures=failures,
                max_consecutive_failures=limit,
                until=until,
                previous=was,
            )
        elif current is BreakerState.CLOSED and previous is not None:
            kind, reason = "spawning_resumed", "boot_succeeded"
            log.info("spawning_resumed", reason=reason, consecutive_failures=failures, previous=was)
        else:
            # -> half-open: probes may spawn now; no event, their own spawns are.
            log.info(
                "spawning_probe_allowed",
                consecutive_failures=failures,
                max_consecutive_failures=limit,
                previous=was,
            )
            return
        if token is None:
            return
        try:
            self.db.append_event(token, kind, reason=reason, details=details)
        except errors.LeaseLost:
            log.warning("event_not_recorded", kind=kind, error="lease lost")
        except Exception as exc:  # the event log is a record: losing one line must not stop the tick
            log.warning("event_not_recorded", kind=kind, error=f"{type(exc).__name__}: {exc}"[:300])

    def prune_events(self, token: int) -> bool:
        """At most one bounded batch of expired events per tick, and only every EVENTS_PRUNE_SEC while
        nothing is left to prune: the log stops growing for ever without a long delete holding a tick.
        False when the lease was lost meanwhile."""
        days = self.settings.events_retention_days
        if days <= 0 or self.clock() < self._next_prune_at:
            return True
        try:
            answer = self.db.prune_events(token, days, EVENTS_PRUNE_BATCH)
        except errors.LeaseLost as exc:
            log.warning("lease_lost", during="prune_events", error=str(exc)[:300])
            return False
        except errors.OrchestratorError as exc:
            log.warning("events_prune_failed", error_type=type(exc).__name__, error=str(exc)[:300])
            self._next_prune_at = self.clock() + EVENTS_PRUNE_SEC
            return True
        if answer.get("deleted"):
            log.info(
                "events_pruned",
                deleted=answer.get("deleted"),
                retention_days=days,
                oldest_kept_at=answer.get("oldest_kept_at"),
            )
        self._next_prune_at = self.clock() + (0.0 if answer.get("more") else EVENTS_PRUNE_SEC)
        return True
