"""The policy reading the real worker: promotion from evidence, and the worker's own reports.

The real Reigh worker (banodoco/Reigh-Worker ``worker.py``, ``heartbeat_guardian.py``) never calls a
function of ours: its guardian posts the app's ``func_worker_heartbeat_with_logs`` every 20 s with
``status_param`` ``active`` (``crashed`` once when the worker process dies; since banodoco/reigh-worker
22cbba9 ``terminated`` once as the process shuts down), and its fatal-error handler PATCHes
``workers.status = 'error'``. The database keeps our state and records those words in
``reported_status``/``reported_at``; these tests pin what the policy makes of them.
"""

from __future__ import annotations

from typing import Any

from orchestrator.core.actions import FailWorker, Initialize, Promote, StartProcess, TerminatePod
from orchestrator.core.observed import Snapshot, Worker
from orchestrator.core.states import Reason, WorkerState
from tests.unit.test_policy import ago, pod, pods_for, run, settings, snap, summary, worker


def reported(w: Worker, status: str | None, seconds_ago: float | None, **details: Any) -> Worker:
    """The same row with a report of the worker's own (``seconds_ago`` before NOW)."""
    return Worker(
        **{
            **{f: getattr(w, f) for f in w.__dataclass_fields__},
            "reported_status": status,
            "reported_at": None if seconds_ago is None else ago(seconds_ago),
            "reported_details": details,
        }
    )


# --- promotion ---------------------------------------------------------------------------------------


def test_a_heartbeat_after_the_process_started_promotes_at_the_next_tick() -> None:
    w = worker(
        "gpu-a", "initializing", created=200, heartbeat=3, initialized_at=ago(60), process_started_at=ago(50)
    )
    result = run(snap([w], claimable=1), pods_for([w]))
    assert summary(result) == [("promote", "gpu-a", "first_heartbeat")]
    [promote] = result.of_kind(Promote)
    assert promote.to_dict() == {"kind": "promote", "reason": "first_heartbeat", "worker_id": "gpu-a"}
    assert result.capacity == 1  # it counted as capacity while booting and still does


def test_a_heartbeat_at_the_very_instant_of_the_start_promotes() -> None:
    w = worker(
        "gpu-a", "initializing", created=200, heartbeat=50, initialized_at=ago(60), process_started_at=ago(50)
    )
    assert run(snap([w], claimable=1), pods_for([w])).of_kind(Promote) != []


def test_no_promotion_without_a_heartbeat_since_the_process_started() -> None:
    # Heard only before the start was recorded (a process that beat once, then the start finished).
    before = worker(
        "gpu-a", "initializing", created=200, heartbeat=55, initialized_at=ago(60), process_started_at=ago(50)
    )
    never = worker(
        "gpu-b",
        "initializing",
        created=200,
        heartbeat=None,
        initialized_at=ago(60),
        process_started_at=ago(50),
    )
    # Heard, but no start recorded: StartProcess records it (already_running), it is not a promotion.
    unstarted = worker("gpu-c", "initializing", created=200, heartbeat=3, initialized_at=ago(60))
    result = run(snap([before, never, unstarted], claimable=3), pods_for([before, never, unstarted]))
    assert result.of_kind(Promote) == []
    [start] = result.of_kind(StartProcess)
    assert start.worker_id == "gpu-c" and start.already_running


def test_only_initializing_rows_are_promoted() -> None:
    spawning = worker("gpu-a", "spawning", created=60, heartbeat=3, process_started_at=ago(50))
    draining = worker("gpu-b", "draining", heartbeat=3, process_started_at=ago(500), changed=10)
    active = worker("gpu-c", heartbeat=3, process_started_at=ago(500))
    result = run(snap([spawning, draining, active], claimable=6), pods_for([spawning, draining, active]))
    assert result.of_kind(Promote) == []
    assert [a.worker_id for a in result.of_kind(Initialize)] == ["gpu-a"]


def test_promotion_needs_no_pod_listing() -> None:
    w = worker(
        "gpu-a", "initializing", created=200, heartbeat=3, initialized_at=ago(60), process_started_at=ago(50)
    )
    assert summary(run(snap([w], claimable=1), None)) == [("promote", "gpu-a", "first_heartbeat")]


def test_a_booting_worker_cancelled_for_overcapacity_is_not_promoted_in_the_same_tick() -> None:
    w = worker(
        "gpu-a", "initializing", created=200, heartbeat=3, initialized_at=ago(60), process_started_at=ago(50)
    )
    result = run(snap([w]), pods_for([w]), settings(max_active_gpus=0, min_active_gpus=0))
    assert summary(result) == [("terminate_pod", "gpu-a", "scale_down_before_boot")]


def test_an_operator_termination_wins_over_promotion() -> None:
    w = worker(
        "gpu-a",
        "initializing",
        created=200,
        heartbeat=3,
        initialized_at=ago(60),
        process_started_at=ago(50),
        terminate_requested_at=ago(5),
    )
    assert summary(run(snap([w]), pods_for([w]))) == [("terminate_pod", "gpu-a", "operator_request")]


# --- the worker's own word -----------------------------------------------------------------------------


def test_a_crash_reported_by_the_guardian_fails_the_worker_at_once() -> None:
    # Its heartbeat is fresh (the crash beat itself set it): only the report tells.
    w = reported(worker("gpu-a", running=["t1"], heartbeat=2, process_started_at=ago(900)), "crashed", 2)
    result = run(snap([w]), pods_for([w]))
    [fail] = result.of_kind(FailWorker)
    assert fail.reason is Reason.WORKER_CRASHED and fail.running_task_ids == ("t1",)
    assert fail.runpod_id == "pod-gpu-a" and fail.collect_logs
    assert fail.metadata["error_reason"] == "worker_crashed"
    assert fail.metadata["error_details"]["reported_status"] == "crashed"


def test_a_fatal_error_reported_by_the_worker_fails_it_with_its_details() -> None:
    w = reported(
        worker("gpu-a", heartbeat=5, process_started_at=ago(900)),
        "error",
        30,
        error_reason="FATAL cuda_hardware: GPU has fallen off the bus",
        self_terminated=True,
    )
    [fail] = run(snap([w]), pods_for([w])).of_kind(FailWorker)
    assert fail.reason is Reason.WORKER_ERROR
    details = fail.metadata["error_details"]
    assert details["reported_details"]["error_reason"].startswith("FATAL cuda_hardware")


def test_a_shutdown_beat_after_the_fatal_handlers_mark_fails_the_worker_as_that_error() -> None:
    # banodoco/reigh-worker 22cbba9: a process whose fatal-error handler marked the row and that then
    # shuts down (a signal) sends a last heartbeat `terminated`, which the database records last. Its
    # details hold what the heartbeat wrote back: `self_terminated` and `error_time`, not `error_reason`
    # (one of our keys, which the workers guard keeps).
    w = reported(
        worker("gpu-a", running=["t1"], heartbeat=1, process_started_at=ago(900)),
        "terminated",
        1,
        self_terminated=True,
        error_time="2026-12-07T20:00:00+00:00",
        in_task=True,
    )
    [fail] = run(snap([w]), pods_for([w])).of_kind(FailWorker)
    assert fail.reason is Reason.WORKER_ERROR and fail.running_task_ids == ("t1",)
    details = fail.metadata["error_details"]
    assert details["reported_status"] == "terminated"
    assert details["reported_details"]["self_terminated"] is True


def test_a_process_that_shut_down_without_an_error_fails_as_exited() -> None:
    # A signal, or the worker's own idle release: the pod is left with no worker, billing.
    w = reported(worker("gpu-a", heartbeat=1, process_started_at=ago(900)), "terminated", 1)
    [fail] = run(snap([w]), pods_for([w])).of_kind(FailWorker)
    assert fail.reason is Reason.WORKER_EXITED and fail.runpod_id == "pod-gpu-a"
    # A shutdown beat of the process before this one is history, as any report.
    old = reported(worker("gpu-b", heartbeat=1, process_started_at=ago(100)), "terminated", 200)
    assert run(snap([old], claimable=2), pods_for([old])).of_kind(FailWorker) == []


def test_a_report_older_than_the_current_process_is_history() -> None:
    w = reported(worker("gpu-a", heartbeat=5, process_started_at=ago(100)), "crashed", 200)
    assert run(snap([w], claimable=2), pods_for([w])).of_kind(FailWorker) == []
    # Without a recorded process start, the row's creation bounds it (rows are never reused).
    unstarted = reported(worker("gpu-b", "initializing", created=300, heartbeat=5), "crashed", 400)
    assert run(snap([unstarted]), pods_for([unstarted])).of_kind(FailWorker) == []
    fresh = reported(worker("gpu-c", "initializing", created=300, heartbeat=5), "crashed", 100)
    [fail] = run(snap([fresh]), pods_for([fresh])).of_kind(FailWorker)
    assert fail.reason is Reason.WORKER_CRASHED and fail.from_status is WorkerState.INITIALIZING


def test_reports_other_than_crashed_and_error_are_left_to_the_other_checks() -> None:
    for status in ("active", "inactive", "external", None):
        w = reported(worker("gpu-a", heartbeat=5, process_started_at=ago(100)), status, 10)
        assert run(snap([w], claimable=2), pods_for([w])).of_kind(FailWorker) == []
    undated = reported(worker("gpu-a", heartbeat=5, process_started_at=ago(100)), "crashed", None)
    assert run(snap([undated], claimable=2), pods_for([undated])).of_kind(FailWorker) == []


def test_a_crash_of_a_draining_or_booting_worker_fails_it_too() -> None:
    draining = reported(
        worker("gpu-a", "draining", heartbeat=2, changed=30, process_started_at=ago(900), running=["t1"]),
        "crashed",
        2,
    )
    booting = reported(
        worker(
            "gpu-b",
            "initializing",
            created=120,
            heartbeat=2,
            initialized_at=ago(60),
            process_started_at=ago(50),
        ),
        "crashed",
        2,
    )
    result = run(snap([draining, booting]), pods_for([draining, booting]))
    assert sorted((f.worker_id, f.reason) for f in result.of_kind(FailWorker)) == [
        ("gpu-a", Reason.WORKER_CRASHED),
        ("gpu-b", Reason.WORKER_CRASHED),
    ]
    assert result.of_kind(Promote) == []  # the crash beat set last_heartbeat: it must not promote


def test_rows_already_ending_ignore_reports() -> None:
    ending = reported(worker("gpu-a", "error", heartbeat=2, process_started_at=ago(900)), "crashed", 2)
    result = run(snap([ending]), pods_for([ending]))
    assert result.of_kind(FailWorker) == []


def test_reported_fields_are_parsed_and_absent_ones_read_as_none() -> None:
    base = {"id": "gpu-a", "status": "active", "created_at": "2026-11-29T11:00:00+00:00", "metadata": {}}
    bare = Snapshot.from_json({"workers": [base]}).workers[0]
    assert bare.reported_status is None and bare.reported_at is None and dict(bare.reported_details) == {}
    full = Snapshot.from_json(
        {
            "workers": [
                {
                    **base,
                    "reported_status": "crashed",
                    "reported_at": "2026-11-29T11:59:58Z",
                    "reported_details": {"self_terminated": True},
                }
            ]
        }
    ).workers[0]
    assert full.reported_status == "crashed" and full.reported_at == ago(2)
    assert full.reported_details["self_terminated"] is True
    # Written by the worker's side: a malformed time or details never hide the row.
    odd = Snapshot.from_json(
        {"workers": [{**base, "reported_status": "  ", "reported_at": "soon", "reported_details": "text"}]}
    )
    (w,) = odd.workers
    assert w.reported_status is None and w.reported_at is None and dict(w.reported_details) == {}
    assert odd.problems == ()


# --- draining ends only without a task -------------------------------------------------------------------


def test_a_draining_worker_holding_a_task_is_never_terminated() -> None:
    busy = worker("gpu-a", "draining", running=["t1"], heartbeat=3, changed=30, drain_reason="idle_timeout")
    result = run(snap([busy]), pods_for([busy]))
    assert result.of_kind(TerminatePod) == [] and result.of_kind(FailWorker) == []
    idle = worker("gpu-a", "draining", heartbeat=3, changed=30, drain_reason="idle_timeout")
    assert summary(run(snap([idle]), [pod("gpu-a")])) == [("terminate_pod", "gpu-a", "drained")]
