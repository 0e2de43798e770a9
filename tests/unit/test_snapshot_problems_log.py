"""A row the snapshot cannot read is logged once, then hourly with its count, and names its worker.

Read every tick, a bad row used to log one line per tick (six a minute each), and the line had no
``worker_id`` to filter on, though every other event about one worker has it.
"""

from __future__ import annotations

from typing import Any

import structlog

from orchestrator.core.config import defaults
from orchestrator.core.observed import Snapshot
from orchestrator.loop.controller import PROBLEM_REPEAT_SEC, Controller


def test_a_bad_row_is_logged_once_then_hourly_with_its_worker() -> None:
    now = [1000.0]
    controller = Controller(defaults(), db=None, provider=None, clock=lambda: now[0])  # type: ignore[arg-type]
    raw: dict[str, Any] = {
        "now": "2026-12-06T12:00:00+00:00",
        "workers": [
            {"id": "gpu-1", "status": "active", "instance_type": "x", "metadata": {}},
            {"id": "gpu-1", "status": "active", "instance_type": "x", "metadata": {}},
        ],
    }
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(30):  # five minutes of ticks
                controller._log_problems(Snapshot.from_json(raw).problems)
                now[0] += 10
            now[0] += PROBLEM_REPEAT_SEC
            controller._log_problems(Snapshot.from_json(raw).problems)
    finally:
        controller.shutdown(timeout=1)
    lines = [line for line in logs if line["event"] == "snapshot_row_skipped"]
    assert [(line["worker_id"], line["repeats_since_last"]) for line in lines] == [
        ("gpu-1", 0),
        ("gpu-1", 29),
    ]
    assert "duplicate" in lines[0]["problem"]
