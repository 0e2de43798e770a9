"""The app's Edge Functions the real worker calls, served over SQL: ``POST {SUPABASE_URL}/functions/v1/<name>``.

Part of the Supabase stand-in (``orchestrator.standins.postgrest``). The real worker (peteromallet/Headless-Wan2GP,
banodoco/Reigh-Worker: ``worker.py``, ``source/core/db/*.py``) claims, counts, completes and fails tasks
through Edge Functions of the app it serves, banodoco/reigh-app (read at commit 3a6fd3d), each rebuilt
here from its source with the same parameter names, checks, answers and status codes:

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
  worker the orchestrator is ending fails the tasks guard).
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

Known differences (the app's tables this database does not have): no users, projects, credits,
``task_types`` or generations, so the owner of every task is the app's fallback ``system`` user,
``run_type`` filters nothing, ``task-counts`` counts ``orchestrator_claimable_tasks`` (no per-user
capacity: ``blocked_by_capacity`` and ``blocked_by_settings`` are 0, ``users`` is empty), and
``complete_task`` creates no generation, places nothing on a timeline, bills nothing and runs no
orchestrator follow-up; ``update-task-status`` calls ``cascade_task_failure`` only when the database has
it and skips the cancellation billing call; no rate limiting; the claim RPC is whatever the database has:
over our migrations alone that is ours (migrations/20261206000300), which locks the row it takes, so two
racing claims never get the same task, where the app's (which locks nothing and returns the row its
CASE-guarded UPDATE touched) can hand one task to two workers: that race is not reproduced here; the Edge runtime's own 404 for an unknown
function is ``{"code": "NOT_FOUND", "message": "Requested function was not found"}``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import mimetypes
import secrets
import string
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row

from orchestrator.standins.postgrest.common import SERVICE_ROLE, HttpError, Reply, json_reply
from orchestrator.standins.postgrest.storage import MEDIA_BUCKET, ObjectStore

SYSTEM_USER_ID = "system"  # reigh-app _shared/auth.ts: the owner when a task's project cannot be resolved
TASK_STATUSES = ("Queued", "In Progress", "Complete", "Failed", "Cancelled")
ALLOWED_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "Queued": ("In Progress", "Failed", "Cancelled"),
    "In Progress": ("Complete", "Failed", "Cancelled", "Queued"),
    "Complete": (),
    "Failed": (),
    "Cancelled": (),
}
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
}


class Backend(Protocol):
    """What the Edge Functions need from the server: the RPC path, SQL as the service role, its URL."""

    @property
    def base_url(self) -> str | None: ...

    @property
    def service_role_key(self) -> str: ...

    def call(self, function: str, body: Any, *, role: str, method: str, path: str) -> str: ...

    def transaction(self, role: str) -> AbstractContextManager[psycopg.Connection[Any]]: ...


@dataclass(frozen=True)
class _Auth:
    service_role: bool


class _Denied(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _now_iso(offset_sec: float = 0.0) -> str:
    """JavaScript's ``new Date().toISOString()``: milliseconds and a Z."""
    moment = datetime.now(UTC) + timedelta(seconds=offset_sec)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, message.encode(), {"Content-Type": "text/plain;charset=UTF-8", **(headers or {})})


def _json(status: int, value: Any, *, cors: bool = False) -> Reply:
    return json_reply(status, value, _CORS if cors else None)


def _envelope(status: int, code: str, message: str, recoverable: bool | None = None, headers: dict[str, str] | None = None) -> Reply:
    value = {
        "error": code,
        "errorCode": code,
        "message": message,
        "recoverable": (status >= 500 or status == 429) if recoverable is None else recoverable,
    }
    return json_reply(status, value, {"Access-Control-Allow-Origin": "*", **(headers or {})})


def _derive_error_code(message: str, status: int) -> str:
    normalized = message.strip().lower()
    if normalized == "method not allowed" or status == 405:
        return "method_not_allowed"
    if normalized == "authentication failed" or status == 401:
        return "authentication_failed"
    if normalized == "unauthorized - service role required" or ("unauthorized" in normalized and "service role" in normalized):
        return "service_role_required"
    if normalized == "internal server error" or status >= 500:
        return "internal_server_error"
    if status == 403:
        return "forbidden"
    return "request_failed"


def _bootstrap_error(message: str, status: int, fmt: str, headers: dict[str, str] | None = None) -> Reply:
    if fmt == "text":
        return _text(status, message, headers)
    return _envelope(status, _derive_error_code(message, status), message, None, headers)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def _nonempty_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _content_type(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def _decode_base64(data: str) -> bytes:
    """``atob``: ASCII whitespace is ignored, anything else outside the alphabet is an error."""
    cleaned = "".join(ch for ch in data if ch not in string.whitespace)
    if len(cleaned) % 4:
        cleaned += "=" * (4 - len(cleaned) % 4)
    return base64.b64decode(cleaned, validate=True)


@dataclass(frozen=True)
class _Route:
    parse: str  # "none" | "loose" | "strict"
    errors: str  # "text" | "json"
    service_role_only: bool
    handler: Callable[[EdgeFunctions, dict[str, Any], bytes, dict[str, str]], Reply]


class EdgeFunctions:
    """Serves ``/functions/v1/<name>`` for one stand-in server."""

    def __init__(self, backend: Backend, store: ObjectStore) -> None:
        self.backend = backend
        self.store = store

    # -- entry point --------------------------------------------------------------------------------

    def handle(self, name: str, method: str, headers: dict[str, str], raw: bytes) -> Reply:
        route = _ROUTES.get(name)
        if route is None:
            return json_reply(404, {"code": "NOT_FOUND", "message": "Requested function was not found"})
        if method == "OPTIONS":
            return _json(200, {"ok": True}, cors=True)
        if method != "POST":
            return _bootstrap_error("Method not allowed", 405, route.errors, {"Allow": "POST"})
        body: dict[str, Any] = {}
        if route.parse != "none" and raw:
            try:
                parsed = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                if route.parse == "strict":
                    return self._parse_failure("invalid_json_body", "Invalid JSON body", route.errors)
                parsed = {}
            if not _is_object(parsed):
                if route.parse == "strict":
                    return self._parse_failure("invalid_json_body_shape", "JSON body must be an object", route.errors)
                parsed = {}
            body = parsed
        try:
            self._authenticate(headers, route)
        except _Denied as denied:
            return denied.reply
        try:
            return route.handler(self, body, raw, headers)
        except _Denied as denied:
            return denied.reply
        except HttpError:
            # The database could not be reached (the pool's PGRST000/PGRST003): the app's catch-all answer.
            return _bootstrap_error("Internal server error", 500, route.errors)

    @staticmethod
    def _parse_failure(code: str, message: str, fmt: str) -> Reply:
        if fmt == "text":
            return _text(400, message)
        return _envelope(400, code, message, False)

    def _authenticate(self, headers: dict[str, str], route: _Route) -> _Auth:
        header = headers.get("authorization")
        if header is None or not header.startswith("Bearer "):
            raise _Denied(_bootstrap_error("Missing or invalid Authorization header", 401, route.errors))
        if header[7:] == self.backend.service_role_key:
            return _Auth(service_role=True)
        # A user JWT (auth.getUser) or a personal access token (user_api_tokens): this project has none.
        raise _Denied(_bootstrap_error("Invalid or expired token", 403, route.errors))

    # -- database helpers ---------------------------------------------------------------------------

    def _sql(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """One supabase-js call of the function: its own transaction, as the service role."""
        return self.backend.transaction(SERVICE_ROLE)

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._sql() as conn:
            cur = conn.cursor(row_factory=dict_row)
            cur.execute(query, params or None)
            return list(cur.fetchall()) if cur.description else []

    def _single(self, query: str, params: tuple[Any, ...]) -> dict[str, Any]:
        """PostgREST's ``.single()``: exactly one row, else the error supabase-js returns (PGRST116)."""
        rows = self._rows(query, params)
        if len(rows) != 1:
            raise _SingleError("JSON object requested, multiple (or no) rows returned")
        return rows[0]

    def _task_user_id(self, task_id: str) -> str:
        """``getTaskUserId``: the task's project owner, or the ``system`` fallback; 404 when no task."""
        try:
            task = self._single("select project_id from public.tasks where id = %s", (task_id,))
        except (psycopg.Error, _SingleError) as exc:
            raise _Denied(_json(404, {"error": "Task not found"})) from exc
        project_id = task.get("project_id")
        if project_id is None:
            return SYSTEM_USER_ID
        try:
            owner = self._single("select user_id from public.projects where id = %s", (str(project_id),))
        except (psycopg.Error, _SingleError):
            return SYSTEM_USER_ID
        return str(owner.get("user_id") or SYSTEM_USER_ID)

    def _public_url(self, path: str) -> str:
        return f"{self.backend.base_url}/storage/v1/object/public/{MEDIA_BUCKET}/{path}"

    # -- claim-next-task ----------------------------------------------------------------------------

    def claim_next_task(self, body: dict[str, Any], raw: bytes, headers: dict[str, str]) -> Reply:
        worker_id = body["worker_id"] if isinstance(body.get("worker_id"), str) else f"edge_{uuid.uuid4()}"
        run_type = body.get("run_type") if body.get("run_type") in ("gpu", "api") else None
        wait = body.get("max_task_wait_minutes")
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not (wait > 0 and math.isfinite(wait)):
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
                    "claim_next_task_service_role", args, role=SERVICE_ROLE, method="POST",
                    path="/rest/v1/rpc/claim_next_task_service_role",
                )
            )
        except HttpError:
            # The real function logs the RPC's error to system_logs; the server logs the 500.
            return _text(500, "Internal server error")
        if not result:
            return Reply(204, None, {})
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
            with self._sql() as conn:
                cur = conn.cursor(row_factory=dict_row)
                totals = cur.execute(_COUNTS_SQL).fetchone() or {}
                queued = cur.execute(_QUEUED_TASKS_SQL).fetchall()
                active = cur.execute(_ACTIVE_TASKS_SQL).fetchall()
        except psycopg.Error as exc:
            return _text(500, f"Internal server error: {exc}")
        queued_only = int(totals.get("queued_only") or 0)
        active_only = int(totals.get("active_only") or 0)
        return json_reply(
            200,
            {
                "mode": "count",
                "timestamp": _now_iso(),
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
                    {"task_id": str(r["id"]), "task_type": r["task_type"], "user_id": SYSTEM_USER_ID,
                     "created_at": r["created_at"].isoformat()}
                    for r in queued
                ],
                "active_tasks": [
                    {"task_id": str(r["id"]), "task_type": r["task_type"], "worker_id": r["worker_id"],
                     "user_id": SYSTEM_USER_ID, "started_at": r["updated_at"].isoformat() if r["updated_at"] else None}
                    for r in active
                ],
                "users": [],
            },
            {"Content-Type": "application/json"},
        )

    # -- complete_task ------------------------------------------------------------------------------

    def complete_task(self, body: dict[str, Any], raw: bytes, headers: dict[str, str]) -> Reply:
        if "multipart/form-data" in headers.get("content-type", ""):
            return _envelope(
                400, "multipart_not_supported",
                "Multipart upload (MODE 2) is not supported. Use MODE 1 (base64 JSON) or MODE 3 (pre-signed URL).", False,
            )
        try:
            parsed = json.loads(raw) if raw else {}
        except (ValueError, UnicodeDecodeError):
            return _envelope(400, "invalid_json_body", "Invalid JSON body", False)
        if not _is_object(parsed):
            return _envelope(400, "invalid_json_body_shape", "JSON body must be an object", False)
        request = _parse_completion(parsed)
        if isinstance(request, Reply):
            return request

        if request.other_task_path:
            try:
                task = self._single("select task_type from public.tasks where id = %s", (request.task_id,))
                allowed = "orchestrator" in str(task.get("task_type") or "")
            except (psycopg.Error, _SingleError):
                allowed = False
            if not allowed:
                return _envelope(
                    403, "storage_path_access_denied",
                    "storage_path does not match task_id. Files must be uploaded for the correct task.",
                )

        try:
            user_id = self._task_user_id(request.task_id)
        except _Denied:
            return _envelope(404, "task_actor_resolution_failed", "Task not found")
        if (
            request.storage_path
            and not request.presigned
            and not self.store.exists(MEDIA_BUCKET, request.storage_path.strip("/"))
        ):
            return _envelope(
                404, "storage_reference_not_found", "Referenced file does not exist or is not accessible in storage"
            )

        thumbnail_url: str | None = None
        if request.storage_path:
            public_url = self._public_url(request.storage_path)
            if request.thumbnail_storage_path:
                thumbnail_url = self._public_url(request.thumbnail_storage_path)
        else:
            assert request.file_data is not None and request.filename is not None
            path = f"{user_id}/tasks/{request.task_id}/{request.filename}"
            self.store.put(MEDIA_BUCKET, path, request.file_data, _content_type(request.filename))
            public_url = self._public_url(path)
            if request.thumbnail_data is not None and request.thumbnail_filename:
                thumb = f"{user_id}/tasks/{request.task_id}/thumbnails/{request.thumbnail_filename}"
                self.store.put(MEDIA_BUCKET, thumb, request.thumbnail_data, _content_type(request.thumbnail_filename))
                thumbnail_url = self._public_url(thumb)
            elif _content_type(request.filename).startswith("image/"):
                thumbnail_url = public_url  # the app's fallback without image transformations

        try:
            self._rows(
                "update public.tasks set status = 'Complete', output_location = %s, generation_processed_at = %s"
                " where id = %s and status = 'In Progress'",
                (request.output_location or public_url, _now_iso(), request.task_id),
            )
        except psycopg.Error as exc:
            self._mark_failed(request.task_id, f"Task completion DB update failed: {exc}")
            return _envelope(500, "internal_server_error", "Internal server error")
        return json_reply(
            200,
            {
                "success": True,
                "public_url": public_url,
                "thumbnail_url": thumbnail_url,
                "follow_up": {"status": "ok", "issues": []},
                "message": "Task completed and file uploaded successfully",
            },
            _CORS,
        )

    def _mark_failed(self, task_id: str, message: str) -> None:
        """``markTaskFailed``: best effort, its own errors swallowed."""
        with contextlib.suppress(psycopg.Error):  # best effort in the app too
            self._rows(
                "update public.tasks set status = 'Failed', error_message = %s, updated_at = %s"
                " where id = %s and status in ('Queued', 'In Progress')",
                (message, _now_iso(), task_id),
            )

    # -- update-task-status -------------------------------------------------------------------------

    def update_task_status(self, body: dict[str, Any], raw: bytes, headers: dict[str, str]) -> Reply:
        try:
            parsed = json.loads(raw) if raw else {}
        except (ValueError, UnicodeDecodeError):
            return _text(400, "Invalid JSON body")
        request = parsed if isinstance(parsed, dict) else {}
        task_id, status = request.get("task_id"), request.get("status")
        if not task_id or not status or not isinstance(task_id, str):
            return _text(400, "Missing required fields: task_id and status")
        if status not in TASK_STATUSES:
            return _text(400, f"Invalid status. Must be one of: {', '.join(TASK_STATUSES)}")
        checks = (
            ("attempts", lambda v: isinstance(v, int | float) and not isinstance(v, bool), "attempts must be a number"),
            ("output_location", lambda v: isinstance(v, str), "output_location must be a string"),
            ("error_details", lambda v: isinstance(v, str), "error_details must be a string"),
            ("clear_worker", lambda v: isinstance(v, bool), "clear_worker must be a boolean"),
            ("reset_generation_started_at", lambda v: isinstance(v, bool), "reset_generation_started_at must be a boolean"),
        )
        for key, valid, message in checks:
            # JSON null is not undefined in the app's checks: it fails them as any other wrong type.
            if key in request and not valid(request[key]):
                return _json(400, {"success": False, "message": message})

        try:
            current = self._single("select id, status::text as status from public.tasks where id = %s", (task_id,))
        except (psycopg.Error, _SingleError) as exc:
            message = exc.diag.message_primary if isinstance(exc, psycopg.Error) and exc.diag.message_primary else str(exc)
            return _text(500, f"Failed to check current task status: {message}")
        reset_only = (
            request.get("reset_generation_started_at") is True
            and current["status"] == "In Progress"
            and status == "In Progress"
            and not any(k in request for k in ("output_location", "error_details", "clear_worker", "attempts"))
        )
        if not reset_only and current["status"] in ALLOWED_TRANSITIONS:
            allowed = ALLOWED_TRANSITIONS[current["status"]]
            if status not in allowed:
                return json_reply(
                    409,
                    {
                        "success": False,
                        "task_id": task_id,
                        "current_status": current["status"],
                        "requested_status": status,
                        "allowed_transitions": list(allowed),
                        "message": f"Invalid status transition: {current['status']} → {status}",
                    },
                    {"Content-Type": "application/json"},
                )

        now = _now_iso()
        payload: dict[str, Any] = {"status": status, "updated_at": now}
        if status == "In Progress" or request.get("reset_generation_started_at") is True:
            payload["generation_started_at"] = now
        if status == "Complete":
            payload["generation_processed_at"] = now
        if "output_location" in request:
            payload["output_location"] = request["output_location"]
        if "attempts" in request:
            payload["attempts"] = request["attempts"]
        if "error_details" in request:
            payload["error_message"] = request["error_details"]
        if request.get("clear_worker") is True:
            payload["worker_id"] = None
            payload["generation_started_at"] = None
        try:
            updated = self._rows(_UPDATE_TASK_SQL, (json.dumps(payload), task_id))
        except psycopg.Error as exc:
            message = exc.diag.message_primary or str(exc)
            return _text(500, f"Database error: {message}")
        if len(updated) != 1:
            return _text(404, "Task not found or not accessible")
        if status in ("Failed", "Cancelled"):
            self._cascade(task_id, status, updated[0].get("params"))
        return json_reply(
            200,
            {"success": True, "task_id": task_id, "status": status, "message": f"Task status updated to '{status}'"},
            {"Content-Type": "application/json"},
        )

    def _cascade(self, task_id: str, status: str, params: Any) -> None:
        """``handleCascadingTaskFailure``: only when the database has the app's ``cascade_task_failure``."""
        params = params if isinstance(params, dict) else {}
        ref = (
            params.get("orchestrator_task_id_ref")
            or (params.get("orchestration_contract") or {}).get("orchestrator_task_id")
            or params.get("orchestrator_task_id")
            or (params.get("orchestrator_details") or {}).get("orchestrator_task_id")
        )
        is_orchestrator = False
        try:
            uuid.UUID(str(ref))
        except ValueError:
            ref = None
        if ref is None and "orchestrator_details" in params:
            ref, is_orchestrator = task_id, True
        if ref is None:
            return
        try:
            if not self._rows("select 1 from pg_proc where proname = 'cascade_task_failure'"):
                return
            self._rows(
                "select public.cascade_task_failure(%s::uuid, %s::uuid, %s, %s)", (ref, task_id, status, is_orchestrator)
            )
        except psycopg.Error:
            pass  # the app logs the cascade's error and answers 200 all the same

    # -- update-worker-model ------------------------------------------------------------------------

    def update_worker_model(self, body: dict[str, Any], raw: bytes, headers: dict[str, str]) -> Reply:
        worker_id = body["worker_id"].strip() if isinstance(body.get("worker_id"), str) else ""
        model = body["current_model"].strip() if isinstance(body.get("current_model"), str) else ""
        instance = body.get("instance_type")
        instance_type = instance.strip() if isinstance(instance, str) and instance.strip() else "external"
        if not worker_id:
            return _text(400, "Missing required field: worker_id")
        if not model:
            return _text(400, "Missing required field: current_model")
        now = _now_iso()
        try:
            rows = self._rows(
                "update public.workers set current_model = %s, last_heartbeat = %s, status = 'active'"
                " where id = %s returning last_heartbeat",
                (model, now, worker_id),
            )
            action = "updated"
            if not rows:
                action = "inserted"
                rows = self._rows(
                    "insert into public.workers (id, instance_type, status, last_heartbeat, current_model)"
                    " values (%s, %s, 'active', %s, %s) returning last_heartbeat",
                    (worker_id, instance_type, now, model),
                )
        except psycopg.Error as exc:
            return _text(500, f"Database error: {exc.diag.message_primary or exc}")
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
        task_id = str(raw_id) if isinstance(raw_id, str | int | float) and not isinstance(raw_id, bool) else ""
        filename = body.get("filename") if isinstance(body.get("filename"), str) else ""
        content_type = body.get("content_type") if isinstance(body.get("content_type"), str) else ""
        if not task_id or not filename or not content_type:
            return _json(400, {"error": "task_id, filename, and content_type required"}, cors=True)
        try:
            user_id = self._task_user_id(task_id)
        except _Denied:
            return _json(404, {"error": "Task not found"}, cors=True)
        path = f"{user_id}/tasks/{task_id}/{filename}"
        token = self.store.sign_upload(MEDIA_BUCKET, path)
        answer: dict[str, Any] = {
            "upload_url": self._signed_url(path, token),
            "storage_path": path,
            "token": token,
            "expires_at": _now_iso(3600),
        }
        if body.get("generate_thumbnail_url") is True:
            thumb = f"{user_id}/tasks/{task_id}/thumbnails/thumb_{int(time.time() * 1000)}_{secrets.token_hex(3)}.jpg"
            thumb_token = self.store.sign_upload(MEDIA_BUCKET, thumb)
            answer.update(
                thumbnail_upload_url=self._signed_url(thumb, thumb_token),
                thumbnail_storage_path=thumb,
                thumbnail_token=thumb_token,
            )
        return _json(200, answer, cors=True)

    def _signed_url(self, path: str, token: str) -> str:
        return f"{self.backend.base_url}/storage/v1/object/upload/sign/{MEDIA_BUCKET}/{path}?token={token}"


class _SingleError(Exception):
    """What supabase-js's ``.single()`` returns when the query did not yield exactly one row."""


@dataclass(frozen=True)
class _Completion:
    task_id: str
    storage_path: str | None = None
    presigned: bool = False
    thumbnail_storage_path: str | None = None
    other_task_path: bool = False
    output_location: str | None = None
    filename: str | None = None
    file_data: bytes | None = None
    thumbnail_filename: str | None = None
    thumbnail_data: bytes | None = None


def _parse_completion(body: dict[str, Any]) -> _Completion | Reply:
    """``parseCompleteTaskRequest`` (complete_task/request.ts)."""
    task_id = _nonempty_str(body.get("task_id"))
    storage_path = _nonempty_str(body.get("storage_path"))
    if storage_path:
        thumb = _nonempty_str(body.get("thumbnail_storage_path"))
        if not task_id:
            return _envelope(400, "task_id_required", "task_id required", False)
        parts = storage_path.split("/")
        presigned = len(parts) >= 4 and parts[1] == "tasks"
        if not presigned and len(parts) < 2:
            return _envelope(
                400, "invalid_storage_path_format", "Invalid storage_path format. Must be at least userId/filename", False
            )
        other = presigned and parts[2] != task_id
        if presigned and thumb:
            thumb_parts = thumb.split("/")
            if len(thumb_parts) < 4 or thumb_parts[1] != "tasks":
                return _envelope(400, "invalid_thumbnail_storage_path_format", "Invalid thumbnail_storage_path format.", False)
            other = other or thumb_parts[2] != task_id
        return _Completion(
            task_id=task_id,
            storage_path=storage_path,
            presigned=presigned,
            thumbnail_storage_path=thumb,
            other_task_path=other,
            output_location=_nonempty_str(body.get("output_location")),
            filename=parts[-1],
        )
    file_data = _nonempty_str(body.get("file_data"))
    filename = _nonempty_str(body.get("filename"))
    first_frame = _nonempty_str(body.get("first_frame_data"))
    first_frame_name = _nonempty_str(body.get("first_frame_filename"))
    if not task_id or not file_data or not filename:
        return _envelope(
            400, "missing_base64_upload_fields",
            "task_id, file_data (base64), and filename required (or use storage_path for pre-uploaded files)", False,
        )
    if first_frame and not first_frame_name:
        return _envelope(400, "first_frame_filename_required", "first_frame_filename required when first_frame_data is provided", False)
    if first_frame_name and not first_frame:
        return _envelope(400, "first_frame_data_required", "first_frame_data required when first_frame_filename is provided", False)
    try:
        data = _decode_base64(file_data)
    except (binascii.Error, ValueError):
        return _envelope(400, "invalid_base64_file_data", "Invalid base64 file_data", False)
    thumbnail: bytes | None = None
    if first_frame and first_frame_name:
        try:
            thumbnail = _decode_base64(first_frame)
        except (binascii.Error, ValueError):
            thumbnail, first_frame_name = None, None  # non-fatal in the app too
    return _Completion(
        task_id=task_id, filename=filename, file_data=data, thumbnail_filename=first_frame_name, thumbnail_data=thumbnail
    )


# What task-counts reads (see the module docstring for how it differs from the app's RPCs).
_COUNTS_SQL = """
select (select count(*) from public.orchestrator_claimable_tasks) as queued_only,
       (select count(*) from public.tasks t
         where t.status = 'In Progress' and coalesce(t.task_type, '') not ilike '%orchestrator%') as active_only,
       (select count(*) from public.tasks t
         where t.status = 'Queued' and t.dependant_on is not null
           and exists (select 1 from jsonb_array_elements_text(
                                   case jsonb_typeof(to_jsonb(t.dependant_on)) when 'array' then to_jsonb(t.dependant_on)
                                        else jsonb_build_array(to_jsonb(t.dependant_on)) end) d(dep_id)
                        where not exists (select 1 from public.tasks x
                                           where x.id = d.dep_id::uuid and x.status = 'Complete')))
           as blocked_by_deps
"""
_QUEUED_TASKS_SQL = """
select c.id, c.task_type, c.created_at from public.orchestrator_claimable_tasks c
 where coalesce(c.task_type, '') not ilike '%orchestrator%' order by c.created_at limit 100
"""
_ACTIVE_TASKS_SQL = """
select t.id, t.task_type, t.worker_id, t.updated_at from public.tasks t
 where t.status = 'In Progress' and t.worker_id is not null
   and coalesce(t.task_type, '') not ilike '%orchestrator%'
 order by t.updated_at limit 100
"""
# update-task-status's ``.update(payload).eq('id', id).select(...).single()``: only the payload's keys
# are set, typed by the table's row type as PostgREST does.
_UPDATE_TASK_SQL = """
update public.tasks t set
    status = v.status,
    updated_at = v.updated_at,
    generation_started_at = case when p ? 'generation_started_at' then v.generation_started_at else t.generation_started_at end,
    generation_processed_at = case when p ? 'generation_processed_at' then v.generation_processed_at else t.generation_processed_at end,
    output_location = case when p ? 'output_location' then v.output_location else t.output_location end,
    attempts = case when p ? 'attempts' then v.attempts else t.attempts end,
    error_message = case when p ? 'error_message' then v.error_message else t.error_message end,
    worker_id = case when p ? 'worker_id' then v.worker_id else t.worker_id end
from (select %s::jsonb as p) pp, jsonb_populate_record(null::public.tasks, pp.p) v
where t.id = %s
returning t.id, t.status::text as status, t.params
"""


_ROUTES: dict[str, _Route] = {
    "claim-next-task": _Route("loose", "text", False, EdgeFunctions.claim_next_task),
    "task-counts": _Route("loose", "json", False, EdgeFunctions.task_counts),
    "complete_task": _Route("none", "json", False, EdgeFunctions.complete_task),
    "update-task-status": _Route("none", "json", False, EdgeFunctions.update_task_status),
    "update-worker-model": _Route("strict", "json", True, EdgeFunctions.update_worker_model),
    "generate-upload-url": _Route("strict", "json", False, EdgeFunctions.generate_upload_url),
}

FUNCTION_NAMES: tuple[str, ...] = tuple(_ROUTES)
