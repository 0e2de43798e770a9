"""End-to-end: the uv launch of today's worker layout, on emulated pods, under the start watch.

The volume holds a Reigh-Worker checkout with ``uv.lock`` (the layout banodoco/Reigh-Worker has had since
2026-04) beside the older ``reigh/Headless-Wan2GP``; ``WORKER_DIRS``' default order finds it first and
``WORKER_LAUNCH=auto`` picks uv for it. The pods have no uv (as Runpod's pytorch images), so the start
installs it with ``WORKER_UV_INSTALL_URL``, here a ``file://`` installer on the volume that copies a
stand-in ``uv`` into ``~/.local/bin``: ``--version`` answers, ``sync`` waits until the test lets it
go (a first sync on a fresh volume takes many minutes), ``run ... python worker.py ARGS`` runs the
checkout's entry with ARGS, as uv runs a command in the project's environment. What it was called
with is written down for the test. While the sync waits, the daemon's start watch must see the start
in its setup steps; then the worker serves the queue.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.standins.stack import Stack
from orchestrator.standins.worker.volume import _git, lay_out_volume
from tests.e2e.conftest import all_done, drained, wait_until, workers

pytestmark = pytest.mark.e2e

MOUNT = "/workspace"  # the pods' mount path of the volume (RUNPOD_VOLUME_MOUNT_PATH's default)

_FAKE_UV = """#!{python}
import json, os, pathlib, sys, time
here = pathlib.Path({here!r})
args = sys.argv[1:]
with (here / "calls").open("a") as f:
    f.write(json.dumps(args) + "\\n")
verb = args[0] if args else ""
if verb == "--version":
    print("uv 0.9.26 (stand-in)")
    sys.exit(0)
if verb == "sync":
    deadline = time.monotonic() + 120
    while not (here / "gate").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    print("Resolved 1 package")
    sys.exit(0 if (here / "gate").exists() else 1)
if verb == "run":
    command = args[args.index("python") + 1 :]
    os.execv(sys.executable, [sys.executable, *command])
sys.exit(2)
"""

_INSTALLER = """mkdir -p "$HOME/.local/bin" && cp {uv} "$HOME/.local/bin/uv" && chmod 755 "$HOME/.local/bin/uv"
"""


def lay_out_uv_volume(volume: Path) -> Path:
    """Reigh-Worker with uv.lock (committed and pushed, so the launch's reset keeps it), and the
    stand-in uv with its installer under .uvtest/, all on the volume: a pod sees the volume at MOUNT."""
    app = lay_out_volume(volume, worker_dir="Reigh-Worker")
    (app / "uv.lock").write_text("version = 1\n")
    _git(app, "add", "uv.lock")
    _git(app, "commit", "-q", "-m", "uv.lock")
    _git(app, "push", "-q", "origin", "main")
    here = volume / ".uvtest"
    here.mkdir()
    (here / "uv").write_text(_FAKE_UV.format(python=sys.executable, here=f"{MOUNT}/.uvtest"))
    (here / "uv").chmod(0o755)
    (here / "install.sh").write_text(_INSTALLER.format(uv=f"{MOUNT}/.uvtest/uv"))
    return here


def test_the_uv_layout_installs_uv_syncs_under_the_watch_and_serves(stack: Stack, in_process: Any) -> None:
    assert stack.emulator is not None
    tests = [lay_out_uv_volume(Path(v.path)) for v in stack.emulator.state.volumes.values()]
    stack.enqueue(2, duration_sec=0.5)
    in_process(MAX_ACTIVE_GPUS=1, WORKER_UV_INSTALL_URL=f"file://{MOUNT}/.uvtest/install.sh")

    # The sync is held: the watch sees the start in its setup steps and records it.
    syncing = wait_until(
        lambda: [w for w in workers(stack) if w["metadata"].get("setup_seen_at")],
        60,
        "the start watch to see a start in its setup steps",
    )
    assert syncing[0]["status"] == "initializing"
    for here in tests:
        (here / "gate").write_text("go")

    wait_until(lambda: all_done(stack, 2), 90, "every task done once the sync ended", interval=0.25)
    wait_until(lambda: drained(stack), 60, "scale to zero", interval=0.25)
    calls = [
        json.loads(line)
        for here in tests
        if (here / "calls").exists()
        for line in (here / "calls").read_text().splitlines()
    ]
    assert ["sync", "--locked", "--python", "3.10", "--extra", "cuda124"] in calls
    [run] = [c for c in calls if c[0] == "run"][:1]
    worker_id = syncing[0]["id"]
    assert run[:7] == ["run", "--python", "3.10", "--extra", "cuda124", "python", "worker.py"]
    assert run[run.index("--worker") + 1] == worker_id and run[run.index("--wgp-profile") + 1] == "1"
    assert run[run.index("--supabase-url") + 1] == stack.supabase_url
    log = next(
        (Path(v.path) / "reigh" / "logs" / f"{worker_id}.log")
        for v in stack.emulator.state.volumes.values()
        if (Path(v.path) / "reigh" / "logs" / f"{worker_id}.log").exists()
    ).read_text()
    assert f"installing uv from file://{MOUNT}/.uvtest/install.sh" in log and "(launch: uv)" in log
    # Nothing failed on the way: no boot timeout, no ended start.
    assert all(not w["metadata"].get("error_reason") for w in workers(stack)), workers(stack)
