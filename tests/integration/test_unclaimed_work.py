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
SECOND = "gpu-20261207_011500-4e5f6a7b"
SECOND_POD = "podsecondworker"


class ListingProvider(RecordingProvider):
    """The recorder, listing its workers' pods: running with SSH up, EXITED once stopped, gone once
    terminated."""

    def __init__(self) -> None:
        super().__init__()
        self.pods = {WORKER: POD}
        self.stopped: set[str] = set()

    def stop(self, runpod_id: str) -> bool:
        self.stopped.add(runpod_id)
        return super().stop(runpod_id)

    def list_pods(self) -> list[Any]:
        return [
            SimpleNamespace(
                id=pod,
                name=worker,
                actual_status="EXITED" if pod in self.stopped else "RUNNING",
                desired_status="EXITED" if pod in self.stopped else "RUNNING",
                ssh_ready=pod not in self.stopped,
                ssh_host="203.0.113.7",
                ssh_port=22022,
                cost_per_hr=0.59,
                created_at=None,
                uptime_seconds=None,
                gpu_type="NVIDIA GeForce RTX 4090",
                data_center="EU-RO-1",
            )
            for worker, pod in self.pods.items()
            if pod not in self.terminated
        ]


def _idle_since(database_url: str, worker_id: str, seconds: float) -> None:
    """The worker active that long, heartbeating, with no task ever. The worker guard stamps
    activated_at itself on the move to active: step around it (the test owns the throwaway database)."""
    with psycopg.connect(database_url, autocommit=True) as raw, raw.cursor() as cur:
        cur.execute("set session_replication_role = replica")
        cur.execute(
            "update workers set activated_at = now() - make_interval(secs => %s),"
            " created_at = now() - make_interval(secs => %s), last_heartbeat = now() where id = %s",
            (seconds, seconds + 60, worker_id),
        )
        cur.execute("set session_replication_role = origin")


def _idle_beside_an_old_task(db: Database, token: int, database_url: str, idle_limit: int) -> str:
    """The worker active for twice the idle limit, with no task ever; beside it a task of a type it
    does not serve, queued three times the idle limit ago. Returns the task's id."""
    _row_in(db, token, WORKER, "active")
    _idle_since(database_url, WORKER, 2 * idle_limit)
    with psycopg.connect(database_url, autocommit=True) as raw, raw.cursor() as cur:
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


def test_tasks_two_workers_passed_over_buy_no_more_workers_while_later_tasks_still_do(
    db: Database, database_url: str
) -> None:
    """Without this, each replacement sat beside the same task for GPU_IDLE_TIMEOUT_SEC and was
    drained in turn: a boot and ten idle minutes billed, again and again, for a task no worker takes.
    The first worker drained beside it still gets a replacement (it may have been hung, its heartbeat
    running on); once a second one has passed the task over too, it buys nothing, a task queued after
    it still gets a worker, and the set-aside ends when the task goes."""
    settings = config.defaults().replace(max_active_gpus=2)
    idle_limit = settings.gpu_idle_timeout_sec
    provider = ListingProvider()
    controller = Controller(settings, db, provider, holder="unclaimed", apply_budget_sec=30.0)
    try:
        token = controller._ensure_lease()
        assert token is not None
        old_task = _idle_beside_an_old_task(db, token, database_url, idle_limit)
        with capture_logs() as logs:
            first = controller.tick()
        assert [a.kind for a in first.plan.actions] == ["drain", "spawn"], first.plan.actions
        assert not [e for e in logs if e["event"] == "tasks_set_aside"]

        # The replacement, booted and idle as long beside the same task (its row made the way the
        # daemon makes one; the spawn itself went to a provider that creates nothing).
        with psycopg.connect(database_url, autocommit=True) as raw:
            raw.execute("delete from workers where status = 'spawning'")
        db.register_worker(token, SECOND, "NVIDIA GeForce RTX 4090", {"runpod_id": SECOND_POD})
        for state in ("initializing", "active"):
            db.transition_worker(token, SECOND, state, "setup")
        _idle_since(database_url, SECOND, 2 * idle_limit)
        provider.pods[SECOND] = SECOND_POD
        with capture_logs() as logs:
            ticks = [controller.tick() for _ in range(4)]
        drains = [a for r in ticks for a in r.plan.actions if a.kind == "drain"]
        assert [a.worker_id for a in drains] == [SECOND], drains
        assert all(not _adds(r) for r in ticks), [r.plan.actions for r in ticks]
        assert provider.stopped == {POD, SECOND_POD}  # both idle pods went to the warm pool
        assert ticks[-1].summary["status"]["queued"] == 1  # the tick summary still shows the real queue
        [aside] = [e for e in logs if e["event"] == "tasks_set_aside"]
        assert aside["tasks"] == 1 and aside["by_type"] == {"lora_training": 1}
        assert aside["log_level"] == "warning"

        # A task queued now is someone else's: it gets a worker (a pooled one, resumed).
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
