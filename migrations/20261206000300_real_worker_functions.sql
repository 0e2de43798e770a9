-- The SQL the real worker calls, for a database that does not have the app's (docs/database.md, "What the
-- database must provide for the real worker").
--
-- The real worker (peteromallet/Headless-Wan2GP, banodoco/Reigh-Worker) heartbeats with
-- POST /rest/v1/rpc/func_worker_heartbeat_with_logs and claims through the app's claim-next-task Edge
-- Function, which calls claim_next_task_service_role. The app (banodoco/reigh-app) defines both in
-- supabase/migrations (20260331060000_add_crash_recovery_to_heartbeat.sql and
-- 20260323213000_add_max_task_wait_to_claim.sql). Each is created here ONLY when the database has no
-- function of that name: the app's definitions are never replaced, and our guards (20261206000200) are
-- triggers that hold whichever definition runs.
--
-- Ours follow the app's semantics with these differences, each because the app's tables are absent:
--  * heartbeat: log entries go to public.system_logs when that table exists; otherwise they are
--    dropped and counted in log_errors. cascade_task_failure is called only when it exists.
--  * claim: the eligible set is the orchestrator_claimable_tasks view (the operator's rules: the app's
--    credits, cloud setting and per-user limit have no tables here) plus the app's dependency rule
--    (every dependant_on task Complete); p_run_type, p_same_model_only and p_max_task_wait_minutes are
--    accepted and ignored (no task_types table to map types to run types, no model column to prefer);
--    user_id is NULL (no projects table). The oldest task first, as the app's FIFO. Unlike the app's
--    (which locks nothing and can hand the same row to two racing claimers), ours takes the row with
--    FOR UPDATE SKIP LOCKED, so a task goes to one worker.
-- Both are SECURITY DEFINER with EXECUTE for the service role only (the app's grants since 20260311110000).

do $$
begin
    if exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
               where n.nspname = 'public' and p.proname = 'func_worker_heartbeat_with_logs') then
        return;
    end if;
    execute $fn$
create function public.func_worker_heartbeat_with_logs(
    worker_id_param text,
    vram_total_mb_param integer default null,
    vram_used_mb_param integer default null,
    logs_param jsonb default '[]'::jsonb,
    current_task_id_param uuid default null,
    status_param text default 'active')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $body$
declare
    v_metadata jsonb;
    v_entry jsonb;
    v_inserted integer := 0;
    v_errors integer := 0;
    v_requeued integer := 0;
    v_failed integer := 0;
    v_task record;
    v_ref text;
    v_is_orchestrator boolean;
    v_has_logs boolean := to_regclass('public.system_logs') is not null;
    v_has_cascade boolean := exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                                     where n.nspname = 'public' and p.proname = 'cascade_task_failure');
begin
    -- The app's order: read the metadata, merge the VRAM figures, write the row back whole with the
    -- status the worker gives (the guard trigger keeps ours on rows we manage), insert it when missing.
    select coalesce(metadata, '{}'::jsonb) into v_metadata from public.workers where id = worker_id_param;
    if vram_total_mb_param is not null then
        v_metadata := v_metadata || jsonb_build_object(
            'vram_total_mb', vram_total_mb_param,
            'vram_used_mb', coalesce(vram_used_mb_param, 0),
            'vram_timestamp', extract(epoch from now()));
    end if;

    update public.workers
       set last_heartbeat = now(), metadata = v_metadata, status = status_param
     where id = worker_id_param;
    if not found then
        insert into public.workers (id, instance_type, status, last_heartbeat, metadata, created_at)
        values (worker_id_param, 'external', status_param, now(), v_metadata, now());
    end if;

    -- The worker process died: its tasks go back to the queue with the attempt counted, or fail at 3.
    if status_param = 'crashed' then
        update public.tasks
           set status = 'Queued', worker_id = null, generation_started_at = null,
               attempts = coalesce(attempts, 0) + 1, updated_at = now(),
               error_message = 'Requeued: worker crashed (attempt ' || (coalesce(attempts, 0) + 1)::text || ')'
         where worker_id = worker_id_param and status = 'In Progress' and coalesce(attempts, 0) < 3;
        get diagnostics v_requeued = row_count;

        for v_task in
            update public.tasks
               set status = 'Failed', worker_id = null, generation_started_at = null, updated_at = now(),
                   error_message = 'Failed: worker crashed after exhausting retries (attempt '
                                   || coalesce(attempts, 0)::text || ')'
             where worker_id = worker_id_param and status = 'In Progress' and coalesce(attempts, 0) >= 3
            returning id, params, task_type
        loop
            v_failed := v_failed + 1;
            v_is_orchestrator := coalesce(v_task.task_type, '') ilike '%orchestrator%';
            v_ref := case when v_is_orchestrator then v_task.id::text
                          else coalesce(v_task.params ->> 'orchestrator_task_id_ref',
                                        v_task.params -> 'orchestration_contract' ->> 'orchestrator_task_id',
                                        v_task.params ->> 'orchestrator_task_id',
                                        v_task.params -> 'orchestrator_details' ->> 'orchestrator_task_id') end;
            if v_has_cascade and v_ref ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
                execute 'select public.cascade_task_failure($1, $2, $3, $4)'
                    using v_ref::uuid, v_task.id, 'Failed', v_is_orchestrator;
            end if;
        end loop;
    end if;

    if jsonb_typeof(logs_param) = 'array' and jsonb_array_length(logs_param) > 0 then
        for v_entry in select * from jsonb_array_elements(logs_param)
        loop
            if not v_has_logs then
                v_errors := v_errors + 1;
                continue;
            end if;
            begin
                execute 'insert into public.system_logs (timestamp, source_type, source_id, log_level, message,'
                        ' task_id, worker_id, metadata) values ($1, $2, $3, $4, $5, $6, $7, $8)'
                    using coalesce((v_entry ->> 'timestamp')::timestamptz, now()), 'worker', worker_id_param,
                          coalesce(v_entry ->> 'level', 'INFO'), v_entry ->> 'message',
                          coalesce((v_entry ->> 'task_id')::uuid, current_task_id_param), worker_id_param,
                          coalesce(v_entry -> 'metadata', '{}'::jsonb);
                v_inserted := v_inserted + 1;
            exception when others then
                v_errors := v_errors + 1;
            end;
        end loop;
    end if;

    return jsonb_build_object(
        'success', true,
        'heartbeat_updated', true,
        'logs_inserted', v_inserted,
        'log_errors', v_errors,
        'crash_requeued_tasks', v_requeued,
        'crash_failed_tasks', v_failed);
end
$body$
$fn$;
    revoke all on function public.func_worker_heartbeat_with_logs(text, integer, integer, jsonb, uuid, text)
        from public, anon, authenticated;
    grant execute on function public.func_worker_heartbeat_with_logs(text, integer, integer, jsonb, uuid, text)
        to service_role;
end
$$;

-- dependant_on as a JSON array of ids, whether the column is the app's uuid[] (since 20260121000000) or
-- the single uuid it was before.
create or replace function orchestrator_private.task_dependencies(p_value jsonb)
returns jsonb language sql immutable as $$
    select case jsonb_typeof(p_value)
               when 'array' then p_value
               when 'string' then jsonb_build_array(p_value)
               else '[]'::jsonb end;
$$;
revoke all on function orchestrator_private.task_dependencies(jsonb) from public;

do $$
begin
    if exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
               where n.nspname = 'public' and p.proname = 'claim_next_task_service_role') then
        return;
    end if;
    execute $fn$
create function public.claim_next_task_service_role(
    p_worker_id text,
    p_include_active boolean default false,
    p_run_type text default null,
    p_same_model_only boolean default false,
    p_max_task_wait_minutes integer default 5)
returns table (task_id uuid, params jsonb, task_type text, project_id uuid, user_id uuid)
language plpgsql security definer set search_path = public, pg_temp as $body$
#variable_conflict use_column
declare
    v_id uuid;
begin
    -- Walk the queued index oldest first, probing the operator's view and the dependencies per row
    -- (OFFSET 0 keeps the probe a per-row subplan; see 20261129000200).
    select q.id into v_id
      from public.tasks q
     where q.status = 'Queued'
       and exists (select 1 from public.orchestrator_claimable_tasks c where c.id = q.id offset 0)
       and not exists (select 1 from jsonb_array_elements_text(orchestrator_private.task_dependencies(to_jsonb(q.dependant_on))) as d(dep_id)
                        where not exists (select 1 from public.tasks dt
                                           where dt.id = d.dep_id::uuid and dt.status = 'Complete'))
     order by q.created_at, q.id
     limit 1
       for update of q skip locked;
    if v_id is null then
        return;
    end if;

    -- The foreign key refuses a worker id with no row (the app's answer: the claim fails); the tasks
    -- guard refuses a managed worker that is not in a claiming state (OR004).
    return query
    update public.tasks t
       set status = 'In Progress', worker_id = p_worker_id, updated_at = now(), generation_started_at = now()
     where t.id = v_id
    returning t.id, t.params, t.task_type, t.project_id, null::uuid;
end
$body$
$fn$;
    revoke all on function public.claim_next_task_service_role(text, boolean, text, boolean, integer)
        from public, anon, authenticated;
    grant execute on function public.claim_next_task_service_role(text, boolean, text, boolean, integer)
        to service_role;
end
$$;
