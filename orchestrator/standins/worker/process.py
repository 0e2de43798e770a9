"""The simulated Reigh worker (Headless-Wan2GP) that runs inside emulated pods, speaking the real protocol.

Where this sits: ``orchestrator.standins`` emulates Runpod. Each emulated network volume gets the checkout
the start command looks for (:func:`lay_out_volume`, ``orchestrator/standins/worker/volume.py``), so
the orchestrator starts this worker over SSH exactly as it starts the real one::

    python worker.py --supabase-url URL --supabase-access-token TOKEN --worker <id> [--wgp-profile 1 ...]

(``python headless.py ...`` for the older layout runs the same worker). From then on it talks only to
the app's public surface, never to a function of ours: the Edge Functions, PostgREST tables and the
heartbeat RPC, with the real calls' paths, headers, bodies, status handling, retries and intervals.

Two revisions (``SIM_WORKER_REVISION``), both public:

- ``22cbba9`` (the default): banodoco/reigh-worker @22cbba9 (2026-04-11), the commit
  ``docs/worker-start.md`` tells operators to pin (``WORKER_GIT_COMMIT``). ``worker.py`` is a shim for
  ``source/runtime/worker/server.py``, whose differences from 4d09184 are followed here:
  ``source/core/db/task_claim.py`` ``poll_next_task`` (no read of its own task; ``task-counts`` then a
  claim whatever the counts said, 02b1eab; ``same_model_only`` and ``max_task_wait_minutes`` in the
  claim), ``source/models/wgp/generation_helpers.py`` (``update-worker-model {worker_id,
  current_model}``, which the app accepts), ``source/runtime/worker/guardian.py`` (``Authorization:
  Bearer`` beside ``apikey``), ``server.py``'s shutdown (SIGTERM as SIGINT, and the main loop's
  ``finally`` terminating the guardian and sending one last beat ``terminated``), and its fatal errors:
  ``source/task_handlers/queue/task_processor.py`` runs the fatal-error handler in the generation thread,
  whose ``worker_loop`` catches the ``FatalWorkerError`` it raises (``except BaseException``) and goes
  on, so the row is marked ``error``, the task fails through the main loop's ordinary path and the
  process polls on, asking for tasks on a broken GPU until the orchestrator ends the pod (the database
  refuses its claims once the row is marked). It is also the harsher worker for the orchestrator: a
  claim whose answer is lost leaves the task In Progress under a live worker that never runs it (the
  orchestrator finds it once the worker holds a newer task), a fatal error leaves a live process polling,
  and a shutdown is a ``terminated`` beat, not a ``crashed`` one. The signal handlers are
  installed just before the loop (the real worker's too, after its start-up: a SIGTERM during its
  Wan2GP import ends it without the last beat).
- ``4d09184``: banodoco/Reigh-Worker @4d09184 (2026-03-01), the sources below.

Sources (public; re-read for each change):

- banodoco/Reigh-Worker @4d09184 (2026-03-01): ``worker.py`` (arguments, start-up, the main loop:
  poll, process, sleep ``--poll-interval`` when idle and 1 s after a task, ``FatalWorkerError`` ->
  exit 1), ``heartbeat_guardian.py`` and ``source/task_handlers/worker/heartbeat_utils.py`` (the
  guardian process), ``source/core/db/task_claim.py`` (recovery read, ``task-counts``,
  ``claim-next-task``), ``source/core/db/task_status.py`` and ``edge_helpers.py`` (``complete_task``
  with base64 file data under 2 MB, ``update-task-status`` for failures, requeues and the billing
  reset, the retry helper), ``source/core/db/config.py`` (retryable statuses),
  ``source/task_handlers/worker/fatal_error_handler.py`` (retryable error patterns, the fatal path),
  ``source/task_handlers/queue/task_processor.py`` (model switch, billing reset, generation),
  ``source/models/wgp/generation_helpers.py`` (``update-worker-model``).
- peteromallet/Headless-Wan2GP @50066ea (2026-01-16), which Reigh-Worker continues: the same
  ``worker.py``, ``heartbeat_guardian.py`` and ``source/db_operations.py``; ``headless.py`` was renamed
  ``worker.py`` there in 01cee19 (2025-08-08) and exists in neither repository today.
- banodoco/reigh-worker-orchestrator @fcec14f, ``gpu_orchestrator/runpod/worker_startup.template.sh``:
  how the current launcher starts it (``uv run ... python worker.py --supabase-url
  --supabase-access-token --worker --wgp-profile 1``; ``SUPABASE_SERVICE_ROLE_KEY`` in the env).
- For orchestrator tasks: Reigh-Worker ``worker.py`` (the orchestrator outcomes of the main loop),
  ``source/core/db/task_claim.py`` (the deferred recovery and ``_orchestrator_has_incomplete_children``),
  ``source/task_handlers/travel/orchestrator.py`` (``handle_travel_orchestrator_task``: the idempotency
  check, the segment chain, the returned messages), ``source/core/params/task_result.py``,
  ``source/core/db/task_dependencies.py`` (``get_orchestrator_child_tasks``), ``task_completion.py``
  (``add_task_to_db``); and banodoco/reigh-app @3a6fd3d, ``supabase/functions/create-task/index.ts`` with
  ``resolvers/workerPassthrough.ts``, ``get-orchestrator-children/index.ts`` and
  ``complete_task/orchestratorCore.ts`` (the app completes the parent with its last child).

What it does, as the real worker does:

- **Start.** ``--reigh-access-token`` (or the legacy ``--supabase-access-token``) is required (exit 1
  without); ``--worker`` defaults to ``$RUNPOD_POD_ID``, else ``local-worker``; ``--supabase-url``
  defaults to upstream's production project, which here is an address that resolves nowhere (so a
  launch without the flag never reaches our database, as the real one would reach theirs instead).
  The REST client's key: ``SUPABASE_SERVICE_ROLE_KEY``, else ``--supabase-anon-key``, else
  ``SUPABASE_ANON_KEY`` (none: exit 1). Every other flag of the real parser is accepted and ignored
  (``--db-type``, ``--wgp-*``, ``--main-output-dir``, ...); an unknown flag is an error (exit 2), as
  with argparse there. ``--migrate-only`` exits 0.
- **Heartbeat.** A separate guardian process (``reigh_worker/guardian.py``) posts
  ``func_worker_heartbeat_with_logs`` at start, then every 20 s, with the log entries the worker
  queued; one ``crashed`` beat when the worker process dies abruptly.
- **Poll** (every ``--poll-interval`` s, default 10, while idle; 1 s after a task). 22cbba9:
  ``task-counts``, then ``claim-next-task`` with ``same_model_only: true`` and
  ``max_task_wait_minutes`` (``MAX_TASK_WAIT_MINUTES``, 5) whatever the counts said (200: a task; 204:
  none; anything else: none). 4d09184: GET its own In Progress task (recovery: run it without
  claiming), then ``task-counts`` (no claim when ``queued_only`` is 0 and no ``eligible_queued``), then
  ``claim-next-task`` with ``{worker_id, run_type}``.
- **A task.** ``update-worker-model`` when the task's model differs from the loaded one (22cbba9's
  ``current_model`` body the app accepts; 4d09184's ``model`` it answers 400), ``update-task-status`` ``In Progress`` with
  ``reset_generation_started_at``, the "generation" (``params.duration_sec``, or
  ``sim_duration_sec``, default 2 s, divided by ``SIM_WORKER_SPEED``), then a small output file
  completed through ``complete_task`` with ``file_data`` (base64) and ``filename``; a failure is
  ``update-task-status`` ``Failed`` with the error text as ``output_location``, or, for the worker's
  retryable error texts, ``Queued`` with ``attempts: 1``, ``error_details`` and ``clear_worker``.
- **An orchestrator task** (a type ending in ``_orchestrator``), run as the travel orchestrator's
  handler runs one, without a model load or a billing reset: it needs ``params.orchestrator_details``
  (else it fails, "orchestrator_details missing"); it asks ``get-orchestrator-children`` which of its
  children exist; then it creates the missing ones through ``create-task``: a chain of N
  ``travel_segment`` tasks, each ``dependant_on`` the one before, each naming the parent as
  ``orchestrator_task_id_ref`` (with ``orchestrator_run_id``, ``segment_index``, ``is_first_segment``,
  ``is_last_segment``, ``child_order``, ``project_id``) and carrying the parent's ``duration_sec`` (and
  ``model``) as its own; then it reports "still orchestrating" (``update-task-status {In Progress,
  output_location: "Successfully enqueued N new segment tasks for run R. ..."}``), which the app refuses
  with a 409, and goes back to polling: the row stays In Progress under this worker (22cbba9 never
  looks at it again; what follows about running it again is 4d09184's). A failed
  ``create-task`` fails the parent (or requeues it, for the retryable error texts), the children made so
  far staying. The app completes the parent when its last child completes. Until then the poll reads
  the parent first, defers it, claims what it can (the children included), and runs the parent again only
  when the claim found nothing and, if ``task-counts`` said nothing is queued, no child is unfinished.
  Run again with every child there, it reports a failed child as a failure of its own, a chain not yet
  finished as "still orchestrating" again (409), and a finished chain with ``complete_task`` naming the
  last child's output (its ``storage_path``): the app's UPDATE is guarded on In Progress, so a parent the
  app completed already stays as the app left it; no child is ever created twice.
- **Fatal error** (CUDA/NVML), once a category's consecutive errors reach the handler's threshold
  (``FATAL_THRESHOLDS``: two in a row for ``cuda_driver`` and ``nvml``, one for the others; a task that
  succeeds, or an error of another category, restarts the count; below it the task fails as any other
  and nothing is marked): the handler's client reads its ``workers`` row, PATCHes ``status:
  error`` with ``error_reason``, ``error_time``, ``self_terminated``, then PATCHes the task back to
  Queued naming ``error_details`` (a column ``tasks`` lacks: it fails, as in production), and the
  worker exits 1 (its guardian is terminated with it: no ``crashed`` beat). 22cbba9 does not exit: its
  main loop reports the task ``Failed`` with the error text (``update-task-status``, or ``Queued`` for
  a retryable text) and polls on.

Test knobs in ``params`` (the real worker would run them as generation parameters): ``duration_sec``,
``fail: true`` (with ``error``: the failure text, e.g. "Connection refused" for a retryable one),
``crash: true`` (the process dies halfway through: ``os._exit``), ``fatal: true`` or a category
(``cuda_hardware``, ``cuda_driver``, ``nvml``, ``system_critical``: the fatal path halfway through),
``model`` (the model to "load"); for an orchestrator, ``segments`` (N, 2 by default; the app's own
``orchestrator_details.num_new_segments_to_generate`` wins when set) and ``duration_sec`` (each
child's). Environment knobs, passed in the pod's environment at creation:
``SIM_WORKER_HEARTBEAT_SEC`` (20), ``SIM_WORKER_POLL_SEC`` (the ``--poll-interval``),
``SIM_WORKER_SPEED`` (1), ``SIM_WORKER_REVISION`` (``22cbba9`` or ``4d09184``), and the real worker's own
``MAX_TASK_WAIT_MINUTES`` (5, 22cbba9 only).

Known differences from the real worker:

- No models, GPU or Wan2GP: "generation" is a sleep, the output a few bytes; outputs of 2 MB or more
  (``generate-upload-url`` and a PUT) are never produced; no thumbnail (the real worker extracts one
  with OpenCV and sends ``first_frame_data`` when it can read the video: ours is not a video).
- No start-up time beyond Python's: the real one imports Wan2GP and may preload a model (minutes)
  between its first heartbeat and its first claim.
- Every ``*_orchestrator`` type runs the travel orchestrator's handler (the real worker has other
  handlers for ``join_clips_orchestrator`` and ``edit_video_orchestrator``, and none for other names), with
  none of its media work (prompts, frames, guide videos, LoRAs, phase configs). Its chain is the
  sequential one (VACE with ``chain_segments``, or SVI) without the ``travel_stitch`` task the real handler
  adds after the last segment (and without the ``join_clips_orchestrator`` of a ``stitch_config``): the
  app completes the parent on its last segment whether or not a stitch is still queued, so the stitch
  would only be one more ordinary task after the parent. The re-run's check therefore counts no stitch.
- Of an orchestrator's reads only the children's are made: not the check that each ``dependant_on``
  exists before ``create-task``, the reads that verify a new child is visible and its dependency saved,
  or the parent's status before each child (a parent Cancelled meanwhile would make the real handler
  cancel the children it made and fail); nor the duplicate clean-up (``cleanup_duplicate_child_tasks``)
  of the re-run, which here never finds duplicates to remove.
- ``create-task``'s body is the app's current passthrough shape, not the legacy one both public workers
  send (see ``orchestrator/standins/worker/edge.py``).
- A failed child fails nothing by itself here: the app's ``update-task-status`` would cascade it
  (``cascade_task_failure``) and the stand-in does so only where the database has that function; without
  it the later children wait on their dependency forever, and this worker holds the parent, as the real
  one would, until something else ends the parent.
- ``load_dotenv`` is not called (the laid-out checkout has no ``.env``); ``.env`` values the real
  worker would read are not simulated.
- The fatal path of 22cbba9: the real generation thread marks the task failed before its handler reads
  and PATCHes the row, and the main loop, polling the task every 2 s, may report it ``Failed`` and claim
  again before that PATCH lands; here the row is marked first, so its report always finds the task held
  (``in_task``), and the next claim always finds the mark.
- The fatal path of 4d09184: in Reigh-Worker the failing task PATCH raises postgrest's ``APIError``,
  which the handler does not catch, so whether the process then exits is not evident from the source;
  we exit 1, as the handler intends (22cbba9's does not exit, as modelled).
- A malformed answer the real worker would crash on (e.g. ``task-counts`` totals that are not numbers)
  is logged and read as "no answer" here.
- SIGINT (and with 22cbba9 SIGTERM): both end on ``KeyboardInterrupt`` (exit 0; the real main loop
  catches it, logs "Shutting down..." and stops its queue and heartbeat). An interrupt that lands in a finalizer is lost to
  Python (printed as "ignored"); the real worker would then go on polling, ours also keeps a flag and
  stops at its next turn. Kinder, and on purpose: the orchestrator never interrupts a worker (it stops
  or terminates the pod), so only our own test harness sends SIGINT, and it needs the exit to be sure.
- The older entry ``headless.py`` (2025-05, ``--db-type`` defaulting to sqlite) spoke an older
  protocol; launched as ``headless.py``, this worker speaks today's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from orchestrator.core import errors
from orchestrator.standins.worker import guardian as guardian_mod
from orchestrator.standins.worker.edge import (
    EdgeClient,
    TableClient,
    mark_worker_for_termination,
    retryable_error,
)
from orchestrator.standins.worker.volume import DEFAULT_ENTRIES, DEFAULT_WORKER_DIR
from orchestrator.standins.worker.volume import lay_out_volume as _lay_out_volume

log = structlog.get_logger(__name__)

# Upstream's default --supabase-url is its own production project. A simulated worker must never reach
# it: this address has the same meaning for us (not our database) and resolves nowhere (RFC 2606).
UPSTREAM_DEFAULT_URL = "https://upstream-production.supabase.invalid"
DEFAULT_POLL_SEC = 10
AFTER_TASK_SEC = 1.0
DEFAULT_DURATION_SEC = 2.0
# The fake nvidia-smi of an emulated pod reads the used VRAM from here (orchestrator/standins/sandbox_image.py).
GPU_STATE_FILE = "/tmp/.sim-gpu-used-mb"
IDLE_VRAM_MB = 512
BUSY_VRAM_MB = 16384
ORCHESTRATOR_TYPES_NEEDING_PROJECT = frozenset({"travel_orchestrator", "edit_video_orchestrator"})
# The upstream revisions this worker can behave as (SIM_WORKER_REVISION; see the module docstring): the
# default is the one docs/worker-start.md tells operators to pin.
CURRENT_REVISION = "22cbba9"
OLDER_REVISION = "4d09184"
REVISIONS = (CURRENT_REVISION, OLDER_REVISION)
# reigh-worker 22cbba9 server.py: int(os.getenv("MAX_TASK_WAIT_MINUTES", "5")), sent with every claim.
DEFAULT_MAX_TASK_WAIT_MINUTES = 5
# What an orchestrator creates, and how many when its params do not say (see the module docstring).
CHILD_TASK_TYPE = "travel_segment"
DEFAULT_SEGMENTS = 2
# A child in one of these is no longer awaited by the poll's check; the handler counts the failed ones.
FINISHED_STATUSES = frozenset({"complete", "failed", "cancelled", "canceled", "error"})
FAILED_STATUSES = frozenset({"failed", "cancelled", "canceled", "error"})
# The fatal error categories of the worker's handler and an error text of each.
FATAL_ERRORS: Mapping[str, str] = {
    "cuda_hardware": "GPU has fallen off the bus",
    "cuda_driver": "CUDA driver initialization failed, you might not have a CUDA gpu",
    "nvml": "Failed to initialize NVML: could not load libnvidia-ml",
    "system_critical": "Segmentation fault (core dumped)",
}
# Consecutive fatal errors of one category before the handler marks the row (fatal_error_handler.py
# FATAL_ERROR_PATTERNS "threshold"): a change of category restarts the count, a task that succeeds ends it.
FATAL_THRESHOLDS: Mapping[str, int] = {"cuda_hardware": 1, "cuda_driver": 2, "nvml": 2, "system_critical": 1}
# A few bytes standing for a video (the real outputs are MP4 files; this is not a readable one).
OUTPUT_BYTES = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(256)) * 4


def _env_float(name: str, default: float, *, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise errors.ConfigError([f"{name} must be a number, got {raw!r}"]) from exc
    if value < minimum:
        raise errors.ConfigError([f"{name} must be >= {minimum}, got {value}"])
    return value


# --- the command line ------------------------------------------------------------------------------


def build_parser(prog: str = "worker.py") -> argparse.ArgumentParser:
    """The real worker's parser (Reigh-Worker ``worker.py`` ``parse_args``), flag for flag."""
    p = argparse.ArgumentParser(prog, description="Simulated Reigh worker (WanGP Worker Server)")
    p.add_argument("--main-output-dir", type=str, default="./outputs")
    p.add_argument("--poll-interval", type=int, default=DEFAULT_POLL_SEC)
    p.add_argument("--debug", action="store_true")
    p.add_argument("--worker", type=str, default=None)
    p.add_argument("--save-logging", type=str, nargs="?", const="logs/worker.log", default=None)
    p.add_argument("--migrate-only", action="store_true")
    p.add_argument("--colour-match-videos", action="store_true")
    p.add_argument("--mask-active-frames", dest="mask_active_frames", action="store_true", default=True)
    p.add_argument("--no-mask-active-frames", dest="mask_active_frames", action="store_false")
    p.add_argument("--queue-workers", type=int, default=1)
    p.add_argument("--preload-model", type=str, default="")
    p.add_argument("--db-type", type=str, default="supabase")
    p.add_argument("--supabase-url", type=str, default=UPSTREAM_DEFAULT_URL)
    p.add_argument("--reigh-access-token", type=str, default=None)
    p.add_argument("--supabase-access-token", type=str, default=None)
    p.add_argument("--supabase-anon-key", type=str, default=None)
    for name, kind in (
        ("attention-mode", str),
        ("compile", str),
        ("profile", int),
        ("vae-config", int),
        ("boost", int),
        ("transformer-quantization", str),
        ("transformer-dtype-policy", str),
        ("text-encoder-quantization", str),
        ("vae-precision", str),
        ("mixed-precision", str),
        ("preload-policy", str),
        ("preload", int),
    ):
        p.add_argument(f"--wgp-{name}", type=kind, default=None)
    return p


# --- the worker ----------------------------------------------------------------------------------------


class ReighWorker:
    """The main loop of ``worker.py``: poll, process one task, sleep; forever."""

    def __init__(
        self,
        worker_id: str,
        edge: EdgeClient,
        table: TableClient,
        *,
        output_dir: Path,
        poll_sec: float,
        speed: float = 1.0,
        log_queue: Any = None,
        gpu_state_file: str | None = None,
        preload_model: str | None = None,
        revision: str = CURRENT_REVISION,
        max_task_wait_minutes: int = DEFAULT_MAX_TASK_WAIT_MINUTES,
    ) -> None:
        self.worker_id = worker_id
        # reigh-worker 22cbba9 (default) or Reigh-Worker 4d09184: see the module docstring.
        self.current = revision == CURRENT_REVISION
        self.max_task_wait_minutes = max_task_wait_minutes
        self.edge = edge
        self.table = table
        self.output_dir = output_dir
        self.poll_sec = poll_sec
        self.speed = speed
        self.log_queue = log_queue
        self.gpu_state_file = gpu_state_file
        self.model: str | None = None
        # The fatal-error handler's consecutive count and its category (reset by a task that succeeds).
        self.fatal_count = 0
        self.fatal_category: str | None = None
        self.processed = 0
        # Set by the SIGINT handler: an interrupt that lands in a finalizer (a socket's or a response's
        # __del__) is printed as "ignored" and lost; the loop still ends at its next turn.
        self.interrupted = False
        self.log = log.bind(worker_id=worker_id)
        if preload_model:
            self._switch_model(preload_model)

    # -- what the guardian and the pod's nvidia-smi see --------------------------------------------

    def say(self, level: str, message: str, task_id: str | None = None, **metadata: Any) -> None:
        guardian_mod.offer(
            self.log_queue, guardian_mod.log_entry(level.upper(), message, task_id, **metadata)
        )

    def _publish_vram(self, busy: bool) -> None:
        if self.gpu_state_file is None:
            return
        try:
            Path(self.gpu_state_file).write_text(f"{BUSY_VRAM_MB if busy else IDLE_VRAM_MB}\n")
        except OSError as exc:
            self.log.debug("gpu_state_write_failed", error=str(exc))

    # -- the poll ----------------------------------------------------------------------------------

    def next_task(self) -> dict[str, Any] | None:
        """One poll: :meth:`_poll_current` (22cbba9) or :meth:`_poll_older` (4d09184)."""
        return self._poll_current() if self.current else self._poll_older()

    def _poll_current(self) -> dict[str, Any] | None:
        """Reigh-worker 22cbba9 ``source/core/db/task_claim.py`` ``poll_next_task``: ``task-counts``, read
        for its log only, then ``claim-next-task`` whatever it said (02b1eab: the counts leave parents
        out), with ``same_model_only`` and ``max_task_wait_minutes``. No read of its own In Progress task
        (``check_my_assigned_tasks`` returns None: "heartbeat handles recovery"), so a task whose claim
        answer was lost stays In Progress under this worker, never run, and a parent waiting on its
        children is never run again: the app completes it with its last child."""
        counts = self.edge.task_counts()
        if counts is not None:
            raw_totals = counts.get("totals")
            totals: Mapping[str, Any] = raw_totals if isinstance(raw_totals, dict) else {}
            self.log.debug("task_counts", queued_only=_number(totals.get("queued_only")))
        return self._claim({"same_model_only": True, "max_task_wait_minutes": self.max_task_wait_minutes})

    def _claim(self, affinity: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """``claim-next-task``: the task on a 200, else None (a 204, an error, an answer lost)."""
        status, task = self.edge.claim(self.worker_id, affinity)
        if status == 200 and task is not None:
            self.log.info("task_claimed", task_id=task.get("task_id"), task_type=task.get("task_type"))
            self.say("info", f"[CLAIM] Claimed task {task.get('task_id')}", str(task.get("task_id")))
            return task
        return None

    def _poll_older(self) -> dict[str, Any] | None:
        """Reigh-Worker 4d09184 ``get_oldest_queued_task_supabase``: recovery, task counts, claim.

        An orchestrator this worker holds is run again only after the claim found nothing, and, when
        ``task-counts`` says nothing is queued, only if none of its children is unfinished; the claim's
        204 or error hands it back without that check, as the real poll does."""
        assigned = self.table.my_in_progress_task(self.worker_id)
        deferred = None
        if assigned is not None:
            if _is_orchestrator(assigned.get("task_type")):
                deferred = assigned  # never starve queued tasks for an orchestrator waiting on children
            else:
                self.log.info("task_recovered", task_id=assigned.get("task_id"))
                return assigned
        counts = self.edge.task_counts()
        if counts is not None:
            raw_totals = counts.get("totals")
            totals: Mapping[str, Any] = raw_totals if isinstance(raw_totals, dict) else {}
            queued = _number(totals.get("queued_only"))
            eligible = _number(totals.get("eligible_queued"))
            if queued <= 0 and eligible <= 0:
                if deferred is not None and self._has_unfinished_children(str(deferred.get("task_id"))):
                    # It completes with its last child (the app's complete_task), not by running again.
                    self.log.debug("orchestrator_recovery_skipped", task_id=deferred.get("task_id"))
                    return None
                return self._recovered(deferred)
        task = self._claim()
        return task if task is not None else self._recovered(deferred)

    def _recovered(self, deferred: dict[str, Any] | None) -> dict[str, Any] | None:
        if deferred is not None:
            self.log.info("task_recovered", task_id=deferred.get("task_id"))
        return deferred

    def _has_unfinished_children(self, task_id: str) -> bool:
        """``_orchestrator_has_incomplete_children``: the Edge Function, else the table; unknown = no."""
        children = self.edge.children_now(task_id)
        if children is None:
            children = self.table.children_by_ref(task_id, "id, status")
        if not children:
            return False
        return any(str(c.get("status") or "").lower() not in FINISHED_STATUSES for c in children)

    def run(self) -> int:
        self.log.info("worker_polling", poll_sec=self.poll_sec, speed=self.speed)
        self._publish_vram(False)
        while True:
            if self.interrupted:
                raise KeyboardInterrupt
            task = self.next_task()
            if self.interrupted:
                # Lost during the claim: stop before the work, as an interrupt that arrived would have.
                raise KeyboardInterrupt
            if task is None:
                time.sleep(self.poll_sec)
                continue
            if self.process(task) in ("complete", "waiting"):
                # server.py: reset_fatal_error_counter() after a task that succeeded.
                self.fatal_count, self.fatal_category = 0, None
            self.processed += 1
            time.sleep(AFTER_TASK_SEC)

    # -- one task ----------------------------------------------------------------------------------

    def _switch_model(self, model: str) -> None:
        if model == self.model:
            return
        status = self.edge.update_worker_model(self.worker_id, model, current=self.current)
        self.log.info("model_loaded", model=model, previous=self.model, notify_status=status)
        self.model = model

    def process(self, task: Mapping[str, Any]) -> str:
        """Run one task to its end; returns the outcome (complete, failed, requeued, lost, waiting)."""
        task_id = str(task.get("task_id"))
        task_type = str(task.get("task_type") or "")
        raw_params = task.get("params")
        params: Mapping[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        tlog = self.log.bind(task_id=task_id, task_type=task_type)
        if task.get("project_id") is None and task_type in ORCHESTRATOR_TYPES_NEEDING_PROJECT:
            self.edge.mark_failed(task_id, "Orchestrator missing project_id")
            return "failed"
        if _is_orchestrator(task_type):
            self.say("info", f"Processing {task_type} task", task_id)
            return self._orchestrate(task, params, tlog)
        self._switch_model(str(params.get("model") or f"sim-{task_type or 'model'}"))
        self.edge.reset_generation_started_at(task_id)
        seconds = _duration(params) / self.speed
        tlog.info("task_started", duration_sec=round(seconds, 3))
        self.say("info", f"Processing {task_type} task", task_id)
        self._publish_vram(True)
        started = time.monotonic()
        try:
            if params.get("crash") is True:
                time.sleep(seconds / 2)
                # The process dies without a word (a segfault, an OOM kill): its guardian reports it.
                tlog.error("task_crashing_worker")
                sys.stdout.flush()
                os._exit(70)
            if params.get("fatal"):
                time.sleep(seconds / 2)
                message = self._fatal(task_id, params.get("fatal"))  # 4d09184: exits
                return self._failed(task, message, round(time.monotonic() - started, 3))
            time.sleep(seconds)
            elapsed = round(time.monotonic() - started, 3)
            if params.get("fail") is True:
                return self._failed(
                    task, str(params.get("error") or "simulated failure (params.fail)"), elapsed
                )
            path = self._write_output(task_id)
            try:
                answer = self.edge.complete_with_file(task_id, path)
            finally:
                with contextlib.suppress(OSError):
                    path.unlink()  # the worker removes generated files once uploaded
            if answer is None:
                return "lost"
            tlog.info("task_completed", elapsed_sec=elapsed, public_url=answer.get("public_url"))
            self.say("info", "Finished task (Success: True)", task_id)
            return "complete"
        finally:
            self._publish_vram(False)

    def _write_output(self, task_id: str) -> Path:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"{task_id}.mp4"
        path.write_bytes(OUTPUT_BYTES)
        return path

    # -- an orchestrator task ------------------------------------------------------------------------

    def _orchestrate(self, task: Mapping[str, Any], params: Mapping[str, Any], tlog: Any) -> str:
        """The travel orchestrator's handler (its idempotency check, then the chain), as the worker reports it.

        No model load and no billing reset: the worker dispatches orchestrators to their handler
        directly, outside its generation queue."""
        task_id = str(task.get("task_id"))
        started = time.monotonic()

        def elapsed() -> float:
            return round(time.monotonic() - started, 3)

        raw_details = params.get("orchestrator_details")
        if not isinstance(raw_details, dict):
            return self._failed(task, "orchestrator_details missing", elapsed())
        details: Mapping[str, Any] = raw_details
        count = _segment_count(params, details)
        run_id = str(details.get("run_id") or task_id)
        children = self.edge.children(task_id)
        if children is None:
            children = (
                self.table.children_by_ref(task_id, "id, task_type, status, params, output_location") or []
            )
        segments = [c for c in children if c.get("task_type") == CHILD_TASK_TYPE]
        if segments and len(segments) >= count:
            return self._orchestrated_again(task, segments, tlog, elapsed())
        if count == 0:
            # Held and run again at every idle poll from now on (no child will ever be unfinished), as there.
            message = "No new segments to generate based on orchestrator payload. Orchestration complete (vacuously)."
            status = self.edge.report_orchestrating(task_id, message)
            tlog.info("orchestrator_waiting", report_status=status, elapsed_sec=elapsed())
            return "waiting"
        made: dict[int, str] = {}
        for segment in segments:
            index = _segment_index(segment)
            if index >= 0:
                made[index] = str(segment.get("id"))
        created = 0
        for index in range(count):
            if index in made:
                continue
            child, error = self.edge.create_task(
                CHILD_TASK_TYPE,
                task.get("project_id"),
                _segment_params(task_id, run_id, task.get("project_id"), params, index, count),
                made.get(index - 1),
            )
            if error is not None:
                message = f"Failed during travel orchestration processing: Edge Function create-task failed: {error}"
                return self._failed(task, message, elapsed())
            made[index] = child
            created += 1
        tlog.info("orchestrator_children_created", run_id=run_id, created=created, expected=count)
        if created:
            message = f"Successfully enqueued {created} new segment tasks for run {run_id}. (Total expected: {count} segments)"
        else:
            message = f"All child tasks already exist for run {run_id}. No new tasks created."
        status = self.edge.report_orchestrating(task_id, message)
        tlog.info("orchestrator_waiting", report_status=status, elapsed_sec=elapsed())
        return "waiting"

    def _orchestrated_again(
        self, task: Mapping[str, Any], segments: list[dict[str, Any]], tlog: Any, elapsed: float
    ) -> str:
        """Every child exists: failed if one failed, complete with the last one's output if all are, else waiting."""
        task_id = str(task.get("task_id"))
        statuses = [str(s.get("status") or "").lower() for s in segments]
        failed = sum(1 for status in statuses if status in FAILED_STATUSES)
        if failed:
            message = f"[ORCHESTRATOR_FAILED] Child tasks failed: {failed} segment(s) failed/cancelled"
            return self._failed(task, message, elapsed)
        done = statuses.count("complete")
        if done < len(segments):
            message = (
                f"[IDEMPOTENT] Child tasks already exist but not all complete: {done}/{len(segments)} "
                "segments complete. Cleaned up 0 duplicate segments."
            )
            status = self.edge.report_orchestrating(task_id, message)
            tlog.info("orchestrator_waiting", report_status=status, elapsed_sec=elapsed)
            return "waiting"
        last = max(segments, key=_segment_index)
        output = str(last.get("output_location") or "Completed via idempotency")
        answer = self.edge.complete_with_output(task_id, output)
        if answer is None:
            return "lost"
        tlog.info("task_completed", elapsed_sec=elapsed, public_url=answer.get("public_url"))
        return "complete"

    def _failed(self, task: Mapping[str, Any], message: str, elapsed: float) -> str:
        task_id = str(task.get("task_id"))
        tlog = self.log.bind(task_id=task_id)
        self.say("error", f"Task failed: {message}", task_id)
        retry = retryable_error(message)
        # The claim's answer carries no attempts: the worker always counts from 0.
        attempts = int(task.get("attempts") or 0) if isinstance(task.get("attempts"), int) else 0
        if retry is not None and attempts < retry[1]:
            category = retry[0]
            if not self.edge.requeue_for_retry(task_id, message, attempts, category):
                details = f"Retry {attempts + 1} ({category}): {message[:500]}"
                self.table.requeue_direct(task_id, attempts + 1, details)
            tlog.info("task_requeued", category=category, elapsed_sec=elapsed)
            return "requeued"
        self.edge.mark_failed(task_id, message)
        tlog.info("task_failed", elapsed_sec=elapsed, error=message[:200])
        return "failed"

    def _fatal(self, task_id: str, fatal: Any) -> str:
        """The fatal-error handler's writes, then 4d09184's exit 1; with 22cbba9 the error text, which the
        main loop reports as the task's failure while the process polls on (see the module docstring)."""
        category = str(fatal) if isinstance(fatal, str) and fatal in FATAL_ERRORS else "cuda_hardware"
        message = FATAL_ERRORS[category]
        reason = f"FATAL {category}: {message[:500]}"
        if self.fatal_category is not None and self.fatal_category != category:
            self.fatal_count = 0
        self.fatal_count += 1
        self.fatal_category = category
        threshold = FATAL_THRESHOLDS[category]
        if self.fatal_count < threshold:
            # Below the category's threshold the handler only counts: the task fails as any other.
            self.log.warning(
                "worker_fatal_error_counted",
                task_id=task_id,
                category=category,
                count=self.fatal_count,
                threshold=threshold,
            )
            return message
        self.log.critical("worker_fatal_error", task_id=task_id, category=category, error=message)
        url = os.environ.get("SUPABASE_URL")
        key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY") or os.environ.get("SUPABASE_SERVICE_KEY")
        if url and key:
            marked = mark_worker_for_termination(url, key, self.worker_id, task_id, reason)
            self.log.info("worker_marked_for_termination", marked=marked)
        else:
            self.log.warning(
                "fatal_mark_skipped", problem="SUPABASE_URL or the service key is not in the environment"
            )
        if self.current:
            # 22cbba9 raises FatalWorkerError in its generation thread, whose loop catches every
            # exception and goes on (task_processor.py worker_loop): the task has failed, nothing exits.
            return message
        sys.stdout.flush()
        sys.exit(1)


def _is_orchestrator(task_type: Any) -> bool:
    return str(task_type or "").lower().endswith("_orchestrator")


def _segment_count(params: Mapping[str, Any], details: Mapping[str, Any]) -> int:
    """The app's ``num_new_segments_to_generate`` when it says, else the ``segments`` knob, else 2."""
    for raw in (details.get("num_new_segments_to_generate"), params.get("segments")):
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return raw
    return DEFAULT_SEGMENTS


def _segment_index(segment: Mapping[str, Any]) -> int:
    params = segment.get("params")
    raw = params.get("segment_index", -1) if isinstance(params, dict) else -1
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else -1


def _segment_params(
    parent_id: str, run_id: str, project_id: Any, params: Mapping[str, Any], index: int, count: int
) -> dict[str, Any]:
    """A travel segment's params: the parent references the app reads, and our knobs (duration, model)."""
    child: dict[str, Any] = {
        "orchestrator_task_id_ref": parent_id,
        "orchestrator_run_id": run_id,
        "project_id": project_id,
        "segment_index": index,
        "is_first_segment": index == 0,
        "is_last_segment": index == count - 1,
        "child_order": index,
        "is_single_item": count == 1,
        "duration_sec": _duration(params),
    }
    if params.get("model"):
        child["model"] = params["model"]
    return child


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _duration(params: Mapping[str, Any]) -> float:
    raw = params.get("duration_sec", params.get("sim_duration_sec", DEFAULT_DURATION_SEC))
    try:
        return max(0.0, float(raw))
    except (TypeError, ValueError):
        return DEFAULT_DURATION_SEC


# --- start-up ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    from orchestrator.logs import configure_logging

    entry = os.environ.get("SIM_WORKER_ENTRY", "worker.py")
    args = build_parser(entry).parse_args(list(sys.argv[1:] if argv is None else argv))
    token = args.reigh_access_token or args.supabase_access_token
    service_key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY")
    client_key = service_key or args.supabase_anon_key or os.environ.get("SUPABASE_ANON_KEY")
    secrets = [s for s in (token, service_key, client_key, args.supabase_anon_key) if s]
    configure_logging(fmt="json", extra_secrets=secrets)
    if not token:
        print("Error: Worker authentication credential is required", file=sys.stderr)
        return 1
    worker_id = args.worker or os.environ.get("RUNPOD_POD_ID") or "local-worker"
    os.environ["WORKER_ID"] = worker_id
    os.environ["WAN2GP_WORKER_MODE"] = "true"
    wlog = log.bind(worker_id=worker_id)
    try:
        heartbeat_sec = _env_float("SIM_WORKER_HEARTBEAT_SEC", guardian_mod.HEARTBEAT_SEC, minimum=0.05)
        poll_sec = _env_float("SIM_WORKER_POLL_SEC", float(args.poll_interval), minimum=0.01)
        speed = _env_float("SIM_WORKER_SPEED", 1.0, minimum=1e-6)
        revision = os.environ.get("SIM_WORKER_REVISION") or CURRENT_REVISION
        if revision not in REVISIONS:
            raise errors.ConfigError(
                [f"SIM_WORKER_REVISION must be one of {', '.join(REVISIONS)}, got {revision!r}"]
            )
        # As there: a value int() refuses stops the worker before its loop.
        max_wait = int(os.environ.get("MAX_TASK_WAIT_MINUTES") or DEFAULT_MAX_TASK_WAIT_MINUTES)
    except ValueError as exc:
        wlog.error("worker_config_invalid", problems=[f"MAX_TASK_WAIT_MINUTES: {exc}"])
        return 2
    except errors.ConfigError as exc:
        wlog.error("worker_config_invalid", problems=exc.problems)
        return 2
    try:
        if not client_key:
            raise ValueError("No Supabase key found")
        table = TableClient(args.supabase_url, client_key)
    except Exception as exc:  # the worker: "Supabase init failed", exit 1
        wlog.critical("worker_init_failed", error=str(exc)[:300])
        return 1
    # The fatal-error handler reads the URL from the environment (Reigh-Worker copies the flag there).
    os.environ["SUPABASE_URL"] = args.supabase_url
    if args.migrate_only:
        return 0
    output_dir = Path(args.main_output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    # First, before any thread: the guardian is forked and beats at once.
    current = revision == CURRENT_REVISION
    # 22cbba9: the guardian's key is the service key, else the access token (server.py guardian_key).
    guardian_key = (service_key or token) if current else (service_key or client_key)
    guardian, log_queue = guardian_mod.start_guardian(
        worker_id, args.supabase_url, guardian_key, interval=heartbeat_sec, bearer=current
    )
    wlog.info(
        "worker_started",
        pid=os.getpid(),
        guardian_pid=guardian.pid,
        entry=entry,
        heartbeat_sec=heartbeat_sec,
        poll_sec=poll_sec,
        speed=speed,
        revision=revision,
    )
    edge = EdgeClient(
        args.supabase_url, token, service_key=service_key or os.environ.get("SUPABASE_SERVICE_KEY")
    )
    worker = ReighWorker(
        worker_id,
        edge,
        table,
        output_dir=output_dir,
        poll_sec=poll_sec,
        speed=speed,
        log_queue=log_queue,
        gpu_state_file=GPU_STATE_FILE if os.environ.get("RUNPOD_POD_ID") else None,
        preload_model=args.preload_model or None,
        revision=revision,
        max_task_wait_minutes=max_wait,
    )

    def interrupt(_signum: int, _frame: Any) -> None:
        worker.interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    if current:
        # 22cbba9 server.py: "Steady-state SIGTERM/SIGINT map to the existing KeyboardInterrupt cleanup
        # path." (4d09184 keeps SIGTERM's default: the process dies, and its guardian says crashed.)
        signal.signal(signal.SIGTERM, interrupt)
    try:
        return worker.run()
    except KeyboardInterrupt:
        wlog.info("worker_stopped", reason="interrupt", tasks_processed=worker.processed)
        return 0
    finally:
        if current:
            # 22cbba9 server.py, the main loop's `finally`, run on an interrupt and on any exception the
            # loop lets out: the guardian terminated, then one last beat "terminated".
            config = guardian_mod.guardian_config(worker_id, args.supabase_url, guardian_key, bearer=True)
            sent = guardian_mod.send_shutdown_beat(guardian, config)
            wlog.info("worker_shutdown_beat", sent=sent)


# --- the volume layout -------------------------------------------------------------------------------


def lay_out_volume(
    volume_dir: Path, *, worker_dir: str = DEFAULT_WORKER_DIR, entries: Sequence[str] = DEFAULT_ENTRIES
) -> Path:
    """The simulated worker's checkout on an emulated volume (see ``reigh_worker/volume.py``)."""
    return _lay_out_volume(volume_dir, worker_dir=worker_dir, entries=entries)
