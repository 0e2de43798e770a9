-- Dashboard views, row level security and privileges (docs/database.md, last section).
--
-- The Supabase dashboard (and anyone with the service role) reads three views; the API roles `anon` and
-- `authenticated` get nothing of the orchestrator's: no table, no view, no function. Idempotent.

-- ---------------------------------------------------------------------------------------------------
-- Dashboard views. On PostgreSQL 15+ they are security_invoker (set below): a view then reads with its
-- caller's rights and never becomes a way around row level security (the default reads as the owner).

create or replace view public.orchestrator_fleet_status as
    select w.status,
           count(*) as workers,
           count(*) filter (where exists (select 1 from public.tasks t
                                          where t.worker_id = w.id and t.status = 'In Progress')) as busy,
           min(w.created_at) as oldest_created_at,
           max(w.last_heartbeat) as latest_heartbeat,
           max(w.status_changed_at) as latest_change_at
      from public.workers w
     where w.status is distinct from 'terminated' or w.status_changed_at > now() - interval '24 hours'
     group by w.status;
comment on view public.orchestrator_fleet_status is
    'Workers per state (live ones, and those terminated in the last 24 hours), with how many run a task.';

create or replace view public.orchestrator_worker_health as
    select w.id,
           w.status,
           w.instance_type,
           w.metadata ->> 'runpod_id' as runpod_id,
           w.created_at,
           round(extract(epoch from now() - w.created_at))::bigint as age_sec,
           w.status_changed_at,
           w.activated_at,
           w.last_heartbeat,
           round(extract(epoch from now() - w.last_heartbeat))::bigint as heartbeat_age_sec,
           coalesce(r.running_count, 0) as running_count,
           r.current_task_id,
           r.oldest_started_at as current_task_started_at,
           c.last_completion_at,
           (w.metadata ->> 'vram_used_mb')::numeric as vram_used_mb,
           (w.metadata ->> 'vram_total_mb')::numeric as vram_total_mb,
           coalesce(w.metadata ->> 'error_reason', w.metadata ->> 'error') as error_reason
      from public.workers w
      left join lateral (
          select count(*) as running_count,
                 (array_agg(t.id order by t.generation_started_at))[1] as current_task_id,
                 min(t.generation_started_at) as oldest_started_at
            from public.tasks t
           where t.worker_id = w.id and t.status = 'In Progress'
      ) r on true
      left join lateral (
          select max(t.generation_processed_at) as last_completion_at
            from public.tasks t
           where t.worker_id = w.id and t.status = 'Complete'
      ) c on true
     where w.status is distinct from 'terminated';
comment on view public.orchestrator_worker_health is
    'One row per live worker: heartbeat age, running task, last completion, VRAM, error reason.';

create or replace view public.orchestrator_queue as
    select t.task_type,
           count(*) filter (where t.status = 'Queued') as queued,
           count(*) filter (where t.status = 'In Progress') as running,
           min(t.created_at) filter (where t.status = 'Queued') as oldest_queued_at,
           round(extract(epoch from now() - min(t.created_at) filter (where t.status = 'Queued')))::bigint
               as oldest_queued_age_sec,
           max(coalesce(t.attempts, 0)) filter (where t.status = 'Queued') as max_attempts_queued,
           (select c.paused from public.orchestrator_control c where c.id) as orchestrator_paused
      from public.tasks t
     where t.status in ('Queued', 'In Progress')
     group by t.task_type;
comment on view public.orchestrator_queue is
    'Queued and running tasks per task type, the oldest queued age, and whether spawning is paused.';

do $$
begin
    if current_setting('server_version_num')::int >= 150000 then
        alter view public.orchestrator_fleet_status set (security_invoker = true);
        alter view public.orchestrator_worker_health set (security_invoker = true);
        alter view public.orchestrator_queue set (security_invoker = true);
        alter view public.orchestrator_claimable_tasks set (security_invoker = true);
    end if;
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- Row level security on the orchestrator's own tables. No policy for anon/authenticated means no row;
-- the service role reads (the functions write, as their owner).

alter table public.orchestrator_lease enable row level security;
alter table public.orchestrator_events enable row level security;
alter table public.orchestrator_control enable row level security;
alter table public.orchestrator_worker_transitions enable row level security;

do $$
declare
    v_table text;
begin
    foreach v_table in array array['orchestrator_lease', 'orchestrator_events', 'orchestrator_control',
                                   'orchestrator_worker_transitions', 'orchestrator_schema_migrations']
    loop
        continue when to_regclass('public.' || v_table) is null;
        execute format('alter table public.%I enable row level security', v_table);
        if not exists (select 1 from pg_policies
                       where schemaname = 'public' and tablename = v_table
                         and policyname = 'orchestrator_service_role_read') then
            execute format('create policy orchestrator_service_role_read on public.%I for select to service_role using (true)',
                           v_table);
        end if;
        execute format('revoke all on table public.%I from public, anon, authenticated', v_table);
        execute format('grant select on table public.%I to service_role', v_table);
    end loop;
end
$$;

-- The shared tables: the service role reads them (the dashboard views run with its rights). On Supabase
-- it already may and bypasses RLS; on a plain PostgreSQL these make the same true. Rows of other roles
-- are untouched: a policy for service_role only, and no grant to anyone else.
grant select on table public.tasks, public.workers to service_role;
do $$
declare
    v_table text;
begin
    foreach v_table in array array['tasks', 'workers']
    loop
        if not exists (select 1 from pg_policies
                       where schemaname = 'public' and tablename = v_table
                         and policyname = 'orchestrator_service_role_read') then
            execute format('create policy orchestrator_service_role_read on public.%I for select to service_role using (true)',
                           v_table);
        end if;
    end loop;
end
$$;

-- The event log is append-only for everyone (the trigger covers the owner).
revoke update, delete, truncate on table public.orchestrator_events from service_role;

revoke all on sequence public.orchestrator_lease_token_seq from public, anon, authenticated;
revoke all on sequence public.orchestrator_events_id_seq from public, anon, authenticated;

revoke all on table public.orchestrator_claimable_tasks, public.orchestrator_fleet_status,
    public.orchestrator_worker_health, public.orchestrator_queue from public, anon, authenticated;
grant select on table public.orchestrator_claimable_tasks, public.orchestrator_fleet_status,
    public.orchestrator_worker_health, public.orchestrator_queue to service_role;

-- ---------------------------------------------------------------------------------------------------
-- Functions: EXECUTE for the service role only. PostgreSQL grants EXECUTE to PUBLIC by default and
-- Supabase's default privileges add anon and authenticated; take all of that back.

-- Only our own functions by name: production may have other worker_* functions its workers rely on.
do $$
declare
    v_fn regprocedure;
    v_ours text[] := array[
        'orch_lease_acquire', 'orch_lease_renew', 'orch_lease_release', 'orch_snapshot',
        'orch_register_worker', 'orch_transition_worker', 'orch_merge_worker_metadata',
        'orch_requeue_worker_tasks', 'orch_append_event', 'orch_set_paused', 'orch_request_termination',
        'orch_events', 'worker_claim_task', 'worker_heartbeat', 'worker_complete_task', 'worker_fail_task'];
begin
    for v_fn in
        select p.oid::regprocedure
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where (n.nspname = 'public' and p.proname = any (v_ours)) or n.nspname = 'orchestrator_private'
    loop
        execute format('revoke all on function %s from public, anon, authenticated', v_fn);
    end loop;
    for v_fn in
        select p.oid::regprocedure
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'public' and p.proname = any (v_ours)
    loop
        execute format('grant execute on function %s to service_role', v_fn);
    end loop;
end
$$;

revoke all on schema orchestrator_private from public, anon, authenticated;
