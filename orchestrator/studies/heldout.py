"""Held-out traffic: shapes and seeds the defaults were not chosen on, to confirm they generalise.

Where this sits: ``bench/policy.py`` chooses and checks the defaults on the committed traces of
:mod:`orchestrator.studies.traces` (``bench/traces/*.csv``) and then runs the same policies, unchanged, on
the traces generated here, which never entered the tuning: the committed generators with other seeds,
and shapes of their own. Every generator is seeded, so a held-out result is reproducible, but none is
saved under ``bench/traces/`` (held out means nobody looked at it while choosing).

Shapes (1 task = 1 GPU at a time, as Headless-Wan2GP runs them):

* ``steps``: the rate jumps every 1-3 hours between levels from 0.2 to 3 tasks a minute (an
  afternoon campaign, a batch window), 12 h;
* ``mmpp``: a Markov-modulated Poisson process: a quiet state (0.3 a minute) and a busy one (2.5 a
  minute), each lasting 20-40 minutes on average, 12 h;
* ``ramp``: the rate climbs linearly from nothing to 3 a minute over 6 h and falls back over 6 h;
* ``mixed_long``: 1 task a minute, 15% of them 10-25 minute ordinary tasks (not ``_orchestrator``
  parents), the rest 1-3 minutes, 12 h;
* ``trickle``: 0.2 tasks a minute with occasional bursts of 5-15 tasks, 12 h.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from orchestrator.studies.traces import GENERATORS, HOUR, Trace, _build, _poisson_times, _short_duration


def steps(seed: int = 101, hours: float = 12.0) -> Trace:
    rng = random.Random(seed)
    end = hours * HOUR
    levels: list[tuple[float, float]] = []  # (until, per minute)
    t = 0.0
    while t < end:
        t += rng.uniform(1.0, 3.0) * HOUR
        levels.append((t, rng.choice((0.2, 0.5, 1.0, 1.5, 2.0, 3.0))))

    def rate(x: float) -> float:
        return next(per_min for until, per_min in levels if x < until) / 60.0

    times = _poisson_times(rng, rate, 3.0 / 60.0, end)
    return _build("steps", seed, end, ((x, _short_duration(rng), "generate_video") for x in times))


def mmpp(seed: int = 102, hours: float = 12.0) -> Trace:
    rng = random.Random(seed)
    end = hours * HOUR
    switches: list[tuple[float, float]] = []
    t, busy = 0.0, False
    while t < end:
        t += rng.expovariate(1.0 / (rng.uniform(20.0, 40.0) * 60.0))
        switches.append((t, 2.5 if busy else 0.3))
        busy = not busy

    def rate(x: float) -> float:
        return next((per_min for until, per_min in switches if x < until), 0.3) / 60.0

    times = _poisson_times(rng, rate, 2.5 / 60.0, end)
    return _build("mmpp", seed, end, ((x, _short_duration(rng), "generate_video") for x in times))


def ramp(seed: int = 103, hours: float = 12.0, peak_per_min: float = 3.0) -> Trace:
    rng = random.Random(seed)
    end = hours * HOUR

    def rate(x: float) -> float:
        return peak_per_min / 60.0 * (1.0 - abs(x - end / 2.0) / (end / 2.0))

    times = _poisson_times(rng, rate, peak_per_min / 60.0, end)
    return _build("ramp", seed, end, ((x, _short_duration(rng), "generate_video") for x in times))


def mixed_long(seed: int = 104, hours: float = 12.0, per_min: float = 1.0, long_share: float = 0.15) -> Trace:
    rng = random.Random(seed)
    end = hours * HOUR
    times = _poisson_times(rng, lambda _x: per_min / 60.0, per_min / 60.0, end)
    items: list[tuple[float, float, str]] = []
    for x in times:
        if rng.random() < long_share:
            duration = min(1500.0, max(600.0, rng.lognormvariate(math.log(900.0), 0.3)))
            items.append((x, duration, "long_video"))
        else:
            items.append((x, _short_duration(rng), "generate_video"))
    return _build("mixed_long", seed, end, items)


def trickle(seed: int = 105, hours: float = 12.0) -> Trace:
    rng = random.Random(seed)
    end = hours * HOUR
    items = [
        (x, _short_duration(rng), "generate_video")
        for x in _poisson_times(rng, lambda _x: 0.2 / 60.0, 0.2 / 60.0, end)
    ]
    t = rng.uniform(0.5, 2.0) * HOUR
    while t < end - HOUR:
        items += [
            (t + rng.uniform(0, 120), _short_duration(rng), "generate_video")
            for _ in range(rng.randint(5, 15))
        ]
        t += rng.uniform(1.0, 3.0) * HOUR
    return _build("trickle", seed, end, items)


SHAPES: dict[str, Callable[..., Trace]] = {
    "steps": steps,
    "mmpp": mmpp,
    "ramp": ramp,
    "mixed_long": mixed_long,
    "trickle": trickle,
}
# The committed shapes again, from seeds the committed files do not use.
OTHER_SEEDS: dict[str, int] = {name: 100 + i for i, name in enumerate(GENERATORS)}


def heldout() -> dict[str, Trace]:
    """Every held-out trace, by name (``shape`` or ``committed-shape@seed``)."""
    found = {name: gen() for name, gen in SHAPES.items()}
    for name, seed in OTHER_SEEDS.items():
        found[f"{name}@{seed}"] = GENERATORS[name](seed=seed)
    return found
