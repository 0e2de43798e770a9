"""What a pooled pod bills: its volume disk, as its spawn recorded it in ``metadata.disk_gb``.

A stopped pod bills its volume disk only (0.20 USD per GB and month, Runpod's pricing). The spawn records
the disk its create call asks for (``orchestrator.core.draft.volume_disk_gb``), and the policy's spend, the
spend cap's headroom for a resume and the database's spend views read that figure per worker, so a change
of ``RUNPOD_DISK_SIZE_GB`` does not reprice the pods already made.
"""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.core.actions import ResumePod, Spawn
from orchestrator.core.draft import HOURS_PER_MONTH, STOPPED_DISK_USD_PER_GB_MONTH, volume_disk_gb
from orchestrator.core.states import Meta
from tests.unit.test_policy import ago, pods_for, run, settings, snap, worker

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
