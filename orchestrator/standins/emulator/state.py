"""The one state model behind both emulated Runpod APIs.

Part of ``orchestrator/standins/emulator``: :mod:`.rest` and :mod:`.gql` translate wire requests into
calls on :class:`EmulatorState` and render its :class:`Pod` records in their own shapes; the admin
endpoints read the same records, terminated ones included. The model owns

* pods and their lifecycle PROVISIONING -> STARTING -> RUNNING (-> EXITED / ERROR / TERMINATED),
  driven by one light ticker thread: it moves pods along at their boot delay, starts each pod's
  sandbox (a real sshd, :mod:`orchestrator.standins.sandbox`) when its image "pull" ends, and probes
  ``sandbox.ready()`` with a backing-off interval until sshd answers; only then is the pod RUNNING
  with its ``22/tcp`` port published (a pod without sshd, i.e. no ``PUBLIC_KEY`` as the image decides,
  or the refusal knob, is RUNNING once its container runs). With ``rtt_ms`` > 0 the published port is a
  delaying relay's (:mod:`.latency`), reserved before the sandbox starts so the pod's
  ``RUNPOD_TCP_PORT_22`` can name it, and listening only where sshd will; a restart keeps the pod's
  container disk, anything else starts it fresh;
* GPU stock per (GPU type, data center): a pod holds ``gpu_count`` GPUs while it is PROVISIONING,
  STARTING or RUNNING and gives them back when it stops, fails or is terminated;
* network volumes (directories under ``state_dir/volumes/<id>``) that pin pods to their data center;
* billing: per second at the pod's rate while it holds its GPUs or sits in ERROR (billed while it
  exists and is not EXITED, facts.md), kept after termination.

Sandbox start/stop calls run on a small thread pool, never under the model's lock, so a slow fork
cannot stall the API. Every operation that invalidates in-flight sandbox work bumps the pod's
``generation``; late completions compare it and clean up after themselves.
"""

from __future__ import annotations

import random
import secrets
import string
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import structlog

from orchestrator.core.errors import OrchestratorError

from .catalog import Catalog, GpuTypeSpec
from .faults import Faults
from .latency import DelayRelay, RelayPort

log = structlog.get_logger(__name__)

PROVISIONING = "PROVISIONING"
STARTING = "STARTING"
RUNNING = "RUNNING"
EXITED = "EXITED"
ERROR = "ERROR"
TERMINATED = "TERMINATED"

#: States in which a pod holds its GPUs and is billed (facts.md: billed while it exists and is not EXITED).
HOLDS_GPU = frozenset({PROVISIONING, STARTING, RUNNING})
#: Statuses that bill: facts.md bills a pod "while it exists and is not EXITED", and openapi's
#: ``Pod.cost`` is 0 only when EXITED or TERMINATED. An ERROR pod gives its GPUs back to the
#: emulator's stock (its host is unknown) but keeps costing until it is terminated.
BILLED = HOLDS_GPU | {ERROR}

#: Valid actions per status, as openapi-v2.json's podAction documents them.
ACTIONS: dict[str, list[str]] = {
    PROVISIONING: ["stop", "terminate"],
    STARTING: ["stop", "terminate"],
    RUNNING: ["stop", "restart", "terminate"],
    EXITED: ["start", "terminate"],
    ERROR: ["start", "terminate"],
    TERMINATED: [],
}

NO_CAPACITY = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)
NOT_ENOUGH_GPUS = "There are not enough free GPUs on the host machine to start this pod"

#: Share of a boot spent in PROVISIONING (allocation) before STARTING (the image pull).
_PROVISION_SHARE = 0.1
#: A container restart reuses the pulled image; this is its delay before sshd starts, in emulated s.
_RESTART_DELAY_S = 5.0
#: First and largest interval between readiness probes of one pod, in real seconds.
_PROBE_FIRST_S = 0.01
_PROBE_MAX_S = 0.1
#: How often RUNNING pods are checked for a dead container (a cheap poll() of the sandbox's init).
_LIVENESS_EVERY_S = 1.0

_ID_ALPHABET = string.ascii_lowercase + string.digits


class EmulatorRefusal(OrchestratorError):
    """The emulated service refuses a request; each API renders it in its own error shape.

    ``kind`` is one of: ``invalid`` (422), ``bad_request`` (400), ``no_capacity`` (400 / GraphQL
    message), ``not_found`` (404), ``conflict`` (409).
    """

    STATUS: ClassVar[dict[str, int]] = {
        "invalid": 422,
        "bad_request": 400,
        "no_capacity": 400,
        "not_found": 404,
        "conflict": 409,
    }

    def __init__(self, kind: str, detail: str, *, errors: list[str] | None = None) -> None:
        self.kind = kind
        self.detail = detail
        self.errors = errors
        super().__init__(detail)

    @property
    def status(self) -> int:
        return self.STATUS[self.kind]


class Sandbox(Protocol):
    """What the emulator needs of a pod sandbox (orchestrator/standins/sandbox.py's PodSandbox).

    The factory is called with ``env``, ``volume_dir``, ``mount_path``, ``gpu_name``, ``vram_mb``,
    ``state_dir``, ``ssh_refuse``, ``keep_container_disk`` and, when relayed, ``public_port``.
    """

    port: int

    @property
    def alive(self) -> bool: ...

    def start(self) -> int: ...
    def ready(self) -> bool: ...
    def stop(self) -> None: ...
    def crash_worker(self) -> bool: ...
    def hang_worker(self) -> bool: ...


SandboxFactory = Callable[..., Sandbox]


def default_sandbox_factory(pod_id: str, **kwargs: Any) -> Sandbox:
    from orchestrator.standins.sandbox import PodSandbox  # imported late: the sandbox pulls in sshd set-up

    return PodSandbox(pod_id, **kwargs)


def default_lay_out_volume(volume_dir: Path) -> None:
    from orchestrator.standins.sandbox import lay_out_volume

    lay_out_volume(volume_dir)


def new_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def js_date(epoch: float) -> str:
    """The JavaScript Date.toString() form the real GraphQL API uses in ``lastStatusChange``."""
    return datetime.fromtimestamp(epoch, UTC).strftime(
        "%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)"
    )


@dataclass
class Volume:
    id: str
    name: str
    size: int
    data_center_id: str
    type: str
    path: Path


@dataclass
class PodSpec:
    """A create request once either API has parsed it."""

    name: str
    image: str
    gpu_id: str
    gpu_count: int = 1
    cloud: str = "SECURE"
    data_center_ids: list[str] = field(default_factory=list)
    volume_id: str | None = None
    mount_path: str | None = None
    persistent_gb: int = 0
    disk_gb: int = 50
    args: str = ""
    ports: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    allowed_cuda: list[str] = field(default_factory=list)
    min_cuda: str | None = None
    via: str = "rest"


@dataclass
class Pod:
    id: str
    name: str
    image: str
    args: str
    disk_gb: int
    persistent_gb: int
    ports: list[str]
    env: dict[str, str]
    gpu: GpuTypeSpec
    gpu_count: int
    cloud: str
    dc_id: str
    volume_id: str | None
    mount_path: str
    machine_id: str
    host_id: str
    proxy_user: str
    created_at: float
    created_mono: float
    rate: float
    via: str
    private_dir: Path
    status: str = PROVISIONING
    desired_status: str = RUNNING
    last_status_change: str = ""
    started_at: float | None = None
    running_since: float | None = None
    ready_mono: float | None = None
    phase_until: float | None = None
    boot_kind: str = "cached"
    boot_delay_s: float = 0.0
    never_ready: bool = False
    ssh_refuse: bool = False
    sandbox: Sandbox | None = None
    ssh_port: int | None = None
    #: The delaying relay published as the pod's 22/tcp when ``rtt_ms`` > 0 (else sshd's own port).
    relay_port: RelayPort | None = None
    #: The next container start keeps the container disk (a restart); a create or resume does not.
    keep_disk: bool = False
    starting_sandbox: bool = False
    awaiting_ready: bool = False
    probe_next: float = 0.0
    probe_step: float = _PROBE_FIRST_S
    probing: bool = False
    generation: int = 0
    billed_s: float = 0.0
    billing_since: float | None = None
    terminated_at: float | None = None
    error: str | None = None
    #: True once a never-ready pod has reached the end of its boot delay and will stay STARTING.
    stuck: bool = False

    @property
    def actions(self) -> list[str]:
        return list(ACTIONS[self.status])

    def billed_seconds(self, now_mono: float) -> float:
        extra = now_mono - self.billing_since if self.billing_since is not None else 0.0
        return self.billed_s + extra

    def current_cost(self) -> float:
        """USD/h now: 0 unless the pod bills (openapi: 0.0 when EXITED or TERMINATED)."""
        return round(self.rate, 4) if self.status in BILLED else 0.0

    def uptime_s(self, now_mono: float) -> int:
        return int(now_mono - self.running_since) if self.running_since is not None else 0


class EmulatorState:
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
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.catalog = catalog
        self.state_dir = state_dir
        self.speed = speed
        self._initial_faults = Faults(**(faults or Faults()).to_dict())
        self.faults = Faults(**self._initial_faults.to_dict())
        self._sandbox_factory = sandbox_factory or default_sandbox_factory
        self._lay_out_volume = lay_out_volume or default_lay_out_volume
        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self.rng = random.Random(self.faults.seed)
        self.pods: dict[str, Pod] = {}
        self.volumes: dict[str, Volume] = {}
        self.capacity: dict[tuple[str, str], int] = {}
        self._pulled: set[tuple[str, str]] = set()
        self._booting: set[str] = set()
        self._stopping = False
        # Sandbox starts and stops (process spawning) and readiness probes (a connect and a banner read,
        # which can take a while when the machine is busy) run here, never on the ticker or under the lock.
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="emulator-sandbox")
        self._probe_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="emulator-probe")
        # Reads the knob on every chunk, so a change applies to relayed pods at once.
        self.relay = DelayRelay(lambda: self.faults.rtt_ms / 1000.0)
        self._ticker = threading.Thread(target=self._tick_loop, name="emulator-ticker", daemon=True)
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

    def start(self) -> None:
        self._ticker.start()

    def shutdown(self) -> None:
        """Stop the ticker and every pod's sandbox; waits until they are all gone."""
        with self._cond:
            self._stopping = True
            sandboxes = self._detach_all_sandboxes()
            self._cond.notify_all()
        if self._ticker.is_alive():
            self._ticker.join(timeout=10)
        self._probe_pool.shutdown(wait=True)
        self._stop_sandboxes(sandboxes, wait=True)
        self._pool.shutdown(wait=True)
        self.relay.close()

    def _detach_all_sandboxes(self) -> list[Sandbox]:
        found = []
        for pod in self.pods.values():
            pod.generation += 1
            sb = self._unpublish(pod)
            if sb is not None:
                found.append(sb)
        return found

    def _unpublish(self, pod: Pod) -> Sandbox | None:
        """Take the pod's container off the network: no port, relay closed; returns its sandbox to stop."""
        sb, pod.sandbox, pod.ssh_port = pod.sandbox, None, None
        rp, pod.relay_port = pod.relay_port, None
        if rp is not None:
            self.relay.release(rp)
        return sb

    def _stop_sandboxes(self, sandboxes: list[Sandbox], *, wait: bool) -> None:
        futures = [self._pool.submit(_safe_stop, sb) for sb in sandboxes]
        if wait:
            for f in futures:
                f.result()

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
            self._booting.add(pod.id)
            self._cond.notify_all()
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
            ssh_refuse=self.rng.random() < f.ssh_refuse_share,
        )
        self._begin_boot(pod, mono, cold=cold)
        pod.billing_since = mono
        return pod

    def _boot_delay(self, cold: bool) -> float:
        f = self.faults
        base = f.boot_cold_s if cold else f.boot_cached_s
        jitter = self.rng.uniform(1 - f.boot_jitter, 1 + f.boot_jitter) if f.boot_jitter else 1.0
        return max(0.0, base * jitter / self.speed)

    def _begin_boot(self, pod: Pod, mono: float, *, cold: bool, delay: float | None = None) -> None:
        pod.boot_kind = "cold" if cold else "cached"
        pod.boot_delay_s = self._boot_delay(cold) if delay is None else delay
        pod.status = PROVISIONING
        pod.phase_until = mono + pod.boot_delay_s * _PROVISION_SHARE
        pod.running_since = None
        pod.ready_mono = None
        pod.started_at = None
        pod.awaiting_ready = False
        pod.starting_sandbox = False
        pod.probe_step = _PROBE_FIRST_S
        pod.keep_disk = False

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

    def _release(self, pod: Pod, status: str, mono: float) -> Sandbox | None:
        """Leave the GPU-holding states: stop billing, drop the sandbox (returned for stopping)."""
        if pod.billing_since is not None:
            pod.billed_s += mono - pod.billing_since
            pod.billing_since = None
        pod.status = status
        pod.generation += 1
        pod.phase_until = None
        pod.awaiting_ready = False
        pod.starting_sandbox = False
        pod.running_since = None
        self._booting.discard(pod.id)
        if status == ERROR:
            pod.billing_since = mono  # an ERROR pod still exists and is not EXITED: it bills on
        return self._unpublish(pod)

    def terminate_pod(self, pod_id: str) -> Pod:
        with self._cond:
            pod = self._require(pod_id)
            sb = self._release(pod, TERMINATED, time.monotonic())
            pod.desired_status = TERMINATED
            pod.terminated_at = time.time()
        if sb is not None:
            self._pool.submit(_safe_stop, sb)
        log.info("emulator_pod_terminated", pod_id=pod_id, billed_usd=round(self.billed_usd(pod), 6))
        return pod

    def stop_pod(self, pod_id: str) -> Pod:
        with self._cond:
            pod = self._require(pod_id)
            if "stop" not in pod.actions:
                raise EmulatorRefusal("conflict", f"cannot stop a pod in status {pod.status}")
            sb = self._release(pod, EXITED, time.monotonic())
            pod.desired_status = EXITED
            pod.last_status_change = f"Exited by User: {js_date(time.time())}"
        if sb is not None:
            self._pool.submit(_safe_stop, sb)
        log.info("emulator_pod_stopped", pod_id=pod_id)
        return pod

    def start_pod(self, pod_id: str, gpu_count: int | None = None) -> Pod:
        with self._cond:
            pod = self._require(pod_id)
            if "start" not in pod.actions:
                raise EmulatorRefusal("conflict", f"cannot start a pod in status {pod.status}")
            count = gpu_count or pod.gpu_count
            # Resuming goes back to the same host (same data center); it fails when that host is full.
            if self.free(pod.gpu.id, pod.dc_id) < count:
                raise EmulatorRefusal("no_capacity", NOT_ENOUGH_GPUS)
            mono = time.monotonic()
            pod.gpu_count = count
            pod.rate = pod.gpu.price(pod.cloud) * count
            pod.generation += 1
            # A resumed pod gets a new container start, so it may (not) get stuck again.
            pod.never_ready = self.rng.random() < self.faults.never_ready_share
            pod.stuck = False
            self._begin_boot(pod, mono, cold=False)
            pod.desired_status = RUNNING
            if pod.billing_since is not None:  # resumed from ERROR, which was billing already
                pod.billed_s += mono - pod.billing_since
            pod.billing_since = mono
            pod.last_status_change = f"Rented by User: {js_date(time.time())}"
            self._booting.add(pod.id)
            self._cond.notify_all()
        log.info("emulator_pod_started", pod_id=pod_id)
        return pod

    def restart_pod(self, pod_id: str) -> Pod:
        with self._cond:
            pod = self._require(pod_id)
            if "restart" not in pod.actions:
                raise EmulatorRefusal("conflict", f"cannot restart a pod in status {pod.status}")
            sb = self._unpublish(pod)
            pod.generation += 1
            mono = time.monotonic()
            self._begin_boot(pod, mono, cold=False, delay=_RESTART_DELAY_S / self.speed)
            # A container restart keeps its writable layer (the container disk); a stop wipes it.
            pod.keep_disk = True
            # A restart keeps the allocation: no PROVISIONING phase, straight to the container start.
            pod.status = STARTING
            pod.phase_until = mono + pod.boot_delay_s
            self._booting.add(pod.id)
            self._cond.notify_all()
        if sb is not None:
            self._pool.submit(_safe_stop, sb)
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
            self._pool.submit(_safe_stop, sb)
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
        mono = time.monotonic() if now_mono is None else now_mono
        return pod.billed_seconds(mono) * pod.rate / 3600.0

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

    # --- the ticker --------------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        next_liveness = time.monotonic() + _LIVENESS_EVERY_S
        while True:
            probes: list[tuple[Pod, Sandbox, int]] = []
            starts: list[tuple[Pod, int]] = []
            dead: list[Sandbox] = []
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                if now >= next_liveness:
                    dead = self._reap_exited(now)
                    next_liveness = now + _LIVENESS_EVERY_S
                wake = min(now + 1.0, next_liveness)
                for pod_id in list(self._booting):
                    pod = self.pods[pod_id]
                    self._advance(pod, now, starts)
                    if pod.awaiting_ready and pod.sandbox is not None:
                        if pod.probing:
                            pass  # its probe's completion wakes us
                        elif pod.probe_next <= now:
                            pod.probing = True
                            probes.append((pod, pod.sandbox, pod.generation))
                        else:
                            wake = min(wake, pod.probe_next)
                    elif pod.phase_until is not None:
                        wake = min(wake, pod.phase_until)
            for pod, gen in starts:
                self._pool.submit(self._start_sandbox, pod, gen)
            for sb in dead:
                self._pool.submit(_safe_stop, sb)
            for pod, sb, gen in probes:
                self._probe_pool.submit(self._probe, pod, sb, gen)
            with self._cond:
                if self._stopping:
                    return
                delay = wake - time.monotonic()
                if delay > 0:
                    self._cond.wait(timeout=delay)

    def _reap_exited(self, now: float) -> list[Sandbox]:
        """RUNNING pods whose container died (sshd gone) become EXITED, as a real pod whose process ends."""
        dead = []
        for pod in self.pods.values():
            sb = pod.sandbox
            if pod.status == RUNNING and sb is not None and not sb.alive:
                self._release(pod, EXITED, now)
                pod.desired_status = EXITED
                pod.error = "container exited"
                pod.last_status_change = f"Exited: {js_date(time.time())}"
                log.warning("emulator_pod_container_exited", pod_id=pod.id)
                dead.append(sb)
        return dead

    def _advance(self, pod: Pod, now: float, starts: list[tuple[Pod, int]]) -> None:
        """Move one booting pod through its timed phases (called under the lock)."""
        if pod.phase_until is None or now < pod.phase_until:
            return
        if pod.status == PROVISIONING:
            pod.status = STARTING
            pod.phase_until = now + pod.boot_delay_s * (1 - _PROVISION_SHARE)
            if pod.phase_until > now:
                return
        if pod.status == STARTING and not pod.starting_sandbox and pod.sandbox is None:
            self._pulled.add((pod.image, pod.dc_id))
            pod.phase_until = None
            if pod.never_ready:
                # The image pull never finishes: STARTING forever, runtime null, billing on.
                self._booting.discard(pod.id)
                pod.stuck = True
                log.info("emulator_pod_stuck", pod_id=pod.id)
                return
            pod.starting_sandbox = True
            starts.append((pod, pod.generation))

    def _sandbox_env(self, pod: Pod) -> dict[str, str]:
        env = dict(pod.env)
        env.update(
            {"RUNPOD_POD_ID": pod.id, "RUNPOD_PUBLIC_IP": "127.0.0.1", "RUNPOD_GPU_COUNT": str(pod.gpu_count)}
        )
        return env

    @staticmethod
    def serves_ssh(pod: Pod) -> bool:
        """Whether the pod's container runs sshd: the image starts it only when PUBLIC_KEY is non-empty."""
        return bool(pod.env.get("PUBLIC_KEY")) and not pod.ssh_refuse

    def _start_sandbox(self, pod: Pod, gen: int) -> None:
        with self.lock:
            if pod.generation != gen or pod.status != STARTING:
                return
            volume = self.volumes.get(pod.volume_id) if pod.volume_id else None
            if volume is not None:
                volume_dir = volume.path
            else:
                volume_dir = pod.private_dir
                volume_dir.mkdir(parents=True, exist_ok=True)
            kwargs: dict[str, Any] = {
                "env": self._sandbox_env(pod),
                "volume_dir": volume_dir,
                "mount_path": pod.mount_path,
                "gpu_name": pod.gpu.id,
                "vram_mb": pod.gpu.memory_gb * 1024,
                "state_dir": self.state_dir / "pods",
                "ssh_refuse": pod.ssh_refuse,
                "keep_container_disk": pod.keep_disk,
            }
            far = self.faults.rtt_ms > 0
            serves = self.serves_ssh(pod)
        sb: Sandbox | None = None
        # Far away: the published port is a delaying relay's. It listens only where sshd will (elsewhere
        # connections must be refused, not accepted and reset), and it is reserved first because the
        # pod's RUNPOD_TCP_PORT_22 names it.
        public: RelayPort | None = None
        try:
            if far:
                public = self.relay.reserve()
                kwargs["public_port"] = public.port
            sb = self._sandbox_factory(pod.id, **kwargs)
            port = sb.start()
            if public is not None and serves:
                self.relay.forward(public, port)
        except Exception as exc:  # any sandbox failure is the container failing to start
            log.warning("emulator_sandbox_start_failed", pod_id=pod.id, error=repr(exc))
            stale: Sandbox | None = sb
            with self._cond:
                if pod.generation == gen and pod.status == STARTING:
                    self._release(pod, ERROR, time.monotonic())
                    pod.error = f"container failed to start: {exc}"
            if public is not None:
                self.relay.release(public)
            if stale is not None:
                _safe_stop(stale)
            return
        with self._cond:
            if pod.generation == gen and pod.status == STARTING:
                pod.sandbox = sb
                pod.ssh_port = public.port if public is not None else port
                pod.relay_port = public
                pod.starting_sandbox = False
                pod.awaiting_ready = True
                pod.probe_next = time.monotonic()
                self._cond.notify_all()
                return
        # The pod was stopped or terminated while its sandbox was starting.
        if public is not None:
            self.relay.release(public)
        _safe_stop(sb)

    def _probe(self, pod: Pod, sb: Sandbox, gen: int) -> None:
        try:
            # A pod without sshd (no PUBLIC_KEY, or refusing) has nothing to answer; like a real one, its
            # port is mapped as soon as the container runs, and connections to it are refused.
            ok = sb.ready() if self.serves_ssh(pod) else sb.alive
        except Exception as exc:  # a probe that blows up is a probe that failed
            log.debug("emulator_probe_error", pod_id=pod.id, error=repr(exc))
            ok = False
        with self._cond:
            pod.probing = False
            self._cond.notify_all()
            if pod.generation != gen or pod.status != STARTING or pod.sandbox is not sb:
                return
            now = time.monotonic()
            if ok:
                pod.status = RUNNING
                pod.awaiting_ready = False
                pod.running_since = now
                pod.ready_mono = now
                pod.started_at = time.time()
                self._booting.discard(pod.id)
                log.info(
                    "emulator_pod_ready",
                    pod_id=pod.id,
                    port=pod.ssh_port,
                    seconds=round(now - pod.created_mono, 3),
                )
            else:
                pod.probe_next = now + pod.probe_step
                pod.probe_step = min(pod.probe_step * 1.5, _PROBE_MAX_S)

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
            "billedUsd": round(p.billed_seconds(mono) * p.rate / 3600.0, 9),
            "bootKind": p.boot_kind,
            "bootDelaySeconds": round(p.boot_delay_s, 3),
            "createToReadySeconds": None if p.ready_mono is None else round(p.ready_mono - p.created_mono, 4),
            "neverReady": p.never_ready,
            "stuck": p.stuck,
            "sshRefuse": p.ssh_refuse,
            "sshPort": p.ssh_port,
            "error": p.error,
        }


def _safe_stop(sb: Sandbox) -> None:
    try:
        sb.stop()
    except Exception as exc:  # stopping is best effort; a leak is logged, not raised into a request
        log.warning("emulator_sandbox_stop_failed", error=repr(exc))


def _cuda_ok(version: str, allowed: list[str], minimum: str | None) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))

    if allowed and version not in allowed:
        return False
    return not (minimum and key(version) < key(minimum))
