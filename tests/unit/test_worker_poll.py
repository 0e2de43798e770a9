"""WORKER_POLL_INTERVAL_SEC in virtual time: what an idle worker's claim poll costs a task in waiting, and
the Edge Function calls the polls make."""

from __future__ import annotations

from orchestrator.core.config import defaults
from orchestrator.core.policy import plan
from orchestrator.studies.fleet import EDGE_USD_PER_CALL
from orchestrator.studies.simulation import Result, Simulation
from orchestrator.studies.traces import Trace, TraceTask

# One worker kept up; a short task every five minutes, once it serves, so each finds it idle.
TRACE = Trace(
    "sparse", tuple(TraceTask(f"t{i}", 900.0 + i * 300.0 + 7.0 * i, 20.0) for i in range(30)), 10_000.0
)


def _run(poll: int) -> Result:
    settings = defaults().replace(MIN_ACTIVE_GPUS=1, MAX_ACTIVE_GPUS=1, WORKER_POLL_INTERVAL_SEC=poll)
    result = Simulation(TRACE, plan, settings, seed=4).run()
    assert result.violations == [] and result.tasks_complete == result.tasks_total
    return result


def test_a_task_that_finds_an_idle_worker_waits_at_most_one_poll() -> None:
    fast, slow = _run(3), _run(10)
    assert max(fast.waits) <= 3.0 + 1e-6
    assert max(slow.waits) <= 10.0 + 1e-6
    # With the worker's own 10 s, a task waits more than 3 s about seven times in ten.
    assert sum(1 for w in slow.waits if w > 3.0) >= len(slow.waits) // 3


def test_the_polls_are_counted_and_billed_as_edge_function_calls() -> None:
    fast, slow = _run(3), _run(10)
    # One worker, idle nearly all the time it bills: two calls per poll (reigh-worker 22cbba9 asks
    # task-counts, then claims whatever it said), plus each task's completion (30).
    for result, poll in ((fast, 3), (slow, 10)):
        expected = 2 * result.gpu_hours * 3600.0 / poll + 30
        assert 0.85 * expected <= result.edge_calls <= 1.05 * expected, (poll, result.edge_calls, expected)
    assert fast.edge_cost_usd == fast.edge_calls * EDGE_USD_PER_CALL
    assert fast.cost_usd - slow.cost_usd > 0.9 * (fast.edge_cost_usd - slow.edge_cost_usd)
