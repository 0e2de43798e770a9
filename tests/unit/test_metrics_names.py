"""The metrics operators alert on exist before anything happens, and count what they say.

Prometheus' rate() and absent-series alerts need a series from the start: every label value the code
knows is created at zero. Spend accrues from the spend rate between ticks; retries reach the counter
from the adapters through orchestrator.telemetry.
"""

from __future__ import annotations

import gc
import re

from orchestrator import telemetry
from orchestrator.loop.metrics import SPAWN_FAILURE_REASONS, TICK_STEPS, Metrics


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def sample(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(2) or "{}")[1:-1].split(","))) if m.group(2) else ""
        if got == want:
            return float(m.group(3))
    return None


def observe(m: Metrics, spend_rate: float) -> None:
    m.observe_tick(
        duration=0.1,
        workers_by_state={},
        claimable=0,
        running=0,
        oldest_queued_age=None,
        spend_rate=spend_rate,
        blocked={},
        leader=True,
    )


def test_known_series_exist_at_zero_before_anything_happens() -> None:
    text = Metrics().render().decode()
    for step in TICK_STEPS:
        assert sample(text, "orchestrator_tick_failures_total", step=step) == 0.0
    for reason in SPAWN_FAILURE_REASONS:
        assert sample(text, "orchestrator_spawn_failures_total", reason=reason) == 0.0
    for api in telemetry.APIS:
        for reason in telemetry.RETRY_REASONS:
            assert sample(text, "orchestrator_api_retries_total", api=api, reason=reason) == 0.0
    assert sample(text, "orchestrator_spend_usd_total") == 0.0
    assert re.search(
        r'^orchestrator_build_info\{python_version="[0-9.]+",version="[^"]+"\} 1\.0$', text, re.M
    )
    assert sample(text, "process_resident_memory_bytes") is not None
    assert re.search(r"^python_info\{", text, re.M)


def test_spend_accrues_at_the_rate_between_ticks() -> None:
    clock = FakeClock()
    m = Metrics(clock=clock)
    observe(m, 3.6)  # 3.6 USD/h = 0.001 USD/s
    clock.t += 100
    observe(m, 7.2)
    assert sample(m.render().decode(), "orchestrator_spend_usd_total") == 0.1
    clock.t += 50
    observe(m, 0.0)
    assert abs((sample(m.render().decode(), "orchestrator_spend_usd_total") or 0) - 0.2) < 1e-9


def test_boot_time_histogram_per_gpu_type() -> None:
    m = Metrics()
    m.observe_boot("NVIDIA GeForce RTX 4090", 42.0)
    m.observe_boot("NVIDIA GeForce RTX 4090", 200.0)
    text = m.render().decode()
    assert sample(text, "orchestrator_boot_seconds_count", gpu_type="NVIDIA GeForce RTX 4090") == 2.0
    assert (
        sample(text, "orchestrator_boot_seconds_bucket", gpu_type="NVIDIA GeForce RTX 4090", le="45.0") == 1.0
    )


def test_retries_reported_by_adapters_are_counted_and_finished_metrics_drop_out() -> None:
    gc.collect()
    telemetry.retried(telemetry.SUPABASE, telemetry.TIMEOUT)  # prunes listeners of earlier tests
    listening = len(telemetry._retry_listeners)
    m = Metrics()
    assert len(telemetry._retry_listeners) == listening + 1
    telemetry.retried(telemetry.RUNPOD_REST, telemetry.RATE_LIMITED)
    telemetry.retried(telemetry.POSTGRES, "something new")
    text = m.render().decode()
    assert sample(text, "orchestrator_api_retries_total", api="runpod_rest", reason="rate_limited") == 1.0
    assert sample(text, "orchestrator_api_retries_total", api="postgres", reason="other") == 1.0
    del m, text
    gc.collect()
    telemetry.retried(telemetry.SUPABASE, telemetry.TIMEOUT)
    assert len(telemetry._retry_listeners) == listening


def test_tick_failures_count_by_step() -> None:
    m = Metrics()
    m.observe_tick_failure("gather")
    m.observe_tick_failure("gather")
    assert sample(m.render().decode(), "orchestrator_tick_failures_total", step="gather") == 2.0


def test_the_documented_alert_rules_use_metrics_the_daemon_exposes() -> None:
    from pathlib import Path

    import yaml

    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = doc.split("### Alert examples (Prometheus rules)", 1)[1]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    rules = [r for g in yaml.safe_load(block)["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "OrchestratorQueueStuck",
        "OrchestratorBreakerOpen",
        "OrchestratorSpendAboveCap",
        "OrchestratorNoTick",
    }
    m = Metrics()
    m.observe_boot("x", 1.0)
    exposed = {
        line.split("{")[0].split(" ")[0]
        for line in m.render().decode().splitlines()
        if not line.startswith("#")
    }
    for rule in rules:
        for name in re.findall(r"\b(orchestrator_[a-z_]+)", rule["expr"]):
            assert name in exposed, f"{rule['alert']}: {name} is not exposed"
