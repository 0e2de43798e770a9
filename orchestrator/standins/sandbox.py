"""Real pods for the Runpod emulator: a container-like process tree per pod, with a real OpenSSH sshd.

Where this sits: ``orchestrator.standins`` emulates Runpod for tests, the demo and offline rehearsal. The
emulator's state model (REST v2 / GraphQL) owns the lifecycle; when a pod reaches the point where a
real pod would start its container, the emulator creates a :class:`PodSandbox`, calls :meth:`start`
and polls :meth:`ready` before it publishes the pod's ``22/tcp`` port. Terminating the pod calls
:meth:`stop`. The emulator may put a delaying relay in front of the port (``rtt_ms``); the sandbox
only needs to know the public port, for ``RUNPOD_TCP_PORT_22``.

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
  ``/etc/rp_environment`` is written, as in the original.
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
  ``/tmp``, ``/var/lib/apt/lists`` and ``/var/lib/dpkg/status`` live in the pod's own directory. A
  fresh start (create, or resume after a stop) wipes it, so apt's work, ``~/.bashrc``'s lines and the
  SSH host key (generated per container disk, as the image does at start-up) are new; a restart
  (``keep_container_disk=True``) keeps it, and the start script appends its lines once more.
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
import random
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Literal

import structlog

from orchestrator.core.errors import SandboxError

log = structlog.get_logger(__name__)

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
UNSHARE = "unshare"
#: The PATH Debian's sshd gives root's sessions (``--with-superuser-path``); also what a clean session
#: searches for the pod's programs, so sandbox-only programs live in one of these directories.
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: PID 1's PATH: the CUDA base image prepends its directories to Ubuntu's default.
IMAGE_PATH = "/usr/local/nvidia/bin:/usr/local/cuda/bin:" + STD_PATH
#: The rest of the image's environment that PID 1 sees (CUDA base image and the pytorch Dockerfile).
IMAGE_ENV = {
    "PATH": IMAGE_PATH,
    "NVIDIA_VISIBLE_DEVICES": "all",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
    "CUDA_VERSION": "12.4.1",
    "LD_LIBRARY_PATH": "/usr/local/nvidia/lib:/usr/local/nvidia/lib64",
    "DEBIAN_FRONTEND": "noninteractive",
    "SHELL": "/bin/bash",
    "HOME": "/root",
}
# Ports below the kernel's ephemeral range (32768+), so a port we picked is not grabbed by some
# client's outgoing connection before sshd binds it.
PORT_RANGE = (20000, 32000)
# The uid sshd runs as in the nested user namespace of the unprivileged mode (any non-zero uid).
USERNS_SSHD_UID = 1000
# Files in the pod's private /tmp: the fake nvidia-smi reads the used VRAM the simulated worker writes.
GPU_STATE_FILE = "/tmp/.sim-gpu-used-mb"
WORKER_MARKER = "orchestrator.standins.worker"
# Inside the pod: the start script (PID 1), sshd's files, the container disk's bound paths.
START_SCRIPT = "/etc/sim-pod/start.sh"
SSHD_CONFIG = "/etc/ssh/sshd_config"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
SSHD_LOG = "/etc/ssh/sshd.log"
APT_LISTS = "/var/lib/apt/lists"
DPKG_STATUS = "/var/lib/dpkg/status"
#: Programs the image does not have; hidden from the pod when the host has them.
ABSENT_PROGRAMS = ("ffmpeg", "ffprobe", "ffplay")
ABSENT_PACKAGES = ("ffmpeg",)
#: How long the apt stand-in takes (real seconds, not scaled: commands over SSH run in real time).
APT_UPDATE_S = 0.7
APT_INSTALL_S_PER_PACKAGE = 0.2

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
        if not (os.path.isdir(APT_LISTS) and os.path.isfile(DPKG_STATUS)):
            # The pods' apt stand-in works on bind mounts of these; without them it would write the host's.
            raise SandboxError(f"pod sandboxes need a Debian or Ubuntu host ({APT_LISTS}, {DPKG_STATUS})")
        mode: Mode = "root" if os.geteuid() == 0 else "userns"
        _probe_namespaces(mode)
        _mode = mode
        return _mode


def _probe_namespaces(mode: Mode) -> None:
    """Mount a throwaway overlay in a new mount namespace, as every pod will; SandboxError if it fails."""
    with tempfile.TemporaryDirectory(prefix="sandbox-probe-") as tmp:
        for sub in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(tmp, sub))
        opts = f"lowerdir={tmp}/lower,upperdir={tmp}/upper,workdir={tmp}/work"
        probe = [UNSHARE, *(["--map-root-user"] if mode == "userns" else [])]
        probe += ["--mount", "--pid", "--fork", "--mount-proc"]
        probe += ["mount", "-t", "overlay", "overlay", "-o", opts, f"{tmp}/merged"]
        try:
            res = subprocess.run(probe, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxError(f"cannot run {UNSHARE}: {exc}") from exc
        with contextlib.suppress(OSError):
            _rmtree(Path(tmp) / "work")
    if res.returncode != 0:
        if mode == "root":
            raise SandboxError(
                f"pod sandboxes need mount namespaces and overlayfs: `{' '.join(probe)}` failed "
                f"({res.stderr.strip() or res.returncode})"
            )
        raise SandboxError(
            "pod sandboxes need root, or unprivileged user namespaces with overlayfs (Linux 5.11+), and "
            f"neither is available here: `{' '.join(probe)}` failed ({res.stderr.strip() or res.returncode}). "
            "Run as root, or enable user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
            "user.max_user_namespaces>0)"
        )


def _rmtree(path: Path) -> None:
    """Remove a tree that may hold overlayfs's mode-000 work directories (owned by us)."""
    if not path.exists() and not path.is_symlink():
        return
    for top, dirs, _files in os.walk(path):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(top, name), 0o700)
    shutil.rmtree(path, ignore_errors=True)


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


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


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
# Fake nvidia-smi of an emulated Runpod pod (orchestrator.standins.sandbox): one GPU, {gpu_name}.
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


#: Packages the emulated Ubuntu mirror offers once ``apt-get update`` has run: name -> (version,
#: section, programs the stub install puts in /usr/bin). Versions are jammy's.
APT_CATALOG: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "ffmpeg": ("7:4.4.2-0ubuntu0.22.04.1", "video", ("ffmpeg", "ffprobe", "ffplay")),
    "python3.10-venv": ("3.10.12-1~22.04.11", "python", ()),
    "python3.10-dev": ("3.10.12-1~22.04.11", "python", ()),
    "python3-venv": ("3.10.6-1~22.04.1", "python", ()),
    "python3-pip": ("22.0.2+dfsg-1ubuntu0.6", "python", ("pip3",)),
    "libgl1": ("1.4.0-1", "libs", ()),
    "libglib2.0-0": ("2.72.4-0ubuntu2.6", "libs", ()),
    "libsm6": ("2:1.2.3-1build2", "libs", ()),
    "libxext6": ("2:1.3.4-1build1", "libs", ()),
    "libxrender1": ("1:0.9.10-1build4", "libs", ()),
    "git": ("1:2.34.1-1ubuntu1.15", "vcs", ("git",)),
    "git-lfs": ("3.0.2-1ubuntu0.3", "vcs", ("git-lfs",)),
    "curl": ("7.81.0-1ubuntu1.20", "web", ("curl",)),
    "wget": ("1.21.2-2ubuntu1.1", "web", ("wget",)),
    "aria2": ("1.36.0-1", "net", ("aria2c",)),
    "jq": ("1.6-2.1ubuntu3", "utils", ("jq",)),
    "unzip": ("6.0-26ubuntu3.2", "utils", ("unzip",)),
    "zip": ("3.0-12build2", "utils", ("zip",)),
    "rsync": ("3.2.7-0ubuntu0.22.04.4", "net", ("rsync",)),
    "tmux": ("3.2a-4ubuntu0.2", "admin", ("tmux",)),
    "htop": ("3.0.5-7build2", "utils", ("htop",)),
    "nano": ("6.2-1ubuntu0.1", "editors", ("nano",)),
    "vim": ("2:8.2.3995-1ubuntu2.24", "editors", ("vim",)),
    "build-essential": ("12.9ubuntu3", "devel", ()),
}


def _apt_script(update_s: float, install_s: float) -> str:
    catalog = "\n".join(
        f"{name} {version} {section} {','.join(progs) or '-'}"
        for name, (version, section, progs) in sorted(APT_CATALOG.items())
    )
    return f"""#!/bin/sh
# apt-get and apt of an emulated Runpod pod (orchestrator.standins.sandbox). The image ships with empty
# package lists (its Dockerfile ends with `rm -rf /var/lib/apt/lists/*`), so `install` fails the way
# apt does until `update` has run in this pod. Nothing here touches the host: the lists, dpkg's status
# file and /usr/bin belong to the pod's container disk.
LISTS={APT_LISTS}
STATUS={DPKG_STATUS}
PACKAGES=$LISTS/archive.ubuntu.com_ubuntu_dists_jammy_main_binary-amd64_Packages
UPDATE_S={update_s:g}
INSTALL_S={install_s:g}
# name version section programs: what the emulated mirror offers
CATALOG='{catalog}'

prog=${{0##*/}}
if [ "$prog" = apt ] && ! [ -t 1 ]; then
    printf '\\nWARNING: apt does not have a stable CLI interface. Use with caution in scripts.\\n\\n' >&2
fi
yes=0 quiet=0 op= pkgs=
while [ $# -gt 0 ]; do
    case $1 in
        --yes|--assume-yes|--force-yes) yes=1;;
        --quiet) quiet=$((quiet + 1));;
        --quiet=*|-q=*) quiet=${{1#*=}};;
        --option|--config-file|--target-release) shift;;
        --*) ;;
        -?*)
            flags=${{1#-}}
            while [ -n "$flags" ]; do
                c=${{flags%"${{flags#?}}"}}
                flags=${{flags#?}}
                case $c in
                    y) yes=1;;
                    q) quiet=$((quiet + 1));;
                    o|c|t) [ -z "$flags" ] && shift; flags=;;
                esac
            done;;
        *) if [ -z "$op" ]; then op=$1; else pkgs="$pkgs $1"; fi;;
    esac
    shift
done
# apt-get(8): quiet level 2 implies -y.
[ "$quiet" -ge 2 ] && yes=1
say() {{ [ "$quiet" -ge 2 ] || printf '%s\\n' "$*"; }}
fail() {{ printf 'E: %s\\n' "$@" >&2; exit 100; }}

take_lock() {{
    mkdir -p "$LISTS/partial"
    exec 9>>"$LISTS/lock"
    if ! flock -n 9; then
        holder=$(cat "$LISTS/lock" 2>/dev/null)
        if [ "$1" = update ]; then
            fail "Could not get lock $LISTS/lock. It is held by process ${{holder:-0}} (apt-get)" \\
                "Unable to lock directory $LISTS/"
        fi
        echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process ${{holder:-0}} (apt-get)" >&2
        echo "N: Be aware that removing the lock file is not a solution and may break your system." >&2
        fail "Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?"
    fi
    echo $$ > "$LISTS/lock"
}}

installed() {{
    dpkg-query -W -f='${{Status}}' "$1" 2>/dev/null | grep -q ' installed$'
}}

offered() {{
    [ -r "$PACKAGES" ] && grep -qxF "Package: $1" "$PACKAGES"
}}

do_update() {{
    take_lock update
    say "Get:1 http://archive.ubuntu.com/ubuntu jammy InRelease [270 kB]"
    say "Get:2 http://archive.ubuntu.com/ubuntu jammy-updates InRelease [128 kB]"
    say "Get:3 http://security.ubuntu.com/ubuntu jammy-security InRelease [129 kB]"
    say "Get:4 http://archive.ubuntu.com/ubuntu jammy/main amd64 Packages [1792 kB]"
    sleep "$UPDATE_S"
    printf '%s\\n' "$CATALOG" | while read -r name version section _progs; do
        printf 'Package: %s\\nVersion: %s\\nSection: %s\\nArchitecture: amd64\\n\\n' "$name" "$version" "$section"
    done > "$PACKAGES.new" && mv "$PACKAGES.new" "$PACKAGES"
    : > "$LISTS/archive.ubuntu.com_ubuntu_dists_jammy_InRelease"
    say "Fetched 2319 kB in 1s (2319 kB/s)"
    say "Reading package lists..."
}}

do_install() {{
    take_lock install
    say "Reading package lists..."
    say "Building dependency tree..."
    say "Reading state information..."
    missing=0 todo=
    for p in $pkgs; do
        name=${{p%%=*}}
        name=${{name%%:*}}
        if installed "$name"; then
            say "$name is already the newest version."
            continue
        fi
        if ! offered "$name"; then
            echo "E: Unable to locate package $p" >&2
            case $p in
                *[.?*]*)
                    echo "E: Couldn't find any package by glob '$p'" >&2
                    echo "E: Couldn't find any package by regex '$p'" >&2;;
            esac
            missing=1
            continue
        fi
        todo="$todo $name"
    done
    [ "$missing" = 0 ] || exit 100
    count=$(echo $todo | wc -w)
    if [ "$count" = 0 ]; then
        say "0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded."
        exit 0
    fi
    say "The following NEW packages will be installed:"
    say " $todo"
    say "0 upgraded, $count newly installed, 0 to remove and 0 not upgraded."
    if [ "$yes" = 0 ]; then
        printf 'Do you want to continue? [Y/n] '
        # apt reads the answer from stdin; end of input (no terminal, nothing piped) aborts.
        if ! read -r answer; then echo "Abort."; exit 1; fi
        case $answer in ''|[Yy]*) ;; *) echo "Abort."; exit 1;; esac
    fi
    for name in $todo; do
        sleep "$INSTALL_S"
        line=$(printf '%s\\n' "$CATALOG" | awk -v n="$name" '$1 == n')
        set -- $line
        version=$2 section=$3 progs=$4
        printf '\\nPackage: %s\\nStatus: install ok installed\\nPriority: optional\\nSection: %s\\nInstalled-Size: 1\\nMaintainer: Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>\\nArchitecture: amd64\\nVersion: %s\\nDescription: %s (stand-in installed by the emulated pod)\\n' \\
            "$name" "$section" "$version" "$name" >> "$STATUS"
        if [ "$progs" != - ]; then
            for exe in $(echo "$progs" | tr , ' '); do
                [ -e "/usr/bin/$exe" ] && continue
                printf '#!/bin/sh\\n# %s of an emulated Runpod pod: a stand-in that does nothing.\\necho "%s version %s (emulated pod stand-in)"\\n' \\
                    "$exe" "$exe" "$version" > "/usr/bin/$exe"
                chmod 755 "/usr/bin/$exe"
            done
        fi
        say "Setting up $name ($version) ..."
    done
}}

case $op in
    update) do_update;;
    install) do_install;;
    upgrade|dist-upgrade|full-upgrade|clean|autoclean|autoremove|remove|purge|check|list|search|show|policy)
        exit 0;;
    '') echo "apt (emulated pod stand-in): usage: $prog [options] update|install PACKAGE..." >&2; exit 100;;
    *) fail "Invalid operation $op";;
esac
"""


def _start_script(pod_id: str, *, start_sshd: str) -> str:
    """PID 1 of the pod: what runpod/containers container-template/start.sh does, in our own words."""
    return f"""#!/bin/bash
# PID 1 of emulated Runpod pod {pod_id} (orchestrator.standins.sandbox). It does what the start script of
# Runpod's official images does (github.com/runpod/containers, container-template/start.sh): install
# PUBLIC_KEY and start sshd when PUBLIC_KEY is set, write RUNPOD_*, PATH and _ to /etc/rp_environment,
# have ~/.bashrc source it, then sleep forever.
# The emulator's lifeline watchdog ends the pod with SIGUSR1 (a PID 1 ignores signals it does not trap).
trap 'exit 0' USR1
set -e
echo "Pod Started"
if [[ $PUBLIC_KEY ]]; then
    echo "Setting up SSH..."
    mkdir -p ~/.ssh
    printf '%s\\n' "$PUBLIC_KEY" >> ~/.ssh/authorized_keys
    chmod -R 700 ~/.ssh
{start_sshd}
fi
echo "Exporting environment variables..."
# One `export NAME="VALUE"` per line of printenv that starts with RUNPOD_, PATH= or _=: unescaped,
# and cut at a second '=', as the original's awk -F = does.
printenv | while IFS= read -r line; do
    case $line in
        RUNPOD_*|PATH=*|_=*)
            name=${{line%%=*}}
            case $line in *=*) value=${{line#*=}}; value=${{value%%=*}};; *) value=;; esac
            printf 'export %s="%s"\\n' "$name" "$value";;
    esac
done >> /etc/rp_environment
echo 'source /etc/rp_environment' >> ~/.bashrc
echo "Start script(s) finished, Pod is ready to use."
sleep infinity &
wait $!
"""


#: Ubuntu's ~/.bashrc begins with this guard (/etc/skel/.bashrc): non-interactive shells, which is what
#: `ssh pod 'command'` runs (Debian's bash sources ~/.bashrc for sshd's commands), stop here.
_BASHRC = """# ~/.bashrc: executed by bash(1) for non-login shells.

# If not running interactively, don't do anything
case $- in
    *i*) ;;
      *) return;;
esac

HISTCONTROL=ignoreboth
shopt -s histappend
HISTSIZE=1000
HISTFILESIZE=2000
shopt -s checkwinsize
PS1='${debian_chroot:+($debian_chroot)}\\u@\\h:\\w\\$ '
"""

#: Ubuntu's /root/.profile.
_PROFILE = """# ~/.profile: executed by Bourne-compatible login shells.

if [ "$BASH" ]; then
  if [ -f ~/.bashrc ]; then
    . ~/.bashrc
  fi
fi

mesg n 2> /dev/null || true
"""


def _sshd_config(port: int, mode: Mode) -> str:
    lines = [
        "# sshd of an emulated Runpod pod (orchestrator.standins.sandbox); Ubuntu's defaults where they matter.",
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        "AddressFamily inet",
        f"HostKey {HOST_KEY}",
        "PidFile none",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitEmptyPasswords no",
        "PermitUserEnvironment no",
        "UsePAM no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        # Debian and Ubuntu's sshd_config: the only variables a client may send.
        "AcceptEnv LANG LC_*",
        "Subsystem sftp internal-sftp",
        "LogLevel INFO",
    ]
    if mode == "userns":
        # The pod's root is a non-zero uid here, to which sshd would give the ordinary users' PATH;
        # give it the one a uid-0 root gets.
        lines.append(f"SetEnv PATH={STD_PATH}")
    return "\n".join(lines) + "\n"


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


def _host_has(program: str, dirs: str = STD_PATH) -> list[str]:
    """Directories of ``dirs`` (resolved, deduplicated) in which the host has ``program``."""
    found: list[str] = []
    for d in dirs.split(":"):
        real = os.path.realpath(d)
        if real not in found and os.path.lexists(os.path.join(real, program)):
            found.append(real)
    return found


def _dpkg_status_without(text: str, packages: Iterable[str]) -> str:
    """The host's dpkg status minus the stanzas of ``packages`` (what the image does not have)."""
    names = set(packages)
    if not any(f"Package: {n}\n" in text for n in names):
        return text
    stanzas = text.split("\n\n")
    kept = [s for s in stanzas if not any(s.lstrip("\n").startswith(f"Package: {n}\n") for n in names)]
    return "\n\n".join(kept)


# --- the sandbox -------------------------------------------------------------------------------------

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


def _overlay_path(path: Path) -> str:
    """A path usable in overlayfs's comma- and colon-separated mount options."""
    text = str(path)
    if any(ch in text for ch in ",:\\\n\t "):
        raise SandboxError(f"the pod state directory {text!r} cannot be used in overlayfs options")
    return text


def _whiteout(path: Path) -> None:
    """Hide the lower layer's ``path`` in an overlay (a 0/0 character device, which needs no privilege)."""
    if not os.path.lexists(path):
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write through a new inode, so a shell still reading the old file (a dying pod's) is not disturbed."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


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
                    # Exactly PID 1's environment: the init stage passes it on untouched.
                    env=self.init_env(),
                    cwd="/",
                    # Own session: a terminal's ^C does not reach pods; stop() ends them deliberately.
                    start_new_session=True,
                )
            except SandboxError:
                _release_port(self.port)
                raise
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                _release_port(self.port)
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
            if self._ns_fd is not None:
                os.close(self._ns_fd)
                self._ns_fd = None
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
            pids = [p for p in pids if _ppid(p) not in pids]
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
            for child in _children(self._proc.pid):
                ns = _pid_ns(child)
                if ns is not None and ns != _pid_ns(self._proc.pid):
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
            left = [p for p in _proc_pids() if _pid_ns(p) == self._ns and not _is_zombie(p)]
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

    def _prepare(self, mode: Mode) -> None:
        d, c = self.dir, self.container_dir
        d.mkdir(parents=True, exist_ok=True)
        if c.exists() and not self.keep_container_disk:
            # A new container disk. Rename first: a dying instance of this pod may still have it mounted.
            trash = d / f".container-old-{os.getpid()}-{time.monotonic_ns()}"
            c.rename(trash)
            _rmtree(trash)
        fresh = not c.exists()
        for sub in ("etc/ssh", "etc/sim-pod", "usr-bin", "root", "tmp", "apt-lists", "work"):
            (c / sub).mkdir(parents=True, exist_ok=True)
        (c / "tmp").chmod(0o1777)
        (c / "root").chmod(0o700)

        # /etc: sshd's files and host key, PID 1's script; the host's own host keys hidden.
        etc = c / "etc"
        hostkey = etc / "ssh" / "ssh_host_ed25519_key"
        if not hostkey.exists():
            # The image generates host keys at start-up when missing, in the container disk.
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
                        f"root@{self.hostname}",
                        "-f",
                        str(hostkey),
                    ],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise SandboxError(f"pod {self.pod_id}: ssh-keygen failed: {exc}") from exc
        for host_file in Path("/etc/ssh").glob("ssh_host_*"):
            _whiteout(etc / "ssh" / host_file.name)
        _atomic_write(etc / "ssh" / "sshd_config", _sshd_config(self.port, mode), 0o644)
        _atomic_write(etc / "hostname", self.hostname + "\n")
        _atomic_write(
            etc / "sim-pod" / "start.sh", _start_script(self.pod_id, start_sshd=self._start_sshd()), 0o755
        )
        if mode == "userns":
            self._write_userns_passwd(etc)

        # /usr/bin: the fake nvidia-smi and apt, an interpreter where the host has none, no ffmpeg.
        usr_bin = c / "usr-bin"
        _atomic_write(usr_bin / "nvidia-smi", _nvidia_smi_script(self.gpu_name, self.vram_mb), 0o755)
        apt = _apt_script(APT_UPDATE_S, APT_INSTALL_S_PER_PACKAGE)
        for name in ("apt-get", "apt"):
            _atomic_write(usr_bin / name, apt, 0o755)
        if not _host_has("python3") and not os.path.lexists(usr_bin / "python3"):
            (usr_bin / "python3").symlink_to(sys.executable)
        if not _host_has("python") and not os.path.lexists(usr_bin / "python"):
            (usr_bin / "python").symlink_to("python3")  # the image links python to its python3
        if fresh:
            for program in ABSENT_PROGRAMS:
                for where in _host_has(program):
                    _whiteout(self._upper_for(where) / program)

        # /root: Ubuntu's dotfiles; apt's lists empty; dpkg's status as the host has it, minus ffmpeg.
        if fresh:
            _atomic_write(c / "root" / ".bashrc", _BASHRC)
            _atomic_write(c / "root" / ".profile", _PROFILE)
            text = Path(DPKG_STATUS).read_text(errors="surrogateescape")
            (c / "dpkg-status").write_text(
                _dpkg_status_without(text, ABSENT_PACKAGES), errors="surrogateescape"
            )

        if mode == "root":
            # sshd's privilege separation chroots there; Debian creates it only when the service runs.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        _atomic_write(d / "init.sh", self._init_script(mode), 0o700)
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

    def _overlays(self) -> list[tuple[str, Path]]:
        """(host directory, upper layer) of each overlay: /etc, /usr/bin, and PATH dirs hiding programs."""
        pairs = [
            ("/etc", self.container_dir / "etc"),
            (os.path.realpath("/usr/bin"), self.container_dir / "usr-bin"),
        ]
        for program in ABSENT_PROGRAMS:
            for where in _host_has(program):
                if all(where != top for top, _ in pairs):
                    pairs.append((where, self._upper_for(where)))
        return pairs

    def _upper_for(self, directory: str) -> Path:
        if directory == os.path.realpath("/usr/bin"):
            return self.container_dir / "usr-bin"
        upper = self.container_dir / ("upper" + re.sub(r"[^A-Za-z0-9]", "-", directory))
        upper.mkdir(parents=True, exist_ok=True)
        return upper

    def _start_sshd(self) -> str:
        """The start script's lines that start sshd (a daemon, so a child of PID 1 once it forks)."""
        if self.ssh_refuse:
            return '    echo "(emulated pod: sshd is not started: ssh_refuse)"'
        # `service ssh start` runs sshd with a cleaned environment.
        return f"    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin {SSHD} -f {SSHD_CONFIG} -E {SSHD_LOG}"

    def _write_userns_passwd(self, etc: Path) -> None:
        """The pod's /etc/passwd, shadow and group for the unprivileged mode: root is a non-zero uid."""
        uid = USERNS_SSHD_UID
        lines = [
            line
            for line in Path("/etc/passwd").read_text().splitlines()
            if line.split(":")[2:3] not in (["0"], [str(uid)])
        ]
        _atomic_write(etc / "passwd", "\n".join([f"root:x:{uid}:{uid}:root:/root:/bin/bash", *lines]) + "\n")
        groups = [
            line
            for line in Path("/etc/group").read_text().splitlines()
            if line.split(":")[2:3] not in (["0"], [str(uid)])
        ]
        _atomic_write(etc / "group", "\n".join([f"root:x:{uid}:", *groups]) + "\n")
        # sshd refuses a user whose shadow entry it cannot read as "locked"; give root a readable
        # entry with no password (key login only).
        _atomic_write(etc / "shadow", "root:*:19000:0:99999:7:::\n", 0o600)

    def _init_script(self, mode: Mode) -> str:
        """The namespace init's first stage, as a container runtime: mounts, watchdog, exec PID 1's script."""
        q = shlex.quote
        d, c = str(self.dir), self.container_dir
        mount = _tool("mount")
        lines = [
            "#!/bin/sh",
            f"# Container start of emulated pod {self.pod_id} (orchestrator.standins.sandbox); PID 1 of its namespace.",
            "set -eu",
            f"{_tool('hostname')} {q(self.hostname)} 2>/dev/null || true",
        ]
        # The container disk first: its paths may sit under /tmp or /root, covered below.
        for i, (top, upper) in enumerate(self._overlays()):
            work = c / "work" / str(i)
            work.mkdir(parents=True, exist_ok=True)
            opts = f"lowerdir={top},upperdir={_overlay_path(upper)},workdir={_overlay_path(work)}"
            lines.append(f"{mount} -t overlay overlay -o {q(opts)} {q(top)}")
        lines.append(f"{mount} --bind {q(str(c / 'apt-lists'))} {APT_LISTS}")
        lines.append(f"{mount} --bind {q(str(c / 'dpkg-status'))} {DPKG_STATUS}")
        volume = self.volume_dir or self.dir / "volume"
        volume.mkdir(parents=True, exist_ok=True)
        lines.append(f"{mount} --bind {q(str(volume))} {q(self._mountpoint_on_host())}")
        # Private /root and /tmp hide host paths the pod still needs (its own state dir, the project's
        # interpreter): bind them into the private dirs at the same relative path before covering.
        # Ancestors first, descendants of an exposed path skipped: a later bind would hide an earlier one.
        needed: list[str] = []
        for path in sorted({d, *_reexposed_paths()}):
            if not any(_under(path, kept) for kept in needed):
                needed.append(path)
        for top, private in (("/root", c / "root"), ("/tmp", c / "tmp")):
            for path in needed:
                if _under(path, top) and path != top:
                    # Created here rather than by `mkdir` in the script: one exec fewer per path and pod.
                    Path(str(private) + path[len(top) :]).mkdir(parents=True, exist_ok=True)
                    target = q(str(private) + path[len(top) :])
                    bind = f"{mount} --bind {q(path)} {target}"
                    # The pod's own dir is essential; an interpreter path we may not read is not.
                    lines.append(
                        bind if path == d or _under(d, path) else f"{{ {bind}; }} 2>/dev/null || true"
                    )
            lines.append(f"{mount} --rbind {q(str(private))} {top}")
        # Watchdog: when the emulator's process dies, the lifeline pipe reads EOF; end the pod then.
        # PID 1 only takes signals it handles: the start script traps SIGUSR1. Until it has (a pod
        # still booting), keep asking. (`read` is a builtin: one small shell process per pod, blocked
        # on the pipe, no polling.) (A background list gets /dev/null as stdin unless redirected
        # explicitly: go through fd 3.)
        lines.append("exec 3<&0 </dev/null")
        lines.append(
            "( while read -r _; do :; done; while :; do kill -USR1 1; sleep 1; done ) <&3 >/dev/null 2>&1 &"
        )
        lines.append("exec 3<&-")
        # dash exports PWD (the init runs in /, as Docker's WORKDIR / does); Docker gives PID 1 no PWD
        # unless the pod's env has one.
        pwd = self.init_env().get("PWD")
        keep_pwd = f"PWD={q(pwd)}" if pwd is not None else "-u PWD"
        start = f"{_tool('env')} {keep_pwd} /bin/bash {START_SCRIPT}"
        if mode == "userns":
            # PID 1 becomes the pod's root of a nested user namespace: a non-zero uid, as sshd needs
            # (its privilege separation wants uids this namespace cannot map), and the same uid and
            # namespace as the sessions, so that they may read /proc/1/environ.
            uid = USERNS_SSHD_UID
            start = f"{_tool(UNSHARE)} --user --map-user={uid} --map-group={uid} {start}"
        lines.append(f"exec {start}")
        return "\n".join(lines) + "\n"

    def _mountpoint_on_host(self) -> str:
        """Where the volume is bound: a mount path under /root or /tmp goes into the private dir there."""
        for top, private in (("/root", self.container_dir / "root"), ("/tmp", self.container_dir / "tmp")):
            if _under(self.mount_path, top):
                return str(private) + self.mount_path[len(top) :]
        return self.mount_path

    def _command(self, mode: Mode) -> list[str]:
        cmd = [_tool(UNSHARE)]
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


def _tool(name: str) -> str:
    """A host program's absolute path: the init stage runs with the pod's PATH, which may be anything."""
    return shutil.which(name, path=STD_PATH) or name


def lay_out_volume(volume_dir: Path) -> None:
    """Put the simulated Headless-Wan2GP where the seed's start command expects it on a volume."""
    from orchestrator.standins.worker.process import lay_out_volume as _lay_out

    _lay_out(volume_dir)
