"""One ``plan()`` call's working state: its inputs, each worker row matched with its pod, prices, and the
plan drafted so far.

Where this sits in the pure core: :func:`orchestrator.core.policy.plan` builds one :class:`Draft` per call
and passes it to the rules (``policy``: reconcile, boot, endings; ``health``: why a worker must fail;
``staffing``: how many workers and which). Every rule reads the same matched view and appends to the same
action list, so the rules agree on which pod is whose and on what each worker costs. The draft is built
and dropped inside ``plan()``, which therefore stays pure.

Matching: a live row claims its pod by ``metadata.runpod_id``, or by name (pod name = worker id) while it
has no recorded id yet; two pods carrying one worker's name go to the oldest, the other is a duplicate
that the orphan rule reaps. Pods without ``WORKER_ID_PREFIX`` are never acted on, not even when a row
points at them (:meth:`Draft.touchable_id` says so in the plan's problems).

Prices: ``prices`` maps a GPU display name to USD/h (the controller passes the catalog's current prices;
the simulator its own). A worker's price is its pod's reported cost, else ``metadata.cost_per_hr``, else
the catalog price of its GPU type, else (a spawn not yet placed) the dearest type of its list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.core.actions import Action, Drain, MarkTerminated, TerminatePod
from orchestrator.core.config import Settings
from orchestrator.core.observed import PodView, Snapshot, Worker, freeze
from orchestrator.core.states import Meta, PodStatus, Reason, WorkerState

# A heartbeat younger than this outweighs a listing without the worker's pod: three of the real worker's
# beats (its guardian beats every 20 s; banodoco/Reigh-Worker heartbeat_guardian.py).
LISTING_OUTWEIGHED_BY_BEAT_SEC = 60.0
# A stopped pod bills its volume disk only: 0.20 USD per GB and month (Runpod's pricing page, "Storage":
# volume disk 0.10 USD/GB/month while running, 0.20 while stopped). A month counted as 30 days (720 h),
# the harsher reading of "per month".
STOPPED_DISK_USD_PER_GB_MONTH = 0.20
HOURS_PER_MONTH = 720.0


def volume_disk_gb(settings: Settings) -> int:
    """The volume disk (GB) a spawn's create call asks for: what its pod bills while stopped.

    ``RUNPOD_DISK_SIZE_GB``, except over REST v2 with a network volume (``RUNPOD_STORAGE_NAME``): there the
    body cannot carry it (a network mount and a persistent one exclude each other in Runpod's OpenAPI
    document for REST v2; the network volume takes the volume disk's place), so 0. GraphQL sends
    ``volumeInGb`` beside the network volume; whether Runpod then bills a volume disk too is not
    documented, so it is counted (the dearer reading).
    """
    if settings.runpod_storage_name and settings.runpod_api.strip().lower() == "rest":
        return 0
    return int(settings.runpod_disk_size_gb)


def stopped_disk_usd_per_hr(settings: Settings, worker: Worker | None = None) -> float:
    """What one stopped pod bills per hour (its volume disk): the worker's own disk as its spawn recorded
    it (``metadata.disk_gb``), else this configuration's (a row spawned before the key was recorded)."""
    disk = worker.disk_gb if worker is not None else None
    gb = float(volume_disk_gb(settings)) if disk is None else disk
    return gb * STOPPED_DISK_USD_PER_GB_MONTH / HOURS_PER_MONTH


def age(now: datetime, since: datetime | None) -> float | None:
    """Seconds from ``since`` to ``now``; None when ``since`` is unknown."""
    return None if since is None else (now - since).total_seconds()


def ts_key(value: datetime | None) -> float:
    """A sort key for an optional time: unknown sorts as the epoch."""
    return value.timestamp() if value is not None else 0.0


@dataclass
class Draft:
    """One planning pass. Mutable scratch state, but built and dropped inside ``plan()``."""

    snapshot: Snapshot
    pods: Sequence[PodView] | None
    settings: Settings
    now: datetime
    prices: dict[str, float]
    data_centers: tuple[str, ...] = ()
    actions: list[Action] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # workers that leave capacity this tick (failed, drained, terminated), by id
    leaving: set[str] = field(default_factory=set)
    # pods an unreadable row's retirement terminates this tick (not terminated again as orphans)
    retiring_pods: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        s = self.settings
        self.prefix: str = s.worker_id_prefix
        self.grace: float = s.orphan_grace_sec
        self.pods_known = self.pods is not None
        pods = sorted(self.pods or (), key=lambda p: p.id)
        self.by_id: dict[str, PodView] = {}
        self.by_name: dict[str, list[PodView]] = {}
        for pod in pods:
            self.by_id.setdefault(pod.id, pod)
            if pod.name:
                self.by_name.setdefault(pod.name, []).append(pod)
        for same in self.by_name.values():
            # Oldest first: if two pods carry one worker's name, the row adopts the first, the
            # other is a duplicate and is reaped as an orphan.
            same.sort(key=lambda p: (p.created_at is None, ts_key(p.created_at), p.id))
        self.workers: list[Worker] = sorted(self.snapshot.workers, key=lambda w: w.id)
        self.pod_of: dict[str, PodView | None] = {w.id: self._resolve(w) for w in self.workers}

    # -- pods ------------------------------------------------------------------------------------

    def _resolve(self, worker: Worker) -> PodView | None:
        if worker.status.terminal:
            return None
        if worker.runpod_id:
            return self.by_id.get(worker.runpod_id)
        for pod in self.by_name.get(worker.id, ()):
            if not pod.gone:
                return pod
        return None

    def ours(self, pod: PodView) -> bool:
        return pod.name.startswith(self.prefix)

    def alive(self, pod: PodView | None) -> bool:
        return pod is not None and not pod.gone

    def touchable_id(self, worker: Worker, pod: PodView | None) -> str | None:
        """The pod id an action on this worker may terminate; None if it must not touch it."""
        if pod is not None:
            if self.ours(pod):
                return pod.id
            self.problems.append(
                f"worker {worker.id} points at pod {pod.id} named {pod.name!r} without the prefix "
                f"{self.prefix!r}: left alone"
            )
            return None
        # Not listed: terminating an id the provider no longer lists is a harmless confirmation. Without
        # a listing at all, only an id our own spawn recorded: another may name a pod that is not ours.
        return worker.runpod_id if self.pods_known else self.recorded_pod(worker)

    def recorded_pod(self, worker: Worker) -> str | None:
        """Without a listing, the pod id this worker's own spawn recorded: ours by construction (named
        with our prefix by our create). A row without our spawn's record (``spawn_reason``, a key only
        the orchestrator writes) may point at a pod that is not ours, which is never touched unlisted."""
        if worker.runpod_id is None or not worker.metadata.get(Meta.SPAWN_REASON):
            return None
        return worker.runpod_id

    def cancellable_pod(self, worker: Worker) -> bool:
        pod = self.pod_of[worker.id]
        return pod is not None and not pod.gone and self.ours(pod)

    def row_age(self, worker: Worker) -> float | None:
        return age(self.now, worker.created_at or worker.status_changed_at)

    def absent(self, worker: Worker, pod: PodView | None) -> bool:
        """The provider confirms this row has no pod (only with a listing)."""
        if not self.pods_known or self.alive(pod):
            return False
        if pod is not None and pod.gone:
            return True
        reason = str(worker.metadata.get(Meta.ERROR_REASON) or "")
        if worker.runpod_id is None and reason in (
            Reason.SPAWN_NO_CAPACITY.value,
            Reason.SPAWN_FAILED.value,
            Reason.SPAWN_RATE_LIMITED.value,
        ):
            # The executor knows creation failed; no pod to wait for.
            return True
        if worker.runpod_id is not None and worker.pod_terminate_requested_at is not None:
            # We asked the provider to terminate this very pod and it no longer lists it: that is the
            # confirmation. (The grace below covers a listing lagging a creation, not a termination.)
            return True
        beat = age(self.now, worker.last_heartbeat)
        # (Not a pooled row: a stop ends the worker process, so its last beat says nothing of the pod.)
        if not worker.status.pooled and beat is not None and beat < LISTING_OUTWEIGHED_BY_BEAT_SEC:
            # A worker that beat moments ago runs on a pod, whatever one listing says. An empty or
            # partial listing during a provider incident would otherwise fail every healthy worker,
            # requeue (and, at the attempt limit, dead-letter) their tasks and terminate their pods;
            # a pod really gone stops beating, and its silence lets the absence count soon after.
            return False
        row_age = self.row_age(worker)
        # Grace: the listing may lag a creation, and a spawn may still be creating the pod.
        return row_age is None or row_age >= self.grace

    # -- prices ----------------------------------------------------------------------------------

    def type_price(self, gpu_type: str | None) -> float | None:
        if gpu_type is None:
            return None
        price = self.prices.get(gpu_type)
        return float(price) if price is not None and math.isfinite(price) and price >= 0 else None

    def worker_price(self, worker: Worker, pod: PodView | None) -> float | None:
        if pod is not None and pod.cost_per_hr is not None and pod.cost_per_hr > 0:
            return pod.cost_per_hr
        if worker.cost_per_hr is not None:
            return worker.cost_per_hr
        price = self.type_price(worker.gpu_type)
        if price is not None:
            return price
        # A spawn not yet placed may land on any type of its list: count the dearest.
        candidates = [self.type_price(g) for g in (worker.spawn_gpu_types or self.settings.gpu_types)]
        known = [c for c in candidates if c is not None]
        return max(known) if known else None

    def spend(self, orphan_spend: float) -> tuple[float, bool]:
        """USD/h of the fleet now; and whether some worker's price is unknown."""
        total = orphan_spend
        unknown = False
        for worker in self.workers:
            if worker.status.terminal:
                continue
            pod = self.pod_of[worker.id]
            if self.pods_known and not self.alive(pod) and self.absent(worker, pod):
                continue  # no pod, no bill
            if self.disk_only(worker, pod):
                total += stopped_disk_usd_per_hr(self.settings, worker)
                continue
            price = self.worker_price(worker, pod)
            if price is None:
                unknown = True
            else:
                total += price
        return total, unknown

    def disk_only(self, worker: Worker, pod: PodView | None) -> bool:
        """Its pod is stopped: it bills its disk, not a GPU (a ``stopped`` row, or a ``stopping`` or
        ``terminating`` one whose pod is listed EXITED: a pooled pod being ended stays stopped until the
        termination takes it). A ``resuming`` row bills its GPU whatever the listing says: the start
        was asked for and may take any moment, and a listing from before it still says EXITED (counted
        as disk, a resume and a spawn in two ticks a second apart went past ``MAX_HOURLY_SPEND``)."""
        if worker.status is WorkerState.STOPPED:
            return True
        pooling = worker.status in (WorkerState.STOPPING, WorkerState.TERMINATING)
        return pooling and pod is not None and pod.status is PodStatus.EXITED

    def sort_victims(
        self, workers: Iterable[Worker], newest: Callable[[Worker], datetime | None]
    ) -> list[Worker]:
        """Scale-down order: the most expensive first, then the newest (by ``newest``; an older worker
        has a warm cache and a proven host), then by id."""

        def key(w: Worker) -> tuple[float, float, str]:
            price = self.worker_price(w, self.pod_of.get(w.id)) or 0.0
            return (-price, -ts_key(newest(w)), w.id)

        return sorted(workers, key=key)

    # -- actions shared by the rules ---------------------------------------------------------------

    def terminate(self, worker: Worker, pod: PodView | None, reason: Reason) -> None:
        """End the worker's pod: the listed one, or without a listing the one its row records (the
        caller checks there is one)."""
        self.leaving.add(worker.id)
        self.actions.append(
            TerminatePod(
                reason=reason,
                runpod_id=pod.id if pod is not None else str(worker.runpod_id),
                pod_name=pod.name if pod is not None else worker.id,
                worker_id=worker.id,
                transition_from=worker.status,
            )
        )

    def mark_gone(self, worker: Worker) -> None:
        """The provider no longer has the worker's pod: close the row, its tasks back in the queue."""
        self.actions.append(
            MarkTerminated(
                reason=Reason.PROVIDER_CONFIRMED_GONE,
                worker_id=worker.id,
                from_status=worker.status,
                requeue_tasks=worker.running_count > 0,
            )
        )

    def drain(self, worker: Worker, reason: Reason, unclaimed: Mapping[str, Any] | None = None) -> None:
        self.leaving.add(worker.id)
        metadata: dict[str, Any] = {Meta.DRAIN_REASON: reason.value, Meta.DRAINED_AT: self.now.isoformat()}
        if unclaimed is not None:
            metadata[Meta.UNCLAIMED] = dict(unclaimed)
        self.actions.append(Drain(reason=reason, worker_id=worker.id, metadata=freeze(metadata)))
