"""The warm pool: idle workers' pods stopped instead of terminated, resumed before anything is spawned.

Where this sits in the pure core: :func:`orchestrator.core.policy.plan` hands each ``stopping`` and
``stopped`` row to :func:`pooled` before any other rule, trims the pool with :func:`trim`, and
:mod:`orchestrator.core.staffing` stops drained workers into it (:func:`can_stop`, :func:`stop`) and resumes
from it before spawning (:func:`resume`). Pure: reads the :class:`~orchestrator.core.draft.Draft`, appends
actions to it.

Runpod's docs ("Manage Pods"): pods with a network volume can be stopped as well as terminated; a stopped
pod frees its GPU, keeps (and bills, 0.20 USD/GB/month) its volume disk, loses its container disk, and
starts again on the same host, unless another user took that host's GPUs meanwhile (troubleshooting,
"Pod migration": the start is refused, or the pod comes back without a GPU).

* **Into the pool.** A drained worker with no task whose pod runs is stopped (``draining -> stopping``,
  :class:`StopPod`, reason ``pooled``) while the pool (stopping + stopped rows) is below
  ``WARM_POOL_MAX`` (and not while paused with ``WARM_POOL_TERMINATE_ON_PAUSE``); otherwise terminated as
  before (and, while the pod listing fails, terminated by its recorded id: whether its pod runs is
  not known). The row becomes ``stopped`` once the listing shows the pod EXITED (:class:`MarkStopped`). A
  stop not confirmed after ``STOP_RETRY_SEC`` is sent again, and after ``STOP_GIVE_UP_SEC`` the pod is
  terminated (``stop_failed``): it bills a GPU all the while.
* **Out of it.** Scale-up resumes stopped pods, the most recently stopped first (the likeliest to find
  their GPU free), before it spawns (:class:`ResumePod`); a resume refused for lack of GPUs ends the pod
  (``resume_no_gpu``, not a boot failure) and the next tick spawns. A ``resuming`` row whose pod is
  still listed EXITED ``RESUME_RETRY_SEC`` after the request gets the start again; one not serving
  ``RESUME_TIMEOUT_SEC`` after it fails (``boot_timeout``).
* **Trimmed.** Stopped pods are terminated past ``WARM_POOL_TTL_SEC`` (``pool_ttl``), beyond
  ``WARM_POOL_MAX`` (``pool_shrink``, the oldest first) and, while paused, with
  ``WARM_POOL_TERMINATE_ON_PAUSE`` (``pool_paused``).
* **The operator.** A pooled row with ``metadata.terminate_requested_at`` is never resumed: a ``stopped``
  one is terminated at the next tick (``operator_request``, as a draining one), a ``stopping`` one once
  its stop is confirmed (as on pause or when the pool shrinks), or by ``STOP_GIVE_UP_SEC``.
* **Ours.** A pooled row claims its pod like any live row, so an EXITED pod of a stopped row is neither
  an orphan nor a failed pod; a stopped row does not count toward ``MAX_ACTIVE_GPUS`` and its spend is
  its disk (:meth:`~orchestrator.core.draft.Draft.spend`).
"""

from __future__ import annotations

from datetime import datetime

from orchestrator.core.actions import MarkStopped, ResumePod, StopPod
from orchestrator.core.draft import Draft, age, stopped_disk_usd_per_hr, ts_key, volume_disk_gb
from orchestrator.core.observed import PodView, Worker
from orchestrator.core.states import PodStatus, Reason, WorkerState

STOP_RETRY_SEC = 30.0
STOP_GIVE_UP_SEC = 180.0
RESUME_RETRY_SEC = 30.0
# A resume starts a cached image on a known host: far quicker than a cold boot's worst case.
RESUME_TIMEOUT_SEC = 600.0


def size(d: Draft) -> int:
    """Rows in the pool or on their way in (stopping + stopped)."""
    return sum(1 for w in d.workers if w.status.pooled)


def pooled(d: Draft, worker: Worker, pod: PodView | None) -> bool:
    """A ``stopping`` or ``stopped`` row this tick: confirm, retry or end its stop. True when it is a
    stopped pod that could be resumed."""
    d.leaving.add(worker.id)  # never serving capacity, whatever happens below
    if not d.pods_known:
        return False  # whether the pod is stopped, running or gone is unknown this tick
    if not d.alive(pod):
        if d.absent(worker, pod):
            d.mark_gone(worker)
        return False
    assert pod is not None
    if d.touchable_id(worker, pod) is None:
        return False
    if not pod.known:
        # Listed, but in a state this tick cannot read: neither confirmed stopped nor taken for one
        # started by someone. What needs no state still holds: a stop never confirmed is given up on,
        # and a stopped row stays in the pool (its time to live, the pool's size, a pause and the
        # operator's request still end it).
        if worker.status is WorkerState.STOPPING:
            _give_up(d, worker, pod)
            return False
        return _kept_unless_asked(d, worker, pod)
    if worker.status is WorkerState.STOPPING:
        # An operator's request waits for the stop like a paused or shrinking pool does: ending the row
        # from ``stopped`` keeps its ``stopped_at`` bookkeeping, which the spend views read.
        if pod.status is PodStatus.EXITED:
            d.actions.append(MarkStopped(reason=Reason.POD_STOPPED, worker_id=worker.id))
            return False
        if pod.status is PodStatus.ERROR:
            # An ERROR pod cannot be stopped (the openapi: EXITED and ERROR allow start and terminate
            # only; a stop is answered 409) and bills until it ends: asked again every 30 s up to the
            # give-up, it billed three minutes for nothing.
            d.terminate(worker, pod, Reason.STOP_FAILED)
            return False
        asked = age(d.now, worker.pod_stop_requested_at)
        if not _give_up(d, worker, pod) and (asked is None or asked >= STOP_RETRY_SEC):
            d.actions.append(
                StopPod(reason=Reason.STOP_RETRY, worker_id=worker.id, runpod_id=pod.id, transition_from=None)
            )
        return False
    if pod.status is not PodStatus.EXITED:
        # Running or starting while the row says stopped: nobody of ours asked (a resume transitions
        # first), and it bills a GPU with no worker process of ours on it.
        d.terminate(worker, pod, Reason.POD_FAILED)
        return False
    return _kept_unless_asked(d, worker, pod)


def _give_up(d: Draft, worker: Worker, pod: PodView) -> bool:
    """A stop not confirmed ``STOP_GIVE_UP_SEC`` after the row moved to ``stopping``: terminated."""
    since = age(d.now, worker.status_changed_at)
    if since is None or since < STOP_GIVE_UP_SEC:
        return False
    d.terminate(worker, pod, Reason.STOP_FAILED)
    return True


def _kept_unless_asked(d: Draft, worker: Worker, pod: PodView) -> bool:
    """A stopped row stays resumable unless the operator asked for its end: kept out of the resumable
    list then, since a resume would bill a GPU for a whole boot only for the request to end it."""
    if worker.terminate_requested_at is None:
        return True
    d.terminate(worker, pod, Reason.OPERATOR_REQUEST)
    return False


def trim(d: Draft, stopped: list[Worker]) -> list[Worker]:
    """Terminate stopped pods past their time to live, beyond ``WARM_POOL_MAX``, or on pause when asked;
    return the rest, the most recently stopped first (the order they are resumed in)."""
    s = d.settings
    ttl = float(s.warm_pool_ttl_sec)
    # Rows on their way in take room too.
    room = int(s.warm_pool_max) - sum(1 for w in d.workers if w.status is WorkerState.STOPPING)
    keep: list[Worker] = []
    for worker in sorted(stopped, key=lambda w: (-ts_key(stopped_since(w)), w.id)):
        pod = d.pod_of[worker.id]
        assert pod is not None
        stopped_for = age(d.now, stopped_since(worker))
        if d.snapshot.paused and s.warm_pool_terminate_on_pause:
            d.terminate(worker, pod, Reason.POOL_PAUSED)
        elif ttl > 0 and stopped_for is not None and stopped_for >= ttl:
            d.terminate(worker, pod, Reason.POOL_TTL)
        elif len(keep) >= room:
            d.terminate(worker, pod, Reason.POOL_SHRINK)
        else:
            keep.append(worker)
    return keep


def stopped_since(worker: Worker) -> datetime | None:
    return worker.stopped_at or worker.status_changed_at


def can_stop(d: Draft, worker: Worker, pod: PodView, pool: int) -> bool:
    """Whether this drained, idle worker goes to the pool (rather than being terminated)."""
    s = d.settings
    return (
        worker.terminate_requested_at is None
        and pool < int(s.warm_pool_max)
        and pod.status is PodStatus.RUNNING
        and not (d.snapshot.paused and s.warm_pool_terminate_on_pause)
    )


def stop(d: Draft, worker: Worker, pod: PodView) -> None:
    d.leaving.add(worker.id)
    d.actions.append(
        StopPod(
            reason=Reason.POOLED,
            worker_id=worker.id,
            runpod_id=pod.id,
            transition_from=worker.status,
            disk_gb=volume_disk_gb(d.settings) if worker.disk_gb is None else None,
        )
    )


def resume(
    d: Draft, stopped: list[Worker], missing: int, room: int, headroom: float | None
) -> tuple[int, float]:
    """Resume up to ``missing`` stopped pods within ``room`` (MAX_ACTIVE_GPUS) and ``headroom`` (the spend
    cap, None without one); return how many, and the spend they add."""
    resumed = 0
    added = 0.0
    for worker in stopped:
        if resumed >= missing or resumed >= room:
            break
        pod = d.pod_of[worker.id]
        assert pod is not None
        price = d.worker_price(worker, pod)
        disk = stopped_disk_usd_per_hr(d.settings, worker)  # billed now; the resume bills the GPU instead
        if headroom is not None and (price is None or price - disk > headroom - added + 1e-9):
            break
        added += (price or 0.0) - disk
        d.leaving.add(worker.id)
        d.actions.append(ResumePod(reason=Reason.RESUME, worker_id=worker.id, runpod_id=pod.id))
        resumed += 1
    return resumed, added


def resuming(d: Draft, worker: Worker, pod: PodView | None) -> bool:
    """A ``resuming`` row whose pod is still listed EXITED: the start has not taken (or died with the
    process that sent it). Re-send it now and then; True when the row was handled here."""
    if worker.status is not WorkerState.RESUMING or pod is None or pod.status is not PodStatus.EXITED:
        return False
    asked = age(d.now, worker.resume_requested_at)
    if (asked is None or asked >= RESUME_RETRY_SEC) and d.touchable_id(worker, pod) is not None:
        d.actions.append(ResumePod(reason=Reason.RESUME, worker_id=worker.id, runpod_id=pod.id))
    return True
