-- A worker whose process dies past its probation counts as a failed boot only when it died holding a
-- task; one that dies idle does not.
--
-- 20261214000100 counted a worker whose own process died before its first completion (`worker_crashed`,
-- `worker_error`) as a failed boot at any age, so that an image failing well into its first task stops
-- buying pods. Idle deaths counted too: a few floor workers never given a task, whose processes died of
-- a slow leak hours later, opened the breaker and held the next burst to a probe at a time (10 workers
-- serving 1,720 s after the burst instead of 260 s in the project's simulator).
--
-- What tells the two apart is whether the worker held a task when it died. The workers guard now
-- records it in `reported_details.in_task` when the worker reports `crashed` or `error`: the app's
-- heartbeat writes the workers row before its crash recovery requeues the worker's tasks in the same
-- call (banodoco/reigh-app, supabase/migrations/20260331060000_add_crash_recovery_to_heartbeat.sql), so
-- the guard still sees them In Progress. orch_transition_worker rewrites a death past the 600 s only
-- when the report said so or a task is still In Progress under the worker (the daemon fails a worker
-- before it requeues its tasks). A parent (`*_orchestrator`) waiting on its children is not such a
-- task, as for the stuck-task check. Within the 600 s, and for every other reason, nothing changes.
--
-- Deaths of the host past the 600 s (`heartbeat_stale`, `pod_failed`, `pod_missing`) and `task_stuck`
-- still keep the activation, though a whole pod lost or a hang in the first task could be the image:
-- counted, a 20-minute outage of the workers' heartbeat path failed every busy worker at once and held
-- spawning for an hour, and a batch of tasks that hang at the head of the queue left every probe on
-- them, one per stuck limit (an hour), so no healthy task behind them ran in ten hours.
--
-- Idempotent, like every migration of this project.

-- Whether the worker holds work: an In Progress task under its id that is no parent (a `*_orchestrator`
-- task waiting on its children is not the worker's work, as for the stuck-task check). The guard and
-- orch_transition_worker below ask it; the partial index on tasks (worker_id) where In Progress serves it.
create or replace function orchestrator_private.holds_work(p_worker_id text)
returns boolean language sql stable security definer set search_path = public, pg_temp as $$
    select exists (select 1 from public.tasks t
                    where t.worker_id = p_worker_id and t.status = 'In Progress'
                      and coalesce(strpos(t.task_type, '_orchestrator'), 0) = 0);
$$;
revoke all on function orchestrator_private.holds_work(text) from public;

create or replace function orchestrator_private.guard_worker_write()
returns trigger language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_owned text[] := orchestrator_private.owned_metadata_keys();
    v_kept jsonb;
begin
    if not old.orchestrator_managed or orchestrator_private.is_orchestrator_write() then
        return new;
    end if;

    -- What the writer said about itself, kept before its words are undone below. 'active' says nothing
    -- we do not learn from last_heartbeat; a status equal to ours was not a change it asked for (a row
    -- trigger cannot tell an unchanged column from one set to the same value).
    if new.status is distinct from old.status and new.status is distinct from 'active'
       and old.status is distinct from 'terminated' then
        new.reported_status := new.status;
        new.reported_at := now();
        new.reported_details := nullif(jsonb_strip_nulls(jsonb_build_object(
            'error_reason', new.metadata -> 'error_reason',
            'error_time', new.metadata -> 'error_time',
            'self_terminated', new.metadata -> 'self_terminated',
            -- Whether the process died holding a task: the app's crash recovery requeues it in the
            -- same call, after this row's write. A repeated report keeps the first one's answer.
            'in_task', case when orchestrator_private.holds_work(old.id)
                              or (old.reported_status is not distinct from new.status
                                  and old.reported_details ->> 'in_task' = 'true')
                            then true end)), '{}'::jsonb);
    else
        new.reported_status := old.reported_status;
        new.reported_at := old.reported_at;
        new.reported_details := old.reported_details;
    end if;

    new.status := old.status;
    new.status_changed_at := old.status_changed_at;
    new.status_reason := old.status_reason;
    new.activated_at := old.activated_at;
    new.boot_outcome := old.boot_outcome;
    new.boot_outcome_at := old.boot_outcome_at;
    new.orchestrator_prefix := old.orchestrator_prefix;
    new.orchestrator_managed := old.orchestrator_managed;
    if old.status = 'terminated' then
        -- A terminated row is history: a late beat of its process does not make it look alive.
        new.last_heartbeat := old.last_heartbeat;
    end if;

    -- Our keys keep our values (also against a writer that read the row before our last write and writes
    -- the whole object back, as the heartbeat RPC does); the writer's other keys are taken as written.
    select coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb) into v_kept
      from jsonb_each(coalesce(old.metadata, '{}'::jsonb)) as e
     where e.key = any (v_owned);
    if new.metadata is null and old.metadata is null then
        null;
    else
        new.metadata := (coalesce(new.metadata, '{}'::jsonb) - v_owned) || v_kept;
    end if;
    return new;
end
$$;


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
    v_in_task boolean;
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
    -- probation only when its own process died holding a task: a host lost, or a process dead idle,
    -- hours later says nothing of the image.
    v_in_task := orchestrator_private.holds_work(p_worker_id)
                 or coalesce(w.reported_details ->> 'in_task', '') = 'true';
    v_unproven := p_to = 'error' and v_from in ('active', 'draining')
                  and w.boot_outcome = 'activated'
                  and w.activated_at is not null
                  and (w.activated_at > now() - interval '600 seconds'
                       or (coalesce(p_reason, '') in ('worker_crashed', 'worker_error') and v_in_task))
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
            p_reason, jsonb_build_object('activated_at', w.activated_at, 'in_task', v_in_task,
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
