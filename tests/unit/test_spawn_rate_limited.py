"""A creation refused by Runpod's rate limit (a 429, or held back by the client to keep a window's last
requests for terminations) is not a failed boot: the fleet grows again as soon as the window resets.

Before, it ended the row as ``spawn_failed``, which counts toward the breaker and backs the GPU type
off. A burst of creations near the end of an hour window then opened the breaker and kept the fleet
from growing long after the quota was back. Driven in virtual time: the daemon's own ``plan()`` and
executor against the simulated provider, whose creations are refused for the first 50 minutes.

Not a failed boot, it is not free either: each refused creation is a request against the same quota
the terminations need, and a row and a boot outcome. The policy waits 60 s after the newest refusal,
doubling with each one in a row (before the hold, this run asked 1,499 times).
"""

from __future__ import annotations

from typing import Any

from orchestrator.core import errors
from orchestrator.core.config import defaults
from orchestrator.core.policy import plan
from orchestrator.core.states import BreakerState, Reason
from orchestrator.studies.fleet import ResumeModel
from orchestrator.studies.simulation import Simulation
from orchestrator.studies.traces import Trace, TraceTask

LIMITED_UNTIL = 3000.0  # most of an hour window, held back


def test_creations_refused_by_the_rate_limit_neither_open_the_breaker_nor_back_the_type_off() -> None:
    trace = Trace("burst", tuple(TraceTask(f"t{i}", 30.0 + i, 120.0) for i in range(8)), 7200.0)
    settings = defaults()
    breakers: list[BreakerState] = []

    def watched(*args: Any, **kwargs: Any) -> Any:
        result = plan(*args, **kwargs)
        if args[0].now is not None and args[0].now.timestamp() >= LIMITED_UNTIL:
            breakers.append(result.breaker)
        return result

    sim = Simulation(trace, watched, settings, seed=4, resume=ResumeModel(failure_share=0.0))
    create = sim.provider.create
    refused: list[str] = []

    def limited(name: str, gpu_types: Any) -> Any:
        if sim.clock.now < LIMITED_UNTIL:
            refused.append(name)
            raise errors.RunpodRateLimited(
                "POST /pods: held back: 8 requests left in Runpod's hour rate-limit window",
                retry_after=LIMITED_UNTIL - sim.clock.now,
            )
        return create(name, gpu_types)

    sim.provider.create = limited  # type: ignore[method-assign]
    result = sim.run()

    assert settings.max_consecutive_failures < len(refused) <= 20, len(refused)
    assert result.violations == [] and result.tasks_complete == result.tasks_total
    boots = sim.db.snapshot().recent_boots
    limited_boots = [o for o in boots if o.reason == Reason.SPAWN_RATE_LIMITED.value]
    assert limited_boots and not any(o.counts_for_breaker or o.counts_for_backoff for o in limited_boots)
    assert breakers and BreakerState.OPEN not in breakers, "the breaker opened after the window reset"
