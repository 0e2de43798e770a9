"""The simulated worker's checkout on an emulated network volume.

Where this sits: the Runpod emulator calls :func:`lay_out_volume` for each network volume it creates
(through ``orchestrator.standins.sandbox.lay_out_volume``), so a pod mounting the volume finds what the
orchestrator's start command looks for: a git checkout with an ``origin`` (so ``git pull origin main``
answers "Already up to date"), ``venv/bin/activate``, and the entry point. Upstream's checkout today
(banodoco/Reigh-Worker @4d09184, and peteromallet/Headless-Wan2GP @50066ea it continues) has
``worker.py`` and no ``headless.py`` (renamed in Headless-Wan2GP 01cee19, 2025-08-08), so the default
layout has ``worker.py`` only; ``entries=("headless.py",)`` lays out the older checkout the original
orchestrator's start command (banodoco/reigh-worker-orchestrator) was written for. The directory defaults to ``reigh/Headless-Wan2GP``, where the start
command looks first by default; the launcher of banodoco/reigh-worker-orchestrator
(``gpu_orchestrator/runpod/worker_startup.template.sh``) uses ``/workspace/Reigh-Worker`` (else
``Headless-Wan2GP``), which ``worker_dir="Reigh-Worker"`` lays out.

Each entry file is a small stub that runs ``orchestrator.standins.worker`` with the orchestrator project's
own interpreter, whatever ``python`` ran it; the ``venv`` puts that interpreter first on ``PATH``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

DEFAULT_WORKER_DIR = "reigh/Headless-Wan2GP"
DEFAULT_ENTRIES: tuple[str, ...] = ("worker.py",)
WORKER_MODULE = "orchestrator.standins.worker"


def _entry_stub(name: str) -> str:
    checkout = str(Path(__file__).resolve().parents[3])
    return f'''#!/usr/bin/env python3
"""Simulated Reigh worker ({name}), laid out by the Runpod emulator (orchestrator.standins.worker).

Runs the simulated worker with the orchestrator project's own interpreter, whatever `python` ran this.
"""
import os
import sys

PROJECT_PYTHON = {sys.executable!r}
PROJECT_CHECKOUT = {checkout!r}

env = dict(os.environ)
env["PYTHONPATH"] = os.pathsep.join(p for p in (PROJECT_CHECKOUT, env.get("PYTHONPATH", "")) if p)
env["SIM_WORKER_ENTRY"] = {name!r}
os.execve(PROJECT_PYTHON, [PROJECT_PYTHON, "-m", {WORKER_MODULE!r}, *sys.argv[1:]], env)
'''


def _activate() -> str:
    bindir = os.path.dirname(sys.executable)
    return f"""# Simulated venv of the Reigh worker (orchestrator.standins.worker): source it from bash.
# It puts the orchestrator project's interpreter first on PATH, so `python worker.py` works.
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


def _make_repo(app: Path) -> None:
    """A real git checkout with a local bare origin beside it (relative, so it resolves in a pod too)."""
    origin = app.parent / f".{app.name}-origin.git"
    try:
        if not origin.exists():
            origin.mkdir(parents=True)
            _git(origin, "init", "-q", "--bare", "-b", "main")
        _git(app, "init", "-q", "-b", "main")
        _git(app, "add", "-A")
        _git(app, "commit", "-q", "-m", "simulated Reigh worker")
        _git(app, "remote", "add", "origin", f"../{origin.name}")
        _git(app, "push", "-q", "-u", "origin", "main")
    except (OSError, subprocess.SubprocessError) as exc:
        # No git, or it failed: an empty .git still makes `git pull` fail fast and harmlessly.
        log.warning("sim_volume_git_failed", error=str(exc))
        (app / ".git").mkdir(exist_ok=True)


def lay_out_volume(
    volume_dir: Path,
    *,
    worker_dir: str = DEFAULT_WORKER_DIR,
    entries: Sequence[str] = DEFAULT_ENTRIES,
) -> Path:
    """Write the simulated worker's checkout under ``volume_dir`` (idempotent); return its path.

    ``worker_dir`` is relative to the volume's root (the pod's mount path); ``entries`` are the entry
    files to write (``worker.py`` today, ``headless.py`` for the older layout, or both).
    """
    if not entries:
        raise ValueError("lay_out_volume: at least one entry file is needed")
    for name in entries:
        if "/" in name or not name.endswith(".py"):
            raise ValueError(f"lay_out_volume: {name!r} is not a file name ending in .py")
    parts = Path(worker_dir).parts
    if Path(worker_dir).is_absolute() or ".." in parts or not parts:
        raise ValueError(f"lay_out_volume: {worker_dir!r} must be a relative path inside the volume")
    app = Path(volume_dir) / worker_dir
    (app / "venv" / "bin").mkdir(parents=True, exist_ok=True)
    files: dict[Path, tuple[str, int]] = {
        app / "venv" / "bin" / "activate": (_activate(), 0o644),
        app / "requirements.txt": (
            "# Simulated Reigh worker: no dependencies beyond the orchestrator.\n",
            0o644,
        ),
        app / ".gitignore": ("venv/\n*.log\noutputs/\nlogs/\n", 0o644),
    }
    for name in entries:
        files[app / name] = (_entry_stub(name), 0o755)
    for path, (text, mode) in files.items():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.chmod(mode)
        tmp.replace(path)
    py = app / "venv" / "bin" / "python"
    if not py.is_symlink():
        py.symlink_to(sys.executable)
    if not (app / ".git").exists():
        _make_repo(app)
    log.info("sim_volume_laid_out", volume_dir=str(volume_dir), worker_dir=worker_dir, entries=list(entries))
    return app
