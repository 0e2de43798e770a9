"""The original orchestrator's ``runpod_client`` API: spawn, initialize, start, inspect and terminate pods.

Users import from this module, so every public name the original documented is here with its signature
and return shape (``RunpodClient`` and its methods, ``SSHClient`` with ``execute_command``,
``get_network_volumes``, ``find_gpu_type``, ``create_pod_and_wait``, ``create_runpod_client`` and the
async ``spawn_runpod_gpu`` / ``terminate_runpod_gpu`` / ``get_runpod_status``). The original is
banodoco/reigh-worker-orchestrator: ``orchestrator/runpod_client.py`` and
``structure_docs/runpod_integration.md`` of its first commit (later ``gpu_orchestrator/runpod_client.py``).

Where this sits: a thin layer over :class:`orchestrator.adapters.provider.RunpodProvider`, the typed
provider the daemon uses; each method here turns its typed answer into the original's dict. Nothing here
touches the database.

Differences from the original, on purpose:
- ``RUNPOD_GPU_TYPE`` may be a comma-separated priority list, and so may ``RUNPOD_STORAGE_NAME`` (one
  network volume per data center, each holding the worker's checkout); a spawn tries GPU type x volume
  (:mod:`orchestrator.adapters.placement`). A volume the account does not have is skipped, as the
  original did.
- Host keys are pinned (trust on first use): ``check_and_initialize_worker`` returns the fingerprint,
  and later connections refuse a different key.
- Failures raise ``orchestrator.core.errors`` types (``spawn_worker``, ``create_pod_and_wait``,
  ``execute_command_on_worker``) or come back as ``{"status": "error", "error": ..., "step": ...}``
  (``check_and_initialize_worker``), never as a silent ``None``; ``terminate_worker`` is true only when
  Runpod confirms. ``get_pod_status`` answers ``None`` only for a pod Runpod no longer knows, as the original.
- The start command carries no secret: the credentials go over the SSH session's stdin (see
  ``orchestrator.adapters.worker_recipe.build_start_command`` and ``docs/worker-start.md``).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from orchestrator.adapters.provider import (
    DEFAULT_BASE_URL,
    DEFAULT_CONTAINER_DISK_GB,
    DEFAULT_DISK_SIZE_GB,
    DEFAULT_GPU_TYPE,
    DEFAULT_SSH_PASSWORD,
    DEFAULT_VOLUME_MOUNT_PATH,
    DEFAULT_WORKER_IMAGE,
    RunpodProvider,
    make_transport,
    pod_status_dict,
)
from orchestrator.adapters.runpod.base import GpuType, NetworkVolume, Pod, PodSpec
from orchestrator.adapters.ssh import SSHClient, run_concurrently
from orchestrator.adapters.worker_recipe import validate_worker_id
from orchestrator.core import errors
from orchestrator.ports import BootCheck

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CONTAINER_DISK_GB",
    "DEFAULT_DISK_SIZE_GB",
    "DEFAULT_GPU_TYPE",
    "DEFAULT_SSH_PASSWORD",
    "DEFAULT_VOLUME_MOUNT_PATH",
    "DEFAULT_WORKER_IMAGE",
    "STATUS_KEYS",
    "RunpodClient",
    "SSHClient",
    "create_pod_and_wait",
    "create_runpod_client",
    "find_gpu_type",
    "get_network_volumes",
    "get_runpod_status",
    "make_transport",
    "pod_status_dict",
    "spawn_and_wait",
    "spawn_runpod_gpu",
    "terminate_runpod_gpu",
]

log = structlog.get_logger(__name__)

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

# The original's words for a boot check's outcome.
_BOOT_STATUS = {"not_ready": "spawning", "ready": "active", "failed": "error"}


def boot_dict(check: BootCheck) -> dict[str, Any]:
    """The original's ``check_and_initialize_worker`` dict for a typed boot check."""
    out: dict[str, Any] = {
        "worker_id": check.worker_id,
        "runpod_id": check.runpod_id,
        "status": _BOOT_STATUS[check.status],
    }
    for key in (
        "step",
        "error",
        "ssh_error",
        "detail",
        "actual_status",
        "ssh_details",
        "host_key_fingerprint",
        "checks",
    ):
        value = getattr(check, key)
        if value is not None or (
            check.status == "ready" and key in ("ssh_details", "host_key_fingerprint", "checks")
        ):
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


class RunpodClient(RunpodProvider):
    """The original's client: :class:`RunpodProvider` with its dict-returning methods. Configured from
    the environment (the original's variables and defaults); explicit keyword arguments win over it."""

    def spawn_worker(
        self,
        worker_id: str,
        worker_env: Mapping[str, str] | None = None,
        *,
        gpu_types: Sequence[str] | None = None,
        avoid: Collection[tuple[str, str | None]] = (),
    ) -> dict[str, Any]:
        """Create the worker's pod and return at once with its details (it is still booting); see
        :meth:`RunpodProvider.spawn` for the candidates tried and the errors raised."""
        return dict(self.spawn(worker_id, worker_env, gpu_types=gpu_types, avoid=avoid).details)

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
        SSH failures apart. Never raises for provider or SSH faults.
        """
        return boot_dict(
            self.check_boot(worker_id, runpod_id, expected_fingerprint=expected_fingerprint, pod=pod)
        )

    def start_worker_process(
        self, runpod_id: str, worker_id: str, *, expected_fingerprint: str | None = None
    ) -> bool:
        """Start the worker on the pod, detached; true when the launch command succeeded."""
        return self.start_process(runpod_id, worker_id, expected_fingerprint=expected_fingerprint)

    def terminate_worker(self, runpod_id: str) -> bool:
        """True only when Runpod confirms the pod is gone or terminating (an unknown pod is gone)."""
        return self.terminate(runpod_id)

    def get_pod_status(self, runpod_id: str) -> dict[str, Any] | None:
        """The original's status dict (exactly its keys), or None when Runpod no longer knows the pod."""
        return self.pod_status(runpod_id)

    def execute_command_on_worker(
        self, runpod_id: str, command: str, timeout: float = 600
    ) -> tuple[int, str, str]:
        """Run a command on the pod: ``(exit_code, stdout, stderr)`` (the original's default timeout,
        600 s). SSH failures raise ``SSHError``s where the original returned None."""
        return self.run_command(runpod_id, command, timeout=timeout)

    def get_network_volumes(self) -> list[dict[str, Any]]:
        """The account's network volumes: ``[{id, name, size, dataCenterId}]`` (the original's shape)."""
        return [_volume_dict(v) for v in self.list_network_volumes(fresh=True)]

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

    def generate_worker_id(self, prefix: str = "gpu-") -> str:
        """A new worker id in the original's shape, ``gpu-YYYYmmdd_HHMMSS-xxxxxxxx`` (UTC here)."""
        return validate_worker_id(f"{prefix}{datetime.now(UTC):%Y%m%d_%H%M%S}-{uuid.uuid4().hex[:8]}")

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
                self.check_and_initialize_worker,
                w,
                r,
                pod=pods.get(r),
                expected_fingerprint=fingerprints.get(r),
            )
            for w, r in pairs
        ]
        out = run_concurrently(fns, limit=concurrency)
        return [
            o if isinstance(o, dict) else {"worker_id": w, "runpod_id": r, "status": "error", "error": str(o)}
            for o, (w, r) in zip(out, pairs, strict=True)
        ]

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
        """The original's low-level pod creation, with its parameters and defaults.

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


# --- module-level helpers of the original --------------------------------------------------------------------


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
    """The original's pod creation (see ``RunpodClient.create_pod_and_wait``), configured from the environment.

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
