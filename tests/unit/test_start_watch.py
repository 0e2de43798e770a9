"""The start watch: a started worker that has not heartbeated yet is looked at on its pod every tick.

Two halves. The command (``build_watch_command``) runs here with bash beside the real start command,
on a stand-in pod directory as ``test_start_command`` lays it out (a clean session environment, the
pod's variables only in its init process, its own temporary directory): it must tell a start that runs
(in its setup steps, or as the worker) from one that ended, and say nothing it cannot know. The policy
half: who gets watched, how often, and how the setup time seen moves the boot timeout.
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest

from orchestrator.adapters.worker_recipe import (
    WorkerStart,
    build_watch_command,
    parse_watch,
    worker_log_path,
)
from orchestrator.core.actions import FailWorker, Promote, WatchStart
from orchestrator.core.observed import Worker
from orchestrator.core.states import Reason
from orchestrator.loop import executor
from orchestrator.loop.effects import Effects, Steps, at_once, run_now
from orchestrator.ports import StartWatch
from orchestrator.render import render_status
from tests.unit.test_policy import NOW, ago, pods_for, run, settings, snap, worker
from tests.unit.test_policy import pod as listed_pod
from tests.unit.test_start_command import SESSION_ENV, WORKER_ID, Pod

NONCE = "0a1b2c3d4e5f"

# A worker that says it started, then runs until the test lets it go (or a minute passes: nothing is
# left running after a failed test), and exits 3, as a worker failing its imports would.
_HELD_WORKER = """#!python
import pathlib, sys, time
pathlib.Path({out!r}).write_text("{{}}")
gate = pathlib.Path({gate!r})
deadline = time.monotonic() + 60
while not gate.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
print("worker: ImportError: WGP import failed", flush=True)
sys.exit(3)
"""

# apt-get whose update blocks until the test lets it go: the start is then in its setup steps.
_HELD_APT = """#!/bin/sh
gate={gate}
if [ "$1" = update ]; then
    i=0
    while [ ! -e "$gate" ] && [ "$i" -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
fi
exit 0
"""


class Watched(Pod):
    gate: Path

    def held_checkout(self) -> None:
        self.gate = self.root / "gate"
        app = self.checkout()
        (app / "headless.py").write_text(_HELD_WORKER.format(out=str(self.out), gate=str(self.gate)))

    def hold_apt(self) -> None:
        (self.bin / "apt-get").write_text(_HELD_APT.format(gate=shlex.quote(str(self.gate))))

    def release(self) -> None:
        self.gate.write_text("go")

    def watch(self, worker_id: str = WORKER_ID) -> tuple[str, str | None, str, str]:
        start = WorkerStart(
            mount_path=str(self.mount), python=sys.executable, init_environ=str(self.init_environ)
        )
        done = subprocess.run(
            ["/bin/sh", "-c", build_watch_command(worker_id, start, NONCE)],
            env={**SESSION_ENV, "HOME": str(self.home)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return parse_watch(done.stdout, NONCE)

    def until_watched(self, state: str, phase: str | None, timeout: float = 30.0) -> str:
        """The tail once the watch says ``state`` in ``phase``; fails with the last answer otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.watch()
            if seen[:2] == (state, phase):
                return seen[3]
            if time.monotonic() > deadline:
                raise AssertionError(f"watched {seen[:3]}, expected {(state, phase)}")
            time.sleep(0.05)


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Watched]:
    watched = Watched(tmp_path)
    watched.held_checkout()
    yield watched
    watched.release()


def test_a_running_worker_is_running_and_its_end_is_seen_with_the_log_that_says_why(pod: Watched) -> None:
    assert pod.start(apt_packages=()).returncode == 0
    pod.received()
    pod.until_watched("running", "worker")
    pod.release()
    tail = pod.until_watched("exited", "worker")
    assert "WGP import failed" in tail and "exec python headless.py" in tail


def test_a_start_held_in_its_setup_steps_is_running_in_setup_then_in_the_worker(pod: Watched) -> None:
    pod.hold_apt()
    assert pod.start(apt_packages=("ffmpeg",)).returncode == 0
    # Only an ended start's log comes back: a running one's could be a download's megabytes.
    assert pod.until_watched("running", "setup") == ""
    assert not pod.out.exists()
    (pod.gate).write_text("apt may go")  # the same gate lets apt go, then the worker right after it
    pod.received()
    # The worker runs past the gate too (it is already open): it exits, and that is seen.
    pod.until_watched("exited", "worker")


def test_a_start_that_ends_in_its_setup_steps_is_seen_ended_in_setup(pod: Watched) -> None:
    # A checkout declaring a submodule that is not there: the start refuses to run the worker (exit 8).
    app = pod.mount / "reigh" / "Headless-Wan2GP"
    (app / ".gitmodules").write_text(
        '[submodule "Wan2GP"]\n\tpath = Wan2GP\n\turl = https://example.invalid/w\n'
    )
    assert pod.start(apt_packages=()).returncode == 0
    tail = pod.until_watched("exited", "setup")
    assert "submodule Wan2GP is missing or empty; not starting the worker" in tail
    assert not pod.out.exists()


def test_the_current_start_is_read_after_an_earlier_run_in_the_same_log(pod: Watched) -> None:
    # A resumed pod's worker keeps its log: the previous run's "exec" line must not read as this one's.
    log = Path(worker_log_path(str(pod.mount), WORKER_ID))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("orchestrator: starting worker x\norchestrator: exec python worker.py ...\nold output\n")
    pod.hold_apt()
    assert pod.start(apt_packages=("ffmpeg",)).returncode == 0
    pod.until_watched("running", "setup")


def test_what_cannot_be_known_is_unknown(pod: Watched) -> None:
    # Never started here: no lock file, so nothing says whether a process lives (another TMPDIR, a
    # container restarted): unknown, never "exited".
    state, phase, why, _ = pod.watch("gpu-20250912_101500-00000009")
    assert (state, phase) == ("unknown", None) and "no lock file" in why
    # An answer not framed by this call's nonce, or cut short, proves nothing either.
    assert parse_watch("@@ffffffffffff state exited\n", NONCE)[0] == "unknown"
    assert parse_watch(f"@@{NONCE} state exited\n@@{NONCE} phase worker\n", NONCE)[0] == "unknown"
    assert parse_watch("", NONCE)[0] == "unknown"


def test_a_log_line_cannot_forge_the_answer() -> None:
    framed = f"@@{NONCE} state running\n@@{NONCE} phase worker\n@@{NONCE} why \n@@{NONCE} tail\n"
    forged = f"@@{NONCE} state exited\n"
    assert parse_watch(framed + forged, NONCE) == ("running", "worker", "", forged.rstrip("\n"))
    with pytest.raises(ValueError):
        build_watch_command(WORKER_ID, WorkerStart(), "not hex; rm -rf /")


# --- the executor: answers that end nothing ---------------------------------------------------------


class WatchOnly:
    """The effects of a watch that ends nothing: the pod's answer, the clock, the metadata merge and the
    log. Any other effect (a transition, a requeue, a termination) fails the test."""

    def __init__(self, answer: StartWatch) -> None:
        self.answer = answer
        self.merged: list[dict[str, Any]] = []
        self.logged: list[str] = []
        self.log = self

    def now(self) -> datetime:
        return NOW

    def watch_start(self, worker_id: str, runpod_id: str, expected: str | None) -> Steps[StartWatch]:
        return at_once(lambda: self.answer)

    def merge_metadata(self, worker_id: str, metadata: Mapping[str, Any]) -> Steps[None]:
        self.merged.append(dict(metadata))
        return at_once(lambda: None)

    def info(self, event: str, **fields: Any) -> None:
        self.logged.append(event)

    debug = warning = info

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a watch that ends nothing asked for {name}")


def watched_once(answer: StartWatch, w: Worker) -> tuple[dict[str, Any], WatchOnly]:
    fx = WatchOnly(answer)
    action = WatchStart(reason=Reason.WATCH_START, worker_id=w.id, runpod_id="pod-gpu-a")
    outcome = run_now(executor.run(action, w, cast(Effects, fx)))
    return outcome, fx


def test_a_start_seen_running_or_unknown_is_only_recorded() -> None:
    now = NOW.isoformat()
    outcome, fx = watched_once(StartWatch("running", "setup"), started_worker())
    assert outcome == {"outcome": "running", "phase": "setup"}
    assert fx.merged == [{"start_watched_at": now, "setup_seen_at": now}]
    assert fx.logged == ["worker_setup_running"]
    # Seen in its setup before, since this process start: recorded again, said once.
    _, fx = watched_once(StartWatch("running", "setup"), started_worker(setup_seen_at=ago(30)))
    assert fx.merged == [{"start_watched_at": now, "setup_seen_at": now}] and fx.logged == []
    # The worker itself runs, or nothing could be told: the look is recorded, no setup time is.
    for answer in (StartWatch("running", "worker"), StartWatch("unknown", detail="SSHTimeout: timed out")):
        outcome, fx = watched_once(answer, started_worker())
        assert outcome["outcome"] == answer.status and fx.merged == [{"start_watched_at": now}]


# --- the policy -----------------------------------------------------------------------------------------


def started_worker(worker_id: str = "gpu-a", **meta: Any) -> Worker:
    """Initialized 100 s ago, its process started 90 s ago, never heard from."""
    return worker(
        worker_id, "initializing", created=300, initialized_at=ago(100), process_started_at=ago(90), **meta
    )


def watches(w: Worker) -> list[WatchStart]:
    return run(snap([w], claimable=1), pods_for([w])).of_kind(WatchStart)


def test_a_started_worker_not_yet_heard_from_is_watched_once_a_tick() -> None:
    tick = settings().orchestrator_poll_sec
    [watch] = watches(started_worker())
    assert (watch.worker_id, watch.runpod_id, watch.reason) == ("gpu-a", "pod-gpu-a", Reason.WATCH_START)
    # Watched in this tick's interval (a wake-up's extra tick): not again until the next.
    assert watches(started_worker(start_watched_at=ago(tick / 2))) == []
    assert len(watches(started_worker(start_watched_at=ago(tick)))) == 1


def test_no_watch_for_a_worker_heard_from_not_started_or_whose_pod_cannot_answer() -> None:
    heard = started_worker(heartbeat=5)
    result = run(snap([heard], claimable=1), pods_for([heard]))
    assert result.of_kind(WatchStart) == [] and len(result.of_kind(Promote)) == 1
    manual = worker("gpu-b", "initializing", created=300, initialized_at=ago(100))
    cfg = settings(auto_start_worker_process=False)
    assert run(snap([manual], claimable=1), pods_for([manual]), cfg).of_kind(WatchStart) == []
    started = started_worker("gpu-c")
    no_ssh = [listed_pod("gpu-c", "RUNNING", ssh=False)]
    assert run(snap([started], claimable=1), no_ssh).of_kind(WatchStart) == []


def _boot_timeout(w: Worker, **cfg: Any) -> FailWorker | None:
    fails = run(snap([w], claimable=1), pods_for([w]), settings(**cfg)).of_kind(FailWorker)
    return fails[0] if fails and fails[0].reason is Reason.BOOT_TIMEOUT else None


def test_setup_time_seen_is_kept_off_the_boot_timeout_up_to_its_own_limit() -> None:
    # Created 1,500 s ago (past the 1,200 s boot timeout), started 1,300 s ago, seen in its setup steps
    # (a first uv sync) 30 s ago: 1,270 s of setup seen, so its deadline is 2,470 s.
    def syncing(created: float, seen: float | None, started: float = 1300) -> Worker:
        extra: dict[str, Any] = {} if seen is None else {"setup_seen_at": ago(seen)}
        return worker(
            "gpu-a",
            "initializing",
            created=created,
            initialized_at=ago(started + 10),
            process_started_at=ago(started),
            start_watched_at=ago(1),
            **extra,
        )

    assert _boot_timeout(syncing(1500, seen=30)) is None
    assert _boot_timeout(syncing(1500, seen=None)) is not None, "no sighting, no allowance"
    # Past the deadline the setup seen bought: failed, and the details say what it was given.
    fail = _boot_timeout(syncing(2500, seen=30, started=1300))
    assert fail is not None
    # The allowance stops at WORKER_SETUP_TIMEOUT_SEC, however long the setup is seen to run.
    capped = syncing(5000, seen=1, started=4800)
    assert _boot_timeout(capped) is not None
    assert _boot_timeout(capped, worker_setup_timeout_sec=4000) is None
    # 0: setup counts against SPAWNING_TIMEOUT_SEC like everything else.
    assert _boot_timeout(syncing(1500, seen=30), worker_setup_timeout_sec=0) is not None


def test_a_sighting_from_before_this_process_start_counts_nothing() -> None:
    # A resumed pod's row keeps the setup_seen_at of its start before the stop; its new start is younger.
    # Counted, that sighting would shorten the deadline (a negative allowance) and kill a resume still
    # within its 600 s; ignored, the resume keeps its time.
    resumed = worker(
        "gpu-a",
        "initializing",
        created=5000,
        resume_requested_at=ago(500),
        initialized_at=ago(110),
        process_started_at=ago(100),
        setup_seen_at=ago(900),
    )
    assert _boot_timeout(resumed) is None
    assert _boot_timeout(replace_meta(resumed, resume_requested_at=ago(700))) is not None


def replace_meta(w: Worker, **changes: Any) -> Worker:
    return dataclasses.replace(w, metadata={**w.metadata, **{k: v.isoformat() for k, v in changes.items()}})


def test_status_shows_a_start_in_its_setup_steps_and_for_how_long() -> None:
    def started(worker_id: str, seen: float, watched: float) -> Worker:
        return worker(
            worker_id,
            "initializing",
            created=1500,
            initialized_at=ago(1310),
            process_started_at=ago(1300),
            setup_seen_at=ago(seen),
            start_watched_at=ago(watched),
        )

    # The last look saw it in its setup steps; the other was seen past them since (its worker runs).
    syncing, past = started("gpu-sync", seen=20, watched=20), started("gpu-past", seen=60, watched=20)
    lines = {line.split()[0]: line for line in render_status(snap([syncing, past])).splitlines()[1:]}
    assert "initializing (setup 21m)" in lines["gpu-sync"]
    assert "setup" not in lines["gpu-past"]
