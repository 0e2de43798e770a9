-- The warm pool and the wait target, the database's side (docs/database.md, "Functions", "The warm pool
-- in the database", "Dashboard views").
--
-- 1. orch_snapshot answers, still in one call, what a queueing model and an evidence-based stuck-task
--    check need:
--      * workers[].running_tasks [{id, task_type, started_at}] (the rows of running_task_ids);
--      * queue.claimable_by_type [{task_type, count}];
--      * task_stats {window_sec: 86400, types: [{task_type, completions, mean_sec, stddev_sec, p50_sec,
--        p95_sec, p99_sec, max_sec}]} over each type's latest 500 tasks Complete within the window
--        (completed at generation_processed_at, else updated_at; duration from generation_started_at;
--        completions = how many the figures come from);
--      * arrivals [{window_sec: 600, count, capped}, {window_sec: 3600, count, capped}]: tasks created
--        (any status), counted up to 20,000 (capped: the window holds at least that many);
--      * recent_boots[] gains kind ('boot' | 'resume') and seconds (when ok: the intent row's creation,
--        or the resume's request, to activation). A resume's outcome is the event 'resume_ended' that
--        orch_transition_worker appends when a resume ends (activated, or failed before it).
--    Two indexes keep each new read to a bounded number of index entries whatever the size of tasks:
--    created_at (unless the table already has an index led by it), and (task_type, completion time)
--    of Complete tasks.
-- 2. orch_transition_worker: draining -> stopping raises OR005 while the worker holds an In Progress task
--    (as draining -> terminating does: a stopped pod's process is gone, and with it the task). It also
--    keeps the pool's bookkeeping, in the worker's metadata: stopped_sec (seconds spent stopped in
--    earlier stays, added when a stay ends) and resume_requested_at (set on stopped -> resuming unless
--    the caller gave one for this stay); and appends resume_ended when a resume ends.
-- 3. Spend: a stopped pod bills its volume disk, not its GPU. Runpod's billing ("Billing information",
--    docs.runpod.io/get-started/billing-information): "stopped Pods are charged $0.20 per GB per month
--    for volume storage. Storage is charged per minute"; the container disk is not billed while stopped
--    (docs.runpod.io/pods/storage). A month is taken as 30 days (720 h), the dearer reading. The disk is
--    the worker's metadata.disk_gb (the pod's volume disk in GB, as the spawn asked for it); absent or
--    malformed reads as 0. orchestrator_worker_spend and orchestrator_spend count it (same columns), and
--    a new view orchestrator_pool lists the pool.
-- 4. The metadata keys of the pool join the keys only the orchestrator writes (the workers guard).
--
-- Idempotent, like every migration of this project.

-- ---------------------------------------------------------------------------------------------------
-- Indexes.

-- Arrivals: tasks created in the last hour, an index range. The app's table may already have an index
-- led by created_at (under any name): then it serves, and no second one is built.
do $$
begin
    if not exists (
        select 1
          from pg_index i
          join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
         where i.indrelid = 'public.tasks'::regclass
           and a.attname = 'created_at'
           and i.indpred is null and i.indexprs is null and i.indisvalid
           and (select amname from pg_am where oid = (select relam from pg_class where oid = i.indexrelid)) = 'btree'
    ) then
        create index tasks_orch_created_idx on public.tasks (created_at);
    end if;
end
$$;

-- Durations: per task type, its latest completions (by completion time), read from the index alone.
create index if not exists tasks_orch_completed_type_idx
    on public.tasks (task_type, (coalesce(generation_processed_at, updated_at)) desc)
    include (generation_started_at, generation_processed_at, updated_at)
    where status = 'Complete';

-- Resume outcomes, newest first (the snapshot reads the latest 50).
create index if not exists orchestrator_events_resume_idx
    on public.orchestrator_events (at desc) where kind = 'resume_ended';

-- ---------------------------------------------------------------------------------------------------
-- Helpers, in the schema the dashboard views may call (the views are security_invoker).

create schema if not exists orchestrator_dashboard;
revoke all on schema orchestrator_dashboard from public;

-- A timestamp from free-form metadata text; malformed reads as absent.
create or replace function orchestrator_dashboard.as_timestamptz(p_value text)
returns timestamptz language plpgsql stable as $$
begin
    return p_value::timestamptz;
exception when others then
    return null;
end
$$;

-- A non-negative number from free-form metadata; anything else reads as 0.
create or replace function orchestrator_dashboard.metadata_number(p_metadata jsonb, p_key text)
returns numeric language sql immutable as $$
    select case
        when jsonb_typeof(p_metadata -> p_key) = 'number' and (p_metadata ->> p_key)::numeric > 0
            then (p_metadata ->> p_key)::numeric
        else 0
    end;
$$;

-- USD per hour of a stopped pod's volume disk: $0.20 per GB per 30-day month.
create or replace function orchestrator_dashboard.stopped_disk_usd_per_hr(p_metadata jsonb)
returns numeric language sql immutable as $$
    select orchestrator_dashboard.metadata_number(p_metadata, 'disk_gb') * 0.20 / 720.0;
$$;

-- When the current stay in the pool began: for a stopped worker, the later of its move to stopped and
-- metadata.stopped_at (the GPU is counted until the stop was confirmed: the dearer reading); else null.
create or replace function orchestrator_dashboard.worker_stopped_since(
    p_status text, p_status_changed_at timestamptz, p_metadata jsonb
) returns timestamptz language sql stable as $$
    select case when p_status = 'stopped' then
        least(now(), greatest(p_status_changed_at,
                              orchestrator_dashboard.as_timestamptz(p_metadata ->> 'stopped_at')))
    end;
$$;

-- Estimated USD one worker's pod billed from p_from (or its creation, if later) to the end of its
-- billing (orchestrator_dashboard.worker_billed_until, 20261206009000): its GPU price while it held a
-- GPU, its stopped disk price while in the pool. Past stays (metadata.stopped_sec) are spread evenly
-- over the life before the current stay when a window cuts it: exact for a window that covers the whole
-- life or none of it. Null when the GPU price is unknown.
create or replace function orchestrator_dashboard.worker_spend_from(
    p_from timestamptz, p_status text, p_created_at timestamptz, p_status_changed_at timestamptz,
    p_metadata jsonb
) returns numeric language plpgsql stable as $$
declare
    v_price numeric := orchestrator_dashboard.worker_cost_per_hr(p_metadata);
    v_until timestamptz := orchestrator_dashboard.worker_billed_until(p_status, p_status_changed_at, p_metadata);
    v_since timestamptz := orchestrator_dashboard.worker_stopped_since(p_status, p_status_changed_at, p_metadata);
    v_from timestamptz;
    v_before_end timestamptz;
    v_life_before numeric;
    v_past numeric;
    v_before_in numeric;
    v_past_in numeric;
    v_current_in numeric;
begin
    if v_price is null or p_created_at is null then
        return null;
    end if;
    v_from := greatest(p_created_at, p_from);
    if v_since is not null then
        v_since := least(greatest(v_since, p_created_at), v_until);
    end if;
    v_before_end := coalesce(v_since, v_until);
    v_life_before := greatest(0, extract(epoch from v_before_end - p_created_at));
    v_past := least(orchestrator_dashboard.metadata_number(p_metadata, 'stopped_sec'), v_life_before);
    v_before_in := greatest(0, extract(epoch from v_before_end - v_from));
    v_past_in := case when v_life_before > 0 then v_past * v_before_in / v_life_before else 0 end;
    v_current_in := case when v_since is null then 0
                         else greatest(0, extract(epoch from v_until - greatest(v_since, v_from))) end;
    return (v_price * (v_before_in - v_past_in)
            + orchestrator_dashboard.stopped_disk_usd_per_hr(p_metadata) * (v_past_in + v_current_in))
           / 3600.0;
end
$$;

-- USD per hour the worker bills now: its stopped disk in the pool, its GPU price otherwise.
create or replace function orchestrator_dashboard.worker_rate_per_hr(p_status text, p_metadata jsonb)
returns numeric language sql immutable as $$
    select case when p_status = 'stopped' then orchestrator_dashboard.stopped_disk_usd_per_hr(p_metadata)
                else orchestrator_dashboard.worker_cost_per_hr(p_metadata) end;
$$;

-- Seconds the worker has spent in the pool so far: past stays and the current one.
create or replace function orchestrator_dashboard.worker_pool_sec(
    p_status text, p_status_changed_at timestamptz, p_metadata jsonb
) returns numeric language sql stable as $$
    select orchestrator_dashboard.metadata_number(p_metadata, 'stopped_sec')
           + coalesce(greatest(0, extract(epoch from
                 orchestrator_dashboard.worker_billed_until(p_status, p_status_changed_at, p_metadata)
                 - orchestrator_dashboard.worker_stopped_since(p_status, p_status_changed_at, p_metadata))), 0);
$$;

-- ---------------------------------------------------------------------------------------------------
-- The metadata keys only the orchestrator writes (20261206000200), with the pool's: the executor's
-- (pod_stop_requested_at, stopped_at, resume_requested_at, resumes, previous_host_key_fingerprint,
-- disk_gb) and this file's (stopped_sec). A worker's heartbeat writing back a stale copy of the object
-- must not undo them.
create or replace function orchestrator_private.owned_metadata_keys()
returns text[] language sql immutable as $$
    select array[
        'runpod_id', 'ssh_details', 'gpu_type', 'gpu_types', 'data_center', 'cost_per_hr',
        'host_key_fingerprint', 'initialized_at', 'process_started_at', 'terminate_requested_at',
        'terminate_requested_by', 'pod_terminate_requested_at', 'drain_reason', 'drained_at',
        'error_reason', 'error_details', 'failed_at', 'capacity_misses', 'spawn_reason',
        'orchestrator_prefix', 'promoted_at',
        'pod_stop_requested_at', 'stopped_at', 'resume_requested_at', 'resumes',
        'previous_host_key_fingerprint', 'disk_gb', 'stopped_sec'
    ]::text[];
$$;

-- ---------------------------------------------------------------------------------------------------
-- Guarded state change (as in 20261206000200), with the pool: draining -> stopping waits for the held
-- task (OR005) like draining -> terminating; a stay in the pool is added to metadata.stopped_sec when
-- it ends; stopped -> resuming stamps metadata.resume_requested_at (the caller's, when it is from this
-- stay); the end of a resume appends resume_ended {ok, seconds, from, to, gpu_type, data_center}.
--
-- A resume ends when the worker leaves `resuming` for anything but `initializing`, or leaves the
-- `initializing` that followed it (a worker is in `initializing` with its boot outcome already written
-- only after a resume: the first boot writes it when it ends): for `active` it succeeded.
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
    if v_from = 'stopped' then
        v_since := orchestrator_dashboard.worker_stopped_since(v_from, w.status_changed_at, v_old_meta);
        v_meta := v_meta || jsonb_build_object('stopped_sec', round(
            orchestrator_dashboard.metadata_number(v_old_meta, 'stopped_sec')
            + coalesce(greatest(0, extract(epoch from now() - v_since)), 0), 3));
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

-- ---------------------------------------------------------------------------------------------------
-- The one read per tick (as in 20261206010000), with what the wait target and the stuck-task evidence
-- need. Still one statement's worth of work per part, each served by an index. No JIT: the planner
-- prices the walks over task types for a hundred types, past the JIT threshold, and compiling them
-- would cost more (about 12 ms a call) than running them.
create or replace function public.orch_snapshot(p_prefix text default null)
returns json language plpgsql stable security definer
set search_path = public, pg_temp
set max_parallel_workers_per_gather = 0
set jit = off
as $$
declare
    v_claimable bigint;
    v_by_type json;
    v_oldest timestamptz;
    v_queued bigint;
    v_workers json;
    v_running bigint;
    v_orphaned jsonb;
    v_orphaned_n bigint;
    v_control public.orchestrator_control%rowtype;
    v_leases jsonb;
    v_boots json;
    v_unowned bigint;
    v_unowned_since timestamptz;
    v_stats json;
    v_arrivals_10m bigint;
    v_arrivals_1h bigint;
    -- The window of task_stats, in seconds (a day of completions), and how many of the latest
    -- completions of each type it reads at most.
    c_stats_window constant integer := 86400;
    c_stats_sample constant integer := 500;
    -- Tasks counted at most for the arrivals (a bound on the read when a burst queued many).
    c_arrivals_cap constant integer := 20000;
begin
    -- Claimable tasks per type; their sum is the claimable count. The types are walked one by one
    -- (with the default view, a probe of tasks_orch_queued_type_idx each) and counted by index range:
    -- the same work as one count, where a GROUP BY may scan the table when much of it is queued.
    with recursive types(t) as (
        (select c.task_type from public.orchestrator_claimable_tasks c
          where c.task_type is not null order by c.task_type limit 1)
        union all
        select (select c.task_type from public.orchestrator_claimable_tasks c
                 where c.task_type > types.t order by c.task_type limit 1)
          from types where types.t is not null
    ),
    counted as (
        select types.t as task_type,
               (select count(*) from public.orchestrator_claimable_tasks c where c.task_type = types.t) as n
          from types where types.t is not null
        union all
        select null, (select count(*) from public.orchestrator_claimable_tasks c where c.task_type is null)
    )
    select coalesce(json_agg(json_build_object('task_type', x.task_type, 'count', x.n)
                             order by x.task_type nulls last) filter (where x.n > 0), '[]'::json),
           coalesce(sum(x.n), 0)
      into v_by_type, v_claimable
      from counted x;
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
               json_agg(json_build_object('id', t.id, 'task_type', t.task_type,
                                          'started_at', t.generation_started_at)
                        order by t.generation_started_at nulls last, t.id) as tasks,
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
                   coalesce(r.tasks, '[]'::json) as running_tasks,
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

    -- In Progress tasks that name no worker (20261206010000).
    select count(*), min(coalesce(t.generation_started_at, t.updated_at, t.created_at, 'epoch'::timestamptz))
      into v_unowned, v_unowned_since
      from public.tasks t
     where t.status = 'In Progress' and t.worker_id is null;

    -- Durations per task type: its latest completions within the window, at most c_stats_sample of
    -- them (tasks_orch_completed_type_idx: the types walked one by one, each a bounded index range read
    -- from the index alone). A task without a start or with a negative duration says nothing.
    with recursive types(t) as (
        (select k.task_type from public.tasks k
          where k.status = 'Complete' and k.task_type is not null order by k.task_type limit 1)
        union all
        select (select k.task_type from public.tasks k
                 where k.status = 'Complete' and k.task_type > types.t order by k.task_type limit 1)
          from types where types.t is not null
    ),
    durations as (
        select types.t as task_type, d.sec
          from types
          cross join lateral (
              select extract(epoch from coalesce(k.generation_processed_at, k.updated_at)
                                        - k.generation_started_at) as sec
                from public.tasks k
               where k.status = 'Complete' and k.task_type = types.t
                 and coalesce(k.generation_processed_at, k.updated_at)
                     >= now() - make_interval(secs => c_stats_window)
                 and k.generation_started_at is not null
               order by coalesce(k.generation_processed_at, k.updated_at) desc
               limit c_stats_sample
          ) d
         where types.t is not null and d.sec >= 0
    )
    select coalesce(json_agg(json_build_object(
               'task_type', s.task_type, 'completions', s.n,
               'mean_sec', round(s.mean, 3), 'stddev_sec', round(s.sd, 3),
               'p50_sec', round(s.p[1]::numeric, 3), 'p95_sec', round(s.p[2]::numeric, 3),
               'p99_sec', round(s.p[3]::numeric, 3), 'max_sec', round(s.mx, 3))
               order by s.task_type), '[]'::json)
      into v_stats
      from (
          select d.task_type, count(*) as n, avg(d.sec) as mean, stddev_samp(d.sec) as sd,
                 percentile_cont(array[0.5, 0.95, 0.99]) within group (order by d.sec) as p,
                 max(d.sec) as mx
            from durations d
           group by d.task_type
      ) s;

    -- Arrivals: tasks created in the last 10 minutes and the last hour, whatever became of them; the
    -- newest c_arrivals_cap at most (a backward index range), a window that holds more says so (capped).
    select count(*) filter (where x.created_at >= now() - interval '600 seconds'), count(*)
      into v_arrivals_10m, v_arrivals_1h
      from (select t.created_at from public.tasks t
             where t.created_at >= now() - interval '3600 seconds'
             order by t.created_at desc
             limit c_arrivals_cap) x;

    -- How the latest boots and resumes ended, newest first: the policy derives its breaker and back-off
    -- from these, and the boot and resume times its headroom needs.
    select coalesce(json_agg(b order by b.at desc), '[]'::json) into v_boots
    from (
        select * from (
            select w.id as worker_id,
                   coalesce(w.metadata ->> 'gpu_type', w.instance_type) as gpu_type,
                   w.metadata ->> 'data_center' as data_center,
                   w.boot_outcome = 'activated' as ok,
                   w.boot_outcome as reason,
                   w.boot_outcome_at as at,
                   'boot' as kind,
                   case when w.boot_outcome = 'activated'
                        then round(extract(epoch from (w.activated_at - w.created_at)), 3) end as seconds
            from public.workers w
            where w.boot_outcome_at is not null
              and (p_prefix is null
                   or w.orchestrator_prefix = p_prefix
                   or (w.orchestrator_prefix is null and starts_with(w.id, p_prefix)))
            order by w.boot_outcome_at desc
            limit 50
        ) boots
        union all
        select * from (
            select e.worker_id,
                   coalesce(e.details ->> 'gpu_type', w.metadata ->> 'gpu_type', w.instance_type) as gpu_type,
                   coalesce(e.details ->> 'data_center', w.metadata ->> 'data_center') as data_center,
                   coalesce(e.details ->> 'ok' = 'true', false) as ok,
                   e.reason,
                   e.at,
                   'resume' as kind,
                   case when e.details ->> 'ok' = 'true' and jsonb_typeof(e.details -> 'seconds') = 'number'
                        then (e.details ->> 'seconds')::numeric end as seconds
            from public.orchestrator_events e
            join public.workers w on w.id = e.worker_id
            where e.kind = 'resume_ended'
              and (p_prefix is null
                   or w.orchestrator_prefix = p_prefix
                   or (w.orchestrator_prefix is null and starts_with(w.id, p_prefix)))
            order by e.at desc
            limit 50
        ) resumes
        order by at desc
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
            'orphaned_worker_ids', v_orphaned,
            'unowned_running', v_unowned,
            'oldest_unowned_age_sec', round(extract(epoch from (now() - v_unowned_since)), 3),
            'claimable_by_type', v_by_type
        ),
        'task_stats', json_build_object('window_sec', c_stats_window, 'types', v_stats),
        'arrivals', json_build_array(
            json_build_object('window_sec', 600, 'count', v_arrivals_10m,
                              'capped', v_arrivals_10m >= c_arrivals_cap),
            json_build_object('window_sec', 3600, 'count', v_arrivals_1h,
                              'capped', v_arrivals_1h >= c_arrivals_cap)
        ),
        'leases', v_leases,
        'recent_boots', v_boots,
        'workers', v_workers
    );
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- The spend views (20261206009000), their columns unchanged, counting the pool: a stopped worker's
-- cost_per_hr is its disk's, and its spend its GPU while it held one plus its disk while stopped.

create or replace view public.orchestrator_worker_spend as
    select w.id,
           w.status,
           w.instance_type,
           w.metadata ->> 'runpod_id' as runpod_id,
           orchestrator_dashboard.worker_rate_per_hr(w.status, w.metadata) as cost_per_hr,
           w.created_at as billed_since,
           orchestrator_dashboard.worker_billed_until(w.status, w.status_changed_at, w.metadata) as billed_until,
           round(orchestrator_dashboard.worker_spend_from('-infinity', w.status, w.created_at,
                                                          w.status_changed_at, w.metadata), 4) as spend_usd
      from public.workers w
     where w.orchestrator_managed
       and (w.status is distinct from 'terminated' or w.status_changed_at > now() - interval '7 days');
comment on view public.orchestrator_worker_spend is
    'Per worker (live, and ended in the last 7 days): $/h now (a stopped pod''s disk) and the estimated spend so far.';

create or replace view public.orchestrator_spend as
    with rows as (
        select w.status,
               w.status_changed_at,
               w.created_at,
               w.metadata,
               orchestrator_dashboard.worker_billed_until(w.status, w.status_changed_at, w.metadata) as until,
               orchestrator_dashboard.worker_cost_per_hr(w.metadata) as price
          from public.workers w
         where w.orchestrator_managed
    ),
    spans as (
        select status, until, price,
               orchestrator_dashboard.worker_rate_per_hr(status, metadata) as rate,
               orchestrator_dashboard.worker_spend_from('-infinity', status, created_at, status_changed_at, metadata)
                   as usd,
               case when until > now() - interval '24 hours' then orchestrator_dashboard.worker_spend_from(
                   now() - interval '24 hours', status, created_at, status_changed_at, metadata) else 0 end as usd_24h,
               case when until > now() - interval '7 days' then orchestrator_dashboard.worker_spend_from(
                   now() - interval '7 days', status, created_at, status_changed_at, metadata) else 0 end as usd_7d
          from rows
    )
    select count(*) filter (where status is distinct from 'terminated') as live_workers,
           round(coalesce(sum(rate) filter (where status is distinct from 'terminated' and until >= now() - interval '1 second'), 0), 4)
               as cost_per_hr,
           round(coalesce(sum(usd) filter (where status is distinct from 'terminated'), 0), 4) as live_spend_usd,
           round(coalesce(sum(usd_24h), 0), 4) as spend_24h_usd,
           round(coalesce(sum(usd_7d), 0), 4) as spend_7d_usd,
           round(coalesce(sum(usd), 0), 4) as spend_total_usd,
           count(*) filter (where price is null) as workers_without_price
      from spans;
comment on view public.orchestrator_spend is
    'The fleet''s cost: $/h now (stopped pods at their disk''s price), spend of the live workers so far, over the last 24 hours, 7 days and in all (estimates).';

-- The warm pool: the workers on their way in, in it, and on their way out of it.
create or replace view public.orchestrator_pool as
    select w.id,
           w.status,
           w.metadata ->> 'runpod_id' as runpod_id,
           coalesce(w.metadata ->> 'gpu_type', w.instance_type) as gpu_type,
           w.metadata ->> 'data_center' as data_center,
           w.status_changed_at as state_since,
           orchestrator_dashboard.worker_stopped_since(w.status, w.status_changed_at, w.metadata) as stopped_since,
           round(extract(epoch from now()
                 - orchestrator_dashboard.worker_stopped_since(w.status, w.status_changed_at, w.metadata)))::bigint
               as stopped_for_sec,
           orchestrator_dashboard.metadata_number(w.metadata, 'disk_gb') as disk_gb,
           round(orchestrator_dashboard.stopped_disk_usd_per_hr(w.metadata), 6) as disk_cost_per_hr,
           round(orchestrator_dashboard.stopped_disk_usd_per_hr(w.metadata)
                 * orchestrator_dashboard.worker_pool_sec(w.status, w.status_changed_at, w.metadata) / 3600.0, 4)
               as disk_spend_usd,
           orchestrator_dashboard.metadata_number(w.metadata, 'resumes')::bigint as resumes
      from public.workers w
     where w.status in ('stopping', 'stopped', 'resuming');
comment on view public.orchestrator_pool is
    'The warm pool: stopping, stopped and resuming workers; since when stopped, the disk (metadata.disk_gb) and its cost so far.';

do $$
begin
    if current_setting('server_version_num')::int >= 150000 then
        alter view public.orchestrator_worker_spend set (security_invoker = true);
        alter view public.orchestrator_spend set (security_invoker = true);
        alter view public.orchestrator_pool set (security_invoker = true);
    end if;
end
$$;
revoke all on public.orchestrator_worker_spend, public.orchestrator_spend, public.orchestrator_pool
    from public, anon, authenticated;
grant select on public.orchestrator_worker_spend, public.orchestrator_spend, public.orchestrator_pool
    to service_role;

-- ---------------------------------------------------------------------------------------------------
-- EXECUTE: the dashboard helpers for the service role (the views run with its rights), nothing for the
-- API roles; our functions as before.
do $$
declare
    v_fn regprocedure;
begin
    for v_fn in
        select p.oid::regprocedure
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname in ('orchestrator_dashboard', 'orchestrator_private')
    loop
        execute format('revoke all on function %s from public, anon, authenticated', v_fn);
    end loop;
    for v_fn in
        select p.oid::regprocedure
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'orchestrator_dashboard'
    loop
        execute format('grant execute on function %s to service_role', v_fn);
    end loop;
end
$$;
grant usage on schema orchestrator_dashboard to service_role;
revoke all on function public.orch_transition_worker(bigint, text, text, text, jsonb, text)
    from public, anon, authenticated;
grant execute on function public.orch_transition_worker(bigint, text, text, text, jsonb, text) to service_role;
revoke all on function public.orch_snapshot(text) from public, anon, authenticated;
grant execute on function public.orch_snapshot(text) to service_role;
