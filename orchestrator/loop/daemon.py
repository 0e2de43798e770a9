"""The long-running process: apscheduler drives the controller's tick; new tasks wake it early.

Sits between the CLI (``orchestrator run``) and the controller. Ticks run one at a time on a thread of
their own, which waits on one "wake" flag; apscheduler's interval job, the LISTEN thread and the wake
probe only raise that flag. A wake-up that arrives while a tick runs leaves the flag raised, so another
tick starts as soon as this one ends; several coalesce into one. (Running the tick inside the
scheduler's job instead loses such a wake-up: apscheduler refuses to start a job whose previous run it
has not wound up, and its winding up includes its own log line, so a re-run asked for from inside the
tick is skipped until the next interval whenever that logging is slow.) Over direct Postgres a LISTEN
thread turns the ``orchestrator_tasks`` notification into a wake-up. SIGTERM/SIGINT let the running
tick finish (for up to ``TICK_JOIN_SEC``), release the lease and return 0.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, Protocol

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "orchestrator_tasks"
# How long a stop waits for the tick in progress before it releases the lease anyway. A tick can take
# longer while Runpod is slow (each call retried for up to 120 s); the controller then waits up to 60 s
# for actions in flight. Both together stay inside the 180 s a supervisor gives (TimeoutStopSec, the
# compose file's stop_grace_period): killed instead, the daemon would leave its lease to expire, and
# the next process would wait that long before acting.
TICK_JOIN_SEC = 60.0
# How soon the main thread sees a SIGTERM/SIGINT its handler recorded (the handler itself takes no lock).
SIGNAL_POLL_SEC = 0.2
# A tick still running after this long is hung, not slow: its slowest legitimate path (each Runpod call
# retried for up to 120 s, actions in flight up to 60 s, every SSH command and SQL statement bounded)
# ends within minutes. A hung tick manages nothing while the pods bill, and a supervisor restarts only a
# process that exits: the daemon exits 1 (`tick_stalled`), and the next process takes the lease over.
TICK_STALL_SEC = 900.0
# After a stall, how long each step of the way out may take (the lease's release, then the rest).
STALL_EXIT_STEP_SEC = 30.0


@contextlib.contextmanager
def stop_signals() -> Iterator[list[int]]:
    """SIGTERM and SIGINT, recorded in the list it yields while inside (the previous handlers after).

    The handler takes no lock, not even an Event's: it runs in the main thread between two of its
    bytecodes, which may be inside the log's write lock (a line written, not yet flushed) or an event's.
    Logging from there, or setting an event, would wait for ever on a lock its own thread holds, every
    other thread's log line behind it. A list append takes none; the main thread looks at the list
    every SIGNAL_POLL_SEC."""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def wait_for_stop(received: list[int]) -> int:
    """Block until ``stop_signals`` recorded a signal; return it."""
    while not received:
        time.sleep(SIGNAL_POLL_SEC)
    return received[0]


class Tickable(Protocol):
    def tick(self) -> Any: ...

    def shutdown(self) -> None: ...


class Daemon:
    """Runs ``controller.tick`` every ``interval`` seconds until stopped."""

    def __init__(
        self,
        controller: Tickable,
        interval: float,
        *,
        listen_url: str | None = None,
        follower_interval: float | None = None,
        probe: Callable[[], Any] | None = None,
        probe_interval: float = 0.0,
        tick_join_sec: float = TICK_JOIN_SEC,
        tick_stall_sec: float = TICK_STALL_SEC,
        stall_exit_step_sec: float = STALL_EXIT_STEP_SEC,
    ) -> None:
        self.controller = controller
        self.tick_join_sec = tick_join_sec
        self.tick_stall_sec = tick_stall_sec
        self.stall_exit_step_sec = stall_exit_step_sec
        # When the running tick began (time.monotonic()), None between ticks: the main thread reads it.
        self._tick_started: float | None = None
        # run_forever ended because a tick hung (the caller must not wait for its threads at exit).
        self.stalled = False
        self.interval = interval
        # A follower re-checks the lease more often than it would tick, so that it takes over within
        # the lease's lifetime after the leader dies, not a poll interval later.
        self.follower_interval = follower_interval if follower_interval is not None else interval
        self.listen_url = listen_url
        self._stop = threading.Event()
        # SIGTERM/SIGINT as the handler recorded them (run_forever): a list append takes no lock.
        self._signals: list[int] = []
        self._wake = threading.Event()
        # The tick thread ended without being asked to (run_forever then exits non-zero).
        self.died = False
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._job: Any = None
        self._ticker: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        # Without LISTEN (Supabase's REST API), a cheap query polled every few seconds stands in for
        # the notification: a changed answer means new work, and a tick runs at once.
        self.probe = probe
        self.probe_interval = probe_interval
        self._prober: threading.Thread | None = None

    # -- scheduling -----------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._ticks()
        except BaseException:
            # Only a BaseException gets here (the ticks survive every Exception): a SystemExit from a
            # library, say. A process whose ticks have stopped must not stay up, since nothing would end
            # its pods and a supervisor restarts only a process that exits: run_forever returns 1.
            log.exception("tick_thread_died")
            self.died = True
            self._stop.set()

    def _ticks(self) -> None:
        while True:
            self._wake.wait()
            if self._stop.is_set() or self._signals:
                # A signal recorded (even while start() was still running, before the main thread
                # turns it into a stop) starts no new tick: no lease taken, no pod spawned on the way out.
                return
            # Cleared before the tick: a wake-up from here on is for work this tick may not see.
            self._wake.clear()
            follower = False
            self._tick_started = time.monotonic()
            try:
                result = self.controller.tick()
                follower = getattr(result, "role", None) == "follower"
            except Exception:
                # The controller turns expected failures into data; anything reaching here is a bug,
                # and the loop must survive it all the same.
                log.exception("tick_crashed")
            finally:
                self._tick_started = None
            if follower and self.follower_interval < self.interval and not self._wake.is_set():
                self._poll_in(self.follower_interval)

    def _poll_in(self, delay: float) -> None:
        if self._job is not None:
            try:
                self._job.modify(next_run_time=datetime.now(UTC) + timedelta(seconds=delay))
            except Exception:  # the scheduler may be shutting down
                log.debug("reschedule_ignored")

    def _poll(self) -> None:
        self._wake.set()

    def wake(self, why: str = "notify") -> None:
        """Run a tick as soon as possible (now, or right after the running one)."""
        log.debug("daemon_wake", why=why)
        self._wake.set()

    # -- LISTEN/NOTIFY ----------------------------------------------------------------------------

    def _listen(self) -> None:
        import psycopg

        backoff = 1.0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.listen_url or "", autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    log.info("listen_started", channel=NOTIFY_CHANNEL)
                    backoff = 1.0
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.wake("task_queued")
            except Exception as exc:
                log.warning("listen_failed", error=str(exc), retry_in_sec=backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    # -- the wake probe ---------------------------------------------------------------------------

    def _probe_once(self) -> Any:
        assert self.probe is not None
        try:
            return self.probe()
        except Exception as exc:  # a failed probe only delays the wake-up to the next poll
            log.debug("wake_probe_failed", error=str(exc)[:200])
            return None

    def _probe_loop(self, baseline: Any) -> None:
        # The baseline was read before the first tick was scheduled, so a task queued at any moment
        # after that first tick's snapshot changes the answer and is never missed.
        last = baseline
        while not self._stop.wait(self.probe_interval):
            answer = self._probe_once()
            if answer is None:
                continue
            if answer != last:
                self.wake("queue_probe")
            last = answer

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        # Once, before anything is scheduled: what the provider already knows will go wrong (no SSH key,
        # say), and what it refuses (a key with a passphrase: ConfigError, exit 2). Checked after the
        # first tick, the daemon had spawned pods and then exited, leaving them billing with nobody to
        # manage them (the systemd unit does not restart on exit 2).
        warnings = getattr(getattr(self.controller, "provider", None), "startup_warnings", None)
        settings = getattr(self.controller, "settings", None)
        # An operator who starts the workers by hand chose their version: the pin is theirs, not ours.
        hands_off = settings is not None and not getattr(settings, "auto_start_worker_process", True)
        for check, detail in warnings() if callable(warnings) else ():
            if not (hands_off and check == "worker_unpinned"):
                log.warning("startup_warning", check=check, detail=detail)
        probing = not self.listen_url and self.probe is not None and self.probe_interval > 0
        baseline = self._probe_once() if probing else None
        self._ticker = threading.Thread(target=self._loop, name="tick", daemon=True)
        self._ticker.start()
        self._job = self._scheduler.add_job(
            self._poll,
            "interval",
            seconds=self.interval,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
            id="tick",
        )
        self._scheduler.start()
        if self.listen_url:
            self._listener = threading.Thread(target=self._listen, name="listen-notify", daemon=True)
            self._listener.start()
        elif probing:
            self._prober = threading.Thread(
                target=self._probe_loop, args=(baseline,), name="wake-probe", daemon=True
            )
            self._prober.start()
        log.info(
            "daemon_started",
            poll_sec=self.interval,
            listen=bool(self.listen_url),
            wake_probe_sec=self.probe_interval if self._prober else None,
        )

    def stop(self) -> None:
        self._stop.set()

    def wait(self) -> None:
        self._stop.wait()

    def shutdown(self) -> None:
        """Let the running tick finish, stop scheduling, release the lease."""
        self._stop.set()
        try:
            self._scheduler.shutdown(wait=True)
        except Exception:
            log.debug("scheduler_already_stopped")
        # Raised so the tick thread, idle or done with its tick, sees the stop and returns.
        self._wake.set()
        if self._ticker is not None:
            self._ticker.join(timeout=self.tick_join_sec)
            if self._ticker.is_alive():
                # Its later writes and provider calls are fenced by the lease released below, so the
                # tick cannot act once this process no longer leads; the thread dies with the process.
                log.warning("shutdown_tick_unfinished", waited_sec=self.tick_join_sec)
        for thread in (self._listener, self._prober):
            if thread is not None:
                thread.join(timeout=5)
        self.controller.shutdown()
        log.info("daemon_stopped")

    def run_forever(self) -> int:
        """Block until SIGTERM/SIGINT, then shut down cleanly. Returns the exit code."""

        with stop_signals() as received:
            self._signals = received
            self._run_until_stopped(received)
        return 1 if self.died else 0

    def _run_until_stopped(self, received: list[int]) -> None:
        try:
            self.start()
            while not received and not self._stop.wait(SIGNAL_POLL_SEC):
                running = self.tick_running_sec()
                if running is not None and running > self.tick_stall_sec:
                    log.error(
                        "tick_stalled",
                        running_sec=round(running),
                        limit_sec=self.tick_stall_sec,
                        hint="exiting 1 so that the supervisor restarts the daemon",
                    )
                    self.died = self.stalled = True
                    break
            if received:
                log.info("signal_received", signal=signal.Signals(received[0]).name)
        finally:
            if self.stalled:
                self._end_stalled()
            else:
                self.shutdown()

    def _end_stalled(self) -> None:
        """The way out after a stall, each step bounded: whatever hangs the tick may hang it too.

        The lease goes first: the ordinary shutdown waits for the tick (hung, by definition) and then for
        the actions in flight before it releases, and a process that exits still holding the lease
        leaves the next one waiting out its TTL. The hung tick cannot act once it is released: its
        writes and provider calls are fenced."""
        self.tick_join_sec = 0.0
        release = getattr(getattr(self.controller, "lease", None), "release", None)
        for name, step in (("lease_release", release), ("shutdown", self.shutdown)):
            if not callable(step):
                continue
            ending = threading.Thread(target=step, name=f"stalled-{name}", daemon=True)
            ending.start()
            ending.join(timeout=self.stall_exit_step_sec)
            if ending.is_alive():
                log.warning("stalled_exit_step_unfinished", step=name, waited_sec=self.stall_exit_step_sec)

    def tick_running_sec(self) -> float | None:
        """How long the running tick has run (None between ticks)."""
        started = self._tick_started
        return None if started is None else time.monotonic() - started
