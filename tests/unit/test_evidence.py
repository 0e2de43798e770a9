"""The snapshot's evidence about the work: running tasks, task durations, arrivals, queued types.

``orch_snapshot`` returns them (``orchestrator/core/evidence.py`` states the contract); the parser reads
them into :class:`~orchestrator.core.observed.Snapshot`, a database without them parses as empty, one bad
item is skipped and reported; the simulator's in-memory database produces the same fields from its tasks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.core.observed import Snapshot
from orchestrator.studies.clock import Clock
from orchestrator.studies.memdb import SimDB

NOW = "2026-01-01T12:00:00+00:00"


def full() -> dict[str, Any]:
    return {
        "now": NOW,
        "queue": {
            "claimable": 3,
            "claimable_by_type": [
                {"task_type": "generate_video", "count": 2},
                {"task_type": "lora_training", "count": 1},
            ],
        },
        "workers": [
            {
                "id": "gpu-a",
                "status": "active",
                "running_task_ids": ["t1"],
                "running_tasks": [
                    {"id": "t1", "task_type": "lora_training", "started_at": "2026-01-01T11:40:00Z"}
                ],
            }
        ],
        "task_stats": {
            "window_sec": 86400,
            "types": [
                {
                    "task_type": "lora_training",
                    "completions": 12,
                    "mean_sec": 1150.5,
                    "stddev_sec": 200.0,
                    "p50_sec": 1100,
                    "p95_sec": 1450,
                    "p99_sec": 1490,
                    "max_sec": 1500,
                }
            ],
        },
        "arrivals": [{"window_sec": 3600, "count": 40}, {"window_sec": 600, "count": 9}],
        "recent_boots": [
            {
                "worker_id": "gpu-a",
                "ok": True,
                "reason": "activated",
                "at": NOW,
                "kind": "resume",
                "seconds": 41.5,
            },
            {
                "worker_id": "gpu-b",
                "ok": True,
                "reason": "activated",
                "at": NOW,
                "kind": "boot",
                "seconds": 96,
            },
        ],
    }


def test_every_addition_is_read() -> None:
    snap = Snapshot.from_json(full())
    assert snap.problems == ()
    assert dict(snap.queue.claimable_by_type) == {"generate_video": 2, "lora_training": 1}
    [task] = snap.workers[0].running_tasks
    assert (task.id, task.task_type) == ("t1", "lora_training")
    assert task.started_at == datetime(2026, 1, 1, 11, 40, tzinfo=UTC)
    stats = snap.task_stats["lora_training"]
    assert (stats.completions, stats.mean_sec, stats.p99_sec, stats.max_sec) == (12, 1150.5, 1490, 1500)
    assert snap.task_stats_window_sec == 86400
    assert snap.arrivals == ((600.0, 9), (3600.0, 40))  # shortest window first
    resume, boot = snap.recent_boots
    assert resume.is_resume and resume.seconds == 41.5
    assert boot.kind == "boot" and not boot.is_resume and boot.seconds == 96


def test_a_database_without_the_additions_parses_as_empty() -> None:
    data = full()
    for key in ("task_stats", "arrivals"):
        del data[key]
    del data["queue"]["claimable_by_type"]
    del data["workers"][0]["running_tasks"]
    for boot in data["recent_boots"]:
        del boot["kind"], boot["seconds"]
    snap = Snapshot.from_json(data)
    assert snap.problems == ()
    assert snap.task_stats == {} and snap.arrivals == () and snap.task_stats_window_sec is None
    assert snap.queue.claimable_by_type == {} and snap.workers[0].running_tasks == ()
    assert all(b.kind == "boot" and b.seconds is None for b in snap.recent_boots)


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("task_stats",), "not stats"),
        (("task_stats", "types"), [{"task_type": "x", "completions": 0, "mean_sec": 3}, 7]),
        (("arrivals",), [{"window_sec": -5, "count": 3}, "x"]),
        (("queue", "claimable_by_type"), [{"task_type": "x", "count": "many"}]),
        (("workers", 0, "running_tasks"), [{"task_type": "x"}]),
    ],
)
def test_a_malformed_item_is_skipped_and_reported_never_fatal(path: tuple[Any, ...], bad: Any) -> None:
    data = full()
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    snap = Snapshot.from_json(data)
    assert snap.problems, "the bad item is reported"
    assert [w.id for w in snap.workers] == ["gpu-a"]  # the row itself survives


def test_the_in_memory_database_reports_the_same_evidence() -> None:
    clock = Clock()
    db = SimDB(clock)
    db.register_worker("gpu-a", "GPU", {})
    db.transition_worker("gpu-a", "initializing", "pod_ready")
    db.transition_worker("gpu-a", "active", "first_heartbeat")
    for i, duration in enumerate((100.0, 200.0, 300.0)):
        clock.run_until(clock.now + 10)
        db.insert_task(f"t{i}", "generate_video", duration)
        row = db.claim("gpu-a")
        assert row is not None
        clock.run_until(clock.now + duration)
        assert db.complete("gpu-a", row.id)
    clock.run_until(3000)
    db.insert_task("q1", "lora_training", 1200)
    db.insert_task("q2", "generate_video", 100)
    running = db.claim("gpu-a")
    assert running is not None and running.id == "q1"
    clock.run_until(3100)
    snap = db.snapshot("gpu-")
    stats = snap.task_stats["generate_video"]
    assert stats.completions == 3 and stats.mean_sec == 200.0 and stats.stddev_sec == 100.0
    assert (stats.p50_sec, stats.max_sec) == (200.0, 300.0)
    assert stats.p99_sec == pytest.approx(298.0)  # interpolated, as percentile_cont
    assert dict(snap.queue.claimable_by_type) == {"generate_video": 1}
    [task] = snap.workers[0].running_tasks
    assert task.task_type == "lora_training" and task.started_at is not None
    # Arrivals: 2 in the last 10 minutes, all 5 in the last hour.
    assert snap.arrivals == ((600.0, 2), (3600.0, 5))
    [boot] = snap.recent_boots
    assert boot.kind == "boot" and boot.ok and boot.seconds == 0.0
