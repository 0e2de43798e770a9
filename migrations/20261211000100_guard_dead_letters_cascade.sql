-- A task the tasks guard dead-letters fails its chain, as the app's own failures do.
--
-- The guard (orchestrator_private.guard_task_write, 20261206000200) turns a task that comes back to
-- Queued at the attempt limit into Failed: the real worker's requeue for retry (update-task-status with
-- status Queued), the app's crash heartbeat, a worker row deleted under its task. The app cascades a
-- failure (cascade_task_failure, banodoco/reigh-app 20260331040000_add_cascade_failure_rpc.sql) only
-- where it writes Failed itself: the Edge Function's cascade runs for a requested Failed, the crash
-- heartbeat's for the tasks it fails. A Queued the guard turned into Failed was cascaded by nobody:
-- a travel segment's later segments stayed Queued, each waiting on it, its parent stayed In Progress
-- under its holder, which the daemon never lets go while it holds a parent, and the holder's pod billed
-- until the app's stale-task cron (a dependency level per run, 24 hours for the parent) caught up.
--
-- Now an AFTER trigger cascades exactly those: In Progress -> Failed with the guard's own message
-- ("dead-lettered: attempt n of m ended: ..."; the orchestrator's requeue functions write "ended when
-- worker ..." / "ended In Progress with no worker ..." and cascade themselves, 20261210000200), in the
-- writer's transaction, through orchestrator_private.cascade_failure, and appends the event
-- task_dead_lettered with the cascaded tasks. The cascade's own writes ("Cascaded failed from related
-- task <id>") do not match, so nothing recurses.
--
-- Idempotent, like every migration of this project.

create or replace function orchestrator_private.cascade_guard_dead_letter()
returns trigger language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_cascaded jsonb;
begin
    v_cascaded := orchestrator_private.cascade_failure(jsonb_build_array(new.id));
    perform orchestrator_private.append_event('task_dead_lettered', old.worker_id, null,
        left(new.error_message, 500),
        jsonb_build_object('task_id', new.id, 'task_type', new.task_type, 'attempts', new.attempts,
                           'cascaded', v_cascaded),
        null);
    return null;
end
$$;
revoke all on function orchestrator_private.cascade_guard_dead_letter() from public;

drop trigger if exists orchestrator_task_dead_lettered on public.tasks;
-- Not "update of status": a writer clearing worker_id alone is requeued (and maybe dead-lettered) by the
-- guard without naming the column.
create trigger orchestrator_task_dead_lettered
    after update on public.tasks
    for each row
    when (old.status = 'In Progress' and new.status = 'Failed'
          and new.error_message ~ '^dead-lettered: attempt [0-9]+ of [0-9]+ ended: ')
    execute function orchestrator_private.cascade_guard_dead_letter();
