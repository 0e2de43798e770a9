"""Concurrency through the SQL: the app's claims and the real worker's heartbeats against our drains,
transitions and the lease, under contention.

Real threads over thread-safe pools against the real server: ours (PostgresTransport) for the
orchestrator's functions, a plain psycopg pool running the app's SQL as the service role for the
worker's side. Orderings are checked with timestamps taken around each call, never with sleeps.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from orchestrator.adapters.db.base import Database
from orchestrator.adapters.db.postgres import PostgresTransport

THREADS = 8
TASKS = 1000


@pytest.fixture
def pooled(database_url: str) -> Any:
    database = Database(PostgresTransport(database_url, min_size=THREADS, max_size=THREADS))
    yield database
    database.close()


class AppSide:
    """The app's SQL as its Edge Functions and the heartbeat RPC run it: as the service role, pooled."""

    def __init__(self, database_url: str) -> None:
        self.pool = ConnectionPool(
            database_url, min_size=2, max_size=THREADS, kwargs={"autocommit": True}, open=True
        )

    def run(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "select set_config('role', 'service_role', true), set_config('request.jwt.claim.role', 'service_role', true)"
            )
            cur = conn.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    def claim(self, worker_id: str) -> str | None:
        rows = self.run(
            "select task_id::text from public.claim_next_task_service_role(p_worker_id => %s)", (worker_id,)
        )
        return rows[0][0] if rows else None

    def complete(self, task_id: str, by: str) -> int:
        return len(self.run(
            "update public.tasks set status = 'Complete', output_location = %s, generation_processed_at = now()"
            " where id = %s and status = 'In Progress' returning id",
            (by, task_id),
        ))  # fmt: skip

    def heartbeat(self, worker_id: str) -> dict[str, Any]:
        rows = self.run(
            "select public.func_worker_heartbeat_with_logs(worker_id_param => %s, vram_total_mb_param => 24000,"
            " vram_used_mb_param => 100, logs_param => '[]', status_param => 'active')",
            (worker_id,),
        )
        return dict(rows[0][0])

    def close(self) -> None:
        self.pool.close()


@pytest.fixture
def app(database_url: str) -> Any:
    side = AppSide(database_url)
    yield side
    side.close()


def seed(database_url: str, workers: list[str], tasks: int, worker_status: str = "active") -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for wid in workers:
            conn.execute(
                "insert into workers (id, status, orchestrator_managed) values (%s, %s, true)",
                (wid, worker_status),
            )
        conn.execute(
            "insert into tasks (task_type, created_at) "
            "select 'generate', now() - make_interval(secs => %s - g) from generate_series(1, %s) g",
            (tasks, tasks),
        )


def test_eight_threads_claim_every_task_exactly_once(app: AppSide, database_url: str) -> None:
    workers = [f"w{i}" for i in range(THREADS)]
    seed(database_url, workers, TASKS)
    start = threading.Barrier(THREADS)

    def run(worker_id: str) -> list[str]:
        claimed: list[str] = []
        start.wait(timeout=30)
        while True:
            task_id = app.claim(worker_id)
            if task_id is None:
                return claimed
            claimed.append(task_id)
            assert app.complete(task_id, worker_id) == 1

    with ThreadPoolExecutor(THREADS) as pool:
        results = dict(zip(workers, pool.map(run, workers), strict=True))

    all_claimed = [tid for ids in results.values() for tid in ids]
    counts = Counter(all_claimed)
    assert len(all_claimed) == TASKS, "a task was lost or claimed twice"
    assert max(counts.values()) == 1, "a task was claimed twice"
    assert sum(1 for ids in results.values() if ids) >= 2, "the claims did not actually run concurrently"
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("select id::text, status::text, worker_id, output_location from tasks").fetchall()
    assert len(rows) == TASKS
    owner = {tid: wid for wid, ids in results.items() for tid in ids}
    for tid, status, worker_id, by in rows:
        assert status == "Complete" and worker_id == owner[tid] == by


def test_no_claim_succeeds_after_draining_returned(pooled: Database, app: AppSide, database_url: str) -> None:
    seed(database_url, ["w1"], 200)
    token = pooled.lease_acquire("leader", 60)["token"]
    log: list[tuple[float, bool]] = []
    stop = threading.Event()
    claimed_some = threading.Event()

    def claimer() -> None:
        while not stop.is_set():
            began = time.monotonic()
            try:
                got = app.claim("w1") is not None
            except psycopg.Error as exc:  # the tasks guard refuses a draining worker's claim (OR004)
                assert exc.sqlstate == "OR004", exc
                got = False
            log.append((began, got))
            if got:
                claimed_some.set()

    threads = [threading.Thread(target=claimer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        assert claimed_some.wait(timeout=30)
        pooled.transition_worker(token, "w1", "draining", "idle")
        drained_at = time.monotonic()
        deadline = drained_at + 10
        while not any(began > drained_at for began, _ in log) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling for a condition, bounded by the deadline
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    after = [got for began, got in log if began > drained_at]
    assert after and not any(after), "a draining worker claimed a task"
    assert any(got for _, got in log)


def test_heartbeats_racing_an_error_transition_never_revive(
    pooled: Database, app: AppSide, database_url: str
) -> None:
    seed(database_url, ["w1"], 0)
    token = pooled.lease_acquire("leader", 60)["token"]
    results: list[tuple[float, dict[str, Any]]] = []
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            began = time.monotonic()
            results.append((began, app.heartbeat("w1")))

    threads = [threading.Thread(target=beat) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while len(results) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        pooled.transition_worker(token, "w1", "error", "unhealthy")
        errored_at = time.monotonic()
        while not any(b > errored_at for b, _ in results[-50:]) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    late = [r for began, r in results if began > errored_at]
    assert late and all(r["success"] is True for r in late)  # the app's RPC succeeds, and changes no state
    worker = pooled.snapshot()["workers"][0]
    assert worker["status"] == "error" and worker["reported_status"] is None


def test_racing_lease_acquires_elect_one_holder(pooled: Database) -> None:
    barrier = threading.Barrier(THREADS)

    def acquire(i: int) -> dict[str, Any]:
        barrier.wait(timeout=30)
        return pooled.lease_acquire(f"holder-{i}", 30)

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(acquire, range(THREADS)))
    winners = [r for r in results if r["acquired"]]
    assert len(winners) == 1
    assert all(r["holder"] == winners[0]["holder"] for r in results)
