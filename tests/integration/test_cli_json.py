"""``--json`` and quiet output on the one-off commands that talk to a real PostgreSQL or the Runpod
emulator: ``migrate``, ``pause``/``resume``, ``workers terminate``, ``gpus``, ``volumes``.

Each answers on stdout only (a table or sentence, or with ``--json`` one JSON document a script can
parse) and logs on stderr only from WARNING up unless ``-v``, whatever ``LOG_LEVEL`` says (the
environment here sets INFO, as the daemon's would). Before: none of these took ``--json``, and
``migrate`` printed an INFO JSON line per file on stderr, which ``2>&1 | ...`` mixed into its answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.adapters.db.migrate import discover
from orchestrator.standins.emulator import EmulatorServer
from orchestrator.standins.pg import TempPostgres
from tests.plugins.emulator import TEST_API_KEY

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _cli(env: dict[str, str], tmp_path: Path) -> Cli:
    keep = {
        k: os.environ[k]
        for k in ("PATH", "PYTHONPATH", "HOME", "LANG", "TMPDIR", "ORCHESTRATOR_PG_BINDIR")
        if k in os.environ
    }

    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "--env-file", "/dev/null", *args],
            env={**keep, "LOG_LEVEL": "INFO", **env},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert proc.returncode == expect, (
            f"orchestrator {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
        return proc

    return run


@pytest.fixture
def empty_database(pg: TempPostgres) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = pg.create_database(name)
    try:
        yield url
    finally:
        pg.drop_database(name)


def test_migrate_answers_alone_on_stdout_and_in_json(empty_database: str, tmp_path: Path) -> None:
    cli = _cli({"DATABASE_URL": empty_database}, tmp_path)
    files = [m.filename for m in discover()]
    first = cli("migrate")
    assert first.stdout.splitlines() == [f"applied {name}" for name in files]
    assert first.stderr == "", "log lines on stderr without -v"
    again = cli("migrate", "--json")
    assert json.loads(again.stdout) == {"applied": []} and again.stderr == ""
    # -v brings the progress lines back, on stderr; stdout stays the answer.
    verbose = cli("migrate", "-v", "--json")
    assert json.loads(verbose.stdout) == {"applied": []}
    assert [json.loads(line)["event"] for line in verbose.stderr.splitlines()] == ["migrations_applied"]


def test_pause_resume_and_terminate_answer_in_json(database_url: str, tmp_path: Path) -> None:
    cli = _cli({"DATABASE_URL": database_url}, tmp_path)
    paused = json.loads(cli("pause", "--reason", "image rollout", "--json").stdout)
    assert (
        paused["paused"] is True and paused["paused_reason"] == "image rollout" and "@" in paused["paused_by"]
    )
    assert "spawning paused" in cli("pause").stdout
    resumed = cli("resume", "--json")
    assert json.loads(resumed.stdout)["paused"] is False and resumed.stderr == ""

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "insert into workers (id, instance_type, status, metadata) values (%s, 'NVIDIA GeForce RTX 4090', 'active', %s)",
            (
                "gpu-cli-json",
                json.dumps({"runpod_id": "pod-cli-json", "ssh_details": {"ip": "10.0.0.1", "port": 22}}),
            ),
        )
    answer = json.loads(cli("workers", "terminate", "gpu-cli-json", "--json").stdout)
    assert answer["worker_id"] == "gpu-cli-json" and answer["status"] == "active"
    assert answer["terminate_requested_at"] and "@" in answer["terminate_requested_by"]
    assert "ssh_details" not in answer  # the row's metadata is not printed wholesale
    assert "termination requested for gpu-cli-json" in cli("workers", "terminate", "gpu-cli-json").stdout
    # A worker that does not exist is a failed operation, said on stderr, with nothing on stdout.
    missing = cli("workers", "terminate", "gpu-nobody", "--json", expect=1)
    assert missing.stdout == "" and "gpu-nobody" in missing.stderr
    # A row of someone else's (not WORKER_ID_PREFIX): no tick would act on a request, so none is recorded.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "insert into workers (id, instance_type, status, metadata) values ('laptop-1', 'local', 'active', '{}')"
        )
    other = cli("workers", "terminate", "laptop-1", expect=1)
    assert other.stdout == "" and "WORKER_ID_PREFIX='gpu-'" in other.stderr
    with psycopg.connect(database_url, autocommit=True) as conn:
        meta = conn.execute("select metadata from workers where id = 'laptop-1'").fetchone()
    assert meta is not None and "terminate_requested_at" not in meta[0]


def test_gpus_and_volumes_answer_in_json(emulator: EmulatorServer, tmp_path: Path) -> None:
    cli = _cli(
        {
            "RUNPOD_API_BASE_URL": emulator.base_url,
            "RUNPOD_API_KEY": TEST_API_KEY,
            "RUNPOD_GPU_TYPE": "NVIDIA GeForce RTX 4090,NVIDIA RTX A6000",
            "RUNPOD_STORAGE_NAME": "workspace,gone-volume",
        },
        tmp_path,
    )
    gpus = cli("gpus", "--json")
    assert gpus.stderr == ""
    doc: dict[str, Any] = json.loads(gpus.stdout)
    assert doc["transport"] == "rest"
    by_id = {g["id"]: g for g in doc["gpu_types"]}
    assert by_id["NVIDIA GeForce RTX 4090"]["priority"] == 1 and by_id["NVIDIA RTX A6000"]["priority"] == 2
    assert {g["priority"] for g in doc["gpu_types"]} == {1, 2, None}
    assert all(isinstance(g["display_name"], str) and "secure_price" in g for g in doc["gpu_types"])
    prices = [g["secure_price"] for g in doc["gpu_types"] if g["secure_price"] is not None]
    assert prices == sorted(prices)

    volumes = json.loads(cli("volumes", "--json").stdout)
    assert volumes["storage_names"] == ["workspace", "gone-volume"] and volumes["gpu_stock_error"] is None
    first, gone = volumes["volumes"][:2]
    assert (first["name"], first["priority"], first["exists"]) == ("workspace", 1, True)
    assert first["data_center"] and first["gpu_types_in_stock"] and first["configured"] is True
    assert (gone["name"], gone["priority"], gone["exists"], gone["id"]) == ("gone-volume", 2, False, None)
    # The human tables are still there without --json.
    assert "NVIDIA GeForce RTX 4090" in cli("gpus").stdout
    others = [v for v in volumes["volumes"] if v["priority"] is None]
    assert others and all(v["exists"] and not v["configured"] for v in others)
    assert "workspace" in cli("volumes").stdout
