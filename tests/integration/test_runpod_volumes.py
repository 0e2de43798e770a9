"""More than one data center: RUNPOD_STORAGE_NAME as a priority list of network volumes.

A network volume pins a pod to its data center, and a popular GPU type is often sold out in one of
them; the original orchestrator (banodoco/reigh-worker-orchestrator, gpu_orchestrator/runpod_client.py,
2025-10) kept one volume per data center and tried every volume for its first choice before its next
one. Against the emulator over both transports: a second volume is created in the emulator's second
data center through the REST API, as an operator would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.core import errors
from orchestrator.render import format_volumes
from tests.integration.test_runpod_contract import TRANSPORTS, make_client
from tests.plugins.emulator import TEST_API_KEY

RTX4090 = "NVIDIA GeForce RTX 4090"
A4000 = "NVIDIA RTX A4000"
SECOND = "workspace-ks-test"


def add_volume(emulator: Any, name: str = SECOND, data_center: str = "US-KS-2") -> dict[str, Any]:
    with httpx.Client(
        base_url=emulator.base_url, headers={"Authorization": f"Bearer {TEST_API_KEY}"}, timeout=30
    ) as http:
        r = http.post("/v2/network-volumes", json={"name": name, "size": 50, "dataCenter": data_center})
    assert r.status_code == 201, r.text
    return dict(r.json())


@pytest.fixture
def clients(emulator: Any, ssh_keypair: Any, tmp_path: Path) -> Any:
    made: list[Any] = []

    def make(api: str, **overrides: Any) -> Any:
        c = make_client(emulator, ssh_keypair, tmp_path, api, **overrides)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.mark.parametrize("api", TRANSPORTS)
def test_a_gpu_type_is_tried_in_every_volume_before_the_next_gpu_type(
    api: str, clients: Any, emulator: Any
) -> None:
    second = add_volume(emulator)
    emulator.admin.set_capacity(RTX4090, "EU-RO-1", 0)
    client = clients(api, gpu_type=f"{RTX4090}, {A4000}", storage_name=f"workspace, {SECOND}")
    spawned = client.spawn_worker(f"gpu-dc-{api}")
    # The first GPU type in the second data center, not the second GPU type in the first one.
    assert (spawned["gpu_type_id"], spawned["data_center"]) == (RTX4090, "US-KS-2")
    assert spawned["network_volume_id"] == second["id"] and spawned["network_volume"] == SECOND
    assert [(m["gpu_type"], m["data_center"], m["network_volume"]) for m in spawned["capacity_misses"]] == [
        ("RTX 4090", "EU-RO-1", "workspace")
    ]
    view = emulator.admin.pod(spawned["runpod_id"])
    assert view["networkVolumeId"] == second["id"] and view["dataCenterId"] == "US-KS-2"


@pytest.mark.parametrize("api", TRANSPORTS)
def test_avoided_pairs_are_skipped_without_asking_runpod(api: str, clients: Any, emulator: Any) -> None:
    add_volume(emulator)
    emulator.admin.set_capacity(RTX4090, "EU-RO-1", 0)
    client = clients(api, gpu_type=f"{RTX4090}, {A4000}", storage_name=f"workspace,{SECOND}")
    # The policy backs off (GPU type, data center) pairs by display name; ids are accepted too.
    spawned = client.spawn_worker(f"gpu-avoid-{api}", avoid={("RTX 4090", "US-KS-2")})
    assert (spawned["gpu_type_id"], spawned["data_center"]) == (A4000, "EU-RO-1")
    assert spawned["skipped"] == [{"gpu_type": "RTX 4090", "data_center": "US-KS-2"}]
    assert [(m["gpu_type"], m["data_center"]) for m in spawned["capacity_misses"]] == [
        ("RTX 4090", "EU-RO-1")
    ]

    # A data center of None avoids the GPU type everywhere.
    spawned = client.spawn_worker(f"gpu-avoid2-{api}", avoid=[(RTX4090, None), ("RTX A4000", "EU-RO-1")])
    assert (spawned["gpu_type_id"], spawned["data_center"]) == (A4000, "US-KS-2")
    assert spawned["capacity_misses"] == []

    # Everything avoided: a capacity error that asked Runpod nothing and records no new miss.
    pods_before = len(emulator.admin.pods())
    with pytest.raises(errors.RunpodCapacityError, match="backing off") as info:
        client.spawn_worker(f"gpu-avoid3-{api}", avoid=[(RTX4090, None), (A4000, None)])
    assert info.value.capacity_misses == []  # type: ignore[attr-defined]
    assert len(info.value.skipped) == 4  # type: ignore[attr-defined]
    assert len(emulator.admin.pods()) == pods_before


@pytest.mark.parametrize("api", TRANSPORTS)
def test_every_candidate_without_capacity_is_a_typed_error_naming_each_data_center(
    api: str, clients: Any, emulator: Any
) -> None:
    add_volume(emulator)
    for dc in ("EU-RO-1", "US-KS-2"):
        emulator.admin.set_capacity(RTX4090, dc, 0)
    client = clients(api, gpu_type=RTX4090, storage_name=f"workspace,{SECOND}")
    with pytest.raises(errors.RunpodCapacityError) as info:
        client.spawn_worker(f"gpu-nocap-{api}")
    assert "EU-RO-1" in str(info.value) and "US-KS-2" in str(info.value)
    assert [m["data_center"] for m in info.value.capacity_misses] == ["EU-RO-1", "US-KS-2"]  # type: ignore[attr-defined]


def test_a_volume_the_account_lacks_is_skipped_and_none_at_all_is_an_error(
    clients: Any, emulator: Any
) -> None:
    client = clients("rest", storage_name="gone-volume, workspace")
    spawned = client.spawn_worker("gpu-skip-missing")
    assert spawned["network_volume"] == "workspace"
    with pytest.raises(errors.VolumeNotFound, match="'gone-volume', 'also-gone' not found") as info:
        clients("rest", storage_name="gone-volume,also-gone").spawn_worker("gpu-no-volume")
    assert "workspace" in str(info.value) and "EU-RO-1" in str(info.value)


def test_orchestrator_volumes_shows_each_configured_volume_and_whether_it_is_usable(
    clients: Any, emulator: Any
) -> None:
    add_volume(emulator)
    add_volume(emulator, "unlisted-volume", "EU-RO-1")
    emulator.admin.set_capacity(RTX4090, "US-KS-2", 0)
    client = clients("rest", gpu_type=RTX4090, storage_name=f"workspace,{SECOND},gone-volume")
    lines = format_volumes(client).splitlines()
    row = {
        line.split()[1]: line
        for line in lines[1:]
        if line.split() and line.split()[0] in ("1", "2", "3", "-")
    }
    assert (
        row["workspace"].split()[0] == "1"
        and "EU-RO-1" in row["workspace"]
        and "yes: RTX 4090" in row["workspace"]
    )
    assert (
        row[SECOND].split()[0] == "2"
        and "US-KS-2" in row[SECOND]
        and "no: none of RUNPOD_GPU_TYPE in stock" in row[SECOND]
    )
    assert row["gone-volume"].split()[0] == "3" and "no such volume" in row["gone-volume"]
    assert "not in RUNPOD_STORAGE_NAME" in row["unlisted-volume"]
    assert "prio = the order spawns try them" in lines[-1]
