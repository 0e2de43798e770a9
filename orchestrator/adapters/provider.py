"""The typed Runpod provider: worker pods created, checked, started, inspected, stopped, resumed and
terminated.

Where this sits: the loop's :class:`orchestrator.ports.Provider`, built by ``orchestrator.wiring``. It
talks to Runpod through ``orchestrator.adapters.runpod`` (REST v2 by default, the official SDK's
GraphQL with ``RUNPOD_API=graphql``) and to pods through :mod:`orchestrator.adapters.ssh`, running the
checks and the start command of :mod:`orchestrator.adapters.worker_recipe`. Which GPU type in which
data center a spawn tries, and how it falls through, is :mod:`orchestrator.adapters.placement`.
Results are values (:class:`~orchestrator.ports.SpawnedPod`, :class:`~orchestrator.ports.BootCheck`)
and typed errors (``orchestrator.core.errors``); nothing here touches the database. The original
orchestrator's dict API (banodoco/reigh-worker-orchestrator, ``orchestrator/runpod_client.py``) is
:mod:`orchestrator.runpod_client`, a thin layer over this class.

- Host keys are pinned (trust on first use): :meth:`RunpodProvider.check_boot` returns the
  fingerprint, and later connections refuse a different key.
- ``terminate`` is true only when Runpod confirms; a boot check never raises for provider or SSH
  faults (they come back as ``not_ready`` or ``failed``); nor do ``stop`` (false) and ``resume``
  (:class:`~orchestrator.ports.ResumeResult` ``failed``).
- The start command carries no secret: the credentials go over the SSH session's stdin (see
  ``orchestrator.adapters.worker_recipe.build_start_command`` and ``docs/worker-start.md``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import paramiko
import structlog

from orchestrator.adapters import placement
from orchestrator.adapters.pod_ssh import DEFAULT_SSH_PASSWORD, PodSSH
from orchestrator.adapters.runpod.base import (
    DEFAULT_RETRY,
    ERROR,
    EXITED,
    RUNNING,
    GpuType,
    NetworkVolume,
    Pod,
    PodSpec,
    RetryPolicy,
    RunpodTransport,
)
from orchestrator.adapters.worker_recipe import (
    DEFAULT_APT_PACKAGES,
    DEFAULT_WORKER_DIRS,
    LAUNCH_AUTO,
    UV_INSTALL_URL,
    WorkerStart,
    validate_worker_id,
)
from orchestrator.core import errors
from orchestrator.core.config import (
    parse_packages,
    private_key_problem,
    public_key_problem,
    targets_real_runpod,
    unpinned_worker,
)
from orchestrator.core.variables import BY_NAME, parse_value
from orchestrator.ports import ResumeResult, ResumeStatus, SpawnedPod

log = structlog.get_logger(__name__)

# The original's defaults.
DEFAULT_GPU_TYPE = "NVIDIA GeForce RTX 4090"
DEFAULT_WORKER_IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
DEFAULT_VOLUME_MOUNT_PATH = "/workspace"
DEFAULT_DISK_SIZE_GB = 20
DEFAULT_CONTAINER_DISK_GB = 10
DEFAULT_BASE_URL = "https://api.runpod.io"
DEFAULT_WORKER_POLL_INTERVAL_SEC = WorkerStart.poll_interval

STATUS_KEYS = (
    "runpod_id",
    "desired_status",
    "actual_status",
    "ip",
    "ports",
    "ssh_password",
    "created_at",
    "last_status_change",
    "uptime_seconds",
    "cost_per_hr",
)

_CATALOG_TTL_S = 300.0


def make_transport(
    api: str, api_key: str, base_url: str, *, retry: RetryPolicy = DEFAULT_RETRY
) -> RunpodTransport:
    """The transport named by ``RUNPOD_API``: ``rest`` (default) or ``graphql``."""
    kind = (api or "rest").strip().lower()
    if kind == "rest":
        from orchestrator.adapters.runpod.rest import RestTransport

        return RestTransport(api_key, base_url, retry=retry)
    if kind == "graphql":
        from orchestrator.adapters.runpod.graphql import GraphQLTransport

        return GraphQLTransport(api_key, base_url, retry=retry)
    raise errors.ConfigError([f"RUNPOD_API={api!r}: expected 'rest' or 'graphql'"])


def _split_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip() for s in items if s and s.strip()]


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise errors.ConfigError([f"{name}={value!r}: expected a whole number"]) from e


def _installer(value: Any) -> str:
    """WORKER_UV_INSTALL_URL as the start command takes it: "none" is no installer at all."""
    text = str(value).strip()
    if not text:  # blank reads as unset, as the settings read it
        return UV_INSTALL_URL
    return "" if text.lower() == "none" else text


def _register_secrets(values: Sequence[str | None]) -> None:
    """Hand our secrets to the process-wide log redactor (if the logging module is there)."""
    try:
        from orchestrator.logs import REDACTOR
    except Exception:  # logging set-up is optional for library use
        return
    REDACTOR.add([v for v in values if v])


class RunpodProvider(PodSSH):
    """Spawns, checks, starts and terminates worker pods. Configured from the environment (the original's
    variables and defaults); explicit keyword arguments win over the environment."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        gpu_type: str | Sequence[str] | None = None,
        worker_image: str | None = None,
        storage_name: str | Sequence[str] | None = None,
        volume_mount_path: str | None = None,
        disk_size_gb: int | None = None,
        container_disk_gb: int | None = None,
        ssh_public_key_path: str | Path | None = None,
        ssh_private_key_path: str | Path | None = None,
        supabase_url: str | None = None,
        supabase_service_role_key: str | None = None,
        supabase_anon_key: str | None = None,
        api: str | None = None,
        api_base_url: str | None = None,
        ssh_password: str | None = None,
        ssh_connect_timeout: float = 10.0,
        ssh_command_timeout: float = 60.0,
        apt_packages: str | Sequence[str] | None = None,
        worker_dirs: str | Sequence[str] | None = None,
        worker_launch: str | None = None,
        worker_git_branch: str | None = None,
        worker_git_commit: str | None = None,
        worker_wgp_profile: int | None = None,
        worker_uv_install_url: str | None = None,
        worker_poll_interval: int | None = None,
        worker_python: str = "python",
        pod_env_supabase_keys: bool | None = None,
        retry: RetryPolicy | None = None,
        transport: RunpodTransport | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        e = os.environ if env is None else env

        def pick(explicit: Any, name: str, default: Any = None) -> Any:
            if explicit is not None:
                return explicit
            raw = e.get(name)
            return raw if raw not in (None, "") else default

        self.api_key: str | None = pick(api_key, "RUNPOD_API_KEY")
        self.gpu_types: list[str] = _split_list(pick(gpu_type, "RUNPOD_GPU_TYPE", DEFAULT_GPU_TYPE))
        self.gpu_type = self.gpu_types[0] if self.gpu_types else DEFAULT_GPU_TYPE
        self.worker_image: str = pick(worker_image, "RUNPOD_WORKER_IMAGE", DEFAULT_WORKER_IMAGE)
        # One network volume per data center, in priority order (the original had one name).
        self.storage_names: list[str] = _split_list(pick(storage_name, "RUNPOD_STORAGE_NAME"))
        self.storage_name: str | None = ",".join(self.storage_names) or None
        self.volume_mount_path: str = pick(
            volume_mount_path, "RUNPOD_VOLUME_MOUNT_PATH", DEFAULT_VOLUME_MOUNT_PATH
        )
        self.disk_size_gb = int(pick(disk_size_gb, "RUNPOD_DISK_SIZE_GB", DEFAULT_DISK_SIZE_GB))
        self.container_disk_gb = int(
            pick(container_disk_gb, "RUNPOD_CONTAINER_DISK_GB", DEFAULT_CONTAINER_DISK_GB)
        )
        pub = pick(ssh_public_key_path, "RUNPOD_SSH_PUBLIC_KEY_PATH")
        priv = pick(ssh_private_key_path, "RUNPOD_SSH_PRIVATE_KEY_PATH")
        self.ssh_public_key_path = str(Path(pub).expanduser()) if pub else None
        self.ssh_private_key_path = str(Path(priv).expanduser()) if priv else None
        self.supabase_url: str | None = pick(supabase_url, "SUPABASE_URL")
        self.supabase_service_role_key: str | None = pick(
            supabase_service_role_key, "SUPABASE_SERVICE_ROLE_KEY"
        )
        self.supabase_anon_key: str | None = pick(supabase_anon_key, "SUPABASE_ANON_KEY")
        self.api: str = str(pick(api, "RUNPOD_API", "rest")).lower()
        self.api_base_url: str = str(pick(api_base_url, "RUNPOD_API_BASE_URL", DEFAULT_BASE_URL)).rstrip("/")
        self.ssh_password = ssh_password
        self.ssh_connect_timeout = ssh_connect_timeout
        self.ssh_command_timeout = ssh_command_timeout
        packages = pick(apt_packages, "WORKER_APT_PACKAGES", DEFAULT_APT_PACKAGES)
        self.apt_packages = tuple(parse_packages(packages) if isinstance(packages, str) else packages)
        self.worker_start = WorkerStart(
            mount_path=self.volume_mount_path,
            dirs=tuple(_split_list(pick(worker_dirs, "WORKER_DIRS", DEFAULT_WORKER_DIRS))),
            launch=str(pick(worker_launch, "WORKER_LAUNCH", LAUNCH_AUTO)).strip().lower(),
            git_branch=str(pick(worker_git_branch, "WORKER_GIT_BRANCH", "main")).strip(),
            git_commit=str(pick(worker_git_commit, "WORKER_GIT_COMMIT", "")),
            apt_packages=self.apt_packages,
            wgp_profile=_int(pick(worker_wgp_profile, "WORKER_WGP_PROFILE", 1), "WORKER_WGP_PROFILE"),
            poll_interval=_int(
                pick(worker_poll_interval, "WORKER_POLL_INTERVAL_SEC", DEFAULT_WORKER_POLL_INTERVAL_SEC),
                "WORKER_POLL_INTERVAL_SEC",
            ),
            python=worker_python,
            # "none": no installer (the pod must bring uv).
            uv_install_url=_installer(pick(worker_uv_install_url, "WORKER_UV_INSTALL_URL", UV_INSTALL_URL)),
        )

        # Unset: as the configuration reads it, only when the daemon does not start the workers.
        def flag(name: str) -> bool | None:
            raw = e.get(name)
            return None if raw in (None, "") else parse_value(BY_NAME[name], str(raw))[0]

        keys = pod_env_supabase_keys if pod_env_supabase_keys is not None else flag("POD_ENV_SUPABASE_KEYS")
        self.pod_env_supabase_keys: bool = (
            keys if keys is not None else flag("AUTO_START_WORKER_PROCESS") is False
        )
        self.retry = retry or DEFAULT_RETRY
        self._secrets = [
            s
            for s in (self.api_key, self.supabase_service_role_key, self.supabase_anon_key, ssh_password)
            if s
        ]
        _register_secrets(self._secrets)
        self._transport = transport
        self._lock = threading.Lock()
        self._catalog: tuple[float, list[GpuType]] | None = None
        self._unknown_gpu_types: set[str] = set()
        self._volumes: tuple[float, list[NetworkVolume]] | None = None
        self._host_keys: dict[str, str] = {}
        self._pkey: paramiko.PKey | None = None

    # --- plumbing --------------------------------------------------------------------------------

    @property
    def transport(self) -> RunpodTransport:
        with self._lock:
            if self._transport is None:
                self._transport = make_transport(
                    self.api, self.api_key or "", self.api_base_url, retry=self.retry
                )
            return self._transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _public_key(self) -> str | None:
        """What pods get as ``PUBLIC_KEY``; None when no key is configured (then REST v2's ``startSsh``
        puts the account's registered keys there, and the original's password login is the fallback)."""
        if self.ssh_public_key_path and Path(self.ssh_public_key_path).exists():
            try:
                text = Path(self.ssh_public_key_path).read_text().strip()
            except (OSError, UnicodeDecodeError) as e:
                raise errors.ConfigError(
                    [f"RUNPOD_SSH_PUBLIC_KEY_PATH={self.ssh_public_key_path}: {type(e).__name__}: {e}"[:300]]
                ) from e
            private = self._private_key()
            problem = public_key_problem(
                self.ssh_public_key_path,
                text,
                (private.get_name(), private.get_base64()) if private is not None else None,
                self.ssh_private_key_path,
            )
            if problem is not None:
                raise errors.ConfigError([problem])
            return text
        key = self._private_key()
        if key is not None:
            # No public key file: derive it from the private key, as ssh-keygen -y would.
            return f"{key.get_name()} {key.get_base64()}"
        return None

    def _private_key(self) -> paramiko.PKey | None:
        """The key to log into pods with: the original's rule, the key when its file exists, else None
        (and the password is used)."""
        if self._pkey is None and self.ssh_private_key_path and Path(self.ssh_private_key_path).exists():
            try:
                self._pkey = paramiko.PKey.from_path(self.ssh_private_key_path)
            except Exception as e:
                raise errors.ConfigError([private_key_problem(self.ssh_private_key_path, e)]) from e
        return self._pkey

    def startup_warnings(self) -> list[tuple[str, str]]:
        """What the daemon says once when it starts (``startup_warning``): ``(check, detail)`` pairs."""
        found: list[tuple[str, str]] = []
        if not self.worker_start.git_commit and targets_real_runpod(self.api_base_url):
            found.append(("worker_unpinned", unpinned_worker(self.worker_start.git_branch)))
        # Read now, so that a wrong public key stops the start (ConfigError, exit 2) before a pod exists.
        self._public_key()
        if self._private_key() is not None:
            return found
        where = (
            f"RUNPOD_SSH_PRIVATE_KEY_PATH={self.ssh_private_key_path} does not exist"
            if self.ssh_private_key_path
            else "RUNPOD_SSH_PRIVATE_KEY_PATH is unset"
        )
        return [
            *found,
            (
                "ssh_password_login",
                f"{where}: pods are logged into with a password, as the original orchestrator did without a "
                f"key (the pod's own, else {DEFAULT_SSH_PASSWORD!r}); Runpod's images rarely enable password "
                "login, so workers will likely fail their checks. Set RUNPOD_SSH_PRIVATE_KEY_PATH and "
                "RUNPOD_SSH_PUBLIC_KEY_PATH to a key pair.",
            ),
        ]

    # --- catalog ---------------------------------------------------------------------------------

    def list_gpu_types(self, *, with_availability: bool = False, fresh: bool = False) -> list[GpuType]:
        if with_availability:
            return self.transport.list_gpu_types(with_availability=True)
        now = time.monotonic()
        if fresh or self._catalog is None or now - self._catalog[0] > _CATALOG_TTL_S:
            self._catalog = (now, self.transport.list_gpu_types())
        return list(self._catalog[1])

    def list_network_volumes(self, *, fresh: bool = False) -> list[NetworkVolume]:
        now = time.monotonic()
        if fresh or self._volumes is None or now - self._volumes[0] > _CATALOG_TTL_S:
            self._volumes = (now, self.transport.list_network_volumes())
        return list(self._volumes[1])

    def resolve_gpu_type(self, name: str) -> GpuType:
        """The catalog entry whose id or display name is ``name`` (case-insensitive)."""
        catalog = self.list_gpu_types()
        for g in catalog:
            if g.matches(name):
                return g
        names = ", ".join(sorted(f"{g.display_name} ({g.id})" for g in catalog)) or "none"
        raise errors.GpuTypeNotFound(f"GPU type {name!r} not found; available: {names}")

    def find_volume(self, name: str) -> NetworkVolume:
        vols = self.list_network_volumes()
        for v in vols:
            if v.name == name:
                return v
        vols = self.list_network_volumes(fresh=True)
        for v in vols:
            if v.name == name:
                return v
        listed = ", ".join(f"{v.name} ({v.id}, {v.data_center})" for v in vols) or "none"
        raise errors.VolumeNotFound(
            f"network volume {name!r} not found (RUNPOD_STORAGE_NAME); volumes: {listed}"
        )

    # --- pods ------------------------------------------------------------------------------------

    def _worker_env(self, worker_id: str, worker_env: Mapping[str, str] | None) -> dict[str, str]:
        # The original's pod env (its structure_docs/runpod_integration.md, "Environment Variables
        # Injected"), less the keys unless asked for: Runpod shows a pod's env to every holder of the
        # API key, and the start command does not need it, since the credentials go over SSH.
        env: dict[str, str] = {"WORKER_ID": worker_id, **dict(worker_env or {})}
        keys = (
            (
                ("SUPABASE_SERVICE_ROLE_KEY", self.supabase_service_role_key),
                ("SUPABASE_ANON_KEY", self.supabase_anon_key),
            )
            if self.pod_env_supabase_keys
            else ()
        )
        # After WORKER_ENV: the values the start hands the worker (the settings', else WORKER_ENV's, as
        # checked by the configuration) are the ones a worker the image starts finds too.
        for k, v in (("SUPABASE_URL", self.supabase_url), *keys):
            if v:
                env[k] = v
        env["WORKER_ID"] = worker_id
        public_key = self._public_key()
        if public_key:
            env["PUBLIC_KEY"] = public_key
        return env

    def spawn_volumes(self) -> list[NetworkVolume]:
        """The configured network volumes that exist, in ``RUNPOD_STORAGE_NAME`` order.

        A name the account does not have is skipped with a warning, as the original did; when none
        exists, ``VolumeNotFound`` lists what the account has. Empty when no volume is configured.
        """
        if not self.storage_names:
            return []
        vols = self.list_network_volumes()
        if any(all(v.name != name for v in vols) for name in self.storage_names):
            vols = self.list_network_volumes(fresh=True)
        found: list[NetworkVolume] = []
        for name in self.storage_names:
            v = next((v for v in vols if v.name == name), None)
            if v is None:
                log.warning("runpod_volume_missing", network_volume=name, configured=self.storage_names)
            elif all(v.id != seen.id for seen in found):
                found.append(v)
        if not found:
            listed = ", ".join(f"{v.name} ({v.id}, {v.data_center})" for v in vols) or "none"
            wanted = ", ".join(repr(n) for n in self.storage_names)
            raise errors.VolumeNotFound(
                f"network volume {wanted} not found (RUNPOD_STORAGE_NAME); volumes: {listed}"
            )
        return found

    def spawn(
        self,
        worker_id: str,
        worker_env: Mapping[str, str] | None = None,
        *,
        gpu_types: Sequence[str] | None = None,
        avoid: Collection[tuple[str, str | None]] = (),
    ) -> SpawnedPod:
        """Create the worker's pod and return at once with its details (it is still booting).

        Tries GPU type x network volume (:mod:`orchestrator.adapters.placement`): the GPU types of the
        priority list (``gpu_types``, else ``RUNPOD_GPU_TYPE``) in order, and for each the volumes of
        ``RUNPOD_STORAGE_NAME`` in order (a volume pins the pod to its data center). "No instances
        available" falls through to the next candidate, and ``capacity_misses`` lists the (GPU type,
        data center) pairs that had none (the daemon backs them off). ``avoid`` is a collection of
        ``(gpu_type, data_center)`` pairs to skip without asking Runpod (the GPU type by display name or
        id; a data center of None avoids that GPU type everywhere). A name Runpod does not list is skipped
        (``runpod_gpu_type_unknown``, once per name). Raises ``GpuTypeNotFound`` (no name of the list known),
        ``VolumeNotFound``, ``RunpodCapacityError`` (every candidate exhausted or avoided; it carries
        ``capacity_misses`` and ``skipped``), ``RunpodAuthError`` and the other ``RunpodError`` types.
        A REST 400 whose wording is not a known "no capacity" falls through too; when no candidate was
        left, ``RunpodRequestError`` (status 400) lists every refusal and carries the same
        ``capacity_misses`` and ``skipped``.
        """
        validate_worker_id(worker_id)
        env = self._worker_env(worker_id, worker_env)
        volumes: list[NetworkVolume | None] = list(self.spawn_volumes()) or [None]
        gpus: list[GpuType] = []
        unknown: list[errors.GpuTypeNotFound] = []
        for name in gpu_types or self.gpu_types:
            try:
                g = self.resolve_gpu_type(name)
            except errors.GpuTypeNotFound as e:
                # One name Runpod does not list (a typo, a type dropped from its catalogue) must not
                # stop the others: the list is a priority order whose next entry is the fallback.
                unknown.append(e)
                if name not in self._unknown_gpu_types:
                    self._unknown_gpu_types.add(name)
                    log.warning("runpod_gpu_type_unknown", gpu_type=name, error=str(e)[:500])
                continue
            if all(g.id != seen.id for seen in gpus):
                gpus.append(g)
        if not gpus:
            raise unknown[0] if len(unknown) == 1 else errors.GpuTypeNotFound("; ".join(map(str, unknown)))
        spec = PodSpec(
            name=worker_id,
            image=self.worker_image,
            gpu_type_id="",  # each candidate's
            volume_mount_path=self.volume_mount_path,
            container_disk_gb=self.container_disk_gb,
            volume_gb=self.disk_size_gb,
            env=env,
        )
        details = placement.create(self.transport, worker_id, spec, gpus, volumes, avoid)
        return SpawnedPod(
            worker_id=worker_id,
            runpod_id=str(details["runpod_id"]),
            gpu_type=details.get("gpu_type"),
            data_center=details.get("data_center"),
            cost_per_hr=details.get("cost_per_hr"),
            capacity_misses=tuple(details.get("capacity_misses") or ()),
            details=details,
        )

    def get_pod(self, runpod_id: str) -> Pod | None:
        return self.transport.get_pod(runpod_id)

    def list_pods(self) -> list[Pod]:
        pods = self.transport.list_pods()
        # A pod the account no longer lists has no host key to check: its pin goes (terminate and resume
        # drop theirs, but a pod that ended otherwise, a failed terminate the listing later confirmed,
        # kept it for the daemon's whole life). The row's recorded fingerprint still pins a pod that
        # comes back into the listing.
        listed = {p.id for p in pods}
        with self._lock:
            for runpod_id in [i for i in self._host_keys if i not in listed]:
                del self._host_keys[runpod_id]
        return pods

    def pod_status(self, runpod_id: str) -> dict[str, Any] | None:
        """The original's status dict (exactly its keys), or None when Runpod no longer knows the pod."""
        pod = self.transport.get_pod(runpod_id)
        return None if pod is None else pod_status_dict(pod)

    def terminate(self, runpod_id: str) -> bool:
        """True only when Runpod confirms the pod is gone or terminating (an unknown pod is gone)."""
        started = time.monotonic()
        try:
            ok = self.transport.terminate_pod(runpod_id)
        except errors.RunpodError as e:
            log.info(
                "runpod_pod_terminate_failed",
                runpod_id=runpod_id,
                error_type=type(e).__name__,
                error=str(e)[:300],
                transport=self.transport.name,
            )
            return False
        log.info(
            "runpod_pod_terminated" if ok else "runpod_pod_terminate_unconfirmed",
            runpod_id=runpod_id,
            confirmed=ok,
            transport=self.transport.name,
            elapsed_ms=round((time.monotonic() - started) * 1000),
        )
        with self._lock:
            self._host_keys.pop(runpod_id, None)
        return ok

    def stop(self, runpod_id: str) -> bool:
        """Stop the pod (its GPU freed, its container disk wiped, its volume disk kept and billed).

        True when Runpod accepted the stop or the pod is stopped (EXITED) already. False, logged, when
        Runpod refused (a pod in ERROR cannot be stopped: terminate it), could not be asked, or no longer
        knows the pod (nothing is left to stop; the tick's reconciliation sees it gone). Never raises
        for provider faults, as :meth:`terminate`.
        """
        started = time.monotonic()
        try:
            pod = self.transport.stop_pod(runpod_id)
        except errors.RunpodError as e:
            log.info(
                "runpod_pod_stop_failed",
                runpod_id=runpod_id,
                error_type=type(e).__name__,
                error=str(e)[:300],
                transport=self.transport.name,
            )
            return False
        log.info(
            "runpod_pod_stopped",
            runpod_id=runpod_id,
            actual_status=pod.actual_status,
            transport=self.transport.name,
            elapsed_ms=round((time.monotonic() - started) * 1000),
        )
        return True

    def resume(self, runpod_id: str) -> ResumeResult:
        """Start a stopped pod again on its host, with the GPUs it had (see :class:`ResumeResult`).

        ``no_gpu`` covers both ways a full host shows: Runpod refuses the start ("There are not enough
        free GPUs on the host machine to start this pod"; the pod stays stopped), or the pod starts with
        no GPU (``gpu_count`` 0, docs.runpod.io/references/troubleshooting/pod-migration). In the second
        case the pod is left running, and billing, for the caller to terminate. A pod already on its way
        to RUNNING (a resume repeated after a crash) is judged as it is, without a second start.

        The pod comes back with new SSH host keys (the image makes them at start-up, in the container
        disk the stop wiped), so an accepted resume forgets the key pinned in memory: the next boot
        check trusts the new key on first use, and the caller records it. Never raises for provider
        faults: they come back as ``failed``.
        """
        started = time.monotonic()
        transport = self.transport
        try:
            pod = transport.get_pod(runpod_id)
        except errors.RunpodError as e:
            return self._resumed(
                runpod_id, "failed", f"cannot read the pod: {type(e).__name__}: {e}", started
            )
        if pod is None:
            return self._resumed(runpod_id, "gone", "Runpod no longer knows the pod", started)
        if pod.actual_status not in (EXITED, ERROR) and pod.desired_status == RUNNING:
            log.info("runpod_pod_resume_already_started", runpod_id=runpod_id, status=pod.actual_status)
        else:
            count = pod.gpu_count if pod.gpu_count else 1
            try:
                pod = transport.start_pod(runpod_id, count)
            except errors.RunpodNoGpuOnHost as e:
                return self._resumed(runpod_id, "no_gpu", str(e), started)
            except errors.RunpodNotFound as e:
                return self._resumed(runpod_id, "gone", str(e), started)
            except errors.RunpodError as e:
                return self._resumed(runpod_id, "failed", f"{type(e).__name__}: {e}", started)
        with self._lock:
            self._host_keys.pop(runpod_id, None)
        if pod.gpu_count is not None and pod.gpu_count < 1:
            detail = (
                f"the pod started with {pod.gpu_count} GPUs (its host's GPUs are taken); it is "
                f"{pod.actual_status} and billing until it is terminated"
            )
            return self._resumed(runpod_id, "no_gpu", detail, started, gpu_count=pod.gpu_count)
        detail = f"pod is {pod.actual_status}" + (
            "" if pod.gpu_count is not None else "; GPU count not reported"
        )
        return self._resumed(runpod_id, "resumed", detail, started, gpu_count=pod.gpu_count)

    def _resumed(
        self,
        runpod_id: str,
        status: ResumeStatus,
        detail: str,
        started: float,
        *,
        gpu_count: int | None = None,
    ) -> ResumeResult:
        log.info(
            "runpod_pod_resume",
            runpod_id=runpod_id,
            outcome=status,
            detail=detail[:300],
            gpu_count=gpu_count,
            transport=self.transport.name,
            elapsed_ms=round((time.monotonic() - started) * 1000),
        )
        return ResumeResult(status, detail, gpu_count)


def pod_status_dict(pod: Pod) -> dict[str, Any]:
    """The original's ``get_pod_status`` dict: exactly ``STATUS_KEYS``, those of the original's code.

    ``ssh_password`` is what the API reports, which is nothing (None): the original read
    ``runtime.sshPassword``, a field the SDK's query never asks for, so it returned None too (its docs'
    example "runpod" is the SSH fallback password, which ``ssh_client_for`` uses).
    """
    return {
        "runpod_id": pod.id,
        "desired_status": pod.desired_status,
        "actual_status": pod.actual_status,
        "ip": pod.ip,
        "ports": [p.as_dict() for p in pod.ports],
        "ssh_password": pod.ssh_password,
        "created_at": pod.created_at,
        "last_status_change": pod.last_status_change,
        "uptime_seconds": pod.uptime_seconds,
        "cost_per_hr": pod.cost_per_hr,
    }
