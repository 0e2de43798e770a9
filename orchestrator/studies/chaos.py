"""The chaos soak: the real control loop in virtual time, under every failure at once.

Where this sits: built on :mod:`orchestrator.studies.simulation`. ``bench/chaos.py`` runs the full 24-virtual-hour
soak and writes ``bench/results/chaos.md``; ``tests/unit/test_chaos.py`` runs a shorter one (same
faults, same checks) and proves the checks can fail by running a deliberately broken policy.

The soak: a day of mixed traffic (a diurnal stream plus bursts larger than the fleet ceiling), a spend
cap tighter than the ceiling, and, all at once: Runpod 5xx and 429 bursts (listing, creation and
termination all fail for minutes), pods that never boot, SSH that does not answer during
initialization, initialization checks that fail, worker processes that crash (silence, task left
In Progress) or hang (task never ends), and orchestrator restarts at random points, half of them
while actions are in flight (their remaining steps are lost; the new process waits for the old lease
to expire). The invariants checked throughout
(:class:`~orchestrator.studies.simulation.Invariants`): no pod of ours left unclaimed after the orphan grace
and two settled ticks (``pod_leaked``), no task lost (``task_lost``, ``task_orphaned``), no task
run by two live workers at once (``task_run_twice``), no second worker process on a pod
(``two_processes``), never more than ``MAX_ACTIVE_GPUS`` pods or
live rows (``max_exceeded``), never over ``MAX_HOURLY_SPEND`` (``spend_cap_exceeded``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from orchestrator.core.config import Settings, defaults
from orchestrator.core.policy import plan as real_plan
from orchestrator.studies.fleet import BootModel, Faults
from orchestrator.studies.simulation import PlanFn, Result, Simulation
from orchestrator.studies.traces import HOUR, Trace, TraceTask


@dataclass(frozen=True)
class ChaosConfig:
    hours: float = 24.0
    seed: int = 7
    restarts: int = 20
    max_active_gpus: int = 8
    max_hourly_spend: float = 4.0  # 6 pods at 0.59 USD/h: tighter than the ceiling on purpose
    outages_per_hour: float = 0.5
    settle_sec: float = 3600.0


def chaos_trace(hours: float, seed: int) -> Trace:
    """A diurnal-ish stream plus bursts above the ceiling; ~10% long ``_orchestrator`` parents."""
    rng = random.Random(seed)
    end = hours * HOUR
    items: list[tuple[float, float, str]] = []
    t = 0.0
    while True:
        rate = (0.3 + 1.2 * (0.5 + 0.5 * math.sin(2 * math.pi * t / (24 * HOUR)))) / 60.0
        t += rng.expovariate(rate)
        if t >= end:
            break
        items.append((t, *_duration(rng)))
    burst = rng.uniform(0.5, 2.0) * HOUR
    while burst < end:
        items.extend((burst + rng.uniform(0, 60), *_duration(rng)) for _ in range(rng.randint(20, 40)))
        burst += rng.uniform(2.0, 4.0) * HOUR
    items.sort()
    tasks = tuple(TraceTask(f"ch{i:06d}", round(a, 3), round(d, 3), k) for i, (a, d, k) in enumerate(items))
    return Trace("chaos", tasks, end, seed)


def _duration(rng: random.Random) -> tuple[float, str]:
    if rng.random() < 0.1:
        return rng.uniform(900, 1300), "travel_orchestrator"
    return min(180.0, max(60.0, rng.lognormvariate(math.log(110.0), 0.3))), "generate_video"


def chaos_faults(cfg: ChaosConfig) -> Faults:
    rng = random.Random(cfg.seed * 31 + 5)
    end = cfg.hours * HOUR
    outages: list[tuple[float, float, int]] = []
    t = rng.expovariate(cfg.outages_per_hour / HOUR)
    while t < end:
        outages.append((t, t + rng.uniform(30, 300), rng.choice((500, 502, 503, 429, 429, 409, 409))))
        t += rng.expovariate(cfg.outages_per_hour / HOUR)
    return Faults(
        never_boot=0.05,
        ssh_flaky=0.15,
        init_fail=0.03,
        crash_per_hour=0.08,
        hang=0.01,
        outages=tuple(outages),
        ghost_create=0.5,
        stray_pods_per_hour=0.25,
    )


def chaos_settings(cfg: ChaosConfig, base: Settings | None = None) -> Settings:
    return (base or defaults()).replace(
        MAX_ACTIVE_GPUS=cfg.max_active_gpus, MAX_HOURLY_SPEND=cfg.max_hourly_spend
    )


def soak(
    cfg: ChaosConfig | None = None, plan_fn: PlanFn = real_plan, settings: Settings | None = None
) -> Result:
    """Run the soak; the result's ``violations`` is empty when every invariant held."""
    cfg = cfg or ChaosConfig()
    rng = random.Random(cfg.seed * 17 + 3)
    end = cfg.hours * HOUR
    restarts = sorted(rng.uniform(60.0, end) for _ in range(cfg.restarts))
    sim = Simulation(
        chaos_trace(cfg.hours, cfg.seed),
        plan_fn,
        settings or chaos_settings(cfg),
        name="chaos",
        wake_on_tasks=True,
        seed=cfg.seed,
        boot=BootModel(),
        faults=chaos_faults(cfg),
        restarts=restarts,
        restart_mid_action=True,
        settle_sec=cfg.settle_sec,
    )
    return sim.run()


def summary(result: Result) -> dict[str, Any]:
    by_name: dict[str, int] = {}
    for v in result.violations:
        by_name[v.name] = by_name.get(v.name, 0) + 1
    return {
        "virtual_hours": round(result.horizon / HOUR, 2),
        "tasks": result.tasks_total,
        "tasks_complete": result.tasks_complete,
        "tasks_dead_lettered": result.tasks_dead_lettered,
        "violations": by_name,
        "ticks": result.ticks,
        "spawns": result.spawns,
        "cost_usd": round(result.cost_usd, 2),
        **result.counters,
        # Recovery paths the soak went through (actions started, by kind and reason).
        "orphans_reaped": result.actions.get("terminate_pod:orphan_pod", 0),
        "rows_without_pod_closed": result.actions.get("mark_terminated:no_pod_created", 0),
        "boot_timeouts": result.actions.get("fail_worker:boot_timeout", 0),
        "heartbeat_failures": result.actions.get("fail_worker:heartbeat_stale", 0),
        "stuck_tasks": result.actions.get("fail_worker:task_stuck", 0),
    }
