"""The soak's invariants, checked every tick of a simulation (and at each pod creation for the ceilings).

Where this sits: :class:`orchestrator.studies.simulation.Simulation` calls :class:`Invariants` as it
runs; ``orchestrator.studies.chaos`` and ``bench/chaos.py`` report every violation by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.core.states import Meta
from orchestrator.studies.fleet import SimPod

if TYPE_CHECKING:
    from orchestrator.studies.simulation import Simulation


@dataclass
class Violation:
    # max_exceeded | spend_cap_exceeded | pod_leaked | task_run_twice | task_lost | task_orphaned | two_processes
    name: str
    at: float
    detail: str


class Invariants:
    """The soak's checks, run every tick (and at each pod creation for the ceilings)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.violations: list[Violation] = []
        self._unclaimed_since: dict[str, tuple[float, int]] = {}  # pod id -> (since, healthy ticks)
        self._leaked: set[str] = set()

    def add(self, name: str, detail: str) -> None:
        self.violations.append(Violation(name, self.sim.clock.now, detail))

    def names(self) -> set[str]:
        return {v.name for v in self.violations}

    def on_create(self, pod: SimPod) -> None:
        s = self.sim.settings
        provider = self.sim.provider
        alive = provider.gpu_pods()  # a stopped pod holds no GPU and bills its disk only
        if len(alive) > int(s.max_active_gpus):
            self.add("max_exceeded", f"{len(alive)} pods holding a GPU > MAX_ACTIVE_GPUS={s.max_active_gpus}")
        cap = float(s.max_hourly_spend)
        stopped = len(provider.alive_pods()) - len(alive)
        spend = sum(p.cost_per_hr for p in alive) + stopped * provider.resume.stopped_usd_per_hr
        if cap > 0 and spend > cap + 1e-9:
            self.add("spend_cap_exceeded", f"{spend:.2f} USD/h > MAX_HOURLY_SPEND={cap:g}")

    def on_restart(self) -> None:
        """A restart unsettles the fleet: ticks counted toward a leak start again (the dead process's
        termination may have been cut short; the leak check is about a daemon that gets to act)."""
        self._unclaimed_since = {pid: (since, 0) for pid, (since, _ticks) in self._unclaimed_since.items()}

    def _claimed(self) -> set[str]:
        claimed: set[str] = set()
        for w in self.sim.db.live_workers():
            rid = w.metadata.get(Meta.RUNPOD_ID)
            if rid:
                claimed.add(str(rid))
            else:
                claimed.update(p.id for p in self.sim.provider.alive_pods() if p.name == w.id)
        return claimed

    def on_tick(self, listing_ok: bool) -> None:
        sim, s = self.sim, self.sim.settings
        now = sim.clock.now
        live_rows = sum(1 for w in sim.db.live_workers() if w.status != "stopped")
        if live_rows > int(s.max_active_gpus):
            self.add("max_exceeded", f"{live_rows} live worker rows > MAX_ACTIVE_GPUS={s.max_active_gpus}")
        # Leaks: a pod of ours no live row claims, past the orphan grace, still alive after two
        # healthy ticks (a listing that worked and an API that answers) and two poll intervals.
        healthy = listing_ok and not sim.provider.api_down()
        claimed = self._claimed()
        grace = float(s.orphan_grace_sec)
        for pod in sim.provider.alive_pods():
            if pod.id in claimed or now - pod.created_at < grace:
                self._unclaimed_since.pop(pod.id, None)
                continue
            since, ticks = self._unclaimed_since.get(pod.id, (now, 0))
            ticks += 1 if healthy else 0
            self._unclaimed_since[pod.id] = (since, ticks)
            if ticks > 2 and now - since >= 2 * sim.poll_sec + 10 and pod.id not in self._leaked:
                self._leaked.add(pod.id)
                self.add("pod_leaked", f"pod {pod.id} ({pod.name}) unclaimed since t={since:.0f}")
        # A task In Progress under a terminated row would wait for ever (orch_snapshot's orphaned_running).
        for worker_id, ids in sim.db.running.items():
            if ids and sim.db.workers[worker_id].status == "terminated":
                self.add("task_orphaned", f"{sorted(ids)[:3]} In Progress on terminated {worker_id}")

    def at_end(self) -> None:
        db = self.sim.db
        for row in db.tasks.values():
            if row.status not in ("Complete", "Failed"):
                self.add("task_lost", f"task {row.id} ended {row.status} (attempts {row.attempts})")
            elif (
                row.status == "Failed"
                and row.attempts < db.max_attempts
                # A parent's tasks fail with one that failed for good (the app's cascade_task_failure).
                and not (row.error_message or "").startswith("Cascaded failed from related task ")
            ):
                self.add("task_lost", f"task {row.id} failed after {row.attempts} attempts only")
        for pod in self.sim.provider.alive_pods():
            if pod.id not in self._claimed() and pod.id not in self._leaked:
                self.add("pod_leaked", f"pod {pod.id} ({pod.name}) alive and unclaimed at the end")
