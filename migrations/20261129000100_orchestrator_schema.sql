-- The orchestrator's tables (docs/database.md, "Tables").
--
-- Idempotent: every statement may run again, on an empty database or on one that already holds the
-- production `tasks` and `workers` tables (lessons-from-the-original.md). Existing tables keep their rows
-- and their columns; we only add what is missing. Supabase-CLI compatible (`supabase db push`).

-- Roles Supabase provides; created here (NOLOGIN) so the same grants apply on a plain PostgreSQL.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit;
    end if;
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- tasks: created only if production has none; then every column the contract relies on is ensured.
do $$
begin
    if to_regclass('public.tasks') is null then
        create table public.tasks (
            id uuid primary key default gen_random_uuid(),
            task_type text not null,
            params jsonb not null default '{}'::jsonb,
            status text not null default 'Queued',
            attempts integer not null default 0,
            worker_id text,
            generation_started_at timestamptz,
            generation_processed_at timestamptz,
            created_at timestamptz not null default now(),
            updated_at timestamptz not null default now(),
            error_message text,
            result_data jsonb
        );
        -- A table we created is ours: nobody but the service role reads it through the API.
        alter table public.tasks enable row level security;
        revoke all on public.tasks from anon, authenticated;
    end if;
end
$$;

alter table public.tasks add column if not exists task_type text;
alter table public.tasks add column if not exists params jsonb default '{}'::jsonb;
alter table public.tasks add column if not exists status text default 'Queued';
alter table public.tasks add column if not exists attempts integer not null default 0;
alter table public.tasks add column if not exists worker_id text;
alter table public.tasks add column if not exists generation_started_at timestamptz;
alter table public.tasks add column if not exists generation_processed_at timestamptz;
alter table public.tasks add column if not exists created_at timestamptz not null default now();
alter table public.tasks add column if not exists updated_at timestamptz default now();
alter table public.tasks add column if not exists error_message text;
alter table public.tasks add column if not exists result_data jsonb;

-- The queue's hot paths. Partial indexes stay small however many finished tasks production keeps.
-- Claim order and the oldest/claimable figures of the snapshot:
create index if not exists tasks_orch_queued_idx
    on public.tasks (created_at, id) where status = 'Queued';
-- Running tasks per worker (snapshot, requeue), with what the snapshot reads, to avoid heap visits:
create index if not exists tasks_orch_in_progress_idx
    on public.tasks (worker_id) include (generation_started_at, task_type) where status = 'In Progress';
-- Last completion per worker (idleness is measured from it, never from the heartbeat):
create index if not exists tasks_orch_completed_idx
    on public.tasks (worker_id, generation_processed_at desc nulls last) where status = 'Complete';

-- ---------------------------------------------------------------------------------------------------
-- workers: id = pod name. Same approach as tasks.
do $$
begin
    if to_regclass('public.workers') is null then
        create table public.workers (
            id text primary key,
            instance_type text,
            status text not null default 'spawning',
            last_heartbeat timestamptz,
            metadata jsonb not null default '{}'::jsonb,
            created_at timestamptz not null default now()
        );
        alter table public.workers enable row level security;
        revoke all on public.workers from anon, authenticated;
    end if;
end
$$;

alter table public.workers add column if not exists instance_type text;
alter table public.workers add column if not exists status text default 'spawning';
alter table public.workers add column if not exists last_heartbeat timestamptz;
alter table public.workers add column if not exists metadata jsonb default '{}'::jsonb;
alter table public.workers add column if not exists created_at timestamptz default now();
alter table public.workers add column if not exists status_changed_at timestamptz;
alter table public.workers add column if not exists activated_at timestamptz;
alter table public.workers add column if not exists orchestrator_prefix text;
-- How the worker's boot ended, written once: 'activated', or the reason of the transition that ended it
-- before activation. The snapshot's recent_boots reads these; the policy derives its breaker and its
-- per-GPU back-off from them, so that state survives a restart of the daemon (no in-memory counters).
alter table public.workers add column if not exists boot_outcome text;
alter table public.workers add column if not exists boot_outcome_at timestamptz;
alter table public.workers add column if not exists status_reason text;
alter table public.workers alter column status_changed_at set default now();

-- Rows that predate these columns: the best knowledge we have is the row's own creation time. (Existing
-- values are never rewritten; a NULL metadata stays NULL and the functions read it as {}.)
update public.workers set status_changed_at = coalesce(created_at, now()) where status_changed_at is null;

-- Live workers are few, terminated rows pile up for ever (the original left thousands): index the few.
create index if not exists workers_orch_boot_outcome_idx
    on public.workers (boot_outcome_at desc) where boot_outcome_at is not null;
create index if not exists workers_orch_live_idx
    on public.workers (id) where status is distinct from 'terminated';

-- ---------------------------------------------------------------------------------------------------
-- The transition table, as data: one row per legal edge, with its meaning. orch_transition_worker
-- refuses (OR002) every move that has no row here. Edges mirror docs/database.md.
create table if not exists public.orchestrator_worker_transitions (
    from_status text not null,
    to_status text not null,
    meaning text not null,
    primary key (from_status, to_status)
);

insert into public.orchestrator_worker_transitions (from_status, to_status, meaning) values
    ('spawning',     'initializing', 'the pod is ready: SSH answers'),
    ('spawning',     'terminating',  'scale-down before the pod booted'),
    ('spawning',     'error',        'the pod failed or the spawning timeout passed'),
    ('spawning',     'terminated',   'the provider confirms there is no pod'),
    ('initializing', 'active',       'first heartbeat after the worker process started'),
    ('initializing', 'terminating',  'scale-down during initialization'),
    ('initializing', 'error',        'initialization checks or the process start failed'),
    ('initializing', 'terminated',   'the provider confirms the pod is gone'),
    ('active',       'draining',     'idle past the idle timeout: stop claiming, then terminate'),
    ('active',       'terminating',  'an operator asked for termination'),
    ('active',       'error',        'unhealthy: stale heartbeat, stuck task, pod gone'),
    ('active',       'terminated',   'the provider confirms the pod is gone'),
    ('draining',     'active',       'work came back before the pod was terminated'),
    ('draining',     'terminating',  'pod termination asked of the provider'),
    ('draining',     'error',        'unhealthy while draining'),
    ('draining',     'terminated',   'the provider confirms the pod is gone'),
    ('terminating',  'error',        'termination failed badly: needs diagnostics and a retry'),
    ('terminating',  'terminated',   'the provider confirms the pod is gone'),
    ('error',        'terminated',   'the provider confirms the pod is gone')
on conflict (from_status, to_status) do update set meaning = excluded.meaning;

comment on table public.orchestrator_worker_transitions is
    'Legal worker state transitions (one row per edge); orch_transition_worker refuses anything else with OR002.';

-- ---------------------------------------------------------------------------------------------------
-- Leader lease. Tokens come from a sequence so they only ever grow, even across deleted rows.
create sequence if not exists public.orchestrator_lease_token_seq;

create table if not exists public.orchestrator_lease (
    name text primary key,
    holder text,
    token bigint not null default 0,
    acquired_at timestamptz,
    renewed_at timestamptz,
    expires_at timestamptz not null default '-infinity'
);

-- Append-only event log (guarded by a trigger and by revoked privileges in a later migration).
create table if not exists public.orchestrator_events (
    id bigserial primary key,
    at timestamptz not null default now(),
    kind text not null,
    worker_id text,
    runpod_id text,
    reason text,
    details jsonb not null default '{}'::jsonb,
    cost_usd numeric
);
create index if not exists orchestrator_events_at_idx on public.orchestrator_events (at desc);
create index if not exists orchestrator_events_worker_idx on public.orchestrator_events (worker_id, id desc);

-- The pause switch: exactly one row (the key can only be true).
create table if not exists public.orchestrator_control (
    id boolean primary key default true check (id),
    paused boolean not null default false,
    paused_by text,
    paused_reason text,
    changed_at timestamptz not null default now()
);
insert into public.orchestrator_control (id) values (true) on conflict (id) do nothing;

-- ---------------------------------------------------------------------------------------------------
-- What a worker may claim now. Operators redefine it (per-user limits, dependencies); the claim function
-- and the snapshot's demand figures both read it. Created only when absent, so re-running the migrations
-- never overwrites an operator's definition. It must expose at least `id` and `created_at`.
do $$
begin
    if to_regclass('public.orchestrator_claimable_tasks') is null then
        create view public.orchestrator_claimable_tasks as
            select t.id, t.task_type, t.created_at
            from public.tasks t
            where t.status = 'Queued';
        comment on view public.orchestrator_claimable_tasks is
            'Queued tasks a worker may claim now; redefine with CREATE OR REPLACE VIEW (keep id, task_type, created_at).';
    end if;
end
$$;
