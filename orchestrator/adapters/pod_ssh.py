"""The provider's SSH side: connections to a worker's pod, its boot checks, its start, its log.

Where this sits: a part of :class:`orchestrator.adapters.provider.RunpodProvider` (its base class),
apart only to keep each module small; it uses the provider's transport, keys and settings, declared
below. It runs the checks and the start command of :mod:`orchestrator.adapters.worker_recipe` over
:mod:`orchestrator.adapters.ssh`. Host keys are pinned (trust on first use): :meth:`PodSSH.check_boot`
returns the fingerprint, and later connections refuse a different key.
"""

from __future__ import annotations

import secrets
import shlex
import threading
from typing import cast

import paramiko
import structlog

from orchestrator.adapters.runpod.base import RUNNING, UNREADABLE, Pod, RunpodTransport
from orchestrator.adapters.ssh import SSHClient, redact_command, truncate
from orchestrator.adapters.worker_recipe import (
    WorkerStart,
    build_start_command,
    build_watch_command,
    credential_records,
    parse_watch,
    run_init_checks,
    worker_log_path,
)
from orchestrator.core import errors
from orchestrator.ports import BootCheck, StartState, StartWatch

log = structlog.get_logger(__name__)

# The original orchestrator's (banodoco/reigh-worker-orchestrator) SSH password when a pod reports none and no key file exists (its get_pod_ssh_details).
DEFAULT_SSH_PASSWORD = "runpod"
# The end of the worker's log a start watch returns (the row's error details when the start ended).
WATCH_TAIL_CHARS = 4000


class PodSSH:
    """SSH to the provider's pods; see the module docstring. The attributes are the provider's."""

    volume_mount_path: str
    worker_start: WorkerStart
    supabase_url: str | None
    supabase_service_role_key: str | None
    supabase_anon_key: str | None
    ssh_password: str | None
    ssh_connect_timeout: float
    ssh_command_timeout: float
    _secrets: list[str]
    _lock: threading.Lock
    _host_keys: dict[str, str]

    @property
    def transport(self) -> RunpodTransport:
        raise NotImplementedError

    def _private_key(self) -> paramiko.PKey | None:
        raise NotImplementedError

    def remember_host_key(self, runpod_id: str, fingerprint: str | None) -> None:
        """Pin a pod's host key fingerprint (as recorded in ``workers.metadata``)."""
        if fingerprint:
            with self._lock:
                self._host_keys[runpod_id] = fingerprint

    def ssh_client_for(self, pod: Pod, *, expected_fingerprint: str | None = None) -> SSHClient:
        """An unconnected SSHClient for a ready pod, pinned to the known host key if there is one."""
        if pod.ip is None or pod.ssh_port is None:
            raise errors.RunpodMalformedResponse(
                f"pod {pod.id} has no public 22/tcp mapping (status {pod.actual_status})"
            )
        with self._lock:
            pinned = expected_fingerprint or self._host_keys.get(pod.id)
        key = self._private_key()
        if key is not None:
            # The key; a password only if one is configured explicitly (tried when the key is refused).
            password = self.ssh_password
        else:
            # The original's fallback without a key file: the pod's SSH password, "runpod" when it has none.
            password = self.ssh_password or pod.ssh_password or DEFAULT_SSH_PASSWORD
        return SSHClient(
            pod.ip,
            pod.ssh_port,
            "root",
            password=password,
            pkey=key,
            connect_timeout=self.ssh_connect_timeout,
            command_timeout=self.ssh_command_timeout,
            expected_fingerprint=pinned,
            secrets=self._secrets,
            log_fields={"runpod_id": pod.id, "pod_name": pod.name},
        )

    def _pin(self, runpod_id: str, ssh: SSHClient) -> None:
        fp = ssh.host_key_fingerprint
        if fp:
            with self._lock:
                self._host_keys.setdefault(runpod_id, fp)

    def get_ssh_client(self, runpod_id: str, *, expected_fingerprint: str | None = None) -> SSHClient:
        """A connected SSHClient to the pod (the private key when its file exists, else the password).

        The original returned it unconnected; ``connect()`` on a connected client does nothing, so the original's
        ``ssh = get_ssh_client(id); ssh.connect(); ssh.execute_command(...); ssh.disconnect()`` works."""
        pod = self.transport.get_pod(runpod_id)
        if pod is None:
            raise errors.RunpodNotFound(f"pod {runpod_id} not found")
        if not pod.ssh_ready:
            raise errors.SSHRefused(f"pod {runpod_id} is not ready for SSH (status {pod.actual_status})")
        ssh = self.ssh_client_for(pod, expected_fingerprint=expected_fingerprint).connect()
        self._pin(runpod_id, ssh)
        return ssh

    def run_command(self, runpod_id: str, command: str, timeout: float = 600) -> tuple[int, str, str]:
        """Run a command on the pod: ``(exit_code, stdout, stderr)`` (the original's default timeout, 600 s).
        SSH failures raise ``SSHError``s where the original returned None."""
        with self.get_ssh_client(runpod_id) as ssh:
            return ssh.execute(command, timeout=timeout)

    def log_tail(
        self,
        runpod_id: str,
        worker_id: str,
        *,
        lines: int,
        timeout: float,
        expected_fingerprint: str | None = None,
    ) -> str:
        """The last ``lines`` lines of the worker's log on its pod (stdout and stderr of ``tail``), over a
        connection pinned to ``expected_fingerprint`` (the row's) when given, else to this process's pin.

        Refuses an id that cannot name a file (another system's row): then there is no log."""
        path = worker_log_path(self.volume_mount_path, worker_id)
        command = f"tail -n {int(lines)} {shlex.quote(path)} 2>&1"
        with self.get_ssh_client(runpod_id, expected_fingerprint=expected_fingerprint) as ssh:
            _code, out, err = ssh.execute(command, timeout=timeout)
        return str(out) + str(err)

    def check_boot(
        self,
        worker_id: str,
        runpod_id: str,
        *,
        expected_fingerprint: str | None = None,
        pod: Pod | None = None,
    ) -> BootCheck:
        """Once the pod answers over SSH, run the four initialization checks.

        ``not_ready`` while the pod boots or its sshd does not answer yet; ``ready`` with
        ``ssh_details`` and ``host_key_fingerprint`` when every check passed; ``failed`` naming the
        failed ``step`` and its output otherwise. ``ssh_error`` (refused / timeout / auth_failed /
        host_key_changed / other) tells SSH failures apart. Never raises for provider or SSH faults.
        ``pod`` may be passed from the tick's single pod listing to save one API call per worker.
        """
        try:
            # The tick's listing serves unless it cannot: a pod it lists as gone, or could not read (a
            # placeholder in an unknown state), is asked for, so that the answer is the one a read gives.
            if pod is None or pod.id != runpod_id or pod.is_gone or pod.actual_status == UNREADABLE:
                pod = self.transport.get_pod(runpod_id)
        except (errors.RunpodTransientError, errors.RunpodRateLimited) as e:
            return BootCheck("not_ready", worker_id, runpod_id, detail=f"provider unavailable: {e}")
        except errors.RunpodMalformedResponse as e:
            # An answer we cannot read says nothing about the pod: failing the boot on it terminated a
            # booting worker for a parser's sake. Wait; the boot timeout still ends a pod that is broken.
            log.warning(
                "boot_check_pod_unreadable",
                worker_id=worker_id,
                runpod_id=runpod_id,
                error_type=type(e).__name__,
                error=str(e)[:300],
            )
            return BootCheck(
                "not_ready", worker_id, runpod_id, detail=f"pod unreadable: {type(e).__name__}: {e}"[:300]
            )
        except errors.RunpodError as e:
            return BootCheck(
                "failed", worker_id, runpod_id, step="provider", error=f"{type(e).__name__}: {e}"
            )
        if pod is None:
            return BootCheck(
                "failed",
                worker_id,
                runpod_id,
                step="provider",
                error="pod not found (terminated or never created)",
            )
        if pod.has_failed:
            return BootCheck(
                "failed", worker_id, runpod_id, step="provider", error=f"pod is {pod.actual_status}"
            )
        if not pod.ssh_ready:
            # Other ports published but not 22: this pod will not get one. No ports at all yet, or 22
            # listed without its public port (the openapi's PodRuntimePort.public is nullable, and
            # ssh.direct is null until one is assigned): the container is still coming up, keep waiting.
            if (
                pod.actual_status == RUNNING
                and pod.ports
                and pod.requested_ssh_port
                and not any(p.private_port == 22 and p.public_port is None for p in pod.ports)
            ):
                ports = str([p.as_dict() for p in pod.ports])[:300]
                error = f"pod is RUNNING but Runpod reports no public 22/tcp mapping; ports: {ports}"
                return BootCheck("failed", worker_id, runpod_id, step="provider", error=error)
            return BootCheck("not_ready", worker_id, runpod_id, actual_status=pod.actual_status)
        ssh = self.ssh_client_for(pod, expected_fingerprint=expected_fingerprint)
        try:
            with ssh:
                outcomes = run_init_checks(ssh, self.volume_mount_path, dirs=self.worker_start.dirs)
        except errors.SSHHostKeyChanged as e:
            return BootCheck(
                "failed", worker_id, runpod_id, step="ssh", ssh_error="host_key_changed", error=str(e)
            )
        except errors.SSHAuthFailed as e:
            return BootCheck(
                "failed", worker_id, runpod_id, step="ssh", ssh_error="auth_failed", error=str(e)
            )
        except errors.SSHTimeout as e:
            return BootCheck("not_ready", worker_id, runpod_id, ssh_error="timeout", detail=str(e))
        except errors.SSHRefused as e:
            return BootCheck("not_ready", worker_id, runpod_id, ssh_error="refused", detail=str(e))
        except errors.SSHError as e:
            return BootCheck("not_ready", worker_id, runpod_id, ssh_error="other", detail=str(e))
        fp = ssh.host_key_fingerprint
        self._pin(runpod_id, ssh)
        failed = next((o for o in outcomes if not o.ok), None)
        if failed is not None:
            output = (failed.stdout + failed.stderr).strip()
            error = f"initialization check {failed.name} failed (exit {failed.exit_code}): {truncate(output, 500)}"
            return BootCheck(
                "failed", worker_id, runpod_id, step=failed.name, error=error, host_key_fingerprint=fp
            )
        details = {"ip": pod.ip, "port": pod.ssh_port, "username": "root", "host_key_fingerprint": fp}
        log.info("worker_initialized", worker_id=worker_id, runpod_id=runpod_id, **details)
        return BootCheck(
            "ready",
            worker_id,
            runpod_id,
            ssh_details=details,
            host_key_fingerprint=fp,
            checks={o.name: truncate((o.stdout + o.stderr).strip(), 300) for o in outcomes},
        )

    def watch_start(
        self, runpod_id: str, worker_id: str, *, expected_fingerprint: str | None = None
    ) -> StartWatch:
        """Whether the start given to ``worker_id`` still runs on its pod, and in which phase
        (:func:`~orchestrator.adapters.worker_recipe.build_watch_command`). Never raises: SSH that does
        not answer, a refused key, or an answer in another form is ``unknown``, which proves nothing."""
        nonce = secrets.token_hex(6)
        try:
            # A refused worker id (RunpodRequestError), a pod gone or not ready, SSH failing: unknown.
            command = build_watch_command(worker_id, self.worker_start, nonce)
            with self.get_ssh_client(runpod_id, expected_fingerprint=expected_fingerprint) as ssh:
                _code, out, err = ssh.execute(
                    command, timeout=self.ssh_command_timeout, log_as=f"watch the start of {worker_id}"
                )
        except (errors.RunpodError, errors.SSHError) as e:
            return StartWatch("unknown", detail=f"{type(e).__name__}: {str(e)[:300]}")
        state, phase, why, tail = parse_watch(out, nonce)
        if state == "unknown" and not why and err:
            why = truncate(err.strip(), 300)
        return StartWatch(
            cast(StartState, state), phase, why, redact_command(tail, self._secrets)[-WATCH_TAIL_CHARS:]
        )

    def start_process(
        self, runpod_id: str, worker_id: str, *, expected_fingerprint: str | None = None
    ) -> bool:
        """Start the worker on the pod, detached; true when the launch command succeeded.

        The command (``orchestrator.adapters.worker_recipe.build_start_command``) holds no secret; the credentials are
        written to the session's stdin as NUL-terminated records, the values of the settings as they
        are, so the worker receives them byte for byte (``docs/worker-start.md``).
        """
        needed = {
            "SUPABASE_URL": self.supabase_url,
            "SUPABASE_SERVICE_ROLE_KEY": self.supabase_service_role_key,
        }
        missing = [name for name, value in needed.items() if not value]
        if missing:
            log.info(
                "worker_start_refused",
                worker_id=worker_id,
                runpod_id=runpod_id,
                error=f"{', '.join(missing)} not configured: the worker could not reach the database",
            )
            return False
        try:
            command = build_start_command(worker_id, self.worker_start)
            records = credential_records(
                {
                    "SUPABASE_URL": self.supabase_url,
                    "SUPABASE_ANON_KEY": self.supabase_anon_key,
                    "SUPABASE_SERVICE_ROLE_KEY": self.supabase_service_role_key,
                    "WORKER_ID": worker_id,
                }
            )
        except errors.RunpodRequestError as e:
            log.info("worker_start_refused", worker_id=worker_id, runpod_id=runpod_id, error=str(e))
            return False
        # The command holds no secret by construction; masking it anyway costs nothing.
        shown = f"start worker {worker_id}: " + redact_command(command, self._secrets)
        try:
            pod = self.transport.get_pod(runpod_id)
            if pod is None or not pod.ssh_ready:
                log.info(
                    "worker_start_failed",
                    worker_id=worker_id,
                    runpod_id=runpod_id,
                    error="pod not ready for SSH" if pod else "pod not found",
                )
                return False
            with self.ssh_client_for(pod, expected_fingerprint=expected_fingerprint) as ssh:
                self._pin(runpod_id, ssh)
                code, out, err = ssh.execute(
                    command, timeout=max(30.0, self.ssh_command_timeout), log_as=shown, stdin=records
                )
        except (errors.RunpodError, errors.SSHError) as e:
            log.info(
                "worker_start_failed",
                worker_id=worker_id,
                runpod_id=runpod_id,
                error_type=type(e).__name__,
                error=str(e)[:300],
            )
            return False
        reply = {
            "worker_id": worker_id,
            "runpod_id": runpod_id,
            "exit_code": code,
            "launch": self.worker_start.launch,
            "stdout": truncate(redact_command(out, self._secrets), 300),
            "stderr": truncate(redact_command(err, self._secrets), 300),
        }
        if code == 0 and out.startswith("already running"):
            # The pod's lock says a process of this worker runs: none was started beside it.
            log.info("worker_already_running", **reply)
        else:
            log.info("worker_process_started" if code == 0 else "worker_start_failed", **reply)
        return code == 0
