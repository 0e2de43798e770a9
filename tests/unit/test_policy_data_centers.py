"""Back-offs per (GPU type, data center) when the fleet may spawn in several data centers.

A network volume pins a pod to its data center, so with one volume per data center
(``RUNPOD_STORAGE_NAME=a,b``) a GPU type sold out in one of them is still worth trying in the other:
the spawn skips the failing pair (``Spawn.avoid``) instead of dropping the type from its list. Only a
type backing off in every data center the spawn could use (or, when those are unknown, in any) is left
out, so the spawn falls through to the next type.
"""

from __future__ import annotations

from orchestrator.core.config import Settings
from orchestrator.core.policy import plan
from tests.unit.test_policy import GPU, NOW, PRICES, boot, settings, snap, spawns

A4000 = "NVIDIA RTX A4000"
CENTERS = ("EU-RO-1", "US-KS-2")


def cfg() -> Settings:
    return settings(runpod_gpu_type=(GPU, A4000))


def test_a_type_sold_out_in_one_data_center_is_tried_in_the_other() -> None:
    misses = [boot(False, 10, "spawn_no_capacity", dc="EU-RO-1", wid="w1")]
    result = plan(snap(claimable=1, boots=misses), (), cfg(), NOW, prices=PRICES, data_centers=CENTERS)
    [spawn] = spawns(result)
    assert spawn.gpu_types == (GPU, A4000)
    assert spawn.avoid == ((GPU, "EU-RO-1"),)
    assert [(b.gpu_type, b.data_center) for b in result.backoffs] == [(GPU, "EU-RO-1")]


def test_a_type_backing_off_in_every_data_center_is_left_out() -> None:
    misses = [
        boot(False, 10, "spawn_no_capacity", dc="EU-RO-1", wid="w1"),
        boot(False, 12, "spawn_no_capacity", dc="US-KS-2", wid="w1"),
    ]
    result = plan(snap(claimable=1, boots=misses), (), cfg(), NOW, prices=PRICES, data_centers=CENTERS)
    [spawn] = spawns(result)
    assert spawn.gpu_types == (A4000,)


def test_without_known_data_centers_any_back_off_leaves_the_type_out() -> None:
    misses = [boot(False, 10, "spawn_no_capacity", dc="EU-RO-1", wid="w1")]
    result = plan(snap(claimable=1, boots=misses), (), cfg(), NOW, prices=PRICES)
    [spawn] = spawns(result)
    assert spawn.gpu_types == (A4000,)


def test_a_back_off_with_no_data_center_covers_them_all() -> None:
    failures = [boot(False, 10, "init_failed", dc=None, wid="w1")]
    result = plan(snap(claimable=1, boots=failures), (), cfg(), NOW, prices=PRICES, data_centers=CENTERS)
    [spawn] = spawns(result)
    assert spawn.gpu_types == (A4000,)
    assert spawn.avoid == ()
