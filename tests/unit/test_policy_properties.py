"""Hypothesis properties of the pure policy, over arbitrary well-typed fleets, listings and settings.

The policy's invariants: never more non-terminal workers than the maximum; never terminates or
fails a worker running a task unless that worker is failed; booting workers count as capacity; the
same input gives the same actions; never spawns while paused; never touches a pod without the
prefix; never raises. Plus the spend cap and the breaker.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from orchestrator.core.actions import (
    DESTRUCTIVE,
    Drain,
    FailWorker,
    Initialize,
    MarkTerminated,
    Plan,
    Promote,
    Reactivate,
    Spawn,
    StartProcess,
    TerminatePod,
)
from orchestrator.core.config import Settings
from orchestrator.core.observed import BootOutcome, PodView, Queue, Snapshot, Worker
from orchestrator.core.policy import HEALTH_REASONS, plan
from orchestrator.core.states import BreakerState, Meta, PodStatus, Reason, WorkerState
from tests.unit.test_policy import GPU, NOW, PRICES, ago, settings

PROPS = hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GPU_NAMES = sorted(PRICES)
REASONS = [r.value for r in Reason] + ["something_new"]

seconds = st.integers(min_value=0, max_value=6000)
maybe_seconds = st.none() | seconds


@st.composite
def configs(draw: Any) -> Settings:
    max_active = draw(st.integers(0, 6))
    return settings(
        min_active_gpus=draw(st.integers(0, max_active)),
        max_active_gpus=max_active,
        machines_to_keep_idle=draw(st.integers(0, 2)),
        tasks_per_gpu_threshold=draw(st.integers(1, 4)),
        max_hourly_spend=draw(st.sampled_from([0.0, 0.5, 1.5, 4.0])),
        auto_start_worker_process=draw(st.booleans()),
        runpod_gpu_type=tuple(
            draw(st.lists(st.sampled_from(GPU_NAMES), min_size=1, max_size=3, unique=True))
        ),
        max_consecutive_failures=draw(st.integers(1, 4)),
    )


@st.composite
def fleets(draw: Any) -> tuple[list[Worker], list[PodView] | None]:
    workers: list[Worker] = []
    pods: list[PodView] = []
    for index in range(draw(st.integers(0, 8))):
        worker_id = f"gpu-w{index}"
        status = draw(st.sampled_from(list(WorkerState)))
        running = [f"t{index}-{k}" for k in range(draw(st.integers(0, 2)))]
        meta: dict[str, Any] = {}
        runpod_id = draw(st.sampled_from([f"pod-{index}", None, f"other-{index}"]))
        if runpod_id:
            meta[Meta.RUNPOD_ID] = runpod_id
        for key in (
            Meta.INITIALIZED_AT,
            Meta.PROCESS_STARTED_AT,
            Meta.TERMINATE_REQUESTED_AT,
            Meta.POD_TERMINATE_REQUESTED_AT,
        ):
            when = draw(maybe_seconds)
            if when is not None and draw(st.booleans()):
                meta[key] = ago(when).isoformat()
        if draw(st.booleans()):
            meta[Meta.DRAIN_REASON] = draw(
                st.sampled_from(["overcapacity", "idle_timeout", "operator_request"])
            )
        if draw(st.booleans()):
            meta[Meta.ERROR_REASON] = draw(st.sampled_from(REASONS))
        if draw(st.booleans()):
            meta[Meta.COST_PER_HR] = draw(st.sampled_from([0.17, 0.69, 2.99]))
        if draw(st.booleans()):
            meta[Meta.GPU_TYPE] = draw(st.sampled_from(GPU_NAMES))
        if draw(st.booleans()):
            meta[Meta.CAPACITY_MISSES] = [
                {
                    "gpu_type": draw(st.sampled_from(GPU_NAMES)),
                    "data_center": "EU-RO-1",
                    "at": ago(draw(seconds)).isoformat(),
                }
            ]
        created = draw(seconds)
        stuck = draw(maybe_seconds) if running else None
        workers.append(
            Worker(
                id=worker_id,
                status=status,
                instance_type=GPU,
                created_at=ago(created),
                status_changed_at=ago(draw(st.integers(0, created))),
                activated_at=None if draw(st.booleans()) else ago(draw(st.integers(0, created))),
                last_heartbeat=None if draw(st.booleans()) else ago(draw(seconds)),
                metadata=meta,
                running_task_ids=tuple(running),
                running_count=len(running),
                oldest_running_started_at=None if stuck is None else ago(stuck),
                oldest_stuckable_started_at=None if stuck is None else ago(stuck),
                last_completion_at=None if draw(st.booleans()) else ago(draw(seconds)),
                # What the worker said of itself: nothing, a crash, a fatal error, or a stray word.
                reported_status=draw(st.sampled_from([None, None, "crashed", "error", "inactive"])),
                reported_at=None if draw(st.booleans()) else ago(draw(seconds)),
            )
        )
        if draw(st.booleans()):
            # The pod of this row: under its recorded id or another, named after it or not.
            pods.append(
                PodView(
                    id=runpod_id or f"byname-{index}",
                    name=draw(st.sampled_from([worker_id, worker_id, f"notebook-{index}"])),
                    status=draw(st.sampled_from(list(PodStatus))),
                    ssh_ready=draw(st.booleans()),
                    cost_per_hr=draw(st.sampled_from([None, 0.0, 0.69])),
                    created_at=None if draw(st.booleans()) else ago(draw(seconds)),
                    gpu_type=GPU,
                )
            )
    for index in range(draw(st.integers(0, 4))):
        pods.append(
            PodView(
                id=f"extra-{index}",
                name=draw(st.sampled_from([f"gpu-stray{index}", f"jupyter-{index}", f"gpu-w{index}"])),
                status=draw(st.sampled_from(list(PodStatus))),
                ssh_ready=draw(st.booleans()),
                cost_per_hr=draw(st.sampled_from([None, 0.34])),
                created_at=None if draw(st.booleans()) else ago(draw(seconds)),
                uptime_sec=draw(st.none() | st.floats(0, 9000)),
            )
        )
    # Listings carry unique ids; a failed listing is None.
    unique = list({p.id: p for p in pods}.values())
    return workers, (None if draw(st.integers(0, 9)) == 0 else unique)


boots = st.lists(
    st.builds(
        BootOutcome,
        worker_id=st.sampled_from(["a", "b", "c"]),
        gpu_type=st.none() | st.sampled_from(GPU_NAMES),
        data_center=st.sampled_from([None, "EU-RO-1", "US-KS-2"]),
        ok=st.booleans(),
        reason=st.none() | st.sampled_from(REASONS),
        at=seconds.map(ago),
    ),
    max_size=8,
)


@st.composite
def inputs(draw: Any) -> tuple[Snapshot, list[PodView] | None, Settings, dict[str, float]]:
    workers, pods = draw(fleets())
    running = sum(w.running_count for w in workers if w.status.live) + draw(st.integers(0, 3))
    snapshot = Snapshot(
        now=NOW,
        paused=draw(st.booleans()),
        queue=Queue(claimable=draw(st.integers(0, 40)), queued_total=0, running=running),
        workers=tuple(workers),
        recent_boots=tuple(sorted(draw(boots), key=lambda b: b.at, reverse=True)),
    )
    prices = {name: price for name, price in PRICES.items() if draw(st.booleans())}
    return snapshot, pods, draw(configs()), prices


def decide(case: tuple[Snapshot, list[PodView] | None, Settings, dict[str, float]]) -> Plan:
    snapshot, pods, cfg, prices = case
    return plan(snapshot, pods, cfg, NOW, prices=prices)


@PROPS
@given(inputs())
def test_never_more_non_terminal_workers_than_the_maximum(case: Any) -> None:
    snapshot, _, cfg, _ = case
    result = decide(case)
    spawned = len(result.of_kind(Spawn))
    # A stopped pod (the warm pool) holds no GPU and does not count toward MAX_ACTIVE_GPUS.
    non_terminal = sum(1 for w in snapshot.workers if w.status.holds_gpu)
    if spawned:
        assert non_terminal + spawned <= cfg.max_active_gpus
        assert result.live + spawned <= cfg.max_active_gpus
    ids = [a.worker_id for a in result.of_kind(Spawn)]
    assert len(set(ids)) == len(ids) and not set(ids) & {w.id for w in snapshot.workers}
    assert all(i.startswith(cfg.worker_id_prefix) for i in ids)


@PROPS
@given(inputs())
def test_never_terminates_or_fails_a_busy_worker_unless_it_failed(case: Any) -> None:
    snapshot, _, _, _ = case
    busy = {w.id: w for w in snapshot.workers if w.running_count > 0}
    for action in decide(case).actions:
        worker_id = getattr(action, "worker_id", None)
        if worker_id not in busy:
            continue
        already_failed = busy[worker_id].status in (WorkerState.ERROR, WorkerState.TERMINATING)
        if isinstance(action, FailWorker):
            assert action.reason in HEALTH_REASONS
        elif isinstance(action, DESTRUCTIVE):
            assert already_failed, action
            assert not (isinstance(action, TerminatePod) and action.transition_from is not None)
        elif isinstance(action, Drain):
            assert action.reason is Reason.OPERATOR_REQUEST


@PROPS
@given(inputs(), seconds)
def test_a_booting_worker_counts_as_capacity(case: Any, age: int) -> None:
    snapshot, pods, cfg, prices = case
    before = len(decide(case).of_kind(Spawn))
    # A fresh intent row whose pod is still being created (no id yet, inside the grace).
    fresh = Worker(
        id="gpu-fresh",
        status=WorkerState.SPAWNING,
        created_at=NOW - timedelta(seconds=min(age, int(cfg.orphan_grace_sec) - 1)),
        metadata={},
    )
    grown = Snapshot(
        now=snapshot.now,
        paused=snapshot.paused,
        queue=snapshot.queue,
        workers=(*snapshot.workers, fresh),
        recent_boots=snapshot.recent_boots,
    )
    after = len(plan(grown, pods, cfg, NOW, prices=prices).of_kind(Spawn))
    assert after <= max(0, before - 1)


@PROPS
@given(inputs(), st.randoms(use_true_random=False))
def test_the_same_input_gives_the_same_actions(case: Any, rnd: random.Random) -> None:
    snapshot, pods, cfg, prices = case
    first = decide(case)
    assert decide(case) == first
    workers = list(snapshot.workers)
    rnd.shuffle(workers)
    shuffled_pods = None if pods is None else rnd.sample(pods, len(pods))
    shuffled = Snapshot(
        now=snapshot.now,
        paused=snapshot.paused,
        queue=snapshot.queue,
        workers=tuple(workers),
        recent_boots=snapshot.recent_boots,
    )
    assert plan(shuffled, shuffled_pods, cfg, NOW, prices=prices).actions == first.actions


@PROPS
@given(inputs())
def test_never_spawns_while_paused(case: Any) -> None:
    snapshot, _, _, _ = case
    if snapshot.paused:
        assert decide(case).of_kind(Spawn) == []


@PROPS
@given(inputs())
def test_never_touches_a_pod_without_the_prefix(case: Any) -> None:
    _, pods, cfg, _ = case
    foreign = {p.id for p in pods or () if not p.name.startswith(cfg.worker_id_prefix)}
    for action in decide(case).actions:
        assert getattr(action, "runpod_id", None) not in foreign, action


@PROPS
@given(inputs())
def test_spawns_stay_within_the_spend_cap_and_the_breaker(case: Any) -> None:
    _, _, cfg, prices = case
    result = decide(case)
    spawned = result.of_kind(Spawn)
    if cfg.max_hourly_spend > 0 and spawned:
        reserved = sum(max(prices[g] for g in a.gpu_types) for a in spawned)
        assert result.spend_per_hr + reserved <= cfg.max_hourly_spend + 1e-6
    if result.breaker is BreakerState.OPEN:
        assert spawned == []
    if result.breaker is BreakerState.HALF_OPEN:
        assert len(spawned) <= 1
    backed_off = {b.gpu_type for b in result.backoffs}
    assert all(g in cfg.gpu_types and g not in backed_off for a in spawned for g in a.gpu_types)


@PROPS
@given(inputs())
def test_at_most_one_state_change_per_worker_per_tick(case: Any) -> None:
    # Actions of one tick run concurrently: two transitions of one row would race.
    changes: dict[str, int] = {}
    for action in decide(case).actions:
        changing = isinstance(
            action, FailWorker | Drain | Reactivate | MarkTerminated | Initialize | StartProcess | Promote
        ) or (isinstance(action, TerminatePod) and action.transition_from is not None)
        if changing:
            worker_id = getattr(action, "worker_id", "")
            changes[worker_id] = changes.get(worker_id, 0) + 1
    assert all(count == 1 for count in changes.values()), changes
