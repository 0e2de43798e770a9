"""Every failure mode of the Runpod boundary, one test each, driven by the emulator's fault knobs.

Each comes back as the project's own typed error (or a result dict naming the failure), never as an
unhandled library exception: GPU type not found (lists the names), volume missing (lists volumes and
data centers), no capacity (typed; falls through the GPU priority list), bad key (typed, not
retried), 429 (retried after the server's reset time), 5xx (bounded, jittered retries; a lost create
response does not create a second pod), malformed responses (typed, with an excerpt) and SSH
refused / auth failed / timed out (told apart in the result).

The emulator has no knob for malformed bodies, so those tests use a tiny stub HTTP server that
answers fixed bodies (HTML, missing fields, ``runtime: null``, no ``22/tcp`` mapping): the real
httpx client and the real SDK read them.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from orchestrator.adapters.runpod.base import RetryPolicy
from orchestrator.adapters.runpod.rest import RATE_LIMIT_RESERVE
from orchestrator.core import errors
from tests.integration.test_runpod_contract import FAST_RETRY, TRANSPORTS, make_client, wait_for
from tests.plugins.emulator import TEST_API_KEY

RTX4090 = "NVIDIA GeForce RTX 4090"
A4000 = "NVIDIA RTX A4000"


@pytest.fixture
def clients(emulator, ssh_keypair, tmp_path: Path) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    made: list[Any] = []

    def make(api: str, server: Any = None, **overrides: Any) -> Any:
        c = make_client(server or emulator, ssh_keypair, tmp_path, api, **overrides)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# --- catalog and placement ---------------------------------------------------------------------------


@pytest.mark.parametrize("api", TRANSPORTS)
def test_unknown_gpu_type_lists_the_available_names(api: str, clients, emulator) -> None:  # type: ignore[no-untyped-def]
    client = clients(api, gpu_type="Voodoo 2")
    with pytest.raises(errors.GpuTypeNotFound) as info:
        client.spawn_worker("gpu-unknown-type")
    msg = str(info.value)
    assert "'Voodoo 2' not found" in msg
    for name in ("RTX 4090", "RTX A4000", "L40S", "H100 SXM"):
        assert name in msg
    assert emulator.admin.pods() == []


@pytest.mark.parametrize("api", TRANSPORTS)
def test_an_unknown_name_in_the_priority_list_does_not_stop_the_known_ones(
    api: str, clients, emulator
) -> None:  # type: ignore[no-untyped-def]
    """RUNPOD_GPU_TYPE is a priority order whose next entry is the fallback: a typo, or a type Runpod
    drops from its catalogue, used to fail every spawn before the known type was tried."""
    client = clients(api, gpu_type="Voodoo 2, RTX 4090")
    with capture_logs() as logs:
        first = client.spawn_worker("gpu-typo-then-known1")
        second = client.spawn_worker("gpu-typo-then-known2")
    assert [p["gpu_type"] for p in (first, second)] == ["RTX 4090"] * 2
    said = [e for e in logs if e["event"] == "runpod_gpu_type_unknown"]
    assert [e["gpu_type"] for e in said] == ["Voodoo 2"], "once per name, not once per spawn"
    for p in (first, second):
        assert client.terminate_worker(p["runpod_id"]) is True


@pytest.mark.parametrize("api", TRANSPORTS)
def test_missing_volume_lists_volumes_and_data_centers(api: str, clients, emulator) -> None:  # type: ignore[no-untyped-def]
    client = clients(api, storage_name="no-such-volume")
    with pytest.raises(errors.VolumeNotFound) as info:
        client.spawn_worker("gpu-no-volume")
    msg = str(info.value)
    assert "'no-such-volume' not found" in msg and "workspace" in msg and "EU-RO-1" in msg
    assert emulator.admin.pods() == []


@pytest.mark.parametrize("api", TRANSPORTS)
def test_no_capacity_falls_through_the_priority_list_then_is_typed(api: str, clients, emulator) -> None:  # type: ignore[no-untyped-def]
    emulator.admin.set_capacity(RTX4090, "EU-RO-1", 0)
    client = clients(api, gpu_type=f"{RTX4090}, RTX A4000")
    spawned = client.spawn_worker(f"gpu-fallthrough-{api}")
    assert spawned["gpu_type_id"] == A4000 and spawned["data_center"] == "EU-RO-1"
    assert emulator.admin.pod(spawned["runpod_id"])["gpu"] == A4000

    emulator.admin.set_capacity(A4000, "EU-RO-1", 0)
    with pytest.raises(errors.RunpodCapacityError) as info:
        client.spawn_worker(f"gpu-nocap-{api}")
    msg = str(info.value)
    assert (
        "no capacity for any GPU type" in msg
        and "EU-RO-1" in msg
        and "RTX 4090" in msg
        and "RTX A4000" in msg
    )
    assert [p["name"] for p in emulator.admin.pods()] == [f"gpu-fallthrough-{api}"]


# --- auth, rate limits, 5xx ----------------------------------------------------------------------------


@pytest.mark.parametrize("api", TRANSPORTS)
def test_bad_key_is_typed_and_never_retried(api: str, clients, emulator_factory) -> None:  # type: ignore[no-untyped-def]
    server = emulator_factory(api_key=TEST_API_KEY)
    # A retry would sleep at least 3 s: the elapsed time proves there was none.
    slow_retry = RetryPolicy(attempts=5, base_delay=3.0, max_delay=3.0)
    client = clients(api, server, api_key="rpa_WRONG", retry=slow_retry)
    started = time.monotonic()
    with pytest.raises(errors.RunpodAuthError, match="API key"):
        client.spawn_worker("gpu-bad-key")
    assert time.monotonic() - started < 2.5
    assert server.admin.pods() == []


def test_rate_limit_waits_for_the_servers_reset_time(clients, emulator) -> None:  # type: ignore[no-untyped-def]
    emulator.admin.set_faults(api_429_burst=2, retry_after_s=1)
    client = clients("rest")
    started = time.monotonic()
    assert any(v["name"] == "workspace" for v in client.get_network_volumes())
    elapsed = time.monotonic() - started
    assert 1.9 <= elapsed < 6, elapsed  # two 429s, each honoured for its 1 s reset
    assert emulator.admin.faults()["api_429_burst"] == 0


def test_rate_limit_reset_beyond_the_bound_is_not_waited_for(clients, emulator) -> None:  # type: ignore[no-untyped-def]
    emulator.admin.set_faults(api_429_burst=1, retry_after_s=600)
    client = clients("rest")
    started = time.monotonic()
    with pytest.raises(errors.RunpodRateLimited) as info:
        client.get_network_volumes()
    assert info.value.retry_after == 600
    assert time.monotonic() - started < 2


def test_near_the_end_of_a_window_only_endings_and_the_listing_are_sent(clients, emulator) -> None:  # type: ignore[no-untyped-def]
    # Reads and creations spending a window's last requests would leave a termination to a 429 and
    # its pod billing until the reset (an hour, for the hour window).
    client = clients("rest", retry=dataclasses.replace(FAST_RETRY, max_rate_limit_wait=0.0))
    pod_id = client.spawn_worker("gpu-quota")["runpod_id"]
    transport = client.transport
    assert transport.get_pod(pod_id) is not None
    left, _until = transport._windows["hour"]
    used = emulator.admin.faults()["rate_limit_hour"] - left
    emulator.admin.set_faults(rate_limit_hour=used + RATE_LIMIT_RESERVE + 3)
    sent = 0
    with pytest.raises(errors.RunpodRateLimited, match=r"held back.*kept for terminations") as info:
        for _ in range(10):
            transport.get_pod(pod_id)
            sent += 1
    assert sent == 3 and info.value.retry_after is not None and info.value.retry_after > 60
    # The listing and the termination still go out, inside the quota: the server refused nothing.
    assert any(p.id == pod_id for p in transport.list_pods())
    assert transport.terminate_pod(pod_id) is True
    assert emulator.admin.pod(pod_id)["status"] == "TERMINATED"
    assert 0 < transport._windows["hour"][0] < RATE_LIMIT_RESERVE


def test_rate_limit_over_graphql_is_retried(clients, emulator) -> None:  # type: ignore[no-untyped-def]
    # The SDK hides the headers, so GraphQL backs off on its own schedule (bounded) instead.
    emulator.admin.set_faults(api_429_burst=3, retry_after_s=1)
    client = clients("graphql")
    assert any(v["name"] == "workspace" for v in client.get_network_volumes())
    assert emulator.admin.faults()["api_429_burst"] == 0


@pytest.mark.parametrize("api", TRANSPORTS)
def test_5xx_are_retried_with_bounds(api: str, clients, emulator) -> None:  # type: ignore[no-untyped-def]
    emulator.admin.set_faults(api_error_rate=0.5)
    client = clients(api, retry=RetryPolicy(attempts=12, base_delay=0.005, max_delay=0.02))
    for _ in range(8):
        assert client.list_network_volumes(fresh=True)

    emulator.admin.set_faults(api_error_rate=1.0)
    bounded = clients(api, retry=RetryPolicy(attempts=3, base_delay=0.005, max_delay=0.02))
    started = time.monotonic()
    with pytest.raises(errors.RunpodTransientError):
        bounded.list_network_volumes(fresh=True)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("api", TRANSPORTS)
def test_lost_create_response_does_not_create_a_second_pod(api: str, clients, emulator) -> None:  # type: ignore[no-untyped-def]
    client = clients(api)
    client.list_gpu_types()
    client.list_network_volumes()
    # Every mutation is carried out, then answered with a 5xx ("response lost").
    emulator.admin.set_faults(api_error_after_rate=1.0)
    spawned = client.spawn_worker(f"gpu-lost-{api}")
    emulator.admin.set_faults(api_error_after_rate=0.0)
    pods = [p for p in emulator.admin.pods() if p["status"] != "TERMINATED"]
    assert [p["id"] for p in pods] == [spawned["runpod_id"]]
    assert client.terminate_worker(spawned["runpod_id"]) is True


def test_a_lost_create_answer_is_found_beside_a_pod_the_listing_cannot_read(
    clients, emulator, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """GraphQL: after a create whose answer was lost, the pod is looked up by name in the account's
    listing. The look-up parsed that listing strictly, so one entry it could not read (somebody else's
    pod, here a port without ``privatePort``) hid ours, and the retry created a second GPU pod."""
    import runpod

    real_get_pods = runpod.get_pods
    foreign = {"id": "notebookpod001", "name": "alice-notebook", "desiredStatus": "RUNNING",
               "runtime": {"ports": [{"ip": "1.2.3.4"}]}}  # fmt: skip

    def listing_with_a_foreign_pod(*args: Any, **kwargs: Any) -> Any:
        return [*real_get_pods(*args, **kwargs), foreign]

    monkeypatch.setattr(runpod, "get_pods", listing_with_a_foreign_pod)
    client = clients("graphql")
    client.list_gpu_types()
    client.list_network_volumes()
    emulator.admin.set_faults(api_error_after_rate=1.0)
    spawned = client.spawn_worker("gpu-lost-beside-foreign")
    emulator.admin.set_faults(api_error_after_rate=0.0)
    pods = [p for p in emulator.admin.pods() if p["status"] != "TERMINATED"]
    assert [p["id"] for p in pods] == [spawned["runpod_id"]]


@pytest.mark.parametrize("api", TRANSPORTS)
def test_a_lost_create_answer_and_an_unreadable_pod_list_never_make_a_second_pod(
    api: str, clients, emulator
) -> None:  # type: ignore[no-untyped-def]
    """After a create whose answer was lost, the client looks for the pod by name. When that look-up
    failed too (the listing's 503 or 429), it read as "no such pod" and the retry made a second GPU
    pod for the same worker. Every mutation here is carried out and then answered with a 5xx, and half
    of all requests fail before anything is done: over these seeds the client either finds its one pod
    or gives up saying it does not know, and never makes two."""
    client = clients(api)
    client.list_gpu_types()
    client.list_network_volumes()
    outcomes = []
    for seed in range(1, 13):
        name = f"gpu-dup-{api}-{seed}"
        emulator.admin.set_faults(api_error_after_rate=1.0, api_error_rate=0.5, seed=seed)
        try:
            outcomes.append(client.spawn_worker(name)["runpod_id"])
        except errors.RunpodError as exc:
            outcomes.append(type(exc).__name__)
        emulator.admin.set_faults(api_error_after_rate=0.0, api_error_rate=0.0, seed=None)
        made = [p["id"] for p in emulator.admin.pods() if p["name"] == name and p["status"] != "TERMINATED"]
        assert len(made) <= 1, (seed, outcomes[-1], made)
    # And in some of them it found the pod its lost create had made.
    assert [o for o in outcomes if not o.startswith("Runpod")], outcomes


@pytest.mark.parametrize("api", TRANSPORTS)
def test_failed_termination_is_false_never_silently_true(api: str, clients, emulator) -> None:  # type: ignore[no-untyped-def]
    client = clients(api, retry=RetryPolicy(attempts=2, base_delay=0.005, max_delay=0.01))
    spawned = client.spawn_worker(f"gpu-term-{api}")
    emulator.admin.set_faults(api_error_rate=1.0)
    assert client.terminate_worker(spawned["runpod_id"]) is False
    emulator.admin.set_faults(api_error_rate=0.0)
    assert emulator.admin.pod(spawned["runpod_id"])["status"] != "TERMINATED"
    assert client.terminate_worker(spawned["runpod_id"]) is True


# --- SSH failures, told apart -------------------------------------------------------------------------


@pytest.mark.parametrize("api", TRANSPORTS)
def test_ssh_refused_is_reported_as_still_spawning(api: str, clients, emulator) -> None:  # type: ignore[no-untyped-def]
    emulator.admin.set_faults(ssh_refuse_share=1.0)
    client = clients(api)
    spawned = client.spawn_worker(f"gpu-refuse-{api}")

    def refused() -> dict[str, Any] | None:
        r = client.check_and_initialize_worker(spawned["worker_id"], spawned["runpod_id"])
        return r if r.get("ssh_error") else None

    res = wait_for(refused, timeout=20)
    assert res["status"] == "spawning" and res["ssh_error"] == "refused", res


@pytest.mark.parametrize("api", TRANSPORTS)
def test_ssh_auth_failure_is_an_error_naming_it(api: str, clients, emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.plugins.sandbox import generate_keypair

    # The pod authorises the configured pair; the checks log in with another key (one rotated since the
    # pod was made, say). A daemon configured with two halves of different pairs refuses to start.
    spawned = clients(api).spawn_worker(f"gpu-auth-{api}")
    stranger = generate_keypair(tmp_path, f"stranger-{api}")
    client = clients(api, ssh_private_key_path=stranger.private_key_path, ssh_public_key_path=None)

    def settled() -> dict[str, Any] | None:
        r = client.check_and_initialize_worker(spawned["worker_id"], spawned["runpod_id"])
        return r if r["status"] != "spawning" else None

    res = wait_for(settled, timeout=20)
    assert res["status"] == "error" and res["ssh_error"] == "auth_failed" and res["step"] == "ssh", res
    assert "authentication" in res["error"]


# --- malformed responses (stub server) ------------------------------------------------------------------


class Stub:
    """Answers every request to a path with a fixed (status, content type, body)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, str, str]] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                path = self.path.split("?")[0]
                status, ctype, body = stub.routes.get(
                    (method, path),
                    (404, "application/problem+json", '{"title":"Not Found","status":404,"detail":"nope"}'),
                )
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _rest_pod(**over: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "id": "abcdefghijklmn",
        "name": "gpu-stub",
        "status": "RUNNING",
        "ports": ["22/tcp"],
        "env": {},
        "gpu": {"id": RTX4090, "count": 1},
        "dataCenterId": "EU-RO-1",
        "cost": 0.59,
        "createdAt": "2026-11-29T00:00:00Z",
        "ssh": {"proxy": None, "direct": None},
        "runtime": {
            "uptime": 5,
            "ports": [{"private": 8888, "public": 40000, "type": "http", "ip": "127.0.0.1"}],
        },
    }
    pod.update(over)
    return pod


def test_rest_malformed_bodies_are_typed_with_an_excerpt(clients, stub: Stub) -> None:  # type: ignore[no-untyped-def]
    client = clients("rest", stub)
    pid = "abcdefghijklmn"
    stub.routes[("GET", f"/v2/pods/{pid}")] = (
        200,
        "text/html",
        "<html><body>Cloudflare says hi</body></html>",
    )
    with pytest.raises(errors.RunpodMalformedResponse, match=r"not JSON.*Cloudflare says hi"):
        client.get_pod_status(pid)

    stub.routes[("GET", f"/v2/pods/{pid}")] = (200, "application/json", json.dumps({"id": pid, "name": "x"}))
    with pytest.raises(errors.RunpodMalformedResponse, match="missing field 'status'") as info:
        client.get_pod_status(pid)
    assert '"name": "x"' in str(info.value.payload)

    stub.routes[("GET", f"/v2/pods/{pid}")] = (
        200,
        "application/json",
        json.dumps({"id": pid, "status": "PAUSED"}),
    )
    with pytest.raises(errors.RunpodMalformedResponse, match="unknown status 'PAUSED'"):
        client.get_pod_status(pid)
    # A body we cannot read says nothing about the pod: the boot waits (its timeout still ends a pod
    # that stays unreadable) rather than failing, and terminating, a worker that may be booting fine.
    res = client.check_and_initialize_worker("gpu-stub", pid)
    assert res["status"] == "spawning"

    # RUNNING with runtime still null is schema-valid (openapi Pod.runtime is nullable): not ready yet.
    stub.routes[("GET", f"/v2/pods/{pid}")] = (200, "application/json", json.dumps(_rest_pod(runtime=None)))
    status = client.get_pod_status(pid)
    assert status is not None and status["actual_status"] == "RUNNING" and status["ip"] is None
    res = client.check_and_initialize_worker("gpu-stub", pid)
    assert res["status"] == "spawning"

    # Running, but no 22/tcp mapping although the pod asked for one.
    stub.routes[("GET", f"/v2/pods/{pid}")] = (200, "application/json", json.dumps(_rest_pod()))
    res = client.check_and_initialize_worker("gpu-stub", pid)
    assert res["status"] == "error" and "no public 22/tcp mapping" in res["error"]

    # 22/tcp listed, its public port not assigned yet (PodRuntimePort.public is nullable, ssh.direct null
    # until one is): still coming up, not a failed boot to terminate.
    coming = _rest_pod(
        runtime={"uptime": 3, "ports": [{"private": 22, "public": None, "type": "tcp", "ip": None}]}
    )
    stub.routes[("GET", f"/v2/pods/{pid}")] = (200, "application/json", json.dumps(coming))
    assert client.check_and_initialize_worker("gpu-stub", pid)["status"] == "spawning"

    stub.routes[("GET", "/v2/network-volumes")] = (200, "application/json", json.dumps({"volumes": []}))
    with pytest.raises(errors.RunpodMalformedResponse, match="missing field 'networkVolumes'"):
        client.get_network_volumes()


def test_an_action_answered_with_no_body_is_accepted_and_the_pod_read_back(clients, stub: Stub) -> None:  # type: ignore[no-untyped-def]
    """The openapi gives a body to every pod action but terminate (204); an empty answer to a stop or a
    start was read as a malformed refusal: a stop that went through was logged as failed."""
    client = clients("rest", stub)
    pid = "abcdefghijklmn"
    stub.routes[("POST", f"/v2/pods/{pid}/action")] = (204, "application/json", "")
    stub.routes[("GET", f"/v2/pods/{pid}")] = (
        200, "application/json", json.dumps(_rest_pod(status="EXITED", runtime=None, cost=0))
    )  # fmt: skip
    assert client.stop(pid) is True
    stub.routes[("GET", f"/v2/pods/{pid}")] = (
        200,
        "application/json",
        json.dumps(_rest_pod(status="STARTING")),
    )
    assert client.resume(pid).status == "resumed"


def test_an_internal_address_in_the_rest_ports_is_not_taken_for_the_pods_ssh_address(
    clients, stub: Stub
) -> None:  # type: ignore[no-untyped-def]
    # REST v2's PodRuntimePort has no isIpPublic. Runpod's internal entries are 100.65.x.x (the
    # SDK's GraphQL reads flag them isIpPublic false), inside the carrier-grade NAT range 100.64/10,
    # which Python's ipaddress does not call private: read as public, SSH would wait out its timeout.
    client = clients("rest", stub)
    pid = "abcdefghijklmn"

    def ports(*entries: tuple[str, int]) -> dict[str, Any]:
        return {
            "uptime": 5,
            "ports": [{"private": 22, "public": pub, "type": "tcp", "ip": ip} for ip, pub in entries],
        }

    for internal in ("100.65.3.4", "10.2.0.7", "169.254.1.1"):
        stub.routes[("GET", f"/v2/pods/{pid}")] = (
            200,
            "application/json",
            json.dumps(_rest_pod(runtime=ports((internal, 22)))),
        )
        pod = client.transport.get_pod(pid)
        assert (pod.ip, pod.ssh_port) == (None, None), internal
    stub.routes[("GET", f"/v2/pods/{pid}")] = (
        200,
        "application/json",
        json.dumps(_rest_pod(runtime=ports(("100.65.3.4", 22), ("213.173.104.74", 40022)))),
    )
    pod = client.transport.get_pod(pid)
    assert (pod.ip, pod.ssh_port) == ("213.173.104.74", 40022)


def test_a_listing_entry_of_an_unforeseen_shape_hides_no_other_pod(clients, stub: Stub) -> None:  # type: ignore[no-untyped-def]
    # Shapes the parser does not check field by field raise whatever Python raises on them (a
    # TypeError iterating a number), not the client's typed error; the entry must still be the only
    # casualty, kept by its id so that the orphan sweep and the GPU count still see it.
    client = clients("rest", stub)
    odd = _rest_pod(id="bcdefghijklmno", name="gpu-odd", runtime={"uptime": 5, "ports": 7})
    stub.routes[("GET", "/v2/pods")] = (
        200,
        "application/json",
        json.dumps({"pods": [_rest_pod(), odd, {"name": "no id", "status": 3}]}),
    )
    pods = {p.id: p for p in client.transport.list_pods()}
    assert set(pods) == {"abcdefghijklmn", "bcdefghijklmno"}
    assert pods["abcdefghijklmn"].actual_status == "RUNNING"
    assert (pods["bcdefghijklmno"].name, pods["bcdefghijklmno"].actual_status) == ("gpu-odd", "UNKNOWN")


def test_graphql_malformed_bodies_are_typed_with_an_excerpt(clients, stub: Stub) -> None:  # type: ignore[no-untyped-def]
    client = clients("graphql", stub)
    stub.routes[("POST", "/graphql")] = (200, "text/html", "<html><body>Welcome to nginx!</body></html>")
    with pytest.raises(errors.RunpodMalformedResponse, match=r"not JSON.*Welcome to nginx"):
        client.get_network_volumes()

    stub.routes[("POST", "/graphql")] = (200, "application/json", json.dumps({"data": {}}))
    with pytest.raises(errors.RunpodMalformedResponse, match="unexpected response shape"):
        client.get_network_volumes()

    # An error status whose JSON body has neither data nor errors (a gateway's {"message": ...}): the
    # SDK then indexes ["data"]; transient, retried, not a malformed pod that would fail a boot.
    stub.routes[("POST", "/graphql")] = (503, "application/json", json.dumps({"message": "upstream busy"}))
    fast = clients("graphql", stub, retry=RetryPolicy(attempts=2, base_delay=0.005, max_delay=0.01))
    with pytest.raises(errors.RunpodTransientError, match="without data or errors"):
        fast.get_pod_status("abcdefghijklmn")

    stub.routes[("POST", "/graphql")] = (
        200,
        "application/json",
        json.dumps({"data": {"pod": {"id": "abcdefghijklmn"}}}),
    )
    with pytest.raises(errors.RunpodMalformedResponse, match="missing field 'desiredStatus'"):
        client.get_pod_status("abcdefghijklmn")

    runtime_no_ssh = {
        "id": "abcdefghijklmn",
        "name": "gpu-stub",
        "desiredStatus": "RUNNING",
        "ports": "22/tcp",
        "runtime": {
            "ports": [
                {"ip": "10.0.0.1", "isIpPublic": False, "privatePort": 22, "publicPort": 22, "type": "tcp"}
            ]
        },
    }
    stub.routes[("POST", "/graphql")] = (
        200,
        "application/json",
        json.dumps({"data": {"pod": runtime_no_ssh}}),
    )
    res = client.check_and_initialize_worker("gpu-stub", "abcdefghijklmn")
    assert res["status"] == "error" and "no public 22/tcp mapping" in res["error"]


def test_ssh_timeout_is_reported_as_still_spawning(clients, stub: Stub) -> None:  # type: ignore[no-untyped-def]
    # A pod whose published SSH port accepts connections but never speaks SSH.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        port = silent.getsockname()[1]
        pod = _rest_pod(
            ssh={
                "proxy": None,
                "direct": {"host": "127.0.0.1", "port": port, "username": "root", "command": "ssh"},
            },
            runtime={
                "uptime": 5,
                "ports": [{"private": 22, "public": port, "type": "tcp", "ip": "127.0.0.1"}],
            },
        )
        stub.routes[("GET", "/v2/pods/abcdefghijklmn")] = (200, "application/json", json.dumps(pod))
        client = clients("rest", stub, ssh_connect_timeout=1.0)
        started = time.monotonic()
        res = client.check_and_initialize_worker("gpu-stub", "abcdefghijklmn")
        assert res["status"] == "spawning" and res["ssh_error"] == "timeout", res
        assert time.monotonic() - started < 6
    finally:
        silent.close()


@pytest.mark.parametrize("api", TRANSPORTS)
def test_a_stopped_or_vanished_pod_is_an_error_not_spawning(api: str, clients, emulator) -> None:  # type: ignore[no-untyped-def]
    client = clients(api)
    spawned = client.spawn_worker(f"gpu-preempt-{api}")
    wait_for(lambda: (p := client.get_pod(spawned["runpod_id"])) is not None and p.ssh_ready, timeout=20)
    emulator.admin.preempt(spawned["runpod_id"], to="EXITED")
    res = client.check_and_initialize_worker(spawned["worker_id"], spawned["runpod_id"])
    assert res["status"] == "error" and res["step"] == "provider" and "EXITED" in res["error"], res
    assert client.terminate_worker(spawned["runpod_id"]) is True
    res = client.check_and_initialize_worker(spawned["worker_id"], spawned["runpod_id"])
    assert res["status"] == "error" and "not found" in res["error"], res
