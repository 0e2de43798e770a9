-- A database shaped like the app's production one, for tests/integration/test_production_schema.py.
--
-- Written for these tests from the public migrations of the app that owns `tasks` and `workers`,
-- banodoco/reigh-app (supabase/migrations, read at commit 3a6fd3d), keeping what the orchestrator meets:
--   * Supabase's roles, its default privileges, and auth.role() (Supabase's definition: the role claim of
--     the request's JWT, which PostgREST puts in request.jwt.claim(s));
--   * 20250705000001_create_workers_table.sql: workers with status text NOT NULL DEFAULT 'active'
--     CHECK (status IN ('active','inactive','terminated')); tasks.worker_id REFERENCES workers(id)
--     ON DELETE SET NULL; 20260121210000: last_heartbeat nullable; 20251222000000: current_model;
--   * tasks.status the enum task_status; dependant_on uuid[] (20260121000000);
--   * 20250113000003 / 20250910220011: prevent_timing_manipulation_trigger, BEFORE UPDATE on tasks:
--     anyone but the service role changing generation_started_at / generation_processed_at is refused;
--   * 20260112140000 / 20260112153000: the AFTER UPDATE OF status trigger on Cancelled orchestrator
--     tasks, which updates the same row's timestamps (its HTTP billing call is left out);
--   * 20260323213000: claim_next_task_service_role: eligible = Queued, every dependency Complete, owner
--     with credits and cloud allowed and fewer than 5 running non-orchestrator tasks, run type; FIFO
--     (model affinity for an 'active' worker row); the UPDATE is guarded by a CASE on 'Queued' but the row
--     is returned whatever it held, and nothing is locked before it;
--   * 20260331060000: func_worker_heartbeat_with_logs: VRAM merged into the metadata read just before, the
--     row written back whole with `status = status_param`, inserted ('external') when missing; on
--     'crashed' its In Progress tasks go back to Queued with attempts + 1 below 3, else Failed with the
--     cascade; logs into system_logs; the 5-argument overload is still there;
--   * 20260311110000: the heartbeat RPCs executable by the service role only.
-- The SQL below is this project's own, not the app's text.

do $$ begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then create role anon nologin noinherit; end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then create role authenticated nologin noinherit; end if;
    if not exists (select 1 from pg_roles where rolname = 'service_role') then create role service_role nologin noinherit; end if;
end $$;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
grant usage on schema public to anon, authenticated, service_role;

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;
create or replace function auth.role() returns text language sql stable as $$
    select coalesce(nullif(current_setting('request.jwt.claim.role', true), ''),
                    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'));
$$;

create table public.users (
    id uuid primary key default gen_random_uuid(),
    credits numeric not null default 0,
    settings jsonb not null default '{}'::jsonb
);
create table public.projects (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references public.users (id)
);
create table public.task_types (
    name text primary key,
    run_type text not null default 'gpu',
    is_active boolean not null default true
);

create type public.task_status as enum ('Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled');

create table public.workers (
    id text primary key,
    instance_type text not null,
    created_at timestamptz not null default now(),
    last_heartbeat timestamptz,
    status text not null default 'active' check (status in ('active', 'inactive', 'terminated')),
    metadata jsonb default '{}'::jsonb,
    current_model text
);

create table public.tasks (
    id uuid primary key default gen_random_uuid(),
    task_type text not null,
    params jsonb not null default '{}'::jsonb,
    status public.task_status not null default 'Queued',
    dependant_on uuid[],
    output_location text,
    created_at timestamptz not null default now(),
    updated_at timestamptz default now(),
    project_id uuid references public.projects (id),
    generation_started_at timestamptz,
    generation_processed_at timestamptz,
    worker_id text references public.workers (id) on delete set null,
    attempts integer not null default 0,
    error_message text,
    result_data jsonb
);

create table public.system_logs (
    id bigserial primary key,
    timestamp timestamptz not null default now(),
    source_type text not null,
    source_id text,
    log_level text not null,
    message text,
    task_id uuid,
    worker_id text,
    metadata jsonb not null default '{}'::jsonb
);

alter table public.tasks enable row level security;
alter table public.workers enable row level security;
create policy app_service_role_tasks on public.tasks for all to service_role using (true) with check (true);
create policy app_service_role_workers on public.workers for all using (auth.role() = 'service_role');

-- ---------------------------------------------------------------------------------------------------
-- Helpers the app's functions call.

create function public.all_dependencies_complete(p_deps uuid[]) returns boolean language sql stable as $$
    select p_deps is null or cardinality(p_deps) = 0
        or not exists (select 1 from unnest(p_deps) as d(dep)
                        where not exists (select 1 from public.tasks x where x.id = d.dep and x.status = 'Complete'));
$$;

create function public.get_task_run_type(p_task_type text) returns text language sql stable as $$
    select coalesce((select tt.run_type from public.task_types tt where tt.name = p_task_type and tt.is_active), 'unknown');
$$;

create function public.get_task_model(p_params jsonb) returns text language sql immutable as $$
    select p_params ->> 'model';
$$;

-- Failing a task fails the other tasks of its orchestrator run that are not finished; returns their ids.
create function public.cascade_task_failure(
    p_orchestrator_task_id uuid, p_failed_task_id uuid, p_failure_status text, p_is_orchestrator_task boolean)
returns uuid[] language plpgsql as $$
declare
    v_ids uuid[];
begin
    with hit as (
        update public.tasks t
           set status = p_failure_status::public.task_status,
               error_message = 'cascaded from ' || p_failed_task_id::text, updated_at = now()
         where t.id <> p_failed_task_id
           and t.status in ('Queued', 'In Progress')
           and (t.id = p_orchestrator_task_id or t.params ->> 'orchestrator_task_id_ref' = p_orchestrator_task_id::text)
        returning t.id)
    select coalesce(array_agg(id), '{}') into v_ids from hit;
    return v_ids;
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- Triggers on tasks.

create function public.prevent_timing_manipulation() returns trigger language plpgsql as $$
begin
    if auth.role() = 'service_role' then
        return new;
    end if;
    if current_setting('application_name', true) in ('claim_task', 'complete_task') then
        return new;
    end if;
    if tg_op = 'UPDATE' and (new.generation_started_at is distinct from old.generation_started_at
                             or new.generation_processed_at is distinct from old.generation_processed_at) then
        raise exception 'Timing fields can only be modified by system functions';
    end if;
    return new;
end
$$;
create trigger prevent_timing_manipulation_trigger
    before update on public.tasks
    for each row execute function public.prevent_timing_manipulation();

create function public.bill_cancelled_orchestrator() returns trigger language plpgsql security definer as $$
begin
    if new.status = 'Cancelled' and old.status <> 'Cancelled' and new.params ? 'orchestrator_details' then
        update public.tasks
           set generation_started_at = coalesce(generation_started_at, now()),
               generation_processed_at = coalesce(generation_processed_at, now())
         where id = new.id;
    end if;
    return new;
end
$$;
create trigger trigger_bill_cancelled_orchestrator
    after update of status on public.tasks
    for each row when (new.status = 'Cancelled') execute function public.bill_cancelled_orchestrator();

-- ---------------------------------------------------------------------------------------------------
-- The claim the claim-next-task Edge Function calls.

create function public.claim_next_task_service_role(
    p_worker_id text,
    p_include_active boolean default false,
    p_run_type text default null,
    p_same_model_only boolean default false,
    p_max_task_wait_minutes integer default 5)
returns table (task_id uuid, params jsonb, task_type text, project_id uuid, user_id uuid)
language plpgsql security definer as $$
#variable_conflict use_column
declare
    v_model text;
    v_found record;
begin
    select w.current_model into v_model from public.workers w where w.id = p_worker_id and w.status = 'active';

    -- Owners that may run one more task in the cloud.
    create temp table _owners on commit drop as
        select u.id as owner
          from public.users u
          left join public.projects p on p.user_id = u.id
          left join public.tasks r on r.project_id = p.id and r.status = 'In Progress'
                                  and coalesce(r.task_type, '') not ilike '%orchestrator%'
         where u.credits > 0
           and coalesce((u.settings -> 'ui' -> 'generationMethods' ->> 'inCloud')::boolean, true)
         group by u.id
        having count(r.id) < 5;

    with candidates as (
        select t.id, p.user_id as owner,
               row_number() over (order by
                   case when v_model is not null and public.get_task_model(t.params) = v_model then 0 else 1 end,
                   t.created_at) as rank
          from public.tasks t
          join public.projects p on p.id = t.project_id
         where t.status = 'Queued'
           and public.all_dependencies_complete(t.dependant_on)
           and exists (select 1 from _owners o where o.owner = p.user_id)
           and (p_run_type is null or public.get_task_run_type(t.task_type) = p_run_type)
    )
    update public.tasks t
       set status = case when t.status = 'Queued' then 'In Progress'::public.task_status else t.status end,
           worker_id = case when t.status = 'Queued' then p_worker_id else t.worker_id end,
           updated_at = case when t.status = 'Queued' then now() else t.updated_at end,
           generation_started_at = case when t.status = 'Queued' then now() else t.generation_started_at end
      from candidates c
     where t.id = c.id and c.rank = 1
    returning t.id, t.params, t.task_type, t.project_id, c.owner into v_found;

    if v_found.id is not null then
        task_id := v_found.id;
        params := v_found.params;
        task_type := v_found.task_type;
        project_id := v_found.project_id;
        user_id := v_found.owner;
        return next;
    end if;
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- The heartbeat RPC the worker's guardian calls every 20 s (and once with 'crashed').

create function public.func_worker_heartbeat_with_logs(
    worker_id_param text,
    vram_total_mb_param integer default null,
    vram_used_mb_param integer default null,
    logs_param jsonb default '[]'::jsonb,
    current_task_id_param uuid default null,
    status_param text default 'active')
returns jsonb language plpgsql security definer set search_path = public as $$
declare
    v_meta jsonb;
    v_entry jsonb;
    v_logged integer := 0;
    v_log_errors integer := 0;
    v_requeued integer := 0;
    v_failed integer := 0;
    v_task record;
begin
    select coalesce(metadata, '{}'::jsonb) into v_meta from workers where id = worker_id_param;
    if vram_total_mb_param is not null then
        v_meta := v_meta || jsonb_build_object('vram_total_mb', vram_total_mb_param,
                                               'vram_used_mb', coalesce(vram_used_mb_param, 0),
                                               'vram_timestamp', extract(epoch from now()));
    end if;
    update workers set last_heartbeat = now(), metadata = v_meta, status = status_param where id = worker_id_param;
    if not found then
        insert into workers (id, instance_type, status, last_heartbeat, metadata, created_at)
        values (worker_id_param, 'external', status_param, now(), v_meta, now());
    end if;

    if status_param = 'crashed' then
        update tasks
           set status = 'Queued', worker_id = null, generation_started_at = null,
               attempts = coalesce(attempts, 0) + 1, updated_at = now(),
               error_message = format('Requeued: worker crashed (attempt %s)', coalesce(attempts, 0) + 1)
         where worker_id = worker_id_param and status = 'In Progress' and coalesce(attempts, 0) < 3;
        get diagnostics v_requeued = row_count;
        for v_task in
            update tasks
               set status = 'Failed', worker_id = null, generation_started_at = null, updated_at = now(),
                   error_message = format('Failed: worker crashed after exhausting retries (attempt %s)', coalesce(attempts, 0))
             where worker_id = worker_id_param and status = 'In Progress' and coalesce(attempts, 0) >= 3
            returning id, params, task_type
        loop
            v_failed := v_failed + 1;
            if v_task.params ? 'orchestrator_task_id_ref' then
                perform cascade_task_failure((v_task.params ->> 'orchestrator_task_id_ref')::uuid, v_task.id, 'Failed', false);
            end if;
        end loop;
    end if;

    for v_entry in select * from jsonb_array_elements(coalesce(logs_param, '[]'::jsonb))
    loop
        begin
            insert into system_logs (timestamp, source_type, source_id, log_level, message, task_id, worker_id, metadata)
            values (coalesce((v_entry ->> 'timestamp')::timestamptz, now()), 'worker', worker_id_param,
                    coalesce(v_entry ->> 'level', 'INFO'), v_entry ->> 'message',
                    coalesce((v_entry ->> 'task_id')::uuid, current_task_id_param), worker_id_param,
                    coalesce(v_entry -> 'metadata', '{}'::jsonb));
            v_logged := v_logged + 1;
        exception when others then
            v_log_errors := v_log_errors + 1;
        end;
    end loop;

    return jsonb_build_object('success', true, 'heartbeat_updated', true, 'logs_inserted', v_logged,
                              'log_errors', v_log_errors, 'crash_requeued_tasks', v_requeued,
                              'crash_failed_tasks', v_failed);
end
$$;

-- The older overload without status_param, still present in production.
create function public.func_worker_heartbeat_with_logs(
    worker_id_param text, vram_total_mb_param integer, vram_used_mb_param integer, logs_param jsonb,
    current_task_id_param uuid)
returns jsonb language sql security definer set search_path = public as $$
    select public.func_worker_heartbeat_with_logs(worker_id_param, vram_total_mb_param, vram_used_mb_param,
                                                  logs_param, current_task_id_param, 'active');
$$;

revoke execute on function public.func_worker_heartbeat_with_logs(text, integer, integer, jsonb, uuid, text) from public, anon, authenticated;
revoke execute on function public.func_worker_heartbeat_with_logs(text, integer, integer, jsonb, uuid) from public, anon, authenticated;
grant execute on function public.func_worker_heartbeat_with_logs(text, integer, integer, jsonb, uuid, text) to service_role;
grant execute on function public.func_worker_heartbeat_with_logs(text, integer, integer, jsonb, uuid) to service_role;
