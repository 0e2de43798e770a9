"""Probe one change to the policy's constants or settings against the old system, in a minute or two.

Usage (from the repository root)::

    .venv/bin/python bench/probe.py                                  # the defaults, every trace, 3 seeds
    .venv/bin/python bench/probe.py --traces diurnal,steady --set sizing.EPSILON=0.06
    .venv/bin/python bench/probe.py --set evidence.RATE_CAP_SLACK=1.0 --setting WAIT_TARGET_SEC=30
    .venv/bin/python bench/probe.py --traces heldout:steps,heldout:ramp --out bench/results/probe.md
    .venv/bin/python bench/probe.py --traces gen:ramp@7,gen:steady@300   # fresh traffic, never looked at

Where this sits: ``bench/policy.py`` runs every policy on every trace (about ten minutes on two cores) to
write the committed results; tuning one constant needs only ``ours`` and the old system's rules
(``original``) on the traces in question, measured in the same run with the same simulation seeds, so
the ratios are the bar's (cost at most 0.9x ``original``, p95 wait at most 1.1x). ``--set`` replaces a
module constant of ``orchestrator.core`` (``sizing.EPSILON``, ``evidence.RATE_CAP_SLACK``, ...) in every
worker process before the runs; ``--setting`` replaces a setting of ``ours`` only (the old system keeps
its own). Held-out traffic (``heldout:<name>``, :mod:`orchestrator.studies.heldout`) runs with the
held-out seeds, as in ``bench/policy.py``. Once a change has been chosen looking at the held-out rows too,
they no longer confirm it: ``gen:<shape>@<seed>`` generates any committed or held-out shape from another
seed (traffic nobody has looked at), run with simulation seeds of its own (``GEN_SEED_BASE``).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.policy as bp  # noqa: E402
from orchestrator.core.config import load_settings  # noqa: E402
from orchestrator.core.errors import ConfigError  # noqa: E402
from orchestrator.core.variables import BY_NAME  # noqa: E402

POLICIES = ("ours", "original")
# Simulation seeds of generated traffic (gen:...): neither the committed rows' (0-2) nor the held-out's (3-5).
GEN_SEED_BASE = 6


def generate(key: str) -> Any:
    """``gen:<shape>@<seed>``: a committed generator or a held-out shape, from that seed."""
    from orchestrator.studies.heldout import SHAPES
    from orchestrator.studies.traces import GENERATORS

    shape, _, seed = key.split(":", 1)[1].partition("@")
    return {**GENERATORS, **SHAPES}[shape](seed=int(seed))


def _load(key: str) -> Any:
    return generate(key) if key.startswith("gen:") else bp._trace(key)


def seed_base(key: str) -> int:
    if key.startswith("gen:"):
        return GEN_SEED_BASE
    return bp.HELDOUT_SEED_BASE if key.startswith("heldout:") else 0


def _split(items: list[str], flag: str) -> tuple[dict[str, str], list[str]]:
    """``NAME=value`` pairs as text, with a problem for each item that is not one."""
    found: dict[str, str] = {}
    problems: list[str] = []
    for item in items:
        name, sep, raw = item.partition("=")
        if sep and name:
            found[name] = raw
        else:
            problems.append(f"{flag} {item!r}: expected NAME=value")
    return found, problems


def parse_constants(items: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``--set MODULE.NAME=value`` pairs, values as Python literals; every problem listed, none raised."""
    raw, problems = _split(items, "--set")
    found: dict[str, Any] = {}
    for name, text in raw.items():
        try:
            found[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            problems.append(f"--set {name}={text}: {text!r} is not a Python literal (number, string, tuple)")
    return found, problems


def parse_settings(items: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``NAME=value`` pairs read as the daemon reads its environment (the same parsers and checks)."""
    pairs, problems = _split(items, "--setting")
    raw = {name.upper(): value for name, value in pairs.items()}
    problems += [
        f"--setting {n}: not a setting (`orchestrator config` lists every variable)"
        for n in raw
        if n not in BY_NAME
    ]
    known = {n: v for n, v in raw.items() if n in BY_NAME}
    if not known:
        return {}, problems
    try:
        parsed = load_settings(environ=known, env_file=None)
    except ConfigError as exc:
        return {}, problems + [f"--setting: {p}" for p in exc.problems]
    return {n: parsed.get(n) for n in known}, problems


def check_constants(constants: dict[str, Any]) -> list[str]:
    problems = []
    for dotted in constants:
        module, _, name = dotted.rpartition(".")
        try:
            found = importlib.import_module(f"orchestrator.core.{module}")
        except ImportError:
            problems.append(f"--set {dotted}: no module orchestrator.core.{module}")
            continue
        if not hasattr(found, name):
            problems.append(f"--set {dotted}: orchestrator.core.{module} has no {name}")
    return problems


def _apply(constants: dict[str, Any]) -> None:
    for dotted, value in constants.items():
        module, _, name = dotted.rpartition(".")
        setattr(importlib.import_module(f"orchestrator.core.{module}"), name, value)


def _run(job: tuple[str, str, int, dict[str, Any], dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    trace_key, policy, seed, constants, settings = job
    _apply(constants)
    spec = bp.all_specs()[policy][0]
    chosen = spec.settings.replace(**settings) if settings and policy == "ours" else None
    return trace_key, policy, bp.metrics_of(bp.simulate(_load(trace_key), policy, seed, chosen))


def table(results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    lines = [
        "| trace | ours $ | original $ | cost x old | ours p95 s | original p95 s | p95 x old | lost+dup+leaked+violations | bar |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for trace, by_policy in results.items():
        ours, old = by_policy["ours"], by_policy["original"]
        cost = statistics.mean(m["cost_usd"] for m in ours)
        old_cost = statistics.mean(m["cost_usd"] for m in old)
        p95 = statistics.mean(m["wait_p95_s"] for m in ours)
        old_p95 = statistics.mean(m["wait_p95_s"] for m in old)
        bad = sum(m["tasks_lost"] + m["tasks_duplicated"] + m["pods_leaked"] + m["violations"] for m in ours)
        cost_x = cost / old_cost if old_cost else float("inf")
        p95_x = p95 / old_p95 if old_p95 else float("inf")
        met = cost_x <= 0.9 and p95_x <= 1.1 and bad == 0
        lines.append(
            f"| {trace} | {cost:.2f} | {old_cost:.2f} | {cost_x:.3f} | {p95:.1f} | {old_p95:.1f} | "
            f"{p95_x:.3f} | {bad} | {'met' if met else 'MISSED'} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", default=",".join(bp.TRACES), help="comma-separated; heldout:<name> too")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    constants, problems = parse_constants(args.set)
    settings, more = parse_settings(args.setting)
    problems += more + check_constants(constants)
    traces = [t for t in args.traces.split(",") if t]
    held = set(bp._heldout())
    for trace in traces:
        if trace.startswith("gen:"):
            from orchestrator.studies.heldout import SHAPES
            from orchestrator.studies.traces import GENERATORS

            shape, at, seed = trace.split(":", 1)[1].partition("@")
            if shape not in {**GENERATORS, **SHAPES} or not at or not seed.isdigit():
                problems.append(
                    f"--traces: {trace!r} is not gen:<shape>@<seed> with a shape of "
                    f"{', '.join(sorted({**GENERATORS, **SHAPES}))}"
                )
        elif trace.startswith("heldout:"):
            if trace.split(":", 1)[1] not in held:
                problems.append(f"--traces: no held-out trace {trace!r} (have {', '.join(sorted(held))})")
        elif not (bp.TRACE_DIR / f"{trace}.csv").exists():
            problems.append(f"--traces: no bench/traces/{trace}.csv")
    if not problems and settings:
        try:
            bp.all_specs()["ours"][0].settings.replace(**settings)
        except ConfigError as exc:
            problems += [f"--setting: {p}" for p in exc.problems]
    if problems:
        for problem in problems:
            print(f"probe: {problem}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    jobs = []
    for trace in traces:
        base = seed_base(trace)
        jobs += [(trace, p, base + s, constants, settings) for p in POLICIES for s in range(args.seeds)]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {t: {p: [] for p in POLICIES} for t in traces}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for trace, policy, metrics in pool.map(_run, jobs):
            results[trace][policy].append(metrics)
    changes = " ".join(
        [*(f"--set {k}={v!r}" for k, v in constants.items())]
        + [f"--setting {k}={v!r}" for k, v in settings.items()]
    )
    lines = [
        f"Probe: `ours` {'with ' + changes if changes else 'at the defaults'} against `original`, "
        f"means over {args.seeds} seeds, {time.perf_counter() - started:.0f} s.",
        "",
        *table(results),
    ]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
