"""What an action handler may do outside itself, and the daemon's way of doing it.

Where this sits: :mod:`orchestrator.loop.executor` writes each action's steps once, as generators
over :class:`Effects`; every call to the database or the provider is ``yield from effects.call(...)``.
Two implementations carry them out. :class:`LiveEffects` (here) is the daemon's: each call is made at
once, blocking, against the real ports (:mod:`orchestrator.ports`), and never yields, so a handler runs
to its end in one step (:func:`run_now`). The virtual-time simulator's
(``orchestrator.studies.driver``) makes the same calls against its in-memory database and provider and
yields the modelled latency of each, so the simulator advances its clock between the steps of the very
code the daemon runs.

Calls that are not I/O (the clock, logging, metrics, the crash points of the recovery tests) are plain
methods: they take no time in either world.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, cast

import structlog

from orchestrator.core.states import WorkerState
from orchestrator.ports import (
    BootCheck,
    Database,
    Provider,
    Requeued,
    SpawnedPod,
    StartWatch,
    released_ids,
)

T = TypeVar("T")

Steps = Generator[float, None, T]
"""A handler's (or one effect's) progress: it yields delays in virtual seconds and returns its result.
The daemon's effects never yield; the simulator's yield the modelled latency of each call."""

# Fault injection for the crash-recovery tests: the daemon SIGKILLs itself at the named point, the way
# an OOM kill or a power cut would, so the tests can prove the next run repairs whatever was half done.
# Points: after_register (intent row written, no pod), after_create (pod created, its id not recorded),
# before_terminate and after_terminate (around the provider's termination call), before_stop and
# after_stop, before_resume and after_resume (around the warm pool's provider calls).
CRASH_POINT_ENV = "ORCHESTRATOR_TEST_CRASH_AT"
LOG_TAIL_LINES = 40
DIAGNOSTICS_SSH_TIMEOUT_SEC = 8.0
# The most the diagnostics of a failing worker may hold its ending back (pod status, then the log tail).
# They come first because a terminated pod has no log left to read; but the calls retry on their own
# (the provider's policy: up to 4 attempts of a 30 s HTTP timeout), and while Runpod hung they kept a
# failed worker's GPU billing and its tasks waiting for two minutes and more.
DIAGNOSTICS_DEADLINE_SEC = 15.0


class Log(Protocol):
    """The structlog methods the handlers use (one event name per line, fields as keywords)."""

    def debug(self, event: str, **fields: Any) -> Any: ...

    def info(self, event: str, **fields: Any) -> Any: ...

    def warning(self, event: str, **fields: Any) -> Any: ...


class ResumeAnswer(Protocol):
    """The provider's answer to a resume (``ports.ResumeResult``): ``status`` is ``resumed``, ``no_gpu``
    (the host's GPUs were taken: refused, or started without one), ``gone`` or ``failed``."""

    @property
    def status(self) -> str: ...

    @property
    def detail(self) -> str: ...


class PoolProvider(Protocol):
    """The provider's warm-pool calls (``ports.Provider.stop`` and ``resume``): REST v2's
    ``POST /v2/pods/{id}/action`` with ``stop`` / ``start``, or GraphQL's ``podStop`` / ``podResume``."""

    def stop(self, runpod_id: str) -> bool: ...

    def resume(self, runpod_id: str) -> ResumeAnswer: ...


class Effects(Protocol):
    """Everything a handler does outside itself. The I/O calls return :data:`Steps`."""

    holder: str  # who acts: recorded with each pod created, as proof that only the leader spawns
    token: int  # the lease's fencing token every write carries
    log: Log

    def now(self) -> datetime: ...

    def register_worker(
        self, worker_id: str, instance_type: str, metadata: Mapping[str, Any]
    ) -> Steps[None]: ...

    def transition(
        self, worker_id: str, to: WorkerState, reason: str, metadata: Mapping[str, Any] | None = None
    ) -> Steps[Mapping[str, Any]]: ...

    def merge_metadata(self, worker_id: str, metadata: Mapping[str, Any]) -> Steps[None]: ...

    def requeue(self, worker_id: str, reason: str) -> Steps[Requeued]: ...

    def requeue_stranded(self, worker_id: str, task_ids: tuple[str, ...], reason: str) -> Steps[Requeued]: ...

    def requeue_unowned(self, older_than_sec: float, reason: str) -> Steps[Requeued]: ...

    def release_parents(self, worker_id: str, reason: str) -> Steps[tuple[str, ...]]: ...

    def event(
        self,
        kind: str,
        *,
        worker_id: str | None = None,
        runpod_id: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        cost_usd: float | None = None,
    ) -> Steps[None]: ...

    def fence(self, before: str) -> Steps[None]: ...

    def spawn(
        self, worker_id: str, gpu_types: Sequence[str], avoid: Collection[tuple[str, str | None]]
    ) -> Steps[SpawnedPod]: ...

    def check_boot(
        self, worker_id: str, runpod_id: str, expected_fingerprint: str | None
    ) -> Steps[BootCheck]: ...

    def start_process(
        self, worker_id: str, runpod_id: str, expected_fingerprint: str | None
    ) -> Steps[bool]: ...

    def watch_start(
        self, worker_id: str, runpod_id: str, expected_fingerprint: str | None
    ) -> Steps[StartWatch]: ...

    def terminate(self, runpod_id: str) -> Steps[bool]: ...

    def stop(self, runpod_id: str) -> Steps[bool]: ...

    def resume(self, runpod_id: str) -> Steps[ResumeAnswer]: ...

    def pod_status(self, runpod_id: str) -> Steps[Mapping[str, Any] | None]: ...

    def log_tail(self, runpod_id: str, worker_id: str, fingerprint: str | None = None) -> Steps[str]: ...

    def count_spawn_failure(self, reason: str) -> None: ...

    def observe_boot(self, gpu_type: str | None, seconds: float) -> None: ...

    def crash_point(self, name: str) -> None: ...


def at_once(call: Callable[[], T]) -> Steps[T]:
    """A call made when the handler reaches it, taking no virtual time.

    A generator, so that creating it does not make the call: the call happens inside the handler's own
    ``try`` around ``yield from``, where its exceptions are handled.
    """
    return call()
    yield 0.0  # unreachable: it makes this function a generator


def run_now(steps: Steps[T]) -> T:
    """Run a handler whose effects never wait (the daemon's) to its end; its result."""
    try:
        delay = next(steps)
    except StopIteration as done:
        return done.value
    steps.close()
    raise RuntimeError(f"a blocking effect yielded a virtual delay ({delay}); the daemon cannot wait on one")


class NullLog:
    """A logger that says nothing (the simulator runs a day of actions in seconds)."""

    def debug(self, event: str, **fields: Any) -> None:
        return None

    def info(self, event: str, **fields: Any) -> None:
        return None

    def warning(self, event: str, **fields: Any) -> None:
        return None


class Metrics(Protocol):
    """The daemon's metrics the handlers feed (``orchestrator.loop.metrics.Metrics``)."""

    def count_spawn_failure(self, reason: str) -> None: ...

    def observe_boot(self, gpu_type: str | None, seconds: float) -> None: ...


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@dataclass
class LiveEffects:
    """The daemon's effects: each call made at once against the real database and provider."""

    db: Database
    provider: Provider
    token: int
    holder: str
    fence_call: Callable[[int, str], None]  # the lease's fence: renews with our token or raises LeaseLost
    metrics: Metrics
    max_task_attempts: int
    worker_env: Mapping[str, str] = field(default_factory=dict)
    clock: Callable[[], float] = field(default=lambda: datetime.now(UTC).timestamp())
    log: Log = field(default_factory=lambda: structlog.get_logger("orchestrator.loop.executor"))
    # The provider's pods (``orchestrator.adapters.runpod.base.Pod``) as this tick listed them, by id:
    # a boot check reads its pod from here rather than asking the provider for it again.
    listed_pods: Mapping[str, Any] = field(default_factory=dict)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def register_worker(self, worker_id: str, instance_type: str, metadata: Mapping[str, Any]) -> Steps[None]:
        return at_once(lambda: _none(self.db.register_worker(self.token, worker_id, instance_type, metadata)))

    def transition(
        self, worker_id: str, to: WorkerState, reason: str, metadata: Mapping[str, Any] | None = None
    ) -> Steps[Mapping[str, Any]]:
        return at_once(lambda: self.db.transition_worker(self.token, worker_id, to.value, reason, metadata))

    def merge_metadata(self, worker_id: str, metadata: Mapping[str, Any]) -> Steps[None]:
        return at_once(lambda: _none(self.db.merge_worker_metadata(self.token, worker_id, metadata)))

    def requeue(self, worker_id: str, reason: str) -> Steps[Requeued]:
        return at_once(
            lambda: Requeued.from_json(
                self.db.requeue_worker_tasks(self.token, worker_id, reason, self.max_task_attempts)
            )
        )

    def requeue_stranded(self, worker_id: str, task_ids: tuple[str, ...], reason: str) -> Steps[Requeued]:
        return at_once(
            lambda: Requeued.from_json(
                self.db.requeue_stranded_tasks(
                    self.token, worker_id, task_ids, reason, self.max_task_attempts
                )
            )
        )

    def requeue_unowned(self, older_than_sec: float, reason: str) -> Steps[Requeued]:
        return at_once(
            lambda: Requeued.from_json(
                self.db.requeue_unowned_tasks(self.token, older_than_sec, reason, self.max_task_attempts)
            )
        )

    def release_parents(self, worker_id: str, reason: str) -> Steps[tuple[str, ...]]:
        return at_once(lambda: released_ids(self.db.release_parents(self.token, worker_id, reason)))

    def event(
        self,
        kind: str,
        *,
        worker_id: str | None = None,
        runpod_id: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        cost_usd: float | None = None,
    ) -> Steps[None]:
        return at_once(
            lambda: _none(
                self.db.append_event(
                    self.token,
                    kind,
                    worker_id=worker_id,
                    runpod_id=runpod_id,
                    reason=reason,
                    details=details,
                    cost_usd=cost_usd,
                )
            )
        )

    def fence(self, before: str) -> Steps[None]:
        return at_once(lambda: self.fence_call(self.token, before))

    def spawn(
        self, worker_id: str, gpu_types: Sequence[str], avoid: Collection[tuple[str, str | None]]
    ) -> Steps[SpawnedPod]:
        return at_once(
            lambda: self.provider.spawn(worker_id, self.worker_env, gpu_types=list(gpu_types), avoid=avoid)
        )

    def check_boot(
        self, worker_id: str, runpod_id: str, expected_fingerprint: str | None
    ) -> Steps[BootCheck]:
        listed = self.listed_pods.get(runpod_id)
        return at_once(
            lambda: self.provider.check_boot(
                worker_id, runpod_id, expected_fingerprint=expected_fingerprint, pod=listed
            )
        )

    def start_process(self, worker_id: str, runpod_id: str, expected_fingerprint: str | None) -> Steps[bool]:
        return at_once(
            lambda: self.provider.start_process(
                runpod_id, worker_id, expected_fingerprint=expected_fingerprint
            )
        )

    def watch_start(
        self, worker_id: str, runpod_id: str, expected_fingerprint: str | None
    ) -> Steps[StartWatch]:
        return at_once(
            lambda: self.provider.watch_start(runpod_id, worker_id, expected_fingerprint=expected_fingerprint)
        )

    def terminate(self, runpod_id: str) -> Steps[bool]:
        return at_once(lambda: self.provider.terminate(runpod_id))

    def stop(self, runpod_id: str) -> Steps[bool]:
        return at_once(lambda: cast(PoolProvider, self.provider).stop(runpod_id))

    def resume(self, runpod_id: str) -> Steps[ResumeAnswer]:
        return at_once(lambda: cast(PoolProvider, self.provider).resume(runpod_id))

    def pod_status(self, runpod_id: str) -> Steps[Mapping[str, Any] | None]:
        return at_once(lambda: within(DIAGNOSTICS_DEADLINE_SEC, lambda: self.provider.pod_status(runpod_id)))

    def log_tail(self, runpod_id: str, worker_id: str, fingerprint: str | None = None) -> Steps[str]:
        return at_once(
            lambda: within(
                DIAGNOSTICS_DEADLINE_SEC,
                lambda: self.provider.log_tail(
                    runpod_id,
                    worker_id,
                    lines=LOG_TAIL_LINES,
                    timeout=DIAGNOSTICS_SSH_TIMEOUT_SEC,
                    expected_fingerprint=fingerprint,
                ),
            )
        )

    def count_spawn_failure(self, reason: str) -> None:
        self.metrics.count_spawn_failure(reason)

    def observe_boot(self, gpu_type: str | None, seconds: float) -> None:
        self.metrics.observe_boot(gpu_type, seconds)

    def crash_point(self, name: str) -> None:
        if os.environ.get(CRASH_POINT_ENV) == name:
            self.log.warning("test_crash_point", point=name)
            os.kill(os.getpid(), signal.SIGKILL)


def within(seconds: float, call: Callable[[], T]) -> T:
    """``call()``'s answer, or TimeoutError once ``seconds`` have passed. The call goes on in a daemon
    thread until its own timeouts end it; nothing waits for it."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller, whatever it was
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="diagnostics", daemon=True).start()
    if not done.wait(seconds):
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return cast(T, box["value"])


def _none(_answer: object) -> None:
    return None
