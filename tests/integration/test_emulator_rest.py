"""The emulator's REST API v2 subset, driven by httpx as a real client would.

Every response these tests receive goes through ``runpod_openapi.check`` (``rest_client`` fixture):
status documented for the operation, content type, body valid against openapi-v2.json's schema,
``RateLimit``/``RateLimit-Policy`` on authenticated responses. Pods are real sshd sandboxes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest

from orchestrator.core.errors import ConfigError
from orchestrator.standins.emulator import DEFAULT_CATALOG_PATH, EmulatorServer, load_catalog
from tests.plugins.emulator import TEST_API_KEY, OpenApiChecker
from tests.plugins.sandbox import SSHKeyPair

GPU = "NVIDIA GeForce RTX 4090"
IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"


def wait_pod(client: httpx.Client, pod_id: str, status: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pod = client.get(f"/v2/pods/{pod_id}").json()
        if pod["status"] == status:
            return pod
        assert time.monotonic() < deadline, f"pod {pod_id} stayed {pod['status']}, wanted {status}"
        time.sleep(0.02)


def host_key(port: int) -> str:
    """The SSH host key the pod's sshd presents (no login needed)."""
    with paramiko.Transport(("127.0.0.1", port)) as transport:
        transport.start_client(timeout=10)
        return transport.get_remote_server_key().get_base64()


def ssh_banner(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        return s.recv(64)


def pod_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "gpu-20261129_010000-aaaa1111",
        "image": IMAGE,
        "gpu": {"id": GPU, "count": 1},
        "ports": ["22/tcp"],
        "env": {"PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample test@x"},
    }
    body.update(over)
    return body


def test_httpx_lists_gpus_finds_volume_creates_sees_ready_and_terminates(
    emulator: EmulatorServer, rest_client: Callable[..., httpx.Client]
) -> None:
    c = rest_client(emulator)
    gpus = c.get("/v2/catalog/gpus").json()["gpus"]
    assert GPU in [g["id"] for g in gpus] and len(gpus) >= 4
    vols = c.get("/v2/network-volumes").json()["networkVolumes"]
    workspace = next(v for v in vols if v["name"] == "workspace")
    assert workspace["dataCenter"] == "EU-RO-1"

    r = c.post(
        "/v2/pods", json=pod_body(mounts={"network": [{"volumeId": workspace["id"], "path": "/workspace"}]})
    )
    assert r.status_code == 201
    created = r.json()
    assert created["status"] == "PROVISIONING" and created["runtime"] is None
    assert created["ssh"]["direct"] is None and created["dataCenterId"] == "EU-RO-1"
    assert created["cost"] == pytest.approx(0.59)

    pod = wait_pod(c, created["id"], "RUNNING")
    direct = pod["ssh"]["direct"]
    assert direct["host"] == "127.0.0.1" and direct["username"] == "root"
    assert pod["runtime"]["ports"] == [
        {"private": 22, "public": direct["port"], "type": "tcp", "ip": "127.0.0.1"}
    ]
    assert pod["startedAt"] is not None and pod["actions"] == ["stop", "restart", "terminate"]
    assert ssh_banner(direct["port"]).startswith(b"SSH-2.0-")
    assert [p["id"] for p in c.get("/v2/pods").json()["pods"]] == [pod["id"]]

    assert c.delete(f"/v2/pods/{pod['id']}").status_code == 204
    assert c.get(f"/v2/pods/{pod['id']}").status_code == 404
    assert c.get("/v2/pods").json()["pods"] == []
    assert c.delete(f"/v2/pods/{pod['id']}").status_code == 404

    # The admin view keeps the terminated pod with what it cost.
    view = emulator.admin.pod(pod["id"])
    assert view["status"] == "TERMINATED" and view["billedSeconds"] > 0
    assert view["billedUsd"] == pytest.approx(view["billedSeconds"] * 0.59 / 3600, rel=1e-2)


def test_rest_responses_validate_against_openapi_v2(
    emulator_factory: Callable[..., EmulatorServer],
    rest_client: Callable[..., httpx.Client],
    runpod_openapi: OpenApiChecker,
) -> None:
    """A tour of every operation and error status; rest_client validates each response it receives."""
    emu = emulator_factory(api_key=TEST_API_KEY)
    before = runpod_openapi.checked
    c = rest_client(emu)
    c.get("/v2/catalog/gpus", params={"include": "AVAILABILITY", "product": "POD", "count": 2})
    c.get("/v2/catalog/gpus/" + GPU, params={"include": "AVAILABILITY", "product": "POD"})
    c.get("/v2/catalog/datacenters", params={"include": "GPU_AVAILABILITY"})
    c.get("/v2/catalog/datacenters/EU-RO-1")
    vol = c.get("/v2/network-volumes").json()["networkVolumes"][0]
    c.get(f"/v2/network-volumes/{vol['id']}")
    c.patch(f"/v2/network-volumes/{vol['id']}", json={"size": 200})
    new = c.post("/v2/network-volumes", json={"name": "v", "size": 10, "dataCenter": "US-KS-2"}).json()
    assert c.delete(f"/v2/network-volumes/{new['id']}").status_code == 204
    pod = c.post("/v2/pods", json=pod_body(mounts={"persistent": {"size": 20, "path": "/data"}})).json()
    c.get(f"/v2/pods/{pod['id']}")
    wait_pod(c, pod["id"], "RUNNING")
    c.get("/v2/pods")
    c.post(f"/v2/pods/{pod['id']}/action", json={"action": "stop"})
    c.post(f"/v2/pods/{pod['id']}/action", json={"action": "stop"})  # 409
    c.post(f"/v2/pods/{pod['id']}/action", json={"action": "start"})
    c.post(f"/v2/pods/{pod['id']}/action", json={"action": "terminate"})
    c.post("/v2/pods", json={"name": ""})  # 422
    c.post("/v2/pods", json=pod_body(gpu={"id": GPU, "count": 100}))  # 400
    c.put("/v2/pods")  # 405
    c.patch(f"/v2/pods/{pod['id']}", json={"name": "x"})  # 501
    rest_client(emu, key="rpa_wrong").get("/v2/pods")  # 401
    emu.admin.set_faults(api_429_burst=1, api_error_rate=0.0)
    c.get("/v2/pods")  # 429
    emu.admin.set_faults(api_error_rate=1.0)
    c.get("/v2/pods")  # 503
    assert runpod_openapi.checked - before >= 25


def test_auth_and_rate_limit_headers(
    emulator_factory: Callable[..., EmulatorServer], rest_client: Callable[..., httpx.Client]
) -> None:
    emu = emulator_factory(api_key=TEST_API_KEY)
    anonymous = rest_client(emu, key=None).get("/v2/pods")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"title": "Unauthorized", "status": 401, "detail": "missing bearer token"}
    assert "RateLimit" not in anonymous.headers
    assert rest_client(emu, key="rpa_wrong").get("/v2/pods").status_code == 401
    c = rest_client(emu)
    first = c.get("/v2/pods")
    second = c.get("/v2/pods/doesnotexist00")
    assert second.status_code == 404 and second.headers["content-type"] == "application/problem+json"
    assert (
        first.headers["RateLimit-Policy"]
        == '"minute";q=1000;w=60, "hour";q=20000;w=3600, "day";q=200000;w=86400'
    )
    assert first.headers["RateLimit"].startswith('"minute";r=999;')
    assert second.headers["RateLimit"].startswith('"minute";r=998;')
    # Without --api-key any non-empty key is accepted.
    open_emu = emulator_factory()
    assert rest_client(open_emu, key="anything").get("/v2/pods").status_code == 200


def test_create_validation_errors(emulator: EmulatorServer, rest_client: Callable[..., httpx.Client]) -> None:
    c = rest_client(emulator)
    r = c.post("/v2/pods", json={"image": IMAGE, "gpu": {"id": GPU}, "colour": "red"})
    assert r.status_code == 422
    assert "name: required" in r.json()["errors"] and "colour: unexpected property" in r.json()["errors"]
    assert c.post("/v2/pods", json=pod_body(gpu={"id": GPU, "count": 0})).status_code == 422
    assert c.post("/v2/pods", json=pod_body(cloud="MOON")).status_code == 422
    assert (
        c.post("/v2/pods", content=b"{not json", headers={"content-type": "application/json"}).status_code
        == 400
    )
    r = c.post("/v2/pods", json=pod_body(gpu={"id": "NVIDIA Imaginary 9000"}))
    assert r.status_code == 400 and "unknown GPU type" in r.json()["detail"]
    r = c.post(
        "/v2/pods", json=pod_body(mounts={"network": [{"volumeId": "nosuchvol1", "path": "/workspace"}]})
    )
    assert r.status_code == 404
    r = c.post("/v2/pods", json={k: v for k, v in pod_body().items() if k != "gpu"})
    assert r.status_code == 400 and "exactly one of gpu or cpu" in r.json()["detail"]


def test_network_volume_pins_the_data_center(
    emulator: EmulatorServer, rest_client: Callable[..., httpx.Client]
) -> None:
    c = rest_client(emulator)
    vol = c.get("/v2/network-volumes").json()["networkVolumes"][0]
    mounts = {"network": [{"volumeId": vol["id"], "path": "/workspace"}]}
    r = c.post("/v2/pods", json=pod_body(mounts=mounts, dataCenterIds=["US-KS-2"]))
    assert r.status_code == 400 and "EU-RO-1" in r.json()["detail"]
    r = c.post("/v2/pods", json=pod_body(mounts=mounts, dataCenterIds=["US-KS-2", "EU-RO-1"]))
    assert r.status_code == 201 and r.json()["dataCenterId"] == "EU-RO-1"
    assert r.json()["mounts"] == mounts
    r = c.post("/v2/pods", json=pod_body(mounts=mounts, cloud="COMMUNITY"))
    assert r.status_code == 400


def test_stop_start_restart_actions(
    emulator: EmulatorServer, rest_client: Callable[..., httpx.Client]
) -> None:
    c = rest_client(emulator)
    pod_id = c.post("/v2/pods", json=pod_body()).json()["id"]
    running = wait_pod(c, pod_id, "RUNNING")
    old_port = running["ssh"]["direct"]["port"]

    r = c.post(f"/v2/pods/{pod_id}/action", json={"action": "stop"})
    assert r.status_code == 200
    # The container's stop grace (10 ms at this speed), then EXITED.
    stopped = wait_pod(c, pod_id, "EXITED")
    assert stopped["status"] == "EXITED" and stopped["cost"] == 0 and stopped["runtime"] is None
    assert stopped["ssh"]["direct"] is None and stopped["actions"] == ["start", "terminate"]
    assert c.post(f"/v2/pods/{pod_id}/action", json={"action": "restart"}).status_code == 409
    assert c.post(f"/v2/pods/{pod_id}/action", json={"action": "explode"}).status_code == 422

    assert c.post(f"/v2/pods/{pod_id}/action", json={"action": "start"}).status_code == 200
    again = wait_pod(c, pod_id, "RUNNING")
    assert ssh_banner(again["ssh"]["direct"]["port"]).startswith(b"SSH-")

    before = host_key(again["ssh"]["direct"]["port"])
    restarted = c.post(f"/v2/pods/{pod_id}/action", json={"action": "restart"}).json()
    assert restarted["status"] == "STARTING" and restarted["runtime"] is None
    back = wait_pod(c, pod_id, "RUNNING")
    # The container disk is "lost on stop/restart" (docs.runpod.io/pods/storage): a new host key.
    assert host_key(back["ssh"]["direct"]["port"]) != before
    assert c.post(f"/v2/pods/{pod_id}/action", json={"action": "terminate"}).status_code == 204
    assert c.get(f"/v2/pods/{pod_id}").status_code == 404
    with pytest.raises(OSError):
        ssh_banner(old_port)


def test_catalog_availability_and_datacenters(
    emulator: EmulatorServer, rest_client: Callable[..., httpx.Client]
) -> None:
    c = rest_client(emulator)
    assert c.get("/v2/catalog/gpus", params={"include": "AVAILABILITY"}).status_code == 400
    assert c.get("/v2/catalog/gpus", params={"product": "POD"}).status_code == 400
    gpus = c.get("/v2/catalog/gpus", params={"include": "AVAILABILITY", "product": "POD"}).json()["gpus"]
    g4090 = next(g for g in gpus if g["id"] == GPU)
    assert g4090["availability"] == "HIGH"
    assert {d["id"] for d in g4090["dataCenters"]} == {"EU-RO-1", "US-KS-2"}
    ro = c.get(
        "/v2/catalog/gpus", params={"include": "AVAILABILITY", "product": "POD", "countryCodes": "RO"}
    ).json()
    assert all(d["id"] == "EU-RO-1" for g in ro["gpus"] for d in g.get("dataCenters", []))
    assert c.get("/v2/catalog/gpus/" + GPU).json()["memory"] == 24
    assert c.get("/v2/catalog/gpus/NVIDIA%20Nothing").status_code == 404

    emulator.admin.set_capacity(GPU, "US-KS-2", 0)
    dcs = c.get("/v2/catalog/datacenters", params={"include": "GPU_AVAILABILITY"}).json()["dataCenters"]
    assert {d["id"] for d in dcs} == {"EU-RO-1", "US-KS-2"}
    us = next(d for d in dcs if d["id"] == "US-KS-2")
    assert GPU not in [g["id"] for g in us["gpuAvailability"]]
    eu = c.get("/v2/catalog/datacenters", params={"regions": "EUROPE"}).json()["dataCenters"]
    assert [d["id"] for d in eu] == ["EU-RO-1"] and "gpuAvailability" not in eu[0]
    assert c.get("/v2/catalog/datacenters", params={"regions": "MARS"}).status_code == 422
    assert c.get("/v2/catalog/datacenters/US-KS-2").json()["name"] == "US Kansas 2"


def test_network_volume_get_patch(emulator: EmulatorServer, rest_client: Callable[..., httpx.Client]) -> None:
    c = rest_client(emulator)
    vol = c.get("/v2/network-volumes").json()["networkVolumes"][0]
    assert c.get(f"/v2/network-volumes/{vol['id']}").json() == vol
    r = c.patch(f"/v2/network-volumes/{vol['id']}", json={"name": "workspace2", "size": vol["size"] + 50})
    assert r.status_code == 200 and r.json()["name"] == "workspace2" and r.json()["size"] == vol["size"] + 50
    assert c.patch(f"/v2/network-volumes/{vol['id']}", json={"size": 10}).status_code == 400
    assert c.patch(f"/v2/network-volumes/{vol['id']}", json={}).status_code == 422
    assert c.get("/v2/network-volumes/nosuchvol1").status_code == 404
    created = c.post("/v2/network-volumes", json={"name": "scratch", "size": 20, "dataCenter": "US-KS-2"})
    assert created.status_code == 201 and created.json()["type"] == "STANDARD"
    assert (emulator.state_dir / "volumes" / created.json()["id"]).is_dir()


def _ssh(port: int, key: SSHKeyPair, command: str) -> str:
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
        _, out, err = client.exec_command(command, timeout=20)
        status = out.channel.recv_exit_status()
        text = out.read().decode()
        assert status == 0, f"{command!r} exited {status}: {err.read().decode()}"
        return text
    finally:
        client.close()


def test_pods_are_real_ssh_sandboxes_sharing_their_network_volume(
    emulator: EmulatorServer, rest_client: Callable[..., httpx.Client], ssh_keypair: SSHKeyPair
) -> None:
    c = rest_client(emulator)
    workspace = next(
        v for v in c.get("/v2/network-volumes").json()["networkVolumes"] if v["name"] == "workspace"
    )
    other = c.post("/v2/network-volumes", json={"name": "other", "size": 10, "dataCenter": "EU-RO-1"}).json()
    env = {"PUBLIC_KEY": ssh_keypair.public_key, "SUPABASE_URL": "http://127.0.0.1:1"}
    ids = [
        c.post(
            "/v2/pods",
            json=pod_body(env=env, mounts={"network": [{"volumeId": vol["id"], "path": "/workspace"}]}),
        ).json()["id"]
        for vol in (workspace, workspace, other)
    ]
    ports = [wait_pod(c, i, "RUNNING")["ssh"]["direct"]["port"] for i in ids]

    out = _ssh(
        ports[0],
        ssh_keypair,
        # The pod's variables are its init's (root reads them there), not the session's.
        'echo "[$SUPABASE_URL]"; tr "\\0" "\\n" < /proc/1/environ | grep -E "^(RUNPOD_POD_ID|RUNPOD_TCP_PORT_22|SUPABASE_URL)=" | sort; '
        "nvidia-smi; python3 -c 'print(6 * 7)'; ls /workspace/reigh/Headless-Wan2GP; echo shared > /workspace/note.txt",
    )
    assert out.startswith(
        f"[]\nRUNPOD_POD_ID={ids[0]}\nRUNPOD_TCP_PORT_22={ports[0]}\nSUPABASE_URL=http://127.0.0.1:1\n"
    ), out
    assert "NVIDIA GeForce RTX 4090" in out and "42" in out and "venv" in out  # the checkout, on the volume
    assert _ssh(ports[1], ssh_keypair, "cat /workspace/note.txt") == "shared\n"
    assert _ssh(ports[2], ssh_keypair, "test -e /workspace/note.txt && echo yes || echo no") == "no\n"


def test_a_pod_without_public_key_runs_with_its_ssh_port_refusing(
    emulator: EmulatorServer, rest_client: Callable[..., httpx.Client]
) -> None:
    """Runpod's images start sshd only when PUBLIC_KEY is set: the pod runs, its mapped port refuses."""
    c = rest_client(emulator)
    pod_id = c.post("/v2/pods", json=pod_body(env={"WORKER_ID": "w1"})).json()["id"]
    pod = wait_pod(c, pod_id, "RUNNING")
    port = pod["ssh"]["direct"]["port"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    sandbox = emulator.state.pods[pod_id].sandbox
    assert sandbox is not None and sandbox.alive


def test_a_pod_whose_processes_die_becomes_exited(
    emulator: EmulatorServer, rest_client: Callable[..., httpx.Client]
) -> None:
    c = rest_client(emulator)
    pod_id = c.post("/v2/pods", json=pod_body()).json()["id"]
    wait_pod(c, pod_id, "RUNNING")
    sandbox = emulator.state.pods[pod_id].sandbox
    assert sandbox is not None
    for pid in sandbox.pids():  # type: ignore[attr-defined]
        # Killing PID 1 first takes the rest with it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    exited = wait_pod(c, pod_id, "EXITED", timeout=10)
    assert exited["runtime"] is None and exited["cost"] == 0
    assert emulator.admin.pod(pod_id)["error"] == "container exited"


def test_catalog_file_overrides_the_default(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorServer], rest_client: Callable[..., httpx.Client]
) -> None:
    default = json.loads(DEFAULT_CATALOG_PATH.read_text())
    custom = {
        **default,
        "gpus": [g for g in default["gpus"] if g["id"] == "NVIDIA RTX A4000"],
        "stock": {"NVIDIA RTX A4000": {"US-KS-2": 2}},
        "networkVolumes": [],
    }
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(custom))
    c = rest_client(emulator_factory(catalog_path=path))
    assert [g["id"] for g in c.get("/v2/catalog/gpus").json()["gpus"]] == ["NVIDIA RTX A4000"]
    assert c.get("/v2/network-volumes").json() == {"networkVolumes": []}
    bad = {**custom, "stock": {"NVIDIA Nothing": {"MARS-1": -1}}}
    path.write_text(json.dumps(bad))
    with pytest.raises(ConfigError) as exc:
        load_catalog(path)
    assert len(exc.value.problems) == 3
