"""The worker's start command, run here with bash the way a pod's sshd runs it: a clean environment,
the credentials on stdin, the pod's own environment in an init-process ``environ`` file.

Each test lays out a fake checkout whose entry (``worker.py`` / ``headless.py``, or a fake ``uv``)
records the argv and environment it was started with, and a fake ``apt-get`` that keeps the rule of
Runpod's images (their package lists are empty: ``install`` fails until ``update`` has run). What the
fake entry records is what the real worker would have received. The steps and arguments kept from the
original orchestrator are those of banodoco/reigh-worker-orchestrator
(``structure_docs/runpod_integration.md`` and ``orchestrator/runpod_client.py`` of its first commit).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.provider import RunpodProvider
from orchestrator.adapters.worker_recipe import (
    CREDENTIAL_VARS,
    WorkerStart,
    build_start_command,
    credential_records,
    init_checks,
    worker_log_path,
)
from orchestrator.core import errors

WORKER_ID = "gpu-20250912_101500-1a2b3c4d"
# Values a shell would mangle if they were ever interpolated: quotes, $, backticks, backslashes,
# spaces, newlines, a glob, a leading dash.
HOSTILE = {
    "SUPABASE_URL": "https://proj.supabase.co/?q='x' \"y\" $HOME `id` \\n\\\nnext line *",
    "SUPABASE_ANON_KEY": "-anon 'single' \"double\" $(touch /tmp/pwned-start-test) ${PATH} \\ \t tab\nend ",
    "SUPABASE_SERVICE_ROLE_KEY": "svc\\\\'\"$USER`whoami`;rm -rf /nonexistent\r\n\n  two lines  ",
}
SEED_ARGS = [
    "--db-type",
    "supabase",
    "--supabase-url",
    HOSTILE["SUPABASE_URL"],
    "--supabase-anon-key",
    HOSTILE["SUPABASE_SERVICE_ROLE_KEY"],
    "--supabase-access-token",
    HOSTILE["SUPABASE_SERVICE_ROLE_KEY"],
    "--worker",
    WORKER_ID,
    "--poll-interval",
    str(WorkerStart.poll_interval),
]
# worker.py (either launch) is given the memory profile too; headless.py, older, never was.
WORKER_PY_ARGS = [*SEED_ARGS[:-2], "--wgp-profile", str(WorkerStart.wgp_profile), *SEED_ARGS[-2:]]
# sshd's clean session environment (no pod variables; sshd's default PATH, the user's names, SSH_*).
SESSION_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "USER": "root",
    "LOGNAME": "root",
    "SHELL": "/bin/bash",
    "SSH_CLIENT": "127.0.0.1 50000 22",
    "SSH_CONNECTION": "127.0.0.1 50000 127.0.0.1 22",
}
# A ~/.bashrc that sets stale values without Ubuntu's interactive guard: Debian's bash sources it for a
# non-interactive shell it believes sshd started (SSH_CLIENT set, top level), so a shell the start
# command spawns must not read it.
_STALE_BASHRC = "export SUPABASE_ANON_KEY=stale-from-bashrc SUPABASE_URL=stale-from-bashrc\n"

_RECORDER = """#!{python}
import json, os, sys, pathlib
out = pathlib.Path({out!r})
state = pathlib.Path({apt_state!r})
data = {{
    "argv0": sys.argv[0],
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "env": dict(os.environ),
    "apt": state.read_text().split() if state.exists() else [],
    "stdin_is_devnull": os.path.samefile("/dev/stdin", "/dev/null") if os.path.exists("/dev/stdin") else None,
}}
tmp = out.with_suffix(".tmp")
tmp.write_text(json.dumps(data))
tmp.replace(out)
"""

# Runpod's images ship with empty package lists: `apt-get install` fails ("Unable to locate package")
# until `apt-get update` has run (runpod/containers; see the emulator's sandbox for the same rule).
_FAKE_APT = """#!/bin/sh
state={state}
case "$1" in
    update) echo update >> "$state"; echo "Reading package lists... Done"; exit 0 ;;
    install)
        if ! grep -qx update "$state" 2>/dev/null; then echo "E: Unable to locate package" >&2; echo install-failed >> "$state"; exit 100; fi
        echo install >> "$state"; exit 0 ;;
esac
exit 1
"""


class Pod:
    """A directory standing in for one pod: volume, checkout, fake programs, PID 1's environ."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mount = root / "workspace"
        self.bin = root / "image-bin"
        self.out = root / "received.json"
        self.apt_state = root / "apt-state"
        self.init_environ = root / "init-environ"
        self.home = root / "home"
        self.tmp = root / "tmp"
        self.tmp.mkdir()
        self.bin.mkdir(parents=True)
        self.mount.mkdir()
        self.home.mkdir()
        (self.home / ".bashrc").write_text(_STALE_BASHRC)
        apt = self.bin / "apt-get"
        apt.write_text(_FAKE_APT.format(state=shlex.quote(str(self.apt_state))))
        apt.chmod(0o755)
        self.set_init_env({"PATH": f"{self.bin}:/usr/bin:/bin"})

    def checkout(
        self,
        relative: str = "reigh/Headless-Wan2GP",
        *,
        entries: tuple[str, ...] = ("headless.py",),
        venv: bool = True,
    ) -> Path:
        app = self.mount / relative
        app.mkdir(parents=True, exist_ok=True)
        if venv:
            (app / "venv" / "bin").mkdir(parents=True, exist_ok=True)
            (app / "venv" / "bin" / "activate").write_text("VIRTUAL_ENV=fake-venv; export VIRTUAL_ENV\n")
        for entry in entries:
            (app / entry).write_text(self.recorder())
        return app

    def recorder(self) -> str:
        return _RECORDER.format(python=sys.executable, out=str(self.out), apt_state=str(self.apt_state))

    def set_init_env(self, env: dict[str, str], extra: bytes = b"") -> None:
        """What the pod's PID 1 holds: the variables given at pod creation and the image's."""
        # Each pod its own /tmp (the per-worker lock lives there), as each real pod has its container disk.
        env = {"TMPDIR": str(self.tmp), **env}
        data = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()) + extra
        self.init_environ.write_bytes(data)

    def start(
        self, worker_id: str = WORKER_ID, stdin: bytes | None = None, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        kw.setdefault("mount_path", str(self.mount))
        kw.setdefault("python", sys.executable)
        kw.setdefault("init_environ", str(self.init_environ))
        command = build_start_command(worker_id, WorkerStart(**kw))
        records = credential_records({**HOSTILE, "WORKER_ID": worker_id}) if stdin is None else stdin
        started = time.monotonic()
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            input=records,
            env={**SESSION_ENV, "HOME": str(self.home)},
            capture_output=True,
            timeout=30,
            check=False,
        )
        self.elapsed = time.monotonic() - started
        self.command = command
        return subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
        )

    def received(self, timeout: float = 30.0) -> dict[str, Any]:
        self._until(self.out.exists, timeout, "the worker never started")
        return dict(json.loads(self.out.read_text()))

    def wait_logged(self, line: str, timeout: float = 30.0) -> str:
        """The worker's log once it holds ``line`` (the detached part of the start writes it)."""
        self._until(lambda: line in self._log_so_far(), timeout, f"{line!r} never logged")
        return self.log()

    def log(self, worker_id: str = WORKER_ID) -> str:
        return Path(worker_log_path(str(self.mount), worker_id)).read_text()

    def _log_so_far(self) -> str:
        path = Path(worker_log_path(str(self.mount), WORKER_ID))
        return path.read_text() if path.exists() else ""

    def _until(self, check: Callable[[], bool], timeout: float, failure: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{failure}; its log:\n{self._log_so_far() or '(none)'}")
            time.sleep(0.02)


@pytest.fixture
def pod(tmp_path: Path) -> Pod:
    return Pod(tmp_path)


def _secrets_in(text: str | bytes) -> list[str]:
    blob = text if isinstance(text, bytes) else text.encode()
    found = []
    for name in ("SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY"):
        value = HOSTILE[name]
        fragments = [value] + [part for part in value.split("\n") if len(part.strip()) >= 6]
        found += [f"{name}: {f!r}" for f in fragments if f.encode() in blob]
    return found


def test_credentials_reach_the_worker_byte_for_byte_and_nowhere_else(pod: Pod) -> None:
    pod.checkout()
    pod.set_init_env(
        {
            "PATH": f"{pod.bin}:/usr/bin:/bin",
            "RUNPOD_POD_ID": "abcdefghijklmn",
            "HF_HOME": "/workspace/hf cache/'quoted'",  # a WORKER_ENV entry given at pod creation
            # A stale key from pod creation: what came over stdin wins.
            "SUPABASE_SERVICE_ROLE_KEY": "stale-key-from-pod-creation",
            "HOME": "/not-the-session-home",
            "BASH_ENV": "/tmp/must-not-be-sourced",
        },
        extra=b"BASH_FUNC_evil%%=() {  touch /tmp/pwned-start-test\n}\0not a record\0",
    )
    done = pod.start()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("started pid ")
    assert pod.elapsed < 10, "the SSH call must not wait for the pull, the apt step or the worker"
    got = pod.received()
    assert Path(got["argv0"]).name == "headless.py"
    assert got["argv"] == SEED_ARGS
    env = got["env"]
    for name, value in HOSTILE.items():
        assert env[name] == value, name
    assert env["WORKER_ID"] == WORKER_ID
    # The pod's own environment came from PID 1, without overriding stdin or the session's bookkeeping.
    assert env["RUNPOD_POD_ID"] == "abcdefghijklmn" and env["HF_HOME"] == "/workspace/hf cache/'quoted'"
    assert env["HOME"] == str(pod.home) and "BASH_ENV" not in env
    assert "SSH_CLIENT" not in env and "SSH_CONNECTION" not in env  # the session ends; the worker stays
    assert not any(k.startswith("BASH_FUNC") for k in env)
    assert env["PATH"].split(":")[0] == str(pod.bin), "the image's PATH first, the session's after"
    assert env["VIRTUAL_ENV"] == "fake-venv"
    assert got["stdin_is_devnull"] is True
    assert not Path("/tmp/pwned-start-test").exists()
    # Nowhere else: not in the command, not in what the session printed, not on the volume.
    assert _secrets_in(pod.command) == []
    assert _secrets_in(done.stdout + done.stderr) == []
    for path in pod.mount.rglob("*"):
        if path.is_file():
            assert _secrets_in(path.read_bytes()) == [], path
    log = pod.log()
    assert "git sync failed" in log  # not a git checkout: tolerated, the checked-out code starts


def test_apt_update_runs_before_install_and_both_finish_before_the_worker(pod: Pod) -> None:
    pod.checkout()
    done = pod.start()
    assert done.returncode == 0, done.stderr
    got = pod.received()
    # On a fresh Runpod image only update-then-install works; both ended before the worker started.
    assert got["apt"] == ["update", "install"]
    log = pod.log()
    assert log.index("apt-get update: ok") < log.index("apt-get install: ok") < log.index("exec python")
    # The original's packages, and the headers today's original adds for uv's builds.
    assert "apt-get install -y python3.10-venv python3.10-dev ffmpeg" in log


def test_a_failing_apt_step_is_tolerated(pod: Pod) -> None:
    pod.checkout()
    (pod.bin / "apt-get").write_text("#!/bin/sh\necho 'E: could not reach the mirror' >&2\nexit 100\n")
    done = pod.start(apt_packages=("ffmpeg",))
    assert done.returncode == 0, done.stderr
    assert pod.received()["argv"] == SEED_ARGS
    assert "apt-get update failed" in pod.log()


def test_no_apt_step_when_no_packages_are_configured(pod: Pod) -> None:
    pod.checkout()
    assert pod.start(apt_packages=()).returncode == 0
    assert pod.received()["apt"] == []


def test_worker_py_is_started_when_the_checkout_has_it_else_headless_py(pod: Pod) -> None:
    pod.checkout(entries=("headless.py", "worker.py"))
    assert pod.start(apt_packages=()).returncode == 0
    got = pod.received()
    assert Path(got["argv0"]).name == "worker.py" and got["argv"] == WORKER_PY_ARGS


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_pull_brings_the_rename_to_worker_py_before_the_entry_is_chosen(pod: Pod, tmp_path: Path) -> None:
    """Upstream renamed headless.py to worker.py (2025-08); the original's `git pull origin main`
    brings the rename to an old checkout, and the start then runs worker.py."""
    origin = tmp_path / "origin.git"
    origin.mkdir()
    _git(origin, "init", "-q", "--bare", "-b", "main")
    app = pod.checkout(entries=("headless.py",))
    (app / ".gitignore").write_text("venv/\n")
    _git(app, "init", "-q", "-b", "main")
    _git(app, "add", "-A")
    _git(app, "commit", "-q", "-m", "headless.py")
    _git(app, "remote", "add", "origin", str(origin))
    _git(app, "push", "-q", "origin", "main")
    upstream = tmp_path / "upstream"
    _git(tmp_path, "clone", "-q", str(origin), str(upstream))
    _git(upstream, "mv", "headless.py", "worker.py")
    _git(upstream, "commit", "-q", "-m", "rename headless.py to worker.py")
    _git(upstream, "push", "-q", "origin", "main")
    assert not (app / "worker.py").exists()

    assert pod.start(apt_packages=()).returncode == 0
    got = pod.received()
    assert Path(got["argv0"]).name == "worker.py" and got["argv"] == WORKER_PY_ARGS
    assert "git pull origin main" in pod.log() and "git sync: ok" in pod.log()


# uv as the worker's launch calls it: `--version`, `sync` and `lock` are written down (with their exit
# code from UV_FAKE_EXIT_<verb>, and the drift message uv prints for a stale lock), `run` records as the
# worker does.
_FAKE_UV = """#!{python}
import os, pathlib, sys, time
calls = pathlib.Path({calls!r})
verb = sys.argv[1] if len(sys.argv) > 1 else ""
if verb in ("--version", "sync", "lock"):
    with calls.open("a") as f:
        f.write(" ".join(sys.argv[1:]) + "\\n")
    # A sync that hangs (a stalled index, a wedged build), for UV_FAKE_HANG_<verb> seconds.
    time.sleep(float(os.environ.get("UV_FAKE_HANG_" + verb.strip("-"), "0")))
    if verb == "--version":
        print("uv 0.9.5")
    code = int(os.environ.get("UV_FAKE_EXIT_" + verb.strip("-"), "0"))
    if code and verb == "sync" and os.environ.get("UV_FAKE_DRIFT") and "--locked" in sys.argv:
        print("error: The lockfile at `uv.lock` needs to be updated, but `--locked` was provided.")
    elif code and verb == "sync":
        print("error: Failed to build `insightface==0.7.3`")
    if verb == "sync" and "--locked" not in sys.argv:
        code = 0
    sys.exit(code)
exec(compile(pathlib.Path({recorder!r}).read_text(), "worker", "exec"))
"""


def _fake_uv(pod: Pod, where: Path) -> Path:
    recorder = pod.root / "recorder.py"
    recorder.write_text(pod.recorder())
    where.mkdir(parents=True, exist_ok=True)
    uv = where / "uv"
    uv.write_text(
        _FAKE_UV.format(python=sys.executable, calls=str(pod.root / "uv-calls"), recorder=str(recorder))
    )
    uv.chmod(0o755)
    return uv


def _uv_calls(pod: Pod) -> list[str]:
    path = pod.root / "uv-calls"
    return path.read_text().splitlines() if path.exists() else []


UV_RUN = ["run", "--python", "3.10", "--extra", "cuda124", "python", "worker.py"]


def test_the_uv_launch_of_the_newer_worker(pod: Pod) -> None:
    app = pod.checkout("Reigh-Worker", entries=("worker.py",), venv=False)
    _fake_uv(pod, pod.bin)
    done = pod.start(
        launch="uv", wgp_profile=2, poll_interval=3, dirs=("Reigh-Worker", "Headless-Wan2GP"), apt_packages=()
    )
    assert done.returncode == 0, done.stderr
    got = pod.received()
    assert Path(got["argv0"]).name == "uv" and got["cwd"] == str(app)
    assert got["argv"] == [
        *UV_RUN,
        "--supabase-url", HOSTILE["SUPABASE_URL"],
        "--supabase-access-token", HOSTILE["SUPABASE_SERVICE_ROLE_KEY"],
        "--worker", WORKER_ID,
        "--wgp-profile", "2",
        "--poll-interval", "3",
    ]  # fmt: skip
    assert got["env"]["SUPABASE_SERVICE_ROLE_KEY"] == HOSTILE["SUPABASE_SERVICE_ROLE_KEY"]
    assert got["env"]["SUPABASE_ANON_KEY"] == HOSTILE["SUPABASE_ANON_KEY"]
    # The environment is synced from the lock before the worker runs, with uv's cache on the volume.
    assert _uv_calls(pod) == ["--version", "sync --locked --python 3.10 --extra cuda124"]
    assert got["env"]["UV_CACHE_DIR"] == f"{pod.mount}/.uv-cache" and got["env"]["UV_LINK_MODE"] == "copy"


def test_auto_launch_runs_uv_for_a_checkout_with_uv_lock_and_the_venv_otherwise(pod: Pod) -> None:
    app = pod.checkout("Reigh-Worker", entries=("worker.py",), venv=False)
    (app / "uv.lock").write_text("version = 1\n")
    _fake_uv(pod, pod.bin)
    assert pod.start(apt_packages=()).returncode == 0  # the defaults: auto, Reigh-Worker first
    got = pod.received()
    assert Path(got["argv0"]).name == "uv" and got["argv"][: len(UV_RUN)] == UV_RUN

    pod.out.unlink()
    (app / "uv.lock").unlink()
    (app / "venv" / "bin").mkdir(parents=True)
    (app / "venv" / "bin" / "activate").write_text("VIRTUAL_ENV=fake-venv; export VIRTUAL_ENV\n")
    assert pod.start(worker_id="gpu-20250912_101500-00000002", apt_packages=()).returncode == 0
    got = pod.received()
    assert Path(got["argv0"]).name == "worker.py" and got["env"]["VIRTUAL_ENV"] == "fake-venv"


def test_a_pod_without_uv_gets_it_from_the_installer_before_the_worker_starts(pod: Pod) -> None:
    pod.checkout("Reigh-Worker", entries=("worker.py",), venv=False)
    # astral's installer puts uv in ~/.local/bin; this one, served from a file URL, does the same.
    source = _fake_uv(pod, pod.root / "dist")
    installer = pod.root / "install.sh"
    installer.write_text(
        f'mkdir -p "$HOME/.local/bin" && cp {shlex.quote(str(source))} "$HOME/.local/bin/uv"\n'
    )
    done = pod.start(launch="uv", uv_install_url=installer.as_uri(), apt_packages=())
    assert done.returncode == 0, done.stderr
    got = pod.received()
    assert got["argv0"] == str(pod.home / ".local" / "bin" / "uv") and got["argv"][: len(UV_RUN)] == UV_RUN
    assert "installing uv from " + installer.as_uri() in pod.log()


def test_uv_launch_without_uv_fails_clearly(pod: Pod) -> None:
    pod.checkout("Reigh-Worker", entries=("worker.py",), venv=False)
    done = pod.start(launch="uv", dirs=("Reigh-Worker",), apt_packages=(), uv_install_url="")
    assert done.returncode == 7 and "uv is not on the pod's PATH" in done.stderr


def test_a_failed_uv_sync_starts_no_worker_and_a_stale_lock_is_relocked(pod: Pod) -> None:
    pod.checkout("Reigh-Worker", entries=("worker.py",), venv=False)
    _fake_uv(pod, pod.bin)
    env = {"PATH": f"{pod.bin}:/usr/bin:/bin", "UV_FAKE_EXIT_sync": "1"}
    pod.set_init_env(env)
    assert pod.start(launch="uv", apt_packages=()).returncode == 0
    log = pod.wait_logged("not starting the worker")
    assert "uv sync failed (exit 1)" in log and "Failed to build" in log
    assert not pod.out.exists() and not any(c.startswith("lock") for c in _uv_calls(pod))

    # Upstream's uv.lock lagging its pyproject.toml: relocked in the pod, then synced, then the worker.
    pod.set_init_env({**env, "UV_FAKE_DRIFT": "1"})
    (pod.root / "uv-calls").unlink()
    assert pod.start(launch="uv", apt_packages=()).returncode == 0
    assert Path(pod.received()["argv0"]).name == "uv"
    assert _uv_calls(pod) == [
        "--version",
        "sync --locked --python 3.10 --extra cuda124",
        "lock --python 3.10",
        "sync --python 3.10 --extra cuda124",
    ]


def test_a_uv_sync_that_hangs_ends_the_start_after_its_timeout(pod: Pod) -> None:
    pod.checkout("Reigh-Worker", entries=("worker.py",), venv=False)
    _fake_uv(pod, pod.bin)
    pod.set_init_env({"PATH": f"{pod.bin}:/usr/bin:/bin", "UV_FAKE_HANG_sync": "60"})
    assert pod.start(launch="uv", apt_packages=(), uv_sync_timeout=1).returncode == 0
    log = pod.wait_logged("not starting the worker")
    assert "uv sync took over 1 s" in log
    assert not pod.out.exists()


def _git_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    _git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "init")
    return path


def _volume_with_a_submodule(pod: Pod, tmp_path: Path, path: str) -> Path:
    """A Reigh-Worker clone on the volume (with a venv) whose upstream declares the submodule ``path``,
    and the pod's environment allowing local file submodules (git's protocol.file.allow, given the way
    a pod's environment gives it: in PID 1's variables). Returns the checkout."""
    wan = _git_repo(tmp_path / "Wan2GP-upstream", {"wgp.py": "# the model code\n"})
    upstream = _git_repo(tmp_path / "worker-upstream", {"worker.py": pod.recorder(), ".gitignore": "venv/\n"})
    _git(upstream, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(wan), path)
    _git(upstream, "commit", "-q", "-m", f"{path} as a submodule")
    app = pod.mount / "Reigh-Worker"
    _git(pod.mount, "clone", "-q", str(upstream), str(app))
    (app / "venv" / "bin").mkdir(parents=True)
    (app / "venv" / "bin" / "activate").write_text(":\n")
    git_env = {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "protocol.file.allow",
        "GIT_CONFIG_VALUE_0": "always",
    }
    pod.set_init_env({"PATH": f"{pod.bin}:/usr/bin:/bin", **git_env})
    return app


def test_the_submodule_is_fetched_and_stale_vendored_content_set_aside(pod: Pod, tmp_path: Path) -> None:
    """Reigh-Worker made Wan2GP a git submodule (2026-04). A checkout that only pulls has an empty
    Wan2GP/ and the worker fails at import; a volume that still holds the vendored Wan2GP/ (no .git)
    makes `git submodule update` refuse to clone into it."""
    app = _volume_with_a_submodule(pod, tmp_path, "Wan2GP")
    # The content vendored before the move, still on the volume.
    (app / "Wan2GP" / "ckpts").mkdir(parents=True)
    (app / "Wan2GP" / "ckpts" / "weights.bin").write_text("large")
    assert pod.start(dirs=("Reigh-Worker",), apt_packages=()).returncode == 0

    assert Path(pod.received()["argv0"]).name == "worker.py"
    assert (app / "Wan2GP" / "wgp.py").read_text() == "# the model code\n"
    [aside] = [p for p in app.iterdir() if p.name.startswith("Wan2GP.pre-submodule-")]
    assert (aside / "ckpts" / "weights.bin").read_text() == "large"  # set aside, not deleted
    log = pod.log()
    assert log.index("git submodule update: ok") < log.index("exec python worker.py")


def test_the_uv_launch_resets_a_diverged_checkout_to_the_branch(pod: Pod, tmp_path: Path) -> None:
    """A volume's checkout with a commit of its own cannot fast-forward: `git pull` stops (git 2.27+
    asks how to reconcile divergent branches) and the old code runs against a changed app for ever.
    Today's original fetches and resets to origin/<branch>; so does the uv launch."""
    upstream = _git_repo(
        tmp_path / "worker-upstream", {"worker.py": pod.recorder(), "uv.lock": "version = 1\n"}
    )
    app = pod.mount / "Reigh-Worker"
    _git(pod.mount, "clone", "-q", str(upstream), str(app))
    (app / "local.txt").write_text("a hand edit on the volume\n")
    _git(app, "add", "-A")
    _git(app, "commit", "-q", "-m", "local")
    (upstream / "new.txt").write_text("upstream moved on\n")
    _git(upstream, "add", "-A")
    _git(upstream, "commit", "-q", "-m", "upstream")
    _fake_uv(pod, pod.bin)
    assert pod.start(dirs=("Reigh-Worker",), apt_packages=()).returncode == 0
    assert Path(pod.received()["argv0"]).name == "uv"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=app, capture_output=True, text=True, check=True)
    want = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=upstream, capture_output=True, text=True, check=True
    )
    assert head.stdout == want.stdout and (app / "new.txt").exists()
    assert "git sync: ok" in pod.log()


def test_a_new_branch_is_checked_out_over_a_relocked_uv_lock(pod: Pod, tmp_path: Path) -> None:
    """An in-pod relock rewrote uv.lock on main; WORKER_GIT_BRANCH then names another branch. A plain
    `git checkout` refuses over the local change, and the old branch's code ran on every start."""
    upstream = _git_repo(
        tmp_path / "worker-upstream", {"worker.py": pod.recorder(), "uv.lock": "version = 1\n"}
    )
    _git(upstream, "checkout", "-q", "-b", "dev")
    (upstream / "dev.txt").write_text("the dev branch\n")
    (upstream / "uv.lock").write_text("version = 2\n")
    _git(upstream, "add", "-A")
    _git(upstream, "commit", "-q", "-m", "dev")
    _git(upstream, "checkout", "-q", "main")
    app = pod.mount / "Reigh-Worker"
    _git(pod.mount, "clone", "-q", str(upstream), str(app))
    (app / "uv.lock").write_text("relocked in a pod\n")
    _fake_uv(pod, pod.bin)
    assert pod.start(dirs=("Reigh-Worker",), apt_packages=(), git_branch="dev").returncode == 0
    assert Path(pod.received()["argv0"]).name == "uv"
    assert (app / "dev.txt").exists() and (app / "uv.lock").read_text() == "version = 2\n"
    assert "git sync: ok" in pod.log()


def test_a_submodule_path_with_a_space_is_fetched_and_checked(pod: Pod, tmp_path: Path) -> None:
    app = _volume_with_a_submodule(pod, tmp_path, "Wan GP")
    assert pod.start(dirs=("Reigh-Worker",), apt_packages=()).returncode == 0
    assert Path(pod.received()["argv0"]).name == "worker.py"
    assert (app / "Wan GP" / "wgp.py").exists()
    # The empty directory a fresh clone leaves for a submodule is not "vendored content" set aside.
    assert not [p for p in app.iterdir() if ".pre-submodule-" in p.name]


def test_a_submodule_that_cannot_be_fetched_starts_no_worker(pod: Pod, tmp_path: Path) -> None:
    wan = _git_repo(tmp_path / "Wan2GP-upstream", {"wgp.py": "# the model code\n"})
    upstream = _git_repo(
        tmp_path / "worker-upstream", {"worker.py": "# worker\n", "uv.lock": "version = 1\n"}
    )
    _git(upstream, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(wan), "Wan2GP")
    _git(upstream, "commit", "-q", "-m", "Wan2GP as a submodule")
    app = pod.mount / "Reigh-Worker"
    _git(pod.mount, "clone", "-q", str(upstream), str(app))
    shutil.rmtree(wan)  # the submodule's host is unreachable
    _fake_uv(pod, pod.bin)
    done = pod.start(dirs=("Reigh-Worker",), apt_packages=())
    assert done.returncode == 0, done.stderr
    log = pod.wait_logged("submodule Wan2GP is missing or empty; not starting the worker")
    assert "git submodule update failed" in log
    assert not pod.out.exists() and _uv_calls(pod) == []


def test_the_checkout_is_the_first_configured_directory_that_exists(pod: Pod) -> None:
    later = pod.checkout("Headless-Wan2GP")
    done = pod.start(dirs=("Reigh-Worker", "Headless-Wan2GP"), apt_packages=())
    assert done.returncode == 0, done.stderr
    assert pod.received()["cwd"] == str(later)

    none = pod.start(dirs=("Reigh-Worker", "/elsewhere/Headless-Wan2GP"), apt_packages=())
    assert none.returncode == 4
    assert f"{pod.mount}/Reigh-Worker, /elsewhere/Headless-Wan2GP" in none.stderr


def test_the_initialization_check_follows_the_configured_directory(pod: Pod) -> None:
    pod.checkout("Headless-Wan2GP")
    check = {c.name: c for c in init_checks(str(pod.mount), ("Reigh-Worker", "Headless-Wan2GP"))}[
        "headless_dir"
    ]
    ok = subprocess.run(
        ["bash", "-c", check.command], capture_output=True, text=True, timeout=10, check=False
    )
    assert ok.returncode == 0 and "venv" in ok.stdout and "headless.py" in ok.stdout
    check = {c.name: c for c in init_checks(str(pod.mount), ("Reigh-Worker",))}["headless_dir"]
    bad = subprocess.run(
        ["bash", "-c", check.command], capture_output=True, text=True, timeout=10, check=False
    )
    assert bad.returncode != 0 and "Reigh-Worker" in bad.stdout and "No such file or directory" in bad.stdout


def test_missing_credentials_fail_at_once_naming_them_not_their_values(pod: Pod) -> None:
    pod.checkout()
    done = pod.start(
        stdin=credential_records({"SUPABASE_ANON_KEY": HOSTILE["SUPABASE_ANON_KEY"], "WORKER_ID": WORKER_ID})
    )
    assert done.returncode == 2
    assert "not received: SUPABASE_URL SUPABASE_SERVICE_ROLE_KEY" in done.stderr
    assert _secrets_in(done.stderr) == [] and not pod.out.exists()
    # The pod's own environment (given at creation) completes what stdin lacks.
    pod.set_init_env(
        {
            "PATH": "/usr/bin:/bin",
            "SUPABASE_URL": "https://from-pod-env",
            "SUPABASE_SERVICE_ROLE_KEY": "k" * 20,
        }
    )
    assert pod.start(stdin=credential_records({"WORKER_ID": WORKER_ID}), apt_packages=()).returncode == 0
    assert pod.received()["argv"][3] == "https://from-pod-env"


def test_only_allow_listed_names_are_taken_from_stdin(pod: Pod) -> None:
    pod.checkout()
    raw = (
        credential_records({**HOSTILE, "WORKER_ID": WORKER_ID})
        + b"LD_PRELOAD=/tmp/evil.so\0PATH=/tmp/evil\0BASH_ENV=/tmp/evil\0NOEQUALS\0A B=c\0"
    )
    done = pod.start(stdin=raw, apt_packages=())
    assert done.returncode == 0, done.stderr
    env = pod.received()["env"]
    assert "LD_PRELOAD" not in env and "/tmp/evil" not in env["PATH"] and "BASH_ENV" not in env
    assert "LD_PRELOAD is not accepted on stdin" in done.stderr and "malformed record" in done.stderr
    with pytest.raises(errors.RunpodRequestError, match="not one of"):
        credential_records({"LD_PRELOAD": "x"})
    with pytest.raises(errors.RunpodRequestError, match="NUL"):
        credential_records({"SUPABASE_URL": "a\0b"})
    assert set(CREDENTIAL_VARS) == {
        "SUPABASE_URL",
        "SUPABASE_ANON_KEY",
        "SUPABASE_SERVICE_ROLE_KEY",
        "WORKER_ID",
    }


def test_a_record_for_another_worker_is_refused(pod: Pod) -> None:
    pod.checkout()
    done = pod.start(stdin=credential_records({**HOSTILE, "WORKER_ID": "gpu-someone-else"}))
    assert done.returncode == 2 and "WORKER_ID does not name this worker" in done.stderr


def test_the_command_is_a_fixed_bash_c_with_the_original_steps(pod: Pod) -> None:
    command = build_start_command(WORKER_ID, WorkerStart(mount_path="/mnt/my volume", git_branch="release/x"))
    argv = shlex.split(command)
    assert argv[:4] == ["bash", "--norc", "--noprofile", "-c"] and len(argv) == 5
    script = argv[4]
    assert "'/mnt/my volume/reigh/Headless-Wan2GP'" in script
    assert "read -r -d ''" in script and "/proc/1/environ" in script
    assert "timeout 30 git pull origin release/x" in script and "flock -w 450" in script
    assert (
        "timeout 30 git fetch origin release/x" in script
        and "checkout -q -f -B release/x origin/release/x" in script
    )
    assert "git submodule update --init --recursive" in script
    assert (
        "apt-get update" in script and "apt-get install -y -q python3.10-venv python3.10-dev ffmpeg" in script
    )
    assert "setsid" in script and "nohup" in script and "< /dev/null" in script
    assert "/mnt/my volume/reigh/logs/gpu-20250912_101500-1a2b3c4d.log" in script
    # The same worker, the same command: nothing in it varies with the credentials.
    assert command == build_start_command(
        WORKER_ID, WorkerStart(mount_path="/mnt/my volume", git_branch="release/x")
    )


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"dirs": ("../etc",)}, "WORKER_DIRS"),
        ({"dirs": ()}, "WORKER_DIRS"),
        ({"launch": "docker"}, "WORKER_LAUNCH"),
        ({"git_branch": "-x"}, "WORKER_GIT_BRANCH"),
        ({"git_branch": "a;b"}, "WORKER_GIT_BRANCH"),
        ({"apt_packages": ("ffmpeg", "x y")}, "WORKER_APT_PACKAGES"),
        ({"wgp_profile": 0}, "WORKER_WGP_PROFILE"),
        ({"poll_interval": 0}, "WORKER_POLL_INTERVAL_SEC"),
        ({"poll_interval": 2.5}, "WORKER_POLL_INTERVAL_SEC"),
        ({"mount_path": "workspace"}, "RUNPOD_VOLUME_MOUNT_PATH"),
    ],
)
def test_bad_start_settings_are_refused_with_the_settings_name(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(errors.ConfigError, match=needle):
        WorkerStart(**changes)


def test_the_log_file_is_private_and_holds_no_value(pod: Pod) -> None:
    pod.checkout()
    assert pod.start().returncode == 0
    pod.received()
    log = Path(worker_log_path(str(pod.mount), WORKER_ID))
    assert oct(log.stat().st_mode & 0o777) == oct(0o600)
    text = log.read_text()
    assert "--supabase-access-token ..." in text and _secrets_in(text) == []


def test_the_uv_installer_is_the_configured_one_and_none_installs_nothing(pod: Pod) -> None:
    pinned = RunpodProvider(env={"WORKER_UV_INSTALL_URL": "https://astral.sh/uv/0.9.26/install.sh"})
    assert pinned.worker_start.uv_install_url == "https://astral.sh/uv/0.9.26/install.sh"
    assert "https://astral.sh/uv/0.9.26/install.sh" in build_start_command(WORKER_ID, pinned.worker_start)
    off = RunpodProvider(env={"WORKER_UV_INSTALL_URL": "none"})
    assert off.worker_start.uv_install_url == ""
    # On a pod without uv, no installer means no worker, said at once (exit 7), nothing fetched.
    pod.checkout("Reigh-Worker", entries=("worker.py",), venv=False)
    done = pod.start(
        launch="uv", dirs=("Reigh-Worker",), apt_packages=(), uv_install_url=off.worker_start.uv_install_url
    )
    assert done.returncode == 7 and "cannot be installed" in done.stderr


def _rev(repo: Path, rev: str = "HEAD") -> str:
    done = subprocess.run(["git", "rev-parse", rev], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _pinned_volume(pod: Pod, tmp_path: Path) -> tuple[Path, Path, str]:
    """A Reigh-Worker clone on the volume; upstream then moves main on past the commit to pin."""
    upstream = _git_repo(
        tmp_path / "worker-upstream", {"worker.py": pod.recorder(), "uv.lock": "version = 1\n"}
    )
    pinned = _rev(upstream)
    app = pod.mount / "Reigh-Worker"
    _git(pod.mount, "clone", "-q", str(upstream), str(app))
    (upstream / "new.txt").write_text("upstream moved on\n")
    _git(upstream, "add", "-A")
    _git(upstream, "commit", "-q", "-m", "upstream")
    _fake_uv(pod, pod.bin)
    return upstream, app, pinned


def test_a_pinned_commit_is_started_whatever_the_branch_became(pod: Pod, tmp_path: Path) -> None:
    upstream, app, pinned = _pinned_volume(pod, tmp_path)
    # The volume's checkout follows main first (as it did before the pin was set)...
    assert pod.start(dirs=("Reigh-Worker",), apt_packages=()).returncode == 0
    pod.received()
    assert _rev(app) == _rev(upstream)
    # ...then WORKER_GIT_COMMIT (in capitals) brings it back to the commit chosen.
    pod.out.unlink()
    other = "gpu-20250912_101500-00000003"
    assert (
        pod.start(
            worker_id=other, dirs=("Reigh-Worker",), apt_packages=(), git_commit=pinned.upper()
        ).returncode
        == 0
    )
    assert Path(pod.received()["argv0"]).name == "uv"
    assert _rev(app) == pinned and not (app / "new.txt").exists()
    assert f"git checkout -f -B main {pinned} (WORKER_GIT_COMMIT)" in pod.log(other)


def test_a_pinned_commit_that_cannot_be_found_starts_no_worker(pod: Pod, tmp_path: Path) -> None:
    _pinned_volume(pod, tmp_path)
    missing = "0123456789abcdef0123456789abcdef01234567"
    app = pod.mount / "Reigh-Worker"
    (app / ".gitmodules").write_text(
        '[submodule "Wan2GP"]\n\tpath = Wan2GP\n\turl = https://example.invalid/w\n'
    )
    assert pod.start(dirs=("Reigh-Worker",), apt_packages=(), git_commit=missing).returncode == 0
    log = pod.wait_logged("not starting the worker")
    assert f"git fetch origin {missing}" in log and f"the checkout could not be put at {missing}" in log
    assert f"the checkout is not at WORKER_GIT_COMMIT {missing}" in log
    # A commit the start will not run gets no submodule update.
    assert "git submodule update" not in log
    assert not pod.out.exists()


def test_a_worker_that_no_longer_polls_the_queue_is_refused_with_the_way_out(pod: Pod) -> None:
    """banodoco/reigh-worker pull request 33 (2026-09): its entrypoint starts an Astrid GenericPackHost,
    takes none of the Supabase arguments and polls no queue."""
    app = pod.checkout("Reigh-Worker", entries=("worker.py",), venv=False)
    _fake_uv(pod, pod.bin)
    server = app / "source" / "runtime" / "worker" / "server.py"
    server.parent.mkdir(parents=True)
    server.write_text("def main(argv=None):\n    return supervisor.launch_generic_pack_host()\n")
    assert pod.start(launch="uv", apt_packages=()).returncode == 0
    log = pod.wait_logged("not starting the worker")
    assert (
        "starts an Astrid GenericPackHost, which does not poll the Supabase queue; set WORKER_GIT_COMMIT"
        in log
    )
    assert not pod.out.exists()
    # A server that still parses the Supabase arguments is the polling worker, whatever else it says.
    server.write_text('parser.add_argument("--supabase-url")\n# see GenericPackHost for the new host\n')
    assert pod.start(worker_id="gpu-20250912_101500-00000004", launch="uv", apt_packages=()).returncode == 0
    assert Path(pod.received()["argv0"]).name == "uv"


def test_a_pin_that_is_not_a_commit_hash_is_refused() -> None:
    with pytest.raises(errors.ConfigError, match="WORKER_GIT_COMMIT"):
        WorkerStart(git_commit="main; rm -rf /")


def test_a_pinned_commit_off_the_branch_is_fetched_by_its_hash(pod: Pod, tmp_path: Path) -> None:
    upstream, app, _ = _pinned_volume(pod, tmp_path)
    # A commit on no branch the volume fetches (a fix on a side branch, say); servers that allow it
    # (GitHub does) hand out a reachable commit by its full hash.
    _git(upstream, "checkout", "-q", "-b", "side")
    (upstream / "side.txt").write_text("a fix on a side branch\n")
    _git(upstream, "add", "-A")
    _git(upstream, "commit", "-q", "-m", "side")
    side = _rev(upstream)
    _git(upstream, "checkout", "-q", "main")
    _git(upstream, "config", "uploadpack.allowReachableSHA1InWant", "true")
    assert pod.start(dirs=("Reigh-Worker",), apt_packages=(), git_commit=side).returncode == 0
    pod.received()
    assert _rev(app) == side and (app / "side.txt").exists()
    assert f"git fetch origin {side}" in pod.log()


def test_a_pin_applies_to_a_checkout_left_without_the_entry_and_a_stale_index_lock_is_cleared(
    pod: Pod, tmp_path: Path
) -> None:
    """A volume an earlier start moved to an upstream head that no longer has worker.py (or uv.lock):
    the pin must still take, so the start's own checks of those files wait until after the move. And
    a git killed mid-checkout (a pod terminated during its start) left .git/index.lock behind."""
    upstream, app, pinned = _pinned_volume(pod, tmp_path)
    _git(upstream, "rm", "-q", "worker.py", "uv.lock")
    _git(upstream, "commit", "-q", "-m", "the new layout")
    _git(app, "pull", "-q", "origin", "main")
    assert not (app / "worker.py").exists() and not (app / "uv.lock").exists()
    lock = app / ".git" / "index.lock"
    lock.write_text("")
    old = time.time() - 600
    os.utime(lock, (old, old))
    assert pod.start(dirs=("Reigh-Worker",), apt_packages=(), git_commit=pinned).returncode == 0
    got = pod.received()
    # Back at the pin, with its uv.lock: the uv launch, chosen after the move.
    assert Path(got["argv0"]).name == "uv" and _rev(app) == pinned
    log = pod.log()
    assert "removing a stale .git/index.lock" in log and "launch after the sync: uv" in log


def test_a_pinned_commit_without_the_entry_starts_nothing_before_apt_and_uv(pod: Pod, tmp_path: Path) -> None:
    upstream, _app, _ = _pinned_volume(pod, tmp_path)
    _git(upstream, "rm", "-q", "worker.py")
    _git(upstream, "commit", "-q", "-m", "no entry here")
    assert pod.start(dirs=("Reigh-Worker",), git_commit=_rev(upstream)).returncode == 0
    log = pod.wait_logged("not starting the worker")
    assert "no worker.py in " in log
    assert "apt-get update" not in log and "uv sync" not in log and not pod.out.exists()
