"""A wake-up is never lost: one that arrives while a tick runs starts another tick when it ends.

The daemon's poll is set to 300 s in every test here, so a second tick within the deadline can only
come from the wake-up. apscheduler (``max_instances=1``) refuses to start a job while the previous run
of that job has not been wound up, and winding up includes apscheduler's own log line for the run. So a
re-run asked for from inside the running tick used to be dropped whenever the scheduler's thread looked
before the tick's thread got there: a slow log handler (a blocked stderr pipe, journald under load)
makes that certain, which is what the first test does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from orchestrator.loop.daemon import Daemon


class BlockingController:
    """Each tick waits until released; records when ticks start."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.release = threading.Event()
        self.tick_started = threading.Condition()

    def tick(self) -> object:
        with self.tick_started:
            self.started.append(time.monotonic())
            self.tick_started.notify_all()
        self.release.wait(30)
        return None

    def shutdown(self) -> None:
        self.release.set()

    def wait_for_ticks(self, n: int, deadline: float) -> bool:
        with self.tick_started:
            return self.tick_started.wait_for(lambda: len(self.started) >= n, timeout=deadline)


class SlowHandler(logging.Handler):
    """Holds up whoever logs through it, as a full pipe would."""

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.3)


@pytest.fixture
def slow_scheduler_logs() -> Iterator[None]:
    logger = logging.getLogger("apscheduler")
    handler = SlowHandler(level=logging.INFO)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def test_a_wake_during_a_tick_starts_another_tick(slow_scheduler_logs: None) -> None:
    controller = BlockingController()
    daemon = Daemon(controller, 300.0)
    daemon.start()
    try:
        assert controller.wait_for_ticks(1, 10), "the first tick never started"
        daemon.wake("test")  # arrives while tick 1 runs
        controller.release.set()
        assert controller.wait_for_ticks(2, 10), "the wake-up that arrived during tick 1 was lost"
    finally:
        daemon.shutdown()


def test_wakes_during_a_tick_coalesce_into_one_more_tick() -> None:
    controller = BlockingController()
    daemon = Daemon(controller, 300.0)
    daemon.start()
    try:
        assert controller.wait_for_ticks(1, 10)
        for _ in range(5):
            daemon.wake("test")
        controller.release.set()
        assert controller.wait_for_ticks(2, 10)
        # Tick 2 is released too (the event stays set): no third tick may follow without a new wake.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and len(controller.started) < 3:
            time.sleep(0.01)
        assert len(controller.started) == 2
    finally:
        daemon.shutdown()


def test_a_wake_while_idle_ticks_at_once_and_shutdown_waits_for_the_tick() -> None:
    controller = BlockingController()
    controller.release.set()
    daemon = Daemon(controller, 300.0)
    daemon.start()
    try:
        assert controller.wait_for_ticks(1, 10)
        daemon.wake("test")
        assert controller.wait_for_ticks(2, 10)
    finally:
        daemon.shutdown()


class DyingController:
    """A tick that ends its thread: what no ``except Exception`` in the loop can catch."""

    def tick(self) -> object:
        raise SystemExit("a library called sys.exit() inside a tick")

    def shutdown(self) -> None:
        pass


def test_a_daemon_whose_ticks_stopped_exits_non_zero_for_its_supervisor_to_restart() -> None:
    # Staying up with no tick thread would look healthy to systemd while nothing ends any pod.
    daemon = Daemon(DyingController(), interval=300)
    daemon.start()
    try:
        assert daemon._stop.wait(10), "the process would have stayed up with no ticks"
        assert daemon.died
    finally:
        daemon.shutdown()


class StuckController:
    """A tick stuck in a provider call (Runpod slow, its retries running), and the lease's release."""

    def __init__(self) -> None:
        self.in_tick = threading.Event()
        self.unstick = threading.Event()
        self.released = threading.Event()

    def tick(self) -> object:
        self.in_tick.set()
        self.unstick.wait(60)
        return None

    def shutdown(self) -> None:
        self.released.set()


def test_a_stop_releases_the_lease_even_while_a_tick_is_stuck() -> None:
    # Waiting for the stuck tick, the process outlived its supervisor's stop timeout and was killed
    # with the lease still held: the next process then waited the lease's TTL before acting.
    controller = StuckController()
    daemon = Daemon(controller, interval=300, tick_join_sec=0.2)
    daemon.start()
    try:
        assert controller.in_tick.wait(10), "the first tick never started"
        stopper = threading.Thread(target=daemon.shutdown, daemon=True)
        with capture_logs() as logs:
            stopper.start()
            assert controller.released.wait(30), "the lease was never released"
            stopper.join(30)
        assert not stopper.is_alive()
        assert [e["event"] for e in logs if e["event"] == "shutdown_tick_unfinished"] == [
            "shutdown_tick_unfinished"
        ]
    finally:
        controller.unstick.set()


class _Lease:
    def __init__(self) -> None:
        self.released = threading.Event()

    def release(self) -> None:
        self.released.set()


class StuckEverywhereController(StuckController):
    """A hung tick whose way out hangs too: the actions in flight never finish, so the ordinary
    shutdown (wait for them, then release the lease) never reaches the release."""

    def __init__(self) -> None:
        super().__init__()
        self.lease = _Lease()

    def shutdown(self) -> None:
        self.unstick.wait(60)
        self.released.set()


def test_a_hung_tick_makes_the_daemon_exit_non_zero_for_its_supervisor_to_restart() -> None:
    """A tick that never returns manages nothing while the pods bill, and a supervisor restarts only a
    process that exits: past the stall limit run_forever logs ``tick_stalled`` and returns 1 in bounded
    time, having released the lease first (the next process need not wait out its TTL), although the
    tick and the actions in flight are still stuck."""
    controller = StuckEverywhereController()
    daemon = Daemon(controller, interval=300, tick_stall_sec=0.5, stall_exit_step_sec=0.5)
    started = time.monotonic()
    try:
        with capture_logs() as logs:
            code = daemon.run_forever()
        assert code == 1 and daemon.stalled
        assert controller.in_tick.is_set() and controller.lease.released.is_set()
        assert not controller.released.is_set()  # the ordinary shutdown is still stuck: bounded, left
        stalled = [e for e in logs if e["event"] == "tick_stalled"]
        assert len(stalled) == 1 and stalled[0]["log_level"] == "error", logs
        assert time.monotonic() - started < 20
    finally:
        controller.unstick.set()


def test_a_signal_that_lands_while_the_main_thread_holds_the_log_lock_still_stops_the_daemon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM right after a log line: the handler runs in the main thread between two bytecodes, here
    while it still holds the log's write lock (the line written, its flush not done). A handler that
    logged would wait for ever on its own thread's lock, and every other thread's line behind it: the
    daemon froze until the supervisor's SIGKILL, its lease held (seen once in the e2e metrics-port test)."""
    import io
    import os
    import signal

    from structlog._output import WRITE_LOCKS

    from orchestrator.logs import configure_logging

    out = io.StringIO()
    before = structlog.get_config()
    configure_logging(stream=out, level="INFO", fmt="json")
    try:
        daemon = Daemon(BlockingController(), interval=3600)  # type: ignore[arg-type]
        daemon.tick_join_sec = 5
        freed_by_watchdog = threading.Event()
        handler_done = threading.Event()

        # A line first: the lock structlog's writer takes for this stream exists once it wrote one (if
        # structlog stopped keeping it there, this fails rather than the test passing on nothing).
        structlog.get_logger("test").info("before_the_signal")
        log_lock = WRITE_LOCKS[out]

        def start() -> None:
            log_lock.acquire()

            def watchdog() -> None:
                # A plain Lock may be released by any thread: the way out of the deadlock under test.
                if not handler_done.wait(10):
                    freed_by_watchdog.set()
                    log_lock.release()

            threading.Thread(target=watchdog, daemon=True).start()
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line
            handler_done.set()
            if not freed_by_watchdog.is_set():
                log_lock.release()

        monkeypatch.setattr(daemon, "start", start)
        assert daemon.run_forever() == 0
        assert not freed_by_watchdog.is_set(), "the signal handler waited on the log's lock"
        assert "signal_received" in out.getvalue() and "daemon_stopped" in out.getvalue()
    finally:
        structlog.configure(**before)


def test_a_signal_before_the_daemon_has_started_starts_no_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM while start() still runs (its start-up checks, the first wake probe): the first tick,
    scheduled for at once, must not take the lease and spawn on the way out."""
    import os
    import signal

    controller = BlockingController()
    controller.release.set()  # a tick that did run would end at once
    daemon = Daemon(controller, interval=3600)  # type: ignore[arg-type]
    started = daemon.start

    def start() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # recorded by the handler before anything is scheduled
        started()

    monkeypatch.setattr(daemon, "start", start)
    assert daemon.run_forever() == 0
    assert controller.started == []
