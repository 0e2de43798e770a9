"""Benchmark: initializing many ready pods over SSH, concurrently (bounded) vs one vs sequentially.

Where this sits: ``RunpodClient.initialize_workers`` is what the controller's apply step uses when
several spawning workers become ready in the same tick (the system we replace did this one pod at a
time, so one slow pod delayed the whole cycle). This starts the Runpod emulator (real sshd per pod),
creates N pods through the REST v2 transport, waits until every one is ready, then times
``check_and_initialize_worker`` (API lookup, SSH connect with host-key TOFU, the four checks):

- one pod alone (median of 3),
- all N sequentially,
- all N through ``initialize_workers`` with bounded concurrency.

Goal: N=50 concurrently in under 3x the time of one, both on loopback and with the pods 100 ms away
(``--rtt-ms``: the emulator delays its API and each pod's SSH port by that round trip, as real pods
50-150 ms from the orchestrator's machine are). Each run records its table under its round-trip time in
``bench/results/ssh_fanout.json`` (runs at other round-trip times are kept) and rewrites
``bench/results/ssh_fanout.md`` with every table side by side, the ratio, and where one pod's time
goes.

    .venv/bin/python bench/ssh_fanout.py [--pods 50] [--concurrency 64] [--rtt-ms 0 100]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import paramiko
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.adapters.runpod.base import RetryPolicy  # noqa: E402
from orchestrator.runpod_client import RunpodClient  # noqa: E402
from orchestrator.standins.emulator import EmulatorServer  # noqa: E402

API_KEY = "rpa_BENCHKEY000000000000000000000000000"


def keypair(directory: Path) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    priv = directory / "id_ed25519"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    priv.chmod(0o600)
    pub = directory / "id_ed25519.pub"
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    return priv, pub


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat (0, 0 where there is none)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def run_once(args: argparse.Namespace, rtt_ms: float) -> dict:  # type: ignore[type-arg]
    """One emulator at ``rtt_ms``: create the pods, time the initializations; the results as a dict."""
    # Not under /tmp: each emulated pod gets a private /tmp, which would hide the pods' state there.
    with tempfile.TemporaryDirectory(
        prefix="ssh-fanout-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None
    ) as tmp:
        tmpdir = Path(tmp)
        priv, pub = keypair(tmpdir)
        emulator = EmulatorServer(
            speed=1000.0, state_dir=tmpdir / "emulator", faults={"seed": 1}, rtt_ms=rtt_ms
        )
        emulator.start()
        try:
            emulator.admin.set_capacity("NVIDIA GeForce RTX 4090", "EU-RO-1", args.pods + 4)
            client = RunpodClient(
                api_key=API_KEY,
                api="rest",
                api_base_url=emulator.base_url,
                storage_name="workspace",
                ssh_public_key_path=pub,
                ssh_private_key_path=priv,
                supabase_url="http://127.0.0.1:9",
                supabase_service_role_key="bench-service-role",
                supabase_anon_key="bench-anon",
                retry=RetryPolicy(attempts=5, base_delay=0.05, max_delay=0.5),
                env={},
            )
            pairs = []
            t0 = time.monotonic()
            for i in range(args.pods):
                wid = f"gpu-bench-{i:03d}"
                pairs.append((wid, client.spawn_worker(wid)["runpod_id"]))
            deadline = time.monotonic() + 300
            while not all((p := client.get_pod(rid)) is not None and p.ssh_ready for _, rid in pairs):
                if time.monotonic() > deadline:
                    raise SystemExit("pods did not become ready within 300 s")
                time.sleep(0.5)
            setup_s = time.monotonic() - t0

            usage: dict[str, tuple[float, float]] = {}

            def timed(fn, label=None):  # type: ignore[no-untyped-def]
                busy0, total0 = machine_cpu()
                cpu0 = time.process_time()
                start = time.monotonic()
                out = fn()
                wall = time.monotonic() - start
                busy1, total1 = machine_cpu()
                if label:
                    # (orchestrator process CPU s, whole-machine CPU busy share)
                    usage[label] = (time.process_time() - cpu0, (busy1 - busy0) / max(total1 - total0, 1e-9))
                return wall, out

            one_runs = []
            for _ in range(3):
                dt, res = timed(lambda: client.check_and_initialize_worker(*pairs[0]))
                assert res["status"] == "active", res
                one_runs.append(dt)
            one = statistics.median(one_runs)
            phases = one_pod_phases(client, pairs[0][1], priv)

            seq, results = timed(lambda: [client.check_and_initialize_worker(w, r) for w, r in pairs], "seq")
            assert all(r["status"] == "active" for r in results), [
                r for r in results if r["status"] != "active"
            ][:3]

            conc, results = timed(
                lambda: client.initialize_workers(pairs, concurrency=args.concurrency), "conc"
            )
            bad = [r for r in results if r["status"] != "active"]
            assert not bad, bad[:3]

            unbounded, results = timed(
                lambda: client.initialize_workers(pairs, concurrency=args.pods), "unbounded"
            )
            assert all(r["status"] == "active" for r in results)

            # As the controller does it: one pod listing for the tick, no API call per worker.
            listing = {p.id: p for p in client.list_pods()}
            listed, results = timed(
                lambda: client.initialize_workers(pairs, concurrency=args.concurrency, pods=listing), "listed"
            )
            assert all(r["status"] == "active" for r in results)

            for _, rid in pairs:
                client.terminate_worker(rid)
            client.close()
        finally:
            emulator.stop()

    return {
        "rtt_ms": rtt_ms,
        "pods": args.pods,
        "concurrency": args.concurrency,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "setup_s": round(setup_s, 2),
        "one_s": one,
        "sequential_s": seq,
        "concurrent_s": conc,
        "unbounded_s": unbounded,
        "listed_s": listed,
        "usage": {k: {"orchestrator_cpu_s": v[0], "machine_busy": v[1]} for k, v in usage.items()},
        "phases": phases,
    }


def one_pod_phases(client: RunpodClient, runpod_id: str, private_key: Path) -> dict[str, float]:
    """Where one initialization's time goes: the API call, SSH's connect and login, one remote command."""
    t = time.monotonic()
    pod = client.get_pod(runpod_id)
    api_s = time.monotonic() - t
    assert pod is not None and pod.ssh_port is not None
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    t = time.monotonic()
    ssh.connect(
        pod.ip or "127.0.0.1",
        port=pod.ssh_port,
        username="root",
        pkey=paramiko.Ed25519Key.from_private_key_file(str(private_key)),
        allow_agent=False,
        look_for_keys=False,
        timeout=30,
    )
    connect_s = time.monotonic() - t
    with ssh:
        t = time.monotonic()
        _, out, _ = ssh.exec_command("true", timeout=30)
        out.channel.recv_exit_status()
        command_s = time.monotonic() - t
    return {"api_get_pod_s": api_s, "ssh_connect_login_s": connect_s, "ssh_one_command_s": command_s}


def render(runs: dict[str, dict]) -> str:  # type: ignore[type-arg]
    lines = [
        "# SSH fan-out: initializing ready pods",
        "",
        "Each initialization: one REST v2 `GET /v2/pods/{id}` against the emulator, an SSH connection "
        "(real sshd per pod, host key trusted on first use), the four checks in one remote command. "
        "One table per round-trip time between the orchestrator and Runpod (`--rtt-ms`: the emulator delays "
        "its API and relays each pod's SSH port through a delaying relay; 0 = loopback).",
    ]
    for key in sorted(runs, key=float):
        r = runs[key]
        one, seq, conc, unbounded, listed = (
            r[k] for k in ("one_s", "sequential_s", "concurrent_s", "unbounded_s", "listed_s")
        )
        n, c = r["pods"], r["concurrency"]
        cores = r["cpus"] or 1
        usage = r["usage"]

        def u(label: str, usage: dict = usage) -> str:  # type: ignore[type-arg]
            return f"{usage[label]['orchestrator_cpu_s']:.2f} | {usage[label]['machine_busy'] * 100:.0f}%"

        rows = [
            ("one pod (median of 3)", 1, one, "- | -"),
            (f"{n} pods sequentially", 1, seq, u("seq")),
            (f"{n} pods, concurrency {c}", c, conc, u("conc")),
            (f"{n} pods, concurrency {n}", n, unbounded, u("unbounded")),
            (f"{n} pods, concurrency {c}, pods from one listing", c, listed, u("listed")),
        ]
        best_name, best = min(
            (
                (f"concurrency {c}", conc),
                (f"concurrency {n}", unbounded),
                (f"concurrency {c} from one listing", listed),
            ),
            key=lambda x: x[1],
        )
        title = "loopback (0 ms)" if float(key) == 0 else f"pods and API {float(key):g} ms away"
        lines += [
            "",
            f"## Round trip {title}",
            "",
            f"`bench/ssh_fanout.py --pods {n} --concurrency {c} --rtt-ms {float(key):g}` on {r['host']} "
            f"({cores} CPUs, Python {r['python']}), {r['when']}. Pod creation to all ready: {r['setup_s']:.1f} s "
            "(emulator at speed 1000, not part of the figures).",
            "",
            "| run | concurrency | wall time (s) | x one pod | orchestrator CPU (s) | machine CPU busy |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [f"| {name} | {cc} | {t:.2f} | {t / one:.2f} | {cpu} |" for name, cc, t, cpu in rows]
        ph = r["phases"]
        lines += [
            "",
            f"Goal: {n} pods concurrently in under 3x one pod. Concurrency {c}: "
            f"{'met' if conc < 3 * one else 'NOT met'} ({conc / one:.2f}x); best run ({best_name}): "
            f"{'met' if best < 3 * one else 'NOT met'} ({best / one:.2f}x). Sequential is {seq / conc:.1f}x slower "
            f"than concurrency {c}.",
            "",
            f"Where one pod's {one * 1000:.0f} ms go (measured apart): the API call {ph['api_get_pod_s'] * 1000:.0f} ms, "
            f"SSH connect and login {ph['ssh_connect_login_s'] * 1000:.0f} ms, one remote command "
            f"{ph['ssh_one_command_s'] * 1000:.0f} ms; the client's own initialization adds its checks' command(s) "
            "and the host-key check.",
        ]
        if float(key) == 0:
            cpu_per_init = usage["seq"]["machine_busy"] * cores * seq / n
            floor = n * cpu_per_init / cores
            lines += [
                "",
                f"Reading it: on loopback the wall time is CPU: the {n} emulated pods' sshd and shells share the "
                f"orchestrator's {cores} cores. The sequential run shows about {cpu_per_init * 1000:.0f} ms of machine "
                f"CPU per initialization (client and pod together), so {n} pods need at least {floor:.2f} s on "
                f"{cores} cores, i.e. {floor / one:.1f}x one pod before any overhead; with real pods that work "
                f"happens on {n} other machines.",
            ]
        else:
            waves = -(-n // c)
            lines += [
                "",
                f"Reading it: one pod is now mostly waiting on round trips, which overlap perfectly across pods, so "
                f"the floor is set by how many initializations run at once: with concurrency {c}, {n} pods take at "
                f"least {waves} rounds ({waves}x one pod) however fast the machine is; with {n} at once, one round "
                f"plus the CPU of {n} handshakes (client and emulated pods on the same cores). The orchestrator "
                "CPU column includes the emulator's API server and its delaying relay, which run in the bench's "
                "process (one event-loop thread for every relayed connection).",
            ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=50)
    # The daemon's default (APPLY_CONCURRENCY) and initialize_workers'.
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0], help="round trip(s) to Runpod, in ms")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ssh_fanout.md")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json, run nothing")
    args = ap.parse_args(argv)

    # The bench measures; it does not need a log line per SSH command.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    json_path = args.out.with_suffix(".json")
    runs: dict[str, dict] = {}  # type: ignore[type-arg]
    if json_path.exists():
        runs = json.loads(json_path.read_text()).get("runs", {})
    for rtt in [] if args.render_only else args.rtt_ms:
        result = run_once(args, rtt)
        runs[f"{rtt:g}"] = result
        print(
            f"rtt {rtt:g} ms: one pod {result['one_s']:.2f} s; {args.pods} pods at concurrency {args.concurrency} "
            f"{result['concurrent_s']:.2f} s ({result['concurrent_s'] / result['one_s']:.2f}x), at concurrency "
            f"{args.pods} {result['unbounded_s']:.2f} s ({result['unbounded_s'] / result['one_s']:.2f}x)",
            flush=True,
        )
    text = render(runs)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    json_path.write_text(json.dumps({"runs": runs}, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
