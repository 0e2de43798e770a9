"""Each fault knob of the Runpod emulator, shown working (one test per knob).

Knobs are turned through the admin endpoint (``emulator.admin``), as tests of the orchestrator will
do; ``test_cli_serves_with_knobs_until_sigterm`` covers the command-line form.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest

from orchestrator.standins.emulator import EmulatorServer
from tests.plugins.emulator import REPO_ROOT, check_rest
from tests.plugins.sandbox import SSHKeyPair

GPU = "NVIDIA GeForce RTX 4090"
IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
H = {"Authorization": "Bearer rpa_faults"}


def create(emu: EmulatorServer, **over: Any) -> httpx.Response:
    body: dict[str, Any] = {"name": "w", "image": IMAGE, "gpu": {"id": GPU}, "ports": ["22/tcp"]}
    body.update(over)
    return check_rest(httpx.post(f"{emu.base_url}/v2/pods", json=body, headers=H, timeout=30))


def get(emu: EmulatorServer, pod_id: str) -> dict[str, Any]:
    return dict(check_rest(httpx.get(f"{emu.base_url}/v2/pods/{pod_id}", headers=H, timeout=30)).json())


def wait_admin(
    emu: EmulatorServer, pod_id: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = emu.admin.pod(pod_id)
        if pred(view):
            return view
        assert time.monotonic() < deadline, f"pod {pod_id}: condition not met, last view {view}"
        time.sleep(0.02)


def ready(emu: EmulatorServer, pod_id: str) -> dict[str, Any]:
    wait_admin(emu, pod_id, lambda v: v["status"] == "RUNNING")
    return get(emu, pod_id)


def test_api_error_rate_answers_5xx_before_doing_anything(emulator: EmulatorServer) -> None:
    emulator.admin.set_faults(api_error_rate=1.0)
    r = create(emulator)
    assert r.status_code == 503 and r.json()["status"] == 503
    assert r.headers["content-type"] == "application/problem+json" and "RateLimit" in r.headers
    assert emulator.admin.pods() == []
    emulator.admin.set_faults(api_error_rate=0.0)
    assert create(emulator).status_code == 201


def test_api_error_after_rate_applies_the_request_then_fails(emulator: EmulatorServer) -> None:
    emulator.admin.set_faults(api_error_after_rate=1.0)
    r = create(emulator, name="lost-response")
    assert r.status_code == 502
    # The response was lost, the pod was not: a client must find it by name.
    pods = check_rest(httpx.get(f"{emulator.base_url}/v2/pods", headers=H)).json()["pods"]
    assert [p["name"] for p in pods] == ["lost-response"]
    assert (
        check_rest(httpx.get(f"{emulator.base_url}/v2/pods", headers=H)).status_code == 200
    )  # reads are not affected


def test_api_429_burst_then_recovers(emulator: EmulatorServer) -> None:
    emulator.admin.set_faults(api_429_burst=2, retry_after_s=7)
    for _ in range(2):
        r = check_rest(httpx.get(f"{emulator.base_url}/v2/pods", headers=H))
        assert r.status_code == 429 and r.headers["Retry-After"] == "7"
        assert r.headers["RateLimit"].startswith('"minute";r=0;t=7')
        assert r.json()["title"] == "Too Many Requests"
    assert check_rest(httpx.get(f"{emulator.base_url}/v2/pods", headers=H)).status_code == 200
    assert emulator.admin.faults()["api_429_burst"] == 0
    # GraphQL shares the burst, answered with a gateway's page (the harsher case: the SDK cannot
    # decode it, so the client must read the page to know it was rate limited).
    emulator.admin.set_faults(api_429_burst=1)
    r = httpx.post(f"{emulator.base_url}/graphql", json={"query": "{ myself { id } }"}, headers=H)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.headers["Content-Type"].startswith("text/html") and "429 Too Many Requests" in r.text


def test_rate_limit_window_quota(emulator: EmulatorServer) -> None:
    emulator.admin.set_faults(rate_limit_minute=3)
    codes = [check_rest(httpx.get(f"{emulator.base_url}/v2/pods", headers=H)) for _ in range(4)]
    assert [c.status_code for c in codes] == [200, 200, 200, 429]
    assert [c.headers["RateLimit"].split(";")[1] for c in codes] == ["r=2", "r=1", "r=0", "r=0"]
    assert codes[3].json()["detail"] == "rate limit exceeded for the minute window"
    assert 0 < int(codes[3].headers["Retry-After"]) <= 60
    # Windows are per key.
    other = check_rest(httpx.get(f"{emulator.base_url}/v2/pods", headers={"Authorization": "Bearer another"}))
    assert other.status_code == 200


def test_api_latency(emulator: EmulatorServer) -> None:
    emulator.admin.set_faults(api_latency_s=0.3)
    t0 = time.monotonic()
    assert check_rest(httpx.get(f"{emulator.base_url}/v2/pods", headers=H)).status_code == 200
    assert time.monotonic() - t0 >= 0.3


def test_boot_delays_cold_then_cached_scaled_by_speed(
    emulator_factory: Callable[..., EmulatorServer],
) -> None:
    # speed 100: a 60 s cold boot takes 0.6 s, a 5 s cached boot 0.05 s.
    emu = emulator_factory(speed=100, faults={"boot_cold_s": 60, "boot_cached_s": 5, "boot_jitter": 0})
    first = create(emu).json()["id"]
    t0 = time.monotonic()
    time.sleep(0.02)
    assert get(emu, first)["status"] in ("PROVISIONING", "STARTING")
    view = ready(emu, first)
    assert time.monotonic() - t0 >= 0.55
    a = emu.admin.pod(first)
    assert a["bootKind"] == "cold" and a["bootDelaySeconds"] == pytest.approx(0.6)
    assert view["runtime"] is not None
    second = create(emu).json()["id"]  # same image, same data center: cached now
    ready(emu, second)
    b = emu.admin.pod(second)
    assert b["bootKind"] == "cached" and b["bootDelaySeconds"] == pytest.approx(0.05)
    assert b["createToReadySeconds"] < a["createToReadySeconds"]


def test_boot_jitter_spreads_boot_delays_reproducibly_by_seed(
    emulator_factory: Callable[..., EmulatorServer],
) -> None:
    knobs = {"boot_cold_s": 100, "boot_cached_s": 100, "boot_jitter": 0.5, "seed": 42}
    runs = []
    for _ in range(2):
        emu = emulator_factory(speed=1000, faults=knobs)
        ids = [create(emu).json()["id"] for _ in range(4)]
        runs.append([emu.admin.pod(i)["bootDelaySeconds"] for i in ids])
    assert all(0.05 <= d <= 0.15 for d in runs[0])  # 100 s / 1000, +-50 %
    assert len(set(runs[0])) == 4  # spread out
    assert runs[0] == runs[1]  # the same seed draws the same delays


def test_cold_share_forces_cold_boots(emulator: EmulatorServer) -> None:
    first = create(emulator).json()["id"]
    ready(emulator, first)
    emulator.admin.set_faults(cold_share=1.0)
    second = create(emulator).json()["id"]
    assert emulator.admin.pod(second)["bootKind"] == "cold"


def test_never_ready_share_leaves_pods_starting_forever(emulator: EmulatorServer) -> None:
    emulator.admin.set_faults(never_ready_share=1.0)
    pod_id = create(emulator).json()["id"]
    view = wait_admin(emulator, pod_id, lambda v: v["stuck"])
    assert view["status"] == "STARTING" and view["sshPort"] is None
    pod = get(emulator, pod_id)
    assert pod["status"] == "STARTING" and pod["runtime"] is None and pod["ssh"]["direct"] is None
    assert pod["cost"] > 0  # and it keeps billing, as a stuck real pod does


def test_ssh_refuse_share_publishes_a_port_that_refuses(emulator: EmulatorServer) -> None:
    emulator.admin.set_faults(ssh_refuse_share=1.0)
    pod_id = create(emulator).json()["id"]
    pod = ready(emulator, pod_id)
    port = pod["ssh"]["direct"]["port"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_capacity_per_gpu_and_data_center_returns_on_termination(emulator: EmulatorServer) -> None:
    emulator.admin.set_capacity(GPU, "EU-RO-1", 1)
    emulator.admin.set_capacity(GPU, "US-KS-2", 0)
    first = create(emulator)
    assert first.status_code == 201
    refused = create(emulator)
    assert refused.status_code == 400
    assert refused.json()["detail"].startswith("There are no longer any instances available")
    cap = {(c["gpu"], c["dataCenter"]): c for c in emulator.admin.capacity()}
    assert cap[(GPU, "EU-RO-1")]["used"] == 1 and cap[(GPU, "EU-RO-1")]["free"] == 0
    assert (
        check_rest(httpx.delete(f"{emulator.base_url}/v2/pods/{first.json()['id']}", headers=H)).status_code
        == 204
    )
    assert create(emulator).status_code == 201


def test_preemption_of_a_running_pod(emulator: EmulatorServer) -> None:
    pod_id = create(emulator).json()["id"]
    port = ready(emulator, pod_id)["ssh"]["direct"]["port"]
    assert emulator.admin.preempt(pod_id)["status"] == "EXITED"
    pod = get(emulator, pod_id)
    assert pod["status"] == "EXITED" and pod["cost"] == 0 and pod["runtime"] is None
    deadline = time.monotonic() + 10
    while True:  # sshd is being killed in the background; wait for the port to close
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            break
        assert time.monotonic() < deadline, "sshd still answers after preemption"
        time.sleep(0.02)
    billed = emulator.admin.pod(pod_id)["billedSeconds"]
    time.sleep(0.05)
    assert emulator.admin.pod(pod_id)["billedSeconds"] == billed  # billing stopped


def _start_fake_worker(emu: EmulatorServer, pod_id: str, key: SSHKeyPair) -> list[int]:
    """Log into the pod over SSH and start a process the sandbox recognises as the worker."""
    port = ready(emu, pod_id)["ssh"]["direct"]["port"]
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            "127.0.0.1",
            port=port,
            username="root",
            pkey=key.pkey,
            timeout=10,
            allow_agent=False,
            look_for_keys=False,
        )
        cmd = "nohup python3 -c 'import time; time.sleep(120)' orchestrator.standins.worker >/dev/null 2>&1 &"
        _, out, _ = client.exec_command(cmd, timeout=10)
        assert out.channel.recv_exit_status() == 0
    finally:
        client.close()
    sandbox = emu.state.pods[pod_id].sandbox
    assert sandbox is not None
    deadline = time.monotonic() + 10
    while not (pids := sandbox.worker_pids()):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the worker process did not appear in the pod"
        time.sleep(0.02)
    return list(pids)


def test_worker_crash(emulator: EmulatorServer, ssh_keypair: SSHKeyPair) -> None:
    pod_id = create(emulator, env={"PUBLIC_KEY": ssh_keypair.public_key}).json()["id"]
    pids = _start_fake_worker(emulator, pod_id, ssh_keypair)
    assert emulator.admin.crash_worker(pod_id) is True
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() and "Z" not in _proc_state(p) for p in pids):
        assert time.monotonic() < deadline, "worker survived the crash"
        time.sleep(0.02)
    assert get(emulator, pod_id)["status"] == "RUNNING"  # the pod lives on; only its worker died
    assert emulator.admin.crash_worker(pod_id) is False


def test_worker_hang(emulator: EmulatorServer, ssh_keypair: SSHKeyPair) -> None:
    pod_id = create(emulator, env={"PUBLIC_KEY": ssh_keypair.public_key}).json()["id"]
    pids = _start_fake_worker(emulator, pod_id, ssh_keypair)
    assert emulator.admin.hang_worker(pod_id) is True
    deadline = time.monotonic() + 10
    while not all(_proc_state(p) == "T" for p in pids):
        assert time.monotonic() < deadline, "worker is not stopped"
        time.sleep(0.02)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_unknown_or_invalid_knobs_are_refused(emulator: EmulatorServer) -> None:
    r = httpx.patch(f"{emulator.base_url}/_emulator/faults", json={"api_error_rate": 2, "nonsense": 1})
    assert r.status_code == 422 and len(r.json()["errors"]) == 2
    assert emulator.admin.faults()["api_error_rate"] == 0.0


def test_reset_restores_catalog_and_knobs(emulator: EmulatorServer) -> None:
    emulator.admin.set_faults(api_latency_s=0.5)
    emulator.admin.set_capacity(GPU, "EU-RO-1", 0)
    pod_id = create(emulator).json()["id"]
    emulator.admin.reset()
    assert emulator.admin.pods() == [] and emulator.admin.faults()["api_latency_s"] == 0.0
    cap = {(c["gpu"], c["dataCenter"]): c["total"] for c in emulator.admin.capacity()}
    assert cap[(GPU, "EU-RO-1")] == 24
    assert check_rest(httpx.get(f"{emulator.base_url}/v2/pods/{pod_id}", headers=H)).status_code == 404


def test_cli_serves_with_knobs_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.standins.emulator",
            "--port",
            "0",
            "--speed",
            "50",
            "--state-dir",
            str(tmp_path / "state"),
            "--api-key",
            "k1",
            "--api-latency-s",
            "0.05",
            "--capacity",
            f"{GPU}@US-KS-2=3",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().decode().strip()
        assert base_url.startswith("http://127.0.0.1:")
        admin = httpx.get(f"{base_url}/_emulator/faults").json()
        assert admin["api_latency_s"] == 0.05
        cap = httpx.get(f"{base_url}/_emulator/capacity").json()["capacity"]
        assert {"gpu": GPU, "dataCenter": "US-KS-2", "total": 3, "used": 0, "free": 3} in cap
        assert (
            check_rest(httpx.get(f"{base_url}/v2/pods", headers={"Authorization": "Bearer k1"})).status_code
            == 200
        )
        assert (
            check_rest(httpx.get(f"{base_url}/v2/pods", headers={"Authorization": "Bearer k2"})).status_code
            == 401
        )
        assert (tmp_path / "state" / "volumes").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        if proc.stdout is not None:
            proc.stdout.close()
