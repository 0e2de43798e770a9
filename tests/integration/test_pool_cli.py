"""``orchestrator status`` and ``orchestrator pods`` show the warm pool, as text and with ``--json``; a
database without the pool's migration still answers them.

Each command is a real subprocess against a throwaway PostgreSQL (and for ``pods`` the Runpod
emulator, with a pod really stopped through REST v2's ``POST /v2/pods/{id}/action``). The pool's
figures are checked against hand-computed ones: a stopped pod bills its volume disk at $0.20 per GB per
30-day month instead of its GPU.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from orchestrator.adapters.db.base import Database
from orchestrator.adapters.db.migrate import apply_migrations, default_directory
from orchestrator.adapters.db.postgres import PostgresTransport
from orchestrator.core.observed import Snapshot
from orchestrator.render import status_rows
from orchestrator.standins.emulator import EmulatorServer
from orchestrator.standins.pg import TempPostgres
from tests.integration.test_cli_json import _cli
from tests.plugins.emulator import TEST_API_KEY

DISK_RATE_PER_GB_HR = 0.20 / 720
POOL_MIGRATION = "20261207000200_warm_pool_snapshot_and_spend.sql"


def add_fleet(url: str, runpod_id: str = "pod-pool-1") -> None:
    """An active worker, and one worker in each of the pool's states, with known ages and prices."""
    rows = [
        ("gpu-live", "active", "1 hour", "1 hour", {"cost_per_hr": 1.0, "runpod_id": "pod-live"}),
        (
            "gpu-pool-1",
            "stopped",
            "5 hours",
            "2 hours",
            {"cost_per_hr": 2.0, "disk_gb": 50, "runpod_id": runpod_id, "resumes": 1},
        ),
        ("gpu-pool-2", "stopping", "1 hour", "1 minute", {"cost_per_hr": 1.5, "runpod_id": "pod-pool-2"}),
        (
            "gpu-pool-3",
            "resuming",
            "1 hour",
            "1 minute",
            {"cost_per_hr": 1.5, "disk_gb": 20, "stopped_sec": 600, "runpod_id": "pod-pool-3"},
        ),
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        for wid, status, age, since, meta in rows:
            conn.execute(
                "insert into workers (id, instance_type, status, metadata, created_at, status_changed_at,"
                " orchestrator_managed) values (%s, 'NVIDIA GeForce RTX 4090', %s, %s,"
                " now() - %s::interval, now() - %s::interval, true)",
                (wid, status, json.dumps(meta), age, since),
            )


def test_status_shows_the_pool_in_text_and_json(database_url: str, tmp_path: Path) -> None:
    cli = _cli({"DATABASE_URL": database_url}, tmp_path)
    empty = cli("status")
    assert "pool: empty" in empty.stdout.splitlines()
    assert json.loads(cli("status", "--json").stdout)["pool"] == {
        "stopping": 0,
        "stopped": 0,
        "resuming": 0,
        "disk_cost_per_hr": 0,
        "disk_spend_usd": 0,
        "workers": [],
    }

    add_fleet(database_url)
    doc = json.loads(cli("status", "--json").stdout)
    pool = doc["pool"]
    assert (pool["stopping"], pool["stopped"], pool["resuming"]) == (1, 1, 1)
    members = {m["worker_id"]: m for m in pool["workers"]}
    assert set(members) == {"gpu-pool-1", "gpu-pool-2", "gpu-pool-3"}
    stopped = members["gpu-pool-1"]
    assert stopped["state"] == "stopped" and stopped["runpod_id"] == "pod-pool-1"
    assert 7200 <= stopped["stopped_age_sec"] < 7260 and stopped["resumes"] == 1
    assert stopped["disk_gb"] == 50
    assert stopped["disk_cost_per_hr"] == pytest.approx(50 * DISK_RATE_PER_GB_HR, abs=1e-6)
    assert stopped["disk_spend_usd"] == pytest.approx(2 * 50 * DISK_RATE_PER_GB_HR, abs=2e-4)
    # A resuming pod holds a GPU again; its earlier stay (600 s of 20 GB) is its disk's cost so far.
    resuming = members["gpu-pool-3"]
    assert resuming["stopped_age_sec"] is None and resuming["stopped_since"] is None
    assert resuming["disk_spend_usd"] == pytest.approx(600 / 3600 * 20 * DISK_RATE_PER_GB_HR, abs=2e-4)
    assert pool["disk_cost_per_hr"] == pytest.approx(50 * DISK_RATE_PER_GB_HR, abs=1e-6)

    workers = {w["worker_id"]: w for w in doc["workers"]}
    assert workers["gpu-pool-1"]["cost_per_hr"] == pytest.approx(50 * DISK_RATE_PER_GB_HR, abs=1e-6)
    # 3 h on its GPU at $2/h, then 2 h of its disk.
    assert workers["gpu-pool-1"]["spend_usd"] == pytest.approx(6.0 + stopped["disk_spend_usd"], abs=2e-3)
    assert workers["gpu-pool-2"]["cost_per_hr"] == 1.5  # stopping: the GPU still bills
    assert doc["spend_per_hr"] == pytest.approx(1.0 + 1.5 + 1.5 + 50 * DISK_RATE_PER_GB_HR, abs=1e-4)

    text = cli("status").stdout
    lines = text.splitlines()
    pool_line = next(line for line in lines if line.startswith("pool:"))
    head, so_far = pool_line.removesuffix(" so far").split(", $")
    assert head == "pool: 1 stopping, 1 stopped, 1 resuming; disk $0.0139/h"
    assert float(so_far) == pytest.approx((2 * 50 + 600 / 3600 * 20) * DISK_RATE_PER_GB_HR, abs=2e-4)
    row = next(line for line in lines if line.startswith("gpu-pool-1 ") and "stopped" in line)
    assert "pod-pool-1" in row and "2.0h" in row and "0.0139" in row
    assert next(line for line in lines if line.startswith("POOLED"))


def wait_pod(client: httpx.Client, pod_id: str, status: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/v2/pods/{pod_id}").json()["status"] != status:
        assert time.monotonic() < deadline, f"pod {pod_id} never became {status}"
        time.sleep(0.02)  # polling a condition, bounded by the deadline


def test_pods_mark_the_pooled_pod_in_text_and_json(
    database_url: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    with httpx.Client(
        base_url=emulator.base_url, headers={"Authorization": f"Bearer {TEST_API_KEY}"}, timeout=30
    ) as rest:
        body = {
            "name": "gpu-pool-1",
            "image": "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
            "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1},
            "ports": ["22/tcp"],
            "env": {"PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample test@x"},
        }
        pod = rest.post("/v2/pods", json=body).json()
        wait_pod(rest, pod["id"], "RUNNING")
        assert rest.post(f"/v2/pods/{pod['id']}/action", json={"action": "stop"}).status_code == 200
        wait_pod(rest, pod["id"], "EXITED")
    add_fleet(database_url, runpod_id=pod["id"])
    cli = _cli(
        {
            "DATABASE_URL": database_url,
            "RUNPOD_API_BASE_URL": emulator.base_url,
            "RUNPOD_API_KEY": TEST_API_KEY,
            "RUNPOD_GPU_TYPE": "NVIDIA GeForce RTX 4090",
        },
        tmp_path,
    )
    rows = json.loads(cli("pods", "--json").stdout)
    pooled = next(r for r in rows if r["runpod_id"] == pod["id"])
    assert (pooled["status"], pooled["worker_id"], pooled["worker_state"]) == (
        "EXITED",
        "gpu-pool-1",
        "stopped",
    )
    assert pooled["orphan"] is False and 7200 <= pooled["stopped_age_sec"] < 7260
    assert pooled["disk_cost_per_hr"] == pytest.approx(50 * DISK_RATE_PER_GB_HR, abs=1e-6)
    live = next(r for r in rows if r["worker_id"] == "gpu-live")
    assert live["status"] == "MISSING" and live["disk_cost_per_hr"] is None

    lines = cli("pods").stdout.splitlines()
    row = next(line for line in lines if line.startswith(pod["id"]))
    assert "EXITED" in row and "pool 2.0h, disk $0.0139/h" in row and "ORPHAN" not in row
    assert lines[-1] == "pool: 1 stopping, 1 stopped, 1 resuming; disk $0.0139/h"


# -- a database without the pool's migration --------------------------------------------------------


@pytest.fixture
def old_database(pg: TempPostgres, tmp_path: Path) -> Iterator[str]:
    """Every migration up to, not including, the pool's SQL (the state before the upgrade)."""
    directory = tmp_path / "migrations"
    shutil.copytree(default_directory(), directory)
    for later in directory.glob("*.sql"):
        if later.name >= POOL_MIGRATION:
            later.unlink()
    name = f"o_{uuid.uuid4().hex[:16]}"
    url = pg.create_database(name)
    try:
        apply_migrations(url, directory)
        yield url
    finally:
        pg.drop_database(name)


def test_a_database_without_the_pool_migration_still_answers(old_database: str, tmp_path: Path) -> None:
    add_fleet(old_database)
    database = Database(PostgresTransport(old_database, max_size=1))
    try:
        raw = database.snapshot()
    finally:
        database.close()
    assert "task_stats" not in raw and "arrivals" not in raw
    assert "claimable_by_type" not in raw["queue"] and "running_tasks" not in raw["workers"][0]
    snapshot = Snapshot.from_json(raw)
    assert len(snapshot.workers) == 4
    rows = status_rows(snapshot)
    assert rows["pool"]["stopped"] == 1

    cli: Callable[..., Any] = _cli({"DATABASE_URL": old_database}, tmp_path)
    doc = json.loads(cli("status", "--json").stdout)
    assert (doc["pool"]["stopping"], doc["pool"]["stopped"], doc["pool"]["resuming"]) == (1, 1, 1)
    assert "pool: 1 stopping, 1 stopped, 1 resuming" in cli("status").stdout
