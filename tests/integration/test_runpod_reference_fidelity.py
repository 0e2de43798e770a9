"""Runpod fidelity: where the client or the emulator departed from the references (each test failed before its fix).

Where it sits: the client (``orchestrator.adapters.runpod.rest``, ``orchestrator.runpod_client``) and the
emulator (``orchestrator.standins.emulator``) are tested against each other elsewhere; when both share a
misreading of Runpod, those tests pass while the daemon would fail against the real service. Each test
here pins one such misreading against Runpod's OpenAPI document for REST API v2 (the schema linked from
https://docs.runpod.io/api-reference-v2/overview; ``tests/plugins/emulator.py`` says where the tests look
for a copy), the authority for paths, bodies, shapes, status enums and errors. Client-side cases the
emulator cannot produce (it does not model them) are answered by the ``stub`` HTTP server of
``tests.integration.conftest``; every body the stub serves is first validated against the spec's schema,
so it is a response the real service is documented to give.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from orchestrator.adapters.runpod.base import RetryPolicy
from orchestrator.adapters.runpod.rest import RestTransport
from orchestrator.core import errors
from orchestrator.runpod_client import RunpodClient
from orchestrator.standins.emulator import EmulatorServer
from tests.integration.test_runpod_failures import Stub
from tests.plugins.emulator import TEST_API_KEY, OpenApiChecker

RTX4090 = "NVIDIA GeForce RTX 4090"
A4000 = "NVIDIA RTX A4000"
POD_ID = "abcdefghijklmn"
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, max_rate_limit_wait=1.0, max_total=5.0)


def _problem(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"title": title, "status": status, "detail": detail}


def _spec_pod(**over: Any) -> dict[str, Any]:
    """A complete v2 ``Pod`` (every required field), RUNNING with ``22/tcp`` published."""
    pod: dict[str, Any] = {
        "id": POD_ID,
        "name": "gpu-review",
        "image": "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
        "args": "",
        "disk": 10,
        "ports": ["22/tcp"],
        "env": {},
        "registry": None,
        "status": "RUNNING",
        "actions": ["stop", "restart", "terminate"],
        "mounts": {},
        "gpu": {"id": RTX4090, "count": 1},
        "cloud": "SECURE",
        "dataCenterId": "EU-RO-1",
        "cudaVersion": "12.4",
        "ssh": {
            "proxy": None,
            "direct": {
                "host": "203.0.113.7",
                "port": 40022,
                "username": "root",
                "command": "ssh root@203.0.113.7 -p 40022",
            },
        },
        "template": None,
        "cost": 0.59,
        "locked": False,
        "globalNetworking": {"enabled": False},
        "runtime": {
            "uptime": 12,
            "ports": [{"private": 22, "public": 40022, "type": "tcp", "ip": "203.0.113.7"}],
        },
        "createdAt": "2026-11-29T00:00:00Z",
        "startedAt": "2026-11-29T00:00:30Z",
    }
    pod.update(over)
    return pod


def _gpu_type(gid: str, name: str) -> dict[str, Any]:
    return {
        "id": gid,
        "name": name,
        "pool": None,
        "manufacturer": "NVIDIA",
        "memory": 24,
        "secure": True,
        "community": True,
        "price": {"secure": 0.59, "community": 0.34},
        "maxCount": {"secure": 8, "community": 8},
    }


def _serve(
    stub: Stub, spec: OpenApiChecker, method: str, path: str, status: int, body: Any, schema: str
) -> None:
    """Route a canned answer after proving it is one the spec allows for that operation."""
    spec.validate_named(body, schema)
    ctype = "application/problem+json" if status >= 400 else "application/json"
    stub.routes[(method, path)] = (status, ctype, json.dumps(body))


def _rest(stub: Stub) -> RestTransport:
    return RestTransport(TEST_API_KEY, stub.base_url, retry=FAST)


# --- the emulator ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"image": None}, id="image-null"),
        pytest.param({"name": None}, id="name-null"),
        pytest.param({"gpu": {"id": RTX4090, "count": None}}, id="gpu-count-null"),
        pytest.param({"disk": None, "env": None, "ports": None}, id="container-fields-null"),
        pytest.param({"mounts": {"persistent": None}}, id="persistent-mount-null"),
    ],
)
def test_emulator_refuses_json_null_where_create_pod_schema_has_no_null(
    overrides: dict[str, Any],
    emulator: EmulatorServer,
    rest_client: Callable[..., httpx.Client],
    runpod_openapi: OpenApiChecker,
) -> None:
    """``CreatePodRequest`` types ``name``/``image``/``disk``/``env``/``ports``/``gpu.count`` and the
    mounts as non-nullable, so the real service answers 422 to a ``null`` there. The emulator reads an
    explicit ``null`` as "absent" and creates the pod (a pod with an empty image or an empty name), so
    a client bug that serialises an unset field as ``null`` passes every emulator test and then fails
    every create against Runpod."""
    body: dict[str, Any] = {
        "name": "review-null",
        "image": "runpod/base:0.6.2",
        "gpu": {"id": RTX4090, "count": 1},
    }
    body.update(overrides)
    with pytest.raises(jsonschema.ValidationError):
        runpod_openapi.validate_named(body, "CreatePodRequest")
    c = rest_client(emulator)
    r = c.post("/v2/pods", json=body)
    assert r.status_code == 422, f"spec-invalid create body accepted: HTTP {r.status_code} {r.text[:200]}"
    assert r.json()["errors"], "a 422 lists each violation in `errors` (createPod: 422 row)"
    assert c.get("/v2/pods").json()["pods"] == [], "the refused create must not leave a pod behind"


def test_emulator_pod_in_error_keeps_costing_as_the_reference_says(
    emulator: EmulatorServer, rest_client: Callable[..., httpx.Client]
) -> None:
    """openapi ``Pod.cost``: "0.0 when EXITED or TERMINATED" - not when ERROR; and Runpod bills compute
    per second (https://docs.runpod.io/accounts-billing/billing), so a pod bills while it exists and is
    not EXITED. The emulator reports an ERROR pod at cost 0 and stops
    billing it, so every emulator run (the benchmark's cost figures included) prices a pod left in
    ERROR at nothing, while on Runpod it bills until someone terminates it."""
    c = rest_client(emulator)
    r = c.post(
        "/v2/pods",
        json={
            "name": "review-error",
            "image": "runpod/base:0.6.2",
            "gpu": {"id": RTX4090, "count": 1},
            "ports": ["22/tcp"],
        },
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    emulator.admin.wait_status(pid, "RUNNING", timeout=30)
    emulator.admin.preempt(pid, "ERROR")
    pod = c.get(f"/v2/pods/{pid}").json()
    assert pod["status"] == "ERROR"
    assert pod["cost"] > 0, "an ERROR pod still exists and is not EXITED: it bills"
    first = emulator.admin.pod(pid)["billedSeconds"]
    deadline = time.monotonic() + 10
    while emulator.admin.pod(pid)["billedSeconds"] <= first:
        assert time.monotonic() < deadline, "billing stopped when the pod went to ERROR"
        time.sleep(0.02)


# --- the REST client -------------------------------------------------------------------------------


def test_rest_terminate_answered_409_for_an_already_terminated_pod_is_confirmed(
    stub: Stub, runpod_openapi: OpenApiChecker
) -> None:
    """podAction: ``terminate`` is valid only from PROVISIONING, STARTING, RUNNING, EXITED and ERROR, and
    "an action that is not valid for the pod's current status returns 409"; and the status enum has
    TERMINATED, so a terminated pod may still be listed as TERMINATED for a while. A second terminate (a
    retry after a lost 204, or the orphan sweep racing the reaper) then gets 409, which the client
    reports as a failure: ``terminate_worker`` returns False and the pod is treated as still alive,
    although Runpod reports it TERMINATED (cost 0). The emulator cannot show this because its
    terminated pods vanish at once (404, which the client already counts as gone)."""
    _serve(
        stub,
        runpod_openapi,
        "POST",
        f"/v2/pods/{POD_ID}/action",
        409,
        _problem(409, "Conflict", "action terminate is not valid for a pod in status TERMINATED"),
        "ErrorResponse",
    )
    terminated = _spec_pod(
        status="TERMINATED", actions=[], cost=0.0, runtime=None, ssh={"proxy": None, "direct": None}
    )
    _serve(stub, runpod_openapi, "GET", f"/v2/pods/{POD_ID}", 200, terminated, "Pod")
    t = _rest(stub)
    try:
        assert t.terminate_pod(POD_ID) is True
    finally:
        t.close()


def test_rest_create_403_skips_the_gpu_type_instead_of_aborting_the_priority_list(
    stub: Stub, runpod_openapi: OpenApiChecker, tmp_path: Path
) -> None:
    """createPod's retry table: ``403`` = "Your account cannot access the requested pool. Skip this
    candidate, keep going." The client maps every 403 to ``RunpodAuthError`` (as for a bad key), and
    ``spawn_worker`` re-raises anything but ``RunpodCapacityError``, so one GPU type the account may not
    rent stops the whole ``RUNPOD_GPU_TYPE`` priority list and the controller records an auth failure.
    The emulator never answers 403, so no emulator test sees it. Here both types answer 403: the
    client must try both and report them as refused candidates (``capacity_misses``). A round in which
    every candidate answered 403 is the key's permission, not capacity (openapi ApiKeyAuth: "requests
    may return 403 when a valid key lacks access to the requested resource or action"), so it ends as
    ``RunpodAuthError`` of status 403 that names them (``tests/unit/test_runpod_review_fixes.py``)."""
    catalog = {"gpus": [_gpu_type(RTX4090, "RTX 4090"), _gpu_type(A4000, "RTX A4000")]}
    _serve(stub, runpod_openapi, "GET", "/v2/catalog/gpus", 200, catalog, "ListGpuTypesResponse")
    _serve(
        stub,
        runpod_openapi,
        "POST",
        "/v2/pods",
        403,
        _problem(403, "Forbidden", "access denied"),
        "ErrorResponse",
    )
    pub = tmp_path / "id.pub"
    pub.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f review@test\n"
    )
    client = RunpodClient(
        TEST_API_KEY,
        gpu_type=[RTX4090, A4000],
        transport=_rest(stub),
        ssh_public_key_path=pub,
        retry=FAST,
        env={},
    )
    try:
        with pytest.raises(errors.RunpodAuthError) as caught:
            client.spawn_worker("gpu-review-403")
        assert caught.value.status == 403
        assert "RTX 4090" in str(caught.value) and "RTX A4000" in str(caught.value)
        misses = getattr(caught.value, "capacity_misses", [])
        assert [m["gpu_type"] for m in misses] == ["RTX 4090", "RTX A4000"]
    finally:
        client.close()


def test_rest_running_pod_whose_runtime_is_still_null_is_read_as_not_ready(
    stub: Stub, runpod_openapi: OpenApiChecker
) -> None:
    """``Pod.runtime`` is ``anyOf [PodRuntime, null]``; the spec only promises it is null when the pod
    is *not* RUNNING, never that a RUNNING pod has it (the metrics arrive after the status flips, as the
    GraphQL ``runtime`` does). The client rejects that schema-valid body as malformed, so ``get_pod``
    raises ``RunpodMalformedResponse`` for a pod that is merely not reachable yet, and the controller
    sees a provider error instead of a booting pod. It must read as a pod that is not SSH-ready."""
    body = _spec_pod(runtime=None, ssh={"proxy": None, "direct": None})
    _serve(stub, runpod_openapi, "GET", f"/v2/pods/{POD_ID}", 200, body, "Pod")
    t = _rest(stub)
    try:
        pod = t.get_pod(POD_ID)
    finally:
        t.close()
    assert pod is not None
    assert pod.actual_status == "RUNNING"
    assert not pod.ssh_ready
    assert not pod.has_runtime
