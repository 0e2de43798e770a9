"""The machinery that boots the emulator's pods: timed phases, sandboxes, readiness and liveness.

Part of ``orchestrator/standins/emulator``. :class:`PodEngine` is the base of the state model
(:class:`.state.EmulatorState`, which adds the API's operations on top) and owns everything that runs
on its own: one light ticker thread moves booting pods along PROVISIONING -> STARTING at their boot
delay, starts each pod's sandbox (a real sshd, :mod:`orchestrator.standins.sandbox`) when its image
"pull" ends, and probes ``sandbox.ready()`` with a backing-off interval until sshd answers; only then is
the pod RUNNING with its ``22/tcp`` port published (a pod without sshd, i.e. no ``PUBLIC_KEY`` as the
image decides, or the refusal knob, is RUNNING once its container runs). Every second it also reaps
RUNNING pods whose container died (they become EXITED). With ``rtt_ms`` > 0 the published port is a
delaying relay's (:mod:`.latency`), reserved before the sandbox starts so the pod's
``RUNPOD_TCP_PORT_22`` can name it, and listening only where sshd will.

Sandbox start/stop calls run on a small thread pool, and probes on another, never under the model's
lock, so a slow fork cannot stall the API. Every operation that invalidates in-flight sandbox work bumps
the pod's ``generation``; late completions compare it and clean up after themselves.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from .faults import Faults
from .latency import DelayRelay, RelayPort
from .records import (
    ERROR,
    EXITED,
    PROBE_FIRST_S,
    PROVISIONING,
    RUNNING,
    STARTING,
    Pod,
    Sandbox,
    SandboxFactory,
    Volume,
    default_sandbox_factory,
    js_date,
)

log = structlog.get_logger(__name__)

#: Share of a boot spent in PROVISIONING (allocation) before STARTING (the image pull).
_PROVISION_SHARE = 0.1
#: Largest interval between readiness probes of one pod, in real seconds.
_PROBE_MAX_S = 0.1
#: How often RUNNING pods are checked for a dead container (a cheap poll() of the sandbox's init).
_LIVENESS_EVERY_S = 1.0


class PodEngine:
    """Pods, their sandboxes and the threads that boot them, guarded by one lock; see the module docstring."""

    def __init__(
        self, *, state_dir: Path, speed: float, faults: Faults, sandbox_factory: SandboxFactory | None
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.state_dir = state_dir
        self.speed = speed
        self.faults = faults
        self._sandbox_factory = sandbox_factory or default_sandbox_factory
        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self.rng = random.Random(self.faults.seed)
        self.pods: dict[str, Pod] = {}
        #: Network volumes by id; a pod on one mounts its directory (the state model fills it).
        self.volumes: dict[str, Volume] = {}
        self._pulled: set[tuple[str, str]] = set()
        self._booting: set[str] = set()
        # Pods whose stop was asked, waiting out the stop grace (``Pod.stopping_until``).
        self._ending: set[str] = set()
        # Containers of terminated pods whose processes still run out the stop grace: (until, sandbox).
        self._lingering: list[tuple[float, Sandbox]] = []
        self._stopping = False
        # Sandbox starts and stops (process spawning) and readiness probes (a connect and a banner read,
        # which can take a while when the machine is busy) run here, never on the ticker or under the lock.
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="emulator-sandbox")
        self._probe_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="emulator-probe")
        # Reads the knob on every chunk, so a change applies to relayed pods at once.
        self.relay = DelayRelay(lambda: self.faults.rtt_ms / 1000.0)
        self._ticker = threading.Thread(target=self._tick_loop, name="emulator-ticker", daemon=True)

    # --- threads -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._ticker.start()

    def shutdown(self) -> None:
        """Stop the ticker and every pod's sandbox; waits until they are all gone."""
        with self._cond:
            self._stopping = True
            sandboxes = self._detach_all_sandboxes()
            self._cond.notify_all()
        if self._ticker.is_alive():
            self._ticker.join(timeout=10)
        self._probe_pool.shutdown(wait=True)
        self._stop_sandboxes(sandboxes, wait=True)
        self._pool.shutdown(wait=True)
        self.relay.close()

    def _detach_all_sandboxes(self) -> list[Sandbox]:
        found = [sb for _, sb in self._lingering]
        self._lingering.clear()
        self._ending.clear()
        for pod in self.pods.values():
            pod.generation += 1
            pod.stopping_until = None
            sb = self._unpublish(pod)
            if sb is not None:
                found.append(sb)
        return found

    def _unpublish(self, pod: Pod) -> Sandbox | None:
        """Take the pod's container off the network: no port, relay closed; returns its sandbox to stop."""
        sb, pod.sandbox, pod.ssh_port = pod.sandbox, None, None
        rp, pod.relay_port = pod.relay_port, None
        if rp is not None:
            self.relay.release(rp)
        return sb

    def _stop_sandboxes(self, sandboxes: list[Sandbox], *, wait: bool) -> None:
        futures = [self._pool.submit(_safe_stop, sb) for sb in sandboxes]
        if wait:
            for f in futures:
                f.result()

    def _stop_later(self, sb: Sandbox, *, wipe: bool = True) -> None:
        """Stop a sandbox on the pool (never under the lock: stopping kills and reaps processes).

        ``wipe``: its container disk goes too, as when a real pod is stopped or terminated (only a
        container restart keeps it)."""
        self._pool.submit(_safe_stop, sb, wipe)

    def _stop_grace(self) -> float:
        return max(0.0, self.faults.stop_grace_sec / self.speed)

    def _linger(self, sb: Sandbox, mono: float, until: float | None = None) -> bool:
        """Let a terminated pod's processes run out the stop grace (called under the lock), or the rest
        of a stop's already under way (``until``); False when there is none and the caller stops the
        sandbox now."""
        grace = self._stop_grace()
        end = until if until is not None else mono + grace
        if end <= mono:
            return False
        self._lingering.append((end, sb))
        self._cond.notify_all()
        return True

    def _begin_stop(self, pod: Pod, mono: float) -> bool:
        """A stop asked of a pod whose container runs: it runs on, and bills, until the stop grace ends
        (called under the lock). False when there is no grace or no container: the caller stops it now."""
        grace = self._stop_grace()
        if grace <= 0 or pod.sandbox is None:
            return False
        if pod.stopping_until is None:
            pod.stopping_until = mono + grace
            # A pod still waiting for its sshd stays STARTING: a container being stopped never serves.
            self._booting.discard(pod.id)
            pod.awaiting_ready = False
            self._ending.add(pod.id)
            self._cond.notify_all()
        return True

    # --- boot phases -------------------------------------------------------------------------------

    def _schedule_boot(self, pod: Pod) -> None:
        """Hand a pod whose boot has begun to the ticker (called under the lock)."""
        self._booting.add(pod.id)
        self._cond.notify_all()

    def _boot_delay(self, cold: bool, *, base: float | None = None) -> float:
        f = self.faults
        if base is None:
            base = f.boot_cold_s if cold else f.boot_cached_s
        jitter = self.rng.uniform(1 - f.boot_jitter, 1 + f.boot_jitter) if f.boot_jitter else 1.0
        return max(0.0, base * jitter / self.speed)

    def _begin_boot(self, pod: Pod, mono: float, *, cold: bool, delay: float | None = None) -> None:
        pod.boot_kind = "cold" if cold else "cached"
        pod.boot_delay_s = self._boot_delay(cold) if delay is None else delay
        pod.boot_began_mono = mono
        pod.status = PROVISIONING
        pod.phase_until = mono + pod.boot_delay_s * _PROVISION_SHARE
        pod.running_since = None
        pod.ready_mono = None
        pod.started_at = None
        pod.awaiting_ready = False
        pod.starting_sandbox = False
        pod.probe_step = PROBE_FIRST_S

    # --- leaving the GPU-holding states --------------------------------------------------------------

    def _release(self, pod: Pod, status: str, mono: float) -> Sandbox | None:
        """Leave the GPU-holding states: stop billing, drop the sandbox (returned for stopping).

        The GPUs go back to stock; an EXITED or ERROR pod's host keeps its GPU for it until a new pod
        takes it (``host_gpu_taken_by``, set by the state model's create), and the GPUs this pod took
        from stopped pods' hosts go back to them. EXITED bills the volume disk."""
        if pod.billing_since is not None:
            pod.billed_s += mono - pod.billing_since
            pod.billing_since = None
        pod.stopping_until = None
        self._ending.discard(pod.id)
        pod.end_stopped(mono)
        if status == EXITED:
            pod.stopped_since = mono
        pod.released_mono = mono
        for other in self.pods.values():
            if other.host_gpu_taken_by == pod.id:
                other.host_gpu_taken_by = None
        pod.gpu_count = pod.spec_gpu_count
        pod.status = status
        pod.generation += 1
        pod.phase_until = None
        pod.awaiting_ready = False
        pod.starting_sandbox = False
        pod.running_since = None
        self._booting.discard(pod.id)
        if status == ERROR:
            pod.billing_since = mono  # an ERROR pod still exists and is not EXITED: it bills on
        return self._unpublish(pod)

    # --- the ticker --------------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        next_liveness = time.monotonic() + _LIVENESS_EVERY_S
        while True:
            probes: list[tuple[Pod, Sandbox, int]] = []
            starts: list[tuple[Pod, int]] = []
            dead: list[Sandbox] = []
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                if now >= next_liveness:
                    dead = self._reap_exited(now)
                    next_liveness = now + _LIVENESS_EVERY_S
                wake = min(now + 1.0, next_liveness)
                wake = min(wake, self._end_stops(now, dead))
                for pod_id in list(self._booting):
                    pod = self.pods[pod_id]
                    self._advance(pod, now, starts)
                    if pod.awaiting_ready and pod.sandbox is not None:
                        if pod.probing:
                            pass  # its probe's completion wakes us
                        elif pod.probe_next <= now:
                            pod.probing = True
                            probes.append((pod, pod.sandbox, pod.generation))
                        else:
                            wake = min(wake, pod.probe_next)
                    elif pod.phase_until is not None:
                        wake = min(wake, pod.phase_until)
            for pod, gen in starts:
                self._pool.submit(self._start_sandbox, pod, gen)
            for sb in dead:
                self._stop_later(sb)
            for pod, sb, gen in probes:
                self._probe_pool.submit(self._probe, pod, sb, gen)
            with self._cond:
                if self._stopping:
                    return
                delay = wake - time.monotonic()
                if delay > 0:
                    self._cond.wait(timeout=delay)

    def _end_stops(self, now: float, dead: list[Sandbox]) -> float:
        """Stops and terminations whose grace is over: their containers go (into ``dead``); returns when
        the next one is due (called under the lock)."""
        due = float("inf")
        for pod_id in list(self._ending):
            pod = self.pods[pod_id]
            until = pod.stopping_until
            if until is None:
                self._ending.discard(pod_id)
            elif until <= now:
                sb = self._release(pod, EXITED, until)
                log.info("emulator_pod_stop_done", pod_id=pod.id)
                if sb is not None:
                    dead.append(sb)
            else:
                due = min(due, until)
        keep = []
        for until, sb in self._lingering:
            if until <= now:
                dead.append(sb)
            else:
                keep.append((until, sb))
                due = min(due, until)
        self._lingering = keep
        return due

    def _reap_exited(self, now: float) -> list[Sandbox]:
        """RUNNING pods whose container died (sshd gone) become EXITED, as a real pod whose process ends."""
        dead = []
        for pod in self.pods.values():
            sb = pod.sandbox
            if pod.status == RUNNING and sb is not None and not sb.alive:
                self._release(pod, EXITED, now)
                pod.desired_status = EXITED
                pod.error = "container exited"
                pod.last_status_change = f"Exited: {js_date(time.time())}"
                log.warning("emulator_pod_container_exited", pod_id=pod.id)
                dead.append(sb)
        return dead

    def _advance(self, pod: Pod, now: float, starts: list[tuple[Pod, int]]) -> None:
        """Move one booting pod through its timed phases (called under the lock)."""
        if pod.phase_until is None or now < pod.phase_until:
            return
        if pod.status == PROVISIONING:
            pod.status = STARTING
            pod.phase_until = now + pod.boot_delay_s * (1 - _PROVISION_SHARE)
            if pod.phase_until > now:
                return
        if pod.status == STARTING and not pod.starting_sandbox and pod.sandbox is None:
            self._pulled.add((pod.image, pod.dc_id))
            pod.phase_until = None
            if pod.never_ready:
                # The image pull never finishes: STARTING forever, runtime null, billing on.
                self._booting.discard(pod.id)
                pod.stuck = True
                log.info("emulator_pod_stuck", pod_id=pod.id)
                return
            pod.starting_sandbox = True
            starts.append((pod, pod.generation))

    def _sandbox_env(self, pod: Pod) -> dict[str, str]:
        env = dict(pod.env)
        env.update(
            {"RUNPOD_POD_ID": pod.id, "RUNPOD_PUBLIC_IP": "127.0.0.1", "RUNPOD_GPU_COUNT": str(pod.gpu_count)}
        )
        return env

    @staticmethod
    def serves_ssh(pod: Pod) -> bool:
        """Whether the pod's container runs sshd: the image starts it only when PUBLIC_KEY is non-empty."""
        return bool(pod.env.get("PUBLIC_KEY")) and not pod.ssh_refuse

    def _start_sandbox(self, pod: Pod, gen: int) -> None:
        with self.lock:
            if pod.generation != gen or pod.status != STARTING:
                return
            volume = self.volumes.get(pod.volume_id) if pod.volume_id else None
            if volume is not None:
                volume_dir = volume.path
            else:
                volume_dir = pod.private_dir
                volume_dir.mkdir(parents=True, exist_ok=True)
            kwargs: dict[str, Any] = {
                "env": self._sandbox_env(pod),
                "volume_dir": volume_dir,
                "mount_path": pod.mount_path,
                "gpu_name": pod.gpu.id,
                "vram_mb": pod.gpu.memory_gb * 1024,
                "state_dir": self.state_dir / "pods",
                "ssh_refuse": pod.ssh_refuse,
            }
            far = self.faults.rtt_ms > 0
            serves = self.serves_ssh(pod)
        sb: Sandbox | None = None
        # Far away: the published port is a delaying relay's. It listens only where sshd will (elsewhere
        # connections must be refused, not accepted and reset), and it is reserved first because the
        # pod's RUNPOD_TCP_PORT_22 names it.
        public: RelayPort | None = None
        try:
            if far:
                public = self.relay.reserve()
                kwargs["public_port"] = public.port
            sb = self._sandbox_factory(pod.id, **kwargs)
            port = sb.start()
            if public is not None and serves:
                self.relay.forward(public, port)
        except Exception as exc:  # any sandbox failure is the container failing to start
            log.warning("emulator_sandbox_start_failed", pod_id=pod.id, error=repr(exc))
            stale: Sandbox | None = sb
            with self._cond:
                if pod.generation == gen and pod.status == STARTING:
                    self._release(pod, ERROR, time.monotonic())
                    pod.error = f"container failed to start: {exc}"
            if public is not None:
                self.relay.release(public)
            if stale is not None:
                _safe_stop(stale)
            return
        with self._cond:
            if pod.generation == gen and pod.status == STARTING:
                pod.sandbox = sb
                pod.ssh_port = public.port if public is not None else port
                pod.relay_port = public
                pod.starting_sandbox = False
                pod.awaiting_ready = True
                pod.probe_next = time.monotonic()
                self._cond.notify_all()
                return
        # The pod was stopped or terminated while its sandbox was starting.
        if public is not None:
            self.relay.release(public)
        _safe_stop(sb)

    def _probe(self, pod: Pod, sb: Sandbox, gen: int) -> None:
        try:
            # A pod without sshd (no PUBLIC_KEY, or refusing) has nothing to answer; like a real one, its
            # port is mapped as soon as the container runs, and connections to it are refused.
            ok = sb.ready() if self.serves_ssh(pod) else sb.alive
        except Exception as exc:  # a probe that blows up is a probe that failed
            log.debug("emulator_probe_error", pod_id=pod.id, error=repr(exc))
            ok = False
        with self._cond:
            pod.probing = False
            self._cond.notify_all()
            if pod.generation != gen or pod.status != STARTING or pod.sandbox is not sb:
                return
            if pod.stopping_until is not None:
                return  # a container being stopped never comes to serve
            now = time.monotonic()
            if ok:
                pod.status = RUNNING
                pod.awaiting_ready = False
                pod.running_since = now
                pod.ready_mono = now
                pod.started_at = time.time()
                self._booting.discard(pod.id)
                log.info(
                    "emulator_pod_ready",
                    pod_id=pod.id,
                    port=pod.ssh_port,
                    seconds=round(now - pod.created_mono, 3),
                )
            else:
                pod.probe_next = now + pod.probe_step
                pod.probe_step = min(pod.probe_step * 1.5, _PROBE_MAX_S)


def _safe_stop(sb: Sandbox, wipe: bool = False) -> None:
    try:
        # A test double may have no container disk to wipe (the protocol's optional stop_and_wipe).
        stop_and_wipe = getattr(sb, "stop_and_wipe", None) if wipe else None
        if stop_and_wipe is not None:
            stop_and_wipe()
        else:
            sb.stop()
    except Exception as exc:  # stopping is best effort; a leak is logged, not raised into a request
        log.warning("emulator_sandbox_stop_failed", error=repr(exc))
