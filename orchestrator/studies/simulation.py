"""Discrete-event simulator in virtual time: the real ``plan()`` and the real executor against a simulated fleet.

Where this sits: beside the stand-ins (``orchestrator.standins``: the Runpod emulator, real HTTP and
sshd, wall-clock time), this trades fidelity of the wire for speed: a day of virtual time runs in
seconds, so ``bench/policy.py`` can compare policies on whole-day traces and
``orchestrator.studies.chaos`` can soak the control loop for 24 virtual hours. What it keeps exact is
what the policy sees and what its actions do: the in-memory database (:mod:`orchestrator.studies.memdb`)
has the SQL's semantics, the provider and the workers (:mod:`orchestrator.studies.fleet`) behave as
Runpod and the real worker do, and the actions are carried out by the daemon's own handlers
(:data:`orchestrator.loop.executor.HANDLERS`), each database or provider call after its modelled
latency (:mod:`orchestrator.studies.driver`); an action whose worker (or pod) has one in flight is
skipped, as the controller does.

:class:`Simulation` ticks every ``ORCHESTRATOR_POLL_SEC`` (and at once on a new task when the policy's
transport listens, like the Postgres adapter's LISTEN/NOTIFY), can restart the orchestrator (in-flight
steps are lost, nothing in memory survives, the new process waits for the old lease to expire), and
checks the invariants every tick (:mod:`orchestrator.studies.invariants`).

Everything random comes from one seeded ``random.Random`` per concern, so a run is reproducible.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.core import errors
from orchestrator.core.actions import Plan
from orchestrator.core.config import Settings
from orchestrator.core.observed import PodView
from orchestrator.studies.clock import Clock, at
from orchestrator.studies.driver import VirtualExecutor
from orchestrator.studies.fleet import (
    EDGE_USD_PER_CALL,
    GPU,
    GPU_PRICE,
    PRICES,
    BootModel,
    Faults,
    ResumeModel,
    SimPod,
    SimProvider,
    SimWorker,
)
from orchestrator.studies.invariants import Invariants, Violation
from orchestrator.studies.memdb import BOOTING, SimDB, TaskRow
from orchestrator.studies.traces import Trace

PlanFn = Callable[..., Plan]
"""``plan(snapshot, pods, settings, now, *, prices) -> Plan``: the real one or a competitor."""


# --- the simulation --------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    queued: int
    running: int
    serving: int  # initializing + active + draining rows with a live process
    booting: int
    pods: int


@dataclass
class Result:
    """What one run measured (``bench/policy.py`` turns it into the table)."""

    policy: str
    trace: str
    horizon: float
    cost_usd: float
    gpu_hours: float
    busy_share: float
    waits: list[float]
    tasks_total: int
    tasks_complete: int
    tasks_lost: int
    tasks_dead_lettered: int
    tasks_duplicated: int
    pods_leaked: int
    spawns: int
    flaps: int
    backlog_above_capacity_s: float
    ticks: int
    violations: list[Violation]
    samples: list[Sample]
    counters: dict[str, int]
    actions: dict[str, int]  # "kind:reason" -> actions started by the executor
    stopped_disk_cost_usd: float = 0.0  # the pool's volume disks while stopped (in cost_usd too)
    edge_calls: int = 0  # the workers' Edge Function calls (SimWorker)
    edge_cost_usd: float = 0.0  # what they bill (in cost_usd too)

    def percentile(self, q: float) -> float:
        if not self.waits:
            return 0.0
        ordered = sorted(self.waits)
        k = (len(ordered) - 1) * q
        lo, hi = math.floor(k), math.ceil(k)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)

    def metrics(self) -> dict[str, float | int]:
        return {
            "cost_usd": round(self.cost_usd, 4),
            "gpu_hours": round(self.gpu_hours, 4),
            "busy_share": round(self.busy_share, 4),
            "wait_p50_s": round(self.percentile(0.50), 2),
            "wait_p95_s": round(self.percentile(0.95), 2),
            "wait_p99_s": round(self.percentile(0.99), 2),
            "tasks_lost": self.tasks_lost,
            "tasks_duplicated": self.tasks_duplicated,
            "pods_leaked": self.pods_leaked,
            "spawns": self.spawns,
            "flaps": self.flaps,
            "backlog_above_capacity_s": round(self.backlog_above_capacity_s, 1),
            "tasks_dead_lettered": self.tasks_dead_lettered,
            # the warm pool
            "stops": self.counters.get("stops", 0),
            "resumes": self.counters.get("resumes", 0),
            "resume_failures": self.counters.get("resume_failures", 0),
            "stopped_disk_cost_usd": round(self.stopped_disk_cost_usd, 4),
            # the workers' claim polls
            "edge_calls": self.edge_calls,
            "edge_cost_usd": round(self.edge_cost_usd, 4),
        }


# The children a parent task creates (Reigh's travel_orchestrator creates travel_segment tasks), each
# about this long, one claimable after the other (a segment reads its predecessor's output).
CHILD_TYPE = "travel_segment"
SEGMENT_SEC = 120.0
FLAP_WINDOW_SEC = 300.0  # a spawn this soon after a scale-down termination is a flap
SAMPLE_SEC = 10.0
MAX_DRAIN_SEC = 4 * 3600.0  # past the horizon, at most this long for the work under way to finish
WAKE_DELAY_SEC = 0.1  # NOTIFY -> tick


class Simulation:
    """One policy on one trace: the clock, the database, the provider, the workers and the daemon."""

    def __init__(
        self,
        trace: Trace,
        plan_fn: PlanFn,
        settings: Settings,
        *,
        name: str = "ours",
        wake_on_tasks: bool = True,
        seed: int = 0,
        boot: BootModel | None = None,
        faults: Faults | None = None,
        restarts: Sequence[float] = (),
        restart_mid_action: bool = False,
        settle_sec: float = 1800.0,
        capacity: int = 24,
        prices: Mapping[str, float] = PRICES,
        resume: ResumeModel | None = None,
        failed_before_serving: bool = True,
    ) -> None:
        self.trace = trace
        self.plan_fn = plan_fn
        self.settings = settings
        self.name = name
        self.wake_on_tasks = wake_on_tasks
        self.poll_sec = float(settings.orchestrator_poll_sec)
        self.boot = boot or BootModel()
        self.faults = faults or Faults()
        self.prices = dict(prices)
        self.horizon = trace.duration + settle_sec
        self.clock = Clock()
        self.rng_workers = random.Random(seed * 7919 + 1)
        self.rng_ssh = random.Random(seed * 7919 + 2)
        self.db = SimDB(self.clock, int(settings.max_task_attempts), failed_before_serving)
        # The volume disk a stopped pod keeps is the configured one.
        self.resume = resume or ResumeModel(disk_gb=float(settings.runpod_disk_size_gb))
        self.provider = SimProvider(
            self.clock,
            random.Random(seed * 7919 + 3),
            self.boot,
            self.faults,
            capacity,
            prices,
            self.resume,
            seed=seed,
        )
        self.executor = VirtualExecutor(self)
        self.invariants = Invariants(self)
        self.provider.on_create = self._on_create
        self.db.on_queued = self._on_queued if wake_on_tasks else None
        self.counters: dict[str, int] = {
            k: 0
            for k in (
                "spawns",
                "edge_calls",
                "worker_crashes",
                "worker_hangs",
                "ssh_failures",
                "init_failures",
                "restarts",
                "second_process_refused",
                "listing_failures",
                "scale_downs",
                "restarts_mid_action",
                "capacity_misses",
                "spawn_failures",
                "stray_pods",
                "stops",
                "resumes",
                "resume_failures",
                "host_key_repins",
                "host_key_refused",
            )
        }
        self.duplicates: set[str] = set()
        self.segments_done: dict[str, int] = {}  # parent task id -> its segments completed
        self.executing: dict[str, set[SimWorker]] = {}
        self.busy_seconds = 0.0
        self.samples: list[Sample] = []
        self.ticks = 0
        self._tick_gen = 0
        self._next_tick_at = math.inf
        self._down_until = 0.0
        self._last_tick = 0.0
        self._last_scale_down = -math.inf
        self.flaps = 0
        self.backlog_s = 0.0
        self.lease_ttl = float(settings.lease_ttl_sec)
        self.restarts = sorted(restarts)
        # Every other restart waits for an action to begin a step and kills the process inside it (the
        # crash windows the recovery logic exists for: between register and create, between create and
        # recording the pod id, between starting the worker and recording it, around a termination).
        self.restart_mid_action = restart_mid_action
        self._armed: list[int] = []
        self._arm_seq = 0
        self._rng_restart = random.Random(seed * 7919 + 4)

    # -- hooks from the parts -----------------------------------------------------------------------

    def _on_create(self, pod: SimPod) -> None:
        if self.clock.now - self._last_scale_down <= FLAP_WINDOW_SEC:
            self.flaps += 1
        self.invariants.on_create(pod)

    def note_scale_down(self) -> None:
        self.counters["scale_downs"] += 1
        self._last_scale_down = self.clock.now

    def on_claim(self, worker: SimWorker, task: TaskRow) -> None:
        others = {w for w in self.executing.get(task.id, set()) if w.executing and w.task is task}
        if others:
            self.duplicates.add(task.id)
            self.invariants.add(
                "task_run_twice",
                f"task {task.id} claimed by {worker.worker_id} while {sorted(o.worker_id for o in others)} run it",
            )
        self.executing.setdefault(task.id, set()).add(worker)

    def on_finish(self, worker: SimWorker, task: TaskRow) -> None:
        self.busy_seconds += task.duration
        self.executing.get(task.id, set()).discard(worker)

    def launch_child(self, worker: SimWorker, parent: TaskRow) -> None:
        """A parent's run: all its segments at once, each ``dependant_on`` the one before, as Reigh's
        travel orchestrator creates them (banodoco/Reigh-Worker
        ``source/task_handlers/travel/orchestrator.py``; the database makes each claimable when its
        predecessor completes, as the app's ``claim_next_task_service_role`` does). Once: a parent run again after a requeue finds its children, as the real one asks
        ``get-orchestrator-children`` first, and is completed if all are done."""
        self.busy_seconds += SimWorker.PARENT_RUN_SEC
        self.executing.get(parent.id, set()).discard(worker)
        done = self.segments_done.get(parent.id)
        if done is None:
            self.segments_done[parent.id] = 0
            n = self._segments(parent)
            seconds = max(1.0, (parent.duration - SimWorker.PARENT_RUN_SEC) / n)
            before: str | None = None
            for k in range(n):
                child_id = f"{parent.id}-s{k + 1}"
                self.db.insert_task(child_id, CHILD_TYPE, seconds, after=before, parent=parent.id)
                before = child_id
        elif done >= self._segments(parent):
            self.db.complete(worker.worker_id, parent.id)

    def _segments(self, parent: TaskRow) -> int:
        return max(1, round((parent.duration - SimWorker.PARENT_RUN_SEC) / SEGMENT_SEC))

    def on_child_done(self, worker: SimWorker, task: TaskRow) -> None:
        """A segment done; the app completes the parent with its last (``complete_task``); a parent
        requeued meanwhile is completed by its next run."""
        parent_id = self.db.tasks[task.id].parent
        if parent_id is None or self.db.tasks[task.id].status != "Complete":
            return
        parent = self.db.tasks[parent_id]
        self.segments_done[parent_id] += 1
        if self.segments_done[parent_id] >= self._segments(parent):
            self.db.complete(worker.worker_id, parent_id)

    def on_worker_gone(self, worker: SimWorker) -> None:
        if worker.task is not None:
            self.executing.get(worker.task.id, set()).discard(worker)
            # Time spent on a task that will never finish still occupied the GPU.
            if worker.task.started_at is not None:
                self.busy_seconds += (
                    max(0.0, self.clock.now - worker.task.started_at) if not worker.hung else 0.0
                )

    def _on_queued(self) -> None:
        self.wake()

    # -- the daemon -----------------------------------------------------------------------------------

    def wake(self) -> None:
        """NOTIFY: tick now unless one is already due as soon."""
        now = self.clock.now
        if now < self._down_until:
            return
        if self._next_tick_at > now + WAKE_DELAY_SEC:
            self._schedule_tick(WAKE_DELAY_SEC)

    def _schedule_tick(self, delay: float) -> None:
        self._tick_gen += 1
        gen = self._tick_gen
        self._next_tick_at = self.clock.now + delay
        self.clock.schedule(delay, lambda: self._tick(gen))

    def _tick(self, gen: int) -> None:
        if gen != self._tick_gen:
            return
        self.tick()
        self._schedule_tick(self.poll_sec)

    def tick(self) -> Plan:
        """Gather (one snapshot, one listing), decide with the policy, apply, check the invariants."""
        self.ticks += 1
        self._last_tick = self.clock.now
        snapshot = self.db.snapshot(str(self.settings.worker_id_prefix))
        try:
            pods: list[PodView] | None = self.provider.list_pods()
        except errors.RunpodError:
            pods = None
            self.counters["listing_failures"] += 1
        plan = self.plan_fn(snapshot, pods, self.settings, at(self.clock.now), prices=self.prices)
        self.executor.apply(plan.actions, {w.id: w for w in snapshot.workers})
        self.invariants.on_tick(pods is not None)
        return plan

    def crash_window(self, step_sec: float) -> None:
        """An action just began a step of ``step_sec``: an armed restart strikes inside it."""
        if self._armed and step_sec > 0:
            self._armed.pop(0)
            self.clock.schedule(self._rng_restart.uniform(0.0, step_sec) * 0.999, self.restart)

    def restart(self) -> None:
        """SIGKILL and start again: in-flight steps die; the new process waits for the old lease."""
        self.counters["restarts"] += 1
        self.invariants.on_restart()
        if self.executor.in_flight:
            self.counters["restarts_mid_action"] += 1
        self.executor.restart()
        self._tick_gen += 1  # the scheduled tick belonged to the dead process
        startup = 5.0
        self._down_until = max(self.clock.now + startup, self._last_tick + self.lease_ttl)
        self._next_tick_at = self._down_until
        delay = self._down_until - self.clock.now
        self._tick_gen += 1
        gen = self._tick_gen
        self.clock.schedule(delay, lambda: self._tick(gen))

    def _stray_pod(self) -> None:
        self.counters["stray_pods"] += 1
        self.provider._make(
            f"{self.settings.worker_id_prefix}stray-{self.counters['stray_pods']}", GPU, ours=False
        )
        self.clock.schedule(
            self.rng_workers.expovariate(self.faults.stray_pods_per_hour / 3600.0), self._stray_pod
        )

    def _arm(self) -> None:
        self._arm_seq += 1
        self._armed.append(self._arm_seq)
        # No action within 10 minutes: restart anyway, at this random point.
        self.clock.schedule(600.0, functools.partial(self._unarm, self._arm_seq))

    def _unarm(self, arm: int) -> None:
        if arm in self._armed:
            self._armed.remove(arm)
            self.restart()

    def _sample(self) -> None:
        db = self.db
        serving = booting = idle = 0
        for w in db.live_workers():
            if w.status in BOOTING:
                booting += 1
        for pod in self.provider.alive_pods():
            proc = pod.process
            if proc is not None and proc.alive:
                serving += 1
                row = db.workers.get(proc.worker_id)
                if proc.task is None and row is not None and row.status in ("initializing", "active"):
                    idle += 1
        running = db.running_total
        if db.claimable > 0 and idle == 0:
            self.backlog_s += SAMPLE_SEC
        # Pods billing a GPU (stopped ones bill their disk only).
        pods = len(self.provider.gpu_pods())
        self.samples.append(Sample(self.clock.now, db.claimable, running, serving, booting, pods))
        self.clock.schedule(SAMPLE_SEC, self._sample)

    # -- the run --------------------------------------------------------------------------------------

    def run(self) -> Result:
        self.start()
        self.clock.run_until(self.horizon)
        # Work still under way at the horizon is finished, not counted lost: a parent that arrived late
        # has its children's chain to run (each a claim after the one before), which can outlast the
        # settling time under a slow policy. Every policy pays for the time it takes.
        limit = self.horizon + MAX_DRAIN_SEC
        while self.clock.now < limit and any(
            row.status in ("Queued", "In Progress") for row in self.db.tasks.values()
        ):
            self.clock.run_until(min(limit, self.clock.now + SAMPLE_SEC * 30))
        self.horizon = max(self.horizon, self.clock.now)
        self.invariants.at_end()
        return self.result()

    def start(self) -> None:
        """Schedule the trace's arrivals, the restarts, the first tick and the sampling (``run`` then
        runs the clock to the horizon; a test may run it step by step instead)."""
        for task in self.trace.tasks:
            self.clock.schedule(
                task.at, functools.partial(self.db.insert_task, task.id, task.task_type, task.duration)
            )
        for i, t in enumerate(self.restarts):
            self.clock.schedule(t, self._arm if self.restart_mid_action and i % 2 else self.restart)
        if self.faults.stray_pods_per_hour > 0:
            self.clock.schedule(
                self.rng_workers.expovariate(self.faults.stray_pods_per_hour / 3600.0), self._stray_pod
            )
        self._schedule_tick(0.0)
        self.clock.schedule(0.0, self._sample)

    def result(self) -> Result:
        horizon = self.horizon
        waits: list[float] = []
        for row in self.db.tasks.values():
            if row.status == "Failed" and row.ready_at is None:
                continue  # failed with its dependency before it could ever be claimed: no wait
            start = row.first_started_at if row.first_started_at is not None else horizon
            # From claimable to claimed: a segment's time behind its predecessor is the chain's, not
            # the queue's.
            waits.append(start - (row.ready_at if row.ready_at is not None else row.created_at))
        billed = self.provider.billed_seconds(horizon)
        # Busy time: completed runs plus the partial runs of tasks still going at the horizon.
        busy = self.busy_seconds + sum(
            max(0.0, horizon - (p.process.task.started_at or horizon))
            for p in self.provider.alive_pods()
            if p.process is not None and p.process.alive and p.process.task is not None and not p.process.hung
        )
        tasks = self.db.tasks.values()
        lost = sum(1 for v in self.invariants.violations if v.name == "task_lost")
        edge_cost = self.counters["edge_calls"] * EDGE_USD_PER_CALL
        leaked = sum(1 for v in self.invariants.violations if v.name == "pod_leaked")
        return Result(
            policy=self.name,
            trace=self.trace.name,
            horizon=horizon,
            cost_usd=self.provider.cost(horizon) + edge_cost,
            gpu_hours=billed / 3600.0,
            busy_share=min(1.0, busy / billed) if billed > 0 else 0.0,
            waits=waits,
            tasks_total=len(self.db.tasks),
            tasks_complete=sum(1 for r in tasks if r.status == "Complete"),
            tasks_lost=lost,
            tasks_dead_lettered=sum(1 for r in tasks if r.status == "Failed"),
            tasks_duplicated=len(self.duplicates),
            pods_leaked=leaked,
            spawns=self.counters["spawns"],
            flaps=self.flaps,
            backlog_above_capacity_s=self.backlog_s,
            ticks=self.ticks,
            violations=list(self.invariants.violations),
            samples=self.samples,
            counters=dict(self.counters),
            actions=dict(self.executor.by_reason),
            stopped_disk_cost_usd=self.provider.disk_cost(horizon),
            edge_calls=self.counters["edge_calls"],
            edge_cost_usd=edge_cost,
        )


def oracle(trace: Trace, price: float = GPU_PRICE, boot: BootModel | None = None) -> dict[str, float | int]:
    """Lower bounds: cost = the tasks' GPU-seconds at the price; wait = 0 warm (the cold bound is a boot)."""
    boot = boot or BootModel()
    gpu_s = trace.gpu_seconds
    cold = boot.cached_median + boot.ssh_checks + boot.start_latency + boot.process_warmup
    return {
        "cost_usd": round(gpu_s / 3600.0 * price, 4),
        "gpu_hours": round(gpu_s / 3600.0, 4),
        "busy_share": 1.0,
        "wait_p50_s": 0.0,
        "wait_p95_s": 0.0,
        "wait_p99_s": 0.0,
        "wait_cold_s": round(cold, 1),
        "tasks_lost": 0,
        "tasks_duplicated": 0,
        "pods_leaked": 0,
        "spawns": 0,
        "flaps": 0,
        "backlog_above_capacity_s": 0.0,
        "tasks_dead_lettered": 0,
        "stops": 0,
        "resumes": 0,
        "resume_failures": 0,
        "stopped_disk_cost_usd": 0.0,
        "edge_calls": 0,
        "edge_cost_usd": 0.0,
    }
