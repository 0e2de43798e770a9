"""``orchestrator demo`` (what ``make run`` calls): the main job on the embedded default.

Brings up the stack of :mod:`orchestrator.standins.stack` (throwaway Postgres behind the PostgREST-compatible
endpoint and the app's Edge Functions, the Runpod emulator with real sshd pods running the simulated
worker, which speaks only the real worker's protocol), runs the real daemon
against it, feeds it a stream of tasks in two bursts, shows the fleet while workers spawn, boot, work and
are reaped, and ends with what a user pays attention to: pods created and terminated, tasks completed,
GPU-hours and cost as the emulator billed them, and leaked pods (which must be 0).
"""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from typing import Any

import structlog

from orchestrator.core.observed import Snapshot
from orchestrator.logs import configure_logging
from orchestrator.loop.controller import Controller
from orchestrator.loop.daemon import Daemon
from orchestrator.render import render_status
from orchestrator.standins.stack import Stack
from orchestrator.wiring import make_database, make_provider

log = structlog.get_logger(__name__)

# Short timeouts so the whole story (scale up, work, scale to zero) fits in a couple of minutes.
DEMO_SETTINGS = {
    "MIN_ACTIVE_GPUS": 0,
    "ORCHESTRATOR_POLL_SEC": 1,
    "LEASE_TTL_SEC": 10,
    "GPU_IDLE_TIMEOUT_SEC": 6,
    "GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC": 3,
    "TASKS_PER_GPU_THRESHOLD": 2,
    "SPAWNING_TIMEOUT_SEC": 120,
    "HEARTBEAT_TIMEOUT_SEC": 20,
    "ORPHAN_GRACE_SEC": 20,
    "SPAWN_BACKOFF_BASE_SEC": 5,
    # The warm pool as the defaults keep it, with a time to live this short story can show end to end:
    # idle pods stop into the pool, the second burst resumes them, and the pool is terminated at the end.
    "WARM_POOL_TTL_SEC": 15,
    # The wait target keeps headroom while tasks keep arriving; this story ends at zero workers, which
    # the threshold rule alone reaches within its idle timeouts.
    "WAIT_TARGET_SEC": 0,
    "LOG_LEVEL": "WARNING",
}
WORKER_ENV = {"SIM_WORKER_HEARTBEAT_SEC": "1", "SIM_WORKER_POLL_SEC": "0.2"}


def _totals(stack: Stack) -> dict[str, Any]:
    pods = stack.admin.pods()
    done = stack.sql(
        "SELECT count(*) FILTER (WHERE status = 'Complete'), count(*) FILTER (WHERE status = 'Failed'), count(*) FROM tasks"
    )[0]
    billed_s = sum(float(p.get("billedSeconds") or 0) for p in pods)
    return {
        "tasks_completed": int(done[0]),
        "tasks_failed": int(done[1]),
        "tasks_total": int(done[2]),
        "pods_created": len(pods),
        "pods_terminated": sum(1 for p in pods if p.get("status") == "TERMINATED"),
        "leaked_pods": sum(1 for p in pods if p.get("status") != "TERMINATED"),
        "gpu_hours": round(billed_s / 3600.0, 5),
        "cost_usd": round(sum(float(p.get("billedUsd") or 0) for p in pods), 5),
    }


def run_demo(*, tasks: int = 24, as_json: bool = False, max_gpus: int = 4, timeout: float = 600.0) -> int:
    out = sys.stdout
    # The daemon's own log lines would drown the live table; keep warnings and errors only.
    log_sink: Any = io.StringIO() if as_json else sys.stderr
    configure_logging(None, stream=log_sink, level="WARNING", fmt="json")
    say = (lambda *a: None) if as_json else (lambda *a: print(*a, file=out, flush=True))
    say(
        "starting the embedded default: throwaway Postgres, PostgREST-compatible endpoint, Runpod emulator ..."
    )
    started = time.monotonic()
    with Stack(speed=60.0) as stack:
        settings = stack.settings(MAX_ACTIVE_GPUS=max_gpus, **DEMO_SETTINGS)
        configure_logging(settings, stream=log_sink, level="WARNING", fmt="json")
        controller = Controller(
            settings, make_database(settings), make_provider(settings), worker_env=WORKER_ENV
        )
        daemon = Daemon(
            controller,
            settings.orchestrator_poll_sec,
            follower_interval=1.0,
            probe=controller.db.queue_probe,
            probe_interval=settings.wake_probe_sec,
        )
        daemon.start()
        viewer = make_database(settings)
        first = tasks // 2 or tasks
        second = tasks - first
        stack.enqueue(first, duration_sec=3.0)
        say(f"queued {first} tasks (3 s each); the fleet may grow to {max_gpus} GPUs")
        second_at = time.monotonic() + 25.0
        last_view = 0.0
        finished = False
        try:
            while time.monotonic() - started < timeout:
                now = time.monotonic()
                if second and now >= second_at:
                    stack.enqueue(second, duration_sec=2.0)
                    say(f"queued {second} more tasks")
                    second = 0
                snapshot = Snapshot.from_json(viewer.snapshot(settings.worker_id_prefix))
                if now - last_view >= 2.0:
                    last_view = now
                    # On a terminal the table redraws in place (a live view); in a log it scrolls.
                    clear = "\033[H\033[J" if out.isatty() else "\n"
                    say(f"{clear}[{now - started:5.0f}s] " + render_status(snapshot))
                if (
                    second == 0
                    and snapshot.queue.claimable == 0
                    and snapshot.queue.running == 0
                    and not snapshot.workers
                ):
                    live_pods = [p for p in stack.admin.pods() if p.get("status") != "TERMINATED"]
                    if not live_pods:
                        finished = True
                        break
                threading.Event().wait(0.5)
        except KeyboardInterrupt:
            say("interrupted: shutting down")
        finally:
            daemon.shutdown()
            viewer.close()
        totals = _totals(stack)
        totals["seconds"] = round(time.monotonic() - started, 1)
        totals["finished"] = finished
    if as_json:
        print(json.dumps(totals), file=out, flush=True)
    else:
        say(
            "\nsummary: {pods_created} pods created, {pods_terminated} terminated, {leaked_pods} leaked; "
            "{tasks_completed}/{tasks_total} tasks completed ({tasks_failed} failed); "
            "{gpu_hours} GPU-hours, ${cost_usd} billed; {seconds}s".format(**totals)
        )
    return 0 if finished and totals["leaked_pods"] == 0 else 1
