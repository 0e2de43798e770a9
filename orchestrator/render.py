"""Text tables and JSON rows for operators: ``status``, ``plan``, ``pods``, ``events``, ``gpus``,
``volumes``, the one-line answers of ``pause``/``resume`` and ``workers terminate``, and the demo's
live view.

Pure functions of values (a Snapshot, pods, a Plan, the catalog); nothing here talks to a service. Secrets
never reach these tables: metadata is shown only through the fields named below.

What a worker costs is :func:`orchestrator.core.billing.worker_billing`, the database's spend views
formula for formula.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from orchestrator.adapters.provider import RunpodProvider
from orchestrator.adapters.runpod.base import GpuType, NetworkVolume
from orchestrator.core import errors
from orchestrator.core.actions import Plan
from orchestrator.core.billing import (
    meta_number,
    termination_taken,
    worker_billing,
)
from orchestrator.core.observed import PodView, Snapshot, Worker
from orchestrator.core.states import Meta, WorkerState

POOL_STATES = (WorkerState.STOPPING, WorkerState.STOPPED, WorkerState.RESUMING)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _age(now: datetime, then: datetime | None) -> float | None:
    if then is None:
        return None
    return max(0.0, (now - then).total_seconds())


def _fmt_usd(amount: float | None, places: int = 2) -> str:
    return f"{amount:.{places}f}" if amount else "-"


def _fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def worker_row(w: Worker, now: datetime) -> dict[str, Any]:
    bill = worker_billing(w, now)
    return {
        "worker_id": w.id,
        "state": w.status.value,
        "runpod_id": w.runpod_id,
        "gpu_type": w.gpu_type or w.instance_type,
        "age_sec": _age(now, w.created_at),
        "heartbeat_age_sec": _age(now, w.last_heartbeat),
        "current_task": w.running_task_ids[0] if w.running_task_ids else None,
        "running": w.running_count,
        # What it bills now: a stopped pod its disk only.
        "cost_per_hr": round(bill.rate_per_hr, 6) if bill.rate_per_hr is not None else None,
        "spend_usd": bill.spend_usd,
        # What the worker last said about itself (crashed, error), kept beside our own state.
        "reported_status": w.reported_status,
        "reported_age_sec": _age(now, w.reported_at),
        # Its pod's termination: "taken" by Runpod (billing ended), "unconfirmed" (the last call failed
        # or was not confirmed: the pod may still bill, and the next tick asks again), or None (not asked).
        "termination": termination_state(w),
        # A start the daemon last saw in its setup steps (git sync, apt, uv sync): for how long so far.
        "setup_sec": setup_sec(w),
        # Why it is in its state: the failure, the drain, or what it was spawned for.
        "why": worker_why(w),
    }


def worker_why(w: Worker) -> str | None:
    """The reason recorded for the worker's current state: an error's reason when failed or ending
    after one, a drain's when draining, "resumed" for one back from the warm pool, else the reason it
    was spawned for (demand, wait_target...)."""
    meta = w.metadata
    if w.status.pooled:
        return "pooled"  # the reasons in the metadata are of its life before the pool
    if w.resumes and w.status in (WorkerState.RESUMING, WorkerState.INITIALIZING, WorkerState.ACTIVE):
        return "resumed"  # its spawn's reason is of its first life; a resume is always for the queue
    keys = {
        WorkerState.ERROR: (Meta.ERROR_REASON,),
        WorkerState.TERMINATING: (Meta.ERROR_REASON, Meta.DRAIN_REASON),
        WorkerState.DRAINING: (Meta.DRAIN_REASON,),
    }.get(w.status, (Meta.SPAWN_REASON,))
    for key in keys:
        value = meta.get(key)
        if isinstance(value, str) and value:
            return value[:40]
    return None


def setup_sec(w: Worker) -> float | None:
    """How long an initializing worker's start has been in its setup steps, when the last look at it
    saw it there (the start watch); None otherwise."""
    seen_sec, seen, watched = w.setup_seen_sec, w.setup_seen_at, w.start_watched_at
    if w.status is not WorkerState.INITIALIZING or seen_sec is None:
        return None
    if watched is not None and seen is not None and watched > seen:
        return None  # seen past its setup since
    return round(seen_sec, 1)


def termination_state(w: Worker) -> str | None:
    if w.pod_terminate_requested_at is None:
        return None
    return "taken" if termination_taken(w) is not None else "unconfirmed"


def pool_row(w: Worker, now: datetime) -> dict[str, Any]:
    """One worker of the warm pool: since when stopped, its disk and what that has cost."""
    bill = worker_billing(w, now)
    resumes = meta_number(w.metadata, Meta.RESUMES)
    return {
        "worker_id": w.id,
        "state": w.status.value,
        "runpod_id": w.runpod_id,
        "gpu_type": w.gpu_type or w.instance_type,
        "state_age_sec": _age(now, w.status_changed_at),
        "stopped_since": bill.stopped_since.isoformat() if bill.stopped_since else None,
        "stopped_age_sec": _age(now, bill.stopped_since),
        "disk_gb": bill.disk_gb,
        "disk_cost_per_hr": round(bill.disk_rate_per_hr, 6),
        "disk_spend_usd": bill.disk_spend_usd,
        "resumes": int(resumes),
    }


def pool_summary(snapshot: Snapshot, now: datetime) -> dict[str, Any]:
    """The warm pool: how many workers are on their way in, in it and on their way out, and each one."""
    members = [pool_row(w, now) for w in snapshot.workers if w.status in POOL_STATES]
    stopped = [m for m in members if m["state"] == WorkerState.STOPPED.value]
    return {
        **{state.value: sum(1 for m in members if m["state"] == state.value) for state in POOL_STATES},
        "disk_cost_per_hr": round(sum(m["disk_cost_per_hr"] for m in stopped), 6),
        "disk_spend_usd": round(sum(m["disk_spend_usd"] for m in members), 4),
        "workers": members,
    }


def status_rows(snapshot: Snapshot) -> dict[str, Any]:
    now = snapshot.now or datetime.now(UTC)
    workers = [worker_row(w, now) for w in snapshot.workers]
    return {
        "now": now.isoformat(),
        "paused": snapshot.paused,
        "queue": {
            "claimable": snapshot.queue.claimable,
            "queued_total": snapshot.queue.queued_total,
            "running": snapshot.queue.running,
            "oldest_claimable_age_sec": snapshot.queue.oldest_claimable_age_sec,
        },
        "workers": workers,
        "pool": pool_summary(snapshot, now),
        "spend_per_hr": round(sum(w["cost_per_hr"] or 0 for w in workers), 4),
        "spend_usd": round(sum(w["spend_usd"] or 0 for w in workers), 4),
    }


def _pool_line(pool: Mapping[str, Any]) -> str:
    counts = ", ".join(f"{pool[state.value]} {state.value}" for state in POOL_STATES)
    if not pool["workers"]:
        return "pool: empty"
    return f"pool: {counts}; disk ${pool['disk_cost_per_hr']:.4f}/h, ${pool['disk_spend_usd']:.4f} so far"


def render_pool(pool: Mapping[str, Any]) -> str:
    """The pool line, then a row per pooled worker (none when the pool is empty)."""
    if not pool["workers"]:
        return _pool_line(pool)
    rows = [
        (
            m["worker_id"],
            m["state"],
            m["runpod_id"],
            m["gpu_type"],
            _fmt_age(m["stopped_age_sec"] if m["stopped_age_sec"] is not None else m["state_age_sec"]),
            f"{m['disk_gb']:g}",
            f"{m['disk_cost_per_hr']:.4f}",
            f"{m['disk_spend_usd']:.4f}",
            m["resumes"],
        )
        for m in pool["workers"]
    ]
    headers = ("POOLED", "STATE", "POD", "GPU", "FOR", "DISK GB", "DISK $/H", "DISK SPENT $", "RESUMES")
    return _pool_line(pool) + "\n" + table(headers, rows)


# What the live rows are doing, in the words an operator asks in: "4 live" alone read as four GPUs billing
# when all four sat stopped in the pool.
_FLEET_GROUPS: tuple[tuple[str, frozenset[str]], ...] = (
    ("serving", frozenset({WorkerState.ACTIVE.value})),
    (
        "starting",
        frozenset({s.value for s in (WorkerState.SPAWNING, WorkerState.INITIALIZING, WorkerState.RESUMING)}),
    ),
    ("pooled", frozenset({WorkerState.STOPPING.value, WorkerState.STOPPED.value})),
    (
        "ending",
        frozenset({s.value for s in (WorkerState.DRAINING, WorkerState.TERMINATING, WorkerState.ERROR)}),
    ),
)


def _fleet_breakdown(workers: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for name, states in _FLEET_GROUPS:
        count = sum(1 for w in workers if w["state"] in states)
        if count:
            parts.append(f"{count} {name}")
    return f" ({', '.join(parts)})" if parts else ""


def render_status(snapshot: Snapshot) -> str:
    data = status_rows(snapshot)
    rows = [
        (
            w["worker_id"],
            w["state"]
            + (
                f" (said {w['reported_status']} {_fmt_age(w['reported_age_sec'])} ago)"
                if w["reported_status"]
                else ""
            )
            + (" (termination unconfirmed, retrying)" if w["termination"] == "unconfirmed" else "")
            + (f" (setup {_fmt_age(w['setup_sec'])})" if w["setup_sec"] is not None else ""),
            _fmt_age(w["age_sec"]),
            _fmt_age(w["heartbeat_age_sec"]),
            w["current_task"] or "-",
            w["why"] or "-",
            # A disk's price (a stopped pod's, or one's terminated out of the pool) is cents a day; no
            # GPU bills under 10 cents an hour.
            _fmt_usd(w["cost_per_hr"], 4 if 0 < (w["cost_per_hr"] or 0) < 0.10 else 2),
            _fmt_usd(w["spend_usd"]),
        )
        for w in data["workers"]
    ]
    q = data["queue"]
    head = (
        f"queue: {q['claimable']} claimable ({q['queued_total']} queued), {q['running']} running, "
        f"oldest waiting {_fmt_age(q['oldest_claimable_age_sec'])}"
        f"   fleet: {len(rows)} live{_fleet_breakdown(data['workers'])}, ${data['spend_per_hr']:.2f}/h"
        + ("   PAUSED" if data["paused"] else "")
    )
    workers = table(("WORKER", "STATE", "AGE", "HEARTBEAT", "TASK", "WHY", "$/H", "SPENT $"), rows)
    return head + "\n" + render_pool(data["pool"]) + "\n" + workers


def render_plan(snapshot: Snapshot, pods: Sequence[PodView] | None, plan: Plan) -> str:
    d = plan.to_dict()
    lines = [
        f"desired {d['desired']} (demand from {d['demand_tasks']} tasks), capacity {d['capacity']}, live {d['live']}, "
        f"missing {d['missing']}, spend ${d['spend_per_hr']:.2f}/h, breaker {d['breaker']}"
        + (f", spawning blocked: {', '.join(d['spawn_blocked'])}" if d["spawn_blocked"] else ""),
        f"pods listed: {'unavailable' if pods is None else len(pods)}",
    ]
    sizing = d["sizing"]
    if sizing:
        lines.append(
            f"wait target: {sizing['workers']} workers wanted, {sizing['keep']} kept (queue {sizing['for_queue']}, "
            f"now {sizing['for_now']}, after the lead time {sizing['for_lead']}); "
            f"{sizing['rate_per_min']:g} arrivals/min, lead {sizing['lead_sec']:g} s, "
            f"P(late) {sizing['p_late']:g}, idle surplus let go after {sizing['release_after_sec']:g} s"
        )
    for b in d["backoffs"]:
        lines.append(
            f"backoff: {b['gpu_type']} in {b['data_center'] or 'any'} after {b['failures']} failures, until {b['until']}"
        )
    if not plan.actions:
        lines.append("no action: the fleet matches the queue")
    else:
        rows = []
        for a in d["actions"]:
            target = a.get("worker_id") or a.get("runpod_id") or "-"
            extra = {k: v for k, v in a.items() if k not in ("kind", "reason", "worker_id", "metadata")}
            rows.append(
                (
                    a["kind"],
                    target,
                    a["reason"],
                    ", ".join(f"{k}={v}" for k, v in extra.items() if v not in (None, [], {}, "")),
                )
            )
        lines.append(table(("ACTION", "TARGET", "REASON", "DETAILS"), rows))
    for problem in d["problems"]:
        lines.append(f"problem: {problem}")
    return "\n".join(lines)


def _pod_pool_fields(worker: Worker | None, now: datetime) -> dict[str, Any]:
    """For a pod whose worker is in the warm pool: since when stopped and what its disk costs."""
    if worker is None or worker.status not in POOL_STATES:
        return {"stopped_age_sec": None, "disk_cost_per_hr": None, "disk_spend_usd": None}
    row = pool_row(worker, now)
    return {key: row[key] for key in ("stopped_age_sec", "disk_cost_per_hr", "disk_spend_usd")}


def pods_rows(snapshot: Snapshot, pods: Sequence[PodView], prefix: str) -> list[dict[str, Any]]:
    """Each pod beside the live row that claims it (by recorded id, else by name); orphans marked; a
    pod in the warm pool with its time stopped and its disk's cost."""
    now = snapshot.now or datetime.now(UTC)
    by_runpod = {w.runpod_id: w for w in snapshot.workers if w.runpod_id}
    by_name = {w.id: w for w in snapshot.workers}
    rows = []
    for pod in pods:
        worker = by_runpod.get(pod.id) or by_name.get(pod.name)
        ours = pod.name.startswith(prefix)
        rows.append(
            {
                "runpod_id": pod.id,
                "name": pod.name,
                "status": pod.status.value,
                "ssh_ready": pod.ssh_ready,
                "cost_per_hr": pod.cost_per_hr,
                "worker_id": worker.id if worker else None,
                "worker_state": worker.status.value if worker else None,
                "orphan": ours and worker is None,
                "ours": ours,
                **_pod_pool_fields(worker, now),
            }
        )
    listed = {p.id for p in pods} | {p.name for p in pods}
    for w in snapshot.workers:
        if (w.runpod_id and w.runpod_id not in listed) and w.id not in listed:
            rows.append(
                {
                    "runpod_id": w.runpod_id,
                    "name": None,
                    "status": "MISSING",
                    "ssh_ready": False,
                    "cost_per_hr": None,
                    "worker_id": w.id,
                    "worker_state": w.status.value,
                    "orphan": False,
                    "ours": True,
                    **_pod_pool_fields(w, now),
                }
            )
    return rows


def _pod_note(r: Mapping[str, Any]) -> str:
    if r["orphan"]:
        return "ORPHAN"
    if not r["ours"]:
        return "not ours"
    if r["status"] == "MISSING":
        return "no pod"
    if r["worker_state"] in {s.value for s in POOL_STATES}:
        since = f" {_fmt_age(r['stopped_age_sec'])}" if r["stopped_age_sec"] is not None else ""
        return f"pool{since}, disk ${r['disk_cost_per_hr']:.4f}/h"
    return ""


def render_pods(rows: Sequence[Mapping[str, Any]]) -> str:
    """The pods, then the pool line: how many of our pods are stopping, stopped or resuming."""
    pods = table(
        ("POD", "NAME", "STATUS", "SSH", "$/H", "WORKER", "STATE", "NOTE"),
        [
            (
                r["runpod_id"],
                r["name"],
                r["status"],
                "yes" if r["ssh_ready"] else "no",
                r["cost_per_hr"],
                r["worker_id"],
                r["worker_state"],
                _pod_note(r),
            )
            for r in rows
        ],
    )
    counts = {s.value: sum(1 for r in rows if r["worker_state"] == s.value) for s in POOL_STATES}
    if not any(counts.values()):
        return pods + "\npool: empty"
    disk = sum(r["disk_cost_per_hr"] or 0 for r in rows if r["worker_state"] == WorkerState.STOPPED.value)
    return (
        pods + "\npool: " + ", ".join(f"{n} {state}" for state, n in counts.items()) + f"; disk ${disk:.4f}/h"
    )


def render_events(events: Sequence[Mapping[str, Any]]) -> str:
    return table(
        ("AT", "KIND", "WORKER", "POD", "REASON", "COST $"),
        [
            (
                e.get("at"),
                e.get("kind"),
                e.get("worker_id"),
                e.get("runpod_id"),
                e.get("reason"),
                e.get("cost_usd"),
            )
            for e in events
        ],
    )


def gpus_rows(gpus: Sequence[GpuType], wanted: Sequence[str]) -> list[dict[str, Any]]:
    """``orchestrator gpus --json``: the catalog, cheapest Secure Cloud price first; ``priority`` is the
    1-based place in ``RUNPOD_GPU_TYPE`` (None when not configured)."""
    rows = []
    for g in sorted(gpus, key=lambda g: (g.secure_price is None, g.secure_price or 0.0, g.display_name)):
        priority = next((i + 1 for i, w in enumerate(wanted) if g.matches(w)), None)
        rows.append(
            {
                "priority": priority,
                "id": g.id,
                "display_name": g.display_name,
                "memory_gb": g.memory_gb,
                "secure_price": g.secure_price,
                "community_price": g.community_price,
                "available": g.available,
                "availability": g.availability,
                "data_centers": list(g.data_centers),
            }
        )
    return rows


def volumes_rows(
    volumes: Sequence[NetworkVolume],
    storage_names: Sequence[str],
    wanted: Sequence[str],
    gpus: Sequence[GpuType] | None,
    gpu_error: str | None = None,
) -> dict[str, Any]:
    """``orchestrator volumes --json``: the volumes of ``RUNPOD_STORAGE_NAME`` in the order spawns try
    them, then the account's others.

    ``gpu_types_in_stock`` lists the configured GPU types in stock in the volume's data center by the
    catalog; it is None when that is not known (no catalog, or one without data centers, as over GraphQL).
    """
    stock: dict[str, list[str]] = {}
    per_dc_known = gpus is not None and any(g.data_centers for g in gpus)
    for g in gpus or ():
        if any(g.matches(w) for w in wanted):
            for dc in g.data_centers:
                stock.setdefault(dc, []).append(g.display_name)

    def row(priority: int | None, name: str, v: NetworkVolume | None) -> dict[str, Any]:
        return {
            "priority": priority,
            "name": name,
            "exists": v is not None,
            "id": v.id if v else None,
            "size_gb": v.size_gb if v else None,
            "data_center": v.data_center if v else None,
            "configured": priority is not None,
            "gpu_types_in_stock": stock.get(v.data_center, [])
            if v is not None and per_dc_known and priority
            else None,
        }

    rows = [
        row(i, name, next((v for v in volumes if v.name == name), None))
        for i, name in enumerate(storage_names, start=1)
    ]
    rows += [
        row(None, v.name, v)
        for v in sorted(volumes, key=lambda v: (v.data_center, v.name))
        if v.name not in storage_names
    ]
    return {"storage_names": list(storage_names), "gpu_stock_error": gpu_error, "volumes": rows}


def termination_row(worker_id: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """What ``workers terminate`` reports: the state and the request, not the row's whole metadata."""
    raw = row.get("metadata")
    metadata: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    return {
        "worker_id": worker_id,
        "status": row.get("status"),
        "terminate_requested_at": metadata.get("terminate_requested_at"),
        "terminate_requested_by": metadata.get("terminate_requested_by"),
    }


# --- the provider's catalog (`orchestrator gpus`, `orchestrator volumes`) -----------------------------


def format_gpus(client: RunpodProvider) -> str:
    """``orchestrator gpus``: GPU types, memory, Secure Cloud price and availability."""
    gpus = client.list_gpu_types(with_availability=True)
    wanted = [w.casefold() for w in client.gpu_types]
    rows = []
    for g in sorted(gpus, key=lambda g: (g.secure_price is None, g.secure_price or 0.0, g.display_name)):
        prio = next((str(i + 1) for i, w in enumerate(wanted) if g.matches(w)), "")
        rows.append(
            [
                prio,
                g.display_name,
                g.id,
                f"{g.memory_gb} GB" if g.memory_gb is not None else "?",
                f"${g.secure_price:.2f}/h" if g.secure_price is not None else "?",
                g.availability or ("yes" if g.available else "no" if g.available is False else "?"),
                ",".join(g.data_centers),
            ]
        )
    head = table(["prio", "name", "id", "memory", "secure", "availability", "data centers"], rows)
    return head + f"\n({len(gpus)} GPU types via {client.transport.name}; prio = RUNPOD_GPU_TYPE order)"


def format_volumes(client: RunpodProvider) -> str:
    """``orchestrator volumes``: the volumes of ``RUNPOD_STORAGE_NAME`` in priority order, each with its
    data center and whether a spawn can use it, then the account's other volumes.

    Usable means: the volume exists, and at least one GPU type of ``RUNPOD_GPU_TYPE`` is in stock in its
    data center by the catalog's availability (REST v2 reports it per data center; over GraphQL it is
    not known per data center, shown as "?"). Whether the volume holds the worker's checkout is only
    known from inside a pod: the initialization checks say so.
    """
    vols = client.list_network_volumes(fresh=True)
    stock: dict[str, list[str]] = {}
    per_dc_known = False
    catalog_error = ""
    if client.storage_names:
        try:
            gpus = client.list_gpu_types(with_availability=True)
        except errors.RunpodError as e:
            gpus, catalog_error = [], f"{type(e).__name__}: {e}"[:120]
        wanted = [g for g in gpus if any(g.matches(w) for w in client.gpu_types)]
        per_dc_known = any(g.data_centers for g in gpus)
        for g in wanted:
            for dc in g.data_centers:
                stock.setdefault(dc, []).append(g.display_name)
    rows: list[list[str]] = []
    for prio, name in enumerate(client.storage_names, start=1):
        v = next((v for v in vols if v.name == name), None)
        if v is None:
            rows.append([str(prio), name, "-", "-", "-", "no: no such volume"])
            continue
        if catalog_error:
            usable = f"exists; GPU availability unknown ({catalog_error})"
        elif not per_dc_known:
            usable = "? exists; GPU stock per data center unknown"
        elif stock.get(v.data_center):
            usable = "yes: " + ", ".join(stock[v.data_center])
        else:
            usable = "no: none of RUNPOD_GPU_TYPE in stock there now"
        rows.append([str(prio), v.name, v.id, _size(v), v.data_center, usable])
    for v in sorted(vols, key=lambda v: (v.data_center, v.name)):
        if v.name not in client.storage_names:
            rows.append(["-", v.name, v.id, _size(v), v.data_center, "not in RUNPOD_STORAGE_NAME"])
    head = table(["prio", "name", "id", "size", "data center", "usable"], rows)
    note = (
        f"RUNPOD_STORAGE_NAME={client.storage_name!r}" if client.storage_name else "RUNPOD_STORAGE_NAME unset"
    )
    return head + f"\n({len(vols)} network volumes; {note}; prio = the order spawns try them)"


def _size(v: NetworkVolume) -> str:
    return f"{v.size_gb} GB" if v.size_gb is not None else "?"
