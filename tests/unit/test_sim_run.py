"""``orchestrator sim run`` (``orchestrator/studies/run.py``): traffic replayed through the real CLI.

Each test runs the command in a subprocess, as an operator would, with a clean environment and no
``.env`` unless the test writes one. Traces are a dozen tasks written to ``tmp_path`` (a run takes a
fraction of a second) or the small named ``spike`` trace; the simulator underneath is the real one.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from orchestrator.core.errors import ConfigError
from orchestrator.studies import traces
from orchestrator.studies.fleet import GPU_PRICE
from orchestrator.studies.run import DEFAULT_POLICIES, METRIC_ORDER, mean_metrics

ROOT = Path(__file__).resolve().parents[2]


def _cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # cwd=tmp_path and an explicit --env-file: no stray ./.env or exported setting reaches `ours`.
    env_file = tmp_path / ".env"
    env_file.touch()  # a file named with --env-file must exist (an empty one reads as nothing set)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--env-file", str(env_file), "sim", "run", *args],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def _small_csv(tmp_path: Path, n: int = 12) -> tuple[Path, list[float]]:
    """A user-export-like file: no comment line, rows shuffled, a task every ~45 s for ~9 minutes."""
    rng = random.Random(7)
    rows = [
        (f"task-{i}", round(i * 45 + rng.uniform(0, 20), 1), round(rng.uniform(60, 150), 1)) for i in range(n)
    ]
    rng.shuffle(rows)
    path = tmp_path / "week.csv"
    path.write_text(
        "id,at,duration,task_type\n" + "".join(f"{i},{a},{d},generate_video\n" for i, a, d in rows)
    )
    return path, [d for _i, _a, d in rows]


def test_a_named_trace_prints_a_table_of_every_requested_policy(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "--trace", "spike", "--policy", "ours", "oracle")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"trace spike: {len(traces.generate('spike').tasks)} tasks over 9.0 h")
    assert lines[1] == "ours: the defaults"
    header = next(line for line in lines if line.startswith("policy"))
    assert header.split() == [
        "policy",
        "cost",
        "$",
        "x",
        "oracle",
        "GPU-h",
        "busy",
        "p50",
        "s",
        "p95",
        "s",
        "p99",
        "s",
        "spawns",
        "lost",
        "dup",
        "leaked",
    ]
    rows = {
        line.split()[0]: line.split()
        for line in lines
        if line.split() and line.split()[0] in ("ours", "oracle")
    }
    assert set(rows) == {"ours", "oracle"}
    assert rows["oracle"][2] == "1.00" and float(rows["ours"][2]) > 1.0  # x oracle
    assert rows["ours"][-3:] == ["0", "0", "0"]  # lost, duplicated, leaked


def test_a_csv_export_runs_the_default_policies_and_they_differ(tmp_path: Path) -> None:
    path, durations = _small_csv(tmp_path)
    doc = _json(_cli(tmp_path, "--trace", str(path), "--json"))
    assert list(doc) == ["week"]  # no comment line: the trace is named after the file
    results = doc["week"]
    assert list(results) == list(DEFAULT_POLICIES)
    # The oracle bills exactly the tasks' GPU-seconds at the price, and waits for nothing.
    assert results["oracle"]["cost_usd"] == round(sum(durations) / 3600 * GPU_PRICE, 4)
    assert results["oracle"]["wait_p95_s"] == 0.0
    for name in ("ours", "original", "serverless"):
        m = results[name]
        assert (m["tasks_lost"], m["tasks_duplicated"], m["pods_leaked"], m["violations"]) == (0, 0, 0, 0), (
            name
        )
        assert m["cost_usd"] > results["oracle"]["cost_usd"], name
    costs = {results[n]["cost_usd"] for n in ("ours", "original", "serverless")}
    assert len(costs) == 3
    # The old rules keep a pod per task for ten idle minutes: dearer than ours on any short trace.
    assert results["original"]["cost_usd"] > results["ours"]["cost_usd"]
    assert results["serverless"]["spawns"] > results["ours"]["spawns"]


def test_set_changes_ours_and_only_ours_and_matches_the_same_value_from_env(tmp_path: Path) -> None:
    path, _ = _small_csv(tmp_path)
    base = _json(_cli(tmp_path, "--trace", str(path), "--policy", "ours", "original", "--json"))["week"]
    changed = _json(
        _cli(
            tmp_path,
            "--trace",
            str(path),
            "--policy",
            "ours",
            "original",
            "--set",
            "MIN_ACTIVE_GPUS=2",
            "--json",
        )
    )["week"]
    assert changed["ours"]["cost_usd"] > base["ours"]["cost_usd"]  # two pods kept for the whole horizon
    assert changed["original"] == base["original"]  # --set is for `ours` only
    # `ours` is the operator's configuration: the same value from .env gives the same run, and --set wins.
    (tmp_path / ".env").write_text("MIN_ACTIVE_GPUS=2\n")
    from_env = _json(_cli(tmp_path, "--trace", str(path), "--policy", "ours", "--json"))["week"]
    assert from_env["ours"] == changed["ours"]
    overridden = _json(
        _cli(tmp_path, "--trace", str(path), "--policy", "ours", "--set", "MIN_ACTIVE_GPUS=0", "--json")
    )
    assert overridden["week"]["ours"] == base["ours"]
    table = _cli(tmp_path, "--trace", str(path), "--policy", "ours", env={"TASKS_PER_GPU_THRESHOLD": "1"})
    assert table.returncode == 0, table.stderr
    assert (
        "ours: the defaults except MIN_ACTIVE_GPUS=2 (.env), TASKS_PER_GPU_THRESHOLD=1 (environment)"
        in table.stdout
    )


def test_json_has_the_documented_shape_and_seeds_average(tmp_path: Path) -> None:
    path, _ = _small_csv(tmp_path, n=6)
    header = "# trace=mine seed=9 duration=600\n"
    path.write_text(header + path.read_text())
    doc = _json(
        _cli(tmp_path, "--trace", str(path), "--policy", "ours", "static", "oracle", "--seeds", "2", "--json")
    )
    assert list(doc) == ["mine"]  # the comment line names it
    assert list(doc["mine"]) == ["ours", "static", "oracle"]
    for policy, metrics in doc["mine"].items():
        assert set(METRIC_ORDER) <= set(metrics), policy
        assert all(isinstance(v, int | float) for v in metrics.values()), policy
    assert doc["mine"]["static"]["gpu_hours"] > doc["mine"]["ours"]["gpu_hours"]


def test_a_bad_set_exits_2_listing_every_problem_and_runs_nothing(tmp_path: Path) -> None:
    proc = _cli(
        tmp_path,
        "--set",
        "MIN_ACTIVE_GPUS=x",
        "--set",
        "MAX_ACTIVE_GPUZ=3",
        "--set",
        "GPU_IDLE_TIMEOUT_SEC=-5",
        "--set",
        "novalue",
        "--set",
        "MACHINES_TO_KEEP_IDLE=1",
        "--set",
        "MIN_ACTIVE_GPUS=11",
        "--policy",
        "ours",
        "fastest",
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    err = proc.stderr
    assert "invalid configuration (6 problem(s))" in err
    assert "MIN_ACTIVE_GPUS='x': expected a whole number" in err
    assert "MAX_ACTIVE_GPUZ: unknown setting; did you mean MAX_ACTIVE_GPUS?" in err
    assert "GPU_IDLE_TIMEOUT_SEC='-5': expected a number >= 0" in err
    assert "'novalue': expected KEY=VALUE" in err
    assert (
        "MIN_ACTIVE_GPUS=11 is greater than MAX_ACTIVE_GPUS=10" in err
    )  # the cross-check of Settings.replace
    assert "--policy 'fastest': unknown policy" in err


def test_a_malformed_csv_exits_2_with_file_line_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "id,at,duration,task_type\n"
        "a,10,60,generate_video\n"
        "b,soon,60,generate_video\n"
        "c,20,-3,generate_video\n"
        "a,30,60,generate_video\n"
        "d,40\n"
        "e,5,nan,generate_video\n"
    )
    proc = _cli(tmp_path, "--trace", str(bad))
    assert proc.returncode == 2 and proc.stdout == ""
    for expected in (
        f"{bad}:3: at 'soon': expected a number of seconds",
        f"{bad}:4: duration '-3': expected a number >= 0",
        f"{bad}:5: id 'a' already on line 2",
        f"{bad}:6: 2 fields, expected 4 as in the header",
        f"{bad}:7: duration 'nan': expected a finite number of seconds",
    ):
        assert expected in proc.stderr
    missing = tmp_path / "missing.csv"
    missing.write_text("id,created,duration\nx,1,2\n")
    proc = _cli(tmp_path, "--trace", str(missing))
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"{missing}:1: missing column(s) at" in proc.stderr
    proc = _cli(tmp_path, "--trace", "weekly")
    assert proc.returncode == 2 and "neither a named trace" in proc.stderr


def test_sim_run_refuses_unknown_arguments(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "--trace", "spike", "--speed", "10")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "unrecognized arguments: --speed 10" in proc.stderr
    proc = _cli(tmp_path, "--seeds", "0")
    assert proc.returncode == 2 and "expected a whole number >= 1" in proc.stderr


def test_load_sorts_rows_and_fills_optional_columns(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("\ufeffat,duration\n30,5\n0,10\n12.5,0\n")  # a byte-order mark, as spreadsheets write
    trace = traces.load(path)
    assert [(t.at, t.duration, t.task_type) for t in trace.tasks] == [
        (0.0, 10.0, "generate_video"),
        (12.5, 0.0, "generate_video"),
        (30.0, 5.0, "generate_video"),
    ]
    assert len({t.id for t in trace.tasks}) == 3
    assert trace.name == "export" and trace.duration == 35.0
    empty = tmp_path / "empty.csv"
    empty.write_text("id,at,duration,task_type\n")
    try:
        traces.load(empty)
    except ConfigError as exc:
        assert exc.problems == [f"{empty}: no tasks after the header"]
    else:
        raise AssertionError("an empty trace loaded")


def test_seed_means_keep_counts_whole_and_sum_safety_counts() -> None:
    rows = [
        {"cost_usd": 1.0, "spawns": 3, "tasks_lost": 0, "violations": 1},
        {"cost_usd": 2.0, "spawns": 4, "tasks_lost": 1, "violations": 0},
    ]
    assert mean_metrics(rows) == {"cost_usd": 1.5, "spawns": 3.5, "tasks_lost": 1, "violations": 1}
    assert mean_metrics(rows[:1]) == {"cost_usd": 1.0, "spawns": 3, "tasks_lost": 0, "violations": 1}
