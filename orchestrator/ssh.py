"""SSH to worker pods: the paramiko wrapper, the worker's initialization checks and its start command.

Sits under ``orchestrator.runpod_client`` (which knows pods) and above paramiko (which knows bytes).
What it adds over the seed's wrapper:
- Host keys are trusted on first use and pinned: the fingerprint of the key a pod presented is
  exposed (``SSHClient.host_key_fingerprint``) so the daemon can record it in ``workers.metadata``;
  given an expected fingerprint, a different key is refused (``SSHHostKeyChanged``) before any
  credential is sent.
- Failures are told apart: ``SSHRefused`` (nothing listening / connection dropped before the
  banner), ``SSHAuthFailed`` (our key or password refused), ``SSHTimeout`` (connect, banner, auth or a
  remote command took too long), each chained to paramiko's exception.
- Remote commands run with a hard deadline and read stdout and stderr together, so a chatty command
  cannot deadlock and a hung one cannot hold a thread forever.
- The start command reads the Supabase credentials from the pod's own environment (Runpod puts the
  pod's env into SSH sessions), never writes them to a file, never spells them out; every value we
  interpolate is ``shlex``-quoted.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import select
import shlex
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko
import structlog

from orchestrator import errors

log = structlog.get_logger(__name__)

OUTPUT_LOG_CHARS = 500

# Worker ids become pod names, file names and a command-line argument: keep them boring. The seed's
# ids look like ``gpu-20250912_101500-1a2b3c4d``.
WORKER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_worker_id(worker_id: str) -> str:
    """Refuse a worker id that is not ``[A-Za-z0-9][A-Za-z0-9._-]*`` (at most 128 chars)."""
    if not isinstance(worker_id, str) or not WORKER_ID_RE.match(worker_id):
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
    """One SSH connection to a pod. Use as a context manager, or connect()/disconnect()."""

    def __init__(
        self,
        host: str,
        port: int = 22,
        username: str = "root",
        *,
        password: str | None = None,
        private_key_path: str | Path | None = None,
        pkey: paramiko.PKey | None = None,
        connect_timeout: float = 10.0,
        command_timeout: float = 60.0,
        expected_fingerprint: str | None = None,
        secrets: Sequence[str] = (),
        log_fields: dict[str, Any] | None = None,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.username = username
        self.password = password
        self.private_key_path = str(private_key_path) if private_key_path else None
        self.pkey = pkey
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.expected_fingerprint = expected_fingerprint
        self._secrets = tuple(s for s in (*secrets, password or "") if s and len(s) >= 4)
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
        try:
            self.pkey = paramiko.PKey.from_path(self.private_key_path)
        except (OSError, paramiko.SSHException) as e:
            raise errors.SSHAuthFailed(f"cannot load private key {self.private_key_path}: {e}") from e
        return self.pkey

    def connect(self) -> SSHClient:
        if self.connected:
            return self
        key = self._load_key()
        if key is None and not self.password:
            raise errors.SSHAuthFailed("no SSH private key or password configured")
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

    def execute(self, command: str, timeout: float | None = None, *, log_as: str | None = None) -> tuple[int, str, str]:
        """Run ``command``; return ``(exit_code, stdout, stderr)``. ``log_as`` is what gets logged."""
        r = self.run(command, timeout=timeout, log_as=log_as)
        return r.exit_code, r.stdout, r.stderr

    def run(self, command: str, timeout: float | None = None, *, log_as: str | None = None) -> CommandResult:
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
        try:
            chan.exec_command(command)
            chan.shutdown_write()
            while True:
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
            elapsed_ms=round((time.monotonic() - started) * 1000),
            **self._fields,
        )
        return CommandResult(code, stdout, stderr)


# --- the worker's bootstrap ----------------------------------------------------------------------------


def headless_dir(mount_path: str) -> str:
    return str(Path(mount_path) / "reigh" / "Headless-Wan2GP")


def worker_log_path(mount_path: str, worker_id: str) -> str:
    """One log file per worker on the volume (readable after the pod is gone), never a shared one."""
    return str(Path(mount_path) / "reigh" / "logs" / f"{validate_worker_id(worker_id)}.log")


@dataclass(frozen=True)
class InitCheck:
    name: str
    command: str


def init_checks(mount_path: str) -> list[InitCheck]:
    """The seed's four initialization checks, in order."""
    q = shlex.quote
    return [
        InitCheck("storage_mount", f"ls -la {q(mount_path)}"),
        InitCheck("headless_dir", f"ls -la {q(headless_dir(mount_path))}"),
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


def run_init_checks(ssh: SSHClient, mount_path: str, *, timeout: float = 30.0) -> list[CheckOutcome]:
    """Run the checks in order in one remote command (one channel, one shell: a quarter of the round
    trips and process starts of four separate commands); stop at the first failure, the one to report.
    Each check's stdout and stderr are captured together, framed by markers carrying a per-call nonce
    so a check's own output cannot forge them."""
    checks = init_checks(mount_path)
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


# Credentials the worker needs, read from the pod's environment by the remote shell.
CREDENTIAL_VARS = ("SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY")


def build_start_command(
    worker_id: str,
    *,
    mount_path: str = "/workspace",
    git_pull_timeout: int = 30,
    lock_wait: int = 60,
    apt_packages: Sequence[str] = ("ffmpeg",),
    python: str = "python",
) -> str:
    """The seed's start command, made safe. Returns one ``sh -c '<script>'`` line.

    In the foreground (so a failure is reported to the caller): cd into Headless-Wan2GP, check the
    pod's environment holds the Supabase credentials, check the venv exists, create the log
    directory. Then, detached with ``nohup`` (stdin from /dev/null, output to the worker's own log):
    ``git pull`` bounded by ``timeout`` and serialised with ``flock`` among the pods sharing the
    volume (a failure is tolerated: the checked-out code runs), venv activation, the apt step
    (skipped when the packages are installed, bounded, failure tolerated), then ``exec python
    headless.py ... --worker <id>``. The SSH command therefore returns in about a second instead of
    holding a thread for a pull and an install. ``$SUPABASE_*`` are expanded by the pod's shell from
    the pod's environment: the credentials never appear in the command, a file or our logs.
    """
    validate_worker_id(worker_id)
    for pkg in apt_packages:
        if not re.match(r"^[a-z0-9][a-z0-9+.-]*$", pkg):
            raise errors.RunpodRequestError(f"refused: {pkg!r} is not a Debian package name")
    q = shlex.quote
    root = str(Path(mount_path) / "reigh")
    workdir = headless_dir(mount_path)
    logfile = worker_log_path(mount_path, worker_id)
    lock = f"{root}/.git-pull.lock"
    pull = f"timeout {int(git_pull_timeout)} git pull --ff-only -q"
    inner = [
        # Pods sharing a volume share this checkout: one pull at a time, and never for long.
        f"if command -v flock >/dev/null 2>&1; then flock -w {int(lock_wait)} {q(lock)} {pull}; else {pull}; fi "
        "|| echo \"git pull failed or timed out; starting the checked-out code\" >&2",
        '. venv/bin/activate || { echo "cannot activate venv" >&2; exit 5; }',
    ]
    if apt_packages:
        pkgs = " ".join(q(p) for p in apt_packages)
        probe = " && ".join(f"dpkg -s {q(p)} >/dev/null 2>&1" for p in apt_packages)
        inner.append(
            f"( {probe} ) || timeout 300 apt-get install -y -qq --no-install-recommends {pkgs} >/dev/null 2>&1 "
            '|| echo "apt step failed (continuing)" >&2'
        )
    inner.append(
        f"exec {q(python)} headless.py --db-type supabase"
        ' --supabase-url "$SUPABASE_URL" --supabase-anon-key "$SUPABASE_ANON_KEY"'
        ' --supabase-access-token "$SUPABASE_SERVICE_ROLE_KEY"'
        f" --worker {q(worker_id)}"
    )
    outer = [f'cd {q(workdir)} || {{ echo "Headless-Wan2GP not found" >&2; exit 4; }}']
    for var in CREDENTIAL_VARS:
        outer.append(f': "${{{var}:?is not set in the pod environment}}"')
    outer += [
        'test -f venv/bin/activate || { echo "no venv/bin/activate in Headless-Wan2GP" >&2; exit 5; }',
        f"mkdir -p {q(str(Path(logfile).parent))}",
        f"nohup sh -c {q(chr(10).join(inner))} > {q(logfile)} 2>&1 < /dev/null &",
        'echo "started pid $!"',
    ]
    return f"sh -c {q(chr(10).join(outer))}"


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
