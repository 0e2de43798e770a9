"""The Edge Functions that end a task: ``complete_task`` and ``update-task-status``.

Part of the Supabase stand-in (``orchestrator.standins.postgrest``); :mod:`.edge` routes
``POST /functions/v1/complete_task`` and ``/functions/v1/update-task-status`` here after authenticating
the caller. Each is rebuilt from banodoco/reigh-app (``complete_task/handler.ts`` and ``request.ts``,
``update-task-status/index.ts`` and its modules) with the same checks, answers and status codes; what
they do and where they differ from the app is in :mod:`.edge`'s docstring.

The parent's completion (``complete_task/orchestratorCore.ts`` ``checkOrchestratorCompletion``, with
``constants.ts``, ``orchestratorPolicy.ts`` and ``_shared/orchestratorReference*.ts``, reigh-app
3a6fd3d): after the UPDATE of a completed task, whether or not it touched a row, a task of a segment type
(``travel_segment``; ``join_clips_segment``, which also waits for its ``join_final_stitch``;
``join_final_stitch``, the final step) that names a parent (``orchestration_contract.orchestrator_task_id``,
``orchestrator_task_id_ref``, ``orchestrator_details.orchestrator_task_id``,
``originalParams.orchestrator_details.orchestrator_task_id`` or ``orchestrator_task_id``) looks up its
siblings of the same type and project, by run id first (``orchestration_contract.run_id``, then
``orchestrator_run_id``, ``run_id``, ``orchestrator_details.run_id``), else by the parent reference. No
sibling or one still Queued or In Progress: the parent waits. One Failed or Cancelled: the parent is
Failed ("N of M segments failed"). Fewer than the parent's
``orchestrator_details.num_new_segments_to_generate`` (or ``num_new_segments_to_generate``): Failed
("Only N of M expected segments were found"). Otherwise the parent, if still Queued or In Progress, is
Complete with ``generation_started_at`` = its earliest sibling's start and ``generation_processed_at`` =
now; its ``output_location`` and ``worker_id`` are left as they are (only a final step's completion
writes the final step's public URL there), so a travel parent completed this way keeps the
``output_location`` it had: none, the worker's "waiting" report having been refused. A parent already
Complete is left alone. A failure of this follow-up (an unknown parent, a malformed reference or count,
a sibling lookup without a project: supabase-js's ``.eq("project_id", null)``) does not fail the child:
the answer's ``follow_up`` becomes ``degraded`` with the issue, which is also saved under the child's
``result_data.completion_follow_up``. Not rebuilt: the parent's cost calculation (``calculate-task-cost``)
and the billing outcome the app stores in its ``result_data``.
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

    issues: list[dict[str, str]] = []
    try:
        _complete_parent(fns, request.task_id, public_url)
    except (_FollowUpFailed, psycopg.Error):
        # toCompletionError re-wraps every failure of the follow-up under this one message.
        message = f"[OrchestratorComplete] Completion flow failed for task {request.task_id}"
        issues.append(
            {"step": "orchestrator_completion", "code": "orchestrator_follow_up_failed", "message": message}
        )
    if issues:
        _save_follow_up(fns, request.task_id, issues)
    return json_reply(
        200,
        {
            "success": True,
            "public_url": public_url,
            "thumbnail_url": thumbnail_url,
            "follow_up": {"status": "degraded" if issues else "ok", "issues": issues},
            "message": "Task completed with follow-up warnings"
            if issues
            else "Task completed and file uploaded successfully",
        },
        CORS,
    )


# --- the parent's completion on its last child (complete_task/orchestratorCore.ts) --------------------


@dataclass(frozen=True)
class _SegmentType:
    """``SEGMENT_TYPE_CONFIG`` (complete_task/constants.ts): how a child's completion may end its parent."""

    final_step: bool = False
    siblings_type: str | None = None  # the type counted instead of the child's own (a final step's)
    wait_for: str | None = None  # a final step that must be complete first


_SEGMENT_TYPES: dict[str, _SegmentType] = {
    "travel_segment": _SegmentType(),
    "join_clips_segment": _SegmentType(wait_for="join_final_stitch"),
    "join_final_stitch": _SegmentType(final_step=True, siblings_type="join_clips_segment"),
}
_FAILURE_STATUSES = ("Failed", "Cancelled")
_PROCESSING_STATUSES = ("Queued", "In Progress")
# _shared/orchestratorReference.ts: where a child names its parent and its run, canonical then legacy.
_REF_PATHS = (
    ("orchestration_contract", "orchestrator_task_id"),
    ("orchestrator_task_id_ref",),
    ("orchestrator_details", "orchestrator_task_id"),
    ("originalParams", "orchestrator_details", "orchestrator_task_id"),
    ("orchestrator_task_id",),
)
_RUN_ID_PATHS = (
    ("orchestration_contract", "run_id"),
    ("orchestrator_run_id",),
    ("run_id",),
    ("orchestrator_details", "run_id"),
    ("originalParams", "orchestrator_details", "run_id"),
    ("full_orchestrator_payload", "run_id"),
)
_RUN_LOOKUPS = (
    "t.params -> 'orchestration_contract' ->> 'run_id' = %(key)s",
    "t.params ->> 'orchestrator_run_id' = %(key)s or t.params ->> 'run_id' = %(key)s"
    " or t.params -> 'orchestrator_details' ->> 'run_id' = %(key)s",
)
_REF_LOOKUPS = (
    "t.params -> 'orchestration_contract' ->> 'orchestrator_task_id' = %(key)s"
    " or t.params ->> 'orchestrator_task_id_ref' = %(key)s",
    "t.params ->> 'orchestrator_task_id' = %(key)s"
    " or t.params -> 'orchestrator_details' ->> 'orchestrator_task_id' = %(key)s",
)


class _FollowUpFailed(Exception):
    """A ``CompletionError`` of the follow-up: recorded as an issue, the child stays completed."""


def _param_path(params: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = params
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _orchestrator_ref(params: dict[str, Any]) -> str | None:
    """``extractOrchestratorRef`` (_shared/billing.ts): the first non-empty reference, as JavaScript's ``||``."""
    for path in _REF_PATHS:
        value = _param_path(params, path)
        if value:
            return value if isinstance(value, str) else json.dumps(value)
    return None


def _run_id(params: dict[str, Any]) -> str | None:
    """``extractRunIdParam``: the first present value, a run id only if it is a string."""
    for path in _RUN_ID_PATHS:
        value = _param_path(params, path)
        if value is not None:
            return value if isinstance(value, str) else None
    return None


def _siblings(
    fns: EdgeContext, task_type: str, project_id: Any, lookups: tuple[str, ...], key: str
) -> list[dict[str, Any]]:
    """``lookupTasksBy*WithFallback``: the canonical references, then the legacy ones if none matched."""
    if project_id is None:
        # supabase-js sends .eq("project_id", null) as project_id=eq.null: not a uuid, the query fails.
        raise _FollowUpFailed('invalid input syntax for type uuid: "null"')
    for condition in lookups:
        rows = fns.rows(
            "select t.id::text as id, t.status::text as status, t.generation_started_at from public.tasks t"
            f" where t.task_type = %(type)s and t.project_id = %(project)s and ({condition})",
            {"type": task_type, "project": str(project_id), "key": key},
        )
        if rows:
            return rows
    return []


def _expected_count(task_type: str, parent_params: dict[str, Any]) -> int | None:
    """``resolveExpectedSegmentCount``: how many siblings the parent announced (None: not said)."""
    details = parent_params.get("orchestrator_details")
    details = details if isinstance(details, dict) else {}
    if task_type == "travel_segment":
        candidates = [
            details.get("num_new_segments_to_generate"),
            parent_params.get("num_new_segments_to_generate"),
        ]
    elif task_type == "join_clips_segment":
        clips = details.get("clip_list")
        if isinstance(clips, list) and len(clips) > 1:
            return len(clips) - 1
        candidates = [details.get("num_joins")]
    else:
        return None
    for value in candidates:
        parsed = _non_negative_int(value)
        if parsed is not None:
            return parsed
    return None


def _non_negative_int(value: Any) -> int | None:
    """``parseNonNegativeIntCandidate``: None when absent; a bad value fails the follow-up."""
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and value.strip():
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    if number is None or not number.is_integer() or number < 0 or number != number:
        raise _FollowUpFailed(f"invalid expected segment count {value!r}")
    return int(number)


def _complete_parent(fns: EdgeContext, task_id: str, public_url: str) -> None:
    """``checkOrchestratorCompletion`` for the task just completed (see the module docstring)."""
    try:
        child = fns.single("select task_type, project_id, params from public.tasks where id = %s", (task_id,))
    except SingleError:
        return
    task_type = str(child.get("task_type") or "")
    config = _SEGMENT_TYPES.get(task_type)
    raw_params = child.get("params")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    parent_id = _orchestrator_ref(params) if config is not None else None
    if config is None or parent_id is None:
        return
    try:
        # .eq("id", ref).single(): a ref that is no uuid fails as one naming no task does.
        parent = fns.single(
            "select id::text as id, status::text as status, params from public.tasks where id = %s",
            (str(uuid.UUID(parent_id)),),
        )
    except (ValueError, SingleError) as exc:
        raise _FollowUpFailed(f"no orchestrator task {parent_id}") from exc
    counted = config.siblings_type or task_type
    run_id = _run_id(params)
    siblings: list[dict[str, Any]] = []
    if run_id is not None:
        siblings = _siblings(fns, counted, child.get("project_id"), _RUN_LOOKUPS, run_id)
    if not siblings:
        siblings = _siblings(fns, counted, child.get("project_id"), _REF_LOOKUPS, parent_id)
    if parent["status"] == "Complete":
        return
    if config.final_step:
        _mark_parent_complete(fns, parent["id"], siblings, public_url)
        return
    parent_params = parent["params"] if isinstance(parent.get("params"), dict) else {}
    expected = _expected_count(task_type, parent_params)
    done = sum(1 for s in siblings if s["status"] == "Complete")
    failed = sum(1 for s in siblings if s["status"] in _FAILURE_STATUSES)
    if not siblings or len(siblings) > done + failed:
        return
    if failed:
        _mark_parent_failed(fns, parent["id"], f"{failed} of {len(siblings)} segments failed")
        return
    if expected is not None and len(siblings) < expected:
        _mark_parent_failed(
            fns, parent["id"], f"Only {len(siblings)} of {expected} expected segments were found"
        )
        return
    if config.wait_for is not None:
        finals: list[dict[str, Any]] = []
        if run_id is not None:
            finals = _siblings(fns, config.wait_for, child.get("project_id"), _RUN_LOOKUPS, run_id)
        if not finals:
            finals = _siblings(fns, config.wait_for, child.get("project_id"), _REF_LOOKUPS, parent_id)
        statuses = {f["status"] for f in finals}
        if statuses & set(_FAILURE_STATUSES):
            _mark_parent_failed(fns, parent["id"], "1 of 1 segments failed")
            return
        if finals and "Complete" not in statuses:
            return  # pending (or, in the app, "unknown"): wait
    _mark_parent_complete(fns, parent["id"], siblings, None)


def _mark_parent_complete(
    fns: EdgeContext, parent_id: str, siblings: list[dict[str, Any]], output_location: str | None
) -> None:
    """``markOrchestratorComplete``: guarded on a processing status; the output only for a final step."""
    starts = [s["generation_started_at"] for s in siblings if s.get("generation_started_at") is not None]
    now = now_iso()
    started = min(starts).isoformat() if starts else now
    fns.rows(
        "update public.tasks set status = 'Complete', generation_started_at = %s,"
        " generation_processed_at = %s, output_location = coalesce(%s, output_location)"
        " where id = %s and status::text = any(%s)",
        (started, now, output_location, parent_id, list(_PROCESSING_STATUSES)),
    )


def _mark_parent_failed(fns: EdgeContext, parent_id: str, message: str) -> None:
    """``markOrchestratorFailed``: guarded on a processing status."""
    fns.rows(
        "update public.tasks set status = 'Failed', error_message = %s, generation_processed_at = %s"
        " where id = %s and status::text = any(%s)",
        (message, now_iso(), parent_id, list(_PROCESSING_STATUSES)),
    )


def _save_follow_up(fns: EdgeContext, task_id: str, issues: list[dict[str, str]]) -> None:
    """``persistCompletionFollowUpIssues``: under ``result_data.completion_follow_up``; best effort."""
    record = {"status": "degraded", "recorded_at": now_iso(), "issues": issues}
    with contextlib.suppress(psycopg.Error):
        fns.rows(
            "update public.tasks set result_data = coalesce(result_data, '{}'::jsonb)"
            " || jsonb_build_object('completion_follow_up', %s::jsonb) where id = %s",
            (json.dumps(record), task_id),
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
