"""The rate-clairvoyant staffing family of ``bench/frontier.py`` (``orchestrator.studies.policies``).

Its figures are the evidence that part of the cost/wait bar (``docs/policy.md``) is out of reach of any
rate-predicting rule,
so its queueing arithmetic and its effect on the fleet are checked here against known answers.
"""

from __future__ import annotations

import pytest

from orchestrator.core.config import defaults
from orchestrator.core.policy import plan
from orchestrator.studies.policies import RATE_LEAD_SEC, RateClairvoyant, erlang_c, floor_schedule, staffing
from orchestrator.studies.simulation import Simulation
from orchestrator.studies.traces import Trace, TraceTask


def test_erlang_c_matches_closed_forms() -> None:
    # M/M/1: an arrival waits with probability rho.
    assert erlang_c(1, 0.3) == pytest.approx(0.3)
    # M/M/2 at one Erlang: 1/3 (textbook value).
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    # Unstable or empty systems: everyone waits.
    assert erlang_c(3, 3.0) == 1.0
    assert erlang_c(0, 0.5) == 1.0


def test_staffing_is_the_fewest_workers_meeting_the_target() -> None:
    load = 5.6  # the diurnal trace's peak
    for target in (0.5, 0.2, 0.05):
        c = staffing(load, target, ceiling=50)
        assert erlang_c(c, load) <= target
        assert erlang_c(c - 1, load) > target
    assert staffing(load, 0.05, ceiling=50) > staffing(load, 0.5, ceiling=50)
    assert staffing(0.0, 0.05, ceiling=50) == 0
    assert staffing(40.0, 0.01, ceiling=10) == 10


def _burst_trace(at: float = 3600.0, size: int = 20) -> Trace:
    tasks = tuple(TraceTask(id=f"b{i:03d}", at=at + i * 3.0, duration=120.0) for i in range(size))
    return Trace(name="burst", tasks=tasks, duration=at + 1800.0)


def test_floor_rises_a_boot_ahead_of_the_burst_and_falls_after_it() -> None:
    trace = _burst_trace()
    schedule = floor_schedule(trace, 0.2, ceiling=10)
    step = 30.0
    assert schedule[int(600 / step)] == 0  # nothing due for the next 20 minutes
    # Staffed before the first arrival, by the lead time.
    assert schedule[int((3600 - RATE_LEAD_SEC) / step)] > 0
    assert schedule[int(3700 / step)] > 0
    assert schedule[-1] == 0  # nothing left to come at the end


def test_rate_clairvoyant_floor_buys_shorter_waits_for_more_money() -> None:
    trace = _burst_trace()
    settings = defaults().replace(TASKS_PER_GPU_THRESHOLD=1, GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC=10)
    plain = Simulation(trace, plan, settings, seed=1).run()
    ahead = Simulation(trace, RateClairvoyant(trace, settings, 0.2), settings, seed=1).run()
    for result in (plain, ahead):
        assert result.violations == []
        assert result.tasks_lost == 0 and result.tasks_duplicated == 0 and result.pods_leaked == 0
        assert result.tasks_complete == len(trace.tasks)
    # Pods booted ahead of the burst: the first tasks do not wait for a boot.
    assert ahead.percentile(0.5) < plain.percentile(0.5)
    assert ahead.cost_usd > plain.cost_usd
