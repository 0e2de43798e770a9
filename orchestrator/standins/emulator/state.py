"""The one state model behind both emulated Runpod APIs.

Part of ``orchestrator/standins/emulator``: :mod:`.rest` and :mod:`.gql` translate wire requests into
calls on :class:`EmulatorState` and render its :class:`.records.Pod` records in their own shapes; the
admin endpoints read the same records, terminated ones included. :class:`EmulatorState` is the API's
side of the model; its base, :class:`.boot.PodEngine`, boots the pods (the ticker thread, sandboxes,
readiness and liveness probes). The model owns

* pods and their lifecycle PROVISIONING -> STARTING -> RUNNING (-> EXITED / ERROR / TERMINATED): create,
  start, stop, restart, terminate and the host's preemption; each of them starts the pod on a fresh
  container disk (Runpod's storage docs: the container disk is "lost on stop/restart");
* GPU stock per (GPU type, data center): a pod holds ``gpu_count`` GPUs while it is PROVISIONING,
  STARTING or RUNNING and gives them back when it stops, fails or is terminated; a new pod takes a
  stopped pod's GPU first, and that pod cannot start again until it is given back;
* network volumes (directories under ``state_dir/volumes/<id>``) that pin pods to their data center;
* billing: per second at the pod's rate while it holds its GPUs or sits in ERROR (``Pod.cost`` in
  openapi-v2.json is 0 only when EXITED or TERMINATED), and for its volume disk while EXITED, kept
  after termination.

The records, statuses and :class:`EmulatorRefusal` live in :mod:`.records` and are re-exported here,
where the rest of the package has always imported them.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from .boot import PodEngine
from .catalog import Catalog, GpuTypeSpec
from .faults import Faults
from .records import (
    ACTIONS,
    BILLED,
    ERROR,
    EXITED,
    HOLDS_GPU,
    HOST_GPU_ELSEWHERE,
    NO_CAPACITY,
    NOT_ENOUGH_GPUS,
    PROVISIONING,
    RUNNING,
    STARTING,
    TERMINATED,
    EmulatorRefusal,
    Pod,
    PodSpec,
    Sandbox,
    SandboxFactory,
    Volume,
    default_lay_out_volume,
    default_sandbox_factory,
    js_date,
    new_id,
    rfc3339,
)

__all__ = [
    "ACTIONS",
    "BILLED",
    "ERROR",
    "EXITED",
    "HOLDS_GPU",
    "NOT_ENOUGH_GPUS",
    "NO_CAPACITY",
    "PROVISIONING",
    "RUNNING",
    "STARTING",
    "TERMINATED",
    "EmulatorRefusal",
    "EmulatorState",
    "Pod",
    "PodSpec",
    "Sandbox",
    "SandboxFactory",
    "Volume",
    "default_lay_out_volume",
    "default_sandbox_factory",
    "js_date",
    "new_id",
    "rfc3339",
]

log = structlog.get_logger(__name__)

#: A container restart reuses the pulled image; this is its delay before sshd starts, in emulated s.
_RESTART_DELAY_S = 5.0


class EmulatorState(PodEngine):
    """Pods, stock, volumes and billing, guarded by one lock; see the module docstring."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        state_dir: Path,
        speed: float = 1.0,
        faults: Faults | None = None,
        sandbox_factory: SandboxFactory | None = None,
        lay_out_volume: Callable[[Path], None] | None = None,
    ) -> None:
        self._initial_faults = Faults(**(faults or Faults()).to_dict())
        super().__init__(
            state_dir=state_dir,
            speed=speed,
            faults=Faults(**self._initial_faults.to_dict()),
            sandbox_factory=sandbox_factory,
        )
        self.catalog = catalog
        self._lay_out_volume = lay_out_volume or default_lay_out_volume
        self.capacity: dict[tuple[str, str], int] = {}
        self._load_world()

    # --- set-up and teardown -----------------------------------------------------------------------

    def _load_world(self) -> None:
        self.capacity = dict(self.catalog.stock)
        self.volumes = {}
        for v in self.catalog.volumes:
            self._add_volume(v.id, v.name, v.size, v.data_center_id, v.type)

    def _add_volume(self, vol_id: str, name: str, size: int, dc_id: str, vtype: str) -> Volume:
        path = self.state_dir / "volumes" / vol_id
        path.mkdir(parents=True, exist_ok=True)
        self._lay_out_volume(path)
        vol = Volume(vol_id, name, size, dc_id, vtype, path)
        self.volumes[vol_id] = vol
        return vol

    def reset(self) -> None:
        """Back to the catalog: every pod gone (sandboxes stopped), stock, volumes and knobs restored."""
        with self._cond:
            sandboxes = self._detach_all_sandboxes()
            self.pods.clear()
            self._booting.clear()
            self._pulled.clear()
            self.faults = Faults(**self._initial_faults.to_dict())
            self.rng = random.Random(self.faults.seed)
            self._load_world()
        self._stop_sandboxes(sandboxes, wait=True)
        log.info("emulator_reset")

    # --- stock -------------------------------------------------------------------------------------

    def used(self, gpu_id: str, dc_id: str) -> int:
        return sum(
            p.gpu_count
            for p in self.pods.values()
            if p.gpu.id == gpu_id and p.dc_id == dc_id and p.status in HOLDS_GPU
        )

    def free(self, gpu_id: str, dc_id: str) -> int:
        with self.lock:
            return max(0, self.capacity.get((gpu_id, dc_id), 0) - self.used(gpu_id, dc_id))

    def set_capacity(self, gpu_id: str, dc_id: str, total: int) -> None:
        with self.lock:
            if self.catalog.gpu(gpu_id) is None:
                raise EmulatorRefusal("not_found", f"unknown GPU type {gpu_id!r}")
            if self.catalog.data_center(dc_id) is None:
                raise EmulatorRefusal("not_found", f"unknown data center {dc_id!r}")
            if total < 0:
                raise EmulatorRefusal("invalid", "capacity must not be negative")
            self.capacity[(gpu_id, dc_id)] = total
        log.info("emulator_capacity_set", gpu=gpu_id, data_center=dc_id, total=total)

    def offered_in(self, gpu_id: str) -> list[str]:
        """Data centers that offer this GPU type at all (configured capacity > 0)."""
        return [d.id for d in self.catalog.data_centers if self.capacity.get((gpu_id, d.id), 0) > 0]

    # --- pods: create ------------------------------------------------------------------------------

    def create_pod(self, spec: PodSpec) -> Pod:
        gpu = self.catalog.gpu(spec.gpu_id)
        if gpu is None:
            raise EmulatorRefusal("bad_request", f"gpu.id: unknown GPU type {spec.gpu_id!r}")
        max_count = gpu.max_count_community if spec.cloud == "COMMUNITY" else gpu.max_count_secure
        if spec.gpu_count > max_count:
            raise EmulatorRefusal(
                "bad_request", f"gpu.count: at most {max_count} {gpu.id} on one {spec.cloud} pod"
            )
        with self._cond:
            broke = self.faults.create_no_balance_share
            if broke > 0 and self.rng.random() < broke:
                raise EmulatorRefusal("no_balance", "Insufficient balance.")
            forbidden = self.faults.create_forbidden_share
            if forbidden > 0 and self.rng.random() < forbidden:
                raise EmulatorRefusal(
                    "forbidden", f"your account cannot access the requested pool ({gpu.id}, {spec.cloud})"
                )
            volume = None
            if spec.volume_id is not None:
                volume = self.volumes.get(spec.volume_id)
                if volume is None:
                    raise EmulatorRefusal("not_found", f"network volume {spec.volume_id} not found")
                if spec.cloud == "COMMUNITY":
                    raise EmulatorRefusal("bad_request", "network volumes are available on SECURE cloud only")
            for dc_id in spec.data_center_ids:
                if self.catalog.data_center(dc_id) is None:
                    raise EmulatorRefusal("bad_request", f"dataCenterIds: unknown data center {dc_id!r}")
            candidates = list(spec.data_center_ids) or [d.id for d in self.catalog.data_centers]
            if volume is not None:
                if volume.data_center_id not in candidates:
                    raise EmulatorRefusal(
                        "bad_request",
                        f"network volume {volume.id} is in data center {volume.data_center_id}, "
                        f"which is not among the requested data centers {', '.join(candidates)}",
                    )
                candidates = [volume.data_center_id]
            if not _cuda_ok(gpu.cuda_version, spec.allowed_cuda, spec.min_cuda):
                raise EmulatorRefusal("no_capacity", NO_CAPACITY)
            placed = next((d for d in candidates if self.free(gpu.id, d) >= spec.gpu_count), None)
            if placed is None:
                log.info("emulator_no_capacity", gpu=gpu.id, count=spec.gpu_count, data_centers=candidates)
                raise EmulatorRefusal("no_capacity", NO_CAPACITY)
            pod = self._new_pod(spec, gpu, placed, volume)
            self.pods[pod.id] = pod
            self._take_host_gpus(pod)
            self._schedule_boot(pod)
        log.info(
            "emulator_pod_created",
            pod_id=pod.id,
            gpu=gpu.id,
            data_center=placed,
            boot=pod.boot_kind,
            boot_delay_s=round(pod.boot_delay_s, 3),
            never_ready=pod.never_ready,
            ssh_refuse=pod.ssh_refuse,
            via=spec.via,
        )
        return pod

    def _new_pod(self, spec: PodSpec, gpu: GpuTypeSpec, dc_id: str, volume: Volume | None) -> Pod:
        now, mono = time.time(), time.monotonic()
        pod_id = new_id(14)
        while pod_id in self.pods:
            pod_id = new_id(14)
        f = self.faults
        # Draw every random number unconditionally and in a fixed order, so a seed reproduces a run.
        cold_roll = self.rng.random()
        cold = (spec.image, dc_id) not in self._pulled or cold_roll < f.cold_share
        pod = Pod(
            id=pod_id,
            name=spec.name,
            image=spec.image,
            args=spec.args,
            disk_gb=spec.disk_gb,
            persistent_gb=spec.persistent_gb,
            ports=list(spec.ports),
            env=dict(spec.env),
            gpu=gpu,
            gpu_count=spec.gpu_count,
            spec_gpu_count=spec.gpu_count,
            cloud=spec.cloud,
            dc_id=dc_id,
            volume_id=volume.id if volume else None,
            mount_path=spec.mount_path or "/workspace",
            machine_id=new_id(12),
            host_id=f"{pod_id}-{self.rng.randrange(10**7, 10**8)}",
            proxy_user=f"{pod_id}-{secrets.token_hex(4)}",
            created_at=now,
            created_mono=mono,
            rate=gpu.price(spec.cloud) * spec.gpu_count,
            via=spec.via,
            private_dir=self.state_dir / "private" / pod_id,
            last_status_change=f"Rented by User: {js_date(now)}",
            never_ready=self.rng.random() < f.never_ready_share,
            # Empty docker args replace the image's /start.sh, which starts sshd (see the package
            # docstring for the sources): the port refuses, as with the SSH-refusal knob.
            ssh_refuse=self.rng.random() < f.ssh_refuse_share or spec.args_given_empty,
        )
        self._begin_boot(pod, mono, cold=cold)
        pod.billing_since = mono
        return pod

    def _take_host_gpus(self, new: Pod) -> None:
        """A new pod takes GPUs that stopped pods gave back before any other (called under the lock).

        The emulator has no machines, only stock per data center; a stopped pod's GPU goes back to that
        stock and a resume needs it again (docs.runpod.io/references/troubleshooting/pod-migration: a
        stopped pod stays tied to its machine, and "if another user rents the GPU while your Pod is
        stopped", it cannot start there; "the GPU will become available once another user stops their
        Pod on that machine"). The harsher reading: every create takes the GPUs of stopped pods of its
        type in its data center first, the longest stopped first, and a pod whose GPU was taken is
        refused when it starts, even if other GPUs of the data center are free, until the pod that took
        it gives it back (stops, fails or is terminated).
        """
        need = new.spec_gpu_count
        idle = sorted(
            (
                p
                for p in self.pods.values()
                if p.status in (EXITED, ERROR)
                and p.host_gpu_taken_by is None
                and p.gpu.id == new.gpu.id
                and p.dc_id == new.dc_id
            ),
            key=lambda p: p.released_mono or 0.0,
        )
        for p in idle:
            if need <= 0:
                break
            p.host_gpu_taken_by = new.id
            need -= p.spec_gpu_count
            log.info("emulator_host_gpu_taken", pod_id=p.id, by=new.id, gpu=new.gpu.id, data_center=new.dc_id)

    # --- pods: read --------------------------------------------------------------------------------

    def get_pod(self, pod_id: str, *, include_terminated: bool = False) -> Pod | None:
        with self.lock:
            pod = self.pods.get(pod_id)
            if pod is None or (pod.status == TERMINATED and not include_terminated):
                return None
            return pod

    def list_pods(self) -> list[Pod]:
        with self.lock:
            return [p for p in self.pods.values() if p.status != TERMINATED]

    def _require(self, pod_id: str) -> Pod:
        pod = self.pods.get(pod_id)
        if pod is None or pod.status == TERMINATED:
            raise EmulatorRefusal("not_found", f"pod {pod_id} not found")
        return pod

    # --- pods: transitions -------------------------------------------------------------------------

    def terminate_pod(self, pod_id: str) -> Pod:
        """Gone from the API at once; its processes run out the stop grace (see ``Faults.stop_grace_sec``)."""
        with self._cond:
            pod = self._require(pod_id)
            mono = time.monotonic()
            stopping_until = pod.stopping_until  # a stop under way: its grace is already running
            sb = self._release(pod, TERMINATED, mono)
            pod.desired_status = TERMINATED
            pod.terminated_at = time.time()
            if sb is not None and self._linger(sb, mono, stopping_until):
                sb = None
        if sb is not None:
            self._stop_later(sb)
        log.info("emulator_pod_terminated", pod_id=pod_id, billed_usd=round(self.billed_usd(pod), 6))
        return pod

    def stop_pod(self, pod_id: str) -> Pod:
        """EXITED once the stop grace is over (``Faults.stop_grace_sec``): until then the pod is as it
        was, running and billing, with ``desiredStatus`` EXITED; asked again meanwhile, the same."""
        with self._cond:
            pod = self._require(pod_id)
            if "stop" not in pod.actions:
                raise EmulatorRefusal("conflict", f"cannot stop a pod in status {pod.status}")
            mono = time.monotonic()
            pod.desired_status = EXITED
            pod.last_status_change = f"Exited by User: {js_date(time.time())}"
            sb = None if self._begin_stop(pod, mono) else self._release(pod, EXITED, mono)
            pending = pod.stopping_until is not None
        if sb is not None:
            self._stop_later(sb)
        log.info(
            "emulator_pod_stopped",
            pod_id=pod_id,
            pending=pending,
            disk_usd_per_hr=round(pod.stopped_disk_rate, 6),
        )
        return pod

    def start_pod(self, pod_id: str, gpu_count: int | None = None) -> Pod:
        """Start a stopped (or failed) pod on its host: refused with Runpod's "not enough free GPUs"
        when its GPU was taken (:meth:`_take_host_gpus`), the stock is short, or the refusal knob says
        so; started with no GPU at the zero-GPU knob's share; else booted in ``resume_sec``."""
        with self._cond:
            pod = self._require(pod_id)
            if "start" not in pod.actions:
                raise EmulatorRefusal("conflict", f"cannot start a pod in status {pod.status}")
            count = gpu_count or pod.spec_gpu_count
            f = self.faults
            # Draw every random number unconditionally and in a fixed order, so a seed reproduces a run.
            refuse_roll, zero_roll, never_roll = self.rng.random(), self.rng.random(), self.rng.random()
            refusal = (
                "host_gpu_taken"
                if pod.host_gpu_taken_by is not None
                else "no_stock"
                if self.free(pod.gpu.id, pod.dc_id) < count
                else "resume_no_gpu_share"
                if refuse_roll < f.resume_no_gpu_share
                else None
            )
            if refusal is not None:
                log.info("emulator_pod_start_refused", pod_id=pod_id, reason=refusal)
                raise EmulatorRefusal("no_capacity", NOT_ENOUGH_GPUS)
            zero = zero_roll < f.resume_zero_gpu_share
            mono = time.monotonic()
            pod.end_stopped(mono)
            pod.spec_gpu_count = count
            # Without a GPU the pod holds none of the stock; its price then is not published, so it
            # bills on as if it had its GPUs (the harsher reading).
            pod.gpu_count = 0 if zero else count
            pod.host_gpu_taken_by = HOST_GPU_ELSEWHERE if zero else None
            pod.rate = pod.gpu.price(pod.cloud) * count
            pod.generation += 1
            # A resumed pod gets a new container start, so it may (not) get stuck again.
            pod.never_ready = never_roll < f.never_ready_share
            pod.stuck = False
            # Its image is still on its host: no pull, ``resume_sec`` to SSH ready.
            self._begin_boot(pod, mono, cold=False, delay=self._boot_delay(False, base=f.resume_sec))
            pod.boot_kind = "resume"
            pod.desired_status = RUNNING
            if pod.billing_since is not None:  # resumed from ERROR, which was billing already
                pod.billed_s += mono - pod.billing_since
            pod.billing_since = mono
            pod.last_status_change = f"Rented by User: {js_date(time.time())}"
            self._schedule_boot(pod)
        log.info(
            "emulator_pod_started",
            pod_id=pod_id,
            gpu_count=pod.gpu_count,
            boot_delay_s=round(pod.boot_delay_s, 3),
        )
        return pod

    def restart_pod(self, pod_id: str) -> Pod:
        with self._cond:
            pod = self._require(pod_id)
            if "restart" not in pod.actions:
                raise EmulatorRefusal("conflict", f"cannot restart a pod in status {pod.status}")
            if pod.stopping_until is not None:
                raise EmulatorRefusal("conflict", "cannot restart a pod that is being stopped")
            sb = self._unpublish(pod)
            pod.generation += 1
            mono = time.monotonic()
            self._begin_boot(pod, mono, cold=False, delay=_RESTART_DELAY_S / self.speed)
            # A restart keeps the allocation: no PROVISIONING phase, straight to the container start.
            pod.status = STARTING
            pod.phase_until = mono + pod.boot_delay_s
            self._schedule_boot(pod)
        if sb is not None:
            # Runpod's storage docs (docs.runpod.io/pods/storage): the container disk is "lost on
            # stop/restart". A container runtime's restart would keep it; the docs are the harsher case.
            self._stop_later(sb, wipe=True)
        log.info("emulator_pod_restarted", pod_id=pod_id)
        return pod

    def preempt(self, pod_id: str, to: str = EXITED) -> Pod:
        """The host takes the pod away: its processes end and its GPUs go back to stock."""
        if to not in (EXITED, ERROR, TERMINATED):
            raise EmulatorRefusal("invalid", "preempt 'to' must be EXITED, ERROR or TERMINATED")
        with self._cond:
            pod = self._require(pod_id)
            if pod.status != RUNNING:
                raise EmulatorRefusal(
                    "conflict", f"only a RUNNING pod can be preempted (pod is {pod.status})"
                )
            sb = self._release(pod, to, time.monotonic())
            pod.desired_status = EXITED if to == ERROR else to
            pod.error = "preempted"
            if to == TERMINATED:
                pod.terminated_at = time.time()
            pod.last_status_change = f"Exited by Runpod: {js_date(time.time())}"
        if sb is not None:
            self._stop_later(sb)
        log.info("emulator_pod_preempted", pod_id=pod_id, to=to)
        return pod

    def worker_fault(self, pod_id: str, kind: str) -> bool:
        """Crash or hang the simulated worker inside a running pod; False if it was not running."""
        if kind not in ("crash", "hang"):
            raise EmulatorRefusal("invalid", "worker fault must be 'crash' or 'hang'")
        with self.lock:
            pod = self._require(pod_id)
            sb = pod.sandbox
        if sb is None:
            raise EmulatorRefusal("conflict", f"pod {pod_id} has no running container")
        done = sb.crash_worker() if kind == "crash" else sb.hang_worker()
        log.info("emulator_worker_fault", pod_id=pod_id, kind=kind, applied=done)
        return done

    # --- billing -----------------------------------------------------------------------------------

    def billed_usd(self, pod: Pod, now_mono: float | None = None) -> float:
        """Everything the pod cost: its GPUs while they bill, its volume disk while it is stopped."""
        mono = time.monotonic() if now_mono is None else now_mono
        return pod.billed_seconds(mono) * pod.rate / 3600.0 + self.stopped_disk_usd(pod, mono)

    @staticmethod
    def stopped_disk_usd(pod: Pod, now_mono: float) -> float:
        return pod.stopped_seconds(now_mono) * pod.stopped_disk_rate / 3600.0

    # --- volumes -----------------------------------------------------------------------------------

    def create_volume(self, name: str, size: int, dc_id: str, vtype: str | None) -> Volume:
        with self.lock:
            dc = self.catalog.data_center(dc_id)
            if dc is None:
                raise EmulatorRefusal("bad_request", f"dataCenter: unknown data center {dc_id!r}")
            chosen = vtype or (dc.network_volume_types[0] if dc.network_volume_types else "STANDARD")
            if chosen not in dc.network_volume_types:
                raise EmulatorRefusal("bad_request", f"data center {dc_id} does not offer {chosen} volumes")
            vol_id = new_id(10)
            return self._add_volume(vol_id, name, size, dc_id, chosen)

    def update_volume(self, vol_id: str, name: str | None, size: int | None) -> Volume:
        with self.lock:
            vol = self.volumes.get(vol_id)
            if vol is None:
                raise EmulatorRefusal("not_found", f"network volume {vol_id} not found")
            if size is not None and size < vol.size:
                raise EmulatorRefusal(
                    "bad_request", f"size: cannot shrink a network volume ({vol.size} -> {size} GB)"
                )
            if name is not None:
                vol.name = name
            if size is not None:
                vol.size = size
            return vol

    def delete_volume(self, vol_id: str) -> None:
        with self.lock:
            vol = self.volumes.get(vol_id)
            if vol is None:
                raise EmulatorRefusal("not_found", f"network volume {vol_id} not found")
            users = [p.id for p in self.pods.values() if p.volume_id == vol_id and p.status != TERMINATED]
            if users:
                raise EmulatorRefusal(
                    "bad_request", f"network volume {vol_id} is attached to pods {', '.join(users)}"
                )
            del self.volumes[vol_id]

    # --- admin view --------------------------------------------------------------------------------

    def admin_pods(self) -> list[dict[str, Any]]:
        with self.lock:
            mono = time.monotonic()
            return [self.admin_pod(p, mono) for p in self.pods.values()]

    def admin_pod(self, p: Pod, mono: float) -> dict[str, Any]:
        return {
            "id": p.id,
            "name": p.name,
            "status": p.status,
            "desiredStatus": p.desired_status,
            "gpu": p.gpu.id,
            "gpuCount": p.gpu_count,
            "cloud": p.cloud,
            "dataCenterId": p.dc_id,
            "networkVolumeId": p.volume_id,
            "image": p.image,
            "via": p.via,
            "createdAt": rfc3339(p.created_at),
            "startedAt": rfc3339(p.started_at),
            "terminatedAt": rfc3339(p.terminated_at),
            # Sub-second times, so that tests can prove how many pods overlapped at any instant.
            "createdAtEpoch": p.created_at,
            "terminatedAtEpoch": p.terminated_at,
            "costPerHr": round(p.rate, 4),
            "billedSeconds": round(p.billed_seconds(mono), 3),
            # GPUs (billedSeconds at costPerHr) plus the volume disk while stopped (stoppedDiskUsd).
            "billedUsd": round(self.billed_usd(p, mono), 12),
            "stoppedSeconds": round(p.stopped_seconds(mono), 3),
            "stoppedDiskUsdPerHr": round(p.stopped_disk_rate, 9),
            "stoppedDiskUsd": round(self.stopped_disk_usd(p, mono), 12),
            "specGpuCount": p.spec_gpu_count,
            "hostGpuTakenBy": p.host_gpu_taken_by,
            "bootKind": p.boot_kind,
            "bootDelaySeconds": round(p.boot_delay_s, 3),
            "createToReadySeconds": None if p.ready_mono is None else round(p.ready_mono - p.created_mono, 4),
            # From the start of the last boot (create, start or restart) to SSH ready.
            "bootToReadySeconds": (
                None
                if p.ready_mono is None or p.boot_began_mono is None
                else round(p.ready_mono - p.boot_began_mono, 4)
            ),
            "neverReady": p.never_ready,
            "stuck": p.stuck,
            # A stop was asked and its grace is running: the pod still runs and bills.
            "stopping": p.stopping_until is not None,
            "sshRefuse": p.ssh_refuse,
            "sshPort": p.ssh_port,
            "error": p.error,
        }


def _cuda_ok(version: str, allowed: list[str], minimum: str | None) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))

    if allowed and version not in allowed:
        return False
    return not (minimum and key(version) < key(minimum))
