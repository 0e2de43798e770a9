-- Guards against the writes of the real worker and the app, and the orchestrator's functions adapted to
-- the production shape (docs/database.md, "Who writes what", "Attempts").
--
-- The real worker writes `workers.status` itself: its heartbeat RPC (reigh-app,
-- supabase/migrations/20260331060000_add_crash_recovery_to_heartbeat.sql) sets `status = status_param`
-- every 20 s ('active', or 'crashed' once when the worker process died) and re-inserts a missing row; its
-- fatal-error handler PATCHes `status = 'error'`; the app's update-worker-model function writes 'active'.
-- Its claim (claim_next_task_service_role, 20260323213000) knows nothing of our states. Nothing in the app
-- counts attempts except the crash heartbeat. So the guards live here, in triggers, where they survive
-- the app re-creating its functions:
--   * orchestrator_workers_guard: on a row the orchestrator manages, only our functions change `status`
--     and the metadata keys we own; a status any other writer asked for (other than 'active') is recorded
--     in reported_status / reported_at / reported_details for the policy to read;
--   * orchestrator_tasks_guard: no task moves to 'In Progress' for a managed worker that is not in a
--     claiming state; an In Progress task that loses its worker goes back to the queue; leaving
--     'In Progress' for 'Queued' or 'Failed' counts an attempt unless the writer counted it; a task
--     requeued at the attempt limit is dead-lettered as 'Failed'.
-- Our own writes are marked with a transaction-local setting (orchestrator.writer), set just before
-- and cleared just after each write in our SECURITY DEFINER functions.
--
-- Also: the worker_* functions nothing real calls are dropped; orch_requeue_worker_tasks writes the
-- enum and no generation_* timestamp (the app's prevent_timing_manipulation trigger refuses those to
-- anyone but the service role, and the daemon may connect directly); draining -> terminating refuses
-- while the worker holds a task (OR005); orch_snapshot returns what the workers reported.
--
-- SQLSTATEs added: OR004 (a task cannot be claimed by a worker in that state), OR005 (the worker still
-- holds a task). Idempotent.

-- ---------------------------------------------------------------------------------------------------
-- Marking our writes.

create or replace function orchestrator_private.begin_orchestrator_write()
returns void language sql volatile as $$
    select set_config('orchestrator.writer', 'orchestrator', true);
$$;

create or replace function orchestrator_private.end_orchestrator_write()
returns void language sql volatile as $$
    select set_config('orchestrator.writer', '', true);
$$;

create or replace function orchestrator_private.is_orchestrator_write()
returns boolean language sql stable as $$
    select coalesce(current_setting('orchestrator.writer', true), '') = 'orchestrator';
$$;

-- The metadata keys only the orchestrator writes on the rows it manages (orchestrator.model.Meta, and the
-- keys orch_request_termination and orch_register_worker add). Every other key (vram_*, startup_phase,
-- self_terminated, preflight_status, ...) stays writable by the worker and the app.
create or replace function orchestrator_private.owned_metadata_keys()
returns text[] language sql immutable as $$
    select array[
        'runpod_id', 'ssh_details', 'gpu_type', 'gpu_types', 'data_center', 'cost_per_hr',
        'host_key_fingerprint', 'initialized_at', 'process_started_at', 'terminate_requested_at',
        'terminate_requested_by', 'pod_terminate_requested_at', 'drain_reason', 'drained_at',
        'error_reason', 'error_details', 'failed_at', 'capacity_misses', 'spawn_reason',
        'orchestrator_prefix', 'promoted_at'
    ]::text[];
$$;

-- ---------------------------------------------------------------------------------------------------
-- workers: the guard.

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
            'self_terminated', new.metadata -> 'self_terminated')), '{}'::jsonb);
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

drop trigger if exists orchestrator_workers_guard on public.workers;
create trigger orchestrator_workers_guard
    before update on public.workers
    for each row execute function orchestrator_private.guard_worker_write();

-- ---------------------------------------------------------------------------------------------------
-- tasks: the claim guard, the lost worker, attempts.

create or replace function orchestrator_private.task_attempt_limit()
returns integer language sql stable security definer set search_path = public, pg_temp as $$
    select coalesce((select c.max_task_attempts from public.orchestrator_control c where c.id), 3);
$$;

create or replace function orchestrator_private.guard_task_write()
returns trigger language plpgsql security definer set search_path = public, pg_temp as $$
declare
    w record;
    v_limit integer;
begin
    -- An In Progress task whose worker went away (its row deleted: the foreign key's ON DELETE SET NULL,
    -- or a writer clearing worker_id) would be nobody's and wait for ever: it goes back to the queue.
    if old.status = 'In Progress' and new.status = 'In Progress'
       and old.worker_id is not null and new.worker_id is null then
        new.status := 'Queued';
        new.error_message := format('requeued: worker %s no longer holds it', old.worker_id);
    end if;

    -- A claim: the task becomes In Progress for a worker (or changes worker). A worker the orchestrator
    -- manages claims only while initializing or active. The KEY SHARE lock on its row serialises this
    -- check with orch_transition_worker (which holds the row FOR UPDATE), so a claim racing a drain or a
    -- termination is either refused or seen by it.
    if new.status = 'In Progress' and new.worker_id is not null
       and (old.status is distinct from 'In Progress' or old.worker_id is distinct from new.worker_id) then
        select wr.status, wr.orchestrator_managed into w
          from public.workers wr where wr.id = new.worker_id
           for key share;
        if found and w.orchestrator_managed
           and (w.status is null or w.status not in ('initializing', 'active')) then
            raise exception 'worker "%" is % and may not claim task %', new.worker_id,
                coalesce(w.status, 'in no state'), new.id
                using errcode = 'OR004',
                      hint = 'the orchestrator is ending this worker; the task stays Queued for another';
        end if;
    end if;

    -- Attempts: leaving In Progress for Queued or Failed ends an attempt. Counted here unless the writer
    -- counted it (the crash heartbeat and orch_requeue_worker_tasks do; update-task-status, the app's
    -- markTaskFailed and a PATCH do not, and a worker may even send a lower number).
    if old.status = 'In Progress' and new.status in ('Queued', 'Failed') then
        if coalesce(new.attempts, 0) <= coalesce(old.attempts, 0) then
            new.attempts := coalesce(old.attempts, 0) + 1;
        end if;
        v_limit := orchestrator_private.task_attempt_limit();
        if new.status = 'Queued' and new.attempts >= v_limit then
            new.status := 'Failed';
            new.error_message := format('dead-lettered: attempt %s of %s ended: %s',
                new.attempts, v_limit, coalesce(new.error_message, 'no error given'));
        end if;
    end if;
    return new;
end
$$;

-- Named to fire before the app's prevent_timing_manipulation_trigger (BEFORE triggers fire by name);
-- it never touches generation_*, so the app's check sees only what the writer changed.
drop trigger if exists orchestrator_tasks_guard on public.tasks;
create trigger orchestrator_tasks_guard
    before update on public.tasks
    for each row execute function orchestrator_private.guard_task_write();

-- The wake-up triggers (20261129000200, 20261129000500) on any UPDATE, not only one naming `status`: a
-- task this guard moves back to Queued (its worker row deleted) must wake the daemon too. The WHEN
-- condition reads the final row.
drop trigger if exists orchestrator_task_requeued on public.tasks;
create trigger orchestrator_task_requeued
    after update on public.tasks
    for each row when (new.status = 'Queued' and old.status is distinct from 'Queued')
    execute function orchestrator_private.notify_task_requeued();

drop trigger if exists orchestrator_task_requeued_count on public.tasks;
create constraint trigger orchestrator_task_requeued_count
    after update on public.tasks
    deferrable initially deferred
    for each row when (new.status = 'Queued' and old.status is distinct from 'Queued')
    execute function orchestrator_private.count_task_requeue();

-- ---------------------------------------------------------------------------------------------------
-- The worker_* functions: only our simulated worker called them; the real worker calls the app's.
drop function if exists public.worker_claim_task(text, text[]);
drop function if exists public.worker_heartbeat(text, integer, integer);
drop function if exists public.worker_complete_task(text, uuid, jsonb);
drop function if exists public.worker_fail_task(text, uuid, text, integer);

-- ---------------------------------------------------------------------------------------------------
-- Orchestrator: fenced writes, now marked as ours.

create or replace function public.orch_register_worker(
    p_token bigint, p_worker_id text, p_instance_type text, p_metadata jsonb default '{}'::jsonb,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_meta jsonb;
    w public.workers%rowtype;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    v_meta := orchestrator_private.check_object(p_metadata, 'p_metadata', true);
    perform orchestrator_private.check_lease(p_lease, p_token);
    begin
        insert into public.workers (id, instance_type, status, metadata, created_at, status_changed_at,
                                    orchestrator_prefix, orchestrator_managed)
        values (p_worker_id, p_instance_type, 'spawning', v_meta, now(), now(), v_meta ->> 'orchestrator_prefix',
                true)
        returning * into w;
    exception when unique_violation then
        raise exception 'worker "%" already exists', p_worker_id using errcode = '23505';
    end;
    perform orchestrator_private.append_event('worker_registered', w.id, null, null,
        jsonb_build_object('instance_type', p_instance_type), null);
    return to_jsonb(w);
end
$$;

-- Guarded state change. A move to the state the worker is already in is an idempotent no-op (a retried
-- call after a lost reply must not fail); any move without a row in orchestrator_worker_transitions
-- raises OR002 and writes nothing; draining -> terminating raises OR005 while the worker still holds an
-- In Progress task (the real claim path does not know our states; orchestrator_tasks_guard refuses its
-- claims for a draining worker, and the row lock taken here serialises with that check).
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

    if v_from = 'draining' and p_to = 'terminating' then
        select count(*) into v_held from public.tasks
         where worker_id = p_worker_id and status = 'In Progress';
        if v_held > 0 then
            raise exception 'worker "%" still holds % In Progress task(s): draining -> terminating waits for them',
                p_worker_id, v_held using errcode = 'OR005';
        end if;
    end if;

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
    return to_jsonb(w);
end
$$;

create or replace function public.orch_merge_worker_metadata(
    p_token bigint, p_worker_id text, p_metadata jsonb, p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_meta jsonb;
    w public.workers%rowtype;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    v_meta := orchestrator_private.check_object(p_metadata, 'p_metadata', false);
    perform orchestrator_private.check_lease(p_lease, p_token);
    perform orchestrator_private.lock_worker(p_worker_id);
    perform orchestrator_private.begin_orchestrator_write();
    update public.workers
       set metadata = coalesce(metadata, '{}'::jsonb) || v_meta
     where id = p_worker_id
    returning * into w;
    perform orchestrator_private.end_orchestrator_write();
    return to_jsonb(w);
end
$$;

create or replace function public.orch_request_termination(p_worker_id text, p_by text default null)
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    w public.workers%rowtype;
begin
    w := orchestrator_private.lock_worker(p_worker_id);
    if w.status = 'terminated' then
        raise exception 'worker "%" is already terminated', p_worker_id using errcode = 'OR002';
    end if;
    perform orchestrator_private.begin_orchestrator_write();
    update public.workers
       set metadata = coalesce(metadata, '{}'::jsonb)
                      || jsonb_build_object('terminate_requested_at', now(), 'terminate_requested_by', p_by)
     where id = p_worker_id
    returning * into w;
    perform orchestrator_private.end_orchestrator_write();
    perform orchestrator_private.append_event('termination_requested', w.id, w.metadata ->> 'runpod_id', null,
        jsonb_build_object('by', p_by), null);
    return to_jsonb(w);
end
$$;

-- The attempt limit the tasks guard applies to the app's writes. The daemon sets it from
-- MAX_TASK_ATTEMPTS; orch_requeue_worker_tasks keeps it in step with the limit it is given.
create or replace function public.orch_set_task_attempt_limit(
    p_token bigint, p_max_attempts integer, p_lease text default 'orchestrator')
returns integer language plpgsql security definer set search_path = public, pg_temp as $$
begin
    perform orchestrator_private.check_arg(p_max_attempts is not null, 'p_max_attempts must not be null', '22004');
    perform orchestrator_private.check_arg(p_max_attempts between 1 and 1000,
        format('p_max_attempts must be between 1 and 1000, got %s', p_max_attempts));
    perform orchestrator_private.check_lease(p_lease, p_token);
    insert into public.orchestrator_control (id) values (true) on conflict (id) do nothing;
    update public.orchestrator_control set max_task_attempts = p_max_attempts
     where id and max_task_attempts is distinct from p_max_attempts;
    return p_max_attempts;
end
$$;

-- Every In Progress task of the worker goes back to the queue with its attempt counted, or, at the
-- limit, is dead-lettered as Failed with the reason in error_message. Attempts always increase: a poison
-- task cannot kill workers for ever. The status is written as task_status (a CASE of text literals is
-- text, which an enum column refuses) and no generation_* timestamp is written (see the file's head).
create or replace function public.orch_requeue_worker_tasks(
    p_token bigint, p_worker_id text, p_reason text, p_max_attempts integer default 3,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_requeued jsonb;
    v_failed jsonb;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    perform orchestrator_private.check_arg(p_max_attempts is not null, 'p_max_attempts must not be null', '22004');
    perform orchestrator_private.check_arg(p_max_attempts between 1 and 1000,
        format('p_max_attempts must be between 1 and 1000, got %s', p_max_attempts));
    perform orchestrator_private.check_lease(p_lease, p_token);
    -- Tasks of a worker row that no longer exists may still be requeued (they would be lost otherwise).
    perform 1 from public.workers where id = p_worker_id for update;
    if not found and not exists (select 1 from public.tasks
                                 where worker_id = p_worker_id and status = 'In Progress') then
        raise exception 'unknown worker "%"', p_worker_id using errcode = 'OR003';
    end if;
    update public.orchestrator_control set max_task_attempts = p_max_attempts
     where id and max_task_attempts is distinct from p_max_attempts;

    with locked as (
        select t.id, coalesce(t.attempts, 0) + 1 as next_attempts
        from public.tasks t
        where t.worker_id = p_worker_id and t.status = 'In Progress'
        for update
    ),
    changed as (
        update public.tasks t
           set attempts = l.next_attempts,
               status = (case when l.next_attempts >= p_max_attempts then 'Failed' else 'Queued' end)::public.task_status,
               worker_id = case when l.next_attempts >= p_max_attempts then t.worker_id else null end,
               error_message = case
                   when l.next_attempts >= p_max_attempts then format(
                       'dead-lettered: attempt %s of %s ended when worker %s was requeued: %s',
                       l.next_attempts, p_max_attempts, p_worker_id, coalesce(p_reason, 'no reason given'))
                   else format('requeued from worker %s (attempt %s of %s): %s',
                       p_worker_id, l.next_attempts, p_max_attempts, coalesce(p_reason, 'no reason given'))
               end,
               updated_at = now()
          from locked l
         where t.id = l.id
        returning t.id, t.status
    )
    select coalesce(jsonb_agg(id order by id) filter (where status = 'Queued'), '[]'::jsonb),
           coalesce(jsonb_agg(id order by id) filter (where status = 'Failed'), '[]'::jsonb)
      into v_requeued, v_failed
      from changed;

    if jsonb_array_length(v_requeued) + jsonb_array_length(v_failed) > 0 then
        perform orchestrator_private.append_event('tasks_requeued', p_worker_id, null, p_reason,
            jsonb_build_object('requeued', v_requeued, 'failed', v_failed, 'max_attempts', p_max_attempts), null);
    end if;
    return jsonb_build_object('requeued', v_requeued, 'failed', v_failed);
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- The one read per tick, now with what each worker reported (reported_status, reported_at,
-- reported_details). Unchanged otherwise (see 20261129000200): one round trip, json.
create or replace function public.orch_snapshot(p_prefix text default null)
returns json language plpgsql stable security definer
set search_path = public, pg_temp
set max_parallel_workers_per_gather = 0
as $$
declare
    v_claimable bigint;
    v_oldest timestamptz;
    v_queued bigint;
    v_workers json;
    v_running bigint;
    v_orphaned jsonb;
    v_orphaned_n bigint;
    v_control public.orchestrator_control%rowtype;
    v_leases jsonb;
    v_boots json;
begin
    select count(*) into v_claimable from public.orchestrator_claimable_tasks c;
    -- The oldest separately: with the default view an ordered probe of the queued index, not a scan.
    select c.created_at into v_oldest from public.orchestrator_claimable_tasks c
     order by c.created_at nulls last limit 1;
    if pg_get_viewdef('public.orchestrator_claimable_tasks'::regclass)
       = pg_get_viewdef('orchestrator_private.default_claimable_tasks'::regclass) then
        v_queued := v_claimable;
    else
        select count(*) into v_queued from public.tasks t where t.status = 'Queued';
    end if;

    with running as materialized (
        select t.worker_id,
               json_agg(t.id order by t.generation_started_at nulls last, t.id) as ids,
               count(*) as n,
               min(t.generation_started_at) as oldest,
               -- Long-running parents (`*_orchestrator*` types) are exempt from the stuck-task timeout.
               min(t.generation_started_at)
                   filter (where coalesce(strpos(t.task_type, '_orchestrator'), 0) = 0) as oldest_stuckable
        from public.tasks t
        where t.status = 'In Progress' and t.worker_id is not null
        group by t.worker_id
    ),
    live as materialized (
        select w.*
        from public.workers w
        where w.status is distinct from 'terminated'
    ),
    listed as (
        select l.*
        from live l
        where p_prefix is null
           or l.orchestrator_prefix = p_prefix
           or (l.orchestrator_prefix is null and starts_with(l.id, p_prefix))
    ),
    worker_rows as (
        -- json_agg over a row: keys are the column names below, and it is the cheapest way to build it.
        select json_agg(x order by x.created_at, x.id) as items
        from (
            select l.id,
                   l.status,
                   l.instance_type,
                   l.created_at,
                   l.status_changed_at,
                   l.activated_at,
                   l.last_heartbeat,
                   round(extract(epoch from (now() - l.last_heartbeat)), 3) as heartbeat_age_sec,
                   coalesce(l.metadata, '{}'::jsonb) as metadata,
                   coalesce(r.ids, '[]'::json) as running_task_ids,
                   coalesce(r.n, 0) as running_count,
                   r.oldest as oldest_running_started_at,
                   r.oldest_stuckable as oldest_stuckable_started_at,
                   c.at as last_completion_at,
                   l.reported_status,
                   l.reported_at,
                   l.reported_details
            from listed l
            left join running r on r.worker_id = l.id
            left join lateral (
                select t.generation_processed_at as at
                from public.tasks t
                where t.worker_id = l.id and t.status = 'Complete'
                order by t.generation_processed_at desc nulls last
                limit 1
            ) c on true
        ) x
    ),
    -- Tasks still In Progress for a worker that is not live (terminated or unknown): the controller must
    -- requeue them or they would wait for ever.
    orphaned as (
        select coalesce(jsonb_agg(r.worker_id order by r.worker_id), '[]'::jsonb) as ids,
               coalesce(sum(r.n), 0) as n
        from running r
        where not exists (select 1 from live l where l.id = r.worker_id)
    )
    select coalesce((select items from worker_rows), '[]'::json),
           (select coalesce(sum(n), 0) from running),
           (select ids from orphaned),
           (select n from orphaned)
      into v_workers, v_running, v_orphaned, v_orphaned_n;

    -- How the latest boots ended, newest first: the policy's breaker and back-off are derived from these.
    select coalesce(json_agg(b order by b.at desc), '[]'::json) into v_boots
    from (
        select w.id as worker_id,
               coalesce(w.metadata ->> 'gpu_type', w.instance_type) as gpu_type,
               w.metadata ->> 'data_center' as data_center,
               w.boot_outcome = 'activated' as ok,
               w.boot_outcome as reason,
               w.boot_outcome_at as at
        from public.workers w
        where w.boot_outcome_at is not null
          and (p_prefix is null
               or w.orchestrator_prefix = p_prefix
               or (w.orchestrator_prefix is null and starts_with(w.id, p_prefix)))
        order by w.boot_outcome_at desc
        limit 50
    ) b;

    select * into v_control from public.orchestrator_control where id;
    select coalesce(jsonb_object_agg(l.name, jsonb_build_object(
               'holder', l.holder, 'expires_at', l.expires_at, 'acquired_at', l.acquired_at)), '{}'::jsonb)
      into v_leases
      from public.orchestrator_lease l;

    return json_build_object(
        'now', now(),
        'paused', coalesce(v_control.paused, false),
        'paused_by', v_control.paused_by,
        'pause_reason', v_control.paused_reason,
        'queue', json_build_object(
            'claimable', v_claimable,
            'queued_total', v_queued,
            'oldest_claimable_age_sec', round(extract(epoch from (now() - v_oldest)), 3),
            'running', v_running,
            'orphaned_running', v_orphaned_n,
            'orphaned_worker_ids', v_orphaned
        ),
        'leases', v_leases,
        'recent_boots', v_boots,
        'workers', v_workers
    );
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- Dashboard views (20261129000300), re-created as they were (20261206000100 drops them when it converts
-- a text status; their columns stay those of 20261129000300, so that file may run again).

create or replace view public.orchestrator_fleet_status as
    select w.status,
           count(*) as workers,
           count(*) filter (where exists (select 1 from public.tasks t
                                          where t.worker_id = w.id and t.status = 'In Progress')) as busy,
           min(w.created_at) as oldest_created_at,
           max(w.last_heartbeat) as latest_heartbeat,
           max(w.status_changed_at) as latest_change_at
      from public.workers w
     where w.status is distinct from 'terminated' or w.status_changed_at > now() - interval '24 hours'
     group by w.status;
comment on view public.orchestrator_fleet_status is
    'Workers per state (live ones, and those terminated in the last 24 hours), with how many run a task.';

create or replace view public.orchestrator_worker_health as
    select w.id,
           w.status,
           w.instance_type,
           w.metadata ->> 'runpod_id' as runpod_id,
           w.created_at,
           round(extract(epoch from now() - w.created_at))::bigint as age_sec,
           w.status_changed_at,
           w.activated_at,
           w.last_heartbeat,
           round(extract(epoch from now() - w.last_heartbeat))::bigint as heartbeat_age_sec,
           coalesce(r.running_count, 0) as running_count,
           r.current_task_id,
           r.oldest_started_at as current_task_started_at,
           c.last_completion_at,
           (w.metadata ->> 'vram_used_mb')::numeric as vram_used_mb,
           (w.metadata ->> 'vram_total_mb')::numeric as vram_total_mb,
           coalesce(w.metadata ->> 'error_reason', w.metadata ->> 'error') as error_reason
      from public.workers w
      left join lateral (
          select count(*) as running_count,
                 (array_agg(t.id order by t.generation_started_at))[1] as current_task_id,
                 min(t.generation_started_at) as oldest_started_at
            from public.tasks t
           where t.worker_id = w.id and t.status = 'In Progress'
      ) r on true
      left join lateral (
          select max(t.generation_processed_at) as last_completion_at
            from public.tasks t
           where t.worker_id = w.id and t.status = 'Complete'
      ) c on true
     where w.status is distinct from 'terminated';
comment on view public.orchestrator_worker_health is
    'One row per live worker: heartbeat age, running task, last completion, VRAM, error reason.';

create or replace view public.orchestrator_queue as
    select t.task_type,
           count(*) filter (where t.status = 'Queued') as queued,
           count(*) filter (where t.status = 'In Progress') as running,
           min(t.created_at) filter (where t.status = 'Queued') as oldest_queued_at,
           round(extract(epoch from now() - min(t.created_at) filter (where t.status = 'Queued')))::bigint
               as oldest_queued_age_sec,
           max(coalesce(t.attempts, 0)) filter (where t.status = 'Queued') as max_attempts_queued,
           (select c.paused from public.orchestrator_control c where c.id) as orchestrator_paused
      from public.tasks t
     where t.status in ('Queued', 'In Progress')
     group by t.task_type;
comment on view public.orchestrator_queue is
    'Queued and running tasks per task type, the oldest queued age, and whether spawning is paused.';

do $$
begin
    if current_setting('server_version_num')::int >= 150000 then
        alter view public.orchestrator_fleet_status set (security_invoker = true);
        alter view public.orchestrator_worker_health set (security_invoker = true);
        alter view public.orchestrator_queue set (security_invoker = true);
    end if;
end
$$;
revoke all on table public.orchestrator_fleet_status, public.orchestrator_worker_health,
    public.orchestrator_queue from public, anon, authenticated;
grant select on table public.orchestrator_fleet_status, public.orchestrator_worker_health,
    public.orchestrator_queue to service_role;

-- ---------------------------------------------------------------------------------------------------
-- EXECUTE for the service role only, on our functions by name (as 20261129000300 does).
do $$
declare
    v_fn regprocedure;
    v_ours text[] := array[
        'orch_lease_acquire', 'orch_lease_renew', 'orch_lease_release', 'orch_snapshot',
        'orch_register_worker', 'orch_transition_worker', 'orch_merge_worker_metadata',
        'orch_requeue_worker_tasks', 'orch_append_event', 'orch_set_paused', 'orch_request_termination',
        'orch_events', 'orch_queue_probe', 'orch_set_task_attempt_limit'];
begin
    for v_fn in
        select p.oid::regprocedure
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where (n.nspname = 'public' and p.proname = any (v_ours)) or n.nspname = 'orchestrator_private'
    loop
        execute format('revoke all on function %s from public, anon, authenticated', v_fn);
    end loop;
    for v_fn in
        select p.oid::regprocedure
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'public' and p.proname = any (v_ours)
    loop
        execute format('grant execute on function %s to service_role', v_fn);
    end loop;
end
$$;
