"""A restarted daemon takes over its dead predecessor's lease at once, and only then.

Over real PostgreSQL (the migrated per-test database): the lease the way a daemon killed with SIGKILL
leaves it (held, unexpired, never released), then a new process's first ``Lease.ensure``. Before, the
new process waited out the lease's TTL (90 s by default) with nothing acting for the fleet: no pod ended,
no task requeued, no worker started. A holder that may still run (a live pid, another machine, another
namespace, a name of another form) keeps the lease until it expires, as before.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import psycopg
import pytest
from structlog.testing import capture_logs

from orchestrator.adapters.db.base import Database
from orchestrator.loop.lease import Lease, dead_here, default_holder, process_space
from tests.integration.test_runpod_contract import wait_for

TTL = 90.0


def _gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def _holder(pid: int, host: str | None = None, space: str | None = None) -> str:
    return f"{host or socket.gethostname()}:{pid}:abc123@{process_space() if space is None else space}"


def test_the_lease_of_a_dead_predecessor_on_this_machine_is_taken_at_once(
    db: Database, database_url: str
) -> None:
    dead = _holder(_gone_pid())
    old = db.lease_acquire(dead, TTL)
    assert old["acquired"]
    lease = Lease(db, default_holder(), TTL)
    with capture_logs() as logs:
        token, fresh = lease.ensure()
    assert token is not None and fresh and token > int(old["token"])
    assert [e["previous_holder"] for e in logs if e["event"] == "lease_taken_over"] == [dead]
    # The dead holder's token is fenced off: its renewal (a write still in flight) is refused.
    assert db.lease_renew(dead, int(old["token"]), TTL)["renewed"] is False
    with psycopg.connect(database_url, autocommit=True) as raw:
        found = raw.execute(
            "select details from orchestrator_events where kind = 'lease_acquired' order by id desc limit 1"
        ).fetchone()
    assert found is not None and found[0]["previous_holder"] == dead and found[0]["taken_over"] is True


@pytest.mark.parametrize(
    "holder",
    [
        pytest.param(lambda: _holder(1), id="a-live-pid"),
        pytest.param(lambda: _holder(_gone_pid(), host="another-machine"), id="another-machine"),
        pytest.param(lambda: _holder(_gone_pid(), space="0123456789"), id="another-namespace-or-boot"),
        pytest.param(lambda: "leader-1", id="a-name-of-another-form"),
    ],
)
def test_a_holder_that_may_still_run_keeps_the_lease_until_it_expires(db: Database, holder: object) -> None:
    name = holder()  # type: ignore[operator]
    assert db.lease_acquire(name, TTL)["acquired"]
    token, fresh = Lease(db, default_holder(), TTL).ensure()
    assert (token, fresh) == (None, False)


def test_a_take_over_is_a_compare_and_swap_on_the_holder(db: Database) -> None:
    # Two restarted processes racing for the same dead holder's lease: the second finds it moved on.
    dead = _holder(_gone_pid())
    db.lease_acquire(dead, TTL)
    first = db.lease_take_over("new-1", dead, TTL)
    second = db.lease_take_over("new-2", dead, TTL)
    assert first["acquired"] and not second["acquired"] and second["holder"] == "new-1"


def test_only_a_process_known_gone_on_this_machine_counts_as_dead() -> None:
    me = default_holder()
    assert dead_here(_holder(_gone_pid()), me)
    assert not dead_here(me, me)
    assert not dead_here(_holder(1), me)  # pid 1 runs
    assert not dead_here(_holder(int(me.split(":")[1])), me)  # this very process, another lease object
    assert not dead_here(_holder(_gone_pid(), space=""), me)
    assert not dead_here("host:not-a-pid:abc@x", me) and not dead_here(None, me)


def test_an_exited_process_not_yet_reaped_counts_as_dead() -> None:
    # A zombie still answers kill(pid, 0); a supervisor slow to reap must not hold the fleet up.
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_for(lambda: _is_zombie(proc.pid), 30)
        assert dead_here(_holder(proc.pid), default_holder())
    finally:
        proc.wait(timeout=30)


def _is_zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rpartition(")")[2].split()[:1] == ["Z"]
