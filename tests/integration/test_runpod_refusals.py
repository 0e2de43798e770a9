"""Refusals whose meaning is not "try again": stop at once when they are certain, move on when unsure.

* Over GraphQL, Runpod answers "Something went wrong. Please try again later or contact support." to a
  pod with a network volume outside Secure Cloud (runpod/runpodctl issue #172). Before the fix the
  catch-all wording made it a transient error, retried with back-off and then reported as such; now it
  stops on the first answer with an error that says what is wrong. Against the emulator, which answers
  that way, through the official SDK.
* Over REST v2, no capacity is a 400 whose wording is not documented. A 400 the client cannot read as
  "no capacity" used to stop the whole GPU priority list at the first candidate; now the next candidate
  is tried, the refused one backs off like a capacity miss, and the body is logged so the wording can
  be learned. A small HTTP stand-in answers the two candidates differently (the emulator has no knob for
  an unknown 400); the real RunpodClient and httpx read it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog

from orchestrator.adapters.runpod.base import RetryPolicy
from orchestrator.core import errors
from tests.integration.test_runpod_contract import make_client
from tests.integration.test_runpod_failures import _rest_pod

FIRST = "NVIDIA GeForce RTX 4090"
SECOND = "NVIDIA RTX A4000"
UNKNOWN_WORDING = "This machine class is reserved for another workload right now"


def test_graphql_something_went_wrong_for_a_volume_off_secure_cloud_is_not_retried(
    emulator: Any, ssh_keypair: Any, tmp_path: Path
) -> None:
    # A retry would sleep at least 3 s: the elapsed time proves there was none.
    slow_retry = RetryPolicy(attempts=5, base_delay=3.0, max_delay=3.0)
    client = make_client(emulator, ssh_keypair, tmp_path, "graphql", retry=slow_retry)
    try:
        volume = next(v for v in client.get_network_volumes() if v["name"] == "workspace")
        started = time.monotonic()
        with pytest.raises(errors.RunpodRequestError) as info:
            client.create_pod_and_wait(
                "gpu-community-volume",
                "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
                FIRST,
                cloud_type="COMMUNITY",
                network_volume_id=volume["id"],
            )
        assert time.monotonic() - started < 2.5
    finally:
        client.close()
    message = str(info.value)
    assert "Something went wrong" in message and "Secure Cloud only" in message and volume["id"] in message
    assert emulator.admin.pods() == []


class Candidates:
    """A REST v2 stand-in: a catalog of two GPU types; createPod refuses the ones in ``refuse`` with a
    400 in words no client knows, and creates the others."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.created: list[str] = []
        self.asked: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, ctype: str = "application/json") -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/v2/catalog/gpus":
                    gpus = [
                        {"id": g, "name": g, "memory": 24, "price": {"secure": 0.5}} for g in (FIRST, SECOND)
                    ]
                    self._send(200, {"gpus": gpus})
                elif path == "/v2/pods":
                    self._send(200, {"pods": []})
                else:
                    self._send(
                        404,
                        {"title": "Not Found", "status": 404, "detail": "nope"},
                        "application/problem+json",
                    )

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                gpu = body["gpu"]["id"]
                outer.asked.append(gpu)
                if gpu in outer.refuse:
                    problem = {"title": "Bad Request", "status": 400, "detail": UNKNOWN_WORDING}
                    self._send(400, problem, "application/problem+json")
                    return
                outer.created.append(gpu)
                pod = _rest_pod(
                    id="podcreatedabcd",
                    name=body["name"],
                    gpu={"id": gpu, "count": 1},
                    status="PROVISIONING",
                    runtime=None,
                )
                self._send(201, pod)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def candidates() -> Iterator[Candidates]:
    server = Candidates(refuse={FIRST})
    try:
        yield server
    finally:
        server.stop()


def test_a_rest_400_in_unknown_words_falls_through_to_the_next_gpu_type(
    candidates: Candidates, ssh_keypair: Any, tmp_path: Path
) -> None:
    client = make_client(
        candidates, ssh_keypair, tmp_path, "rest", storage_name=None, gpu_type=f"{FIRST}, {SECOND}"
    )
    try:
        with structlog.testing.capture_logs() as logs:
            spawned = client.spawn_worker("gpu-20261206_010000-fa11f00d")
    finally:
        client.close()
    assert candidates.asked == [FIRST, SECOND] and candidates.created == [SECOND]
    assert spawned["gpu_type_id"] == SECOND
    [miss] = spawned["capacity_misses"]
    assert miss["gpu_type"] == FIRST and UNKNOWN_WORDING in miss["refused"]
    [refused] = [e for e in logs if e["event"] == "runpod_create_refused"]
    assert refused["gpu_type"] == FIRST and refused["status"] == 400 and UNKNOWN_WORDING in refused["body"]


def test_when_every_candidate_refuses_the_spawn_fails_listing_each(
    candidates: Candidates, ssh_keypair: Any, tmp_path: Path
) -> None:
    candidates.refuse = {FIRST, SECOND}
    client = make_client(
        candidates, ssh_keypair, tmp_path, "rest", storage_name=None, gpu_type=f"{FIRST}, {SECOND}"
    )
    try:
        with pytest.raises(errors.RunpodRequestError) as info:
            client.spawn_worker("gpu-20261206_010000-fa11f00e")
    finally:
        client.close()
    assert candidates.asked == [FIRST, SECOND] and candidates.created == []
    assert info.value.status == 400
    assert FIRST in str(info.value) and SECOND in str(info.value) and UNKNOWN_WORDING in str(info.value)
    # Not a capacity error: a spec refused everywhere counts toward the breaker.
    assert not isinstance(info.value, errors.RunpodCapacityError)
    misses = info.value.capacity_misses  # type: ignore[attr-defined]
    assert [m["gpu_type"] for m in misses] == [FIRST, SECOND]


def test_a_key_the_emulator_refuses_every_pool_to_is_an_auth_error_over_rest(
    emulator: Any, ssh_keypair: Any, tmp_path: Path
) -> None:
    """Every createPod answered 403 (the emulator's ``create_forbidden_share`` at 1: openapi createPod's
    "cannot access the requested pool", which a key without the permission to create pods gets too):
    the spawn ends as a RunpodAuthError naming the permission, after one try of each candidate, and no
    pod exists. As a capacity miss it was backed off and asked again for ever."""
    emulator.admin.set_faults(create_forbidden_share=1.0)
    client = make_client(emulator, ssh_keypair, tmp_path, "rest", gpu_type=[FIRST, SECOND])
    try:
        with pytest.raises(errors.RunpodAuthError) as info:
            client.spawn("gpu-20261207_120000-f0rb1dd3")
    finally:
        client.close()
    message = str(info.value)
    assert "lacks permission" in message and FIRST in message and SECOND in message
    assert emulator.admin.pods() == []
    # Off again, the same spawn is made: the knob, not the request, refused it.
    emulator.admin.set_faults(create_forbidden_share=0.0)
    client = make_client(emulator, ssh_keypair, tmp_path, "rest", gpu_type=[FIRST, SECOND])
    try:
        assert client.spawn("gpu-20261207_120000-f0rb1dd4").runpod_id
    finally:
        client.close()


@pytest.mark.parametrize("api", ["rest", "graphql"])
def test_a_creation_refused_for_the_balance_stops_the_round_and_makes_no_pod(
    emulator: Any, ssh_keypair: Any, tmp_path: Path, api: str
) -> None:
    """Every createPod refused for the account's balance (the emulator's ``create_no_balance_share`` at 1:
    openapi createPod's "402 | Insufficient balance. | Stop; no candidate will succeed."): the spawn
    fails after the first candidate, with Runpod's words, and no pod exists."""
    emulator.admin.set_faults(create_no_balance_share=1.0)
    client = make_client(emulator, ssh_keypair, tmp_path, api, gpu_type=[FIRST, SECOND])
    try:
        with pytest.raises(errors.RunpodError) as info:
            client.spawn("gpu-20261207_120000-b4l4nce1")
    finally:
        client.close()
        emulator.admin.set_faults(create_no_balance_share=0.0)
    assert "Insufficient balance" in str(info.value)
    assert not isinstance(info.value, errors.RunpodCapacityError)  # a failure the breaker counts
    if api == "rest":
        assert getattr(info.value, "status", None) == 402 and SECOND not in str(info.value)
    assert emulator.admin.pods() == []
