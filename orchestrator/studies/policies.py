"""The policies the simulator compares, each a ``plan``-like function plus how it is driven.

Where this sits: ``orchestrator.studies.simulation`` drives any function with the signature of
``orchestrator.core.policy.plan``; ``bench/policy.py`` runs every :class:`PolicySpec` below on every trace.
``ours`` *is* the daemon's ``plan()``, unchanged. The competitors reuse that same ``plan()`` for
everything that is not the scaling rule under comparison (booting, health, reconciliation,
termination), and change only the scaling inputs (their settings) and outputs (which scaling actions
they keep), so the table compares scaling rules, not bookkeeping:

* ``original``: the replaced system's rules (the original orchestrator, banodoco/reigh-worker-orchestrator)
  as it ran them: one worker per queued or running task (threshold 1), the 600 s idle timeout measured
  correctly (from the last completion, not the heartbeat), no separate over-capacity timeout, no
  cancelled boots, a 30 s poll with no wake-up on new tasks, and sequential spawning (one create per
  tick). ``original_min2`` is the same with a floor of 2 (the old default).
* ``serverless``: a Runpod-Serverless-like queue-delay scaler (its documented defaults): adds workers only when the
  oldest queued task has waited more than 4 s, one per waiting task; idle timeout 5 s; checks every 2 s;
  our pods' boot times (no FlashBoot).
* ``static``: ``MAX_ACTIVE_GPUS`` workers all the time.
* ``ours`` / ``ours_min2``: ``plan()`` with the default settings (and ``MIN_ACTIVE_GPUS=2``).
* ``busy_workers_count_themselves``: a candidate rule, not the daemon's: each running task holds one
  GPU (Headless-Wan2GP runs one at a time), so ``needed = running + ceil(claimable /
  TASKS_PER_GPU_THRESHOLD)`` instead of ``ceil((claimable + running) / TASKS_PER_GPU_THRESHOLD)``.
  Built by transforming the input only (``queue.running`` scaled by the threshold), ``plan()`` unchanged.
* :class:`RateClairvoyant`: for ``bench/frontier.py`` only, not buildable: ``plan()`` with
  ``MIN_ACTIVE_GPUS`` moved every 30 s to the Erlang-C staffing level for the arrival rate the trace
  *will* have a boot's time ahead. It knows the future rate (not the single arrivals), so what it
  achieves estimates the best any rate-predicting rule could.
* :class:`ForesightRate`: for ``bench/frontier.py`` only, not buildable: ``plan()`` itself (the wait
  target's model) with the snapshot's arrival counts replaced by those of the rate a boot's time ahead,
  either the generator's exact rate (a perfect estimator) or the trace's realized arrivals (foresight).
* ``broken_spawning_uncounted``: for the chaos test only: ``plan()`` whose spawn decision is made on a
  snapshot and listing with the booting workers (and their pods) hidden, i.e. booting workers do not
  count as capacity or toward the maximum. It must make the soak fail.
"""

from __future__ import annotations

import abc
import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from orchestrator.core.actions import Plan, Spawn, TerminatePod
from orchestrator.core.config import Settings, defaults
from orchestrator.core.observed import PodView, Snapshot
from orchestrator.core.policy import plan as real_plan
from orchestrator.core.staffing import held_parents
from orchestrator.core.states import Reason
from orchestrator.studies.clock import EPOCH
from orchestrator.studies.traces import Trace

PlanFn = Callable[..., Plan]

SERVERLESS_QUEUE_DELAY_SEC = 4.0
# What turns this daemon's wait target and warm pool off: the earlier rule (TASKS_PER_GPU_THRESHOLD alone,
# idle workers terminated). The competitors run without them.
PLAIN: Mapping[str, Any] = {"WAIT_TARGET_SEC": 0, "WARM_POOL_MAX": 0}
# Rate-clairvoyant staffing (``bench/frontier.py``): the arrival rate is counted over this window ...
RATE_WINDOW_SEC = 1200.0
# ... centred this far ahead: about one boot, the checks and the first heartbeat.
RATE_LEAD_SEC = 150.0
STEP_SEC = 30.0


@dataclass(frozen=True)
class PolicySpec:
    """A policy as the simulator runs it."""

    name: str
    plan: PlanFn
    settings: Settings
    wake_on_tasks: bool  # the Postgres transport's LISTEN/NOTIFY wake-up
    description: str
    # The database counts a worker that failed before completing a task as a failed boot (migration
    # 20261212000100). The old system had no such rule (nor any breaker that stopped its loops), so its
    # rows run without it: with it, its 1200 s stuck timeout failing healthy long-task workers opened
    # the breaker and made it look slower than it was.
    failed_before_serving: bool = True


def _original_plan(
    snapshot: Snapshot,
    pods: Sequence[PodView] | None,
    settings: Settings,
    now: datetime,
    *,
    prices: Mapping[str, float] | None = None,
) -> Plan:
    # The old loop counted every In Progress task as demand, a parent its worker holds while its children
    # run included; plan() leaves those out, so they are added back.
    queue = replace(snapshot.queue, running=snapshot.queue.running + held_parents(snapshot.workers))
    result = real_plan(replace(snapshot, queue=queue), pods, settings, now, prices=prices)
    kept: list[Any] = []
    spawned = False
    for action in result.actions:
        if isinstance(action, TerminatePod) and action.reason is Reason.CANCEL_BOOT:
            continue  # the old loop never stopped a boot it had started
        if isinstance(action, Spawn):
            if spawned:
                continue  # one synchronous create per cycle
            spawned = True
        kept.append(action)
    return replace(result, actions=tuple(kept))


def _serverless_plan(
    snapshot: Snapshot,
    pods: Sequence[PodView] | None,
    settings: Settings,
    now: datetime,
    *,
    prices: Mapping[str, float] | None = None,
) -> Plan:
    result = real_plan(snapshot, pods, settings, now, prices=prices)
    oldest = snapshot.queue.oldest_claimable_age_sec
    if oldest is not None and oldest > SERVERLESS_QUEUE_DELAY_SEC:
        return result
    return replace(result, actions=tuple(a for a in result.actions if not isinstance(a, Spawn)))


def busy_workers_count_themselves(
    snapshot: Snapshot,
    pods: Sequence[PodView] | None,
    settings: Settings,
    now: datetime,
    *,
    prices: Mapping[str, float] | None = None,
) -> Plan:
    """``plan()`` with demand = running + ceil(claimable / threshold) (``queue.running`` is read only there)."""
    threshold = max(1, int(settings.tasks_per_gpu_threshold))
    queue = replace(snapshot.queue, running=snapshot.queue.running * threshold)
    return real_plan(replace(snapshot, queue=queue), pods, settings, now, prices=prices)


def broken_spawning_uncounted(
    snapshot: Snapshot,
    pods: Sequence[PodView] | None,
    settings: Settings,
    now: datetime,
    *,
    prices: Mapping[str, float] | None = None,
) -> Plan:
    """A deliberately wrong policy: spawns decided as if booting workers did not exist."""
    full = real_plan(snapshot, pods, settings, now, prices=prices)
    booting = {w.id for w in snapshot.workers if w.status.booting}
    booting_pods = {str(w.runpod_id) for w in snapshot.workers if w.status.booting and w.runpod_id}
    hidden_snapshot = replace(snapshot, workers=tuple(w for w in snapshot.workers if w.id not in booting))
    hidden_pods = (
        None if pods is None else [p for p in pods if p.id not in booting_pods and p.name not in booting]
    )
    blind = real_plan(hidden_snapshot, hidden_pods, settings, now, prices=prices)
    actions = [a for a in full.actions if not isinstance(a, Spawn)]
    actions += [a for a in blind.actions if isinstance(a, Spawn)]
    return replace(full, actions=tuple(actions))


def erlang_c(servers: int, load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with ``load`` Erlangs (1.0 if unstable)."""
    if servers <= 0 or load >= servers:
        return 1.0
    blocking = 1.0  # Erlang B by its recurrence, which stays stable for large c
    for k in range(1, servers + 1):
        blocking = load * blocking / (k + load * blocking)
    rho = load / servers
    return blocking / (1.0 - rho * (1.0 - blocking))


def staffing(load: float, wait_probability: float, ceiling: int) -> int:
    """Fewest workers for which Erlang C's chance of waiting is at most ``wait_probability``."""
    if load <= 0:
        return 0
    c = max(1, math.ceil(load))
    while c < ceiling and erlang_c(c, load) > wait_probability:
        c += 1
    return min(c, ceiling)


def floor_schedule(trace: Trace, wait_probability: float, ceiling: int) -> list[int]:
    """``MIN_ACTIVE_GPUS`` per ``STEP_SEC`` of the trace, from the rate it will have ``RATE_LEAD_SEC`` later."""
    arrivals = sorted(t.at for t in trace.tasks)
    mean_duration = trace.gpu_seconds / max(1, len(trace.tasks))
    steps = int(trace.duration // STEP_SEC) + 2
    schedule: list[int] = []
    lo = hi = 0
    for i in range(steps):
        centre = i * STEP_SEC + RATE_LEAD_SEC
        start, end = centre - RATE_WINDOW_SEC / 2, centre + RATE_WINDOW_SEC / 2
        while lo < len(arrivals) and arrivals[lo] < start:
            lo += 1
        hi = max(hi, lo)
        while hi < len(arrivals) and arrivals[hi] < end:
            hi += 1
        load = (hi - lo) / RATE_WINDOW_SEC * mean_duration
        schedule.append(staffing(load, wait_probability, ceiling))
    return schedule


class _ToldAhead(abc.ABC):
    """``plan()`` itself, handed inputs changed by what the trace will bring (``told``)."""

    def __call__(
        self,
        snapshot: Snapshot,
        pods: Sequence[PodView] | None,
        settings: Settings,
        now: datetime,
        *,
        prices: Mapping[str, float] | None = None,
    ) -> Plan:
        told_snapshot, told_settings = self.told(snapshot, settings, (now - EPOCH).total_seconds())
        return real_plan(told_snapshot, pods, told_settings, now, prices=prices)

    @abc.abstractmethod
    def told(self, snapshot: Snapshot, settings: Settings, t: float) -> tuple[Snapshot, Settings]:
        """The snapshot and settings ``plan()`` sees at ``t`` (virtual seconds)."""


class RateClairvoyant(_ToldAhead):
    """``plan()`` with the floor moved ahead of the rate; everything else is the daemon's rule."""

    def __init__(self, trace: Trace, settings: Settings, wait_probability: float) -> None:
        self.schedule = floor_schedule(trace, wait_probability, int(settings.max_active_gpus))
        self._by_floor: dict[int, Settings] = {}
        self.settings = settings

    def told(self, snapshot: Snapshot, settings: Settings, t: float) -> tuple[Snapshot, Settings]:
        floor = self.schedule[min(max(int(t // STEP_SEC), 0), len(self.schedule) - 1)]
        adjusted = self._by_floor.get(floor)
        if adjusted is None:
            adjusted = self._by_floor[floor] = settings.replace(MIN_ACTIVE_GPUS=floor)
        return snapshot, adjusted


class ForesightRate(_ToldAhead):
    """``plan()`` unchanged, told the rate of the coming minutes: the wait target's own model with a rate
    no estimate from the past can give. Each snapshot's arrival windows are refilled with the counts that
    rate would give them (so every window, and the estimate pooled from them, reads it). Two kinds:

    * ``exact`` given (the generator's own rate function, ``traces.ARRIVAL_RATES``): the rate the arrivals
      are drawn from, ``RATE_LEAD_SEC`` ahead: a perfect estimator of the rate, no more;
    * else the trace's *realized* arrivals over ``RATE_WINDOW_SEC`` centred ``RATE_LEAD_SEC`` ahead: that
      rate plus the chance bunching of the coming minutes' arrivals, which no estimator can know.
    """

    def __init__(self, trace: Trace, exact: Callable[[float], float] | None = None) -> None:
        self.arrivals = sorted(t.at for t in trace.tasks)
        self.exact = exact

    def rate_at(self, t: float) -> float:
        """The rate (per second) told at ``t`` (virtual seconds)."""
        centre = t + RATE_LEAD_SEC
        if self.exact is not None:
            return self.exact(centre)
        lo = bisect.bisect_left(self.arrivals, centre - RATE_WINDOW_SEC / 2)
        hi = bisect.bisect_left(self.arrivals, centre + RATE_WINDOW_SEC / 2)
        return (hi - lo) / RATE_WINDOW_SEC

    def told(self, snapshot: Snapshot, settings: Settings, t: float) -> tuple[Snapshot, Settings]:
        rate = self.rate_at(t)
        windows = [w for w, _count in snapshot.arrivals] or [600.0, 3600.0]
        told = replace(snapshot)
        # The expected counts, not whole ones: a snapshot's counts are integers, and at a few tasks an
        # hour rounding them (with the 10-minute count capping the estimate) would misstate the rate by
        # up to a third. With these, every window and the estimate pooled from them read ``rate``.
        object.__setattr__(told, "arrivals", tuple((w, rate * w) for w in windows))
        return told, settings


def specs(base: Settings | None = None, ours_changes: Mapping[str, Any] | None = None) -> list[PolicySpec]:
    """Every policy of the benchmark, from one base configuration (defaults unless given)."""
    base = base or defaults()
    ours = base.replace(**ours_changes) if ours_changes else base
    # The competitors are scaling rules of their own: no wait target, no warm pool (the old system could
    # only terminate, Serverless's workers are not ours to stop).
    plain = base.replace(**PLAIN)
    old = plain.replace(
        MIN_ACTIVE_GPUS=0,
        TASKS_PER_GPU_THRESHOLD=1,
        MACHINES_TO_KEEP_IDLE=0,
        GPU_IDLE_TIMEOUT_SEC=600,
        GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC=600,
        ORCHESTRATOR_POLL_SEC=30,
        # It launched the worker without --poll-interval: the worker's own 10 s between idle claims.
        WORKER_POLL_INTERVAL_SEC=10,
        # The old system's fixed stuck-task timeout (it failed long tasks' healthy workers at 20 minutes).
        TASK_STUCK_TIMEOUT_SEC=1200,
    )
    serverless = plain.replace(
        MIN_ACTIVE_GPUS=0,
        TASKS_PER_GPU_THRESHOLD=1,
        MACHINES_TO_KEEP_IDLE=0,
        GPU_IDLE_TIMEOUT_SEC=5,
        GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC=5,
        ORCHESTRATOR_POLL_SEC=2,
        WORKER_POLL_INTERVAL_SEC=10,  # the worker as the old system launched it
    )
    max_gpus = int(base.max_active_gpus)
    return [
        PolicySpec("ours", real_plan, ours, True, "plan() with the default settings"),
        PolicySpec(
            "ours_min2", real_plan, ours.replace(MIN_ACTIVE_GPUS=2), True, "plan(), MIN_ACTIVE_GPUS=2"
        ),
        PolicySpec("original", _original_plan, old, False, "the old rules, floor 0", False),
        PolicySpec(
            "original_min2",
            _original_plan,
            old.replace(MIN_ACTIVE_GPUS=2),
            False,
            "the old rules, floor 2",
            False,
        ),
        PolicySpec(
            "serverless", _serverless_plan, serverless, False, "queue delay > 4 s, idle 5 s, 2 s checks"
        ),
        PolicySpec(
            "static", real_plan, plain.replace(MIN_ACTIVE_GPUS=max_gpus), True, f"{max_gpus} workers always"
        ),
    ]
