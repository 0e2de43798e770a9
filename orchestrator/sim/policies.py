"""The policies the simulator compares (issue 7), each a ``plan``-like function plus how it is driven.

Where this sits: ``orchestrator.sim.vtime`` drives any function with the signature of
``orchestrator.policy.plan``; ``bench/policy.py`` runs every :class:`PolicySpec` below on every trace.
``ours`` *is* the daemon's ``plan()``, unchanged. The competitors reuse that same ``plan()`` for
everything that is not the scaling rule under comparison (booting, health, reconciliation,
termination), and change only the scaling inputs (their settings) and outputs (which scaling actions
they keep), so the table compares scaling rules, not bookkeeping:

* ``original``: the replaced system's rules as ``../shared/lessons-from-the-original.md`` describes
  them: one worker per queued or running task (threshold 1), the 600 s idle timeout measured
  correctly (from the last completion, not the heartbeat), no separate over-capacity timeout, no
  cancelled boots, a 30 s poll with no wake-up on new tasks, and sequential spawning (one create per
  tick). ``original_min2`` is the same with a floor of 2 (the old default).
* ``serverless``: a Runpod-Serverless-like queue-delay scaler (``facts.md``): adds workers only when the
  oldest queued task has waited more than 4 s, one per waiting task; idle timeout 5 s; checks every 2 s;
  our pods' boot times (no FlashBoot).
* ``static``: ``MAX_ACTIVE_GPUS`` workers all the time.
* ``ours`` / ``ours_min2``: ``plan()`` with the default settings (and ``MIN_ACTIVE_GPUS=2``).
* ``busy_workers_count_themselves``: a candidate rule, not the daemon's: each running task holds one
  GPU (Headless-Wan2GP runs one at a time), so ``needed = running + ceil(claimable /
  TASKS_PER_GPU_THRESHOLD)`` instead of ``ceil((claimable + running) / TASKS_PER_GPU_THRESHOLD)``.
  Built by transforming the input only (``queue.running`` scaled by the threshold), ``plan()`` unchanged.
* ``broken_spawning_uncounted``: for the chaos test only: ``plan()`` whose spawn decision is made on a
  snapshot and listing with the booting workers (and their pods) hidden, i.e. booting workers do not
  count as capacity or toward the maximum. It must make the soak fail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from orchestrator.config import Settings, defaults
from orchestrator.model import Plan, PodView, Reason, Snapshot, Spawn, TerminatePod
from orchestrator.policy import plan as real_plan

PlanFn = Callable[..., Plan]

SERVERLESS_QUEUE_DELAY_SEC = 4.0


@dataclass(frozen=True)
class PolicySpec:
    """A policy as the simulator runs it."""

    name: str
    plan: PlanFn
    settings: Settings
    wake_on_tasks: bool  # the Postgres transport's LISTEN/NOTIFY wake-up
    description: str


def _original_plan(
    snapshot: Snapshot,
    pods: Sequence[PodView] | None,
    settings: Settings,
    now: datetime,
    *,
    prices: Mapping[str, float] | None = None,
) -> Plan:
    result = real_plan(snapshot, pods, settings, now, prices=prices)
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
    hidden_pods = None if pods is None else [p for p in pods if p.id not in booting_pods and p.name not in booting]
    blind = real_plan(hidden_snapshot, hidden_pods, settings, now, prices=prices)
    actions = [a for a in full.actions if not isinstance(a, Spawn)]
    actions += [a for a in blind.actions if isinstance(a, Spawn)]
    return replace(full, actions=tuple(actions))


def specs(base: Settings | None = None, ours_changes: Mapping[str, Any] | None = None) -> list[PolicySpec]:
    """Every policy of the benchmark, from one base configuration (defaults unless given)."""
    base = base or defaults()
    ours = base.replace(**ours_changes) if ours_changes else base
    old = base.replace(
        MIN_ACTIVE_GPUS=0,
        TASKS_PER_GPU_THRESHOLD=1,
        MACHINES_TO_KEEP_IDLE=0,
        GPU_IDLE_TIMEOUT_SEC=600,
        GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC=600,
        ORCHESTRATOR_POLL_SEC=30,
    )
    serverless = base.replace(
        MIN_ACTIVE_GPUS=0,
        TASKS_PER_GPU_THRESHOLD=1,
        MACHINES_TO_KEEP_IDLE=0,
        GPU_IDLE_TIMEOUT_SEC=5,
        GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC=5,
        ORCHESTRATOR_POLL_SEC=2,
    )
    max_gpus = int(base.max_active_gpus)
    return [
        PolicySpec("ours", real_plan, ours, True, "plan() with the default settings"),
        PolicySpec("ours_min2", real_plan, ours.replace(MIN_ACTIVE_GPUS=2), True, "plan(), MIN_ACTIVE_GPUS=2"),
        PolicySpec("original", _original_plan, old, False, "the old rules, floor 0"),
        PolicySpec("original_min2", _original_plan, old.replace(MIN_ACTIVE_GPUS=2), False, "the old rules, floor 2"),
        PolicySpec("serverless", _serverless_plan, serverless, False, "queue delay > 4 s, idle 5 s, 2 s checks"),
        PolicySpec("static", real_plan, base.replace(MIN_ACTIVE_GPUS=max_gpus), True, f"{max_gpus} workers always"),
    ]
