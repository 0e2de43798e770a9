"""The dashboard shows what the fleet costs; the event log is pruned to its retention, and only so.

Real Postgres with the migrations. The views are read as the service role (what Supabase's dashboard
and the daemon use), since they are security_invoker.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from orchestrator.adapters.db.base import Database
from orchestrator.core import config, errors
from orchestrator.core.actions import Promote
from orchestrator.core.states import Reason
from orchestrator.loop.controller import Controller


def register(db: Database, token: int, worker_id: str, price: float | None) -> None:
    meta: dict[str, Any] = {"runpod_id": f"pod-{worker_id}"}
    if price is not None:
        meta["cost_per_hr"] = price
    db.register_worker(token, worker_id, "NVIDIA GeForce RTX 4090", meta)


def as_service_role(raw: psycopg.Connection[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    with raw.transaction():
        raw.execute("set local role service_role")
        return list(raw.execute(query).fetchall())


def test_views_show_each_workers_price_and_spend_and_the_fleets_totals(
    db: Database, token: int, raw: psycopg.Connection[dict[str, Any]]
) -> None:
    register(db, token, "gpu-live", 0.72)
    register(db, token, "gpu-gone", 2.0)
    register(db, token, "gpu-free", None)
    # Lifetimes: the live one started an hour ago; the gone one ran two hours, a day and a half ago.
    raw.execute("update workers set created_at = now() - interval '1 hour' where id = 'gpu-live'")
    raw.execute("update workers set created_at = now() - interval '38 hours' where id = 'gpu-gone'")
    db.transition_worker(token, "gpu-gone", "terminating", "idle_timeout")
    raw.execute(
        "select orch_merge_worker_metadata(%s, 'gpu-gone', jsonb_build_object("
        "'pod_terminate_requested_at', now() - interval '36 hours'))",
        (token,),
    )
    db.transition_worker(token, "gpu-gone", "terminated", "provider_confirmed_gone")

    health = {r["id"]: r for r in as_service_role(raw, "select * from orchestrator_worker_spend")}
    assert set(health) == {"gpu-live", "gpu-gone", "gpu-free"}
    assert abs(float(health["gpu-gone"]["spend_usd"]) - 4.0) < 0.01
    assert float(health["gpu-live"]["cost_per_hr"]) == 0.72
    assert abs(float(health["gpu-live"]["spend_usd"]) - 0.72) < 0.01
    assert health["gpu-free"]["cost_per_hr"] is None and health["gpu-free"]["spend_usd"] is None

    [spend] = as_service_role(raw, "select * from orchestrator_spend")
    assert spend["live_workers"] == 2
    assert float(spend["cost_per_hr"]) == 0.72
    assert abs(float(spend["live_spend_usd"]) - 0.72) < 0.01
    assert abs(float(spend["spend_24h_usd"]) - 0.72) < 0.01  # the gone one ended 36 h ago
    assert abs(float(spend["spend_7d_usd"]) - (0.72 + 4.0)) < 0.01
    assert abs(float(spend["spend_total_usd"]) - (0.72 + 4.0)) < 0.01
    assert spend["workers_without_price"] == 1


def test_a_malformed_termination_time_reads_as_absent(
    db: Database, token: int, raw: psycopg.Connection[dict[str, Any]]
) -> None:
    register(db, token, "gpu-odd", 1.0)
    raw.execute("update workers set created_at = now() - interval '30 minutes' where id = 'gpu-odd'")
    raw.execute(
        "select orch_merge_worker_metadata(%s, 'gpu-odd', '{\"pod_terminate_requested_at\": \"not a time\"}')",
        (token,),
    )
    [row] = as_service_role(raw, "select spend_usd from orchestrator_worker_spend where id = 'gpu-odd'")
    assert abs(float(row["spend_usd"]) - 0.5) < 0.01


def events(raw: psycopg.Connection[dict[str, Any]]) -> list[str]:
    return [r["kind"] for r in raw.execute("select kind from orchestrator_events order by id")]


def test_pruning_removes_only_old_events_in_bounded_batches(
    db: Database, token: int, raw: psycopg.Connection[dict[str, Any]]
) -> None:
    for i in range(5):
        raw.execute(
            "insert into orchestrator_events (at, kind) values (now() - make_interval(days => 100 + %s), 'old_event')",
            (i,),
        )
    db.append_event(token, "fresh_event")
    first = raw.execute("select orch_prune_events(%s, 90, 3) as r", (token,)).fetchone()
    assert first is not None and first["r"]["deleted"] == 3 and first["r"]["more"] is True
    second = raw.execute("select orch_prune_events(%s, 90, 3) as r", (token,)).fetchone()
    assert second is not None and second["r"]["deleted"] == 2 and second["r"]["more"] is False
    assert "old_event" not in events(raw) and "fresh_event" in events(raw)


def test_the_log_stays_append_only_for_everyone_else(
    db: Database, token: int, raw: psycopg.Connection[dict[str, Any]]
) -> None:
    raw.execute("insert into orchestrator_events (at, kind) values (now() - interval '400 days', 'ancient')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        raw.execute("delete from orchestrator_events where kind = 'ancient'")
    # Not even inside a transaction that sets the cutoff by hand without being the prune function...
    with pytest.raises(psycopg.errors.InsufficientPrivilege), raw.transaction():
        raw.execute("select set_config('orchestrator.prune_events_before', now()::text, true)")
        raw.execute("update orchestrator_events set kind = 'changed' where kind = 'ancient'")
    # ...and the prune function with a stale token or a nonsense retention changes nothing.
    with pytest.raises(psycopg.Error) as stale:
        raw.execute("select orch_prune_events(%s, 90)", (token - 1,))
    assert stale.value.sqlstate == "OR001"
    with pytest.raises(psycopg.Error) as bad:
        raw.execute("select orch_prune_events(%s, 0)", (token,))
    assert bad.value.sqlstate == "22023"
    assert "ancient" in events(raw)


# -- the daemon's side: the leader prunes, and reports boots and tick failures ---------------------


class QuietProvider:
    """A Runpod account with nothing in it (enough for a tick that has nothing to do)."""

    def list_pods(self) -> list[Any]:
        return []

    def list_gpu_types(self, *, with_availability: bool = False, fresh: bool = False) -> list[Any]:
        return []

    def spawn_volumes(self) -> list[Any]:
        return []


def controller(db: Database, **changes: Any) -> Controller:
    settings = config.defaults().replace(min_active_gpus=0, **changes)
    return Controller(settings, db, QuietProvider())  # type: ignore[arg-type]


def test_the_leader_prunes_expired_events_in_its_tick(
    db: Database, raw: psycopg.Connection[dict[str, Any]]
) -> None:
    raw.execute("insert into orchestrator_events (at, kind) values (now() - interval '40 days', 'expired')")
    raw.execute("insert into orchestrator_events (at, kind) values (now() - interval '10 days', 'kept')")
    c = controller(db, events_retention_days=30)
    try:
        assert c.tick().role == "leader"
    finally:
        c.shutdown()
    kinds = events(raw)
    assert "expired" not in kinds and "kept" in kinds


def test_retention_zero_keeps_everything(db: Database, raw: psycopg.Connection[dict[str, Any]]) -> None:
    raw.execute("insert into orchestrator_events (at, kind) values (now() - interval '4000 days', 'ancient')")
    c = controller(db, events_retention_days=0)
    try:
        assert c.tick().role == "leader"
    finally:
        c.shutdown()
    assert "ancient" in events(raw)


def test_a_promotion_reports_the_boot_time(db: Database, raw: psycopg.Connection[dict[str, Any]]) -> None:
    c = controller(db)
    try:
        token = c._ensure_lease()
        assert token is not None
        db.register_worker(
            token, "gpu-boot", "NVIDIA GeForce RTX 4090", {"gpu_type": "NVIDIA GeForce RTX 4090"}
        )
        raw.execute("update workers set created_at = now() - interval '95 seconds' where id = 'gpu-boot'")
        db.transition_worker(token, "gpu-boot", "initializing", "pod_ready")
        outcome = c._run_action(Promote(reason=Reason.FIRST_HEARTBEAT, worker_id="gpu-boot"), {}, token)
        assert outcome["outcome"] == "ok"
        text = c.metrics.render().decode()
    finally:
        c.shutdown()
    count = re.search(
        r'^orchestrator_boot_seconds_count\{gpu_type="NVIDIA GeForce RTX 4090"\} (\S+)$', text, re.M
    )
    under_120 = re.search(
        r'^orchestrator_boot_seconds_bucket\{gpu_type="NVIDIA GeForce RTX 4090",le="120.0"\} (\S+)$',
        text,
        re.M,
    )
    under_90 = re.search(
        r'^orchestrator_boot_seconds_bucket\{gpu_type="NVIDIA GeForce RTX 4090",le="90.0"\} (\S+)$',
        text,
        re.M,
    )
    assert count and float(count.group(1)) == 1.0
    assert under_120 and float(under_120.group(1)) == 1.0 and under_90 and float(under_90.group(1)) == 0.0


class FailingLease(Database):
    def lease_acquire(self, holder: str, ttl_sec: float) -> dict[str, Any]:
        raise errors.TransientDatabaseError("orch_lease_acquire", "connection refused")


def test_a_failed_tick_is_counted_by_step(db: Database) -> None:
    broken = FailingLease(db.transport)
    c = controller(broken)
    try:
        assert c.tick().role == "failed"
        text = c.metrics.render().decode()
    finally:
        c.shutdown()
    assert 'orchestrator_tick_failures_total{step="lease"} 1.0' in text
    assert 'orchestrator_tick_failures_total{step="gather"} 0.0' in text
