-- The last heartbeat of a worker shutting down, `terminated`, keeps the words of the fatal error
-- it follows.
--
-- banodoco/reigh-worker since 22cbba9 (2026-04-11; the commit the project's docs tell operators to
-- pin) ends its main loop with a `finally` (source/runtime/worker/server.py) that terminates the
-- heartbeat guardian and posts one last func_worker_heartbeat_with_logs with status_param
-- `terminated`: after SIGTERM or SIGINT, and after a FatalWorkerError's exit 1, whose handler
-- (fatal_error_handler.py) has just PATCHed the workers row to `error` with error_reason, error_time and
-- self_terminated in its metadata. The workers guard records both words in turn, so the `terminated`
-- report replaced the `error` one, and its details lacked error_reason: that key is one of ours
-- (orchestrator_private.owned_metadata_keys), so the guard never stored the worker's copy, and the
-- heartbeat writes back the row as stored. The operator then saw a worker failed for a fatal error
-- without the error's text.
--
-- Now a `terminated` report within a minute of an `error` one keeps the error report's details beneath
-- its own (reported_status and reported_at are the shutdown's). The daemon reads `terminated` as the
-- process gone: `worker_error` when the fatal handler's words are there, else `worker_exited`.
--
-- Idempotent, like every migration of this project.

create or replace function orchestrator_private.guard_worker_write()
returns trigger language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_owned text[] := orchestrator_private.owned_metadata_keys();
    v_kept jsonb;
    -- How soon after an `error` report a `terminated` one is that process's way out (the handler exits
    -- at once, the beat follows; a minute leaves room for a slow heartbeat call).
    c_shutdown_after_error_sec constant integer := 60;
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
            'self_terminated', new.metadata -> 'self_terminated',
            -- Whether the process died holding a task: the app's crash recovery requeues it in the
            -- same call, after this row's write. A repeated report keeps the first one's answer.
            'in_task', case when orchestrator_private.holds_work(old.id)
                              or (old.reported_status is not distinct from new.status
                                  and old.reported_details ->> 'in_task' = 'true')
                            then true end)), '{}'::jsonb);
        if new.status = 'terminated' and old.reported_status = 'error'
           and old.reported_at >= now() - make_interval(secs => c_shutdown_after_error_sec) then
            -- The last beat of a process whose fatal-error handler has just reported: the error's words
            -- (its error_reason is one of our metadata keys, so the beat's copy of the row lacks it)
            -- stay under the shutdown's, which says the process is gone.
            new.reported_details := coalesce(old.reported_details, '{}'::jsonb)
                                    || coalesce(new.reported_details, '{}'::jsonb);
        end if;
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
