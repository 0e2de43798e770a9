"""A worker that sits idle beside a task the claimable view counts: the operator is told, loudly.

The orchestrator sizes the fleet from ``orchestrator_claimable_tasks``; the worker claims by its own
rules (on Reigh's database, the app's claim function). When an operator's own view counts tasks the
worker's claim refuses, a worker polls beside them and takes none, and every replacement would too.
Over real PostgreSQL (the migrated per-test database): the real snapshot, the real ``Controller.tick``,
the real transition; only the provider is a recorder. What an operator checks: the worker is drained
with the reason ``idle_while_tasks_waited``, its row says which tasks it passed over and for how long,
and the log carries one ``tasks_not_claimed`` warning with the same figures.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import psycopg
from structlog.testing import capture_logs

from orchestrator.adapters.db.base import Database
from orchestrator.core import config
from orchestrator.loop.controller import Controller
from tests.integration.test_unconditional_endings import POD, RecordingProvider, _row, _row_in

WORKER = "gpu-20261207_010000-0a1b2c3d"


class ListingProvider(RecordingProvider):
    """The recorder, listing the worker's pod as running with SSH up."""

    def list_pods(self) -> list[Any]:
        return [
            SimpleNamespace(
                id=POD,
                name=WORKER,
                actual_status="RUNNING",
                desired_status="RUNNING",
                ssh_ready=True,
                ssh_host="203.0.113.7",
                ssh_port=22022,
                cost_per_hr=0.59,
                created_at=None,
                uptime_seconds=None,
                gpu_type="NVIDIA GeForce RTX 4090",
                data_center="EU-RO-1",
            )
        ]


def test_a_worker_idle_beside_a_task_it_does_not_take_is_drained_and_the_operator_told(
    db: Database, database_url: str
) -> None:
    # MAX_ACTIVE_GPUS 1: the drained worker still holds the slot, so this tick spawns no replacement.
    settings = config.defaults().replace(max_active_gpus=1)
    idle_limit = settings.gpu_idle_timeout_sec
    controller = Controller(settings, db, ListingProvider(), holder="unclaimed", apply_budget_sec=30.0)
    try:
        token = controller._ensure_lease()
        assert token is not None
        _row_in(db, token, WORKER, "active")
        with psycopg.connect(database_url, autocommit=True) as raw, raw.cursor() as cur:
            # Active for twice the idle limit, heartbeating, no task ever; a task of a type the worker
            # does not serve has waited three times that.
            # The worker guard stamps activated_at itself on the move to active: step around it to
            # backdate the row (the test owns the throwaway database).
            cur.execute("set session_replication_role = replica")
            cur.execute(
                "update workers set activated_at = now() - make_interval(secs => %s),"
                " created_at = now() - make_interval(secs => %s), last_heartbeat = now() where id = %s",
                (2 * idle_limit, 2 * idle_limit + 60, WORKER),
            )
            cur.execute("set session_replication_role = origin")
            cur.execute(
                "insert into tasks (task_type, params, status, created_at)"
                " values ('lora_training', '{}'::jsonb, 'Queued', now() - make_interval(secs => %s))",
                (3 * idle_limit,),
            )
        with capture_logs() as logs:
            result = controller.tick()
    finally:
        controller.shutdown(timeout=10)

    assert result.role == "leader", result
    with psycopg.connect(database_url, autocommit=True) as raw:
        row = _row(raw, WORKER)
    assert row["status"] == "draining", row
    assert row["metadata"]["drain_reason"] == "idle_while_tasks_waited", row
    passed_over = row["metadata"]["unclaimed_work"]
    assert passed_over["claimable"] == 1 and passed_over["by_type"] == {"lora_training": 1}, passed_over
    assert passed_over["oldest_queued_sec"] >= 3 * idle_limit, passed_over
    assert 2 * idle_limit <= passed_over["worker_idle_sec"] < 3 * idle_limit, passed_over
    [warning] = [e for e in logs if e["event"] == "tasks_not_claimed"]
    assert warning["log_level"] == "warning" and warning["worker_id"] == WORKER, warning
    assert warning["by_type"] == {"lora_training": 1} and "claimable view" in warning["hint"], warning
