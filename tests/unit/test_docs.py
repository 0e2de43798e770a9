"""The documented log events are the ones the code emits (alerts are built on these names)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "gen_events_table", ROOT / "scripts" / "gen_events_table.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_events_table_in_the_docs_matches_the_code() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_events_table.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_event_names_are_stable_snake_case_and_cover_the_tick() -> None:
    events = _generator().collect()
    assert {
        "tick_summary",
        "lease_acquired",
        "worker_spawned",
        "worker_failed",
        "orphan_pod_terminated",
    } <= set(events)
    bad = [name for name in events if not re.fullmatch(r"[a-z][a-z0-9_]*", name)]
    assert bad == []


def test_a_renamed_event_makes_the_check_fail(tmp_path: Path) -> None:
    gen = _generator()
    table = gen.render(gen.collect())
    doc = (ROOT / "docs" / "operations.md").read_text()
    stale = doc.replace("`tick_summary`", "`tick_summary_old`")
    assert gen.updated_doc(stale, table) != stale
    assert gen.updated_doc(doc, table) == doc
