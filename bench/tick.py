"""Benchmark: the whole tick at 10, 100 and 1,000 workers, beside the old per-worker reads; daemon memory.

Where it sits: the principle of constant round trips per tick (``docs/architecture.md``, principle 2)
for the whole tick, not just the snapshot (``bench/snapshot.py`` measures that one call). ``Controller.tick()`` is lease, snapshot and
pod listing (concurrently), ``plan()``, apply, record. Setting, per fleet size N:

* a throwaway PostgreSQL (``TempPostgres``) with the migrations, holding N active workers, each running
  one task and heartbeating (a set-based heartbeat update every few seconds stands in for N workers'
  ``func_worker_heartbeat_with_logs`` calls; the rows are marked as the orchestrator's, so the workers
  guard trigger runs on each, as it does on the real heartbeats), a queue of 100 tasks per worker (capped at 100,000) that the fleet,
  at ``MAX_ACTIVE_GPUS = N``, is not allowed to grow for, and history (3N terminated workers, 100
  completed tasks per worker, capped at 100,000): a busy fleet at its ceiling, the steady state;
* the Runpod emulator in its own process holding the N matching RUNNING pods. Its pods are light
  stand-ins (``bench.common.LightSandbox``: no sshd, no simulated worker) so that 1,000 fit on 2
  cores; a steady-state tick never logs into a pod, so the control loop is measured unchanged.

The tick runs in a child process (``--child``) built the way ``orchestrator run`` builds it (settings
from the environment, ``make_provider``; the database transport is ``PostgresTransport`` with one
connection, as ``make_database`` builds it for DB_BACKEND=postgres but with a pool of one so that
libpq's trace sees every call) with counting wrappers around both ports; the emulator counts the HTTP
requests reaching it. Round trips per tick = SQL-function calls (checked against libpq's protocol
trace) + provider HTTP requests. The baseline is the old system's way of reading its state, one query
per worker (``bench/snapshot.py``'s ``old_way``), at the same sizes on the same database.

Memory: at 1,000 workers the real daemon (``orchestrator run``, apscheduler, LISTEN thread and all,
DB_BACKEND=postgres and again DB_BACKEND=supabase through the PostgREST-compatible endpoint) runs
for a number of ticks in a subprocess; its peak resident set is ``ru_maxrss`` from ``wait4`` on that
process alone (and ``VmHWM`` read just before SIGTERM). The emulator's memory is reported apart.

Run: ``.venv/bin/python bench/tick.py`` (``--quick`` for 10 and 100 workers only); writes
``bench/results/tick.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import (  # noqa: E402
    BENCH_REQUESTS_PATH,
    PYTHON,
    CountingProvider,
    CountingTransport,
    EmulatorProcess,
    pct,
    proc_status_kb,
    save_markdown,
)

RESULTS = ROOT / "bench" / "results" / "tick.md"
COMMAND = ".venv/bin/python bench/tick.py"
PREFIX = "gpu-"
RTT_MS = 20.0  # Supabase over the internet, as bench/snapshot.py estimates


def _old_way_module() -> Any:
    """bench/snapshot.py's baseline reader (imported, not copied, so both benches read the same way)."""
    spec = importlib.util.spec_from_file_location("bench_snapshot", ROOT / "bench" / "snapshot.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def worker_ids(n: int) -> list[str]:
    return [
        f"{PREFIX}20261129_{i:06d}-{hashlib.md5(str(i).encode()).hexdigest()[:8]}" for i in range(1, n + 1)
    ]


def populate(url: str, pods: list[dict[str, str]], queued: int, terminated: int, completed: int) -> None:
    """N active workers with their pods, one running task each, a queue and history (set-based)."""
    ids = [p["name"] for p in pods]
    runpod_ids = [p["id"] for p in pods]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            insert into workers (id, instance_type, status, last_heartbeat, metadata, created_at,
                                 status_changed_at, activated_at, orchestrator_prefix, boot_outcome, boot_outcome_at,
                                 orchestrator_managed)
            select w.id, 'NVIDIA GeForce RTX 4090', 'active', now(),
                   jsonb_build_object('runpod_id', w.rid, 'gpu_type', 'NVIDIA GeForce RTX 4090',
                                      'data_center', 'EU-RO-1', 'cost_per_hr', 0.69,
                                      'ssh_details', jsonb_build_object('ip', '127.0.0.1', 'port', 40000 + w.n),
                                      'vram_total_mb', 24564, 'vram_used_mb', 20000, 'vram_timestamp', now(),
                                      'process_started_at', now() - interval '1 hour',
                                      'orchestrator_prefix', %(prefix)s::text),
                   now() - interval '2 hours', now() - interval '1 hour', now() - interval '1 hour',
                   %(prefix)s, 'activated', now() - interval '1 hour', true
            from unnest(%(ids)s::text[], %(rids)s::text[]) with ordinality as w(id, rid, n)
            """,
            {"ids": ids, "rids": runpod_ids, "prefix": PREFIX},
        )
        conn.execute(
            """
            insert into workers (id, instance_type, status, metadata, created_at, status_changed_at, orchestrator_prefix,
                                 orchestrator_managed)
            select %(prefix)s || '20250101_' || lpad(g::text, 6, '0') || '-dead', 'NVIDIA GeForce RTX 4090',
                   'terminated', '{"runpod_id": "gone"}', now() - interval '30 days', now() - interval '29 days', %(prefix)s,
                   true
            from generate_series(1, %(n)s) g
            """,
            {"n": terminated, "prefix": PREFIX},
        )
        conn.execute(
            """
            insert into tasks (task_type, params, status, worker_id, generation_started_at, created_at)
            select 'wan_2_2_t2v', '{}', 'In Progress', w.id, now() - make_interval(secs => 10 + w.n %% 300),
                   now() - interval '20 minutes'
            from unnest(%(ids)s::text[]) with ordinality as w(id, n)
            """,
            {"ids": ids},
        )
        conn.execute(
            """
            insert into tasks (task_type, params, status, created_at)
            select 'wan_2_2_t2v', jsonb_build_object('prompt', 'p' || g), 'Queued',
                   now() - make_interval(secs => g::float8 / 100)
            from generate_series(1, %(n)s) g
            """,
            {"n": queued},
        )
        conn.execute(
            """
            insert into tasks (task_type, params, status, worker_id, generation_started_at,
                               generation_processed_at, created_at, result_data)
            select 'wan_2_2_t2v', '{}', 'Complete', w.id, now() - make_interval(mins => g %% 5000 + 5),
                   now() - make_interval(mins => g %% 5000 + 2), now() - make_interval(mins => g %% 5000 + 10), '{}'
            from generate_series(1, %(n)s) g
            join (select id, row_number() over (order by id) as n from workers) w
              on w.n = 1 + (g - 1) %% (select count(*) from workers)
            """,
            {"n": completed},
        )
        conn.execute("vacuum analyze tasks")
        conn.execute("vacuum analyze workers")


class Heartbeats:
    """Keeps every live worker's heartbeat fresh, as N workers heartbeating every few seconds would."""

    def __init__(self, url: str, every: float = 5.0) -> None:
        self.url = url
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-heartbeats", daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                conn.execute(
                    "update workers set last_heartbeat = now(), "
                    "metadata = metadata || jsonb_build_object('vram_timestamp', now()) "
                    "where status = 'active'"
                )
                self._stop.wait(self.every)

    def __enter__(self) -> Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def daemon_env(base: dict[str, str], n: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RUNPOD_", "SUPABASE_", "DATABASE_", "DB_", "ORCHESTRATOR_"))
    }
    env.update(
        {
            "RUNPOD_API_KEY": "rpa_bench_emulator_key",
            "RUNPOD_STORAGE_NAME": "workspace",
            "DB_BACKEND": "postgres",
            "MIN_ACTIVE_GPUS": "0",
            "MAX_ACTIVE_GPUS": str(n),
            "TASKS_PER_GPU_THRESHOLD": "1",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
        }
    )
    env.update(base)
    return env


# --- the child: ticks with counters ------------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    import httpx

    from orchestrator.adapters.db.base import Database
    from orchestrator.adapters.db.postgres import PostgresTransport
    from orchestrator.core import config
    from orchestrator.logs import configure_logging
    from orchestrator.loop.controller import Controller
    from orchestrator.wiring import make_provider

    settings = config.load_settings(os.environ, env_file=None)
    configure_logging(settings, stream=sys.stderr, level="WARNING", fmt="json")
    pg = PostgresTransport(settings.database_url, min_size=1, max_size=1)
    transport = CountingTransport(pg)
    provider = CountingProvider(make_provider(settings))
    controller = Controller(settings, Database(transport), provider)

    def http_counts() -> Counter[str]:
        return Counter(httpx.get(settings.runpod_api_base_url + BENCH_REQUESTS_PATH, timeout=30).json())

    try:
        for _ in range(args.warmup):  # lease taken, prices read (then cached for 10 minutes), caches warm
            controller.tick()
        transport.take()
        provider.take()
        http_before = http_counts()
        times: list[float] = []
        db_calls: Counter[str] = Counter()
        provider_calls: Counter[str] = Counter()
        actions: Counter[str] = Counter()
        roles: Counter[str] = Counter()
        desired: list[int] = []
        for _ in range(args.ticks):
            started = time.perf_counter()
            result = controller.tick()
            times.append((time.perf_counter() - started) * 1000)
            db_calls += transport.take()
            provider_calls += provider.take()
            roles[result.role] += 1
            if result.plan is not None:
                actions.update(a.kind for a in result.plan.actions)
                desired.append(result.plan.desired)
        http = http_counts() - http_before
        # Protocol round trips: libpq's trace on the one pooled connection, a few ticks (tracing the
        # ~1 MB snapshot payload as text is slow, so these ticks are not timed).
        with pg.count_round_trips() as trips:
            for _ in range(args.trace_ticks):
                controller.tick()
        workers = len(result.snapshot.workers) if result.snapshot else -1
        breakdown = _breakdown(controller, pg, provider, settings, args.ticks)
    finally:
        controller.shutdown()
    out = {
        "ticks": args.ticks,
        "times_ms": times,
        "db_calls": dict(db_calls),
        "provider_calls": dict(provider_calls),
        "http": dict(http),
        "protocol_round_trips": trips.count / max(1, args.trace_ticks),
        "actions": dict(actions),
        "roles": dict(roles),
        "desired": desired[-1] if desired else None,
        "workers_seen": workers,
        "VmHWM_kb": proc_status_kb("self", "VmHWM"),
        "breakdown_ms": breakdown,
    }
    print(json.dumps(out))
    return 0


def _breakdown(controller: Any, pg: Any, provider: Any, settings: Any, runs: int) -> dict[str, float]:
    """Median ms of the tick's parts, each called alone (sequentially, so they do not overlap)."""
    from datetime import UTC, datetime

    import httpx

    from orchestrator.core import policy
    from orchestrator.core.observed import PodView, Snapshot

    parts: dict[str, list[float]] = {
        k: []
        for k in (
            "lease",
            "snapshot_call",
            "snapshot_parse",
            "raw_get",
            "list_pods_call",
            "pods_parse",
            "plan",
        )
    }
    with httpx.Client(
        headers={"Authorization": f"Bearer {settings.runpod_api_key}"}, timeout=30
    ) as raw_client:
        for _ in range(max(5, runs // 2)):
            t = time.perf_counter()
            raw_client.get(settings.runpod_api_base_url + "/v2/pods").raise_for_status()
            parts["raw_get"].append((time.perf_counter() - t) * 1000)
    for _ in range(max(5, runs // 2)):
        t = time.perf_counter()
        controller.db.lease_acquire(controller.holder, settings.lease_ttl_sec)
        t1 = time.perf_counter()
        raw = pg.call("orch_snapshot", {"p_prefix": settings.worker_id_prefix})
        t2 = time.perf_counter()
        snap = Snapshot.from_json(raw)
        t3 = time.perf_counter()
        pods = provider.inner.list_pods()
        t4 = time.perf_counter()
        views = [PodView.from_pod(p) for p in pods]
        t5 = time.perf_counter()
        policy.plan(
            snap, views, settings, snap.now or datetime.now(UTC), prices=controller.gather().catalog.prices
        )
        t6 = time.perf_counter()
        for key, a, b in (
            ("lease", t, t1),
            ("snapshot_call", t1, t2),
            ("snapshot_parse", t2, t3),
            ("list_pods_call", t3, t4),
            ("pods_parse", t4, t5),
            ("plan", t5, t6),
        ):
            parts[key].append((b - a) * 1000)
    return {k: round(statistics.median(v), 2) for k, v in parts.items()}


def run_child(env: dict[str, str], ticks: int, warmup: int, trace_ticks: int) -> tuple[dict[str, Any], int]:
    """The child's JSON and its peak RSS in kB (ru_maxrss of that one process, from wait4)."""
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(
            [
                PYTHON,
                str(Path(__file__).resolve()),
                "--child",
                "--ticks",
                str(ticks),
                "--warmup",
                str(warmup),
                "--trace-ticks",
                str(trace_ticks),
            ],
            env=env,
            stdout=out,
            stderr=err,
            cwd=tempfile.gettempdir(),
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, errors_text = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"tick child failed ({proc.returncode}): {errors_text[-3000:]}")
    if errors_text.strip():
        print("child stderr (warnings):", errors_text[-1500:], file=sys.stderr)
    return json.loads(text.strip().splitlines()[-1]), int(usage.ru_maxrss)


# --- the real daemon's memory -------------------------------------------------------------------------


def daemon_memory(env: dict[str, str], seconds: float) -> dict[str, Any]:
    """Run ``orchestrator run`` for ``seconds``, SIGTERM it; its peak RSS and what its ticks said."""
    env = {**env, "LOG_LEVEL": "INFO", "ORCHESTRATOR_POLL_SEC": "1", "LEASE_TTL_SEC": "30"}
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "orchestrator"), "run"],
            env=env,
            stdout=out,
            stderr=err,
            cwd=tempfile.gettempdir(),  # no stray .env
        )
        deadline = time.monotonic() + seconds
        hwm = 0
        while time.monotonic() < deadline and proc.poll() is None:
            hwm = max(hwm, proc_status_kb(proc.pid, "VmHWM"))
            time.sleep(0.5)
        hwm = max(hwm, proc_status_kb(proc.pid, "VmHWM"))
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = out.read().splitlines()
        errors_text = err.read()
    summaries = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "tick_summary":
            summaries.append(rec)
    if proc.returncode != 0 or not summaries:
        raise RuntimeError(
            f"daemon run failed (exit {proc.returncode}, {len(summaries)} ticks): {errors_text[-2000:]} {lines[-5:]}"
        )
    durations = [float(s["duration_ms"]) for s in summaries[1:]] or [float(summaries[0]["duration_ms"])]
    spawned = sum(int(s["actions"]["spawned"]) for s in summaries)
    return {
        "ru_maxrss_kb": int(usage.ru_maxrss),
        "VmHWM_kb": hwm,
        "ticks": len(summaries),
        "tick_ms_median": statistics.median(durations),
        "workers_active": summaries[-1]["status"].get("active"),
        "spawned": spawned,
        "exit": proc.returncode,
    }


# --- the parent ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--trace-ticks", type=int, default=3)
    parser.add_argument("--baseline-runs", type=int, default=7)
    parser.add_argument("--daemon-seconds", type=float, default=25.0)
    parser.add_argument("--quick", action="store_true", help="10 and 100 workers, fewer ticks, no save")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    if args.quick:
        args.sizes, args.ticks, args.daemon_seconds = "10,100", 10, 8.0

    from orchestrator.adapters.db.migrate import apply_migrations
    from orchestrator.logs import configure_logging
    from orchestrator.standins.pg import TempPostgres
    from orchestrator.standins.postgrest.server import PostgrestServer
    from orchestrator.standins.stack import make_keypair

    load_start = os.getloadavg()[0]
    configure_logging(None, stream=sys.stderr, level="WARNING", fmt="json")
    old_way_mod = _old_way_module()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    memory: dict[str, dict[str, Any]] = {}
    emulator_mem: dict[str, int] = {}
    keydir = Path(tempfile.mkdtemp(prefix="bench-tick-keys-"))
    private, public = make_keypair(keydir)
    with contextlib.ExitStack() as cleanup, TempPostgres() as pg, EmulatorProcess() as emu:
        cleanup.callback(shutil.rmtree, keydir, True)
        for n in sizes:
            url = pg.create_database(f"bench_tick_{n}")
            apply_migrations(url)
            emu.request("reset")
            pods = emu.request("create", names=worker_ids(n))
            queued, terminated, completed = min(100 * n, 100_000), 3 * n, min(100 * n, 100_000)
            populate(url, pods, queued, terminated, completed)
            env = daemon_env(
                {
                    "RUNPOD_API_BASE_URL": emu.url,
                    "RUNPOD_SSH_PRIVATE_KEY_PATH": str(private),
                    "RUNPOD_SSH_PUBLIC_KEY_PATH": str(public),
                    "DATABASE_URL": url,
                },
                n,
            )
            with Heartbeats(url):
                result, child_rss = run_child(env, args.ticks, args.warmup, args.trace_ticks)
                if n == max(sizes):
                    memory["postgres"] = daemon_memory(env, args.daemon_seconds)
                    rest = PostgrestServer(url, "sb_service_bench", "sb_anon_bench")
                    try:
                        supabase_url = rest.start()
                        memory["supabase"] = daemon_memory(
                            {
                                **env,
                                "DB_BACKEND": "supabase",
                                "SUPABASE_URL": supabase_url,
                                "SUPABASE_SERVICE_ROLE_KEY": "sb_service_bench",
                                "SUPABASE_ANON_KEY": "sb_anon_bench",
                            },
                            args.daemon_seconds,
                        )
                    finally:
                        rest.stop()
                    emulator_mem = emu.request("mem")
            with psycopg.connect(url, autocommit=True) as conn:
                old_way_mod.old_way(conn)  # warm up
                with old_way_mod.traced(conn) as box:
                    old = old_way_mod.old_way(conn)
                old_times, _ = old_way_mod.timed(lambda: old_way_mod.old_way(conn), args.baseline_runs)
            assert len(old["workers"]) == n, len(old["workers"])
            ticks = result["ticks"]
            db_per_tick = sum(result["db_calls"].values()) / ticks
            http_per_tick = sum(result["http"].values()) / ticks
            row = {
                "n": n,
                "tick_median": statistics.median(result["times_ms"]),
                "tick_p95": pct(result["times_ms"], 0.95),
                "db_per_tick": db_per_tick,
                "db_detail": {k: v / ticks for k, v in sorted(result["db_calls"].items())},
                "protocol": result["protocol_round_trips"],
                "http_per_tick": http_per_tick,
                "http_detail": {k: v / ticks for k, v in sorted(result["http"].items())},
                "provider_detail": {k: v / ticks for k, v in sorted(result["provider_calls"].items())},
                "actions": result["actions"],
                "roles": result["roles"],
                "workers_seen": result["workers_seen"],
                "child_rss_kb": child_rss,
                "breakdown": result["breakdown_ms"],
                "old_trips": box[0],
                "old_median": statistics.median(old_times),
                "old_max": max(old_times),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            if row["workers_seen"] != n or row["roles"].get("leader") != ticks:
                raise RuntimeError(f"not a steady state at {n}: {row}")
            pg.drop_database(f"bench_tick_{n}")

    header = (
        f"Steady state per fleet size N: N active workers, each running a task and heartbeating, 100 queued tasks "
        f"per worker (at most 100,000) held back by `MAX_ACTIVE_GPUS = N`, 3N terminated rows and 100 completed tasks per "
        f"worker (at most 100,000); the emulator (its own process) holds the N RUNNING pods. **Pods are light stand-ins "
        f"(no sshd, no simulated worker) so that 1,000 fit on {os.cpu_count()} cores**; a steady-state tick does not log "
        f"into pods. {args.ticks} timed ticks per size after {args.warmup} warm-up ticks, DB_BACKEND=postgres, "
        f"{platform.python_implementation()} {platform.python_version()}, PostgreSQL and the emulator on this machine (loopback)."
    )
    header += (
        f" Load average (1 min) of this shared machine: {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
        " (other work running at the same time slows the timings; the round-trip counts do not change)."
    )
    lines = [
        "| workers | ours: DB round trips / tick | ours: provider HTTP / tick | ours: round trips / tick | "
        "ours: median tick ms (p95) | old: round trips to read state | old: median read ms | "
        f"ours est. ms at {RTT_MS:g} ms RTT | old est. ms at {RTT_MS:g} ms RTT |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ours_trips = r["db_per_tick"] + r["http_per_tick"]
        # Loopback hides round trips; add them back at a typical RTT (estimate = measured + trips x RTT;
        # the lease call runs before the snapshot and the pod listing, which run concurrently: 2 sequential).
        ours_est = r["tick_median"] + 2 * RTT_MS
        old_est = r["old_median"] + r["old_trips"] * RTT_MS
        lines.append(
            f"| {r['n']:,} | {r['db_per_tick']:g} (libpq: {r['protocol']:g}) | {r['http_per_tick']:g} | {ours_trips:g} | "
            f"{r['tick_median']:.1f} ({r['tick_p95']:.1f}) | {r['old_trips']:,} | {r['old_median']:.1f} | "
            f"{ours_est:,.0f} | {old_est:,.0f} |"
        )
    details = ["", "What the round trips are, per tick (measured, averaged over the timed ticks):", ""]
    for r in rows:
        details.append(
            f"- {r['n']:,} workers: SQL functions {r['db_detail']}; provider methods {r['provider_detail']}; "
            f"HTTP requests at the emulator {r['http_detail']}; planned actions {r['actions'] or 'none'}; "
            f"tick runner peak RSS {r['child_rss_kb'] / 1024:.0f} MiB."
        )
    details += [
        "",
        "Where the time goes (median ms of each part called alone, sequentially; in the tick the snapshot "
        "and the pod listing overlap):",
        "",
        "| workers | lease call | snapshot call (incl. JSON decode) | Snapshot.from_json | pod listing call "
        "(incl. parsing) | of which the emulator's answer (a bare GET /v2/pods) | PodView.from_pod | plan() |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        b = r["breakdown"]
        details.append(
            f"| {r['n']:,} | {b['lease']:.1f} | {b['snapshot_call']:.1f} | {b['snapshot_parse']:.1f} | "
            f"{b['list_pods_call']:.1f} | {b['raw_get']:.1f} | {b['pods_parse']:.1f} | {b['plan']:.1f} |"
        )
    constant = len({round(r["db_per_tick"] + r["http_per_tick"], 3) for r in rows}) == 1
    mem_lines: list[str] = []
    verdict_mem = "not measured"
    if memory:
        mem_lines = [
            "",
            f"Memory at {max(sizes):,} workers: the real daemon (`orchestrator run`, ORCHESTRATOR_POLL_SEC=1) in its own "
            f"process for {args.daemon_seconds:g} s against the same fleet, then SIGTERM:",
            "",
            "| process | ticks run | median tick ms (its own log) | peak RSS (ru_maxrss, wait4) | VmHWM before SIGTERM |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for backend, m in memory.items():
            mem_lines.append(
                f"| daemon, DB_BACKEND={backend} | {m['ticks']} | {m['tick_ms_median']:.1f} | "
                f"{m['ru_maxrss_kb'] / 1024:.1f} MiB | {m['VmHWM_kb'] / 1024:.1f} MiB |"
            )
        if emulator_mem:
            mem_lines.append(
                f"| emulator (separate process, {max(sizes):,} light pods; not the daemon) | - | - | - | "
                f"{emulator_mem['VmHWM_kb'] / 1024:.1f} MiB |"
            )
        peak = max(m["ru_maxrss_kb"] for m in memory.values()) / 1024
        verdict_mem = f"{'met' if peak < 150 else 'NOT met'} (worst {peak:.0f} MiB)"
        extra_spawns = sum(m["spawned"] for m in memory.values())
        if extra_spawns:
            mem_lines.append(
                f"\nNote: the daemon spawned {extra_spawns} pods during the memory runs (not a steady state)."
            )
    big = rows[-1]
    trips_list = ", ".join(f"{r['db_per_tick'] + r['http_per_tick']:g}" for r in rows)
    sizes_list = ", ".join(f"{r['n']:,}" for r in rows)
    summary = (
        f"\nRound trips per tick constant in fleet size: {'yes' if constant else 'NO'} "
        f"({trips_list} at {sizes_list} workers), "
        f"against N + 2 for the old way of reading state alone. At {big['n']:,} workers the whole tick takes "
        f"{big['tick_median']:.0f} ms on loopback against {big['old_median']:.0f} ms for the old reads alone "
        f"(old/ours = {big['old_median'] / big['tick_median']:.1f}); old/ours about "
        f"{(big['old_median'] + big['old_trips'] * RTT_MS) / (big['tick_median'] + 2 * RTT_MS):,.0f}x at {RTT_MS:g} ms RTT. "
        f"Memory goal (daemon under 150 MB at {max(sizes):,} workers): {verdict_mem}.\n\n"
        "Baseline: the old system read all worker rows, the task counts, then one query per worker (bench/snapshot.py's "
        "`old_way`, psycopg on the same database); its pod listing every 10th cycle is left out, which flatters it. "
        "Ours is the whole tick (lease, snapshot and pod listing, plan, apply, record). The old tick's state reads alone "
        "are compared with our whole tick. The RTT estimates add round trips x RTT to the loopback time; ours counts 2 "
        "sequential round trips (the lease, then the snapshot and the pod listing concurrently). The GPU price listing "
        "(one provider call every 10 minutes) falls in the warm-up ticks."
    )
    body = (
        "\n\n".join([header, "\n".join(lines)])
        + "\n"
        + "\n".join(details)
        + "\n"
        + "\n".join(mem_lines)
        + "\n"
        + summary
    )
    print(body)
    if not args.no_save and not args.quick:
        save_markdown(RESULTS, "Tick benchmark", COMMAND, body)
    return 0 if constant and (not memory or verdict_mem.startswith("met")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
