-- A worker that has reported its own failure claims no more tasks.
--
-- banodoco/reigh-worker 22cbba9 (2026-04-11; the commit the project's docs tell operators to pin) runs
-- its fatal-error handler (source/task_handlers/worker/fatal_error_handler.py: CUDA, NVML, a segfault's
-- text) in its generation thread, source/task_handlers/queue/task_processor.py, whose worker_loop catches
-- the FatalWorkerError the handler raises and goes on. The handler has PATCHed the workers row to
-- `error` (once a category's consecutive errors reach its threshold: the tasks of those errors have
-- failed already); the task fails through the main loop (update-task-status Failed with the error text),
-- and the process polls on: every task it claims on the broken GPU until the orchestrator's next tick
-- ends its pod fails the same way, with no attempt left to another worker.
--
-- The tasks guard now refuses a claim by a worker we manage whose reported_status is `error`, `crashed`
-- or `terminated` when the report is at or after its last state change (OR004, as for a worker we are
-- ending): the worker sees claim-next-task fail and polls again, and the task stays Queued for another.
-- A report from before the state change (a resumed pod's previous process) does not count; nor, so, does
-- one that lands between a tick's snapshot and that tick's promotion or reactivation of the worker: its
-- claims go on until the next tick fails it.
--
-- Idempotent, like every migration of this project.

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
        select wr.status, wr.orchestrator_managed, wr.reported_status, wr.reported_at, wr.status_changed_at
          into w
          from public.workers wr where wr.id = new.worker_id
           for key share;
        if found and w.orchestrator_managed
           and (w.status is null or w.status not in ('initializing', 'active')) then
            raise exception 'worker "%" is % and may not claim task %', new.worker_id,
                coalesce(w.status, 'in no state'), new.id
                using errcode = 'OR004',
                      hint = 'the orchestrator is ending this worker; the task stays Queued for another';
        end if;
        -- Nor once it has reported its own failure since it entered that state (a report from before,
        -- a resumed pod's previous process, is history): a process whose fatal-error handler gave up on
        -- the GPU polls on and would fail every task it took until the orchestrator ends its pod.
        if found and w.orchestrator_managed
           and w.reported_status in ('error', 'crashed', 'terminated')
           and w.reported_at >= w.status_changed_at then
            raise exception 'worker "%" reported %, and may not claim task %', new.worker_id,
                w.reported_status, new.id
                using errcode = 'OR004',
                      hint = 'the orchestrator is replacing this worker; the task stays Queued for another';
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
