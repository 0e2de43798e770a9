"""The simulated worker's heartbeat guardian: a separate process that beats for the worker.

Where this sits: ``orchestrator.standins.worker`` starts it (:func:`start_guardian`) before anything else,
as banodoco/Reigh-Worker ``source/task_handlers/worker/heartbeat_utils.py`` starts
``heartbeat_guardian.py``'s ``guardian_main``: a daemonic ``multiprocessing.Process`` given the
worker's pid, a ``multiprocessing.Queue`` of log entries and ``{db_url, api_key}``. The loop, as there:

1. Is the worker alive? ``kill(pid, 0)``, the same start time as when the guardian began, and a
   Python command line (the worker's check uses psutil; a zombie's empty command line reads as dead).
   If not: one beat ``{0, 0, [], "crashed"}`` and exit.
2. Up to 100 log entries from the queue; VRAM from ``nvidia-smi --query-gpu=memory.total,memory.used
   --format=csv,noheader,nounits`` (0, 0 when it fails).
3. ``POST {db_url}/rest/v1/rpc/func_worker_heartbeat_with_logs`` with ``apikey``, ``Content-Type``
   and ``Prefer: return=representation`` (no ``Authorization``; banodoco/reigh-worker 22cbba9's
   ``source/runtime/worker/guardian.py`` also sends ``Authorization: Bearer`` with the same key), body ``{worker_id_param,
   vram_total_mb_param, vram_used_mb_param, logs_param, status_param: "active"}``, through ``curl -s
   -X POST -m 10`` (as the worker does; the HTTP status is ignored, ``success: true`` in the answer
   counts). Without curl on the machine, httpx sends the same request.
4. Sleep the interval (20 s; ``SIM_WORKER_HEARTBEAT_SEC`` for tests), and again.

Being a daemonic child, it is terminated by ``multiprocessing`` when the worker exits normally
(``sys.exit``), so only an abrupt death (a signal, ``os._exit``) leaves it to report ``crashed``, as
in production. Reigh-worker 22cbba9's worker terminates it itself on the way out and sends one last beat
``{0, 0, [], "terminated"}`` (:func:`send_shutdown_beat`).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue as queue_mod
import shutil
import subprocess
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

import structlog

log = structlog.get_logger(__name__)

HEARTBEAT_SEC = 20.0
LOG_QUEUE_MAX = 1000
LOGS_PER_BEAT = 100
CURL_MAX_TIME = 10
CURL_TIMEOUT = 15
NVIDIA_SMI_TIMEOUT = 5


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None."""
    try:
        raw = open(f"/proc/{pid}/stat", "rb").read().decode(errors="replace")  # noqa: SIM115
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def worker_alive(pid: int, start_time: int | None) -> bool:
    """The guardian's check: the pid exists, is the same process, and is still a Python process."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    if start_time is None:
        return True  # could not capture it at start: the worker's guardian then checks the pid only
    if process_start_time(pid) != start_time:
        return False  # the pid was reused
    try:
        argv0 = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode(errors="replace")  # noqa: SIM115
    except OSError:
        return False
    return "python" in argv0.lower()  # a zombie's command line is empty: dead


def vram_mb() -> tuple[int, int]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0, 0
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.total,memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT,
            check=False,
        )
        if out.returncode != 0:
            return 0, 0
        total, used = out.stdout.strip().splitlines()[0].split(",")
        return int(float(total)), int(float(used))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0, 0


def collect_logs(log_queue: Any, limit: int = LOGS_PER_BEAT) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while len(entries) < limit:
        try:
            entries.append(log_queue.get_nowait())
        except (queue_mod.Empty, OSError, ValueError, EOFError):
            break
    return entries


def heartbeat_payload(
    worker_id: str, total: int, used: int, logs: list[dict[str, Any]], status: str
) -> dict[str, Any]:
    return {
        "worker_id_param": worker_id,
        "vram_total_mb_param": total,
        "vram_used_mb_param": used,
        "logs_param": logs,
        "status_param": status,
    }


def send_heartbeat(config: Mapping[str, str], payload: Mapping[str, Any]) -> bool:
    """One beat; true when the answer says ``success: true`` (or cannot be parsed, as the worker assumes)."""
    url = f"{config['db_url'].rstrip('/')}/rest/v1/rpc/func_worker_heartbeat_with_logs"
    body = json.dumps(payload)
    curl = shutil.which("curl")
    try:
        bearer = ["-H", f"Authorization: Bearer {config['api_key']}"] if config.get("bearer") else []
        if curl is not None:
            done = subprocess.run(
                [
                    curl,
                    "-s",
                    "-X",
                    "POST",
                    "-m",
                    str(CURL_MAX_TIME),
                    url,
                    "-H",
                    "Content-Type: application/json",
                    "-H",
                    "Prefer: return=representation",
                    *bearer,
                    "-H",
                    f"apikey: {config['api_key']}",
                    "-d",
                    body,
                ],
                capture_output=True,
                timeout=CURL_TIMEOUT,
                check=False,
            )
            if done.returncode != 0:
                log.warning("guardian_heartbeat_failed", curl_exit=done.returncode)
                return False
            text = done.stdout.decode(errors="replace")
        else:
            import httpx

            headers = {
                "apikey": config["api_key"],
                "Content-Type": "application/json",
                "Prefer": "return=representation",
            }
            if config.get("bearer"):
                headers["Authorization"] = f"Bearer {config['api_key']}"
            text = httpx.post(url, content=body, headers=headers, timeout=CURL_MAX_TIME).text
    except Exception as exc:  # the guardian never dies of a failed beat
        log.warning("guardian_heartbeat_failed", error=str(exc)[:300])
        return False
    try:
        answer = json.loads(text)
    except ValueError:
        return True
    success = bool(answer.get("success", False)) if isinstance(answer, dict) else False
    if not success:
        log.warning("guardian_heartbeat_refused", answer=str(answer)[:300])
    return success


def guardian_main(
    worker_id: str,
    worker_pid: int,
    log_queue: Any,
    config: Mapping[str, str],
    interval: float = HEARTBEAT_SEC,
) -> None:
    start_time = process_start_time(worker_pid)
    log.info("guardian_started", worker_pid=worker_pid, interval_sec=interval, pid=os.getpid())
    beats = 0
    while True:
        try:
            if not worker_alive(worker_pid, start_time):
                log.warning("guardian_worker_gone", worker_pid=worker_pid)
                send_heartbeat(config, heartbeat_payload(worker_id, 0, 0, [], "crashed"))
                break
            logs = collect_logs(log_queue)
            total, used = vram_mb()
            if send_heartbeat(config, heartbeat_payload(worker_id, total, used, logs, "active")):
                beats += 1
                if beats % 15 == 1:
                    log.info(
                        "guardian_heartbeat",
                        beats=beats,
                        logs=len(logs),
                        vram_total_mb=total,
                        vram_used_mb=used,
                    )
        except Exception as exc:  # as the worker's guardian: never crash on anything
            log.warning("guardian_loop_error", error=str(exc)[:300])
        time.sleep(interval)
    log.info("guardian_exiting")


def guardian_config(worker_id: str, supabase_url: str, api_key: str, *, bearer: bool) -> dict[str, str]:
    """What the guardian and the shutdown beat send with (``bearer``: the Authorization header too)."""
    return {
        "worker_id": worker_id,
        "worker_pid": str(os.getpid()),
        "db_url": supabase_url,
        "api_key": api_key,
        **({"bearer": "1"} if bearer else {}),
    }


def send_shutdown_beat(process: BaseProcess, config: Mapping[str, str]) -> bool:
    """Reigh-worker 22cbba9's way out (``server.py``, the main loop's ``finally``): terminate the
    guardian, wait up to 5 s for it, then one beat ``{0, 0, [], "terminated"}``. Never raises: as there,
    each step catches even a second interrupt (``BaseException``), so one step's failure skips no other."""
    try:
        process.terminate()
        process.join(5)
    except BaseException as exc:  # already on the way out: as 22cbba9, even a second interrupt
        log.warning("guardian_termination_failed", error=str(exc)[:300])
    try:
        return send_heartbeat(config, heartbeat_payload(config["worker_id"], 0, 0, [], "terminated"))
    except BaseException as exc:
        log.warning("shutdown_heartbeat_failed", error=str(exc)[:300])
        return False


def start_guardian(
    worker_id: str, supabase_url: str, api_key: str, interval: float = HEARTBEAT_SEC, *, bearer: bool = False
) -> tuple[BaseProcess, Queue[Any]]:
    """Fork the guardian (before the worker starts any thread) and return it with its log queue."""
    ctx = multiprocessing.get_context("fork")
    log_queue: Queue[Any] = ctx.Queue(maxsize=LOG_QUEUE_MAX)
    config = guardian_config(worker_id, supabase_url, api_key, bearer=bearer)
    process = ctx.Process(
        target=guardian_main,
        args=(worker_id, os.getpid(), log_queue, config, interval),
        name=f"guardian-{worker_id}",
        daemon=True,
    )
    process.start()
    return process, log_queue


def log_entry(level: str, message: str, task_id: str | None = None, **metadata: Any) -> dict[str, Any]:
    """One entry of ``logs_param``, shaped as the worker's ``LogBuffer.add`` makes it."""
    return {
        "timestamp": datetime.now(UTC).isoformat(),
        "level": level,
        "message": message,
        "task_id": task_id,
        "metadata": metadata,
    }


def offer(log_queue: Any, entry: Mapping[str, Any]) -> None:
    """Hand an entry to the guardian without ever blocking the worker (a full queue drops it)."""
    if log_queue is None:
        return
    with contextlib.suppress(queue_mod.Full, OSError, ValueError, AssertionError):
        log_queue.put_nowait(dict(entry))
