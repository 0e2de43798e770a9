"""The queueing model behind ``WAIT_TARGET_SEC``: how many workers the next minutes need, and at what cost.

Where this sits in the pure core: a helper of :func:`orchestrator.core.policy.plan` (the "decide" step),
called through :mod:`orchestrator.core.staffing`, with no I/O, no clock and no randomness. ``plan()``
hands it what the snapshot says (the recent arrival counts, each task type's recent durations, the
running and queued tasks, the booting and pooled workers, the recent boot and resume times), never
anything about the future, and gets back the number of workers to have and to keep, with the figures
that led to it (``Plan.sizing``: the tick summary and ``orchestrator plan`` show them).

The model, in the words of ``docs/policy.md`` ("The wait target"):

* **What "late" means.** A task is late when it waits more than ``WAIT_TARGET_SEC`` (T) from queued to
  claimed. With one task per worker and claims in queue order, a task arriving at time t is late exactly
  when, at t + T, at least as many tasks ahead of it are still in the system (running, or queued ahead
  of it) as there are workers serving by then. Every term of that count is known or estimated from
  evidence: each running task is still running with the probability its type's duration distribution
  gives, conditioned on how long it has run; each queued task is scheduled on the earliest free worker
  (list scheduling on expected durations) and is still there with the probability its type gives; the
  tasks that arrive between now and t form a Poisson stream at the recent rate, each still in the
  system at t + T with the probability its duration exceeds what remains (an M/G/infinity count, which
  ignores the queueing among new arrivals). Workers not yet serving
  count as absent with the probability that their boot (or resume, or a spawn after a failed resume)
  has not finished by t + T, from the distribution of recent boot and resume times. So
  ``P(late at t) = P(Y >= n)`` for a Poisson-binomial ``Y``, computed exactly by convolution.
* **The transient, and the lead time.** Capacity asked for now arrives after a lead time L (a resume
  when the pool has a pod, with the chance it fails and a spawn follows; else a boot). Adding is judged
  for the arrivals after L (at L + ``ADD_AT``, counting only the arrivals of the last reaction time
  before then: older ones are the fleet's state by then, which later ticks answer); keeping is judged
  for the arrivals of [0, L] with the fleet as it is (a worker let go now cannot be back sooner), and
  that same "need now" is also asked for while tasks wait that no idle worker will take (the fleet is
  short now, and a worker that comes at L still shortens the shortage). Scale-down sizes for a rate
  ``KEEP_RATE_SDS`` standard deviations high: a band between adding and letting go. A burst is in the
  queue, so it is seen at once and sized by its work (list scheduling), not by its count; the in-flight
  boots are in the count with their chance of being ready.
* **At least cost.** A worker costs its GPU-seconds; ``lambda * P_late(n)`` tasks a second are late
  with n workers, each worth ``LATE_TASK_COST_GPU_SEC``. Between the busy workers and the fewest that
  meet the target (``P_late <= EPSILON``) the model takes the count of least total cost, searching the
  whole band (far below the load one more worker alone saves almost nothing). At a low arrival rate a
  spare worker saves too few tasks to be worth it, and tasks wait for a resume or boot instead: that is
  where a fleet-wide p95 is cheapest to spend (a constant shadow price per late task is what minimises
  cost under a bound on the share of late tasks).
* **The queue.** Queued tasks that would start later than a new worker could start them (lead plus T)
  each justify one more worker: sizing by queued work, since a queue of short tasks behind workers
  about to finish needs none, and one long task needs one.

The arrival rate: :func:`arrival_rate` (the last 10 minutes and the last hour pooled, following a level
shift up at once and forgetting an ended burst). Releasing: an idle worker above the keep goes once it has
been idle ``RELEASE_FACTOR`` times what getting one back would bill (a resume when the pool has room).

Distributions: each task type's durations are fitted as a lognormal from the snapshot's mean and
standard deviation of its recent completions (a type with fewer than ``MIN_SAMPLES`` completions uses
the mixture of the known ones, or a wide prior); boot and resume times are the recent outcomes'
empirical distribution mixed with a prior that keeps a handful of pseudo-samples (so one lucky boot
does not make the model believe every boot takes 30 s).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from orchestrator.core.evidence import PARENT_MARK, TaskStats
from orchestrator.core.evidence import arrival_rate as arrival_rate
from orchestrator.core.observed import BootOutcome

# A type needs this many completions before its own fit is trusted.
MIN_SAMPLES = 5
# Prior for a task type nothing is known about: lognormal, mean 120 s, coefficient of variation 1.
PRIOR_TASK_MEAN_SEC = 120.0
PRIOR_TASK_CV = 1.0
# A parent (``*_orchestrator``) holds its worker only while it creates its children, a few database
# calls (Reigh-Worker's orchestrator handlers); then the worker claims on. Its recorded duration is its
# whole chain's, In Progress until the app completes it with its last child, and that work arrives again
# as the children themselves: fitted from it, each parent counted its chain twice.
PARENT_RUN_SEC = 10.0
# Priors for lead times (seconds from the request to a worker serving), as pseudo-samples: a spawn
# (60% of hosts have the image cached, ~30 s, 40% pull it, ~165 s; then ~30 s of checks, start and
# first heartbeat, as users measure Runpod) and a resume (cached image, ~30 s, plus the same ~30 s).
PRIOR_SPAWN_SEC: tuple[float, ...] = (60.0, 65.0, 70.0, 75.0, 80.0, 90.0, 180.0, 195.0, 210.0, 240.0)
PRIOR_RESUME_SEC: tuple[float, ...] = (50.0, 55.0, 60.0, 65.0, 75.0)
# The prior share of resumes that fail (the host's GPUs taken), as pseudo-outcomes: 1 of 4.
PRIOR_RESUME_FAILURES = (1, 4)
# Seconds a failed resume takes to be known (the start call's answer: refused, or started without a
# GPU) and the replacement spawn asked for: the next tick.
RESUME_FAILURE_DETECT_SEC = 30.0
# What a late task (one that waits past WAIT_TARGET_SEC) is worth, in idle GPU-seconds: the model adds a
# worker only while the late tasks it saves, at this price, outweigh what it bills. At a low arrival rate
# an idle worker saves too few tasks, and tasks wait for a resume or a boot instead.
LATE_TASK_COST_GPU_SEC = 1500.0
# The queueing model's bound on the chance that an arrival is late, per moment. Not the p95's 5%: the
# model answers a late moment at once when tasks wait (the need "now", below), so the bound for the
# steady state can be looser; chosen on the policy benchmark (docs/policy.md, "The wait target").
EPSILON = 0.08
# Scale-down sizes for an arrival rate this many Poisson standard deviations high: a band of about one
# worker between adding and letting go, so that the count's noise does not stop and resume a worker
# with every arrival.
KEEP_RATE_SDS = 1.0
# When, after the lead time, an added worker's worth is judged (P_late averaged over these).
ADD_AT: tuple[float, ...] = (600.0,)
# A surplus worker goes once idle this many times what getting one back would bill (ski rental).
RELEASE_FACTOR = 1.0
# Above this many workers the late count's tail is taken as normal (see _poisson_binomial_tail).
EXACT_UP_TO = 64
# Least-cost search: counts tried in one pass (a fleet whose band is wider is searched coarse, then fine).
NEED_SCAN = 40
# At most this many queued tasks are list-scheduled one by one; the rest count as waiting (certain).
MAX_SCHEDULED = 400


# --- distributions ---------------------------------------------------------------------------------


def _phi(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@dataclass(frozen=True)
class Durations:
    """A lognormal fitted to a mean and a standard deviation (seconds)."""

    mean: float
    mu: float
    sigma: float

    @classmethod
    def fit(cls, mean: float, std: float) -> Durations:
        mean = max(1.0, float(mean))
        cv2 = (max(0.0, float(std)) / mean) ** 2
        sigma2 = math.log1p(max(cv2, 0.0025))  # never a spike: a CV of at least 5%
        return cls(mean=mean, mu=math.log(mean) - sigma2 / 2.0, sigma=math.sqrt(sigma2))

    def survival(self, u: float) -> float:
        """P(S > u)."""
        if u <= 0:
            return 1.0
        return 1.0 - _phi((math.log(u) - self.mu) / self.sigma)

    def partial(self, x: float) -> float:
        """E[min(S, x)] = the integral of P(S > u) from 0 to x."""
        if x <= 0:
            return 0.0
        z = (math.log(x) - self.mu) / self.sigma
        return self.mean * _phi(z - self.sigma) + x * (1.0 - _phi(z))

    def still_running(self, elapsed: float, more: float) -> float:
        """P(S > elapsed + more | S > elapsed)."""
        alive = self.survival(elapsed)
        if alive <= 1e-12:
            # Past anything the fit expects: it runs on (stuck-ness is the health checks' business).
            return 1.0
        return min(1.0, self.survival(elapsed + more) / alive)

    def residual(self, elapsed: float) -> float:
        """E[S - elapsed | S > elapsed]."""
        alive = self.survival(elapsed)
        if alive <= 1e-9:
            return self.mean
        return max(1.0, (self.mean - self.partial(elapsed)) / alive)

    def quantile(self, q: float) -> float:
        # Inverse normal by bisection on the CDF (no scipy in the pure core).
        lo, hi = -10.0, 10.0
        for _ in range(60):
            mid = (lo + hi) / 2.0
            if _phi(mid) < q:
                lo = mid
            else:
                hi = mid
        return math.exp(self.mu + self.sigma * (lo + hi) / 2.0)


@dataclass(frozen=True)
class Mixture:
    """The durations of an arrival whose type is not known yet: the types' fits, by recent share."""

    parts: tuple[tuple[float, Durations], ...]

    @property
    def mean(self) -> float:
        return sum(w * d.mean for w, d in self.parts)

    def survival(self, u: float) -> float:
        return sum(w * d.survival(u) for w, d in self.parts)

    def partial(self, x: float) -> float:
        return sum(w * d.partial(x) for w, d in self.parts)


_PARENT_RUN = Durations.fit(PARENT_RUN_SEC, PARENT_RUN_SEC * PRIOR_TASK_CV)


def prior_durations() -> Durations:
    return Durations.fit(PRIOR_TASK_MEAN_SEC, PRIOR_TASK_MEAN_SEC * PRIOR_TASK_CV)


def _blend(fitted: Mapping[str, Durations], stats: Mapping[str, TaskStats]) -> Durations:
    """An unknown type: the known types' mean, with at least the prior's spread (the prior alone
    before any type is known). Parents are left out: their 10 s says nothing of how long an ordinary
    task of a new type runs."""
    total = sum(stats[t].completions for t in fitted)
    if total <= 0:
        return prior_durations()
    parts = [(stats[t].completions / total, d) for t, d in fitted.items()]
    mean = sum(w * d.mean for w, d in parts)
    second = sum(w * (d.mean**2) * math.exp(d.sigma**2) for w, d in parts)
    std = math.sqrt(max(0.0, second - mean**2))
    return Durations.fit(mean, max(std, mean * PRIOR_TASK_CV))


@dataclass(frozen=True)
class TypeModel:
    """Every task type's fitted durations, the arrival mixture, and the fallback for unknown types."""

    by_type: Mapping[str, Durations]
    mixture: Mixture
    fallback: Durations

    @classmethod
    def from_stats(cls, stats: Mapping[str, TaskStats]) -> TypeModel:
        fitted = {
            t: _PARENT_RUN if PARENT_MARK in t else Durations.fit(s.mean_sec, s.stddev_sec)
            for t, s in stats.items()
            if s.completions >= MIN_SAMPLES
        }
        total = sum(stats[t].completions for t in fitted)
        fallback = _blend({t: d for t, d in fitted.items() if PARENT_MARK not in t}, stats)
        if total > 0:
            mixture = Mixture(tuple((stats[t].completions / total, d) for t, d in sorted(fitted.items())))
        else:
            mixture = Mixture(((1.0, fallback),))
        return cls(by_type=fitted, mixture=mixture, fallback=fallback)

    def of(self, task_type: str | None) -> Durations:
        if task_type and PARENT_MARK in task_type and task_type not in self.by_type:
            return _PARENT_RUN
        return self.by_type.get(task_type or "", self.fallback)


@dataclass(frozen=True)
class LeadTime:
    """Seconds from asking for a worker to its serving: recent outcomes plus a prior's pseudo-samples."""

    samples: tuple[float, ...]

    @classmethod
    def from_outcomes(cls, seconds: Iterable[float], prior: Sequence[float]) -> LeadTime:
        return cls(tuple(sorted([*(s for s in seconds if s > 0 and math.isfinite(s)), *prior])))

    def cdf(self, t: float) -> float:
        if t <= 0:
            return 0.0
        return bisect.bisect_right(self.samples, t) / len(self.samples)

    def ready_by(self, age: float, more: float) -> float:
        """P(serving within ``more`` seconds | not serving after ``age`` seconds)."""
        before = self.cdf(age)
        if before >= 1.0 - 1e-9:
            # Slower than every boot seen: expect it within another median boot.
            return min(1.0, max(0.0, more) / max(1.0, self.quantile(0.5)))
        return max(0.0, (self.cdf(age + more) - before) / (1.0 - before))

    def quantile(self, q: float) -> float:
        k = min(len(self.samples) - 1, max(0, math.ceil(q * len(self.samples)) - 1))
        return self.samples[k]

    @property
    def median(self) -> float:
        return self.quantile(0.5)


@dataclass(frozen=True)
class Leads:
    """Lead times by kind and the share of resumes that fail, from ``recent_boots``."""

    spawn: LeadTime
    resume: LeadTime
    resume_failure: float

    @classmethod
    def from_boots(cls, boots: Iterable[BootOutcome], gpu_type: str | None = None) -> Leads:
        spawn: list[float] = []
        resume: list[float] = []
        fails, total = PRIOR_RESUME_FAILURES
        for b in boots:
            if gpu_type is not None and b.gpu_type not in (None, gpu_type):
                continue
            if b.is_resume:
                total += 1
                if not b.ok:
                    fails += 1
                elif b.seconds is not None:
                    resume.append(b.seconds)
            elif b.ok and b.seconds is not None:
                spawn.append(b.seconds)
        return cls(
            spawn=LeadTime.from_outcomes(spawn, PRIOR_SPAWN_SEC),
            resume=LeadTime.from_outcomes(resume, PRIOR_RESUME_SEC),
            resume_failure=fails / total,
        )

    def new_ready_by(self, from_pool: bool, t: float) -> float:
        """P(a worker asked for now serves by t): a resume (which may fail, then a spawn) or a spawn."""
        if not from_pool:
            return self.spawn.cdf(t)
        f = self.resume_failure
        return (1.0 - f) * self.resume.cdf(t) + f * self.spawn.cdf(t - RESUME_FAILURE_DETECT_SEC)

    def new_expected(self, from_pool: bool) -> float:
        if not from_pool:
            return self.spawn.median
        f = self.resume_failure
        return (1.0 - f) * self.resume.median + f * (RESUME_FAILURE_DETECT_SEC + self.spawn.median)


# --- the fleet now ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Busy:
    """A serving worker running a task of these durations for ``elapsed`` seconds."""

    durations: Durations
    elapsed: float


@dataclass(frozen=True)
class Booting:
    """A worker not serving yet: a spawn or a resume, ``age`` seconds into it."""

    resume: bool
    age: float


@dataclass(frozen=True)
class FleetState:
    """What the model sizes from; built by the policy from the snapshot."""

    rate: float  # arrivals per second
    rate_high: float  # the same, a little high (KEEP_RATE_SDS): what scale-down sizes for
    types: TypeModel
    busy: tuple[Busy, ...]
    idle: int  # serving workers with no task
    booting: tuple[Booting, ...]
    queued: tuple[Durations, ...]  # claimable tasks, oldest first (as far as the snapshot tells)
    pool: int  # stopped pods that could be resumed
    leads: Leads
    max_workers: int
    pool_room: bool = False  # a worker released now would be stopped into the pool (not terminated)


@dataclass(frozen=True)
class Sizing:
    """The model's answer: how many workers, and why (for the tick summary)."""

    workers: int
    keep: int  # fewest workers to keep (scale-down floor): at least ``workers``
    for_queue: int
    for_now: int
    for_lead: int
    lead_sec: float
    rate_per_min: float
    p_late: float
    # Ski rental: a surplus worker is released once it has been idle as long as getting one back
    # would bill (a resume, or a failed resume and a spawn; a spawn when the pool has no room).
    release_after_sec: float = 0.0
    details: Mapping[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """The figures the tick summary and ``orchestrator plan`` show."""
        return {
            "workers": self.workers,
            "keep": self.keep,
            "for_queue": self.for_queue,
            "for_now": self.for_now,
            "for_lead": self.for_lead,
            "lead_sec": self.lead_sec,
            "rate_per_min": self.rate_per_min,
            "p_late": self.p_late,
            "release_after_sec": self.release_after_sec,
        }


def _poisson_binomial_tail(probs: Sequence[float], mean: float, n: int) -> float:
    """P(sum of Bernoulli(probs) + Poisson(mean) >= n): exactly (the count truncated at n) up to
    ``EXACT_UP_TO`` workers, beyond by the normal approximation with a continuity correction (the
    exact convolution costs n times the terms, and a count of hundreds is close to normal)."""
    if n <= 0:
        return 1.0
    if n > EXACT_UP_TO:
        mu = sum(probs) + mean
        var = sum(p * (1.0 - p) for p in probs) + mean
        if var <= 1e-12:
            return 1.0 if mu >= n else 0.0
        return min(1.0, max(0.0, 1.0 - _phi((n - 0.5 - mu) / math.sqrt(var))))
    dist = [0.0] * (n + 1)  # dist[k] = P(sum == k) for k < n; dist[n] = P(sum >= n)
    dist[0] = 1.0
    for p in probs:
        if p <= 0.0:
            continue
        p = min(1.0, p)
        new = [0.0] * (n + 1)
        new[n] = dist[n]
        for k in range(n):
            mass = dist[k]
            if mass:
                new[k] += mass * (1.0 - p)
                new[k + 1] += mass * p
        dist = new
    if mean <= 0:
        return min(1.0, max(0.0, dist[n]))
    # P(B + A >= n) = P(B >= n) + sum_{k < n} P(B = k) P(A >= n - k), A ~ Poisson(mean).
    term = math.exp(-mean)
    cum = [term]
    for j in range(1, n):
        term *= mean / j
        cum.append(cum[-1] + term)
    total = dist[n]
    for k in range(n):
        total += dist[k] * max(0.0, 1.0 - cum[n - k - 1])
    return min(1.0, max(0.0, total))


def _schedule(free_at: list[float], queued: Sequence[Durations]) -> list[tuple[float, Durations]]:
    """List-schedule the queued tasks (in order) on the workers free at ``free_at``: (start, durations)."""
    heap = list(free_at)
    heapq.heapify(heap)
    starts: list[tuple[float, Durations]] = []
    for d in queued[:MAX_SCHEDULED]:
        if not heap:
            break
        start = heapq.heappop(heap)
        starts.append((start, d))
        heapq.heappush(heap, start + d.mean)
    return starts


def _p_late(state: FleetState, n: int, t: float, target: float, window: float | None = None) -> float:
    """P(a task arriving at t waits past ``target``) with n workers (current ones first, then new).

    ``window``: only the arrivals of the last ``window`` seconds before t count (None: all since now).
    Older arrivals are the fleet's state by then, which later decisions see and answer: a long task
    that arrives in ten minutes will be running by the time it matters, and be sized for then."""
    horizon = t + target
    probs: list[float] = []
    current = len(state.busy) + state.idle + len(state.booting)
    extra = max(0, n - current)
    # Workers absent at t + target.
    for boot in state.booting:
        lead = state.leads.resume if boot.resume else state.leads.spawn
        probs.append(1.0 - lead.ready_by(boot.age, horizon))
    for k in range(extra):
        probs.append(1.0 - state.leads.new_ready_by(k < state.pool, horizon))
    # Running tasks still running at t + target.
    for busy in state.busy:
        probs.append(busy.durations.still_running(busy.elapsed, horizon))
    # Queued tasks still in the system at t + target (list-scheduled on expected free times).
    free_at = [busy.durations.residual(busy.elapsed) for busy in state.busy]
    free_at += [0.0] * min(state.idle, max(0, n - len(state.busy)))
    for boot in state.booting:
        lead = state.leads.resume if boot.resume else state.leads.spawn
        free_at.append(max(0.0, lead.median - boot.age))
    for k in range(extra):
        free_at.append(state.leads.new_expected(k < state.pool))
    scheduled = _schedule(free_at, state.queued)
    for start, d in scheduled:
        probs.append(1.0 if start >= horizon else d.survival(horizon - start))
    probs += [1.0] * (len(state.queued) - len(scheduled))
    # Arrivals in [0, t] still in the system at t + target.
    span = t if window is None else min(t, window)
    mean = state.rate * (state.types.mixture.partial(span + target) - state.types.mixture.partial(target))
    # Fewer workers than the current count: the idle ones go first; they add nothing to the count, so
    # the comparison with n says it all.
    return _poisson_binomial_tail(probs, mean, n)


def _queue_need(state: FleetState, target: float) -> int:
    """Workers needed so that no queued task starts later than a new worker could start it.

    The search starts from the workers that cannot go (busy or booting) plus as many idle ones as the
    queue can use at once, and adds new workers (from the pool first) until the last queued task starts
    within a new worker's lead plus the target."""
    if not state.queued:
        return 0
    fixed = len(state.busy) + len(state.booting)
    current = fixed + state.idle
    n = fixed + min(state.idle, len(state.queued))
    while n < state.max_workers:
        free_at = [busy.durations.residual(busy.elapsed) for busy in state.busy]
        free_at += [0.0] * min(state.idle, n - fixed)
        for boot in state.booting:
            lead = state.leads.resume if boot.resume else state.leads.spawn
            free_at.append(max(0.0, lead.median - boot.age))
        extra = max(0, n - current)
        for k in range(extra):
            free_at.append(state.leads.new_expected(k < state.pool))
        if not free_at:
            n += 1
            continue
        scheduled = _schedule(free_at, state.queued)
        latest = max((start for start, _d in scheduled), default=0.0)
        unscheduled = len(state.queued) > len(scheduled)
        next_new = state.leads.new_expected(extra < state.pool)
        if not unscheduled and latest <= next_new + target:
            break
        n += 1
    return n


def _need(
    state: FleetState,
    times: Sequence[float],
    target: float,
    epsilon: float,
    late_cost_gpu_sec: float,
    window: float | None = None,
) -> tuple[int, float]:
    """Workers for arrivals at ``times`` (P_late averaged over them) at least cost: between the busy
    workers and the fewest that meet the target (P_late <= epsilon), the count that minimises what the
    fleet bills plus its late tasks at ``late_cost_gpu_sec`` each, per second. Not a step-by-step
    search: far below the load one more worker saves almost nothing, and only a whole band of them is
    worth its cost. Returns (workers, P_late with them)."""

    def p_late(n: int) -> float:
        return sum(_p_late(state, n, t, target, window) for t in times) / len(times)

    low = min(len(state.busy), state.max_workers)
    p_low = p_late(low)
    if p_low <= epsilon or low >= state.max_workers:
        return low, p_low
    # The fewest meeting the target: P_late falls as workers are added, so a binary search.
    high, p_high = state.max_workers, p_late(state.max_workers)
    if p_high <= epsilon:
        lo = low
        while high - lo > 1:
            mid = (lo + high) // 2
            p_mid = p_late(mid)
            if p_mid <= epsilon:
                high, p_high = mid, p_mid
            else:
                lo = mid
    known = {low: p_low, high: p_high}

    def bill(n: int) -> float:
        if n not in known:
            known[n] = p_late(n)
        return n + state.rate * late_cost_gpu_sec * known[n]

    # The least cost over [low, high]: every count when few, else a coarse pass and its neighbourhood.
    step = max(1, (high - low) // NEED_SCAN)
    best = min(range(low, high + 1, step), key=lambda n: (bill(n), -n))
    if step > 1:
        best = min(range(max(low, best - step), min(high, best + step) + 1), key=lambda n: (bill(n), -n))
    bill(high)
    if bill(high) <= bill(best):
        best = high
    return best, known[best]


def size(state: FleetState, target: float, late_cost_gpu_sec: float) -> Sizing:
    """The number of workers (serving plus booting) the fleet should have now, and to keep.

    Adding: a worker asked for now serves from the lead time L on, and is kept at least as long as it
    takes to release one (``release``); it is worth adding for the arrivals of [L, L + release]
    (P_late averaged over that span: with short tasks the fleet's state now is forgotten by then and
    the need is the steady state's, which keeps the fleet from chasing every completion; with long
    tasks the state now still tells). Keeping: a worker let go now cannot be back before L, so it is
    kept while the arrivals of [0, L] need it.
    """
    for_queue = _queue_need(state, target)
    lead = state.leads.new_expected(state.pool > 0)
    release = RELEASE_FACTOR * state.leads.new_expected(state.pool_room)
    add_times = tuple(lead + extra for extra in ADD_AT)
    # Arrivals older than a reaction (a lead time plus the release hold) are answered by later ticks.
    reaction = lead + release
    for_lead, p_lead = _need(state, add_times, target, EPSILON, late_cost_gpu_sec, reaction)
    workers = max(for_queue, for_lead)
    # The need now: the arrivals of [0, L] with the fleet as it is. A worker let go now cannot be back
    # before L, so scale-down keeps it; and while tasks wait that no idle worker will take, the fleet
    # is short now, so scale-up asks for it too (it serves from L on, as the shortage goes on).
    keep_times = (0.0, lead / 2.0, lead)
    for_now, _ = _need(state, keep_times, target, EPSILON, late_cost_gpu_sec)
    if len(state.queued) > state.idle:
        workers = max(workers, for_now)
    high = replace(state, rate=state.rate_high)
    keep_far, _ = _need(high, add_times, target, EPSILON, late_cost_gpu_sec, reaction)
    keep = max(workers, for_now, keep_far)
    return Sizing(
        release_after_sec=round(release, 1),
        workers=min(workers, state.max_workers),
        keep=min(keep, state.max_workers),
        for_queue=for_queue,
        for_now=for_now,
        for_lead=for_lead,
        lead_sec=round(lead, 1),
        rate_per_min=round(state.rate * 60.0, 3),
        p_late=round(p_lead, 4),
    )
