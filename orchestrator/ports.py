"""The two ports the control loop talks through, the database and the provider, with typed results.

Where this sits: between the pure core (:mod:`orchestrator.core`, which these types build on) and the
loop (:mod:`orchestrator.loop`), which depends on these protocols only. Each has one real adapter
(:class:`orchestrator.adapters.db.base.Database` over PostgREST or psycopg;
:class:`orchestrator.adapters.provider.RunpodProvider` over Runpod's REST v2 or GraphQL and SSH) and
one in-memory stand-in in the virtual-time simulator (:mod:`orchestrator.studies`). The provider's
answers are values (:class:`SpawnedPod`, :class:`BootCheck`, :class:`ResumeResult`), not the dicts of the
original orchestrator (banodoco/reigh-worker-orchestrator): those are built
from these by :mod:`orchestrator.runpod_client` for the users of the original's API.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# --- typed results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpawnedPod:
    """A pod the provider created for a worker (it is still booting)."""

    worker_id: str
    runpod_id: str
    gpu_type: str | None  # the GPU type's display name, as the priority list names it
    data_center: str | None
    cost_per_hr: float | None
    # (GPU type, data center) candidates that had no capacity before this one: the loop backs them off.
    capacity_misses: tuple[Mapping[str, Any], ...] = ()
    # Everything else the provider said, for the original's dict (``RunpodClient.spawn_worker``).
    details: Mapping[str, Any] = field(default_factory=dict)


BootStatus = Literal["not_ready", "ready", "failed"]


@dataclass(frozen=True)
class BootCheck:
    """How a booting worker's pod answered the initialization checks.

    ``not_ready``: the pod boots or its sshd does not answer yet (try again next tick); ``ready``: every
    check passed (``ssh_details`` and the pinned ``host_key_fingerprint`` to record); ``failed``: a
    check ran and failed, or the pod cannot become ready (``step`` and ``error`` say which and why).
    ``ssh_error`` (refused / timeout / auth_failed / host_key_changed / other) tells SSH failures apart.
    """

    status: BootStatus
    worker_id: str
    runpod_id: str
    step: str | None = None
    error: str | None = None
    ssh_error: str | None = None
    detail: str | None = None
    actual_status: str | None = None
    ssh_details: Mapping[str, Any] | None = None
    host_key_fingerprint: str | None = None
    checks: Mapping[str, str] | None = None


StartState = Literal["running", "exited", "unknown"]


@dataclass(frozen=True)
class StartWatch:
    """What a pod says about the worker start it was given (:meth:`Provider.watch_start`).

    ``running``: a process of the start holds its lock (the setup steps or the worker itself);
    ``exited``: the lock is there and free, so nothing of the start lives; ``unknown``: no answer (SSH),
    or nothing to tell by (no lock file, no ``flock``). ``phase`` is ``setup`` until the start's log says
    it launched the worker, then ``worker``; ``tail``, for a start that ended, is the end of the worker's
    log, secrets masked.
    """

    status: StartState
    phase: str | None = None
    detail: str = ""
    tail: str = ""


ResumeStatus = Literal["resumed", "no_gpu", "failed", "gone"]


@dataclass(frozen=True)
class ResumeResult:
    """How a stopped pod answered a resume (:meth:`Provider.resume`).

    ``resumed``: the provider accepted the start and the pod has its GPU (it boots: check it as after a
    spawn). ``no_gpu``: its host has no free GPU for it, refused ("There are not enough free GPUs on the
    host machine to start this pod") or started with none (``gpu_count`` 0, a pod left running for the
    caller to terminate). ``failed``: anything else went wrong (``detail`` says what; the pod is as it
    was). ``gone``: the provider no longer knows the pod (terminated, or never ours).
    """

    status: ResumeStatus
    detail: str = ""
    gpu_count: int | None = None


@dataclass(frozen=True)
class Requeued:
    """Tasks a requeue moved: back to Queued, or dead-lettered as Failed at the attempt limit."""

    requeued: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.requeued) + len(self.failed)

    @classmethod
    def from_json(cls, answer: Any) -> Requeued:
        """From the requeue functions' ``{"requeued": [...], "failed": [...]}`` (anything else: none)."""
        if not isinstance(answer, Mapping):
            return cls()
        return cls(
            tuple(str(i) for i in answer.get("requeued") or ()),
            tuple(str(i) for i in answer.get("failed") or ()),
        )


def released_ids(answer: Any) -> tuple[str, ...]:
    """The task ids of ``orch_release_parents``' ``{"released": [...]}`` (anything else: none)."""
    if not isinstance(answer, Mapping):
        return ()
    return tuple(str(i) for i in answer.get("released") or ())


# --- the ports ----------------------------------------------------------------------------------------


class Database(Protocol):
    """What the loop needs of the database: the SQL functions of ``docs/database.md``, each one call.

    Every mutating call takes the lease's fencing token; a stale token raises ``LeaseLost``.
    """

    def snapshot(self, prefix: str | None = None) -> dict[str, Any]: ...

    def queue_probe(self) -> dict[str, Any]: ...

    def lease_acquire(self, holder: str, ttl_sec: float) -> dict[str, Any]: ...

    def lease_renew(self, holder: str, token: int, ttl_sec: float) -> dict[str, Any]: ...

    def lease_release(self, holder: str, token: int) -> bool: ...

    def lease_take_over(self, holder: str, from_holder: str, ttl_sec: float) -> dict[str, Any]: ...

    def register_worker(
        self, token: int, worker_id: str, instance_type: str, metadata: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    def transition_worker(
        self, token: int, worker_id: str, to: str, reason: str, metadata: Mapping[str, Any] | None = None
    ) -> dict[str, Any]: ...

    def merge_worker_metadata(
        self, token: int, worker_id: str, metadata: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    def requeue_worker_tasks(
        self, token: int, worker_id: str, reason: str, max_attempts: int = 3
    ) -> dict[str, Any]: ...

    def requeue_stranded_tasks(
        self, token: int, worker_id: str, task_ids: Sequence[str], reason: str, max_attempts: int = 3
    ) -> dict[str, Any]: ...

    def requeue_unowned_tasks(
        self, token: int, older_than_sec: float, reason: str, max_attempts: int = 3
    ) -> dict[str, Any]: ...

    def release_parents(self, token: int, worker_id: str, reason: str) -> dict[str, Any]: ...

    def set_task_attempt_limit(self, token: int, max_attempts: int) -> int: ...

    def prune_events(self, token: int, retention_days: int, batch: int) -> dict[str, Any]: ...

    def append_event(
        self,
        token: int,
        kind: str,
        *,
        worker_id: str | None = None,
        runpod_id: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        cost_usd: float | None = None,
    ) -> int: ...

    def close(self) -> None: ...


class Provider(Protocol):
    """What the loop needs of the provider: pods, the catalog, and a worker's boot steps over SSH."""

    def list_pods(self) -> Sequence[Any]: ...

    def list_gpu_types(self, *, with_availability: bool = False, fresh: bool = False) -> Sequence[Any]: ...

    def spawn_volumes(self) -> Sequence[Any]: ...

    def spawn(
        self,
        worker_id: str,
        worker_env: Mapping[str, str] | None = None,
        *,
        gpu_types: Sequence[str] | None = None,
        avoid: Collection[tuple[str, str | None]] = (),
    ) -> SpawnedPod: ...

    def check_boot(
        self,
        worker_id: str,
        runpod_id: str,
        *,
        expected_fingerprint: str | None = None,
        pod: Any = None,  # the pod as this tick listed it: the provider need not ask for it again
    ) -> BootCheck: ...

    def start_process(
        self, runpod_id: str, worker_id: str, *, expected_fingerprint: str | None = None
    ) -> bool: ...

    def watch_start(
        self, runpod_id: str, worker_id: str, *, expected_fingerprint: str | None = None
    ) -> StartWatch: ...

    def terminate(self, runpod_id: str) -> bool: ...

    def stop(self, runpod_id: str) -> bool: ...

    def resume(self, runpod_id: str) -> ResumeResult: ...

    def pod_status(self, runpod_id: str) -> dict[str, Any] | None: ...

    def log_tail(
        self,
        runpod_id: str,
        worker_id: str,
        *,
        lines: int,
        timeout: float,
        expected_fingerprint: str | None = None,
    ) -> str: ...
