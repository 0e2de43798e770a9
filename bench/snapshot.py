"""Benchmark: the orchestrator's one read per tick (``orch_snapshot``) against the old per-worker reads.

Where it sits: the principle of constant round trips per tick (``docs/architecture.md``, principle 2).
The daemon reads its whole world with one SQL call; the system it replaces read the worker rows and
then queried each worker's tasks. This script builds a large production fleet on a throwaway
PostgreSQL (``TempPostgres``): 1,000 live workers, 100,000 queued and 1,000 running tasks (a tenth of
them parents, each with five queued children), plus the
history a year of production leaves behind (terminated workers, completed tasks). It then times both
ways through the real transports and counts their protocol round trips with libpq's trace, prints a
table and writes it to ``bench/results/snapshot.md``.

Run: ``.venv/bin/python bench/snapshot.py`` (``--quick`` for a smaller fleet while developing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.adapters.db.base import Database  # noqa: E402
from orchestrator.adapters.db.migrate import apply_migrations  # noqa: E402
from orchestrator.adapters.db.postgres import PostgresTransport  # noqa: E402
from orchestrator.standins.pg import TempPostgres  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "snapshot.md"


def populate(url: str, workers: int, queued: int, running: int, terminated: int, completed: int) -> None:
    """The fleet, set-based (a few statements, seconds)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            insert into workers (id, instance_type, status, last_heartbeat, metadata, created_at,
                                 status_changed_at, activated_at, orchestrator_prefix)
            select 'gpu-20261129_' || lpad(g::text, 6, '0') || '-' || substr(md5(g::text), 1, 8),
                   'NVIDIA GeForce RTX 4090', 'active', now() - make_interval(secs => g %% 20),
                   jsonb_build_object('runpod_id', substr(md5('pod' || g), 1, 14),
                                      'ssh_details', jsonb_build_object('ip', '10.0.0.1', 'port', 20000 + g),
                                      'vram_total_mb', 24564, 'vram_used_mb', 1000 + g,
                                      'vram_timestamp', now(), 'process_started_at', now() - interval '1 hour'),
                   now() - interval '2 hours', now() - interval '1 hour', now() - interval '1 hour', 'gpu'
            from generate_series(1, %s) g
            """,
            (workers,),
        )
        conn.execute(
            """
            insert into workers (id, instance_type, status, metadata, created_at, status_changed_at)
            select 'gpu-20250101_' || lpad(g::text, 6, '0') || '-dead', 'NVIDIA GeForce RTX 4090',
                   'terminated', '{"runpod_id": "gone"}', now() - interval '30 days', now() - interval '29 days'
            from generate_series(1, %s) g
            """,
            (terminated,),
        )
        conn.execute(
            """
            insert into tasks (task_type, params, status, created_at)
            select 'wan_2_2_t2v', jsonb_build_object('prompt', 'p' || g), 'Queued',
                   now() - make_interval(secs => g::float8 / 100)
            from generate_series(1, %s) g
            """,
            (queued,),
        )
        conn.execute(
            """
            insert into tasks (task_type, params, status, worker_id, generation_started_at, created_at)
            select case when g %% 10 = 0 then 'travel_orchestrator' else 'wan_2_2_t2v' end, '{}', 'In Progress',
                   w.id, now() - make_interval(secs => g %% 600), now() - interval '20 minutes'
            from generate_series(1, %s) g
            join (select id, row_number() over (order by id) as n from workers where status = 'active') w
              on w.n = 1 + (g - 1) %% %s
            """,
            (running, workers),
        )
        # Every tenth running task is a travel parent; each has five segments queued, which the snapshot
        # counts for it (children_live).
        conn.execute(
            """
            insert into tasks (task_type, params, status, created_at)
            select 'travel_segment', jsonb_build_object('orchestrator_task_id_ref', t.id::text), 'Queued',
                   now() - make_interval(secs => k)
            from tasks t, generate_series(1, 5) k
            where t.status = 'In Progress' and t.task_type = 'travel_orchestrator'
            """
        )
        conn.execute(
            """
            insert into tasks (task_type, params, status, worker_id, generation_started_at,
                               generation_processed_at, created_at, result_data)
            select 'wan_2_2_t2v', '{}', 'Complete', w.id, now() - make_interval(mins => g %% 5000 + 5),
                   now() - make_interval(mins => g %% 5000), now() - make_interval(mins => g %% 5000 + 10), '{}'
            from generate_series(1, %s) g
            join (select id, row_number() over (order by id) as n from workers) w
              on w.n = 1 + (g - 1) %% (select count(*) from workers)
            """,
            (completed,),
        )
        conn.execute("vacuum analyze tasks")
        conn.execute("vacuum analyze workers")


@contextmanager
def traced(conn: psycopg.Connection[Any]) -> Iterator[list[int]]:
    """Count round trips (ReadyForQuery messages) on a plain connection while the block runs."""
    box = [0]
    with tempfile.TemporaryFile(mode="w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield box
        finally:
            conn.pgconn.untrace()
            trace.seek(0)
            box[0] = sum(1 for line in trace if "\tReadyForQuery" in line)


def old_way(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """How the replaced system read its state: the worker rows, then one query per worker."""
    workers = conn.execute(
        "select id, status, metadata, last_heartbeat, created_at from workers where status <> 'terminated'"
    ).fetchall()
    queued = conn.execute("select count(*) from tasks where status = 'Queued'").fetchone()
    result = []
    for wid, status, metadata, heartbeat, created in workers:
        # One round trip per worker, each part served by the same partial indexes the snapshot uses.
        row = conn.execute(
            "select (select coalesce(array_agg(id), '{}') from tasks where worker_id = %(w)s and status = 'In Progress'), "
            "(select min(generation_started_at) from tasks where worker_id = %(w)s and status = 'In Progress'), "
            "(select max(generation_processed_at) from tasks where worker_id = %(w)s and status = 'Complete')",
            {"w": wid},
        ).fetchone()
        assert row is not None
        result.append(
            {
                "id": wid,
                "status": status,
                "metadata": metadata,
                "last_heartbeat": heartbeat,
                "created_at": created,
                "running": row[0],
                "oldest": row[1],
                "last_completion": row[2],
            }
        )
    return {"queued": queued[0] if queued else 0, "workers": result}


def timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    times = []
    value = None
    for _ in range(runs):
        started = time.perf_counter()
        value = fn()
        times.append((time.perf_counter() - started) * 1000)
    return times, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--running", type=int, default=1000)
    parser.add_argument("--terminated", type=int, default=3000)
    parser.add_argument("--completed", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--baseline-runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a tenth of the fleet, for a fast check")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        for name in ("workers", "queued", "running", "terminated", "completed"):
            setattr(args, name, max(1, getattr(args, name) // 10))

    with TempPostgres() as pg:
        url = pg.create_database("bench_snapshot")
        apply_migrations(url)
        started = time.perf_counter()
        populate(url, args.workers, args.queued, args.running, args.terminated, args.completed)
        populate_sec = time.perf_counter() - started

        transport = PostgresTransport(url, min_size=1, max_size=1)
        db = Database(transport)
        try:
            for _ in range(10):  # warm the caches
                db.snapshot()
            with transport.count_round_trips() as trips:
                for _ in range(10):
                    snap = db.snapshot()
            snap_trips = trips.count / 10
            snap_times, snap = timed(db.snapshot, args.runs)
            payload_kb = len(json.dumps(snap)) / 1024
        finally:
            db.close()
        assert len(snap["workers"]) == args.workers, len(snap["workers"])
        children = 5 * (args.running // 10)
        assert (
            snap["queue"]["queued_total"] == args.queued + children
            and snap["queue"]["running"] == args.running
        )
        held = [
            t for w in snap["workers"] for t in w["running_tasks"] if t["task_type"] == "travel_orchestrator"
        ]
        assert len(held) == args.running // 10 and all(t["children_live"] == 5 for t in held)

        with psycopg.connect(url, autocommit=True) as conn:
            old_way(conn)  # warm up
            with traced(conn) as box:
                old = old_way(conn)
            old_trips = box[0]
            old_times, old = timed(lambda: old_way(conn), args.baseline_runs)
            server = conn.execute("explain (analyze, format json) select orch_snapshot()").fetchone()
            server_ms = float(server[0][0]["Execution Time"]) if server else float("nan")
        assert len(old["workers"]) == args.workers

    snap_median = statistics.median(snap_times)
    old_median = statistics.median(old_times)
    rows = [
        ("orch_snapshot (one call)", snap_median, statistics.quantiles(snap_times, n=20)[-1], snap_trips),
        ("per-worker queries (old way)", old_median, max(old_times), float(old_trips)),
    ]
    header = (
        f"Fleet: {args.workers:,} live workers ({args.terminated:,} terminated rows), {args.queued:,} queued, "
        f"{args.running:,} running (a tenth of them travel parents, each with 5 segments queued besides), "
        f"{args.completed:,} completed tasks. PostgreSQL on this machine "
        f"({os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}), "
        f"client time including JSON decoding; {args.runs} runs (baseline {args.baseline_runs})."
    )
    # Loopback hides what round trips cost: add them back at typical network latencies (an estimate:
    # measured time + round trips x RTT; the daemon rarely sits on the database's host).
    rtts = (1.0, 20.0)
    lines = [
        "| way of reading the state | median ms (loopback) | p95/max ms | round trips per call | "
        + " | ".join(f"est. ms at {rtt:g} ms RTT" for rtt in rtts)
        + " |",
        "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in rtts) + " |",
    ]
    for name, median, high, trips_ in rows:
        estimates = " | ".join(f"{median + trips_ * rtt:,.0f}" for rtt in rtts)
        lines.append(f"| {name} | {median:.1f} | {high:.1f} | {trips_:g} | {estimates} |")
    ratio = old_median / snap_median
    verdict = "met" if snap_median < 25 and snap_trips == 1 else "NOT met"
    remote_ratio = (old_median + old_trips * rtts[1]) / (snap_median + snap_trips * rtts[1])
    summary = (
        f"Speed-up of the snapshot over the old way: {ratio:.1f}x in time on loopback, "
        f"about {remote_ratio:,.0f}x at {rtts[1]:g} ms RTT (Supabase over the internet), "
        f"{old_trips / snap_trips:,.0f}x in round trips. Goal (one round trip, median under 25 ms): {verdict}. "
        f"Server-side execution of orch_snapshot: {server_ms:.1f} ms; payload {payload_kb:,.0f} KiB. "
        f"(Populating took {populate_sec:.1f} s.)"
    )
    print(header)
    print("\n".join(lines))
    print(summary)
    if not args.no_save and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            "# Snapshot benchmark\n\n"
            f"Generated {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} by `.venv/bin/python bench/snapshot.py`.\n\n"
            f"{header}\n\n" + "\n".join(lines) + f"\n\n{summary}\n"
        )
        print(f"saved {RESULTS.relative_to(ROOT)}")
    return 0 if verdict == "met" else 1


if __name__ == "__main__":
    raise SystemExit(main())
