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
-- Idempotent, like every migration of this project.

create or replace function public.orch_requeue_stranded_tasks(
    p_token bigint, p_worker_id text, p_task_ids text[], p_reason text, p_max_attempts integer default 3,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_requeued jsonb;
    v_failed jsonb;
    v_cascaded jsonb;
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
    update public.orchestrator_control set max_task_attempts = p_max_attempts
     where id and max_task_attempts is distinct from p_max_attempts;

    with held as (
        select t.id, t.generation_started_at
          from public.tasks t
         where t.worker_id = p_worker_id and t.status = 'In Progress'
           and coalesce(strpos(t.task_type, '_orchestrator'), 0) = 0
           for update
    ),
    locked as (
        select h.id, coalesce(t.attempts, 0) + 1 as next_attempts
          from held h join public.tasks t on t.id = h.id
         where h.id::text = any(p_task_ids)
           and h.generation_started_at is not null
           and exists (select 1 from held n
                        where n.id <> h.id and n.generation_started_at > h.generation_started_at)
    ),
    changed as (
        update public.tasks t
           set attempts = l.next_attempts,
               status = (case when l.next_attempts >= p_max_attempts then 'Failed' else 'Queued' end)::public.task_status,
               worker_id = case when l.next_attempts >= p_max_attempts then t.worker_id else null end,
               error_message = case
                   when l.next_attempts >= p_max_attempts then format(
                       'dead-lettered: attempt %s of %s ended when worker %s was found not running it: %s',
                       l.next_attempts, p_max_attempts, p_worker_id, coalesce(p_reason, 'no reason given'))
                   else format('requeued from worker %s, which holds a newer task (attempt %s of %s): %s',
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
    v_cascaded := orchestrator_private.cascade_failure(v_failed);

    if jsonb_array_length(v_requeued) + jsonb_array_length(v_failed) > 0 then
        perform orchestrator_private.append_event('tasks_requeued', p_worker_id, null, p_reason,
            jsonb_build_object('requeued', v_requeued, 'failed', v_failed, 'max_attempts', p_max_attempts,
                               'stranded', true, 'cascaded', v_cascaded), null);
    end if;
    return jsonb_build_object('requeued', v_requeued, 'failed', v_failed);
end
$$;
revoke all on function public.orch_requeue_stranded_tasks(bigint, text, text[], text, integer, text)
    from public, anon, authenticated;
grant execute on function public.orch_requeue_stranded_tasks(bigint, text, text[], text, integer, text)
    to service_role;
