"""Cost/wait frontier: can any setting, or any rate-aware rule, meet the cost/wait bar on every trace?

Usage (from the repository root)::

    .venv/bin/python bench/frontier.py             # writes bench/results/frontier.{md,json} and plots/frontier.png
    .venv/bin/python bench/frontier.py --seeds 2 --jobs 2

Where this sits: ``bench/policy.py`` compares named policies at their settings; this script asks the
question behind the cost/wait bar (``docs/policy.md``) instead. For each trace it runs, in one process
pool and with the same simulation seeds, the old system's rules (the baseline), every combination of
the two scaling knobs that move ``plan()`` between cheap and fast (``TASKS_PER_GPU_THRESHOLD`` x
``GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC``), and a family the daemon cannot build: *rate-clairvoyant
staffing*, ``plan()`` with ``MIN_ACTIVE_GPUS`` set at every tick to the Erlang-C staffing level for the
arrival rate the trace will have a boot's time ahead. That family knows the future rate (not the
individual arrivals), so it is an optimistic estimate of what any rate-predicting rule could do.

For each trace the report gives the cheapest run whose p95 wait is at most the old system's, and its
cost against the old system's and against the oracle's: the bar's "at least 25% below the old system
at an equal or better p95" and "at most 1.25x the oracle" are met somewhere on the frontier, or by no
run measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
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
from orchestrator.core.policy import plan as real_plan  # noqa: E402
from orchestrator.studies import traces as tr  # noqa: E402
from orchestrator.studies.fleet import BootModel  # noqa: E402
from orchestrator.studies.policies import RATE_LEAD_SEC, RATE_WINDOW_SEC, PolicySpec, RateClairvoyant, specs  # noqa: E402
from orchestrator.studies.run import mean_metrics, run_one  # noqa: E402
from orchestrator.studies.simulation import oracle  # noqa: E402

TRACES = ("steady", "bursty", "diurnal", "spike")
TRACE_DIR = ROOT / "bench" / "traces"
RESULTS = ROOT / "bench" / "results"
THRESHOLDS = (1, 2, 3, 4, 6)
OVERCAPACITY = (10, 60, 120, 300, 600)
# Rate-clairvoyant staffing: the chance a task finds every worker busy, by Erlang C, that the floor
# is sized for. Lower = more idle workers kept.
WAIT_PROBABILITIES = (0.6, 0.4, 0.25, 0.15, 0.08, 0.04, 0.02)


# --- the runs --------------------------------------------------------------------------------------


def configurations() -> list[tuple[str, str, dict[str, Any]]]:
    """(name, family, parameters) for every run of a trace."""
    found: list[tuple[str, str, dict[str, Any]]] = [("original", "original", {}), ("ours", "ours", {})]
    for threshold in THRESHOLDS:
        for oc in OVERCAPACITY:
            found.append(
                (
                    f"th{threshold}_oc{oc}",
                    "knobs",
                    {"TASKS_PER_GPU_THRESHOLD": threshold, "GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC": oc},
                )
            )
    for p in WAIT_PROBABILITIES:
        found.append((f"rate_pw{p:g}", "rate_clairvoyant", {"wait_probability": p}))
    # What-if, not a policy: the same rule if every boot found the image cached (what resuming a
    # stopped pod on its old host, or a small pre-cached image, would give). Kept out of the frontier.
    for threshold in (3, 4):
        found.append(
            (f"whatif_cached_th{threshold}", "whatif_cached", {"TASKS_PER_GPU_THRESHOLD": threshold})
        )
    return found


def _policy_runs(results: Mapping[str, Any]) -> dict[str, Any]:
    whatif = {c[0] for c in configurations() if c[1] == "whatif_cached"}
    return {n: r for n, r in results.items() if n not in whatif}


def _run_one(job: tuple[str, str, int]) -> tuple[str, str, int, dict[str, Any]]:
    trace_name, config_name, seed = job
    trace = tr.load(TRACE_DIR / f"{trace_name}.csv")
    base = defaults()
    _, family, params = next(c for c in configurations() if c[0] == config_name)
    by_name = {s.name: s for s in specs(base)}
    if family in ("original", "ours"):
        spec = by_name[family]
        plan_fn, settings, wake = spec.plan, spec.settings, spec.wake_on_tasks
    elif family in ("knobs", "whatif_cached"):
        plan_fn, settings, wake = real_plan, base.replace(**params), True
    else:
        # The daemon's rule with threshold 1 (one worker per task beyond the floor) and a short
        # over-capacity timeout: the floor alone decides how many idle workers stay.
        settings = base.replace(TASKS_PER_GPU_THRESHOLD=1, GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC=10)
        plan_fn, wake = RateClairvoyant(trace, settings, float(params["wait_probability"])), True
    boot = BootModel(cached_share=1.0) if family == "whatif_cached" else None
    spec = PolicySpec(config_name, plan_fn, settings, wake, family)
    return trace_name, config_name, seed, run_one(trace, spec, seed, boot=boot)


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


def summarize(
    trace_name: str, all_results: Mapping[str, Mapping[str, Any]], oracle_cost: float
) -> dict[str, Any]:
    results = _policy_runs(all_results)
    old = results["original"]
    eligible = [n for n in results if n != "original" and results[n]["wait_p95_s"] <= old["wait_p95_s"]]
    best = min(eligible, key=lambda n: results[n]["cost_usd"]) if eligible else None
    cheapest = min((n for n in results if n != "original"), key=lambda n: results[n]["cost_usd"])
    out: dict[str, Any] = {
        "original_cost_usd": old["cost_usd"],
        "original_wait_p95_s": old["wait_p95_s"],
        "oracle_cost_usd": oracle_cost,
        "cheapest_at_original_p95": best,
        "cheapest_at_original_p95_x_old": round(results[best]["cost_usd"] / old["cost_usd"], 3)
        if best
        else None,
        "cheapest_at_original_p95_x_oracle": round(results[best]["cost_usd"] / oracle_cost, 3)
        if best
        else None,
        "cheapest": cheapest,
        "cheapest_x_oracle": round(results[cheapest]["cost_usd"] / oracle_cost, 3),
        "frontier": frontier({n: r for n, r in results.items() if n != "original"}),
    }
    for family in ("knobs", "rate_clairvoyant"):
        names = [c[0] for c in configurations() if c[1] == family and c[0] in eligible]
        pick = min(names, key=lambda n: results[n]["cost_usd"]) if names else None
        out[f"best_{family}_at_original_p95"] = pick
        out[f"best_{family}_at_original_p95_x_old"] = (
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
        "`bench/traces/` (see `bench/results/policy.md` for the simulator's parameters). Runs:",
        "",
        "- `original`: the old system's rules (the baseline of the cost/wait bar), `ours`: today's defaults;",
        f"- `thT_ocO`: `plan()` with `TASKS_PER_GPU_THRESHOLD=T` and `GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC=O`, "
        f"T in {list(THRESHOLDS)}, O in {list(OVERCAPACITY)} s;",
        "- `rate_pwP`: rate-clairvoyant staffing, not buildable: `MIN_ACTIVE_GPUS` set every 30 s to the "
        "Erlang-C number of workers for which a task finds all busy with probability P, at the arrival "
        f"rate the trace has {RATE_LEAD_SEC:.0f} s later (counted over {RATE_WINDOW_SEC / 60:.0f} min), "
        "with threshold 1 and a 10 s over-capacity timeout. It knows the future rate, so it estimates "
        "the best any rate-predicting rule could do.",
        "",
        "## The bar, trace by trace",
        "",
        "| trace | oracle $ | original $, p95 s | cheapest run at p95 <= original | its $ | x old | x oracle | best knobs (x old) | best rate-clairvoyant (x old) | cheapest run overall (x oracle) |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for name, s in summary.items():
        best = s["cheapest_at_original_p95"]
        best_cost = results[name][best]["cost_usd"] if best else None
        knobs = s["best_knobs_at_original_p95"]
        rate = s["best_rate_clairvoyant_at_original_p95"]
        lines.append(
            f"| {name} | {s['oracle_cost_usd']:.2f} | {s['original_cost_usd']:.2f}, {s['original_wait_p95_s']:.0f} | "
            f"{'`' + best + '`' if best else 'none'} | {_fmt(best_cost)} | {_fmt(s['cheapest_at_original_p95_x_old'])} | "
            f"{_fmt(s['cheapest_at_original_p95_x_oracle'])} | "
            f"{'`' + knobs + '` (' + _fmt(s['best_knobs_at_original_p95_x_old']) + ')' if knobs else 'none'} | "
            f"{'`' + rate + '` (' + _fmt(s['best_rate_clairvoyant_at_original_p95_x_old']) + ')' if rate else 'none'} | "
            f"`{s['cheapest']}` ({s['cheapest_x_oracle']:.2f}) |"
        )
    lines += [
        "",
        "The bar asks for x old <= 0.75 at p95 <= the original's (bursty, diurnal, spike) and x oracle <= 1.25 (steady, bursty, diurnal).",
        "",
    ]
    for name in results:
        s = summary[name]
        lines += [
            f"## {name}",
            "",
            "Pareto front (no other run is both cheaper and faster), cheapest first:",
            "",
            "| run | cost $ | x oracle | x old | p50 s | p95 s | p99 s | spawns | lost | dup | leaked |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        old_cost = s["original_cost_usd"]
        for run in s["frontier"] + ["original"]:
            r = results[name][run]
            lines.append(
                f"| `{run}` | {r['cost_usd']:.2f} | {r['cost_usd'] / s['oracle_cost_usd']:.2f} | {r['cost_usd'] / old_cost:.2f} | "
                f"{r['wait_p50_s']:.1f} | {r['wait_p95_s']:.1f} | {r['wait_p99_s']:.1f} | {r['spawns']:.1f} | "
                f"{r['tasks_lost']:g} | {r['tasks_duplicated']:g} | {r['pods_leaked']:g} |"
            )
        lines.append("")
    lines += [
        "## What-if: every boot cached",
        "",
        "Not a policy: `ours` (threshold 3) and threshold 4 on a provider where every pod finds its image "
        "cached (~30 s boots instead of 40% pulling it for ~165 s), as resuming a stopped pod on its old "
        "host, or a small image every host has, would give. It shows how much of the cost above the "
        "oracle is image pulls (the old system would gain from cached boots too, so no ratio to it here).",
        "",
        "| trace | run | cost $ | x oracle | p95 s | the same rule with today's boots: x oracle, p95 s |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for name in results:
        s = summary[name]
        for threshold in (3, 4):
            r = results[name].get(f"whatif_cached_th{threshold}")
            base = results[name]["ours" if threshold == 3 else f"th{threshold}_oc10"]
            if r is None:
                continue
            lines.append(
                f"| {name} | `whatif_cached_th{threshold}` | {r['cost_usd']:.2f} | {r['cost_usd'] / s['oracle_cost_usd']:.2f} | "
                f"{r['wait_p95_s']:.1f} | "
                f"{base['cost_usd'] / s['oracle_cost_usd']:.2f}, {base['wait_p95_s']:.1f} |"
            )
    lines += ["", "Every run of every trace is in `bench/results/frontier.json`; plot: `plots/frontier.png`."]
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
        "rate_clairvoyant": ("tab:green", "^"),
        "ours": ("tab:purple", "*"),
        "original": ("tab:red", "s"),
    }
    for ax, (name, runs) in zip(axes[0], results.items(), strict=True):
        s = summary[name]
        oc = s["oracle_cost_usd"]
        for family, (color, marker) in style.items():
            pts = [
                (r["cost_usd"] / oc, r["wait_p95_s"])
                for n, r in _policy_runs(runs).items()
                if families[n] == family
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
        x_bar = 0.75 * s["original_cost_usd"] / oc
        if name in ("bursty", "diurnal", "spike"):
            ax.fill_between(
                [0, x_bar],
                0,
                s["original_wait_p95_s"],
                color="gold",
                alpha=0.35,
                label="bar: <=0.75x old, p95 <= old",
            )
        if name in ("bursty", "diurnal"):
            both = min(x_bar, 1.25)
            if both > 0.9:
                ax.fill_between(
                    [0, both],
                    0,
                    s["original_wait_p95_s"],
                    facecolor="none",
                    edgecolor="darkorange",
                    hatch="///",
                    label="whole bar (both checks)",
                )
        if name in ("steady", "bursty", "diurnal"):
            ax.axvline(1.25, color="gray", linestyle="--", linewidth=1, label="1.25x oracle")
        ax.set_title(name)
        ax.set_xlabel("cost / oracle")
        ax.set_ylabel("p95 wait (s)")
        ax.set_xlim(left=0.9)
        ax.set_ylim(bottom=0)
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
    jobs = [(t, c[0], seed) for t in args.traces for c in configurations() for seed in range(args.seeds)]
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
    violations = sum(r["violations"] for runs in results.values() for r in runs.values())
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
