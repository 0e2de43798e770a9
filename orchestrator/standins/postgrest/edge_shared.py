"""What every Edge Function of the stand-in shares: reply shapes, refusals and the database helpers.

Part of the Supabase stand-in (``orchestrator.standins.postgrest``), rebuilt from banodoco/reigh-app's
``supabase/functions/_shared`` (``edgeHandler.ts``, ``edgeRequest.ts``, ``auth.ts``): the plain-text and
JSON error envelopes, the CORS headers, and :class:`EdgeContext`, which runs each supabase-js call of a
function in its own transaction as the service role. :mod:`.edge` (the routing, authentication and the
light functions) and :mod:`.edge_tasks` (the functions that end a task) build on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row

from orchestrator.standins.postgrest.common import SERVICE_ROLE, Reply, json_reply
from orchestrator.standins.postgrest.storage import MEDIA_BUCKET, ObjectStore

SYSTEM_USER_ID = "system"  # reigh-app _shared/auth.ts: the owner when a task's project cannot be resolved
CORS = {
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

    def take_lost_claim(self) -> bool: ...


class Denied(Exception):
    """A function answers early with ``reply`` (a refusal raised from a helper)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def now_iso(offset_sec: float = 0.0) -> str:
    """JavaScript's ``new Date().toISOString()``: milliseconds and a Z."""
    moment = datetime.now(UTC) + timedelta(seconds=offset_sec)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def text_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, message.encode(), {"Content-Type": "text/plain;charset=UTF-8", **(headers or {})})


def json_answer(status: int, value: Any, *, cors: bool = False) -> Reply:
    return json_reply(status, value, CORS if cors else None)


def envelope(
    status: int,
    code: str,
    message: str,
    recoverable: bool | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
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
    if normalized == "unauthorized - service role required" or (
        "unauthorized" in normalized and "service role" in normalized
    ):
        return "service_role_required"
    if normalized == "internal server error" or status >= 500:
        return "internal_server_error"
    if status == 403:
        return "forbidden"
    return "request_failed"


def bootstrap_error(message: str, status: int, fmt: str, headers: dict[str, str] | None = None) -> Reply:
    if fmt == "text":
        return text_reply(status, message, headers)
    return envelope(status, _derive_error_code(message, status), message, None, headers)


def is_object(value: Any) -> bool:
    return isinstance(value, dict)


class SingleError(Exception):
    """What supabase-js's ``.single()`` returns when the query did not yield exactly one row."""


class EdgeContext:
    """The server and the object store, as one function call sees them, with supabase-js's helpers."""

    def __init__(self, backend: Backend, store: ObjectStore) -> None:
        self.backend = backend
        self.store = store

    def sql(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """One supabase-js call of the function: its own transaction, as the service role."""
        return self.backend.transaction(SERVICE_ROLE)

    def rows(self, query: str, params: tuple[Any, ...] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        with self.sql() as conn:
            cur = conn.cursor(row_factory=dict_row)
            cur.execute(query, params or None)
            return list(cur.fetchall()) if cur.description else []

    def single(self, query: str, params: tuple[Any, ...]) -> dict[str, Any]:
        """PostgREST's ``.single()``: exactly one row, else the error supabase-js returns (PGRST116)."""
        rows = self.rows(query, params)
        if len(rows) != 1:
            raise SingleError("JSON object requested, multiple (or no) rows returned")
        return rows[0]

    def task_user_id(self, task_id: str) -> str:
        """``getTaskUserId``: the task's project owner, or the ``system`` fallback; 404 when no task."""
        try:
            task = self.single("select project_id from public.tasks where id = %s", (task_id,))
        except (psycopg.Error, SingleError) as exc:
            raise Denied(json_answer(404, {"error": "Task not found"})) from exc
        project_id = task.get("project_id")
        if project_id is None:
            return SYSTEM_USER_ID
        try:
            owner = self.single("select user_id from public.projects where id = %s", (str(project_id),))
        except (psycopg.Error, SingleError):
            return SYSTEM_USER_ID
        return str(owner.get("user_id") or SYSTEM_USER_ID)

    def public_url(self, path: str) -> str:
        return f"{self.backend.base_url}/storage/v1/object/public/{MEDIA_BUCKET}/{path}"
