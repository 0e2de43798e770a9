-- A parent task waiting on its children needs no worker: a worker leaving lets it go instead of
-- keeping its GPU for it.
--
-- The real worker keeps a parent (a `*_orchestrator` task, e.g. `travel_orchestrator`) In Progress under
-- its own id while the parent's children run, and claims other work meanwhile (banodoco/Reigh-Worker
-- worker.py, the poll's look-up of its own In Progress task; source/core/db/task_claim.py). The app
-- completes the parent with its last child (banodoco/reigh-app complete_task/orchestratorCore.ts,
-- checkOrchestratorCompletion, for travel_segment, join_clips_segment and join_final_stitch children),
-- whatever worker_id the parent has, and fails it with a failed child (cascade_task_failure). So the
-- holder's process is not needed for the parent to end. Yet orch_transition_worker refuses
-- `draining -> terminating` / `-> stopping` while the worker holds any In Progress task (OR005), and the
-- daemon never released a worker holding one: when the children stopped being claimable (a user out of
-- credits, a segment cancelled from the dashboard), the holder's GPU billed for as long as the chain
-- waited, until the app failed the parent as stale 24 hours later, if it did.
--
-- * orch_snapshot reports, for each parent a worker holds, how many of its children are unfinished
--   (`children_live`: Queued or In Progress tasks whose params name it, read as the app's complete_task
--   resolves a child's parent; a parent naming itself is not its own child) and when the newest of
--   them was created
--   (`last_child_at`). The queued ones are found through a new partial index of the queued tasks that
--   name a parent, tasks_orch_queued_child_idx. A parent with none is being run
--   (its first run creates them) or waits for its worker's re-run: its worker is busy. The daemon lets a
--   worker go only when every task it holds is a parent with a live child, after GPU_IDLE_TIMEOUT_SEC
--   with no task run and no child created.
-- * orch_release_parents(p_token, p_worker_id, p_reason, p_lease): for a draining worker, every parent
--   it holds In Progress that still has an unfinished child loses its worker_id and stays In Progress
--   (nothing else changes: no attempt, no timestamp); any other parent is kept, and keeps the worker
--   (a parent in its first run, or one only the worker's re-run can complete). The next tick ends the
--   worker as any idle one. Appends `parents_released`. Returns {released: [ids], kept: [ids]}.
-- * orch_requeue_unowned_tasks: a parent with an unfinished child is waiting, not abandoned: skipped.
--   The snapshot's `unowned_running` and `oldest_unowned_age_sec` leave such a parent out too, so the
--   daemon plans no requeue for it and operators do not take it for a run on a user's own machine.
-- * The tasks guard lets the release through: it sends any other In Progress task whose worker_id is
--   cleared back to the queue, as before.
--
-- A dying holder's parent is still requeued (orch_requeue_worker_tasks, unchanged): its next run finds
-- the children that exist and makes the missing ones (the handler is idempotent), which a release
-- would leave missing when the holder died while making them.
--
-- Idempotent, like every migration of this project.

-- Whether the task is a parent (a `*_orchestrator` type, as the daemon's PARENT_MARK) that some Queued
-- or In Progress task other than itself names as its parent, read as the app's complete_task resolves a
-- child's parent (the expression of tasks_orch_queued_child_idx, below, which serves the Queued part):
-- the same reading as the snapshot's `children_live`, so the release lets go what the daemon asked for.
create or replace function orchestrator_private.parent_waits(p_id uuid, p_task_type text)
returns boolean language sql stable security definer set search_path = public, pg_temp as $$
    select coalesce(strpos(p_task_type, '_orchestrator'), 0) > 0
       and (exists (select 1 from public.tasks c
                     where c.status = 'Queued'
                       and coalesce(c.params -> 'orchestration_contract' ->> 'orchestrator_task_id',
                                    c.params ->> 'orchestrator_task_id_ref',
                                    c.params -> 'orchestrator_details' ->> 'orchestrator_task_id',
                                    c.params -> 'originalParams' -> 'orchestrator_details' ->> 'orchestrator_task_id',
                                    c.params ->> 'orchestrator_task_id') = p_id::text)
            or exists (select 1 from public.tasks c
                        where c.status = 'In Progress' and c.id <> p_id
                          and coalesce(c.params -> 'orchestration_contract' ->> 'orchestrator_task_id',
                                       c.params ->> 'orchestrator_task_id_ref',
                                       c.params -> 'orchestrator_details' ->> 'orchestrator_task_id',
                                       c.params -> 'originalParams' -> 'orchestrator_details' ->> 'orchestrator_task_id',
                                       c.params ->> 'orchestrator_task_id') = p_id::text));
$$;
revoke all on function orchestrator_private.parent_waits(uuid, text) from public;

-- The tasks guard (20261206000200) sends an In Progress task whose worker_id is cleared back to the
-- queue; a parent released here must stay In Progress, so the release marks its write.
create or replace function orchestrator_private.guard_task_write()
returns trigger language plpgsql security definer set search_path = public, pg_temp as $$
declare
    w record;
    v_limit integer;
begin
    -- An In Progress task whose worker went away (its row deleted: the foreign key's ON DELETE SET NULL,
    -- or a writer clearing worker_id) would be nobody's and wait for ever: it goes back to the queue.
    -- Except a parent the orchestrator releases (orchestrator_private.release_parents): it stays In
    -- Progress, for the app to complete with its last child.
    if old.status = 'In Progress' and new.status = 'In Progress'
       and old.worker_id is not null and new.worker_id is null
       and not (coalesce(current_setting('orchestrator.writer', true), '') = 'release_parents'
                and coalesce(strpos(new.task_type, '_orchestrator'), 0) > 0) then
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

-- Release the worker's In Progress parents that wait on an unfinished child: worker_id cleared, In
-- Progress kept. The ids released, in order.
create or replace function orchestrator_private.release_parents(p_worker_id text)
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_prev text := coalesce(current_setting('orchestrator.writer', true), '');
    v_released jsonb;
begin
    perform set_config('orchestrator.writer', 'release_parents', true);
    with released as (
        update public.tasks t
           set worker_id = null
         where t.worker_id = p_worker_id and t.status = 'In Progress'
           and orchestrator_private.parent_waits(t.id, t.task_type)
        returning t.id
    )
    select coalesce(jsonb_agg(id order by id), '[]'::jsonb) into v_released from released;
    perform set_config('orchestrator.writer', v_prev, true);
    return v_released;
end
$$;
revoke all on function orchestrator_private.release_parents(text) from public;


create or replace function public.orch_release_parents(
    p_token bigint, p_worker_id text, p_reason text, p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_status text;
    v_released jsonb := '[]'::jsonb;
    v_kept jsonb;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    perform orchestrator_private.check_lease(p_lease, p_token);
    -- Serialised with the worker's transitions and claims (orch_transition_worker locks the row too).
    select status into v_status from public.workers where id = p_worker_id for update;
    if not found then
        raise exception 'unknown worker "%"', p_worker_id using errcode = 'OR003';
    end if;
    -- Only a worker on its way out, which claims nothing more: one still serving keeps its parents.
    if v_status = 'draining' then
        v_released := orchestrator_private.release_parents(p_worker_id);
    end if;
    select coalesce(jsonb_agg(t.id order by t.id), '[]'::jsonb) into v_kept
      from public.tasks t
     where t.worker_id = p_worker_id and t.status = 'In Progress'
       and coalesce(strpos(t.task_type, '_orchestrator'), 0) > 0;
    if jsonb_array_length(v_released) > 0 then
        perform orchestrator_private.append_event('parents_released', p_worker_id, null, p_reason,
            jsonb_build_object('released', v_released, 'kept', v_kept), null);
    end if;
    return jsonb_build_object('released', v_released, 'kept', v_kept);
end
$$;
revoke all on function public.orch_release_parents(bigint, text, text, text) from public, anon, authenticated;
grant execute on function public.orch_release_parents(bigint, text, text, text) to service_role;


create or replace function public.orch_requeue_unowned_tasks(
    p_token bigint, p_older_than_sec numeric, p_reason text, p_max_attempts integer default 3,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_requeued jsonb;
    v_failed jsonb;
    v_cascaded jsonb;
begin
    perform orchestrator_private.check_arg(p_older_than_sec is not null, 'p_older_than_sec must not be null', '22004');
    perform orchestrator_private.check_arg(p_older_than_sec >= 0,
        format('p_older_than_sec must not be negative, got %s', p_older_than_sec));
    perform orchestrator_private.check_arg(p_max_attempts is not null, 'p_max_attempts must not be null', '22004');
    perform orchestrator_private.check_arg(p_max_attempts between 1 and 1000,
        format('p_max_attempts must be between 1 and 1000, got %s', p_max_attempts));
    perform orchestrator_private.check_lease(p_lease, p_token);
    update public.orchestrator_control set max_task_attempts = p_max_attempts
     where id and max_task_attempts is distinct from p_max_attempts;

    with locked as (
        select t.id, coalesce(t.attempts, 0) + 1 as next_attempts
        from public.tasks t
        where t.status = 'In Progress' and t.worker_id is null
          and coalesce(t.generation_started_at, t.updated_at, t.created_at, 'epoch'::timestamptz)
              < now() - make_interval(secs => p_older_than_sec::double precision)
          -- A parent whose children are still to run is waiting, not abandoned (a released one).
          and not orchestrator_private.parent_waits(t.id, t.task_type)
        for update skip locked
    ),
    changed as (
        update public.tasks t
           set attempts = l.next_attempts,
               status = (case when l.next_attempts >= p_max_attempts then 'Failed' else 'Queued' end)::public.task_status,
               error_message = case
                   when l.next_attempts >= p_max_attempts then format(
                       'dead-lettered: attempt %s of %s ended In Progress with no worker for over %s s: %s',
                       l.next_attempts, p_max_attempts, p_older_than_sec, coalesce(p_reason, 'no reason given'))
                   else format('requeued: In Progress with no worker for over %s s (attempt %s of %s): %s',
                       p_older_than_sec, l.next_attempts, p_max_attempts, coalesce(p_reason, 'no reason given'))
               end,
               updated_at = now()
          from locked l
         where t.id = l.id and t.status = 'In Progress' and t.worker_id is null
        returning t.id, t.status
    )
    select coalesce(jsonb_agg(id order by id) filter (where status = 'Queued'), '[]'::jsonb),
           coalesce(jsonb_agg(id order by id) filter (where status = 'Failed'), '[]'::jsonb)
      into v_requeued, v_failed
      from changed;
    v_cascaded := orchestrator_private.cascade_failure(v_failed);

    if jsonb_array_length(v_requeued) + jsonb_array_length(v_failed) > 0 then
        perform orchestrator_private.append_event('tasks_requeued', null, null, p_reason,
            jsonb_build_object('requeued', v_requeued, 'failed', v_failed, 'max_attempts', p_max_attempts,
                               'without_worker', true, 'older_than_sec', p_older_than_sec,
                               'cascaded', v_cascaded), null);
    end if;
    return jsonb_build_object('requeued', v_requeued, 'failed', v_failed);
end
$$;


-- The queued tasks that name a parent, by the parent they name, read in the order the app's complete_task
-- resolves a child's parent (reigh-app _shared/orchestratorReference.ts, extractOrchestratorRef: the
-- orchestration contract, orchestrator_task_id_ref, orchestrator_details, originalParams, then the top-level
-- orchestrator_task_id), for the snapshot's count of a held parent's children. Built-in operators only:
-- the app's roles insert tasks, and an index expression calling one of our functions would need their
-- right to execute it. Partial: only queued children are in it. The snapshot repeats the expression
-- exactly, or the index would not serve it.
create index if not exists tasks_orch_queued_child_idx
    on public.tasks ((coalesce(params -> 'orchestration_contract' ->> 'orchestrator_task_id',
                               params ->> 'orchestrator_task_id_ref',
                               params -> 'orchestrator_details' ->> 'orchestrator_task_id',
                               params -> 'originalParams' -> 'orchestrator_details' ->> 'orchestrator_task_id',
                               params ->> 'orchestrator_task_id')))
    where status = 'Queued'
      and coalesce(params -> 'orchestration_contract' ->> 'orchestrator_task_id',
                   params ->> 'orchestrator_task_id_ref',
                   params -> 'orchestrator_details' ->> 'orchestrator_task_id',
                   params -> 'originalParams' -> 'orchestrator_details' ->> 'orchestrator_task_id',
                   params ->> 'orchestrator_task_id') is not null;


create or replace function public.orch_snapshot(p_prefix text default null)
returns json language plpgsql stable security definer
set search_path = public, pg_temp
set max_parallel_workers_per_gather = 0
set jit = off
as $$
declare
    v_claimable bigint;
    v_listed bigint;
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
    v_released_since timestamptz;  -- the longest-released queued task with dependencies the view lists
    v_released_at timestamptz[];  -- when each queued one released within the hour was released
    v_dependents_created_at timestamptz[];  -- when each queued one created within the hour was created
    v_started_created_10m bigint;  -- of those with dependencies started within the hour: created in
    v_started_created_1h bigint;   -- each window, and released in each window
    v_started_released_10m bigint;
    v_started_released_1h bigint;
    -- The window of task_stats, in seconds (a day of completions), and how many of the latest
    -- completions of each type it reads at most.
    c_stats_window constant integer := 86400;
    c_stats_sample constant integer := 500;
    -- Tasks counted at most for the arrivals (a bound on the read when a burst queued many).
    c_arrivals_cap constant integer := 20000;
    -- On Reigh's database, the task types the app's GPU claim never takes (get_task_run_type other than
    -- gpu: API tasks), left out of the arrivals and the durations; elsewhere none.
    v_other_types text[] := '{}';
begin
    -- Nested, so a database without the app's tables pays two catalog look-ups and no more.
    if to_regclass('public.task_types') is not null then
        if to_regprocedure('public.get_task_run_type(text)') is not null
           and exists (select 1 from pg_attribute a
                        where a.attrelid = 'public.task_types'::regclass and a.attname = 'name'
                          and not a.attisdropped) then
            execute 'select coalesce(array_agg(tt.name::text), ''{}'') from public.task_types tt'
                    ' where tt.name is not null and public.get_task_run_type(tt.name::text) <> ''gpu'''
               into v_other_types;
        end if;
    end if;

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
    ),
    -- Those of them still waiting on a dependency, read from tasks_orch_queued_deps_idx: only the
    -- queued tasks that have a dependant_on at all.
    -- Grouped by the type the view gives them, which an operator's view may rewrite.
    -- The queued tasks that have a dependant_on at all (tasks_orch_queued_deps_idx), each read once
    -- here: when their dependencies completed (null while one is not Complete), for the counts, the
    -- oldest claimable age and the arrivals below. Grouped by the type the view gives them, which an
    -- operator's view may rewrite.
    dependents as materialized (
        select coalesce(b.listed, false) as listed, b.task_type, b.created_at as listed_at, t.created_at,
               coalesce(t.task_type <> all(v_other_types), true) as gpu,
               jsonb_array_length(orchestrator_private.task_dependencies(to_jsonb(t.dependant_on))) as deps,
               orchestrator_private.dependencies_ready_at(to_jsonb(t.dependant_on)) as done_at
          from public.tasks t
          left join lateral (select true as listed, c.task_type, c.created_at
                               from public.orchestrator_claimable_tasks c
                              where c.id = t.id limit 1) b on true
         where t.status = 'Queued' and t.dependant_on is not null
    ),
    -- Those of them the view lists and still waiting on a dependency.
    blocked as (
        select d.task_type, count(*) as n
          from dependents d
         where d.listed and d.deps > 0 and d.done_at is null
         group by d.task_type
    ),
    ready as (
        select c.task_type, c.n as listed, c.n - coalesce(b.n, 0) as n
          from counted c left join blocked b on b.task_type is not distinct from c.task_type
    )
    select coalesce(json_agg(json_build_object('task_type', x.task_type, 'count', x.n)
                             order by x.task_type nulls last) filter (where x.n > 0), '[]'::json),
           coalesce(sum(x.n), 0),
           coalesce(sum(x.listed), 0),
           (select min(greatest(d.listed_at, d.done_at)) from dependents d where d.listed and d.done_at is not null),
           (select coalesce(array_agg(greatest(d.created_at, d.done_at)), '{}') from dependents d
             where d.done_at is not null and d.gpu
               and greatest(d.created_at, d.done_at) >= now() - interval '3600 seconds'),
           (select coalesce(array_agg(d.created_at), '{}') from dependents d
             where d.deps > 0 and d.gpu and d.created_at >= now() - interval '3600 seconds')
      into v_by_type, v_claimable, v_listed, v_released_since, v_released_at, v_dependents_created_at
      from ready x;
    -- The oldest separately, as the longest a task has been claimable: among the tasks without
    -- dependencies, with the default view an ordered probe of the queued index, stopping at the first
    -- (its row read by key); among those whose dependencies are all Complete, since the last completed
    -- (read above).
    select c.created_at into v_oldest
      from public.orchestrator_claimable_tasks c join public.tasks t on t.id = c.id
     where jsonb_array_length(orchestrator_private.task_dependencies(to_jsonb(t.dependant_on))) = 0
     order by c.created_at nulls last limit 1;
    v_oldest := least(v_oldest, v_released_since);
    if pg_get_viewdef('public.orchestrator_claimable_tasks'::regclass)
       = pg_get_viewdef('orchestrator_private.default_claimable_tasks'::regclass) then
        v_queued := v_listed;
    else
        select count(*) into v_queued from public.tasks t where t.status = 'Queued';
    end if;

    with parents as materialized (
        select t.id::text as id
          from public.tasks t
         where t.status = 'In Progress' and t.worker_id is not null
           and coalesce(strpos(t.task_type, '_orchestrator'), 0) > 0
    ),
    -- The live tasks that name a held parent (20261213000100), read once for all of them, each task's
    -- parent as complete_task resolves it (the expression of tasks_orch_queued_child_idx): Queued ones
    -- through that index, In Progress ones all (the running tasks, a bounded set), a parent naming
    -- itself not its own child. Gathered into one object keyed by parent: joined row by row, a thousand
    -- held parents made a nested loop of a million comparisons.
    kids as (
        select coalesce(jsonb_object_agg(x.ref, jsonb_build_array(x.live, x.newest)), '{}'::jsonb) as obj
          from (select r.ref, count(*) as live, max(r.created_at) as newest
                  from (select c.id,
                               coalesce(c.params -> 'orchestration_contract' ->> 'orchestrator_task_id',
                                        c.params ->> 'orchestrator_task_id_ref',
                                        c.params -> 'orchestrator_details' ->> 'orchestrator_task_id',
                                        c.params -> 'originalParams' -> 'orchestrator_details' ->> 'orchestrator_task_id',
                                        c.params ->> 'orchestrator_task_id') as ref,
                               c.created_at
                          from public.tasks c
                         where c.status = 'Queued'
                           and coalesce(c.params -> 'orchestration_contract' ->> 'orchestrator_task_id',
                                        c.params ->> 'orchestrator_task_id_ref',
                                        c.params -> 'orchestrator_details' ->> 'orchestrator_task_id',
                                        c.params -> 'originalParams' -> 'orchestrator_details' ->> 'orchestrator_task_id',
                                        c.params ->> 'orchestrator_task_id')
                               = any(array(select p.id from parents p))
                           and exists (select 1 from parents)
                        union all
                        select c.id,
                               coalesce(c.params -> 'orchestration_contract' ->> 'orchestrator_task_id',
                                        c.params ->> 'orchestrator_task_id_ref',
                                        c.params -> 'orchestrator_details' ->> 'orchestrator_task_id',
                                        c.params -> 'originalParams' -> 'orchestrator_details' ->> 'orchestrator_task_id',
                                        c.params ->> 'orchestrator_task_id'),
                               c.created_at
                          from public.tasks c
                         where c.status = 'In Progress' and exists (select 1 from parents)) r
                 where r.ref in (select p.id from parents p) and r.ref <> r.id::text
                 group by r.ref) x
    ),
    running as materialized (
        select t.worker_id,
               json_agg(t.id order by t.generation_started_at nulls last, t.id) as ids,
               -- A parent's unfinished children (20261213000100): whether it waits on them, and when
               -- its newest was created (its own run makes them).
               json_agg(json_build_object('id', t.id, 'task_type', t.task_type,
                                          'started_at', t.generation_started_at,
                                          'children_live', case
                                              when coalesce(strpos(t.task_type, '_orchestrator'), 0) > 0
                                              then coalesce((k.obj -> (t.id::text) ->> 0)::bigint, 0) end,
                                          'last_child_at', (k.obj -> (t.id::text) ->> 1)::timestamptz)
                        order by t.generation_started_at nulls last, t.id) as tasks,
               count(*) as n,
               min(t.generation_started_at) as oldest,
               -- Long-running parents (`*_orchestrator*` types) are exempt from the stuck-task timeout.
               min(t.generation_started_at)
                   filter (where coalesce(strpos(t.task_type, '_orchestrator'), 0) = 0) as oldest_stuckable
        from public.tasks t
        cross join kids k
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

    -- In Progress tasks that name no worker (20261206010000), but a parent a leaving worker let go
    -- while its children still run (20261213000100): that one waits, and the app completes it.
    select count(*), min(coalesce(t.generation_started_at, t.updated_at, t.created_at, 'epoch'::timestamptz))
      into v_unowned, v_unowned_since
      from public.tasks t
     where t.status = 'In Progress' and t.worker_id is null
       and not orchestrator_private.parent_waits(t.id, t.task_type);

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
         where types.t is not null and d.sec >= 0 and types.t <> all(v_other_types)
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

    -- Arrivals: the tasks that became claimable in the last 10 minutes and the last hour, whatever
    -- became of them since. First every task created in each window, the newest c_arrivals_cap at most
    -- (a backward range of the created_at index, from the index alone), a window that holds more says
    -- so (capped); then, in a window not capped, the tasks with dependencies move from their creation
    -- to their release: when the last of their dependencies completed (or at creation, if later). The
    -- queued ones were read above; those started within the hour are read here (one started earlier
    -- was released earlier, and one created within the hour has started within it, unless it ended
    -- Failed or Cancelled without a start: then it is counted at its creation).
    if cardinality(v_other_types) = 0 then
        select count(*) filter (where x.created_at >= now() - interval '600 seconds'), count(*)
          into v_arrivals_10m, v_arrivals_1h
          from (select t.created_at from public.tasks t
                 where t.created_at >= now() - interval '3600 seconds'
                 order by t.created_at desc
                 limit c_arrivals_cap) x;
    else
        -- The type is not in the created_at index: each row of the window is read (20,000 at most).
        select count(*) filter (where x.created_at >= now() - interval '600 seconds'), count(*)
          into v_arrivals_10m, v_arrivals_1h
          from (select t.created_at from public.tasks t
                 where t.created_at >= now() - interval '3600 seconds'
                   and coalesce(t.task_type <> all(v_other_types), true)
                 order by t.created_at desc
                 limit c_arrivals_cap) x;
    end if;
    select count(*) filter (where s.deps > 0 and s.created_at >= now() - interval '600 seconds'),
           count(*) filter (where s.deps > 0 and s.created_at >= now() - interval '3600 seconds'),
           count(*) filter (where s.done_at is not null
                              and greatest(s.created_at, s.done_at) >= now() - interval '600 seconds'),
           count(*) filter (where s.done_at is not null
                              and greatest(s.created_at, s.done_at) >= now() - interval '3600 seconds')
      into v_started_created_10m, v_started_created_1h, v_started_released_10m, v_started_released_1h
      from (select t.created_at,
                   jsonb_array_length(orchestrator_private.task_dependencies(to_jsonb(t.dependant_on))) as deps,
                   orchestrator_private.dependencies_ready_at(to_jsonb(t.dependant_on)) as done_at
              from public.tasks t
             where t.dependant_on is not null and t.status <> 'Queued'
               and t.generation_started_at >= now() - interval '3600 seconds'
               and coalesce(t.task_type <> all(v_other_types), true)
            offset 0) s;  -- (each row's functions evaluated once, not again in the filters)
    if v_arrivals_10m < c_arrivals_cap then
        v_arrivals_10m := v_arrivals_10m + v_started_released_10m - v_started_created_10m
            + (select count(*) from unnest(v_released_at) as q(at) where q.at >= now() - interval '600 seconds')
            - (select count(*) from unnest(v_dependents_created_at) as q(at)
                where q.at >= now() - interval '600 seconds');
    end if;
    if v_arrivals_1h < c_arrivals_cap then
        v_arrivals_1h := v_arrivals_1h + v_started_released_1h - v_started_created_1h
            + cardinality(v_released_at) - cardinality(v_dependents_created_at);
    end if;

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

revoke all on function public.orch_snapshot(text) from public, anon, authenticated;
grant execute on function public.orch_snapshot(text) to service_role;
