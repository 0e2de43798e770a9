"""A metrics port something else already holds (node_exporter's 9100, say) must not stop the daemon:
it says so in its log and manages the fleet without the endpoint."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

from orchestrator.standins.stack import Stack


def test_a_taken_metrics_port_is_logged_and_the_daemon_runs_on(stack: Stack) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    env = {**keep, **stack.environ(METRICS_PORT=str(port), METRICS_HOST="127.0.0.1", MIN_ACTIVE_GPUS=0)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "--env-file", "/dev/null", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    events: list[dict[str, object]] = []
    lines: queue.Queue[str] = queue.Queue()
    # A reader thread, so a daemon that neither logs nor exits fails the wait below, not the whole run.
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()

    def logged(event: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                # Exited: what it wrote last is read once the reader reaches the end of its output.
                if proc.poll() is not None and not reader.is_alive():
                    return False
                continue
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
            if events[-1].get("event") == event:
                return True
        return False

    try:
        started = logged("daemon_started", 60)
        assert proc.poll() is None, f"the daemon exited ({proc.returncode}): {events}"
        assert started, f"no daemon_started within 60 s: {events}"
        failed = [e for e in events if e.get("event") == "metrics_server_failed"]
        assert failed and failed[0]["port"] == port and failed[0]["level"] == "error", events
        assert "already in use" in str(failed[0]["error"]).lower()
        proc.send_signal(signal.SIGTERM)
        assert logged("daemon_stopped", 60), f"no daemon_stopped within 60 s of SIGTERM: {events[-5:]}"
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        reader.join(timeout=10)
        proc.stdout.close()
        taken.close()
