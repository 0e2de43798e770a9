"""The simulated Headless-Wan2GP worker (orchestrator.sim.worker) against a real Postgres.

The main test does what the orchestrator does in production: the seed's start command over SSH into
an emulated pod, from the laid-out volume, reaching the database the way a real worker does (Supabase's
REST URL, or DATABASE_URL); the worker's heartbeats land in `workers` and it completes a queued task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from orchestrator.db.base import Database
from tests.plugins.sandbox import DEFAULT_VRAM_MB, SandboxFactory, SSHKeyPair, run, ssh_to

# The seed's start command, in shape: git pull with a timeout that may fail, the venv, the apt step, then
# the worker in the background. Credentials come from the pod's own environment, not the command line.
SEED_START = (
    "cd /workspace/reigh/Headless-Wan2GP && "
    "{ timeout 30 git pull || echo 'git pull failed, continuing'; } && "
    "source venv/bin/activate && "
    "{ apt-get install -y -qq python3-dev >/dev/null 2>&1 || true; } && "
    '{ nohup python headless.py {db_args} --worker "$WORKER_ID" > worker-$WORKER_ID.log 2>&1 < /dev/null & }'
)
SUPABASE_ARGS = (
    '--db-type supabase --supabase-url "$SUPABASE_URL" --supabase-anon-key "$SUPABASE_ANON_KEY" '
    '--supabase-access-token "$SUPABASE_SERVICE_ROLE_KEY"'
)
POSTGRES_ARGS = "--db-type postgres"


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def register_initializing(db: Database, worker_id: str) -> int:
    """What the orchestrator does before starting a worker: intent row, then initializing."""
    token = int(db.lease_acquire("test-orchestrator", 300)["token"])
    db.register_worker(token, worker_id, "NVIDIA GeForce RTX 4090", {"runpod_id": f"rp-{worker_id}"})
    started = datetime.now(UTC).isoformat()
    db.transition_worker(token, worker_id, "initializing", "pod_ready", {"process_started_at": started})
    return token


def queue_task(database_url: str, params: dict[str, Any], task_type: str = "sim_generate") -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "insert into tasks (task_type, params) values (%s, %s) returning id::text",
            (task_type, Jsonb(params)),
        ).fetchone()
    assert row is not None
    return str(row[0])


def fetch(database_url: str, sql: str, *args: Any) -> dict[str, Any] | None:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(sql, args).fetchone()


@pytest.mark.parametrize("transport", ["supabase", "postgres"])
def test_seed_command_over_ssh_starts_a_worker_that_heartbeats_and_completes_a_task(
    transport: str,
    request: pytest.FixtureRequest,
    database_url: str,
    db: Database,
    sandbox_factory: SandboxFactory,
    ssh_keypair: SSHKeyPair,
    sim_volume: Path,
) -> None:
    worker_id = f"gpu-sim-{transport}"
    env = {"WORKER_ID": worker_id, "SIM_WORKER_HEARTBEAT_SEC": "0.3", "SIM_WORKER_POLL_SEC": "0.1"}
    secret = ""
    if transport == "supabase":
        postgrest = request.getfixturevalue("postgrest")
        secret = postgrest.service_role_key
        env |= {
            "SUPABASE_URL": postgrest.base_url,
            "SUPABASE_ANON_KEY": postgrest.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": secret,
        }
        db_args = SUPABASE_ARGS
    else:
        env["DATABASE_URL"] = database_url
        db_args = POSTGRES_ARGS
    token = register_initializing(db, worker_id)
    task_id = queue_task(database_url, {"prompt": "a cat", "duration_sec": 0.3})
    box = sandbox_factory(volume_dir=sim_volume, env=env)

    with ssh_to(box, ssh_keypair) as client:
        code, out, err = run(client, "cd /workspace/reigh/Headless-Wan2GP && timeout 30 git pull")
        assert (code, out) == (0, "Already up to date.\n"), err
        code, _, err = run(client, SEED_START.replace("{db_args}", db_args))
        assert code == 0, err

    log_path = sim_volume / "reigh" / "Headless-Wan2GP" / f"worker-{worker_id}.log"
    sql = "select status, last_heartbeat, metadata from workers where id = %s"
    row = wait_for(
        lambda: (
            (r := fetch(database_url, sql, worker_id))
            and r["status"] == "active"
            and r["last_heartbeat"]
            and r
        ),
        what="the first heartbeat to promote the worker",
    )
    assert row["metadata"]["vram_total_mb"] == DEFAULT_VRAM_MB
    assert 0 <= row["metadata"]["vram_used_mb"] <= DEFAULT_VRAM_MB

    task_sql = "select status, worker_id, result_data, attempts from tasks where id = %s"
    task = wait_for(
        lambda: (t := fetch(database_url, task_sql, task_id)) and t["status"] == "Complete" and t,
        what="the task to complete",
    )
    assert task["worker_id"] == worker_id and task["result_data"]["simulated"] is True
    assert box.worker_pids(), "the worker runs in the pod"

    # Draining: the next heartbeat says so and the worker leaves on its own.
    db.transition_worker(token, worker_id, "draining", "idle")
    wait_for(lambda: not box.worker_pids(), what="the worker to stop after draining")
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "heartbeat" in events and "task_completed" in events
    assert lines[-1]["event"] == "worker_stopped" and lines[-1]["reason"] == "worker_draining"
    if secret:
        assert secret not in log_path.read_text()


def test_task_params_fail_then_crash(database_url: str, db: Database, tmp_path: Path) -> None:
    """params.fail fails the task (requeued until the attempt limit); params.crash kills the worker."""
    worker_id = "gpu-sim-params"
    register_initializing(db, worker_id)
    failing = queue_task(database_url, {"fail": True, "error": "boom", "duration_sec": 0.05})
    crashing = queue_task(database_url, {"crash": True, "duration_sec": 0.2})
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SIM_WORKER_HEARTBEAT_SEC": "0.5",
        "SIM_WORKER_POLL_SEC": "0.05",
        "SIM_WORKER_SPEED": "2",
        "SIM_VRAM_TOTAL_MB": "16384",
    }
    cmd = [
        sys.executable,
        "-m",
        "orchestrator.sim.worker",
        "--db-type",
        "postgres",
        "--worker",
        worker_id,
        "--foo",
    ]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 70, out

    failed = fetch(database_url, "select status, attempts, error_message from tasks where id = %s", failing)
    assert failed is not None and failed["status"] == "Failed" and failed["attempts"] == 3
    assert "boom" in (failed["error_message"] or "")
    crashed = fetch(database_url, "select status, worker_id from tasks where id = %s", crashing)
    assert crashed == {"status": "In Progress", "worker_id": worker_id}
    events = [json.loads(line)["event"] for line in out.splitlines() if line.startswith("{")]
    assert events.count("task_failed") == 3 and events[-1] == "task_crashing_worker"
    assert "worker_options_ignored" in events
    hb = fetch(database_url, "select metadata from workers where id = %s", worker_id)
    assert hb is not None and hb["metadata"]["vram_total_mb"] == 16384


def test_worker_refuses_to_start_without_a_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    cmd = [sys.executable, "-m", "orchestrator.sim.worker", "--db-type", "postgres", "--worker", "w1"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2
    assert "DATABASE_URL" in res.stdout


def test_volume_layout_is_idempotent_and_a_clean_checkout(sim_volume: Path) -> None:
    from orchestrator.sim.worker import lay_out_volume

    lay_out_volume(sim_volume)  # a second time, as when the emulator restarts on the same state dir
    app = sim_volume / "reigh" / "Headless-Wan2GP"
    assert os.access(app / "headless.py", os.X_OK) and (app / "requirements.txt").is_file()
    git = subprocess.run(
        ["git", "status", "--porcelain"], cwd=app, capture_output=True, text=True, check=True
    )
    assert git.stdout == ""
    probe = "source venv/bin/activate && python -c \"import orchestrator.sim.worker; print('ok')\""
    res = subprocess.run(
        ["bash", "-c", probe], cwd=app, capture_output=True, text=True, timeout=60, check=False
    )
    assert (res.returncode, res.stdout) == (0, "ok\n"), res.stderr
