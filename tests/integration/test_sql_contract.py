"""The SQL contract of docs/database.md, exercised through the Database facade over the psycopg transport.

The worker's side is the real worker's: its heartbeat RPC and the app's claim and Edge Function updates,
as the SQL they run (``tests.plugins.supabase.RealWorkerSQL``); the guards of docs/database.md hold them.

Real PostgreSQL (the session's TempPostgres), one fresh database per test cloned from the migrated
template. "Nothing written" is checked by comparing a dump of every table the functions touch before
and after the refused call.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.adapters.db.base import Database
from orchestrator.adapters.db.postgres import PostgresTransport
from orchestrator.core import errors
from orchestrator.core.states import TRANSITIONS, WorkerState
from tests.plugins.supabase import RealWorkerSQL

DATABASE_DOC = Path(__file__).resolve().parents[2] / "docs" / "database.md"

# -- helpers ----------------------------------------------------------------------------------------


def one(conn: psycopg.Connection[Any], query: str, params: Any = ()) -> dict[str, Any]:
    """The single row of ``query`` as a dict (the connections here use dict rows)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return dict(row)


def state(conn: psycopg.Connection[Any]) -> str:
    """Every row the contract's functions may write, as one comparable text."""
    parts = []
    for table, order in (
        ("workers", "id"),
        ("tasks", "id"),
        ("orchestrator_events", "id"),
        ("orchestrator_lease", "name"),
        ("orchestrator_control", "id"),
    ):
        row = one(conn, f"select coalesce(jsonb_agg(to_jsonb(x) order by {order}), '[]') as r from {table} x")
        parts.append(json.dumps(row["r"], sort_keys=True))
    return "\n".join(parts)


def add_worker(conn: psycopg.Connection[Any], worker_id: str, status: str, **metadata: Any) -> None:
    """A row the orchestrator manages (as orch_register_worker leaves it), in ``status``."""
    conn.execute(
        "insert into workers (id, instance_type, status, metadata, status_changed_at, orchestrator_managed)"
        " values (%s, 'RTX 4090', %s, %s, now(), true)",
        (worker_id, status, json.dumps(metadata)),
    )


def add_tasks(
    conn: psycopg.Connection[Any],
    n: int,
    *,
    status: str = "Queued",
    worker_id: str | None = None,
    task_type: str = "generate",
    attempts: int = 0,
    age_sec: float = 0.0,
) -> list[str]:
    rows = conn.execute(
        """
        insert into tasks (task_type, params, status, worker_id, attempts, created_at, generation_started_at)
        select %s, '{}'::jsonb, %s, %s, %s,
               now() - make_interval(secs => %s + (n - g)::float8 / 1000),
               case when %s = 'In Progress' then now() - make_interval(secs => %s) end
        from generate_series(1, %s) g, (select %s::int as n) c
        returning id
        """,
        (task_type, status, worker_id, attempts, age_sec, status, age_sec, n, n),
    ).fetchall()
    return [str(r["id"] if isinstance(r, dict) else r[0]) for r in rows]


def worker_row(conn: psycopg.Connection[Any], worker_id: str) -> dict[str, Any]:
    row = conn.execute("select * from workers where id = %s", (worker_id,)).fetchone()
    assert row is not None
    return dict(row)


def task_row(conn: psycopg.Connection[Any], task_id: str) -> dict[str, Any]:
    row = conn.execute("select * from tasks where id = %s", (task_id,)).fetchone()
    assert row is not None
    return dict(row)


# -- lease and fencing ------------------------------------------------------------------------------


def test_lease_acquire_renew_release_and_takeover(db: Database, raw: psycopg.Connection[Any]) -> None:
    first = db.lease_acquire("a", 30)
    assert first["acquired"] is True and first["holder"] == "a" and first["token"] > 0

    other = db.lease_acquire("b", 30)
    assert other == {**other, "acquired": False, "token": None, "holder": "a"}

    again = db.lease_acquire("a", 30)  # the holder asking again renews, same token
    assert again["acquired"] is True and again["token"] == first["token"]

    renewed = db.lease_renew("a", first["token"], 30)
    assert renewed["renewed"] is True
    assert db.lease_renew("b", first["token"], 30)["renewed"] is False
    assert db.lease_renew("a", first["token"] + 1, 30)["renewed"] is False

    assert db.lease_release("b", first["token"]) is False
    assert db.lease_release("a", first["token"]) is True
    taken = db.lease_acquire("b", 30)
    assert taken["acquired"] is True and taken["token"] > first["token"]
    assert db.lease_renew("a", first["token"], 30)["renewed"] is False

    # An expired lease goes to the next asker with a larger token; the old holder cannot renew it.
    raw.execute("update orchestrator_lease set expires_at = now() - interval '1 second'")
    third = db.lease_acquire("c", 30)
    assert third["acquired"] is True and third["token"] > taken["token"]
    assert db.lease_renew("b", taken["token"], 30)["renewed"] is False
    kinds = [e["kind"] for e in db.events(limit=10)]
    assert kinds.count("lease_acquired") == 3 and "lease_released" in kinds


def _fenced_calls(worker_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("orch_register_worker", {"p_worker_id": "new-worker", "p_instance_type": "x", "p_metadata": {}}),
        ("orch_transition_worker", {"p_worker_id": worker_id, "p_to": "initializing", "p_reason": "r"}),
        ("orch_merge_worker_metadata", {"p_worker_id": worker_id, "p_metadata": {"a": 1}}),
        ("orch_requeue_worker_tasks", {"p_worker_id": worker_id, "p_reason": "r"}),
        ("orch_append_event", {"p_kind": "something", "p_details": {}}),
        ("orch_release_parents", {"p_worker_id": worker_id, "p_reason": "r"}),
    ]


@pytest.mark.parametrize("case", ["stale", "missing", "expired", "never_acquired_lease"])
@pytest.mark.parametrize("index", range(6))
def test_every_fenced_write_checks_the_token(
    db: Database, raw: psycopg.Connection[Any], case: str, index: int
) -> None:
    old = db.lease_acquire("old-leader", 30)["token"]
    add_worker(raw, "w1", "spawning")
    add_tasks(raw, 2, status="In Progress", worker_id="w1")
    lease = "orchestrator"
    if case == "stale":
        db.lease_release("old-leader", old)
        assert db.lease_acquire("new-leader", 30)["acquired"]
        token: int | None = old
    elif case == "missing":
        token = None
    elif case == "expired":
        raw.execute("update orchestrator_lease set expires_at = now() - interval '1 second'")
        token = old
    else:
        lease, token = "another-lease", old
    function, args = _fenced_calls("w1")[index]
    before = state(raw)
    with pytest.raises(errors.LeaseLost) as info:
        db.transport.call(function, {"p_token": token, **args, "p_lease": lease})
    assert info.value.function == function and info.value.code == "OR001"
    assert "lease" in info.value.message
    assert state(raw) == before


def test_fenced_write_waits_for_nothing_with_current_token(db: Database, token: int) -> None:
    row = db.register_worker(token, "w1", "RTX 4090", {"orchestrator_prefix": "gpu"})
    assert row["status"] == "spawning" and row["orchestrator_prefix"] == "gpu"


# -- registration and transitions -------------------------------------------------------------------


def test_register_worker_writes_intent_row_and_refuses_duplicates(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    row = db.register_worker(token, "gpu-1", "NVIDIA GeForce RTX 4090", {"gpu_type": "4090"})
    assert row["id"] == "gpu-1" and row["status"] == "spawning" and row["metadata"] == {"gpu_type": "4090"}
    assert row["status_changed_at"] is not None and row["activated_at"] is None
    before = state(raw)
    with pytest.raises(errors.Conflict, match='worker "gpu-1" already exists'):
        db.register_worker(token, "gpu-1", "other", {})
    assert state(raw) == before
    assert db.events(worker_id="gpu-1")[0]["kind"] == "worker_registered"


def _edges(raw: psycopg.Connection[Any]) -> set[tuple[str, str]]:
    rows = raw.execute("select from_status, to_status from orchestrator_worker_transitions").fetchall()
    return {(r["from_status"], r["to_status"]) for r in rows}


STATES = [s.value for s in WorkerState]
EDGES = {(a.value, b.value) for a, b in TRANSITIONS}


def _documented_edges() -> set[tuple[str, str]]:
    """The edges of docs/database.md's table (a cell other than a dash is an edge)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "database.md").read_text()
    section = text.split("## Worker states and the transition table", 1)[1].lstrip("\n")
    rows: list[str] = []
    for line in section.splitlines():
        if not line.startswith("|"):
            break  # the first table of the section ends here
        rows.append(line)
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    edges: set[tuple[str, str]] = set()
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for to, cell in zip(header[1:], cells[1:], strict=False):
            if cell and cell != "—" and not cell.startswith("("):
                edges.add((cells[0], to))
    return edges


def test_transition_table_is_the_one_the_code_and_the_documentation_use(raw: psycopg.Connection[Any]) -> None:
    # The migration's rows are the authority; core.states.TRANSITIONS (which the simulator's database
    # enforces) must equal them edge for edge and meaning for meaning, and docs/database.md's table too.
    rows = raw.execute(
        "select from_status, to_status, meaning from orchestrator_worker_transitions"
    ).fetchall()
    assert {(r["from_status"], r["to_status"]): r["meaning"] for r in rows} == {
        (a.value, b.value): meaning for (a, b), meaning in TRANSITIONS.items()
    }
    assert _edges(raw) == EDGES == _documented_edges()


def test_every_pair_of_states_is_allowed_or_refused_per_table(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    for source in STATES:
        for target in STATES:
            if source == target:
                continue
            wid = f"w-{source}-{target}"
            add_worker(raw, wid, source, runpod_id="pod-1")
            if (source, target) in EDGES:
                row = db.transition_worker(token, wid, target, "test", {"note": target})
                assert row["status"] == target and row["metadata"]["note"] == target
                assert row["metadata"]["runpod_id"] == "pod-1"
            else:
                before = state(raw)
                with pytest.raises(errors.IllegalTransition) as info:
                    db.transition_worker(token, wid, target, "test", {"note": target})
                assert info.value.code == "OR002"
                assert f"{source} -> {target}" in info.value.message
                assert state(raw) == before


def test_transition_sets_timestamps_and_appends_event(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    db.register_worker(token, "w1", "x", {"runpod_id": "pod-9"})
    db.transition_worker(token, "w1", "initializing", "pod ready")
    row = db.transition_worker(token, "w1", "active", "first heartbeat")
    activated = row["activated_at"]
    assert activated is not None and row["status_changed_at"] is not None
    db.transition_worker(token, "w1", "draining", "idle")
    row = db.transition_worker(token, "w1", "active", "work came back")
    assert row["activated_at"] == activated  # set the first time only
    events = db.events(worker_id="w1")
    transitions = [
        (e["details"]["from"], e["details"]["to"], e["reason"]) for e in events if e["kind"] == "transition"
    ]
    assert transitions[0] == ("draining", "active", "work came back")
    assert len(transitions) == 4 and events[0]["runpod_id"] == "pod-9"


def test_transition_to_current_state_is_a_no_op(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    add_worker(raw, "w1", "error")
    before = state(raw)
    assert db.transition_worker(token, "w1", "error", "again", {"x": 1})["status"] == "error"
    assert state(raw) == before


@pytest.mark.parametrize("legacy", ["inactive", "crashed"])
def test_a_legacy_state_can_only_be_retired(
    db: Database, raw: psycopg.Connection[Any], token: int, legacy: str
) -> None:
    raw.execute("insert into workers (id, status) values ('old-1', %s), ('old-2', %s)", (legacy, legacy))
    before = state(raw)
    with pytest.raises(errors.IllegalTransition, match=r"allowed from .*: error, terminated"):
        db.transition_worker(token, "old-1", "active", "adopt")
    assert state(raw) == before
    assert db.transition_worker(token, "old-1", "error", "legacy row")["status"] == "error"
    assert db.transition_worker(token, "old-2", "terminated", "no pod")["status"] == "terminated"


def test_merge_metadata_is_top_level(db: Database, token: int) -> None:
    db.register_worker(token, "w1", "x", {"a": 1, "ssh_details": {"ip": "1.2.3.4", "port": 22}})
    row = db.merge_worker_metadata(token, "w1", {"ssh_details": {"ip": "5.6.7.8", "port": 2222}, "b": 2})
    assert row["metadata"] == {"a": 1, "b": 2, "ssh_details": {"ip": "5.6.7.8", "port": 2222}}


# -- heartbeat (the real worker's RPC) --------------------------------------------------------------


@pytest.mark.parametrize("status", ["terminating", "error", "terminated"])
def test_heartbeat_cannot_revive(
    raw: psycopg.Connection[Any], real_worker: RealWorkerSQL, status: str
) -> None:
    add_worker(raw, "w1", status, process_started_at="2026-01-01T00:00:00Z")
    answer = real_worker.heartbeat("w1", 24000, 1000)
    assert answer["success"] is True and answer["heartbeat_updated"] is True
    row = worker_row(raw, "w1")
    assert row["status"] == status and row["reported_status"] is None
    # A terminated row is history: a late beat does not make it look alive.
    assert (row["last_heartbeat"] is None) == (status == "terminated")


def test_heartbeat_of_a_draining_worker_is_recorded_but_never_undrains(
    raw: psycopg.Connection[Any], real_worker: RealWorkerSQL
) -> None:
    # A draining worker may be finishing a task it claimed; its heartbeat is evidence it lives.
    add_worker(raw, "w1", "draining", process_started_at="2026-01-01T00:00:00Z")
    add_tasks(raw, 1)
    before = state(raw)
    real_worker.heartbeat("w1", 24000, 1000)
    row = worker_row(raw, "w1")
    assert row["status"] == "draining" and row["last_heartbeat"] is not None
    assert row["metadata"]["vram_used_mb"] == 1000
    before = state(raw)
    with pytest.raises(psycopg.Error) as info:
        real_worker.claim("w1")
    assert info.value.sqlstate == "OR004"
    assert state(raw) == before


@pytest.mark.parametrize("report", ["error", "crashed", "terminated"])
def test_a_worker_that_reported_its_own_failure_claims_nothing_more(
    db: Database, raw: psycopg.Connection[Any], real_worker: RealWorkerSQL, token: int, report: str
) -> None:
    """reigh-worker 22cbba9's fatal-error handler marks the row `error` and the process polls on: every
    task it took on the broken GPU would fail. Its claims are refused until the orchestrator ends it; a
    report from before the worker's last state change (a resumed pod's previous process; here a drain
    and a reactivation stand for it) is history. The same holds for a report that lands between a tick's
    snapshot and its promotion of the worker: claims go on until the next tick fails it."""
    add_worker(raw, "w1", "active", process_started_at="2026-01-01T00:00:00Z")
    [task_id] = add_tasks(raw, 1)
    if report == "error":
        raw.execute("UPDATE public.workers SET status = 'error' WHERE id = 'w1'")  # the handler's PATCH
    else:
        real_worker.heartbeat("w1", status=report)
    assert worker_row(raw, "w1")["status"] == "active" and worker_row(raw, "w1")["reported_status"] == report
    before = state(raw)
    with pytest.raises(psycopg.Error) as info:
        real_worker.claim("w1")
    assert info.value.sqlstate == "OR004" and f"reported {report}" in str(info.value)
    assert state(raw) == before and task_row(raw, task_id)["status"] == "Queued"
    # The same report, older than the worker's last state change, holds nothing back.
    db.transition_worker(token, "w1", "draining", "idle_timeout")
    db.transition_worker(token, "w1", "active", "work_came_back")
    assert real_worker.claim("w1") is not None
    assert task_row(raw, task_id)["status"] == "In Progress"


def test_heartbeat_records_vram_and_never_promotes(
    db: Database, raw: psycopg.Connection[Any], real_worker: RealWorkerSQL, token: int
) -> None:
    add_worker(raw, "w1", "initializing", process_started_at="2026-11-29T00:00:00Z")
    real_worker.heartbeat("w1", 24564, 1200)
    row = worker_row(raw, "w1")
    assert row["status"] == "initializing" and row["last_heartbeat"] is not None
    assert row["metadata"]["vram_total_mb"] == 24564 and row["metadata"]["vram_used_mb"] == 1200
    assert "vram_timestamp" in row["metadata"] and row["activated_at"] is None
    # Promotion is the policy's, from the heartbeat it observes: the executor's transition.
    row = db.transition_worker(token, "w1", "active", "first_heartbeat")
    assert (
        row["status"] == "active" and row["activated_at"] is not None and row["boot_outcome"] == "activated"
    )
    real_worker.heartbeat("w1")  # no figures: the app's RPC keeps the last ones
    assert worker_row(raw, "w1")["metadata"]["vram_used_mb"] == 1200
    assert any(e["reason"] == "first_heartbeat" for e in db.events(worker_id="w1"))


@pytest.mark.parametrize("completed", [False, True])
def test_a_worker_that_fails_before_completing_a_task_is_a_failed_boot(
    db: Database, raw: psycopg.Connection[Any], real_worker: RealWorkerSQL, token: int, completed: bool
) -> None:
    """The guardian's first beat activates a worker before it has loaded anything: one that dies on its
    first work was `activated`, the breaker's success. Failed before a single completion, its boot outcome
    becomes the failure; one that completed a task keeps `activated`."""
    add_worker(raw, "w1", "initializing", process_started_at="2026-11-29T00:00:00Z", gpu_type="RTX 4090")
    db.transition_worker(token, "w1", "active", "first_heartbeat")
    if completed:
        add_tasks(raw, 1)
        task = real_worker.claim("w1")
        assert task is not None and real_worker.complete(task["task_id"], "https://x/out.mp4") == 1
    activated = worker_row(raw, "w1")["boot_outcome_at"]
    row = db.transition_worker(token, "w1", "error", "worker_crashed")
    [boot] = [b for b in db.snapshot()["recent_boots"] if b["worker_id"] == "w1"]
    failed = [e for e in db.events(worker_id="w1") if e["kind"] == "failed_before_serving"]
    if completed:
        assert row["boot_outcome"] == "activated" and boot["ok"] is True and not failed
    else:
        assert row["boot_outcome"] == "worker_crashed"
        assert worker_row(raw, "w1")["boot_outcome_at"] > activated
        assert boot["ok"] is False and boot["reason"] == "worker_crashed"
        assert [e["reason"] for e in failed] == ["worker_crashed"]
        assert failed[0]["details"]["gpu_type"] == "RTX 4090"
    # Once rewritten it stays: closing the row changes nothing.
    db.transition_worker(token, "w1", "terminated", "provider_confirmed_gone")
    assert worker_row(raw, "w1")["boot_outcome"] == row["boot_outcome"]


@pytest.mark.parametrize("held", [None, "generate", "travel_orchestrator"])
@pytest.mark.parametrize(
    "reason", ["pod_failed", "heartbeat_stale", "pod_missing", "task_stuck", "worker_crashed", "worker_error"]
)
def test_a_worker_past_its_probation_keeps_its_activation_unless_its_process_died_in_a_task(
    db: Database,
    raw: psycopg.Connection[Any],
    real_worker: RealWorkerSQL,
    token: int,
    reason: str,
    held: str | None,
) -> None:
    """Alive past the policy's probation (600 s), a worker lost with its host, failed for a stuck task,
    or whose process died idle (a floor worker's slow leak hours later) is no failed boot. One whose own
    process died holding a task before it completed any is, whatever its age: an image may fail only
    well into its first task (a model loaded on first use that does not fit, a decode that runs out of
    memory), and each such death bought a new pod. The guard sees the task of a process that reports its
    crash, before the app's crash recovery requeues it. A parent waiting on its children is no such
    task."""
    in_task = held == "generate"
    add_worker(raw, "w1", "initializing", process_started_at="2026-11-29T00:00:00Z")
    db.transition_worker(token, "w1", "active", "first_heartbeat")
    raw.execute("ALTER TABLE public.workers DISABLE TRIGGER USER")
    raw.execute("UPDATE public.workers SET activated_at = now() - interval '2 hours' WHERE id = 'w1'")
    raw.execute("ALTER TABLE public.workers ENABLE TRIGGER USER")
    if held is not None:
        add_tasks(raw, 1, task_type=held)
        assert real_worker.claim("w1") is not None
    if reason == "worker_crashed":
        real_worker.heartbeat("w1", status="crashed")  # requeues the task, as the app's does
        real_worker.heartbeat("w1", status="crashed")  # a repeated report keeps the first one's answer
        assert not any(r["status"] == "In Progress" for r in raw.execute("SELECT status FROM public.tasks"))
    elif reason == "worker_error":
        raw.execute("UPDATE public.workers SET status = 'error' WHERE id = 'w1'")  # the fatal-error PATCH
        assert worker_row(raw, "w1")["reported_details"] == ({"in_task": True} if in_task else None)
        raw.execute(  # its own word on the task it ran; a parent stays, waiting
            "UPDATE public.tasks SET status = 'Failed' WHERE status = 'In Progress' AND task_type = 'generate'"
        )
    row = db.transition_worker(token, "w1", "error", reason)
    failed = [e for e in db.events(worker_id="w1") if e["kind"] == "failed_before_serving"]
    [boot] = [b for b in db.snapshot()["recent_boots"] if b["worker_id"] == "w1"]
    if in_task and reason in ("worker_crashed", "worker_error"):
        assert row["boot_outcome"] == reason and boot["ok"] is False and boot["reason"] == reason
        assert [e["reason"] for e in failed] == [reason] and failed[0]["details"]["in_task"] is True
    else:
        assert row["boot_outcome"] == "activated" and not failed and boot["ok"] is True


def test_heartbeat_of_spawning_worker_is_recorded_without_promotion(
    raw: psycopg.Connection[Any], real_worker: RealWorkerSQL
) -> None:
    add_worker(raw, "w1", "spawning", process_started_at="2026-01-01T00:00:00Z")
    real_worker.heartbeat("w1", 1, 1)
    row = worker_row(raw, "w1")
    assert row["status"] == "spawning" and row["last_heartbeat"] is not None


# -- claim, complete, fail (the app's SQL) ----------------------------------------------------------


@pytest.mark.parametrize("status", ["spawning", "draining", "terminating", "error", "terminated"])
def test_claim_only_in_claiming_states(
    raw: psycopg.Connection[Any], real_worker: RealWorkerSQL, status: str
) -> None:
    add_worker(raw, "w1", status)
    add_tasks(raw, 3)
    before = state(raw)
    with pytest.raises(psycopg.Error) as info:
        real_worker.claim("w1")
    assert info.value.sqlstate == "OR004" and status in str(info.value)
    assert state(raw) == before


def test_the_snapshot_counts_a_chain_of_children_as_one_claimable_task(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    # A Reigh travel orchestrator creates all its segments at once, each dependant_on the one before;
    # the claim takes only the first. Counted as claimable, the rest made the policy spawn pods no
    # worker could use.
    chain = add_tasks(raw, 3, task_type="travel_segment", age_sec=300)
    for before, after in itertools.pairwise(chain):
        raw.execute("update tasks set dependant_on = array[%s::uuid] where id = %s", (before, after))
    add_tasks(raw, 1, task_type="generate", age_sec=60)
    # A dependency already Complete holds nothing back.
    done = add_tasks(raw, 1, task_type="generate", status="Complete", age_sec=900)
    single = add_tasks(raw, 1, task_type="generate", age_sec=30)
    raw.execute("update tasks set dependant_on = array[%s::uuid] where id = %s", (done[0], single[0]))

    queue = db.snapshot()["queue"]
    assert queue["claimable"] == 3 and queue["queued_total"] == 5
    assert queue["claimable_by_type"] == [
        {"task_type": "generate", "count": 2},
        {"task_type": "travel_segment", "count": 1},
    ]
    assert 299 <= queue["oldest_claimable_age_sec"] < 400  # the chain's head
    # The head done, the next segment is claimable, and so on down the chain.
    raw.execute("update tasks set status = 'Complete' where id = %s", (chain[0],))
    queue = db.snapshot()["queue"]
    assert queue["claimable"] == 3 and queue["queued_total"] == 4
    raw.execute("update tasks set status = 'Failed' where id = %s", (chain[1],))
    queue = db.snapshot()["queue"]
    # A failed dependency never completes: its follower stays out of the count (the app cascades it).
    assert queue["claimable"] == 2 and queue["claimable_by_type"] == [{"task_type": "generate", "count": 2}]
    assert queue["queued_total"] == 3
    # An operator's view that names the types its own way: the waiting task leaves its bucket, not the
    # table's (a dependency that names no task at all never completes either).
    raw.execute("update tasks set dependant_on = array[gen_random_uuid()] where id = %s", (single[0],))
    raw.execute(
        "create or replace view orchestrator_claimable_tasks as select t.id, 'gpu'::text as task_type,"
        " t.created_at from tasks t where t.status = 'Queued'"
    )
    queue = db.snapshot()["queue"]
    assert queue["claimable"] == 1 and queue["claimable_by_type"] == [{"task_type": "gpu", "count": 1}]
    assert queue["queued_total"] == 3


def test_a_chain_of_children_arrives_one_segment_at_a_time(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    # A travel orchestrator creates its ten segments at once. Counted at creation, they read as ten
    # arrivals in a minute, and the wait target's rate estimate asked for pods the chain never needs: a
    # segment arrives when it becomes claimable, when the one before it completes.
    def arrivals() -> tuple[int, int]:
        a = db.snapshot()["arrivals"]
        return a[0]["count"], a[1]["count"]

    chain = add_tasks(raw, 10, task_type="travel_segment", age_sec=30)
    for before, after in itertools.pairwise(chain):
        raw.execute("update tasks set dependant_on = array[%s::uuid] where id = %s", (before, after))
    raw.execute("update tasks set dependant_on = '{}' where id = %s", (chain[0],))  # none: at creation
    assert arrivals() == (1, 1)

    def run(task_id: str, started_ago: float, done_ago: float | None) -> None:
        raw.execute(
            "update tasks set status = %s, generation_started_at = now() - make_interval(secs => %s),"
            " generation_processed_at = now() - make_interval(secs => %s) where id = %s",
            ("Complete" if done_ago is not None else "In Progress", started_ago, done_ago, task_id),
        )

    # The head ran and completed 20 s ago: the second segment arrived then, and is claimable.
    run(chain[0], 28, 20)
    assert arrivals() == (2, 2) and db.snapshot()["queue"]["claimable"] == 1
    # It has waited 20 s for a worker, not the 30 s since its chain was created.
    assert 20 <= db.snapshot()["queue"]["oldest_claimable_age_sec"] < 28
    # The second is running: still two arrivals; none of the eight still waiting has arrived.
    run(chain[1], 19, None)
    assert arrivals() == (2, 2)
    # A segment whose predecessor completed 20 minutes ago arrived then: in the hour, not the 10 minutes.
    later = add_tasks(raw, 2, task_type="travel_segment", age_sec=4000)  # created before the hour
    raw.execute("update tasks set dependant_on = array[%s::uuid] where id = %s", (later[0], later[1]))
    raw.execute("update tasks set dependant_on = null where id = %s", (later[0],))
    run(later[0], 1500, 1200)
    assert arrivals() == (2, 3)
    # Once it started, it is read from the started-within-the-hour side; a pair from hours ago is not
    # an arrival of this hour, whatever its state.
    run(later[1], 1100, None)
    assert arrivals() == (2, 3)
    old = add_tasks(raw, 2, task_type="travel_segment", age_sec=4 * 3600)
    raw.execute("update tasks set dependant_on = array[%s::uuid] where id = %s", (old[0], old[1]))
    run(old[0], 3.5 * 3600, 3 * 3600)
    assert arrivals() == (2, 3)
    run(old[1], 2.9 * 3600, 2.8 * 3600)
    assert arrivals() == (2, 3)


def test_claim_takes_oldest_and_respects_the_view_and_dependencies(
    db: Database, raw: psycopg.Connection[Any], real_worker: RealWorkerSQL
) -> None:
    add_worker(raw, "w1", "active")
    add_worker(raw, "w2", "initializing")
    old = add_tasks(raw, 1, task_type="a", age_sec=100)
    newer = add_tasks(raw, 1, task_type="b", age_sec=10)
    blocked = add_tasks(raw, 1, task_type="blocked", age_sec=1000)
    waiting = add_tasks(raw, 1, task_type="c", age_sec=500)
    raw.execute("update tasks set dependant_on = array[%s::uuid] where id = %s", (newer[0], waiting[0]))

    # An operator's rule: tasks of type 'blocked' are not claimable now.
    raw.execute(
        "create or replace view orchestrator_claimable_tasks as "
        "select t.id, t.task_type, t.created_at from tasks t where t.status = 'Queued' and t.task_type <> 'blocked'"
    )
    snap = db.snapshot()
    # 'waiting' waits for 'newer' (the dependency rule), 'blocked' for the operator's rule.
    assert snap["queue"]["claimable"] == 2 and snap["queue"]["queued_total"] == 4

    task = real_worker.claim("w1")
    assert task is not None and task["task_id"] == old[0] and task["task_type"] == "a"
    row = task_row(raw, old[0])
    assert (
        row["status"] == "In Progress"
        and row["worker_id"] == "w1"
        and row["generation_started_at"] is not None
    )
    task = real_worker.claim("w2")  # `waiting` is older but waits for `newer`
    assert task is not None and task["task_id"] == newer[0]
    assert real_worker.claim("w1") is None
    assert real_worker.complete(newer[0]) == 1
    task = real_worker.claim("w1")
    assert task is not None and task["task_id"] == waiting[0]
    assert task_row(raw, blocked[0])["status"] == "Queued"


def test_an_unknown_worker_cannot_claim(raw: psycopg.Connection[Any], real_worker: RealWorkerSQL) -> None:
    add_tasks(raw, 1)
    before = state(raw)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        real_worker.claim("nobody")
    assert state(raw) == before


def test_complete_is_guarded_by_in_progress(raw: psycopg.Connection[Any], real_worker: RealWorkerSQL) -> None:
    add_worker(raw, "w1", "active")
    add_tasks(raw, 1)
    task = real_worker.claim("w1")
    assert task is not None
    assert real_worker.complete(task["task_id"], "https://x/out.mp4") == 1
    row = task_row(raw, task["task_id"])
    assert row["status"] == "Complete" and row["output_location"] == "https://x/out.mp4"
    assert row["generation_processed_at"] is not None and row["attempts"] == 0
    before = state(raw)
    assert real_worker.complete(task["task_id"]) == 0  # a replay changes nothing
    assert state(raw) == before


def test_failures_through_the_app_count_attempts_and_dead_letter(
    raw: psycopg.Connection[Any], real_worker: RealWorkerSQL
) -> None:
    """update-task-status never raises attempts (and a worker may send a lower number): the trigger does."""
    add_worker(raw, "w1", "active")
    (task_id,) = add_tasks(raw, 1)
    for attempt in (1, 2):
        assert real_worker.claim("w1")["task_id"] == task_id  # type: ignore[index]
        row = real_worker.set_status(
            task_id, "Queued", error_details="CUDA out of memory", attempts=1, clear_worker=True
        )
        assert (row["status"], row["attempts"], row["worker_id"]) == ("Queued", attempt, None)
        assert row["error_message"] == "CUDA out of memory"
    assert real_worker.claim("w1")["task_id"] == task_id  # type: ignore[index]
    row = real_worker.set_status(task_id, "Queued", error_details="CUDA out of memory", clear_worker=True)
    assert (row["status"], row["attempts"]) == ("Failed", 3)
    assert row["error_message"] == "dead-lettered: attempt 3 of 3 ended: CUDA out of memory"
    assert real_worker.claim("w1") is None


def test_a_failure_report_counts_one_attempt(
    raw: psycopg.Connection[Any], real_worker: RealWorkerSQL
) -> None:
    add_worker(raw, "w1", "active")
    (task_id,) = add_tasks(raw, 1)
    real_worker.claim("w1")
    row = real_worker.set_status(task_id, "Failed", output_location="boom")
    assert (row["status"], row["attempts"], row["output_location"]) == ("Failed", 1, "boom")
    (other,) = add_tasks(raw, 1)
    raw.execute("update tasks set status = 'Cancelled' where id = %s", (other,))
    assert task_row(raw, other)["attempts"] == 0  # only an attempt that ran is counted


def test_the_attempt_limit_is_the_daemons(
    db: Database, raw: psycopg.Connection[Any], real_worker: RealWorkerSQL, token: int
) -> None:
    add_worker(raw, "w1", "active")
    (task_id,) = add_tasks(raw, 1)
    assert db.set_task_attempt_limit(token, 1) == 1
    real_worker.claim("w1")
    row = real_worker.set_status(task_id, "Queued", clear_worker=True)
    assert (row["status"], row["attempts"]) == ("Failed", 1)
    with pytest.raises(errors.InvalidArgument):
        db.set_task_attempt_limit(token, 0)
    with pytest.raises(errors.LeaseLost):
        db.set_task_attempt_limit(token + 1, 5)
    db.requeue_worker_tasks(token, "w1", "r", max_attempts=4)  # the requeue keeps it in step
    assert one(raw, "select max_task_attempts from orchestrator_control")["max_task_attempts"] == 4


# -- requeue ----------------------------------------------------------------------------------------


def test_requeue_always_increments_and_dead_letters_at_the_limit(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    add_worker(raw, "w1", "error")
    add_worker(raw, "w2", "active")
    fresh = add_tasks(raw, 2, status="In Progress", worker_id="w1", attempts=0)
    poison = add_tasks(raw, 1, status="In Progress", worker_id="w1", attempts=2)
    other = add_tasks(raw, 1, status="In Progress", worker_id="w2", attempts=0)
    done = add_tasks(raw, 1, status="Complete", worker_id="w1", attempts=0)

    result = db.requeue_worker_tasks(token, "w1", "heartbeat stale", max_attempts=3)
    assert sorted(result["requeued"]) == sorted(fresh) and result["failed"] == poison
    for tid in fresh:
        row = task_row(raw, tid)
        assert (row["status"], row["attempts"], row["worker_id"]) == ("Queued", 1, None)
        # No generation_* write: the app's timing trigger refuses them to a direct connection, and the
        # next claim sets generation_started_at anew.
        assert row["generation_started_at"] is not None
    row = task_row(raw, poison[0])
    assert (row["status"], row["attempts"]) == ("Failed", 3)
    assert "dead-lettered" in row["error_message"] and "heartbeat stale" in row["error_message"]
    assert task_row(raw, other[0])["status"] == "In Progress"
    assert task_row(raw, done[0])["status"] == "Complete"
    assert db.requeue_worker_tasks(token, "w1", "again") == {"requeued": [], "failed": []}
    assert db.events(worker_id="w1")[0]["kind"] == "tasks_requeued"


def test_stranded_tasks_are_requeued_only_while_the_worker_holds_a_newer_one(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    """A task claimed for a worker whose answer it never got stays In Progress under it while it runs the
    next (reigh-worker 22cbba9 does not read its own tasks back). Only such tasks go back, an attempt
    counted: not the one it runs, not a parent waiting on its children, not an id it was not asked for."""
    add_worker(raw, "w1", "active")
    [lost] = add_tasks(raw, 1, status="In Progress", worker_id="w1", age_sec=300)
    [also_lost] = add_tasks(raw, 1, status="In Progress", worker_id="w1", age_sec=200, attempts=2)
    [not_asked] = add_tasks(raw, 1, status="In Progress", worker_id="w1", age_sec=250)
    [parent] = add_tasks(
        raw, 1, status="In Progress", worker_id="w1", age_sec=900, task_type="travel_orchestrator"
    )
    [running] = add_tasks(raw, 1, status="In Progress", worker_id="w1", age_sec=10)
    asked = [lost, also_lost, parent, running]
    result = db.requeue_stranded_tasks(token, "w1", asked, "task_not_run", max_attempts=3)
    assert result == {"requeued": [lost], "failed": [also_lost]}
    assert (task_row(raw, lost)["status"], task_row(raw, lost)["attempts"]) == ("Queued", 1)
    assert task_row(raw, lost)["worker_id"] is None
    assert (
        task_row(raw, also_lost)["status"] == "Failed"
        and "dead-lettered" in task_row(raw, also_lost)["error_message"]
    )
    for kept in (not_asked, parent, running):
        assert task_row(raw, kept)["status"] == "In Progress"
    # Checked at the time of the call: once the newer task has ended, none is stranded any more.
    raw.execute("UPDATE public.tasks SET status = 'Complete' WHERE id = %s", (running,))
    raw.execute("UPDATE public.tasks SET status = 'Complete' WHERE id = %s", (not_asked,))
    [alone] = add_tasks(raw, 1, status="In Progress", worker_id="w1", age_sec=400)
    assert db.requeue_stranded_tasks(token, "w1", [alone], "task_not_run") == {"requeued": [], "failed": []}
    [event] = [e for e in db.events(worker_id="w1") if e["kind"] == "tasks_requeued"]
    assert event["details"]["stranded"] is True
    # Fenced, as every write: a stale leader's call changes nothing.
    with pytest.raises(errors.LeaseLost):
        db.requeue_stranded_tasks(token + 1, "w1", [alone], "task_not_run")


def test_a_dead_lettered_child_fails_its_parent_and_siblings_as_the_app_does(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    # The app fails a child's parent and the parent's other unfinished tasks when the child fails for
    # good (its cascade_task_failure). Dead-lettered by the orchestrator without it, the chain's later
    # segments waited for ever, and the parent with them.
    add_worker(raw, "holder", "active")
    add_worker(raw, "w2", "error")
    [parent] = add_tasks(raw, 1, status="In Progress", worker_id="holder", task_type="travel_orchestrator")
    first = add_tasks(raw, 1, status="In Progress", worker_id="w2", task_type="travel_segment", attempts=2)
    rest = add_tasks(raw, 2, task_type="travel_segment")
    done = add_tasks(raw, 1, status="Complete", task_type="travel_segment")
    for tid in (*first, *done):
        raw.execute(
            "update tasks set params = jsonb_build_object('orchestrator_task_id_ref', %s::text) where id = %s",
            (parent, tid),
        )
    # The other paths the app reads name a parent too.
    raw.execute(
        "update tasks set params = jsonb_build_object('orchestrator_details',"
        " jsonb_build_object('orchestrator_task_id', %s::text)) where id = %s",
        (parent, rest[0]),
    )
    raw.execute(
        "update tasks set params = jsonb_build_object('orchestration_contract',"
        " jsonb_build_object('orchestrator_task_id', %s::text)) where id = %s",
        (parent, rest[1]),
    )
    stranger = add_tasks(raw, 1, task_type="travel_segment")
    raw.execute(
        'update tasks set params = \'{"orchestrator_task_id_ref": "not-a-uuid"}\' where id = %s',
        (stranger[0],),
    )

    result = db.requeue_worker_tasks(token, "w2", "heartbeat stale", max_attempts=3)
    assert result == {"requeued": [], "failed": first}  # the result is unchanged
    assert task_row(raw, first[0])["status"] == "Failed"
    for tid in (parent, *rest):
        row = task_row(raw, tid)
        assert (
            row["status"] == "Failed"
            and row["error_message"] == f"Cascaded failed from related task {first[0]}"
        )
    assert task_row(raw, parent)["worker_id"] == "holder"
    assert task_row(raw, done[0])["status"] == "Complete" and task_row(raw, stranger[0])["status"] == "Queued"
    event = db.events(worker_id="w2")[0]
    assert event["kind"] == "tasks_requeued" and sorted(event["details"]["cascaded"]) == sorted(
        [parent, *rest]
    )
    # The holder holds nothing now: the daemon may let it go.
    assert db.snapshot()["queue"]["running"] == 0


def test_a_segment_the_guard_dead_letters_fails_its_chain_and_frees_the_holder(
    db: Database, raw: psycopg.Connection[Any], real_worker: RealWorkerSQL
) -> None:
    """The real worker's requeue for retry (update-task-status, status Queued) at the attempt limit is
    made Failed by the tasks guard. The app cascades only failures it writes itself, so nobody cascaded
    this one: the later segments waited on it for ever, and the parent stayed In Progress with them."""
    add_worker(raw, "holder", "active")
    add_worker(raw, "w2", "active")
    [parent] = add_tasks(raw, 1, status="In Progress", worker_id="holder", task_type="travel_orchestrator")
    first = add_tasks(raw, 1, task_type="travel_segment", attempts=2)
    rest = add_tasks(raw, 2, task_type="travel_segment")
    raw.execute(
        "update tasks set params = jsonb_build_object('orchestrator_task_id_ref', %s::text)"
        " where id = any(%s::uuid[])",
        (parent, [*first, *rest]),
    )
    # A chain, as the travel orchestrator creates it: each segment waits on the one before, so the
    # first is the one claimable (the tasks' creation times alone can be a microsecond apart).
    for before, after in itertools.pairwise([*first, *rest]):
        raw.execute("update tasks set dependant_on = array[%s::uuid] where id = %s", (before, after))
    assert real_worker.claim("w2")["task_id"] == first[0]  # type: ignore[index]
    row = real_worker.set_status(first[0], "Queued", error_details="CUDA out of memory", clear_worker=True)
    assert (row["status"], row["attempts"]) == ("Failed", 3)
    assert row["error_message"] == "dead-lettered: attempt 3 of 3 ended: CUDA out of memory"
    for tid in (parent, *rest):
        row = task_row(raw, tid)
        assert (row["status"], row["error_message"]) == (
            "Failed",
            f"Cascaded failed from related task {first[0]}",
        )
    event = db.events(worker_id="w2")[0]
    assert event["kind"] == "task_dead_lettered"
    assert event["details"]["task_id"] == first[0] and sorted(event["details"]["cascaded"]) == sorted(
        [parent, *rest]
    )
    # The holder holds nothing now: the daemon may let it go.
    assert db.snapshot()["queue"]["running"] == 0


def test_a_failure_the_app_writes_itself_is_left_to_the_app(
    raw: psycopg.Connection[Any], real_worker: RealWorkerSQL
) -> None:
    # update-task-status with Failed: the Edge Function cascades it itself; the trigger stays out.
    add_worker(raw, "holder", "active")
    add_worker(raw, "w2", "active")
    [parent] = add_tasks(raw, 1, status="In Progress", worker_id="holder", task_type="travel_orchestrator")
    [seg] = add_tasks(raw, 1, task_type="travel_segment", attempts=2)
    raw.execute(
        "update tasks set params = jsonb_build_object('orchestrator_task_id_ref', %s::text) where id = %s",
        (parent, seg),
    )
    assert real_worker.claim("w2")["task_id"] == seg  # type: ignore[index]
    assert real_worker.set_status(seg, "Failed", error_details="boom")["status"] == "Failed"
    assert task_row(raw, parent)["status"] == "In Progress"


def test_a_dead_lettered_parent_fails_its_unfinished_children(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    add_worker(raw, "w1", "error")
    [parent] = add_tasks(
        raw, 1, status="In Progress", worker_id="w1", task_type="travel_orchestrator", attempts=2
    )
    kids = add_tasks(raw, 2, task_type="travel_segment")
    raw.execute(
        "update tasks set params = jsonb_build_object('orchestrator_task_id_ref', %s::text) where id = any(%s::uuid[])",
        (parent, kids),
    )
    assert db.requeue_worker_tasks(token, "w1", "stale", max_attempts=3)["failed"] == [parent]
    assert {task_row(raw, k)["status"] for k in kids} == {"Failed"}


def test_tasks_of_a_deleted_worker_row_go_back_to_the_queue(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    """The foreign key's ON DELETE SET NULL would leave them In Progress with no worker, for ever."""
    add_worker(raw, "ghost", "active")
    lost = add_tasks(raw, 1, status="In Progress", worker_id="ghost")
    probe = db.queue_probe()
    raw.execute("delete from workers where id = 'ghost'")
    row = task_row(raw, lost[0])
    assert (row["status"], row["worker_id"], row["attempts"]) == ("Queued", None, 1)
    assert "ghost" in row["error_message"]
    assert db.queue_probe()["requeues"] == probe["requeues"] + 1
    with pytest.raises(errors.NotFound):
        db.requeue_worker_tasks(token, "ghost", "orphaned")


def test_requeue_rescues_tasks_a_not_valid_foreign_key_let_through(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    """Old rows may name a worker that no longer exists (the key is then added NOT VALID)."""
    raw.execute("alter table tasks drop constraint tasks_worker_id_fkey")
    lost = add_tasks(raw, 1, status="In Progress", worker_id="ghost")
    raw.execute(
        "alter table tasks add constraint tasks_worker_id_fkey foreign key (worker_id) references workers (id)"
        " on delete set null not valid"
    )
    assert db.snapshot()["queue"]["orphaned_worker_ids"] == ["ghost"]
    assert db.requeue_worker_tasks(token, "ghost", "orphaned")["requeued"] == lost
    with pytest.raises(errors.NotFound):
        db.requeue_worker_tasks(token, "ghost", "orphaned")


# -- snapshot ---------------------------------------------------------------------------------------


def test_snapshot_derived_fields(db: Database, raw: psycopg.Connection[Any], token: int) -> None:
    add_worker(raw, "gpu-a", "active", runpod_id="pod-a")
    add_worker(raw, "gpu-b", "spawning")
    add_worker(raw, "gpu-gone", "terminated")
    add_worker(raw, "other-c", "active")
    raw.execute("update workers set last_heartbeat = now() - interval '7 seconds' where id = 'gpu-a'")
    running = add_tasks(raw, 2, status="In Progress", worker_id="gpu-a", age_sec=50)
    parent = add_tasks(
        raw, 1, status="In Progress", worker_id="gpu-a", task_type="travel_orchestrator", age_sec=500
    )
    raw.execute(
        "insert into tasks (task_type, status, worker_id, generation_processed_at) values "
        "('g', 'Complete', 'gpu-a', now() - interval '1 hour'), ('g', 'Complete', 'gpu-a', now() - interval '5 minutes')"
    )
    add_tasks(raw, 5, age_sec=30)
    db.set_paused(True, "alice", "budget")

    snap = db.snapshot()
    assert snap["paused"] is True and snap["pause_reason"] == "budget"
    assert snap["queue"]["claimable"] == 5 and snap["queue"]["queued_total"] == 5
    assert snap["queue"]["running"] == 3
    assert 30 <= snap["queue"]["oldest_claimable_age_sec"] < 60
    assert snap["leases"]["orchestrator"]["holder"] == "leader-1"
    workers = {w["id"]: w for w in snap["workers"]}
    assert set(workers) == {"gpu-a", "gpu-b", "other-c"}
    a = workers["gpu-a"]
    assert a["running_count"] == 3 and sorted(a["running_task_ids"]) == sorted(running + parent)
    assert a["running_task_ids"][0] == parent[0]  # oldest first
    assert a["oldest_running_started_at"] < a["oldest_stuckable_started_at"]
    assert 6 <= a["heartbeat_age_sec"] < 30 and a["metadata"]["runpod_id"] == "pod-a"
    since_completion = datetime.fromisoformat(snap["now"]) - datetime.fromisoformat(a["last_completion_at"])
    assert 299 <= since_completion.total_seconds() < 330  # the latest of the two completions
    b = workers["gpu-b"]
    assert b["running_count"] == 0 and b["running_task_ids"] == [] and b["last_completion_at"] is None
    assert b["heartbeat_age_sec"] is None
    for key in (
        "status",
        "instance_type",
        "created_at",
        "status_changed_at",
        "activated_at",
        "last_heartbeat",
    ):
        assert key in a

    assert {w["id"] for w in db.snapshot(prefix="gpu")["workers"]} == {"gpu-a", "gpu-b"}
    db.set_paused(False, "alice", None)
    assert db.snapshot()["paused"] is False


def test_snapshot_is_one_round_trip_whatever_the_fleet(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    transport = PostgresTransport(database_url, min_size=1, max_size=1)
    try:
        for size in (1, 50):
            raw.execute("delete from workers")
            for i in range(size):
                add_worker(raw, f"w{i}", "active")
            add_tasks(raw, 1, status="In Progress", worker_id="w0")
            transport.call("orch_snapshot", {"p_prefix": None})  # the pool's connection is up
            with transport.count_round_trips() as trips:
                for _ in range(5):
                    snap = transport.call("orch_snapshot", {"p_prefix": None})
            assert len(snap["workers"]) == size
            assert trips.count == 5
    finally:
        transport.close()


# -- operator side and events -----------------------------------------------------------------------


def test_pause_and_request_termination(db: Database, raw: psycopg.Connection[Any]) -> None:
    control = db.set_paused(True, "bob", "investigating")
    assert control["paused"] is True and control["paused_by"] == "bob"
    add_worker(raw, "w1", "active")
    row = db.request_termination("w1", "bob")
    assert row["metadata"]["terminate_requested_by"] == "bob"
    assert "terminate_requested_at" in row["metadata"] and row["status"] == "active"
    kinds = [e["kind"] for e in db.events()]
    assert kinds[:2] == ["termination_requested", "paused"]
    add_worker(raw, "w2", "terminated")
    with pytest.raises(errors.IllegalTransition):
        db.request_termination("w2", "bob")


def test_events_are_append_only(db: Database, raw: psycopg.Connection[Any], token: int) -> None:
    event_id = db.append_event(token, "pod_created", worker_id="w1", runpod_id="p1", reason="spawn",
                               details={"gpu": "4090"}, cost_usd=0.69)  # fmt: skip
    event = db.events(limit=1)[0]
    assert event["id"] == event_id and event["kind"] == "pod_created" and float(event["cost_usd"]) == 0.69
    assert event["details"] == {"gpu": "4090"} and event["at"] is not None
    for statement in ("update orchestrator_events set kind = 'x'", "delete from orchestrator_events",
                      "truncate orchestrator_events"):  # fmt: skip
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            raw.execute(statement)
    assert next(e["id"] for e in db.events(limit=100)) == event_id
    ids = [db.append_event(token, "tick") for _ in range(3)]
    assert [e["id"] for e in db.events(limit=2)] == ids[::-1][:2]


# -- bad input --------------------------------------------------------------------------------------

UNKNOWN_TASK = str(uuid.uuid4())

# (function, arguments without the lease, expected error, a word the message must contain)
BAD_INPUT: list[tuple[str, dict[str, Any], type[errors.DatabaseError], str]] = [
    ("orch_register_worker", {"p_worker_id": None, "p_instance_type": "x", "p_metadata": {}}, errors.InvalidArgument, "p_worker_id"),
    ("orch_register_worker", {"p_worker_id": "w9", "p_instance_type": "x", "p_metadata": "{oops"}, errors.InvalidArgument, "json"),
    ("orch_register_worker", {"p_worker_id": "w9", "p_instance_type": "x", "p_metadata": [1, 2]}, errors.InvalidArgument, "object"),
    ("orch_register_worker", {"p_worker_id": "w9", "p_instance_type": "x", "p_metadata": "42"}, errors.InvalidArgument, "object"),
    ("orch_transition_worker", {"p_worker_id": "nope", "p_to": "active", "p_reason": "r"}, errors.NotFound, "unknown worker"),
    ("orch_transition_worker", {"p_worker_id": "w1", "p_to": "flying", "p_reason": "r"}, errors.InvalidArgument, "unknown worker state"),
    ("orch_transition_worker", {"p_worker_id": "w1", "p_to": None, "p_reason": "r"}, errors.InvalidArgument, "p_to"),
    ("orch_transition_worker", {"p_worker_id": "w1", "p_to": "draining", "p_reason": "r", "p_metadata": "[]"}, errors.InvalidArgument, "object"),
    ("orch_merge_worker_metadata", {"p_worker_id": "w1", "p_metadata": None}, errors.InvalidArgument, "p_metadata"),
    ("orch_merge_worker_metadata", {"p_worker_id": "nope", "p_metadata": {}}, errors.NotFound, "unknown worker"),
    ("orch_requeue_worker_tasks", {"p_worker_id": "nope", "p_reason": "r"}, errors.NotFound, "unknown worker"),
    ("orch_release_parents", {"p_worker_id": "nope", "p_reason": "r"}, errors.NotFound, "unknown worker"),
    ("orch_requeue_worker_tasks", {"p_worker_id": "w1", "p_reason": "r", "p_max_attempts": -3}, errors.InvalidArgument, "p_max_attempts"),
    ("orch_append_event", {"p_kind": None}, errors.InvalidArgument, "p_kind"),
    ("orch_append_event", {"p_kind": "Bad Kind!"}, errors.InvalidArgument, "snake_case"),
    ("orch_append_event", {"p_kind": "ok", "p_cost_usd": "cheap"}, errors.InvalidArgument, "numeric"),
    ("orch_append_event", {"p_kind": "ok", "p_details": "{\"a\": "}, errors.InvalidArgument, "json"),
    ("orch_lease_acquire", {"p_holder": None, "p_ttl_sec": 10}, errors.InvalidArgument, "p_holder"),
    ("orch_lease_acquire", {"p_holder": "x", "p_ttl_sec": 0}, errors.InvalidArgument, "p_ttl_sec"),
    ("orch_lease_acquire", {"p_holder": "x", "p_ttl_sec": "soon"}, errors.InvalidArgument, "numeric"),
    ("orch_lease_renew", {"p_holder": "x", "p_token": None, "p_ttl_sec": 10}, errors.InvalidArgument, "p_token"),
    ("orch_lease_release", {"p_holder": "x", "p_token": "abc"}, errors.InvalidArgument, "bigint"),
    ("orch_set_paused", {"p_paused": None, "p_by": "x", "p_reason": None}, errors.InvalidArgument, "p_paused"),
    ("orch_set_paused", {"p_paused": "maybe", "p_by": "x", "p_reason": None}, errors.InvalidArgument, "boolean"),
    ("orch_request_termination", {"p_worker_id": "nope", "p_by": "x"}, errors.NotFound, "unknown worker"),
    ("orch_events", {"p_limit": 0}, errors.InvalidArgument, "p_limit"),
    ("orch_events", {"p_limit": None}, errors.InvalidArgument, "p_limit"),
    ("orch_set_task_attempt_limit", {"p_max_attempts": 0}, errors.InvalidArgument, "p_max_attempts"),
    ("orch_set_task_attempt_limit", {"p_max_attempts": None}, errors.InvalidArgument, "p_max_attempts"),
    ("orch_snapshot", {"p_no_such_argument": 1}, errors.InvalidArgument, "does not exist"),
    ("orch_no_such_function", {}, errors.InvalidArgument, "does not exist"),
]  # fmt: skip

FENCED = {"orch_register_worker", "orch_transition_worker", "orch_merge_worker_metadata",
          "orch_requeue_worker_tasks", "orch_append_event", "orch_set_task_attempt_limit",
          "orch_release_parents"}  # fmt: skip


@pytest.mark.parametrize(
    ("function", "args", "expected", "word"), BAD_INPUT, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_INPUT)]
)
def test_bad_input_gives_clear_error_and_writes_nothing(
    db: Database,
    raw: psycopg.Connection[Any],
    token: int,
    function: str,
    args: dict[str, Any],
    expected: type[errors.DatabaseError],
    word: str,
) -> None:
    add_worker(raw, "w1", "active")
    (task_id,) = add_tasks(raw, 1, status="In Progress", worker_id="w1")
    args = {k: (task_id if v == "@TASK" else v) for k, v in args.items()}
    if function in FENCED:
        args = {"p_token": token, **args}
    before = state(raw)
    with pytest.raises(expected) as info:
        db.transport.call(function, args)
    err = info.value
    assert err.function == function
    assert word.lower() in err.message.lower(), err.message
    assert state(raw) == before


def test_unsendable_python_value_is_refused_before_the_call(db: Database) -> None:
    with pytest.raises(errors.InvalidArgument, match="cannot send a object"):
        db.transport.call("orch_events", {"p_limit": object()})


# -- security ---------------------------------------------------------------------------------------

OUR_TABLES = ["orchestrator_lease", "orchestrator_events", "orchestrator_control",
              "orchestrator_worker_transitions", "orchestrator_schema_migrations"]  # fmt: skip
OUR_VIEWS = ["orchestrator_claimable_tasks", "orchestrator_fleet_status", "orchestrator_worker_health",
             "orchestrator_queue", "orchestrator_worker_spend", "orchestrator_spend",
             "orchestrator_pool"]  # fmt: skip


def test_rls_on_and_nothing_granted_to_anon(raw: psycopg.Connection[Any]) -> None:
    for table in OUR_TABLES:
        row = one(raw, "select relrowsecurity from pg_class where oid = %s::regclass", (table,))
        assert row["relrowsecurity"] is True, table
    for relation in OUR_TABLES + OUR_VIEWS + ["tasks", "workers"]:
        for role in ("anon", "authenticated"):
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
                row = one(raw, "select has_table_privilege(%s, %s, %s) as ok", (role, relation, privilege))
                assert row["ok"] is False, (role, relation, privilege)
    functions = raw.execute(
        "select p.oid::regprocedure::text as sig, n.nspname from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
        "where (n.nspname = 'public' and (p.proname like 'orch\\_%' or p.proname like 'worker\\_%'"
        " or p.proname in ('func_worker_heartbeat_with_logs', 'claim_next_task_service_role'))) "
        "or n.nspname = 'orchestrator_private'"
    ).fetchall()
    public_functions = [f["sig"] for f in functions if f["nspname"] == "public"]
    # docs/database.md lists each one (the orch_* functions and the real worker's two); no worker_* any more.
    documented = set(
        re.findall(
            r"`(?:POST /rest/v1/rpc/)?((?:orch|func_worker|claim_next_task)_[a-z_]+)\(",
            DATABASE_DOC.read_text(),
        )
    )
    assert {sig.split("(")[0] for sig in public_functions} == documented
    assert len(public_functions) == len(documented) and not [
        f for f in public_functions if f.startswith("worker_")
    ]
    for f in functions:
        for role in ("anon", "authenticated"):
            ok = one(raw, "select has_function_privilege(%s, %s, 'EXECUTE') as ok", (role, f["sig"]))
            assert ok["ok"] is False, (role, f["sig"])
    for sig in public_functions:
        ok = one(raw, "select has_function_privilege('service_role', %s, 'EXECUTE') as ok", (sig,))
        assert ok["ok"] is True, sig
    for privilege in ("UPDATE", "DELETE", "TRUNCATE"):
        ok = one(
            raw, "select has_table_privilege('service_role', 'orchestrator_events', %s) as ok", (privilege,)
        )
        assert ok["ok"] is False


def test_service_role_can_call_and_anon_cannot(raw: psycopg.Connection[Any]) -> None:
    add_worker(raw, "w1", "active")
    raw.execute("set role service_role")
    assert (
        one(raw, "select func_worker_heartbeat_with_logs(worker_id_param => 'w1') as r")["r"]["success"]
        is True
    )
    rows = raw.execute("select * from orchestrator_worker_health").fetchall()
    assert [r["id"] for r in rows] == ["w1"]
    raw.execute("reset role")
    raw.execute("set role anon")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        raw.execute("select func_worker_heartbeat_with_logs(worker_id_param => 'w1')")
    raw.execute("reset role")


def test_dashboard_views(db: Database, raw: psycopg.Connection[Any]) -> None:
    add_worker(raw, "w1", "active", runpod_id="pod-1", vram_used_mb=100, vram_total_mb=24000)
    add_worker(raw, "w2", "error", error_reason="heartbeat stale")
    add_worker(raw, "w3", "terminated")
    (running,) = add_tasks(raw, 1, status="In Progress", worker_id="w1")
    add_tasks(raw, 4, task_type="t2", age_sec=20)
    fleet = {r["status"]: r for r in raw.execute("select * from orchestrator_fleet_status").fetchall()}
    assert fleet["active"]["workers"] == 1 and fleet["active"]["busy"] == 1 and fleet["error"]["workers"] == 1
    assert fleet["terminated"]["workers"] == 1
    health = {r["id"]: r for r in raw.execute("select * from orchestrator_worker_health").fetchall()}
    assert set(health) == {"w1", "w2"}
    assert str(health["w1"]["current_task_id"]) == running and health["w1"]["runpod_id"] == "pod-1"
    assert health["w1"]["vram_total_mb"] == 24000 and health["w2"]["error_reason"] == "heartbeat stale"
    queue = {r["task_type"]: r for r in raw.execute("select * from orchestrator_queue").fetchall()}
    assert queue["t2"]["queued"] == 4 and queue["generate"]["running"] == 1
    assert queue["t2"]["oldest_queued_age_sec"] >= 19 and queue["t2"]["orchestrator_paused"] is False


# -- LISTEN/NOTIFY ----------------------------------------------------------------------------------


def test_notify_when_tasks_become_queued(
    db: Database, raw: psycopg.Connection[Any], real_worker: RealWorkerSQL, token: int
) -> None:
    transport = db.transport
    assert isinstance(transport, PostgresTransport)
    add_worker(raw, "w1", "active")
    with transport.listen("orchestrator_tasks") as listener:
        add_tasks(raw, 3)
        payloads = [json.loads(p) for p in listener.wait(timeout=5, max_count=1)]
        assert payloads == [{"event": "queued", "count": 3}]
        task = real_worker.claim("w1")
        assert task is not None
        assert listener.wait(timeout=0.2) == []  # claiming is not news
        db.requeue_worker_tasks(token, "w1", "test")
        payloads = [json.loads(p) for p in listener.wait(timeout=5, max_count=1)]
        assert payloads == [{"event": "queued", "count": 1, "task_id": task["task_id"]}]


# -- transport behaviour ----------------------------------------------------------------------------


class CountingTransport(PostgresTransport):
    """Counts attempts, to tell a retried call from a failed-fast one."""

    attempts = 0

    def _call_once(self, function: str, query: Any, params: list[Any]) -> Any:
        self.attempts += 1
        return super()._call_once(function, query, params)


def test_connection_loss_is_retried_and_other_errors_fail_fast(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    transport = CountingTransport(database_url, min_size=1, max_size=1, retry_max_wait=0.05)
    try:
        assert transport.call("orch_events", {"p_limit": 1}) == []
        # Kill every server process of the transport's pool and wait until they are gone (the timeout
        # argument): its pooled connection is now dead.
        raw.execute(
            "select pg_terminate_backend(pid, 10000) from pg_stat_activity "
            "where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend'"
        )
        transport.attempts = 0
        assert transport.call("orch_events", {"p_limit": 1}) == []
        assert transport.attempts >= 2

        transport.attempts = 0
        started = time.monotonic()
        with pytest.raises(errors.InvalidArgument):
            transport.call("orch_events", {"p_limit": 0})
        assert transport.attempts == 1 and time.monotonic() - started < 1
    finally:
        transport.close()


def test_unreachable_database_is_transient_and_bounded(pg: Any) -> None:
    transport = PostgresTransport(
        pg.url("postgres").replace(str(pg.port), "1"),  # nothing listens on port 1
        pool_timeout=0.5,
        retry_attempts=2,
        retry_max_wait=0.05,
        connect_timeout=1,
    )
    try:
        started = time.monotonic()
        with pytest.raises(errors.TransientDatabaseError) as info:
            transport.call("orch_snapshot", {"p_prefix": None})
        assert info.value.function == "orch_snapshot"
        assert time.monotonic() - started < 10
    finally:
        transport.close()


def test_repr_never_shows_the_password(pg: Any) -> None:
    transport = PostgresTransport(f"postgresql://postgres:hunter2@127.0.0.1:{pg.port}/postgres")
    try:
        assert "hunter2" not in repr(transport) and "***" in repr(transport)
    finally:
        transport.close()


def test_snapshot_reports_how_recent_boots_ended(
    db: Database, real_worker: RealWorkerSQL, token: int
) -> None:
    """The breaker and the back-off are derived from these rows, so they survive a daemon restart."""
    db.register_worker(token, "gpu-a", "RTX 4090", {"gpu_type": "RTX 4090", "data_center": "EU-RO-1"})
    db.transition_worker(token, "gpu-a", "initializing", "pod_ready")
    db.transition_worker(token, "gpu-a", "error", "init_failed")
    db.transition_worker(
        token, "gpu-a", "terminated", "provider_confirmed_gone"
    )  # does not rewrite the outcome
    db.register_worker(token, "gpu-b", "RTX 4090", {"gpu_type": "RTX 4090"})
    db.transition_worker(token, "gpu-b", "initializing", "pod_ready")
    db.merge_worker_metadata(token, "gpu-b", {"process_started_at": "2026-11-29T00:00:00Z"})
    real_worker.heartbeat("gpu-b", 24000, 100)
    db.transition_worker(token, "gpu-b", "active", "first_heartbeat")
    db.register_worker(token, "gpu-c", "RTX 4090", {})  # still booting: no outcome yet
    boots = db.snapshot()["recent_boots"]
    assert [(b["worker_id"], b["ok"], b["reason"]) for b in boots] == [
        ("gpu-b", True, "activated"),
        ("gpu-a", False, "init_failed"),
    ]
    assert boots[1]["gpu_type"] == "RTX 4090" and boots[1]["data_center"] == "EU-RO-1"


def test_queue_probe_changes_when_a_task_is_queued_and_only_then(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    assert db.queue_probe() == {"newest_queued_at": None, "requeues": 0, "enqueued": 0}
    add_tasks(raw, 2, age_sec=60)
    first = db.queue_probe()
    assert first["newest_queued_at"] is not None
    add_tasks(raw, 1, status="Complete")  # not queued work: no wake-up
    assert db.queue_probe() == first
    add_tasks(raw, 1)
    assert db.queue_probe() != first
