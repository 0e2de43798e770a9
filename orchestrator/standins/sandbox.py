"""Real pods for the Runpod emulator: a container-like process tree per pod, with a real OpenSSH sshd.

Where this sits: ``orchestrator.standins`` emulates Runpod for tests, the demo and offline rehearsal. The
emulator's state model (REST v2 / GraphQL) owns the lifecycle; when a pod reaches the point where a
real pod would start its container, the emulator creates a :class:`PodSandbox`, calls :meth:`start`
and polls :meth:`ready` before it publishes the pod's ``22/tcp`` port. Terminating the pod calls
:meth:`stop`. The emulator may put a delaying relay in front of the port (``rtt_ms``); the sandbox
only needs to know the public port, for ``RUNPOD_TCP_PORT_22``.

This module is the pod's process model (start, readiness, stop, the worker faults, the lifeline) and the
overview; the rest sits beside it: ``sandbox_image`` (the image's environment, start script, dotfiles
and fake ``nvidia-smi``), ``sandbox_sshd`` (sshd's configuration, host key, port), ``sandbox_apt`` (the
apt stand-in), ``sandbox_container`` (the container disk, mounts and init stage) and ``sandbox_host``
(privileges, /proc, file helpers), all under ``orchestrator.standins``.

A sandbox imitates Runpod's official image ``runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04``
with real programs rather than mocks. Sources: the image's Dockerfile and start script
(github.com/runpod/containers, ``official-templates/pytorch/Dockerfile``, ``container-template/start.sh``),
the CUDA base image's environment (gitlab.com/nvidia/container-images/cuda, ``ENV PATH
/usr/local/nvidia/bin:/usr/local/cuda/bin:${PATH}``), Ubuntu's ``/etc/skel/.bashrc`` and Debian's
OpenSSH packaging (``AcceptEnv LANG LC_*``, ``--with-superuser-path``).

- **PID 1 is the image's start script** (``/bin/bash /etc/sim-pod/start.sh``, our own script doing
  what ``/start.sh`` does), run in its own PID, mount and UTS namespaces with the pod's environment: the
  image's variables (``PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:...``, ``CUDA_VERSION``...),
  ``HOME``/``HOSTNAME`` as Docker sets them, every variable given at creation (``env``), then
  ``RUNPOD_POD_ID``, ``RUNPOD_PUBLIC_IP``, ``RUNPOD_TCP_PORT_22``, ``RUNPOD_GPU_COUNT``. Those live
  only in PID 1 and its children; root reads them at ``/proc/1/environ`` (the pod's own /proc).
- The script, like the image's: when ``PUBLIC_KEY`` is set (non-empty), appends it to
  ``/root/.ssh/authorized_keys``, ``chmod -R 700 ~/.ssh`` and starts sshd (a daemon, so a child of
  PID 1); without ``PUBLIC_KEY`` no sshd runs and the port refuses connections. Then it appends
  ``export NAME="VALUE"`` for every ``RUNPOD_*``, ``PATH`` and ``_`` variable to
  ``/etc/rp_environment`` (unescaped, cut at a second ``=``, as the original's ``awk -F =`` does),
  appends ``source /etc/rp_environment`` to ``~/.bashrc``, and sleeps forever. sshd starts before
  ``/etc/rp_environment`` is written, as in the original. Runpod images built since 2025-08 write
  every variable but ``PUBLIC_KEY`` to that file (runpod/containers, ``container-template/start.sh``,
  commits 9855af4 and fdbcc90); the sandbox keeps the original image's narrower file. A command run
  over SSH reads neither (the guard below), so for the start command neither is kinder.
- **SSH sessions get a clean environment**: sshd's own (``USER``, ``HOME``, ``PATH`` =
  ``/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin``, ``SSH_*``...), ``AcceptEnv LANG
  LC_*`` only, no ``PermitUserEnvironment``. ``/root/.bashrc`` starts with Ubuntu's guard
  (``case $- in *i*) ;; *) return;; esac``), so ``ssh pod 'echo $SUPABASE_URL'`` prints an empty line
  and only interactive shells (``bash -i``, a login with a terminal) see ``RUNPOD_*`` and PID 1's
  ``PATH``.
- **apt's lists are empty** (the image's Dockerfile ends with ``rm -rf /var/lib/apt/lists/*``): a
  stand-in ``apt-get``/``apt`` answers ``install`` with apt's "E: Unable to locate package X" (exit
  100) until ``apt-get update`` has run in this pod (about 0.7 s); then it "installs" the packages it
  knows (``ffmpeg``, ``python3.10-venv``, ...) by adding them to the pod's dpkg status, so ``dpkg -s``
  sees them, and stub binaries (``/usr/bin/ffmpeg``, ``ffprobe``). Without ``-y`` (or ``-qq``) it
  aborts at apt's "Do you want to continue? [Y/n]" when stdin gives no answer; a second apt at the same
  time fails on the lock. ``ffmpeg`` is absent at start (hidden if the host has one), ``python3`` and
  ``python`` are present (the host's; where the host has none, links to the project's interpreter).
- **The container disk**: ``/etc`` and ``/usr/bin`` are overlays whose upper layers, ``/root``,
  ``/tmp``, ``/var/lib/apt/lists`` and ``/var/lib/dpkg/status`` live in the pod's own directory.
  :meth:`PodSandbox.stop_and_wipe` (the emulator's stop and terminate) deletes it, and a fresh start
  (create, or resume after a stop) begins on a new one, so apt's work, ``~/.bashrc``'s lines and the
  SSH host key are new: the start script generates the host key when it is missing, as the image's
  does (``container-template/start.sh``, ``setup_ssh``: ``ssh-keygen`` for each key type whose file is
  absent), so a resumed pod presents a different host key. ``keep_container_disk=True`` (a container
  runtime's restart; the emulator never asks for it, Runpod's docs saying the disk is lost on a
  restart too) keeps the disk, its host key, and the start script appends its lines once more. The volume at
  ``mount_path`` survives all of these.
- The fake ``nvidia-smi`` sees no device in a pod started without a GPU (``RUNPOD_GPU_COUNT=0``).
- ``mount_path`` (default ``/workspace``) is a bind mount of the network volume's directory, so pods on
  one volume share files, as real network volumes do.
- a fake ``/usr/bin/nvidia-smi`` (one GPU of the pod's type); no ``SetEnv``/``BASH_ENV``: every
  sandbox-only program sits at a standard path that a clean session finds.

Known differences from a real pod (each kinder or merely different; the harsher case is modelled
wherever it was known):

- The network is the host's (no network namespace: the worker must reach the database on the host),
  and the root filesystem is the host's (Debian or Ubuntu) outside the paths above: the host's
  programs (``git``, ``python3``...), ``/usr/local``, ``/opt`` and other directories are visible.
  Files bind-mounted over the host's ``/etc`` (as Docker does for ``/etc/hosts``) are not seen.
- The host paths of the project's interpreter and checkout are re-exposed inside the private
  ``/root`` and ``/tmp`` so the simulated worker can run (its volume checkout's ``venv/bin/activate``
  puts that interpreter first on ``PATH``).
- sshd: ``UsePAM no`` (the image's sshd uses PAM, which adds ``/etc/environment``'s ``PATH`` to
  sessions), ``PasswordAuthentication no`` (the image has no root password anyway), only an ed25519 host
  key (the image generates RSA, DSA, ECDSA and ed25519 keys), sshd listens on a loopback port rather
  than 22; the ``ssh.runpod.io`` proxy is not emulated.
- PID 1 is our script, not the image's: it has no nginx, Jupyter, ``/pre_start.sh`` or
  ``/post_start.sh``, and it exits on ``SIGUSR1`` (the lifeline watchdog's signal), where the image's
  bash ignores signals as a PID 1 without handlers does. The image's many ``NV_*`` variables are not set.
- apt knows a short list of packages, installs stubs that do nothing (``ffmpeg -version`` answers,
  nothing transcodes), and takes a fixed ~0.7 s to update and ~0.2 s per package, far quicker than a
  real ``apt-get update`` and ``install ffmpeg`` (tens of seconds to minutes). dpkg's database is a
  copy of the host's (minus ``ffmpeg``), so what the host has installed counts as installed.
- ``ssh_refuse=True`` starts the pod without sshd even when ``PUBLIC_KEY`` is set.
- Nor is a sandbox a security boundary: in root mode the pod's root is the host's root.

Privileges: as root the namespaces are created directly, and the pod's root is uid 0. As an ordinary
user they are created inside a user namespace (``unshare -Ur``) where the mounts are made (overlayfs
there needs Linux 5.11+); PID 1 then enters a nested user namespace as a non-zero uid, which the pod's
``/etc/passwd``, ``/etc/group`` and ``/etc/shadow`` name ``root`` (no password). sshd needs that: its
privilege separation wants real uids an unprivileged user namespace cannot map, and as a non-zero uid
it skips it. Sessions then run as the same uid in the same namespace as PID 1, so they may read
``/proc/1/environ`` (the kernel lets a process read another's only from the same user namespace with
no fewer capabilities), and sshd gives them the superuser's ``PATH`` (``SetEnv PATH``, the one value a
uid-0 root would get anyway). Host paths the user may not read (another user's home) are simply not
re-exposed. :func:`detect_mode` says which mode applies, or raises :class:`SandboxError` saying why
neither works.

Processes: the namespace's init (``unshare --fork --kill-child``) first runs a small ``/bin/sh`` stage
(``init.sh`` in the pod's directory) that does what the container runtime does (mounts, hostname),
starts the lifeline watchdog, then execs the start script with exactly the pod's environment. :meth:`PodSandbox.stop` SIGKILLs it,
lets ``unshare`` reap it, then sweeps ``/proc`` for anything left in the pod's PID namespace. An
``atexit`` hook stops every pod still running, and each pod's watchdog holds the read end of a pipe
whose write end only this process has: if this process dies without running ``atexit`` (SIGKILL), the
pipe reads EOF and the watchdog ends its pod.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import structlog

from orchestrator.core.errors import SandboxError
from orchestrator.standins.sandbox_apt import APT_CATALOG, APT_INSTALL_S_PER_PACKAGE, APT_UPDATE_S
from orchestrator.standins.sandbox_container import lay_out, namespace_command, wipe_container_disk
from orchestrator.standins.sandbox_host import (
    APT_LISTS,
    DPKG_STATUS,
    SSHD,
    STD_PATH,
    UNSHARE,
    Mode,
    children,
    detect_mode,
    is_zombie,
    pid_ns,
    ppid,
    proc_pids,
)
from orchestrator.standins.sandbox_host import cmdline as _cmdline  # the name tests import
from orchestrator.standins.sandbox_image import (
    ABSENT_PACKAGES,
    ABSENT_PROGRAMS,
    GPU_STATE_FILE,
    IMAGE_ENV,
    IMAGE_PATH,
    START_SCRIPT,
)
from orchestrator.standins.sandbox_sshd import (
    HOST_KEY,
    PORT_RANGE,
    SSH_KEYGEN,
    SSHD_CONFIG,
    SSHD_LOG,
    USERNS_SSHD_UID,
    allocate_port,
    release_port,
)

# The image, sshd and apt constants were defined here before the split; they stay importable from here.
__all__ = [
    "ABSENT_PACKAGES",
    "ABSENT_PROGRAMS",
    "APT_CATALOG",
    "APT_INSTALL_S_PER_PACKAGE",
    "APT_LISTS",
    "APT_UPDATE_S",
    "DPKG_STATUS",
    "GPU_STATE_FILE",
    "HOST_KEY",
    "IMAGE_ENV",
    "IMAGE_PATH",
    "PORT_RANGE",
    "SSHD",
    "SSHD_CONFIG",
    "SSHD_LOG",
    "SSH_KEYGEN",
    "START_SCRIPT",
    "STD_PATH",
    "UNSHARE",
    "USERNS_SSHD_UID",
    "WORKER_MARKER",
    "Mode",
    "PodSandbox",
    "detect_mode",
    "lay_out_volume",
    "stop_all",
]

log = structlog.get_logger(__name__)

#: What the simulated worker's processes carry on their command line.
WORKER_MARKER = "orchestrator.standins.worker"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --- every live sandbox, for atexit and for the watchdog pipe ----------------------------------------

_live_lock = threading.Lock()
_live: dict[int, PodSandbox] = {}
# One pipe shared by every pod: the read end is inherited by each pod's watchdog, the write end stays
# in this process only. When this process dies for any reason (even SIGKILL, when atexit cannot run),
# the watchdogs read EOF and end their pods.
_lifeline: tuple[int, int] | None = None


def _lifeline_fd() -> int:
    global _lifeline
    with _live_lock:
        if _lifeline is None:
            r, w = os.pipe()
            os.set_inheritable(r, False)
            os.set_inheritable(w, False)
            _lifeline = (r, w)
        return _lifeline[0]


def stop_all() -> None:
    """Stop every sandbox this process started (atexit hook; also handy for tests)."""
    with _live_lock:
        boxes = list(_live.values())
    for box in boxes:
        with contextlib.suppress(Exception):
            box.stop()


atexit.register(stop_all)


# --- the sandbox -----------------------------------------------------------------------------------

_RESERVED_MOUNT_PATHS = (
    "",
    "/tmp",
    "/root",
    "/proc",
    "/etc",
    "/usr",
    "/usr/bin",
    "/bin",
    "/var",
    "/dev",
    "/sys",
)


class PodSandbox:
    """One emulated pod: a start script as PID 1 of its own namespaces, with sshd. See the module docstring."""

    def __init__(
        self,
        pod_id: str,
        *,
        env: dict[str, str],
        volume_dir: Path | None,
        mount_path: str,
        gpu_name: str,
        vram_mb: int,
        state_dir: Path,
        ssh_refuse: bool = False,
        public_port: int | None = None,
        keep_container_disk: bool = False,
    ) -> None:
        if not mount_path.startswith("/") or mount_path.rstrip("/") in _RESERVED_MOUNT_PATHS:
            raise SandboxError(
                f"mount path must be absolute and none of {', '.join(p or '/' for p in _RESERVED_MOUNT_PATHS)}: "
                f"{mount_path!r}"
            )
        self.pod_id = pod_id
        self.env = dict(env)
        self.volume_dir = Path(volume_dir).resolve() if volume_dir is not None else None
        self.mount_path = mount_path.rstrip("/")
        self.gpu_name = gpu_name
        self.vram_mb = int(vram_mb)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", pod_id) or "pod"
        self.dir = Path(state_dir).resolve() / safe
        self.hostname = re.sub(r"[^A-Za-z0-9-]", "-", pod_id)[:63] or "pod"
        self.ssh_refuse = ssh_refuse
        self.public_port = public_port
        self.keep_container_disk = keep_container_disk
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._init_pid: int | None = None
        self._ns: str | None = None
        # Held open while the pod lives, so that the kernel cannot hand its namespace's inode number
        # to a new pod's namespace while stop() still sweeps by that number.
        self._ns_fd: int | None = None
        self._ready_seen = False
        self._stopped = False
        self._lock = threading.Lock()
        self._log_file: IO[bytes] | None = None

    # -- what the pod is ----------------------------------------------------------------------------

    @property
    def serves_ssh(self) -> bool:
        """Whether the start script starts sshd: ``PUBLIC_KEY`` non-empty (as the image checks), no refusal."""
        return bool(self.env.get("PUBLIC_KEY")) and not self.ssh_refuse

    @property
    def gpu_count(self) -> int:
        """GPUs the pod has (``RUNPOD_GPU_COUNT``, 1 when unset): 0 for a pod started without one."""
        raw = self.env.get("RUNPOD_GPU_COUNT", "1").strip()
        return int(raw) if raw.isdigit() else 1

    @property
    def container_dir(self) -> Path:
        """The pod's container disk on the host: overlay upper layers, /root, /tmp, apt's state."""
        return self.dir / "container"

    @property
    def host_key_pub(self) -> Path:
        """The pod's SSH host public key on the host (for pinning it in tests)."""
        return self.container_dir / "etc" / "ssh" / "ssh_host_ed25519_key.pub"

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> int:
        """Lay out the pod's files and start its namespaces and PID 1; returns sshd's port without waiting."""
        # A restarted pod's previous container must be gone first, as a container runtime's would: its
        # mounts use the same container disk.
        with _live_lock:
            previous = [b for b in _live.values() if b is not self and b.dir == self.dir]
        for box in previous:
            box.stop()
        with self._lock:
            if self._proc is not None:
                return self.port
            if self._stopped:
                raise SandboxError(f"pod {self.pod_id}: stopped before it was started")
            mode = detect_mode()
            self.port = allocate_port()
            try:
                lay_out(self, mode)
                cmd = namespace_command(self, mode)
                self._log_file = open(self.dir / "pod.log", "ab")  # noqa: SIM115 - lives as long as the pod
                lifeline = _lifeline_fd()
                self._proc = subprocess.Popen(
                    cmd,
                    # The init's stdin is the lifeline (dash cannot redirect fds above 9).
                    stdin=lifeline,
                    stdout=self._log_file,
                    stderr=subprocess.STDOUT,
                    # Exactly PID 1's environment: the init stage passes it on untouched.
                    env=self.init_env(),
                    cwd="/",
                    # Own session: a terminal's ^C does not reach pods; stop() ends them deliberately.
                    start_new_session=True,
                )
            except SandboxError:
                release_port(self.port)
                raise
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                release_port(self.port)
                raise SandboxError(f"pod {self.pod_id}: cannot start its sandbox: {exc}") from exc
            with _live_lock:
                _live[id(self)] = self
            self._locate_init(wait=True)
            log.info(
                "sandbox_started",
                pod_id=self.pod_id,
                port=self.port,
                public_port=self.public_port,
                mode=mode,
                mount_path=self.mount_path,
                volume_dir=str(self.volume_dir) if self.volume_dir else None,
                serves_ssh=self.serves_ssh,
                ssh_refuse=self.ssh_refuse,
            )
            return self.port

    @property
    def alive(self) -> bool:
        """True while the pod's PID 1 (its start script) runs."""
        return self._proc is not None and not self._stopped and self._proc.poll() is None

    def ready(self) -> bool:
        """True once sshd answers on its port with its banner (one short TCP probe per call).

        Always False for a pod without sshd (no ``PUBLIC_KEY``, or ``ssh_refuse``): use :attr:`alive`.
        """
        if not self.alive or not self.serves_ssh:
            return False
        if self._ready_seen:
            return True
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.settimeout(1.0)
                banner = s.recv(64)
        except OSError:
            return False
        self._ready_seen = banner.startswith(b"SSH-")
        return self._ready_seen

    def stop(self) -> None:
        """End every process in the pod (sshd, sessions, nohup'd workers); idempotent. The container
        disk stays (a container restart, ``keep_container_disk=True``, starts on it again)."""
        self._stop(wipe=False)

    def stop_and_wipe(self) -> None:
        """Stop the pod, then delete its container disk (everything but the volume: apt's work, the SSH
        host key, ``/root``, ``/tmp``), as stopping or terminating a real pod does. Only the call that
        stops the pod wipes: a pod already stopped by a new start of the same pod is left to that start."""
        self._stop(wipe=True)

    def _stop(self, *, wipe: bool) -> None:
        with self._lock:
            proc = self._proc
            if proc is None or self._stopped:
                self._stopped = True
                return
            self._stopped = True
            self._locate_init(wait=proc.poll() is None)
            # Killing the namespace's init makes the kernel SIGKILL every other process in it.
            if self._init_pid is not None and pid_ns(self._init_pid) == self._ns:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self._init_pid, signal.SIGKILL)
            # unshare exits by itself once it has reaped its child; killing it first would leave that
            # child a zombie of whatever reaps orphans on this host.
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    log.warning("sandbox_unshare_not_exiting", pod_id=self.pod_id, pid=proc.pid)
            leftovers = self._sweep_namespace(deadline=time.monotonic() + 10)
            if self._ns_fd is not None:
                os.close(self._ns_fd)
                self._ns_fd = None
            if self._log_file is not None:
                self._log_file.close()
            if wipe:
                # Before leaving the live set: a new start of this pod waits for us there.
                try:
                    wipe_container_disk(self)
                except OSError as exc:
                    log.warning("sandbox_wipe_failed", pod_id=self.pod_id, error=repr(exc))
            release_port(self.port)
            with _live_lock:
                _live.pop(id(self), None)
            log.info("sandbox_stopped", pod_id=self.pod_id, port=self.port, leftovers=leftovers, wiped=wipe)

    # -- faults -----------------------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        """Host pids of the simulated worker's processes in this pod."""
        return [p for p in self.pids() if WORKER_MARKER in _cmdline(p) and not is_zombie(p)]

    def pids(self) -> list[int]:
        """Host pids of every process in the pod's PID namespace."""
        if not self.alive:
            return []
        self._locate_init(wait=True)
        if self._ns is None:
            return []
        return [p for p in proc_pids() if pid_ns(p) == self._ns]

    def crash_worker(self) -> bool:
        """SIGKILL the simulated worker's main process (an abrupt death: OOM, a segfault); its heartbeat
        guardian, a separate process, lives on to report ``crashed`` as the real one does
        (Reigh-Worker ``heartbeat_guardian.py``). False when none runs."""
        return self._signal_worker(signal.SIGKILL, "sandbox_worker_crashed", main_only=True)

    def hang_worker(self) -> bool:
        """SIGSTOP every process of the simulated worker, guardian included (a frozen machine or a
        dead network: no heartbeats, no progress, nobody left to say so); False when none runs."""
        return self._signal_worker(signal.SIGSTOP, "sandbox_worker_hung")

    def resume_worker(self) -> bool:
        """SIGCONT a hung worker; False when none runs."""
        return self._signal_worker(signal.SIGCONT, "sandbox_worker_resumed")

    def _signal_worker(self, sig: signal.Signals, event: str, *, main_only: bool = False) -> bool:
        hit = []
        pids = self.worker_pids()
        if main_only:
            # The guardian is a fork of the worker, so it carries the same command line: the main
            # process is the one whose parent is not a worker process.
            pids = [p for p in pids if ppid(p) not in pids]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                hit.append(pid)
        if hit:
            log.info(event, pod_id=self.pod_id, pids=hit)
        return bool(hit)

    # -- internals --------------------------------------------------------------------------------

    def _locate_init(self, *, wait: bool) -> None:
        """Find the namespace's init (unshare's forked child) and remember its PID namespace."""
        if self._ns is not None or self._proc is None:
            return
        deadline = time.monotonic() + (2.0 if wait else 0.0)
        while True:
            for child in children(self._proc.pid):
                ns = pid_ns(child)
                if ns is not None and ns != pid_ns(self._proc.pid):
                    try:
                        fd = os.open(f"/proc/{child}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
                    except OSError:
                        return  # it died meanwhile: nothing of it to find or to sweep
                    if os.readlink(f"/proc/self/fd/{fd}") != ns:
                        os.close(fd)
                        return
                    self._init_pid, self._ns, self._ns_fd = child, ns, fd
                    return
            if time.monotonic() >= deadline or self._proc.poll() is not None:
                return
            time.sleep(0.01)

    def _sweep_namespace(self, *, deadline: float) -> int:
        """SIGKILL anything still in the pod's PID namespace until none is left or the deadline passes."""
        if self._ns is None:
            return 0
        left: list[int] = []
        while True:
            left = [p for p in proc_pids() if pid_ns(p) == self._ns and not is_zombie(p)]
            if not left or time.monotonic() >= deadline:
                return len(left)
            for p in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.02)

    def init_env(self) -> dict[str, str]:
        """PID 1's environment: the image's, Docker's, the pod's ``env``, then Runpod's own variables."""
        env = dict(IMAGE_ENV)
        env["HOSTNAME"] = self.hostname
        for key, value in self.env.items():
            if not _ENV_NAME.match(key):
                log.warning("sandbox_env_skipped", pod_id=self.pod_id, name=key)
                continue
            env[key] = str(value)
        env.setdefault("RUNPOD_POD_ID", self.pod_id)
        env.setdefault("RUNPOD_PUBLIC_IP", "127.0.0.1")
        env.setdefault("RUNPOD_GPU_COUNT", "1")
        env["RUNPOD_TCP_PORT_22"] = str(self.public_port or self.port)
        return env

    def __repr__(self) -> str:
        return f"PodSandbox({self.pod_id!r}, port={self.port}, alive={self.alive})"


def lay_out_volume(volume_dir: Path) -> None:
    """Put the simulated Headless-Wan2GP where the worker start command expects it on a volume."""
    from orchestrator.standins.worker.process import lay_out_volume as _lay_out

    _lay_out(volume_dir)
