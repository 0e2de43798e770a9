"""Staffing: how many workers the queue wants, and which ones to add, keep or let go.

Where this sits in the pure core: :func:`orchestrator.core.policy.plan` calls these after the per-row
rules (reconcile, health, boot) have said which workers stay; they append drains, cancellations,
reactivations and spawns to the :class:`~orchestrator.core.draft.Draft`. Spawns obey the limits of
:mod:`orchestrator.core.limits`. Pure: no I/O, no clock, no randomness.

* **Demand.** ``desired = clamp(ceil((claimable + running) / TASKS_PER_GPU_THRESHOLD) +
  MACHINES_TO_KEEP_IDLE, MIN_ACTIVE_GPUS, MAX_ACTIVE_GPUS)``, ``running`` without the parents
  (``*_orchestrator``) their workers hold while the children run; capacity = spawning + initializing +
  active rows that stay (booting pods count, so they never cause more spawns).
* **Scale down** (capacity above desired). First booting workers, but only while no claimable task
  waits (a booting pod with work waiting will soon be useful; with none it is pure cost) or while
  above ``MAX_ACTIVE_GPUS`` (an operator lowering it to stop spending means now), then active
  workers idle for ``GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC``. Idle = no running task but parents waiting on
  their children, measured from the last completion, the activation, the parents' start or their newest
  child, whichever is later (never from the heartbeat, which idle workers keep sending); a worker
  holding parents is let go only after ``GPU_IDLE_TIMEOUT_SEC`` of that. Then, as a backstop, workers
  idle for ``GPU_IDLE_TIMEOUT_SEC`` are drained while more than
  ``max(MIN_ACTIVE_GPUS, MACHINES_TO_KEEP_IDLE)`` stay (a worker idle that long while tasks wait is not
  taking them). Victims: the most expensive first, then the newest (an older worker has a warm
  cache and a proven host), then by id. Drained workers with no task are terminated on the next tick
  (two steps, so a claim racing the drain is seen in the next snapshot before the pod goes; the
  database also refuses ``draining -> terminating`` while the worker holds a task, since the real
  worker keeps polling after a drain), and the row becomes ``terminated`` only on the provider's
  confirmation. A drained worker that holds nothing but parents lets them go first
  (:class:`~orchestrator.core.actions.ReleaseParents`). ``metadata.terminate_requested_at`` (the
  operator) terminates a drained worker once it has no task.
* **Scale up** (capacity below desired). Reactivate workers drained for overcapacity first (no new
  pod), then spawn, never past ``MAX_ACTIVE_GPUS`` non-terminal workers (unclaimed pods of ours
  included, they bill too) and never past ``MAX_HOURLY_SPEND`` at current prices. With a spend cap set,
  a GPU type without a known price is never spawned (its cost cannot be bounded); without a cap, prices
  only order scale-down victims.
* **Pause.** No spawn while paused; everything else continues.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from orchestrator.core import pool, sizing
from orchestrator.core.actions import (
    Backoff,
    Initialize,
    Promote,
    Reactivate,
    ReleaseParents,
    Spawn,
    StartProcess,
    WatchStart,
)
from orchestrator.core.config import Settings
from orchestrator.core.draft import Draft, age, volume_disk_gb
from orchestrator.core.limits import Breaker, avoided_pairs, backed_off_everywhere
from orchestrator.core.observed import Queue, Worker, freeze
from orchestrator.core.states import Blocked, BreakerState, Meta, Reason, WorkerState

_EPS = 1e-9
# With the wait target, the long-idle backstop drains a worker the model keeps only once a task has
# waited this long (or two of the workers' claim polls, WORKER_POLL_INTERVAL_SEC, if longer): a task
# queued a moment ago proves nothing against idle workers that have not polled since.
BACKSTOP_WAIT_SEC = 60.0


@dataclass(frozen=True)
class Target:
    """What the queue asks for this tick, within the configured bounds."""

    demand: int  # tasks claimable or running
    needed: int  # workers the demand alone needs (TASKS_PER_GPU_THRESHOLD)
    desired: int  # max(needed, modelled) + spare, clamped to [min_active, max_active]
    min_active: int
    max_active: int
    keep_idle: int
    modelled: int = 0  # workers the wait target's queueing model asks for (0: off)
    keep: int = 0  # fewest workers scale-down keeps: at least desired
    release_after_sec: float = 0.0  # the model's idle time before a surplus worker goes
    model: sizing.Sizing | None = None


def target(
    queue: Queue, settings: Settings, model: sizing.Sizing | None = None, held_parents: int = 0
) -> Target:
    # A parent its worker holds while its children run takes none of the worker's time (see
    # _holds_only_parents): counted as demand, each TASKS_PER_GPU_THRESHOLD of them kept a pod more.
    demand = queue.claimable + max(0, queue.running - held_parents)
    needed = math.ceil(demand / max(1, settings.tasks_per_gpu_threshold))
    max_active = settings.max_active_gpus
    min_active = min(settings.min_active_gpus, max_active)
    keep_idle = settings.machines_to_keep_idle
    modelled = model.workers if model is not None else 0
    desired = max(min_active, min(max_active, max(needed, modelled) + keep_idle))
    keep = desired
    if model is not None:
        keep = max(desired, min(max_active, model.keep + keep_idle))
    release = model.release_after_sec if model is not None else 0.0
    return Target(demand, needed, desired, min_active, max_active, keep_idle, modelled, keep, release, model)


def wait_model(
    d: Draft, booting: list[Worker], active: list[Worker], pool: int, pool_room: bool
) -> sizing.Sizing | None:
    """The wait target's sizing from what the snapshot says (None when WAIT_TARGET_SEC is 0).

    Serving workers with a task are busy (each running its oldest task: one at a time), without one
    idle; booting ones count with the chance their boot (or resume) is over in time; claimable tasks
    by type, oldest first as far as the snapshot tells (types in name order, then the untyped rest).
    """
    s = d.settings
    wait = float(s.wait_target_sec)
    if wait <= 0:
        return None
    snap = d.snapshot
    types = sizing.TypeModel.from_stats(snap.task_stats)
    busy: list[sizing.Busy] = []
    idle = 0
    boots: list[sizing.Booting] = []
    for worker in active:
        if worker.id in d.leaving:
            continue
        if worker.running_count == 0 or _holds_only_parents(worker):
            idle += 1
        else:
            busy.append(_busy(d, worker, types))
    for worker in booting:
        if worker.id in d.leaving:
            continue
        if worker.running_count > 0:
            busy.append(_busy(d, worker, types))  # claimed while still initializing
            continue
        started = age(d.now, worker.boot_started_at) or 0.0
        boots.append(sizing.Booting(resume=worker.resume_requested_at is not None, age=max(0.0, started)))
    # The model list-schedules the first MAX_SCHEDULED tasks and counts the rest as waiting for certain,
    # and no count it compares with exceeds MAX_ACTIVE_GPUS: past a margin beyond both, more tasks
    # change no answer. Built whole, a backlog of 300,000 took seconds a tick (and a count past the
    # machine's sizes crashed it).
    room = sizing.MAX_SCHEDULED + 4 * int(s.max_active_gpus) + sizing.EXACT_UP_TO
    queued: list[sizing.Durations] = []
    by_type = dict(snap.queue.claimable_by_type)
    for task_type in sorted(by_type):
        queued.extend([types.of(task_type)] * min(by_type[task_type], room - len(queued)))
    untyped = max(0, snap.queue.claimable - sum(by_type.values()))
    queued.extend([types.fallback] * min(untyped, room - len(queued)))
    state = sizing.FleetState(
        rate=sizing.arrival_rate(snap.arrivals),
        rate_high=sizing.arrival_rate(snap.arrivals, sizing.KEEP_RATE_SDS),
        types=types,
        busy=tuple(busy),
        idle=idle,
        booting=tuple(boots),
        queued=tuple(queued),
        pool=pool,
        leads=sizing.Leads.from_boots(snap.recent_boots),
        max_workers=int(s.max_active_gpus),
        pool_room=pool_room,
    )
    return sizing.size(state, wait, sizing.LATE_TASK_COST_GPU_SEC)


def held_parents(workers: Iterable[Worker]) -> int:
    """The parents (``*_orchestrator``) these workers hold In Progress while their children run."""
    return sum(1 for w in workers for t in w.running_tasks if t.is_parent)


def _holds_only_parents(worker: Worker) -> bool:
    """Every task the worker holds is a parent (``*_orchestrator``), each one known.

    The real worker keeps a parent it has run In Progress while its children run, and claims other
    work meanwhile: a parent is run "only when nothing is claimable and no child is unfinished", and the
    app completes it with its last child (banodoco/Reigh-Worker ``worker.py``, the poll's look-up of
    its own In Progress task). So a worker holding only parents serves the queue like an idle one; taken
    as busy for the parent's whole life, it made the model ask for a worker more per parent in flight.
    For scale-down see :func:`_releasable`."""
    return 0 < len(worker.running_tasks) == worker.running_count and all(
        t.is_parent for t in worker.running_tasks
    )


def _releasable(worker: Worker) -> bool:
    """Every task the worker holds is a parent waiting on a child (the snapshot's ``children_live``):
    idle for scale-down (:func:`_idle_sec`), and once drained it lets the parents go
    (:class:`~orchestrator.core.actions.ReleaseParents`) and ends, since the database refuses to end a
    worker that holds a task. Kept until the chain ended, its GPU billed for as long as the children
    waited: for ever when they could not run (their user out of credits, a segment cancelled from the
    dashboard). A parent with no live child is in its own run (which creates them) or waits for the
    worker's re-run: busy."""
    return _holds_only_parents(worker) and all(t.waiting for t in worker.running_tasks)


def _settled(d: Draft, worker: Worker) -> bool:
    """A worker holding parents is let go only once idle for GPU_IDLE_TIMEOUT_SEC, and at least
    PARENT_RELEASE_MIN_SEC (600 s) however low the former is set (it may be 0), counted from its
    parents' start and newest child too. A parent's own run may pause between the children it creates (a
    vision model per segment), and a parent claimed again after its holder died counts as waiting from
    its first tick (the dead holder's children are still queued) while its re-run has yet to make the
    missing ones. Ended in such a pause, the pod took the run with it and the chain stayed short, which
    the app fails a day later: the whole chain's GPU time lost, against minutes of one idle GPU."""
    if worker.running_count == 0:
        return True
    s = d.settings
    return _at_least(_idle_sec(d, worker), float(max(s.gpu_idle_timeout_sec, s.parent_release_min_sec)))


def _busy(d: Draft, worker: Worker, types: sizing.TypeModel) -> sizing.Busy:
    # Busy with what it runs, not with a parent it holds (see _holds_only_parents).
    tasks = sorted(
        [t for t in worker.running_tasks if not t.is_parent] or list(worker.running_tasks),
        key=lambda t: (t.started_at is None, t.started_at or d.now),
    )
    if tasks:
        first = tasks[0]
        return sizing.Busy(types.of(first.task_type), max(0.0, age(d.now, first.started_at) or 0.0))
    return sizing.Busy(types.fallback, max(0.0, age(d.now, worker.oldest_running_started_at) or 0.0))


def new_worker_id(prefix: str, now: datetime, index: int, taken: Iterable[str]) -> str:
    """A worker id (= pod name) that depends only on the input: the same tick gives the same ids.

    ``{prefix}{YYYYmmdd_HHMMSS}-{8 hex}``, the shape of the original orchestrator's worker ids
    (banodoco/reigh-worker-orchestrator, ``gpu_orchestrator/worker_spawner.py``, ``generate_worker_id``);
    the hash covers the time, the spawn's index in this plan and every id already taken, and a salt
    bumps on a collision.
    """
    taken_set = set(taken)
    digest = hashlib.sha256("\n".join(sorted(taken_set)).encode()).hexdigest()
    stamp = f"{prefix}{now:%Y%m%d_%H%M%S}-"
    salt = 0
    while True:
        token = hashlib.sha256(f"{now.isoformat()}|{index}|{salt}|{digest}".encode()).hexdigest()[:8]
        candidate = stamp + token
        if candidate not in taken_set:
            return candidate
        salt += 1


def _later(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _at_least(value: float | None, limit: float) -> bool:
    return value is not None and value >= limit


def _idle_sec(d: Draft, worker: Worker) -> float | None:
    parents: list[datetime | None] = []
    if worker.running_count > 0:
        if not _releasable(worker):
            return None
        # Idle since it last ran one of them, or one of them last made a child, too.
        parents = [t for p in worker.running_tasks for t in (p.started_at, p.last_child_at)]
    since = (
        # A resumed worker's idle time counts from its resume, not from before its stop.
        _later(worker.last_completion_at, worker.activated_at, worker.resume_requested_at, *parents)
        or worker.status_changed_at
        or worker.created_at
    )
    return age(d.now, since)


def _activated(worker: Worker) -> datetime | None:
    return worker.activated_at or worker.created_at


# --- scale down -------------------------------------------------------------------------------------


def scale_down(d: Draft, booting: list[Worker], active: list[Worker], aim: Target, capacity: int) -> int:
    """Cancel boots and drain idle workers above desired; return how many left capacity."""
    s = d.settings
    removed = 0
    modelled = aim.model is not None
    excess = capacity - aim.keep
    # With tasks waiting a booting pod will soon be useful, so only a lowered ceiling (an
    # operator's MAX_ACTIVE_GPUS=0 emergency stop) cancels boots then. With the wait target, a boot it
    # asked for is never cancelled for a dip of its estimate either: most of the boot is billed
    # already, and once serving the worker is released like any other (to the pool when it has room).
    quiet = d.snapshot.queue.claimable == 0 and not modelled
    cancel = excess if quiet else min(excess, capacity - aim.max_active)
    if cancel > 0 and d.pods_known:
        cancellable = [
            w
            for w in booting
            if w.running_count == 0 and d.cancellable_pod(w) and w.status is not WorkerState.RESUMING
        ]
        for worker in d.sort_victims(cancellable, lambda w: w.created_at)[:cancel]:
            pod = d.pod_of[worker.id]
            assert pod is not None
            # One state change per worker per tick: the boot step decided above is dropped.
            d.actions = [
                a
                for a in d.actions
                if not (
                    isinstance(a, Initialize | StartProcess | WatchStart | Promote)
                    and a.worker_id == worker.id
                )
            ]
            d.terminate(worker, pod, Reason.CANCEL_BOOT)
            removed += 1
        excess -= removed
    overcap: float = max(float(s.gpu_overcapacity_idle_timeout_sec), aim.release_after_sec)
    remaining = [w for w in active if w.id not in d.leaving]
    if excess > 0:
        idle = [w for w in remaining if _at_least(_idle_sec(d, w), overcap) and _settled(d, w)]
        for worker in d.sort_victims(idle, _activated)[:excess]:
            d.drain(worker, Reason.OVERCAPACITY)
            removed += 1
    floor = max(aim.min_active, min(aim.keep_idle, aim.max_active))
    oldest = d.snapshot.queue.oldest_claimable_age_sec
    if modelled and (oldest is None or oldest < max(BACKSTOP_WAIT_SEC, 2.0 * s.worker_poll_interval_sec)):
        # The model keeps these idle on purpose (headroom for the wait target); the backstop is for a
        # worker idle while tasks wait, i.e. one not taking them.
        floor = max(floor, aim.keep)
    staying = capacity - removed
    idle_limit: float = s.gpu_idle_timeout_sec
    long_idle = [
        w
        for w in active
        if w.id not in d.leaving and _at_least(_idle_sec(d, w), idle_limit) and _settled(d, w)
    ]
    for worker in d.sort_victims(long_idle, _activated):
        if staying <= floor:
            break
        idle_for = _idle_sec(d, worker)
        if oldest is not None and idle_for is not None and oldest >= idle_for:
            d.drain(worker, Reason.UNCLAIMED_WORK, unclaimed=_unclaimed(d.snapshot.queue, idle_for))
        else:
            d.drain(worker, Reason.IDLE)
        staying -= 1
        removed += 1
    return removed


def _unclaimed(queue: Queue, idle_for: float) -> dict[str, object]:
    """What the operator needs to find the tasks the worker passed over: how many, which types, how long."""
    return {
        "claimable": queue.claimable,
        "by_type": dict(sorted(queue.claimable_by_type.items())),
        "oldest_queued_sec": round(queue.oldest_claimable_age_sec or 0.0, 1),
        "worker_idle_sec": round(idle_for, 1),
    }


def draining(d: Draft, drained: list[Worker], missing: int, pooled: int = 0) -> int:
    """Reactivate drained workers while capacity is missing; stop the idle rest into the warm pool while
    it has room (``pooled``: its size now), terminate the others. Returns how many were reactivated."""
    reactivated = 0
    candidates = [
        w
        for w in drained
        if w.drain_reason == Reason.OVERCAPACITY.value
        and w.terminate_requested_at is None
        and (not d.pods_known or d.alive(d.pod_of[w.id]))
    ]
    # Cheapest first: it is the one we would keep.
    for worker in reversed(d.sort_victims(candidates, _activated)):
        if reactivated >= missing:
            break
        d.actions.append(Reactivate(reason=Reason.WORK_CAME_BACK, worker_id=worker.id))
        reactivated += 1
        d.leaving.add(worker.id)  # not a drain victim any more: skip below
    for worker in drained:
        if worker.id in d.leaving:
            continue
        if worker.running_count > 0:
            if _releasable(worker) and _settled(d, worker):
                # Ended next tick, holding nothing (the database refuses to end a worker that holds a
                # task); a parent needs no process: the app completes it with its last child.
                d.actions.append(ReleaseParents(reason=Reason.PARENTS_ONLY, worker_id=worker.id))
            continue
        if not d.pods_known:
            # The listing failed this tick. The pod's id is on record, ours, and ending a pod by id needs
            # no listing; left for the listing, every idle GPU drained meanwhile billed for the whole
            # outage. (No stop into the pool: whether the pod runs is not known.)
            if d.recorded_pod(worker) is not None:
                reason = Reason.OPERATOR_REQUEST if worker.terminate_requested_at else Reason.DRAINED
                d.terminate(worker, None, reason)
            continue
        pod = d.pod_of[worker.id]
        if d.alive(pod) and d.touchable_id(worker, pod) is not None:
            assert pod is not None
            if pool.can_stop(d, worker, pod, pooled):
                pool.stop(d, worker, pod)
                pooled += 1
                continue
            reason = Reason.OPERATOR_REQUEST if worker.terminate_requested_at else Reason.DRAINED
            d.terminate(worker, pod, reason)
    return reactivated


# --- scale up ---------------------------------------------------------------------------------------


def scale_up(
    d: Draft,
    missing: int,
    capacity: int,
    aim: Target,
    live: int,
    spend: float,
    spend_unknown: bool,
    breaker: Breaker,
    backoffs: list[Backoff],
    booting: list[Worker],
    stopped: list[Worker] | None = None,
    rate_limited_until: datetime | None = None,
) -> list[Blocked]:
    """Resume pooled pods, then spawn, up to ``missing`` workers within the limits; return what held
    spawns back. Resumes are not held back by the breaker: a resume's failure is its host's stock, not
    our image, and a pooled pod has served before."""
    s = d.settings
    blocked: list[Blocked] = []
    if d.snapshot.paused:
        return [Blocked.PAUSED]
    cap: float = s.max_hourly_spend
    if stopped and not (cap > 0 and spend_unknown):
        headroom_now = cap - spend if cap > 0 else None
        resumed, added = pool.resume(d, stopped, missing, s.max_active_gpus - live, headroom_now)
        missing -= resumed
        capacity += resumed
        live += resumed
        spend += added
        if missing <= 0:
            return blocked
    if breaker.state is BreakerState.OPEN:
        return [Blocked.BREAKER_OPEN]
    if rate_limited_until is not None:
        return [Blocked.RATE_LIMITED]
    count = missing
    if breaker.state is BreakerState.HALF_OPEN:
        # One probe at a time, doubling while probes live without failing: a still-broken image costs a
        # few pods per interval, not a fleet (limits.Breaker.probes_allowed).
        in_boot = max(len(booting), sum(1 for w in d.workers if w.status.booting and not w.status.terminal))
        probes = breaker.probes_allowed(d.workers, in_boot, d.leaving)
        if probes <= 0:
            return [Blocked.BREAKER_HALF_OPEN]
        if count > probes:
            blocked.append(Blocked.BREAKER_HALF_OPEN)
            count = probes
    room = s.max_active_gpus - live
    if room < count:
        blocked.append(Blocked.MAX_REACHED)
        count = max(0, room)
    allowed = [g for g in s.gpu_types if not backed_off_everywhere(g, backoffs, d.data_centers)]
    avoid = avoided_pairs(backoffs)
    if count > 0 and not allowed:
        blocked.append(Blocked.BACKOFF)
        count = 0
    headroom = cap - spend if cap > 0 else math.inf
    if cap > 0 and spend_unknown and count > 0:
        # Some worker's price is unknown: the fleet's spend cannot be bounded, so do not add to it.
        blocked.append(Blocked.PRICE_UNKNOWN)
        count = 0
    taken = {w.id for w in d.snapshot.workers} | set(d.by_name)
    for index in range(count):
        types = allowed
        if cap > 0:
            priced = [(g, d.type_price(g)) for g in allowed]
            types = [g for g, p in priced if p is not None and p <= headroom + _EPS]
            if not types:
                blocked.append(
                    Blocked.PRICE_UNKNOWN if all(p is None for _, p in priced) else Blocked.SPEND_CAP
                )
                break
            # The spawn may fall through to any type of its list: reserve the dearest.
            headroom -= max(d.type_price(g) or 0.0 for g in types)
        total = capacity + index + 1
        reason = (
            Reason.DEMAND
            if total <= aim.needed
            else Reason.WAIT_TARGET
            if total <= max(aim.needed, aim.modelled)
            else Reason.SPARE
            if total <= aim.needed + aim.keep_idle
            else Reason.FLOOR
        )
        worker_id = new_worker_id(d.prefix, d.now, index, taken)
        taken.add(worker_id)
        d.actions.append(
            Spawn(
                reason=reason,
                worker_id=worker_id,
                gpu_types=tuple(types),
                avoid=avoid,
                metadata=freeze(
                    {
                        Meta.GPU_TYPES: list(types),
                        Meta.SPAWN_REASON: reason.value,
                        Meta.DISK_GB: volume_disk_gb(s),
                    }
                ),
            )
        )
    return blocked
