"""What the pod sandboxes need of the host: its privileges, its /proc, its programs and a few file tricks.

Part of the pod sandboxes (``orchestrator.standins.sandbox``): :func:`detect_mode` decides, once per
process, whether pods are built as root or inside an unprivileged user namespace (and says why neither
works when that is so); the /proc helpers find and sweep a pod's processes; the file helpers write the
container disk (atomic writes, overlayfs whiteouts); :func:`reexposed_paths` lists the host paths a pod
must still see under its private ``/root`` and ``/tmp``. Nothing here knows what a pod is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from orchestrator.core.errors import SandboxError

SSHD = "/usr/sbin/sshd"
UNSHARE = "unshare"
#: The PATH Debian's sshd gives root's sessions (``--with-superuser-path``); also what a clean session
#: searches for the pod's programs, so sandbox-only programs live in one of these directories.
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: apt's lists and dpkg's status: each pod binds its own copy over these host paths.
APT_LISTS = "/var/lib/apt/lists"
DPKG_STATUS = "/var/lib/dpkg/status"

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
            rmtree(Path(tmp) / "work")
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


def rmtree(path: Path) -> None:
    """Remove a tree that may hold overlayfs's mode-000 work directories (owned by us)."""
    if not path.exists() and not path.is_symlink():
        return
    for top, dirs, _files in os.walk(path):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(top, name), 0o700)
    shutil.rmtree(path, ignore_errors=True)


# --- /proc helpers -----------------------------------------------------------------------------------


def proc_pids() -> Iterable[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(x) for x in text.split()]
    except (OSError, ValueError):
        pass
    found = []
    for p in proc_pids():
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields restart after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(p)
    return found


def ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith("Z")


# --- files and programs ----------------------------------------------------------------------------


def overlay_path(path: Path) -> str:
    """A path usable in overlayfs's comma- and colon-separated mount options."""
    text = str(path)
    if any(ch in text for ch in ",:\\\n\t "):
        raise SandboxError(f"the pod state directory {text!r} cannot be used in overlayfs options")
    return text


def whiteout(path: Path) -> None:
    """Hide the lower layer's ``path`` in an overlay (a 0/0 character device, which needs no privilege)."""
    if not os.path.lexists(path):
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write through a new inode, so a shell still reading the old file (a dying pod's) is not disturbed."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def reexposed_paths() -> list[str]:
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


def under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def host_has(program: str, dirs: str = STD_PATH) -> list[str]:
    """Directories of ``dirs`` (resolved, deduplicated) in which the host has ``program``."""
    found: list[str] = []
    for d in dirs.split(":"):
        real = os.path.realpath(d)
        if real not in found and os.path.lexists(os.path.join(real, program)):
            found.append(real)
    return found


def tool(name: str) -> str:
    """A host program's absolute path: the init stage runs with the pod's PATH, which may be anything."""
    return shutil.which(name, path=STD_PATH) or name
