"""Rows and tasks the orchestrator cannot treat as usual still end: the pure policy's side.

* A booting row whose id can name neither a pod nor a worker process (another system's row, a hand
  edit) is retired at once with ``unusable_row``, instead of failing every boot step until the boot
  timeout while its pod bills.
* A row the snapshot lists but cannot parse keeps its id (``Snapshot.unreadable``) and is retired: its
  pod terminated, its tasks requeued, the row closed once no pod is left. A hand-edited metadata that
  is not a JSON object no longer hides a row at all.
* In Progress tasks that name no worker are left alone (users' local runs on Reigh's database) unless
  the operator sets UNOWNED_TASK_TIMEOUT_SEC.
* A value out of range anywhere in the snapshot reads as malformed; the other rows still end.

Each failed before the change it tests (the first two: the row was skipped, or failed only on timeout
and then never ended; the last: the snapshot did not count such tasks and nothing planned for them).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from orchestrator.adapters import worker_recipe
from orchestrator.core.actions import FailWorker, MarkTerminated, RequeueUnownedTasks, TerminatePod
from orchestrator.core.health import unowned_stuck_limit
from orchestrator.core.observed import Queue, Snapshot
from orchestrator.core.policy import plan
from orchestrator.core.states import WORKER_ID_PATTERN, Reason, WorkerState
from tests.unit.test_policy import NOW, pod, settings, snap, worker

SHELLY = "gpu-20250912_101500-$(reboot)"
LONG = "gpu-" + "x" * 140


def test_the_worker_id_rule_is_the_one_the_ssh_layer_enforces() -> None:
    assert worker_recipe.WORKER_ID_RE is WORKER_ID_PATTERN


def test_a_booting_row_whose_id_cannot_name_a_pod_is_retired_at_once() -> None:
    for worker_id in (SHELLY, LONG, "gpu-20250912_101500-1a2b3c4d\n"):
        row = worker(worker_id, "spawning", created=30)  # young: no boot timeout yet
        result = plan(snap([row]), [pod(worker_id, pod_id=row.runpod_id)], settings(min_active_gpus=0), NOW)
        [failed] = [a for a in result.actions if isinstance(a, FailWorker)]
        assert failed.reason is Reason.UNUSABLE_ROW and failed.runpod_id == row.runpod_id
        assert "cannot name a pod" in str(failed.metadata["error_details"])


def test_a_serving_row_with_such_an_id_is_left_to_the_usual_rules() -> None:
    # An active worker of the replaced system runs and heartbeats: nothing needs its id to be a pod name.
    row = worker(SHELLY, "active")
    result = plan(snap([row]), [pod(SHELLY, pod_id=row.runpod_id)], settings(min_active_gpus=1), NOW)
    assert not [a for a in result.actions if isinstance(a, FailWorker | TerminatePod)]


def _row(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "gpu-20250912_101500-1a2b3c4d",
        "status": "active",
        "created_at": "2026-11-29T10:00:00+00:00",
        "status_changed_at": "2026-11-29T10:01:00+00:00",
        "activated_at": "2026-11-29T10:01:00+00:00",
        "last_heartbeat": "2026-11-29T11:59:55+00:00",
        "metadata": {"runpod_id": "pod-a"},
        "running_task_ids": [],
        "running_count": 0,
    }
    base.update(over)
    return base


def test_a_metadata_that_is_not_an_object_reads_as_empty_and_keeps_the_row() -> None:
    parsed = Snapshot.from_json({"now": NOW.isoformat(), "workers": [_row(metadata="hand edited")]})
    assert [w.id for w in parsed.workers] == ["gpu-20250912_101500-1a2b3c4d"]
    assert parsed.workers[0].metadata == {} and parsed.unreadable == ()
    assert any("metadata is a JSON str" in p for p in parsed.problems)


def test_an_id_is_kept_exactly_as_the_database_holds_it() -> None:
    # Stripped, " gpu-x" would be looked up as "gpu-x" by every function, which finds no such row.
    parsed = Snapshot.from_json({"workers": [_row(id=" gpu-x ")]})
    assert [w.id for w in parsed.workers] == [" gpu-x "]


def test_an_unreadable_row_with_a_pod_is_failed_and_its_pod_terminated() -> None:
    data = {
        "now": NOW.isoformat(),
        "workers": [_row(created_at="yesterday", metadata={"runpod_id": "pod-a"})],
    }
    parsed = Snapshot.from_json(data)
    assert parsed.workers == () and len(parsed.unreadable) == 1
    [row] = parsed.unreadable
    assert (
        row.id == "gpu-20250912_101500-1a2b3c4d"
        and row.status is WorkerState.ACTIVE
        and row.runpod_id == "pod-a"
    )
    listing = [pod("gpu-20250912_101500-1a2b3c4d", pod_id="pod-a", age=7200)]
    result = plan(parsed, listing, settings(min_active_gpus=0), NOW)
    [failed] = [a for a in result.actions if isinstance(a, FailWorker)]
    assert failed.reason is Reason.UNUSABLE_ROW and failed.runpod_id == "pod-a" and failed.worker_id == row.id
    assert "yesterday" in str(failed.metadata["error_details"])
    # Its pod is not also reaped as an orphan: one termination.
    assert not [a for a in result.actions if isinstance(a, TerminatePod)]
    assert result.live == 1  # it still bills until then


def test_an_unreadable_row_found_by_name_and_one_without_a_pod() -> None:
    named = _row(id="gpu-b", running_count="many", metadata=["not", "an", "object"])
    podless = _row(id="gpu-c", status="error", created_at=17)
    parsed = Snapshot.from_json({"now": NOW.isoformat(), "workers": [named, podless]})
    assert {r.id for r in parsed.unreadable} == {"gpu-b", "gpu-c"}
    result = plan(parsed, [pod("gpu-b", pod_id="pod-b")], settings(min_active_gpus=0), NOW)
    [failed] = [a for a in result.actions if isinstance(a, FailWorker)]
    assert (failed.worker_id, failed.runpod_id) == ("gpu-b", "pod-b")
    [closed] = [a for a in result.actions if isinstance(a, MarkTerminated)]
    assert closed.worker_id == "gpu-c" and closed.reason is Reason.UNUSABLE_ROW and closed.requeue_tasks
    # Without a listing nothing is decided for them: whether they have a pod is unknown.
    blind = plan(parsed, None, settings(min_active_gpus=0), NOW)
    assert not [a for a in blind.actions if getattr(a, "worker_id", None) in ("gpu-b", "gpu-c")]


def test_an_unreadable_row_pointing_at_a_pod_not_ours_is_left_alone() -> None:
    parsed = Snapshot.from_json({"workers": [_row(created_at="bad", metadata={"runpod_id": "foreign"})]})
    result = plan(parsed, [pod("somebody-elses", pod_id="foreign")], settings(min_active_gpus=0), NOW)
    assert not [a for a in result.actions if isinstance(a, FailWorker | TerminatePod | MarkTerminated)]
    assert any("left alone" in p for p in result.problems)


def test_tasks_in_progress_with_no_worker_are_left_to_the_app_by_default() -> None:
    """On Reigh's database a task In Progress with no worker is a run on a user's own machine (the app's
    claim through a personal access token records no worker). Requeued after 20 minutes, a longer local
    run went back to the queue under its user, and a local travel chain was dead-lettered and cascaded."""
    assert unowned_stuck_limit(settings()) is None
    day_old = replace(snap(), queue=Queue(unowned_running=2, oldest_unowned_age_sec=86_000.0))
    result = plan(day_old, [], settings(min_active_gpus=0), NOW)
    assert not [a for a in result.actions if isinstance(a, RequeueUnownedTasks)]
    # Not demand either: no worker of ours runs them, so they do not make the plan spawn.
    assert result.desired == 0


def test_tasks_in_progress_with_no_worker_are_requeued_past_the_limit_the_operator_sets() -> None:
    cfg = settings(min_active_gpus=0, unowned_task_timeout_sec=1800)
    limit = unowned_stuck_limit(cfg)
    assert limit == 1800
    young = replace(snap(), queue=Queue(unowned_running=2, oldest_unowned_age_sec=limit - 1))
    assert not [a for a in plan(young, [], cfg, NOW).actions if isinstance(a, RequeueUnownedTasks)]
    old = replace(snap(), queue=Queue(unowned_running=2, oldest_unowned_age_sec=limit + 1))
    [action] = [a for a in plan(old, [], cfg, NOW).actions if isinstance(a, RequeueUnownedTasks)]
    assert action.reason is Reason.TASK_WITHOUT_WORKER and action.older_than_sec == limit
    assert plan(old, [], cfg, NOW).desired == 0


def test_the_snapshot_reads_the_unowned_figures() -> None:
    parsed = Snapshot.from_json(
        {"queue": {"unowned_running": 3, "oldest_unowned_age_sec": 4000.5, "running": 1}}
    )
    assert parsed.queue.unowned_running == 3 and parsed.queue.oldest_unowned_age_sec == 4000.5
    assert parsed.queue.running == 1


def test_values_out_of_range_read_as_malformed_and_every_other_row_still_ends() -> None:
    """A timestamp that parses but leaves datetime's range in UTC (.NET's DateTime.MinValue with an
    offset), an integer of hundreds of digits, or durations like 1e160 raised OverflowError out of
    plan(): every tick died before it applied anything, and another worker's failed pod kept billing."""
    failed = _row(id="gpu-20250912_101500-0000dead", status="error", metadata={"runpod_id": "pod-dead"})
    odd = _row(
        id="gpu-20250912_101500-0000beef",
        metadata={
            "runpod_id": "pod-beef",
            "terminate_requested_at": "0001-01-01T00:00:00+01:00",
            "cost_per_hr": 10**400,
            "resumes": 10**400,
        },
    )
    stats = {
        "window_sec": 86400,
        "types": [{"task_type": "t", "completions": 10**400, "mean_sec": 1e160, "stddev_sec": 1e160}],
    }
    parsed = Snapshot.from_json(
        {
            "now": NOW.isoformat(),
            "queue": {"claimable": 2, "running": 0, "claimable_by_type": [{"task_type": "t", "count": 2}]},
            "task_stats": stats,
            "arrivals": [{"window_sec": 600, "count": 10**400}, {"window_sec": 3600, "count": 1e300}],
            "workers": [failed, odd],
        }
    )
    pods = [pod(failed["id"], pod_id="pod-dead"), pod(odd["id"], pod_id="pod-beef")]
    result = plan(parsed, pods, settings(min_active_gpus=0), NOW)
    assert [a.runpod_id for a in result.actions if isinstance(a, TerminatePod)] == ["pod-dead"]
    beef = next(w for w in parsed.workers if w.runpod_id == "pod-beef")
    assert beef.terminate_requested_at is None and beef.cost_per_hr is None
