"""The Edge Functions that end a task: ``complete_task`` and ``update-task-status``.

Part of the Supabase stand-in (``orchestrator.standins.postgrest``); :mod:`.edge` routes
``POST /functions/v1/complete_task`` and ``/functions/v1/update-task-status`` here after authenticating
the caller. Each is rebuilt from banodoco/reigh-app (``complete_task/handler.ts`` and ``request.ts``,
``update-task-status/index.ts`` and its modules) with the same checks, answers and status codes; what
they do and where they differ from the app is in :mod:`.edge`'s docstring.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import mimetypes
import string
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from orchestrator.standins.postgrest.common import Reply, json_reply
from orchestrator.standins.postgrest.edge_shared import (
    CORS,
    Denied,
    EdgeContext,
    SingleError,
    envelope,
    is_object,
    json_answer,
    now_iso,
    text_reply,
)
from orchestrator.standins.postgrest.storage import MEDIA_BUCKET

TASK_STATUSES = ("Queued", "In Progress", "Complete", "Failed", "Cancelled")
ALLOWED_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "Queued": ("In Progress", "Failed", "Cancelled"),
    "In Progress": ("Complete", "Failed", "Cancelled", "Queued"),
    "Complete": (),
    "Failed": (),
    "Cancelled": (),
}


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


# --- complete_task --------------------------------------------------------------------------------


def complete_task(fns: EdgeContext, body: dict[str, Any], raw: bytes, headers: dict[str, str]) -> Reply:
    """``complete_task``: store the output (or check the pre-uploaded one) and mark the task Complete."""
    if "multipart/form-data" in headers.get("content-type", ""):
        return envelope(
            400,
            "multipart_not_supported",
            "Multipart upload (MODE 2) is not supported. Use MODE 1 (base64 JSON) or MODE 3 (pre-signed URL).",
            False,
        )
    try:
        parsed = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):
        return envelope(400, "invalid_json_body", "Invalid JSON body", False)
    if not is_object(parsed):
        return envelope(400, "invalid_json_body_shape", "JSON body must be an object", False)
    request = _parse_completion(parsed)
    if isinstance(request, Reply):
        return request

    if request.other_task_path:
        try:
            task = fns.single("select task_type from public.tasks where id = %s", (request.task_id,))
            allowed = "orchestrator" in str(task.get("task_type") or "")
        except (psycopg.Error, SingleError):
            allowed = False
        if not allowed:
            return envelope(
                403,
                "storage_path_access_denied",
                "storage_path does not match task_id. Files must be uploaded for the correct task.",
            )

    try:
        user_id = fns.task_user_id(request.task_id)
    except Denied:
        return envelope(404, "task_actor_resolution_failed", "Task not found")
    if (
        request.storage_path
        and not request.presigned
        and not fns.store.exists(MEDIA_BUCKET, request.storage_path.strip("/"))
    ):
        return envelope(
            404,
            "storage_reference_not_found",
            "Referenced file does not exist or is not accessible in storage",
        )

    thumbnail_url: str | None = None
    if request.storage_path:
        public_url = fns.public_url(request.storage_path)
        if request.thumbnail_storage_path:
            thumbnail_url = fns.public_url(request.thumbnail_storage_path)
    else:
        assert request.file_data is not None and request.filename is not None
        path = f"{user_id}/tasks/{request.task_id}/{request.filename}"
        fns.store.put(MEDIA_BUCKET, path, request.file_data, _content_type(request.filename))
        public_url = fns.public_url(path)
        if request.thumbnail_data is not None and request.thumbnail_filename:
            thumb = f"{user_id}/tasks/{request.task_id}/thumbnails/{request.thumbnail_filename}"
            fns.store.put(
                MEDIA_BUCKET, thumb, request.thumbnail_data, _content_type(request.thumbnail_filename)
            )
            thumbnail_url = fns.public_url(thumb)
        elif _content_type(request.filename).startswith("image/"):
            thumbnail_url = public_url  # the app's fallback without image transformations

    try:
        fns.rows(
            "update public.tasks set status = 'Complete', output_location = %s, generation_processed_at = %s"
            " where id = %s and status = 'In Progress'",
            (request.output_location or public_url, now_iso(), request.task_id),
        )
    except psycopg.Error as exc:
        _mark_failed(fns, request.task_id, f"Task completion DB update failed: {exc}")
        return envelope(500, "internal_server_error", "Internal server error")
    return json_reply(
        200,
        {
            "success": True,
            "public_url": public_url,
            "thumbnail_url": thumbnail_url,
            "follow_up": {"status": "ok", "issues": []},
            "message": "Task completed and file uploaded successfully",
        },
        CORS,
    )


def _mark_failed(fns: EdgeContext, task_id: str, message: str) -> None:
    """``markTaskFailed``: best effort, its own errors swallowed."""
    with contextlib.suppress(psycopg.Error):  # best effort in the app too
        fns.rows(
            "update public.tasks set status = 'Failed', error_message = %s, updated_at = %s"
            " where id = %s and status in ('Queued', 'In Progress')",
            (message, now_iso(), task_id),
        )


# --- update-task-status ---------------------------------------------------------------------------


def update_task_status(fns: EdgeContext, body: dict[str, Any], raw: bytes, headers: dict[str, str]) -> Reply:
    """``update-task-status``: move a task along the app's transition table, with its side fields."""
    try:
        parsed = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):
        return text_reply(400, "Invalid JSON body")
    request = parsed if isinstance(parsed, dict) else {}
    task_id, status = request.get("task_id"), request.get("status")
    if not task_id or not status or not isinstance(task_id, str):
        return text_reply(400, "Missing required fields: task_id and status")
    if status not in TASK_STATUSES:
        return text_reply(400, f"Invalid status. Must be one of: {', '.join(TASK_STATUSES)}")
    checks = (
        (
            "attempts",
            lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "attempts must be a number",
        ),
        ("output_location", lambda v: isinstance(v, str), "output_location must be a string"),
        ("error_details", lambda v: isinstance(v, str), "error_details must be a string"),
        ("clear_worker", lambda v: isinstance(v, bool), "clear_worker must be a boolean"),
        (
            "reset_generation_started_at",
            lambda v: isinstance(v, bool),
            "reset_generation_started_at must be a boolean",
        ),
    )
    for key, valid, message in checks:
        # JSON null is not undefined in the app's checks: it fails them as any other wrong type.
        if key in request and not valid(request[key]):
            return json_answer(400, {"success": False, "message": message})

    try:
        current = fns.single("select id, status::text as status from public.tasks where id = %s", (task_id,))
    except (psycopg.Error, SingleError) as exc:
        message = (
            exc.diag.message_primary
            if isinstance(exc, psycopg.Error) and exc.diag.message_primary
            else str(exc)
        )
        return text_reply(500, f"Failed to check current task status: {message}")
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

    now = now_iso()
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
        updated = fns.rows(_UPDATE_TASK_SQL, (json.dumps(payload), task_id))
    except psycopg.Error as exc:
        message = exc.diag.message_primary or str(exc)
        return text_reply(500, f"Database error: {message}")
    if len(updated) != 1:
        return text_reply(404, "Task not found or not accessible")
    if status in ("Failed", "Cancelled"):
        _cascade(fns, task_id, status, updated[0].get("params"))
    return json_reply(
        200,
        {
            "success": True,
            "task_id": task_id,
            "status": status,
            "message": f"Task status updated to '{status}'",
        },
        {"Content-Type": "application/json"},
    )


def _cascade(fns: EdgeContext, task_id: str, status: str, params: Any) -> None:
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
        if not fns.rows("select 1 from pg_proc where proname = 'cascade_task_failure'"):
            return
        fns.rows(
            "select public.cascade_task_failure(%s::uuid, %s::uuid, %s, %s)",
            (ref, task_id, status, is_orchestrator),
        )
    except psycopg.Error:
        pass  # the app logs the cascade's error and answers 200 all the same


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
            return envelope(400, "task_id_required", "task_id required", False)
        parts = storage_path.split("/")
        presigned = len(parts) >= 4 and parts[1] == "tasks"
        if not presigned and len(parts) < 2:
            return envelope(
                400,
                "invalid_storage_path_format",
                "Invalid storage_path format. Must be at least userId/filename",
                False,
            )
        other = presigned and parts[2] != task_id
        if presigned and thumb:
            thumb_parts = thumb.split("/")
            if len(thumb_parts) < 4 or thumb_parts[1] != "tasks":
                return envelope(
                    400,
                    "invalid_thumbnail_storage_path_format",
                    "Invalid thumbnail_storage_path format.",
                    False,
                )
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
        return envelope(
            400,
            "missing_base64_upload_fields",
            "task_id, file_data (base64), and filename required (or use storage_path for pre-uploaded files)",
            False,
        )
    if first_frame and not first_frame_name:
        return envelope(
            400,
            "first_frame_filename_required",
            "first_frame_filename required when first_frame_data is provided",
            False,
        )
    if first_frame_name and not first_frame:
        return envelope(
            400,
            "first_frame_data_required",
            "first_frame_data required when first_frame_filename is provided",
            False,
        )
    try:
        data = _decode_base64(file_data)
    except (binascii.Error, ValueError):
        return envelope(400, "invalid_base64_file_data", "Invalid base64 file_data", False)
    thumbnail: bytes | None = None
    if first_frame and first_frame_name:
        try:
            thumbnail = _decode_base64(first_frame)
        except (binascii.Error, ValueError):
            thumbnail, first_frame_name = None, None  # non-fatal in the app too
    return _Completion(
        task_id=task_id,
        filename=filename,
        file_data=data,
        thumbnail_filename=first_frame_name,
        thumbnail_data=thumbnail,
    )


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
