"""The 24-virtual-hour chaos soak, several seeds, and the broken variant that must fail.

Usage (from the repository root)::

    .venv/bin/python bench/chaos.py              # writes bench/results/chaos.md and chaos.json
    .venv/bin/python bench/chaos.py --seeds 5 --hours 24

Where this sits: runs :func:`orchestrator.studies.chaos.soak` (the real ``plan()`` in virtual time under
provider 5xx/429 bursts, pods that never boot, SSH failures, worker crashes and hangs, 20 orchestrator
restarts at random points) and reports every invariant violation by name; then runs the same soak with
:func:`orchestrator.studies.policies.broken_spawning_uncounted` to show the checks catch a real mistake.
Exit status 1 when the real policy violates anything or the broken one does not.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.studies.chaos import ChaosConfig, chaos_faults, soak, summary  # noqa: E402
from orchestrator.studies.policies import broken_spawning_uncounted  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="24-virtual-hour chaos soak")
    # Twenty: with five, a spend-cap breach that seed 8 showed (a resume and a spawn on one stale
    # listing) went unseen.
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = []
    for seed in range(1, args.seeds + 1):
        cfg = ChaosConfig(hours=args.hours, seed=seed, restarts=args.restarts)
        t0 = time.perf_counter()
        result = soak(cfg)
        info = summary(result)
        info.update(
            seed=seed, outages=len(chaos_faults(cfg).outages), wall_s=round(time.perf_counter() - t0, 2)
        )
        rows.append(info)
        print(json.dumps(info), flush=True)
        for v in result.violations[:10]:
            print(f"  VIOLATION {v.name} at t={v.at:.0f}s: {v.detail}")
    broken_cfg = ChaosConfig(hours=args.hours, seed=1, restarts=args.restarts)
    broken = summary(soak(broken_cfg, plan_fn=broken_spawning_uncounted))
    print("broken variant:", json.dumps(broken))
    ok = all(not r["violations"] for r in rows) and bool(broken["violations"])
    cols = [
        "seed",
        "virtual_hours",
        "tasks",
        "tasks_complete",
        "tasks_dead_lettered",
        "restarts",
        "restarts_mid_action",
        "outages",
        "listing_failures",
        "spawn_failures",
        "capacity_misses",
        "stray_pods",
        "orphans_reaped",
        "rows_without_pod_closed",
        "boot_timeouts",
        "worker_crashes",
        "heartbeat_failures",
        "worker_hangs",
        "stuck_tasks",
        "ssh_failures",
        "init_failures",
        "spawns",
        "cost_usd",
        "violations",
        "wall_s",
    ]
    lines = [
        "# Chaos soak",
        "",
        f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `.venv/bin/python bench/chaos.py` "
        f"in {time.perf_counter() - started:.0f} s.",
        "",
        f"{args.hours:g} virtual hours per seed of mixed traffic (a daily stream plus bursts of 20-40 tasks above",
        "the ceiling; 10% are 15-22 minute `_orchestrator` parents) against the daemon's own `plan()`",
        "(`orchestrator/studies/chaos.py`), `MAX_ACTIVE_GPUS=8`, `MAX_HOURLY_SPEND=4` (6 pods at 0.59 USD/h),",
        "with: Runpod outages of 0.5-5 min (~1 every 2 h; 5xx or 429: listing, creation and termination",
        "fail; 409: creations find no capacity), half the creations that fail with a 5xx creating the pod",
        "anyway, pods of ours that no row knows (another deployment's leftovers, ~1 every 4 h), 5% of pods",
        "never booting, 15% of SSH initialization attempts timing out, 3% of initializations failing",
        "their checks, worker processes crashing (0.08/h each) or hanging on 1% of tasks, and",
        f"{args.restarts} orchestrator restarts at random instants, every other one while actions are in",
        "flight (their remaining steps are lost; the new process waits for the dead one's lease).",
        "Invariants checked every tick: `max_exceeded`, `spend_cap_exceeded`,",
        "`pod_leaked` (unclaimed after the orphan grace and two settled ticks), `task_run_twice`,",
        "`task_orphaned`, `two_processes` (a second worker started on a pod), and at the end `task_lost`.",
        "",
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join("---:" for _ in cols) + " |",
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(json.dumps(r.get(c)) if isinstance(r.get(c), dict) else str(r.get(c)) for c in cols)
            + " |"
        )
    lines += [
        "",
        f"Result: **{'zero violations' if all(not r['violations'] for r in rows) else 'VIOLATIONS'}** over "
        f"{sum(r['tasks'] for r in rows)} tasks and {sum(r['restarts'] for r in rows)} restarts.",
        "",
        "The same soak (seed 1) with a deliberately broken policy, `broken_spawning_uncounted` (the real",
        "`plan()` deciding spawns on a snapshot with booting workers and their pods hidden, i.e. booting",
        f"workers not counted as capacity), fails with: `{json.dumps(broken['violations'])}`.",
        "`tests/unit/test_chaos.py` runs both, plus three more broken variants (rows marked terminated",
        "without the provider -> `pod_leaked`; failing workers without requeueing -> `task_orphaned`;",
        "requeueing healthy workers' tasks -> `task_run_twice`).",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chaos.md").write_text("\n".join(lines))
    (args.out / "chaos.json").write_text(
        json.dumps({"soaks": rows, "broken_spawning_uncounted": broken}, indent=1) + "\n"
    )
    print(f"wrote {args.out / 'chaos.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
