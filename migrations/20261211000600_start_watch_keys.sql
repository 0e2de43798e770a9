-- The start watch's two keys are the orchestrator's.
--
-- While a started worker has not yet heartbeated, the orchestrator asks its pod every tick whether the
-- start still runs (the start's per-worker lock) and in which phase (the start's own lines in the
-- worker's log). It records when it last asked (start_watched_at) and the last time it saw the start
-- still in its setup steps (setup_seen_at): git sync, apt, uv sync, whose time is not counted against
-- SPAWNING_TIMEOUT_SEC, up to WORKER_SETUP_TIMEOUT_SEC. The real worker's heartbeat writes its whole
-- metadata object back, so both join the guard's list of owned keys (20261206000200), which a stale
-- write-back cannot undo. Unchanged otherwise (20261211000400).
--
-- Idempotent, like every migration of this project.

create or replace function orchestrator_private.owned_metadata_keys()
returns text[] language sql immutable as $$
    select array[
        'runpod_id', 'ssh_details', 'gpu_type', 'gpu_types', 'data_center', 'cost_per_hr',
        'host_key_fingerprint', 'initialized_at', 'process_started_at', 'terminate_requested_at',
        'terminate_requested_by', 'pod_terminate_requested_at', 'drain_reason', 'drained_at',
        'error_reason', 'error_details', 'failed_at', 'capacity_misses', 'spawn_reason',
        'orchestrator_prefix', 'promoted_at',
        'pod_stop_requested_at', 'stopped_at', 'resume_requested_at', 'resumes',
        'previous_host_key_fingerprint', 'disk_gb', 'stopped_sec', 'pod_terminate_confirmed',
        'pod_terminate_taken_at', 'unclaimed_work', 'start_watched_at', 'setup_seen_at'
    ]::text[];
$$;
