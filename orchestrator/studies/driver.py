"""The daemon's executor, run in virtual time: its handlers' calls made against the simulated fleet.

Where this sits: the simulator's "apply". :class:`VirtualExecutor` runs each action through the same
table the daemon uses (:data:`orchestrator.loop.executor.HANDLERS`) with :class:`VirtualEffects`, which
make each database or provider call against :mod:`orchestrator.studies.memdb` and
:mod:`orchestrator.studies.fleet` and yield its modelled latency (the request travels; the pod exists
before the answer comes back), so the clock moves between the steps of the very code the daemon runs.
Latencies come from :class:`~orchestrator.studies.fleet.BootModel`: a creation round trip, one API
round trip for a termination or a status, the initialization checks over SSH (a draw), the start
command over SSH, two seconds for a log tail; a database call takes no virtual time. The random draws
(SSH answering or not, the checks' duration, a failed check) are made in the same order at each step,
so a seed reproduces a run exactly.

Like the controller, an action whose worker (or pod) has one in flight is skipped; a restart of the
simulated daemon loses every step not yet run (:meth:`VirtualExecutor.restart`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestrator.core import errors
from orchestrator.core.actions import Action
from orchestrator.core.observed import Worker
from orchestrator.core.states import Reason, WorkerState
from orchestrator.loop import executor
from orchestrator.loop.effects import Log, NullLog, Steps, at_once
from orchestrator.ports import BootCheck, Requeued, SpawnedPod, StartWatch, released_ids
from orchestrator.studies.clock import at
from orchestrator.studies.fleet import SimWorker

if TYPE_CHECKING:
    from orchestrator.studies.simulation import Simulation

DATA_CENTER = "EU-RO-1"  # the one data center of the simulated fleet
LOG_TAIL_SEC = 2.0  # the log tail over SSH (bounded by its own timeout)
SSH_TIMEOUT_SEC = 10.0  # an SSH connect that times out: the pod is not ready yet
# Terminations that take capacity away on purpose: a spawn soon after one is a flap.
SCALE_DOWN = frozenset(
    {Reason.IDLE.value, Reason.OVERCAPACITY.value, Reason.DRAINED.value, Reason.CANCEL_BOOT.value}
)


@dataclass(frozen=True)
class Resumed:
    """The provider port's answer to a resume (``ports.ResumeResult``'s fields the executor reads)."""

    status: str
    detail: str = ""
    gpu_count: int | None = None


class VirtualEffects:
    """The executor's effects against the simulated database and provider, each after its latency."""

    holder = "simulation"
    token = 0

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.log: Log = NullLog()

    def now(self) -> datetime:
        return at(self.sim.clock.now)

    # -- the database: no virtual time --------------------------------------------------------------

    def register_worker(self, worker_id: str, instance_type: str, metadata: Mapping[str, Any]) -> Steps[None]:
        return at_once(lambda: _none(self.sim.db.register_worker(worker_id, instance_type, metadata)))

    def transition(
        self, worker_id: str, to: WorkerState, reason: str, metadata: Mapping[str, Any] | None = None
    ) -> Steps[Mapping[str, Any]]:
        return at_once(lambda: self._transition(worker_id, to, reason, metadata))

    def _transition(
        self, worker_id: str, to: WorkerState, reason: str, metadata: Mapping[str, Any] | None
    ) -> Mapping[str, Any]:
        self.sim.db.transition_worker(worker_id, to.value, reason, metadata)
        if to is WorkerState.TERMINATING and reason in SCALE_DOWN:
            self.sim.note_scale_down()
        return {}

    def merge_metadata(self, worker_id: str, metadata: Mapping[str, Any]) -> Steps[None]:
        return at_once(lambda: _none(self.sim.db.merge_worker_metadata(worker_id, metadata)))

    def requeue(self, worker_id: str, reason: str) -> Steps[Requeued]:
        return at_once(lambda: Requeued.from_json(self.sim.db.requeue_worker_tasks(worker_id, reason)))

    def requeue_stranded(self, worker_id: str, task_ids: tuple[str, ...], reason: str) -> Steps[Requeued]:
        return at_once(
            lambda: Requeued.from_json(self.sim.db.requeue_stranded_tasks(worker_id, task_ids, reason))
        )

    def requeue_unowned(self, older_than_sec: float, reason: str) -> Steps[Requeued]:
        return at_once(lambda: Requeued.from_json(self.sim.db.requeue_unowned_tasks(older_than_sec, reason)))

    def release_parents(self, worker_id: str, reason: str) -> Steps[tuple[str, ...]]:
        return at_once(lambda: released_ids(self.sim.db.release_parents(worker_id)))

    def event(self, kind: str, **fields: Any) -> Steps[None]:
        return at_once(lambda: None)  # the simulator keeps no event log

    def fence(self, before: str) -> Steps[None]:
        return at_once(lambda: None)  # one simulated daemon: its lease is never taken over

    # -- the provider: each call after its round trip -------------------------------------------------

    def spawn(
        self, worker_id: str, gpu_types: Sequence[str], avoid: Collection[tuple[str, str | None]]
    ) -> Steps[SpawnedPod]:
        sim = self.sim
        latency = sim.boot.create_latency
        yield latency / 2  # the request travels; the pod exists before the answer comes back
        try:
            pod = sim.provider.create(worker_id, gpu_types)
        except errors.RunpodCapacityError:
            sim.counters["capacity_misses"] += 1
            raise  # refused at once: no pod, and the answer is the whole round trip
        except errors.RunpodError:
            sim.counters["spawn_failures"] += 1
            yield latency / 2
            raise
        sim.counters["spawns"] += 1
        yield latency / 2
        return SpawnedPod(worker_id, pod.id, pod.gpu, DATA_CENTER, pod.cost_per_hr)

    def check_boot(
        self, worker_id: str, runpod_id: str, expected_fingerprint: str | None
    ) -> Steps[BootCheck]:
        sim, rng = self.sim, self.sim.rng_ssh
        pod = sim.provider.pods.get(runpod_id)
        if pod is None or not pod.alive:
            yield sim.boot.api_latency
            return BootCheck("not_ready", worker_id, runpod_id, detail="pod not found")
        if rng.random() < sim.faults.ssh_flaky:
            yield SSH_TIMEOUT_SEC
            sim.counters["ssh_failures"] += 1
            return BootCheck("not_ready", worker_id, runpod_id, ssh_error="timeout")
        yield sim.boot.ssh_checks * rng.uniform(0.7, 1.3)
        if not pod.alive:
            return BootCheck("not_ready", worker_id, runpod_id, ssh_error="refused")
        if rng.random() < sim.faults.init_fail:
            sim.counters["init_failures"] += 1
            return BootCheck("failed", worker_id, runpod_id, step="checks")
        # The image writes new host keys at each start, on the container disk a stop wipes: a resumed
        # pod presents a new key, which only a caller that expects none (a resume it asked for) accepts.
        key = f"SHA256:{pod.id}" + (f":{pod.resumes}" if pod.resumes else "")
        if expected_fingerprint is not None and expected_fingerprint != key:
            sim.counters["host_key_refused"] += 1
            return BootCheck("failed", worker_id, runpod_id, step="ssh", ssh_error="host_key_changed")
        if pod.resumes and expected_fingerprint is None:
            sim.counters["host_key_repins"] += 1
        ssh = {"ip": "10.0.0.1", "port": 22}
        return BootCheck("ready", worker_id, runpod_id, ssh_details=ssh, host_key_fingerprint=key)

    def start_process(self, worker_id: str, runpod_id: str, expected_fingerprint: str | None) -> Steps[bool]:
        sim = self.sim
        pod = sim.provider.pods.get(runpod_id)
        if pod is None:
            return False
        yield sim.boot.start_latency / 2
        if not pod.alive:
            return False
        if pod.process is not None and pod.process.alive:
            # The original's start command would launch a second worker under the same id.
            sim.counters["second_process_refused"] += 1
            sim.invariants.add("two_processes", f"a second worker process started on {pod.id} ({worker_id})")
        else:
            pod.process = SimWorker(sim, pod, worker_id)
        # The process runs from here; a crash before the answer leaves it unrecorded (StartProcess's
        # ``already_running`` case).
        yield sim.boot.start_latency / 2
        return True

    def terminate(self, runpod_id: str) -> Steps[bool]:
        yield self.sim.boot.api_latency
        return self.sim.provider.terminate(runpod_id)

    def stop(self, runpod_id: str) -> Steps[bool]:
        yield self.sim.boot.api_latency / 2
        accepted = self.sim.provider.stop(runpod_id)
        if accepted:
            self.sim.counters["stops"] += 1
        yield self.sim.boot.api_latency / 2
        return accepted

    def resume(self, runpod_id: str) -> Steps[Resumed]:
        sim = self.sim
        yield sim.boot.api_latency / 2
        status, detail = sim.provider.start(runpod_id)
        if status == "resumed":
            sim.counters["resumes"] += 1
        elif status == "no_gpu":
            sim.counters["resume_failures"] += 1
        yield sim.boot.api_latency / 2
        return Resumed(status, detail)

    def pod_status(self, runpod_id: str) -> Steps[Mapping[str, Any] | None]:
        yield self.sim.boot.api_latency
        pod = self.sim.provider.pods.get(runpod_id)
        return (
            None
            if pod is None
            else {"runpod_id": pod.id, "actual_status": pod.status(self.sim.clock.now).value}
        )

    def watch_start(
        self, worker_id: str, runpod_id: str, expected_fingerprint: str | None
    ) -> Steps[StartWatch]:
        # No draw from the simulation's random streams: watching must not change what the runs it is
        # added to would otherwise have drawn. The simulated start has no setup steps (its warm-up
        # stands for the whole start), so a live one is always in its worker phase.
        sim = self.sim
        pod = sim.provider.pods.get(runpod_id)
        yield sim.boot.start_latency  # one command over SSH, as the start itself
        if pod is None or not pod.alive:
            return StartWatch("unknown", detail="pod not found")
        process = pod.process
        if process is None:
            return StartWatch("unknown", detail="no lock file")
        if process.alive or process.guardian_alive:
            return StartWatch("running", phase="worker")
        return StartWatch("exited", phase="worker")

    def log_tail(self, runpod_id: str, worker_id: str, fingerprint: str | None = None) -> Steps[str]:
        yield LOG_TAIL_SEC
        return ""

    # -- not I/O -----------------------------------------------------------------------------------------

    def count_spawn_failure(self, reason: str) -> None:
        return None

    def observe_boot(self, gpu_type: str | None, seconds: float) -> None:
        return None

    def crash_point(self, name: str) -> None:
        return None  # restarts strike inside the steps' latencies instead (Simulation.crash_window)


class VirtualExecutor:
    """Runs each action's handler step by step on the simulation's clock."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.effects = VirtualEffects(sim)
        self.epoch = 0
        self.in_flight: dict[str, int] = {}  # key -> epoch that started it
        self.outcomes: dict[str, int] = {}
        self.by_reason: dict[str, int] = {}  # "kind:reason" -> actions started

    def restart(self) -> None:
        """The process died: every step not yet run is lost with it."""
        self.epoch += 1
        self.in_flight.clear()

    def apply(self, actions: Iterable[Action], workers: Mapping[str, Worker]) -> None:
        for action in actions:
            key = executor.action_key(action)
            if key in self.in_flight:
                self._count("in_flight")
                continue
            reason = f"{action.kind}:{action.reason.value}"
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
            self.in_flight[key] = self.epoch
            worker = workers.get(getattr(action, "worker_id", None) or "")
            self._step(key, self.epoch, executor.run(action, worker, self.effects))

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def _step(self, key: str, epoch: int, steps: Steps[executor.Outcome]) -> None:
        if epoch != self.epoch:
            return  # the process that ran this died
        try:
            delay = next(steps)
        except StopIteration:
            self.in_flight.pop(key, None)
            self._count("ok")
            return
        except errors.IllegalTransition:
            self.in_flight.pop(key, None)
            self._count("superseded")
            return
        except errors.OrchestratorError:
            self.in_flight.pop(key, None)
            self._count("failed")
            return
        self.sim.crash_window(delay)
        self.sim.clock.schedule(delay, lambda: self._step(key, epoch, steps))


def _none(_answer: object) -> None:
    return None
