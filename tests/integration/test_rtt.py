"""Pods are far away: the emulator's ``rtt_ms`` knob delays the API and every pod's SSH port.

Only lower bounds are asserted (a busy machine may always be slower, never faster than the network).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import paramiko
import pytest

from orchestrator.standins.emulator import EmulatorServer
from tests.plugins.emulator import TEST_API_KEY
from tests.plugins.sandbox import SSHKeyPair

RTT_S = 0.1
GPU = "NVIDIA GeForce RTX 4090"


def _create(client: httpx.Client, env: dict[str, str]) -> str:
    body = {
        "name": "gpu-rtt",
        "image": "runpod/pytorch",
        "gpu": {"id": GPU, "count": 1},
        "ports": ["22/tcp"],
        "env": env,
    }
    r = client.post("/v2/pods", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _wait_running(client: httpx.Client, pod_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pod = client.get(f"/v2/pods/{pod_id}").json()
        if pod["status"] == "RUNNING":
            return dict(pod)
        assert time.monotonic() < deadline, f"pod {pod_id} stayed {pod['status']}"
        time.sleep(0.05)


def _connect(port: int, keypair: SSHKeyPair) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    # A throwaway local pod; pinning is tested elsewhere.
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        port=port,
        username="root",
        pkey=keypair.pkey,
        allow_agent=False,
        look_for_keys=False,
        timeout=20,
    )
    return client


def _run(client: paramiko.SSHClient, command: str) -> str:
    _, out, _ = client.exec_command(command, timeout=20)
    text = out.read().decode()
    assert out.channel.recv_exit_status() == 0
    return text


def _ssh_timings(emu: EmulatorServer, keypair: SSHKeyPair) -> tuple[float, float, dict[str, str], int]:
    """(connect + login seconds, one command's seconds, the pod's init env, published port) for a new pod."""
    with httpx.Client(
        base_url=emu.base_url, headers={"Authorization": f"Bearer {TEST_API_KEY}"}, timeout=30
    ) as c:
        pod_id = _create(c, {"PUBLIC_KEY": keypair.public_key})
        port = int(_wait_running(c, pod_id)["ssh"]["direct"]["port"])
        started = time.monotonic()
        client = _connect(port, keypair)
        connect_s = time.monotonic() - started
        with client:
            _run(client, "true")  # warm: the first exec may load things
            started = time.monotonic()
            _run(client, "true")
            command_s = time.monotonic() - started
            environ = _run(client, "cat /proc/1/environ")
        assert c.delete(f"/v2/pods/{pod_id}").status_code == 204
    init = dict(item.split("=", 1) for item in environ.split("\0") if item)
    return connect_s, command_s, init, port


def test_ssh_to_a_far_pod_pays_the_round_trips(
    emulator_factory: Callable[..., EmulatorServer], ssh_keypair: SSHKeyPair
) -> None:
    near = emulator_factory()
    far = emulator_factory(rtt_ms=RTT_S * 1000)
    near_connect, near_command, _, _ = _ssh_timings(near, ssh_keypair)
    far_connect, far_command, init, port = _ssh_timings(far, ssh_keypair)

    # A command on an open connection: at least one round trip (request, then output and exit status).
    assert far_command - near_command >= RTT_S, (near_command, far_command)
    # A new connection: TCP's handshake and sshd's banner (2 round trips), key exchange, login...
    assert far_connect - near_connect >= 4 * RTT_S, (near_connect, far_connect)
    # The pod knows its public port: the relay's, not sshd's own.
    assert init["RUNPOD_TCP_PORT_22"] == str(port)
    # Terminated, the relay is gone with it.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_far_pod_without_public_key_refuses_connections(
    emulator_factory: Callable[..., EmulatorServer],
) -> None:
    far = emulator_factory(rtt_ms=RTT_S * 1000)
    with httpx.Client(
        base_url=far.base_url, headers={"Authorization": f"Bearer {TEST_API_KEY}"}, timeout=30
    ) as c:
        pod_id = _create(c, {"WORKER_ID": "w1"})
        port = int(_wait_running(c, pod_id)["ssh"]["direct"]["port"])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_api_requests_pay_the_round_trip(emulator_factory: Callable[..., EmulatorServer]) -> None:
    far = emulator_factory(faults={"rtt_ms": RTT_S * 1000})
    with httpx.Client(
        base_url=far.base_url, headers={"Authorization": f"Bearer {TEST_API_KEY}"}, timeout=30
    ) as c:
        started = time.monotonic()
        assert c.get("/v2/pods").status_code == 200
        first = time.monotonic() - started
        started = time.monotonic()
        assert c.get("/v2/pods").status_code == 200
        again = time.monotonic() - started
    # A new connection: TCP's and TLS's handshakes, then the request; a kept-alive one: the request.
    assert first >= 3 * RTT_S and again >= RTT_S, (first, again)


def test_sim_serve_takes_rtt_ms(tmp_path: Any) -> None:
    cmd = [
        sys.executable,
        "-m",
        "orchestrator.standins.emulator",
        "--rtt-ms",
        "120",
        "--state-dir",
        str(tmp_path / "s"),
    ]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            base_url = proc.stdout.readline().strip()
            assert base_url.startswith("http://"), base_url
            faults = httpx.get(f"{base_url}/_emulator/faults", timeout=10).json()
            assert faults["rtt_ms"] == 120
        finally:
            proc.terminate()
            proc.wait(timeout=30)


# --- the relay itself ----------------------------------------------------------------------------------


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server that says hello, then echoes until the client shuts its sending half."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"hello\n")
            while data := conn.recv(65536):
                conn.sendall(data)

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(srv.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    srv.close()


def test_the_relay_delays_each_direction_and_keeps_every_byte_in_order(echo_port: int) -> None:
    from orchestrator.standins.emulator.latency import DelayRelay

    relay = DelayRelay(lambda: RTT_S)
    try:
        rp = relay.reserve()
        with pytest.raises(ConnectionRefusedError):  # reserved, not yet listening
            socket.create_connection(("127.0.0.1", rp.port), timeout=2).close()
        relay.forward(rp, echo_port)
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", rp.port), timeout=10) as s:
            s.settimeout(20)
            banner = s.recv(6)
            # Server speaks first: TCP's handshake, then the banner's way back.
            assert banner == b"hello\n" and time.monotonic() - started >= 2 * RTT_S
            started = time.monotonic()
            s.sendall(b"ping")
            assert s.recv(4) == b"ping" and time.monotonic() - started >= RTT_S

            payload = os.urandom(3 * 1024 * 1024)
            received = bytearray()

            def read_all() -> None:
                while len(received) < len(payload):
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        return
                    received.extend(chunk)

            reader = threading.Thread(target=read_all)
            reader.start()
            s.sendall(payload)
            reader.join(timeout=60)
            assert bytes(received) == payload
            s.shutdown(socket.SHUT_WR)  # half-close travels too: the echo server ends, we read EOF
            assert s.recv(1) == b""
        # A connection still open when the pod goes away is closed (the client is not left hanging).
        lingering = socket.create_connection(("127.0.0.1", rp.port), timeout=10)
        lingering.settimeout(20)
        assert lingering.recv(6) == b"hello\n"
        relay.release(rp)
        with contextlib.suppress(ConnectionResetError):
            while lingering.recv(1):
                pass
        lingering.close()
        deadline = time.monotonic() + 5
        while True:  # released asynchronously by the relay's loop
            try:
                socket.create_connection(("127.0.0.1", rp.port), timeout=2).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "the released port still accepts"
            time.sleep(0.05)
    finally:
        relay.close()


def test_faults_knob_validates_rtt_ms() -> None:
    from orchestrator.standins.emulator import Faults

    f = Faults()
    assert f.update({"rtt_ms": -1}) and f.rtt_ms == 0
    assert f.update({"rtt_ms": "150"}) == [] and f.rtt_ms == 150
    assert json.loads(json.dumps(f.to_dict()))["rtt_ms"] == 150
