-- Two corrections to the spend estimate, both toward what Runpod really bills:
--
-- 1. A termination Runpod did not confirm does not end billing. The executor stamps
--    metadata.pod_terminate_requested_at after every termination call, answered or not (the policy paces
--    its retries by it), and now also metadata.pod_terminate_confirmed: true when Runpod confirmed the pod
--    terminating or gone, false when the call failed (API down, timeout) or its answer did not confirm
--    it. Before this, a failed call ended the estimate and the rate now read 0 until the retry, while the
--    pod went on billing. Now the request counts as the end of billing only when it was not refused:
--    orchestrator_dashboard.worker_termination_taken. A row written before this file has no such key
--    and reads as before.
-- 2. A pooled pod being terminated bills its disk, not its GPU, from its move `stopped -> terminating`
--    to the termination request: orch_transition_worker closes the stay (metadata.stopped_sec) at that
--    move, and the moment after it counted at the GPU price (one executor step). The current stay of a
--    worker ending from the pool (orchestrator_dashboard.worker_ending_from_pool, 20261208000100) now
--    begins at that move, so the spend so far agrees with the rate now, which already billed its disk.
--
-- Idempotent, like every migration of this project.

-- When the termination Runpod took was asked (the end of billing), or null: none asked, or the last
-- request was not confirmed (the pod may still bill; the next tick asks again).
create or replace function orchestrator_dashboard.worker_termination_taken(p_metadata jsonb)
returns timestamptz language sql stable as $$
    select case when p_metadata -> 'pod_terminate_confirmed' = 'false'::jsonb then null
                else orchestrator_dashboard.as_timestamptz(p_metadata ->> 'pod_terminate_requested_at') end;
$$;

create or replace function orchestrator_dashboard.worker_billed_until(
    p_status text, p_status_changed_at timestamptz, p_metadata jsonb
) returns timestamptz language plpgsql stable as $$
declare
    v_taken timestamptz := orchestrator_dashboard.worker_termination_taken(p_metadata);
begin
    if v_taken is not null then
        return least(v_taken, now());
    end if;
    if p_status = 'terminated' then
        return coalesce(p_status_changed_at, now());
    end if;
    return now();
end
$$;

-- The current stay in the pool began: for a stopped worker, the later of its move to stopped and
-- metadata.stopped_at (the GPU counts until the stop was confirmed: the dearer reading); for one being
-- terminated out of the pool, its move to terminating (the stay before it is in metadata.stopped_sec);
-- else null.
create or replace function orchestrator_dashboard.worker_stopped_since(
    p_status text, p_status_changed_at timestamptz, p_metadata jsonb
) returns timestamptz language sql stable as $$
    select case
        when p_status = 'stopped' then
            least(now(), greatest(p_status_changed_at,
                                  orchestrator_dashboard.as_timestamptz(p_metadata ->> 'stopped_at')))
        when orchestrator_dashboard.worker_ending_from_pool(p_status, p_metadata) then
            least(now(), p_status_changed_at)
    end;
$$;

create or replace function orchestrator_dashboard.worker_rate_per_hr(p_status text, p_metadata jsonb)
returns numeric language sql stable as $$
    select case
        when p_status = 'terminated'
             or orchestrator_dashboard.worker_termination_taken(p_metadata) <= now()
            then 0
        when p_status = 'stopped' or orchestrator_dashboard.worker_ending_from_pool(p_status, p_metadata)
            then orchestrator_dashboard.stopped_disk_usd_per_hr(p_metadata)
        else orchestrator_dashboard.worker_cost_per_hr(p_metadata) end;
$$;

-- The metadata keys only the orchestrator writes (20261207000200), with pod_terminate_confirmed: a
-- worker's heartbeat writing back a stale copy of the object must not undo it.
create or replace function orchestrator_private.owned_metadata_keys()
returns text[] language sql immutable as $$
    select array[
        'runpod_id', 'ssh_details', 'gpu_type', 'gpu_types', 'data_center', 'cost_per_hr',
        'host_key_fingerprint', 'initialized_at', 'process_started_at', 'terminate_requested_at',
        'terminate_requested_by', 'pod_terminate_requested_at', 'drain_reason', 'drained_at',
        'error_reason', 'error_details', 'failed_at', 'capacity_misses', 'spawn_reason',
        'orchestrator_prefix', 'promoted_at',
        'pod_stop_requested_at', 'stopped_at', 'resume_requested_at', 'resumes',
        'previous_host_key_fingerprint', 'disk_gb', 'stopped_sec', 'pod_terminate_confirmed'
    ]::text[];
$$;

revoke all on function orchestrator_dashboard.worker_termination_taken(jsonb) from public, anon, authenticated;
grant execute on function orchestrator_dashboard.worker_termination_taken(jsonb) to service_role;
