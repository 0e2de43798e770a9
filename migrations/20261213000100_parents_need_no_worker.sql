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
-- waited, until the app failed the parent as stale 24 hours later, if it did. And when a holder died,
-- its parent was requeued with an attempt counted: another worker ran it again only to find its
-- children and report it still orchestrating, and the third such death dead-lettered the parent and
-- cascaded the failure to its whole chain.
--
-- * orch_release_parents(p_token, p_worker_id, p_reason, p_lease): every parent the worker holds In
--   Progress loses its worker_id and stays In Progress (nothing else changes: no attempt, no timestamp).
--   The daemon calls it for a draining worker that holds nothing but parents; the next tick ends the
--   worker as any idle one. Appends `parents_released`. Returns {released: [ids]}.
-- * orch_requeue_worker_tasks: a parent with an unfinished child (Queued or In Progress, naming it by
--   any of the five params paths the app reads) is released in the same way instead of requeued;
--   returned and recorded in `tasks_requeued` under `released`. A parent with no unfinished child is
--   requeued as before (it has work left that only a worker's run can do).
-- * orch_requeue_unowned_tasks: a parent with an unfinished child is not abandoned and is skipped.
--
-- A released parent whose children are all finished and which the app did not complete (an
-- orchestrator type whose children the app does not count) stays In Progress with no worker, which
-- the snapshot reports (`unowned_running`) and UNOWNED_TASK_TIMEOUT_SEC, when set, requeues.
--
-- Idempotent, like every migration of this project.

-- Whether the task is a parent (a `*_orchestrator` type, as the daemon's PARENT_MARK) that some Queued
-- or In Progress task names as its parent.
create or replace function orchestrator_private.parent_waits(p_id uuid, p_task_type text)
returns boolean language sql stable security definer set search_path = public, pg_temp as $$
    select coalesce(strpos(p_task_type, '_orchestrator'), 0) > 0
       and exists (select 1 from public.tasks c
                    where (c.status = 'Queued' or c.status = 'In Progress') and c.id <> p_id
                      and orchestrator_private.names_orchestrator(c.params, p_id::text));
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
       and coalesce(current_setting('orchestrator.writer', true), '') <> 'release_parents' then
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

-- Release the worker's In Progress parents (only those with an unfinished child when p_waiting_only):
-- worker_id cleared, In Progress kept. The ids released, in order.
create or replace function orchestrator_private.release_parents(p_worker_id text, p_waiting_only boolean)
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
           and coalesce(strpos(t.task_type, '_orchestrator'), 0) > 0
           and (not p_waiting_only or orchestrator_private.parent_waits(t.id, t.task_type))
        returning t.id
    )
    select coalesce(jsonb_agg(id order by id), '[]'::jsonb) into v_released from released;
    perform set_config('orchestrator.writer', v_prev, true);
    return v_released;
end
$$;
revoke all on function orchestrator_private.release_parents(text, boolean) from public;


create or replace function public.orch_release_parents(
    p_token bigint, p_worker_id text, p_reason text, p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_released jsonb;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    perform orchestrator_private.check_lease(p_lease, p_token);
    -- Serialised with the worker's transitions (orch_transition_worker locks the row too).
    perform 1 from public.workers where id = p_worker_id for update;
    if not found and not exists (select 1 from public.tasks
                                 where worker_id = p_worker_id and status = 'In Progress') then
        raise exception 'unknown worker "%"', p_worker_id using errcode = 'OR003';
    end if;
    v_released := orchestrator_private.release_parents(p_worker_id, false);
    if jsonb_array_length(v_released) > 0 then
        perform orchestrator_private.append_event('parents_released', p_worker_id, null, p_reason,
            jsonb_build_object('released', v_released), null);
    end if;
    return jsonb_build_object('released', v_released);
end
$$;
revoke all on function public.orch_release_parents(bigint, text, text, text) from public, anon, authenticated;
grant execute on function public.orch_release_parents(bigint, text, text, text) to service_role;


create or replace function public.orch_requeue_worker_tasks(
    p_token bigint, p_worker_id text, p_reason text, p_max_attempts integer default 3,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_requeued jsonb;
    v_failed jsonb;
    v_released jsonb;
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

    -- Parents whose children are still to run: let go, not run again (see the header).
    v_released := orchestrator_private.release_parents(p_worker_id, true);

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
    -- tasks, and a child's parent and siblings (20261210000200).
    v_cascaded := orchestrator_private.cascade_failure(v_failed);

    if jsonb_array_length(v_requeued) + jsonb_array_length(v_failed) + jsonb_array_length(v_released) > 0 then
        perform orchestrator_private.append_event('tasks_requeued', p_worker_id, null, p_reason,
            jsonb_build_object('requeued', v_requeued, 'failed', v_failed, 'max_attempts', p_max_attempts,
                               'cascaded', v_cascaded, 'released', v_released), null);
    end if;
    return jsonb_build_object('requeued', v_requeued, 'failed', v_failed, 'released', v_released);
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
