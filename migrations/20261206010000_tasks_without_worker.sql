-- Tasks In Progress that name no worker are counted by the snapshot and requeued past the stuck-task
-- timeout (docs/database.md, "Functions").
--
-- Such a task (legacy data, a hand edit, or a claim through a user's personal access token: the app's
-- claim_next_task_user_pat sets status and generation_started_at but no worker_id, banodoco/reigh-app
-- supabase/migrations) was invisible: orch_snapshot counted running tasks per worker only, and no worker
-- row could be failed to requeue it, so it stayed In Progress for ever. Now:
--   * orch_snapshot answers queue.unowned_running (how many) and queue.oldest_unowned_age_sec (how long
--     the oldest has been In Progress: generation_started_at, else updated_at, else created_at; a task
--     with none of them counts as old). They are not part of queue.running: no worker of ours runs them,
--     so they are no reason to spawn one.
--   * orch_requeue_unowned_tasks(p_token, p_older_than_sec, p_reason, p_max_attempts) requeues those In
--     Progress longer than p_older_than_sec by this database's clock, an attempt counted, dead-lettered as
--     Failed at the limit, exactly as orch_requeue_worker_tasks does for a worker's tasks. Fenced; rows
--     another transaction holds are skipped (the next tick retries) rather than waited for.
--
-- Idempotent, like every migration of this project.

-- ---------------------------------------------------------------------------------------------------
-- The one read per tick, with the tasks that name no worker. Unchanged otherwise (20261206000200).
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
    v_unowned bigint;
    v_unowned_since timestamptz;
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

    -- In Progress tasks that name no worker: no row of ours runs them and none ever will fail, so the
    -- policy requeues them past the stuck-task timeout. A task with no time at all counts as old.
    -- (tasks_orch_in_progress_idx holds NULL worker ids: an index range, not a scan.)
    select count(*), min(coalesce(t.generation_started_at, t.updated_at, t.created_at, 'epoch'::timestamptz))
      into v_unowned, v_unowned_since
      from public.tasks t
     where t.status = 'In Progress' and t.worker_id is null;

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
            'orphaned_worker_ids', v_orphaned,
            'unowned_running', v_unowned,
            'oldest_unowned_age_sec', round(extract(epoch from (now() - v_unowned_since)), 3)
        ),
        'leases', v_leases,
        'recent_boots', v_boots,
        'workers', v_workers
    );
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- Requeue In Progress tasks that name no worker, In Progress longer than p_older_than_sec.
create or replace function public.orch_requeue_unowned_tasks(
    p_token bigint, p_older_than_sec numeric, p_reason text, p_max_attempts integer default 3,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_requeued jsonb;
    v_failed jsonb;
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

    if jsonb_array_length(v_requeued) + jsonb_array_length(v_failed) > 0 then
        perform orchestrator_private.append_event('tasks_requeued', null, null, p_reason,
            jsonb_build_object('requeued', v_requeued, 'failed', v_failed, 'max_attempts', p_max_attempts,
                               'without_worker', true, 'older_than_sec', p_older_than_sec), null);
    end if;
    return jsonb_build_object('requeued', v_requeued, 'failed', v_failed);
end
$$;

revoke all on function public.orch_requeue_unowned_tasks(bigint, numeric, text, integer, text)
    from public, anon, authenticated;
grant execute on function public.orch_requeue_unowned_tasks(bigint, numeric, text, integer, text) to service_role;
revoke all on function public.orch_snapshot(text) from public, anon, authenticated;
grant execute on function public.orch_snapshot(text) to service_role;
