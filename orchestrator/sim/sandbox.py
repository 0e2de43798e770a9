"""Real pods for the Runpod emulator: one OpenSSH sshd per pod, in its own namespaces.

Where this sits: ``orchestrator.sim`` emulates Runpod for tests, the demo and offline rehearsal. The
emulator's state model (REST v2 / GraphQL) owns the lifecycle; when a pod reaches the point where a
real pod would start its container, the emulator creates a :class:`PodSandbox`, calls :meth:`start`
and polls :meth:`ready` before it publishes the pod's ``22/tcp`` port. Terminating the pod calls
:meth:`stop`.

A sandbox imitates what a Runpod image gives you, with real programs rather than mocks:

- a real ``/usr/sbin/sshd`` on a free ``127.0.0.1`` port with its own ed25519 host key, authorizing
  the ``PUBLIC_KEY`` from the pod env (as Runpod images do), root login by key only;
- a mount namespace where ``mount_path`` (default ``/workspace``) is a bind mount of the network
  volume's directory (so pods on one volume share files, as real network volumes do), with a private
  ``/tmp`` and a private home for root;
- a PID namespace whose init is sshd itself: killing it makes the kernel kill every process in the pod,
  including a worker started with ``nohup ... &``;
- the pod env exported to SSH sessions the way Runpod images do it (a sourced environment file, here
  through ``BASH_ENV`` and ``~/.bashrc``), so a remote command can use ``"$SUPABASE_URL"``;
- a fake ``nvidia-smi`` (and no-op ``apt-get``/``apt``, so the seed's apt step does not touch the
  host) first on the session ``PATH``.

Known differences from a real pod: the network is the host's (no network namespace: the worker must
reach the database on the host), the root filesystem is the host's apart from the mounts above, and
the host paths the project's interpreter lives in are re-exposed inside the private ``/root`` and
``/tmp`` so the simulated worker can run. A pod without ``PUBLIC_KEY`` still runs sshd but authorizes
no key (real images would not start sshd at all). ``ssh_refuse=True`` starts the pod without any
listener on its port, so connections are refused. Nor is a sandbox a security boundary: in root mode
the pod's root is the host's root.

Privileges: as root the namespaces are created directly. As an ordinary user they are created inside a
user namespace (``unshare -Ur``) where the pod's root is the calling user; sshd then runs under a
nested user namespace with a non-zero uid (sshd's privilege separation needs real uids that an
unprivileged user namespace cannot map), and the pod's ``/etc/passwd`` and ``/etc/shadow`` name that
uid ``root`` with no password. Host paths the user may not read (another user's home) are simply not
re-exposed. :func:`detect_mode` says which mode applies, or raises :class:`SandboxError` saying why
neither works.

Processes: the namespace's init is sshd (``unshare --fork --kill-child``). :meth:`PodSandbox.stop`
SIGKILLs it, lets ``unshare`` reap it, then sweeps ``/proc`` for anything left in the pod's PID
namespace. An ``atexit`` hook stops every pod still running, and each pod's init holds the read end
of a pipe whose write end only this process has: if this process dies without running ``atexit``
(SIGKILL), the pipe reads EOF and the pod ends itself.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Literal

import structlog

from orchestrator.errors import SandboxError

log = structlog.get_logger(__name__)

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
UNSHARE = "unshare"
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Ports below the kernel's ephemeral range (32768+), so a port we picked is not grabbed by some
# client's outgoing connection before sshd binds it.
PORT_RANGE = (20000, 32000)
# The uid sshd runs as in the nested user namespace of the unprivileged mode (any non-zero uid).
USERNS_SSHD_UID = 1000
# Files in the pod's private /tmp: the fake nvidia-smi reads the used VRAM the simulated worker writes.
GPU_STATE_FILE = "/tmp/.sim-gpu-used-mb"
WORKER_MARKER = "orchestrator.sim.worker"

Mode = Literal["root", "userns"]




# --- privilege mode ----------------------------------------------------------------------------------

_mode_lock = threading.Lock()
_mode: Mode | None = None


def detect_mode() -> Mode:
    """How this process can build pods: ``root`` or ``userns``; raises SandboxError when neither works."""
    global _mode
    with _mode_lock:
        if _mode is not None:
            return _mode
        if not os.access(SSHD, os.X_OK):
            raise SandboxError(f"{SSHD} is missing: install openssh-server (`make test` does it as root)")
        if os.geteuid() == 0:
            _mode = "root"
            return _mode
        probe = [UNSHARE, "--map-root-user", "--mount", "--pid", "--fork", "--mount-proc", "true"]
        try:
            res = subprocess.run(probe, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxError(f"cannot run {UNSHARE}: {exc}") from exc
        if res.returncode != 0:
            raise SandboxError(
                "pod sandboxes need root or unprivileged user namespaces, and neither is available here: "
                f"`{' '.join(probe)}` failed ({res.stderr.strip() or res.returncode}). Run as root, or "
                "enable user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                "user.max_user_namespaces>0)"
            )
        _mode = "userns"
        return _mode


# --- ports -------------------------------------------------------------------------------------------

_ports_lock = threading.Lock()
_ports_taken: set[int] = set()


def _allocate_port() -> int:
    with _ports_lock:
        for _ in range(500):
            port = random.randrange(*PORT_RANGE)
            if port in _ports_taken:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _ports_taken.add(port)
            return port
    raise SandboxError(f"no free port in {PORT_RANGE} on 127.0.0.1")


def _release_port(port: int) -> None:
    with _ports_lock:
        _ports_taken.discard(port)


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


# --- /proc helpers -----------------------------------------------------------------------------------


def _proc_pids() -> Iterable[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def _pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(x) for x in text.split()]
    except (OSError, ValueError):
        pass
    found = []
    for p in _proc_pids():
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields restart after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(p)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith("Z")


# --- files of one pod --------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _cfg_quote(value: str) -> str:
    """Quote a value for sshd_config (double quotes; the values we write never need escapes)."""
    if '"' in value or "\n" in value or "\\" in value:
        raise SandboxError(f"path not usable in sshd_config: {value!r}")
    return f'"{value}"'


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)


def _nvidia_smi_script(gpu_name: str, vram_mb: int) -> str:
    name = shlex.quote(gpu_name)
    return f"""#!/bin/sh
# Fake nvidia-smi of an emulated Runpod pod (orchestrator.sim.sandbox): one GPU, {gpu_name}.
NAME={name}
TOTAL={int(vram_mb)}
used() {{
    u=0
    if [ -r {GPU_STATE_FILE} ]; then read -r u < {GPU_STATE_FILE} || u=0; fi
    case $u in ''|*[!0-9]*) u=0;; esac
    [ "$u" -gt "$TOTAL" ] && u=$TOTAL
    echo "$u"
}}
query=""; fmt=""; list=0
while [ $# -gt 0 ]; do
    case $1 in
        --query-gpu=*) query=${{1#--query-gpu=}};;
        --query-gpu) shift; query=$1;;
        --format=*) fmt=${{1#--format=}};;
        --format) shift; fmt=$1;;
        -L|--list-gpus) list=1;;
        -h|--help) echo "NVIDIA System Management Interface (simulated)"; exit 0;;
    esac
    shift
done
if [ "$list" = 1 ]; then
    echo "GPU 0: $NAME (UUID: GPU-00000000-0000-0000-0000-000000000000)"; exit 0
fi
if [ -n "$query" ]; then
    header=1; units=1
    case ",$fmt," in *,noheader,*) header=0;; esac
    case ",$fmt," in *,nounits,*) units=0;; esac
    U=$(used); head=""; row=""
    old_ifs=$IFS; IFS=,
    for f in $query; do
        f=$(echo "$f" | tr -d ' ')
        case $f in
            name|gpu_name) v=$NAME; h=name;;
            memory.total) v=$TOTAL; h="memory.total [MiB]"; [ $units = 1 ] && v="$v MiB";;
            memory.used) v=$U; h="memory.used [MiB]"; [ $units = 1 ] && v="$v MiB";;
            memory.free) v=$((TOTAL - U)); h="memory.free [MiB]"; [ $units = 1 ] && v="$v MiB";;
            index) v=0; h=index;;
            count) v=1; h=count;;
            uuid|gpu_uuid) v=GPU-00000000-0000-0000-0000-000000000000; h=uuid;;
            driver_version) v=550.54.15; h=driver_version;;
            utilization.gpu) v=0; h="utilization.gpu [%]"; [ $units = 1 ] && v="$v %";;
            temperature.gpu) v=34; h=temperature.gpu;;
            *) IFS=$old_ifs; echo "Field \\"$f\\" is not a valid field to query." >&2; exit 2;;
        esac
        if [ -z "$row" ]; then row=$v; head=$h; else row="$row, $v"; head="$head, $h"; fi
    done
    IFS=$old_ifs
    [ $header = 1 ] && echo "$head"
    echo "$row"
    exit 0
fi
U=$(used)
date
cat <<EOF
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|=========================================+========================+======================|
EOF
printf '|   0  %-30.30s On  |   00000000:01:00.0 Off |                  Off |\\n' "$NAME"
printf '| 30%%   34C    P8             21W /  450W | %8sMiB / %6sMiB |      0%%      Default |\\n' "$U" "$TOTAL"
echo "+-----------------------------------------+------------------------+----------------------+"
"""


_NOOP_APT = """#!/bin/sh
# No-op apt of an emulated Runpod pod (orchestrator.sim.sandbox): the pod's root filesystem is the
# host's, so package installs are acknowledged and skipped.
echo "apt (simulated pod): skipping: $*" >&2
exit 0
"""


def _reexposed_paths() -> list[str]:
    """Host paths the pod must still see under its private /root and /tmp: the project's interpreter."""
    candidates = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        str(Path(__file__).resolve().parents[2]),  # the checkout holding `orchestrator/`
        *(p for p in sys.path if p and os.path.isdir(p)),
    }
    paths = sorted({os.path.realpath(p) for p in candidates} | {os.path.abspath(p) for p in candidates})
    kept: list[str] = []
    for p in paths:  # sorted, so an ancestor comes before its descendants
        if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(p)
    return kept


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


# --- the sandbox -------------------------------------------------------------------------------------


class PodSandbox:
    """One emulated pod: sshd in its own mount, PID and UTS namespaces. See the module docstring."""

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
    ) -> None:
        if not mount_path.startswith("/") or mount_path.rstrip("/") in ("", "/tmp", "/root", "/proc", "/etc"):
            raise SandboxError(
                f"mount path must be absolute and not /, /tmp, /root, /proc or /etc: {mount_path!r}"
            )
        self.pod_id = pod_id
        self.env = dict(env)
        self.volume_dir = Path(volume_dir).resolve() if volume_dir is not None else None
        self.mount_path = mount_path.rstrip("/")
        self.gpu_name = gpu_name
        self.vram_mb = int(vram_mb)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", pod_id) or "pod"
        self.dir = Path(state_dir).resolve() / safe
        self.ssh_refuse = ssh_refuse
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._init_pid: int | None = None
        self._ns: str | None = None
        self._ready_seen = False
        self._stopped = False
        self._lock = threading.Lock()
        self._log_file: IO[bytes] | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> int:
        """Lay out the pod's files and start its namespaces and sshd; returns the port without waiting."""
        with self._lock:
            if self._proc is not None:
                return self.port
            if self._stopped:
                raise SandboxError(f"pod {self.pod_id}: stopped before it was started")
            mode = detect_mode()
            self.port = _allocate_port()
            try:
                self._prepare(mode)
                cmd = self._command(mode)
                self._log_file = open(self.dir / "pod.log", "ab")  # noqa: SIM115 - lives as long as the pod
                lifeline = _lifeline_fd()
                self._proc = subprocess.Popen(
                    cmd,
                    # The init's stdin is the lifeline (dash cannot redirect fds above 9).
                    stdin=lifeline,
                    stdout=self._log_file,
                    stderr=subprocess.STDOUT,
                    env={"PATH": STD_PATH, "LANG": "C.UTF-8"},
                    # Own session: a terminal's ^C does not reach pods; stop() ends them deliberately.
                    start_new_session=True,
                )
            except SandboxError:
                _release_port(self.port)
                raise
            except (OSError, subprocess.SubprocessError) as exc:
                _release_port(self.port)
                raise SandboxError(f"pod {self.pod_id}: cannot start its sandbox: {exc}") from exc
            with _live_lock:
                _live[id(self)] = self
            log.info(
                "sandbox_started",
                pod_id=self.pod_id,
                port=self.port,
                mode=mode,
                mount_path=self.mount_path,
                volume_dir=str(self.volume_dir) if self.volume_dir else None,
                ssh_refuse=self.ssh_refuse,
            )
            return self.port

    @property
    def alive(self) -> bool:
        """True while the pod's namespace init (sshd, or the idle init of a refusing pod) runs."""
        return self._proc is not None and not self._stopped and self._proc.poll() is None

    def ready(self) -> bool:
        """True once sshd answers on the port with its banner (one short TCP probe per call)."""
        if not self.alive or self.ssh_refuse:
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
        """End every process in the pod (sshd, sessions, nohup'd workers); idempotent."""
        with self._lock:
            proc = self._proc
            if proc is None or self._stopped:
                self._stopped = True
                return
            self._stopped = True
            self._locate_init(wait=proc.poll() is None)
            # Killing the namespace's init makes the kernel SIGKILL every other process in it.
            if self._init_pid is not None and _pid_ns(self._init_pid) == self._ns:
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
            if self._log_file is not None:
                self._log_file.close()
            _release_port(self.port)
            with _live_lock:
                _live.pop(id(self), None)
            log.info("sandbox_stopped", pod_id=self.pod_id, port=self.port, leftovers=leftovers)

    # -- faults -----------------------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        """Host pids of the simulated worker's processes in this pod."""
        return [p for p in self.pids() if WORKER_MARKER in _cmdline(p) and not _is_zombie(p)]

    def pids(self) -> list[int]:
        """Host pids of every process in the pod's PID namespace."""
        if not self.alive:
            return []
        self._locate_init(wait=True)
        if self._ns is None:
            return []
        return [p for p in _proc_pids() if _pid_ns(p) == self._ns]

    def crash_worker(self) -> bool:
        """SIGKILL the simulated worker (a crashed worker process); False when none runs."""
        return self._signal_worker(signal.SIGKILL, "sandbox_worker_crashed")

    def hang_worker(self) -> bool:
        """SIGSTOP the simulated worker (a hung worker: no heartbeats, no progress); False when none runs."""
        return self._signal_worker(signal.SIGSTOP, "sandbox_worker_hung")

    def resume_worker(self) -> bool:
        """SIGCONT a hung worker; False when none runs."""
        return self._signal_worker(signal.SIGCONT, "sandbox_worker_resumed")

    def _signal_worker(self, sig: signal.Signals, event: str) -> bool:
        hit = []
        for pid in self.worker_pids():
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
            for child in _children(self._proc.pid):
                ns = _pid_ns(child)
                if ns is not None and ns != _pid_ns(self._proc.pid):
                    self._init_pid, self._ns = child, ns
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
            left = [p for p in _proc_pids() if _pid_ns(p) == self._ns and not _is_zombie(p)]
            if not left or time.monotonic() >= deadline:
                return len(left)
            for p in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.02)

    def _pod_env(self) -> dict[str, str]:
        env = {
            "RUNPOD_POD_ID": self.pod_id,
            "RUNPOD_PUBLIC_IP": "127.0.0.1",
            "RUNPOD_TCP_PORT_22": str(self.port),
            "RUNPOD_GPU_COUNT": "1",
        }
        for key, value in self.env.items():
            if not _ENV_NAME.match(key) or key in ("PATH", "BASH_ENV", "HOME"):
                log.warning("sandbox_env_skipped", pod_id=self.pod_id, name=key)
                continue
            env[key] = str(value)
        return env

    def _prepare(self, mode: Mode) -> None:
        d = self.dir
        for sub in ("bin", "home", "home/.ssh", "tmp", "disk"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "tmp").chmod(0o1777)
        hostkey = d / "ssh_host_ed25519_key"
        if not hostkey.exists():
            try:
                subprocess.run(
                    [
                        SSH_KEYGEN,
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        "",
                        "-C",
                        f"root@{self.pod_id}",
                        "-f",
                        str(hostkey),
                    ],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise SandboxError(f"pod {self.pod_id}: ssh-keygen failed: {exc}") from exc
        public_key = self.env.get("PUBLIC_KEY", "").strip()
        # Runpod images append PUBLIC_KEY to root's authorized_keys; ours lives in the pod's own dir.
        _write(d / "authorized_keys", (public_key + "\n") if public_key else "", 0o600)
        _write(d / "home/.ssh/authorized_keys", (public_key + "\n") if public_key else "", 0o600)
        env_file = d / "rp_environment"
        lines = ["# The pod env, exported to every shell as Runpod images do (/etc/rp_environment)."]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(self._pod_env().items())]
        _write(env_file, "\n".join(lines) + "\n", 0o600)
        source = f"[ -r {shlex.quote(str(env_file))} ] && . {shlex.quote(str(env_file))}\n"
        _write(d / "home/.bashrc", source)
        _write(d / "home/.profile", '[ -n "$BASH_VERSION" ] && [ -f ~/.bashrc ] && . ~/.bashrc\n' + source)
        _write(d / "bin/nvidia-smi", _nvidia_smi_script(self.gpu_name, self.vram_mb), 0o755)
        for apt in ("apt-get", "apt"):
            _write(d / "bin" / apt, _NOOP_APT, 0o755)
        if not any(os.access(os.path.join(p, "python3"), os.X_OK) for p in STD_PATH.split(":")):
            link = d / "bin/python3"
            if not link.exists():
                link.symlink_to(sys.executable)
        session_path = f"{d / 'bin'}:{STD_PATH}"
        config = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            "AddressFamily inet",
            f"HostKey {_cfg_quote(str(hostkey))}",
            "PidFile none",
            f"AuthorizedKeysFile {_cfg_quote(str(d / 'authorized_keys'))}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitEmptyPasswords no",
            "UsePAM no",
            # The state dir may sit under /tmp (world-writable), which StrictModes would refuse.
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "Subsystem sftp internal-sftp",
            "MaxStartups 100:30:200",
            "LogLevel INFO",
            f"SetEnv {_cfg_quote('BASH_ENV=' + str(env_file))} {_cfg_quote('PATH=' + session_path)}",
        ]
        _write(d / "sshd_config", "\n".join(config) + "\n", 0o600)
        if mode == "userns":
            self._write_userns_passwd()
        _write(d / "init.sh", self._init_script(mode), 0o700)
        mp = Path(self._mountpoint_on_host())
        if not mp.is_dir():
            try:
                mp.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SandboxError(
                    f"mount path {self.mount_path} does not exist and cannot be created ({exc}); "
                    "create it once as root"
                ) from exc
        if self.volume_dir is not None and not self.volume_dir.is_dir():
            raise SandboxError(f"pod {self.pod_id}: volume directory {self.volume_dir} does not exist")

    def _write_userns_passwd(self) -> None:
        """The pod's /etc/passwd for the unprivileged mode: root is the non-zero uid sshd runs as."""
        lines = []
        for line in Path("/etc/passwd").read_text().splitlines():
            if line.startswith("root:"):
                continue
            lines.append(line)
        root = f"root:x:{USERNS_SSHD_UID}:{USERNS_SSHD_UID}:root:/root:/bin/bash"
        _write(self.dir / "passwd", "\n".join([root, *lines]) + "\n")
        # sshd refuses a user whose shadow entry it cannot read as "locked"; give root a readable
        # entry with no password (key login only).
        _write(self.dir / "shadow", "root:*:19000:0:99999:7:::\n", 0o600)

    def _init_script(self, mode: Mode) -> str:
        """The script the namespace's init runs: mounts, the lifeline watchdog, then exec sshd."""
        q = shlex.quote
        d = str(self.dir)
        lines = [
            "#!/bin/sh",
            f"# Init of emulated pod {self.pod_id} (orchestrator.sim.sandbox); runs as PID 1 of its namespace.",
            "set -eu",
            f"hostname {q(re.sub(r'[^A-Za-z0-9-]', '-', self.pod_id)[:63] or 'pod')} 2>/dev/null || true",
            f"mount --bind {q(str(self.volume_dir or self.dir / 'disk'))} {q(self._mountpoint_on_host())}",
        ]
        # Private /root and /tmp hide host paths the pod still needs (its own state dir, the project's
        # interpreter): bind them into the private dirs at the same relative path before covering.
        # Ancestors first, descendants of an exposed path skipped: a later bind would hide an earlier one.
        needed: list[str] = []
        for path in sorted({d, *_reexposed_paths()}):
            if not any(_under(path, kept) for kept in needed):
                needed.append(path)
        for top, private in (("/root", self.dir / "home"), ("/tmp", self.dir / "tmp")):
            for path in needed:
                if _under(path, top) and path != top:
                    # Created here rather than by `mkdir` in the script: one exec fewer per path and pod.
                    Path(str(private) + path[len(top) :]).mkdir(parents=True, exist_ok=True)
                    target = q(str(private) + path[len(top) :])
                    bind = f"mount --bind {q(path)} {target}"
                    # The pod's own dir is essential; an interpreter path we may not read is not.
                    lines.append(
                        bind if path == d or _under(d, path) else f"{{ {bind}; }} 2>/dev/null || true"
                    )
            lines.append(f"mount --rbind {q(str(private))} {top}")
        for apt in ("apt-get", "apt"):
            lines.append(
                f"[ -e /usr/bin/{apt} ] && mount --bind {q(d + '/bin/' + apt)} /usr/bin/{apt} || true"
            )
        if mode == "root":
            # sshd's privilege separation chroots there; Debian creates it only when the service runs.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        else:
            lines.append(f"mount --bind {q(d + '/passwd')} /etc/passwd")
            lines.append(f"mount --bind {q(d + '/shadow')} /etc/shadow")
        # Watchdog: when the emulator's process dies, the lifeline pipe reads EOF; end the pod then.
        # PID 1 only takes signals it handles; sshd (and the refusing init below) handle SIGTERM.
        # (`read` is a builtin: one small shell process per pod, blocked on the pipe, no polling.)
        # (A background list gets /dev/null as stdin unless redirected explicitly: go through fd 3.)
        lines.append("exec 3<&0 </dev/null")
        lines.append("( while read -r _; do :; done; kill -TERM 1 ) <&3 >/dev/null 2>&1 &")
        lines.append("exec 3<&-")
        if self.ssh_refuse:
            lines.append("trap 'exit 0' TERM")
            lines.append("while :; do sleep 3600 & wait $! || true; done")
        else:
            sshd = f"{SSHD} -D -e -f {q(d + '/sshd_config')}"
            if mode == "userns":
                # sshd as uid 0 insists on privilege separation (chroot + setuid to `sshd`), which
                # needs uids this namespace cannot map; as a non-zero uid it skips it.
                sshd = (
                    f"exec {UNSHARE} --user --map-user={USERNS_SSHD_UID} --map-group={USERNS_SSHD_UID} {sshd}"
                )
            else:
                sshd = f"exec {sshd}"
            lines.append(sshd)
        return "\n".join(lines) + "\n"

    def _mountpoint_on_host(self) -> str:
        """Where the volume is bound: a mount path under /root or /tmp goes into the private dir there."""
        for top, private in (("/root", self.dir / "home"), ("/tmp", self.dir / "tmp")):
            if _under(self.mount_path, top):
                return str(private) + self.mount_path[len(top) :]
        return self.mount_path

    def _command(self, mode: Mode) -> list[str]:
        cmd = [UNSHARE]
        if mode == "userns":
            cmd.append("--map-root-user")
        cmd += [
            "--mount",
            "--uts",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "--propagation",
            "private",
            "/bin/sh",
            str(self.dir / "init.sh"),
        ]
        return cmd

    def __repr__(self) -> str:
        return f"PodSandbox({self.pod_id!r}, port={self.port}, alive={self.alive})"


def lay_out_volume(volume_dir: Path) -> None:
    """Put the simulated Headless-Wan2GP where the seed's start command expects it on a volume."""
    from orchestrator.sim.worker import lay_out_volume as _lay_out

    _lay_out(volume_dir)
