"""The emulator's GraphQL subset, driven by the official ``runpod`` SDK (1.12) unchanged.

``RUNPOD_API_BASE_URL`` points the SDK at the emulator; ``runpod.api_key`` is the key (the SDK reads
it at call time). Pods are real sshd sandboxes: readiness is the public ``22/tcp`` mapping in
``runtime.ports`` plus an SSH banner on that port.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
import runpod
from runpod import error as rp_error

from orchestrator.standins.emulator import EmulatorServer
from tests.e2e.conftest import wait_until
from tests.plugins.emulator import TEST_API_KEY

GPU = "NVIDIA GeForce RTX 4090"
IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
NO_CAPACITY = "There are no longer any instances available with the requested specifications. Please refresh and try again."


@pytest.fixture
def sdk(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    monkeypatch.setenv("RUNPOD_API_BASE_URL", emulator.base_url)
    monkeypatch.setattr(runpod, "api_key", TEST_API_KEY)
    yield emulator


def public_ssh_port(pod: dict[str, Any]) -> int | None:
    runtime = pod.get("runtime")
    if not runtime:
        return None
    for p in runtime["ports"] or []:
        if p["privatePort"] == 22 and p["isIpPublic"] and p["type"] == "tcp":
            return int(p["publicPort"])
    return None


def wait_sdk_ready(pod_id: str, timeout: float = 15.0) -> tuple[dict[str, Any], int]:
    deadline = time.monotonic() + timeout
    while True:
        pod = runpod.get_pod(pod_id)
        port = public_ssh_port(pod) if pod else None
        if port is not None:
            return pod, port
        assert time.monotonic() < deadline, f"pod {pod_id} not ready: {pod}"
        time.sleep(0.02)


def banner(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        return s.recv(64)


def create(**over: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "name": "gpu-20261129_010000-bbbb2222",
        "image_name": IMAGE,
        "gpu_type_id": GPU,
        "cloud_type": "SECURE",
        "ports": "22/tcp",
        "volume_mount_path": "/workspace",
        "env": {"PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample test@x"},
        # Left out, as the adapter leaves it: the SDK's default sends dockerArgs: "" (see below).
        "docker_args": None,
    }
    kwargs.update(over)
    return dict(runpod.create_pod(**kwargs))


def test_a_pod_created_with_the_sdks_empty_docker_args_never_starts_sshd(sdk: EmulatorServer) -> None:
    """runpod-python's create_pod sends dockerArgs: "" unless told otherwise, and pods created with an
    empty args list have been seen never to start sshd: RUNNING, its port published, every connection
    refused. The emulator models that harsher case; the adapter leaves the field out."""
    created = create(docker_args="")
    _pod, port = wait_sdk_ready(created["id"])
    with pytest.raises(ConnectionRefusedError):
        banner(port)
    assert sdk.admin.pod(created["id"])["sshRefuse"] is True
    runpod.terminate_pod(created["id"])


def test_sdk_lists_gpus_finds_volume_creates_sees_ready_and_terminates(sdk: EmulatorServer) -> None:
    gpus = runpod.get_gpus()
    assert {"id": GPU, "displayName": "RTX 4090", "memoryInGb": 24} in gpus
    gpu = runpod.get_gpu(GPU)
    assert gpu["securePrice"] == pytest.approx(0.59) and gpu["lowestPrice"][
        "uninterruptablePrice"
    ] == pytest.approx(0.59)
    user = runpod.get_user()
    vol = next(v for v in user["networkVolumes"] if v["name"] == "workspace")
    assert vol["dataCenterId"] == "EU-RO-1"

    # network_volume_id without data_center_id: the SDK looks the volume's data center up itself.
    created = create(network_volume_id=vol["id"])
    assert set(created) == {"id", "imageName", "env", "machineId", "machine"}
    assert len(created["id"]) == 14 and created["machine"]["podHostId"].startswith(created["id"] + "-")
    assert "PUBLIC_KEY=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample test@x" in created["env"]

    first = runpod.get_pod(created["id"])
    assert first["desiredStatus"] == "RUNNING"  # from creation on: not a readiness signal
    pod, port = wait_sdk_ready(created["id"])
    assert banner(port).startswith(b"SSH-2.0-")
    assert pod["ports"] == "22/tcp" and pod["uptimeSeconds"] == 0 and pod["costPerHr"] == pytest.approx(0.59)
    assert pod["machine"]["gpuDisplayName"] == "RTX 4090" and pod["volumeMountPath"] == "/workspace"
    internal = [p for p in pod["runtime"]["ports"] if not p["isIpPublic"]]
    assert internal and internal[0]["ip"].startswith("100.65.")
    assert [p["id"] for p in runpod.get_pods()] == [created["id"]]

    assert runpod.terminate_pod(created["id"]) is None
    assert runpod.get_pod(created["id"]) is None
    assert runpod.get_pods() == []
    assert sdk.admin.pod(created["id"])["status"] == "TERMINATED"


def test_sdk_errors_match_the_real_service(sdk: EmulatorServer) -> None:
    with pytest.raises(ValueError, match="No GPU found with the specified ID"):
        runpod.get_gpu("NVIDIA Imaginary 9000")
    with pytest.raises(rp_error.QueryError, match=r"^pod not found to terminate$"):
        runpod.terminate_pod("nosuchpod00000")
    sdk.admin.set_capacity("NVIDIA H100 80GB HBM3", "US-KS-2", 0)
    with pytest.raises(rp_error.QueryError) as exc:
        create(gpu_type_id="NVIDIA H100 80GB HBM3")
    assert str(exc.value) == NO_CAPACITY
    # A malformed query is a validation error (HTTP 400) carrying graphql-core's message.
    with pytest.raises(rp_error.QueryError, match="Cannot query field 'bogus'"):
        runpod.api.graphql.run_graphql_query("query { myself { bogus } }")
    # Minimum RAM above what the machine gives is "no instances", the case RAM tiers exist for.
    with pytest.raises(rp_error.QueryError, match="no longer any instances"):
        create(min_memory_in_gb=4096)


def test_bad_key_is_401_and_key_may_come_as_query_parameter(
    emulator_factory: Callable[..., EmulatorServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = emulator_factory(api_key=TEST_API_KEY)
    monkeypatch.setenv("RUNPOD_API_BASE_URL", emu.base_url)
    monkeypatch.setattr(runpod, "api_key", "rpa_wrong")
    with pytest.raises(rp_error.AuthenticationError, match="Unauthorized request"):
        runpod.get_gpus()
    monkeypatch.setattr(runpod, "api_key", TEST_API_KEY)
    assert runpod.get_gpus()
    query = {"query": "query { myself { id } }"}
    r = httpx.post(f"{emu.base_url}/graphql", params={"api_key": TEST_API_KEY}, json=query)
    assert r.status_code == 200 and r.json() == {"data": {"myself": {"id": "emulated-user"}}}
    assert httpx.post(f"{emu.base_url}/graphql", json=query).status_code == 401


def test_sdk_stop_and_resume(sdk: EmulatorServer) -> None:
    sdk.admin.set_capacity(GPU, "US-KS-2", 1)
    sdk.admin.set_capacity(GPU, "EU-RO-1", 0)
    pod_id = create()["id"]
    wait_sdk_ready(pod_id)
    stopped = runpod.stop_pod(pod_id)
    assert stopped == {"id": pod_id, "desiredStatus": "EXITED"}
    # The container's stop grace (10 ms at this speed), then no runtime.
    wait_until(lambda: runpod.get_pod(pod_id)["runtime"] is None, 10, "the stop to end the container", 0.02)
    # While it is stopped its GPU goes to someone else; resuming then fails as on the real service.
    other = create()["id"]
    with pytest.raises(
        rp_error.QueryError, match=r"^There are not enough free GPUs on the host machine to start this pod$"
    ):
        runpod.resume_pod(pod_id, 1)
    runpod.terminate_pod(other)
    resumed = runpod.resume_pod(pod_id, 1)
    assert resumed["desiredStatus"] == "RUNNING"
    _, port = wait_sdk_ready(pod_id)
    assert banner(port).startswith(b"SSH-")


def test_gateway_5xx_reaches_the_sdk_as_a_json_error(sdk: EmulatorServer) -> None:
    sdk.admin.set_faults(api_error_rate=1.0)
    with pytest.raises(requests.exceptions.JSONDecodeError):
        runpod.get_gpus()
