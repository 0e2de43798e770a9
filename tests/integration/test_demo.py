"""`orchestrator demo --json` (what `make run` shows, without the live table): the whole system offline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.timeout(400)
def test_demo_completes_every_task_and_leaks_no_pod() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "--env-file",
            "/dev/null",
            "demo",
            "--tasks",
            "6",
            "--max-gpus",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    totals = json.loads(proc.stdout.strip().splitlines()[-1])
    assert totals["tasks_completed"] == 6 and totals["tasks_failed"] == 0
    assert totals["leaked_pods"] == 0
    assert totals["pods_created"] >= 1 and totals["pods_terminated"] == totals["pods_created"]
    assert totals["gpu_hours"] > 0 and totals["cost_usd"] > 0
