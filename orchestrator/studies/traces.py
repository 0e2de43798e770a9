"""Task arrival traces for the discrete-event simulator, generated from a seed and saved as CSV.

Where this sits: ``orchestrator.studies.simulation`` replays a trace against a policy in virtual time;
``bench/policy.py`` generates the five named traces below into ``bench/traces/`` (so a result can be
reproduced from the committed file, not only from the seed) and runs every policy on each;
``orchestrator sim run`` (``orchestrator.studies.run``) replays a named trace or an operator's own CSV
export, which :func:`load` checks row by row before anything runs. A trace is
just arrivals: when each task is queued, how long it runs on a GPU, and its type (types containing
``_orchestrator`` are long-running parents, exempt from the stuck-task timeout, as in production).

The shapes (all 1 task = 1 GPU at a time, as Headless-Wan2GP runs them):

* ``steady``: Poisson arrivals at a constant rate, 1-3 minute tasks.
* ``bursty``: on/off: quiet stretches broken by bursts of a few dozen tasks in a few minutes.
* ``diurnal``: a day whose arrival rate follows a daily curve (near zero at night, peak mid-day).
* ``spike``: hours of nothing, then a large batch at once, twice.
* ``heavy_tail``: steady arrivals where most tasks take 1-3 minutes and some are 20-minute
  ``*_orchestrator`` parents.
* ``long_tasks``: 64 tasks of 10-25 minutes (a long video, a LoRA training: ordinary types, not
  ``_orchestrator`` parents) at a low steady rate, 5 an hour: the traffic a fixed 20-minute stuck-task
  timeout dead-letters and a task-count threshold leaves waiting.
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.errors import ConfigError

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


def _poisson_times(
    rng: random.Random, rate_at: Callable[[float], float], peak: float, end: float
) -> list[float]:
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
        items.extend(
            (t + rng.uniform(0, spread), _short_duration(rng), "generate_video") for _ in range(size)
        )
        t += spread + rng.expovariate(1 / 2700.0) + 600  # then quiet, 10 min at least, 55 min mean
    return _build("bursty", seed, end, items)


def diurnal_rate(t: float, peak_per_min: float = 3.0) -> float:
    """The diurnal trace's arrival rate (tasks per second) at ``t``: peak at 14:00, trough at 02:00; the
    night floor is 3% of the peak."""
    phase = 2 * math.pi * ((t / HOUR - 14.0) / 24.0)
    return peak_per_min / 60.0 * (0.03 + 0.97 * (0.5 + 0.5 * math.cos(phase)) ** 2)


def diurnal(seed: int = 3, hours: float = 24.0, peak_per_min: float = 3.0) -> Trace:
    rng = random.Random(seed)
    end = hours * HOUR
    times = _poisson_times(rng, lambda t: diurnal_rate(t, peak_per_min), peak_per_min / 60.0, end)
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


def long_tasks(seed: int = 6, count: int = 64, per_hour: float = 5.0) -> Trace:
    rng = random.Random(seed)
    items: list[tuple[float, float, str]] = []
    t = 0.0
    for _ in range(count):
        t += rng.expovariate(per_hour / HOUR)
        if rng.random() < 0.6:
            # a long video: ~13 minutes, 10-25
            duration = min(1500.0, max(600.0, rng.lognormvariate(math.log(780.0), 0.3)))
            items.append((t, duration, "long_video"))
        else:
            # a LoRA training: ~19 minutes, 15-25
            duration = min(1500.0, max(900.0, rng.lognormvariate(math.log(1150.0), 0.2)))
            items.append((t, duration, "lora_training"))
    end = math.ceil((t + 2 * HOUR) / HOUR) * HOUR  # room for the last tasks to finish
    return _build("long_tasks", seed, end, items)


GENERATORS: dict[str, Callable[..., Trace]] = {
    "steady": steady,
    "bursty": bursty,
    "diurnal": diurnal,
    "spike": spike,
    "heavy_tail": heavy_tail,
    "long_tasks": long_tasks,
}


# The rate each generator draws its Poisson arrivals from at its default parameters (tasks per second),
# for the generators that have one (bursty and spike place their batches at random): what a perfect
# estimate of the arrival rate would read (``bench/frontier.py``'s exact-rate family).
ARRIVAL_RATES: dict[str, Callable[[float], float]] = {
    "steady": lambda _t: 1.5 / 60.0,
    "diurnal": diurnal_rate,
    "heavy_tail": lambda _t: 1.0 / 60.0,
    "long_tasks": lambda _t: 5.0 / HOUR,
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


# A file with thousands of bad rows is one mistake repeated: show enough to see it, then count the rest.
MAX_PROBLEMS_SHOWN = 20
REQUIRED_COLUMNS = ("at", "duration")
DEFAULT_TASK_TYPE = "generate_video"


def _number(text: str | None, column: str) -> tuple[float | None, str | None]:
    """A finite, non-negative number of seconds, or the problem with it."""
    raw = (text or "").strip()
    try:
        value = float(raw)
    except ValueError:
        return None, f"{column} {raw!r}: expected a number of seconds"
    if not math.isfinite(value):
        return None, f"{column} {raw!r}: expected a finite number of seconds"
    if value < 0:
        return None, f"{column} {raw!r}: expected a number >= 0"
    return value, None


def _meta(line: str) -> tuple[dict[str, str], list[str]]:
    """The ``# trace=NAME seed=N duration=SECONDS`` comment: known keys checked, other words ignored."""
    meta = dict(item.split("=", 1) for item in line.lstrip("#").split() if "=" in item)
    problems: list[str] = []
    if "seed" in meta:
        try:
            int(meta["seed"])
        except ValueError:
            problems.append(f"seed={meta['seed']!r}: expected a whole number")
    if "duration" in meta:
        value, problem = _number(meta["duration"], "duration")
        if problem:
            problems.append(problem)
        elif value == 0:
            problems.append("duration=0: expected the seconds the trace covers, > 0")
    return meta, problems


def load(path: Path) -> Trace:
    """Read a trace CSV, checking every row; raise ConfigError listing each problem as ``file:line: ...``.

    The committed files (``save``) start with a ``# trace=... seed=... duration=...`` comment; a
    file exported from a database may leave it out, and ``id`` and ``task_type`` out too. Then the
    name is the file's stem, the duration runs to the end of the last task, ids are numbered and
    the type is ``generate_video``. Rows need not be sorted: arrivals are ordered by ``at``.
    """
    path = Path(path)
    try:
        # utf-8-sig: spreadsheet and SQL-editor exports often start with a byte-order mark.
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the trace file: {exc}"]) from exc
    lines = text.splitlines(keepends=True)
    problems: list[str] = []
    meta: dict[str, str] = {}
    skip = 0
    while skip < len(lines) and (not lines[skip].strip() or lines[skip].lstrip().startswith("#")):
        if lines[skip].lstrip().startswith("#") and not meta:
            meta, found = _meta(lines[skip])
            problems += [f"{path}:{skip + 1}: {p}" for p in found]
        skip += 1
    reader = csv.reader(io.StringIO("".join(lines[skip:])))
    header: list[str] | None = None
    rows: list[tuple[float, float, str, str]] = []  # (at, duration, id, task_type)
    seen: dict[str, int] = {}
    for record in reader:
        line = skip + reader.line_num
        if not record or not any(cell.strip() for cell in record) or record[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in record]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                problems.append(
                    f"{path}:{line}: missing column(s) {', '.join(missing)}; the header is "
                    f"{','.join(header)!r}, expected id,at,duration,task_type (id and task_type optional)"
                )
                break
            continue
        if len(record) != len(header):
            problems.append(f"{path}:{line}: {len(record)} fields, expected {len(header)} as in the header")
            continue
        cells = dict(zip(header, record, strict=True))
        at_value, at_problem = _number(cells["at"], "at")
        dur_value, dur_problem = _number(cells["duration"], "duration")
        found = [p for p in (at_problem, dur_problem) if p]
        task_id = cells["id"].strip() if "id" in cells else f"line{line}"
        if "id" in cells:
            if not task_id:
                found.append("empty id")
            elif task_id in seen:
                found.append(f"id {task_id!r} already on line {seen[task_id]}")
            else:
                seen[task_id] = line
        task_type = (cells.get("task_type") or "").strip() or DEFAULT_TASK_TYPE
        if found:
            problems += [f"{path}:{line}: {p}" for p in found]
            continue
        assert at_value is not None and dur_value is not None
        rows.append((at_value, dur_value, task_id, task_type))
    if header is None and not problems:
        problems.append(f"{path}: no header row; expected id,at,duration,task_type and one row per task")
    elif not rows and not problems:
        problems.append(f"{path}: no tasks after the header")
    if not problems and "duration" in meta:
        last = max(at for at, _dur, _id, _type in rows)
        if last >= float(meta["duration"]):
            problems.append(
                f"{path}:1: duration={meta['duration']} but a task arrives at {last:g} s; "
                "expected every arrival inside the trace"
            )
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        if len(problems) > len(shown):
            shown.append(f"{path}: ... and {len(problems) - len(shown)} more problem(s)")
        raise ConfigError(shown)
    rows.sort(key=lambda r: r[0])  # stable: equal arrivals keep the file's order
    tasks = tuple(TraceTask(id=i, at=a, duration=d, task_type=k) for a, d, i, k in rows)
    duration = float(meta["duration"]) if "duration" in meta else max(t.at + t.duration for t in tasks)
    return Trace(
        name=meta.get("trace") or path.stem, tasks=tasks, duration=duration, seed=int(meta.get("seed", 0))
    )
