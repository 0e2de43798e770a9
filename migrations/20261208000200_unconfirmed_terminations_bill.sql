-- Two corrections to the spend estimate, both toward what Runpod really bills:
--
-- 1. A termination Runpod did not confirm does not end billing. The executor stamps
--    metadata.pod_terminate_requested_at after every termination call, answered or not (the policy paces
--    its retries by it), and now also metadata.pod_terminate_confirmed: true when Runpod confirmed the pod
--    terminating or gone, false when the call failed (API down, timeout) or its answer did not confirm
--    it; the first confirmed call also stamps metadata.pod_terminate_taken_at. Before this, a failed call
--    ended the estimate and the rate now read 0 until the retry, while the pod went on billing. Now
--    billing ends at pod_terminate_taken_at (orchestrator_dashboard.worker_termination_taken); a row with
--    pod_terminate_confirmed and no taken time still bills; a row written before this file has neither
--    key and ends at its request, as before.
-- 2. A pooled pod being terminated bills its disk, not its GPU, from its move `stopped -> terminating`
--    until the termination is taken: orch_transition_worker closes the stay (metadata.stopped_sec) at that
--    move, and the time after it counted at the GPU price. The current stay of a worker ending from the
--    pool (orchestrator_dashboard.worker_ending_from_pool, 20261208000100) now begins at that move, and
--    orch_transition_worker closes it into stopped_sec when the worker leaves `terminating` (for
--    `terminated` or `error`), up to the end of billing, so the figure does not change with the move.
--    The spend so far now agrees with the rate now, which already billed its disk.
--
-- Idempotent, like every migration of this project.

-- When the first termination Runpod confirmed was asked (the end of billing), or null: none asked, or
-- none confirmed yet (the pod may still bill; the next tick asks again). A row stamped before
-- confirmations were recorded ends at its last request.
create or replace function orchestrator_dashboard.worker_termination_taken(p_metadata jsonb)
returns timestamptz language sql stable as $$
    select case
        when p_metadata ? 'pod_terminate_taken_at'
            then orchestrator_dashboard.as_timestamptz(p_metadata ->> 'pod_terminate_taken_at')
        when p_metadata ? 'pod_terminate_confirmed' then null
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

-- The metadata keys only the orchestrator writes (20261207000200), with pod_terminate_confirmed and
-- pod_terminate_taken_at: a
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
        'previous_host_key_fingerprint', 'disk_gb', 'stopped_sec', 'pod_terminate_confirmed',
        'pod_terminate_taken_at'
    ]::text[];
$$;

revoke all on function orchestrator_dashboard.worker_termination_taken(jsonb) from public, anon, authenticated;
grant execute on function orchestrator_dashboard.worker_termination_taken(jsonb) to service_role;

-- The guarded state change (as in 20261207000200), with the stay of a pod ending from the pool closed
-- when it leaves `terminating`.
create or replace function public.orch_transition_worker(
    p_token bigint, p_worker_id text, p_to text, p_reason text, p_metadata jsonb default '{}'::jsonb,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_meta jsonb;
    w public.workers%rowtype;
    v_from text;
    v_allowed text;
    v_held bigint;
    v_old_meta jsonb;
    v_since timestamptz;
    v_until timestamptz;
    v_requested timestamptz;
    v_resume_ends boolean;
    v_ok boolean;
    v_seconds numeric;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    perform orchestrator_private.check_arg(p_to is not null, 'p_to must not be null', '22004');
    perform orchestrator_private.check_arg(
        exists (select 1 from public.orchestrator_worker_transitions where to_status = p_to)
            or p_to = 'spawning',
        format('p_to: unknown worker state "%s"', p_to));
    v_meta := orchestrator_private.check_object(p_metadata, 'p_metadata', true);
    perform orchestrator_private.check_lease(p_lease, p_token);
    w := orchestrator_private.lock_worker(p_worker_id);
    v_from := w.status;

    if v_from is not distinct from p_to then
        return to_jsonb(w);
    end if;

    if not exists (select 1 from public.orchestrator_worker_transitions where from_status = v_from)
       and v_from is distinct from 'terminated' and p_to in ('error', 'terminated') then
        null;  -- a state this contract does not know may only be retired
    elsif not exists (select 1 from public.orchestrator_worker_transitions
                      where from_status = v_from and to_status = p_to) then
        select coalesce(string_agg(to_status, ', ' order by to_status),
                        case when v_from is distinct from 'terminated' then 'error, terminated' else 'none' end)
          into v_allowed
          from public.orchestrator_worker_transitions where from_status = v_from;
        raise exception 'illegal transition for worker "%": % -> % (allowed from %: %)',
            p_worker_id, coalesce(v_from, 'null'), p_to, coalesce(v_from, 'null'), v_allowed
            using errcode = 'OR002';
    end if;

    if v_from = 'draining' and p_to in ('terminating', 'stopping') then
        select count(*) into v_held from public.tasks
         where worker_id = p_worker_id and status = 'In Progress';
        if v_held > 0 then
            raise exception 'worker "%" still holds % In Progress task(s): draining -> % waits for them',
                p_worker_id, v_held, p_to using errcode = 'OR005';
        end if;
    end if;

    -- The pool's bookkeeping, written with the caller's metadata (ours last: it wins).
    v_old_meta := coalesce(w.metadata, '{}'::jsonb);
    -- A stay ends when the worker leaves `stopped`, or leaves `terminating` out of the pool (its pod
    -- stopped until the termination was taken: the stay runs to the end of billing).
    v_since := orchestrator_dashboard.worker_stopped_since(v_from, w.status_changed_at, v_old_meta);
    if v_since is not null then
        v_until := case when v_from = 'stopped' then now()
                        else orchestrator_dashboard.worker_billed_until(v_from, w.status_changed_at, v_old_meta) end;
        v_meta := v_meta || jsonb_build_object('stopped_sec', round(
            orchestrator_dashboard.metadata_number(v_old_meta, 'stopped_sec')
            + greatest(0, extract(epoch from v_until - v_since)), 3));
    end if;
    if v_from = 'stopped' and p_to = 'resuming' then
        v_requested := orchestrator_dashboard.as_timestamptz((v_old_meta || v_meta) ->> 'resume_requested_at');
        if v_requested is null or v_requested < w.status_changed_at or v_requested > now() then
            v_meta := v_meta || jsonb_build_object('resume_requested_at', now());
        end if;
    end if;
    v_resume_ends := (v_from = 'resuming' and p_to <> 'initializing')
                     or (v_from = 'initializing' and w.boot_outcome_at is not null);

    perform orchestrator_private.begin_orchestrator_write();
    update public.workers
       set status = p_to,
           status_changed_at = now(),
           status_reason = p_reason,
           activated_at = case when p_to = 'active' then coalesce(activated_at, now()) else activated_at end,
           boot_outcome = case
               when boot_outcome_at is not null then boot_outcome
               when p_to = 'active' then 'activated'
               when v_from in ('spawning', 'initializing') and p_to not in ('spawning', 'initializing')
                   then coalesce(p_reason, p_to)
               else boot_outcome end,
           boot_outcome_at = case
               when boot_outcome_at is not null then boot_outcome_at
               when p_to = 'active'
                    or (v_from in ('spawning', 'initializing') and p_to not in ('spawning', 'initializing'))
                   then now()
               else boot_outcome_at end,
           metadata = coalesce(metadata, '{}'::jsonb) || v_meta
     where id = p_worker_id
    returning * into w;
    perform orchestrator_private.end_orchestrator_write();

    perform orchestrator_private.append_event('transition', w.id, w.metadata ->> 'runpod_id', p_reason,
        jsonb_build_object('from', v_from, 'to', p_to), null);

    if v_resume_ends then
        v_ok := p_to = 'active';
        v_seconds := round(extract(epoch from now()
            - orchestrator_dashboard.as_timestamptz(w.metadata ->> 'resume_requested_at')), 3);
        perform orchestrator_private.append_event('resume_ended', w.id, w.metadata ->> 'runpod_id',
            case when v_ok then 'activated' else coalesce(p_reason, p_to) end,
            jsonb_build_object('ok', v_ok, 'seconds', v_seconds, 'from', v_from, 'to', p_to,
                               'gpu_type', coalesce(w.metadata ->> 'gpu_type', w.instance_type),
                               'data_center', w.metadata ->> 'data_center'), null);
    end if;
    return to_jsonb(w);
end
$$;
