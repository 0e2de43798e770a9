"""The app's Edge Functions the real worker calls, served over SQL: ``POST {SUPABASE_URL}/functions/v1/<name>``.

Part of the Supabase stand-in (``orchestrator.standins.postgrest``). The real worker (peteromallet/Headless-Wan2GP,
banodoco/Reigh-Worker: ``worker.py``, ``source/core/db/*.py``) claims, counts, completes and fails tasks
through Edge Functions of the app it serves, banodoco/reigh-app (read at commit 3a6fd3d), each rebuilt
here from its source with the same parameter names, checks, answers and status codes. This module
routes and authenticates (the app's ``_shared``) and serves claim-next-task, task-counts,
update-worker-model, generate-upload-url and the two an orchestrator task's handler calls, create-task and
get-orchestrator-children; ``orchestrator.standins.postgrest.edge_tasks`` serves complete_task (with the
parent's completion on its last child) and update-task-status, and
``orchestrator.standins.postgrest.edge_shared`` holds the reply shapes and database helpers they all use:

- ``_shared/edgeHandler.ts`` (``bootstrapEdgeHandler``): ``OPTIONS`` answers 200 ``{"ok": true}``; any
  method but ``POST`` answers 405 "Method not allowed" (``Allow: POST``); then the body is parsed
  ("loose": invalid JSON becomes ``{}``; "strict": 400 ``invalid_json_body`` / ``invalid_json_body_shape``;
  "none": the function parses it itself after authentication); then authentication. Errors are plain
  text for ``claim-next-task`` and the JSON envelope ``{error, errorCode, message, recoverable}``
  (``_shared/edgeRequest.ts`` ``edgeErrorResponse``) for the others.
- ``_shared/auth.ts`` (``authenticateRequest``): ``Authorization`` must start with ``Bearer `` (else 401
  "Missing or invalid Authorization header"); a token string-equal to the service-role key is the
  service role; anything else would be a user JWT or a personal access token looked up in
  ``user_api_tokens``: this stand-in has neither, so every other token is 403 "Invalid or expired
  token". No ``apikey`` header is needed (``supabase/config.toml``: ``verify_jwt = false``).
- ``claim-next-task/index.ts``: body ``worker_id`` (else ``edge_<uuid>``), ``run_type`` (``gpu``/``api``),
  ``same_model_only``, ``max_task_wait_minutes`` (a positive finite number, else 5), ``debug``; calls the
  RPC ``claim_next_task_service_role(p_worker_id, p_include_active => false, p_run_type,
  p_same_model_only, p_max_task_wait_minutes)`` through the same RPC path as ``/rest/v1/rpc``; 200
  ``{task_id, params, task_type, project_id}``, 204 with no body when nothing was claimed, 500
  "Internal server error" (text) when the RPC fails (an unknown worker id fails the foreign key; a
  worker the orchestrator is ending fails the tasks guard). The test knob ``lose_claim_answers`` makes a
  claim that committed answer 504 instead, as a gateway timeout would after the database wrote it.
- ``task-counts/index.ts``: 200 ``{mode: "count", timestamp, run_type_filter_requested, run_type_filter,
  totals: {queued_only, active_only, queued_plus_active, blocked_by_capacity, blocked_by_deps,
  blocked_by_settings, potentially_claimable}, queued_tasks, active_tasks, users}``.
- ``complete_task/handler.ts`` and ``request.ts``: ``{task_id, file_data (base64), filename,
  [first_frame_data, first_frame_filename]}`` or ``{task_id, storage_path, [thumbnail_storage_path,
  output_location]}``; 400 envelopes for a missing field, bad base64, multipart; 404 for an unknown task
  or a referenced file that is not in storage; 403 for a storage path of another task; then
  ``UPDATE tasks SET status = 'Complete', output_location, generation_processed_at WHERE id AND status =
  'In Progress'``, which answers 200 ``{success, public_url, thumbnail_url, follow_up, message}`` even
  when no row was In Progress any more; a failing UPDATE marks the task Failed and answers 500.
- ``update-task-status/index.ts`` and its modules: ``{task_id, status, output_location, attempts,
  error_details (-> error_message), clear_worker (-> worker_id, generation_started_at NULL),
  reset_generation_started_at}``; 400 (text) for missing or invalid fields; 500 "Failed to check current
  task status: ..." for an unknown or malformed id (PostgREST's ``.single()`` fails); 409 ``{success:
  false, task_id, current_status, requested_status, allowed_transitions, message}`` outside the
  transition table (Queued -> In Progress/Failed/Cancelled; In Progress -> Complete/Failed/Cancelled/
  Queued; terminal states final), except the timestamp-only reset of an In Progress task; 200
  ``{success: true, task_id, status, message}``; 500 "Database error: ..." when the UPDATE fails.
- ``update-worker-model/index.ts``: requires ``worker_id`` and ``current_model`` (400 "Missing required
  field: ..." as text, which is what the real worker's body ``{worker_id, model}`` gets); sets
  ``current_model``, ``last_heartbeat``, ``status = 'active'`` or inserts the row.
- ``generate-upload-url/index.ts``: ``{task_id, filename, content_type, generate_thumbnail_url}`` -> 200
  ``{upload_url, storage_path: "<user>/tasks/<task>/<file>", token, expires_at, [thumbnail_*]}``; 400
  ``{error: "task_id, filename, and content_type required"}``; 404 ``{error: "Task not found"}``.
- ``create-task/index.ts`` (since 5cac01b, 2026-03-26; "strict" body, JSON errors, service role or a
  user): ``{family, project_id, input, [idempotency_key]}``. No ``family`` key: 400
  ``invalid_request_body`` "family field is required"; an empty ``family``, no ``project_id`` or an
  ``input`` that is not an object: 400 ``invalid_request_body`` with the app's message; then the project's
  ``aspect_ratio`` is read (no row: 404 ``project_not_found`` "Project not found"). A family without a
  resolver of the app's registry is inserted by ``resolvers/workerPassthrough.ts``, the path of the
  worker's child tasks: ``task_type`` = the family, ``params`` = ``input`` whole, ``id`` =
  ``input.task_id`` (the worker picks the id, so that the next child's ``dependant_on`` names it),
  ``dependant_on`` = ``input.dependant_on`` when it is an array, ``status`` Queued. 200 ``{task_id,
  status: "Task queued"}``; an INSERT the database refuses (a malformed uuid, an id taken): 500
  ``task_insert_failed`` with its message. The public workers (Reigh-Worker @4d09184
  ``source/core/db/task_completion.py``, Headless-Wan2GP @50066ea ``source/db_operations.py``,
  ``add_task_to_db``) send the body the app took until then, ``{task_id, params, task_type, project_id,
  dependant_on}`` (reigh-app 395bfa6 ``create-task/request.ts``); the app at 3a6fd3d answers it 400
  "family field is required", and so does this stand-in: the deployed worker, newer than both, must send
  the passthrough shape, which is what ours sends.
- ``get-orchestrator-children/index.ts`` ("strict" body, text errors): ``{orchestrator_task_id}`` (else 400
  "orchestrator_task_id is required") -> 200 ``{tasks: [{id, task_type, status, params,
  output_location}]}``, oldest first, every task whose params name it through
  ``orchestration_contract.orchestrator_task_id``, ``orchestrator_task_id_ref``, ``orchestrator_task_id``
  or ``orchestrator_details.orchestrator_task_id`` (``_shared/orchestratorReference.ts``); a query the
  database refuses: 500 "Error fetching tasks: ...".

Known differences (the app's tables this database does not have): no users, projects, credits,
``task_types`` or generations, so the owner of every task is the app's fallback ``system`` user,
``run_type`` filters nothing, ``task-counts`` counts the tasks of ``orchestrator_claimable_tasks`` whose
dependencies are all Complete (the app's ``count_eligible_tasks_service_role``, migration
20260121000000, checks ``all_dependencies_complete``; the view itself does not) with no per-user
capacity (``blocked_by_capacity`` and ``blocked_by_settings`` are 0, ``users`` is empty), and
``complete_task`` creates no generation, places nothing on a timeline and bills nothing (its parent
completion runs, see :mod:`.edge_tasks`); ``create-task`` rebuilds none of the app's family resolvers
(every family is inserted as the worker passthrough inserts it, where the app would validate and reshape
the ones its frontend sends, and with no ``task_types`` table no family is refused as unknown), reads a
project only when a ``projects`` table exists, rate-limits nobody and, ``tasks`` having no
``idempotency_key`` column here, answers a request naming one 500 as the app's INSERT into such a table
would; ``update-task-status`` calls ``cascade_task_failure`` only when the database has
it and skips the cancellation billing call; no rate limiting; the claim RPC is whatever the database has:
over our migrations alone that is ours (migrations/20261206000300), which locks the row it takes, so two
racing claims never get the same task, where the app's (which locks nothing and returns the row its
CASE-guarded UPDATE touched) can hand one task to two workers: that race is not reproduced here; the Edge runtime's own 404 for an unknown
function is ``{"code": "NOT_FOUND", "message": "Requested function was not found"}``.
"""

from __future__ import annotations

import json
import math
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestrator.standins.postgrest import edge_tasks
from orchestrator.standins.postgrest.common import SERVICE_ROLE, HttpError, Reply, json_reply
from orchestrator.standins.postgrest.edge_shared import (
    SYSTEM_USER_ID,
    Backend,
    Denied,
    EdgeContext,
    bootstrap_error,
    envelope,
    is_object,
    json_answer,
    now_iso,
    text_reply,
)
from orchestrator.standins.postgrest.edge_tasks import ALLOWED_TRANSITIONS, TASK_STATUSES
from orchestrator.standins.postgrest.storage import MEDIA_BUCKET

__all__ = [
    "ALLOWED_TRANSITIONS",
    "FUNCTION_NAMES",
    "SYSTEM_USER_ID",
    "TASK_STATUSES",
    "Backend",
    "EdgeFunctions",
]


@dataclass(frozen=True)
class _Auth:
    service_role: bool


@dataclass(frozen=True)
class _Route:
    parse: str  # "none" | "loose" | "strict"
    errors: str  # "text" | "json"
    service_role_only: bool
    handler: Callable[[EdgeFunctions, dict[str, Any], bytes, dict[str, str]], Reply]


class EdgeFunctions(EdgeContext):
    """Serves ``/functions/v1/<name>`` for one stand-in server."""

    # -- entry point --------------------------------------------------------------------------------

    def handle(self, name: str, method: str, headers: dict[str, str], raw: bytes) -> Reply:
        route = _ROUTES.get(name)
        if route is None:
            return json_reply(404, {"code": "NOT_FOUND", "message": "Requested function was not found"})
        if method == "OPTIONS":
            return json_answer(200, {"ok": True}, cors=True)
        if method != "POST":
            return bootstrap_error("Method not allowed", 405, route.errors, {"Allow": "POST"})
        body: dict[str, Any] = {}
        if route.parse != "none" and raw:
            try:
                parsed = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                if route.parse == "strict":
                    return self._parse_failure("invalid_json_body", "Invalid JSON body", route.errors)
                parsed = {}
            if not is_object(parsed):
                if route.parse == "strict":
                    return self._parse_failure(
                        "invalid_json_body_shape", "JSON body must be an object", route.errors
                    )
                parsed = {}
            body = parsed
        try:
            self._authenticate(headers, route)
        except Denied as denied:
            return denied.reply
        try:
            return route.handler(self, body, raw, headers)
        except Denied as denied:
            return denied.reply
        except HttpError:
            # The database could not be reached (the pool's PGRST000/PGRST003): the app's catch-all answer.
            return bootstrap_error("Internal server error", 500, route.errors)

    @staticmethod
    def _parse_failure(code: str, message: str, fmt: str) -> Reply:
        if fmt == "text":
            return text_reply(400, message)
        return envelope(400, code, message, False)

    def _authenticate(self, headers: dict[str, str], route: _Route) -> _Auth:
        header = headers.get("authorization")
        if header is None or not header.startswith("Bearer "):
            raise Denied(bootstrap_error("Missing or invalid Authorization header", 401, route.errors))
        if header[7:] == self.backend.service_role_key:
            return _Auth(service_role=True)
        # A user JWT (auth.getUser) or a personal access token (user_api_tokens): this project has none.
        raise Denied(bootstrap_error("Invalid or expired token", 403, route.errors))

    # -- claim-next-task ----------------------------------------------------------------------------

    def claim_next_task(self, body: dict[str, Any], raw: bytes, headers: dict[str, str]) -> Reply:
        worker_id = body["worker_id"] if isinstance(body.get("worker_id"), str) else f"edge_{uuid.uuid4()}"
        run_type = body.get("run_type") if body.get("run_type") in ("gpu", "api") else None
        wait = body.get("max_task_wait_minutes")
        if (
            isinstance(wait, bool)
            or not isinstance(wait, int | float)
            or not (wait > 0 and math.isfinite(wait))
        ):
            wait = 5
        args = {
            "p_worker_id": worker_id,
            "p_include_active": False,
            "p_run_type": run_type,
            "p_same_model_only": body.get("same_model_only") is True,
            "p_max_task_wait_minutes": wait,
        }
        try:
            result = json.loads(
                self.backend.call(
                    "claim_next_task_service_role",
                    args,
                    role=SERVICE_ROLE,
                    method="POST",
                    path="/rest/v1/rpc/claim_next_task_service_role",
                )
            )
        except HttpError:
            # The real function logs the RPC's error to system_logs; the server logs the 500.
            return text_reply(500, "Internal server error")
        if not result:
            return Reply(204, None, {})
        if self.backend.take_lost_claim():
            return text_reply(504, "upstream request timeout")  # committed; the answer lost on the way
        task = result[0]
        return json_reply(
            200,
            {k: task.get(k) for k in ("task_id", "params", "task_type", "project_id")},
            {"Content-Type": "application/json"},
        )

    # -- task-counts --------------------------------------------------------------------------------

    def task_counts(self, body: dict[str, Any], raw: bytes, headers: dict[str, str]) -> Reply:
        run_type = body.get("run_type") if body.get("run_type") in ("gpu", "api") else None
        try:
            with self.sql() as conn:
                cur = conn.cursor(row_factory=dict_row)
                totals = cur.execute(_COUNTS_SQL).fetchone() or {}
                queued = cur.execute(_QUEUED_TASKS_SQL).fetchall()
                active = cur.execute(_ACTIVE_TASKS_SQL).fetchall()
        except psycopg.Error as exc:
            return text_reply(500, f"Internal server error: {exc}")
        queued_only = int(totals.get("queued_only") or 0)
        active_only = int(totals.get("active_only") or 0)
        return json_reply(
            200,
            {
                "mode": "count",
                "timestamp": now_iso(),
                "run_type_filter_requested": run_type,
                "run_type_filter": run_type,
                "totals": {
                    "queued_only": queued_only,
                    "active_only": active_only,
                    "queued_plus_active": queued_only + active_only,
                    "blocked_by_capacity": 0,
                    "blocked_by_deps": int(totals.get("blocked_by_deps") or 0),
                    "blocked_by_settings": 0,
                    "potentially_claimable": queued_only,
                },
                "queued_tasks": [
                    {
                        "task_id": str(r["id"]),
                        "task_type": r["task_type"],
                        "user_id": SYSTEM_USER_ID,
                        "created_at": r["created_at"].isoformat(),
                    }
                    for r in queued
                ],
                "active_tasks": [
                    {
                        "task_id": str(r["id"]),
                        "task_type": r["task_type"],
                        "worker_id": r["worker_id"],
                        "user_id": SYSTEM_USER_ID,
                        "started_at": r["updated_at"].isoformat() if r["updated_at"] else None,
                    }
                    for r in active
                ],
                "users": [],
            },
            {"Content-Type": "application/json"},
        )

    # -- update-worker-model ------------------------------------------------------------------------

    def update_worker_model(self, body: dict[str, Any], raw: bytes, headers: dict[str, str]) -> Reply:
        worker_id = body["worker_id"].strip() if isinstance(body.get("worker_id"), str) else ""
        model = body["current_model"].strip() if isinstance(body.get("current_model"), str) else ""
        instance = body.get("instance_type")
        instance_type = instance.strip() if isinstance(instance, str) and instance.strip() else "external"
        if not worker_id:
            return text_reply(400, "Missing required field: worker_id")
        if not model:
            return text_reply(400, "Missing required field: current_model")
        now = now_iso()
        try:
            rows = self.rows(
                "update public.workers set current_model = %s, last_heartbeat = %s, status = 'active'"
                " where id = %s returning last_heartbeat",
                (model, now, worker_id),
            )
            action = "updated"
            if not rows:
                action = "inserted"
                rows = self.rows(
                    "insert into public.workers (id, instance_type, status, last_heartbeat, current_model)"
                    " values (%s, %s, 'active', %s, %s) returning last_heartbeat",
                    (worker_id, instance_type, now, model),
                )
        except psycopg.Error as exc:
            return text_reply(500, f"Database error: {exc.diag.message_primary or exc}")
        beat = rows[0]["last_heartbeat"] if rows else None
        return json_reply(
            200,
            {
                "success": True,
                "worker_id": worker_id,
                "current_model": model,
                "last_heartbeat": beat.isoformat() if beat is not None else None,
                "action": action,
                "message": f"Worker model updated to '{model}'",
            },
            {"Content-Type": "application/json"},
        )

    # -- generate-upload-url ------------------------------------------------------------------------

    def generate_upload_url(self, body: dict[str, Any], raw: bytes, headers: dict[str, str]) -> Reply:
        raw_id = body.get("task_id")
        task_id = (
            str(raw_id) if isinstance(raw_id, str | int | float) and not isinstance(raw_id, bool) else ""
        )
        filename = body.get("filename") if isinstance(body.get("filename"), str) else ""
        content_type = body.get("content_type") if isinstance(body.get("content_type"), str) else ""
        if not task_id or not filename or not content_type:
            return json_answer(400, {"error": "task_id, filename, and content_type required"}, cors=True)
        try:
            user_id = self.task_user_id(task_id)
        except Denied:
            return json_answer(404, {"error": "Task not found"}, cors=True)
        path = f"{user_id}/tasks/{task_id}/{filename}"
        token = self.store.sign_upload(MEDIA_BUCKET, path)
        answer: dict[str, Any] = {
            "upload_url": self._signed_url(path, token),
            "storage_path": path,
            "token": token,
            "expires_at": now_iso(3600),
        }
        if body.get("generate_thumbnail_url") is True:
            thumb = f"{user_id}/tasks/{task_id}/thumbnails/thumb_{int(time.time() * 1000)}_{secrets.token_hex(3)}.jpg"
            thumb_token = self.store.sign_upload(MEDIA_BUCKET, thumb)
            answer.update(
                thumbnail_upload_url=self._signed_url(thumb, thumb_token),
                thumbnail_storage_path=thumb,
                thumbnail_token=thumb_token,
            )
        return json_answer(200, answer, cors=True)

    def _signed_url(self, path: str, token: str) -> str:
        return f"{self.backend.base_url}/storage/v1/object/upload/sign/{MEDIA_BUCKET}/{path}?token={token}"

    # -- create-task --------------------------------------------------------------------------------

    def create_task(self, body: dict[str, Any], raw: bytes, headers: dict[str, str]) -> Reply:
        if "family" not in body:
            return envelope(400, "invalid_request_body", "family field is required", False)
        family = _trimmed(body.get("family"))
        if family is None:
            return envelope(
                400, "invalid_request_body", "family must be a non-empty string when provided", False
            )
        project_id = _trimmed(body.get("project_id"))
        if project_id is None:
            return envelope(400, "invalid_request_body", "project_id required", False)
        request_input = body.get("input")
        if not isinstance(request_input, dict):
            return envelope(
                400, "invalid_request_body", "input must be an object when family is provided", False
            )
        if not self._project_found(project_id):
            return envelope(404, "project_not_found", "Project not found", False)
        if _trimmed(body.get("idempotency_key")) is not None:
            # The app inserts the key with the row; this database's tasks has no such column (PGRST204).
            return envelope(
                500,
                "task_insert_failed",
                "Could not find the 'idempotency_key' column of 'tasks' in the schema cache",
            )
        # resolvers/workerPassthrough.ts: the input is the params, whole.
        task_id = request_input.get("task_id") if isinstance(request_input.get("task_id"), str) else None
        depends = request_input.get("dependant_on")
        dependant_on = [str(d) for d in depends] if isinstance(depends, list) else None
        try:
            rows = self.rows(
                "insert into public.tasks (id, project_id, task_type, params, status, created_at, dependant_on)"
                " values (coalesce(%s::uuid, gen_random_uuid()), %s::uuid, %s, %s::jsonb, 'Queued', %s,"
                " %s::uuid[]) returning id::text as id",
                (task_id, project_id, family, json.dumps(request_input), now_iso(), dependant_on),
            )
        except psycopg.Error as exc:
            return envelope(500, "task_insert_failed", exc.diag.message_primary or str(exc))
        return json_answer(200, {"task_id": rows[0]["id"], "status": "Task queued"}, cors=True)

    def _project_found(self, project_id: str) -> bool:
        """The aspect-ratio read of a service-role request (``.single()``): only where ``projects`` exists."""
        try:
            if not self.rows("select 1 from pg_class where oid = to_regclass('public.projects')"):
                return True
            return len(self.rows("select 1 from public.projects where id::text = %s", (project_id,))) == 1
        except psycopg.Error:
            return False

    # -- get-orchestrator-children ------------------------------------------------------------------

    def get_orchestrator_children(self, body: dict[str, Any], raw: bytes, headers: dict[str, str]) -> Reply:
        parent = body.get("orchestrator_task_id")
        if not isinstance(parent, str) or not parent:
            return text_reply(400, "orchestrator_task_id is required")
        try:
            rows = self.rows(_CHILDREN_SQL, (parent,) * 4)
        except psycopg.Error as exc:
            return text_reply(500, f"Error fetching tasks: {exc.diag.message_primary or exc}")
        return json_reply(200, {"tasks": rows}, {"Content-Type": "application/json"})


def _trimmed(value: Any) -> str | None:
    """``asNonEmptyString``: a string with something in it once trimmed, trimmed."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


# What task-counts reads (see the module docstring for how it differs from the app's RPCs).
# A queued task with a dependency not yet Complete (the app's ``all_dependencies_complete``, on its
# uuid[] column or the single uuid it had before): blocked, not claimable.
_DEPENDENCY_PENDING = """
exists (select 1 from jsonb_array_elements_text(
                case jsonb_typeof(to_jsonb(t.dependant_on)) when 'array' then to_jsonb(t.dependant_on)
                     else jsonb_build_array(to_jsonb(t.dependant_on)) end) d(dep_id)
         where not exists (select 1 from public.tasks x where x.id = d.dep_id::uuid and x.status = 'Complete'))
"""
_COUNTS_SQL = f"""
select (select count(*) from public.orchestrator_claimable_tasks c join public.tasks t on t.id = c.id
         where t.dependant_on is null or not {_DEPENDENCY_PENDING}) as queued_only,
       (select count(*) from public.tasks t
         where t.status = 'In Progress' and coalesce(t.task_type, '') not ilike '%orchestrator%') as active_only,
       (select count(*) from public.tasks t
         where t.status = 'Queued' and t.dependant_on is not null and {_DEPENDENCY_PENDING}) as blocked_by_deps
"""
_QUEUED_TASKS_SQL = f"""
select c.id, c.task_type, c.created_at from public.orchestrator_claimable_tasks c join public.tasks t on t.id = c.id
 where coalesce(c.task_type, '') not ilike '%orchestrator%'
   and (t.dependant_on is null or not {_DEPENDENCY_PENDING})
 order by c.created_at limit 100
"""
_ACTIVE_TASKS_SQL = """
select t.id, t.task_type, t.worker_id, t.updated_at from public.tasks t
 where t.status = 'In Progress' and t.worker_id is not null
   and coalesce(t.task_type, '') not ilike '%orchestrator%'
 order by t.updated_at limit 100
"""


# get-orchestrator-children's one ``.or(...)``: the canonical references and the legacy ones alike.
_CHILDREN_SQL = """
select t.id::text as id, t.task_type, t.status::text as status, t.params, t.output_location
  from public.tasks t
 where t.params -> 'orchestration_contract' ->> 'orchestrator_task_id' = %s
    or t.params ->> 'orchestrator_task_id_ref' = %s
    or t.params ->> 'orchestrator_task_id' = %s
    or t.params -> 'orchestrator_details' ->> 'orchestrator_task_id' = %s
 order by t.created_at
"""


_ROUTES: dict[str, _Route] = {
    "claim-next-task": _Route("loose", "text", False, EdgeFunctions.claim_next_task),
    "task-counts": _Route("loose", "json", False, EdgeFunctions.task_counts),
    "complete_task": _Route("none", "json", False, edge_tasks.complete_task),
    "update-task-status": _Route("none", "json", False, edge_tasks.update_task_status),
    "update-worker-model": _Route("strict", "json", True, EdgeFunctions.update_worker_model),
    "generate-upload-url": _Route("strict", "json", False, EdgeFunctions.generate_upload_url),
    "create-task": _Route("strict", "json", False, EdgeFunctions.create_task),
    "get-orchestrator-children": _Route("strict", "text", False, EdgeFunctions.get_orchestrator_children),
}

FUNCTION_NAMES: tuple[str, ...] = tuple(_ROUTES)
