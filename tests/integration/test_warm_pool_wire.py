"""How the two transports read Runpod's answers to stop and start, where the emulator cannot say it.

A tiny HTTP server (``stub``, ``tests/integration/test_runpod_failures.Stub``) answers in shapes the
real service may use and the emulator does not: the full-host refusal at another status than the
emulator's 400 or in other capitals, a start answered with a pod without ``gpu`` (REST) or with
``gpuCount`` 0 (GraphQL), a 409 to a stop of a pod found EXITED or in ERROR.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.adapters.provider import RunpodProvider
from orchestrator.adapters.runpod.base import EXITED, RetryPolicy, RunpodTransport
from orchestrator.adapters.runpod.graphql import GraphQLTransport
from orchestrator.adapters.runpod.rest import RestTransport
from orchestrator.core import errors
from tests.integration.test_runpod_failures import Stub
from tests.plugins.emulator import TEST_API_KEY

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.005, max_delay=0.01, max_rate_limit_wait=1.0, max_total=5.0)
PID = "abcdefghijklmn"
SHOUTED = "THERE ARE NOT ENOUGH FREE GPUS ON THE HOST MACHINE TO START THIS POD"


def rest_pod(**over: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "id": PID,
        "name": "gpu-stub",
        "status": "EXITED",
        "ports": ["22/tcp"],
        "env": {},
        "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1},
        "dataCenterId": "EU-RO-1",
        "cost": 0,
        "createdAt": "2026-12-06T00:00:00Z",
        "ssh": {"proxy": None, "direct": None},
        "runtime": None,
    }
    pod.update(over)
    return pod


def problem(status: int, detail: str) -> tuple[int, str, str]:
    body = json.dumps({"title": "Error", "status": status, "detail": detail})
    return status, "application/problem+json", body


@pytest.fixture
def made(stub: Stub) -> Iterator[list[RunpodProvider]]:
    """The providers a test made, closed at its end."""
    providers: list[RunpodProvider] = []
    yield providers
    for p in providers:
        p.close()


def provider(made: list[RunpodProvider], transport: RunpodTransport) -> RunpodProvider:
    p = RunpodProvider(TEST_API_KEY, transport=transport, retry=FAST_RETRY, env={})
    made.append(p)
    return p


def rest_provider(stub: Stub, made: list[RunpodProvider]) -> RunpodProvider:
    return provider(made, RestTransport(TEST_API_KEY, stub.base_url, retry=FAST_RETRY))


@pytest.mark.parametrize("status", [400, 409, 500, 503])
def test_rest_full_host_refusal_is_no_gpu_whatever_the_status(
    stub: Stub, made: list[RunpodProvider], status: int
) -> None:
    stub.routes[("GET", f"/v2/pods/{PID}")] = (200, "application/json", json.dumps(rest_pod()))
    stub.routes[("POST", f"/v2/pods/{PID}/action")] = problem(status, SHOUTED)
    p = rest_provider(stub, made)
    with pytest.raises(errors.RunpodNoGpuOnHost):
        p.transport.start_pod(PID, 1)
    result = p.resume(PID)
    assert result.status == "no_gpu" and SHOUTED in result.detail


def test_rest_start_answered_without_gpu_is_no_gpu(stub: Stub, made: list[RunpodProvider]) -> None:
    stub.routes[("GET", f"/v2/pods/{PID}")] = (200, "application/json", json.dumps(rest_pod()))
    started = rest_pod(status="PROVISIONING")
    del started["gpu"]
    stub.routes[("POST", f"/v2/pods/{PID}/action")] = (200, "application/json", json.dumps(started))
    result = rest_provider(stub, made).resume(PID)
    assert result.status == "no_gpu" and result.gpu_count == 0, result
    # With its GPU, the same answer is a resume.
    started["gpu"] = {"id": "NVIDIA GeForce RTX 4090", "count": 1}
    stub.routes[("POST", f"/v2/pods/{PID}/action")] = (200, "application/json", json.dumps(started))
    result = rest_provider(stub, made).resume(PID)
    assert result.status == "resumed" and result.gpu_count == 1, result


def test_rest_other_refusals_are_failed_and_a_vanished_pod_is_gone(
    stub: Stub, made: list[RunpodProvider]
) -> None:
    stub.routes[("GET", f"/v2/pods/{PID}")] = (200, "application/json", json.dumps(rest_pod()))
    stub.routes[("POST", f"/v2/pods/{PID}/action")] = problem(400, "insufficient balance")
    assert rest_provider(stub, made).resume(PID).status == "failed"
    stub.routes[("POST", f"/v2/pods/{PID}/action")] = problem(404, "pod not found")
    assert rest_provider(stub, made).resume(PID).status == "gone"
    del stub.routes[("GET", f"/v2/pods/{PID}")]  # the stub's default: 404
    assert rest_provider(stub, made).resume(PID).status == "gone"


def test_rest_stop_conflict_is_confirmed_by_reading_the_pod(stub: Stub, made: list[RunpodProvider]) -> None:
    stub.routes[("POST", f"/v2/pods/{PID}/action")] = problem(409, "action not valid for current status")
    stub.routes[("GET", f"/v2/pods/{PID}")] = (200, "application/json", json.dumps(rest_pod()))
    p = rest_provider(stub, made)
    assert p.transport.stop_pod(PID).actual_status == EXITED
    assert p.stop(PID) is True
    stub.routes[("GET", f"/v2/pods/{PID}")] = (200, "application/json", json.dumps(rest_pod(status="ERROR")))
    with pytest.raises(errors.RunpodRequestError) as info:
        p.transport.stop_pod(PID)
    assert info.value.status == 409
    assert p.stop(PID) is False


def graphql_provider(stub: Stub, made: list[RunpodProvider]) -> RunpodProvider:
    return provider(made, GraphQLTransport(TEST_API_KEY, stub.base_url, retry=FAST_RETRY))


def test_graphql_full_host_refusal_is_no_gpu_in_any_capitals(stub: Stub, made: list[RunpodProvider]) -> None:
    stub.routes[("POST", "/graphql")] = (
        200,
        "application/json",
        json.dumps({"errors": [{"message": SHOUTED}], "data": {"podResume": None}}),
    )
    with pytest.raises(errors.RunpodNoGpuOnHost):
        graphql_provider(stub, made).transport.start_pod(PID, 1)


def test_graphql_reads_gpu_count_including_zero(stub: Stub, made: list[RunpodProvider]) -> None:
    pod = {
        "id": PID,
        "name": "gpu-stub",
        "desiredStatus": "RUNNING",
        "gpuCount": 0,
        "ports": "22/tcp",
        "env": [],
        "runtime": {"ports": []},
        "machine": {"gpuDisplayName": "RTX 4090"},
    }
    stub.routes[("POST", "/graphql")] = (200, "application/json", json.dumps({"data": {"pod": pod}}))
    p = graphql_provider(stub, made)
    seen = p.get_pod(PID)
    assert seen is not None and seen.gpu_count == 0
    # Already on its way (desiredStatus RUNNING): judged as it is, without a second start.
    result = p.resume(PID)
    assert result.status == "no_gpu" and result.gpu_count == 0, result
