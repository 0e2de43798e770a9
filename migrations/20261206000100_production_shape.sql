-- The production shape of `tasks` and `workers`, on a fresh database and on the app's own
-- (docs/database.md, "What the database must provide for the real worker").
--
-- The app that owns these tables (banodoco/reigh-app, supabase/migrations) declares:
--   * tasks.status as the enum `task_status` (Queued, In Progress, Complete, Failed, Cancelled);
--   * tasks.worker_id REFERENCES workers(id) ON DELETE SET NULL (20250705000001_create_workers_table.sql);
--   * workers.status text NOT NULL DEFAULT 'active' CHECK (status IN ('active','inactive','terminated'))
--     (same file; no later public migration changes it, yet its worker writes 'crashed' and 'error');
--   * tasks.project_id, tasks.dependant_on uuid[], tasks.output_location, workers.current_model.
-- A database built from our migrations alone gets the same shape here; on the app's database every
-- statement below finds what it ensures already there and changes nothing but the CHECK, which it
-- extends additively (a superset: every value the live constraint admits, every value a row holds, and
-- the worker's and the orchestrator's own states).
--
-- Idempotent, like every migration of this project.

-- ---------------------------------------------------------------------------------------------------
-- Columns the real worker and the app's functions read or write.
alter table public.tasks add column if not exists project_id uuid;
alter table public.tasks add column if not exists dependant_on uuid[];
alter table public.tasks add column if not exists output_location text;
alter table public.workers add column if not exists current_model text;

-- What a worker (or any writer that is not the orchestrator) said about itself: the guard of
-- 20261206000200 records a status it may not write here instead of letting it overwrite ours.
alter table public.workers add column if not exists reported_status text;
alter table public.workers add column if not exists reported_at timestamptz;
alter table public.workers add column if not exists reported_details jsonb;
-- Rows the orchestrator registered (orch_register_worker): the only rows its guard protects.
alter table public.workers add column if not exists orchestrator_managed boolean not null default false;
-- Rows registered before this column existed: the event log says which ones we registered. (Marked as
-- our write: on a re-run the guard of 20261206000200 is already in place.)
select set_config('orchestrator.writer', 'orchestrator', true);
update public.workers w
   set orchestrator_managed = true
 where not w.orchestrator_managed
   and (w.orchestrator_prefix is not null
        or exists (select 1 from public.orchestrator_events e
                    where e.kind = 'worker_registered' and e.worker_id = w.id));
select set_config('orchestrator.writer', '', true);

-- The attempt limit, where the triggers that count attempts on the app's writes can read it. The daemon
-- keeps it equal to MAX_TASK_ATTEMPTS (orch_set_task_attempt_limit, and every orch_requeue_worker_tasks).
alter table public.orchestrator_control add column if not exists max_task_attempts integer not null default 3;
do $$
begin
    if not exists (select 1 from pg_constraint
                   where conrelid = 'public.orchestrator_control'::regclass
                     and conname = 'orchestrator_control_max_task_attempts_check') then
        alter table public.orchestrator_control
            add constraint orchestrator_control_max_task_attempts_check check (max_task_attempts between 1 and 1000);
    end if;
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- tasks.status: the enum task_status. A database whose column is still text (one built by our earlier
-- migrations) is converted; the objects that depend on the column's type (our views, partial indexes and
-- trigger conditions) are dropped first and re-created below or by 20261206000200.
do $$
declare
    v_type text;
    v_bad text;
    v_missing text;
begin
    if not exists (select 1 from pg_type t join pg_namespace n on n.oid = t.typnamespace
                   where n.nspname = 'public' and t.typname = 'task_status') then
        create type public.task_status as enum ('Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled');
    end if;
    select string_agg(l.label, ', ') into v_missing
      from unnest(array['Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled']) as l(label)
     where not exists (select 1 from pg_enum e where e.enumtypid = 'public.task_status'::regtype
                                                  and e.enumlabel = l.label);
    if v_missing is not null then
        raise exception 'type public.task_status lacks the value(s) %; the orchestrator needs all five task states',
            v_missing using errcode = '22023';
    end if;

    select format_type(a.atttypid, a.atttypmod) into v_type
      from pg_attribute a
     where a.attrelid = 'public.tasks'::regclass and a.attname = 'status' and not a.attisdropped;
    if v_type = 'task_status' then
        return;
    end if;
    if v_type not in ('text', 'character varying') and v_type not like 'character varying(%' then
        raise exception 'tasks.status is of type %, expected text or task_status', v_type using errcode = '22023';
    end if;

    select string_agg(distinct quote_literal(status), ', ') into v_bad
      from public.tasks
     where status is not null
       and status not in ('Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled');
    if v_bad is not null then
        raise exception 'tasks.status holds values outside task_status: %; fix those rows, then migrate again', v_bad
            using errcode = '22023';
    end if;

    -- An operator's own claimable view reads tasks.status and cannot be re-created for them: refuse
    -- clearly (nothing is changed) rather than drop it.
    if to_regclass('public.orchestrator_claimable_tasks') is not null
       and to_regclass('orchestrator_private.default_claimable_tasks') is not null
       and pg_get_viewdef('public.orchestrator_claimable_tasks'::regclass)
           <> pg_get_viewdef('orchestrator_private.default_claimable_tasks'::regclass) then
        raise exception 'orchestrator_claimable_tasks was redefined and depends on tasks.status (text): save its '
                        'definition, drop it, run the migrations, then re-create it against the enum'
            using errcode = '55000';
    end if;

    drop view if exists public.orchestrator_claimable_tasks;
    drop view if exists orchestrator_private.default_claimable_tasks;
    drop view if exists public.orchestrator_fleet_status;
    drop view if exists public.orchestrator_worker_health;
    drop view if exists public.orchestrator_queue;
    drop trigger if exists orchestrator_task_requeued on public.tasks;
    drop trigger if exists orchestrator_task_requeued_count on public.tasks;
    drop index if exists public.tasks_orch_queued_idx;
    drop index if exists public.tasks_orch_in_progress_idx;
    drop index if exists public.tasks_orch_completed_idx;
    drop index if exists public.tasks_orch_queued_type_idx;

    alter table public.tasks alter column status drop default;
    alter table public.tasks alter column status type public.task_status using status::public.task_status;
    alter table public.tasks alter column status set default 'Queued';
end
$$;

-- Re-created (they are plain IF NOT EXISTS on a database that kept them).
create index if not exists tasks_orch_queued_idx
    on public.tasks (created_at, id) where status = 'Queued';
create index if not exists tasks_orch_in_progress_idx
    on public.tasks (worker_id) include (generation_started_at, task_type) where status = 'In Progress';
create index if not exists tasks_orch_completed_idx
    on public.tasks (worker_id, generation_processed_at desc nulls last) where status = 'Complete';
create index if not exists tasks_orch_queued_type_idx
    on public.tasks (task_type, created_at, id) where status = 'Queued';

create or replace view orchestrator_private.default_claimable_tasks as
    select t.id, t.task_type, t.created_at
    from public.tasks t
    where t.status = 'Queued';

do $$
begin
    if to_regclass('public.orchestrator_claimable_tasks') is null then
        create view public.orchestrator_claimable_tasks as
            select t.id, t.task_type, t.created_at
            from public.tasks t
            where t.status = 'Queued';
        comment on view public.orchestrator_claimable_tasks is
            'Queued tasks a worker may claim now; redefine with CREATE OR REPLACE VIEW (keep id, task_type, created_at).';
        if current_setting('server_version_num')::int >= 150000 then
            alter view public.orchestrator_claimable_tasks set (security_invoker = true);
        end if;
        revoke all on table public.orchestrator_claimable_tasks from public, anon, authenticated;
        grant select on table public.orchestrator_claimable_tasks to service_role;
    end if;
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- tasks.worker_id -> workers(id), as the app declares it (ON DELETE SET NULL). Added NOT VALID when old
-- rows name workers that no longer exist: new writes are checked at once, old rows are left as they are.
do $$
begin
    if exists (select 1 from pg_constraint c
               where c.conrelid = 'public.tasks'::regclass and c.contype = 'f'
                 and c.confrelid = 'public.workers'::regclass) then
        return;
    end if;
    alter table public.tasks
        add constraint tasks_worker_id_fkey foreign key (worker_id) references public.workers (id)
        on delete set null not valid;
    begin
        alter table public.tasks validate constraint tasks_worker_id_fkey;
    exception when foreign_key_violation then
        raise notice 'tasks_worker_id_fkey left NOT VALID: some existing tasks name workers that no longer exist';
    end;
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- workers.status CHECK, extended additively. Whatever CHECK constraints on status alone exist (the app's
-- `workers_status_check`, or the live one, which is not in public source and must already admit the
-- states its orchestrator writes) are replaced by one admitting the union of: every value they admitted,
-- every value a row holds now, the app's values (active, inactive, terminated), the worker's own
-- (crashed, error), and ours.
do $$
declare
    v_con record;
    v_values text[] := array['active', 'inactive', 'terminated', 'crashed', 'error',
                             'spawning', 'initializing', 'draining', 'terminating'];
    v_found text[];
    v_name text := 'workers_status_check';
    v_status_attnum smallint;
begin
    select attnum into v_status_attnum from pg_attribute
     where attrelid = 'public.workers'::regclass and attname = 'status' and not attisdropped;
    for v_con in
        select c.conname, pg_get_constraintdef(c.oid) as def
          from pg_constraint c
         where c.conrelid = 'public.workers'::regclass and c.contype = 'c'
           and c.conkey = array[v_status_attnum]
    loop
        select array_agg(m[1]) into v_found
          from regexp_matches(v_con.def, '''((?:[^'']|'''')*)''', 'g') as m;
        v_values := v_values || coalesce(v_found, '{}');
        v_name := v_con.conname;
        execute format('alter table public.workers drop constraint %I', v_con.conname);
    end loop;
    select v_values || coalesce(array_agg(distinct w.status) filter (where w.status is not null), '{}')
      into v_values from public.workers w;
    select array_agg(distinct replace(v, '''''', '''') order by replace(v, '''''', '''')) into v_values
      from unnest(v_values) as v;
    -- Written as an IN list, which PostgreSQL keeps as ARRAY['a'::text, ...]: one literal per value, so
    -- the parsing above reads it back value by value.
    execute format('alter table public.workers add constraint %I check (status in (%s))',
                   v_name, (select string_agg(quote_literal(v), ', ') from unnest(v_values) as v));
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- The real worker writes through the service role (PostgREST PATCH on workers and tasks; the app's
-- Edge Functions). On Supabase that role already has these privileges and bypasses row level security;
-- on a plain PostgreSQL these make the same true for the two shared tables, and nothing more.
grant select, insert, update, delete on table public.tasks, public.workers to service_role;
do $$
declare
    v_table text;
begin
    foreach v_table in array array['tasks', 'workers']
    loop
        if not exists (select 1 from pg_policies
                       where schemaname = 'public' and tablename = v_table
                         and policyname = 'orchestrator_service_role_write') then
            execute format('create policy orchestrator_service_role_write on public.%I for all to service_role '
                           'using (true) with check (true)', v_table);
        end if;
    end loop;
end
$$;
