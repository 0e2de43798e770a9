"""The rate-clairvoyant and foresight families of ``bench/frontier.py`` (``orchestrator.studies.policies``).

Its figures are the evidence that part of the cost/wait bar (``docs/policy.md``) is out of reach of any
rate-predicting rule,
so its queueing arithmetic and its effect on the fleet are checked here against known answers.
"""

from __future__ import annotations

import pytest

from orchestrator.core.config import Settings, defaults
from orchestrator.core.policy import plan
from orchestrator.studies.policies import (
    RATE_LEAD_SEC,
    RATE_WINDOW_SEC,
    ForesightRate,
    RateClairvoyant,
    erlang_c,
    floor_schedule,
    staffing,
)
from orchestrator.studies.simulation import PlanFn, Result, Simulation
from orchestrator.studies.traces import ARRIVAL_RATES, Trace, TraceTask, generate


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


def _plain_and_ahead(trace: Trace, settings: Settings, ahead_plan: PlanFn) -> tuple[Result, Result]:
    """The daemon's plan() and one told the future, on one trace and seed; both must lose nothing."""
    plain = Simulation(trace, plan, settings, seed=1).run()
    ahead = Simulation(trace, ahead_plan, settings, seed=1).run()
    for result in (plain, ahead):
        assert result.violations == []
        assert result.tasks_lost == 0 and result.tasks_duplicated == 0 and result.pods_leaked == 0
        assert result.tasks_complete == len(trace.tasks)
    return plain, ahead


def test_rate_clairvoyant_floor_buys_shorter_waits_for_more_money() -> None:
    trace = _burst_trace()
    settings = defaults().replace(TASKS_PER_GPU_THRESHOLD=1, GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC=10)
    plain, ahead = _plain_and_ahead(trace, settings, RateClairvoyant(trace, settings, 0.2))
    # Pods booted ahead of the burst: the first tasks do not wait for a boot.
    assert ahead.percentile(0.5) < plain.percentile(0.5)
    assert ahead.cost_usd > plain.cost_usd


def test_foresight_reads_the_rate_a_boot_ahead() -> None:
    trace = _burst_trace(at=3600.0, size=20)
    told = ForesightRate(trace)
    assert told.rate_at(0.0) == 0.0
    # The window centred a lead time ahead holds the whole burst (20 tasks over one minute).
    assert told.rate_at(3630.0 - RATE_LEAD_SEC) == pytest.approx(20 / RATE_WINDOW_SEC)
    # Once the burst is more than half a window behind the centre, nothing more is coming.
    assert told.rate_at(3700.0 + RATE_WINDOW_SEC) == 0.0


def test_foresight_staffs_the_wait_target_before_the_burst_arrives() -> None:
    trace = _burst_trace()
    settings = defaults()  # the wait target on, as the daemon runs
    plain, ahead = _plain_and_ahead(trace, settings, ForesightRate(trace))
    # Told the rate, the model has workers up when the burst lands: its first tasks do not wait for a boot.
    assert ahead.percentile(0.5) < plain.percentile(0.5)
    assert ahead.cost_usd > plain.cost_usd


def test_exact_rate_is_told_a_lead_time_ahead() -> None:
    trace = _burst_trace()
    told = ForesightRate(trace, exact=lambda t: t / 1e6)
    assert told.rate_at(1000.0) == pytest.approx((1000.0 + RATE_LEAD_SEC) / 1e6)


@pytest.mark.parametrize("name", sorted(ARRIVAL_RATES))
def test_each_generators_rate_is_the_one_its_arrivals_follow(name: str) -> None:
    # The exact-rate family is only as exact as this table: the committed traces' counts must lie within
    # 3 Poisson standard deviations of the table's (today 1.3 at most), so a generator whose rate moved
    # without the table fails here: by a tenth for steady, an eighth for diurnal, about 40% for the 64
    # tasks of long_tasks.
    trace = generate(name)
    rate = ARRIVAL_RATES[name]
    last = trace.tasks[-1].at
    step = 60.0
    expected = sum(rate((i + 0.5) * step) * step for i in range(int(last // step) + 1))
    assert abs(len(trace.tasks) - expected) < 3 * expected**0.5
    if name == "diurnal":
        # And its shape, not only its total: the busiest six hours hold the share the curve gives them.
        peak = sum(1 for t in trace.tasks if 11 * 3600 <= t.at < 17 * 3600)
        due = sum(rate((i + 0.5) * step) * step for i in range(int(11 * 3600 / step), int(17 * 3600 / step)))
        assert abs(peak - due) < 3 * due**0.5
