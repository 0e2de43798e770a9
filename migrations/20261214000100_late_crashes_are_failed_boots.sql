-- A worker whose process dies before its first completion is a failed boot, whatever its age.
--
-- 20261212000100 rewrote the boot outcome of a worker failed within 600 s of its activation without a
-- task `Complete` under its id. An image that fails only well into its first task (a model loaded on
-- first use that does not fit the GPU, a decode at the end of a long generation that runs out of
-- memory) outlived that window: its workers kept `activated`, the breaker's success, and every task's
-- three attempts bought a new pod (100 queued tasks, a worker dying 12 minutes into each: 300 pods in
-- five hours in the project's simulator).
--
-- orch_transition_worker now also rewrites it, past the 600 s, when the failure is the worker's own
-- word that its process died: `worker_crashed` (the real worker's heartbeat guardian saw the process
-- gone and beat `crashed`: banodoco/Reigh-Worker heartbeat_guardian.py) or `worker_error` (its
-- fatal-error handler gave up). A worker lost with its host past the window (`heartbeat_stale`,
-- `pod_failed`, `pod_missing`: an idle floor worker whose machine goes down hours later) still keeps
-- its activation, as do `unusable_row` and `task_stuck`. An idle worker whose process dies hours in
-- counts too (the app's heartbeat has requeued any task by then, so nothing here tells the two apart):
-- a few such deaths together can hold a burst to a probe at a time until a task completes. The
-- policy's half of the change is in Python (orchestrator.core.limits.untried_workers: after such
-- deaths, a live worker still in the first task it took no longer closes the breaker until a worker
-- made since the first death completes a task). Unchanged otherwise (20261212000100).
--
-- Idempotent, like every migration of this project.

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
    v_unproven boolean;
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
    -- Activated, then failed before completing any task: the boot did not work after all. Past the
    -- probation only when its own process died: a host lost hours later says nothing of the image.
    v_unproven := p_to = 'error' and v_from in ('active', 'draining')
                  and w.boot_outcome = 'activated'
                  and w.activated_at is not null
                  and (w.activated_at > now() - interval '600 seconds'
                       or coalesce(p_reason, '') in ('worker_crashed', 'worker_error'))
                  and coalesce(p_reason, '') not in ('unusable_row', 'task_stuck')
                  and not exists (select 1 from public.tasks t
                                   where t.worker_id = p_worker_id and t.status = 'Complete');

    perform orchestrator_private.begin_orchestrator_write();
    update public.workers
       set status = p_to,
           status_changed_at = now(),
           status_reason = p_reason,
           activated_at = case when p_to = 'active' then coalesce(activated_at, now()) else activated_at end,
           boot_outcome = case
               when v_unproven then coalesce(p_reason, p_to)
               when boot_outcome_at is not null then boot_outcome
               when p_to = 'active' then 'activated'
               when v_from in ('spawning', 'initializing') and p_to not in ('spawning', 'initializing')
                   then coalesce(p_reason, p_to)
               else boot_outcome end,
           boot_outcome_at = case
               when v_unproven then now()
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
    if v_unproven then
        perform orchestrator_private.append_event('failed_before_serving', w.id, w.metadata ->> 'runpod_id',
            p_reason, jsonb_build_object('activated_at', w.activated_at,
                                         'gpu_type', coalesce(w.metadata ->> 'gpu_type', w.instance_type),
                                         'data_center', w.metadata ->> 'data_center'), null);
    end if;

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
