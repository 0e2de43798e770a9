"""Health checks for the states a worker can be left in by a drain or a manual start.

Each test (except the last, its guard) was written against a defect found in review and failed before
its fix; its docstring says what a user would see. They use the scenario builders of
``test_policy.py`` (times are seconds before ``NOW``).
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.core.actions import FailWorker, TerminatePod
from orchestrator.core.policy import plan
from orchestrator.core.states import Reason
from tests.unit.test_policy import NOW, PRICES, ago, pods_for, settings, snap, worker


def test_draining_worker_silent_since_its_drain_is_failed_for_a_stale_heartbeat() -> None:
    """A drained worker whose process died is never failed: its pod bills and its task waits for ever.

    The operator asks to terminate a busy worker (``orch_request_termination``), so it is drained
    while it runs a long ``*_orchestrator*`` parent task (exempt from the stuck-task timeout). Its
    process had already hung: the last heartbeat is 10 minutes old, from before the drain. The
    database records heartbeats of draining workers (the app's ``func_worker_heartbeat_with_logs``
    sets ``last_heartbeat``; the guard on ``workers`` lets it through on every live row), so silence
    since the drain is evidence of death;
    but the policy still treats it as "no evidence" (its comment cites a contract that no longer holds)
    and never fails the worker. The pod stays RUNNING and billing, the task stays In Progress, forever.
    """
    w = worker(
        "gpu-drained",
        "draining",
        heartbeat=600,  # last heard 10 min ago (HEARTBEAT_TIMEOUT_SEC is 120)
        changed=300,  # drained 5 min ago, after its last heartbeat
        running=["task-parent"],
        terminate_requested_at=ago(300),
        drain_reason=Reason.OPERATOR_REQUEST.value,
    )
    # The parent task is exempt from the stuck-task timeout: SQL leaves oldest_stuckable_started_at null.
    w = replace(w, oldest_stuckable_started_at=None, oldest_running_started_at=ago(7200))
    result = plan(snap([w], running=1), pods_for([w]), settings(), NOW, prices=PRICES)
    failed = [a for a in result.actions if isinstance(a, FailWorker) and a.worker_id == w.id]
    assert failed and failed[0].reason is Reason.HEARTBEAT_STALE, (
        "a draining worker silent for 600 s (timeout 120 s) with a task is left alone: "
        f"actions={[a.to_dict() for a in result.actions]}"
    )


def test_manually_started_worker_is_health_checked_while_it_runs_a_task() -> None:
    """With ``AUTO_START_WORKER_PROCESS=false`` a dead worker's task stays In Progress for ever.

    Nothing records ``process_started_at`` when the operator starts the process by hand, so the worker
    is never promoted and stays ``initializing`` - a claiming state. ``_health`` returns early for
    booting states (only the boot timeout, itself suspended while "waiting for the operator"), so
    neither the heartbeat timeout nor the stuck-task timeout ever applies to it: a worker that claimed
    a task two hours ago and has been silent for an hour is never failed, its task never requeued,
    its pod never terminated.
    """
    w = worker(
        "gpu-manual",
        "initializing",
        created=4 * 3600,
        heartbeat=3600,
        running=["task-1"],
        stuck_since=7200,
        initialized_at=ago(4 * 3600 - 300),
    )
    result = plan(
        snap([w], running=1), pods_for([w]), settings(auto_start_worker_process=False), NOW, prices=PRICES
    )
    ended = [a for a in result.actions if isinstance(a, FailWorker | TerminatePod) and a.worker_id == w.id]
    assert ended and isinstance(ended[0], FailWorker), (
        "an initializing worker running a task for 2 h, silent for 1 h, is never failed: "
        f"actions={[a.to_dict() for a in result.actions]}"
    )
    assert ended[0].reason in (Reason.TASK_STUCK, Reason.HEARTBEAT_STALE)


def test_a_worker_that_claimed_before_its_first_heartbeat_is_not_killed_for_silence() -> None:
    """The guard on the fix above: a process may claim a task while it still loads its models.

    Its row is ``initializing`` (not yet promoted: promotion follows its first heartbeat) and no
    heartbeat was ever recorded. Counting silence from the row's last change would kill a healthy
    worker a couple of minutes into a slow model load (the old system's premature kills); only the
    stuck-task timeout and the boot timeout bound it.
    """
    w = worker(
        "gpu-loading",
        "initializing",
        created=600,
        changed=400,  # initializing for 400 s (HEARTBEAT_TIMEOUT_SEC is 120)
        running=["task-1"],
        stuck_since=200,
        initialized_at=ago(400),
    )
    w = replace(w, last_heartbeat=None)
    result = plan(snap([w], running=1), pods_for([w]), settings(), NOW, prices=PRICES)
    ended = [a for a in result.actions if isinstance(a, FailWorker | TerminatePod) and a.worker_id == w.id]
    assert ended == [], f"a loading worker was ended: {[a.to_dict() for a in ended]}"


def test_a_worker_started_without_the_daemon_is_promoted_on_its_first_heartbeat_after_the_checks() -> None:
    """With ``AUTO_START_WORKER_PROCESS=false`` (the operator, or the image itself, starts the worker)
    nothing recorded a start, so no heartbeat promoted the worker: it stayed ``initializing``, which
    neither the idle timeout nor the scale-down reads, and its pod billed for ever on an empty queue.
    Its heartbeat after the daemon's checks is the process's own word, as the original promoted on a
    worker's first heartbeat; one from before the checks proves nothing yet."""
    from orchestrator.core.actions import Promote, StartProcess

    def run(heard: float, initialized: float, auto_start: bool) -> list[object]:
        w = worker("gpu-hand", "initializing", created=900, heartbeat=heard, initialized_at=ago(initialized))
        result = plan(  # a task waits, so that nothing asks for the booting worker to be cancelled
            snap([w], claimable=1),
            pods_for([w]),
            settings(auto_start_worker_process=auto_start),
            NOW,
            prices=PRICES,
        )
        return [a for a in result.actions if getattr(a, "worker_id", None) == w.id]

    [promoted] = run(heard=5, initialized=600, auto_start=False)
    assert isinstance(promoted, Promote) and promoted.reason is Reason.FIRST_HEARTBEAT
    assert not any(isinstance(a, Promote) for a in run(heard=700, initialized=600, auto_start=False))
    # The daemon starts the worker: a beat with no start recorded is a start it lost, recorded, never
    # taken for a promotion.
    actions = run(heard=5, initialized=600, auto_start=True)
    assert [type(a) for a in actions] == [StartProcess] and actions[0].already_running  # type: ignore[attr-defined]


def test_a_worker_nobody_starts_is_failed_a_boot_timeout_after_its_checks() -> None:
    """With ``AUTO_START_WORKER_PROCESS=false`` the boot timeout waited for the operator for ever: a pod
    whose worker never came (an image that found no credentials, a start nobody ran) billed
    indefinitely, and while tasks waited the policy spawned more of them. It now gets
    ``SPAWNING_TIMEOUT_SEC`` from the end of its checks to heartbeat."""
    cfg = settings(auto_start_worker_process=False, spawning_timeout_sec=1200)

    def failed(initialized: float) -> list[FailWorker]:
        w = worker("gpu-silent", "initializing", created=initialized + 300, initialized_at=ago(initialized))
        result = plan(snap([w], claimable=50), pods_for([w]), cfg, NOW, prices=PRICES)
        return [a for a in result.actions if isinstance(a, FailWorker) and a.worker_id == w.id]

    assert failed(initialized=1100) == []
    [ended] = failed(initialized=1300)
    assert ended.reason is Reason.BOOT_TIMEOUT
