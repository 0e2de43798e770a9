"""The simulated Reigh worker (``orchestrator.standins.worker``) on the wire, against a recording HTTP server.

The server stands where Supabase would (Edge Functions under ``/functions/v1``, PostgREST under
``/rest/v1``), records every request with its arrival time, method, path, headers and body, and
answers as the test scripts it. Each test starts the worker as the orchestrator does (a process with
the real worker's arguments and the pod's environment) and checks the calls the real worker makes
(banodoco/Reigh-Worker ``worker.py``, ``heartbeat_guardian.py``, ``source/core/db/*.py`` at 4d09184, and
banodoco/reigh-worker 22cbba9 where it differs: ``source/runtime/worker/server.py``, ``guardian.py``,
``task_claim.py``): paths, headers, bodies, the order of the poll cycle, the intervals, the retries, the
crash beat of the guardian process, the fatal-error path and 22cbba9's shutdown beat.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

SERVICE_KEY = "sb_service_0123456789abcdef0123"
ANON_KEY = "sb_anon_0123456789abcdef012345"
HEARTBEAT_PATH = "/rest/v1/rpc/func_worker_heartbeat_with_logs"
BEAT_SEC = 0.6
POLL_SEC = 0.3
# The two upstream revisions the simulated worker speaks (SIM_WORKER_REVISION; 22cbba9 by default).
CURRENT = "22cbba9"
OLDER = {"SIM_WORKER_REVISION": "4d09184"}


@dataclass
class Request:
    at: float
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Answer = tuple[int, Any]  # (status, JSON body or None for an empty one)


@dataclass
class Recorder:
    """A scripted Supabase: ``routes[(method, path)]`` answers; every request recorded before answering."""

    routes: dict[tuple[str, str], Callable[[Request], Answer]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def on(self, method: str, path: str, answer: Callable[[Request], Answer] | Answer) -> None:
        if callable(answer):
            self.routes[(method, path)] = answer
        else:
            fixed: Answer = answer
            self.routes[(method, path)] = lambda _r: fixed

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    def beats(self) -> list[Request]:
        return self.calls("POST", HEARTBEAT_PATH)

    def edge(self, name: str) -> list[Request]:
        return self.calls("POST", f"/functions/v1/{name}")

    def answer(self, req: Request) -> Answer:
        with self.lock:
            self.requests.append(req)
            route = self.routes.get((req.method, req.path))
        if route is None:
            return 404, {"message": f"no route {req.method} {req.path}"}
        return route(req)


def default_routes(rec: Recorder) -> None:
    rec.on("POST", HEARTBEAT_PATH, (200, {"success": True, "heartbeat_updated": True, "logs_inserted": 0}))
    rec.on("GET", "/rest/v1/tasks", (200, []))
    rec.on("POST", "/functions/v1/task-counts", (200, {"totals": {"queued_only": 0, "active_only": 0}}))
    rec.on("POST", "/functions/v1/claim-next-task", (204, None))
    rec.on("POST", "/functions/v1/update-worker-model", (400, {"error": "current_model is required"}))
    rec.on("POST", "/functions/v1/update-task-status", (200, {"success": True}))
    rec.on("POST", "/functions/v1/complete_task", (200, {"success": True, "public_url": "https://x/o.mp4"}))


@pytest.fixture
def rec() -> Iterator[Recorder]:
    recorder = Recorder()
    default_routes(recorder)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            req = Request(
                time.monotonic(),
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            status, payload = recorder.answer(req)
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


# --- the worker as a process ---------------------------------------------------------------------------


@dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    out: Path
    started: float

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for raw in self.out.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                if raw.startswith("{"):
                    found.append(json.loads(raw))
        return found

    def events(self) -> list[str]:
        return [line.get("event", "") for line in self.lines()]

    def text(self) -> str:
        return self.out.read_text(errors="replace")


@pytest.fixture
def launch(rec: Recorder, tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    started: list[WorkerProc] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        command: list[str] | None = None,
        beat: float = BEAT_SEC,
        poll: float | None = POLL_SEC,
    ) -> WorkerProc:
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "SIM_WORKER_", "RUNPOD_"))
        }
        environ |= {"SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY, "SIM_WORKER_HEARTBEAT_SEC": str(beat)}
        if poll is not None:
            environ["SIM_WORKER_POLL_SEC"] = str(poll)
        environ |= env or {}
        argv = list(args) or [
            "--supabase-url",
            rec.url,
            "--supabase-access-token",
            SERVICE_KEY,
            "--worker",
            "gpu-w1",
            "--db-type",
            "supabase",
            "--supabase-anon-key",
            ANON_KEY,
            "--wgp-profile",
            "1",
        ]
        out = tmp_path / f"worker-{len(started)}.log"
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                (command or [sys.executable, "-m", "orchestrator.standins.worker"]) + argv,
                env=environ,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd or tmp_path,
                start_new_session=True,  # its own group: teardown kills the worker and its guardian
            )
        handle = WorkerProc(proc, out, time.monotonic())
        started.append(handle)
        return handle

    yield start
    for handle in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(handle.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            handle.proc.wait(timeout=10)


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def task(task_id: str, **params: Any) -> dict[str, Any]:
    return {"task_id": task_id, "params": params, "task_type": "wan_2_2_t2i", "project_id": "p-1"}


def claims_once(rec: Recorder, *tasks: dict[str, Any]) -> None:
    """task-counts says there is work while tasks remain; claim-next-task hands them out, then 204."""
    queue = list(tasks)

    def counts(_r: Request) -> Answer:
        return 200, {"totals": {"queued_only": len(queue), "active_only": 0}}

    def claim(_r: Request) -> Answer:
        return (200, queue.pop(0)) if queue else (204, None)

    rec.on("POST", "/functions/v1/task-counts", counts)
    rec.on("POST", "/functions/v1/claim-next-task", claim)


# --- heartbeats ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("revision", [CURRENT, OLDER["SIM_WORKER_REVISION"]])
def test_the_guardian_beats_at_start_then_every_interval_with_the_real_headers_and_body(
    rec: Recorder, launch: Callable[..., WorkerProc], revision: str
) -> None:
    w = launch(env={"SIM_WORKER_REVISION": revision})
    beats = wait_for(lambda: len(rec.beats()) >= 4 and rec.beats(), what="four heartbeats")
    first = beats[0]
    # At start, not an interval later. Not necessarily before the worker's first poll: the guardian is a
    # process of its own, started and not waited for (as Reigh-Worker's heartbeat_guardian is), so on a
    # busy machine the worker's first claim can go out first (seen: 14 ms ahead).
    assert first.at - w.started < 5.0
    gaps = [b.at - a.at for a, b in itertools.pairwise(beats)]
    assert all(BEAT_SEC * 0.9 <= g <= BEAT_SEC + 1.5 for g in gaps), gaps
    h = first.headers
    assert h["apikey"] == SERVICE_KEY
    # 22cbba9's guardian sends the key as a Bearer too; 4d09184's did not.
    assert h.get("authorization") == (f"Bearer {SERVICE_KEY}" if revision == CURRENT else None)
    assert h["content-type"] == "application/json" and h["prefer"] == "return=representation"
    body = first.json
    assert set(body) == {
        "worker_id_param",
        "vram_total_mb_param",
        "vram_used_mb_param",
        "logs_param",
        "status_param",
    }
    assert body["worker_id_param"] == "gpu-w1" and body["status_param"] == "active"
    assert isinstance(body["vram_total_mb_param"], int) and isinstance(body["vram_used_mb_param"], int)
    assert isinstance(body["logs_param"], list)
    # The guardian is a process of its own, not a thread of the worker.
    started = next(line for line in w.lines() if line.get("event") == "worker_started")
    guardian = next(line for line in w.lines() if line.get("event") == "guardian_started")
    assert started["guardian_pid"] != started["pid"] and guardian["pid"] == started["guardian_pid"]


def test_the_real_default_interval_is_twenty_seconds(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    w = launch(env={"SIM_WORKER_HEARTBEAT_SEC": ""}, poll=None)
    wait_for(lambda: rec.beats(), what="the first heartbeat")
    started = next(line for line in w.lines() if line.get("event") == "worker_started")
    assert started["heartbeat_sec"] == 20.0 and started["poll_sec"] == 10.0
    time.sleep(1.5)
    assert len(rec.beats()) == 1


# --- the poll cycle ------------------------------------------------------------------------------------


def test_an_idle_poll_is_task_counts_then_a_claim_with_model_affinity_and_no_table_read(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    launch()
    wait_for(lambda: len(rec.edge("claim-next-task")) >= 3, what="three polls")
    counts, claims = rec.edge("task-counts"), rec.edge("claim-next-task")
    assert counts[0].json == {"run_type": "gpu", "include_active": True}
    # Claimed although task-counts said nothing is queued (reigh-worker 02b1eab: the counts leave
    # parents out), with the model-affinity fields of server.py.
    assert claims[0].json == {
        "worker_id": "gpu-w1",
        "run_type": "gpu",
        "same_model_only": True,
        "max_task_wait_minutes": 5,
    }
    assert claims[0].headers["authorization"] == f"Bearer {SERVICE_KEY}" and "apikey" not in claims[0].headers
    assert counts[0].at <= claims[0].at
    gaps = [b.at - a.at for a, b in itertools.pairwise(claims)]
    assert all(POLL_SEC * 0.9 <= g <= POLL_SEC + 1.5 for g in gaps), gaps
    # No read of its own In Progress task: check_my_assigned_tasks is a no-op there.
    assert rec.calls("GET", "/rest/v1/tasks") == []


def test_an_idle_poll_of_4d09184_is_a_recovery_read_and_task_counts_without_a_claim(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    launch(env=OLDER)
    wait_for(lambda: len(rec.edge("task-counts")) >= 3, what="three polls")
    reads = rec.calls("GET", "/rest/v1/tasks")
    assert len(reads) >= 3
    q = reads[0].query
    assert q["select"] == ["id,params,task_type,project_id"]
    assert q["worker_id"] == ["eq.gpu-w1"] and q["status"] == ["eq.In Progress"] and q["limit"] == ["1"]
    # The REST client's key: SUPABASE_SERVICE_ROLE_KEY first, as apikey and Bearer.
    assert reads[0].headers["apikey"] == SERVICE_KEY
    assert reads[0].headers["authorization"] == f"Bearer {SERVICE_KEY}"
    counts = rec.edge("task-counts")
    assert counts[0].json == {"run_type": "gpu", "include_active": True}
    assert counts[0].headers["authorization"] == f"Bearer {SERVICE_KEY}"
    assert "apikey" not in counts[0].headers and counts[0].headers["content-type"] == "application/json"
    assert rec.edge("claim-next-task") == []  # queued_only 0: no claim
    gaps = [b.at - a.at for a, b in itertools.pairwise(counts)]
    assert all(POLL_SEC * 0.9 <= g <= POLL_SEC + 1.5 for g in gaps), gaps
    # Each cycle in order: the recovery read before task-counts.
    assert reads[0].at <= counts[0].at


@pytest.mark.parametrize("revision", [CURRENT, OLDER["SIM_WORKER_REVISION"]])
def test_a_claimed_task_is_run_and_completed_with_its_file(
    rec: Recorder, launch: Callable[..., WorkerProc], revision: str
) -> None:
    claims_once(rec, task("t-1", duration_sec=0.3, model="wan_2_2"))
    w = launch(env={"SIM_WORKER_REVISION": revision})
    done = wait_for(lambda: rec.edge("complete_task"), what="complete_task")
    claim = rec.edge("claim-next-task")[0]
    affinity = {"same_model_only": True, "max_task_wait_minutes": 5} if revision == CURRENT else {}
    assert claim.json == {"worker_id": "gpu-w1", "run_type": "gpu", **affinity}
    assert claim.headers["authorization"] == f"Bearer {SERVICE_KEY}" and "apikey" not in claim.headers
    [model] = rec.edge("update-worker-model")
    # 22cbba9 sends the field the app reads (current_model); 4d09184's `model` the app answers 400.
    field = "current_model" if revision == CURRENT else "model"
    assert model.json == {"worker_id": "gpu-w1", field: "wan_2_2"}
    assert model.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    reset = rec.edge("update-task-status")[0]
    assert reset.json == {"task_id": "t-1", "status": "In Progress", "reset_generation_started_at": True}
    body = done[0].json
    assert set(body) == {"task_id", "file_data", "filename"} and body["task_id"] == "t-1"
    assert body["filename"] == "t-1.mp4" and len(base64.b64decode(body["file_data"])) > 0
    assert done[0].at - reset.at >= 0.3 * 0.9  # the "generation" took its duration
    assert claim.at < model.at < reset.at < done[0].at
    # After a task: the next poll comes about 1 s later (not the poll interval).
    nxt = wait_for(lambda: [r for r in rec.edge("task-counts") if r.at > done[0].at], what="the next poll")
    assert 0.9 <= nxt[0].at - done[0].at <= 4.0
    assert "task_completed" in w.events()
    # The same model for the next task: no second model switch.
    assert len(rec.edge("update-worker-model")) == 1


def test_a_claim_answered_204_or_an_error_gives_no_task(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    rec.on("POST", "/functions/v1/task-counts", (200, {"totals": {"queued_only": 3}}))
    answers = iter([(204, None), (500, {"error": "boom"}), (403, {"error": "Invalid token"})])
    rec.on("POST", "/functions/v1/claim-next-task", lambda _r: next(answers, (204, None)))
    launch()
    wait_for(lambda: len(rec.edge("claim-next-task")) >= 4, what="four claims")
    assert rec.edge("update-task-status") == [] and rec.edge("complete_task") == []


def test_task_counts_failing_makes_the_worker_claim_anyway(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    rec.on("POST", "/functions/v1/task-counts", (500, {"error": "down"}))
    launch()
    wait_for(lambda: len(rec.edge("claim-next-task")) >= 2, what="claims without counts")
    assert len(rec.edge("task-counts")) >= 2  # one try per cycle, no retry before the claim


def test_a_task_whose_claim_answer_was_lost_is_never_run_and_the_worker_claims_on(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    # The database gave t-9 to this worker but the answer never arrived: 22cbba9 does not look.
    held = [{"id": "t-9", "params": {"duration_sec": 0.1}, "task_type": "vace", "project_id": "p-1"}]
    rec.on("GET", "/rest/v1/tasks", (200, held))
    claims_once(rec, task("t-1", duration_sec=0.05))
    launch()
    done = wait_for(lambda: rec.edge("complete_task"), what="the next claimed task to complete")
    wait_for(lambda: [c for c in rec.edge("claim-next-task") if c.at > done[0].at], what="the next poll")
    assert [r.json["task_id"] for r in rec.edge("complete_task")] == ["t-1"]
    assert rec.calls("GET", "/rest/v1/tasks") == []


def test_its_own_in_progress_task_is_recovered_without_a_claim_by_4d09184(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    held = [{"id": "t-9", "params": {"duration_sec": 0.1}, "task_type": "vace", "project_id": "p-1"}]
    rec.on("GET", "/rest/v1/tasks", lambda _r: (200, held.copy() if not rec.edge("complete_task") else []))
    launch(env=OLDER)
    done = wait_for(lambda: rec.edge("complete_task"), what="the recovered task to complete")
    assert done[0].json["task_id"] == "t-9"
    assert rec.calls("POST", "/functions/v1/claim-next-task") == []
    assert [r for r in rec.edge("task-counts") if r.at < done[0].at] == []


# --- failures --------------------------------------------------------------------------------------------


def test_a_failure_is_reported_failed_and_a_retryable_one_requeued(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    claims_once(
        rec,
        task("t-1", duration_sec=0.05, fail=True, error="CUDA out of memory"),
        task("t-2", duration_sec=0.05, fail=True, error="Connection refused by upstream"),
    )
    launch()
    statuses = wait_for(
        lambda: (
            (s := [r.json for r in rec.edge("update-task-status") if r.json.get("status") != "In Progress"])
            and len(s) >= 2
            and s
        ),
        what="two failure reports",
    )
    assert statuses[0] == {"task_id": "t-1", "status": "Failed", "output_location": "CUDA out of memory"}
    requeue = statuses[1]
    assert requeue["task_id"] == "t-2" and requeue["status"] == "Queued" and requeue["clear_worker"] is True
    assert requeue["attempts"] == 1  # the claim carries no attempts: always counted from 0
    assert requeue["error_details"].startswith("Retry 1 (network_transient): Connection refused")
    assert rec.edge("complete_task") == []


def test_the_retry_helper_retries_5xx_and_not_found_with_growing_sleeps(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    claims_once(rec, task("t-1", duration_sec=0.05))
    answers = iter(
        [(503, {"error": "unavailable"}), (404, {"error": "Task not found"}), (200, {"success": True})]
    )
    rec.on("POST", "/functions/v1/complete_task", lambda _r: next(answers))
    launch()
    calls = wait_for(
        lambda: len(rec.edge("complete_task")) >= 3 and rec.edge("complete_task"), what="three tries"
    )
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    # Sleeps of 1 s then 2 s (upper bounds loose: a loaded machine adds to each).
    assert 0.9 <= gaps[0] < 4.0 and 1.9 <= gaps[1] < 5.0 and gaps[1] - gaps[0] >= 0.7, gaps
    assert calls[0].body == calls[2].body
    time.sleep(0.5)
    assert len(rec.edge("complete_task")) == 3
    assert [r.json["status"] for r in rec.edge("update-task-status")] == ["In Progress"]  # no failure report


def test_a_refused_completion_fails_the_task_without_retrying_a_4xx(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    claims_once(rec, task("t-1", duration_sec=0.05))
    rec.on("POST", "/functions/v1/complete_task", (400, {"error": "Task is not In Progress"}))
    launch()
    failed = wait_for(
        lambda: [r.json for r in rec.edge("update-task-status") if r.json.get("status") == "Failed"],
        what="the failure report",
    )
    assert len(rec.edge("complete_task")) == 1
    assert failed[0]["output_location"].startswith(
        "Upload failed: [EDGE_FAIL:complete_task:HTTP_400] 400 after 1 attempts"
    )


# --- an orchestrator task -------------------------------------------------------------------------------

PROJECT = "5b3c2f4e-1111-4a2b-9c3d-000000000001"


def scripted_app(rec: Recorder, parent: dict[str, Any]) -> list[dict[str, Any]]:
    """The app around one parent: create-task stores the children (returned, their status the test's to
    set), get-orchestrator-children lists them, the recovery read answers the parent once it has some
    and until complete_task is called, and "still orchestrating" is refused with 409 as the app does."""
    children: list[dict[str, Any]] = []

    def create(r: Request) -> Answer:
        body = r.json
        child = {"id": body["input"]["task_id"], "task_type": body["family"], "status": "Queued",
                 "params": body["input"], "output_location": None}  # fmt: skip
        children.append(child)
        return 200, {"task_id": child["id"], "status": "Task queued"}

    def status(r: Request) -> Answer:
        if r.json.get("status") == "In Progress" and "reset_generation_started_at" not in r.json:
            return 409, {"success": False, "current_status": "In Progress", "requested_status": "In Progress"}
        return 200, {"success": True}

    def held(_r: Request) -> Answer:
        row = {"id": parent["task_id"], "params": parent["params"], "task_type": parent["task_type"],
               "project_id": parent["project_id"]}  # fmt: skip
        return 200, [row] if children and not rec.edge("complete_task") else []

    claims_once(rec, parent)
    rec.on("POST", "/functions/v1/create-task", create)
    rec.on("POST", "/functions/v1/get-orchestrator-children", lambda _r: (200, {"tasks": children}))
    rec.on("POST", "/functions/v1/update-task-status", status)
    rec.on("GET", "/rest/v1/tasks", held)
    return children


def test_a_claimed_orchestrator_creates_its_chain_then_22cbba9_never_looks_at_it_again(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    parent = {"task_id": "p-1", "task_type": "travel_orchestrator", "project_id": PROJECT,
              "params": {"duration_sec": 0.2, "orchestrator_details": {"num_new_segments_to_generate": 2}}}  # fmt: skip
    children = scripted_app(rec, parent)
    launch()
    reported = wait_for(
        lambda: [r for r in rec.edge("update-task-status") if r.json.get("output_location")],
        what='the "still orchestrating" report',
    )
    assert len(rec.edge("create-task")) == 2 and reported[0].json["status"] == "In Progress"
    for child in children:
        child["status"] = "Complete"
    # Polls go on (claims every time), but the parent is not run again: the app completes it.
    wait_for(
        lambda: len([c for c in rec.edge("claim-next-task") if c.at > reported[0].at]) >= 3, what="polls"
    )
    assert [r for r in rec.edge("get-orchestrator-children") if r.at > reported[0].at] == []
    assert rec.edge("complete_task") == [] and len(rec.edge("create-task")) == 2


def test_a_claimed_orchestrator_creates_its_chain_waits_and_reports_the_finished_chain(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    parent = {"task_id": "p-1", "task_type": "travel_orchestrator", "project_id": PROJECT,
              "params": {"duration_sec": 0.2, "orchestrator_details": {"num_new_segments_to_generate": 3}}}  # fmt: skip
    children = scripted_app(rec, parent)
    w = launch(env=OLDER)
    reported = wait_for(
        lambda: [r for r in rec.edge("update-task-status") if r.json.get("output_location")],
        what='the "still orchestrating" report',
    )
    # Asked which children exist, then created the chain through create-task, the app's passthrough shape.
    [asked] = [r for r in rec.edge("get-orchestrator-children") if r.at < reported[0].at]
    assert asked.json == {"orchestrator_task_id": "p-1"}
    assert asked.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    creates = [r.json for r in rec.edge("create-task")]
    assert [set(c) for c in creates] == [{"family", "project_id", "input"}] * 3
    assert [(c["family"], c["project_id"]) for c in creates] == [("travel_segment", PROJECT)] * 3
    inputs = [c["input"] for c in creates]
    assert [i["segment_index"] for i in inputs] == [0, 1, 2]
    assert all(i["orchestrator_task_id_ref"] == "p-1" and i["orchestrator_run_id"] == "p-1" for i in inputs)
    assert all(i["duration_sec"] == 0.2 and i["project_id"] == PROJECT for i in inputs)
    assert "dependant_on" not in inputs[0]
    assert [i["dependant_on"] for i in inputs[1:]] == [[inputs[0]["task_id"]], [inputs[1]["task_id"]]]
    assert (inputs[0]["is_first_segment"], inputs[2]["is_last_segment"]) == (True, True)
    assert reported[0].json == {"task_id": "p-1", "status": "In Progress", "output_location":
                                "Successfully enqueued 3 new segment tasks for run p-1. (Total expected: 3 segments)"}  # fmt: skip
    # Dispatched outside the generation queue: no model load, no billing reset.
    assert rec.edge("update-worker-model") == [] and len(rec.edge("update-task-status")) == 1
    # Held, deferred, not run again while a child is unfinished: nothing more created or reported.
    wait_for(
        lambda: len([r for r in rec.edge("get-orchestrator-children") if r.at > reported[0].at]) >= 3,
        what="three children checks",
    )
    assert len(rec.edge("create-task")) == 3 and len(rec.edge("update-task-status")) == 1
    assert rec.edge("claim-next-task")[1:] == []  # task-counts said nothing is queued
    # The chain finished without the parent (here nobody completed it): run again, it reports completion
    # with the last child's output, as a storage path, and creates nothing.
    for child in children:
        child["status"] = "Complete"
        child["output_location"] = (
            f"{rec.url}/storage/v1/object/public/image_uploads/system/tasks/{child['id']}/o.mp4"
        )
    done = wait_for(lambda: rec.edge("complete_task"), what="the parent's completion")
    assert done[0].json == {"task_id": "p-1", "storage_path": f"system/tasks/{children[2]['id']}/o.mp4"}
    assert len(rec.edge("create-task")) == 3
    assert "orchestrator_children_created" in w.events()


def test_an_orchestrator_that_cannot_make_its_children_fails(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    parent = {"task_id": "p-1", "task_type": "travel_orchestrator", "project_id": PROJECT,
              "params": {"orchestrator_details": {}}}  # fmt: skip
    scripted_app(rec, parent)
    # The legacy body's answer from today's app: every create-task refused.
    rec.on("POST", "/functions/v1/create-task", (400, {"error": "invalid_request_body",
                                                       "message": "family field is required"}))  # fmt: skip
    launch()
    failed = wait_for(
        lambda: [r.json for r in rec.edge("update-task-status") if r.json.get("status") == "Failed"],
        what="the failure report",
    )
    assert len(rec.edge("create-task")) == 1  # a 4xx is not retried; the first refusal ends the run
    assert failed[0]["task_id"] == "p-1" and failed[0]["output_location"].startswith(
        "Failed during travel orchestration processing: Edge Function create-task failed:"
        " [EDGE_FAIL:create-task:HTTP_400]"
    )
    assert rec.edge("complete_task") == []


# --- crash, fatal error, clean stop ------------------------------------------------------------------------


def test_an_abrupt_death_is_reported_once_as_crashed_by_the_guardian(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    claims_once(rec, task("t-1", duration_sec=0.4, crash=True))
    w = launch()
    assert w.proc.wait(timeout=30) == 70  # reaped: the guardian's liveness check sees it gone
    crashed = wait_for(
        lambda: [b for b in rec.beats() if b.json["status_param"] == "crashed"], what="the crash beat"
    )
    assert crashed[0].json == {
        "worker_id_param": "gpu-w1",
        "vram_total_mb_param": 0,
        "vram_used_mb_param": 0,
        "logs_param": [],
        "status_param": "crashed",
    }
    assert crashed[0].headers["apikey"] == SERVICE_KEY
    time.sleep(BEAT_SEC * 3)
    assert rec.beats()[-1] is not None and len([b for b in rec.beats() if b.at > crashed[0].at]) == 0
    assert rec.edge("complete_task") == [] and [r.json["status"] for r in rec.edge("update-task-status")] == [
        "In Progress"
    ]
    assert "guardian_worker_gone" in w.events()


@pytest.mark.parametrize("revision", [CURRENT, OLDER["SIM_WORKER_REVISION"]])
def test_a_fatal_error_marks_the_worker_row_and_fails_the_task_patch(
    rec: Recorder, launch: Callable[..., WorkerProc], revision: str
) -> None:
    """The handler's writes, then: 4d09184 exits 1; 22cbba9's generation loop catches the FatalWorkerError
    (task_processor.py worker_loop), so its main loop reports the task Failed and polls on."""
    claims_once(rec, task("t-1", duration_sec=0.2, fatal="cuda_hardware"))
    row = {"id": "gpu-w1", "metadata": {"runpod_id": "rp-1", "startup_phase": "ready"}}
    rec.on("GET", "/rest/v1/workers", (200, row))
    rec.on("PATCH", "/rest/v1/workers", lambda r: (200, [{**row, **r.json}]))
    rec.on(
        "PATCH",
        "/rest/v1/tasks",
        (
            400,
            {
                "code": "PGRST204",
                "details": None,
                "hint": None,
                "message": "Could not find the 'error_details' column of 'tasks' in the schema cache",
            },
        ),
    )
    w = launch(env={"SIM_WORKER_REVISION": revision})
    if revision == CURRENT:
        failed = wait_for(
            lambda: [r.json for r in rec.edge("update-task-status") if r.json.get("status") == "Failed"],
            what="the task's failure",
        )
        assert failed == [
            {"task_id": "t-1", "status": "Failed", "output_location": "GPU has fallen off the bus"}
        ]
        done = time.monotonic()
        wait_for(lambda: [c for c in rec.edge("claim-next-task") if c.at > done], what="a poll after it")
        assert w.proc.poll() is None
    else:
        assert w.proc.wait(timeout=30) == 1
    exited = time.monotonic()
    [read] = rec.calls("GET", "/rest/v1/workers")
    assert read.query["id"] == ["eq.gpu-w1"] and read.query["select"] == ["id,metadata"]
    assert read.headers["accept"] == "application/vnd.pgrst.object+json"  # supabase-py .single()
    assert read.headers["apikey"] == SERVICE_KEY
    [patch] = rec.calls("PATCH", "/rest/v1/workers")
    assert patch.query["id"] == ["eq.gpu-w1"]
    body = patch.json
    assert body["status"] == "error"
    meta = body["metadata"]
    assert meta["runpod_id"] == "rp-1" and meta["startup_phase"] == "ready"  # the row's metadata kept
    assert meta["error_reason"] == "FATAL cuda_hardware: GPU has fallen off the bus"
    assert meta["self_terminated"] is True and "error_time" in meta
    [task_patch] = rec.calls("PATCH", "/rest/v1/tasks")
    assert task_patch.json == {
        "status": "Queued",
        "worker_id": None,
        "generation_started_at": None,
        "error_details": "FATAL cuda_hardware: GPU has fallen off the bus",
    }
    assert task_patch.query == {"id": ["eq.t-1"], "worker_id": ["eq.gpu-w1"], "status": ["eq.In Progress"]}
    assert read.at < patch.at < task_patch.at
    # No 'crashed' or 'terminated' beat: 4d09184's normal exit ends the daemonic guardian with it (and no
    # beat follows), 22cbba9's process lives on, beating 'active'.
    time.sleep(BEAT_SEC * 3)
    assert [b for b in rec.beats() if b.json["status_param"] != "active"] == []
    later = [b for b in rec.beats() if b.at > exited + 0.5]
    assert later != [] if revision == CURRENT else later == []
    assert "fatal_mark_failed" in w.events()  # the task PATCH failed, as in production


def test_a_fatal_category_with_a_threshold_marks_the_row_only_at_its_second_error_in_a_row(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    """fatal_error_handler.py: ``cuda_driver`` needs two consecutive errors; a task that succeeds in between
    restarts the count. Below the threshold the task fails as any other and the row is not touched."""
    claims_once(
        rec,
        task("t-1", duration_sec=0.05, fatal="cuda_driver"),
        task("t-2", duration_sec=0.05),
        task("t-3", duration_sec=0.05, fatal="cuda_driver"),
        task("t-4", duration_sec=0.05, fatal="cuda_driver"),
    )
    row = {"id": "gpu-w1", "metadata": {"runpod_id": "rp-1"}}
    rec.on("GET", "/rest/v1/workers", (200, row))
    rec.on("PATCH", "/rest/v1/workers", lambda r: (200, [{**row, **r.json}]))
    rec.on("PATCH", "/rest/v1/tasks", (400, {"code": "PGRST204", "message": "no error_details column"}))
    launch()
    failed = wait_for(
        lambda: (
            (
                f := [
                    r.json["task_id"]
                    for r in rec.edge("update-task-status")
                    if r.json.get("status") == "Failed"
                ]
            )
            and len(f) >= 3
            and f
        ),
        what="three failures",
    )
    assert failed == ["t-1", "t-3", "t-4"]
    assert [r.json["task_id"] for r in rec.edge("complete_task")] == ["t-2"]
    [patch] = rec.calls("PATCH", "/rest/v1/workers")  # marked once, for t-4, the second in a row
    [task_patch] = rec.calls("PATCH", "/rest/v1/tasks")
    assert patch.json["status"] == "error" and task_patch.query["id"] == ["eq.t-4"]


@pytest.mark.parametrize(
    ("revision", "sig"),
    [(CURRENT, signal.SIGINT), (CURRENT, signal.SIGTERM), (OLDER["SIM_WORKER_REVISION"], signal.SIGINT)],
)
def test_an_interrupt_stops_cleanly_without_a_crash_beat(
    rec: Recorder, launch: Callable[..., WorkerProc], revision: str, sig: signal.Signals
) -> None:
    w = launch(env={"SIM_WORKER_REVISION": revision})
    wait_for(lambda: len(rec.beats()) >= 2, what="two beats")
    os.kill(w.proc.pid, sig)
    try:
        code = w.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker still runs 20 s after SIGINT; its output ends:\n{w.text()[-4000:]}")
    assert code == 0
    time.sleep(BEAT_SEC * 3)
    ends = [b.json["status_param"] for b in rec.beats() if b.json["status_param"] != "active"]
    # 22cbba9 says it is going (SIGTERM too: server.py maps it to the interrupt); 4d09184 says nothing.
    assert ends == (["terminated"] if revision == CURRENT else [])


# --- start-up and arguments ----------------------------------------------------------------------------------


def test_start_up_arguments_as_the_real_worker_reads_them(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    # No access token: exit 1, nothing sent.
    w = launch("--supabase-url", rec.url, "--worker", "gpu-w1")
    assert w.proc.wait(timeout=30) == 1 and "authentication credential is required" in w.text()
    # An option the real parser does not know: argparse's exit 2.
    w = launch("--supabase-url", rec.url, "--reigh-access-token", SERVICE_KEY, "--task-types", "x")
    assert w.proc.wait(timeout=30) == 2
    # --migrate-only: exit 0 after initialisation, before any call.
    w = launch("--supabase-url", rec.url, "--reigh-access-token", SERVICE_KEY, "--migrate-only")
    assert w.proc.wait(timeout=30) == 0
    assert rec.requests == []
    # No --worker: $RUNPOD_POD_ID, and the anon key flag is used only without the service key (4d09184:
    # its REST client's key, the guardian's too).
    args = ("--supabase-url", rec.url, "--reigh-access-token", "tok-xyz", "--supabase-anon-key", ANON_KEY)
    launch(*args, env={"RUNPOD_POD_ID": "podabc123", "SUPABASE_SERVICE_ROLE_KEY": "", **OLDER})
    beat = wait_for(lambda: rec.beats(), what="a heartbeat")[0]
    assert beat.json["worker_id_param"] == "podabc123" and beat.headers["apikey"] == ANON_KEY
    counts = wait_for(lambda: rec.edge("task-counts"), what="a poll")[0]
    assert counts.headers["authorization"] == "Bearer tok-xyz"
    read = rec.calls("GET", "/rest/v1/tasks")[0]
    assert read.headers["apikey"] == ANON_KEY
    # 22cbba9's guardian: the service key, else the access token (server.py guardian_key).
    launch(*args, env={"RUNPOD_POD_ID": "podnew456", "SUPABASE_SERVICE_ROLE_KEY": ""})
    beat = wait_for(
        lambda: [b for b in rec.beats() if b.json["worker_id_param"] == "podnew456"], what="its heartbeat"
    )[0]
    assert beat.headers["apikey"] == "tok-xyz" and beat.headers["authorization"] == "Bearer tok-xyz"


def test_no_supabase_url_means_upstream_production_which_is_never_reached(
    rec: Recorder, launch: Callable[..., WorkerProc]
) -> None:
    w = launch("--reigh-access-token", SERVICE_KEY, "--worker", "gpu-w1")
    wait_for(lambda: "guardian_started" in w.events(), what="the guardian")
    time.sleep(1.0)
    assert rec.requests == [] and w.proc.poll() is None


# --- the checkout on the volume ---------------------------------------------------------------------------------


def test_the_laid_out_checkout_runs_as_worker_py_and_as_headless_py(
    rec: Recorder, launch: Callable[..., WorkerProc], tmp_path: Path
) -> None:
    from orchestrator.standins.worker.process import lay_out_volume

    volume = tmp_path / "volume"
    app = lay_out_volume(volume)
    assert app == volume / "reigh" / "Headless-Wan2GP"
    assert os.access(app / "worker.py", os.X_OK) and not (app / "headless.py").exists()  # upstream today
    assert (app / "venv" / "bin" / "activate").is_file()
    lay_out_volume(volume)  # idempotent: a restarted emulator on the same state
    git = subprocess.run(
        ["git", "status", "--porcelain"], cwd=app, capture_output=True, text=True, check=True
    )
    assert git.stdout == ""
    pull = subprocess.run(
        ["git", "pull", "origin", "main"], cwd=app, capture_output=True, text=True, check=False
    )
    assert pull.returncode == 0 and "Already up to date" in pull.stdout, pull.stderr
    old = lay_out_volume(volume, worker_dir="Reigh-Worker", entries=("headless.py",))
    assert (old / "headless.py").is_file() and not (old / "worker.py").exists()
    for checkout, entry, wid in ((app, "worker.py", "gpu-a"), (old, "headless.py", "gpu-b")):
        script = (
            f". venv/bin/activate && exec python {entry} --db-type supabase --supabase-url {rec.url} "
            f"--supabase-anon-key {ANON_KEY} --supabase-access-token {SERVICE_KEY} --worker {wid}"
        )
        w = launch(script, command=["bash", "-c"], cwd=checkout)

        def beating(wid: str = wid) -> list[Request]:
            return [b for b in rec.beats() if b.json["worker_id_param"] == wid]

        def started(w: WorkerProc = w) -> list[dict[str, Any]]:
            return [x for x in w.lines() if x.get("event") == "worker_started"]

        wait_for(beating, what=f"{entry} beating")
        assert wait_for(started, what="start")[0]["entry"] == entry
    with pytest.raises(ValueError):
        lay_out_volume(volume, worker_dir="../outside")
