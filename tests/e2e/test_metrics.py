"""The metrics port: Prometheus text from a running daemon, and ``/healthz`` that fails on a stale tick.

The metrics port serves Prometheus text (workers by state, queue depth, oldest queued age, spend rate,
spawn failures, tick duration) and ``/healthz`` fails when the last tick is too old. The first test reads them from ``orchestrator run`` with ``METRICS_PORT`` set; the second drives
:class:`orchestrator.loop.metrics.Metrics` with a fake clock behind a real :class:`MetricsServer`, since a
real daemon's limit is a minute or more.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from orchestrator.loop.metrics import Metrics, MetricsServer
from orchestrator.standins.stack import Stack
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_run_exposes_metrics_and_health(stack: Stack, cli_process: Any) -> None:
    port = _free_port()
    stack.enqueue(4, duration_sec=3.0)
    daemon = cli_process("run", env={"METRICS_PORT": port, "MAX_ACTIVE_GPUS": 2})
    base = f"http://127.0.0.1:{port}"

    def active_metrics() -> str | None:
        try:
            text = httpx.get(f"{base}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        return text if 'orchestrator_workers{state="active"} 2.0' in text else None

    text = wait_until(active_metrics, 60, "two active workers in /metrics", interval=0.25)
    for state in ("spawning", "initializing", "active", "draining", "terminating", "error"):
        assert f'orchestrator_workers{{state="{state}"}}' in text
    for name in (
        "orchestrator_queue_claimable",
        "orchestrator_queue_running",
        "orchestrator_oldest_queued_age_seconds",
        "orchestrator_spend_rate_usd_per_hour",
        "orchestrator_tick_duration_seconds_count",
        "orchestrator_is_leader",
        "orchestrator_last_tick_timestamp_seconds",
    ):
        assert _sample(text, name) is not None, f"{name} missing from /metrics"
    assert "# TYPE orchestrator_spawn_failures_total counter" in text
    assert 'orchestrator_spawning_blocked{reason="breaker_open"} 0.0' in text
    assert (_sample(text, "orchestrator_spend_rate_usd_per_hour") or 0) > 0
    assert (_sample(text, "orchestrator_queue_running") or 0) + (
        _sample(text, "orchestrator_queue_claimable") or 0
    ) >= 1
    assert _sample(text, "orchestrator_is_leader") == 1.0
    health = httpx.get(f"{base}/healthz", timeout=5)
    assert health.status_code == 200, health.text
    assert httpx.get(f"{base}/nope", timeout=5).status_code == 404
    assert daemon.proc.poll() is None


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_healthz_fails_when_the_last_tick_is_too_old() -> None:
    clock = FakeClock()
    metrics = Metrics(clock=clock)
    server = MetricsServer(metrics, 0, max_tick_age=30.0, host="127.0.0.1").start()
    url = f"http://127.0.0.1:{server.port}/healthz"
    try:
        # Before the first tick: healthy while the process is young, then not.
        assert httpx.get(url, timeout=5).status_code == 200
        clock.now += 31
        first = httpx.get(url, timeout=5)
        assert first.status_code == 503 and "no tick" in first.text

        def tick() -> None:
            metrics.observe_tick(
                duration=0.2,
                workers_by_state={"active": 1},
                claimable=0,
                running=1,
                oldest_queued_age=None,
                spend_rate=0.59,
                blocked={},
                leader=True,
            )

        tick()
        assert httpx.get(url, timeout=5).status_code == 200
        clock.now += 29
        assert httpx.get(url, timeout=5).status_code == 200
        clock.now += 2
        stale = httpx.get(url, timeout=5)
        assert stale.status_code == 503 and "last tick" in stale.text
        tick()
        assert httpx.get(url, timeout=5).status_code == 200
        text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
        assert 'orchestrator_workers{state="active"} 1.0' in text
        assert "orchestrator_tick_duration_seconds_count 2.0" in text
    finally:
        server.stop()
