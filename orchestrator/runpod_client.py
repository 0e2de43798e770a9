"""The seed's ``runpod_client`` API: spawn, initialize, start, inspect and terminate worker pods.

Users import from this module, so every public name the seed documented is here with its signature
and return shape (``RunpodClient`` and its methods, ``SSHClient`` with ``execute_command``,
``get_network_volumes``, ``find_gpu_type``, ``create_pod_and_wait``, ``create_runpod_client`` and the
async ``spawn_runpod_gpu`` / ``terminate_runpod_gpu`` / ``get_runpod_status``). The seed is the original
orchestrator, banodoco/reigh-worker-orchestrator: ``orchestrator/runpod_client.py`` and
``structure_docs/runpod_integration.md`` of its first commit (later ``gpu_orchestrator/runpod_client.py``).
Underneath, it talks to Runpod through the ``orchestrator.adapters.runpod`` port (REST v2 by default, the official
SDK's GraphQL with ``RUNPOD_API=graphql``) and to pods through ``orchestrator.adapters.ssh``. The controller calls it
from worker threads; nothing here touches the database: results come back as dicts and typed errors
that the controller records.

Differences from the seed, on purpose:
- ``RUNPOD_GPU_TYPE`` may be a comma-separated priority list, and so may ``RUNPOD_STORAGE_NAME`` (one
  network volume per data center, each holding the worker's checkout). A spawn tries GPU type x volume,
  GPU types first: every volume for the first GPU type, then every volume for the next. That is the
  order the original kept in its later versions (gpu_orchestrator/runpod_client.py, 2025-10: each RAM
  tier across every storage volume before the next tier), with the GPU type in the place of the RAM
  tier, since the GPU type is the stronger preference. "No instances available" falls through, and so
  does a REST 400 whose wording we do not know (its body is logged, ``runpod_create_refused``);
  ``avoid`` skips the (GPU type, data center) pairs the control loop is backing off. A volume the
  account does not have is skipped, as the original did.
- Host keys are pinned (trust on first use): ``check_and_initialize_worker`` returns the fingerprint,
  and later connections refuse a different key.
- Failures raise ``orchestrator.core.errors`` types (``spawn_worker``, ``create_pod_and_wait``,
  ``execute_command_on_worker``) or come back as ``{"status": "error", "error": ..., "step": ...}``
  (``check_and_initialize_worker``), never as a silent ``None``; ``terminate_worker`` is true only when
  Runpod confirms. ``get_pod_status`` answers ``None`` only for a pod Runpod no longer knows, as the seed.
- The start command carries no secret: the credentials go over the SSH session's stdin (see
  ``orchestrator.adapters.ssh.build_start_command`` and ``docs/worker-start.md``).
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paramiko
import structlog

from orchestrator.adapters.runpod.base import (
    DEFAULT_RETRY,
    RUNNING,
    GpuType,
    NetworkVolume,
    Pod,
    PodSpec,
    RetryPolicy,
    RunpodTransport,
)
from orchestrator.adapters.ssh import (
    DEFAULT_APT_PACKAGES,
    DEFAULT_WORKER_DIRS,
    LAUNCH_VENV,
    SSHClient,
    WorkerStart,
    build_start_command,
    credential_records,
    redact_command,
    run_concurrently,
    run_init_checks,
    truncate,
    validate_worker_id,
)
from orchestrator.core import errors
from orchestrator.core.config import parse_packages

__all__ = [
    "RunpodClient",
    "SSHClient",
    "create_pod_and_wait",
    "create_runpod_client",
    "find_gpu_type",
    "get_network_volumes",
    "get_runpod_status",
    "spawn_and_wait",
    "spawn_runpod_gpu",
    "terminate_runpod_gpu",
]

log = structlog.get_logger(__name__)

# The seed's defaults.
DEFAULT_GPU_TYPE = "NVIDIA GeForce RTX 4090"
DEFAULT_WORKER_IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
DEFAULT_VOLUME_MOUNT_PATH = "/workspace"
DEFAULT_DISK_SIZE_GB = 20
DEFAULT_CONTAINER_DISK_GB = 10
DEFAULT_BASE_URL = "https://api.runpod.io"
# The seed's SSH password when a pod reports none and no key file exists (its get_pod_ssh_details).
DEFAULT_SSH_PASSWORD = "runpod"

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


def _avoided(gpu: GpuType, data_center: str | None, avoid: Collection[tuple[str, str | None]]) -> bool:
    """Whether the (GPU type, data center) candidate is one the caller asked to skip."""
    return any(gpu.matches(str(name)) and (dc is None or dc == data_center) for name, dc in avoid)


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise errors.ConfigError([f"{name}={value!r}: expected a whole number"]) from e


def _register_secrets(values: Sequence[str | None]) -> None:
    """Hand our secrets to the process-wide log redactor (if the logging module is there)."""
    try:
        from orchestrator.logs import REDACTOR
    except Exception:  # logging set-up is optional for library use
        return
    REDACTOR.add([v for v in values if v])


class RunpodClient:
    """Spawns, initializes, starts and terminates worker pods. Configured from the environment
    (the seed's variables and defaults); explicit keyword arguments win over the environment."""

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
        worker_wgp_profile: int | None = None,
        worker_python: str = "python",
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
        # One network volume per data center, in priority order (the seed had one name).
        self.storage_names: list[str] = _split_list(pick(storage_name, "RUNPOD_STORAGE_NAME"))
        self.storage_name: str | None = ",".join(self.storage_names) or None
        self.volume_mount_path: str = pick(volume_mount_path, "RUNPOD_VOLUME_MOUNT_PATH", DEFAULT_VOLUME_MOUNT_PATH)
        self.disk_size_gb = int(pick(disk_size_gb, "RUNPOD_DISK_SIZE_GB", DEFAULT_DISK_SIZE_GB))
        self.container_disk_gb = int(pick(container_disk_gb, "RUNPOD_CONTAINER_DISK_GB", DEFAULT_CONTAINER_DISK_GB))
        pub = pick(ssh_public_key_path, "RUNPOD_SSH_PUBLIC_KEY_PATH")
        priv = pick(ssh_private_key_path, "RUNPOD_SSH_PRIVATE_KEY_PATH")
        self.ssh_public_key_path = str(Path(pub).expanduser()) if pub else None
        self.ssh_private_key_path = str(Path(priv).expanduser()) if priv else None
        self.supabase_url: str | None = pick(supabase_url, "SUPABASE_URL")
        self.supabase_service_role_key: str | None = pick(supabase_service_role_key, "SUPABASE_SERVICE_ROLE_KEY")
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
            launch=str(pick(worker_launch, "WORKER_LAUNCH", LAUNCH_VENV)).strip().lower(),
            git_branch=str(pick(worker_git_branch, "WORKER_GIT_BRANCH", "main")).strip(),
            apt_packages=self.apt_packages,
            wgp_profile=_int(pick(worker_wgp_profile, "WORKER_WGP_PROFILE", 1), "WORKER_WGP_PROFILE"),
            python=worker_python,
        )
        self.retry = retry or DEFAULT_RETRY
        self._secrets = [
            s for s in (self.api_key, self.supabase_service_role_key, self.supabase_anon_key, ssh_password) if s
        ]
        _register_secrets(self._secrets)
        self._transport = transport
        self._lock = threading.Lock()
        self._catalog: tuple[float, list[GpuType]] | None = None
        self._volumes: tuple[float, list[NetworkVolume]] | None = None
        self._host_keys: dict[str, str] = {}
        self._pkey: paramiko.PKey | None = None

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> RunpodClient:
        """Build from the daemon's frozen ``orchestrator.core.config.Settings`` (not the live environment)."""
        values: Mapping[str, Any] = settings.values

        def g(name: str) -> Any:
            return values.get(name)

        kw: dict[str, Any] = {
            "api_key": g("RUNPOD_API_KEY"),
            "gpu_type": g("RUNPOD_GPU_TYPE"),
            "worker_image": g("RUNPOD_WORKER_IMAGE"),
            "storage_name": g("RUNPOD_STORAGE_NAME"),
            "volume_mount_path": g("RUNPOD_VOLUME_MOUNT_PATH"),
            "disk_size_gb": g("RUNPOD_DISK_SIZE_GB"),
            "container_disk_gb": g("RUNPOD_CONTAINER_DISK_GB"),
            "ssh_public_key_path": g("RUNPOD_SSH_PUBLIC_KEY_PATH"),
            "ssh_private_key_path": g("RUNPOD_SSH_PRIVATE_KEY_PATH"),
            "supabase_url": g("SUPABASE_URL"),
            "supabase_service_role_key": g("SUPABASE_SERVICE_ROLE_KEY"),
            "supabase_anon_key": g("SUPABASE_ANON_KEY"),
            "api": g("RUNPOD_API"),
            "api_base_url": g("RUNPOD_API_BASE_URL"),
            "apt_packages": g("WORKER_APT_PACKAGES"),
            "worker_dirs": g("WORKER_DIRS"),
            "worker_launch": g("WORKER_LAUNCH"),
            "worker_git_branch": g("WORKER_GIT_BRANCH"),
            "worker_wgp_profile": g("WORKER_WGP_PROFILE"),
            # Everything comes from the settings: unset ones fall back to the seed's defaults.
            "env": {},
        }
        kw.update(overrides)
        return cls(**kw)

    # --- plumbing --------------------------------------------------------------------------------

    @property
    def transport(self) -> RunpodTransport:
        with self._lock:
            if self._transport is None:
                self._transport = make_transport(self.api, self.api_key or "", self.api_base_url, retry=self.retry)
            return self._transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def __enter__(self) -> RunpodClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _public_key(self) -> str | None:
        """What pods get as ``PUBLIC_KEY``; None when no key is configured (then REST v2's ``startSsh``
        puts the account's registered keys there, and the seed's password login is the fallback)."""
        if self.ssh_public_key_path and Path(self.ssh_public_key_path).exists():
            try:
                return Path(self.ssh_public_key_path).read_text().strip()
            except OSError as e:
                raise errors.ConfigError([f"RUNPOD_SSH_PUBLIC_KEY_PATH={self.ssh_public_key_path}: {e}"]) from e
        key = self._private_key()
        if key is not None:
            # No public key file: derive it from the private key, as ssh-keygen -y would.
            return f"{key.get_name()} {key.get_base64()}"
        return None

    def _private_key(self) -> paramiko.PKey | None:
        """The key to log into pods with: the seed's rule, the key when its file exists, else None
        (and the password is used)."""
        if self._pkey is None and self.ssh_private_key_path and Path(self.ssh_private_key_path).exists():
            try:
                self._pkey = paramiko.PKey.from_path(self.ssh_private_key_path)
            except (OSError, paramiko.SSHException) as e:
                raise errors.ConfigError([f"RUNPOD_SSH_PRIVATE_KEY_PATH={self.ssh_private_key_path}: {e}"]) from e
        return self._pkey

    def startup_warnings(self) -> list[tuple[str, str]]:
        """What the daemon says once when it starts (``startup_warning``): ``(check, detail)`` pairs."""
        if self._private_key() is not None:
            return []
        where = (
            f"RUNPOD_SSH_PRIVATE_KEY_PATH={self.ssh_private_key_path} does not exist"
            if self.ssh_private_key_path
            else "RUNPOD_SSH_PRIVATE_KEY_PATH is unset"
        )
        return [
            (
                "ssh_password_login",
                f"{where}: pods are logged into with a password, as the original orchestrator did without a "
                f"key (the pod's own, else {DEFAULT_SSH_PASSWORD!r}); Runpod's images rarely enable password "
                "login, so workers will likely fail their checks. Set RUNPOD_SSH_PRIVATE_KEY_PATH and "
                "RUNPOD_SSH_PUBLIC_KEY_PATH to a key pair.",
            )
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

    def get_network_volumes(self) -> list[dict[str, Any]]:
        """The account's network volumes: ``[{id, name, size, dataCenterId}]`` (the seed's shape)."""
        return [_volume_dict(v) for v in self.list_network_volumes(fresh=True)]

    def resolve_gpu_type(self, name: str) -> GpuType:
        """The catalog entry whose id or display name is ``name`` (case-insensitive)."""
        catalog = self.list_gpu_types()
        for g in catalog:
            if g.matches(name):
                return g
        names = ", ".join(sorted(f"{g.display_name} ({g.id})" for g in catalog)) or "none"
        raise errors.GpuTypeNotFound(f"GPU type {name!r} not found; available: {names}")

    def find_gpu_type(self, gpu_display_name: str) -> dict[str, Any] | None:
        """The GPU type with that display name (or id), with availability; None if there is none."""
        try:
            self.resolve_gpu_type(gpu_display_name)
        except errors.GpuTypeNotFound:
            return None
        for g in self.transport.list_gpu_types(with_availability=True):
            if g.matches(gpu_display_name):
                return _gpu_dict(g)
        return None

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
        raise errors.VolumeNotFound(f"network volume {name!r} not found (RUNPOD_STORAGE_NAME); volumes: {listed}")

    # --- pods ------------------------------------------------------------------------------------

    def _worker_env(self, worker_id: str, worker_env: Mapping[str, str] | None) -> dict[str, str]:
        # The seed's pod env (its structure_docs/runpod_integration.md, "Environment Variables
        # Injected"). The start command does not rely on it for the credentials: they go over SSH.
        env: dict[str, str] = {"WORKER_ID": worker_id}
        for k, v in (
            ("SUPABASE_URL", self.supabase_url),
            ("SUPABASE_SERVICE_ROLE_KEY", self.supabase_service_role_key),
            ("SUPABASE_ANON_KEY", self.supabase_anon_key),
        ):
            if v:
                env[k] = v
        env.update(dict(worker_env or {}))
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

    def spawn_worker(
        self,
        worker_id: str,
        worker_env: Mapping[str, str] | None = None,
        *,
        gpu_types: Sequence[str] | None = None,
        avoid: Collection[tuple[str, str | None]] = (),
    ) -> dict[str, Any]:
        """Create the worker's pod and return at once with its details (it is still booting).

        Tries GPU type x network volume: the GPU types of the priority list (``gpu_types``, else
        ``RUNPOD_GPU_TYPE``) in order, and for each the volumes of ``RUNPOD_STORAGE_NAME`` in order (a
        volume pins the pod to its data center). "No instances available" falls through to the next
        candidate, and the result's ``capacity_misses`` lists the (GPU type, data center) pairs that had
        none (the daemon backs them off). ``avoid`` is a collection of ``(gpu_type, data_center)`` pairs
        to skip without asking Runpod (the GPU type by display name or id; a data center of None
        avoids that GPU type everywhere); skipped candidates are listed in ``skipped``. Raises
        ``GpuTypeNotFound``, ``VolumeNotFound``, ``RunpodCapacityError`` (every candidate exhausted or
        avoided; it carries ``capacity_misses`` and ``skipped``), ``RunpodAuthError`` and the other
        ``RunpodError`` types. A REST 400 whose wording is not a known "no capacity" falls through too
        (``runpod_create_refused`` logs its body); when no candidate was left, ``RunpodRequestError``
        (status 400) lists every refusal and carries the same ``capacity_misses`` and ``skipped``.
        """
        validate_worker_id(worker_id)
        env = self._worker_env(worker_id, worker_env)
        volumes: list[NetworkVolume | None] = list(self.spawn_volumes()) or [None]
        gpus: list[GpuType] = []
        for name in gpu_types or self.gpu_types:
            g = self.resolve_gpu_type(name)
            if all(g.id != seen.id for seen in gpus):
                gpus.append(g)
        misses: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        refusals: list[str] = []
        # Candidates answered with a 400 we cannot read as "no capacity" (fell through all the same).
        refused: list[str] = []
        for gpu in gpus:
            for volume in volumes:
                data_center = volume.data_center if volume else None
                if _avoided(gpu, data_center, avoid):
                    skipped.append({"gpu_type": gpu.display_name, "data_center": data_center})
                    log.info("runpod_candidate_avoided", worker_id=worker_id, gpu_type=gpu.id, data_center=data_center)
                    continue
                spec = PodSpec(
                    name=worker_id,
                    image=self.worker_image,
                    gpu_type_id=gpu.id,
                    data_center_id=data_center,
                    network_volume_id=volume.id if volume else None,
                    volume_mount_path=self.volume_mount_path,
                    container_disk_gb=self.container_disk_gb,
                    volume_gb=self.disk_size_gb,
                    env=env,
                )
                started = time.monotonic()
                try:
                    pod = self.transport.create_pod(spec)
                except errors.RunpodCapacityError as e:
                    refusals.append(f"{gpu.display_name}{f' in {data_center}' if data_center else ''}: {e}")
                    misses.append(
                        {
                            "gpu_type": gpu.display_name,
                            "data_center": data_center,
                            "network_volume": volume.name if volume else None,
                            "at": datetime.now(UTC).isoformat(),
                        }
                    )
                    log.info(
                        "runpod_no_capacity",
                        worker_id=worker_id,
                        gpu_type=gpu.id,
                        data_center=data_center,
                        network_volume=volume.name if volume else None,
                    )
                    continue
                except errors.RunpodRequestError as e:
                    if e.status != 400:
                        log.info(
                            "runpod_pod_create_failed",
                            worker_id=worker_id,
                            gpu_type=gpu.id,
                            data_center=data_center,
                            error_type=type(e).__name__,
                            error=str(e)[:300],
                            transport=self.transport.name,
                        )
                        raise
                    # REST v2 says no capacity with a 400 whose wording is not documented (openapi
                    # createPod gives no machine-readable code), and the words we match are those
                    # seen so far. A 400 we cannot read may be one more way of saying it: try the next
                    # candidate rather than give up the whole priority list, back this one off like a
                    # capacity miss, and log the body so the wording can be learned.
                    refused.append(f"{gpu.display_name}{f' in {data_center}' if data_center else ''}: {e}")
                    misses.append(
                        {
                            "gpu_type": gpu.display_name,
                            "data_center": data_center,
                            "network_volume": volume.name if volume else None,
                            "at": datetime.now(UTC).isoformat(),
                            "refused": str(e)[:300],
                        }
                    )
                    log.warning(
                        "runpod_create_refused",
                        worker_id=worker_id,
                        gpu_type=gpu.id,
                        data_center=data_center,
                        network_volume=volume.name if volume else None,
                        status=e.status,
                        body=str(e.payload)[:1000] if e.payload is not None else None,
                        transport=self.transport.name,
                    )
                    continue
                except errors.RunpodError as e:
                    log.info(
                        "runpod_pod_create_failed",
                        worker_id=worker_id,
                        gpu_type=gpu.id,
                        data_center=data_center,
                        error_type=type(e).__name__,
                        error=str(e)[:300],
                        transport=self.transport.name,
                    )
                    raise
                log.info(
                    "runpod_pod_created",
                    worker_id=worker_id,
                    runpod_id=pod.id,
                    gpu_type=gpu.id,
                    data_center=pod.data_center or data_center,
                    network_volume=volume.name if volume else None,
                    cost_per_hr=pod.cost_per_hr,
                    transport=self.transport.name,
                    env_keys=sorted(env),
                    elapsed_ms=round((time.monotonic() - started) * 1000),
                )
                return {
                    "worker_id": worker_id,
                    "runpod_id": pod.id,
                    "pod_name": pod.name or worker_id,
                    "status": "spawning",
                    "gpu_type": gpu.display_name,
                    "gpu_type_id": gpu.id,
                    "data_center": pod.data_center or data_center,
                    "network_volume_id": volume.id if volume else None,
                    "network_volume": volume.name if volume else None,
                    "desired_status": pod.desired_status,
                    "actual_status": pod.actual_status,
                    "cost_per_hr": pod.cost_per_hr,
                    "capacity_misses": misses,
                    "skipped": skipped,
                    "created_at": pod.created_at,
                    "transport": self.transport.name,
                }
        centers = sorted({v.data_center for v in volumes if v is not None})
        where = f" in {', '.join(centers)}" if centers else ""
        avoided = [f"{x['gpu_type']} in {x['data_center'] or 'any data center'}: backing off" for x in skipped]
        if refused:
            # Not known to be capacity: a spec Runpod refuses everywhere (a bad image name, say) must
            # count as a failed spawn, or the breaker would never see it.
            message = (
                f"Runpod refused every candidate of {[g.display_name for g in gpus]}{where}: "
                + "; ".join(refused + refusals + avoided)
            )
            failure = errors.RunpodRequestError(message, status=400)
            failure.capacity_misses = misses  # type: ignore[attr-defined]
            failure.skipped = skipped  # type: ignore[attr-defined]
            raise failure
        exc_text = "; ".join(refusals + avoided)
        message = f"no capacity for any GPU type of {[g.display_name for g in gpus]}{where}: {exc_text}"
        exc = errors.RunpodCapacityError(message)
        exc.capacity_misses = misses  # type: ignore[attr-defined]
        exc.skipped = skipped  # type: ignore[attr-defined]
        raise exc

    def generate_worker_id(self, prefix: str = "gpu-") -> str:
        """A new worker id in the original's shape, ``gpu-YYYYmmdd_HHMMSS-xxxxxxxx`` (UTC here)."""
        return validate_worker_id(f"{prefix}{datetime.now(UTC):%Y%m%d_%H%M%S}-{uuid.uuid4().hex[:8]}")

    def get_pod(self, runpod_id: str) -> Pod | None:
        return self.transport.get_pod(runpod_id)

    def get_pod_status(self, runpod_id: str) -> dict[str, Any] | None:
        """The seed's status dict (exactly its keys), or None when Runpod no longer knows the pod."""
        pod = self.transport.get_pod(runpod_id)
        return None if pod is None else pod_status_dict(pod)

    def list_pods(self) -> list[Pod]:
        return self.transport.list_pods()

    def terminate_worker(self, runpod_id: str) -> bool:
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

    # --- SSH -------------------------------------------------------------------------------------

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
            # The seed's fallback without a key file: the pod's SSH password, "runpod" when it has none.
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

        The seed returned it unconnected; ``connect()`` on a connected client does nothing, so the seed's
        ``ssh = get_ssh_client(id); ssh.connect(); ssh.execute_command(...); ssh.disconnect()`` works."""
        pod = self.transport.get_pod(runpod_id)
        if pod is None:
            raise errors.RunpodNotFound(f"pod {runpod_id} not found")
        if not pod.ssh_ready:
            raise errors.SSHRefused(f"pod {runpod_id} is not ready for SSH (status {pod.actual_status})")
        ssh = self.ssh_client_for(pod, expected_fingerprint=expected_fingerprint).connect()
        self._pin(runpod_id, ssh)
        return ssh

    def execute_command_on_worker(
        self, runpod_id: str, command: str, timeout: float = 600
    ) -> tuple[int, str, str]:
        """Run a command on the pod: ``(exit_code, stdout, stderr)`` (the seed's default timeout, 600 s).
        SSH failures raise ``SSHError``s where the seed returned None."""
        with self.get_ssh_client(runpod_id) as ssh:
            return ssh.execute(command, timeout=timeout)

    def check_and_initialize_worker(
        self,
        worker_id: str,
        runpod_id: str,
        *,
        expected_fingerprint: str | None = None,
        pod: Pod | None = None,
    ) -> dict[str, Any]:
        """Once the pod answers over SSH, run the four initialization checks.

        ``{"status": "spawning", ...}`` while the pod boots or its sshd does not answer yet;
        ``{"status": "active", "ssh_details": {...}, "host_key_fingerprint": ...}`` when every check
        passed; ``{"status": "error", "error": ..., "step": ...}`` naming the failed step and its
        output otherwise. ``ssh_error`` (refused / timeout / auth_failed / host_key_changed) tells
        SSH failures apart. Never raises for provider or SSH faults. ``pod`` may be passed from the
        tick's single pod listing to save one API call per worker.
        """
        base = {"worker_id": worker_id, "runpod_id": runpod_id}
        try:
            if pod is None or pod.id != runpod_id:
                pod = self.transport.get_pod(runpod_id)
        except (errors.RunpodTransientError, errors.RunpodRateLimited) as e:
            return {**base, "status": "spawning", "detail": f"provider unavailable: {e}"}
        except errors.RunpodError as e:
            return {**base, "status": "error", "step": "provider", "error": f"{type(e).__name__}: {e}"}
        if pod is None:
            return {**base, "status": "error", "step": "provider", "error": "pod not found (terminated or never created)"}
        if pod.has_failed:
            return {**base, "status": "error", "step": "provider", "error": f"pod is {pod.actual_status}"}
        if not pod.ssh_ready:
            # Other ports published but not 22: this pod will not get one. No ports at all yet: the
            # container is still coming up (seen on GraphQL), so keep waiting.
            if pod.actual_status == RUNNING and pod.ports and pod.requested_ssh_port:
                return {
                    **base,
                    "status": "error",
                    "step": "provider",
                    "error": "pod is RUNNING but Runpod reports no public 22/tcp mapping; ports: "
                    + str([p.as_dict() for p in pod.ports])[:300],
                }
            return {**base, "status": "spawning", "actual_status": pod.actual_status}
        ssh = self.ssh_client_for(pod, expected_fingerprint=expected_fingerprint)
        try:
            with ssh:
                outcomes = run_init_checks(ssh, self.volume_mount_path, dirs=self.worker_start.dirs)
        except errors.SSHHostKeyChanged as e:
            return {**base, "status": "error", "step": "ssh", "ssh_error": "host_key_changed", "error": str(e)}
        except errors.SSHAuthFailed as e:
            return {**base, "status": "error", "step": "ssh", "ssh_error": "auth_failed", "error": str(e)}
        except errors.SSHTimeout as e:
            return {**base, "status": "spawning", "ssh_error": "timeout", "detail": str(e)}
        except errors.SSHRefused as e:
            return {**base, "status": "spawning", "ssh_error": "refused", "detail": str(e)}
        except errors.SSHError as e:
            return {**base, "status": "spawning", "ssh_error": "other", "detail": str(e)}
        fp = ssh.host_key_fingerprint
        self._pin(runpod_id, ssh)
        failed = next((o for o in outcomes if not o.ok), None)
        if failed is not None:
            output = (failed.stdout + failed.stderr).strip()
            return {
                **base,
                "status": "error",
                "step": failed.name,
                "error": f"initialization check {failed.name} failed (exit {failed.exit_code}): "
                f"{truncate(output, 500)}",
                "host_key_fingerprint": fp,
            }
        details = {"ip": pod.ip, "port": pod.ssh_port, "username": "root", "host_key_fingerprint": fp}
        log.info("worker_initialized", worker_id=worker_id, runpod_id=runpod_id, **details)
        return {
            **base,
            "status": "active",
            "ssh_details": details,
            "host_key_fingerprint": fp,
            "checks": {o.name: truncate((o.stdout + o.stderr).strip(), 300) for o in outcomes},
        }

    def initialize_workers(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        concurrency: int = 64,
        pods: Mapping[str, Pod] | None = None,
        fingerprints: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """``check_and_initialize_worker`` for many (worker_id, runpod_id) pairs, bounded concurrency.

        ``pods`` (by id, from the tick's listing) spares the per-worker API call; ``fingerprints``
        (by runpod id, from ``workers.metadata``) pins host keys recorded earlier.
        """
        pods = pods or {}
        fingerprints = fingerprints or {}
        fns: list[Callable[[], Any]] = [
            functools.partial(
                self.check_and_initialize_worker, w, r, pod=pods.get(r), expected_fingerprint=fingerprints.get(r)
            )
            for w, r in pairs
        ]
        out = run_concurrently(fns, limit=concurrency)
        return [
            o if isinstance(o, dict) else {"worker_id": w, "runpod_id": r, "status": "error", "error": str(o)}
            for o, (w, r) in zip(out, pairs, strict=True)
        ]

    def start_worker_process(
        self, runpod_id: str, worker_id: str, *, expected_fingerprint: str | None = None
    ) -> bool:
        """Start the worker on the pod, detached; true when the launch command succeeded.

        The command (``orchestrator.adapters.ssh.build_start_command``) holds no secret; the credentials are
        written to the session's stdin as NUL-terminated records, the values of the settings as they
        are, so the worker receives them byte for byte (``docs/worker-start.md``).
        """
        needed = {"SUPABASE_URL": self.supabase_url, "SUPABASE_SERVICE_ROLE_KEY": self.supabase_service_role_key}
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
        log.info(
            "worker_process_started" if code == 0 else "worker_start_failed",
            worker_id=worker_id,
            runpod_id=runpod_id,
            exit_code=code,
            launch=self.worker_start.launch,
            stdout=truncate(redact_command(out, self._secrets), 300),
            stderr=truncate(redact_command(err, self._secrets), 300),
        )
        return code == 0

    def spawn_and_wait(
        self,
        worker_id: str,
        worker_env: Mapping[str, str] | None = None,
        *,
        timeout: float = 600.0,
        poll_interval: float = 5.0,
    ) -> dict[str, Any]:
        """Spawn a worker and poll until it is initialized (``active``), failed, or the timeout."""
        spawned = self.spawn_worker(worker_id, worker_env)
        deadline = time.monotonic() + timeout
        while True:
            res = self.check_and_initialize_worker(worker_id, spawned["runpod_id"])
            if res["status"] in ("active", "error"):
                return {**spawned, **res}
            if time.monotonic() >= deadline:
                return {**spawned, **res, "status": "timeout"}
            time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))

    def create_pod_and_wait(
        self,
        name: str,
        image_name: str,
        gpu_type_id: str,
        gpu_count: int = 1,
        cloud_type: str = "SECURE",
        volume_in_gb: int = DEFAULT_DISK_SIZE_GB,
        container_disk_in_gb: int = DEFAULT_CONTAINER_DISK_GB,
        ports: str = "22/tcp",
        network_volume_id: str | None = None,
        volume_mount_path: str = DEFAULT_VOLUME_MOUNT_PATH,
        env: Mapping[str, str] | None = None,
        *,
        public_key_string: str | None = None,
    ) -> dict[str, Any]:
        """The seed's low-level pod creation, with its parameters and defaults.

        The original (banodoco/reigh-worker-orchestrator, ``orchestrator/runpod_client.py`` and
        ``structure_docs/runpod_integration.md``) documented ``create_pod_and_wait(name, image_name,
        gpu_type_id, gpu_count=1, cloud_type="SECURE", volume_in_gb, container_disk_in_gb,
        ports="22/tcp", network_volume_id, volume_mount_path="/workspace", env)`` and returned as soon as
        Runpod had created the pod, "so we can track it", with ``{'id', 'desiredStatus', 'name',
        'gpu_type_id', 'created': True}``; so does this (plus ``actualStatus``, ``costPerHr``,
        ``dataCenterId``, ``networkVolumeId``; ``desiredStatus`` is Runpod's, where the original wrote a
        constant 'PROVISIONING'). ``gpu_type_id`` may be an id or a display name. With a network volume
        the pod goes to the volume's data center. ``PUBLIC_KEY`` comes from ``public_key_string`` (the
        original's parameter), else ``env``, else the configured key. Failures raise
        ``orchestrator.core.errors`` types (the original logged them and returned None).
        """
        gpu = self.resolve_gpu_type(gpu_type_id)
        pod_env = dict(env or {})
        key = public_key_string or pod_env.get("PUBLIC_KEY") or self._public_key()
        if key:
            pod_env["PUBLIC_KEY"] = key
        data_center = None
        if network_volume_id:
            vols = self.list_network_volumes()
            volume = next((v for v in vols if v.id == network_volume_id), None)
            if volume is None:
                vols = self.list_network_volumes(fresh=True)
                volume = next((v for v in vols if v.id == network_volume_id), None)
            if volume is None:
                raise errors.VolumeNotFound(f"network volume {network_volume_id!r} not found")
            data_center = volume.data_center
        spec = PodSpec(
            name=name,
            image=image_name,
            gpu_type_id=gpu.id,
            gpu_count=int(gpu_count),
            cloud=cloud_type,
            data_center_id=data_center,
            network_volume_id=network_volume_id,
            volume_mount_path=volume_mount_path,
            container_disk_gb=int(container_disk_in_gb),
            volume_gb=int(volume_in_gb),
            ports=tuple(p.strip() for p in ports.split(",") if p.strip()),
            env=pod_env,
        )
        pod = self.transport.create_pod(spec)
        log.info(
            "runpod_pod_created",
            runpod_id=pod.id,
            pod_name=name,
            gpu_type=gpu.id,
            data_center=pod.data_center or data_center,
            transport=self.transport.name,
            env_keys=sorted(pod_env),
        )
        return {
            "id": pod.id,
            "desiredStatus": pod.desired_status,
            "actualStatus": pod.actual_status,
            "name": pod.name or name,
            "gpu_type_id": gpu.id,
            "dataCenterId": pod.data_center or data_center,
            "networkVolumeId": network_volume_id,
            "costPerHr": pod.cost_per_hr,
            "created": True,
        }


# --- dict shapes -------------------------------------------------------------------------------------


def pod_status_dict(pod: Pod) -> dict[str, Any]:
    """The seed's ``get_pod_status`` dict: exactly ``STATUS_KEYS``, those of the original's code.

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


def _volume_dict(v: NetworkVolume) -> dict[str, Any]:
    return {"id": v.id, "name": v.name, "size": v.size_gb, "dataCenterId": v.data_center}


def _gpu_dict(g: GpuType) -> dict[str, Any]:
    return {
        "id": g.id,
        "displayName": g.display_name,
        "memoryInGb": g.memory_gb,
        "securePrice": g.secure_price,
        "communityPrice": g.community_price,
        "secureCloud": g.secure_cloud,
        "available": g.available,
        "availability": g.availability,
        "dataCenters": list(g.data_centers),
    }


# --- module-level helpers of the seed --------------------------------------------------------------------


def _helper_client(api_key: str | None) -> RunpodClient:
    return RunpodClient(api_key=api_key)


def get_network_volumes(api_key: str | None = None) -> list[dict[str, Any]]:
    """The account's network volumes (``[{id, name, size, dataCenterId}]``)."""
    with _helper_client(api_key) as c:
        return c.get_network_volumes()


def find_gpu_type(gpu_display_name: str, api_key: str | None = None) -> dict[str, Any] | None:
    """The GPU type with that display name or id, with prices and availability; None if unknown."""
    with _helper_client(api_key) as c:
        return c.find_gpu_type(gpu_display_name)


def create_pod_and_wait(
    name: str,
    image_name: str,
    gpu_type_id: str,
    gpu_count: int = 1,
    cloud_type: str = "SECURE",
    volume_in_gb: int = DEFAULT_DISK_SIZE_GB,
    container_disk_in_gb: int = DEFAULT_CONTAINER_DISK_GB,
    ports: str = "22/tcp",
    network_volume_id: str | None = None,
    volume_mount_path: str = DEFAULT_VOLUME_MOUNT_PATH,
    env: Mapping[str, str] | None = None,
    *,
    api_key: str | None = None,
    disk_in_gb: int | None = None,
    env_vars: Mapping[str, str] | None = None,
    public_key_string: str | None = None,
    wait_timeout: float | None = None,
) -> dict[str, Any]:
    """The seed's pod creation (see ``RunpodClient.create_pod_and_wait``), configured from the environment.

    The parameters are those the original documented; the keyword names its code used as well
    (``api_key``, ``disk_in_gb`` for ``volume_in_gb``, ``env_vars`` for ``env``, ``public_key_string``,
    ``wait_timeout``) are accepted, so calls written either way keep working. ``wait_timeout`` is ignored:
    the original returned as soon as the pod was created, too.
    """
    del wait_timeout
    merged = {**dict(env_vars or {}), **dict(env or {})}
    with _helper_client(api_key) as c:
        return c.create_pod_and_wait(
            name,
            image_name,
            gpu_type_id,
            gpu_count,
            cloud_type,
            volume_in_gb if disk_in_gb is None else disk_in_gb,
            container_disk_in_gb,
            ports,
            network_volume_id,
            volume_mount_path,
            merged,
            public_key_string=public_key_string,
        )


def spawn_and_wait(
    worker_id: str,
    worker_env: Mapping[str, str] | None = None,
    *,
    api_key: str | None = None,
    timeout: float = 600.0,
    poll_interval: float = 5.0,
) -> dict[str, Any]:
    """Spawn a worker pod and wait until it is initialized (see ``RunpodClient.spawn_and_wait``)."""
    with _helper_client(api_key) as c:
        return c.spawn_and_wait(worker_id, worker_env, timeout=timeout, poll_interval=poll_interval)


def create_runpod_client(**overrides: Any) -> RunpodClient:
    """A RunpodClient from the environment (keyword arguments override it)."""
    return RunpodClient(**overrides)


_default_client: RunpodClient | None = None
_default_lock = threading.Lock()


def _default() -> RunpodClient:
    global _default_client
    with _default_lock:
        if _default_client is None:
            _default_client = create_runpod_client()
        return _default_client


async def spawn_runpod_gpu(worker_id: str, client: RunpodClient | None = None) -> str:
    """Spawn a worker pod without blocking the event loop; returns the Runpod pod id."""
    c = client if client is not None else await asyncio.to_thread(_default)
    result = await asyncio.to_thread(c.spawn_worker, worker_id)
    return str(result["runpod_id"])


async def terminate_runpod_gpu(runpod_id: str, client: RunpodClient | None = None) -> bool:
    """Terminate a pod without blocking the event loop; true when Runpod confirms."""
    c = client if client is not None else await asyncio.to_thread(_default)
    return await asyncio.to_thread(c.terminate_worker, runpod_id)


async def get_runpod_status(runpod_id: str, client: RunpodClient | None = None) -> dict[str, Any] | None:
    """``get_pod_status`` without blocking the event loop."""
    c = client if client is not None else await asyncio.to_thread(_default)
    return await asyncio.to_thread(c.get_pod_status, runpod_id)


# --- operator commands (wired into the CLI by ``orchestrator.cli``) -----------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def format_gpus(client: RunpodClient) -> str:
    """``orchestrator gpus``: GPU types, memory, Secure Cloud price and availability."""
    gpus = client.list_gpu_types(with_availability=True)
    wanted = [w.casefold() for w in client.gpu_types]
    rows = []
    for g in sorted(gpus, key=lambda g: (g.secure_price is None, g.secure_price or 0.0, g.display_name)):
        prio = next((str(i + 1) for i, w in enumerate(wanted) if g.matches(w)), "")
        rows.append(
            [
                prio,
                g.display_name,
                g.id,
                f"{g.memory_gb} GB" if g.memory_gb is not None else "?",
                f"${g.secure_price:.2f}/h" if g.secure_price is not None else "?",
                g.availability or ("yes" if g.available else "no" if g.available is False else "?"),
                ",".join(g.data_centers),
            ]
        )
    head = _table(["prio", "name", "id", "memory", "secure", "availability", "data centers"], rows)
    return head + f"\n({len(gpus)} GPU types via {client.transport.name}; prio = RUNPOD_GPU_TYPE order)"


def format_volumes(client: RunpodClient) -> str:
    """``orchestrator volumes``: the volumes of ``RUNPOD_STORAGE_NAME`` in priority order, each with its
    data center and whether a spawn can use it, then the account's other volumes.

    Usable means: the volume exists, and at least one GPU type of ``RUNPOD_GPU_TYPE`` is in stock in its
    data center by the catalog's availability (REST v2 reports it per data center; over GraphQL it is
    not known per data center, shown as "?"). Whether the volume holds the worker's checkout is only
    known from inside a pod: the initialization checks say so.
    """
    vols = client.list_network_volumes(fresh=True)
    stock: dict[str, list[str]] = {}
    per_dc_known = False
    catalog_error = ""
    if client.storage_names:
        try:
            gpus = client.list_gpu_types(with_availability=True)
        except errors.RunpodError as e:
            gpus, catalog_error = [], f"{type(e).__name__}: {e}"[:120]
        wanted = [g for g in gpus if any(g.matches(w) for w in client.gpu_types)]
        per_dc_known = any(g.data_centers for g in gpus)
        for g in wanted:
            for dc in g.data_centers:
                stock.setdefault(dc, []).append(g.display_name)
    rows: list[list[str]] = []
    for prio, name in enumerate(client.storage_names, start=1):
        v = next((v for v in vols if v.name == name), None)
        if v is None:
            rows.append([str(prio), name, "-", "-", "-", "no: no such volume"])
            continue
        if catalog_error:
            usable = f"exists; GPU availability unknown ({catalog_error})"
        elif not per_dc_known:
            usable = "? exists; GPU stock per data center unknown"
        elif stock.get(v.data_center):
            usable = "yes: " + ", ".join(stock[v.data_center])
        else:
            usable = "no: none of RUNPOD_GPU_TYPE in stock there now"
        rows.append([str(prio), v.name, v.id, _size(v), v.data_center, usable])
    for v in sorted(vols, key=lambda v: (v.data_center, v.name)):
        if v.name not in client.storage_names:
            rows.append(["-", v.name, v.id, _size(v), v.data_center, "not in RUNPOD_STORAGE_NAME"])
    head = _table(["prio", "name", "id", "size", "data center", "usable"], rows)
    note = f"RUNPOD_STORAGE_NAME={client.storage_name!r}" if client.storage_name else "RUNPOD_STORAGE_NAME unset"
    return head + f"\n({len(vols)} network volumes; {note}; prio = the order spawns try them)"


def _size(v: NetworkVolume) -> str:
    return f"{v.size_gb} GB" if v.size_gb is not None else "?"
