"""A pod sandbox's container on the host: its container disk, its mounts, and the init stage that enters it.

Part of the pod sandboxes (``orchestrator.standins.sandbox``): :func:`lay_out` writes what a container
runtime would prepare for the pod (the container disk under the pod's directory: overlay upper layers for
``/etc`` and ``/usr/bin``, private ``/root`` and ``/tmp``, apt's lists and dpkg's status; the image's files
from :mod:`orchestrator.standins.sandbox_image`, sshd's from :mod:`orchestrator.standins.sandbox_sshd`,
apt from :mod:`orchestrator.standins.sandbox_apt`) and ``init.sh``, the namespace init's first stage,
which :func:`init_script` writes: the mounts, the hostname, the lifeline watchdog, then ``exec`` of PID 1's
start script. :func:`namespace_command` is the ``unshare`` that runs it.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.core.errors import SandboxError
from orchestrator.standins.sandbox_apt import APT_INSTALL_S_PER_PACKAGE, APT_UPDATE_S, apt_script
from orchestrator.standins.sandbox_host import (
    APT_LISTS,
    DPKG_STATUS,
    UNSHARE,
    Mode,
    atomic_write,
    host_has,
    overlay_path,
    reexposed_paths,
    rmtree,
    tool,
    under,
    whiteout,
)
from orchestrator.standins.sandbox_image import (
    ABSENT_PACKAGES,
    ABSENT_PROGRAMS,
    BASHRC,
    PROFILE,
    START_SCRIPT,
    dpkg_status_without,
    nvidia_smi_script,
    start_script,
)
from orchestrator.standins.sandbox_sshd import (
    HOST_KEY,
    USERNS_SSHD_UID,
    sshd_config,
    start_sshd_lines,
    write_userns_passwd,
)

if TYPE_CHECKING:
    from orchestrator.standins.sandbox import PodSandbox


def lay_out(box: PodSandbox, mode: Mode) -> None:
    """Write the pod's container disk and its init stage (a fresh disk unless the pod keeps its own)."""
    d, c = box.dir, box.container_dir
    d.mkdir(parents=True, exist_ok=True)
    if not box.keep_container_disk:
        # A new container disk. Renamed first: a dying instance of this pod may still have it mounted.
        wipe_container_disk(box)
    fresh = not c.exists()
    for sub in ("etc/ssh", "etc/sim-pod", "usr-bin", "root", "tmp", "apt-lists", "work"):
        (c / sub).mkdir(parents=True, exist_ok=True)
    (c / "tmp").chmod(0o1777)
    (c / "root").chmod(0o700)

    # /etc: sshd's files, PID 1's script; the host's own host keys hidden, so that the start script finds
    # none on a new container disk and generates the pod's own at start-up, as the image does.
    etc = c / "etc"
    for host_file in Path("/etc/ssh").glob("ssh_host_*"):
        whiteout(etc / "ssh" / host_file.name)
    atomic_write(etc / "ssh" / "sshd_config", sshd_config(box.port, mode), 0o644)
    atomic_write(etc / "hostname", box.hostname + "\n")
    pid1 = start_script(box.pod_id, start_sshd=start_sshd_lines(ssh_refuse=box.ssh_refuse), host_key=HOST_KEY)
    atomic_write(etc / "sim-pod" / "start.sh", pid1, 0o755)
    if mode == "userns":
        write_userns_passwd(etc)

    # /usr/bin: the fake nvidia-smi and apt, an interpreter where the host has none, no ffmpeg.
    usr_bin = c / "usr-bin"
    atomic_write(usr_bin / "nvidia-smi", nvidia_smi_script(box.gpu_name, box.vram_mb, box.gpu_count), 0o755)
    apt = apt_script(APT_UPDATE_S, APT_INSTALL_S_PER_PACKAGE)
    for name in ("apt-get", "apt"):
        atomic_write(usr_bin / name, apt, 0o755)
    if not host_has("python3") and not os.path.lexists(usr_bin / "python3"):
        (usr_bin / "python3").symlink_to(sys.executable)
    if not host_has("python") and not os.path.lexists(usr_bin / "python"):
        (usr_bin / "python").symlink_to("python3")  # the image links python to its python3
    if fresh:
        for program in ABSENT_PROGRAMS:
            for where in host_has(program):
                whiteout(upper_for(box, where) / program)

    # /root: Ubuntu's dotfiles; apt's lists empty; dpkg's status as the host has it, minus ffmpeg.
    if fresh:
        atomic_write(c / "root" / ".bashrc", BASHRC)
        atomic_write(c / "root" / ".profile", PROFILE)
        text = Path(DPKG_STATUS).read_text(errors="surrogateescape")
        (c / "dpkg-status").write_text(dpkg_status_without(text, ABSENT_PACKAGES), errors="surrogateescape")

    if mode == "root":
        # sshd's privilege separation chroots there; Debian creates it only when the service runs.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    atomic_write(d / "init.sh", init_script(box, mode), 0o700)
    mp = Path(mountpoint_on_host(box))
    if not mp.is_dir():
        try:
            mp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SandboxError(
                f"mount path {box.mount_path} does not exist and cannot be created ({exc}); "
                "create it once as root"
            ) from exc
    if box.volume_dir is not None and not box.volume_dir.is_dir():
        raise SandboxError(f"pod {box.pod_id}: volume directory {box.volume_dir} does not exist")


def wipe_container_disk(box: PodSandbox) -> None:
    """Delete the pod's container disk (everything but its volume), as a stop or termination does."""
    c = box.container_dir
    if c.exists():
        # Renamed first, as in lay_out: the name is free at once for a new start.
        trash = box.dir / f".container-old-{os.getpid()}-{time.monotonic_ns()}"
        c.rename(trash)
        rmtree(trash)


def overlays(box: PodSandbox) -> list[tuple[str, Path]]:
    """(host directory, upper layer) of each overlay: /etc, /usr/bin, and PATH dirs hiding programs."""
    pairs = [
        ("/etc", box.container_dir / "etc"),
        (os.path.realpath("/usr/bin"), box.container_dir / "usr-bin"),
    ]
    for program in ABSENT_PROGRAMS:
        for where in host_has(program):
            if all(where != top for top, _ in pairs):
                pairs.append((where, upper_for(box, where)))
    return pairs


def upper_for(box: PodSandbox, directory: str) -> Path:
    if directory == os.path.realpath("/usr/bin"):
        return box.container_dir / "usr-bin"
    upper = box.container_dir / ("upper" + re.sub(r"[^A-Za-z0-9]", "-", directory))
    upper.mkdir(parents=True, exist_ok=True)
    return upper


def init_script(box: PodSandbox, mode: Mode) -> str:
    """The namespace init's first stage, as a container runtime: mounts, watchdog, exec PID 1's script."""
    q = shlex.quote
    d, c = str(box.dir), box.container_dir
    mount = tool("mount")
    lines = [
        "#!/bin/sh",
        f"# Container start of emulated pod {box.pod_id} (orchestrator.standins.sandbox); PID 1 of its namespace.",
        "set -eu",
        f"{tool('hostname')} {q(box.hostname)} 2>/dev/null || true",
    ]
    # The container disk first: its paths may sit under /tmp or /root, covered below.
    for i, (top, upper) in enumerate(overlays(box)):
        work = c / "work" / str(i)
        work.mkdir(parents=True, exist_ok=True)
        opts = f"lowerdir={top},upperdir={overlay_path(upper)},workdir={overlay_path(work)}"
        lines.append(f"{mount} -t overlay overlay -o {q(opts)} {q(top)}")
    lines.append(f"{mount} --bind {q(str(c / 'apt-lists'))} {APT_LISTS}")
    lines.append(f"{mount} --bind {q(str(c / 'dpkg-status'))} {DPKG_STATUS}")
    volume = box.volume_dir or box.dir / "volume"
    volume.mkdir(parents=True, exist_ok=True)
    lines.append(f"{mount} --bind {q(str(volume))} {q(mountpoint_on_host(box))}")
    # Private /root and /tmp hide host paths the pod still needs (its own state dir, the project's
    # interpreter): bind them into the private dirs at the same relative path before covering.
    # Ancestors first, descendants of an exposed path skipped: a later bind would hide an earlier one.
    needed: list[str] = []
    for path in sorted({d, *reexposed_paths()}):
        if not any(under(path, kept) for kept in needed):
            needed.append(path)
    for top, private in (("/root", c / "root"), ("/tmp", c / "tmp")):
        for path in needed:
            if under(path, top) and path != top:
                # Created here rather than by `mkdir` in the script: one exec fewer per path and pod.
                Path(str(private) + path[len(top) :]).mkdir(parents=True, exist_ok=True)
                target = q(str(private) + path[len(top) :])
                bind = f"{mount} --bind {q(path)} {target}"
                # The pod's own dir is essential; an interpreter path we may not read is not.
                lines.append(bind if path == d or under(d, path) else f"{{ {bind}; }} 2>/dev/null || true")
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
    pwd = box.init_env().get("PWD")
    keep_pwd = f"PWD={q(pwd)}" if pwd is not None else "-u PWD"
    start = f"{tool('env')} {keep_pwd} /bin/bash {START_SCRIPT}"
    if mode == "userns":
        # PID 1 becomes the pod's root of a nested user namespace: a non-zero uid, as sshd needs
        # (its privilege separation wants uids this namespace cannot map), and the same uid and
        # namespace as the sessions, so that they may read /proc/1/environ.
        uid = USERNS_SSHD_UID
        start = f"{tool(UNSHARE)} --user --map-user={uid} --map-group={uid} {start}"
    lines.append(f"exec {start}")
    return "\n".join(lines) + "\n"


def mountpoint_on_host(box: PodSandbox) -> str:
    """Where the volume is bound: a mount path under /root or /tmp goes into the private dir there."""
    for top, private in (("/root", box.container_dir / "root"), ("/tmp", box.container_dir / "tmp")):
        if under(box.mount_path, top):
            return str(private) + box.mount_path[len(top) :]
    return box.mount_path


def namespace_command(box: PodSandbox, mode: Mode) -> list[str]:
    """The host command that creates the pod's namespaces and runs its init stage."""
    cmd = [tool(UNSHARE)]
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
        str(box.dir / "init.sh"),
    ]
    return cmd
