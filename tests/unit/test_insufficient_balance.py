"""Runpod refusing a creation for the account's balance (createPod's documented 402, "Insufficient
balance. Stop; no candidate will succeed."): the round stops at the first candidate, the failure counts
toward the breaker so creations slow to a probe, and the log says what to do."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.adapters import placement
from orchestrator.core import errors
from orchestrator.core.config import defaults
from orchestrator.core.policy import plan
from orchestrator.core.states import BreakerState, Reason
from orchestrator.studies.fleet import ResumeModel
from orchestrator.studies.simulation import Simulation
from orchestrator.studies.traces import Trace, TraceTask
from tests.unit.test_runpod_review_fixes import A4000, RTX4090, SPEC, FakeTransport


class Recording:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def _say(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    debug = info = warning = error = exception = critical = _say


def _no_balance() -> errors.RunpodRequestError:
    return errors.RunpodRequestError("POST /pods -> HTTP 402: Insufficient balance", status=402)


def test_the_round_stops_at_the_first_candidate() -> None:
    transport = FakeTransport({RTX4090.id: _no_balance(), A4000.id: None})
    with pytest.raises(errors.RunpodRequestError) as info:
        placement.create(transport, "gpu-review-1", SPEC, [RTX4090, A4000], [None])  # type: ignore[arg-type]
    assert info.value.status == 402 and transport.asked == [(RTX4090.id, None)]


def test_every_refused_spawn_says_to_add_credit_and_the_breaker_opens() -> None:
    trace = Trace("broke", tuple(TraceTask(f"t{i}", 30.0 + i, 120.0) for i in range(8)), 3600.0)
    breakers: list[BreakerState] = []

    def watched(*args: Any, **kwargs: Any) -> Any:
        result = plan(*args, **kwargs)
        breakers.append(result.breaker)
        return result

    sim = Simulation(trace, watched, defaults(), seed=4, resume=ResumeModel(failure_share=0.0))

    def broke(name: str, gpu_types: Any) -> Any:
        raise _no_balance()

    sim.provider.create = broke  # type: ignore[method-assign]
    log = Recording()
    sim.executor.effects.log = log
    sim.run()
    failed = [fields for event, fields in log.lines if event == "spawn_failed"]
    assert failed and all("add credit" in f["hint"] for f in failed)
    boots = sim.db.snapshot().recent_boots
    assert boots and all(o.reason == Reason.SPAWN_FAILED.value and o.counts_for_breaker for o in boots)
    assert BreakerState.OPEN in breakers
