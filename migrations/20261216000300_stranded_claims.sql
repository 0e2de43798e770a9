-- Tasks a worker holds but no longer runs (a claim whose answer was lost) go back to the queue.
--
-- banodoco/reigh-worker 22cbba9 (2026-04-11; the commit the project's docs tell operators to pin) no
-- longer reads its own In Progress task at each poll (source/core/db/task_claim.py:
-- check_my_assigned_tasks returns None, "heartbeat handles recovery"). A claim that the app's claim
-- function committed but whose HTTP answer the worker never got (its 15 s timeout, a dropped
-- connection) leaves that task In Progress under a live worker that never runs it; the worker polls on
-- and claims the next one. Nothing ended such a task but the stuck-task check, at 1200 s at the least
-- (an hour for a type seen rarely), and that check fails the healthy worker and ends its pod.
--
-- The worker runs one task at a time (server.py's main loop claims only after the task it processes has
-- ended; an orchestrator parent it reported "still orchestrating" stays In Progress under it, waiting on
-- its children, and is not one of them). So a task other than a parent, In Progress under a worker that
-- holds a newer one, is not being run: orch_requeue_stranded_tasks requeues those among the ids given,
-- with an attempt counted, as orch_requeue_worker_tasks does (dead-lettered at the limit, the app's
-- cascade for those), checking at the time of the call that each is still In Progress under the worker
-- and that the worker still holds a newer non-parent task (started later, by generation_started_at,
-- which the app's claim sets to the start of its transaction).
--
-- What this trusts: that claims reach the database in the order the worker made them. A claim whose
-- transaction started later than the worker's next claim (held up in the gateway or the Edge Function
-- longer than the worker's 15 s timeout plus its poll interval, then committed all the same) would make
-- the task the worker runs the older one, and that task would be requeued and run twice. Two worker
-- processes under one id (a second start where flock is missing) would do the same.
--
-- orch_requeue_worker_tasks (20261210000200) and this function end their tasks' attempts the same way;
-- both now do it through orchestrator_private.requeue_held, so the attempt count, the dead-letter, the
-- app's cascade and the event are written once. orch_requeue_worker_tasks is re-created unchanged in what
-- it does and says.
--
-- Idempotent, like every migration of this project.

-- The end of an attempt for tasks the caller has chosen (and locked) among those In Progress under
-- p_worker_id: attempts + 1; below the limit Queued with no worker, at it Failed (worker_id kept) with
-- the app's cascade; one `tasks_requeued` event (its details, plus p_event). Also stores the limit the
-- tasks guard applies. p_ended and p_from complete the tasks' error_message: "dead-lettered: attempt n of
-- m ended <p_ended>: <reason>" and "requeued <p_from> (attempt n of m): <reason>".
create or replace function orchestrator_private.requeue_held(
    p_worker_id text, p_ids uuid[], p_reason text, p_max_attempts integer, p_ended text, p_from text,
    p_event jsonb default '{}'::jsonb)
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_requeued jsonb;
    v_failed jsonb;
    v_cascaded jsonb;
begin
    update public.orchestrator_control set max_task_attempts = p_max_attempts
     where id and max_task_attempts is distinct from p_max_attempts;

    with locked as (
        select t.id, coalesce(t.attempts, 0) + 1 as next_attempts
        from public.tasks t
        where t.id = any(p_ids) and t.worker_id = p_worker_id and t.status = 'In Progress'
        for update
    ),
    changed as (
        update public.tasks t
           set attempts = l.next_attempts,
               status = (case when l.next_attempts >= p_max_attempts then 'Failed' else 'Queued' end)::public.task_status,
               worker_id = case when l.next_attempts >= p_max_attempts then t.worker_id else null end,
               error_message = case
                   when l.next_attempts >= p_max_attempts then format(
                       'dead-lettered: attempt %s of %s ended %s: %s',
                       l.next_attempts, p_max_attempts, p_ended, coalesce(p_reason, 'no reason given'))
                   else format('requeued %s (attempt %s of %s): %s',
                       p_from, l.next_attempts, p_max_attempts, coalesce(p_reason, 'no reason given'))
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
    -- tasks, and a child's parent and siblings.
    v_cascaded := orchestrator_private.cascade_failure(v_failed);

    if jsonb_array_length(v_requeued) + jsonb_array_length(v_failed) > 0 then
        perform orchestrator_private.append_event('tasks_requeued', p_worker_id, null, p_reason,
            jsonb_build_object('requeued', v_requeued, 'failed', v_failed, 'max_attempts', p_max_attempts,
                               'cascaded', v_cascaded) || coalesce(p_event, '{}'::jsonb), null);
    end if;
    return jsonb_build_object('requeued', v_requeued, 'failed', v_failed);
end
$$;
revoke all on function orchestrator_private.requeue_held(text, uuid[], text, integer, text, text, jsonb)
    from public;

create or replace function public.orch_requeue_worker_tasks(
    p_token bigint, p_worker_id text, p_reason text, p_max_attempts integer default 3,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
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
    -- Every task it holds.
    return orchestrator_private.requeue_held(
        p_worker_id,
        array(select t.id from public.tasks t
               where t.worker_id = p_worker_id and t.status = 'In Progress'),
        p_reason, p_max_attempts, format('when worker %s was requeued', p_worker_id),
        format('from worker %s', p_worker_id));
end
$$;

create or replace function public.orch_requeue_stranded_tasks(
    p_token bigint, p_worker_id text, p_task_ids text[], p_reason text, p_max_attempts integer default 3,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_ids uuid[];
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    perform orchestrator_private.check_arg(p_task_ids is not null, 'p_task_ids must not be null', '22004');
    perform orchestrator_private.check_arg(p_max_attempts is not null, 'p_max_attempts must not be null', '22004');
    perform orchestrator_private.check_arg(p_max_attempts between 1 and 1000,
        format('p_max_attempts must be between 1 and 1000, got %s', p_max_attempts));
    perform orchestrator_private.check_lease(p_lease, p_token);
    perform 1 from public.workers where id = p_worker_id for update;
    if not found then
        raise exception 'unknown worker "%"', p_worker_id using errcode = 'OR003';
    end if;

    -- Of the ids given, the non-parent tasks it holds that started before another such task it holds,
    -- its held tasks locked before they are compared.
    with held as (
        select t.id, t.generation_started_at
          from public.tasks t
         where t.worker_id = p_worker_id and t.status = 'In Progress'
           and coalesce(strpos(t.task_type, '_orchestrator'), 0) = 0
           for update
    )
    select coalesce(array_agg(h.id), '{}') into v_ids
      from held h
     where h.id::text = any(p_task_ids)
       and h.generation_started_at is not null
       and exists (select 1 from held n
                    where n.id <> h.id and n.generation_started_at > h.generation_started_at);
    return orchestrator_private.requeue_held(
        p_worker_id, v_ids, p_reason, p_max_attempts,
        format('when worker %s was found not running it', p_worker_id),
        format('from worker %s, which holds a newer task', p_worker_id),
        jsonb_build_object('stranded', true));
end
$$;
revoke all on function public.orch_requeue_stranded_tasks(bigint, text, text[], text, integer, text)
    from public, anon, authenticated;
grant execute on function public.orch_requeue_stranded_tasks(bigint, text, text[], text, integer, text)
    to service_role;
