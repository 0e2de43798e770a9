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
    """The recorder, listing the worker's pod as running with SSH up (until it is terminated)."""

    stopped: bool = False

    def stop(self, runpod_id: str) -> bool:
        self.stopped = True
        return super().stop(runpod_id)

    def list_pods(self) -> list[Any]:
        if POD in self.terminated:
            return []
        status = "EXITED" if self.stopped else "RUNNING"
        return [
            SimpleNamespace(
                id=POD,
                name=WORKER,
                actual_status=status,
                desired_status=status,
                ssh_ready=not self.stopped,
                ssh_host="203.0.113.7",
                ssh_port=22022,
                cost_per_hr=0.59,
                created_at=None,
                uptime_seconds=None,
                gpu_type="NVIDIA GeForce RTX 4090",
                data_center="EU-RO-1",
            )
        ]


def _idle_beside_an_old_task(db: Database, token: int, database_url: str, idle_limit: int) -> str:
    """The worker active for twice the idle limit, heartbeating, with no task ever; beside it a task of
    a type it does not serve, queued three times the idle limit ago. Returns the task's id."""
    _row_in(db, token, WORKER, "active")
    with psycopg.connect(database_url, autocommit=True) as raw, raw.cursor() as cur:
        # The worker guard stamps activated_at itself on the move to active: step around it to backdate
        # the row (the test owns the throwaway database).
        cur.execute("set session_replication_role = replica")
        cur.execute(
            "update workers set activated_at = now() - make_interval(secs => %s),"
            " created_at = now() - make_interval(secs => %s), last_heartbeat = now() where id = %s",
            (2 * idle_limit, 2 * idle_limit + 60, WORKER),
        )
        cur.execute("set session_replication_role = origin")
        cur.execute(
            "insert into tasks (task_type, params, status, created_at)"
            " values ('lora_training', '{}'::jsonb, 'Queued', now() - make_interval(secs => %s)) returning id",
            (3 * idle_limit,),
        )
        found = cur.fetchone()
    assert found is not None
    return str(found[0])


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
        _idle_beside_an_old_task(db, token, database_url, idle_limit)
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


def _adds(result: Any) -> list[str]:
    """The actions that would put a GPU to work: a new pod, a pooled one resumed, a drained one kept."""
    return [a.kind for a in result.plan.actions if a.kind in ("spawn", "resume_pod", "reactivate")]


def test_the_tasks_passed_over_buy_no_new_worker_while_later_tasks_still_do(
    db: Database, database_url: str
) -> None:
    """Without this, the drained worker's replacement sat beside the same task for GPU_IDLE_TIMEOUT_SEC
    and was drained in turn: a boot and ten idle minutes billed, again and again, for a task no worker
    takes. Set aside, it buys nothing; a task queued after it still gets a worker, and the set-aside
    ends when the task goes."""
    settings = config.defaults().replace(max_active_gpus=2)
    idle_limit = settings.gpu_idle_timeout_sec
    provider = ListingProvider()
    controller = Controller(settings, db, provider, holder="unclaimed", apply_budget_sec=30.0)
    try:
        token = controller._ensure_lease()
        assert token is not None
        old_task = _idle_beside_an_old_task(db, token, database_url, idle_limit)
        with capture_logs() as logs:
            drained = controller.tick()
            assert [a.kind for a in drained.plan.actions] == ["drain"], drained.plan.actions
            # The next ticks: the idle worker's pod goes to the warm pool; the task it passed over asks
            # for no worker, new or pooled.
            later = [controller.tick() for _ in range(3)]
        assert provider.stopped, [r.plan.actions for r in later]
        assert all(not _adds(r) for r in later), [r.plan.actions for r in later]
        assert later[-1].summary["status"]["queued"] == 1  # the tick summary still shows the real queue
        assert later[-1].summary["status"]["stopped"] == 1, later[-1].summary["status"]
        [aside] = [e for e in logs if e["event"] == "tasks_set_aside"]
        assert aside["tasks"] == 1 and aside["by_type"] == {"lora_training": 1}
        assert aside["log_level"] == "warning"

        # A task queued now is someone else's: it gets a worker (the pooled one, resumed).
        with psycopg.connect(database_url, autocommit=True) as raw:
            raw.execute(
                "insert into tasks (task_type, params, status) values ('generate', '{}'::jsonb, 'Queued')"
            )
        assert _adds(controller.tick()) == ["resume_pod"]

        # The operator fails the task passed over: the set-aside ends with it.
        with psycopg.connect(database_url, autocommit=True) as raw:
            raw.execute("update tasks set status = 'Failed' where id = %s", (old_task,))
        with capture_logs() as logs:
            controller.tick()
        [ended] = [e for e in logs if e["event"] == "tasks_set_aside_ended"]
        assert ended["why"] == "claimed_or_gone"
    finally:
        controller.shutdown(timeout=10)
