"""End-to-end: the operator commands against the embedded stack, each one a real subprocess.

``plan`` (a dry run that changes nothing), ``tick`` (one cycle, the old system's JSON summary),
``status --json``, ``pods``, ``events``, ``pause``/``resume`` (no spawns while paused, healing goes on),
``ssh ID -- CMD`` (the remote output alone, no log lines) and ``workers terminate ID``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.standins.stack import Stack
from orchestrator.wiring import make_provider
from tests.e2e.conftest import FAST, all_done, events, live_pods, pods, run_cli, tasks, wait_until, workers

pytestmark = pytest.mark.e2e

# Idle workers stay (long idle timeouts), so the operator's termination is the only one.
CLI_SETTINGS = {
    "MAX_ACTIVE_GPUS": 2,
    "ORPHAN_GRACE_SEC": 0,
    "GPU_IDLE_TIMEOUT_SEC": 600,
    "GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC": 600,
}


def _orphan(stack: Stack) -> str:
    """A pod with our prefix that no worker row claims (as a crash or a manual creation leaves)."""
    provider = make_provider(stack.settings(**FAST))
    try:
        return str(provider.spawn_worker("gpu-stray-pod")["runpod_id"])
    finally:
        provider.close()


def _worker(stack: Stack, worker_id: str) -> dict[str, Any]:
    return next(w for w in workers(stack) if w["id"] == worker_id)


def target_like_rows(text: str, rows: list[dict[str, Any]]) -> bool:
    """The human table names every live worker."""
    return all(w["id"] in text for w in rows if w["status"] != "terminated")


def _view(stack: Stack) -> dict[str, Any]:
    return {
        "tasks": tasks(stack),
        "workers": workers(stack),
        "events": len(events(stack)),
        "pods": sorted((p["id"], p["status"]) for p in pods(stack)),
        "control": stack.sql("SELECT paused FROM orchestrator_control"),
    }


def test_operator_commands(stack: Stack, tmp_path: Path, in_process: Any) -> None:
    def cli(*args: str, expect: int = 0) -> str:
        done = run_cli(stack, tmp_path, *args, **CLI_SETTINGS)
        assert done.returncode == expect, (
            f"orchestrator {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout

    stack.enqueue(3, duration_sec=0.5)
    stray = _orphan(stack)
    stack.admin.wait_status(stray, "RUNNING", timeout=20)

    # plan: what a tick would do, and nothing changes.
    before = _view(stack)
    text = cli("plan")
    assert "spawn" in text and "orphan_pod" in text and stray in text, text
    plan = json.loads(cli("plan", "--json"))
    kinds = [a["kind"] for a in plan["actions"]]
    # The orphan still bills and holds a GPU: it counts under MAX_ACTIVE_GPUS until it is gone.
    assert kinds.count("spawn") == 1 and plan["desired"] == 2 and plan["live"] == 1
    assert "max_reached" in plan["spawn_blocked"]
    assert any(
        a["kind"] == "terminate_pod" and a["runpod_id"] == stray and a["reason"] == "orphan_pod"
        for a in plan["actions"]
    )
    assert _view(stack) == before, "plan changed something"

    # pause: no spawns, but healing (the orphan's termination) goes on.
    assert "paused" in cli("pause", "--reason", "e2e")
    paused_tick = json.loads(cli("tick").strip().splitlines()[-1])
    for key in ("timestamp", "actions", "status"):
        assert key in paused_tick
    for key in ("promoted", "failed", "spawned", "terminated", "tasks_reset"):
        assert key in paused_tick["actions"]
    for key in ("queued", "spawning", "active", "initializing", "draining", "error"):
        assert key in paused_tick["status"]
    assert paused_tick["actions"]["spawned"] == 0 and paused_tick["paused"] is True
    assert "paused" in paused_tick["spawn_blocked"]
    assert paused_tick["status"]["queued"] == 3
    assert paused_tick["actions"]["terminate_requested"] == 1
    assert {p["id"]: p["status"] for p in pods(stack)}[stray] == "TERMINATED"
    assert not workers(stack)

    # resume: the next tick spawns.
    assert "resumed" in cli("resume")
    tick = json.loads(cli("tick").strip().splitlines()[-1])
    assert tick["actions"]["spawned"] == 2 and tick["paused"] is False
    assert len(workers(stack)) == 2

    # The daemon takes it from here; the read-only commands work beside it.
    in_process(**CLI_SETTINGS)
    wait_until(lambda: all_done(stack, 3), 60, "the tasks done", interval=0.25)
    wait_until(lambda: [w for w in workers(stack) if w["status"] == "active"], 30, "an active worker")
    # A one-off tick beside a running daemon changes nothing: exit 3, the lease is held elsewhere.
    assert json.loads(cli("tick", expect=3).strip().splitlines()[-1])["role"] == "follower"
    # The daemon keeps ending idle workers beside these reads: compare status with the rows read just
    # before and after it, until no worker ended in between.
    def settled_status() -> dict[str, Any] | None:
        before = workers(stack)
        answer = json.loads(cli("status", "--json"))
        return answer if workers(stack) == before and {w["worker_id"] for w in answer["workers"]} == {
            w["id"] for w in before if w["status"] != "terminated"
        } else None

    status = wait_until(settled_status, 30, "status to list the live workers")
    assert status["queue"]["claimable"] == 0 and status["paused"] is False
    assert target_like_rows(cli("status"), workers(stack))
    pod_rows = json.loads(cli("pods", "--json"))
    assert {r["runpod_id"] for r in pod_rows} == {p["id"] for p in live_pods(stack)}
    assert not any(r["orphan"] for r in pod_rows)
    assert cli("pods").strip()
    recent = json.loads(cli("events", "--json", "--limit", "200"))
    kinds_seen = {e["kind"] for e in recent}
    assert {"pod_created", "pod_terminate_requested", "worker_registered"} <= kinds_seen, kinds_seen
    assert cli("events").strip()

    # ssh: the remote output alone on stdout and no log line (LOG_LEVEL is INFO here, as the daemon's);
    # the options before `--` are the command's own, not part of the remote command.
    active = next(w["id"] for w in workers(stack) if w["status"] == "active")
    done = run_cli(stack, tmp_path, "ssh", active, "--timeout", "30", "--", "echo", "hello", **CLI_SETTINGS)
    assert (done.returncode, done.stdout, done.stderr) == (0, "hello\n", ""), done
    answer = json.loads(cli("ssh", active, "--json", "--", "echo out; echo err >&2; exit 3", expect=3))
    assert answer == {
        "worker_id": active,
        "runpod_id": _worker(stack, active)["metadata"]["runpod_id"],
        "exit_code": 3,
        "stdout": "out\n",
        "stderr": "err\n",
    }

    # workers terminate: drained, its pod terminated, the row closed; the other worker stays. Only active
    # workers are candidates: with the queue empty the daemon may already have cancelled a booting one.
    target, *others = sorted(w["id"] for w in workers(stack) if w["status"] == "active")
    target_pod = _worker(stack, target)["metadata"]["runpod_id"]
    assert target in cli("workers", "terminate", target)
    wait_until(lambda: _worker(stack, target)["status"] == "terminated", 30, "the worker terminated")
    assert {p["id"]: p["status"] for p in pods(stack)}[target_pod] == "TERMINATED"
    assert all(_worker(stack, other)["status"] == "active" for other in others)
    reasons = {e["reason"] for e in events(stack) if e["worker_id"] == target}
    assert "operator_request" in reasons, reasons
