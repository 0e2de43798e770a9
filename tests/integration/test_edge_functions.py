"""The stand-in's Edge Functions, table endpoints, Storage and heartbeat RPC, against the real handlers.

Every expectation here is read from the public source of the handler it stands in for (banodoco/reigh-app
at 3a6fd3d, ``supabase/functions``: ``_shared/edgeHandler.ts``, ``_shared/auth.ts``,
``claim-next-task/index.ts``, ``task-counts/index.ts``, ``complete_task/handler.ts`` and ``request.ts``,
``update-task-status/*.ts``, ``update-worker-model/index.ts``, ``generate-upload-url/index.ts``; the heartbeat
RPC of ``supabase/migrations/20260331060000_add_crash_recovery_to_heartbeat.sql``) and from what the real
worker sends (peteromallet/Headless-Wan2GP, banodoco/Reigh-Worker): parameter names, status codes, body
keys, text versus JSON errors. Real HTTP (httpx) against ``orchestrator.standins.postgrest`` on a real Postgres.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from orchestrator.standins.postgrest.server import PostgrestServer
from tests.integration.test_sql_contract import add_tasks, add_worker, task_row, worker_row

TRANSITIONS = {
    "Queued": ["In Progress", "Failed", "Cancelled"],
    "In Progress": ["Complete", "Failed", "Cancelled", "Queued"],
    "Complete": [],
    "Failed": [],
    "Cancelled": [],
}


class Edge:
    """An HTTP client speaking as the real worker: Edge calls with the Bearer only, REST with apikey."""

    def __init__(self, server: PostgrestServer) -> None:
        assert server.base_url is not None
        self.server = server
        self.http = httpx.Client(base_url=server.base_url, timeout=15)
        self.bearer = {"Authorization": f"Bearer {server.service_role_key}"}

    def fn(self, name: str, body: Any = None, *, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post(
            f"/functions/v1/{name}", json=body, headers=headers if headers is not None else self.bearer
        )

    def rest(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"apikey": self.server.service_role_key, **kw.pop("headers", {})}
        return self.http.request(method, f"/rest/v1/{path}", headers=headers, **kw)


@pytest.fixture
def edge(postgrest: PostgrestServer) -> Iterator[Edge]:
    client = Edge(postgrest)
    try:
        yield client
    finally:
        client.http.close()


@pytest.fixture
def raw_conn(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def envelope_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error", "errorCode", "message", "recoverable"}, body
    assert body["error"] == body["errorCode"]
    return str(body["errorCode"])


# -- the bootstrap every function shares --------------------------------------------------------------


def test_auth_method_and_preflight_rules(edge: Edge) -> None:
    # claim-next-task answers its bootstrap errors as text ...
    r = edge.fn("claim-next-task", {"worker_id": "w"}, headers={})
    assert (r.status_code, r.text) == (401, "Missing or invalid Authorization header")
    r = edge.fn("claim-next-task", {}, headers={"Authorization": f"bearer {edge.server.service_role_key}"})
    assert r.status_code == 401  # the scheme is matched as "Bearer " exactly
    r = edge.fn("claim-next-task", {}, headers={"Authorization": f"Bearer {edge.server.anon_key}"})
    assert (r.status_code, r.text) == (403, "Invalid or expired token")
    # ... the others with the JSON envelope.
    r = edge.fn("task-counts", {}, headers={})
    assert r.status_code == 401 and envelope_code(r) == "authentication_failed"
    r = edge.fn("complete_task", {}, headers={"Authorization": "Bearer not-a-key"})
    assert r.status_code == 403 and envelope_code(r) == "forbidden"
    for name in (
        "claim-next-task",
        "task-counts",
        "complete_task",
        "update-task-status",
        "update-worker-model",
    ):
        r = edge.http.get(f"/functions/v1/{name}", headers=edge.bearer)
        assert r.status_code == 405 and r.headers["Allow"] == "POST", name
        r = edge.http.options(f"/functions/v1/{name}")
        assert r.status_code == 200 and r.json() == {"ok": True}, name
    assert edge.http.post("/functions/v1/no-such-function", headers=edge.bearer).status_code == 404
    # No apikey is needed: the functions are deployed with verify_jwt = false and check the Bearer.
    assert edge.fn("task-counts", {"run_type": "gpu"}).status_code == 200


def test_a_strict_body_is_refused_and_a_loose_one_defaults(edge: Edge) -> None:
    r = edge.http.post("/functions/v1/update-worker-model", content=b"{oops", headers=edge.bearer)
    assert r.status_code == 400 and envelope_code(r) == "invalid_json_body"
    r = edge.http.post("/functions/v1/update-worker-model", content=b"[1]", headers=edge.bearer)
    assert r.status_code == 400 and envelope_code(r) == "invalid_json_body_shape"
    r = edge.http.post("/functions/v1/claim-next-task", content=b"{oops", headers=edge.bearer)
    assert r.status_code == 204  # loose: defaults, nothing queued


# -- claim-next-task and task-counts -----------------------------------------------------------------


def test_claim_answers_204_then_200_with_the_apps_keys(edge: Edge, raw_conn: Any) -> None:
    add_worker(raw_conn, "gpu-1", "active")
    r = edge.fn("claim-next-task", {"worker_id": "gpu-1", "run_type": "gpu"})
    assert r.status_code == 204 and r.content == b""
    (task_id,) = add_tasks(raw_conn, 1)
    r = edge.fn("claim-next-task", {"worker_id": "gpu-1", "run_type": "gpu"})
    assert r.status_code == 200
    assert set(r.json()) == {"task_id", "params", "task_type", "project_id"}  # no attempts, no status
    assert r.json()["task_id"] == task_id and r.json()["params"] == {}
    row = task_row(raw_conn, task_id)
    assert (row["status"], row["worker_id"]) == ("In Progress", "gpu-1") and row["generation_started_at"]


def test_a_claim_the_database_refuses_is_a_500_and_the_task_stays_queued(edge: Edge, raw_conn: Any) -> None:
    (task_id,) = add_tasks(raw_conn, 1)
    r = edge.fn("claim-next-task", {"worker_id": "never-registered"})  # the foreign key
    assert (r.status_code, r.text) == (500, "Internal server error")
    add_worker(raw_conn, "gpu-d", "draining")
    r = edge.fn("claim-next-task", {"worker_id": "gpu-d"})  # the tasks guard (OR004)
    assert (r.status_code, r.text) == (500, "Internal server error")
    assert task_row(raw_conn, task_id)["status"] == "Queued"


def test_task_counts_answers_the_apps_shape(edge: Edge, raw_conn: Any) -> None:
    add_worker(raw_conn, "gpu-1", "active")
    add_tasks(raw_conn, 3)
    add_tasks(raw_conn, 1, status="In Progress", worker_id="gpu-1")
    r = edge.fn("task-counts", {"run_type": "gpu", "include_active": True})
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"mode", "timestamp", "run_type_filter_requested", "run_type_filter", "totals",
                         "queued_tasks", "active_tasks", "users"}  # fmt: skip
    assert body["mode"] == "count" and body["run_type_filter"] == "gpu"
    assert body["totals"] == {
        "queued_only": 3, "active_only": 1, "queued_plus_active": 4, "blocked_by_capacity": 0,
        "blocked_by_deps": 0, "blocked_by_settings": 0, "potentially_claimable": 3,
    }  # fmt: skip
    assert len(body["queued_tasks"]) == 3 and body["active_tasks"][0]["worker_id"] == "gpu-1"


# -- update-task-status ------------------------------------------------------------------------------


def test_update_task_status_validation(edge: Edge, raw_conn: Any) -> None:
    (task_id,) = add_tasks(raw_conn, 1)
    r = edge.fn("update-task-status", {"task_id": task_id})
    assert (r.status_code, r.text) == (400, "Missing required fields: task_id and status")
    r = edge.fn("update-task-status", {"task_id": task_id, "status": "Done"})
    assert r.status_code == 400 and r.text.startswith("Invalid status. Must be one of: Queued, In Progress")
    r = edge.fn("update-task-status", {"task_id": task_id, "status": "Failed", "attempts": "2"})
    assert r.status_code == 400 and r.json() == {"success": False, "message": "attempts must be a number"}
    r = edge.fn("update-task-status", {"task_id": task_id, "status": "Failed", "error_details": {"x": 1}})
    assert r.status_code == 400 and r.json()["message"] == "error_details must be a string"
    r = edge.http.post("/functions/v1/update-task-status", content=b"{", headers=edge.bearer)
    assert (r.status_code, r.text) == (400, "Invalid JSON body")
    for unknown in ("11111111-1111-1111-1111-111111111111", "not-a-uuid"):
        r = edge.fn("update-task-status", {"task_id": unknown, "status": "Failed"})
        assert r.status_code == 500 and r.text.startswith("Failed to check current task status: "), unknown
    assert task_row(raw_conn, task_id)["status"] == "Queued"


@pytest.mark.parametrize("current", list(TRANSITIONS))
def test_update_task_status_follows_the_apps_transition_table(
    edge: Edge, raw_conn: Any, current: str
) -> None:
    add_worker(raw_conn, "gpu-1", "active")
    for requested in TRANSITIONS:
        (task_id,) = add_tasks(
            raw_conn, 1, status=current, worker_id="gpu-1" if current == "In Progress" else None
        )
        r = edge.fn("update-task-status", {"task_id": task_id, "status": requested})
        if requested in TRANSITIONS[current]:
            assert r.status_code == 200, (current, requested, r.text)
            assert r.json() == {"success": True, "task_id": task_id, "status": requested,
                                "message": f"Task status updated to '{requested}'"}  # fmt: skip
        else:
            assert r.status_code == 409, (current, requested, r.text)
            assert r.json() == {
                "success": False, "task_id": task_id, "current_status": current, "requested_status": requested,
                "allowed_transitions": TRANSITIONS[current], "message": f"Invalid status transition: {current} → {requested}",
            }  # fmt: skip
            assert task_row(raw_conn, task_id)["status"] == current


def test_update_task_status_fields_and_the_timestamp_only_reset(edge: Edge, raw_conn: Any) -> None:
    add_worker(raw_conn, "gpu-1", "active")
    (task_id,) = add_tasks(raw_conn, 1, status="In Progress", worker_id="gpu-1")
    # After a model load the worker resets its start time: In Progress -> In Progress is allowed only so.
    r = edge.fn(
        "update-task-status",
        {"task_id": task_id, "status": "In Progress", "reset_generation_started_at": True},
    )
    assert r.status_code == 200
    r = edge.fn(
        "update-task-status", {"task_id": task_id, "status": "In Progress", "output_location": "waiting"}
    )
    assert r.status_code == 409
    # A retryable error: back to the queue, worker cleared, error_details -> error_message; the worker's
    # attempts (n+1 from a claim that carries none, so 1) does not lower the count the database keeps.
    raw_conn.execute("update tasks set attempts = 1 where id = %s", (task_id,))
    r = edge.fn("update-task-status", {"task_id": task_id, "status": "Queued", "attempts": 1,
                                       "error_details": "CUDA out of memory", "clear_worker": True})  # fmt: skip
    assert r.status_code == 200
    row = task_row(raw_conn, task_id)
    assert (row["status"], row["worker_id"], row["generation_started_at"]) == ("Queued", None, None)
    assert (row["attempts"], row["error_message"]) == (2, "CUDA out of memory")
    # A failure: the error text travels in output_location, as the worker sends it.
    raw_conn.execute("update tasks set status = 'In Progress', worker_id = 'gpu-1' where id = %s", (task_id,))
    r = edge.fn(
        "update-task-status", {"task_id": task_id, "status": "Failed", "output_location": "Traceback ..."}
    )
    assert r.status_code == 200
    row = task_row(raw_conn, task_id)
    assert (row["status"], row["output_location"], row["attempts"]) == ("Failed", "Traceback ...", 3)


# -- complete_task -----------------------------------------------------------------------------------


def test_complete_task_base64_answers_200_even_when_no_longer_in_progress(edge: Edge, raw_conn: Any) -> None:
    add_worker(raw_conn, "gpu-1", "active")
    (running,) = add_tasks(raw_conn, 1, status="In Progress", worker_id="gpu-1")
    data = b"\x00\x01video bytes"
    body = {"task_id": running, "file_data": base64.b64encode(data).decode(), "filename": "out.mp4"}
    r = edge.fn("complete_task", body)
    assert r.status_code == 200
    answer = r.json()
    assert set(answer) == {"success", "public_url", "thumbnail_url", "follow_up", "message"}
    assert answer["success"] is True and answer["follow_up"] == {"status": "ok", "issues": []}
    assert answer["public_url"].endswith(
        f"/storage/v1/object/public/image_uploads/system/tasks/{running}/out.mp4"
    )
    assert edge.http.get(answer["public_url"]).content == data
    row = task_row(raw_conn, running)
    assert (row["status"], row["output_location"]) == ("Complete", answer["public_url"])
    assert row["generation_processed_at"] is not None
    # The guard is in the UPDATE (WHERE status = 'In Progress'), not in the answer.
    (queued,) = add_tasks(raw_conn, 1)
    r = edge.fn("complete_task", {**body, "task_id": queued})
    assert r.status_code == 200 and r.json()["success"] is True
    assert task_row(raw_conn, queued)["status"] == "Queued"


def test_complete_task_refusals(edge: Edge, raw_conn: Any) -> None:
    (task_id,) = add_tasks(raw_conn, 1)
    r = edge.fn("complete_task", {"task_id": task_id, "output_location": "s3://elsewhere/out.mp4"})
    assert r.status_code == 400 and envelope_code(r) == "missing_base64_upload_fields"
    r = edge.fn("complete_task", {"task_id": task_id, "file_data": "***", "filename": "a.mp4"})
    assert r.status_code == 400 and envelope_code(r) == "invalid_base64_file_data"
    r = edge.fn(
        "complete_task",
        {"task_id": "11111111-1111-1111-1111-111111111111", "file_data": "AAAA", "filename": "a.mp4"},
    )
    assert r.status_code == 404 and envelope_code(r) == "task_actor_resolution_failed"
    other = f"system/tasks/{'2' * 8}-2222-2222-2222-222222222222/out.mp4"
    r = edge.fn("complete_task", {"task_id": task_id, "storage_path": other})
    assert r.status_code == 403 and envelope_code(r) == "storage_path_access_denied"
    r = edge.fn("complete_task", {"task_id": task_id, "storage_path": "system/nothing-here.mp4"})
    assert r.status_code == 404 and envelope_code(r) == "storage_reference_not_found"
    assert task_row(raw_conn, task_id)["status"] == "Queued"


def test_a_large_output_goes_through_a_signed_upload(edge: Edge, raw_conn: Any) -> None:
    add_worker(raw_conn, "gpu-1", "active")
    (task_id,) = add_tasks(raw_conn, 1, status="In Progress", worker_id="gpu-1")
    r = edge.fn("generate-upload-url", {"task_id": task_id, "filename": "big.mp4", "content_type": "video/mp4",
                                        "generate_thumbnail_url": True})  # fmt: skip
    assert r.status_code == 200
    signed = r.json()
    assert set(signed) == {"upload_url", "storage_path", "token", "expires_at", "thumbnail_upload_url",
                           "thumbnail_storage_path", "thumbnail_token"}  # fmt: skip
    assert signed["storage_path"] == f"system/tasks/{task_id}/big.mp4"
    payload = b"x" * (2 * 1024 * 1024 + 1)
    bad = edge.http.put(signed["upload_url"].replace(signed["token"], "forged"), content=payload)
    assert bad.status_code == 400 and bad.json()["error"] == "InvalidJWT"
    put = edge.http.put(signed["upload_url"], content=payload, headers={"Content-Type": "video/mp4"})
    assert put.status_code == 200 and put.json() == {"Key": f"image_uploads/{signed['storage_path']}"}
    again = edge.http.put(signed["upload_url"], content=payload, headers={"Content-Type": "video/mp4"})
    assert again.status_code == 400 and again.json()["error"] == "Duplicate"
    r = edge.fn("complete_task", {"task_id": task_id, "storage_path": signed["storage_path"],
                                  "thumbnail_storage_path": signed["thumbnail_storage_path"]})  # fmt: skip
    assert r.status_code == 200 and r.json()["public_url"].endswith(signed["storage_path"])
    assert edge.http.get(r.json()["public_url"]).content == payload
    assert task_row(raw_conn, task_id)["status"] == "Complete"
    r = edge.fn("generate-upload-url", {"task_id": task_id, "filename": "big.mp4"})
    assert r.status_code == 400 and r.json() == {"error": "task_id, filename, and content_type required"}


def test_update_worker_model_refuses_the_workers_body(edge: Edge, raw_conn: Any) -> None:
    add_worker(raw_conn, "gpu-1", "draining")
    r = edge.fn(
        "update-worker-model", {"worker_id": "gpu-1", "model": "wan_2_2_i2v"}
    )  # what the worker sends
    assert (r.status_code, r.text) == (400, "Missing required field: current_model")
    r = edge.fn("update-worker-model", {"worker_id": "gpu-1", "current_model": "wan_2_2_i2v"})
    assert r.status_code == 200 and r.json()["action"] == "updated"
    row = worker_row(raw_conn, "gpu-1")
    assert (row["current_model"], row["status"]) == ("wan_2_2_i2v", "draining")  # our state kept


# -- the heartbeat RPC and the table endpoints the worker uses ---------------------------------------


def test_the_heartbeat_rpc_as_the_guardian_sends_it(edge: Edge, raw_conn: Any) -> None:
    add_worker(raw_conn, "gpu-1", "initializing")
    body = {"worker_id_param": "gpu-1", "vram_total_mb_param": 24564, "vram_used_mb_param": 1024,
            "logs_param": [{"timestamp": "2026-12-06T00:00:00Z", "level": "INFO", "message": "up",
                            "task_id": None, "metadata": {}}], "status_param": "active"}  # fmt: skip
    headers = {"Content-Type": "application/json", "Prefer": "return=representation"}  # no Authorization
    r = edge.rest("POST", "rpc/func_worker_heartbeat_with_logs", json=body, headers=headers)
    assert r.status_code == 200
    assert r.json() == {"success": True, "heartbeat_updated": True, "logs_inserted": 0, "log_errors": 1,
                        "crash_requeued_tasks": 0, "crash_failed_tasks": 0}  # fmt: skip
    row = worker_row(raw_conn, "gpu-1")
    assert row["status"] == "initializing" and row["metadata"]["vram_used_mb"] == 1024
    r = edge.rest(
        "POST",
        "rpc/func_worker_heartbeat_with_logs",
        json={**body, "status_param": "crashed"},
        headers=headers,
    )
    assert r.status_code == 200 and worker_row(raw_conn, "gpu-1")["reported_status"] == "crashed"
    r = edge.rest("POST", "rpc/func_worker_heartbeat_with_logs", json={"worker_id": "gpu-1"}, headers=headers)
    assert r.status_code == 404 and r.json()["code"] == "PGRST202"
    r = edge.http.post("/rest/v1/rpc/func_worker_heartbeat_with_logs", json=body,
                       headers={"apikey": edge.server.anon_key})  # fmt: skip
    assert r.status_code == 401 and r.json()["code"] == "42501"


def test_the_workers_own_in_progress_lookup(edge: Edge, raw_conn: Any) -> None:
    add_worker(raw_conn, "gpu-1", "active")
    (mine,) = add_tasks(raw_conn, 1, status="In Progress", worker_id="gpu-1")
    add_tasks(raw_conn, 2)
    params = {
        "select": "id,params,task_type,project_id",
        "worker_id": "eq.gpu-1",
        "status": "eq.In Progress",
        "limit": "1",
    }
    r = edge.rest(
        "GET", "tasks", params=params, headers={"Authorization": f"Bearer {edge.server.service_role_key}"}
    )
    assert r.status_code == 200
    assert r.json() == [{"id": mine, "params": {}, "task_type": "generate", "project_id": None}]
    r = edge.rest("GET", "tasks", params={**params, "worker_id": "eq.gpu-2"})
    assert r.status_code == 200 and r.json() == []
    r = edge.rest("GET", "tasks", params={"select": "id,error_details"})
    assert r.status_code == 400 and r.json()["code"] == "42703"
    r = edge.rest("GET", "tasks", params={"id": "eq.not-a-uuid"})
    assert r.status_code == 400 and r.json()["code"] == "22P02"
    r = edge.rest("GET", "tasks", params={"status": "in.(Queued,Complete)", "order": "created_at.desc"})
    assert r.status_code == 200 and len(r.json()) == 2


def test_the_patches_of_the_launcher_and_the_fatal_handler(edge: Edge, raw_conn: Any) -> None:
    add_worker(raw_conn, "gpu-1", "active", runpod_id="pod-1")
    (held,) = add_tasks(raw_conn, 1, status="In Progress", worker_id="gpu-1")
    # The launcher: metadata.startup_phase, expects 204.
    meta = worker_row(raw_conn, "gpu-1")["metadata"]
    r = edge.rest(
        "PATCH", "workers", params={"id": "eq.gpu-1"}, json={"metadata": {**meta, "startup_phase": "ready"}}
    )
    assert r.status_code == 204 and r.content == b""
    # The fatal handler (supabase-py: Prefer return=representation): status 'error', then the tasks PATCH
    # with error_details, a column tasks does not have.
    r = edge.rest(
        "PATCH", "workers", params={"id": "eq.gpu-1"},
        json={"status": "error", "metadata": {"error_reason": "CUDA", "error_time": "t", "self_terminated": True}},
        headers={"Prefer": "return=representation"},
    )  # fmt: skip
    assert r.status_code == 200 and len(r.json()) == 1
    row = worker_row(raw_conn, "gpu-1")
    assert (row["status"], row["reported_status"]) == ("active", "error")
    assert row["metadata"]["runpod_id"] == "pod-1" and row["reported_details"]["error_reason"] == "CUDA"
    r = edge.rest(
        "PATCH", "tasks", params={"id": f"eq.{held}", "worker_id": "eq.gpu-1", "status": "eq.In Progress"},
        json={"status": "Queued", "worker_id": None, "generation_started_at": None, "error_details": "CUDA"},
        headers={"Prefer": "return=representation"},
    )  # fmt: skip
    assert r.status_code == 400 and r.json()["code"] == "PGRST204"
    assert "'error_details' column of 'tasks'" in r.json()["message"]
    assert task_row(raw_conn, held)["status"] == "In Progress"
    r = edge.rest("PATCH", "tasks", params={"id": f"eq.{held}"}, json={"status": "Queued", "worker_id": None})
    assert r.status_code == 204 and task_row(raw_conn, held)["attempts"] == 1
    r = edge.http.patch("/rest/v1/workers", params={"id": "eq.gpu-1"}, json={"status": "error"},
                        headers={"apikey": edge.server.anon_key})  # fmt: skip
    assert r.status_code == 401 and json.loads(r.content)["code"] == "42501"


def test_the_table_calls_through_supabase_py(edge: Edge, raw_conn: Any) -> None:
    """The worker's REST client is supabase-py (postgrest-py): its own query encoding, ``.single()``
    (the singular Accept header) and ``.update()`` (``Prefer: return=representation``)."""
    from postgrest.exceptions import APIError
    from supabase import ClientOptions, create_client

    add_worker(raw_conn, "gpu-1", "active", runpod_id="pod-1")
    (held,) = add_tasks(raw_conn, 1, status="In Progress", worker_id="gpu-1")
    assert edge.server.base_url is not None
    options = ClientOptions(httpx_client=edge.http, auto_refresh_token=False, persist_session=False)
    client = create_client(edge.server.base_url, edge.server.service_role_key, options)
    found = (
        client.table("tasks").select("id, params, task_type, project_id")
        .eq("worker_id", "gpu-1").eq("status", "In Progress").limit(1).execute()
    )  # fmt: skip
    assert found.data == [{"id": held, "params": {}, "task_type": "generate", "project_id": None}]
    single = client.table("workers").select("id, metadata").eq("id", "gpu-1").single().execute()
    assert single.data == {"id": "gpu-1", "metadata": {"runpod_id": "pod-1"}}
    with pytest.raises(APIError) as none:
        client.table("workers").select("id").eq("id", "nobody").single().execute()
    assert none.value.code == "PGRST116"
    updated = (
        client.table("workers")
        .update({"status": "error", "metadata": {"error_reason": "x"}})
        .eq("id", "gpu-1")
        .execute()
    )
    assert (
        updated.data
        and updated.data[0]["status"] == "active"
        and updated.data[0]["reported_status"] == "error"
    )
    with pytest.raises(APIError) as refused:
        client.table("tasks").update({"status": "Queued", "error_details": "x"}).eq("id", held).execute()
    assert refused.value.code == "PGRST204"


# -- an orchestrator's children: create-task, get-orchestrator-children, the parent on its last child --

PROJECT = "5b3c2f4e-1111-4a2b-9c3d-000000000001"


def _parent(raw_conn: Any, segments: int | None = 2) -> str:
    """A travel orchestrator In Progress under gpu-1, as the worker holds it while its children run."""
    if not raw_conn.execute("select 1 from workers where id = 'gpu-1'").fetchone():
        add_worker(raw_conn, "gpu-1", "active")
    details = {} if segments is None else {"num_new_segments_to_generate": segments}
    row = raw_conn.execute(
        "insert into tasks (task_type, params, status, worker_id, project_id, generation_started_at)"
        " values ('travel_orchestrator', %s, 'In Progress', 'gpu-1', %s, now()) returning id::text as id",
        (json.dumps({"orchestrator_details": details}), PROJECT),
    ).fetchone()
    return str(row["id"])


def _child(edge: Edge, parent: str, index: int, after: str | None = None, **extra: Any) -> str:
    """One travel segment through create-task, as the worker's handler creates it."""
    child_id = str(uuid.uuid4())
    child_input = {"orchestrator_task_id_ref": parent, "orchestrator_run_id": parent, "segment_index": index,
                   "task_id": child_id, **extra}  # fmt: skip
    if after is not None:
        child_input["dependant_on"] = [after]
    r = edge.fn("create-task", {"family": "travel_segment", "project_id": PROJECT, "input": child_input})
    assert r.status_code == 200, r.text
    assert r.json() == {"task_id": child_id, "status": "Task queued"}
    return child_id


def _run(edge: Edge, raw_conn: Any, task_id: str) -> dict[str, Any]:
    """gpu-1 claims the task (it must be the one claimable) and completes it with a small file."""
    r = edge.fn("claim-next-task", {"worker_id": "gpu-1", "run_type": "gpu"})
    assert r.status_code == 200 and r.json()["task_id"] == task_id, r.text
    body = {"task_id": task_id, "file_data": base64.b64encode(b"segment").decode(), "filename": "seg.mp4"}
    r = edge.fn("complete_task", body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_create_task_takes_the_worker_passthrough_shape_and_refuses_the_legacy_body(
    edge: Edge, raw_conn: Any
) -> None:
    parent = _parent(raw_conn)
    # What the public workers send (add_task_to_db): refused since the app requires a family.
    legacy = {"task_id": str(uuid.uuid4()), "params": {"orchestrator_task_id_ref": parent},
              "task_type": "travel_segment", "project_id": PROJECT, "dependant_on": None}  # fmt: skip
    r = edge.fn("create-task", legacy)
    assert r.status_code == 400 and envelope_code(r) == "invalid_request_body"
    assert r.json()["message"] == "family field is required"
    first = _child(edge, parent, 0)
    second = _child(edge, parent, 1, after=first)
    row = task_row(raw_conn, second)
    assert (row["status"], row["task_type"], str(row["project_id"])) == ("Queued", "travel_segment", PROJECT)
    assert [str(d) for d in row["dependant_on"]] == [first]
    assert row["params"]["orchestrator_task_id_ref"] == parent and row["params"]["task_id"] == second
    # The chain: only the first child is claimable until it completes.
    counts = edge.fn("task-counts", {"run_type": "gpu"}).json()["totals"]
    assert (counts["queued_only"], counts["blocked_by_deps"]) == (1, 1)
    base = {"family": "travel_segment", "project_id": PROJECT, "input": {}}
    for body, status, message in (
        ({**base, "family": " "}, 400, "family must be a non-empty string when provided"),
        ({k: v for k, v in base.items() if k != "project_id"}, 400, "project_id required"),
        ({**base, "input": [1]}, 400, "input must be an object when family is provided"),
        ({**base, "input": {"task_id": first}}, 500, None),  # the id is taken
        ({**base, "input": {"dependant_on": ["not-a-uuid"]}}, 500, None),
        ({**base, "idempotency_key": "k-1"}, 500, None),  # no such column in this database
    ):
        r = edge.fn("create-task", body)
        assert r.status_code == status, (body, r.text)
        assert envelope_code(r) == ("task_insert_failed" if status == 500 else "invalid_request_body")
        assert message is None or r.json()["message"] == message
    r = edge.http.post("/functions/v1/create-task", content=b"{oops", headers=edge.bearer)
    assert r.status_code == 400 and envelope_code(r) == "invalid_json_body"
    r = edge.fn("create-task", base, headers={"Authorization": f"Bearer {edge.server.anon_key}"})
    assert r.status_code == 403 and envelope_code(r) == "forbidden"
    assert int(raw_conn.execute("select count(*) as n from tasks").fetchone()["n"]) == 3


def test_get_orchestrator_children_lists_every_task_naming_the_parent(edge: Edge, raw_conn: Any) -> None:
    parent = _parent(raw_conn)
    first = _child(edge, parent, 0)
    second = _child(edge, parent, 1, after=first)
    legacy = add_tasks(raw_conn, 1)[0]  # a child naming its parent the legacy way
    raw_conn.execute(
        "update tasks set params = %s where id = %s",
        (json.dumps({"orchestrator_details": {"orchestrator_task_id": parent}}), legacy),
    )
    add_tasks(raw_conn, 1)  # a stranger
    r = edge.fn("get-orchestrator-children", {"orchestrator_task_id": parent})
    assert r.status_code == 200
    children = r.json()["tasks"]
    assert [c["id"] for c in children] == [first, second, legacy]  # oldest first
    assert set(children[0]) == {"id", "task_type", "status", "params", "output_location"}
    assert children[0]["status"] == "Queued" and children[0]["params"]["segment_index"] == 0
    r = edge.fn("get-orchestrator-children", {"orchestrator_task_id": first})
    assert r.status_code == 200 and r.json() == {"tasks": []}
    r = edge.fn("get-orchestrator-children", {})
    assert (r.status_code, r.text) == (400, "orchestrator_task_id is required")
    r = edge.fn("get-orchestrator-children", {"orchestrator_task_id": parent}, headers={})
    assert (r.status_code, r.text) == (401, "Missing or invalid Authorization header")


def test_the_last_child_completes_the_parent_and_a_late_report_changes_nothing(
    edge: Edge, raw_conn: Any
) -> None:
    parent = _parent(raw_conn, segments=2)
    first = _child(edge, parent, 0)
    second = _child(edge, parent, 1, after=first)
    # The worker's "still orchestrating" report: refused, the row stays its own.
    r = edge.fn("update-task-status", {"task_id": parent, "status": "In Progress", "output_location": "Successfully enqueued 2 new segment tasks"})  # fmt: skip
    assert r.status_code == 409
    answer = _run(edge, raw_conn, first)
    assert answer["follow_up"] == {"status": "ok", "issues": []}
    assert task_row(raw_conn, parent)["status"] == "In Progress"  # one sibling still queued
    answer = _run(edge, raw_conn, second)
    assert answer["follow_up"] == {"status": "ok", "issues": []}
    row = task_row(raw_conn, parent)
    children = [task_row(raw_conn, t) for t in (first, second)]
    assert (row["status"], row["worker_id"], row["output_location"]) == ("Complete", "gpu-1", None)
    assert row["generation_processed_at"] >= children[1]["generation_processed_at"]
    assert row["generation_started_at"] == children[0]["generation_started_at"]  # its chain's start
    # A parent run again in a race reports the last child's output: the app's guard keeps what it wrote.
    storage_path = answer["public_url"].split("/image_uploads/", 1)[1]
    r = edge.fn("complete_task", {"task_id": parent, "storage_path": storage_path})
    assert r.status_code == 200
    again = task_row(raw_conn, parent)
    assert (again["status"], again["output_location"]) == ("Complete", None)
    assert again["generation_processed_at"] == row["generation_processed_at"]


def test_the_parent_fails_on_a_failed_or_missing_sibling_and_a_bad_reference_degrades_the_answer(
    edge: Edge, raw_conn: Any
) -> None:
    # A sibling failed: the parent fails once the other completes.
    parent = _parent(raw_conn, segments=2)
    first = _child(edge, parent, 0)
    second = _child(edge, parent, 1)  # independent of the first
    raw_conn.execute("update tasks set status = 'Failed' where id = %s", (first,))
    _run(edge, raw_conn, second)
    row = task_row(raw_conn, parent)
    assert (row["status"], row["error_message"]) == ("Failed", "1 of 2 segments failed")
    # Fewer siblings than the parent announced: failed too.
    short = _parent(raw_conn, segments=3)
    only = _child(edge, short, 0)
    _run(edge, raw_conn, only)
    row = task_row(raw_conn, short)
    assert (row["status"], row["error_message"]) == ("Failed", "Only 1 of 3 expected segments were found")
    # A child naming no task: completed all the same, the follow-up degraded and recorded.
    stray = _child(edge, str(uuid.uuid4()), 0)
    answer = _run(edge, raw_conn, stray)
    assert answer["follow_up"]["status"] == "degraded"
    assert answer["message"] == "Task completed with follow-up warnings"
    [issue] = answer["follow_up"]["issues"]
    assert issue["step"] == "orchestrator_completion" and issue["code"] == "orchestrator_follow_up_failed"
    row = task_row(raw_conn, stray)
    assert row["status"] == "Complete"
    assert row["result_data"]["completion_follow_up"]["issues"] == [issue]
    # A type the app does not count (not a segment) never completes a parent.
    other = _parent(raw_conn, segments=1)
    plain = add_tasks(raw_conn, 1)[0]
    raw_conn.execute(
        "update tasks set params = %s, project_id = %s where id = %s",
        (json.dumps({"orchestrator_task_id_ref": other}), PROJECT, plain),
    )
    answer = _run(edge, raw_conn, plain)
    assert answer["follow_up"]["status"] == "ok" and task_row(raw_conn, other)["status"] == "In Progress"
