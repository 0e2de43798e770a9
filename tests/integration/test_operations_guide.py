"""docs/operations.md's quick start, run literally: its shell blocks, in order, bring up a working fleet.

The guide is the first thing an operator follows; if a command in it rots, this fails. Only the ports
are chosen here (the guide reads them from the environment) so that parallel runs do not collide.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _runnable_script() -> str:
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("<!-- runnable:start -->", 1)[1].split("<!-- runnable:end -->", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) >= 5, "the runnable section lost its shell blocks"
    return "set -euo pipefail\n" + "\n".join(blocks)


@pytest.mark.timeout(600)
def test_the_quick_start_brings_up_a_working_fleet_and_leaves_nothing_billing() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RUNPOD_", "SUPABASE_", "DATABASE_", "METRICS_"))
    }
    env.update(
        PGPORT_LOCAL=str(_free_port()),
        REST_PORT=str(_free_port()),
        EMULATOR_PORT=str(_free_port()),
        METRICS_PORT=str(_free_port()),
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    proc = subprocess.run(
        ["bash", "-c", _runnable_script()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=560,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "still billing" in out and " 0 still billing" in out
    assert "orchestrator_workers" in out  # the metrics endpoint answered
