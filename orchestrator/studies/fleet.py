"""The simulator's provider and workers: Runpod's pods as the policy sees them, and the worker processes.

Where this sits: the virtual-time simulator's stand-in for :class:`orchestrator.ports.Provider` (the
executor reaches it through ``orchestrator.studies.driver``).

* :class:`SimProvider` is Runpod as the policy sees it: pods that boot in a time drawn from a
  distribution (cached image about 30 s, cold about 165 s for a 16 GB image, as users measure Runpod),
  per-second billing, a capacity limit, and injected failures (pods that never boot, 5xx/429 bursts that
  fail listing and creation, SSH failures during initialization); pods stopped and resumed
  (:class:`ResumeModel`: the GPU freed and the disk billed while stopped, a resume's time, the share of
  resumes that find their host's GPUs taken, a new host key after each resume).
* :class:`SimWorker` is the worker process and its heartbeat guardian (banodoco/Reigh-Worker's
  ``heartbeat_guardian.py``: a separate process beating every 20 s): it polls for a task every 10 s
  when idle and 1 s after a task (``worker.py``'s ``--poll-interval`` default and its pause after a
  task), runs one task at a time for the trace's duration; it can crash (the process dies, the task
  is left In Progress, and the guardian's next beat says ``crashed``) or hang (the task never ends,
  heartbeats go on). A parent task (``*_orchestrator``) runs as the real worker runs one: briefly (it
  creates its children through ``create-task``), then it stays In Progress under the worker, which goes
  back to claiming; the parent completes with its last child (the app's ``complete_task``). Sources:
  banodoco/Reigh-Worker ``worker.py`` (the poll runs an orchestrator row it holds "only when nothing is
  claimable and no child is unfinished"), banodoco/reigh-app's ``complete_task`` Edge Function (parents
  completed on the last child) and its ``get-predecessor-output`` (a travel segment reads the one
  before it). The rest of the parent's duration in the trace is its children's work:
  ``travel_segment`` tasks of about 2 minutes, each claimable once the one before it is done, run by
  whichever worker claims them (``Simulation.launch_child``). Where this is kinder than the real
  thing: the real parent creates all its segments at once (the later ones waiting on their
  dependencies), so the arrival counts the policy reads jump by the chain's length when it runs; here
  each segment arrives when it becomes claimable. The number and length of segments are ours (the
  sources give none).
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.core import errors
from orchestrator.core.evidence import PARENT_MARK
from orchestrator.core.observed import PodView
from orchestrator.core.states import PodStatus
from orchestrator.studies.clock import Clock, at
from orchestrator.studies.memdb import TaskRow

if TYPE_CHECKING:
    from orchestrator.studies.simulation import Simulation

GPU = "NVIDIA GeForce RTX 4090"
GPU_PRICE = 0.59  # USD/h, secure cloud, the emulator's catalog (third-party listings: ~0.60)
# Supabase bills Edge Function invocations at 2 USD per million beyond the plan's quota (2 million a
# month on Pro; supabase.com/docs/guides/platform/manage-your-usage/edge-function-invocations). The
# simulator bills every call, as if the app had used the quota already (the harsher case).
EDGE_USD_PER_CALL = 2.0 / 1_000_000
PRICES: Mapping[str, float] = {GPU: GPU_PRICE}


@dataclass
class BootModel:
    """How long pods take, in virtual seconds (measured by users: cached ~30 s, cold ~165-170 s for a 16 GB image)."""

    cached_share: float = 0.6
    cached_median: float = 30.0
    cold_median: float = 165.0
    sigma: float = 0.2  # lognormal spread
    create_latency: float = 2.0  # the create call's round trip
    api_latency: float = 0.5  # terminate, status
    ssh_checks: float = 12.0  # the original orchestrator's initialization checks over SSH
    start_latency: float = 3.0  # the start command over SSH
    process_warmup: float = 15.0  # start -> first heartbeat (imports, model load)

    def draw(self, rng: random.Random) -> float:
        median = self.cached_median if rng.random() < self.cached_share else self.cold_median
        return median * rng.lognormvariate(0.0, self.sigma)


@dataclass
class ResumeModel:
    """Stopping and resuming pods (the warm pool), in virtual seconds and dollars.

    Runpod's docs ("Manage Pods"; troubleshooting, "Pod migration", docs.runpod.io): a pod with a network
    volume can be stopped; it frees its GPU, keeps its volume disk and starts again on the same host with
    its image cached there, unless another user took the host's GPUs meanwhile: then the start is refused
    ("There are not enough free GPUs on the host machine to start this pod") or the pod comes back
    without a GPU, and must be replaced. The stop wipes the container disk, where the image writes its
    SSH host keys at start-up, so a resumed pod presents a new host key. Prices (Runpod's pricing page,
    docs.runpod.io/pods/pricing): a stopped volume disk bills 0.20 USD/GB/month.

    Where the sources are silent, the harsher case: a resume is as slow as a cached-image boot with more
    spread (median 30 s, sigma 0.3 against 0.2); a stop takes ``stop_latency`` seconds (Docker's default
    10 s grace before it kills the container) during which the GPU still bills, and the worker process
    dies at once; a month of disk billing is 30 days; the failure share is a flat knob
    (``failure_share``), each resume drawing on its own.
    """

    failure_share: float = 0.3  # share of resumes that find the host's GPUs taken ("no_gpu")
    median: float = 30.0  # start asked -> RUNNING with SSH published
    sigma: float = 0.3
    stop_latency: float = 10.0  # stop asked -> EXITED (the GPU bills until then)
    disk_gb: float = 20.0  # RUNPOD_DISK_SIZE_GB: the volume disk a stopped pod keeps
    disk_usd_per_gb_month: float = 0.20

    @property
    def stopped_usd_per_hr(self) -> float:
        return self.disk_gb * self.disk_usd_per_gb_month / 720.0

    def draw(self, rng: random.Random) -> float:
        return self.median * rng.lognormvariate(0.0, self.sigma)


@dataclass
class Faults:
    """Injected failures; all zero for the policy benchmark, set for the chaos soak."""

    never_boot: float = 0.0  # share of pods that stay PROVISIONING for ever
    ssh_flaky: float = 0.0  # share of initialization attempts where SSH does not answer yet
    init_fail: float = 0.0  # share of initializations whose checks fail (init_failed)
    crash_per_hour: float = 0.0  # worker process crashes, per process-hour
    hang: float = 0.0  # share of claimed tasks that hang (the task never ends, heartbeats go on)
    # (start, end, HTTP status): 5xx and 429 fail every call; 409 makes creations find no capacity.
    outages: tuple[tuple[float, float, int], ...] = ()
    ghost_create: float = 0.0  # share of creations failing with a 5xx whose pod was created all the same
    stray_pods_per_hour: float = 0.0  # pods with our prefix and no row (another deployment's leftovers)


@dataclass
class SimPod:
    id: str
    name: str
    gpu: str
    cost_per_hr: float
    created_at: float
    ready_at: float | None  # RUNNING with SSH published from then; None = never boots
    terminated_at: float | None = None
    process: SimWorker | None = None
    # Billing spans [start, end or None]: the GPU from each start to the stop taking effect (or the
    # termination), the volume disk while stopped.
    gpu_spans: list[list[float | None]] = field(default_factory=list)
    disk_spans: list[list[float | None]] = field(default_factory=list)
    stopped_from: float | None = None  # EXITED from then (None: not stopped)
    resumes: int = 0

    def __post_init__(self) -> None:
        if not self.gpu_spans:
            self.gpu_spans = [[self.created_at, None]]

    @property
    def alive(self) -> bool:
        return self.terminated_at is None

    @property
    def holds_gpu(self) -> bool:
        """Alive and not stopped (a stopping pod bills its GPU until the stop takes effect)."""
        return self.alive and self.stopped_from is None

    def status(self, now: float) -> PodStatus:
        if not self.alive:
            return PodStatus.TERMINATED
        if self.stopped_from is not None:
            return PodStatus.EXITED if now >= self.stopped_from else PodStatus.RUNNING
        if self.ready_at is not None and now >= self.ready_at:
            return PodStatus.RUNNING
        return PodStatus.PROVISIONING

    def gpu_seconds(self, until: float) -> float:
        return _span_seconds(self.gpu_spans, until)

    def disk_seconds(self, until: float) -> float:
        return _span_seconds(self.disk_spans, until)

    def close_spans(self, when: float) -> None:
        for spans in (self.gpu_spans, self.disk_spans):
            if spans and spans[-1][1] is None:
                spans[-1][1] = max(when, spans[-1][0] or when)

    def view(self, now: float) -> PodView:
        status = self.status(now)
        return PodView(
            id=self.id,
            name=self.name,
            status=status,
            ssh_ready=status is PodStatus.RUNNING,
            cost_per_hr=self.cost_per_hr,
            created_at=at(self.created_at),
            gpu_type=self.gpu,
            data_center="EU-RO-1",
        )


class SimProvider:
    """Runpod as the policy sees it: listing, creation, termination, boot, billing, failures."""

    def __init__(
        self,
        clock: Clock,
        rng: random.Random,
        boot: BootModel,
        faults: Faults,
        capacity: int = 24,
        prices: Mapping[str, float] = PRICES,
        resume: ResumeModel | None = None,
        seed: int = 0,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.boot = boot
        self.faults = faults
        self.capacity = capacity
        self.prices = dict(prices)
        self.resume = resume or ResumeModel()
        # Its own stream: the pool's draws must not shift the boots' (a run without the pool stays the
        # run it was).
        self.rng_resume = random.Random(f"resume-{seed}")
        self.pods: dict[str, SimPod] = {}
        self._alive: dict[str, SimPod] = {}
        self._n = 0
        self.on_create: Callable[[SimPod], None] | None = None
        self.on_terminate: Callable[[SimPod], None] | None = None

    def outage(self) -> int | None:
        now = self.clock.now
        for start, end, status in self.faults.outages:
            if start <= now < end:
                return status
        return None

    def api_down(self) -> bool:
        """The API fails every call now (a 409 window only refuses creations for lack of capacity)."""
        status = self.outage()
        return status is not None and status != 409

    def _check_api(self, call: str) -> None:
        status = self.outage()
        if status is None or (status == 409 and call != "create_pod"):
            return
        if status == 409:
            raise errors.RunpodCapacityError(f"{call}: no instances available", status=409)
        if status == 429:
            raise errors.RunpodRateLimited(f"{call}: 429 Too Many Requests", retry_after=30.0, status=429)
        if status is not None:
            raise errors.RunpodTransientError(f"{call}: HTTP {status}", status=status)

    def list_pods(self) -> list[PodView]:
        self._check_api("list_pods")
        now = self.clock.now
        # Terminated pods drop out of the listing, as on the real service.
        return [p.view(now) for p in self._alive.values()]

    def alive_pods(self) -> list[SimPod]:
        return list(self._alive.values())

    def gpu_pods(self) -> list[SimPod]:
        """Pods holding a GPU (a stopped pod holds none: the capacity and MAX_ACTIVE_GPUS count these)."""
        return [p for p in self._alive.values() if p.holds_gpu]

    def stop(self, pod_id: str) -> bool:
        """``POST /v2/pods/{id}/action {"action": "stop"}``: accepted (True, or already stopping or
        stopped); the worker process dies at once, the pod is EXITED ``stop_latency`` later and bills
        its GPU until then, its disk after. False on an API error or an unknown pod."""
        try:
            self._check_api("stop_pod")
        except errors.RunpodError:
            return False
        pod = self._alive.get(pod_id)
        if pod is None:
            return False
        if pod.stopped_from is not None:
            return True
        when = self.clock.now + self.resume.stop_latency
        pod.stopped_from = when
        if pod.process is not None:
            pod.process.kill()
            pod.process = None
        pod.gpu_spans[-1][1] = when
        pod.disk_spans.append([when, None])
        return True

    def start(self, pod_id: str) -> tuple[str, str]:
        """``POST /v2/pods/{id}/action {"action": "start"}`` on the pod's old host: ``(status, detail)``
        with the provider port's statuses (``resumed``, ``no_gpu``, ``gone``, ``failed``)."""
        try:
            self._check_api("start_pod")
        except errors.RunpodError as exc:
            return "failed", str(exc)
        pod = self._alive.get(pod_id)
        if pod is None:
            return "gone", f"pod {pod_id} not found"
        now = self.clock.now
        if pod.stopped_from is None:
            return "resumed", "already running"
        if now < pod.stopped_from:
            return "failed", "the pod is still stopping"
        if self.rng_resume.random() < self.resume.failure_share:
            return "no_gpu", "There are not enough free GPUs on the host machine to start this pod"
        if len(self.gpu_pods()) >= self.capacity:
            return "no_gpu", "There are not enough free GPUs on the host machine to start this pod"
        pod.disk_spans[-1][1] = now
        pod.gpu_spans.append([now, None])
        pod.stopped_from = None
        pod.resumes += 1
        pod.ready_at = now + self.resume.draw(self.rng_resume)
        return "resumed", ""

    def create(self, name: str, gpu_types: Sequence[str]) -> SimPod:
        try:
            self._check_api("create_pod")
        except errors.RunpodTransientError:
            if self.rng.random() < self.faults.ghost_create and len(self.gpu_pods()) < self.capacity:
                self._make(name, gpu_types[0])  # the provider did it; the answer was lost
            raise
        if len(self.gpu_pods()) >= self.capacity:
            raise errors.RunpodCapacityError(f"no {gpu_types[0]} available", status=409)
        return self._make(name, gpu_types[0])

    def _make(self, name: str, gpu: str, *, ours: bool = True) -> SimPod:
        self._n += 1
        now = self.clock.now
        never = self.rng.random() < self.faults.never_boot
        boot = self.boot.draw(self.rng)
        pod = SimPod(
            id=f"pod{self._n:05d}",
            name=name,
            gpu=gpu,
            cost_per_hr=self.prices.get(gpu, GPU_PRICE),
            created_at=now,
            ready_at=None if never else now + boot,
        )
        self.pods[pod.id] = pod
        self._alive[pod.id] = pod
        if ours and self.on_create is not None:
            self.on_create(pod)  # the ceilings bind this orchestrator's creations, not a stranger's
        return pod

    def terminate(self, pod_id: str) -> bool:
        """True when the provider confirms the pod gone (an unknown pod is gone); False on an API error."""
        try:
            self._check_api("terminate_pod")
        except errors.RunpodError:
            return False  # RunpodClient.terminate_worker logs and returns False
        pod = self._alive.pop(pod_id, None)
        if pod is not None:
            pod.terminated_at = self.clock.now
            pod.close_spans(self.clock.now)
            if pod.process is not None:
                pod.process.kill()
            if self.on_terminate is not None:
                self.on_terminate(pod)
        return True

    def billed_seconds(self, until: float) -> float:
        """GPU-seconds billed (stopped pods' disks are :meth:`disk_cost`)."""
        return sum(p.gpu_seconds(until) for p in self.pods.values())

    def disk_cost(self, until: float) -> float:
        """USD billed for stopped pods' volume disks."""
        seconds = sum(p.disk_seconds(until) for p in self.pods.values())
        return seconds * self.resume.stopped_usd_per_hr / 3600.0

    def cost(self, until: float) -> float:
        """What the provider bills: GPUs while held, volume disks while stopped."""
        gpus = sum(p.gpu_seconds(until) * p.cost_per_hr / 3600.0 for p in self.pods.values())
        return gpus + self.disk_cost(until)


# --- the worker process ----------------------------------------------------------------------------


class SimWorker:
    """A Reigh worker process on one pod, with its heartbeat guardian.

    Modelled on banodoco/Reigh-Worker ``worker.py`` and ``heartbeat_guardian.py``: the guardian is a
    separate process that beats every 20 s whatever the worker does; the worker polls every
    ``--poll-interval`` (``WORKER_POLL_INTERVAL_SEC`` of the policy's settings; the worker's own
    default, which the old system launched with, is 10 s) while idle and 1 s after finishing a task. A
    crash kills the worker process only: the guardian's next check finds it gone and sends one
    ``crashed`` beat. A pod termination kills both, silently.

    The Edge Function calls are counted (``edge_calls``) as banodoco/reigh-worker 22cbba9 makes them,
    the revision the daemon's docs pin: each poll is ``task-counts`` and then ``claim-next-task``,
    whatever the counts said (``source/core/db/task_claim.py``: "still attempting claim"), and each task
    ends with ``complete_task``. That revision never reads back the tasks it holds
    (``check_my_assigned_tasks`` returns None), so a worker holding a parent makes no
    ``get-orchestrator-children`` call from its poll. (``update-task-status`` In Progress and
    ``update-worker-model`` follow a model load, which the simulator does not model.)
    """

    HEARTBEAT_SEC = 20.0
    AFTER_TASK_SEC = 1.0
    # A parent's own run: reading its inputs and creating its children through the Edge Functions.
    PARENT_RUN_SEC = 5.0

    def __init__(self, sim: Simulation, pod: SimPod, worker_id: str) -> None:
        self.sim = sim
        self.pod = pod
        self.worker_id = worker_id
        self.alive = True
        self.guardian_alive = True
        self.hung = False
        self.task: TaskRow | None = None
        self.started = sim.clock.now
        warmup = sim.boot.process_warmup * sim.rng_workers.uniform(0.7, 1.3)
        sim.clock.schedule(warmup, self._heartbeat)
        sim.clock.schedule(warmup + 0.5, self._claim)
        self.claim_poll_sec = float(sim.settings.worker_poll_interval_sec)
        if sim.faults.crash_per_hour > 0:
            sim.clock.schedule(sim.rng_workers.expovariate(sim.faults.crash_per_hour / 3600.0), self.crash)

    @property
    def executing(self) -> bool:
        """Able to finish (and so to write the result of) the task it holds."""
        return self.alive and not self.hung and self.pod.alive and self.task is not None

    def kill(self) -> None:
        """The pod is gone: the worker and its guardian with it."""
        self.guardian_alive = False
        if self.alive:
            self.alive = False
            self.sim.on_worker_gone(self)

    def crash(self) -> None:
        """The worker process dies (a segfault, an OOM kill); its guardian lives on."""
        if self.alive:
            self.sim.counters["worker_crashes"] += 1
            self.alive = False
            self.sim.on_worker_gone(self)

    def _heartbeat(self) -> None:
        if not self.guardian_alive:
            return
        status = "active" if self.alive else "crashed"
        with contextlib.suppress(errors.NotFound):  # a row deleted under it: keep beating, as the real one
            self.sim.db.heartbeat(self.worker_id, status)
        if status == "crashed":
            self.guardian_alive = False  # one last beat, then the guardian exits
            return
        self.sim.clock.schedule(self.HEARTBEAT_SEC, self._heartbeat)

    def _claim(self) -> None:
        if not self.alive or self.task is not None:
            return
        self.sim.counters["edge_calls"] += 2  # task-counts, then claim-next-task whatever it said
        try:
            row = self.sim.db.claim(self.worker_id)
        except errors.NotFound:
            row = None
        if row is None:
            self.sim.clock.schedule(self.claim_poll_sec, self._claim)
            return
        self.task = row
        self.sim.on_claim(self, row)
        if self.sim.faults.hang > 0 and self.sim.rng_workers.random() < self.sim.faults.hang:
            self.hung = True
            self.sim.counters["worker_hangs"] += 1
            if "_orchestrator" in row.task_type:
                # A long-running parent is exempt from the stuck timeout: its hang is modelled as the
                # whole machine freezing (guardian included, so no heartbeat), which the heartbeat
                # timeout catches. (A worker frozen alone keeps its guardian beating: nothing would.)
                self.alive = False
                self.guardian_alive = False
            self.sim.on_worker_gone(self)
            return
        if PARENT_MARK in row.task_type:
            self.sim.clock.schedule(self.PARENT_RUN_SEC, functools.partial(self._launch, row))
            return
        self.sim.clock.schedule(row.duration, functools.partial(self._finish, row))

    def _launch(self, parent: TaskRow) -> None:
        """The parent has run: its child exists; the worker keeps the parent In Progress and claims on."""
        if not self.alive or self.hung or self.task is not parent:
            return
        self.sim.launch_child(self, parent)
        self.task = None
        self.sim.clock.schedule(self.AFTER_TASK_SEC, self._claim)

    def _finish(self, task: TaskRow) -> None:
        if not self.alive or self.hung or self.task is not task:
            return
        completed = self.sim.db.complete(self.worker_id, task.id)
        self.sim.counters["edge_calls"] += 1  # complete_task
        self.sim.on_finish(self, task)
        if completed:  # a late second finish of a requeued segment must not move its chain twice
            self.sim.on_child_done(self, task)
        self.task = None
        self.sim.clock.schedule(self.AFTER_TASK_SEC, self._claim)


def _span_seconds(spans: list[list[float | None]], until: float) -> float:
    total = 0.0
    for start, end in spans:
        begin = start or 0.0
        stop = until if end is None else min(end, until)
        total += max(0.0, stop - begin)
    return total
