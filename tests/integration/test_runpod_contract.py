"""One contract for RunpodClient, run over both transports (REST v2 and the SDK's GraphQL).

Against the emulator (``tests/plugins/emulator.py``), whose pods are real sshd sandboxes running the
simulated Headless-Wan2GP, and a real Postgres behind the PostgREST stand-in: spawn -> spawning ->
initialize -> start the worker -> its heartbeat lands in ``workers`` -> terminate -> the emulator's
admin view shows the pod terminated and billed.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.runpod.base import RetryPolicy
from orchestrator.render import format_gpus, format_volumes
from orchestrator.runpod_client import STATUS_KEYS, RunpodClient
from orchestrator.wiring import make_provider
from tests.plugins.emulator import TEST_API_KEY

TRANSPORTS = ["rest", "graphql"]
FAST_RETRY = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05, max_rate_limit_wait=5.0, max_total=20.0)


def make_client(
    emulator: Any,
    keypair: Any,
    tmp_path: Path,
    api: str,
    *,
    cls: type[RunpodClient] = RunpodClient,
    **overrides: Any,
) -> RunpodClient:
    """A RunpodClient (or a subclass of it) configured as the daemon would, pointed at the emulator."""
    pub = tmp_path / f"id_{api}.pub"
    pub.write_text(keypair.public_key + "\n")
    kw: dict[str, Any] = dict(
        api_key=TEST_API_KEY,
        api=api,
        api_base_url=emulator.base_url,
        storage_name="workspace",
        ssh_public_key_path=pub,
        ssh_private_key_path=keypair.private_key_path,
        supabase_url="http://127.0.0.1:9/unused",
        supabase_service_role_key="service-role-secret-value",
        supabase_anon_key="anon-secret-value",
        ssh_connect_timeout=10.0,
        retry=FAST_RETRY,
        env={},
    )
    kw.update(overrides)
    return cls(**kw)


@pytest.fixture
def client_factory(emulator, ssh_keypair, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``make(api, **overrides)`` -> a RunpodClient against the emulator, closed at teardown."""
    made: list[RunpodClient] = []

    def make(api: str, **overrides: Any) -> RunpodClient:
        c = make_client(emulator, ssh_keypair, tmp_path, api, **overrides)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def wait_for(fn: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``fn`` until it returns something truthy, or fail with its last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


def initialize(client: RunpodClient, worker_id: str, runpod_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll check_and_initialize_worker until the pod is initialized; fail with the last answer."""
    deadline = time.monotonic() + timeout
    res: dict[str, Any] = {}
    while time.monotonic() < deadline:
        res = client.check_and_initialize_worker(worker_id, runpod_id)
        assert res["status"] in ("spawning", "active"), res
        if res["status"] == "active":
            return res
        time.sleep(0.1)
    raise AssertionError(f"pod {runpod_id} not initialized within {timeout}s; last answer: {res}")


@pytest.mark.parametrize("api", TRANSPORTS)
def test_worker_lifecycle_contract(api: str, emulator, client_factory, postgrest, supabase_db) -> None:  # type: ignore[no-untyped-def]
    client = client_factory(
        api,
        supabase_url=postgrest.base_url,
        supabase_service_role_key=postgrest.service_role_key,
        supabase_anon_key=postgrest.anon_key,
    )
    worker_id = f"gpu-contract-{api}-1a2b3c4d"
    token = supabase_db.lease_acquire("contract-test", 60)["token"]
    supabase_db.register_worker(token, worker_id, "NVIDIA GeForce RTX 4090", {})

    spawned = client.spawn_worker(worker_id, {"SIM_WORKER_HEARTBEAT_SEC": "0.2"})
    assert spawned["status"] == "spawning"
    assert spawned["worker_id"] == worker_id and spawned["runpod_id"]
    assert spawned["gpu_type_id"] == "NVIDIA GeForce RTX 4090"
    assert spawned["data_center"] == "EU-RO-1"  # follows the network volume
    runpod_id = spawned["runpod_id"]

    admin_view = emulator.admin.pod(runpod_id)
    assert admin_view["name"] == worker_id and admin_view["cloud"] == "SECURE"
    assert admin_view["networkVolumeId"] == spawned["network_volume_id"]

    ready = initialize(client, worker_id, runpod_id)
    assert ready["ssh_details"]["ip"] == "127.0.0.1"
    assert ready["ssh_details"]["port"] == admin_view["sshPort"] or ready["ssh_details"]["port"]
    fp = ready["host_key_fingerprint"]
    assert fp and fp.startswith("SHA256:") and ready["ssh_details"]["host_key_fingerprint"] == fp
    assert set(ready["checks"]) == {"storage_mount", "headless_dir", "nvidia_smi", "python"}
    assert (
        "Headless-Wan2GP" in ready["checks"]["storage_mount"] or "reigh" in ready["checks"]["storage_mount"]
    )

    status = client.get_pod_status(runpod_id)
    assert status is not None and tuple(status) == STATUS_KEYS
    assert status["actual_status"] == "RUNNING" and status["desired_status"] == "RUNNING"
    assert status["ip"] == "127.0.0.1" and status["cost_per_hr"] > 0
    assert any(p["privatePort"] == 22 and p["isIpPublic"] for p in status["ports"])

    # Pinned on later connections: the same key is accepted.
    code, out, _ = client.execute_command_on_worker(runpod_id, "echo pinned")
    assert (code, out.strip()) == (0, "pinned")

    assert client.start_worker_process(runpod_id, worker_id, expected_fingerprint=fp) is True

    def heartbeat() -> Any:
        rows = [w for w in supabase_db.snapshot()["workers"] if w["id"] == worker_id]
        return rows and rows[0]["last_heartbeat"]

    wait_for(heartbeat, timeout=60)
    code, out, _ = client.execute_command_on_worker(
        runpod_id, f"cat /workspace/reigh/logs/{worker_id}.log | head -c 2000"
    )
    assert code == 0 and "service-role" not in out

    assert client.terminate_worker(runpod_id) is True
    assert client.get_pod_status(runpod_id) is None
    # Terminating again: the pod is gone, which counts as success.
    assert client.terminate_worker(runpod_id) is True
    gone = emulator.admin.pod(runpod_id)
    assert gone["status"] == "TERMINATED"
    assert gone["billedSeconds"] > 0 and gone["billedUsd"] > 0
    assert runpod_id not in [p.id for p in client.list_pods()]


@pytest.mark.parametrize("api", TRANSPORTS)
def test_catalog_helpers_and_operator_listings(api: str, client_factory) -> None:  # type: ignore[no-untyped-def]
    client = client_factory(api)
    vols = client.get_network_volumes()
    assert {"id", "name", "size", "dataCenterId"} <= set(vols[0])
    assert any(v["name"] == "workspace" and v["dataCenterId"] == "EU-RO-1" for v in vols)
    gpu = client.find_gpu_type("RTX 4090")
    assert gpu is not None and gpu["id"] == "NVIDIA GeForce RTX 4090" and gpu["memoryInGb"] == 24
    assert gpu["securePrice"] and gpu["available"] is True
    assert client.find_gpu_type("NVIDIA GeForce RTX 4090") == gpu
    assert client.find_gpu_type("Voodoo 2") is None
    table = format_gpus(client)
    assert "RTX 4090" in table and "24 GB" in table and "$0.59/h" in table
    listing = format_volumes(client)
    assert "workspace" in listing and "EU-RO-1" in listing and "100 GB" in listing


@pytest.mark.parametrize("api", TRANSPORTS)
def test_async_wrappers_do_not_block_the_loop(api: str, emulator, client_factory) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from orchestrator.runpod_client import get_runpod_status, spawn_runpod_gpu, terminate_runpod_gpu

    client = client_factory(api)
    emulator.admin.set_faults(api_latency_s=0.3)

    async def main() -> tuple[str, dict[str, Any] | None, bool, int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        runpod_id = await spawn_runpod_gpu(f"gpu-async-{api}", client=client)
        status = await get_runpod_status(runpod_id, client=client)
        ok = await terminate_runpod_gpu(runpod_id, client=client)
        stop.set()
        await t
        return runpod_id, status, ok, ticks

    runpod_id, status, ok, ticks = asyncio.run(main())
    assert status is not None and status["runpod_id"] == runpod_id
    assert ok is True
    # Several latency-bound calls happened while the loop kept ticking.
    assert ticks > 20


def test_configuration_from_environment_and_settings(ssh_keypair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.core.config import load_settings

    env = {
        "RUNPOD_API_KEY": TEST_API_KEY,
        "RUNPOD_GPU_TYPE": "NVIDIA GeForce RTX 4090, RTX A4000 ,",
        "RUNPOD_STORAGE_NAME": "workspace",
        "RUNPOD_API": "graphql",
        "RUNPOD_API_BASE_URL": "http://127.0.0.1:9/",
        "RUNPOD_SSH_PRIVATE_KEY_PATH": str(ssh_keypair.private_key_path),
    }
    c = RunpodClient(env=env)
    assert c.gpu_types == ["NVIDIA GeForce RTX 4090", "RTX A4000"]
    assert (c.api, c.api_base_url, c.storage_name) == ("graphql", "http://127.0.0.1:9", "workspace")
    # The original orchestrator's defaults (banodoco/reigh-worker-orchestrator, orchestrator/runpod_client.py).
    assert c.worker_image == "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
    assert (c.volume_mount_path, c.disk_size_gb, c.container_disk_gb) == ("/workspace", 20, 10)
    # Explicit keyword arguments win over the environment.
    assert RunpodClient(env=env, api="rest", gpu_type="L40S").gpu_types == ["L40S"]
    assert RunpodClient(env=env).transport.name == "graphql"
    # Without a public key file, PUBLIC_KEY is derived from the private key.
    assert c._public_key().split()[:2] == ssh_keypair.public_key.split()[:2]

    settings = load_settings({**env, "DATABASE_URL": "postgresql://u@127.0.0.1:9/db"}, env_file=None)
    s = make_provider(settings)  # the daemon's one way from settings to a client
    assert s.gpu_types == ["NVIDIA GeForce RTX 4090", "RTX A4000"] and s.api == "graphql"
    assert s.ssh_private_key_path == str(ssh_keypair.private_key_path)


@pytest.mark.parametrize("api", TRANSPORTS)
def test_create_pod_and_wait_and_the_module_level_helpers(
    api: str, emulator, client_factory, ssh_keypair, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from orchestrator import runpod_client

    client = client_factory(api)
    res = client.spawn_and_wait(f"gpu-wait-{api}", timeout=30, poll_interval=0.05)
    assert res is not None and res["status"] == "active" and res["ssh_details"]["host_key_fingerprint"]
    assert client.terminate_worker(res["runpod_id"]) is True

    # The original's module-level helpers read everything but the key from the environment.
    monkeypatch.setenv("RUNPOD_API", api)
    monkeypatch.setenv("RUNPOD_API_BASE_URL", emulator.base_url)
    assert any(v["name"] == "workspace" for v in runpod_client.get_network_volumes(TEST_API_KEY))
    found = runpod_client.find_gpu_type("RTX A4000", TEST_API_KEY)
    assert found is not None and found["id"] == "NVIDIA RTX A4000"


def test_rest_create_body_matches_the_openapi_schema(runpod_openapi) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.adapters.runpod.base import PodSpec
    from orchestrator.adapters.runpod.rest import _create_body

    for volume in ("w0rk5p4ce1", None):
        spec = PodSpec(
            name="gpu-20250912_101500-1a2b3c4d",
            image="runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
            gpu_type_id="NVIDIA GeForce RTX 4090",
            data_center_id="EU-RO-1" if volume else None,
            network_volume_id=volume,
            env={"WORKER_ID": "w", "PUBLIC_KEY": "ssh-ed25519 AAAA x", "ODD": 'a"b\nc'},
        )
        body = _create_body(spec)
        runpod_openapi.validate_named(body, "CreatePodRequest")
        assert body["gpu"] == {"id": "NVIDIA GeForce RTX 4090", "count": 1} and body["cloud"] == "SECURE"
        assert body["ports"] == ["22/tcp"]
        if volume:
            assert body["mounts"] == {"network": [{"volumeId": volume, "path": "/workspace"}]}
            assert body["dataCenterIds"] == ["EU-RO-1"]
        else:
            assert body["mounts"] == {"persistent": {"size": 20, "path": "/workspace"}}


# --- the original orchestrator's API, exactly ---------------------------------------------------------------

SEED_CREATE_PARAMS = [
    ("name", inspect.Parameter.empty),
    ("image_name", inspect.Parameter.empty),
    ("gpu_type_id", inspect.Parameter.empty),
    ("gpu_count", 1),
    ("cloud_type", "SECURE"),
    ("volume_in_gb", 20),
    ("container_disk_in_gb", 10),
    ("ports", "22/tcp"),
    ("network_volume_id", None),
    ("volume_mount_path", "/workspace"),
    ("env", None),
]


def test_create_pod_and_wait_has_the_original_parameters_and_defaults() -> None:
    """banodoco/reigh-worker-orchestrator, structure_docs/runpod_integration.md: create_pod_and_wait(name,
    image_name, gpu_type_id, gpu_count (always 1), cloud_type (always SECURE), volume_in_gb,
    container_disk_in_gb, ports (always 22/tcp), network_volume_id, volume_mount_path (/workspace), env);
    the sizes default to the original code's 20 and 10."""
    from orchestrator import runpod_client

    for fn in (runpod_client.create_pod_and_wait, RunpodClient.create_pod_and_wait):
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
        positional = [
            (p.name, p.default) for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ]
        assert positional == SEED_CREATE_PARAMS, fn
    # The original's id generator, on the client as it was.
    import re

    assert re.fullmatch(
        r"gpu-\d{8}_\d{6}-[0-9a-f]{8}", RunpodClient(api_key="x", env={}).generate_worker_id()
    )


@pytest.mark.parametrize("api", TRANSPORTS)
def test_create_pod_and_wait_creates_the_pod_the_original_describes(
    api: str, emulator, client_factory, ssh_keypair, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from orchestrator import runpod_client

    client = client_factory(api)
    volume = next(v for v in client.get_network_volumes() if v["name"] == "workspace")
    pod = client.create_pod_and_wait(
        "gpu-seed-create", "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04", "NVIDIA GeForce RTX 4090",
        network_volume_id=volume["id"], env={"WORKER_ID": "gpu-seed-create"},
    )  # fmt: skip
    assert pod["id"] and pod["name"] == "gpu-seed-create" and pod["created"] is True
    assert pod["gpu_type_id"] == "NVIDIA GeForce RTX 4090" and pod["dataCenterId"] == "EU-RO-1"
    view = emulator.admin.pod(pod["id"])
    assert view["cloud"] == "SECURE" and view["networkVolumeId"] == volume["id"] and view["gpuCount"] == 1
    assert client.get_pod(pod["id"]).env["PUBLIC_KEY"].split()[:2] == ssh_keypair.public_key.split()[:2]  # type: ignore[union-attr]
    assert client.terminate_worker(pod["id"]) is True

    # The module-level function, called the way the original's code called it (its keyword names).
    monkeypatch.setenv("RUNPOD_API", api)
    monkeypatch.setenv("RUNPOD_API_BASE_URL", emulator.base_url)
    other = runpod_client.create_pod_and_wait(
        api_key=TEST_API_KEY, gpu_type_id="RTX A4000", image_name="runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
        name="gpu-seed-code-form", disk_in_gb=20, container_disk_in_gb=10, env_vars={"A": "b"},
        public_key_string=ssh_keypair.public_key, wait_timeout=600,
    )  # fmt: skip
    assert other["id"] and other["gpu_type_id"] == "NVIDIA RTX A4000"
    assert client.get_pod(other["id"]).env["A"] == "b"  # type: ignore[union-attr]
    assert client.terminate_worker(other["id"]) is True


@pytest.mark.parametrize("api", TRANSPORTS)
def test_get_pod_status_of_a_pod_runpod_no_longer_knows_is_none(api: str, client_factory) -> None:  # type: ignore[no-untyped-def]
    """As the original: its get_pod_status returned None when the SDK's get_pod gave nothing."""
    client = client_factory(api)
    assert client.get_pod_status("zzzzzzzzzzzzzz") is None
    spawned = client.spawn_worker(f"gpu-status-{api}")
    status = client.get_pod_status(spawned["runpod_id"])
    # The keys of the original's code, in its order; no API reports an SSH password, so None, as the
    # original's runtime.get("sshPassword") was.
    assert status is not None and tuple(status) == STATUS_KEYS == (
        "runpod_id", "desired_status", "actual_status", "ip", "ports", "ssh_password", "created_at",
        "last_status_change", "uptime_seconds", "cost_per_hr",
    )  # fmt: skip
    assert status["ssh_password"] is None
    if api == "graphql":
        assert status["last_status_change"]
    assert client.terminate_worker(spawned["runpod_id"]) is True
    assert client.get_pod_status(spawned["runpod_id"]) is None


def test_graphql_sends_the_disk_size_as_the_original_did_even_with_a_network_volume(
    emulator, client_factory, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The original passed volume_in_gb=RUNPOD_DISK_SIZE_GB to runpod.create_pod with its network volume."""
    import runpod

    sent: list[dict[str, Any]] = []
    original = runpod.create_pod

    def spy(**kwargs: Any) -> Any:
        sent.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(runpod, "create_pod", spy)
    client = client_factory("graphql", disk_size_gb=35)
    spawned = client.spawn_worker("gpu-disk-size")
    assert sent and sent[0]["volume_in_gb"] == 35 and sent[0]["network_volume_id"]
    assert client.terminate_worker(spawned["runpod_id"]) is True


def test_rest_sends_the_disk_size_where_v2_takes_it() -> None:
    from orchestrator.adapters.runpod.base import PodSpec
    from orchestrator.adapters.runpod.rest import _create_body
    from orchestrator.core import errors

    spec = dict(name="gpu-1", image="img", gpu_type_id="NVIDIA GeForce RTX 4090")
    body = _create_body(PodSpec(**spec, volume_gb=35))  # type: ignore[arg-type]
    assert body["mounts"] == {"persistent": {"size": 35, "path": "/workspace"}}
    # A network volume replaces the volume disk; v2 cannot take both.
    body = _create_body(PodSpec(**spec, volume_gb=35, network_volume_id="v1", data_center_id="EU-RO-1"))  # type: ignore[arg-type]
    assert "persistent" not in body["mounts"]
    assert "mounts" not in _create_body(PodSpec(**spec, volume_gb=0))  # type: ignore[arg-type]
    with pytest.raises(errors.RunpodRequestError, match="0 \\(none\\) or at least 10"):
        _create_body(PodSpec(**spec, volume_gb=5))  # type: ignore[arg-type]
