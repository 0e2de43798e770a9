"""What the snapshot says about the work itself: running tasks, task durations, arrivals, queued types.

Where this sits in the pure core: :meth:`orchestrator.core.observed.Snapshot.from_json` parses these parts
of ``orch_snapshot``'s answer with the functions below; the wait target's queueing model
(:mod:`orchestrator.core.sizing`) and the stuck-task check (:mod:`orchestrator.core.health`) read them.
Every part is optional: a database without these fields (before the migration that adds them) parses as
empty, and the policy then falls back on the settings alone. One malformed item is skipped and reported,
never fatal. No I/O.

The contract (``orch_snapshot``):

* ``workers[].running_tasks``: ``[{"id", "task_type", "started_at", "children_live",
  "last_child_at"}]``, the same rows as ``running_task_ids``; for a parent, how many of its children
  are Queued or In Progress and when the newest of them was created (null for other tasks);
* ``queue.claimable_by_type``: ``[{"task_type", "count"}]``, claimable queued tasks per type;
* ``task_stats``: ``{"window_sec": W, "types": [{"task_type", "completions", "mean_sec", "stddev_sec",
  "p50_sec", "p95_sec", "p99_sec", "max_sec"}]}`` over the tasks completed within the last W seconds;
* ``arrivals``: ``[{"window_sec": 600, "count": n}, {"window_sec": 3600, "count": m}]``, tasks created
  in each window ending now (any status).

:func:`arrival_rate` turns the arrival counts into the rate the wait target sizes for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.core.parsing import as_int, as_utc, float_or_none, str_or_none, ts_or_none

# Task types whose name contains this are long-running parents (``travel_orchestrator``): exempt from the
# stuck-task check, as the SQL's ``oldest_stuckable_started_at`` exempts them.
PARENT_MARK = "_orchestrator"
# Figures past these are malformed, not traffic: a duration of more than a year, or more arrivals in a
# window than the snapshot ever counts (it stops at 20,000). Squared in the sizing's fits, values like
# 1e160 overflowed and stopped every tick.
MAX_TASK_SEC = 365 * 86400.0
MAX_ARRIVALS = 10_000_000


@dataclass(frozen=True)
class RunningTask:
    """One In Progress task of a worker: its type and since when it runs; for a parent, its unfinished
    children (None: not said) and when the newest of them was created."""

    id: str
    task_type: str
    started_at: datetime | None = None
    children_live: int | None = None
    last_child_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("started_at", "last_child_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                object.__setattr__(self, name, as_utc(value))

    @property
    def is_parent(self) -> bool:
        return PARENT_MARK in self.task_type

    @property
    def waiting(self) -> bool:
        """A parent known to wait on children: not in its own run, nor waiting for its worker's re-run."""
        return self.is_parent and bool(self.children_live)

    @classmethod
    def from_json(cls, row: Any) -> RunningTask:
        if not isinstance(row, Mapping):
            raise ValueError("running task is not an object")
        task_id = str_or_none(row.get("id"))
        if task_id is None:
            raise ValueError("running task without an id")
        live = row.get("children_live")
        if live is not None and (isinstance(live, bool) or not isinstance(live, int) or live < 0):
            raise ValueError(f"children_live is not a count: {str(live)[:40]!r}")
        return cls(
            id=task_id,
            task_type=str(row.get("task_type") or ""),
            started_at=ts_or_none(row.get("started_at")),
            children_live=live,
            last_child_at=ts_or_none(row.get("last_child_at")),
        )


@dataclass(frozen=True)
class TaskStats:
    """The durations (seconds, claimed to completed) of one task type's recent completions."""

    task_type: str
    completions: int
    mean_sec: float
    stddev_sec: float = 0.0
    p50_sec: float | None = None
    p95_sec: float | None = None
    p99_sec: float | None = None
    max_sec: float | None = None

    @classmethod
    def from_json(cls, row: Any) -> TaskStats:
        if not isinstance(row, Mapping):
            raise ValueError("task stats row is not an object")
        task_type = str_or_none(row.get("task_type"))
        if task_type is None:
            raise ValueError("task stats row without a task_type")
        completions = as_int(row.get("completions"))
        mean = float_or_none(row.get("mean_sec"))
        if completions <= 0 or mean is None or not 0 <= mean <= MAX_TASK_SEC:
            raise ValueError(f"task stats of {task_type!r}: no usable completions or mean")

        def seconds(key: str) -> float | None:
            value = float_or_none(row.get(key))
            return value if value is not None and 0 <= value <= MAX_TASK_SEC else None

        return cls(
            task_type=task_type,
            completions=completions,
            mean_sec=mean,
            stddev_sec=seconds("stddev_sec") or 0.0,
            p50_sec=seconds("p50_sec"),
            p95_sec=seconds("p95_sec"),
            p99_sec=seconds("p99_sec"),
            max_sec=seconds("max_sec"),
        )


def parse_running_tasks(value: Any, worker_id: str, problems: list[str] | None) -> tuple[RunningTask, ...]:
    """``workers[].running_tasks``; absent reads as none."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        if problems is not None:
            problems.append(f"worker {worker_id}: running_tasks is not a list: read as none")
        return ()
    found: list[RunningTask] = []
    for item in value:
        try:
            found.append(RunningTask.from_json(item))
        except (TypeError, ValueError) as exc:
            if problems is not None:
                problems.append(f"worker {worker_id}: running task skipped: {exc}")
    return tuple(found)


def parse_claimable_by_type(value: Any, problems: list[str]) -> dict[str, int]:
    """``queue.claimable_by_type``: ``{task_type: count}`` (counts above zero only)."""
    if value is None:
        return {}
    if not isinstance(value, list | tuple):
        problems.append("snapshot.queue.claimable_by_type is not a list: read as none")
        return {}
    found: dict[str, int] = {}
    for item in value:
        try:
            if not isinstance(item, Mapping):
                raise ValueError("not an object")
            task_type = str(item.get("task_type") or "")
            count = as_int(item.get("count"))
        except (TypeError, ValueError) as exc:
            problems.append(f"snapshot.queue.claimable_by_type: skipped {str(item)[:80]}: {exc}")
            continue
        if count > 0:
            found[task_type] = found.get(task_type, 0) + count
    return found


def parse_task_stats(value: Any, problems: list[str]) -> tuple[float | None, dict[str, TaskStats]]:
    """``task_stats``: (its window in seconds, ``{task_type: TaskStats}``)."""
    if value is None:
        return None, {}
    if not isinstance(value, Mapping):
        problems.append("snapshot.task_stats is not an object: read as none")
        return None, {}
    window = float_or_none(value.get("window_sec"))
    rows = value.get("types") or []
    if not isinstance(rows, list | tuple):
        problems.append("snapshot.task_stats.types is not a list: read as none")
        return window, {}
    found: dict[str, TaskStats] = {}
    for index, row in enumerate(rows):
        try:
            stats = TaskStats.from_json(row)
        except (TypeError, ValueError) as exc:
            problems.append(f"snapshot.task_stats.types[{index}] skipped: {exc}")
            continue
        found[stats.task_type] = stats
    return window, found


def parse_arrivals(value: Any, problems: list[str]) -> tuple[tuple[float, int], ...]:
    """``arrivals``: ``((window_sec, count), ...)``, shortest window first."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        problems.append("snapshot.arrivals is not a list: read as none")
        return ()
    found: dict[float, int] = {}
    for item in value:
        try:
            if not isinstance(item, Mapping):
                raise ValueError("not an object")
            window = float_or_none(item.get("window_sec"))
            count = as_int(item.get("count"))
            if window is None or not 0 < window <= MAX_TASK_SEC or not 0 <= count <= MAX_ARRIVALS:
                raise ValueError("expected a positive window and a count >= 0 in range")
        except (TypeError, ValueError) as exc:
            problems.append(f"snapshot.arrivals: skipped {str(item)[:80]}: {exc}")
            continue
        found[window] = count
    return tuple(sorted(found.items()))


# --- the arrival rate the wait target sizes for (orchestrator.core.sizing) ---------------------------

# The arrival windows the rate is estimated over (the snapshot returns counts for these).
RATE_WINDOWS: tuple[float, ...] = (600.0, 3600.0)
RATE_CAP_SEC: tuple[float, ...] = (600.0,)
RATE_CAP_SLACK = 0.0
RATE_SHIFT_SDS = 1.0


def arrival_rate(arrivals: Sequence[tuple[float, int]], sds: float = 0.0) -> float:
    """Tasks per second the next minutes will likely bring, ``sds`` standard deviations high.

    The counts of the snapshot's windows (``RATE_WINDOWS``: the last 10 minutes and the last hour)
    pooled over their summed lengths: a task of the last 10 minutes counts twice, one of the last hour
    once, so the estimate leans on recent traffic, moves smoothly (no window switching on one arrival)
    and at a low rate does not read zero. Two corrections from the short window alone:

    * a level shift up (traffic that started or grew within the hour, which the hour's count dilutes):
      when the last 10 minutes' count, ``RATE_SHIFT_SDS`` Poisson standard deviations low, is still
      above the pooled rate, it is the estimate;
    * a burst that is over: the estimate is capped by the last 10 minutes' count (plus
      ``RATE_CAP_SLACK``): its tasks are queued or running, and headroom for more would only idle.

    ``sds`` adds that many Poisson standard deviations: the scale-down side sizes with it, so that the
    count's noise around one threshold does not stop and resume a worker with every arrival.
    """
    by_window = dict(arrivals)

    def high(count: float, window: float, z: float = sds) -> float:
        return max(0.0, count + z * math.sqrt(max(count, 0.0))) / window

    known = [w for w in RATE_WINDOWS if w in by_window] or sorted(by_window)
    if not known:
        return 0.0
    rate = high(float(sum(by_window[w] for w in known)), float(sum(known)))
    short = min(by_window)
    if short < max(by_window):
        rate = max(rate, high(float(by_window[short]), short, sds - RATE_SHIFT_SDS))
    caps = [high(by_window[w] + RATE_CAP_SLACK, w) for w in RATE_CAP_SEC if w in by_window]
    if caps:
        rate = min(rate, *caps)
    return rate
