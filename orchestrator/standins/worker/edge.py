"""The simulated worker's HTTP calls: the app's Edge Functions and the PostgREST table calls.

Where this sits: under ``orchestrator.standins.worker`` (the worker's loop), beside ``.guardian`` (its
heartbeats). Everything here reproduces what banodoco/Reigh-Worker does on the wire (commit 4d09184,
``source/core/db/edge_helpers.py``, ``task_claim.py``, ``task_status.py``,
``source/task_handlers/worker/fatal_error_handler.py``, ``source/models/wgp/generation_helpers.py``), and
where banodoco/reigh-worker 22cbba9 (2026-04-11, the same files) differs, what it does (the claim's
model-affinity fields, ``update-worker-model``'s body and key; see ``process.py`` for the revisions):

- Edge Functions: ``POST {SUPABASE_URL}/functions/v1/<name>`` with ``Content-Type: application/json``
  and ``Authorization: Bearer <access token>``, no ``apikey``, through httpx. ``SUPABASE_EDGE_*_URL``
  override a function's URL, as in the worker.
- The retry helper (``_call_edge_function_with_retry``): 3 tries, the timeout growing by 15 s per
  retry, sleeps of 1 then 2 s; retried: 500/502/503/504, timeouts and network errors, and (for
  ``complete_task``) a 404 whose body says "not found"; success is 200 or 201. ``task-counts`` (10 s)
  and ``claim-next-task`` (15 s) are single calls with no retry; ``update-worker-model`` is a single
  5 s call with the service key as its Bearer.
- An orchestrator task's calls (``task_claim.py`` ``_orchestrator_has_incomplete_children``,
  ``task_dependencies.py`` ``get_orchestrator_child_tasks``, ``task_completion.py`` ``add_task_to_db``,
  ``task_status.py`` ``update_task_status_supabase``): ``get-orchestrator-children
  {orchestrator_task_id}`` (the poll's check: one 30 s call; the handler's: the retry helper, 30 s, a 404
  saying "not found" retried), each falling back on failure to the table read of tasks whose ``params``
  contain ``orchestrator_task_id_ref`` (a ``cs`` filter, which the PostgREST stand-in does not implement:
  there the fallback finds nothing, as the real one does when its read fails); ``create-task`` (the retry helper, 45 s) for each child;
  ``update-task-status {In Progress, output_location: <message>}`` for "still orchestrating", which the
  app answers 409; and ``complete_task`` with the ``storage_path`` of the output a finished parent
  reports (a public ``image_uploads`` URL; any other text goes as ``output_location``).
  ``create-task``'s body: the public workers send ``{task_id, params, task_type, project_id,
  dependant_on}``, which the app has refused since 2026-03-26 (reigh-app 5cac01b, ``create-task/index.ts``:
  400 "family field is required"); this one sends what the app's worker passthrough resolver reads
  (``create-task/resolvers/workerPassthrough.ts``): ``{family: <task type>, project_id, input: {<params>,
  task_id, dependant_on: [<id>]}}``, the id chosen by the worker as ``add_task_to_db`` chooses it.
- Table calls go through supabase-py, as the worker's: the recovery read of its own In Progress task,
  the fatal-error handler's read and PATCH of its ``workers`` row and its PATCH of the task (with the
  ``error_details`` column ``tasks`` does not have), the direct requeue fallback and the children
  fallback above.

Each call returns what the caller needs to decide and logs what happened; none raises on an HTTP or
network failure, as none of the worker's does.
"""

from __future__ import annotations

import base64
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog

log = structlog.get_logger(__name__)

RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
EDGE_FAIL_PREFIX = "[EDGE_FAIL"
OK_STATUSES = (200, 201)
NOT_FOUND_PATTERNS = ("Task not found", "not found")
TASK_COUNTS_TIMEOUT = 10.0
CLAIM_TIMEOUT = 15.0
MODEL_NOTIFY_TIMEOUT = 5.0
STATUS_TIMEOUT = 30.0
COMPLETE_TIMEOUT = 60.0
CREATE_TASK_TIMEOUT = 45.0
CHILDREN_TIMEOUT = 30.0
# An output already in the media bucket (a parent reporting its child's) is completed by its path there.
PUBLIC_MEDIA_MARK = "/storage/v1/object/public/image_uploads/"
MAX_TRIES = 3
RUN_TYPE = "gpu"

# The worker's retryable error categories (fatal_error_handler.RETRYABLE_ERROR_PATTERNS): a failure whose
# text matches is requeued with attempts + 1 while under the category's limit, else failed for good.
RETRYABLE_ERRORS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("generation_no_output", 2, (r"No output generated", r"Generation produced no output")),
    (
        "edge_function_transient",
        3,
        (
            r"\[EDGE_FAIL:.*:HTTP_500\]",
            r"\[EDGE_FAIL:.*:5XX_TRANSIENT\]",
            r"\[EDGE_FAIL:.*:TIMEOUT\]",
            r"\[EDGE_FAIL:.*:NETWORK\]",
            r"WORKER_ERROR.*Function exited due to an error",
        ),
    ),
    (
        "network_transient",
        3,
        (
            r"ConnectionError",
            r"Connection reset by peer",
            r"Connection refused",
            r"Network is unreachable",
            r"timed out",
        ),
    ),
)


def retryable_error(message: str) -> tuple[str, int] | None:
    """``(category, max_attempts)`` when the worker would requeue a task failing with ``message``."""
    for category, limit, patterns in RETRYABLE_ERRORS:
        if any(re.search(p, message, re.IGNORECASE) for p in patterns):
            return category, limit
    return None


@dataclass
class EdgeResult:
    """One call's outcome: the last response (if any) and the worker's error text (None on success)."""

    response: httpx.Response | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.response is not None and self.response.status_code in OK_STATUSES

    def json(self) -> Any:
        if self.response is None:
            return None
        try:
            return self.response.json()
        except ValueError:
            return None


class EdgeClient:
    """The worker's calls to the app, bound to one Supabase URL and access token."""

    def __init__(
        self,
        supabase_url: str,
        access_token: str,
        *,
        service_key: str | None = None,
        env: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base = supabase_url.rstrip("/")
        self.access_token = access_token
        self.service_key = service_key
        self.env = dict(os.environ if env is None else env)
        self.sleep = sleep

    # -- plumbing --------------------------------------------------------------------------------------

    def url(self, function: str, override: str | None = None) -> str:
        if override and self.env.get(override):
            return self.env[override]
        return f"{self.base}/functions/v1/{function}"

    def _headers(self, token: str | None = None) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {token or self.access_token}"}

    def _post_once(self, url: str, payload: Any, timeout: float, token: str | None = None) -> httpx.Response:
        return httpx.post(url, json=payload, headers=self._headers(token), timeout=timeout)

    def call_with_retry(
        self,
        url: str,
        payload: Any,
        function: str,
        *,
        context_id: str = "",
        timeout: float = STATUS_TIMEOUT,
        tries: int = MAX_TRIES,
        retry_404: tuple[str, ...] = (),
    ) -> EdgeResult:
        """The worker's retry helper, the same tries, timeouts, sleeps and error texts."""
        ctx = f" for {context_id}" if context_id else ""
        for attempt in range(tries):
            last = attempt == tries - 1
            try:
                resp = self._post_once(url, payload, timeout + attempt * 15)
            except httpx.TimeoutException as exc:
                if not last:
                    self._retry_sleep(function, attempt, "timeout")
                    continue
                return EdgeResult(
                    None,
                    f"{EDGE_FAIL_PREFIX}:{function}:TIMEOUT] Timed out after {tries} attempts{ctx}: {exc}",
                )
            except httpx.RequestError as exc:
                if not last:
                    self._retry_sleep(function, attempt, "network")
                    continue
                return EdgeResult(
                    None,
                    f"{EDGE_FAIL_PREFIX}:{function}:NETWORK] Request failed after {tries} attempts{ctx}: {exc}",
                )
            if resp.status_code in OK_STATUSES:
                return EdgeResult(resp, None)
            if resp.status_code == 404 and retry_404 and not last:
                text = resp.text.lower()
                if any(p.lower() in text for p in retry_404):
                    self._retry_sleep(function, attempt, "404")
                    continue
            if resp.status_code in RETRYABLE_STATUSES and not last:
                self._retry_sleep(function, attempt, str(resp.status_code))
                continue
            kind = "5XX_TRANSIENT" if resp.status_code in RETRYABLE_STATUSES else f"HTTP_{resp.status_code}"
            return EdgeResult(
                resp,
                f"{EDGE_FAIL_PREFIX}:{function}:{kind}] {resp.status_code} after {attempt + 1} attempts{ctx}: {resp.text[:200]}",
            )
        return EdgeResult(None, f"{EDGE_FAIL_PREFIX}:{function}:UNKNOWN] All retries exhausted{ctx}")

    def _retry_sleep(self, function: str, attempt: int, why: str) -> None:
        wait = float(2**attempt)
        log.info("edge_call_retry", function=function, attempt=attempt + 1, why=why, wait_sec=wait)
        self.sleep(wait)

    # -- the poll cycle --------------------------------------------------------------------------------

    def task_counts(self) -> dict[str, Any] | None:
        """``task-counts {run_type, include_active}``: the counts, or None (the worker then claims anyway)."""
        url = self.url("task-counts", "SUPABASE_EDGE_TASK_COUNTS_URL")
        try:
            resp = self._post_once(url, {"run_type": RUN_TYPE, "include_active": True}, TASK_COUNTS_TIMEOUT)
        except (httpx.HTTPError, OSError) as exc:
            log.warning("task_counts_failed", error=str(exc)[:300])
            return None
        if resp.status_code != 200:
            log.warning("task_counts_failed", status=resp.status_code, body=resp.text[:300])
            return None
        try:
            data = resp.json()
        except ValueError:
            log.warning("task_counts_failed", status=resp.status_code, body=resp.text[:300])
            return None
        return data if isinstance(data, dict) else None

    def claim(
        self, worker_id: str, affinity: Mapping[str, Any] | None = None
    ) -> tuple[int | None, dict[str, Any] | None]:
        """``claim-next-task {worker_id, run_type[, same_model_only, max_task_wait_minutes]}``: (status,
        task) with the task only on a 200. ``affinity``: the model-affinity fields reigh-worker 22cbba9
        adds (``server.py`` ``poll_next_task(same_model_only=True, max_task_wait_minutes=...)``)."""
        url = self.env.get("SUPABASE_EDGE_CLAIM_TASK_URL") or self.url("claim-next-task")
        body = {"worker_id": worker_id, "run_type": RUN_TYPE, **dict(affinity or {})}
        try:
            resp = self._post_once(url, body, CLAIM_TIMEOUT)
        except (httpx.HTTPError, OSError) as exc:
            log.warning("claim_failed", error=str(exc)[:300])
            return None, None
        if resp.status_code == 200:
            try:
                data = resp.json()
            except ValueError:
                log.warning("claim_failed", status=200, body=resp.text[:300])
                return 200, None
            if not isinstance(data, dict) or not data.get("task_id"):
                log.warning("claim_failed", status=200, body=resp.text[:300])
                return 200, None
            return 200, data
        if resp.status_code != 204:
            log.warning("claim_failed", status=resp.status_code, body=resp.text[:300])
        return resp.status_code, None

    # -- one task --------------------------------------------------------------------------------------

    def update_worker_model(self, worker_id: str, model: str, *, current: bool = True) -> int | None:
        """``update-worker-model`` before a model load (5 s; no retry). ``current`` (reigh-worker
        22cbba9, ``generation_helpers.py`` ``notify_worker_model_switch``): ``{worker_id,
        current_model}``, which the app accepts, with the service key, else the access token as Bearer;
        otherwise (Reigh-Worker 4d09184) ``{worker_id, model}``, which it answers 400, and only with the
        service key."""
        key = self.service_key or (self.access_token if current else None)
        if not key:
            return None  # skipped without a key to send
        url = f"{self.base}/functions/v1/update-worker-model"
        body = {"worker_id": worker_id, ("current_model" if current else "model"): model}
        try:
            resp = self._post_once(url, body, MODEL_NOTIFY_TIMEOUT, key)
        except (httpx.HTTPError, OSError) as exc:
            log.warning("model_switch_notify_failed", error=str(exc)[:300])
            return None
        if resp.status_code != 200:
            log.warning("model_switch_notify_failed", status=resp.status_code, body=resp.text[:200])
        return resp.status_code

    def _status_url(self) -> str:
        return self.url("update-task-status", "SUPABASE_EDGE_UPDATE_TASK_URL")

    def reset_generation_started_at(self, task_id: str) -> bool:
        """``update-task-status {In Progress, reset_generation_started_at}`` once the model is loaded."""
        payload = {"task_id": task_id, "status": "In Progress", "reset_generation_started_at": True}
        result = self.call_with_retry(self._status_url(), payload, "update-task-status", context_id=task_id)
        if not result.ok:
            log.warning("billing_reset_failed", task_id=task_id, error=result.error)
        return result.ok

    def mark_failed(self, task_id: str, message: str) -> bool:
        """``update-task-status {Failed, output_location: <error text>}``."""
        payload = {"task_id": task_id, "status": "Failed", "output_location": message}
        result = self.call_with_retry(self._status_url(), payload, "update-task-status", context_id=task_id)
        if not result.ok:
            log.error("task_fail_report_failed", task_id=task_id, error=result.error)
        return result.ok

    def requeue_for_retry(self, task_id: str, message: str, attempts: int, category: str) -> bool:
        """``update-task-status {Queued, attempts, error_details, clear_worker}`` (retryable errors)."""
        new_attempts = attempts + 1
        details = f"Retry {new_attempts} ({category}): {message[:500]}"
        payload = {
            "task_id": task_id,
            "status": "Queued",
            "attempts": new_attempts,
            "error_details": details,
            "clear_worker": True,
        }
        result = self.call_with_retry(self._status_url(), payload, "update-task-status", context_id=task_id)
        if result.ok:
            return True
        log.error("task_requeue_failed", task_id=task_id, error=result.error)
        return False

    def complete_with_file(self, task_id: str, path: Path) -> dict[str, Any] | None:
        """``complete_task {task_id, file_data (base64), filename}`` for an output under 2 MB.

        A failure is reported as the worker does: ``update-task-status Failed`` with
        ``Upload failed: <error>``. Returns the answer on success.
        """
        payload = {
            "task_id": task_id,
            "file_data": base64.b64encode(path.read_bytes()).decode(),
            "filename": path.name,
        }
        return self._complete(task_id, payload, "Upload failed", timeout=COMPLETE_TIMEOUT)

    def _complete(
        self, task_id: str, payload: dict[str, Any], failure: str, *, timeout: float = STATUS_TIMEOUT
    ) -> dict[str, Any] | None:
        """``complete_task``; its answer, or None once a failure is reported as ``<failure>: <error>``."""
        url = self.env.get("SUPABASE_EDGE_COMPLETE_TASK_URL") or self.url("complete_task")
        result = self.call_with_retry(
            url, payload, "complete_task", context_id=task_id, timeout=timeout, retry_404=NOT_FOUND_PATTERNS
        )
        if result.response is not None and result.response.status_code == 200:
            answer = result.json()
            return answer if isinstance(answer, dict) else {}
        error = result.error or f"{EDGE_FAIL_PREFIX}:complete_task:HTTP_N/A] No response"
        log.error("task_complete_report_failed", task_id=task_id, error=error)
        self.mark_failed(task_id, f"{failure}: {error}")
        return None

    # -- an orchestrator task -----------------------------------------------------------------------

    def _children_url(self) -> str:
        return self.url("get-orchestrator-children", "SUPABASE_EDGE_GET_ORCHESTRATOR_CHILDREN_URL")

    def children_now(self, task_id: str) -> list[dict[str, Any]] | None:
        """The poll's ``get-orchestrator-children``: one call; the children, or None when it failed."""
        try:
            resp = self._post_once(self._children_url(), {"orchestrator_task_id": task_id}, CHILDREN_TIMEOUT)
            if resp.status_code != 200:
                return None
            data = resp.json()
        except (httpx.HTTPError, OSError, ValueError) as exc:
            log.debug("orchestrator_children_failed", task_id=task_id, error=str(exc)[:300])
            return None
        tasks = data.get("tasks", []) if isinstance(data, dict) else None
        return [t for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else None

    def children(self, task_id: str) -> list[dict[str, Any]] | None:
        """The handler's ``get-orchestrator-children``, through the retry helper; None when it failed."""
        result = self.call_with_retry(
            self._children_url(),
            {"orchestrator_task_id": task_id},
            "get-orchestrator-children",
            context_id=task_id,
            timeout=CHILDREN_TIMEOUT,
            retry_404=("not found",),
        )
        if not result.ok:
            log.debug("orchestrator_children_failed", task_id=task_id, error=result.error)
            return None
        data = result.json()
        tasks = data.get("tasks", []) if isinstance(data, dict) else None
        return [t for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else None

    def create_task(
        self, task_type: str, project_id: Any, params: Mapping[str, Any], dependant_on: str | None
    ) -> tuple[str, str | None]:
        """``create-task`` for one child: (the id the worker chose for it, the error text or None)."""
        task_id = str(uuid.uuid4())
        child_input: dict[str, Any] = {**params, "task_id": task_id}
        if dependant_on is not None:
            child_input["dependant_on"] = [dependant_on]
        payload = {"family": task_type, "project_id": project_id, "input": child_input}
        result = self.call_with_retry(
            self.url("create-task", "SUPABASE_EDGE_CREATE_TASK_URL"),
            payload,
            "create-task",
            context_id=f"{task_type}:{task_id[:8]}",
            timeout=CREATE_TASK_TIMEOUT,
        )
        if result.response is not None and result.response.status_code == 200:
            return task_id, None
        return task_id, result.error or f"{EDGE_FAIL_PREFIX}:create-task:HTTP_N/A] No response"

    def report_orchestrating(self, task_id: str, message: str) -> int | None:
        """``update-task-status {In Progress, output_location}``: "still orchestrating"; the answer's status.

        The app refuses In Progress -> In Progress (409); the worker logs the error and goes on."""
        payload: dict[str, Any] = {"task_id": task_id, "status": "In Progress"}
        if message:
            payload["output_location"] = message
        result = self.call_with_retry(self._status_url(), payload, "update-task-status", context_id=task_id)
        if not result.ok:
            log.info("orchestrator_waiting_refused", task_id=task_id, error=result.error)
        return result.response.status_code if result.response is not None else None

    def complete_with_output(self, task_id: str, output: str) -> dict[str, Any] | None:
        """``complete_task`` for an output that is not a local file (a finished parent's).

        A public URL of the media bucket goes as ``storage_path``, anything else as
        ``output_location`` (which the app refuses); a failure is reported as ``update-task-status
        Failed`` with ``Completion failed: <error>``."""
        if PUBLIC_MEDIA_MARK in output:
            payload = {"task_id": task_id, "storage_path": output.split(PUBLIC_MEDIA_MARK, 1)[1]}
        else:
            payload = {"task_id": task_id, "output_location": output}
        return self._complete(task_id, payload, "Completion failed")


class TableClient:
    """The worker's supabase-py calls (PostgREST), with the key the worker picks for its client."""

    def __init__(self, supabase_url: str, key: str) -> None:
        from supabase import create_client

        self.client = create_client(supabase_url, key)

    def my_in_progress_task(self, worker_id: str) -> dict[str, Any] | None:
        """The recovery read: a task already In Progress under this worker (a claim whose answer was lost)."""
        try:
            result = (
                self.client.table("tasks")
                .select("id, params, task_type, project_id")
                .eq("worker_id", worker_id)
                .eq("status", "In Progress")
                .limit(1)
                .execute()
            )
        except Exception as exc:  # the worker catches every client error here: recovery must not block
            log.info("recovery_check_failed", error=str(exc)[:300])
            return None
        rows = result.data or []
        if not rows or not isinstance(rows[0], dict):
            return None
        row = rows[0]
        return {
            "task_id": row.get("id"),
            "params": row.get("params"),
            "task_type": row.get("task_type"),
            "project_id": row.get("project_id"),
        }

    def children_by_ref(self, task_id: str, columns: str) -> list[dict[str, Any]] | None:
        """The children fallback: tasks whose ``params`` contain ``orchestrator_task_id_ref``; None on error."""
        try:
            result = (
                self.client.table("tasks")
                .select(columns)
                .contains("params", {"orchestrator_task_id_ref": task_id})
                .order("created_at")
                .execute()
            )
        except Exception as exc:  # the worker catches every client error here: the check must not block
            log.debug("orchestrator_children_failed", task_id=task_id, error=str(exc)[:300])
            return None
        return [row for row in result.data or [] if isinstance(row, dict)]

    def requeue_direct(self, task_id: str, attempts: int, details: str) -> bool:
        """The fallback when the requeue Edge call failed: a PATCH naming ``error_details`` (no such column)."""
        try:
            result = (
                self.client.table("tasks")
                .update(
                    {
                        "status": "Queued",
                        "worker_id": None,
                        "attempts": attempts,
                        "error_details": details,
                        "generation_started_at": None,
                    }
                )
                .eq("id", task_id)
                .execute()
            )
        except Exception as exc:
            log.error("task_requeue_direct_failed", task_id=task_id, error=str(exc)[:300])
            return False
        return bool(result.data)


def mark_worker_for_termination(
    supabase_url: str, key: str, worker_id: str, task_id: str, reason: str
) -> bool:
    """The fatal-error handler's writes, in its order, with its own client (service key from the env).

    Reads the worker's metadata (``.single()``), PATCHes ``workers`` with ``status: error`` and the
    metadata plus ``error_reason``, ``error_time``, ``self_terminated``, then PATCHes the task back to
    Queued naming ``error_details``, a column ``tasks`` does not have, so that PATCH fails as in
    production (PGRST204). Returns whether the worker row was written.
    """
    from supabase import create_client

    client = create_client(supabase_url, key)
    try:
        found = client.table("workers").select("id, metadata").eq("id", worker_id).single().execute()
    except Exception as exc:
        log.error("fatal_mark_failed", step="read_worker", error=str(exc)[:300])
        return False
    row = found.data if isinstance(found.data, dict) else {}
    raw_metadata = row.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    body = {
        "status": "error",
        "metadata": {
            **metadata,
            "error_reason": reason,
            "error_time": datetime.now(UTC).isoformat(),
            "self_terminated": True,
        },
    }
    try:
        updated = client.table("workers").update(body).eq("id", worker_id).execute()
    except Exception as exc:
        log.error("fatal_mark_failed", step="patch_worker", error=str(exc)[:300])
        return False
    if not updated.data:
        log.error("fatal_mark_failed", step="patch_worker", error="no row returned")
        return False
    try:
        (
            client.table("tasks")
            .update(
                {
                    "status": "Queued",
                    "worker_id": None,
                    "generation_started_at": None,
                    "error_details": reason,
                }
            )
            .eq("id", task_id)
            .eq("worker_id", worker_id)
            .eq("status", "In Progress")
            .execute()
        )
        log.info("fatal_task_reset", task_id=task_id)
    except Exception as exc:
        log.error("fatal_mark_failed", step="patch_task", task_id=task_id, error=str(exc)[:300])
    return True
