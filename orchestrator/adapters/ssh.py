"""SSH to worker pods: the paramiko wrapper.

Sits under ``orchestrator.adapters.provider`` (which knows pods) and above paramiko (which knows bytes);
what runs over it to check and start the worker is :mod:`orchestrator.adapters.worker_recipe`. The
original's wrapper is kept as it was used (the original orchestrator, banodoco/reigh-worker-orchestrator,
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
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko
import structlog

from orchestrator.core import errors

log = structlog.get_logger(__name__)

OUTPUT_LOG_CHARS = 500
# Passwords everyone knows (the original's fallback for Runpod pods): not secrets to mask.
PUBLIC_DEFAULT_PASSWORDS = ("runpod",)


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
    """One SSH connection to a pod. Use as a context manager, or the original's pattern::

        ssh = SSHClient(ip, port, "root", password="runpod", private_key_path="~/.ssh/id_ed25519")
        ssh.connect()
        exit_code, stdout, stderr = ssh.execute_command("nvidia-smi")
        ssh.disconnect()

    The positional parameters are the original's (``hostname, port, username, password, private_key_path,
    timeout``; ``timeout`` bounds the connection). Authentication as the original did it: the private key
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
        # The original's default password is public knowledge: masking it would only garble outputs.
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
            # The original's rule: the key when its file exists, else the password.
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
            if (
                saved is None
                and transport is not None
                and transport.is_active()
                and not transport.remote_version
            ):
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

    def _connect_once(
        self, client: paramiko.SSHClient, key: paramiko.PKey | None, password: str | None
    ) -> None:
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
            if "timed out" in text.lower() or any(
                isinstance(c, TimeoutError | socket.timeout) for c in chain
            ):
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

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.disconnect()

    # --- commands --------------------------------------------------------------------------------

    def _mask(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "[REDACTED]")
        return text

    def execute_command(self, command: str, timeout: float = 600) -> tuple[int, str, str]:
        """The original's call: run ``command`` and return ``(exit_code, stdout, stderr)``.

        The original's default timeout (600 s). Unlike the original, an unconnected client connects first, and
        failures raise ``orchestrator.core.errors.SSHError`` types instead of paramiko's.
        """
        return self.execute(command, timeout=timeout)

    def execute(
        self,
        command: str,
        timeout: float | None = None,
        *,
        log_as: str | None = None,
        stdin: bytes | None = None,
    ) -> tuple[int, str, str]:
        """Run ``command``; return ``(exit_code, stdout, stderr)``. ``log_as`` is what gets logged."""
        r = self.run(command, timeout=timeout, log_as=log_as, stdin=stdin)
        return r.exit_code, r.stdout, r.stderr

    def run(
        self,
        command: str,
        timeout: float | None = None,
        *,
        log_as: str | None = None,
        stdin: bytes | None = None,
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
        except (OSError, EOFError, paramiko.SSHException) as e:
            # paramiko re-raises the transport's saved error here (EOFError, a socket's OSError) when the
            # connection died under it: an SSH failure like any other, never a raw exception out of
            # the boot checks or the start.
            raise errors.SSHRefused(
                f"cannot open a session on {self.host}:{self.port}: {type(e).__name__}: {e}"
            ) from e
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
            raise errors.SSHRefused(
                f"SSH session to {self.host}:{self.port} broke: {type(e).__name__}: {e}"
            ) from e
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
