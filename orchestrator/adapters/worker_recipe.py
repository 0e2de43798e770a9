"""What runs on a worker pod over SSH: the initialization checks, the start command, the log path.

Sits beside :mod:`orchestrator.adapters.ssh` (the transport) under :mod:`orchestrator.adapters.provider`
(which runs these on the pods it knows). The checks and the command follow the original orchestrator
(banodoco/reigh-worker-orchestrator, ``orchestrator/runpod_client.py`` of its first commit and
``gpu_orchestrator/runpod/worker_startup.template.sh`` later). The start command
(:func:`build_start_command`) carries no secret: the credentials travel as NUL-terminated
``NAME=value`` records on the session's stdin (:func:`credential_records`), which the remote script
reads, checks against an allow-list and exports; the rest of the pod's own environment comes from its
init process (``/proc/1/environ``), because sshd gives every session a clean one.
``docs/worker-start.md`` says why, step by step, and lists every difference from the original's command.
"""

from __future__ import annotations

import posixpath
import re
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.adapters.ssh import SSHClient, truncate
from orchestrator.core import config, errors
from orchestrator.core.states import WORKER_ID_PATTERN

# Worker ids become pod names, file names and a command-line argument: keep them boring. The original's
# ids look like ``gpu-20250912_101500-1a2b3c4d``; the rule is the policy's (one pattern, in core).
WORKER_ID_RE = WORKER_ID_PATTERN


def validate_worker_id(worker_id: str) -> str:
    """Refuse a worker id that is not ``[A-Za-z0-9][A-Za-z0-9._-]*`` (at most 128 chars)."""
    if not isinstance(worker_id, str) or not WORKER_ID_RE.fullmatch(worker_id):
        raise errors.RunpodRequestError(
            f"refused: worker id {worker_id!r} must match {WORKER_ID_RE.pattern} "
            "(it becomes the pod name, a log file name and a command-line argument)"
        )
    return worker_id


# Where the worker's checkout may be on the network volume, searched in order (relative entries are under
# the volume's mount path). Today's original (banodoco/reigh-worker-orchestrator,
# gpu_orchestrator/runpod/worker_startup.template.sh, 2026-05) looks for Reigh-Worker, then
# Headless-Wan2GP, directly under /workspace; its first version used reigh/Headless-Wan2GP.
ORIGINAL_WORKER_DIR = "reigh/Headless-Wan2GP"
DEFAULT_WORKER_DIRS = ("Reigh-Worker", "Headless-Wan2GP", ORIGINAL_WORKER_DIR)
# The original's packages (its start command: apt-get update && apt-get install -y python3.10-venv ffmpeg),
# and python3.10-dev, which today's original adds because `uv sync` builds insightface from source and a
# fresh volume fails at compilation without Python's headers.
DEFAULT_APT_PACKAGES = ("python3.10-venv", "python3.10-dev", "ffmpeg")
LAUNCH_VENV = (
    "venv"  # the original: `python worker.py|headless.py --db-type supabase ...` in the checkout's venv
)
LAUNCH_UV = "uv"  # the newer worker: `uv run --python 3.10 --extra cuda124 python worker.py ...`
# The checkout decides: uv when it has uv.lock (Reigh-Worker since its move to uv, 2026-04), else venv.
LAUNCH_AUTO = "auto"
LAUNCHES = (LAUNCH_AUTO, LAUNCH_VENV, LAUNCH_UV)
# Where a pod without uv gets it (astral's installer, as today's original does: `curl -LsSf
# https://astral.sh/uv/install.sh | sh`, which installs into ~/.local/bin). Empty: never install.
UV_INSTALL_URL = config.DEFAULT_UV_INSTALL_URL
# Where root reads the variables a pod was created with: its init process (sshd sessions do not see them).
INIT_ENVIRON = "/proc/1/environ"

# Names the start script accepts on stdin: an allow-list, so this channel can only ever set the
# credentials the worker needs (never PATH, LD_PRELOAD, BASH_ENV and the like).
CREDENTIAL_VARS = ("SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY", "WORKER_ID")
# Without these the worker cannot talk to the database: the start fails, naming them (never their values).
REQUIRED_VARS = ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "WORKER_ID")
# Never taken from PID 1: the session's own bookkeeping and bash's special variables (some read-only),
# and variables that would change how the next shells start.
INIT_ENV_SKIPPED = (
    "_",
    "PWD",
    "OLDPWD",
    "SHLVL",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "MAIL",
    "TERM",
    "SSH_CLIENT",
    "SSH_CONNECTION",
    "SSH_TTY",
    "SSH_AUTH_SOCK",
    "SSH_ORIGINAL_COMMAND",
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "IFS",
    "PS1",
    "PS2",
    "PS4",
    "PROMPT_COMMAND",
    "CDPATH",
    "GLOBIGNORE",
    "BASH_XTRACEFD",
    "UID",
    "EUID",
    "PPID",
    "BASHPID",
    "BASH_VERSINFO",
    "GROUPS",
)


def _problem(message: str) -> errors.ConfigError:
    return errors.ConfigError([message])


@dataclass(frozen=True)
class WorkerStart:
    """How the worker is started on a pod: where its checkout is, what runs before it, how it is run.

    Built from the settings (``WORKER_DIRS``, ``WORKER_LAUNCH``, ``WORKER_GIT_BRANCH``,
    ``WORKER_APT_PACKAGES``, ``WORKER_WGP_PROFILE``, ``WORKER_POLL_INTERVAL_SEC``,
    ``RUNPOD_VOLUME_MOUNT_PATH``); the defaults are the original's, but for the poll interval. Invalid values raise ``ConfigError`` here too, so a library user gets the same message the
    daemon's configuration gives.
    """

    mount_path: str = "/workspace"
    dirs: tuple[str, ...] = DEFAULT_WORKER_DIRS
    launch: str = LAUNCH_AUTO
    git_branch: str = "main"
    # WORKER_GIT_COMMIT: the checkout is put at this commit instead of the branch's head ("" follows it).
    git_commit: str = ""
    apt_packages: tuple[str, ...] = DEFAULT_APT_PACKAGES
    wgp_profile: int = 1
    # ``--poll-interval``: seconds an idle worker sleeps between claims. Both workers take it as a whole
    # number (``type=int`` in banodoco/Reigh-Worker and peteromallet/Headless-Wan2GP ``worker.py``, and in
    # ``headless.py`` since 2025-05-21), their own default 10, which the original launched with.
    poll_interval: int = config.default_value(config.BY_NAME["WORKER_POLL_INTERVAL_SEC"])
    # The interpreter the venv launch runs (the original's `python`, found on PATH after activation).
    python: str = "python"
    git_pull_timeout: int = 30
    # Submodules (Reigh-Worker's Wan2GP since 2026-04): today's original gives their update 300 s.
    submodule_timeout: int = 300
    # Pods sharing the volume share the checkout: the sync waits for another pod's, whole (with a pin:
    # two fetches and a checkout of git_pull_timeout each, then the submodules), with a minute to spare.
    lock_wait: int = 450
    uv_install_url: str = UV_INSTALL_URL
    # A first `uv sync` on a fresh volume downloads and builds the whole environment (today's original
    # lets a second pod wait 1800 s for it); a second pod waits for it rather than sync the same .venv
    # at once.
    uv_sync_lock_wait: int = 1800
    # And no longer than that itself: a sync that hangs (a stalled index, a wedged build) then ends the
    # start, which the start watch sees at once, instead of holding the pod and the lock until the boot
    # timeout. Wait and sync together fit WORKER_SETUP_TIMEOUT_SEC's default of 3600 s.
    uv_sync_timeout: int = 1800
    apt_update_timeout: int = 300
    apt_install_timeout: int = 900
    init_environ: str = INIT_ENVIRON

    def __post_init__(self) -> None:
        object.__setattr__(self, "dirs", tuple(self.dirs))
        object.__setattr__(self, "apt_packages", tuple(self.apt_packages))
        if not self.mount_path.startswith("/"):
            raise _problem(f"RUNPOD_VOLUME_MOUNT_PATH={self.mount_path!r}: expected an absolute path")
        problems = config.worker_dir_problems(self.dirs) + config.apt_package_problems(self.apt_packages)
        branch = config.git_branch_problem(self.git_branch)
        object.__setattr__(self, "git_commit", self.git_commit.strip().lower())
        if self.git_commit:
            problems += [p for p in [config.git_commit_problem(self.git_commit)] if p]
        if self.launch not in LAUNCHES:
            problems.append(f"WORKER_LAUNCH={self.launch!r}: expected one of {', '.join(LAUNCHES)}")
        if problems or branch:
            raise errors.ConfigError(problems + ([branch] if branch else []))
        if (
            isinstance(self.wgp_profile, bool)
            or not isinstance(self.wgp_profile, int)
            or self.wgp_profile < 1
        ):
            raise _problem(f"WORKER_WGP_PROFILE={self.wgp_profile!r}: expected a whole number >= 1")
        if (
            isinstance(self.poll_interval, bool)
            or not isinstance(self.poll_interval, int)
            or self.poll_interval < 1
        ):
            raise _problem(f"WORKER_POLL_INTERVAL_SEC={self.poll_interval!r}: expected a whole number >= 1")
        if not self.python or "\x00" in self.python or "\n" in self.python:
            raise _problem(f"worker python {self.python!r} is not usable")
        if self.uv_install_url and not config.UV_INSTALL_URL_RE.fullmatch(self.uv_install_url):
            raise _problem(f"WORKER_UV_INSTALL_URL={self.uv_install_url!r}: expected an https:// URL")

    def worker_dirs(self) -> tuple[str, ...]:
        """The candidate checkouts, absolute, in search order."""
        return tuple(resolve_worker_dir(self.mount_path, d) for d in self.dirs)


def resolve_worker_dir(mount_path: str, directory: str) -> str:
    """An absolute checkout path: a relative ``directory`` is taken under the volume's mount path."""
    return posixpath.normpath(posixpath.join(mount_path, directory))


def headless_dir(mount_path: str) -> str:
    """The original's checkout: ``<mount>/reigh/Headless-Wan2GP``."""
    return resolve_worker_dir(mount_path, ORIGINAL_WORKER_DIR)


def worker_log_path(mount_path: str, worker_id: str) -> str:
    """One log file per worker on the volume (readable after the pod is gone), never a shared one."""
    return str(Path(mount_path) / "reigh" / "logs" / f"{validate_worker_id(worker_id)}.log")


@dataclass(frozen=True)
class InitCheck:
    name: str
    command: str


def init_checks(mount_path: str, dirs: Sequence[str] = DEFAULT_WORKER_DIRS) -> list[InitCheck]:
    """The original's four initialization checks, in order; the checkout check looks in ``dirs`` (in order)."""
    q = shlex.quote
    candidates = [resolve_worker_dir(mount_path, d) for d in dirs]
    listed = " ".join(q(c) for c in candidates)
    shown = q(", ".join(candidates))
    checkout = (
        f'for d in {listed}; do if [ -d "$d" ]; then ls -la "$d"; exit 0; fi; done; '
        f'echo "no worker checkout: "{shown}": No such file or directory"; exit 2'
    )
    return [
        InitCheck("storage_mount", f"ls -la {q(mount_path)}"),
        InitCheck("headless_dir", checkout),
        InitCheck("nvidia_smi", "nvidia-smi"),
        InitCheck("python", "python3 --version 2>&1 || python --version 2>&1"),
    ]


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def run_init_checks(
    ssh: SSHClient, mount_path: str, *, dirs: Sequence[str] = DEFAULT_WORKER_DIRS, timeout: float = 30.0
) -> list[CheckOutcome]:
    """Run the checks in order in one remote command (one channel, one shell: a quarter of the round
    trips and process starts of four separate commands); stop at the first failure, the one to report.
    Each check's stdout and stderr are captured together, framed by markers carrying a per-call nonce
    so a check's own output cannot forge them."""
    checks = init_checks(mount_path, dirs)
    nonce = secrets.token_hex(6)
    parts = []
    for c in checks:
        parts.append(
            f"printf '\\n@@{nonce} begin {c.name}\\n'; ( {c.command} ) 2>&1; rc=$?; "
            f'printf \'\\n@@{nonce} end {c.name} %d\\n\' "$rc"; [ "$rc" -eq 0 ] || exit 0'
        )
    r = ssh.run("\n".join(parts), timeout=timeout, log_as=f"init checks: {', '.join(c.name for c in checks)}")
    outcomes: list[CheckOutcome] = []
    text = r.stdout
    for c in checks:
        begin = f"\n@@{nonce} begin {c.name}\n"
        b = text.find(begin)
        if b < 0:
            if outcomes and not outcomes[-1].ok:
                break
            # The shell never reached this check: report what it said instead.
            outcomes.append(CheckOutcome(c.name, c.command, r.exit_code or 255, text.strip(), r.stderr))
            break
        body_start = b + len(begin)
        m = re.search(rf"\n@@{nonce} end {re.escape(c.name)} (\d+)\n", text[body_start:])
        if m is None:
            outcomes.append(CheckOutcome(c.name, c.command, r.exit_code or 255, text[body_start:], r.stderr))
            break
        body = text[body_start : body_start + m.start()]
        outcomes.append(CheckOutcome(c.name, c.command, int(m.group(1)), body, ""))
        text = text[body_start + m.end() - 1 :]
        if outcomes[-1].exit_code != 0:
            break
    return outcomes


def credential_records(values: Mapping[str, str | None]) -> bytes:
    """The bytes the start command reads on stdin: one ``NAME=value`` record per credential, each
    ended by a NUL byte (the one byte no environment value can hold, so values need no escaping at all:
    quotes, ``$``, backslashes, spaces and newlines arrive as they are). Unset values are left out."""
    out = bytearray()
    for name, value in values.items():
        if name not in CREDENTIAL_VARS:
            raise errors.RunpodRequestError(f"refused: {name} is not one of the start command's credentials")
        if value is None:
            continue
        if not isinstance(value, str) or "\x00" in value:
            raise errors.RunpodRequestError(f"refused: {name} must be text without NUL bytes")
        try:
            out += f"{name}={value}".encode() + b"\x00"
        except UnicodeEncodeError as e:
            raise errors.RunpodRequestError(f"refused: {name} is not valid text ({e.reason})") from e
    return bytes(out)


def _fill(template: str, **values: str) -> str:
    """Put already-quoted shell words into a script template at ``@NAME@`` (no braces to escape)."""
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    leftover = re.search(r"@[A-Z_]+@", template)
    if leftover:
        raise AssertionError(f"unfilled placeholder {leftover.group(0)} in the start script")
    return template


# Runs on the pod as `bash -c '<this>'`, in the SSH session: quick, in the foreground, so that whatever
# prevents the start is reported to the caller with its exit code; then the slow steps are detached.
_OUTER = r"""# Start of worker @WORKER_ID_TEXT@ (orchestrator.adapters.worker_recipe.build_start_command; docs/worker-start.md).
worker_id=@WORKER_ID@
log=@LOG@
# The detached shell must not source anything before it runs: BASH_ENV, or ~/.bashrc (which Debian's
# bash sources for a shell it thinks sshd started), would run after the credentials were exported and
# could overwrite them. Nor does a worker that outlives this session belong to it.
unset BASH_ENV ENV SSH_CLIENT SSH2_CLIENT SSH_CONNECTION SSH_TTY SSH_AUTH_SOCK
allowed=' @ALLOWED@ '
skip=' @SKIPPED@ '
given=' '
# 1. Credentials: NUL-terminated NAME=value records on stdin, allow-listed names only. They are never
#    in this command's text, in a file, or echoed.
while IFS= read -r -d '' rec; do
    case $rec in *=*) name=${rec%%=*} ;; *) echo "orchestrator: a malformed record on stdin was ignored" >&2; continue ;; esac
    case $name in ''|[0-9]*|*[!A-Za-z0-9_]*) echo "orchestrator: a malformed record on stdin was ignored" >&2; continue ;; esac
    case $allowed in
        *" $name "*) export "$name=${rec#*=}"; given="$given$name " ;;
        *) echo "orchestrator: $name is not accepted on stdin; ignored" >&2 ;;
    esac
done
# 2. The pod's own environment (given at pod creation: WORKER_ENV, RUNPOD_*, the image's PATH) lives in
#    its init process; sshd started this session with a clean one. Stdin's values win.
if [ -r @INIT_ENVIRON@ ]; then
    while IFS= read -r -d '' rec; do
        case $rec in *=*) name=${rec%%=*} ;; *) continue ;; esac
        case $name in ''|[0-9]*|*[!A-Za-z0-9_]*) continue ;; esac
        case "$given$skip" in *" $name "*) continue ;; esac
        if [ "$name" = PATH ]; then
            PATH=${rec#*=}${PATH:+:$PATH}; export PATH
        else
            export "$name=${rec#*=}"
        fi
    done < @INIT_ENVIRON@
else
    echo "orchestrator: "@INIT_ENVIRON@" is not readable; the pod's own environment was not imported" >&2
fi
missing=
for name in @REQUIRED@; do [ -n "${!name:-}" ] || missing="$missing $name"; done
if [ -n "$missing" ]; then echo "orchestrator: not received:$missing" >&2; exit 2; fi
if [ "$WORKER_ID" != "$worker_id" ]; then echo "orchestrator: WORKER_ID does not name this worker" >&2; exit 2; fi
# 3. The checkout: the first configured directory that exists.
dir=
for d in @DIRS@; do if [ -d "$d" ]; then dir=$d; break; fi; done
if [ -z "$dir" ]; then echo "orchestrator: no worker checkout at "@DIRS_SHOWN@ >&2; exit 4; fi
cd "$dir" || exit 4
launch=@LAUNCH_MODE@
if [ "$launch" = auto ]; then
    if [ -f uv.lock ]; then launch=uv; else launch=venv; fi
fi
# With WORKER_GIT_COMMIT the checkout is about to be moved (a volume left at another commit may lack
# the entry or uv.lock): its files are checked after the move, in the detached part, not here.
if [ -z @COMMIT@ ]; then
case $launch in
uv)
@CHECKS_UV@
    ;;
*)
@CHECKS_VENV@
    ;;
esac
fi
# 4. The slow steps and the worker, detached: own session, no stdin, output to this worker's log.
mkdir -p @LOG_DIR@ || exit 3
( umask 077; : >> "$log" ) || { echo "orchestrator: cannot write $log" >&2; exit 3; }
# 5. One worker process per pod: the detached worker inherits this lock and holds it for as long as it
#    runs (the container disk's /tmp: a stop wipes it with the process), so a second start of a running
#    worker starts nothing. Without flock, or a lock file, there is no such guard (never a failed start).
if command -v flock >/dev/null 2>&1 && { exec 9>>"${TMPDIR:-/tmp}/"@LOCK_NAME@; } 2>/dev/null; then
    if ! flock -n 9; then echo "already running: worker $worker_id"; exit 0; fi
else
    echo "orchestrator: no flock or no lock file: a second start would not be refused (with two processes under one id, the daemon takes the task of the first for a lost claim and runs it again)" >&2
fi
if command -v setsid >/dev/null 2>&1; then detach=setsid; else detach=; fi
$detach nohup bash --norc --noprofile -c @INNER@ orchestrator-worker-start "$launch" @LAUNCH_MODE@ >> "$log" 2>&1 < /dev/null &
echo "started pid $!"
"""

_CHECKS_VENV = r"""    if [ ! -f venv/bin/activate ]; then echo "orchestrator: no venv/bin/activate in $dir" >&2; exit 5; fi
    if [ ! -f worker.py ] && [ ! -f headless.py ]; then echo "orchestrator: neither worker.py nor headless.py in $dir" >&2; exit 6; fi"""

# uv itself may come later (installed in the detached part), but only if there is a way to get it.
_CHECKS_UV = r"""    if ! command -v uv >/dev/null 2>&1 && [ ! -x "$HOME/.local/bin/uv" ] && [ ! -x "$HOME/.cargo/bin/uv" ]; then
        if [ -z @UV_URL@ ] || ! command -v curl >/dev/null 2>&1; then echo "orchestrator: uv is not on the pod's PATH, and it cannot be installed (no installer URL, or no curl)" >&2; exit 7; fi
    fi
    if [ ! -f worker.py ]; then echo "orchestrator: no worker.py in $dir" >&2; exit 6; fi"""

# Runs detached, in the checkout, with the credentials exported; $1 is the launch (venv or uv). The
# original's steps in the original's order, and today's original's for a uv checkout: a hard reset to the
# branch instead of a pull, the submodules, uv installed if missing, `uv sync --locked`.
_INNER = r"""launch=$1
echo "orchestrator: starting worker $WORKER_ID in $PWD at $(date -u +%Y-%m-%dT%H:%M:%SZ) (launch: $launch)"
# Pods sharing the volume share this checkout: one sync at a time, and never for long. fd 8 holds the
# lock and is closed before the worker starts (the worker must not keep other pods' syncs waiting).
lock="${PWD%/*}/.${PWD##*/}.git-pull.lock"
pin=@COMMIT@
sync_checkout() {
    # Holding the checkout's lock, an index.lock older than a minute is a git killed mid-command (a pod
    # terminated during its start): left, it fails every later checkout of this volume. Without the
    # lock it may be another pod's git at work: left alone.
    if [ -n "${locked:-}" ] && [ -n "$(find .git -maxdepth 1 -name index.lock -mmin +1 2>/dev/null)" ]; then
        echo "orchestrator: removing a stale .git/index.lock"
        rm -f .git/index.lock
    fi
    if [ -n "$pin" ]; then
        # WORKER_GIT_COMMIT: this commit and no other, whatever the branch's head has become.
        echo "orchestrator: git fetch origin "@BRANCH@" && git checkout -f -B "@BRANCH@" $pin (WORKER_GIT_COMMIT)"
        timeout @PULL_TIMEOUT@ git fetch origin @BRANCH@ || echo "orchestrator: git fetch failed or timed out (exit $?)"
        if ! git cat-file -e "$pin^{commit}" 2>/dev/null; then
            # Not on the branch, or a shallow clone: ask for the commit by its full hash, which a server
            # that allows it (git's uploadpack.allowReachableSHA1InWant) serves.
            echo "orchestrator: git fetch origin $pin"
            timeout @PULL_TIMEOUT@ git fetch origin "$pin" || echo "orchestrator: git fetch of $pin failed (exit $?)"
        fi
        # The checkout itself unbounded, as the branch's: killed half-way on a slow volume, it would
        # leave work for the next start to redo, and be killed again.
        if git cat-file -e "$pin^{commit}" 2>/dev/null && git checkout -q -f -B @BRANCH@ "$pin"; then
            echo "orchestrator: git sync: ok (at $pin)"
        else
            # The start refuses below; the submodules of a commit it will not run are not worth fetching.
            echo "orchestrator: the checkout could not be put at $pin"
            return 0
        fi
    elif [ "$launch" = uv ]; then
        # A volume's checkout may sit on a stale branch that cannot fast-forward (today's original's
        # reason for fetch + reset), or carry a uv.lock an earlier in-pod relock rewrote.
        # -f -B: the branch made (or moved) at origin's and checked out over local changes, which a plain
        # checkout refuses (an in-pod relock of uv.lock, say, when WORKER_GIT_BRANCH changes).
        echo "orchestrator: git fetch origin "@BRANCH@" && git checkout -f -B "@BRANCH@" origin/"@BRANCH@
        timeout @PULL_TIMEOUT@ git fetch origin @BRANCH@ && git checkout -q -f -B @BRANCH@ origin/@BRANCH@
        rc=$?
    else
        echo "orchestrator: git pull origin "@BRANCH@
        timeout @PULL_TIMEOUT@ git pull origin @BRANCH@
        rc=$?
    fi
    if [ -z "$pin" ]; then
        if [ "$rc" -eq 0 ]; then echo "orchestrator: git sync: ok"; else echo "orchestrator: git sync failed or timed out (exit $rc); starting the checked-out code"; fi
    fi
    [ -f .gitmodules ] || return 0
    # A submodule path that exists without .git is content vendored before the move to a submodule;
    # `git submodule update` refuses to clone into it. Set aside (a rename on the same volume), not
    # deleted: it may hold downloaded weights.
    # NUL-separated "key<newline>path" records (-z): a path may hold spaces.
    git config -z -f .gitmodules --get-regexp '^submodule\..*\.path$' 2>/dev/null | while IFS= read -r -d '' rec; do
        sub=${rec#*$'\n'}
        # A fresh clone leaves an empty directory per submodule: nothing to set aside there.
        if [ -d "$sub" ] && [ ! -e "$sub/.git" ] && [ -n "$(ls -A "$sub" 2>/dev/null)" ]; then
            aside="$sub.pre-submodule-$(date -u +%Y%m%d%H%M%S)"
            echo "orchestrator: $sub is not a submodule checkout; moved aside to $aside"
            mv "$sub" "$aside"
        fi
    done
    echo "orchestrator: git submodule update --init --recursive"
    if timeout @SUBMODULE_TIMEOUT@ git submodule update --init --recursive; then
        echo "orchestrator: git submodule update: ok"
    else
        echo "orchestrator: git submodule update failed or timed out (exit $?)"
    fi
}
if command -v flock >/dev/null 2>&1 && { exec 8>>"$lock"; } 2>/dev/null; then
    flock -n 8 || echo "orchestrator: waiting for another pod's sync of the checkout (at most @LOCK_WAIT@ s)"
    if flock -w @LOCK_WAIT@ 8; then locked=1 sync_checkout; else echo "orchestrator: another pod held the checkout for @LOCK_WAIT@ s; starting the checked-out code"; fi
    exec 8>&-
else
    sync_checkout
fi
# A pinned checkout that is not at its commit (not found, or another pod held the checkout) would run
# code nobody chose.
if [ -n "$pin" ]; then
    case $(git rev-parse HEAD 2>/dev/null) in
        "$pin"*) ;;
        *) echo "orchestrator: the checkout is not at WORKER_GIT_COMMIT $pin; not starting the worker"; exit 10 ;;
    esac
fi
# Since banodoco/reigh-worker pull request 33 (2026-09) its entrypoint starts an Astrid GenericPackHost,
# which takes none of the arguments below and does not poll the Supabase queue: say so, rather than
# start a worker that exits at once or claims nothing. A server that still parses --supabase-url is
# the polling worker, whatever else it mentions.
server=source/runtime/worker/server.py
if [ -f "$server" ] && grep -qE 'GenericPackHost|launch_generic_pack_host' "$server" && ! grep -q -- '--supabase-url' "$server"; then
    echo "orchestrator: this checkout's worker ($(git rev-parse --short HEAD 2>/dev/null)) starts an Astrid GenericPackHost, which does not poll the Supabase queue; set WORKER_GIT_COMMIT to a commit before it; not starting the worker"
    exit 11
fi
# A declared submodule that is empty now means an import failure in the worker: do not start it.
if [ -f .gitmodules ]; then
    while IFS= read -r -d '' rec; do
        sub=${rec#*$'\n'}
        if [ -z "$(ls -A "$sub" 2>/dev/null)" ]; then
            echo "orchestrator: submodule $sub is missing or empty; not starting the worker"
            exit 8
        fi
    done < <(git config -z -f .gitmodules --get-regexp '^submodule\..*\.path$' 2>/dev/null)
fi
if [ "${2:-}" = auto ]; then
    # Chosen again on the checkout as synced (a pinned commit may or may not have uv.lock).
    if [ -f uv.lock ]; then now=uv; else now=venv; fi
    if [ "$now" != "$launch" ]; then echo "orchestrator: launch after the sync: $now"; launch=$now; fi
fi
# The entry, on the checkout as synced (a pinned start skipped the foreground's look, and a sync may
# have moved it): before apt and uv spend minutes on a start that cannot run.
if [ ! -f worker.py ] && { [ "$launch" = uv ] || [ ! -f headless.py ]; }; then
    echo "orchestrator: no worker.py$([ "$launch" = uv ] || echo ' nor headless.py') in $PWD; not starting the worker"
    exit 6
fi
if [ "$launch" = uv ]; then
# The packages first: uv sync builds against python3.10-dev's headers.
@APT@
@UV_PREPARE@
@LAUNCH_UV@
else
@ACTIVATE@
@APT@
@LAUNCH_VENV@
fi
"""

_ACTIVATE_VENV = r"""echo "orchestrator: activating venv/bin/activate"
. venv/bin/activate || { echo "orchestrator: cannot activate venv/bin/activate"; exit 5; }"""

# uv's cache on the volume (the container disk is small and a stop wipes it) and copies rather than
# hard links across file systems, as today's original sets them; the pod's own values win.
_UV_PREPARE = r"""[ -n "${UV_LINK_MODE:-}" ] || UV_LINK_MODE=copy
[ -n "${UV_CACHE_DIR:-}" ] || UV_CACHE_DIR=@UV_CACHE@
export UV_LINK_MODE UV_CACHE_DIR
PATH="$PATH:$HOME/.local/bin:$HOME/.cargo/bin"; export PATH
if ! command -v uv >/dev/null 2>&1; then
    echo "orchestrator: installing uv from "@UV_URL@
    ( set -o pipefail; timeout 120 curl -LsSf @UV_URL@ | timeout 300 sh ) || echo "orchestrator: the uv installer failed (exit $?)"
    command -v uv >/dev/null 2>&1 || { echo "orchestrator: no uv; not starting the worker"; exit 7; }
fi
echo "orchestrator: uv $(uv --version 2>&1)"
# One sync of the shared .venv at a time (fd 7, closed before the worker starts).
if command -v flock >/dev/null 2>&1 && { exec 7>>"${PWD%/*}/.${PWD##*/}.uv-sync.lock"; } 2>/dev/null; then
    flock -n 7 || echo "orchestrator: waiting for another pod's uv sync (at most @UV_LOCK_WAIT@ s)"
    flock -w @UV_LOCK_WAIT@ 7 || echo "orchestrator: another pod's uv sync took over @UV_LOCK_WAIT@ s; syncing anyway"
fi
echo "orchestrator: uv sync --locked --python 3.10 --extra cuda124"
# Streamed to the log as it runs (a first sync takes many minutes), and kept to look for the drift.
out="${TMPDIR:-/tmp}/orchestrator-uv-sync-$WORKER_ID.out"
timeout @UV_SYNC_TIMEOUT@ uv sync --locked --python 3.10 --extra cuda124 2>&1 | tee "$out"; rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ] && grep -qiE 'lockfile.*needs to be updated' "$out"; then
    # Upstream's uv.lock lags its pyproject.toml: relock in the pod, as today's original does (the next
    # start's reset puts upstream's uv.lock back).
    echo "orchestrator: uv.lock does not match pyproject.toml; uv lock, then uv sync"
    timeout @UV_SYNC_TIMEOUT@ uv lock --python 3.10 && timeout @UV_SYNC_TIMEOUT@ uv sync --python 3.10 --extra cuda124; rc=$?
fi
exec 7>&-
rm -f "$out"
if [ "$rc" -eq 124 ]; then echo "orchestrator: uv sync took over @UV_SYNC_TIMEOUT@ s; not starting the worker"; exit 9; fi
if [ "$rc" -ne 0 ]; then echo "orchestrator: uv sync failed (exit $rc); not starting the worker"; exit 9; fi"""

# The package lists of a fresh pod are empty: install only works after update. Failures are
# tolerated as in the original, but the step ends before the worker starts.
_APT = r"""echo "orchestrator: apt-get update"
if timeout @UPDATE_TIMEOUT@ apt-get update -q; then
    echo "orchestrator: apt-get update: ok"
    echo "orchestrator: apt-get install -y "@PKGS_SHOWN@
    DEBIAN_FRONTEND=noninteractive timeout @INSTALL_TIMEOUT@ apt-get install -y -q @PKGS@
    rc=$?
    if [ "$rc" -eq 0 ]; then echo "orchestrator: apt-get install: ok"; else echo "orchestrator: apt-get install failed (exit $rc); continuing"; fi
else
    echo "orchestrator: apt-get update failed (exit $?); apt-get install skipped; continuing"
fi"""


# The arguments are not echoed: they hold the credentials. --supabase-anon-key gets the service-role key:
# Headless-Wan2GP's REST client takes that flag's value first (its default, another project's anon key,
# when it is absent), and with an anon key Supabase's row-level security hides the worker's own In
# Progress task from it, so a task whose claim answer was lost, or a parent it must run again, is never
# found (banodoco/Headless-Wan2GP, worker.py's client set-up). Reigh-Worker takes SUPABASE_SERVICE_ROLE_KEY
# first either way.
_LAUNCH_VENV = r"""if [ -f worker.py ]; then entry=worker.py; set -- --wgp-profile @PROFILE@; else entry=headless.py; set --; fi
echo "orchestrator: exec python $entry --db-type supabase --supabase-url ... --supabase-anon-key ... --supabase-access-token ... --worker $WORKER_ID $* --poll-interval @POLL@"
exec @PYTHON@ "$entry" --db-type supabase --supabase-url "$SUPABASE_URL" --supabase-anon-key "$SUPABASE_SERVICE_ROLE_KEY" --supabase-access-token "$SUPABASE_SERVICE_ROLE_KEY" --worker "$WORKER_ID" "$@" --poll-interval @POLL@
"""

_LAUNCH_UV = r"""echo "orchestrator: exec uv run --python 3.10 --extra cuda124 python worker.py --supabase-url ... --supabase-access-token ... --worker $WORKER_ID --wgp-profile "@PROFILE@" --poll-interval "@POLL@
exec uv run --python 3.10 --extra cuda124 python worker.py --supabase-url "$SUPABASE_URL" --supabase-access-token "$SUPABASE_SERVICE_ROLE_KEY" --worker "$WORKER_ID" --wgp-profile @PROFILE@ --poll-interval @POLL@"""


def build_start_command(worker_id: str, start: WorkerStart | None = None) -> str:
    """The command that starts the worker on its pod: ``bash -c '<script>'``, with no secret in it.

    Feed it ``credential_records(...)`` on stdin (``SSHClient.run(..., stdin=...)``). In the SSH
    session, in the foreground (so a failure is reported with its exit code): read the records and
    export the allow-listed ones; import the pod's own environment from its init process
    (``/proc/1/environ``), never overriding a value from stdin; check the credentials are all there (2),
    find the checkout (4: the first of ``start.dirs`` that exists), its venv (5) and entry (6), or ``uv``
    (7); create the worker's log (3). Then, detached (``setsid nohup``, stdin from /dev/null, output
    to ``<mount>/reigh/logs/<worker id>.log``), the original's steps in the original's order:
    ``timeout 30 git pull origin <branch>`` (serialised with ``flock`` among the pods sharing the
    checkout; failure tolerated), venv activation, ``apt-get update`` then ``apt-get install -y
    <packages>`` (failures tolerated, finished before the worker starts), then ``exec`` the worker:
    ``python worker.py`` when the checkout has it, else the original's ``python headless.py``, with the
    original's arguments and ``--poll-interval`` (or the ``uv`` launch of the newer worker). The SSH call returns in about a second.
    """
    validate_worker_id(worker_id)
    start = start or WorkerStart()
    q = shlex.quote
    logfile = worker_log_path(start.mount_path, worker_id)
    dirs = start.worker_dirs()
    launch_uv = _fill(_LAUNCH_UV, PROFILE=str(int(start.wgp_profile)), POLL=str(int(start.poll_interval)))
    launch_venv = _fill(
        _LAUNCH_VENV,
        PYTHON=q(start.python),
        POLL=str(int(start.poll_interval)),
        PROFILE=str(int(start.wgp_profile)),
    )
    uv_prepare = _fill(
        _UV_PREPARE,
        UV_URL=q(start.uv_install_url),
        UV_CACHE=q(posixpath.join(start.mount_path, ".uv-cache")),
        UV_LOCK_WAIT=str(int(start.uv_sync_lock_wait)),
        UV_SYNC_TIMEOUT=str(int(start.uv_sync_timeout)),
    )
    if start.apt_packages:
        apt = _fill(
            _APT,
            UPDATE_TIMEOUT=str(int(start.apt_update_timeout)),
            INSTALL_TIMEOUT=str(int(start.apt_install_timeout)),
            PKGS=" ".join(q(p) for p in start.apt_packages),
            PKGS_SHOWN=q(" ".join(start.apt_packages)),
        )
    else:
        apt = 'echo "orchestrator: no apt packages configured (WORKER_APT_PACKAGES=none)"'
    inner = _fill(
        _INNER,
        BRANCH=q(start.git_branch),
        COMMIT=q(start.git_commit) if start.git_commit else "''",
        LOCK_WAIT=str(int(start.lock_wait)),
        PULL_TIMEOUT=str(int(start.git_pull_timeout)),
        SUBMODULE_TIMEOUT=str(int(start.submodule_timeout)),
        UV_PREPARE=uv_prepare,
        ACTIVATE=_ACTIVATE_VENV,
        APT=apt,
        LAUNCH_UV=launch_uv,
        LAUNCH_VENV=launch_venv,
    )
    outer = _fill(
        _OUTER,
        WORKER_ID_TEXT=worker_id,
        WORKER_ID=q(worker_id),
        LOG=q(logfile),
        LOG_DIR=q(str(Path(logfile).parent)),
        ALLOWED=" ".join(CREDENTIAL_VARS),
        SKIPPED=" ".join(INIT_ENV_SKIPPED),
        INIT_ENVIRON=q(start.init_environ),
        LOCK_NAME=q(LOCK_NAME.format(worker_id=worker_id)),
        COMMIT=q(start.git_commit) if start.git_commit else "''",
        REQUIRED=" ".join(REQUIRED_VARS),
        DIRS=" ".join(q(d) for d in dirs),
        DIRS_SHOWN=q(", ".join(dirs)),
        LAUNCH_MODE=q(start.launch),
        CHECKS_UV=_fill(_CHECKS_UV, UV_URL=q(start.uv_install_url)),
        CHECKS_VENV=_CHECKS_VENV,
        INNER=q(inner),
    )
    return f"bash --norc --noprofile -c {q(outer)}"


# --- the start watch --------------------------------------------------------------------------------

# The start's per-worker lock (step 5 of the start command): held by the detached start and by the worker
# it becomes for as long as either runs, on the container disk's temporary directory.
LOCK_NAME = "orchestrator-worker-{worker_id}.lock"
# How much of the worker's log the watch reads to find the start's phase (the current start's lines sit
# at its end: a resumed pod's log holds the runs before it), and how many lines it returns.
WATCH_SCAN_BYTES = 4_000_000
WATCH_TAIL_LINES = 40
WATCH_TAIL_BYTES = 8192

# Reads, changes nothing: `flock -n LOCK true` takes the lock and lets it go at once when nobody holds
# it, and only then is the start known to have ended. The temporary directory is found as the start
# found it: TMPDIR from the pod's init process, else the session's, else /tmp.
_WATCH = r"""log=@LOG@
name=@LOCK_NAME@
tmp=
if [ -r @INIT_ENVIRON@ ]; then tmp=$(tr '\0' '\n' < @INIT_ENVIRON@ 2>/dev/null | sed -n 's/^TMPDIR=//p' | tail -n 1); fi
lock="${tmp:-${TMPDIR:-/tmp}}/$name"
why=
if [ ! -e "$lock" ]; then state=unknown; why="no lock file $lock"
elif ! command -v flock >/dev/null 2>&1; then state=unknown; why="no flock on the pod"
else
    flock -n "$lock" true 2>/dev/null; rc=$?
    case $rc in 0) state=exited ;; 1) state=running ;; *) state=unknown; why="flock $lock: exit $rc" ;; esac
fi
last=$(tail -c @SCAN@ "$log" 2>/dev/null | grep -a -E '^orchestrator: (starting worker|exec) ' | tail -n 1)
case $last in "orchestrator: exec "*) phase=worker ;; "orchestrator: starting worker "*) phase=setup ;; *) phase=none ;; esac
printf '@@%s state %s\n' @NONCE@ "$state"
printf '@@%s phase %s\n' @NONCE@ "$phase"
printf '@@%s why %s\n' @NONCE@ "$why"
printf '@@%s tail\n' @NONCE@
# The log's end only for a start that ended (it says why); a download's progress line can be megabytes.
if [ "$state" = exited ]; then tail -n @LINES@ "$log" 2>&1 | tail -c @TAIL_BYTES@; fi
"""


def build_watch_command(worker_id: str, start: WorkerStart, nonce: str) -> str:
    """The command that asks a pod whether the start of ``worker_id`` still runs (read by
    :func:`parse_watch`): its state from the start's lock, its phase from the start's own lines in the
    worker's log (``orchestrator: starting worker`` opens the setup, ``orchestrator: exec`` ends it),
    then, for a start that ended, the log's last lines (at most 8 KB). ``nonce`` frames the answer, so a
    log line cannot forge it."""
    validate_worker_id(worker_id)
    if not re.fullmatch(r"[0-9a-f]{6,32}", nonce):
        raise ValueError("the nonce must be 6-32 lowercase hex digits")
    q = shlex.quote
    script = _fill(
        _WATCH,
        LOG=q(worker_log_path(start.mount_path, worker_id)),
        LOCK_NAME=q(LOCK_NAME.format(worker_id=worker_id)),
        INIT_ENVIRON=q(start.init_environ),
        SCAN=str(WATCH_SCAN_BYTES),
        LINES=str(WATCH_TAIL_LINES),
        TAIL_BYTES=str(WATCH_TAIL_BYTES),
        NONCE=nonce,
    )
    return f"bash --norc --noprofile -c {q(script)}"


def parse_watch(output: str, nonce: str) -> tuple[str, str | None, str, str]:
    """``(state, phase, why, tail)`` from :func:`build_watch_command`'s output. Anything not framed as
    it frames its answer reads as ``unknown``: a pod that answered something else proves nothing."""
    lines = output.split("\n")
    fields: dict[str, str] = {}
    for key, line in zip(("state", "phase", "why", "tail"), lines, strict=False):
        prefix = f"@@{nonce} {key}"
        if line != prefix and not line.startswith(prefix + " "):
            return "unknown", None, f"unexpected answer: {truncate(output, 200)!r}", ""
        fields[key] = line[len(prefix) + 1 :]
    if len(fields) < 4:
        return "unknown", None, f"unexpected answer: {truncate(output, 200)!r}", ""
    state = fields["state"] if fields["state"] in ("running", "exited", "unknown") else "unknown"
    phase = fields["phase"] if fields["phase"] in ("setup", "worker") else None
    return state, phase, fields["why"], "\n".join(lines[4:]).rstrip("\n")
