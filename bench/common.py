"""Shared helpers for the control-loop benchmarks (``bench/reaction.py``, ``bench/tick.py``).

Where it sits: benchmarks measure the daemon as it is built (``orchestrator.loop.controller.Controller`` on
the adapters of ``orchestrator.wiring``) and must not change it. What they need to observe, they get by
wrapping the two ports the controller talks through:

* :class:`CountingTransport` wraps the Database port's ``Transport`` (``orchestrator/adapters/db/base.py``) and
  counts SQL-function calls by name; over ``PostgresTransport`` each call is one statement, one round
  trip (``tick.py`` checks this against libpq's protocol trace);
* :class:`CountingProvider` wraps the Runpod provider and counts (and timestamps) its method calls.

For fleets of 1,000 pods on a 2-core machine the emulator gets :class:`LightSandbox`, a stand-in pod
with no processes (no sshd, no simulated worker): fine for measuring the control loop, which in steady
state never logs into a pod, and said so in every result it is used for. ``serve-emulator`` runs the
emulator in its own process (so its CPU and memory are not the daemon's), driven over a line protocol
on stdin/stdout by :class:`EmulatorProcess`, and counts the HTTP requests reaching it.

Run as a script only through :class:`EmulatorProcess`: ``python bench/common.py serve-emulator``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PYTHON = str(ROOT / ".venv" / "bin" / "python")
GPU = "NVIDIA GeForce RTX 4090"
DATA_CENTER = "EU-RO-1"  # where the catalog's `workspace` network volume lives
VOLUME_ID = "w0rk5p4ce1"
BENCH_REQUESTS_PATH = "/_bench/requests"


# --- counting wrappers around the two ports ------------------------------------------------------


class CountingTransport:
    """A ``Transport`` that passes every call through and counts it by function name (thread-safe)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = f"counting({getattr(inner, 'name', type(inner).__name__)})"
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def call(self, function: str, args: Mapping[str, Any]) -> Any:
        with self._lock:
            self.calls[function] += 1
        return self.inner.call(function, args)

    def close(self) -> None:
        self.inner.close()

    def take(self) -> Counter[str]:
        """The counts since the last take, and start again from zero."""
        with self._lock:
            out, self.calls = self.calls, Counter()
        return out


class CountingProvider:
    """Passes every attribute through to the provider; counts method calls and timestamps spawns."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.spawn_times: list[float] = []  # time.time() at entry of each spawn_worker call

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls[name] += 1
                if name == "spawn_worker":
                    self.spawn_times.append(time.time())
            return attr(*args, **kwargs)

        return counted

    def take(self) -> Counter[str]:
        with self._lock:
            out, self.calls = self.calls, Counter()
        return out


# --- a stand-in pod for fleets of 1,000 ----------------------------------------------------------


class LightSandbox:
    """Satisfies the emulator's ``Sandbox`` protocol without starting anything.

    The pod goes RUNNING with a published (but unserved) SSH port. Benchmarks that use it must not need
    SSH: a steady-state tick does not log into pods.
    """

    _next_port = 40000
    _port_lock = threading.Lock()

    def __init__(self, pod_id: str, **_kwargs: Any) -> None:
        self.pod_id = pod_id
        self.port = 0
        self._alive = False

    @property
    def alive(self) -> bool:
        return self._alive

    def start(self) -> int:
        with LightSandbox._port_lock:
            LightSandbox._next_port += 1
            self.port = LightSandbox._next_port
        self._alive = True
        return self.port

    def ready(self) -> bool:
        return self._alive

    def stop(self) -> None:
        self._alive = False

    def crash_worker(self) -> bool:
        return False

    def hang_worker(self) -> bool:
        return False


def light_sandbox_factory(pod_id: str, **kwargs: Any) -> LightSandbox:
    return LightSandbox(pod_id, **kwargs)


# --- memory of a process --------------------------------------------------------------------------


def proc_status_kb(pid: int | str, field: str) -> int:
    """A ``/proc/<pid>/status`` figure in kB (VmHWM = peak resident set, VmRSS = current); 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- the emulator in its own process --------------------------------------------------------------


def _serve_emulator(argv: list[str]) -> int:
    """Child side: an EmulatorServer with light pods; answers JSON commands, one per stdin line."""
    import argparse

    from orchestrator.logs import configure_logging
    from orchestrator.standins.emulator import EmulatorServer
    from orchestrator.standins.emulator.server import _Handler
    from orchestrator.standins.emulator.state import PodSpec

    parser = argparse.ArgumentParser()
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--capacity", type=int, default=5000)
    args = parser.parse_args(argv)
    configure_logging(None, stream=sys.stderr, level="WARNING", fmt="json")

    counts: Counter[str] = Counter()
    counts_lock = threading.Lock()

    class CountingHandler(_Handler):
        """Counts API requests (REST and GraphQL; not the admin or bench paths) before serving them."""

        def _dispatch(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            if path == BENCH_REQUESTS_PATH:
                with counts_lock:
                    body = json.dumps(dict(counts)).encode()
                self._body()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if not path.startswith("/_emulator/"):
                key = f"{method} {path if not path.startswith('/v2/pods/') else '/v2/pods/{id}...'}"
                with counts_lock:
                    counts[key] += 1
            super()._dispatch(method)

    faults = {
        "boot_cached_s": 0.0,
        "boot_cold_s": 0.0,
        "boot_jitter": 0.0,
        "rate_limit_minute": 10**9,
        "rate_limit_hour": 10**9,
        "rate_limit_day": 10**9,
        "seed": 7,
    }
    emu = EmulatorServer(
        api_key=args.api_key, speed=1.0, faults=faults, sandbox_factory=light_sandbox_factory
    )
    url = emu.start()
    assert emu._httpd is not None
    emu._httpd.RequestHandlerClass = CountingHandler
    state = emu.state
    for dc in (DATA_CENTER, "US-KS-2"):
        state.set_capacity(GPU, dc, args.capacity)
    print(json.dumps({"url": url, "pid": os.getpid()}), flush=True)

    def wait_running(ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with state.lock:
                if all(state.pods[i].status == "RUNNING" for i in ids):
                    return
            time.sleep(0.05)
        raise TimeoutError("pods did not reach RUNNING")

    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd.get("op")
            out: Any
            if op == "create":
                made = []
                for name in cmd["names"]:
                    pod = state.create_pod(
                        PodSpec(
                            name=name,
                            image=cmd.get(
                                "image", "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
                            ),
                            gpu_id=GPU,
                            data_center_ids=[DATA_CENTER],
                            volume_id=VOLUME_ID,
                            mount_path="/workspace",
                            ports=["22/tcp"],
                        )
                    )
                    made.append({"id": pod.id, "name": name})
                wait_running([m["id"] for m in made], timeout=120.0)
                out = made
            elif op == "reset":
                state.reset()
                for dc in (DATA_CENTER, "US-KS-2"):
                    state.set_capacity(GPU, dc, args.capacity)
                state.faults.update(faults)
                out = True
            elif op == "counts":
                with counts_lock:
                    out = dict(counts)
            elif op == "mem":
                out = {
                    "VmHWM_kb": proc_status_kb("self", "VmHWM"),
                    "VmRSS_kb": proc_status_kb("self", "VmRSS"),
                }
            elif op == "quit":
                print(json.dumps({"ok": True, "result": True}), flush=True)
                break
            else:
                out = {"error": f"unknown op {op!r}"}
            print(json.dumps({"ok": True, "result": out}), flush=True)
    finally:
        emu.stop()
    return 0


class EmulatorProcess:
    """Parent side of ``serve-emulator``: start it, send commands, read its memory, stop it."""

    def __init__(self, *, api_key: str | None = None) -> None:
        cmd = [PYTHON, str(Path(__file__).resolve()), "serve-emulator"]
        if api_key:
            cmd += ["--api-key", api_key]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        hello = json.loads(self.proc.stdout.readline() or "{}")
        if "url" not in hello:
            self.stop()
            raise RuntimeError("the emulator process did not start")
        self.url: str = hello["url"]
        self.pid: int = hello["pid"]

    def request(self, op: str, **kw: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return answer["result"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.request("quit")
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- reporting ---------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-quantile by nearest rank (no interpolation: small samples stay honest)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def save_markdown(path: Path, title: str, command: str, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(f"# {title}\n\nGenerated {stamp} by `{command}`.\n\n{body.rstrip()}\n")
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve-emulator":
        raise SystemExit(_serve_emulator(sys.argv[2:]))
    raise SystemExit("usage: bench/common.py serve-emulator [--api-key KEY]")
