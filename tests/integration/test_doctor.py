"""``orchestrator doctor`` against the embedded stack: ready when everything is there, and every missing
piece named when it is not (the real worker's RPC, the Edge Functions, a migration, the Runpod key, a
GPU type, a volume, the SSH key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from orchestrator.standins.emulator import EmulatorServer
from orchestrator.standins.stack import Stack


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--env-file", "/dev/null", "doctor", *args],
        env={**keep, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def checks(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    doc = json.loads(result.stdout)
    return {c["check"]: c for c in doc["checks"]}


def failed(result: subprocess.CompletedProcess[str]) -> set[str]:
    return {name for name, c in checks(result).items() if c["status"] == "FAIL"}


def test_the_embedded_stack_is_ready(stack: Stack) -> None:
    result = doctor(stack.environ())
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("ready")
    assert len(lines) <= 25  # one screen
    as_json = doctor(stack.environ(), "--json")
    assert as_json.returncode == 0
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is True and {c["status"] for c in doc["checks"]} == {"ok"}
    names = set(checks(as_json))
    for expected in (
        "database: migrations",
        "database: func_worker_heartbeat_with_logs()",
        "database: claim_next_task_service_role()",
        "edge function: claim-next-task",
        "edge function: task-counts",
        "edge function: complete_task",
        "edge function: update-task-status",
        "edge function: create-task",
        "edge function: get-orchestrator-children",
        "runpod: API key",
        "runpod: GPU type NVIDIA GeForce RTX 4090",
        "runpod: volume workspace",
        "ssh: private key",
    ):
        assert expected in names
    # Nothing secret in what it prints.
    assert stack.service_role_key not in result.stdout + as_json.stdout


def test_the_workers_credentials_given_only_in_worker_env_are_the_ones_checked(stack: Stack) -> None:
    """A daemon on DATABASE_URL may give the workers their URL and key in WORKER_ENV alone; doctor probes
    the worker's API with those (as the start hands them over SSH) instead of failing for the settings."""
    env = stack.environ(
        DB_BACKEND="postgres",
        SUPABASE_URL="",
        SUPABASE_SERVICE_ROLE_KEY="",
        SUPABASE_ANON_KEY="",
        WORKER_ENV=json.dumps(
            {"SUPABASE_URL": stack.supabase_url + "/", "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key}
        ),
    )
    result = doctor(env, "--json")
    found = checks(result)
    assert "database: the real worker's API" not in found, found
    for name in ("database: func_worker_heartbeat_with_logs()", "edge function: claim-next-task"):
        assert found[name]["status"] == "ok", found[name]
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_missing_piece_is_named(stack: Stack, tmp_path: Path) -> None:
    stack.sql(
        "drop function public.func_worker_heartbeat_with_logs(text, integer, integer, jsonb, uuid, text)"
    )
    newest = stack.sql("select max(filename) from orchestrator_schema_migrations")[0][0]
    stack.sql("delete from orchestrator_schema_migrations where filename = %s", (newest,))
    garbage = tmp_path / "not_a_key"
    garbage.write_text("this is not a private key\n")
    env = stack.environ(
        RUNPOD_GPU_TYPE="NVIDIA GeForce RTX 4090,NVIDIA Imaginary 9000",
        RUNPOD_STORAGE_NAME="workspace,no-such-volume",
        RUNPOD_SSH_PRIVATE_KEY_PATH=str(garbage),
    )
    result = doctor(env, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert json.loads(result.stdout)["ok"] is False
    assert failed(result) == {
        "database: func_worker_heartbeat_with_logs()",
        "database: migrations",
        "runpod: GPU type NVIDIA Imaginary 9000",
        "runpod: volume no-such-volume",
        "ssh: private key",
    }
    found = checks(result)
    assert newest in found["database: migrations"]["detail"]
    assert "missing" in found["database: func_worker_heartbeat_with_logs()"]["detail"]
    # What is there is still reported as there.
    assert found["runpod: GPU type NVIDIA GeForce RTX 4090"]["status"] == "ok"
    assert found["edge function: claim-next-task"]["status"] == "ok"
    text = doctor(env)
    assert text.returncode == 1 and "NOT READY: 5 problem(s)" in text.stdout


class _NoFunctions(BaseHTTPRequestHandler):
    """A Supabase project without the app: the Edge runtime's 404, PostgREST's PGRST202."""

    def _answer(self) -> None:
        body: dict[str, Any]
        if self.path.startswith("/functions/v1/"):
            status, body = 404, {"code": "NOT_FOUND", "message": "Requested function was not found"}
        else:
            status, body = (
                404,
                {"code": "PGRST202", "message": "Could not find the function", "details": None, "hint": None},
            )
        data = json.dumps(body).encode()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_OPTIONS = _answer

    def log_message(self, *args: Any) -> None:
        pass


def test_a_project_without_the_apps_edge_functions_fails_for_each_of_them(stack: Stack) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoFunctions)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = stack.environ(
            SUPABASE_URL=f"http://127.0.0.1:{server.server_address[1]}", DB_BACKEND="postgres"
        )
        result = doctor(env, "--json")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert {
        "edge function: claim-next-task",
        "edge function: task-counts",
        "edge function: complete_task",
        "edge function: update-task-status",
        "edge function: task-counts with the workers' token",
        "database: func_worker_heartbeat_with_logs()",
        "database: claim_next_task_service_role()",
    } <= failed(result)
    found = checks(result)
    assert "not deployed" in found["edge function: complete_task"]["detail"]
    # Only parent tasks need these: a warning, the rest of the queue runs without them.
    for parent_only in ("edge function: create-task", "edge function: get-orchestrator-children"):
        assert found[parent_only]["status"] == "warn" and "parent tasks" in found[parent_only]["detail"]
    # The orchestrator's own side is fine over DATABASE_URL.
    assert found["database: orchestrator functions"]["status"] == "ok"
    assert found["database: migrations"]["status"] == "ok"


def test_a_runpod_key_the_api_refuses(stack: Stack) -> None:
    with EmulatorServer(
        api_key="the-right-key", speed=500.0, state_dir=stack.dir / "emulator-keyed"
    ) as emulator:
        env = stack.environ(RUNPOD_API_BASE_URL=emulator.base_url, RUNPOD_API_KEY="a-wrong-key")
        result = doctor(env, "--json")
    assert result.returncode == 1
    found = checks(result)
    assert found["runpod: API key"]["status"] == "FAIL"
    assert "a-wrong-key" not in result.stdout


def test_nothing_configured_lists_what_is_needed() -> None:
    result = doctor({}, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert {"database: configuration", "runpod: configuration"} <= failed(result)
    found = checks(result)
    assert "RUNPOD_API_KEY" in found["runpod: configuration"]["detail"]


def test_a_misspelt_variable_is_a_warning_of_its_own() -> None:
    """``MAX_ACTIVE_GPU=4`` (one letter short) is named, with the setting it probably means, and is a
    warning: the rest of the report and the exit code do not change because of it."""
    result = doctor({"MAX_ACTIVE_GPU": "4"}, "--json")
    found = checks(result)
    assert found["config: MAX_ACTIVE_GPU"]["status"] == "warn"
    assert "did you mean MAX_ACTIVE_GPUS?" in found["config: MAX_ACTIVE_GPU"]["detail"]
    assert result.stderr == "", "reported once, as a check, not also as a log line"
    assert next(iter(found)) == "config: MAX_ACTIVE_GPU", "configuration first, as an operator fixes it"
