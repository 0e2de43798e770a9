"""``bench/probe.py``'s input checks: a bad probe exits 2 naming every problem, before any simulation."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _probe():
    spec = importlib.util.spec_from_file_location("bench_probe", ROOT / "bench" / "probe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_probe", module)
    spec.loader.exec_module(module)
    return module


def test_every_problem_is_listed_and_nothing_runs(capsys, monkeypatch):
    probe = _probe()
    monkeypatch.setattr(probe, "_run", lambda job: (_ for _ in ()).throw(AssertionError("ran")))
    code = probe.main(
        [
            "--traces",
            "no_such_trace,heldout:nope,gen:nope@1,gen:steady",
            "--set",
            "sizing.NO_SUCH_CONSTANT=1",
            "--set",
            "sizing.EPSILON=not a literal",
            "--set",
            "missing_equals",
            "--setting",
            "WAIT_TARGET_SEC=-5",
            "--setting",
            "NOT_A_SETTING=1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    for expected in (
        "no bench/traces/no_such_trace.csv",
        "no held-out trace 'heldout:nope'",
        "'gen:nope@1' is not gen:<shape>@<seed>",
        "'gen:steady' is not gen:<shape>@<seed>",
        "orchestrator.core.sizing has no NO_SUCH_CONSTANT",
        "is not a Python literal",
        "'missing_equals': expected NAME=value",
        "WAIT_TARGET_SEC='-5'",
        "NOT_A_SETTING: not a setting",
    ):
        assert expected in err, (expected, err)


def test_fresh_traffic_is_the_shape_from_another_seed_with_simulation_seeds_of_its_own():
    probe = _probe()
    fresh, committed = probe.generate("gen:steady@300"), probe.generate("gen:steady@0")
    assert len(fresh.tasks) > 100 and [t.at for t in fresh.tasks] != [t.at for t in committed.tasks]
    assert len(probe.generate("gen:ramp@7").tasks) > 100  # a held-out shape too
    assert {probe.seed_base(k) for k in ("gen:ramp@7", "heldout:ramp", "steady")} == {6, 3, 0}


def test_settings_are_read_as_the_daemon_reads_its_environment():
    probe = _probe()
    parsed, problems = probe.parse_settings(["WAIT_TARGET_SEC=30", "warm_pool_max=4"])
    assert problems == []
    assert parsed == {"WAIT_TARGET_SEC": 30.0, "WARM_POOL_MAX": 4}
