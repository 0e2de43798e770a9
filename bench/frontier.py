"""Cost/wait frontier: can any setting, or any rate-aware rule, meet the cost/wait bar on every trace?

Usage (from the repository root)::

    .venv/bin/python bench/frontier.py             # writes bench/results/frontier.{md,json} and plots/frontier.png
    .venv/bin/python bench/frontier.py --seeds 2 --jobs 2 --traces diurnal

Where this sits: ``bench/policy.py`` compares named policies at their settings; this script asks the
question behind the bar (``docs/policy.md``: at most 0.9x the old system's cost at most 1.1x its p95
wait) instead. For each trace it runs, in one process pool and with the same simulation seeds, the
old system's rules (the baseline), ``WAIT_TARGET_SEC`` from 5 to 160 s, every combination of the two
knobs of the threshold rule (``TASKS_PER_GPU_THRESHOLD`` x ``GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC``, the
wait target off), and a family the daemon cannot build: *rate-clairvoyant staffing*, ``plan()`` with
``MIN_ACTIVE_GPUS`` set at every tick to the Erlang-C staffing level for the arrival rate the trace will
have a boot's time ahead. That family knows the future rate (not the individual arrivals), so it is an
optimistic estimate of what any rate-predicting rule could do. Two more families the daemon cannot
build run the daemon's own ``plan()`` at ``WAIT_TARGET_SEC`` from 10 to 40 s with the snapshot's arrival
counts replaced: *exact rate*, by the rate the trace's generator draws its arrivals from a boot's time
ahead (a perfect estimator of the rate; traces with such a rate only), and *foresight*, by the trace's
realized arrivals around then (the rate and the chance bunching of the coming minutes). Every run but the old system's has the
warm pool at its defaults, and 30% of resumes find no GPU (as in ``bench/policy.py``).

For each trace the report gives the cheapest run whose p95 wait is at most 1.1x the old system's (the
bar) and at most the old system's (the goal of 0.75x), and its cost against the old system's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.core.config import defaults  # noqa: E402
from orchestrator.core.evidence import PARENT_MARK  # noqa: E402
from orchestrator.core.policy import plan as real_plan  # noqa: E402
from orchestrator.studies import traces as tr  # noqa: E402
from orchestrator.studies.fleet import ResumeModel  # noqa: E402
from orchestrator.studies.policies import (  # noqa: E402
    RATE_LEAD_SEC,
    RATE_WINDOW_SEC,
    ForesightRate,
    PolicySpec,
    RateClairvoyant,
    specs,
)
from orchestrator.studies.run import mean_metrics, run_one  # noqa: E402
from orchestrator.studies.simulation import oracle  # noqa: E402

TRACES = ("steady", "bursty", "diurnal", "spike", "heavy_tail", "long_tasks")
TRACE_DIR = ROOT / "bench" / "traces"
RESULTS = ROOT / "bench" / "results"
BAR_COST, BAR_P95, GOAL_COST = 0.9, 1.1, 0.75
RESUME_FAILURE = 0.3  # the share of resumes finding no GPU, as bench/policy.py's default rows
WAIT_TARGETS = (5, 10, 15, 20, 30, 40, 80, 160)
THRESHOLDS = (1, 2, 3, 4, 6)
OVERCAPACITY = (10, 60, 120, 300, 600)
# Rate-clairvoyant staffing: the chance a task finds every worker busy, by Erlang C, that the floor
# is sized for. Lower = more idle workers kept.
WAIT_PROBABILITIES = (0.6, 0.4, 0.25, 0.15, 0.08, 0.04, 0.02)
# The wait target's own model told the rate ahead (ForesightRate): exact (erW) and realized (fsW).
FORESIGHT_TARGETS = (10, 20, 25, 30, 40)


# --- the runs --------------------------------------------------------------------------------------


def configurations() -> list[tuple[str, str, dict[str, Any]]]:
    """(name, family, parameters) for every run of a trace."""
    found: list[tuple[str, str, dict[str, Any]]] = [("original", "original", {}), ("ours", "ours", {})]
    for target in WAIT_TARGETS:
        found.append((f"wt{target}", "wait_target", {"WAIT_TARGET_SEC": target}))
    for threshold in THRESHOLDS:
        for oc in OVERCAPACITY:
            found.append(
                (
                    f"th{threshold}_oc{oc}",
                    "knobs",
                    {
                        "WAIT_TARGET_SEC": 0,
                        "TASKS_PER_GPU_THRESHOLD": threshold,
                        "GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC": oc,
                    },
                )
            )
    for p in WAIT_PROBABILITIES:
        found.append((f"rate_pw{p:g}", "rate_clairvoyant", {"wait_probability": p}))
    for target in FORESIGHT_TARGETS:
        found.append((f"er{target}", "exact_rate", {"WAIT_TARGET_SEC": target}))
    for target in FORESIGHT_TARGETS:
        found.append((f"fs{target}", "foresight", {"WAIT_TARGET_SEC": target}))
    return found


FAMILIES = ("wait_target", "knobs", "rate_clairvoyant", "exact_rate", "foresight")


# The families told the trace's arrivals ahead of time.
TOLD_ARRIVALS = ("rate_clairvoyant", "exact_rate", "foresight")


@functools.cache
def _has_parents(trace_name: str) -> bool:
    """Parents' children are created at run time (and become claimable one after the other), so the trace's own
    arrivals are not the ones the fleet sees: a family told them would be told the wrong future."""
    return any(PARENT_MARK in t.task_type for t in tr.load(TRACE_DIR / f"{trace_name}.csv").tasks)


def runs_of(trace_name: str) -> list[str]:
    """The configurations run on a trace: the exact-rate family needs the generator's rate function,
    and no family told the arrivals runs on a trace with parents."""
    return [
        c[0]
        for c in configurations()
        if (c[1] != "exact_rate" or trace_name in tr.ARRIVAL_RATES)
        and (c[1] not in TOLD_ARRIVALS or not _has_parents(trace_name))
    ]


def _run_one(job: tuple[str, str, int]) -> tuple[str, str, int, dict[str, Any]]:
    trace_name, config_name, seed = job
    trace = tr.load(TRACE_DIR / f"{trace_name}.csv")
    base = defaults()
    _, family, params = next(c for c in configurations() if c[0] == config_name)
    by_name = {s.name: s for s in specs(base)}
    # The old system's rows run without the database's failed-before-serving rule, as in bench/policy.py.
    failed_before_serving = family != "original"
    if family in ("original", "ours"):
        spec = by_name[family]
        plan_fn, settings, wake = spec.plan, spec.settings, spec.wake_on_tasks
    elif family in ("knobs", "wait_target"):
        plan_fn, settings, wake = real_plan, base.replace(**params), True
    elif family == "foresight":
        plan_fn, settings, wake = ForesightRate(trace), base.replace(**params), True
    elif family == "exact_rate":
        exact = ForesightRate(trace, tr.ARRIVAL_RATES[trace_name])
        plan_fn, settings, wake = exact, base.replace(**params), True
    else:
        # The daemon's threshold rule with threshold 1 (one worker per task beyond the floor) and a
        # short over-capacity timeout: the floor alone decides how many idle workers stay.
        settings = base.replace(
            WAIT_TARGET_SEC=0, TASKS_PER_GPU_THRESHOLD=1, GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC=10
        )
        plan_fn, wake = RateClairvoyant(trace, settings, float(params["wait_probability"])), True
    resume = ResumeModel(failure_share=RESUME_FAILURE, disk_gb=float(settings.runpod_disk_size_gb))
    spec = PolicySpec(config_name, plan_fn, settings, wake, family, failed_before_serving)
    return trace_name, config_name, seed, run_one(trace, spec, seed, resume=resume)


def frontier(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Runs on the cost/p95 Pareto front, cheapest first."""
    ordered = sorted(results, key=lambda n: (results[n]["cost_usd"], results[n]["wait_p95_s"]))
    front: list[str] = []
    best_p95 = math.inf
    for name in ordered:
        if results[name]["wait_p95_s"] < best_p95:
            front.append(name)
            best_p95 = results[name]["wait_p95_s"]
    return front


def _cheapest(results: Mapping[str, Mapping[str, Any]], names: list[str], p95: float) -> str | None:
    ok = [n for n in names if results[n]["wait_p95_s"] <= p95]
    return min(ok, key=lambda n: results[n]["cost_usd"]) if ok else None


def summarize(
    trace_name: str, results: Mapping[str, Mapping[str, Any]], oracle_cost: float
) -> dict[str, Any]:
    old = results["original"]
    families = {c[0]: c[1] for c in configurations()}
    others = [n for n in results if n != "original"]
    out: dict[str, Any] = {
        "original_cost_usd": old["cost_usd"],
        "original_wait_p95_s": old["wait_p95_s"],
        "oracle_cost_usd": oracle_cost,
        "frontier": frontier({n: results[n] for n in others}),
    }
    for label, p95 in (("bar", BAR_P95 * old["wait_p95_s"]), ("goal", old["wait_p95_s"])):
        for family in ("all", *FAMILIES):
            names = others if family == "all" else [n for n in others if families[n] == family]
            pick = _cheapest(results, names, p95)
            out[f"{label}_{family}"] = pick
            out[f"{label}_{family}_ran"] = bool(names)
            out[f"{label}_{family}_x_old"] = (
                round(results[pick]["cost_usd"] / old["cost_usd"], 3) if pick else None
            )
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def write_markdown(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    summary: Mapping[str, Mapping[str, Any]],
    meta: Mapping[str, Any],
) -> str:
    lines = [
        "# Cost/wait frontier",
        "",
        f"Generated {meta['generated']} by `.venv/bin/python bench/frontier.py` in {meta['seconds']:.0f} s "
        f"({meta['runs']} simulation runs, {meta['seeds']} seeds each, means shown; {meta['machine']}).",
        "",
        "Every run drives the daemon's `plan()` in `orchestrator/studies/simulation.py` on the committed traces of "
        "`bench/traces/` (see `bench/results/policy.md` for the simulator's parameters). Every run but "
        f"`original` has the warm pool at its defaults, {RESUME_FAILURE:.0%} of resumes finding no GPU. Runs:",
        "",
        "- `original`: the old system's rules (the baseline of the bar), `ours`: today's defaults;",
        f"- `wtW`: `WAIT_TARGET_SEC=W`, W in {list(WAIT_TARGETS)} s;",
        f"- `thT_ocO`: the threshold rule (`WAIT_TARGET_SEC=0`) with `TASKS_PER_GPU_THRESHOLD=T` and "
        f"`GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC=O`, T in {list(THRESHOLDS)}, O in {list(OVERCAPACITY)} s;",
        "- `rate_pwP`: rate-clairvoyant staffing, not buildable: `MIN_ACTIVE_GPUS` set every 30 s to the "
        "Erlang-C number of workers for which a task finds all busy with probability P, at the arrival "
        f"rate the trace has {RATE_LEAD_SEC:.0f} s later (counted over {RATE_WINDOW_SEC / 60:.0f} min), "
        "with threshold 1 and a 10 s over-capacity timeout. It knows the future rate, so it estimates "
        "the best any rate-predicting rule could do;",
        f"- `erW`: exact rate, not buildable: the daemon's `plan()` at `WAIT_TARGET_SEC=W`, W in "
        f"{list(FORESIGHT_TARGETS)} s, its snapshot's arrival counts replaced by those of the rate the trace's "
        f"generator draws arrivals from, {RATE_LEAD_SEC:.0f} s ahead: the wait target's model with a perfect "
        "estimate of the rate (steady, diurnal, long_tasks: bursty and spike place their batches "
        "at random);",
        "- `fsW`: foresight, not buildable: the same with the counts of the trace's realized arrivals (over "
        f"{RATE_WINDOW_SEC / 60:.0f} min, centred {RATE_LEAD_SEC:.0f} s ahead): the rate plus the chance "
        "bunching of the coming minutes, which nothing that reads the past can know.",
        "",
        "The three families told the trace's arrivals are not run on heavy_tail: its parents' children "
        "are created at run time and become claimable one after the other, so the trace's arrivals are not those "
        "the fleet sees.",
        "",
        "## The bar, trace by trace",
        "",
        f"The bar: cost at most {BAR_COST}x the old system's at a p95 wait at most {BAR_P95}x its p95. The goal "
        f"beyond it: {GOAL_COST}x at a p95 at most the old system's. Each cell: the cheapest run of the "
        "family within that p95, and its cost x old (`none`: no run of the family is that fast; `n/a`: not run).",
        "",
        "| trace | original $, p95 s | bar: any run | wait target | threshold knobs | rate-clairvoyant | exact rate | foresight | goal: any run |",
        "| --- | ---: | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def cell(s: Mapping[str, Any], key: str) -> str:
        if not s.get(key + "_ran", True):
            return "n/a"
        name = s[key]
        return f"`{name}` ({_fmt(s[key + '_x_old'], 3)})" if name else "none"

    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['original_cost_usd']:.2f}, {s['original_wait_p95_s']:.1f} | {cell(s, 'bar_all')} | "
            f"{cell(s, 'bar_wait_target')} | {cell(s, 'bar_knobs')} | {cell(s, 'bar_rate_clairvoyant')} | "
            f"{cell(s, 'bar_exact_rate')} | {cell(s, 'bar_foresight')} | {cell(s, 'goal_all')} |"
        )
    lines.append("")
    for name in results:
        s = summary[name]
        lines += [
            f"## {name}",
            "",
            "Pareto front (no other run is both cheaper and faster), cheapest first:",
            "",
            "| run | cost $ | x oracle | x old | p50 s | p95 s | p95 x old | p99 s | spawns | resumes | lost | dup | leaked |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        old_cost, old_p95 = s["original_cost_usd"], s["original_wait_p95_s"]
        for run in s["frontier"] + ["original"]:
            r = results[name][run]
            p95_x = r["wait_p95_s"] / old_p95 if old_p95 else float("inf")
            lines.append(
                f"| `{run}` | {r['cost_usd']:.2f} | {r['cost_usd'] / s['oracle_cost_usd']:.2f} | {r['cost_usd'] / old_cost:.2f} | "
                f"{r['wait_p50_s']:.1f} | {r['wait_p95_s']:.1f} | {p95_x:.2f} | {r['wait_p99_s']:.1f} | {r['spawns']:.1f} | "
                f"{r['resumes']:.1f} | {r['tasks_lost']:g} | {r['tasks_duplicated']:g} | {r['pods_leaked']:g} |"
            )
        lines.append("")
    lines += ["Every run of every trace is in `bench/results/frontier.json`; plot: `plots/frontier.png`."]
    return "\n".join(lines) + "\n"


def plot(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    summary: Mapping[str, Mapping[str, Any]],
    out: Path,
) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return None
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.2), squeeze=False)
    families = {c[0]: c[1] for c in configurations()}
    style = {
        "knobs": ("tab:blue", "o"),
        "wait_target": ("tab:orange", "D"),
        "rate_clairvoyant": ("tab:green", "^"),
        "exact_rate": ("tab:gray", "P"),
        "foresight": ("tab:brown", "v"),
        "ours": ("tab:purple", "*"),
        "original": ("tab:red", "s"),
    }
    for ax, (name, runs) in zip(axes[0], results.items(), strict=True):
        s = summary[name]
        old_cost, old_p95 = s["original_cost_usd"], s["original_wait_p95_s"]
        for family, (color, marker) in style.items():
            pts = [
                (r["cost_usd"] / old_cost, r["wait_p95_s"]) for n, r in runs.items() if families[n] == family
            ]
            if pts:
                ax.scatter(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    c=color,
                    marker=marker,
                    s=60 if family in ("ours", "original") else 22,
                    label=family,
                    zorder=3,
                )
        ax.fill_between(
            [0, BAR_COST],
            0,
            BAR_P95 * old_p95,
            color="gold",
            alpha=0.35,
            label=f"bar: <={BAR_COST}x old, p95 <={BAR_P95}x",
        )
        ax.set_title(name)
        ax.set_xlabel("cost / old system's")
        ax.set_ylabel("p95 wait (s)")
        ax.set_xlim(left=0.3)
        ax.set_ylim(bottom=0, top=max(4 * old_p95, 60))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="simulation seeds per run (default 3)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--traces", nargs="+", default=list(TRACES), choices=list(TRACES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for name in args.traces:
        path = TRACE_DIR / f"{name}.csv"
        if not path.exists():
            tr.save(tr.generate(name), path)
    jobs = [(t, name, seed) for t in args.traces for name in runs_of(t) for seed in range(args.seeds)]
    started = time.perf_counter()
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for trace_name, config_name, _seed, metrics in pool.map(_run_one, jobs, chunksize=2):
            raw.setdefault(trace_name, {}).setdefault(config_name, []).append(metrics)
    seconds = time.perf_counter() - started
    results = {t: {c: mean_metrics(rows) for c, rows in raw[t].items()} for t in args.traces}
    summary = {
        t: summarize(t, results[t], float(oracle(tr.load(TRACE_DIR / f"{t}.csv"))["cost_usd"]))
        for t in args.traces
    }
    # The old system's own failures are part of the baseline (its fixed stuck-task timeout fails healthy
    # workers mid-task, and their tasks run twice on long_tasks); any other run's are a defect.
    violations = sum(r["violations"] for runs in results.values() for n, r in runs.items() if n != "original")
    meta = {
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": seconds,
        "runs": len(jobs),
        "seeds": args.seeds,
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    text = write_markdown(results, summary, meta)
    (args.out / "frontier.md").write_text(text)
    (args.out / "frontier.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "results": results}, indent=1, sort_keys=True) + "\n"
    )
    plot(results, summary, args.out / "plots" / "frontier.png")
    print(text)
    if violations:
        print(f"{violations:g} invariant violations in the runs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
