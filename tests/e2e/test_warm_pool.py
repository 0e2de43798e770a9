"""End-to-end: the warm pool. Idle pods are stopped, not terminated; a new burst resumes them first.

Real parts throughout: ``orchestrator run`` as a process, the throwaway PostgreSQL behind the Supabase
stand-in, the Runpod emulator (REST v2) whose pods are sshd sandboxes running the simulated worker.
A stopped pod is EXITED at the provider: it holds no GPU and bills its volume disk only; it restarts on
its host, unless another user took that host's GPU meanwhile ("There are not enough free GPUs on the host
machine to start this pod", docs.runpod.io/references/troubleshooting/pod-migration); the stop wipes its
container disk, where the image keeps its SSH host keys, so it comes back with new ones.

1. ``test_idle_pods_are_pooled_then_resumed_one_resume_fails_and_is_replaced``: after a burst, the idle
   workers' pods are stopped into the pool (rows ``stopped``, pods EXITED, no GPU-time billed). Another
   user then takes the GPU of one stopped pod (a pod created at the emulator in the same data center,
   the way the emulator models a host's GPU rented out). The next burst resumes both pooled pods before
   spawning: the one whose host kept its GPU comes back with a new host key, which the daemon re-pins
   once (event ``host_key_repinned``, old and new fingerprints), its worker process is started again and
   takes tasks; the other's resume is refused, its pod terminated (``resume_no_gpu``, not a breaker
   failure: the breaker trips on one failure here and stays closed), and one new pod replaces it.
2. ``test_sigkill_during_a_stop_leaves_nothing_billing_untracked``: the daemon SIGKILLs itself (the crash
   points of ``orchestrator.loop.effects``) just before or just after asking the provider to stop a pod.
   After a restart, at every look, each pod the emulator still has is the pod of a live row (running or
   pooled); the stop is finished, and the pool, kept past ``WARM_POOL_TTL_SEC``, is terminated.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from orchestrator.adapters.runpod.base import PodSpec
from orchestrator.adapters.runpod.rest import RestTransport
from orchestrator.core.draft import HOURS_PER_MONTH, STOPPED_DISK_USD_PER_GB_MONTH
from orchestrator.standins.stack import DEMO_API_KEY, Stack
from tests.e2e.conftest import all_done, events, pods, tasks, wait_until, worker_log, workers

pytestmark = pytest.mark.e2e

GPU = "NVIDIA GeForce RTX 4090"
# The data center of the stack's network volume "workspace": every worker pod is placed there.
VOLUME_DC = "EU-RO-1"
PER_GB_HR = STOPPED_DISK_USD_PER_GB_MONTH / HOURS_PER_MONTH
PREFIX = "gpu-"  # WORKER_ID_PREFIX's default

POOL: dict[str, Any] = {
    "WARM_POOL_MAX": 2,
    "MAX_ACTIVE_GPUS": 2,
    "ORCHESTRATOR_POLL_SEC": 0.5,
    "LEASE_TTL_SEC": 4,
    # One failed boot would open the breaker: a resume refused for lack of GPUs must not count.
    "MAX_CONSECUTIVE_FAILURES": 1,
}


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in rows}


def pod_of(row: dict[str, Any]) -> str:
    return str(row["metadata"]["runpod_id"])


def ours(stack: Stack) -> list[dict[str, Any]]:
    """The pods the daemon made (named after worker rows: WORKER_ID_PREFIX), terminated ones included."""
    return [p for p in pods(stack) if p["name"].startswith(PREFIX)]


def untracked(stack: Stack) -> list[dict[str, Any]]:
    """Pods of ours the emulator has not terminated that no live worker row claims: billing nobody tracks."""
    live = [w for w in workers(stack) if w["status"] != "terminated"]
    # A row claims its pod by the recorded id, or by name while the id is not recorded yet.
    claimed = {w["metadata"].get("runpod_id") for w in live} | {w["id"] for w in live}
    return [p for p in ours(stack) if p["status"] != "TERMINATED" and not ({p["id"], p["name"]} & claimed)]


def test_idle_pods_are_pooled_then_resumed_one_resume_fails_and_is_replaced(
    stack: Stack, cli_process: Any
) -> None:
    stack.enqueue(4, duration_sec=1.0)  # TASKS_PER_GPU_THRESHOLD=2: two workers
    daemon = cli_process("run", env=POOL)
    wait_until(lambda: all_done(stack, 4), 60, "the first burst done", interval=0.25)

    # (1) Idle, the two workers are stopped into the pool, not terminated.
    def pooled() -> list[dict[str, Any]] | None:
        rows = [w for w in workers(stack) if w["status"] == "stopped"]
        return rows if len(rows) == 2 else None

    first = wait_until(pooled, 60, "both workers stopped into the pool", interval=0.25)
    assert len(workers(stack)) == 2
    seen = by_id(pods(stack))
    assert len(seen) == 2, "no pod beyond the burst's two"
    for row in first:
        meta = row["metadata"]
        pod = seen[pod_of(row)]
        assert pod["status"] == "EXITED" and pod["desiredStatus"] == "EXITED", pod
        assert meta["stopped_at"] and meta["pod_stop_requested_at"], meta
        assert meta["previous_host_key_fingerprint"] == meta["host_key_fingerprint"], meta
        # What the daemon will count for its disk is what the provider bills (REST v2 with a network
        # volume: no volume disk of its own; the network volume bills whether pods run or not).
        assert meta["disk_gb"] * PER_GB_HR == pytest.approx(pod["stoppedDiskUsdPerHr"]), (meta, pod)
    stop_events = events(stack, "pod_stop_requested")
    assert sorted(e["worker_id"] for e in stop_events) == sorted(r["id"] for r in first)
    assert {e["reason"] for e in stop_events} == {"pooled"}
    assert not events(stack, "pod_terminate_requested"), "a pooled pod is stopped, never terminated"

    # Stopped, the pods bill their volume disk only: their GPU-time stands still while the stop lasts.
    before = {pod_of(r): seen[pod_of(r)] for r in first}

    def stayed_stopped() -> dict[str, dict[str, Any]] | None:
        now = {p["id"]: p for p in pods(stack) if p["id"] in before}
        grown = all(now[i]["stoppedSeconds"] >= before[i]["stoppedSeconds"] + 0.5 for i in before)
        return now if grown else None

    later = wait_until(stayed_stopped, 20, "the stop to last half a second")
    for pod_id, pod in later.items():
        assert pod["billedSeconds"] == before[pod_id]["billedSeconds"], (before[pod_id], pod)
        gpu_usd = pod["billedUsd"] - pod["stoppedDiskUsd"]
        assert gpu_usd == pytest.approx(before[pod_id]["billedUsd"] - before[pod_id]["stoppedDiskUsd"])

    # The daemon counts the pool's disk, not its GPUs, in its spend (the spend cap's figure), as the
    # database's view of the pool does.
    def pool_spend() -> dict[str, Any] | None:
        done = [s for s in daemon.logged("tick_summary") if s["status"].get("stopped") == 2]
        return done[-1] if done else None

    summary = wait_until(pool_spend, 10, "a tick that sees the pool of two")
    disk_per_hr = sum(p["stoppedDiskUsdPerHr"] for p in later.values())
    assert summary["spend_per_hr"] == pytest.approx(disk_per_hr, abs=1e-4), summary
    [pool_view] = stack.sql(
        "SELECT count(*), sum(disk_cost_per_hr)::float FROM orchestrator_pool WHERE status = 'stopped'"
    )
    assert pool_view[0] == 2 and pool_view[1] == pytest.approx(disk_per_hr, abs=1e-6), pool_view

    # Another user rents the GPU of one stopped pod: the emulator gives a new pod in that data center
    # the GPUs stopped pods gave back, the longest stopped first.
    other = RestTransport(DEMO_API_KEY, stack.runpod_url)
    try:
        intruder = other.create_pod(
            PodSpec(name="someone-else", image="ubuntu:22.04", gpu_type_id=GPU, data_center_id=VOLUME_DC)
        )
    finally:
        other.close()
    lost = [p for p in pods(stack) if p.get("hostGpuTakenBy") == intruder.id]
    assert len(lost) == 1, pods(stack)
    [lost_row] = [r for r in first if pod_of(r) == lost[0]["id"]]
    [kept_row] = [r for r in first if r["id"] != lost_row["id"]]
    old_key = kept_row["metadata"]["host_key_fingerprint"]

    # (2) and (3) A new burst: both pooled pods are resumed before anything is spawned.
    stack.enqueue(4, duration_sec=1.0)
    wait_until(lambda: all_done(stack, 8), 90, "the second burst done", interval=0.25)

    rows = by_id(workers(stack))
    seen = by_id(pods(stack))
    made = ours(stack)
    assert len(made) == 3, f"two pooled pods and one replacement, no more: {made}"
    [replacement] = [r for r in rows.values() if r["id"] not in (kept_row["id"], lost_row["id"])]

    kept = rows[kept_row["id"]]
    assert kept["metadata"]["resumes"] == 1, kept
    new_key = kept["metadata"]["host_key_fingerprint"]
    assert new_key and new_key != old_key, "the resumed pod presents a new host key"
    repinned = events(stack, "host_key_repinned")
    assert [(e["worker_id"], e["details"]) for e in repinned] == [
        (kept["id"], {"old": old_key, "new": new_key})
    ], repinned
    # Its worker process was started again on the resumed pod, and took part of the second burst.
    starts = [x for x in worker_log(stack) if x["_file"] == kept["id"] and x.get("event") == "worker_polling"]
    assert len(starts) == 2, starts
    second = tasks(stack)[4:]
    assert any(t["worker_id"] == kept["id"] for t in second), second
    assert daemon.logged("host_key_repinned")

    # The refused resume: its pod terminated for resume_no_gpu, its row closed, one pod spawned instead.
    gone = rows[lost_row["id"]]
    assert gone["status"] == "terminated", gone
    assert seen[pod_of(gone)]["status"] == "TERMINATED"
    endings = [e for e in events(stack, "pod_terminate_requested") if e["worker_id"] == gone["id"]]
    assert [e["reason"] for e in endings] == ["resume_no_gpu"], endings
    created = events(stack, "pod_created")
    assert Counter(e["worker_id"] for e in created) == Counter([kept["id"], gone["id"], replacement["id"]])
    # The replacement came after the refusal, for the work the refused pod was to do.
    [spawned] = [e for e in created if e["worker_id"] == replacement["id"]]
    assert spawned["id"] > endings[0]["id"] and spawned["reason"] == "demand", (spawned, endings)

    # A refused resume is the host's stock, not our image: the breaker (1 failure trips it) never opened.
    summaries = daemon.logged("tick_summary")
    states = {s["breaker"] for s in summaries}
    assert states == {"closed"}, states
    # The tick summaries count what the pool did: one resume, one refused for its GPU, and the stops the
    # provider confirmed (two, unless an answer was lost on the way: the listing then shows the pod stopped).
    counted = {k: sum(s["actions"][k] for s in summaries) for k in ("stopped", "resumed", "resume_no_gpu")}
    assert counted["stopped"] >= 1 and (counted["resumed"], counted["resume_no_gpu"]) == (1, 1), counted
    assert all(t["status"] == "Complete" and t["attempts"] == 0 for t in tasks(stack)), tasks(stack)
    assert not untracked(stack)
    assert daemon.proc.poll() is None


@pytest.mark.parametrize("point", ["before_stop", "after_stop"])
def test_sigkill_during_a_stop_leaves_nothing_billing_untracked(
    stack: Stack, cli_process: Any, point: str
) -> None:
    stack.enqueue(2, duration_sec=1.0)  # one worker
    crashing = cli_process("run", env={**POOL, "ORCHESTRATOR_TEST_CRASH_AT": point})
    code = crashing.wait(timeout=60)
    assert code == -9, (
        f"expected a SIGKILL at {point}, exit {code}:\n{crashing.text()[-2000:]}\n{crashing.stderr()[-2000:]}"
    )
    assert [line["point"] for line in crashing.logged("test_crash_point")] == [point]
    assert all_done(stack, 2)
    [row] = workers(stack)
    assert row["status"] == "stopping", row
    pod = by_id(pods(stack))[pod_of(row)]
    # Killed before the call: the pod runs on (its GPU billing). After it: the provider stopped it, or is
    # stopping it (its container runs out the stop grace).
    if point == "before_stop":
        assert pod["status"] == "RUNNING" and not pod["stopping"], pod
    else:
        assert pod["status"] == "EXITED" or pod["stopping"], pod

    # The pool kept for a few seconds only: the restarted daemon finishes the stop, then ends the pool.
    restarted = cli_process("run", env={**POOL, "WARM_POOL_TTL_SEC": 3})
    restarted.wait_logged("lease_acquired", 30)

    def ended() -> bool:
        # At every look, nothing the emulator still has is outside a live row.
        assert not untracked(stack), (untracked(stack), workers(stack))
        return all(p["status"] == "TERMINATED" for p in pods(stack)) and all(
            w["status"] == "terminated" for w in workers(stack)
        )

    wait_until(ended, 60, "the stop finished and the pool ended past its time to live", interval=0.2)
    if point == "before_stop":
        # The pod the crash left running (its GPU billing) is stopped within the new leader's first two
        # ticks, not after the retry interval: no stop was recorded as asked.
        [stopped] = restarted.logged("runpod_pod_stopped")
        ticks = [s for s in restarted.logged("tick_summary") if s["ts"] < stopped["ts"]]
        assert len(ticks) <= 1, [s["tick"] for s in ticks]
    else:
        assert not restarted.logged("runpod_pod_stopped"), "the provider had stopped it: no second stop"
    [row] = workers(stack)
    assert pod_of(row) == pod["id"]
    # It went through the pool: stopped (confirmed EXITED), then terminated for its time to live.
    assert row["metadata"].get("stopped_at"), row
    reasons = [e["reason"] for e in events(stack, "pod_terminate_requested") if e["worker_id"] == row["id"]]
    assert reasons == ["pool_ttl"], reasons
    assert len(ours(stack)) == 1, "no second pod"
    assert restarted.proc.poll() is None


def test_a_worker_being_stopped_claims_nothing(stack: Stack, cli_process: Any) -> None:
    """Runpod's stop lets the container run out docker's grace (the image's PID 1 ignores SIGTERM), and
    the app's claim does not look at the worker's state: an idle worker being stopped into the pool still
    polls, and asks for a task that arrives meanwhile. The database refuses it the task (a worker that is
    not in a claiming state cannot take one), so the stop cannot kill a task mid-run: another worker
    runs it, first time, and nothing bills untracked."""
    stack.emulator.admin.set_faults(stop_grace_sec=3000)  # 6 s at the stack's speed
    stack.enqueue(2, duration_sec=1.0)  # one worker
    daemon = cli_process("run", env={**POOL, "WARM_POOL_MAX": 1})
    wait_until(lambda: all_done(stack, 2), 60, "the first burst done", interval=0.25)

    def stopping() -> dict[str, Any] | None:
        rows = [w for w in workers(stack) if w["status"] == "stopping"]
        if not rows:
            return None
        pod = by_id(pods(stack)).get(pod_of(rows[0]))
        return rows[0] if pod and pod["stopping"] and pod["status"] == "RUNNING" else None

    row = wait_until(stopping, 60, "a worker whose pod is being stopped", interval=0.05)
    [late] = stack.enqueue(1, duration_sec=1.0)

    def refused() -> list[dict[str, Any]] | None:
        found = [x for x in worker_log(stack) if x["_file"] == row["id"] and x.get("event") == "claim_failed"]
        return found or None

    # The stopping worker (queued after its row was stopping, so asked while its pod ran out the grace)
    # was refused.
    wait_until(refused, 30, "the stopping worker's claim refused", interval=0.05)
    wait_until(lambda: all_done(stack, 3), 90, "the late task done", interval=0.25)
    task = next(t for t in tasks(stack) if t["id"] == late)
    assert task["worker_id"] != row["id"] and task["attempts"] == 0, task
    # The stop went through: the pod is pooled, not failed.
    wait_until(
        lambda: next(w for w in workers(stack) if w["id"] == row["id"])["status"] == "stopped",
        30,
        "the stopped worker pooled",
    )
    assert not events(stack, "worker_failed"), events(stack, "worker_failed")
    assert not untracked(stack)
    assert daemon.proc.poll() is None
