"""``orchestrator sim run``: what a fleet would cost, and how long tasks would wait, on given traffic.

Where this sits: the operator-facing face of the policy benchmark. It takes a trace (one of
the named generators of :mod:`orchestrator.studies.traces`, or an operator's own CSV export), the
policies of :mod:`orchestrator.studies.policies` plus the oracle, and the operator's configuration (the
settings the CLI loaded from the environment and ``.env``, with ``--set`` changes for ``ours``), runs
each policy in virtual time with :class:`orchestrator.studies.simulation.Simulation`, and returns the same
metrics ``bench/policy.py`` tabulates, averaged over seeds. Everything is checked before anything
runs, and nothing is printed until every run is done, so a mistake never leaves half a table.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.core import config as config_mod
from orchestrator.core.config import Settings
from orchestrator.core.errors import ConfigError
from orchestrator.studies import traces as tr
from orchestrator.studies.fleet import GPU_PRICE, BootModel, ResumeModel
from orchestrator.studies.policies import PolicySpec, specs
from orchestrator.studies.simulation import Simulation, oracle

ORACLE = "oracle"
DEFAULT_POLICIES = ("ours", "original", "serverless", ORACLE)
# The metric names and order of bench/policy.py (its JSON and this command's use the same keys).
METRIC_ORDER = (
    "cost_usd",
    "gpu_hours",
    "busy_share",
    "wait_p50_s",
    "wait_p95_s",
    "wait_p99_s",
    "backlog_above_capacity_s",
    "spawns",
    "flaps",
    "tasks_lost",
    "tasks_duplicated",
    "pods_leaked",
)
# Safety counts are summed over seeds, not averaged: one lost task in any seed must show.
SUMMED = ("tasks_lost", "tasks_duplicated", "pods_leaked", "violations")
# The groups of config.VARIABLES the simulator's policies read; the rest (credentials, SSH, logging)
# cannot change a simulated result, so they are left out of the "ours means" line.
SIMULATED_GROUPS = ("scaling", "timeouts", "safety")
SIMULATED_EXTRA = ("ORCHESTRATOR_POLL_SEC",)


def policy_names(settings: Settings | None = None) -> list[str]:
    """Every policy ``run_policies`` accepts, in the benchmark's order."""
    return [s.name for s in specs(settings)] + [ORACLE]


def check_policies(names: Sequence[str]) -> list[str]:
    """The requested policies, de-duplicated in order; ConfigError naming every unknown one."""
    known = policy_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            [f"--policy {n!r}: unknown policy; expected one of {', '.join(known)}" for n in unknown]
        )
    return list(dict.fromkeys(names))


def parse_changes(assignments: Sequence[str], base: Settings) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> typed changes for ``ours``, validated like the environment is.

    Each value goes through the same parser as an environment variable (type, minimum, choices; an
    empty value means the default, as an empty variable does), then the whole changed configuration
    through ``Settings.replace``'s cross-checks. Every problem is collected before raising.
    """
    problems: list[str] = []
    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip().upper()
        if not sep or not key:
            problems.append(f"--set {item!r}: expected KEY=VALUE, e.g. --set MIN_ACTIVE_GPUS=2")
            continue
        var = config_mod.BY_NAME.get(key)
        if var is None:
            close = difflib.get_close_matches(key, list(config_mod.BY_NAME), n=1)
            hint = f"; did you mean {close[0]}?" if close else "; `orchestrator config` lists every variable"
            problems.append(f"--set {key}: unknown setting{hint}")
            continue
        if raw.strip() == "":
            changes[key] = config_mod.default_value(var)
            continue
        value, problem = config_mod.parse_value(var, raw)
        if problem:
            problems.append(f"--set {problem}")
        else:
            changes[key] = value
    try:
        base.replace(**changes)
    except ConfigError as exc:
        problems += [f"--set: {p}" for p in exc.problems]
    if problems:
        raise ConfigError(problems)
    return changes


def resolve_trace(name_or_path: str) -> tr.Trace:
    """A named trace (from its fixed seed, as the benchmark's) or a CSV file; ConfigError otherwise."""
    if name_or_path in tr.GENERATORS:
        return tr.generate(name_or_path)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            [
                f"--trace {name_or_path!r}: neither a named trace ({', '.join(tr.GENERATORS)}) "
                "nor a readable CSV file"
            ]
        )
    return tr.load(path)


def mean_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The mean of each metric over seeds (safety counts summed), as ``bench/policy.py`` reports them."""
    out: dict[str, Any] = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if key in SUMMED:
            out[key] = int(sum(values))
            continue
        mean = sum(values) / len(values)
        # Counts stay whole numbers when every seed agrees (one seed: always), so "3" never reads "3.0".
        whole = all(isinstance(v, int) for v in values) and mean.is_integer()
        out[key] = int(mean) if whole else round(mean, 4)
    return out


def run_one(
    trace: tr.Trace,
    spec: PolicySpec,
    seed: int,
    *,
    boot: BootModel | None = None,
    resume: ResumeModel | None = None,
) -> dict[str, Any]:
    """One simulation: the metrics of ``Result.metrics()`` plus the count of invariant violations."""
    result = Simulation(
        trace,
        spec.plan,
        spec.settings,
        name=spec.name,
        wake_on_tasks=spec.wake_on_tasks,
        seed=seed,
        boot=boot,
        resume=resume,
        failed_before_serving=spec.failed_before_serving,
    ).run()
    metrics: dict[str, Any] = dict(result.metrics())
    metrics["violations"] = len(result.violations)
    return metrics


def run_policies(
    trace: tr.Trace,
    names: Sequence[str],
    settings: Settings,
    seeds: int = 1,
    changes: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """policy -> metric -> value: each policy run ``seeds`` times (seeds 0..N-1), means reported.

    ``settings`` is the base every policy derives from (the operator's configuration); ``changes``
    apply to ``ours`` and ``ours_min2`` only, as ``policies.specs`` defines them.
    """
    if seeds < 1:
        raise ConfigError([f"--seeds {seeds}: expected a whole number >= 1"])
    by_name = {s.name: s for s in specs(settings, changes)}
    results: dict[str, dict[str, Any]] = {}
    for name in check_policies(names):
        if name == ORACLE:
            results[name] = dict(oracle(trace))
            continue
        results[name] = mean_metrics([run_one(trace, by_name[name], seed) for seed in range(seeds)])
    return results


def ours_description(settings: Settings, changes: Mapping[str, Any]) -> str:
    """Which simulated knobs of ``ours`` differ from the defaults, and where each value came from."""
    base = config_mod.defaults()
    parts: list[str] = []
    for var in config_mod.VARIABLES:
        if var.group not in SIMULATED_GROUPS and var.name not in SIMULATED_EXTRA:
            continue
        value = changes.get(var.name, settings.get(var.name))
        if value == base.get(var.name):
            continue
        source = "--set" if var.name in changes else settings.sources.get(var.name, "default")
        parts.append(
            f"{var.name}={value:g} ({source})"
            if isinstance(value, float)
            else f"{var.name}={value} ({source})"
        )
    return "the defaults" if not parts else "the defaults except " + ", ".join(parts)


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def render_table(
    trace: tr.Trace, results: Mapping[str, Mapping[str, Any]], *, seeds: int, ours: str | None = None
) -> str:
    """The plain-text report: the trace, one row per policy, then how to read it."""
    oracle_cost = float(oracle(trace)["cost_usd"])
    cols = [
        "policy",
        "cost $",
        "x oracle",
        "GPU-h",
        "busy",
        "p50 s",
        "p95 s",
        "p99 s",
        "spawns",
        "lost",
        "dup",
        "leaked",
    ]
    rows: list[list[str]] = []
    for policy, m in results.items():
        ratio = f"{m['cost_usd'] / oracle_cost:.2f}" if oracle_cost > 0 else "-"
        rows.append(
            [
                policy,
                _cell(m["cost_usd"], 2),
                ratio,
                _cell(m["gpu_hours"], 2),
                f"{m['busy_share']:.2f}",
                _cell(m["wait_p50_s"], 1),
                _cell(m["wait_p95_s"], 1),
                _cell(m["wait_p99_s"], 1),
                _cell(m["spawns"], 1),
                str(m["tasks_lost"]),
                str(m["tasks_duplicated"]),
                str(m["pods_leaked"]),
            ]
        )
    widths = [max(len(r[i]) for r in [cols, *rows]) for i in range(len(cols))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    hours = trace.duration / 3600.0
    out = [
        f"trace {trace.name}: {len(trace.tasks)} tasks over {hours:.1f} h, {trace.gpu_seconds / 3600.0:.2f} GPU-hours "
        f"of work; {seeds} seed{'s' if seeds != 1 else ''} per policy"
        + (" (means shown)" if seeds > 1 else ""),
    ]
    if ours is not None:
        out.append(f"ours: {ours}")
    out += ["", line(cols), line(["-" * w for w in widths]), *(line(r) for r in rows), ""]
    out.append(
        f"cost: pods billed per second at {GPU_PRICE} USD/h; x oracle: cost / (the tasks' GPU-seconds at that price); "
        "wait: queued -> first claimed."
    )
    broken = [p for p, m in results.items() if m.get("violations")]
    if broken:
        out.append(f"invariant violations (see bench/chaos.py): {', '.join(broken)}")
    out.append(
        "What the simulator leaves out: docs/operations.md, 'Replaying traffic with `orchestrator sim run`'."
    )
    return "\n".join(out)
