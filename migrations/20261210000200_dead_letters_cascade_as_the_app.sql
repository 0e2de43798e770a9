-- A task the orchestrator dead-letters fails its related tasks as the app's own failures do.
--
-- When a task fails for good through the app (update-task-status, or the heartbeat's crash recovery at the
-- third attempt), the app calls cascade_task_failure (banodoco/reigh-app migration 20260331040000): with a
-- child, its parent (the orchestrator task) and every other unfinished task that names that parent; with a
-- parent, every unfinished task that names it. A task "names" a parent by any of five params paths
-- (orchestrator_task_id_ref, orchestration_contract.orchestrator_task_id, orchestrator_task_id,
-- orchestrator_details.orchestrator_task_id, originalParams.orchestrator_details.orchestrator_task_id);
-- the cascaded rows become Failed with error_message 'Cascaded failed from related task <id>'.
--
-- The orchestrator's own dead-lettering (orch_requeue_worker_tasks and orch_requeue_unowned_tasks at the
-- attempt limit) did not. A travel segment dead-lettered left the segments after it Queued, each waiting on
-- the one before, for ever; its parent stayed In Progress under the worker that ran it, which the real
-- worker runs again only when no child is unfinished, and which the daemon never lets go while it holds
-- a parent: a pod billing for ever. Both functions now cascade the same way, in the same transaction, and
-- name what they cascaded in their tasks_requeued event (details.cascaded). Their results are unchanged.
--
-- Only live rows are touched (Queued, In Progress), as the app's; the match reads the queued and running
-- tasks' params, a bounded set, for each task dead-lettered (a rare event).
--
-- Idempotent, like every migration of this project.

-- The parent a task's params name (the first of the app's five paths that holds one), or null.
create or replace function orchestrator_private.orchestrator_ref(p_params jsonb)
returns text language sql immutable as $$
    select case when jsonb_typeof(p_params) = 'object' then
        coalesce(p_params ->> 'orchestrator_task_id_ref',
                 p_params -> 'orchestration_contract' ->> 'orchestrator_task_id',
                 p_params ->> 'orchestrator_task_id',
                 p_params -> 'orchestrator_details' ->> 'orchestrator_task_id',
                 p_params -> 'originalParams' -> 'orchestrator_details' ->> 'orchestrator_task_id')
    end;
$$;
revoke all on function orchestrator_private.orchestrator_ref(jsonb) from public;

-- Whether params name p_parent by any of the five paths.
create or replace function orchestrator_private.names_orchestrator(p_params jsonb, p_parent text)
returns boolean language sql immutable as $$
    select jsonb_typeof(p_params) = 'object' and p_parent in (
        p_params ->> 'orchestrator_task_id_ref',
        p_params -> 'orchestration_contract' ->> 'orchestrator_task_id',
        p_params ->> 'orchestrator_task_id',
        p_params -> 'orchestrator_details' ->> 'orchestrator_task_id',
        p_params -> 'originalParams' -> 'orchestrator_details' ->> 'orchestrator_task_id');
$$;
revoke all on function orchestrator_private.names_orchestrator(jsonb, text) from public;

-- cascade_task_failure for each task of p_failed (a JSON array of ids): the ids it failed, in order.
create or replace function orchestrator_private.cascade_failure(p_failed jsonb)
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_all jsonb := '[]'::jsonb;
    v_id uuid;
    v_type text;
    v_params jsonb;
    v_is_parent boolean;
    v_parent text;
    v_parent_id uuid;
    v_hit jsonb;
begin
    for v_id in select e::uuid from jsonb_array_elements_text(coalesce(p_failed, '[]'::jsonb)) as e loop
        select t.task_type, t.params into v_type, v_params from public.tasks t where t.id = v_id;
        continue when not found;
        v_is_parent := coalesce(strpos(v_type, '_orchestrator'), 0) > 0;
        v_parent := case when v_is_parent then v_id::text else orchestrator_private.orchestrator_ref(v_params) end;
        continue when v_parent is null;
        v_parent_id := case when v_parent ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                            then v_parent::uuid end;
        with hit as (
            update public.tasks t
               set status = 'Failed'::public.task_status,
                   updated_at = now(),
                   error_message = 'Cascaded failed from related task ' || v_id::text
             where t.id <> v_id
               and (t.status = 'Queued' or t.status = 'In Progress')
               and ((not v_is_parent and t.id = v_parent_id)
                    or orchestrator_private.names_orchestrator(t.params, v_parent))
            returning t.id)
        select coalesce(jsonb_agg(hit.id order by hit.id), '[]'::jsonb) into v_hit from hit;
        v_all := v_all || v_hit;
    end loop;
    return v_all;
end
$$;
revoke all on function orchestrator_private.cascade_failure(jsonb) from public;

create or replace function public.orch_requeue_worker_tasks(
    p_token bigint, p_worker_id text, p_reason text, p_max_attempts integer default 3,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_requeued jsonb;
    v_failed jsonb;
    v_cascaded jsonb;
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
    -- What the app fails with a task that failed for good (its cascade_task_failure): a parent's other
    -- tasks, and a child's parent and siblings. Left, they would wait for ever, and the worker holding
    -- the parent would bill for ever.
    v_cascaded := orchestrator_private.cascade_failure(v_failed);

    if jsonb_array_length(v_requeued) + jsonb_array_length(v_failed) > 0 then
        perform orchestrator_private.append_event('tasks_requeued', p_worker_id, null, p_reason,
            jsonb_build_object('requeued', v_requeued, 'failed', v_failed, 'max_attempts', p_max_attempts,
                               'cascaded', v_cascaded), null);
    end if;
    return jsonb_build_object('requeued', v_requeued, 'failed', v_failed);
end
$$;

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
    -- What the app fails with a task that failed for good (its cascade_task_failure): a parent's other
    -- tasks, and a child's parent and siblings. Left, they would wait for ever, and the worker holding
    -- the parent would bill for ever.
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
