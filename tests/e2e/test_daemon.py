"""End-to-end: ``orchestrator run`` as a process - one leader, clean SIGTERM, LISTEN/NOTIFY wake-ups.

What it must do: of two ``orchestrator run`` processes only one ever spawns, and killing it hands over
within the lease TTL; SIGTERM finishes the tick, releases the lease and exits 0; over the direct
Postgres adapter it wakes at once when a task is queued (LISTEN/NOTIFY from a trigger). Each daemon is a real
subprocess (``--env-file /dev/null``, the stack's environment); assertions read its JSON log, the
database and the emulator.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime
from typing import Any

import pytest

from orchestrator.standins.stack import Stack
from tests.e2e.conftest import all_done, drained, events, pods, wait_until, workers

pytestmark = pytest.mark.e2e

LEASE_TTL = 6.0


def _ts(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(line["ts"]).replace("Z", "+00:00")).timestamp()


def test_two_daemons_one_spawns_and_the_follower_takes_over_when_the_leader_dies(
    stack: Stack, cli_process: Any
) -> None:
    env = {"MAX_ACTIVE_GPUS": 2, "LEASE_TTL_SEC": LEASE_TTL}
    leader = cli_process("run", env=env)
    [acquired] = leader.wait_logged("lease_acquired", 30)
    leader_holder, leader_token = acquired["holder"], acquired["token"]
    follower = cli_process("run", env=env)
    follower.wait_logged("lease_held_elsewhere", 30)

    stack.enqueue(4, duration_sec=1.0)
    wait_until(lambda: all_done(stack, 4), 60, "the first batch done by the leader's fleet", interval=0.25)
    before = events(stack, "pod_created")
    assert before and {e["details"]["holder"] for e in before} == {leader_holder}
    assert {e["details"]["token"] for e in before} == {leader_token}
    assert not follower.logged("lease_acquired") and not follower.logged("worker_spawned")

    # Kill the leader outright: no release. The follower runs on the same machine: it finds the holder's
    # process gone at its next check and takes the lease over, rather than wait out the TTL with nobody
    # acting for the fleet. (A leader that is alive but frozen keeps its lease until it expires: the
    # next test.)
    killed_at = time.time()
    leader.signal(signal.SIGKILL)
    assert leader.wait(10) == -9
    [took_over] = follower.wait_logged("lease_acquired", LEASE_TTL + 10)
    handover = _ts(took_over) - killed_at
    [taken] = follower.logged("lease_taken_over")
    assert taken["previous_holder"] == leader_holder
    assert handover >= -0.5, "took the lease of a leader still alive"
    # Measured from the leader's last renewal (its last tick, by the log's own clock): before that lease
    # would have expired, so not by expiry.
    last_renewal = max(_ts(line) for line in leader.logged("tick_summary"))
    waited = _ts(took_over) - last_renewal
    assert waited < LEASE_TTL, f"waited {waited:.2f}s: the TTL ran out instead of a take-over"
    assert took_over["token"] > leader_token
    wait_until(
        lambda: [line for line in follower.logged("tick_summary") if _ts(line) >= _ts(took_over)],
        10,
        "the new leader's first tick",
    )

    # The new leader runs the fleet: more work, then scale to zero, with no second pod for anyone.
    stack.enqueue(4, duration_sec=1.0)
    wait_until(lambda: all_done(stack, 8), 60, "the second batch done under the new leader", interval=0.25)
    wait_until(lambda: drained(stack), 60, "scale to zero under the new leader", interval=0.25)
    created = events(stack, "pod_created")
    holders = [e["details"]["holder"] for e in created]
    assert set(holders) <= {leader_holder, took_over["holder"]}
    # Only one process ever spawned at a time: the leader's spawns all precede the handover.
    for e in created:
        if e["details"]["holder"] == leader_holder:
            assert e["at"].timestamp() < killed_at
        else:
            assert e["at"].timestamp() >= _ts(took_over) - 0.5
    all_pods = pods(stack)
    assert len(all_pods) == len(created), "a pod was created that no leader recorded"
    assert len({p["name"] for p in all_pods}) == len(all_pods)
    # A handover is no foreign orchestrator: each leader knows its own spawns, and the rows of the one
    # before were made before it led.
    assert not leader.logged("foreign_workers") and not follower.logged("foreign_workers")
    print(f"handover {handover:.2f}s after SIGKILL (TTL {LEASE_TTL}s)")


def test_rows_another_orchestrator_creates_on_our_prefix_are_named_once(
    stack: Stack, cli_process: Any
) -> None:
    """The orchestrator this one replaces names its workers gpu-... too and takes no lease: left running,
    the two fight over the fleet. A row with our prefix created while the daemon leads, not by it, is
    named in a `foreign_workers` warning, once, with what to do; the daemon's own spawns never are."""
    daemon = cli_process("run", env={"MAX_ACTIVE_GPUS": 2})
    daemon.wait_logged("lease_acquired", 30)
    stack.enqueue(2, duration_sec=1.0)
    wait_until(lambda: all_done(stack, 2), 60, "a burst served by the daemon's own workers", interval=0.25)
    wait_until(lambda: daemon.logged("tick_summary"), 10, "a tick")
    assert not daemon.logged("foreign_workers"), "its own spawns are not foreign"
    # What the old orchestrator does when it spawns: a row of its own, straight into the table.
    stack.sql(
        "INSERT INTO workers (id, instance_type, status, metadata, created_at) "
        "VALUES ('gpu-20261207_120000-0ld0rch1', 'NVIDIA GeForce RTX 4090', 'active', '{}', now())"
    )
    [said] = daemon.wait_logged("foreign_workers", 30)
    assert said["worker_ids"] == ["gpu-20261207_120000-0ld0rch1"] and said["count"] == 1
    assert "WORKER_ID_PREFIX" in said["hint"]
    ticks = len(daemon.logged("tick_summary"))
    wait_until(lambda: len(daemon.logged("tick_summary")) >= ticks + 2, 30, "two more ticks")
    assert len(daemon.logged("foreign_workers")) == 1, "named once"


FAST_POLL = 1.0


def test_a_frozen_leader_that_wakes_up_after_the_handover_does_not_spawn(
    stack: Stack, cli_process: Any
) -> None:
    """SIGSTOP past the TTL (a long GC pause, a suspended VM): the fencing token keeps it out."""
    env = {"MAX_ACTIVE_GPUS": 2, "LEASE_TTL_SEC": 4}
    old = cli_process("run", env=env)
    [old_lease] = old.wait_logged("lease_acquired", 30)
    new = cli_process("run", env=env)
    new.wait_logged("lease_held_elsewhere", 30)
    stack.enqueue(2, duration_sec=0.5)
    wait_until(lambda: events(stack, "pod_created"), 30, "the first leader's spawn")

    old.signal(signal.SIGSTOP)
    try:
        [new_lease] = new.wait_logged("lease_acquired", 15)
        stack.enqueue(4, duration_sec=0.5)
        wait_until(
            lambda: [
                e for e in events(stack, "pod_created") if e["details"]["holder"] == new_lease["holder"]
            ],
            30,
            "a spawn by the new leader",
        )
    finally:
        old.signal(signal.SIGCONT)
    # Awake again, it finds the lease taken at its next tick and stands down.
    old.wait_logged("lease_lost", 15)
    wait_until(lambda: all_done(stack, 6), 60, "every task done", interval=0.25)
    wait_until(lambda: drained(stack), 60, "scale to zero", interval=0.25)
    resumed_at = _ts(old.logged("lease_lost")[0])
    late = [
        e
        for e in events(stack, "pod_created")
        if e["details"]["holder"] == old_lease["holder"] and e["at"].timestamp() >= _ts(new_lease)
    ]
    assert not late, f"the stale leader spawned after the handover: {late}"
    assert old.proc.poll() is None and new.proc.poll() is None
    assert not [line for line in old.logged("worker_spawned") if _ts(line) >= resumed_at]
    names = [p["name"] for p in pods(stack)]
    assert len(names) == len(set(names)), "a worker got two pods"
    for proc in (old, new):
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_sigterm_finishes_the_tick_releases_the_lease_and_exits_0(stack: Stack, cli_process: Any) -> None:
    stack.enqueue(2, duration_sec=1.0)
    daemon = cli_process("run", env={"MAX_ACTIVE_GPUS": 2, "LEASE_TTL_SEC": 30})
    daemon.wait_logged("lease_acquired", 30)
    # Stop it as a spawn is being applied: the tick must finish it, not cut it in half.
    wait_until(lambda: workers(stack), 30, "a worker row registered", interval=0.02)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, daemon.text()[-3000:] + daemon.stderr()[-2000:]

    names = [line["event"] for line in daemon.lines()]
    assert "signal_received" in names
    assert names.index("signal_received") < names.index("lease_released") < names.index("daemon_stopped")
    [lease] = stack.sql(
        "SELECT holder, expires_at <= now() FROM orchestrator_lease WHERE name = 'orchestrator'"
    )
    assert lease[0] is None and lease[1], f"lease still held: {lease}"
    assert events(stack, "lease_released")
    # Every spawn the last tick started was finished: each row has its pod recorded.
    rows = workers(stack)
    assert rows and all(w["metadata"].get("runpod_id") for w in rows), rows
    # The next daemon takes over at once (no TTL to wait out).
    again = cli_process("run", env={"MAX_ACTIVE_GPUS": 2, "LEASE_TTL_SEC": 30})
    [acquired] = again.wait_logged("lease_acquired", 10)
    assert acquired["holder"] != daemon.logged("lease_acquired")[0]["holder"]
    again.signal(signal.SIGTERM)
    assert again.wait(30) == 0


def test_a_queued_task_wakes_the_daemon_over_listen_notify(stack: Stack, cli_process: Any) -> None:
    daemon = cli_process(
        "run",
        env={
            "DB_BACKEND": "postgres",
            "ORCHESTRATOR_POLL_SEC": 300,
            "LEASE_TTL_SEC": 600,
            "MAX_ACTIVE_GPUS": 1,
        },
    )
    daemon.wait_logged("listen_started", 30)
    daemon.wait_logged("tick_summary", 30)
    assert not pods(stack)
    queued_at = time.monotonic()
    stack.enqueue(1, duration_sec=0.5)
    # The next scheduled tick is ~300 s away: only the notification can explain a pod within 15 s.
    wait_until(lambda: pods(stack), 15, "a pod created after the task was queued", interval=0.02)
    reaction = time.monotonic() - queued_at
    # The pod exists from the create call on; the tick that made it logs its summary once it is applied.
    wait_until(
        lambda: any(t["actions"]["spawned"] for t in daemon.logged("tick_summary")),
        30,
        "the tick summary counting the spawn",
    )
    print(f"queued -> pod created in {reaction:.2f}s with a 300 s poll")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0


def test_over_supabase_the_wake_probe_sees_a_queued_task_long_before_the_poll(
    stack: Stack, cli_process: Any
) -> None:
    # Supabase's REST API cannot LISTEN; a one-row probe every WAKE_PROBE_SEC stands in for NOTIFY.
    daemon = cli_process(
        "run",
        env={
            "DB_BACKEND": "supabase",
            "ORCHESTRATOR_POLL_SEC": 300,
            "WAKE_PROBE_SEC": 0.5,
            "LEASE_TTL_SEC": 600,
            "MAX_ACTIVE_GPUS": 1,
        },
    )
    [started] = daemon.wait_logged("daemon_started", 30)
    assert started["wake_probe_sec"] == 0.5 and started["listen"] is False
    daemon.wait_logged("tick_summary", 30)
    assert not pods(stack)
    stack.enqueue(1, duration_sec=0.5)
    # The next scheduled tick is ~300 s away: only the probe can explain a pod within 15 s.
    wait_until(lambda: pods(stack), 15, "a pod created after the task was queued", interval=0.02)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0


def test_over_supabase_a_requeued_task_wakes_the_daemon_long_before_the_poll(
    stack: Stack,
    cli_process: Any,
) -> None:
    # Only tasks of other types than 'held' are claimable, so a newer 'held' task sits Queued for the
    # whole test: it pins newest_queued_at, and only the requeue count can explain a prompt wake-up.
    stack.sql(
        "create or replace view orchestrator_claimable_tasks as select t.id, t.task_type, t.created_at "
        "from tasks t where t.status = 'Queued' and t.task_type <> 'held'"
    )
    stack.sql(
        "insert into tasks (task_type, params, status, attempts, created_at, error_message) values "
        "('generate_video', '{\"duration_sec\": 0.5}', 'Failed', 1, now() - interval '5 minutes', 'earlier failure')"
    )
    [retried] = [str(r[0]) for r in stack.sql("select id from tasks where status = 'Failed'")]
    stack.enqueue(1, task_type="held")

    daemon = cli_process(
        "run",
        env={
            "DB_BACKEND": "supabase",
            "ORCHESTRATOR_POLL_SEC": 300,
            "WAKE_PROBE_SEC": 0.2,
            "LEASE_TTL_SEC": 600,
            "MAX_ACTIVE_GPUS": 1,
        },
    )
    [started] = daemon.wait_logged("daemon_started", 30)
    assert started["wake_probe_sec"] == 0.2 and started["listen"] is False
    daemon.wait_logged("tick_summary", 30)
    assert not pods(stack), "nothing claimable yet: the first tick must not spawn"

    # An operator retries the failed task: a plain UPDATE, its created_at five minutes old.
    stack.sql("update tasks set status = 'Queued', error_message = null where id = %s", (retried,))
    # The next scheduled tick is ~300 s away: only the probe's requeue count explains a pod within 15 s.
    wait_until(lambda: pods(stack), 15, "a pod created after the task was requeued", interval=0.02)
    ticks = daemon.wait_logged("tick_summary", 15, count=2)
    assert ticks[0]["actions"]["spawned"] == 0 and ticks[1]["actions"]["spawned"] == 1
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
