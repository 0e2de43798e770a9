"""Prometheus metrics and the health endpoint, on an opt-in port (``METRICS_PORT``).

The controller updates these at the end of every tick (the "record" step). ``/healthz`` answers 200
while the last completed tick is recent, 503 otherwise, so a container's HEALTHCHECK or a load balancer
notices a wedged loop, not just a dead process. A follower (no lease) is healthy while it keeps trying.

Names follow Prometheus' conventions (https://prometheus.io/docs/practices/naming/): a unit suffix
(``_seconds``, ``_usd``), ``_total`` on counters (prometheus_client adds it), and an ``_info`` metric
for the build. Every label value the code knows is created at zero at start-up, so a rate() or an
alert on a counter works before the first failure instead of seeing no series at all. Retries of API
and database calls reach the counter through :mod:`orchestrator.telemetry`, so the adapters need not
know this module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from orchestrator import telemetry
from orchestrator.core.errors import OrchestratorError
from orchestrator.core.states import Blocked, WorkerState
from orchestrator.logs import log_http_error

WORKER_STATES = tuple(s.value for s in WorkerState if s is not WorkerState.TERMINATED)
# The steps of a tick that can fail as a whole (controller.tick: the lease, the gather).
TICK_STEPS = ("lease", "gather", "decide", "apply", "record")
# Why a boot or a creation failed (model.Reason values the executor reports, and the policy's boot
# failures); a reason outside the list still gets its own series when it happens.
SPAWN_FAILURE_REASONS = (
    "spawn_no_capacity",
    "spawn_failed",
    "spawn_rate_limited",
    "init_failed",
    "start_failed",
    "start_exited",
    "boot_timeout",
    "pod_failed",
    "pod_missing",
    "worker_crashed",
    "worker_error",
    "worker_exited",
)
# Spawn -> active, the cold-start figure: 30 s (a cached image) to 20 minutes (a large pull on a
# slow host), the range Runpod's users report.
BOOT_BUCKETS = (15.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1200.0)


class Metrics:
    """The daemon's metrics in a registry of its own (several controllers can live in one test)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self.workers = Gauge("orchestrator_workers", "Live workers by state", ["state"], registry=r)
        self.queue_claimable = Gauge(
            "orchestrator_queue_claimable", "Tasks a worker may claim now", registry=r
        )
        self.queue_running = Gauge("orchestrator_queue_running", "Tasks in progress", registry=r)
        self.oldest_queued_age = Gauge(
            "orchestrator_oldest_queued_age_seconds", "Age of the oldest claimable task", registry=r
        )
        self.spend_rate = Gauge(
            "orchestrator_spend_rate_usd_per_hour", "Current fleet cost per hour", registry=r
        )
        self.spawn_failures = Counter(
            "orchestrator_spawn_failures", "Failed pod creations and failed boots", ["reason"], registry=r
        )
        for reason in SPAWN_FAILURE_REASONS:
            self.spawn_failures.labels(reason=reason)
        self.tick_failures = Counter(
            "orchestrator_tick_failures",
            "Ticks that failed as a whole, by the step that failed",
            ["step"],
            registry=r,
        )
        for step in TICK_STEPS:
            self.tick_failures.labels(step=step)
        self.api_retries = Counter(
            "orchestrator_api_retries",
            "Calls to Runpod or the database retried after a transient fault, by API and reason",
            ["api", "reason"],
            registry=r,
        )
        for api in telemetry.APIS:
            for reason in telemetry.RETRY_REASONS:
                self.api_retries.labels(api=api, reason=reason)
        self.boot_seconds = Histogram(
            "orchestrator_boot_seconds",
            "Time from a worker's spawn to its activation (its first heartbeat after the process start)",
            ["gpu_type"],
            buckets=BOOT_BUCKETS,
            registry=r,
        )
        self.spend_usd = Counter(
            "orchestrator_spend_usd",
            "Fleet spend accumulated by this process (USD, from the spend rate)",
            registry=r,
        )
        self.build = Info("orchestrator_build", "The running orchestrator's version", registry=r)
        self.build.info(build_info())
        # Memory, CPU, open files and start time of this process (process_*), and the Python version
        # (python_info): what an operator checks first when the daemon misbehaves.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self._spend_rate: float | None = None
        self._spend_at: float | None = None
        self._retry_listener = telemetry.add_retry_listener(self._on_retry)
        self.spawning_blocked = Gauge(
            "orchestrator_spawning_blocked", "1 while spawning is stopped, by reason", ["reason"], registry=r
        )
        for blocked in Blocked:
            self.spawning_blocked.labels(reason=blocked.value)
        self.actions = Counter(
            "orchestrator_actions", "Actions applied, by kind and outcome", ["kind", "outcome"], registry=r
        )
        self.tick_duration = Histogram(
            "orchestrator_tick_duration_seconds",
            "Wall time of one tick",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.leader = Gauge("orchestrator_is_leader", "1 while this process holds the lease", registry=r)
        self.last_tick = Gauge(
            "orchestrator_last_tick_timestamp_seconds", "When the last tick ended", registry=r
        )
        self._last_tick_at: float | None = None
        self.started_at = clock()

    def observe_tick(
        self,
        *,
        duration: float,
        workers_by_state: Mapping[str, int],
        claimable: int,
        running: int,
        oldest_queued_age: float | None,
        spend_rate: float,
        blocked: Mapping[str, bool],
        leader: bool,
    ) -> None:
        for state in WORKER_STATES:
            self.workers.labels(state=state).set(workers_by_state.get(state, 0))
        self.queue_claimable.set(claimable)
        self.queue_running.set(running)
        self.oldest_queued_age.set(oldest_queued_age or 0.0)
        self.spend_rate.set(spend_rate)
        self._accrue_spend(spend_rate)
        for reason, on in blocked.items():
            self.spawning_blocked.labels(reason=reason).set(1 if on else 0)
        self.leader.set(1 if leader else 0)
        self.tick_duration.observe(duration)
        now = self.clock()
        self.last_tick.set(now)
        self._last_tick_at = now

    def _accrue_spend(self, rate_per_hour: float) -> None:
        """Add what the fleet cost since the last tick, at the rate the last tick saw (the rate holds
        between ticks: that is when the plan changes it)."""
        now = self.clock()
        if self._spend_at is not None and self._spend_rate is not None and now > self._spend_at:
            self.spend_usd.inc(self._spend_rate * (now - self._spend_at) / 3600.0)
        self._spend_rate = max(0.0, float(rate_per_hour))
        self._spend_at = now

    def observe_boot(self, gpu_type: str | None, seconds: float) -> None:
        """One worker reached ``active``: how long it took from its spawn."""
        if seconds >= 0:
            self.boot_seconds.labels(gpu_type=gpu_type or "unknown").observe(seconds)

    def count_spawn_failure(self, reason: str) -> None:
        """A pod creation or a boot failed (``reason``: the boot outcome's, or the error's type)."""
        self.spawn_failures.labels(reason=reason).inc()

    def observe_tick_failure(self, step: str) -> None:
        self.tick_failures.labels(step=step).inc()

    def _on_retry(self, api: str, reason: str) -> None:
        self.api_retries.labels(api=api, reason=reason).inc()

    def close(self) -> None:
        """Stop counting retries (the listener is process-wide)."""
        telemetry.remove_retry_listener(self._retry_listener)

    def observe_follower(self) -> None:
        """A follower's tick: it holds no lease, and is healthy while it keeps checking."""
        self.leader.set(0)
        now = self.clock()
        self.last_tick.set(now)
        self._last_tick_at = now

    def healthy(self, max_age: float) -> tuple[bool, str]:
        now = self.clock()
        if self._last_tick_at is None:
            # Give the first tick time to happen before calling the process unhealthy.
            if now - self.started_at <= max_age:
                return True, "starting"
            return False, f"no tick completed in {now - self.started_at:.0f}s"
        age = now - self._last_tick_at
        if age > max_age:
            return False, f"last tick {age:.0f}s ago (limit {max_age:.0f}s)"
        return True, f"last tick {age:.1f}s ago"

    def render(self) -> bytes:
        return generate_latest(self.registry)


def build_info() -> dict[str, str]:
    """The labels of ``orchestrator_build_info``: package version and Python version."""
    import platform
    from importlib import metadata

    try:
        version = metadata.version("runpod-fleet-orchestrator")
    except metadata.PackageNotFoundError:  # a source checkout that was never installed
        version = "unknown"
    return {"version": version, "python_version": platform.python_version()}


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        log_http_error("metrics", client_address)


class MetricsServer:
    """``/metrics`` (Prometheus text) and ``/healthz`` on a port of its own, in a daemon thread."""

    def __init__(self, metrics: Metrics, port: int, *, max_tick_age: float, host: str = "0.0.0.0") -> None:
        self.metrics = metrics
        self.max_tick_age = max_tick_age
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    self._send(200, outer.metrics.render(), CONTENT_TYPE_LATEST)
                elif self.path.split("?")[0] == "/healthz":
                    ok, why = outer.metrics.healthy(outer.max_tick_age)
                    self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found\n", "text/plain; charset=utf-8")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        try:
            self._server = _Server((host, port), Handler)
        except OSError as exc:
            # A taken or forbidden port is the operator's to fix; say which setting, not a traceback.
            raise OrchestratorError(
                f"METRICS_PORT={port}: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
