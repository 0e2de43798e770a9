"""The SSH server of a pod sandbox: sshd's configuration, host key, port and (unprivileged) passwd files.

Part of the pod sandboxes (``orchestrator.standins.sandbox``). Each pod runs the host's OpenSSH sshd,
started by its start script when ``PUBLIC_KEY`` is set, as Runpod's official images do. sshd listens on a
loopback port picked here (the emulator publishes it, or a delaying relay in front of it, as the pod's
``22/tcp``), with an ed25519 host key that the pod's start script generates on each new container disk
(``orchestrator.standins.sandbox_image``), and Ubuntu's defaults where they
matter (``AcceptEnv LANG LC_*``, no ``PermitUserEnvironment``). In the unprivileged mode the pod's root
is a non-zero uid, which the pod's own ``/etc/passwd``, ``group`` and ``shadow`` name ``root``.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

from orchestrator.core.errors import SandboxError
from orchestrator.standins.sandbox_host import SSHD, STD_PATH, Mode, atomic_write

SSH_KEYGEN = "ssh-keygen"
# Ports below the kernel's ephemeral range (32768+), so a port we picked is not grabbed by some
# client's outgoing connection before sshd binds it.
PORT_RANGE = (20000, 32000)
# The uid sshd runs as in the nested user namespace of the unprivileged mode (any non-zero uid).
USERNS_SSHD_UID = 1000
# Inside the pod: sshd's files.
SSHD_CONFIG = "/etc/ssh/sshd_config"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
SSHD_LOG = "/etc/ssh/sshd.log"


# --- ports -------------------------------------------------------------------------------------------

_ports_lock = threading.Lock()
_ports_taken: set[int] = set()


def allocate_port() -> int:
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


def release_port(port: int) -> None:
    with _ports_lock:
        _ports_taken.discard(port)


def sshd_config(port: int, mode: Mode) -> str:
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


def start_sshd_lines(*, ssh_refuse: bool) -> str:
    """The start script's lines that start sshd (a daemon, so a child of PID 1 once it forks)."""
    if ssh_refuse:
        return '    echo "(emulated pod: sshd is not started: ssh_refuse)"'
    # `service ssh start` runs sshd with a cleaned environment.
    return f"    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin {SSHD} -f {SSHD_CONFIG} -E {SSHD_LOG}"


def write_userns_passwd(etc: Path) -> None:
    """The pod's /etc/passwd, shadow and group for the unprivileged mode: root is a non-zero uid."""
    uid = USERNS_SSHD_UID
    lines = [
        line
        for line in Path("/etc/passwd").read_text().splitlines()
        if line.split(":")[2:3] not in (["0"], [str(uid)])
    ]
    atomic_write(etc / "passwd", "\n".join([f"root:x:{uid}:{uid}:root:/root:/bin/bash", *lines]) + "\n")
    groups = [
        line
        for line in Path("/etc/group").read_text().splitlines()
        if line.split(":")[2:3] not in (["0"], [str(uid)])
    ]
    atomic_write(etc / "group", "\n".join([f"root:x:{uid}:", *groups]) + "\n")
    # sshd refuses a user whose shadow entry it cannot read as "locked"; give root a readable
    # entry with no password (key login only).
    atomic_write(etc / "shadow", "root:*:19000:0:99999:7:::\n", 0o600)
