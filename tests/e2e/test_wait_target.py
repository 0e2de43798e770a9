"""The wait target at its default, end to end: the real daemon sizes the fleet from the real snapshot.

Every other end-to-end scenario runs the threshold rule (``WAIT_TARGET_SEC=0``): it follows the queue,
so a worker idle for ``GPU_IDLE_TIMEOUT_SEC`` (3 s here) between two tasks is let go and the next task
waits for a resume or a boot. Here the wait target and the warm pool are at their defaults. Tasks arrive
one at a time, each after the previous one is done and the worker has sat idle for longer than that
timeout. ``orch_snapshot`` returns the arrivals of the last 10 minutes and hour, and the queueing model
(``orchestrator/core/sizing.py``) sees that a worker let go could not be back within the target before the
next arrival: it keeps one worker warm between them. What an operator
checks: the same worker takes every later task, nothing is drained, stopped, resumed or spawned between
them, and the tick summary and ``orchestrator plan`` show the model's figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.config import defaults
from orchestrator.core.sizing import MIN_SAMPLES
from orchestrator.standins.stack import Stack
from tests.e2e.conftest import FAST, all_done, run_cli, tasks, wait_until, workers

pytestmark = pytest.mark.e2e

DEFAULTS = defaults()
ENV: dict[str, Any] = {
    "WAIT_TARGET_SEC": DEFAULTS.wait_target_sec,
    "WARM_POOL_MAX": DEFAULTS.warm_pool_max,
    "LEASE_TTL_SEC": 4,
    # The subject is sizing, not health: on a loaded machine a worker still in its start-up was failed
    # after the suite's 20 s of silence, and the pooled pod was resumed in its place, a second worker.
    "HEARTBEAT_TIMEOUT_SEC": 60,
}
# Tasks before the model trusts the type's own durations (until then it assumes 2-minute tasks, for
# which one worker at this rate is busy half the time and it rightly asks for a second).
WARMUP = MIN_SAMPLES
STREAM = 3  # tasks after it, each after an idle spell the threshold rule would end the worker in
IDLE_TICKS = 5  # ticks of ORCHESTRATOR_POLL_SEC (1 s) with nothing to do: past GPU_IDLE_TIMEOUT_SEC (3 s)
MOVES = ("spawned", "drained", "stopped", "resumed", "terminate_requested")


def test_the_default_wait_target_keeps_a_worker_between_tasks(
    stack: Stack, cli_process: Any, tmp_path: Path
) -> None:
    assert DEFAULTS.wait_target_sec > 0 and FAST["GPU_IDLE_TIMEOUT_SEC"] < IDLE_TICKS
    daemon = cli_process("run", env=ENV)

    def one_task(done_before: int) -> None:
        stack.enqueue(1, duration_sec=0.5)
        wait_until(lambda: all_done(stack, done_before + 1), 90, f"task {done_before + 1} done", interval=0.2)
        # Idle ticks after it: the worker has been idle longer than the threshold rule would keep it.
        seen = len(daemon.logged("tick_summary"))
        wait_until(
            lambda: len(daemon.logged("tick_summary")) >= seen + IDLE_TICKS,
            60,
            f"{IDLE_TICKS} ticks after task {done_before + 1}",
            interval=0.2,
        )

    for n in range(WARMUP):
        one_task(n)
    # A worker asked for while the model still assumed 2-minute tasks leaves now: the steady part begins
    # once one worker serves and none is on its way in or out.
    moving = {"spawning", "initializing", "draining", "stopping", "resuming", "terminating"}

    def settled() -> bool:
        # Stable, not just momentarily so: a tick whose move is still being logged, or a model whose
        # figures still swing between one worker and two, would hand the stream a second worker.
        states = [w["status"] for w in workers(stack)]
        recent = daemon.logged("tick_summary")[-IDLE_TICKS:]
        return (
            states.count("active") == 1
            and not moving & set(states)
            and len(recent) == IDLE_TICKS
            and all(s["sizing"]["keep"] == 1 for s in recent)
            and not any(s["actions"][k] for s in recent for k in MOVES)
        )

    wait_until(settled, 180, "the fleet settled at one worker", interval=0.2)
    steady_from = len(daemon.logged("tick_summary"))
    for n in range(WARMUP, WARMUP + STREAM):
        one_task(n)

    # The later tasks all went to one worker, kept warm: no move of the fleet while they came and went.
    later = tasks(stack)[WARMUP:]
    assert all(t["status"] == "Complete" for t in later), later
    assert len({t["worker_id"] for t in later}) == 1, later
    summaries = daemon.logged("tick_summary")[steady_from:]
    assert len(summaries) >= STREAM * IDLE_TICKS
    moves = {k: sum(s["actions"][k] for s in summaries) for k in MOVES}
    assert moves == dict.fromkeys(MOVES, 0), moves
    [kept] = [w for w in workers(stack) if w["id"] == later[0]["worker_id"]]
    assert kept["status"] == "active", kept

    # Why: the model's figures, in every tick summary and in `orchestrator plan`.
    last = summaries[-1]["sizing"]
    assert last["keep"] >= 1 and last["rate_per_min"] > 0 and last["lead_sec"] > 0, last
    planned = run_cli(stack, tmp_path, "plan", "--json", **ENV)
    assert planned.returncode == 0, planned.stderr
    sizing = json.loads(planned.stdout)["sizing"]
    assert sizing["keep"] >= 1 and sizing["rate_per_min"] > 0, sizing
    assert json.loads(planned.stdout)["actions"] == [], "a dry run of the next tick changes nothing"
