"""What a pooled pod bills: its volume disk, as its spawn recorded it in ``metadata.disk_gb``.

A stopped pod bills its volume disk only (0.20 USD per GB and month, Runpod's pricing). The spawn records
the disk its create call asks for (``orchestrator.core.draft.volume_disk_gb``), and the policy's spend, the
spend cap's headroom for a resume and the database's spend views read that figure per worker, so a change
of ``RUNPOD_DISK_SIZE_GB`` does not reprice the pods already made.
"""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.core.actions import ResumePod, Spawn, StopPod
from orchestrator.core.config import defaults
from orchestrator.core.draft import HOURS_PER_MONTH, STOPPED_DISK_USD_PER_GB_MONTH, volume_disk_gb
from orchestrator.core.policy import plan
from orchestrator.core.states import Meta
from orchestrator.render import render_status
from orchestrator.studies.fleet import ResumeModel
from orchestrator.studies.simulation import Simulation
from tests.unit.test_policy import ago, pods_for, run, settings, snap, worker
from tests.unit.test_pool_sim import waves

PER_GB_HR = STOPPED_DISK_USD_PER_GB_MONTH / HOURS_PER_MONTH


def pooled(worker_id: str, **meta: Any) -> Any:
    return worker(worker_id, "stopped", changed=600, stopped_at=ago(600), **meta)


@pytest.mark.parametrize(
    ("api", "storage", "gb"),
    [
        ("rest", None, 20),
        ("graphql", None, 20),
        # REST v2 cannot carry a volume disk beside a network volume: none is made.
        ("rest", ("workspace",), 0),
        # GraphQL sends volumeInGb beside it; whether Runpod bills it too is not documented: counted.
        ("graphql", ("workspace",), 20),
    ],
)
def test_the_spawn_records_the_volume_disk_its_create_call_asks_for(
    api: str, storage: tuple[str, ...] | None, gb: int
) -> None:
    cfg = settings(runpod_api=api, runpod_storage_name=storage, runpod_disk_size_gb=20)
    assert volume_disk_gb(cfg) == gb
    [spawn] = run(snap(claimable=1), [], cfg).of_kind(Spawn)
    assert spawn.metadata[Meta.DISK_GB] == gb


def test_a_stopped_pod_bills_its_own_disk_not_the_current_setting() -> None:
    cfg = settings(warm_pool_max=3, runpod_disk_size_gb=20)
    pool = [pooled("gpu-big", disk_gb=200), pooled("gpu-none", disk_gb=0), pooled("gpu-old")]
    result = run(snap(pool), pods_for(pool, "EXITED"), cfg)
    # 200 GB, 0 GB, and a row from before the key was recorded: the configuration's 20 GB.
    assert result.spend_per_hr == pytest.approx((200 + 0 + 20) * PER_GB_HR)


def test_a_pooled_pod_being_terminated_bills_its_disk_until_it_is_gone() -> None:
    # A pod ended from the pool (its time to live, a smaller pool, a pause) is still stopped while its
    # row says terminating: the spend cap must not count a GPU it does not hold.
    cfg = settings(warm_pool_max=0, runpod_disk_size_gb=20)
    ending = worker("gpu-end", "terminating", changed=5, stopped_at=ago(600), disk_gb=100, cost_per_hr=0.69)
    result = run(snap([ending]), pods_for([ending], "EXITED"), cfg)
    assert result.spend_per_hr == pytest.approx(100 * PER_GB_HR)
    # A terminating row whose pod still runs bills its GPU until the termination.
    result = run(snap([ending]), pods_for([ending], "RUNNING"), cfg)
    assert result.spend_per_hr == pytest.approx(0.69)


def test_a_pod_being_resumed_bills_its_gpu_though_the_listing_still_says_stopped() -> None:
    # The start was asked for: the pod may hold its GPU any moment, and a listing taken before the start
    # says EXITED still. Counted as disk, the chaos soak (seed 8) resumed a pod and, a tick 0.2 s later,
    # spawned another on the headroom it seemed to leave: 4.13 USD/h against a cap of 4.
    price = 0.69  # the listing's cost of the test pods
    cfg = settings(warm_pool_max=1, max_hourly_spend=2 * price)
    serving = worker("gpu-busy", running=("t1",), cost_per_hr=price)
    waking = worker("gpu-wake", "resuming", changed=2, stopped_at=ago(600), disk_gb=20, cost_per_hr=price)
    pods = [*pods_for([serving]), *pods_for([waking], "EXITED")]
    result = run(snap([serving, waking], claimable=3), pods, cfg)
    assert result.spend_per_hr == pytest.approx(2 * price)
    assert not result.of_kind(Spawn), "a spawn past the spend cap"


def test_a_resume_under_the_spend_cap_trades_the_pods_own_disk_for_its_gpu() -> None:
    price = 0.69  # the listing's cost of the test pods
    big = pooled("gpu-big", disk_gb=7200, cost_per_hr=price)  # 7,200 GB: 2 USD/h while stopped
    # The spend counts the pod's own disk (2 USD/h, above a cap at the GPU's price), and the resume
    # trades that very disk for the GPU (0.69 - 2 USD/h): it fits. Had the resume subtracted the
    # configuration's 20 GB instead, the cap would refuse it.
    cfg = settings(warm_pool_max=1, max_hourly_spend=price)
    result = run(snap([big], claimable=1), pods_for([big], "EXITED"), cfg)
    assert result.spend_per_hr == pytest.approx(7200 * PER_GB_HR)
    assert [r.worker_id for r in result.of_kind(ResumePod)] == ["gpu-big"]


def test_a_row_without_its_disk_is_stopped_with_the_disk_the_policy_bills() -> None:
    # A row spawned before the spawn recorded its disk: the stop records the configuration's, so the
    # database's spend views (which read metadata.disk_gb) and the policy bill the same figure.
    cfg = settings(warm_pool_max=2, runpod_disk_size_gb=30)
    old = worker("gpu-old", "draining", drain_reason="overcapacity", completed=100)
    [stop] = run(snap([old]), pods_for([old]), cfg).of_kind(StopPod)
    assert stop.disk_gb == 30
    recorded = worker("gpu-new", "draining", drain_reason="overcapacity", completed=100, disk_gb=200)
    [stop] = run(snap([recorded]), pods_for([recorded]), cfg).of_kind(StopPod)
    assert stop.disk_gb is None  # its own figure stands


def test_the_stop_handler_writes_the_disk_into_the_row() -> None:
    # The executor's own stop handler, in virtual time, on rows whose spawn recorded no disk.
    cfg = defaults()
    sim = Simulation(waves(), plan, cfg, seed=2, resume=ResumeModel(failure_share=0.0))
    register = sim.db.register_worker

    def register_without_disk(worker_id: str, instance_type: str | None, metadata: Any) -> Any:
        return register(worker_id, instance_type, {k: v for k, v in metadata.items() if k != Meta.DISK_GB})

    sim.db.register_worker = register_without_disk  # type: ignore[method-assign]
    result = sim.run()
    assert result.counters["stops"] > 0
    stopped = [w for w in sim.db.workers.values() if w.metadata.get(Meta.STOPPED_AT)]
    assert stopped and all(w.metadata.get(Meta.DISK_GB) == volume_disk_gb(cfg) for w in stopped)


def test_the_status_line_says_what_the_live_workers_are_doing() -> None:
    """``orchestrator status`` once read "fleet: 4 live, $0.00/h" with all four pods stopped in the pool:
    an operator could not tell four GPUs billing from four stopped disks without reading every row."""
    rows = [
        pooled("gpu-a", disk_gb=0),
        pooled("gpu-b", disk_gb=0),
        worker("gpu-c", "active", changed=60),
        worker("gpu-d", "resuming", changed=5),
        worker("gpu-e", "draining", changed=5),
    ]
    head = render_status(snap(rows)).splitlines()[0]
    assert "fleet: 5 live (1 serving, 1 starting, 2 pooled, 1 ending)" in head
    assert "fleet: 0 live," in render_status(snap([])).splitlines()[0]
