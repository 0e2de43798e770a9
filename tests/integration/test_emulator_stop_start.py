"""The emulator's stopped pods and their resume, on the wire and inside the pod sandbox.

REST responses go through the OpenAPI checker (``rest_client``); GraphQL goes through the official
SDK. Checked here: the resume knobs (time, refusal share, zero-GPU share) through the admin API and the
command line; a start refused in Runpod's words; a start without a GPU as each API shows it; a stopped
pod's GPU back in stock; and in the sandbox, the container disk wiped by a stop and the start script
making the host key that the next start replaces.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest
import runpod
import runpod.error as rp_error

from orchestrator.core.errors import RunpodError
from orchestrator.standins.emulator import EmulatorServer, Faults
from orchestrator.standins.emulator.cli import build_parser
from tests.e2e.conftest import wait_until
from tests.integration.test_emulator_rest import wait_pod
from tests.plugins.emulator import TEST_API_KEY
from tests.plugins.sandbox import SandboxFactory, SSHKeyPair, run, ssh_to

GPU = "NVIDIA GeForce RTX 4090"
IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
NOT_ENOUGH = "There are not enough free GPUs on the host machine to start this pod"


def create(client: httpx.Client, **over: Any) -> str:
    body: dict[str, Any] = {
        "name": "gpu-20261206_010000-bbbb2222",
        "image": IMAGE,
        "gpu": {"id": GPU, "count": 1},
        "ports": ["22/tcp"],
        "env": {"PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample test@x"},
        "mounts": {"persistent": {"size": 40, "path": "/workspace"}},
    }
    body.update(over)
    r = client.post("/v2/pods", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def action(client: httpx.Client, pod_id: str, name: str) -> httpx.Response:
    return client.post(f"/v2/pods/{pod_id}/action", json={"action": name})


def test_resume_knobs_are_checked_and_reach_the_command_line(emulator: EmulatorServer) -> None:
    f = Faults()
    # A resume needs no image pull: its default is quicker than a cached create, let alone a cold one.
    assert 0 < f.resume_sec < f.boot_cached_s < f.boot_cold_s
    assert f.resume_no_gpu_share == 0.0 and f.resume_zero_gpu_share == 0.0
    with pytest.raises(RunpodError) as bad:
        emulator.admin.set_faults(resume_no_gpu_share=1.5)
    assert bad.value.status == 422
    with pytest.raises(RunpodError):
        emulator.admin.set_faults(resume_sec=-1)
    knobs = emulator.admin.set_faults(resume_sec=12, resume_zero_gpu_share=0.25)
    assert knobs["resume_sec"] == 12.0 and knobs["resume_zero_gpu_share"] == 0.25
    args = build_parser().parse_args(
        ["--resume-sec", "7", "--resume-no-gpu-share", "0.3", "--resume-zero-gpu-share", "0.1"]
    )
    assert (args.knob_resume_sec, args.knob_resume_no_gpu_share, args.knob_resume_zero_gpu_share) == (
        "7",
        "0.3",
        "0.1",
    )


def test_rest_stop_frees_the_gpu_and_start_boots_in_resume_time(
    emulator_factory: Callable[..., EmulatorServer], rest_client: Callable[..., httpx.Client]
) -> None:
    # speed 100, no jitter: a cached create takes 1 s, a resume 0.05 s; the stop at once (its grace is
    # the next test's).
    emu = emulator_factory(
        speed=100, faults={"boot_cached_s": 100, "resume_sec": 5, "boot_jitter": 0, "stop_grace_sec": 0}
    )
    emu.admin.set_capacity(GPU, "US-KS-2", 1)
    emu.admin.set_capacity(GPU, "EU-RO-1", 0)
    c = rest_client(emu)
    pod_id = create(c)
    wait_pod(c, pod_id, "RUNNING")
    assert emu.state.free(GPU, "US-KS-2") == 0

    stopped = action(c, pod_id, "stop").json()
    assert stopped["status"] == "EXITED" and stopped["gpu"] == {"id": GPU, "count": 1}
    assert stopped["mounts"] == {"persistent": {"size": 40, "path": "/workspace"}}
    assert emu.state.free(GPU, "US-KS-2") == 1  # another create could take it now
    conflict = action(c, pod_id, "stop")
    assert conflict.status_code == 409 and conflict.json()["status"] == 409

    started = action(c, pod_id, "start")
    assert started.status_code == 200 and started.json()["status"] == "PROVISIONING"
    wait_pod(c, pod_id, "RUNNING")
    view = emu.admin.pod(pod_id)
    assert view["bootKind"] == "resume" and view["bootDelaySeconds"] == pytest.approx(0.05)
    assert 0.05 <= view["bootToReadySeconds"] < view["createToReadySeconds"]
    # 40 GB of volume disk at $0.20/GB/month while it was stopped.
    assert view["stoppedSeconds"] > 0
    assert view["stoppedDiskUsd"] == pytest.approx(
        view["stoppedSeconds"] * 40 * 0.20 / 720 / 3600, rel=1e-3, abs=2e-9
    )


def _ssh_echo(port: int, keypair: SSHKeyPair, word: str) -> str:
    """``echo word`` on the pod at ``port`` (its host key taken as offered: the pod is ours, on loopback)."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1", port=port, username="root", pkey=keypair.pkey, timeout=10, look_for_keys=False
    )
    with client:
        return run(client, f"echo {word}")[1].strip()


def test_a_stop_takes_the_containers_grace_and_its_worker_runs_on_meanwhile(
    emulator_factory: Callable[..., EmulatorServer],
    rest_client: Callable[..., httpx.Client],
    ssh_keypair: SSHKeyPair,
) -> None:
    """The image's PID 1 ignores SIGTERM, so `docker stop` waits its grace out: until then the stopped
    pod runs, bills and answers as it was; a start is refused, a second stop accepted. A termination
    ends the pod in the API at once while its processes run on for the same grace."""
    # speed 100: a 1000 s grace lasts 10 s, far longer than the checks below take.
    emu = emulator_factory(speed=100, faults={"stop_grace_sec": 1000})
    c = rest_client(emu)
    pod_id = create(c, env={"PUBLIC_KEY": ssh_keypair.public_key})
    wait_pod(c, pod_id, "RUNNING")
    port = emu.admin.pod(pod_id)["sshPort"]

    answer = action(c, pod_id, "stop")
    assert answer.status_code == 200 and answer.json()["status"] == "RUNNING"
    assert answer.json()["cost"] > 0
    assert emu.admin.pod(pod_id)["stopping"] is True
    assert action(c, pod_id, "stop").status_code == 200  # asked again: the same stop
    assert action(c, pod_id, "start").status_code == 409
    billed = emu.admin.pod(pod_id)["billedSeconds"]
    wait_until(lambda: emu.admin.pod(pod_id)["billedSeconds"] > billed, 10, "the stopping pod to bill on")
    # The container still runs its processes: a command over SSH answers.
    assert _ssh_echo(port, ssh_keypair, "alive") == "alive"

    # Terminated meanwhile: gone from the API at once, its processes still running out the grace.
    assert c.delete(f"/v2/pods/{pod_id}").status_code == 204
    assert c.get(f"/v2/pods/{pod_id}").status_code == 404
    assert _ssh_echo(port, ssh_keypair, "still") == "still"
    assert emu.admin.pod(pod_id)["status"] == "TERMINATED"

    # With the default grace (0.1 s at this speed) the stop completes on its own.
    emu.admin.set_faults(stop_grace_sec=10)
    other = create(c, name="gpu-20261206_010000-cccc3333")
    wait_pod(c, other, "RUNNING")
    assert action(c, other, "stop").json()["status"] == "RUNNING"
    wait_pod(c, other, "EXITED")
    assert emu.admin.pod(other)["stopping"] is False and c.get(f"/v2/pods/{other}").json()["cost"] == 0


def test_rest_start_refused_for_a_full_host_and_started_without_gpu(
    emulator: EmulatorServer, rest_client: Callable[..., httpx.Client]
) -> None:
    c = rest_client(emulator)
    pod_id = create(c)
    wait_pod(c, pod_id, "RUNNING")
    assert action(c, pod_id, "stop").status_code == 200
    wait_pod(c, pod_id, "EXITED")  # its stop grace (10 ms at this speed) over

    emulator.admin.set_faults(resume_no_gpu_share=1.0)
    refused = action(c, pod_id, "start")
    assert refused.status_code == 400
    assert refused.json()["detail"] == NOT_ENOUGH
    assert c.get(f"/v2/pods/{pod_id}").json()["status"] == "EXITED"

    emulator.admin.set_faults(resume_no_gpu_share=0.0, resume_zero_gpu_share=1.0)
    started = action(c, pod_id, "start").json()
    # openapi: ``gpu`` is omitted from a pod without one (its count cannot be 0).
    assert "gpu" not in started
    running = wait_pod(c, pod_id, "RUNNING")
    assert "gpu" not in running and running["runtime"]["gpus"] == []
    assert running["cost"] > 0  # it bills on
    assert action(c, pod_id, "stop").status_code == 200
    stopped = wait_pod(c, pod_id, "EXITED")
    assert stopped["gpu"] == {"id": GPU, "count": 1}
    assert action(c, pod_id, "terminate").status_code == 204


@pytest.fixture
def sdk(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    """The official SDK pointed at the emulator (it reads both at call time)."""
    monkeypatch.setenv("RUNPOD_API_BASE_URL", emulator.base_url)
    monkeypatch.setattr(runpod, "api_key", TEST_API_KEY)
    return emulator


def sdk_ready(pod_id: str, timeout: float = 15.0) -> dict[str, Any]:
    pod = wait_until(
        lambda: p if (p := runpod.get_pod(pod_id)) and p["runtime"] else None,
        timeout,
        f"pod {pod_id} ready",
        interval=0.02,
    )
    return dict(pod)


def test_sdk_pod_stop_and_resume_with_and_without_gpu(sdk: EmulatorServer) -> None:
    created = runpod.create_pod(
        "gpu-sdk-pool-1",
        IMAGE,
        GPU,
        volume_in_gb=20,
        ports="22/tcp",
        env={"PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample test@x"},
    )
    pod_id = created["id"]
    sdk_ready(pod_id)
    assert runpod.stop_pod(pod_id) == {"id": pod_id, "desiredStatus": "EXITED"}
    # The container runs out its stop grace (10 ms at this speed) before its runtime goes.
    wait_until(lambda: runpod.get_pod(pod_id)["runtime"] is None, 10, "the stop to end the container")
    stopped = runpod.get_pod(pod_id)
    assert stopped["desiredStatus"] == "EXITED" and stopped["runtime"] is None and stopped["costPerHr"] == 0
    assert stopped["gpuCount"] == 1

    sdk.admin.set_faults(resume_no_gpu_share=1.0)
    with pytest.raises(rp_error.QueryError, match=f"^{NOT_ENOUGH}$"):
        runpod.resume_pod(pod_id, 1)
    sdk.admin.set_faults(resume_no_gpu_share=0.0, resume_zero_gpu_share=1.0)
    resumed = runpod.resume_pod(pod_id, 1)
    assert resumed["desiredStatus"] == "RUNNING"
    pod = sdk_ready(pod_id)
    assert pod["gpuCount"] == 0
    runpod.terminate_pod(pod_id)


def test_sandbox_stop_wipes_the_container_disk_and_the_next_start_makes_a_new_host_key(
    sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair, tmp_path: Path
) -> None:
    volume = tmp_path / "volume-disk"
    volume.mkdir()
    box = sandbox_factory(volume_dir=volume)
    # The start script made the host key (the container disk had none), as the image's does.
    assert "ED25519 key fingerprint:" in (box.dir / "pod.log").read_text()
    first_key = box.host_key_pub.read_text()
    with ssh_to(box, ssh_keypair) as client:
        assert run(client, "echo kept > /workspace/file && echo gone > /root/file")[0] == 0
    box.stop_and_wipe()
    assert not box.alive and not box.container_dir.exists()
    assert (volume / "file").read_text() == "kept\n"

    resumed = sandbox_factory(box.pod_id, volume_dir=volume)
    assert resumed.host_key_pub.read_text() != first_key
    assert (box.dir / "pod.log").read_text().count("ED25519 key fingerprint:") == 2
    with ssh_to(resumed, ssh_keypair) as client:
        assert run(client, "cat /workspace/file; test -e /root/file; echo $?")[1] == "kept\n1\n"
    # A plain stop (a container restart's) keeps the disk; a later stop_and_wipe then does nothing.
    resumed.stop()
    assert resumed.container_dir.exists()
    resumed.stop_and_wipe()
    assert resumed.container_dir.exists()


def test_sandbox_without_public_key_makes_no_host_key(sandbox_factory: SandboxFactory) -> None:
    box = sandbox_factory(public_key=False)
    assert "key fingerprint" not in (box.dir / "pod.log").read_text()
    # Only the whiteout hiding the host's own key is there, no key of the pod's.
    key = box.container_dir / "etc" / "ssh" / "ssh_host_ed25519_key"
    assert not key.is_file()


def test_sandbox_started_without_gpu_has_an_nvidia_smi_that_sees_none(
    sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair
) -> None:
    box = sandbox_factory(env={"RUNPOD_GPU_COUNT": "0"})
    with ssh_to(box, ssh_keypair) as client:
        code, out, _ = run(client, "nvidia-smi")
    assert (code, out) == (6, "No devices were found\n")
