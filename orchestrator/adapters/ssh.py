"""SSH to worker pods: the paramiko wrapper, the worker's initialization checks and its start command.

Sits under ``orchestrator.runpod_client`` (which knows pods) and above paramiko (which knows bytes).
The seed's wrapper is kept as it was used (the original orchestrator, banodoco/reigh-worker-orchestrator,
``orchestrator/runpod_client.py`` of its first commit): ``SSHClient(hostname, port, username, password,
private_key_path, timeout)``, ``connect()``, ``execute_command(command, timeout=600)`` returning
``(exit_code, stdout, stderr)``, ``disconnect()``; the private key when its file exists, else the
password. What it adds:
- Host keys are trusted on first use and pinned: the fingerprint of the key a pod presented is
  exposed (``SSHClient.host_key_fingerprint``) so the daemon can record it in ``workers.metadata``;
  given an expected fingerprint, a different key is refused (``SSHHostKeyChanged``) before any
  credential is sent.
- Failures are told apart: ``SSHRefused`` (nothing listening / connection dropped before the
  banner), ``SSHAuthFailed`` (our key or password refused), ``SSHTimeout`` (connect, banner, auth or a
  remote command took too long), each chained to paramiko's exception.
- Remote commands run with a hard deadline, may be fed bytes on stdin, and read stdout and stderr
  together, so a chatty command cannot deadlock and a hung one cannot hold a thread forever.
- The start command (``build_start_command``) carries no secret: the credentials travel as
  NUL-terminated ``NAME=value`` records on the session's stdin (``credential_records``), which the
  remote script reads, checks against an allow-list and exports; the rest of the pod's own environment
  comes from its init process (``/proc/1/environ``), because sshd gives every session a clean one.
  ``docs/worker-start.md`` says why, step by step, and lists every difference from the seed's command.
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import re
import secrets
import select
import shlex
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko
import structlog

from orchestrator.core import config, errors

log = structlog.get_logger(__name__)

OUTPUT_LOG_CHARS = 500
# Passwords everyone knows (the seed's fallback for Runpod pods): not secrets to mask.
PUBLIC_DEFAULT_PASSWORDS = ("runpod",)

# Worker ids become pod names, file names and a command-line argument: keep them boring. The seed's
# ids look like ``gpu-20250912_101500-1a2b3c4d``.
WORKER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_worker_id(worker_id: str) -> str:
    """Refuse a worker id that is not ``[A-Za-z0-9][A-Za-z0-9._-]*`` (at most 128 chars)."""
    if not isinstance(worker_id, str) or not WORKER_ID_RE.fullmatch(worker_id):
        raise errors.RunpodRequestError(
            f"refused: worker id {worker_id!r} must match {WORKER_ID_RE.pattern} "
            "(it becomes the pod name, a log file name and a command-line argument)"
        )
    return worker_id


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:<base64>`` fingerprint of a host key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _exception_chain(e: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while e is not None and len(out) < 10:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def truncate(text: str, limit: int = OUTPUT_LOG_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


class _PinningPolicy(paramiko.MissingHostKeyPolicy):
    """Trust on first use; with an expected fingerprint, refuse any other key."""

    def __init__(self, expected: str | None) -> None:
        self.expected = expected
        self.seen: str | None = None
        self.key_type: str | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.seen = fingerprint(key)
        self.key_type = key.get_name()
        if self.expected is None:
            # Trust on first use, then pinned: a reconnect of this client (the password retry, a
            # dropped session) must meet the same key.
            self.expected = self.seen
        elif self.seen != self.expected:
            raise errors.SSHHostKeyChanged(
                f"host key of {hostname} changed: expected {self.expected}, got {self.seen} "
                "(refusing to connect; if the pod was really replaced, clear the recorded fingerprint)"
            )


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class SSHClient:
    """One SSH connection to a pod. Use as a context manager, or the seed's pattern::

        ssh = SSHClient(ip, port, "root", password="runpod", private_key_path="~/.ssh/id_ed25519")
        ssh.connect()
        exit_code, stdout, stderr = ssh.execute_command("nvidia-smi")
        ssh.disconnect()

    The positional parameters are the seed's (``hostname, port, username, password, private_key_path,
    timeout``; ``timeout`` bounds the connection). Authentication as the seed did it: the private key
    when ``pkey`` is given or ``private_key_path`` names an existing file, else the password; with both
    a key and a password, the password is tried only if the key is refused.
    """

    def __init__(
        self,
        hostname: str,
        port: int = 22,
        username: str = "root",
        password: str | None = None,
        private_key_path: str | Path | None = None,
        timeout: float = 10.0,
        *,
        pkey: paramiko.PKey | None = None,
        connect_timeout: float | None = None,
        command_timeout: float = 60.0,
        expected_fingerprint: str | None = None,
        secrets: Sequence[str] = (),
        log_fields: dict[str, Any] | None = None,
    ) -> None:
        self.host = self.hostname = hostname
        self.port = int(port)
        self.username = username
        self.password = password
        self.private_key_path = str(private_key_path) if private_key_path else None
        self.pkey = pkey
        self.connect_timeout = float(timeout if connect_timeout is None else connect_timeout)
        self.command_timeout = command_timeout
        self.expected_fingerprint = expected_fingerprint
        # The seed's default password is public knowledge: masking it would only garble outputs.
        self._secrets = tuple(
            s for s in (*secrets, password or "") if s and len(s) >= 4 and s not in PUBLIC_DEFAULT_PASSWORDS
        )
        self._fields = dict(log_fields or {})
        self._policy = _PinningPolicy(expected_fingerprint)
        self._client: paramiko.SSHClient | None = None

    # --- connection ------------------------------------------------------------------------------

    @property
    def host_key_fingerprint(self) -> str | None:
        return self._policy.seen

    @property
    def connected(self) -> bool:
        t = self._client.get_transport() if self._client else None
        return bool(t and t.is_active())

    def _load_key(self) -> paramiko.PKey | None:
        if self.pkey is not None:
            return self.pkey
        if not self.private_key_path:
            return None
        path = os.path.expanduser(self.private_key_path)
        if not os.path.exists(path):
            # The seed's rule: the key when its file exists, else the password.
            return None
        try:
            self.pkey = paramiko.PKey.from_path(path)
        except (OSError, paramiko.SSHException) as e:
            raise errors.SSHAuthFailed(f"cannot load private key {self.private_key_path}: {e}") from e
        return self.pkey

    def connect(self) -> SSHClient:
        if self.connected:
            return self
        key = self._load_key()
        if key is None and not self.password:
            missing = f" ({self.private_key_path} does not exist)" if self.private_key_path else ""
            raise errors.SSHAuthFailed(f"no SSH private key{missing} and no password configured")
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(self._policy)
        started = time.monotonic()
        try:
            try:
                self._connect_once(client, key, self.password if key is None else None)
            except paramiko.AuthenticationException:
                if key is None or not self.password:
                    raise
                # Key first; a password only if one is configured and the pod offers it.
                client.close()
                client = paramiko.SSHClient()
                client.set_missing_host_key_policy(self._policy)
                self._connect_once(client, None, self.password)
        except errors.SSHError:
            client.close()
            raise
        except Exception as e:
            # paramiko's transport thread keeps the real cause (a banner timeout, say) while the
            # caller only sees the follow-up ("No existing session"): report the real one.
            transport = client.get_transport()
            saved = getattr(transport, "saved_exception", None) if transport is not None else None
            if saved is None and transport is not None and transport.is_active() and not transport.remote_version:
                # start_client gave up waiting (paramiko then fails with "No existing session"): the
                # port accepted the connection but never sent an SSH banner within the timeout.
                saved = TimeoutError(f"no SSH banner within {self.connect_timeout}s")
            client.close()
            raise self._map_connect_error(e, saved) from e
        self._client = client
        log.info(
            "ssh_connected",
            host=self.host,
            port=self.port,
            host_key_fingerprint=self.host_key_fingerprint,
            pinned=bool(self.expected_fingerprint),
            elapsed_ms=round((time.monotonic() - started) * 1000),
            **self._fields,
        )
        return self

    def _connect_once(self, client: paramiko.SSHClient, key: paramiko.PKey | None, password: str | None) -> None:
        client.connect(
            self.host,
            port=self.port,
            username=self.username,
            pkey=key,
            password=password,
            timeout=self.connect_timeout,
            banner_timeout=self.connect_timeout,
            auth_timeout=self.connect_timeout,
            channel_timeout=self.connect_timeout,
            look_for_keys=False,
            allow_agent=False,
        )

    def _map_connect_error(self, e: BaseException, saved: BaseException | None = None) -> errors.SSHError:
        where = f"{self.host}:{self.port}"
        if isinstance(e, paramiko.AuthenticationException):
            return errors.SSHAuthFailed(f"SSH authentication to {where} as {self.username} failed: {e}")
        if isinstance(e, TimeoutError | socket.timeout):
            return errors.SSHTimeout(f"SSH connect to {where} timed out after {self.connect_timeout}s")
        if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError | ConnectionRefusedError):
            return errors.SSHRefused(f"SSH connection to {where} refused: {e}")
        if isinstance(e, ConnectionResetError | EOFError | BrokenPipeError | ConnectionAbortedError):
            return errors.SSHRefused(f"SSH connection to {where} dropped: {type(e).__name__}: {e}")
        if isinstance(e, paramiko.SSHException):
            text = str(e) if saved is None else f"{saved} ({e})"
            chain = _exception_chain(saved) + _exception_chain(e)
            if "timed out" in text.lower() or any(isinstance(c, TimeoutError | socket.timeout) for c in chain):
                return errors.SSHTimeout(f"SSH to {where} timed out before authentication: {text}")
            # e.g. "Error reading SSH protocol banner" after EOF: the port accepted, then hung up.
            return errors.SSHRefused(f"SSH to {where} failed before authentication: {text}")
        if isinstance(e, OSError):
            return errors.SSHRefused(f"SSH connection to {where} failed: {type(e).__name__}: {e}")
        return errors.SSHError(f"SSH to {where} failed: {type(e).__name__}: {e}")

    def disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> SSHClient:
        return self.connect()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.disconnect()

    # --- commands --------------------------------------------------------------------------------

    def _mask(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "[REDACTED]")
        return text

    def execute_command(self, command: str, timeout: float = 600) -> tuple[int, str, str]:
        """The seed's call: run ``command`` and return ``(exit_code, stdout, stderr)``.

        The seed's default timeout (600 s). Unlike the seed, an unconnected client connects first, and
        failures raise ``orchestrator.core.errors.SSHError`` types instead of paramiko's.
        """
        return self.execute(command, timeout=timeout)

    def execute(
        self, command: str, timeout: float | None = None, *, log_as: str | None = None, stdin: bytes | None = None
    ) -> tuple[int, str, str]:
        """Run ``command``; return ``(exit_code, stdout, stderr)``. ``log_as`` is what gets logged."""
        r = self.run(command, timeout=timeout, log_as=log_as, stdin=stdin)
        return r.exit_code, r.stdout, r.stderr

    def run(
        self, command: str, timeout: float | None = None, *, log_as: str | None = None, stdin: bytes | None = None
    ) -> CommandResult:
        """Run ``command`` with a deadline; ``stdin`` (if any) is sent and then the channel's write side
        is shut, so the remote reads EOF after it. ``stdin`` is never logged, only its length."""
        if not self.connected:
            self.connect()
        assert self._client is not None
        limit = self.command_timeout if timeout is None else timeout
        transport = self._client.get_transport()
        if transport is None:
            raise errors.SSHRefused(f"SSH connection to {self.host}:{self.port} is closed")
        started = time.monotonic()
        deadline = started + limit
        shown = self._mask(log_as if log_as is not None else command)
        try:
            chan = transport.open_session(timeout=min(limit, self.connect_timeout))
        except paramiko.SSHException as e:
            raise errors.SSHRefused(f"cannot open a session on {self.host}:{self.port}: {e}") from e
        out = bytearray()
        err = bytearray()
        pending = bytes(stdin or b"")
        try:
            chan.exec_command(command)
            if not pending:
                chan.shutdown_write()
            while True:
                if pending:
                    if chan.closed or chan.exit_status_ready() or chan.eof_received:
                        # The remote stopped reading (exited early): what is left cannot be delivered.
                        pending = b""
                    elif chan.send_ready():
                        # Interleaved with reading: a remote that writes before it reads cannot block us.
                        sent = chan.send(pending[:32768])
                        pending = pending[sent:]
                        if not pending:
                            chan.shutdown_write()
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                drained = not chan.recv_ready() and not chan.recv_stderr_ready()
                # The exit status can arrive before the last output: done only at EOF (or close).
                if drained and (chan.closed or (chan.exit_status_ready() and chan.eof_received)):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.info(
                        "ssh_command_timeout",
                        host=self.host,
                        port=self.port,
                        command=truncate(shown, 300),
                        timeout_s=limit,
                        **self._fields,
                    )
                    raise errors.SSHTimeout(
                        f"command on {self.host}:{self.port} did not finish within {limit}s: {truncate(shown, 200)}"
                    )
                select.select([chan], [], [], min(0.05, remaining))
            code = chan.recv_exit_status()
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise errors.SSHRefused(f"SSH session to {self.host}:{self.port} broke: {type(e).__name__}: {e}") from e
        finally:
            chan.close()
        stdout = out.decode("utf-8", "replace")
        stderr = err.decode("utf-8", "replace")
        log.info(
            "ssh_command_result",
            host=self.host,
            port=self.port,
            command=truncate(shown, 300),
            exit_code=code,
            stdout=truncate(self._mask(stdout)),
            stderr=truncate(self._mask(stderr)),
            stdin_bytes=len(stdin or b""),
            elapsed_ms=round((time.monotonic() - started) * 1000),
            **self._fields,
        )
        return CommandResult(code, stdout, stderr)


# --- the worker's bootstrap ----------------------------------------------------------------------------

# The seed's checkout on the network volume (relative entries are under the volume's mount path).
# Later versions of the original system (banodoco/reigh-worker-orchestrator,
# gpu_orchestrator/runpod/worker_startup.template.sh) look for Reigh-Worker, then Headless-Wan2GP,
# directly under /workspace: WORKER_DIRS=Reigh-Worker,Headless-Wan2GP.
DEFAULT_WORKER_DIRS = ("reigh/Headless-Wan2GP",)
# The seed's packages (its start command: apt-get update && apt-get install -y python3.10-venv ffmpeg).
DEFAULT_APT_PACKAGES = ("python3.10-venv", "ffmpeg")
LAUNCH_VENV = "venv"  # the seed: `python worker.py|headless.py --db-type supabase ...` in the checkout's venv
LAUNCH_UV = "uv"  # the newer worker: `uv run --python 3.10 --extra cuda124 python worker.py ...`
LAUNCHES = (LAUNCH_VENV, LAUNCH_UV)
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
    "_", "PWD", "OLDPWD", "SHLVL", "HOME", "USER", "LOGNAME", "SHELL", "MAIL", "TERM",
    "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY", "SSH_AUTH_SOCK", "SSH_ORIGINAL_COMMAND",
    "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "IFS", "PS1", "PS2", "PS4", "PROMPT_COMMAND", "CDPATH",
    "GLOBIGNORE", "BASH_XTRACEFD", "UID", "EUID", "PPID", "BASHPID", "BASH_VERSINFO", "GROUPS",
)

def _problem(message: str) -> errors.ConfigError:
    return errors.ConfigError([message])


@dataclass(frozen=True)
class WorkerStart:
    """How the worker is started on a pod: where its checkout is, what runs before it, how it is run.

    Built from the settings (``WORKER_DIRS``, ``WORKER_LAUNCH``, ``WORKER_GIT_BRANCH``,
    ``WORKER_APT_PACKAGES``, ``WORKER_WGP_PROFILE``, ``RUNPOD_VOLUME_MOUNT_PATH``); the defaults are the
    seed's. Invalid values raise ``ConfigError`` here too, so a library user gets the same message the
    daemon's configuration gives.
    """

    mount_path: str = "/workspace"
    dirs: tuple[str, ...] = DEFAULT_WORKER_DIRS
    launch: str = LAUNCH_VENV
    git_branch: str = "main"
    apt_packages: tuple[str, ...] = DEFAULT_APT_PACKAGES
    wgp_profile: int = 1
    # The interpreter the venv launch runs (the seed's `python`, found on PATH after activation).
    python: str = "python"
    git_pull_timeout: int = 30
    lock_wait: int = 60
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
        if self.launch not in LAUNCHES:
            problems.append(f"WORKER_LAUNCH={self.launch!r}: expected one of {', '.join(LAUNCHES)}")
        if problems or branch:
            raise errors.ConfigError(problems + ([branch] if branch else []))
        if isinstance(self.wgp_profile, bool) or not isinstance(self.wgp_profile, int) or self.wgp_profile < 1:
            raise _problem(f"WORKER_WGP_PROFILE={self.wgp_profile!r}: expected a whole number >= 1")
        if not self.python or "\x00" in self.python or "\n" in self.python:
            raise _problem(f"worker python {self.python!r} is not usable")

    def worker_dirs(self) -> tuple[str, ...]:
        """The candidate checkouts, absolute, in search order."""
        return tuple(resolve_worker_dir(self.mount_path, d) for d in self.dirs)


def resolve_worker_dir(mount_path: str, directory: str) -> str:
    """An absolute checkout path: a relative ``directory`` is taken under the volume's mount path."""
    return posixpath.normpath(posixpath.join(mount_path, directory))


def headless_dir(mount_path: str) -> str:
    """The seed's checkout: ``<mount>/reigh/Headless-Wan2GP``."""
    return resolve_worker_dir(mount_path, DEFAULT_WORKER_DIRS[0])


def worker_log_path(mount_path: str, worker_id: str) -> str:
    """One log file per worker on the volume (readable after the pod is gone), never a shared one."""
    return str(Path(mount_path) / "reigh" / "logs" / f"{validate_worker_id(worker_id)}.log")


@dataclass(frozen=True)
class InitCheck:
    name: str
    command: str


def init_checks(mount_path: str, dirs: Sequence[str] = DEFAULT_WORKER_DIRS) -> list[InitCheck]:
    """The seed's four initialization checks, in order; the checkout check looks in ``dirs`` (in order)."""
    q = shlex.quote
    candidates = [resolve_worker_dir(mount_path, d) for d in dirs]
    listed = " ".join(q(c) for c in candidates)
    shown = q(", ".join(candidates))
    checkout = (
        f"for d in {listed}; do if [ -d \"$d\" ]; then ls -la \"$d\"; exit 0; fi; done; "
        f"echo \"no worker checkout: \"{shown}\": No such file or directory\"; exit 2"
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
            f"printf '\\n@@{nonce} end {c.name} %d\\n' \"$rc\"; [ \"$rc\" -eq 0 ] || exit 0"
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
_OUTER = r"""# Start of worker @WORKER_ID_TEXT@ (orchestrator.adapters.ssh.build_start_command; docs/worker-start.md).
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
@CHECKS@
# 4. The slow steps and the worker, detached: own session, no stdin, output to this worker's log.
mkdir -p @LOG_DIR@ || exit 3
( umask 077; : >> "$log" ) || { echo "orchestrator: cannot write $log" >&2; exit 3; }
if command -v setsid >/dev/null 2>&1; then detach=setsid; else detach=; fi
$detach nohup bash --norc --noprofile -c @INNER@ orchestrator-worker-start >> "$log" 2>&1 < /dev/null &
echo "started pid $!"
"""

_CHECKS_VENV = r"""if [ ! -f venv/bin/activate ]; then echo "orchestrator: no venv/bin/activate in $dir" >&2; exit 5; fi
if [ ! -f worker.py ] && [ ! -f headless.py ]; then echo "orchestrator: neither worker.py nor headless.py in $dir" >&2; exit 6; fi"""

_CHECKS_UV = r"""if ! command -v uv >/dev/null 2>&1; then echo "orchestrator: uv is not on the pod's PATH" >&2; exit 7; fi
if [ ! -f worker.py ]; then echo "orchestrator: no worker.py in $dir" >&2; exit 6; fi"""

# Runs detached, in the checkout, with the credentials exported: the seed's steps in the seed's order.
_INNER = r"""echo "orchestrator: starting worker $WORKER_ID in $PWD at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
# Pods sharing the volume share this checkout: one pull at a time, and never for long.
lock="${PWD%/*}/.${PWD##*/}.git-pull.lock"
echo "orchestrator: git pull origin "@BRANCH@
if command -v flock >/dev/null 2>&1; then
    flock -w @LOCK_WAIT@ "$lock" timeout @PULL_TIMEOUT@ git pull origin @BRANCH@
else
    timeout @PULL_TIMEOUT@ git pull origin @BRANCH@
fi
rc=$?
if [ "$rc" -eq 0 ]; then echo "orchestrator: git pull: ok"; else echo "orchestrator: git pull failed or timed out (exit $rc); starting the checked-out code"; fi
@ACTIVATE@
@APT@
@LAUNCH@
"""

_ACTIVATE_VENV = r"""echo "orchestrator: activating venv/bin/activate"
. venv/bin/activate || { echo "orchestrator: cannot activate venv/bin/activate"; exit 5; }"""

# The package lists of a fresh pod are empty: install only works after update. Failures are
# tolerated as in the seed, but the step ends before the worker starts.
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

# The arguments are not echoed: they hold the credentials.
_LAUNCH_VENV = r"""if [ -f worker.py ]; then entry=worker.py; else entry=headless.py; fi
echo "orchestrator: exec python $entry --db-type supabase --supabase-url ... --supabase-anon-key ... --supabase-access-token ... --worker $WORKER_ID"
exec @PYTHON@ "$entry" --db-type supabase --supabase-url "$SUPABASE_URL" --supabase-anon-key "${SUPABASE_ANON_KEY:-}" --supabase-access-token "$SUPABASE_SERVICE_ROLE_KEY" --worker "$WORKER_ID"
"""

_LAUNCH_UV = r"""echo "orchestrator: exec uv run --python 3.10 --extra cuda124 python worker.py --supabase-url ... --supabase-access-token ... --worker $WORKER_ID --wgp-profile "@PROFILE@
exec uv run --python 3.10 --extra cuda124 python worker.py --supabase-url "$SUPABASE_URL" --supabase-access-token "$SUPABASE_SERVICE_ROLE_KEY" --worker "$WORKER_ID" --wgp-profile @PROFILE@"""


def build_start_command(worker_id: str, start: WorkerStart | None = None) -> str:
    """The command that starts the worker on its pod: ``bash -c '<script>'``, with no secret in it.

    Feed it ``credential_records(...)`` on stdin (``SSHClient.run(..., stdin=...)``). In the SSH
    session, in the foreground (so a failure is reported with its exit code): read the records and
    export the allow-listed ones; import the pod's own environment from its init process
    (``/proc/1/environ``), never overriding a value from stdin; check the credentials are all there (2),
    find the checkout (4: the first of ``start.dirs`` that exists), its venv (5) and entry (6), or ``uv``
    (7); create the worker's log (3). Then, detached (``setsid nohup``, stdin from /dev/null, output
    to ``<mount>/reigh/logs/<worker id>.log``), the seed's steps in the seed's order:
    ``timeout 30 git pull origin <branch>`` (serialised with ``flock`` among the pods sharing the
    checkout; failure tolerated), venv activation, ``apt-get update`` then ``apt-get install -y
    <packages>`` (failures tolerated, finished before the worker starts), then ``exec`` the worker:
    ``python worker.py`` when the checkout has it, else the seed's ``python headless.py``, with the
    seed's arguments (or the ``uv`` launch of the newer worker). The SSH call returns in about a second.
    """
    validate_worker_id(worker_id)
    start = start or WorkerStart()
    q = shlex.quote
    logfile = worker_log_path(start.mount_path, worker_id)
    dirs = start.worker_dirs()
    if start.launch == LAUNCH_UV:
        checks, activate = _CHECKS_UV, "# (uv runs the project's own environment: no venv to activate)"
        launch = _fill(_LAUNCH_UV, PROFILE=str(int(start.wgp_profile)))
    else:
        checks, activate = _CHECKS_VENV, _ACTIVATE_VENV
        launch = _fill(_LAUNCH_VENV, PYTHON=q(start.python))
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
        LOCK_WAIT=str(int(start.lock_wait)),
        PULL_TIMEOUT=str(int(start.git_pull_timeout)),
        ACTIVATE=activate,
        APT=apt,
        LAUNCH=launch,
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
        REQUIRED=" ".join(REQUIRED_VARS),
        DIRS=" ".join(q(d) for d in dirs),
        DIRS_SHOWN=q(", ".join(dirs)),
        CHECKS=checks,
        INNER=q(inner),
    )
    return f"bash --norc --noprofile -c {q(outer)}"


def redact_command(command: str, secrets: Sequence[str]) -> str:
    """The command as it may be logged: every known secret value masked (there should be none)."""
    for s in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        command = command.replace(s, "[REDACTED]")
    return command


def run_concurrently(fns: Sequence[Callable[[], Any]], *, limit: int) -> list[Any]:
    """Run callables in a bounded thread pool, results in order (exceptions returned, not raised)."""
    from concurrent.futures import ThreadPoolExecutor

    def safe(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # handed back as data; the caller decides
            return e

    with ThreadPoolExecutor(max_workers=max(1, limit)) as pool:
        return list(pool.map(safe, fns))
