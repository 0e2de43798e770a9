"""Never run away: the spawn breaker and the capacity back-offs, computed from recent boot outcomes.

Where this sits in the pure core: :func:`orchestrator.core.policy.plan` asks this module, each tick, how
far spawning may go; :mod:`orchestrator.core.staffing` obeys the answer. Values in (the snapshot's boot
outcomes, the settings, ``now``), values out: no I/O, no clock.

* **Back-offs, per (GPU type, data center).** Consecutive failed boots or capacity misses of a pair,
  counted back to its latest successful boot, back it off ``SPAWN_BACKOFF_BASE_SEC * 2**(n-1)`` up to
  ``SPAWN_BACKOFF_MAX_SEC`` from the latest. The spawn skips the pairs backing off (``Spawn.avoid``) and
  tries the type in the other data centers of the configured network volumes; a type backing off in
  every one of them (or, when they are unknown, in any) is left out of the priority list, so spawns fall
  through to the next type.
* **The breaker.** After ``MAX_CONSECUTIVE_FAILURES`` failed workers in a row (capacity misses, creations
  refused by the rate limit and boots we cancelled do not count: ``BootOutcome.counts_for_breaker``; a
  worker that failed before completing a task counts, as the database rewrites its outcome; a resume
  that worked, or the activation of a live worker that has completed nothing and is on probation
  (:func:`unproven_workers`) or, after workers died in their first task, still in it
  (:func:`untried_workers`), neither counts nor ends the row), no spawn for
  ``SPAWN_BACKOFF_BASE_SEC * 2**(n - MAX + 1)`` (capped) from the latest failure; after that, half-open:
  one probe worker at a time (booting, or activated since the latest failure and still on probation)
  until a boot succeeds (the worker completes a task, or lives out its probation). After first-task
  deaths (:func:`untried_workers`) a probe alive past its probation in its first task widens the
  allowance instead of closing the breaker: the probes past probation and those in flight may number
  twice the former, so the trial doubles each probation while nothing fails. Healing and termination
  go on meanwhile.
* **Runpod's rate limit.** Creations it refused (``spawn_rate_limited``) hold spawns back for 60 s from
  the newest, doubled with each refusal in a row, at most an hour (:func:`rate_limit_hold`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.core.actions import Backoff
from orchestrator.core.config import Settings
from orchestrator.core.health import reported_failure
from orchestrator.core.observed import BootOutcome, Worker
from orchestrator.core.states import BreakerState, Reason, WorkerState

# Largest exponent used in a back-off (2**30 seconds is far past any cap; avoids huge integers).
_MAX_EXPONENT = 30
# After creations Runpod's rate limit refused, the next waits this long from the newest refusal, doubled
# with each refusal in a row, at most an hour (Runpod's windows are a minute, an hour and a day). Such a
# refusal is no boot failure (neither breaker nor back-off), so without this the policy asked again at
# every tick: a held-back hour window made hundreds of refused rows, and their outcomes pushed the real
# boot failures out of the breaker's window.
RATE_LIMIT_HOLD_BASE_SEC = 60.0
RATE_LIMIT_HOLD_MAX_SEC = 3600.0


# An activated worker that has completed nothing is proven by time after this long alive: a worker that
# dies on its first work does so within minutes of its first heartbeat (a model that does not load, a
# CUDA error), while a healthy one may run a first task of 25 minutes, or find no task at all.
PROBATION_SEC = 600.0


@dataclass(frozen=True)
class Breaker:
    """The breaker as of ``now``: its state, the failures in a row, when the open pause ends, the
    latest failure counted, the workers still on probation (a probe is one of them activated since
    the latest failure), and those alive past it without a completion (each widens half-open)."""

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    until: datetime | None = None
    latest: datetime | None = None
    unproven: frozenset[str] = frozenset()
    untried: frozenset[str] = frozenset()

    def probes_allowed(
        self, workers: Iterable[Worker], booting: int, leaving: Collection[str] = frozenset()
    ) -> int:
        """How many more probes half-open lets start, with ``booting`` workers booting now.

        The probes in flight are the booting workers and those activated since the latest failure still
        on probation; each activated since then that lived out its probation without a completion (an
        image may fail only well into its first task: a model loaded late, a decode that runs out of
        memory) doubles the trial rather than closing the breaker, so such an image costs a few pods
        an interval, not a fleet. A completion closes the breaker. A worker in ``leaving`` (failed this
        tick: its crash is rewritten only in the next snapshot) widens nothing, though a probe on
        probation still holds its place until then."""

        def since(w: Worker) -> bool:
            return w.activated_at is not None and (self.latest is None or w.activated_at > self.latest)

        live = [w for w in workers if since(w)]
        on_probation = sum(1 for w in live if w.id in self.unproven)
        tried = sum(1 for w in live if w.id in self.untried and w.id not in leaving)
        return max(0, max(1, 2 * tried) - tried - on_probation - booting)


def unproven_workers(workers: Iterable[Worker], now: datetime) -> frozenset[str]:
    """Serving workers whose boot is not yet known to have worked: activated less than
    ``PROBATION_SEC`` ago and nothing completed. The real worker's heartbeat guardian beats before the
    worker has loaded anything, so a worker that dies on its first work is activated first (the database
    then rewrites its boot outcome to the failure); until then its activation must not end the breaker's
    count of failures, or each one let the next batch of failing pods through."""
    found = set()
    for w in workers:
        if w.status not in (WorkerState.ACTIVE, WorkerState.DRAINING) or w.last_completion_at is not None:
            continue
        if w.activated_at is not None and (now - w.activated_at).total_seconds() < PROBATION_SEC:
            found.add(w.id)
    return frozenset(found)


# The worker's own word that its process died: the failures a late first-task death leaves, which a
# worker alive past its probation does not answer (untried_workers). The database rewrites them past the
# probation only for a worker that died holding a task (migration 20261215000100).
PROCESS_DEATHS = frozenset({Reason.WORKER_CRASHED.value, Reason.WORKER_ERROR.value})


def untried_workers(
    workers: Iterable[Worker], now: datetime, recent_boots: Iterable[BootOutcome] = ()
) -> frozenset[str]:
    """Serving workers still on the first task they took on activation, past ``PROBATION_SEC``, with
    nothing completed (or whose process was just reported dead), while the breaker's run of failures
    holds a worker whose process died (:data:`PROCESS_DEATHS`) and no worker made since the first such
    death has completed a task.

    An image may fail only well into its first task (a model loaded on first use that does not fit, a
    decode at the end of a long generation that runs out of memory). Taken for proven once past its
    probation, each such probe closed the breaker and let a whole batch of failing pods through; these
    neither end the breaker's count of failures nor close it, and widen half-open instead
    (:meth:`Breaker.probes_allowed`). Where the run holds only failed boots (a check, a start, a
    timeout), a worker that lived out its probation answers them, as before: waiting for a completion
    there slowed a healthy fleet's ramp by a whole first task wherever boots fail now and then. A
    completion proves the image only from a worker made after the first death: an older floor worker
    or a pod resumed from the pool may run the image before a change that broke new pods. A worker
    that lived out its probation idle before its first claim proved its boot as before (an idle floor
    worker given its first task hours later brings no old failures back). A worker whose process dies
    (``worker_crashed``, ``worker_error``) holding a task before completing anything is a failed boot
    whatever its age; the database rewrites its outcome. One whose process dies idle past its probation
    is not, nor one lost with its host or failed for a stuck task then."""
    live = [w for w in workers if w.status in (WorkerState.ACTIVE, WorkerState.DRAINING)]
    found = set()
    for w in live:
        if w.last_completion_at is not None or w.activated_at is None:
            continue
        if reported_failure(w) is not None:
            # Its process died, and the app's heartbeat put its task back already: no proof, and about
            # to be failed (its outcome rewritten in the next snapshot).
            found.add(w.id)
            continue
        if w.running_count == 0 or (now - w.activated_at).total_seconds() < PROBATION_SEC:
            continue  # idle, or on probation (unproven_workers)
        first_claim = w.oldest_running_started_at
        if first_claim is None or (first_claim - w.activated_at).total_seconds() < PROBATION_SEC:
            found.add(w.id)
    if not found:
        return frozenset()
    row = _failure_row(recent_boots, unproven_workers(live, now) | found)
    deaths = [o.at for o in row if o.reason in PROCESS_DEATHS]
    if not deaths:
        return frozenset()
    first_death, newest = min(deaths), max(o.at for o in row)
    if any(
        w.last_completion_at is not None
        and w.last_completion_at > newest
        and w.activated_at is not None
        and w.activated_at > first_death
        for w in live
    ):
        return frozenset()
    return frozenset(found)


def _failure_row(recent_boots: Iterable[BootOutcome], skip: Collection[str]) -> list[BootOutcome]:
    """The failures the breaker counts, newest first, back to the latest success: an ``ok`` outcome
    that is no resume and whose worker is not in ``skip`` (a live worker with nothing to prove yet)."""
    row = []
    for outcome in sorted(recent_boots, key=lambda o: o.at, reverse=True):
        if outcome.ok and (outcome.is_resume or outcome.worker_id in skip):
            continue
        if outcome.ok:
            break
        if outcome.counts_for_breaker:
            row.append(outcome)
    return row


def backoff_seconds(base: float, cap: float, exponent: int) -> float:
    """``base * 2**exponent`` seconds, at most ``cap`` (a negative exponent counts as 0)."""
    return float(min(cap, base * (2 ** max(0, min(exponent, _MAX_EXPONENT)))))


def rate_limit_hold(recent_boots: Iterable[BootOutcome], now: datetime) -> datetime | None:
    """Until when spawns wait after creations refused by Runpod's rate limit (None: they need not).

    The refusals in a row count from the newest outcome back to the first of any other kind (a creation
    or a resume that Runpod answered otherwise: its quota was back)."""
    streak = 0
    latest: datetime | None = None
    for outcome in sorted(recent_boots, key=lambda o: o.at, reverse=True):
        if outcome.reason != Reason.SPAWN_RATE_LIMITED.value:
            break
        streak += 1
        latest = latest or outcome.at
    if latest is None:
        return None
    until = latest + timedelta(
        seconds=backoff_seconds(RATE_LIMIT_HOLD_BASE_SEC, RATE_LIMIT_HOLD_MAX_SEC, streak - 1)
    )
    return until if until > now else None


def breaker(
    recent_boots: Iterable[BootOutcome],
    settings: Settings,
    now: datetime,
    unproven: Collection[str] = frozenset(),
    untried: Collection[str] = frozenset(),
) -> Breaker:
    """The breaker from the boots since the latest success (newest first). A resume that worked is no
    such success: it started a pod made before, with its image, so it says nothing of whether a new
    pod boots; taken as one, each resume of the pool let a batch of new pods that fail their boot
    through. Nor is the activation of a live worker in ``unproven`` or ``untried``
    (:func:`unproven_workers`, :func:`untried_workers`): it has completed nothing yet."""
    row = _failure_row(recent_boots, {*unproven, *untried})
    failures = len(row)
    latest: datetime | None = row[0].at if row else None
    limit = settings.max_consecutive_failures
    if failures < limit or latest is None:
        return Breaker(BreakerState.CLOSED, failures, None, latest, frozenset(unproven), frozenset(untried))
    pause = backoff_seconds(
        settings.spawn_backoff_base_sec, settings.spawn_backoff_max_sec, failures - limit + 1
    )
    until = latest + timedelta(seconds=pause)
    state = BreakerState.OPEN if now < until else BreakerState.HALF_OPEN
    return Breaker(state, failures, until, latest, frozenset(unproven), frozenset(untried))


def backoffs(
    outcomes: Iterable[BootOutcome],
    settings: Settings,
    now: datetime,
    unproven: Collection[str] = frozenset(),
) -> list[Backoff]:
    """The (GPU type, data center) pairs backing off at ``now``, sorted by type then data center.

    ``outcomes``: the recent boots and the capacity misses of the live workers. Among outcomes at the
    same time, the order given is kept (the sort is stable).
    """
    ordered = sorted(outcomes, key=lambda o: (o.at, o.ok, o.worker_id), reverse=True)
    done: set[tuple[str, str | None]] = set()
    count: dict[tuple[str, str | None], int] = {}
    latest: dict[tuple[str, str | None], datetime] = {}
    for outcome in ordered:
        if outcome.gpu_type is None:
            continue
        key = (outcome.gpu_type, outcome.data_center)
        if key in done:
            continue
        if outcome.ok and (outcome.is_resume or outcome.worker_id in unproven):
            continue  # as for the breaker: not yet a proof that a new pod of this type works
        if outcome.ok:
            done.add(key)
        elif outcome.counts_for_backoff:
            count[key] = count.get(key, 0) + 1
            latest.setdefault(key, outcome.at)
    result = []
    for key in sorted(count, key=lambda k: (k[0], k[1] or "")):
        pause = backoff_seconds(
            settings.spawn_backoff_base_sec, settings.spawn_backoff_max_sec, count[key] - 1
        )
        until = latest[key] + timedelta(seconds=pause)
        if now < until:
            result.append(Backoff(gpu_type=key[0], data_center=key[1], failures=count[key], until=until))
    return result


def backed_off_everywhere(gpu_type: str, active: Sequence[Backoff], data_centers: Sequence[str]) -> bool:
    """Whether no data center is left for this GPU type. With the spawn's data centers known (one per
    configured network volume), a type is out only when each of them backs it off; without them (no
    volume, or the catalog unknown), any back-off of the type keeps it out (the safe side: the provider
    would choose the data center, perhaps the failing one)."""
    where = {b.data_center for b in active if b.gpu_type == gpu_type}
    if not where:
        return False
    if None in where or not data_centers:
        return True
    return set(data_centers) <= where


def avoided_pairs(active: Iterable[Backoff]) -> tuple[tuple[str, str | None], ...]:
    """The (GPU type, data center) pairs a spawn skips: those backing off in one known data center (the
    type may still be tried elsewhere)."""
    return tuple(sorted({(b.gpu_type, b.data_center) for b in active if b.data_center is not None}))
