-- The drain of a worker that sat idle beside tasks it did not take records what it passed over.
--
-- The policy drains a worker idle for GPU_IDLE_TIMEOUT_SEC beside a task that waited all that time
-- (drain_reason idle_while_tasks_waited), and writes the queue it passed over into the row's metadata
-- as unclaimed_work ({claimable, by_type, oldest_queued_sec, worker_idle_sec}) for the operator. The real
-- worker's heartbeat writes its whole metadata object back, so a key of ours it could revert must be in
-- the guard's list of owned keys (20261206000200): unclaimed_work joins it. Unchanged otherwise
-- (20261208000200).
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
        'pod_terminate_taken_at', 'unclaimed_work'
    ]::text[];
$$;
