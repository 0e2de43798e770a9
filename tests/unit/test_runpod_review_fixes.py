"""Placement, the REST pod parser and the boot check, against findings of a review of the Runpod side.

* A createPod 403 skips the candidate (openapi createPod: "cannot access the requested pool"), but a
  valid key lacking permission for the action gets 403 too (openapi ApiKeyAuth): a round in which every
  candidate asked answered 403 ends as a ``RunpodAuthError``, not as "no capacity" backed off forever.
  A round mixing 403s with capacity misses stays a capacity error.
* A GPU type the catalog says is not on Secure Cloud is skipped (the daemon creates on Secure Cloud).
* ``PodRuntimePort`` requires none of its fields: an entry without ``private`` is skipped, not the pod.
* A malformed answer to the boot check's pod read is "not ready", not a failed boot.
* The daemon's boot check uses the pod as this tick listed it, when it has it, instead of a GET.

No network: placement runs over a fake transport, or ``RestTransport`` over ``httpx.MockTransport``.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from typing import Any

import httpx
import pytest
import structlog

from orchestrator.adapters import placement
from orchestrator.adapters.pod_ssh import PodSSH
from orchestrator.adapters.runpod import rest
from orchestrator.adapters.runpod.base import RUNNING, GpuType, NetworkVolume, Pod, PodSpec, RetryPolicy
from orchestrator.core import errors
from orchestrator.core.config import defaults
from orchestrator.core.policy import plan
from orchestrator.core.states import BreakerState, Reason
from orchestrator.studies.fleet import ResumeModel
from orchestrator.studies.simulation import Simulation
from orchestrator.studies.traces import Trace, TraceTask

RTX4090 = GpuType(id="NVIDIA GeForce RTX 4090", display_name="RTX 4090", secure_cloud=True)
A4000 = GpuType(id="NVIDIA RTX A4000", display_name="RTX A4000", secure_cloud=True)
SPEC = PodSpec(name="gpu-review-1", image="img:1", gpu_type_id="")
FAST = RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0, max_rate_limit_wait=0.0, max_total=1.0)


def _forbidden(gpu_id: str) -> errors.RunpodCapacityError:
    # What RestTransport.create_pod raises for createPod's 403.
    return errors.RunpodCapacityError(
        f"POST /pods -> HTTP 403: the account cannot rent {gpu_id} here (access denied)",
        status=403,
        payload={"title": "Forbidden", "status": 403, "detail": "access denied"},
    )


class FakeTransport:
    """``create_pod`` answers per GPU type id: an exception to raise, or None to create the pod."""

    name = "fake"

    def __init__(self, answers: dict[str, Exception | None]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str | None]] = []

    def create_pod(self, spec: PodSpec) -> Pod:
        self.asked.append((spec.gpu_type_id, spec.data_center_id))
        answer = self.answers[spec.gpu_type_id]
        if answer is not None:
            raise answer
        return Pod(id="podabcdefghij", name=spec.name, desired_status=RUNNING, actual_status="PROVISIONING")


# --- 1. createPod 403 --------------------------------------------------------------------------------


def test_every_candidate_answering_403_is_an_auth_error_naming_them() -> None:
    transport = FakeTransport({RTX4090.id: _forbidden(RTX4090.id), A4000.id: _forbidden(A4000.id)})
    with structlog.testing.capture_logs() as logs, pytest.raises(errors.RunpodAuthError) as info:
        placement.create(transport, "gpu-review-1", SPEC, [RTX4090, A4000], [None])  # type: ignore[arg-type]
    assert transport.asked == [(RTX4090.id, None), (A4000.id, None)]
    failure = info.value
    assert failure.status == 403
    assert "lacks permission to create pods" in str(failure)
    assert "RTX 4090" in str(failure) and "RTX A4000" in str(failure)
    assert failure.payload == {"title": "Forbidden", "status": 403, "detail": "access denied"}
    # The candidates refused still back off, as the executor does for any refused candidate.
    assert [m["gpu_type"] for m in failure.capacity_misses] == ["RTX 4090", "RTX A4000"]  # type: ignore[attr-defined]
    [event] = [e for e in logs if e["event"] == "runpod_create_forbidden"]
    assert event["candidates"] == ["RTX 4090", "RTX A4000"] and event["log_level"] == "warning"


def test_403_across_every_volume_is_an_auth_error_and_avoided_pairs_are_listed() -> None:
    volumes = [NetworkVolume("v1", "vol-eu", 100, "EU-RO-1"), NetworkVolume("v2", "vol-us", 100, "US-KS-2")]
    transport = FakeTransport({RTX4090.id: _forbidden(RTX4090.id)})
    with pytest.raises(errors.RunpodAuthError) as info:
        placement.create(
            transport,  # type: ignore[arg-type]
            "gpu-review-1",
            SPEC,
            [RTX4090],
            volumes,
            avoid=[(RTX4090.display_name, "US-KS-2")],
        )
    assert transport.asked == [(RTX4090.id, "EU-RO-1")]
    assert "RTX 4090 in EU-RO-1" in str(info.value) and "US-KS-2: backing off" in str(info.value)


def test_a_round_mixing_403_and_no_capacity_stays_a_capacity_error() -> None:
    full = errors.RunpodCapacityError("POST /pods -> HTTP 400: no instances available", status=400)
    transport = FakeTransport({RTX4090.id: _forbidden(RTX4090.id), A4000.id: full})
    with pytest.raises(errors.RunpodCapacityError) as info:
        placement.create(transport, "gpu-review-1", SPEC, [RTX4090, A4000], [None])  # type: ignore[arg-type]
    assert not isinstance(info.value, errors.RunpodAuthError)
    # The 403's words stay in the round's summary, as before.
    assert "HTTP 403" in str(info.value) and "access denied" in str(info.value)
    assert [m["gpu_type"] for m in info.value.capacity_misses] == ["RTX 4090", "RTX A4000"]  # type: ignore[attr-defined]


def test_a_403_then_a_pod_still_creates_on_the_next_candidate() -> None:
    transport = FakeTransport({RTX4090.id: _forbidden(RTX4090.id), A4000.id: None})
    spawned = placement.create(transport, "gpu-review-1", SPEC, [RTX4090, A4000], [None])  # type: ignore[arg-type]
    assert spawned["gpu_type_id"] == A4000.id
    assert [m["gpu_type"] for m in spawned["capacity_misses"]] == ["RTX 4090"]


def test_an_auth_error_on_every_spawn_opens_the_breaker_instead_of_asking_forever() -> None:
    """What the daemon does with the round's ``RunpodAuthError`` (the executor's, relied on, not changed):
    a ``spawn_failed`` row, which counts toward the breaker, so the creations stop at a probe an hour.
    Driven in virtual time: the daemon's ``plan()`` and executor against the simulated provider."""
    trace = Trace("denied", tuple(TraceTask(f"t{i}", 30.0 + i, 120.0) for i in range(8)), 7200.0)
    settings = defaults()
    breakers: list[BreakerState] = []

    def watched(*args: Any, **kwargs: Any) -> Any:
        result = plan(*args, **kwargs)
        breakers.append(result.breaker)
        return result

    sim = Simulation(trace, watched, settings, seed=4, resume=ResumeModel(failure_share=0.0))
    asked: list[float] = []

    def denied(name: str, gpu_types: Any) -> Any:
        asked.append(sim.clock.now)
        raise errors.RunpodAuthError("the Runpod API key lacks permission to create pods", status=403)

    sim.provider.create = denied  # type: ignore[method-assign]
    sim.run()
    boots = sim.db.snapshot().recent_boots
    assert boots and all(o.reason == Reason.SPAWN_FAILED.value and o.counts_for_breaker for o in boots)
    assert BreakerState.OPEN in breakers
    # One burst before the first failures are seen, then one half-open probe at a time, far apart.
    later = [t for t in asked if t > asked[0] + 600]
    assert later and all(b - a >= settings.spawn_backoff_base_sec for a, b in itertools.pairwise(later)), (
        asked
    )
    assert len(asked) <= 20, asked


def _problem_transport(status: int, detail: str) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/v2/pods")
        return httpx.Response(
            status,
            json={"title": "Forbidden", "status": status, "detail": detail},
            headers={"content-type": "application/problem+json"},
        )

    return httpx.MockTransport(answer)


def test_rest_403_on_every_candidate_reaches_the_caller_as_an_auth_error() -> None:
    http = httpx.Client(
        base_url="https://api.runpod.test/v2", transport=_problem_transport(403, "access denied")
    )
    transport = rest.RestTransport("key", "https://api.runpod.test", retry=FAST, client=http)
    try:
        with pytest.raises(errors.RunpodAuthError) as info:
            placement.create(transport, "gpu-review-1", SPEC, [RTX4090, A4000], [None])
    finally:
        transport.close()
    assert info.value.status == 403 and "access denied" in str(info.value)


# --- 3. Secure Cloud -----------------------------------------------------------------------------------


def test_a_gpu_type_not_on_secure_cloud_is_skipped_and_summarised() -> None:
    community_only = dataclasses.replace(A4000, secure_cloud=False)
    unknown = GpuType(id="NVIDIA L4", display_name="L4", secure_cloud=None)
    full = errors.RunpodCapacityError("POST /pods -> HTTP 400: no instances available", status=400)
    transport = FakeTransport({unknown.id: full, RTX4090.id: full})
    with structlog.testing.capture_logs() as logs, pytest.raises(errors.RunpodCapacityError) as info:
        placement.create(transport, "gpu-review-1", SPEC, [community_only, unknown, RTX4090], [None])  # type: ignore[arg-type]
    # Not asked at all; the type the catalog does not speak for is.
    assert transport.asked == [(unknown.id, None), (RTX4090.id, None)]
    assert info.value.skipped == [  # type: ignore[attr-defined]
        {"gpu_type": "RTX A4000", "data_center": None, "reason": placement.NOT_SECURE}
    ]
    assert "RTX A4000: not on Secure Cloud" in str(info.value)
    [event] = [e for e in logs if e["event"] == "runpod_candidate_not_secure"]
    assert event["gpu_type"] == A4000.id


def test_secure_cloud_false_is_not_skipped_for_a_community_pod() -> None:
    community_only = dataclasses.replace(A4000, secure_cloud=False)
    transport = FakeTransport({A4000.id: None})
    spec = dataclasses.replace(SPEC, cloud="COMMUNITY")
    spawned = placement.create(transport, "gpu-review-1", spec, [community_only], [None])  # type: ignore[arg-type]
    assert spawned["gpu_type_id"] == A4000.id and spawned["skipped"] == []


# --- 2. the pod parser and the boot check -------------------------------------------------------------


def _rest_pod(ports: list[Any]) -> dict[str, Any]:
    return {
        "id": "abcdefghijklmn",
        "name": "gpu-review-1",
        "status": "RUNNING",
        "ports": ["22/tcp", "8888/http"],
        "gpu": {"id": RTX4090.id, "count": 1},
        "ssh": {"proxy": None, "direct": None},
        "runtime": {"uptime": 12, "ports": ports},
    }


def test_a_runtime_port_without_its_private_port_is_skipped_not_the_pod() -> None:
    pod = rest._pod(
        _rest_pod(
            [
                {"public": 41000, "type": "http", "ip": "45.23.12.1"},  # no "private": allowed
                {"private": 22, "public": 40022, "type": "tcp", "ip": "45.23.12.1"},
            ]
        )
    )
    assert [p.private_port for p in pod.ports] == [22]
    assert pod.ssh_ready and (pod.ip, pod.ssh_port) == ("45.23.12.1", 40022)


def test_over_graphql_too_a_runtime_port_without_its_private_port_is_skipped() -> None:
    from orchestrator.adapters.runpod import graphql

    ports = [
        {"publicPort": 41000, "type": "http", "ip": "45.23.12.1", "isIpPublic": True},
        {"privatePort": 22, "publicPort": 40022, "type": "tcp", "ip": "45.23.12.1", "isIpPublic": True},
    ]
    pod = graphql._pod({"id": "abcdefghijklmn", "desiredStatus": "RUNNING", "runtime": {"ports": ports}})
    assert [p.private_port for p in pod.ports] == [22]
    assert pod.ssh_ready and pod.ssh_port == 40022


def test_a_runtime_port_of_the_wrong_shape_still_rejects_the_pod() -> None:
    with pytest.raises(errors.RunpodMalformedResponse):
        rest._pod(_rest_pod([{"private": "22", "public": 40022, "type": "tcp", "ip": "203.0.113.7"}]))


class _ReadingTransport:
    name = "fake"

    def __init__(self, answer: Pod | Exception | None) -> None:
        self.answer = answer
        self.reads = 0

    def get_pod(self, pod_id: str) -> Pod | None:
        self.reads += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class _Provider(PodSSH):
    """PodSSH with nothing but a transport: enough for the boot check's provider side."""

    def __init__(self, transport: _ReadingTransport) -> None:
        self._transport = transport
        self._lock = threading.Lock()
        self._host_keys = {}
        self._secrets = []

    @property
    def transport(self) -> Any:
        return self._transport


def test_a_malformed_pod_answer_during_boot_is_not_ready_and_logged() -> None:
    bad = errors.RunpodMalformedResponse("malformed pod abcdefghijklmn: unknown status 'WEIRD'")
    provider = _Provider(_ReadingTransport(bad))
    with structlog.testing.capture_logs() as logs:
        check = provider.check_boot("gpu-review-1", "abcdefghijklmn")
    assert check.status == "not_ready", check
    assert "RunpodMalformedResponse" in str(check.detail)
    [event] = [e for e in logs if e["event"] == "boot_check_pod_unreadable"]
    assert event["worker_id"] == "gpu-review-1" and event["runpod_id"] == "abcdefghijklmn"
    assert event["log_level"] == "warning"


def test_other_provider_refusals_during_boot_still_fail_it() -> None:
    provider = _Provider(_ReadingTransport(errors.RunpodRequestError("refused", status=400)))
    assert provider.check_boot("gpu-review-1", "abcdefghijklmn").status == "failed"


# --- 2. the tick's listing in the daemon's boot check --------------------------------------------------


class _ListingProvider(_Provider):
    def __init__(self, transport: _ReadingTransport, pods: list[Pod]) -> None:
        super().__init__(transport)
        self.pods = pods

    def list_pods(self) -> list[Pod]:
        return list(self.pods)


def test_a_booting_pod_the_tick_listed_is_checked_without_asking_runpod_again() -> None:
    """Runpod's rate limit (its example: 60 requests a minute) was spent on one GET per booting worker
    per tick, for what the tick's listing had just said."""
    from orchestrator.loop.controller import Controller
    from orchestrator.loop.effects import run_now

    listed = Pod(id="abcdefghijklmn", name="gpu-review-1", desired_status=RUNNING, actual_status="STARTING")
    transport = _ReadingTransport(AssertionError("the listing had the pod: no GET"))
    controller = Controller(defaults(), None, _ListingProvider(transport, [listed]), holder="t")  # type: ignore[arg-type]
    try:
        assert controller._list_pods() is not None
        fx = controller.effects(token=1)
        check = run_now(fx.check_boot("gpu-review-1", "abcdefghijklmn", None))
        assert check.status == "not_ready" and transport.reads == 0
        # A pod the listing did not have is read as before.
        transport.answer = dataclasses.replace(listed, id="zzzzzzzzzzzzzz")
        run_now(fx.check_boot("gpu-review-2", "zzzzzzzzzzzzzz", None))
        assert transport.reads == 1
    finally:
        controller.shutdown()


@pytest.mark.parametrize(
    ("listed_status", "desired"),
    [("TERMINATED", "TERMINATED"), ("RUNNING", "TERMINATED"), ("UNKNOWN", "UNKNOWN")],
)
def test_a_listed_pod_that_is_gone_or_unreadable_is_read_again(listed_status: str, desired: str) -> None:
    """The listing serves a boot check only when it says something usable: a pod it lists as gone, or
    could not read (a placeholder), is asked for, and the answer is what a read gives."""
    listed = Pod(
        id="abcdefghijklmn", name="gpu-review-1", desired_status=desired, actual_status=listed_status
    )
    transport = _ReadingTransport(None)  # the read: no such pod any more
    check = _Provider(transport).check_boot("gpu-review-1", "abcdefghijklmn", pod=listed)
    assert transport.reads == 1
    assert check.status == "failed" and "pod not found" in str(check.error)
