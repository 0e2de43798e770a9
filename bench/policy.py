"""Policy benchmark: every policy on every trace, in virtual time, in one run, with the warm pool's
sensitivity to resume failures and a confirmation on held-out traffic.

Usage (from the repository root)::

    .venv/bin/python bench/policy.py            # writes bench/results/policy.{md,json} and plots
    .venv/bin/python bench/policy.py --regen-traces --seeds 3 --jobs 2

Where this sits: drives :mod:`orchestrator.studies.simulation` (the real ``plan()`` and executor against a
simulated provider, database and workers) with the policies of :mod:`orchestrator.studies.policies` on the
committed traces of :mod:`orchestrator.studies.traces` (``bench/traces/``, generated from their seeds when
missing, or with ``--regen-traces``). Each (trace, policy) pair runs with ``--seeds`` simulation seeds and
the figures are their means. Besides the named policies it runs:

* ``ours`` at three shares of resumes that find their host's GPUs taken: 0%, 30% (the default row) and
  70% (``ours_fail0``, ``ours_fail70``);
* ``prev_defaults``: the daemon with this issue's additions off (``WAIT_TARGET_SEC=0``,
  ``WARM_POOL_MAX=0``, ``TASK_STUCK_TIMEOUT_SEC=1200``), the behaviour before them;
* ``ours_wt*``: ``ours`` at other ``WAIT_TARGET_SEC`` values, a cost/p95 curve from which the cost at a
  matched p95 is read (against the old system's p95 and against the serverless row's);
* the held-out traffic of :mod:`orchestrator.studies.heldout` (shapes and seeds the defaults were not
  chosen on), with other simulation seeds, for ``ours``, ``original`` and ``serverless``.

Plots (matplotlib, a bench-only extra) of queue depth and workers over time go to ``bench/results/plots/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.core.config import Settings, defaults  # noqa: E402
from orchestrator.core.policy import plan as real_plan  # noqa: E402
from orchestrator.studies import traces as tr  # noqa: E402
from orchestrator.studies.fleet import GPU_PRICE, ResumeModel  # noqa: E402
from orchestrator.studies.heldout import heldout  # noqa: E402
from orchestrator.studies.policies import PolicySpec, specs  # noqa: E402
from orchestrator.studies.run import mean_metrics  # noqa: E402
from orchestrator.studies.simulation import Simulation, oracle  # noqa: E402

TRACES = ("steady", "bursty", "diurnal", "spike", "heavy_tail", "long_tasks")
TRACE_DIR = ROOT / "bench" / "traces"
RESULTS = ROOT / "bench" / "results"
SERVERLESS_PRICE = 1.10  # USD/h for an RTX 4090 serverless worker (the emulator's catalog)
DEFAULT_FAILURE = 0.3  # the share of resumes finding no GPU in the default rows
FAILURES = {"ours_fail0": 0.0, "ours_fail70": 0.7}
SWEEP = (10, 40, 80, 160)  # WAIT_TARGET_SEC of the ours_wt* rows (the default is `ours`)
PREVIOUS = {
    "WAIT_TARGET_SEC": 0,
    "WARM_POOL_MAX": 0,
    "TASK_STUCK_TIMEOUT_SEC": 1200,
    "WORKER_POLL_INTERVAL_SEC": 10,
}
HELDOUT_POLICIES = ("ours", "original", "serverless")
HELDOUT_SEED_BASE = 3  # held-out traffic runs with simulation seeds the tuning never used
BAR_COST, BAR_P95, GOAL_COST = 0.9, 1.1, 0.75
METRIC_ORDER = (
    "cost_usd",
    "wait_p50_s",
    "wait_p95_s",
    "spawns",
    "resumes",
    "resume_failures",
    "stopped_disk_cost_usd",
    "tasks_dead_lettered",
    "tasks_lost",
    "tasks_duplicated",
    "pods_leaked",
)


def all_specs() -> dict[str, tuple[PolicySpec, float]]:
    """Every policy of the committed traces: its spec and the share of resumes that fail."""
    base = defaults()
    found = {s.name: (s, DEFAULT_FAILURE) for s in specs(base)}
    ours = found["ours"][0]
    for name, share in FAILURES.items():
        found[name] = (
            PolicySpec(name, real_plan, ours.settings, True, f"ours, {share:.0%} of resumes fail"),
            share,
        )
    found["prev_defaults"] = (
        PolicySpec("prev_defaults", real_plan, base.replace(**PREVIOUS), True, f"plan() with {PREVIOUS}"),
        DEFAULT_FAILURE,
    )
    for target in SWEEP:
        name = f"ours_wt{target}"
        found[name] = (
            PolicySpec(
                name, real_plan, base.replace(WAIT_TARGET_SEC=target), True, f"WAIT_TARGET_SEC={target}"
            ),
            DEFAULT_FAILURE,
        )
    return found


def load_traces(regen: bool) -> dict[str, tr.Trace]:
    loaded: dict[str, tr.Trace] = {}
    for name in TRACES:
        path = TRACE_DIR / f"{name}.csv"
        if regen or not path.exists():
            tr.save(tr.generate(name), path)
        loaded[name] = tr.load(path)
    return loaded


@cache
def _heldout() -> dict[str, tr.Trace]:
    return heldout()


def _trace(key: str) -> tr.Trace:
    if key.startswith("heldout:"):
        return _heldout()[key.split(":", 1)[1]]
    return tr.load(TRACE_DIR / f"{key}.csv")


def simulate(trace: tr.Trace, policy_name: str, seed: int, settings: Settings | None = None) -> Any:
    """One run of a policy of ``all_specs`` on a trace (its settings, unless others are given)."""
    spec, failure = all_specs()[policy_name]
    chosen = settings or spec.settings
    resume = ResumeModel(failure_share=failure, disk_gb=float(chosen.runpod_disk_size_gb))
    return Simulation(
        trace,
        spec.plan,
        chosen,
        name=spec.name,
        wake_on_tasks=spec.wake_on_tasks,
        seed=seed,
        resume=resume,
        failed_before_serving=spec.failed_before_serving,
    ).run()


def metrics_of(result: Any) -> dict[str, Any]:
    metrics: dict[str, Any] = dict(result.metrics())
    metrics["violations"] = len(result.violations)
    return metrics


def _run_one(job: tuple[str, str, int, bool]) -> tuple[str, str, int, dict[str, Any], list[Any], float]:
    trace_key, policy_name, seed, keep_samples = job
    started = time.perf_counter()
    result = simulate(_trace(trace_key), policy_name, seed)
    metrics = metrics_of(result)
    samples = [(s.t, s.queued, s.pods, s.serving) for s in result.samples[::3]] if keep_samples else []
    return trace_key, policy_name, seed, metrics, samples, time.perf_counter() - started


def cost_at(curve: list[tuple[float, float]], p95: float) -> tuple[float | None, str]:
    """The cost at a p95 on a (p95, cost) curve: interpolated inside its range (``=``); above it, the
    cheapest point, whose p95 is already better (``<=``, an upper bound); below it, None (not reached)."""
    points = sorted(curve)
    if not points or p95 < points[0][0]:
        return None, ""
    if p95 > points[-1][0]:
        return min(c for _p, c in points), "<="
    for (p_lo, c_lo), (p_hi, c_hi) in itertools.pairwise(points):
        if p_lo <= p95 <= p_hi:
            return (c_lo if p_hi == p_lo else c_lo + (c_hi - c_lo) * (p95 - p_lo) / (p_hi - p_lo)), "="
    return points[-1][1], "="


def curve(results: Mapping[str, Mapping[str, Any]]) -> list[tuple[float, float]]:
    names = ["ours", *(f"ours_wt{t}" for t in SWEEP)]
    return [(results[n]["wait_p95_s"], results[n]["cost_usd"]) for n in names if n in results]


def bar(results: Mapping[str, Mapping[str, Any]], policy: str = "ours") -> dict[str, Any]:
    """The issue's bar for one trace: cost <= 0.9x original AND p95 <= 1.1x original, nothing lost."""
    ours, old = results[policy], results["original"]
    cost_x = ours["cost_usd"] / old["cost_usd"]
    p95_x = ours["wait_p95_s"] / old["wait_p95_s"] if old["wait_p95_s"] > 0 else float("inf")
    safe = ours["tasks_lost"] == 0 and ours["tasks_duplicated"] == 0 and ours["pods_leaked"] == 0
    return {
        "cost_x": round(cost_x, 3),
        "p95_x": round(p95_x, 3),
        "safe": safe,
        "met": cost_x <= BAR_COST and p95_x <= BAR_P95 and safe,
    }


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


COLS = (
    "policy",
    "cost $",
    "x old",
    "p50 s",
    "p95 s",
    "p99 s",
    "spawns",
    "resumes",
    "resume fail",
    "disk $",
    "edge calls",
    "edge $",
    "dead",
    "lost",
    "dup",
    "leaked",
)


def _row(policy: str, m: Mapping[str, Any], old: float | None) -> str:
    cells = [
        f"`{policy}`",
        _fmt(m["cost_usd"]),
        f"{m['cost_usd'] / old:.2f}" if old else "-",
        _fmt(m["wait_p50_s"], 1),
        _fmt(m["wait_p95_s"], 1),
        _fmt(m["wait_p99_s"], 1),
        _fmt(m["spawns"], 1),
        _fmt(m.get("resumes", 0), 1),
        _fmt(m.get("resume_failures", 0), 1),
        _fmt(m.get("stopped_disk_cost_usd", 0.0), 3),
        f"{m.get('edge_calls', 0):,.0f}",
        _fmt(m.get("edge_cost_usd", 0.0), 3),
        str(m["tasks_dead_lettered"]),
        str(m["tasks_lost"]),
        str(m["tasks_duplicated"]),
        str(m["pods_leaked"]),
    ]
    return "| " + " | ".join(cells) + " |"


def _table(results: Mapping[str, Mapping[str, Any]], names: list[str]) -> list[str]:
    out = ["| " + " | ".join(COLS) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(COLS) - 1)) + " |"]
    for policy in names:
        if policy not in results:
            continue
        base = "original_min2" if policy.endswith("min2") else "original"
        old = results[base]["cost_usd"] if base in results and policy != "oracle" else None
        out.append(_row(policy, results[policy], old))
    return out


def matched(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Ours' cost read off its WAIT_TARGET_SEC curve at the old system's p95 and at the serverless row's."""
    points = curve(results)
    old, sl = results["original"], results["serverless"]
    at_old, how_old = cost_at(points, old["wait_p95_s"])
    at_sl, how_sl = cost_at(points, sl["wait_p95_s"])
    return {
        "at_original_p95_x": round(at_old / old["cost_usd"], 3) if at_old else None,
        "at_original_p95_read": how_old,
        "at_serverless_p95_usd": round(at_sl, 2) if at_sl else None,
        "at_serverless_p95_read": how_sl,
        "serverless_usd": sl["cost_usd"],
        "serverless_at_its_price_usd": round(sl["gpu_hours"] * SERVERLESS_PRICE, 2),
        "curve": [[round(p, 1), round(c, 2)] for p, c in sorted(points)],
    }


def write_markdown(
    results: Mapping[str, Any], traces: Mapping[str, tr.Trace], meta: Mapping[str, Any]
) -> str:
    out = [
        "# Policy benchmark",
        "",
        f"Generated {meta['generated']} by `{meta['command']}` in {meta['elapsed_s']:.0f} s ({meta['runs']} "
        f"simulation runs, means over {meta['seeds']} seeds; {meta['machine']}).",
        "",
        "Simulator: `orchestrator/studies/simulation.py` runs the daemon's own `plan()` and executor in virtual",
        "time against an in-memory copy of the SQL, a simulated Runpod (boot: 60% cached ~30 s, 40% cold ~165 s;",
        f"then ~12 s of SSH checks, 3 s start, ~15 s to the first heartbeat; {GPU_PRICE} USD/h per second) and",
        "workers as the real one behaves. The warm pool: a stop takes 10 s (the GPU bills until then), a stopped",
        "pod bills its 20 GB volume disk at 0.20 USD/GB/month, a resume takes ~30 s (lognormal, sigma 0.3) plus",
        f"the checks and the start, and {DEFAULT_FAILURE:.0%} of resumes find no GPU (the pod is terminated and",
        "a new one spawned) unless the row says otherwise. Idle workers poll for a task every",
        "`WORKER_POLL_INTERVAL_SEC` (the old system's and the serverless row's: the worker's own 10 s); `edge",
        "calls` = the workers' Edge Function calls as reigh-worker 22cbba9 makes them (two a poll, task-counts",
        "and the claim, and one a completion),",
        "`edge $` = their price at 2 USD per million, included in `cost $` as `disk $` (stopped disks) is.",
        "Wait = queued -> first claimed. `x old` = cost / `original` (`original_min2` for the `min2` rows).",
        "",
        "## The bar",
        "",
        f"At the default settings, {DEFAULT_FAILURE:.0%} of resumes failing: `ours` costs at most {BAR_COST}x",
        f"`original` AND its p95 wait is at most {BAR_P95}x `original`'s, with 0 lost, 0 duplicated, 0 leaked.",
        "`at old p95` = ours' cost at the old system's p95, read off its `WAIT_TARGET_SEC` curve (`ours_wt*`),",
        f"over the old system's cost: the goal is {GOAL_COST}x. `at serverless p95` = the same at the serverless",
        "row's p95, against the serverless row's cost on pods and at Serverless's own price.",
        "",
        "| trace | cost x old | p95 x old | safe | bar | at old p95 | to 0.75x | at serverless p95 | serverless (pods / its price) |",
        "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name in TRACES:
        b, m = results["_bar"][name], results["_matched"][name]
        at_old, at_sl = m["at_original_p95_x"], m["at_serverless_p95_usd"]
        gap = f"{at_old - GOAL_COST:+.2f}" if at_old is not None else "-"
        shown_old = f"{m['at_original_p95_read']} {at_old:.3f}" if at_old is not None else "not reached"
        shown_sl = f"{m['at_serverless_p95_read']} {at_sl:.2f}" if at_sl is not None else "not reached"
        out.append(
            f"| {name} | {b['cost_x']:.3f} | {b['p95_x']:.3f} | {'yes' if b['safe'] else 'NO'} | "
            f"{'met' if b['met'] else 'MISSED'} | {shown_old} | {gap} | {shown_sl} | "
            f"{m['serverless_usd']:.2f} / {m['serverless_at_its_price_usd']:.2f} |"
        )
    out += [
        "",
        "Held out (shapes and seeds the defaults were not chosen on, `orchestrator/studies/heldout.py`, simulation",
        f"seeds {HELDOUT_SEED_BASE}-{HELDOUT_SEED_BASE + meta['seeds'] - 1}):",
        "",
        "| trace | ours $ | original $ | cost x old | ours p95 | original p95 | p95 x old | bar |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for key, b in results["_heldout_bar"].items():
        r = results["_heldout"][key]
        out.append(
            f"| {key} | {r['ours']['cost_usd']:.2f} | {r['original']['cost_usd']:.2f} | {b['cost_x']:.3f} | "
            f"{r['ours']['wait_p95_s']:.1f} | {r['original']['wait_p95_s']:.1f} | {b['p95_x']:.3f} | "
            f"{'met' if b['met'] else 'MISSED'} |"
        )
    names = [
        "oracle",
        "ours",
        "ours_fail0",
        "ours_fail70",
        "prev_defaults",
        "original",
        "serverless",
        "static",
        "ours_min2",
        "original_min2",
        *(f"ours_wt{t}" for t in SWEEP),
    ]
    for name in TRACES:
        trace = traces[name]
        out += [
            "",
            f"## {name}",
            "",
            f"{len(trace.tasks)} tasks over {trace.duration / 3600:.0f} h, {trace.gpu_seconds / 3600:.1f} GPU-hours of work.",
            "",
            *_table(results[name], names),
            "",
            f"Plot: `plots/{name}.png`.",
        ]
    return "\n".join(out) + "\n"


def plot(samples: Mapping[str, Mapping[str, list[Any]]], out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for trace_name, by_policy in samples.items():
        names = list(by_policy)
        if not names:
            continue
        fig, axes = plt.subplots(len(names), 1, figsize=(11, 1.7 * len(names)), sharex=True, squeeze=False)
        for ax, policy in zip(axes[:, 0], names, strict=True):
            rows = by_policy[policy]
            hours = [r[0] / 3600 for r in rows]
            ax.fill_between(
                hours, [r[1] for r in rows], step="post", alpha=0.35, color="tab:red", label="queued"
            )
            ax.step(
                hours,
                [r[2] for r in rows],
                where="post",
                color="tab:blue",
                lw=0.9,
                label="pods billing a GPU",
            )
            ax.step(
                hours, [r[3] for r in rows], where="post", color="tab:green", lw=0.7, label="workers serving"
            )
            ax.set_ylabel(policy, rotation=0, ha="right", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
        axes[0, 0].set_title(f"{trace_name}: queue depth and workers over time (seed 0)", fontsize=9)
        axes[-1, 0].set_xlabel("virtual hours")
        fig.tight_layout()
        path = out_dir / f"{trace_name}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


PLOTTED = ("ours", "original", "serverless", "prev_defaults")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--regen-traces", action="store_true")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    traces = load_traces(args.regen_traces)
    names = list(all_specs())
    jobs = [
        (t, p, s, s == 0 and not args.no_plots and p in PLOTTED)
        for t in TRACES
        for p in names
        for s in range(args.seeds)
    ]
    held = [f"heldout:{k}" for k in _heldout()]
    jobs += [
        (k, p, HELDOUT_SEED_BASE + s, False)
        for k in held
        for p in HELDOUT_POLICIES
        for s in range(args.seeds)
    ]
    raw: dict[tuple[str, str], list[dict[str, Any]]] = {}
    samples: dict[str, dict[str, list[Any]]] = {t: {} for t in TRACES}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for key, policy, seed, metrics, rows, secs in pool.map(_run_one, jobs):
            raw.setdefault((key, policy), []).append(metrics)
            if rows:
                samples[key][policy] = rows
            print(
                f"{key:24s} {policy:14s} seed {seed}  {secs:5.1f}s  cost {metrics['cost_usd']:7.2f}  p95 {metrics['wait_p95_s']:7.1f}",
                flush=True,
            )
    by_trace: dict[str, dict[str, dict[str, Any]]] = {}
    for t in TRACES:
        by_trace[t] = {p: mean_metrics(raw[(t, p)]) for p in names}
        by_trace[t]["oracle"] = oracle(traces[t])
    held_results = {
        k.split(":", 1)[1]: {p: mean_metrics(raw[(k, p)]) for p in HELDOUT_POLICIES} for k in held
    }
    results: dict[str, Any] = {
        # Per trace and policy, the metrics (cost_usd, wait_p95_s, ... and now the pool's resumes,
        # resume_failures, stopped_disk_cost_usd, the workers' edge_calls and edge_cost_usd), as in the
        # earlier policy.json; then the bar, the
        # matched-p95 readings and the held-out traffic under keys that start with "_".
        **by_trace,
        "_bar": {t: bar(by_trace[t]) for t in TRACES},
        "_matched": {t: matched(by_trace[t]) for t in TRACES},
        "_heldout": held_results,
        "_heldout_bar": {k: bar(v) for k, v in held_results.items()},
    }
    meta = {
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python bench/policy.py" + (f" --seeds {args.seeds}" if args.seeds != 3 else ""),
        "elapsed_s": time.perf_counter() - started,
        "runs": len(jobs),
        "seeds": args.seeds,
        "machine": f"{os.cpu_count()} cores, CPython {platform.python_version()}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "policy.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "policy.md").write_text(write_markdown(results, traces, meta))
    if not args.no_plots:
        plot(samples, args.out / "plots")
    for t in TRACES:
        b, m = results["_bar"][t], results["_matched"][t]
        print(
            f"{t:12s} cost x{b['cost_x']:.3f} p95 x{b['p95_x']:.3f} {'met' if b['met'] else 'MISSED'}  at old p95 {m['at_original_p95_x']}"
        )
    for k, b in results["_heldout_bar"].items():
        print(
            f"held out {k:18s} cost x{b['cost_x']:.3f} p95 x{b['p95_x']:.3f} {'met' if b['met'] else 'MISSED'}"
        )
    print(
        f"\nwrote {args.out / 'policy.md'}, {args.out / 'policy.json'} in {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
