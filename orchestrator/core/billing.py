"""What a worker's pod bills: its GPU price while the pod holds a GPU, its volume disk while stopped.

Pure: read by ``orchestrator status`` (:mod:`orchestrator.render`) and by the executor's record of a
closed row (``worker_terminated``'s ``cost_usd``), so both say the same. It follows the database's spend
views, formula for formula (``orchestrator_dashboard.worker_spend_from`` in
migrations/20261207000200_warm_pool_snapshot_and_spend.sql, ``worker_rate_per_hr`` in
migrations/20261208000100_rate_now_of_ending_pods.sql, the end of billing and a pod ended from the pool
in migrations/20261208000200_unconfirmed_terminations_bill.sql): a stopped pod's volume disk at
Runpod's stopped-storage price, $0.20 per GB per month ("Billing information",
docs.runpod.io/get-started/billing-information), a month taken as 30 days; nothing from the first
termination request Runpod confirmed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.core.draft import HOURS_PER_MONTH, STOPPED_DISK_USD_PER_GB_MONTH
from orchestrator.core.observed import Worker, parse_ts
from orchestrator.core.states import Meta, WorkerState

# Worker metadata the pool's figures read: the pod's volume disk in GB (written by the executor from
# what the spawn asked for; absent reads as 0: no disk billed) and the seconds spent stopped in earlier
# stays (written by orch_transition_worker when a stay ends).
DISK_GB = "disk_gb"
STOPPED_SEC = "stopped_sec"


def meta_number(metadata: Mapping[str, Any], key: str) -> float:
    """A positive number from free-form metadata; anything else reads as 0 (as the SQL reads it)."""
    value = metadata.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return float(value) if value > 0 else 0.0


def meta_ts(metadata: Mapping[str, Any], key: str) -> datetime | None:
    try:
        return parse_ts(metadata.get(key))
    except ValueError:
        return None


@dataclass(frozen=True)
class Billing:
    """What one worker's pod bills now and has billed so far (estimates; Runpod's invoice decides)."""

    # USD/h now: 0 once billing ended, the disk's while the pod is stopped (in the pool or being
    # terminated out of it), else the GPU price (None: unknown).
    rate_per_hr: float | None
    spend_usd: float | None  # so far (None when the GPU price is unknown)
    # The current stay began (a stopped worker, or one being terminated out of the pool; else None).
    stopped_since: datetime | None
    pool_sec: float  # seconds stopped, this stay and earlier ones
    disk_gb: float
    disk_rate_per_hr: float  # what its disk bills while stopped
    disk_spend_usd: float  # what its stays in the pool have cost


def ending_from_pool(w: Worker) -> bool:
    """A ``terminating`` worker whose pod we last stopped and did not resume since: still stopped until
    the termination takes it, so it bills its disk (``orchestrator_dashboard.worker_ending_from_pool``)."""
    if w.status is not WorkerState.TERMINATING:
        return False
    stopped = meta_ts(w.metadata, Meta.STOPPED_AT)
    resumed = meta_ts(w.metadata, Meta.RESUME_REQUESTED_AT)
    return stopped is not None and (resumed is None or resumed < stopped)


def termination_taken(w: Worker) -> datetime | None:
    """When the first termination Runpod confirmed was asked: the end of billing
    (``orchestrator_dashboard.worker_termination_taken``). None when none was asked or none confirmed
    yet (the calls failed or their answers did not say so): the pod may still bill. A row stamped before
    confirmations were recorded ends at its last request."""
    if Meta.POD_TERMINATE_TAKEN_AT in w.metadata:
        return meta_ts(w.metadata, Meta.POD_TERMINATE_TAKEN_AT)
    if Meta.POD_TERMINATE_CONFIRMED in w.metadata:
        return None
    return meta_ts(w.metadata, Meta.POD_TERMINATE_REQUESTED_AT)


def worker_billing(w: Worker, now: datetime) -> Billing:
    """The pod's bill: GPU price from the row's creation to the end of billing (the termination Runpod
    took, else now), less its time stopped, which bills the volume disk instead."""
    price = w.cost_per_hr
    disk_gb = meta_number(w.metadata, DISK_GB)
    disk_rate = disk_gb * STOPPED_DISK_USD_PER_GB_MONTH / HOURS_PER_MONTH
    asked = termination_taken(w)
    until = min(asked, now) if asked is not None else now
    ending = ending_from_pool(w)
    since: datetime | None = None
    if w.status is WorkerState.STOPPED:
        # The later of the move to stopped and the executor's stopped_at: the GPU counts until then.
        marks = [t for t in (w.status_changed_at, meta_ts(w.metadata, Meta.STOPPED_AT)) if t is not None]
        since = min(now, max(marks)) if marks else now
    elif ending:
        # The stay before the move to terminating is in stopped_sec; the pod is still stopped after it.
        since = min(now, w.status_changed_at) if w.status_changed_at is not None else now
    past = meta_number(w.metadata, STOPPED_SEC)
    current = max(0.0, (until - since).total_seconds()) if since is not None else 0.0
    pool_sec = past + current
    spend: float | None = None
    if price is not None and w.created_at is not None:
        if since is not None:
            since = min(max(since, w.created_at), until)
            current = max(0.0, (until - since).total_seconds())
        life_before = max(0.0, ((since or until) - w.created_at).total_seconds())
        gpu_sec = life_before - min(past, life_before)
        spend = round((price * gpu_sec + disk_rate * (min(past, life_before) + current)) / 3600.0, 4)
    rate: float | None = price
    if w.status is WorkerState.TERMINATED or (asked is not None and asked <= now):
        rate = 0.0  # billing ended: the spend estimate stops there too
    elif w.status is WorkerState.STOPPED or ending:
        rate = disk_rate
    return Billing(
        rate_per_hr=rate,
        spend_usd=spend,
        stopped_since=since,
        pool_sec=pool_sec,
        disk_gb=disk_gb,
        disk_rate_per_hr=disk_rate,
        disk_spend_usd=round(disk_rate * pool_sec / 3600.0, 4),
    )
