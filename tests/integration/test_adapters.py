"""The same assertions over both Database adapters: direct Postgres (``db``) and Supabase's REST API
(``supabase_db``: supabase-py through the PostgREST stand-in). Same SQL functions, same inputs, so the
same project exceptions and the same results, whichever way a call travels.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from postgrest.exceptions import APIError

from orchestrator.adapters.db.base import Database
from orchestrator.adapters.db.supabase import SupabaseTransport
from orchestrator.core import errors
from orchestrator.standins.postgrest.server import PostgrestServer
from tests.plugins.supabase import RealWorkerSQL, make_supabase_transport

ADAPTERS = ["db", "supabase_db"]
# Every table a SQL function may write; "writes nothing" means none of them changes.
TABLES = ["workers", "tasks", "orchestrator_events", "orchestrator_lease", "orchestrator_control"]


def fingerprint(database_url: str) -> dict[str, str]:
    with psycopg.connect(database_url) as conn:
        return {
            table: conn.execute(
                f"select count(*) || ':' || md5(coalesce(string_agg(t::text, '|' order by t::text), ''))"
                f" from public.{table} t"
            ).fetchone()[0]  # type: ignore[index]
            for table in TABLES
        }


def insert_tasks(database_url: str, count: int, task_type: str = "render") -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "insert into public.tasks (task_type, params, status)"
            " select %s, jsonb_build_object('n', g), 'Queued' from generate_series(1, %s) g returning id::text",
            (task_type, count),
        ).fetchall()
    return [r[0] for r in rows]


@dataclass
class World:
    """A database with a lease held, one worker initializing and one task it is running."""

    db: Database
    database_url: str
    token: int
    worker: str
    task: str


@pytest.fixture(params=ADAPTERS)
def world(request: pytest.FixtureRequest, database_url: str) -> Iterator[World]:
    database: Database = request.getfixturevalue(request.param)
    lease = database.lease_acquire("test-holder", 60)
    assert lease["acquired"] is True
    token = int(lease["token"])
    database.register_worker(token, "w-1", "gpu", {"runpod_id": "pod-1"})
    database.transition_worker(token, "w-1", "initializing", "pod ready")
    (task,) = insert_tasks(database_url, 1)
    claimed = RealWorkerSQL(database_url).claim("w-1")  # the app's claim, as its Edge Function calls it
    assert claimed is not None and claimed["task_id"] == task
    yield World(database, database_url, token, "w-1", task)


# --- bad input: same exception type, nothing written -----------------------------------------------

Case = Callable[[World], tuple[str, dict[str, Any]]]

BAD_INPUT: dict[str, tuple[Case, type[errors.DatabaseError]]] = {
    # unknown worker / task
    "transition_unknown_worker": (
        lambda w: ("orch_transition_worker", {"p_token": w.token, "p_worker_id": "nope", "p_to": "active", "p_reason": "x"}),
        errors.NotFound,
    ),
    "merge_unknown_worker": (
        lambda w: ("orch_merge_worker_metadata", {"p_token": w.token, "p_worker_id": "nope", "p_metadata": {"a": 1}}),
        errors.NotFound,
    ),
    "requeue_unknown_worker": (
        lambda w: ("orch_requeue_worker_tasks", {"p_token": w.token, "p_worker_id": "nope", "p_reason": "x"}),
        errors.NotFound,
    ),
    "terminate_unknown_worker": (
        lambda w: ("orch_request_termination", {"p_worker_id": "nope", "p_by": "me"}),
        errors.NotFound,
    ),
    # the real worker's heartbeat RPC, on both transports
    "heartbeat_null_id": (
        lambda w: ("func_worker_heartbeat_with_logs", {"worker_id_param": None, "vram_total_mb_param": 1}),
        errors.InvalidArgument,
    ),
    "heartbeat_vram_not_an_integer": (
        lambda w: ("func_worker_heartbeat_with_logs", {"worker_id_param": w.worker, "vram_total_mb_param": "lots"}),
        errors.InvalidArgument,
    ),
    "heartbeat_vram_fractional": (
        lambda w: ("func_worker_heartbeat_with_logs", {"worker_id_param": w.worker, "vram_total_mb_param": 1.5}),
        errors.InvalidArgument,
    ),
    "heartbeat_task_id_not_a_uuid": (
        lambda w: ("func_worker_heartbeat_with_logs", {"worker_id_param": w.worker, "current_task_id_param": "x"}),
        errors.InvalidArgument,
    ),
    "heartbeat_unknown_status": (
        lambda w: ("func_worker_heartbeat_with_logs", {"worker_id_param": "new-one", "status_param": "dancing"}),
        errors.InvalidArgument,  # the workers.status CHECK
    ),
    "heartbeat_unknown_argument": (
        lambda w: ("func_worker_heartbeat_with_logs", {"worker_id_param": w.worker, "p_bogus": 1}),
        errors.InvalidArgument,
    ),
    "attempt_limit_out_of_range": (
        lambda w: ("orch_set_task_attempt_limit", {"p_token": w.token, "p_max_attempts": 0}),
        errors.InvalidArgument,
    ),
    "max_attempts_not_a_number": (
        lambda w: ("orch_requeue_worker_tasks", {"p_token": w.token, "p_worker_id": w.worker, "p_reason": "x", "p_max_attempts": "x"}),
        errors.InvalidArgument,
    ),
    # null id / null required value
    "register_null_id": (
        lambda w: ("orch_register_worker", {"p_token": w.token, "p_worker_id": None, "p_instance_type": "gpu", "p_metadata": {}}),
        errors.InvalidArgument,
    ),
    "transition_null_target": (
        lambda w: ("orch_transition_worker", {"p_token": w.token, "p_worker_id": w.worker, "p_to": None, "p_reason": "x"}),
        errors.InvalidArgument,
    ),
    "pause_null": (lambda w: ("orch_set_paused", {"p_paused": None, "p_by": "me"}), errors.InvalidArgument),
    "lease_null_holder": (
        lambda w: ("orch_lease_acquire", {"p_holder": None, "p_ttl_sec": 10}),
        errors.InvalidArgument,
    ),
    "lease_ttl_out_of_range": (
        lambda w: ("orch_lease_acquire", {"p_holder": "h", "p_ttl_sec": -1}),
        errors.InvalidArgument,
    ),
    "lease_renew_null_token": (
        lambda w: ("orch_lease_renew", {"p_holder": "test-holder", "p_token": None, "p_ttl_sec": 10}),
        errors.InvalidArgument,
    ),
    "events_limit_out_of_range": (lambda w: ("orch_events", {"p_limit": 0}), errors.InvalidArgument),
    # wrong type
    "token_not_a_number": (
        lambda w: ("orch_merge_worker_metadata", {"p_token": "abc", "p_worker_id": w.worker, "p_metadata": {"a": 1}}),
        errors.InvalidArgument,
    ),
    "max_attempts_out_of_range": (
        lambda w: ("orch_requeue_worker_tasks", {"p_token": w.token, "p_worker_id": w.worker, "p_reason": "x", "p_max_attempts": 0}),
        errors.InvalidArgument,
    ),
    "paused_not_a_boolean": (
        lambda w: ("orch_set_paused", {"p_paused": "maybe", "p_by": "me"}),
        errors.InvalidArgument,
    ),
    "cost_not_a_number": (
        lambda w: ("orch_append_event", {"p_token": w.token, "p_kind": "spend", "p_cost_usd": "cheap"}),
        errors.InvalidArgument,
    ),
    "event_kind_not_snake_case": (
        lambda w: ("orch_append_event", {"p_token": w.token, "p_kind": "Not An Event"}),
        errors.InvalidArgument,
    ),
    "lease_ttl_not_a_number": (
        lambda w: ("orch_lease_acquire", {"p_holder": "h", "p_ttl_sec": "soon"}),
        errors.InvalidArgument,
    ),
    "lease_release_token_not_a_number": (
        lambda w: ("orch_lease_release", {"p_holder": "test-holder", "p_token": "t"}),
        errors.InvalidArgument,
    ),
    "events_limit_not_a_number": (lambda w: ("orch_events", {"p_limit": "ten"}), errors.InvalidArgument),
    # malformed JSON for a jsonb parameter (over REST it arrives as a JSON string, not an object)
    "metadata_malformed_json": (
        lambda w: ("orch_merge_worker_metadata", {"p_token": w.token, "p_worker_id": w.worker, "p_metadata": '{"a": '}),
        errors.InvalidArgument,
    ),
    "metadata_not_an_object": (
        lambda w: ("orch_merge_worker_metadata", {"p_token": w.token, "p_worker_id": w.worker, "p_metadata": [1, 2]}),
        errors.InvalidArgument,
    ),
    "details_malformed_json": (
        lambda w: ("orch_append_event", {"p_token": w.token, "p_kind": "x", "p_details": "{nope"}),
        errors.InvalidArgument,
    ),
    "register_metadata_malformed_json": (
        lambda w: ("orch_register_worker", {"p_token": w.token, "p_worker_id": "w-2", "p_instance_type": "gpu", "p_metadata": "]["}),
        errors.InvalidArgument,
    ),
    # arguments no function takes
    "snapshot_unknown_argument": (
        lambda w: ("orch_snapshot", {"p_prefix": None, "p_limit": 5}),
        errors.InvalidArgument,
    ),
    "missing_required_argument": (
        lambda w: ("orch_transition_worker", {"p_token": w.token, "p_worker_id": w.worker}),
        errors.InvalidArgument,
    ),
}  # fmt: skip


def test_bad_input_raises_the_same_type_and_writes_nothing(world: World) -> None:
    # One database for every case (a fresh one per case costs half a second each): a case that wrote
    # anything would show in the fingerprint, and the next cases start from the same state.
    before = fingerprint(world.database_url)
    problems: list[str] = []
    for case, (build, expected) in sorted(BAD_INPUT.items()):
        function, args = build(world)
        try:
            world.db.transport.call(function, args)
        except errors.DatabaseError as exc:
            if type(exc) is not expected:
                problems.append(f"{case}: expected {expected.__name__}, got {type(exc).__name__}: {exc}")
            elif exc.function != function or not exc.message:
                problems.append(f"{case}: error lacks the function name or the server's message: {exc!r}")
        else:
            problems.append(f"{case}: expected {expected.__name__}, but the call succeeded")
        after = fingerprint(world.database_url)
        if after != before:
            problems.append(f"{case}: wrote something: {before} -> {after}")
            before = after
    assert not problems, "\n".join(problems)


def test_stale_lease_token_is_lease_lost_and_writes_nothing(world: World) -> None:
    db = world.db
    assert db.lease_release("test-holder", world.token) is True
    newer = db.lease_acquire("another-holder", 60)
    assert newer["acquired"] is True and int(newer["token"]) > world.token
    before = fingerprint(world.database_url)
    with pytest.raises(errors.LeaseLost) as caught:
        db.transition_worker(world.token, world.worker, "active", "stale replica")
    assert caught.value.code == "OR001"
    with pytest.raises(errors.LeaseLost):
        db.merge_worker_metadata(world.token, world.worker, {"x": 1})
    with pytest.raises(errors.LeaseLost):
        db.register_worker(world.token, "w-2", "gpu", {})
    assert fingerprint(world.database_url) == before


def test_illegal_transition_and_writes_nothing(world: World) -> None:
    db = world.db
    db.register_worker(world.token, "w-2", "gpu", {})
    before = fingerprint(world.database_url)
    with pytest.raises(errors.IllegalTransition) as caught:
        db.transition_worker(world.token, "w-2", "active", "skipping initializing")  # spawning -> active
    assert caught.value.code == "OR002"
    assert "spawning -> active" in caught.value.message
    assert fingerprint(world.database_url) == before


def test_duplicate_worker_is_conflict(world: World) -> None:
    with pytest.raises(errors.Conflict):
        world.db.register_worker(world.token, world.worker, "gpu", {})


def test_happy_path_results(world: World) -> None:
    db = world.db
    beat = db.transport.call(
        "func_worker_heartbeat_with_logs",
        {"worker_id_param": world.worker, "vram_total_mb_param": 24000, "vram_used_mb_param": 1000,
         "logs_param": [], "status_param": "active"},
    )  # fmt: skip
    assert beat == {
        "success": True, "heartbeat_updated": True, "logs_inserted": 0, "log_errors": 0,
        "crash_requeued_tasks": 0, "crash_failed_tasks": 0,
    }  # fmt: skip
    real = RealWorkerSQL(world.database_url)
    assert real.complete(world.task) == 1
    assert real.complete(world.task) == 0  # not In Progress any more
    snap = db.snapshot()
    assert [w["id"] for w in snap["workers"]] == [world.worker]
    assert snap["workers"][0]["metadata"]["vram_total_mb"] == 24000
    assert snap["workers"][0]["status"] == "initializing"  # the heartbeat's 'active' changes nothing
    assert isinstance(
        db.append_event(world.token, "note", reason="r", details={"k": [1]}, cost_usd=0.25), int
    )
    events = db.events(limit=1)
    assert events[0]["kind"] == "note" and events[0]["details"] == {"k": [1]}


def test_both_adapters_return_identical_json(db: Database, supabase_db: Database, database_url: str) -> None:
    token = int(db.lease_acquire("holder", 60)["token"])
    db.register_worker(token, "w-a", "gpu", {"nested": {"list": [1, "two", None]}})
    supabase_db.register_worker(token, "w-b", "gpu", {"nested": {"list": [1, "two", None]}})
    insert_tasks(database_url, 2)
    for name in ("w-a", "w-b"):
        db.transition_worker(token, name, "initializing", "ready")
    assert db.events(limit=100) == supabase_db.events(limit=100)
    over_pg, over_rest = db.snapshot(), supabase_db.snapshot()
    for snap in (over_pg, over_rest):
        snap.pop("now")
        for worker in snap["workers"]:
            worker.pop("heartbeat_age_sec", None)
        snap["queue"].pop("oldest_claimable_age_sec", None)
    assert over_pg == over_rest
    beats = [
        database.transport.call(
            "func_worker_heartbeat_with_logs", {"worker_id_param": name, "status_param": "crashed"}
        )
        for database, name in ((db, "w-a"), (supabase_db, "w-b"))
    ]
    assert beats[0] == beats[1]
    reported = [{k: w[k] for k in ("status", "reported_status")} for w in supabase_db.snapshot()["workers"]]
    assert reported == [{"status": "initializing", "reported_status": "crashed"}] * 2


# --- transient faults through the REST layer -------------------------------------------------------


@pytest.mark.parametrize("kind", ["unavailable", "gateway", "disconnect"])
def test_transient_rest_fault_is_retried_and_succeeds(
    postgrest: PostgrestServer, supabase_db: Database, kind: str
) -> None:
    postgrest.fail_next(2, kind=kind)  # type: ignore[arg-type]
    result = supabase_db.set_paused(True, "tester", "maintenance")
    assert result["paused"] is True
    statuses = [r.status for r in postgrest.requests]
    expected_fault = None if kind == "disconnect" else 503
    assert statuses == [expected_fault, expected_fault, 200]


def test_retries_are_bounded(postgrest: PostgrestServer) -> None:
    transport = make_supabase_transport(postgrest, retry_attempts=3)
    try:
        postgrest.fail_next(10)
        with pytest.raises(errors.TransientDatabaseError) as caught:
            transport.call("orch_events", {"p_limit": 5})
        assert caught.value.code == "PGRST000"
        assert len(postgrest.requests) == 3
    finally:
        transport.close()


def test_non_transient_errors_fail_fast(postgrest: PostgrestServer, supabase_db: Database) -> None:
    with pytest.raises(errors.LeaseLost):
        supabase_db.merge_worker_metadata(12345, "w-x", {"a": 1})
    with pytest.raises(errors.InvalidArgument) as caught:
        supabase_db.transport.call("no_such_function", {})
    assert caught.value.code == "PGRST202"
    assert len(postgrest.requests) == 2  # one request each: no retry


def test_wrong_key_is_a_clear_non_transient_error(postgrest: PostgrestServer) -> None:
    assert postgrest.base_url is not None
    transport = SupabaseTransport(
        postgrest.base_url, "not-the-key", retry_initial_sec=0.01, retry_max_sec=0.02
    )
    try:
        with pytest.raises(errors.DatabaseError) as caught:
            transport.call("orch_events", {"p_limit": 5})
        assert type(caught.value) is errors.DatabaseError
        assert "Invalid API key" in str(caught.value)
        assert "not-the-key" not in str(caught.value)
        assert len(postgrest.requests) == 1
    finally:
        transport.close()


def test_unreachable_server_is_transient(postgrest: PostgrestServer) -> None:
    assert postgrest.base_url is not None
    base_url = postgrest.base_url
    postgrest.stop()  # nothing listens on that port any more
    transport = SupabaseTransport(
        base_url, postgrest.service_role_key, retry_attempts=2, retry_initial_sec=0.01, retry_max_sec=0.02
    )
    try:
        with pytest.raises(errors.TransientDatabaseError) as caught:
            transport.call("orch_events", {"p_limit": 5})
        assert "network error" in caught.value.message
    finally:
        transport.close()


def test_supabase_transport_is_shared_safely_between_threads(
    supabase_db: Database, database_url: str
) -> None:
    token = int(supabase_db.lease_acquire("holder", 60)["token"])
    workers = [f"w-{i}" for i in range(8)]
    for name in workers:
        supabase_db.register_worker(token, name, "gpu", {})
        supabase_db.transition_worker(token, name, "initializing", "ready")
    tasks = set(insert_tasks(database_url, 120))
    claims: dict[str, list[str]] = {name: [] for name in workers}
    failures: list[BaseException] = []

    def claim_all(name: str) -> None:
        # The app's claim RPC, over the REST transport, as claim-next-task calls it.
        try:
            while rows := supabase_db.transport.call("claim_next_task_service_role", {"p_worker_id": name}):
                claims[name].append(rows[0]["task_id"])
        except BaseException as exc:  # reported below; a thread must not die silently
            failures.append(exc)

    threads = [threading.Thread(target=claim_all, args=(name,)) for name in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    claimed = [task for per_worker in claims.values() for task in per_worker]
    assert len(claimed) == len(tasks) and set(claimed) == tasks  # each exactly once, none lost


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        ({"code": "OR001", "message": "stale"}, 400, errors.LeaseLost),
        ({"code": "OR002", "message": "illegal"}, 400, errors.IllegalTransition),
        ({"code": "OR003", "message": "unknown"}, 400, errors.NotFound),
        ({"code": "23505", "message": "exists"}, 409, errors.Conflict),
        ({"code": "22P02", "message": "bad"}, 400, errors.InvalidArgument),
        ({"code": "PGRST202", "message": "Could not find"}, 404, errors.InvalidArgument),
        ({"code": "PGRST102", "message": "Empty or invalid json"}, 400, errors.InvalidArgument),
        ({"code": "PGRST000", "message": "Database connection error"}, 503, errors.TransientDatabaseError),
        (
            {"code": "PGRST003", "message": "Timed out acquiring connection"},
            504,
            errors.TransientDatabaseError,
        ),
        ({"code": "40001", "message": "could not serialize"}, 500, errors.TransientDatabaseError),
        ({"code": "57P01", "message": "terminating connection"}, 503, errors.TransientDatabaseError),
        ({"code": "XX000", "message": "internal"}, 500, errors.DatabaseError),
        ({"code": "502", "message": "Bad Gateway"}, 502, errors.TransientDatabaseError),  # non-JSON body
        ({"message": "upstream timed out"}, 500, errors.TransientDatabaseError),  # 5xx, no database code
        ({"message": "Invalid API key"}, 401, errors.DatabaseError),
        ({"code": "PGRST301", "message": "JWSError"}, 401, errors.DatabaseError),
        ({"code": "42501", "message": "permission denied"}, 403, errors.DatabaseError),
    ],
)
def test_rest_error_mapping(body: dict[str, str], status: int, expected: type[errors.DatabaseError]) -> None:
    mapped = SupabaseTransport._map_api_error("fn", APIError(body), status)
    assert type(mapped) is expected
    assert mapped.function == "fn"
    assert mapped.code == body.get("code")
