"""Text tables and JSON rows for operators: ``status``, ``plan``, ``pods``, ``events``, ``gpus``,
``volumes``, the one-line answers of ``pause``/``resume`` and ``workers terminate``, and the demo's
live view.

Pure functions of values (a Snapshot, pods, a Plan, the catalog); nothing here talks to a service. Secrets
never reach these tables: metadata is shown only through the fields named below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from orchestrator.adapters.provider import RunpodProvider
from orchestrator.adapters.runpod.base import GpuType, NetworkVolume
from orchestrator.core import errors
from orchestrator.core.actions import Plan
from orchestrator.core.observed import PodView, Snapshot, Worker


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _age(now: datetime, then: datetime | None) -> float | None:
    if then is None:
        return None
    return max(0.0, (now - then).total_seconds())


def _fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def worker_row(w: Worker, now: datetime) -> dict[str, Any]:
    age = _age(now, w.created_at)
    price = w.cost_per_hr
    return {
        "worker_id": w.id,
        "state": w.status.value,
        "runpod_id": w.runpod_id,
        "gpu_type": w.gpu_type or w.instance_type,
        "age_sec": age,
        "heartbeat_age_sec": _age(now, w.last_heartbeat),
        "current_task": w.running_task_ids[0] if w.running_task_ids else None,
        "running": w.running_count,
        "cost_per_hr": price,
        "spend_usd": round(price * (age or 0) / 3600.0, 4) if price else None,
        # What the worker last said about itself (crashed, error), kept beside our own state.
        "reported_status": w.reported_status,
        "reported_age_sec": _age(now, w.reported_at),
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
        "spend_per_hr": round(sum(w["cost_per_hr"] or 0 for w in workers), 4),
        "spend_usd": round(sum(w["spend_usd"] or 0 for w in workers), 4),
    }


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
            ),
            _fmt_age(w["age_sec"]),
            _fmt_age(w["heartbeat_age_sec"]),
            w["current_task"] or "-",
            f"{w['cost_per_hr']:.2f}" if w["cost_per_hr"] else "-",
            f"{w['spend_usd']:.2f}" if w["spend_usd"] else "-",
        )
        for w in data["workers"]
    ]
    q = data["queue"]
    head = (
        f"queue: {q['claimable']} claimable ({q['queued_total']} queued), {q['running']} running, "
        f"oldest waiting {_fmt_age(q['oldest_claimable_age_sec'])}"
        f"   fleet: {len(rows)} live, ${data['spend_per_hr']:.2f}/h" + ("   PAUSED" if data["paused"] else "")
    )
    return head + "\n" + table(("WORKER", "STATE", "AGE", "HEARTBEAT", "TASK", "$/H", "SPENT $"), rows)


def render_plan(snapshot: Snapshot, pods: Sequence[PodView] | None, plan: Plan) -> str:
    d = plan.to_dict()
    lines = [
        f"desired {d['desired']} (demand from {d['demand_tasks']} tasks), capacity {d['capacity']}, live {d['live']}, "
        f"missing {d['missing']}, spend ${d['spend_per_hr']:.2f}/h, breaker {d['breaker']}"
        + (f", spawning blocked: {', '.join(d['spawn_blocked'])}" if d["spawn_blocked"] else ""),
        f"pods listed: {'unavailable' if pods is None else len(pods)}",
    ]
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


def pods_rows(snapshot: Snapshot, pods: Sequence[PodView], prefix: str) -> list[dict[str, Any]]:
    """Each pod beside the live row that claims it (by recorded id, else by name); orphans marked."""
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
                }
            )
    return rows


def render_pods(rows: Sequence[Mapping[str, Any]]) -> str:
    return table(
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
                "ORPHAN"
                if r["orphan"]
                else ("not ours" if not r["ours"] else ("no pod" if r["status"] == "MISSING" else "")),
            )
            for r in rows
        ],
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
