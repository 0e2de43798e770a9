"""Fixtures for the end-to-end tests: the embedded default stack, the daemon in-process or as a process.

These tests sit on top of everything: a throwaway database in the
session's PostgreSQL (``pg`` from tests/conftest.py) with the migrations applied, the PostgREST
stand-in in front of it, the Runpod emulator whose pods are real sshd sandboxes running the simulated
worker, and the real daemon. ``stack`` is :class:`orchestrator.standins.stack.Stack` per test (its database
is dropped at teardown). ``in_process`` runs Controller + Daemon in this process (threads, shut down at
teardown); ``cli_process`` runs ``orchestrator ...`` as a subprocess with the stack's environment and
``--env-file /dev/null``, writes its stdout (the daemon's JSON log) to a file the test parses, and
kills whatever is still running at teardown, so no test leaves a process behind. Timeouts are short
(``FAST``) and the emulator boots pods in a fraction of a second, so each scenario takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orchestrator.loop.controller import Controller
from orchestrator.loop.daemon import Daemon
from orchestrator.standins.pg import TempPostgres
from orchestrator.standins.stack import Stack
from orchestrator.wiring import make_database, make_provider
from tests.conftest import embedded_stack

# Boot delays divided by this: a cached boot is 30 s / 500 = 60 ms (the sshd sandbox start is real).
EMULATOR_SPEED = 500.0

# Timeouts short enough that scale-up, work and scale-to-zero fit in seconds.
FAST: dict[str, Any] = {
    "MIN_ACTIVE_GPUS": 0,
    "ORCHESTRATOR_POLL_SEC": 1,
    "LEASE_TTL_SEC": 10,
    "GPU_IDLE_TIMEOUT_SEC": 3,
    "PARENT_RELEASE_MIN_SEC": 3,
    "GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC": 2,
    "TASKS_PER_GPU_THRESHOLD": 2,
    "SPAWNING_TIMEOUT_SEC": 60,
    "HEARTBEAT_TIMEOUT_SEC": 20,
    "ORPHAN_GRACE_SEC": 5,
    "SPAWN_BACKOFF_BASE_SEC": 2,
    # The scenarios end at scale to zero with no pod left at the provider: idle pods are terminated
    # (no warm pool; tests/e2e/test_warm_pool.py turns it on) and the fleet follows the queue alone (the
    # wait target keeps a worker warm while tasks arrived in the last minutes).
    "WARM_POOL_MAX": 0,
    "WAIT_TARGET_SEC": 0,
    "LOG_LEVEL": "INFO",
}
# The simulated worker inside each pod: quick heartbeats and claims (in-process daemons pass these).
WORKER_ENV = {"SIM_WORKER_HEARTBEAT_SEC": "1", "SIM_WORKER_POLL_SEC": "0.2"}

T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy; fail saying ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


@pytest.fixture
def stack(pg: TempPostgres) -> Iterator[Stack]:
    with embedded_stack(pg, EMULATOR_SPEED) as s:
        yield s


# -- the stack, read the way an operator would ------------------------------------------------------


def tasks(stack: Stack) -> list[dict[str, Any]]:
    # A result is what complete_task writes: the output's public URL and the processing time.
    rows = stack.sql(
        "SELECT id::text, status, attempts, worker_id, output_location IS NOT NULL AND generation_processed_at IS NOT NULL, "
        "error_message FROM tasks ORDER BY created_at, id"
    )
    return [
        {
            "id": r[0],
            "status": r[1],
            "attempts": r[2],
            "worker_id": r[3],
            "has_result": r[4],
            "error_message": r[5],
        }
        for r in rows
    ]


def task_counts(stack: Stack) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in stack.sql("SELECT status, count(*) FROM tasks GROUP BY status")}


def workers(stack: Stack) -> list[dict[str, Any]]:
    rows = stack.sql("SELECT id, status, metadata, status_reason FROM workers ORDER BY created_at, id")
    return [{"id": r[0], "status": r[1], "metadata": r[2] or {}, "status_reason": r[3]} for r in rows]


def live_workers(stack: Stack) -> list[dict[str, Any]]:
    return [w for w in workers(stack) if w["status"] != "terminated"]


def events(stack: Stack, kind: str | None = None) -> list[dict[str, Any]]:
    query = "SELECT id, at, kind, worker_id, runpod_id, reason, details, cost_usd FROM orchestrator_events"
    params: tuple[Any, ...] = ()
    if kind is not None:
        query += " WHERE kind = %s"
        params = (kind,)
    rows = stack.sql(query + " ORDER BY id", params)
    keys = ("id", "at", "kind", "worker_id", "runpod_id", "reason", "details", "cost_usd")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def pods(stack: Stack) -> list[dict[str, Any]]:
    """Every pod the emulator has seen, terminated ones included (its admin view)."""
    return stack.admin.pods()


def live_pods(stack: Stack) -> list[dict[str, Any]]:
    return [p for p in pods(stack) if p["status"] != "TERMINATED"]


def worker_log(stack: Stack) -> list[dict[str, Any]]:
    """Every JSON line the simulated workers logged (one file per worker on the emulated volume)."""
    found: list[dict[str, Any]] = []
    for path in sorted((stack.dir / "emulator" / "volumes").glob("*/reigh/logs/*.log")):
        for raw in path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append({**json.loads(raw), "_file": path.stem})
    return found


def all_done(stack: Stack, total: int) -> bool:
    return task_counts(stack).get("Complete", 0) == total


def drained(stack: Stack) -> bool:
    """Scale to zero reached: no live worker row and no pod left billing."""
    return not live_workers(stack) and not live_pods(stack)


def pod_intervals(stack: Stack) -> list[tuple[str, float, float]]:
    """(pod id, created, terminated-or-now) in epoch seconds, for every pod the emulator has seen.

    The admin view's ``createdAt``/``terminatedAt`` are whole seconds, too coarse to tell whether one
    pod went before the next came; exact epoch fields (``createdAtEpoch``/``terminatedAtEpoch``) are
    used when the admin view has them, else the in-process emulator's own state.
    """
    now = time.time()
    view = pods(stack)
    if view and all("createdAtEpoch" in p for p in view):
        return [(p["id"], float(p["createdAtEpoch"]), float(p.get("terminatedAtEpoch") or now)) for p in view]
    assert stack.emulator is not None
    state = stack.emulator.state
    with state.lock:
        return [(p.id, float(p.created_at), float(p.terminated_at or now)) for p in state.pods.values()]


def max_overlap(intervals: list[tuple[str, float, float]]) -> int:
    """Most pods alive at one instant (a termination at the same instant as a creation frees first)."""
    points = sorted([(start, 1) for _, start, _ in intervals] + [(end, -1) for _, _, end in intervals])
    peak = current = 0
    for _, delta in points:
        current += delta
        peak = max(peak, current)
    return peak


# -- the daemon in this process ---------------------------------------------------------------------


@dataclass
class InProcessDaemon:
    controller: Controller
    daemon: Daemon
    stopped: bool = False

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.daemon.shutdown()
        with contextlib.suppress(Exception):
            self.controller.db.close()
        close = getattr(self.controller.provider, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()


@pytest.fixture
def in_process(stack: Stack) -> Iterator[Callable[..., InProcessDaemon]]:
    """``in_process(**settings)`` starts Controller + Daemon against ``stack`` with FAST + overrides."""
    started: list[InProcessDaemon] = []

    def start(*, listen: bool = False, **overrides: Any) -> InProcessDaemon:
        settings = stack.settings(**{**FAST, **overrides})
        controller = Controller(
            settings, make_database(settings), make_provider(settings), worker_env=WORKER_ENV
        )
        daemon = Daemon(
            controller,
            settings.orchestrator_poll_sec,
            listen_url=settings.database_url if listen else None,
            follower_interval=min(settings.orchestrator_poll_sec, settings.lease_ttl_sec / 4),
        )
        handle = InProcessDaemon(controller, daemon)
        started.append(handle)
        daemon.start()
        return handle

    yield start
    for handle in reversed(started):
        handle.stop()


# -- the CLI as a subprocess ------------------------------------------------------------------------


@dataclass
class CliProcess:
    """One ``orchestrator`` subprocess; its stdout (JSON log lines) goes to ``out``."""

    args: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    started_at: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for raw in self.text().splitlines():
            raw = raw.strip()
            if not raw.startswith("{"):
                continue
            try:
                found.append(json.loads(raw))
            except ValueError:
                continue  # a line cut short by a SIGKILL
        return found

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == event]

    def wait_logged(self, event: str, timeout: float, count: int = 1) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            hits = self.logged(event)
            if len(hits) >= count:
                return hits
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{' '.join(self.args)} exited {self.proc.returncode} before logging {event!r}:\n"
                    f"{self.text()[-3000:]}\n{self.stderr()[-3000:]}"
                )
            return None

        return wait_until(found, timeout, f"{event!r} in the log of {' '.join(self.args)}")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)


# The checkout these tests belong to: the subprocesses import its package first, whatever else is
# installed in the environment (an editable install of another checkout, a wheel).
ROOT = Path(__file__).resolve().parents[2]


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "ORCHESTRATOR_PG_BINDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    inherited = os.environ.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), inherited) if p)
    return env


@pytest.fixture
def cli_process(stack: Stack, tmp_path: Path) -> Iterator[Callable[..., CliProcess]]:
    """``cli_process("run", env={...})`` starts ``orchestrator --env-file /dev/null run`` (killed at teardown)."""
    started: list[CliProcess] = []

    def start(*args: str, env: Mapping[str, Any] | None = None) -> CliProcess:
        n = len(started)
        out, err = tmp_path / f"cli-{n}.out", tmp_path / f"cli-{n}.err"
        environ = {**_base_env(), **stack.environ(**{**FAST, **dict(env or {})})}
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", "--env-file", "/dev/null", *args],
                env=environ,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                cwd=tmp_path,
                start_new_session=True,  # its own process group: teardown kills it and anything it started
            )
        handle = CliProcess(tuple(args), proc, out, err)
        started.append(handle)
        return handle

    yield start
    for handle in reversed(started):
        handle.kill()


def run_cli(
    stack: Stack, tmp_path: Path, *args: str, timeout: float = 60.0, **env: Any
) -> subprocess.CompletedProcess[str]:
    """Run one short ``orchestrator`` command to completion and return its output."""
    environ = {**_base_env(), **stack.environ(**{**FAST, **env})}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--env-file", "/dev/null", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        check=False,
    )
