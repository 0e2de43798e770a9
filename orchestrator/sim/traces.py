"""Task arrival traces for the discrete-event simulator (issue 7), generated from a seed and saved as CSV.

Where this sits: ``orchestrator.sim.vtime`` replays a trace against a policy in virtual time;
``bench/policy.py`` generates the five named traces below into ``bench/traces/`` (so a result can be
reproduced from the committed file, not only from the seed) and runs every policy on each. A trace is
just arrivals: when each task is queued, how long it runs on a GPU, and its type (types containing
``_orchestrator`` are long-running parents, exempt from the stuck-task timeout, as in production).

The shapes (all 1 task = 1 GPU at a time, as Headless-Wan2GP runs them):

* ``steady``: Poisson arrivals at a constant rate, 1-3 minute tasks.
* ``bursty``: on/off: quiet stretches broken by bursts of a few dozen tasks in a few minutes.
* ``diurnal``: a day whose arrival rate follows a daily curve (near zero at night, peak mid-day).
* ``spike``: hours of nothing, then a large batch at once, twice.
* ``heavy_tail``: steady arrivals where most tasks take 1-3 minutes and some are 20-minute
  ``*_orchestrator`` parents.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

HOUR = 3600.0


@dataclass(frozen=True)
class TraceTask:
    """One task of a trace: queued ``at`` seconds after the trace starts, runs ``duration`` seconds."""

    id: str
    at: float
    duration: float
    task_type: str = "generate_video"


@dataclass(frozen=True)
class Trace:
    name: str
    tasks: tuple[TraceTask, ...]
    duration: float  # seconds of virtual time the trace covers (arrivals all fall inside it)
    seed: int = 0

    @property
    def gpu_seconds(self) -> float:
        return sum(t.duration for t in self.tasks)


def _short_duration(rng: random.Random) -> float:
    # "most tasks 1-3 minutes": a lognormal centred near 2 minutes, clipped to [60, 180] s.
    return min(180.0, max(60.0, rng.lognormvariate(math.log(110.0), 0.3)))


def _poisson_times(rng: random.Random, rate_at: Callable[[float], float], peak: float, end: float) -> list[float]:
    """Arrival times of an inhomogeneous Poisson process (thinning), rates in tasks per second."""
    times: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= end:
            return times
        if rng.random() * peak <= rate_at(t):
            times.append(t)


def _build(name: str, seed: int, duration: float, items: Iterable[tuple[float, float, str]]) -> Trace:
    ordered = sorted(items)
    tasks = tuple(
        TraceTask(id=f"{name[:2]}{i:06d}", at=round(at, 3), duration=round(dur, 3), task_type=kind)
        for i, (at, dur, kind) in enumerate(ordered)
    )
    return Trace(name=name, tasks=tasks, duration=duration, seed=seed)


def steady(seed: int = 1, hours: float = 12.0, per_min: float = 1.5) -> Trace:
    rng = random.Random(seed)
    end = hours * HOUR
    times = _poisson_times(rng, lambda _t: per_min / 60.0, per_min / 60.0, end)
    return _build("steady", seed, end, ((t, _short_duration(rng), "generate_video") for t in times))


def bursty(seed: int = 2, hours: float = 12.0) -> Trace:
    rng = random.Random(seed)
    end = hours * HOUR
    items: list[tuple[float, float, str]] = []
    t = rng.uniform(600, 1800)
    while t < end - 1800:
        size = rng.randint(15, 45)
        spread = rng.uniform(60, 300)  # the burst arrives within a few minutes
        items.extend((t + rng.uniform(0, spread), _short_duration(rng), "generate_video") for _ in range(size))
        t += spread + rng.expovariate(1 / 2700.0) + 600  # then quiet, 10 min at least, 55 min mean
    return _build("bursty", seed, end, items)


def diurnal(seed: int = 3, hours: float = 24.0, peak_per_min: float = 3.0) -> Trace:
    rng = random.Random(seed)
    end = hours * HOUR

    def rate(t: float) -> float:
        # Peak at 14:00, trough at 02:00; the night floor is 3% of the peak.
        phase = 2 * math.pi * ((t / HOUR - 14.0) / 24.0)
        return peak_per_min / 60.0 * (0.03 + 0.97 * (0.5 + 0.5 * math.cos(phase)) ** 2)

    times = _poisson_times(rng, rate, peak_per_min / 60.0, end)
    return _build("diurnal", seed, end, ((t, _short_duration(rng), "generate_video") for t in times))


def spike(seed: int = 4, idle_hours: float = 4.0, size: int = 60) -> Trace:
    rng = random.Random(seed)
    first = idle_hours * HOUR
    second = first + 3 * HOUR
    end = second + 2 * HOUR
    items = [(first + rng.uniform(0, 30), _short_duration(rng), "generate_video") for _ in range(size)]
    items += [(second + rng.uniform(0, 30), _short_duration(rng), "generate_video") for _ in range(size // 2)]
    return _build("spike", seed, end, items)


def heavy_tail(seed: int = 5, hours: float = 12.0, per_min: float = 1.0, parent_share: float = 0.12) -> Trace:
    rng = random.Random(seed)
    end = hours * HOUR
    times = _poisson_times(rng, lambda _t: per_min / 60.0, per_min / 60.0, end)
    items: list[tuple[float, float, str]] = []
    for t in times:
        if rng.random() < parent_share:
            items.append((t, rng.uniform(1080, 1320), "travel_orchestrator"))  # ~20 min parents
        else:
            items.append((t, _short_duration(rng), "generate_video"))
    return _build("heavy_tail", seed, end, items)


GENERATORS: dict[str, Callable[..., Trace]] = {
    "steady": steady,
    "bursty": bursty,
    "diurnal": diurnal,
    "spike": spike,
    "heavy_tail": heavy_tail,
}


def generate(name: str, seed: int | None = None) -> Trace:
    gen = GENERATORS[name]
    return gen() if seed is None else gen(seed=seed)


# --- files -----------------------------------------------------------------------------------------

_FIELDS = ("id", "at", "duration", "task_type")


def save(trace: Trace, path: Path) -> None:
    """CSV with a comment header carrying the name, seed and duration (small: ~40 bytes a task)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        fh.write(f"# trace={trace.name} seed={trace.seed} duration={trace.duration:g}\n")
        writer = csv.writer(fh)
        writer.writerow(_FIELDS)
        for t in trace.tasks:
            writer.writerow((t.id, f"{t.at:.3f}", f"{t.duration:.3f}", t.task_type))


def load(path: Path) -> Trace:
    with path.open(newline="") as fh:
        header = fh.readline().lstrip("#").split()
        meta = dict(item.split("=", 1) for item in header)
        reader = csv.DictReader(fh)
        tasks = tuple(
            TraceTask(id=row["id"], at=float(row["at"]), duration=float(row["duration"]), task_type=row["task_type"])
            for row in reader
        )
    return Trace(name=meta["trace"], tasks=tasks, duration=float(meta["duration"]), seed=int(meta.get("seed", 0)))
