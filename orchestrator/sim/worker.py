"""The simulated Headless-Wan2GP worker that runs inside emulated pods.

Where this sits: ``orchestrator.sim`` emulates Runpod. Each emulated network volume gets the layout
the seed's start command expects (:func:`lay_out_volume`: ``reigh/Headless-Wan2GP/headless.py`` and
``venv/bin/activate``), so the orchestrator starts this worker over SSH exactly as it starts the real
one::

    python headless.py --db-type supabase --supabase-url URL --supabase-anon-key KEY \
        --supabase-access-token TOKEN --worker <id>

(``--db-type postgres`` reads ``DATABASE_URL`` from the environment instead). The worker then behaves
like the real one from the database's point of view, through the same SQL functions
(``docs/database.md``) and the same transports as the daemon (:class:`orchestrator.db.base.Database`):

- heartbeats every ``SIM_WORKER_HEARTBEAT_SEC`` seconds (default 5) with VRAM figures read from
  ``nvidia-smi`` (the pod's fake one), and stops once the heartbeat answers a state in which a worker
  must not work (draining, terminating, error, terminated);
- claims tasks one at a time and "processes" each for ``params.duration_sec`` (or
  ``params.sim_duration_sec``; default 2 s), divided by ``SIM_WORKER_SPEED``; ``params.fail: true``
  fails the task, ``params.crash: true`` kills the process halfway through (nothing reported), anything
  else completes it with a small ``result_data``;
- logs one JSON line per event on stdout (secrets masked).

Differences from the real worker: no models, no GPU, no output files; the result points nowhere real.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from orchestrator import errors
from orchestrator.db.base import Database

log = structlog.get_logger(__name__)

# Heartbeat answers after which the worker stops working (docs/database.md: heartbeats from these
# states record nothing; draining means "finish, take nothing new").
STOP_STATUSES = frozenset({"draining", "terminating", "error", "terminated"})
DEFAULT_DURATION_SEC = 2.0
# VRAM the simulated process "uses": a loaded model while busy, a CUDA context while idle.
IDLE_VRAM_MB = 512
BUSY_VRAM_SHARE = 0.7
# The fake nvidia-smi reads the used figure from here (the pod's private /tmp); see sandbox.py.
GPU_STATE_FILE = "/tmp/.sim-gpu-used-mb"
HEADLESS_DIR = Path("reigh") / "Headless-Wan2GP"


def _env_float(name: str, default: float, *, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise errors.ConfigError([f"{name} must be a number, got {raw!r}"]) from exc
    if value < minimum:
        raise errors.ConfigError([f"{name} must be >= {minimum}, got {value}"])
    return value


class SimulatedWorker:
    """The worker's loops: a heartbeat thread and a claim-process loop, sharing one stop event."""

    def __init__(
        self,
        db: Database,
        worker_id: str,
        *,
        heartbeat_sec: float = 5.0,
        speed: float = 1.0,
        poll_sec: float = 1.0,
        task_types: list[str] | None = None,
        vram_total_mb: int | None = None,
        gpu_state_file: str | None = None,
    ) -> None:
        self.db = db
        self.worker_id = worker_id
        self.heartbeat_sec = heartbeat_sec
        self.speed = speed
        self.poll_sec = poll_sec
        self.task_types = task_types
        self.vram_total_mb = vram_total_mb
        self.gpu_state_file = gpu_state_file
        self.stop_event = threading.Event()
        self.stop_reason: str | None = None
        self._busy = False
        self.log = log.bind(worker_id=worker_id)

    # -- VRAM ---------------------------------------------------------------------------------------

    def vram_used_mb(self) -> int | None:
        if self.vram_total_mb is None:
            return None
        if self._busy:
            return int(self.vram_total_mb * BUSY_VRAM_SHARE)
        return min(IDLE_VRAM_MB, self.vram_total_mb)

    def _publish_vram(self) -> None:
        """Let the pod's fake nvidia-smi show what this process 'uses'."""
        used = self.vram_used_mb()
        if self.gpu_state_file is None or used is None:
            return
        try:
            Path(self.gpu_state_file).write_text(f"{used}\n")
        except OSError as exc:
            self.log.debug("gpu_state_write_failed", error=str(exc))

    # -- stopping -----------------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
            self.log.info("worker_stop_requested", reason=reason)
            self.stop_event.set()

    # -- heartbeat ----------------------------------------------------------------------------------

    def heartbeat_once(self) -> dict[str, Any] | None:
        total, used = self.vram_total_mb, self.vram_used_mb()
        try:
            answer = self.db.heartbeat(self.worker_id, total, used)
        except errors.OrchestratorError as exc:
            self.log.warning("heartbeat_failed", error=str(exc), error_type=type(exc).__name__)
            return None
        status = (answer or {}).get("status")
        self.log.info(
            "heartbeat",
            status=status,
            accepted=(answer or {}).get("accepted"),
            vram_total_mb=total,
            vram_used_mb=used,
        )
        if status in STOP_STATUSES:
            self.request_stop(f"worker_{status}")
        return answer

    def _heartbeat_loop(self) -> None:
        while not self.stop_event.is_set():
            self.heartbeat_once()
            self.stop_event.wait(self.heartbeat_sec)

    # -- tasks --------------------------------------------------------------------------------------

    def claim_once(self) -> dict[str, Any] | None:
        try:
            return self.db.claim_task(self.worker_id, self.task_types)
        except errors.OrchestratorError as exc:
            self.log.warning("claim_failed", error=str(exc), error_type=type(exc).__name__)
            return None

    def process(self, task: Mapping[str, Any]) -> str:
        """Run one claimed task to its end; returns the outcome (``complete``, ``fail``, ``lost``)."""
        task_id = str(task.get("id"))
        params = task.get("params") or {}
        if isinstance(params, str):
            try:
                params = json.loads(params)
            except ValueError:
                params = {}
        if not isinstance(params, dict):
            params = {}
        duration = params.get("duration_sec", params.get("sim_duration_sec", DEFAULT_DURATION_SEC))
        try:
            seconds = max(0.0, float(duration)) / self.speed
        except (TypeError, ValueError):
            seconds = DEFAULT_DURATION_SEC / self.speed
        tlog = self.log.bind(task_id=task_id, task_type=task.get("task_type"))
        tlog.info("task_started", duration_sec=round(seconds, 3))
        self._busy = True
        self._publish_vram()
        started = time.monotonic()
        try:
            if params.get("crash") is True:
                # Halfway through, the process dies without a word: no completion, no failure.
                time.sleep(seconds / 2)
                tlog.error("task_crashing_worker")
                sys.stdout.flush()
                os._exit(70)
            # A plain sleep, not stop_event.wait: draining lets the current task finish.
            time.sleep(seconds)
            elapsed = round(time.monotonic() - started, 3)
            if params.get("fail") is True:
                message = str(params.get("error") or "simulated failure (params.fail)")
                try:
                    answer = self.db.fail_task(self.worker_id, task_id, message)
                except errors.OrchestratorError as exc:
                    tlog.warning("task_fail_report_failed", error=str(exc))
                    return "lost"
                tlog.info("task_failed", elapsed_sec=elapsed, answer=answer)
                return "fail"
            result = {
                "simulated": True,
                "worker_id": self.worker_id,
                "elapsed_sec": elapsed,
                "output_location": f"sim://outputs/{task_id}.mp4",
            }
            try:
                done = self.db.complete_task(self.worker_id, task_id, result)
            except errors.OrchestratorError as exc:
                tlog.warning("task_complete_report_failed", error=str(exc))
                return "lost"
            # False: the task was taken from us meanwhile (requeued); the database kept the other run.
            tlog.info("task_completed", elapsed_sec=elapsed, accepted=done)
            return "complete" if done else "lost"
        finally:
            self._busy = False
            self._publish_vram()

    # -- main ---------------------------------------------------------------------------------------

    def run(self) -> int:
        self.log.info(
            "worker_started",
            pid=os.getpid(),
            heartbeat_sec=self.heartbeat_sec,
            speed=self.speed,
            vram_total_mb=self.vram_total_mb,
        )
        self._publish_vram()
        # The first heartbeat before anything else: it is what promotes the worker to active.
        self.heartbeat_once()
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        processed = 0
        while not self.stop_event.is_set():
            task = self.claim_once()
            if task is None:
                self.stop_event.wait(self.poll_sec)
                continue
            self.process(task)
            processed += 1
        beat.join(timeout=self.heartbeat_sec + 5)
        self.log.info("worker_stopped", reason=self.stop_reason, tasks_processed=processed)
        return 0


# --- command line ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="headless.py", description="Simulated Headless-Wan2GP worker")
    p.add_argument("--db-type", choices=["supabase", "postgres"], default="supabase")
    p.add_argument("--supabase-url", default=None)
    p.add_argument("--supabase-anon-key", default=None)
    p.add_argument("--supabase-access-token", default=None)
    p.add_argument("--worker", default=None)
    p.add_argument("--task-types", default=None, help="comma-separated task types to claim (default: any)")
    # The real headless.py takes many more options (models, output dirs, ...): accept and ignore them.
    args, unknown = p.parse_known_args(list(argv))
    args.ignored = unknown
    return args


def read_vram_total_mb() -> int | None:
    """The GPU's memory as nvidia-smi reports it (the pod's fake one), or SIM_VRAM_TOTAL_MB."""
    if os.environ.get("SIM_VRAM_TOTAL_MB"):
        return int(_env_float("SIM_VRAM_TOTAL_MB", 0, minimum=0))
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return int(out.strip().splitlines()[0].strip())
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def open_database(args: argparse.Namespace) -> Database:
    """The same transports the daemon uses: Supabase's REST URL when given one, else DATABASE_URL."""
    if args.db_type == "supabase" and args.supabase_url:
        from orchestrator.db.supabase import SupabaseTransport

        # The access token (the seed passes the service-role key) authorizes the calls; the anon key is
        # the fallback, as with the real worker.
        key = args.supabase_access_token or args.supabase_anon_key
        if not key:
            raise errors.ConfigError(["--supabase-access-token or --supabase-anon-key is required"])
        return Database(SupabaseTransport(args.supabase_url, key))
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise errors.ConfigError(["--db-type postgres needs DATABASE_URL (or give --supabase-url)"])
    from orchestrator.db.postgres import PostgresTransport

    return Database(PostgresTransport(url, max_size=2))  # two threads: heartbeats and tasks


def main(argv: Sequence[str] | None = None) -> int:
    from orchestrator.logs import configure_logging

    args = parse_args(sys.argv[1:] if argv is None else argv)
    secrets = [s for s in (args.supabase_anon_key, args.supabase_access_token) if s]
    configure_logging(fmt="json", extra_secrets=secrets)
    worker_id = args.worker or os.environ.get("WORKER_ID")
    if not worker_id:
        log.error("worker_config_invalid", problem="--worker (or WORKER_ID) is required")
        return 2
    try:
        heartbeat_sec = _env_float("SIM_WORKER_HEARTBEAT_SEC", 5.0, minimum=0.05)
        speed = _env_float("SIM_WORKER_SPEED", 1.0, minimum=1e-6)
        poll_sec = _env_float("SIM_WORKER_POLL_SEC", 1.0, minimum=0.01)
        vram_total_mb = read_vram_total_mb()
        db = open_database(args)
    except errors.ConfigError as exc:
        log.error("worker_config_invalid", problems=exc.problems)
        return 2
    task_types = [t for t in (args.task_types or "").split(",") if t] or None
    worker = SimulatedWorker(
        db,
        worker_id,
        heartbeat_sec=heartbeat_sec,
        speed=speed,
        poll_sec=poll_sec,
        task_types=task_types,
        vram_total_mb=vram_total_mb,
        gpu_state_file=GPU_STATE_FILE if os.environ.get("RUNPOD_POD_ID") else None,
    )
    # Spot pods get SIGTERM, then SIGKILL: stop taking work at once.
    signal.signal(signal.SIGTERM, lambda *_: worker.request_stop("sigterm"))
    if args.ignored:
        log.info("worker_options_ignored", options=args.ignored)
    try:
        return worker.run()
    finally:
        db.close()


# --- the volume layout -------------------------------------------------------------------------------


def _headless_py() -> str:
    checkout = str(Path(__file__).resolve().parents[2])
    return f'''#!/usr/bin/env python3
"""Simulated Headless-Wan2GP, laid out by the Runpod emulator (orchestrator.sim.worker).

Runs the simulated worker with the orchestrator project's own interpreter, whatever `python` ran this.
"""
import os
import sys

PROJECT_PYTHON = {sys.executable!r}
PROJECT_CHECKOUT = {checkout!r}

env = dict(os.environ)
env["PYTHONPATH"] = os.pathsep.join(p for p in (PROJECT_CHECKOUT, env.get("PYTHONPATH", "")) if p)
os.execve(PROJECT_PYTHON, [PROJECT_PYTHON, "-m", "orchestrator.sim.worker", *sys.argv[1:]], env)
'''


def _activate() -> str:
    bindir = os.path.dirname(sys.executable)
    return f"""# Simulated venv of Headless-Wan2GP (orchestrator.sim.worker): source it from bash.
# It puts the orchestrator project's interpreter first on PATH, so `python headless.py` works.
deactivate () {{
    if [ -n "${{_OLD_VIRTUAL_PATH:-}}" ]; then PATH="$_OLD_VIRTUAL_PATH"; export PATH; unset _OLD_VIRTUAL_PATH; fi
    unset VIRTUAL_ENV
    hash -r 2>/dev/null || true
    [ "${{1:-}}" = "nondestructive" ] || unset -f deactivate
}}
deactivate nondestructive
VIRTUAL_ENV={shlex.quote(sys.prefix)}
export VIRTUAL_ENV
_OLD_VIRTUAL_PATH="$PATH"
PATH={shlex.quote(bindir)}:"$PATH"
export PATH
hash -r 2>/dev/null || true
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=orchestrator-sim", "-c", "user.email=sim@localhost", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        timeout=30,
    )


def _make_repo(root: Path, app: Path) -> None:
    """A real git checkout with a local origin, so the seed's `git pull` answers "Already up to date"."""
    origin = root / "reigh" / ".sim-origin.git"
    try:
        if not origin.exists():
            origin.mkdir(parents=True)
            _git(origin, "init", "-q", "--bare", "-b", "main")
        _git(app, "init", "-q", "-b", "main")
        _git(app, "add", "-A")
        _git(app, "commit", "-q", "-m", "simulated Headless-Wan2GP")
        # Relative, so the remote resolves inside a pod too (the seed runs git from this directory).
        _git(app, "remote", "add", "origin", "../.sim-origin.git")
        _git(app, "push", "-q", "-u", "origin", "main")
    except (OSError, subprocess.SubprocessError) as exc:
        # No git, or it failed: an empty .git still makes `git pull` fail fast and harmlessly.
        log.warning("sim_volume_git_failed", error=str(exc))
        (app / ".git").mkdir(exist_ok=True)


def lay_out_volume(volume_dir: Path) -> None:
    """Write the simulated Headless-Wan2GP where the seed's start command looks for it (idempotent)."""
    volume_dir = Path(volume_dir)
    app = volume_dir / HEADLESS_DIR
    (app / "venv" / "bin").mkdir(parents=True, exist_ok=True)
    files = {
        app / "headless.py": (_headless_py(), 0o755),
        app / "venv" / "bin" / "activate": (_activate(), 0o644),
        app / "requirements.txt": (
            "# Simulated Headless-Wan2GP: no dependencies beyond the orchestrator.\n",
            0o644,
        ),
        app / ".gitignore": ("venv/\n*.log\noutputs/\n", 0o644),
    }
    for path, (text, mode) in files.items():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.chmod(mode)
        tmp.replace(path)
    py = app / "venv" / "bin" / "python"
    if not py.is_symlink():
        py.symlink_to(sys.executable)
    if not (app / ".git").exists():
        _make_repo(volume_dir, app)
    log.info("sim_volume_laid_out", volume_dir=str(volume_dir))


if __name__ == "__main__":
    sys.exit(main())
