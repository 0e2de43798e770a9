"""The records of the emulated Runpod world: pod statuses, pods, create requests, volumes, refusals.

Part of ``orchestrator/standins/emulator``: the state model (:mod:`.state`, with the boot machinery of
:mod:`.boot`) keeps these records and mutates them under its lock; :mod:`.rest` and :mod:`.gql` render
them in their own shapes and raise :class:`EmulatorRefusal` for what a request gets wrong. Nothing here
holds a lock or starts a thread. :class:`Sandbox` is what the state model needs of a pod's container
(``orchestrator.standins.sandbox.PodSandbox`` is the real one).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

from orchestrator.core.errors import OrchestratorError

from .catalog import GpuTypeSpec
from .latency import RelayPort

PROVISIONING = "PROVISIONING"
STARTING = "STARTING"
RUNNING = "RUNNING"
EXITED = "EXITED"
ERROR = "ERROR"
TERMINATED = "TERMINATED"

#: States in which a pod holds its GPUs (and so bills).
HOLDS_GPU = frozenset({PROVISIONING, STARTING, RUNNING})
#: Statuses that bill: Runpod bills a pod per second while it is active (docs.runpod.io/pods/pricing),
#: and openapi-v2.json's ``Pod.cost`` is 0 only when EXITED or TERMINATED. An ERROR pod gives its GPUs
#: back to the emulator's stock (its host is unknown) but keeps costing until it is terminated.
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

#: A stopped pod's volume disk bills $0.20 per GB per month (running pods: $0.10 for all storage);
#: the container disk, wiped by the stop, bills nothing (docs.runpod.io/pods/storage and "Storage
#: billing" of docs.runpod.io/get-started/billing-information; charged per minute there).
STOPPED_DISK_USD_PER_GB_MONTH = 0.20
#: Hours in the month those prices mean; Runpod does not say. 30 days gives the higher hourly rate.
HOURS_PER_MONTH = 720.0

NO_CAPACITY = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)
NOT_ENOUGH_GPUS = "There are not enough free GPUs on the host machine to start this pod"

#: ``Pod.host_gpu_taken_by`` of a pod that started without a GPU: no pod of ours will give it back.
HOST_GPU_ELSEWHERE = "another user"

#: First interval between readiness probes of one pod, in real seconds (it backs off from there).
PROBE_FIRST_S = 0.01

_ID_ALPHABET = string.ascii_lowercase + string.digits


class EmulatorRefusal(OrchestratorError):
    """The emulated service refuses a request; each API renders it in its own error shape.

    ``kind`` is one of: ``invalid`` (422), ``bad_request`` (400), ``no_balance`` (402), ``forbidden``
    (403), ``no_capacity`` (400 / GraphQL message), ``not_found`` (404), ``conflict`` (409).
    """

    STATUS: ClassVar[dict[str, int]] = {
        "invalid": 422,
        "bad_request": 400,
        "no_balance": 402,
        "forbidden": 403,
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
    # Optional (test doubles may lack it): ``stop_and_wipe()`` stops the pod and deletes its container
    # disk, as a stop or termination of a real pod does; the emulator calls it when present.
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
    # The request carried its docker args as an empty string (GraphQL's dockerArgs: "", the SDK's default
    # in runpod-python's ctl_commands.create_pod; REST's "args": ""), not left them out.
    args_given_empty: bool = False
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
    starting_sandbox: bool = False
    awaiting_ready: bool = False
    probe_next: float = 0.0
    probe_step: float = PROBE_FIRST_S
    probing: bool = False
    generation: int = 0
    billed_s: float = 0.0
    billing_since: float | None = None
    terminated_at: float | None = None
    error: str | None = None
    #: True once a never-ready pod has reached the end of its boot delay and will stay STARTING.
    stuck: bool = False
    #: GPUs the pod was created with (``gpu_count`` is what it has now: 0 after a start without GPU).
    spec_gpu_count: int = 1
    #: When the container's last boot began (create, start or restart), for the admin view.
    boot_began_mono: float | None = None
    #: When the pod last gave its GPUs back (stop, error, preemption); oldest are taken first.
    released_mono: float | None = None
    #: The pod that took the GPU this stopped pod's host kept for it (it cannot start there until that
    #: pod gives it back); ``HOST_GPU_ELSEWHERE`` after a start without a GPU.
    host_gpu_taken_by: str | None = None
    #: Seconds spent EXITED (billed for the volume disk), and since when it is EXITED now.
    stopped_s: float = 0.0
    stopped_since: float | None = None
    #: A stop was asked: the container's processes end (the pod becomes EXITED) at this monotonic time,
    #: the stop grace after the request (``Faults.stop_grace_sec``); until then it runs, and bills.
    stopping_until: float | None = None

    @property
    def actions(self) -> list[str]:
        return list(ACTIONS[self.status])

    def billed_seconds(self, now_mono: float) -> float:
        extra = now_mono - self.billing_since if self.billing_since is not None else 0.0
        return self.billed_s + extra

    def end_stopped(self, now_mono: float) -> None:
        """The pod leaves EXITED (started or terminated): its volume disk's stopped billing ends."""
        if self.stopped_since is not None:
            self.stopped_s += now_mono - self.stopped_since
            self.stopped_since = None

    def stopped_seconds(self, now_mono: float) -> float:
        extra = now_mono - self.stopped_since if self.stopped_since is not None else 0.0
        return self.stopped_s + extra

    @property
    def stopped_disk_rate(self) -> float:
        """USD/h while EXITED: the volume disk only (a network volume is billed on its own)."""
        return self.persistent_gb * STOPPED_DISK_USD_PER_GB_MONTH / HOURS_PER_MONTH

    def current_cost(self) -> float:
        """USD/h now: 0 unless the pod bills (openapi: 0.0 when EXITED or TERMINATED)."""
        return round(self.rate, 4) if self.status in BILLED else 0.0

    def uptime_s(self, now_mono: float) -> int:
        return int(now_mono - self.running_since) if self.running_since is not None else 0
