"""The warm pool's wire, over both transports: ``RunpodProvider.stop`` and ``resume`` against the emulator.

Real parts throughout: the emulator's REST v2 (every request and response checked against Runpod's
OpenAPI document when a copy is present) and GraphQL through the official SDK, pods that are real
sshd sandboxes, paramiko through the provider's own SSH. A stopped pod is EXITED and bills its volume
disk only; a resumed one comes back with its volume, without its container disk, and with a new SSH
host key that the provider trusts once because it asked for the resume; a full host (refused, or a
start with no GPU) is ``no_gpu``; an unknown pod is ``gone``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.adapters.provider import RunpodProvider
from orchestrator.adapters.runpod.base import EXITED, RUNNING, RetryPolicy
from orchestrator.adapters.runpod.rest import RestTransport
from orchestrator.standins.emulator import EmulatorServer
from tests.e2e.conftest import wait_until
from tests.plugins.emulator import TEST_API_KEY, OpenApiChecker, check_rest, check_rest_request
from tests.plugins.sandbox import SSHKeyPair

TRANSPORTS = ["rest", "graphql"]
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, max_rate_limit_wait=5.0, max_total=20.0)
NOT_ENOUGH = "There are not enough free GPUs on the host machine to start this pod"
GPU = "NVIDIA GeForce RTX 4090"
# The catalog's network volume "workspace" (with the simulated worker's checkout) is in EU-RO-1.
VOLUME_DC = "EU-RO-1"


def wait_for(fn: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    return wait_until(fn, timeout, what, interval=0.02)


@pytest.fixture
def provider_factory(
    emulator: EmulatorServer, ssh_keypair: SSHKeyPair, tmp_path: Path
) -> Iterator[Callable[..., RunpodProvider]]:
    """``make(api, volume=True)``: a provider as the daemon builds it, pointed at the emulator. Its REST
    transport checks every request and response against the OpenAPI document when a copy is present."""
    made: list[RunpodProvider] = []

    def make(api: str, *, volume: bool = True) -> RunpodProvider:
        pub = tmp_path / "id.pub"
        pub.write_text(ssh_keypair.public_key + "\n")
        transport = None
        if api == "rest":
            client = httpx.Client(
                base_url=emulator.base_url + "/v2",
                headers={"Authorization": f"Bearer {TEST_API_KEY}", "Accept": "application/json"},
                timeout=30,
                event_hooks={"request": [check_rest_request], "response": [check_rest]},
            )
            transport = RestTransport(TEST_API_KEY, emulator.base_url, retry=FAST_RETRY, client=client)
        p = RunpodProvider(
            TEST_API_KEY,
            api=api,
            api_base_url=emulator.base_url,
            storage_name="workspace" if volume else None,
            ssh_public_key_path=pub,
            ssh_private_key_path=ssh_keypair.private_key_path,
            ssh_connect_timeout=10.0,
            retry=FAST_RETRY,
            transport=transport,
            env={},
        )
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def spawn_ready(provider: RunpodProvider, emulator: EmulatorServer) -> str:
    """A new worker pod, RUNNING with sshd answering; its runpod id."""
    worker_id = f"gpu-pool-{uuid.uuid4().hex[:8]}"
    runpod_id = provider.spawn(worker_id).runpod_id
    emulator.admin.wait_status(runpod_id, RUNNING, timeout=30)
    return runpod_id


def stop(provider: RunpodProvider, emulator: EmulatorServer, runpod_id: str) -> None:
    """Stop the pod and wait out its container's stop grace (the emulator's ``stop_grace_sec``), as the
    daemon waits for the listing to show it EXITED before it counts the pod as pooled."""
    assert provider.stop(runpod_id) is True
    emulator.admin.wait_status(runpod_id, EXITED, timeout=30)


def ready_pod(provider: RunpodProvider, runpod_id: str) -> Any:
    return wait_for(
        lambda: p if (p := provider.get_pod(runpod_id)) is not None and p.ssh_ready else None,
        what=f"pod {runpod_id} ready for SSH",
    )


def boot_check(provider: RunpodProvider, runpod_id: str, **kw: Any) -> Any:
    """check_boot until it stops saying not_ready."""
    ready_pod(provider, runpod_id)
    return wait_for(
        lambda: c if (c := provider.check_boot("gpu-pool", runpod_id, **kw)).status != "not_ready" else None,
        what=f"boot check of {runpod_id}",
    )


@pytest.mark.parametrize("api", TRANSPORTS)
def test_stop_then_resume_keeps_the_volume_and_presents_a_new_host_key(
    api: str, emulator: EmulatorServer, provider_factory: Callable[..., RunpodProvider]
) -> None:
    provider = provider_factory(api)
    runpod_id = spawn_ready(provider, emulator)
    first = boot_check(provider, runpod_id)
    assert first.status == "ready", first
    old_fp = first.host_key_fingerprint
    marker = f"pool-{uuid.uuid4().hex[:8]}"
    code, _, err = provider.run_command(
        runpod_id, f"echo kept > /workspace/{marker} && echo gone > /root/{marker}"
    )
    assert code == 0, err

    stop(provider, emulator, runpod_id)
    stopped = provider.get_pod(runpod_id)
    assert stopped is not None and stopped.is_stopped and stopped.ssh_port is None
    assert stopped.cost_per_hr == 0.0  # the API shows no cost for an EXITED pod (openapi Pod.cost)
    listed = [p for p in provider.list_pods() if p.id == runpod_id]
    assert len(listed) == 1 and listed[0].is_stopped and listed[0].gpu_count == 1
    # The container disk goes with the stop (the sandbox's processes are ended first).
    wait_for(lambda: not (emulator.state.state_dir / "pods" / runpod_id / "container").exists(), what="wipe")

    result = provider.resume(runpod_id)
    assert result.status == "resumed" and result.gpu_count == 1, result
    assert emulator.admin.pod(runpod_id)["bootKind"] == "resume"

    # A pinned fingerprint is refused, as anywhere else...
    refused = boot_check(provider, runpod_id, expected_fingerprint=old_fp)
    assert refused.status == "failed" and refused.ssh_error == "host_key_changed", refused
    # ...but the provider itself trusts the new key once: it asked for this resume.
    again = boot_check(provider, runpod_id)
    assert again.status == "ready", again
    assert again.host_key_fingerprint and again.host_key_fingerprint != old_fp
    code, out, _ = provider.run_command(
        runpod_id, f"cat /workspace/{marker}; test -e /root/{marker}; echo $?"
    )
    assert out == "kept\n1\n", out  # the volume survives, the container disk does not
    assert provider.terminate(runpod_id) is True


@pytest.mark.parametrize("api", TRANSPORTS)
def test_a_stopped_pod_bills_its_volume_disk_only(
    api: str, emulator: EmulatorServer, provider_factory: Callable[..., RunpodProvider]
) -> None:
    # No network volume: the pod gets a 20 GB volume disk (RUNPOD_DISK_SIZE_GB's default).
    provider = provider_factory(api, volume=False)
    runpod_id = spawn_ready(provider, emulator)
    running = emulator.admin.pod(runpod_id)
    assert running["stoppedDiskUsd"] == 0 and running["billedSeconds"] > 0
    stop(provider, emulator, runpod_id)
    at_stop = emulator.admin.pod(runpod_id)
    assert at_stop["status"] == EXITED and at_stop["desiredStatus"] == EXITED
    later = wait_for(
        lambda: (
            v
            if (v := emulator.admin.pod(runpod_id))["stoppedSeconds"] > at_stop["stoppedSeconds"] + 0.2
            else None
        ),
        what="stopped time accruing",
    )
    # The GPU bills no more; the volume disk does, at $0.20/GB/month (30-day months).
    assert later["billedSeconds"] == at_stop["billedSeconds"]
    rate = 20 * 0.20 / 720
    assert later["stoppedDiskUsdPerHr"] == pytest.approx(rate)
    assert later["stoppedDiskUsd"] == pytest.approx(later["stoppedSeconds"] * rate / 3600, rel=1e-2)
    gpu_usd = later["billedSeconds"] * later["costPerHr"] / 3600
    assert later["billedUsd"] == pytest.approx(gpu_usd + later["stoppedDiskUsd"], rel=1e-2)
    # All that was added since the stop is the disk's.
    grown = later["billedUsd"] - at_stop["billedUsd"]
    assert grown > 0 and grown == pytest.approx(later["stoppedDiskUsd"] - at_stop["stoppedDiskUsd"], rel=1e-2)
    # Its GPU is back in stock.
    assert (
        emulator.state.free(GPU, at_stop["dataCenterId"])
        == emulator.state.capacity[(GPU, at_stop["dataCenterId"])]
    )
    # Stopping a stopped pod is a success, not a failure.
    stop(provider, emulator, runpod_id)
    # The volume disk survives: a file written before the stop is there after the resume.
    assert provider.resume(runpod_id).status == "resumed"
    ready_pod(provider, runpod_id)
    resumed = emulator.admin.pod(runpod_id)
    assert (
        resumed["stoppedSeconds"] >= later["stoppedSeconds"]
        and resumed["billedSeconds"] >= later["billedSeconds"]
    )
    assert provider.terminate(runpod_id) is True


@pytest.mark.parametrize("api", TRANSPORTS)
def test_a_refused_resume_is_no_gpu_and_leaves_the_pod_stopped(
    api: str, emulator: EmulatorServer, provider_factory: Callable[..., RunpodProvider]
) -> None:
    provider = provider_factory(api, volume=False)
    runpod_id = spawn_ready(provider, emulator)
    stop(provider, emulator, runpod_id)
    emulator.admin.set_faults(resume_no_gpu_share=1.0)
    result = provider.resume(runpod_id)
    assert result.status == "no_gpu", result
    assert NOT_ENOUGH in result.detail
    pod = provider.get_pod(runpod_id)
    assert pod is not None and pod.is_stopped
    emulator.admin.set_faults(resume_no_gpu_share=0.0)
    assert provider.resume(runpod_id).status == "resumed"
    assert provider.terminate(runpod_id) is True


@pytest.mark.parametrize("api", TRANSPORTS)
def test_a_new_pod_takes_the_stopped_pods_gpu_until_it_gives_it_back(
    api: str, emulator: EmulatorServer, provider_factory: Callable[..., RunpodProvider]
) -> None:
    emulator.admin.set_capacity(GPU, VOLUME_DC, 2)
    provider = provider_factory(api)
    pooled = spawn_ready(provider, emulator)
    stop(provider, emulator, pooled)
    # A second GPU is free in the data center, yet the new pod takes the stopped pod's first.
    taker = spawn_ready(provider, emulator)
    assert emulator.admin.pod(pooled)["hostGpuTakenBy"] == taker
    result = provider.resume(pooled)
    assert result.status == "no_gpu" and NOT_ENOUGH in result.detail, result
    assert provider.terminate(taker) is True
    assert provider.resume(pooled).status == "resumed"
    assert provider.terminate(pooled) is True


@pytest.mark.parametrize("api", TRANSPORTS)
def test_a_resume_without_gpu_is_no_gpu_and_the_pod_is_left_to_terminate(
    api: str, emulator: EmulatorServer, provider_factory: Callable[..., RunpodProvider]
) -> None:
    provider = provider_factory(api)
    runpod_id = spawn_ready(provider, emulator)
    stop(provider, emulator, runpod_id)
    emulator.admin.set_faults(resume_zero_gpu_share=1.0)
    result = provider.resume(runpod_id)
    assert result.status == "no_gpu" and result.gpu_count == 0, result
    # Runpod started it: it runs, without a GPU, and bills until the caller terminates it.
    view = emulator.admin.wait_status(runpod_id, RUNNING, timeout=30)
    assert view["gpuCount"] == 0
    check = boot_check(provider, runpod_id)
    assert check.status == "failed" and check.step == "nvidia_smi", check
    assert "No devices were found" in (check.error or "")
    billed = view["billedSeconds"]
    wait_for(lambda: emulator.admin.pod(runpod_id)["billedSeconds"] > billed, what="billing on")
    assert provider.terminate(runpod_id) is True


@pytest.mark.parametrize("api", TRANSPORTS)
def test_unknown_terminated_and_failed_pods(
    api: str, emulator: EmulatorServer, provider_factory: Callable[..., RunpodProvider]
) -> None:
    provider = provider_factory(api, volume=False)
    assert provider.resume("abcdefghijklmn").status == "gone"
    assert provider.stop("abcdefghijklmn") is False  # nothing there to stop
    runpod_id = spawn_ready(provider, emulator)
    assert provider.terminate(runpod_id) is True
    assert provider.resume(runpod_id).status == "gone"
    assert provider.stop(runpod_id) is False
    failed = spawn_ready(provider, emulator)
    emulator.admin.preempt(failed, to="ERROR")
    if api == "rest":
        # A pod in ERROR cannot be stopped (openapi podAction: ERROR allows start and terminate only).
        # Over GraphQL the SDK reads only desiredStatus, EXITED for a failed pod as for a stopped one.
        assert provider.stop(failed) is False
    assert provider.terminate(failed) is True


@pytest.mark.parametrize("api", TRANSPORTS)
def test_a_repeated_start_returns_the_starting_pod(
    api: str, emulator: EmulatorServer, provider_factory: Callable[..., RunpodProvider]
) -> None:
    """A start whose answer was lost is retried: the second one is refused (the pod is no longer
    stopped), which the transport reads as done; and a resume of a pod already on its way starts
    nothing twice."""
    provider = provider_factory(api, volume=False)
    runpod_id = spawn_ready(provider, emulator)
    stop(provider, emulator, runpod_id)
    first = provider.transport.start_pod(runpod_id, 1)
    assert first.actual_status != EXITED
    second = provider.transport.start_pod(runpod_id, 1)
    assert second.id == runpod_id and second.desired_status == RUNNING
    assert provider.resume(runpod_id).status == "resumed"
    assert provider.terminate(runpod_id) is True


def test_the_rest_requests_follow_the_openapi_document(
    runpod_openapi: OpenApiChecker, emulator: EmulatorServer, provider_factory: Callable[..., RunpodProvider]
) -> None:
    provider = provider_factory("rest", volume=False)
    requests_before, responses_before = runpod_openapi.requests_checked, runpod_openapi.checked
    runpod_id = spawn_ready(provider, emulator)
    stop(provider, emulator, runpod_id)
    assert provider.stop(runpod_id) is True  # the 409 and the read that confirms it
    assert provider.resume(runpod_id).status == "resumed"
    assert provider.terminate(runpod_id) is True
    # create, stop, stop (409) + get, get + start, terminate: each request and answer was checked.
    assert runpod_openapi.requests_checked - requests_before >= 8
    assert runpod_openapi.checked - responses_before >= 8
