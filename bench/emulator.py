"""Benchmark: 100 emulated Runpod pods running at once, at zero boot delay.

Where it sits: the Runpod emulator (``orchestrator/standins/emulator``) backs every test, the demo and the
other benchmarks, so it must carry a realistic fleet on a small machine. This creates N pods through
REST v2 in one burst (as an orchestrator scaling up would), with boot delays set to zero so what is
measured is the emulator and its sandboxes (a real sshd per pod), then reports

* creation -> ready (sshd answering, port published) per pod, from the emulator's own clock;
* how long until a client sees all N RUNNING;
* memory per pod: PSS and RSS of the pod's processes (from /proc), and the emulator's own growth;
* how long terminating all of them takes.

Run: ``.venv/bin/python bench/emulator.py [--pods 100]``; writes ``bench/results/emulator.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.logs import configure_logging  # noqa: E402
from orchestrator.standins.emulator import EmulatorServer  # noqa: E402

GPU = "NVIDIA GeForce RTX 4090"
DC = "EU-RO-1"


def _kb(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pod_memory_kb(pids: list[int]) -> tuple[int, int]:
    """(PSS, RSS) in kB summed over a pod's processes; PSS shares common pages out fairly."""
    pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in pids)
    rss = sum(_kb(f"/proc/{p}/status", "VmRSS") for p in pids)
    return pss, rss


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def run(n: int) -> str:
    load_before = os.getloadavg()[0]
    faults = {"boot_cached_s": 0, "boot_cold_s": 0, "boot_jitter": 0, "seed": 1}
    with EmulatorServer(speed=1.0, faults=faults) as emu:
        emu.admin.set_capacity(GPU, DC, n)
        own_before = _kb("/proc/self/status", "VmRSS")
        mem_before = _kb("/proc/meminfo", "MemAvailable")
        headers = {"Authorization": "Bearer bench"}
        body = {
            "name": "bench",
            "image": "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
            "gpu": {"id": GPU, "count": 1},
            "ports": ["22/tcp"],
            "dataCenterIds": [DC],
            "env": {
                "PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchBenchBenchBenchBenchBenchBenchBench bench"
            },
        }
        with httpx.Client(base_url=emu.base_url, headers=headers, timeout=60) as client:
            t0 = time.monotonic()
            ids = []
            for i in range(n):
                r = client.post("/v2/pods", json={**body, "name": f"bench-{i:03d}"})
                r.raise_for_status()
                ids.append(r.json()["id"])
            t_created = time.monotonic() - t0
            deadline = time.monotonic() + 120
            while True:
                pods = client.get("/v2/pods").json()["pods"]
                running = sum(1 for p in pods if p["status"] == "RUNNING" and p["ssh"]["direct"])
                if running == n:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {running}/{n} pods ready after 120 s")
                time.sleep(0.05)
            t_all = time.monotonic() - t0
            views = {v["id"]: v for v in emu.admin.pods()}
            ready_s = [views[i]["createToReadySeconds"] for i in ids]
            pss_kb, rss_kb = [], []
            for i in ids:
                sb = emu.state.pods[i].sandbox
                pids = sb.pids() if sb is not None else []  # type: ignore[attr-defined]
                pss, rss = pod_memory_kb(pids)
                pss_kb.append(pss)
                rss_kb.append(rss)
            own_after = _kb("/proc/self/status", "VmRSS")
            mem_after = _kb("/proc/meminfo", "MemAvailable")
            t1 = time.monotonic()
            for i in ids:
                assert client.delete(f"/v2/pods/{i}").status_code == 204
            t_term_api = time.monotonic() - t1
        t2 = time.monotonic()
    t_stop = time.monotonic() - t2

    under_1s = sum(1 for s in ready_s if s < 1.0)
    rows = [
        ("pods", f"{n}"),
        (
            "creation -> ready, min / median / p95 / max",
            f"{min(ready_s):.3f} / {statistics.median(ready_s):.3f} / "
            f"{pct(ready_s, 0.95):.3f} / {max(ready_s):.3f} s",
        ),
        ("pods ready in under 1 s", f"{under_1s} / {n}"),
        ("burst of POST /v2/pods (client)", f"{t_created:.2f} s ({t_created / n * 1000:.1f} ms per create)"),
        ("first create -> client sees all RUNNING", f"{t_all:.2f} s"),
        (
            "memory per pod, PSS (mean / max)",
            f"{statistics.mean(pss_kb) / 1024:.2f} / {max(pss_kb) / 1024:.2f} MiB",
        ),
        ("memory per pod, RSS (mean)", f"{statistics.mean(rss_kb) / 1024:.2f} MiB"),
        ("emulator process growth per pod", f"{(own_after - own_before) / n:.0f} kB"),
        ("host MemAvailable drop per pod", f"{(mem_before - mem_after) / n / 1024:.2f} MiB"),
        ("DELETE of all pods (API)", f"{t_term_api:.2f} s"),
        ("server stop (every sshd gone)", f"{t_stop:.2f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    table = "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in rows)
    cpus = os.cpu_count()
    return (
        "# Emulator benchmark: 100 pods at once\n\n"
        f"`python bench/emulator.py --pods {n}` on {platform.machine()}, {cpus} CPUs, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, 1-minute load average {load_before:.2f} at start "
        "(other work on the machine competes for the same 2 cores).\n"
        "Boot delays set to 0, so creation -> ready is the emulator's own overhead: placing the pod, "
        "starting its sandbox (namespaces, host key, sshd) and seeing sshd's banner. Memory is what the "
        "pods' processes use (PSS shares common pages fairly between pods); the pods run sshd only here, a "
        "started simulated worker adds one Python process per pod.\n\n"
        f"| {'measure'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|\n{table}\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "emulator.md"))
    args = ap.parse_args()
    configure_logging(stream=sys.stderr, level="WARNING")
    report = run(args.pods)
    print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
