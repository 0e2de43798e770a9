-- The orchestrator's SQL functions: every read and write the daemon, the CLI and the workers make
-- (docs/database.md, "Functions"). Both adapters (PostgREST rpc and psycopg) call these by name with
-- named arguments, so every argument is a JSON-friendly type and every result is jsonb (json for the
-- snapshot, see there) or a scalar.
--
-- Conventions:
--  * SECURITY DEFINER with a fixed search_path: callers need EXECUTE only, never table privileges.
--  * Errors: OR001 stale/missing lease token, OR002 illegal transition, OR003 unknown worker/task,
--    22004 null argument, 22023 invalid argument value, 23505 duplicate worker id. Each function checks
--    its arguments before it writes anything, and a raised error rolls the whole call back.
--  * Lock order, everywhere: lease row -> worker row -> task rows (no deadlock between our functions).
--  * Idempotent: CREATE OR REPLACE throughout; triggers are dropped and re-created.

create schema if not exists orchestrator_private;
revoke all on schema orchestrator_private from public;

-- ---------------------------------------------------------------------------------------------------
-- Helpers (private schema: not exposed through PostgREST).

-- Raise `code` with `message` unless `ok`. Keeps the argument checks one line each.
create or replace function orchestrator_private.check_arg(p_ok boolean, p_message text, p_code text default '22023')
returns void language plpgsql immutable as $$
begin
    if p_ok is not true then
        raise exception using message = p_message, errcode = p_code;
    end if;
end
$$;

-- The fence: unless `p_token` is the current, unexpired token of lease `p_lease`, raise OR001. Holds the
-- lease row FOR SHARE until the caller's transaction ends, so a takeover (an UPDATE of that row) waits
-- for an in-flight fenced write and the write can never land after the lease changed hands.
create or replace function orchestrator_private.check_lease(p_lease text, p_token bigint)
returns void language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v public.orchestrator_lease%rowtype;
begin
    perform orchestrator_private.check_arg(p_lease is not null and p_lease <> '',
        'p_lease must be a non-empty lease name', '22004');
    if p_token is null then
        raise exception 'lease token missing: writes need the fencing token of lease "%"', p_lease
            using errcode = 'OR001';
    end if;
    select * into v from public.orchestrator_lease where name = p_lease for share;
    if not found then
        raise exception 'lease "%" has never been acquired; token % is not valid', p_lease, p_token
            using errcode = 'OR001';
    end if;
    if v.token <> p_token or v.holder is null then
        raise exception 'stale lease token % for lease "%": the lease is now held by %',
            p_token, p_lease, coalesce('"' || v.holder || '"', 'nobody') using errcode = 'OR001';
    end if;
    if v.expires_at <= clock_timestamp() then
        raise exception 'lease "%" (token %) expired at %; renew or re-acquire it', p_lease, p_token, v.expires_at
            using errcode = 'OR001';
    end if;
end
$$;

create or replace function orchestrator_private.check_worker_id(p_worker_id text)
returns void language plpgsql immutable as $$
begin
    if p_worker_id is null then
        raise exception 'p_worker_id must not be null' using errcode = '22004';
    end if;
    if btrim(p_worker_id) = '' or length(p_worker_id) > 200 then
        raise exception 'p_worker_id must be a non-empty text of at most 200 characters' using errcode = '22023';
    end if;
end
$$;

-- Metadata arguments are JSON objects (merged at the top level); anything else is refused.
create or replace function orchestrator_private.check_object(p_value jsonb, p_name text, p_nullable boolean)
returns jsonb language plpgsql immutable as $$
begin
    if p_value is null then
        if p_nullable then
            return '{}'::jsonb;
        end if;
        raise exception '% must not be null (a JSON object)', p_name using errcode = '22004';
    end if;
    if jsonb_typeof(p_value) <> 'object' then
        raise exception '% must be a JSON object, not a JSON %', p_name, jsonb_typeof(p_value)
            using errcode = '22023';
    end if;
    return p_value;
end
$$;

create or replace function orchestrator_private.append_event(
    p_kind text, p_worker_id text, p_runpod_id text, p_reason text, p_details jsonb, p_cost_usd numeric)
returns bigint language sql security definer set search_path = public, pg_temp as $$
    insert into public.orchestrator_events (kind, worker_id, runpod_id, reason, details, cost_usd)
    values (p_kind, p_worker_id, p_runpod_id, p_reason, coalesce(p_details, '{}'::jsonb), p_cost_usd)
    returning id;
$$;

-- Lock and return a worker row, or raise OR003.
create or replace function orchestrator_private.lock_worker(p_worker_id text)
returns public.workers language plpgsql security definer set search_path = public, pg_temp as $$
declare
    w public.workers%rowtype;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    select * into w from public.workers where id = p_worker_id for update;
    if not found then
        raise exception 'unknown worker "%"', p_worker_id using errcode = 'OR003';
    end if;
    return w;
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- Leader lease.

create or replace function public.orch_lease_acquire(
    p_holder text, p_ttl_sec numeric, p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v public.orchestrator_lease%rowtype;
    v_prev text;
begin
    perform orchestrator_private.check_arg(p_holder is not null, 'p_holder must not be null', '22004');
    perform orchestrator_private.check_arg(btrim(p_holder) <> '', 'p_holder must not be empty');
    perform orchestrator_private.check_arg(p_ttl_sec is not null, 'p_ttl_sec must not be null', '22004');
    perform orchestrator_private.check_arg(p_ttl_sec > 0 and p_ttl_sec <= 86400,
        format('p_ttl_sec must be in (0, 86400] seconds, got %s', p_ttl_sec));
    perform orchestrator_private.check_arg(p_lease is not null and p_lease <> '', 'p_lease must not be empty', '22004');

    insert into public.orchestrator_lease (name) values (p_lease) on conflict (name) do nothing;
    select * into v from public.orchestrator_lease where name = p_lease for update;

    if v.holder = p_holder and v.expires_at > clock_timestamp() then
        -- The holder asks again while it still holds the lease: a renewal, same token.
        update public.orchestrator_lease
           set renewed_at = now(), expires_at = clock_timestamp() + make_interval(secs => p_ttl_sec::float8)
         where name = p_lease
        returning * into v;
        return jsonb_build_object('acquired', true, 'token', v.token, 'holder', v.holder, 'expires_at', v.expires_at);
    end if;

    if v.holder is null or v.expires_at <= clock_timestamp() then
        -- Free or expired: take it with a new, larger token. Writes fenced by the old token now fail.
        v_prev := v.holder;
        update public.orchestrator_lease
           set holder = p_holder,
               token = nextval('public.orchestrator_lease_token_seq'),
               acquired_at = now(),
               renewed_at = now(),
               expires_at = clock_timestamp() + make_interval(secs => p_ttl_sec::float8)
         where name = p_lease
        returning * into v;
        perform orchestrator_private.append_event('lease_acquired', null, null, null,
            jsonb_build_object('lease', p_lease, 'holder', p_holder, 'token', v.token, 'previous_holder', v_prev),
            null);
        return jsonb_build_object('acquired', true, 'token', v.token, 'holder', v.holder, 'expires_at', v.expires_at);
    end if;

    -- Someone else holds it. Their token is not ours to know.
    return jsonb_build_object('acquired', false, 'token', null, 'holder', v.holder, 'expires_at', v.expires_at);
end
$$;

create or replace function public.orch_lease_renew(
    p_holder text, p_token bigint, p_ttl_sec numeric, p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v public.orchestrator_lease%rowtype;
begin
    perform orchestrator_private.check_arg(p_holder is not null, 'p_holder must not be null', '22004');
    perform orchestrator_private.check_arg(p_token is not null, 'p_token must not be null', '22004');
    perform orchestrator_private.check_arg(p_ttl_sec is not null, 'p_ttl_sec must not be null', '22004');
    perform orchestrator_private.check_arg(p_ttl_sec > 0 and p_ttl_sec <= 86400,
        format('p_ttl_sec must be in (0, 86400] seconds, got %s', p_ttl_sec));
    perform orchestrator_private.check_arg(p_lease is not null and p_lease <> '', 'p_lease must not be empty', '22004');

    -- Only a holder whose lease has not yet expired may renew; after expiry it must re-acquire (new token).
    update public.orchestrator_lease
       set renewed_at = now(), expires_at = clock_timestamp() + make_interval(secs => p_ttl_sec::float8)
     where name = p_lease and holder = p_holder and token = p_token and expires_at > clock_timestamp()
    returning * into v;
    if found then
        return jsonb_build_object('renewed', true, 'expires_at', v.expires_at);
    end if;
    select * into v from public.orchestrator_lease where name = p_lease;
    return jsonb_build_object('renewed', false, 'expires_at', v.expires_at);
end
$$;

create or replace function public.orch_lease_release(p_holder text, p_token bigint, p_lease text default 'orchestrator')
returns boolean language plpgsql security definer set search_path = public, pg_temp as $$
begin
    perform orchestrator_private.check_arg(p_holder is not null, 'p_holder must not be null', '22004');
    perform orchestrator_private.check_arg(p_token is not null, 'p_token must not be null', '22004');
    perform orchestrator_private.check_arg(p_lease is not null and p_lease <> '', 'p_lease must not be empty', '22004');
    update public.orchestrator_lease
       set holder = null, expires_at = clock_timestamp()
     where name = p_lease and holder = p_holder and token = p_token;
    if not found then
        return false;
    end if;
    perform orchestrator_private.append_event('lease_released', null, null, null,
        jsonb_build_object('lease', p_lease, 'holder', p_holder, 'token', p_token), null);
    return true;
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- Orchestrator: the one read per tick.
--
-- Set-based: one pass over the running tasks (partial index) grouped by worker, one index probe per live
-- worker for its last completion (tasks_orch_completed_idx: a single-entry lookup, O(log n) each, no
-- client round trip), one count over the claimable view. queued_total is a second count only when an
-- operator has redefined the view; with the default view it is the same figure and is not scanned twice.
-- Parallel query is off for this function: on small machines starting workers costs more than it saves
-- and makes the tick's latency jitter. Round trips per tick: one, whatever the fleet size.
-- It returns `json`, not `jsonb`: the result is built once and read once, and building a 1,000-worker
-- document as jsonb costs about twice as much server time as json (both adapters decode either alike).

-- The default claimable-tasks definition, kept privately so the snapshot can tell whether the public view
-- still has it (their deparsed texts are then equal, on any PostgreSQL version).
create or replace view orchestrator_private.default_claimable_tasks as
    select t.id, t.task_type, t.created_at
    from public.tasks t
    where t.status = 'Queued';

create or replace function public.orch_snapshot(p_prefix text default null)
returns json language plpgsql stable security definer
set search_path = public, pg_temp
set max_parallel_workers_per_gather = 0
as $$
declare
    v_claimable bigint;
    v_oldest timestamptz;
    v_queued bigint;
    v_workers json;
    v_running bigint;
    v_orphaned jsonb;
    v_orphaned_n bigint;
    v_control public.orchestrator_control%rowtype;
    v_leases jsonb;
    v_boots json;
begin
    select count(*) into v_claimable from public.orchestrator_claimable_tasks c;
    -- The oldest separately: with the default view an ordered probe of the queued index, not a scan.
    select c.created_at into v_oldest from public.orchestrator_claimable_tasks c
     order by c.created_at nulls last limit 1;
    if pg_get_viewdef('public.orchestrator_claimable_tasks'::regclass)
       = pg_get_viewdef('orchestrator_private.default_claimable_tasks'::regclass) then
        v_queued := v_claimable;
    else
        select count(*) into v_queued from public.tasks t where t.status = 'Queued';
    end if;

    with running as materialized (
        select t.worker_id,
               json_agg(t.id order by t.generation_started_at nulls last, t.id) as ids,
               count(*) as n,
               min(t.generation_started_at) as oldest,
               -- Long-running parents (`*_orchestrator*` types) are exempt from the stuck-task timeout.
               min(t.generation_started_at)
                   filter (where coalesce(strpos(t.task_type, '_orchestrator'), 0) = 0) as oldest_stuckable
        from public.tasks t
        where t.status = 'In Progress' and t.worker_id is not null
        group by t.worker_id
    ),
    live as materialized (
        select w.*
        from public.workers w
        where w.status is distinct from 'terminated'
    ),
    listed as (
        select l.*
        from live l
        where p_prefix is null
           or l.orchestrator_prefix = p_prefix
           or (l.orchestrator_prefix is null and starts_with(l.id, p_prefix))
    ),
    worker_rows as (
        -- json_agg over a row: keys are the column names below, and it is the cheapest way to build it.
        select json_agg(x order by x.created_at, x.id) as items
        from (
            select l.id,
                   l.status,
                   l.instance_type,
                   l.created_at,
                   l.status_changed_at,
                   l.activated_at,
                   l.last_heartbeat,
                   round(extract(epoch from (now() - l.last_heartbeat)), 3) as heartbeat_age_sec,
                   coalesce(l.metadata, '{}'::jsonb) as metadata,
                   coalesce(r.ids, '[]'::json) as running_task_ids,
                   coalesce(r.n, 0) as running_count,
                   r.oldest as oldest_running_started_at,
                   r.oldest_stuckable as oldest_stuckable_started_at,
                   c.at as last_completion_at
            from listed l
            left join running r on r.worker_id = l.id
            left join lateral (
                select t.generation_processed_at as at
                from public.tasks t
                where t.worker_id = l.id and t.status = 'Complete'
                order by t.generation_processed_at desc nulls last
                limit 1
            ) c on true
        ) x
    ),
    -- Tasks still In Progress for a worker that is not live (terminated or unknown): the controller must
    -- requeue them or they would wait for ever.
    orphaned as (
        select coalesce(jsonb_agg(r.worker_id order by r.worker_id), '[]'::jsonb) as ids,
               coalesce(sum(r.n), 0) as n
        from running r
        where not exists (select 1 from live l where l.id = r.worker_id)
    )
    select coalesce((select items from worker_rows), '[]'::json),
           (select coalesce(sum(n), 0) from running),
           (select ids from orphaned),
           (select n from orphaned)
      into v_workers, v_running, v_orphaned, v_orphaned_n;

    -- How the latest boots ended, newest first: the policy's breaker and back-off are derived from these.
    select coalesce(json_agg(b order by b.at desc), '[]'::json) into v_boots
    from (
        select w.id as worker_id,
               coalesce(w.metadata ->> 'gpu_type', w.instance_type) as gpu_type,
               w.metadata ->> 'data_center' as data_center,
               w.boot_outcome = 'activated' as ok,
               w.boot_outcome as reason,
               w.boot_outcome_at as at
        from public.workers w
        where w.boot_outcome_at is not null
          and (p_prefix is null
               or w.orchestrator_prefix = p_prefix
               or (w.orchestrator_prefix is null and starts_with(w.id, p_prefix)))
        order by w.boot_outcome_at desc
        limit 50
    ) b;

    select * into v_control from public.orchestrator_control where id;
    select coalesce(jsonb_object_agg(l.name, jsonb_build_object(
               'holder', l.holder, 'expires_at', l.expires_at, 'acquired_at', l.acquired_at)), '{}'::jsonb)
      into v_leases
      from public.orchestrator_lease l;

    return json_build_object(
        'now', now(),
        'paused', coalesce(v_control.paused, false),
        'paused_by', v_control.paused_by,
        'pause_reason', v_control.paused_reason,
        'queue', json_build_object(
            'claimable', v_claimable,
            'queued_total', v_queued,
            'oldest_claimable_age_sec', round(extract(epoch from (now() - v_oldest)), 3),
            'running', v_running,
            'orphaned_running', v_orphaned_n,
            'orphaned_worker_ids', v_orphaned
        ),
        'leases', v_leases,
        'recent_boots', v_boots,
        'workers', v_workers
    );
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- Orchestrator: fenced writes.

create or replace function public.orch_register_worker(
    p_token bigint, p_worker_id text, p_instance_type text, p_metadata jsonb default '{}'::jsonb,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_meta jsonb;
    w public.workers%rowtype;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    v_meta := orchestrator_private.check_object(p_metadata, 'p_metadata', true);
    perform orchestrator_private.check_lease(p_lease, p_token);
    begin
        insert into public.workers (id, instance_type, status, metadata, created_at, status_changed_at,
                                    orchestrator_prefix)
        values (p_worker_id, p_instance_type, 'spawning', v_meta, now(), now(), v_meta ->> 'orchestrator_prefix')
        returning * into w;
    exception when unique_violation then
        raise exception 'worker "%" already exists', p_worker_id using errcode = '23505';
    end;
    perform orchestrator_private.append_event('worker_registered', w.id, null, null,
        jsonb_build_object('instance_type', p_instance_type), null);
    return to_jsonb(w);
end
$$;

-- Guarded state change. A move to the state the worker is already in is an idempotent no-op (a retried
-- call after a lost reply must not fail); any move without a row in orchestrator_worker_transitions
-- raises OR002 and writes nothing.
create or replace function public.orch_transition_worker(
    p_token bigint, p_worker_id text, p_to text, p_reason text, p_metadata jsonb default '{}'::jsonb,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_meta jsonb;
    w public.workers%rowtype;
    v_from text;
    v_allowed text;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    perform orchestrator_private.check_arg(p_to is not null, 'p_to must not be null', '22004');
    perform orchestrator_private.check_arg(
        exists (select 1 from public.orchestrator_worker_transitions where to_status = p_to)
            or p_to = 'spawning',
        format('p_to: unknown worker state "%s"', p_to));
    v_meta := orchestrator_private.check_object(p_metadata, 'p_metadata', true);
    perform orchestrator_private.check_lease(p_lease, p_token);
    w := orchestrator_private.lock_worker(p_worker_id);
    v_from := w.status;

    if v_from is not distinct from p_to then
        return to_jsonb(w);
    end if;

    -- A state this contract does not know (a row the replaced system left, e.g. NULL or 'inactive') may
    -- only be retired: to error (diagnose, terminate its pod) or to terminated (no pod any more).
    if not exists (select 1 from public.orchestrator_worker_transitions where from_status = v_from)
       and v_from is distinct from 'terminated' and p_to in ('error', 'terminated') then
        null;  -- allowed
    elsif not exists (select 1 from public.orchestrator_worker_transitions
                      where from_status = v_from and to_status = p_to) then
        select coalesce(string_agg(to_status, ', ' order by to_status),
                        case when v_from is distinct from 'terminated' then 'error, terminated' else 'none' end)
          into v_allowed
          from public.orchestrator_worker_transitions where from_status = v_from;
        raise exception 'illegal transition for worker "%": % -> % (allowed from %: %)',
            p_worker_id, coalesce(v_from, 'null'), p_to, coalesce(v_from, 'null'), v_allowed
            using errcode = 'OR002';
    end if;

    update public.workers
       set status = p_to,
           status_changed_at = now(),
           status_reason = p_reason,
           activated_at = case when p_to = 'active' then coalesce(activated_at, now()) else activated_at end,
           -- The first move out of a booting state records how the boot ended (see the schema).
           boot_outcome = case
               when boot_outcome_at is not null then boot_outcome
               when p_to = 'active' then 'activated'
               when v_from in ('spawning', 'initializing') and p_to not in ('spawning', 'initializing')
                   then coalesce(p_reason, p_to)
               else boot_outcome end,
           boot_outcome_at = case
               when boot_outcome_at is not null then boot_outcome_at
               when p_to = 'active'
                    or (v_from in ('spawning', 'initializing') and p_to not in ('spawning', 'initializing'))
                   then now()
               else boot_outcome_at end,
           metadata = coalesce(metadata, '{}'::jsonb) || v_meta
     where id = p_worker_id
    returning * into w;

    perform orchestrator_private.append_event('transition', w.id, w.metadata ->> 'runpod_id', p_reason,
        jsonb_build_object('from', v_from, 'to', p_to), null);
    return to_jsonb(w);
end
$$;

create or replace function public.orch_merge_worker_metadata(
    p_token bigint, p_worker_id text, p_metadata jsonb, p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_meta jsonb;
    w public.workers%rowtype;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    v_meta := orchestrator_private.check_object(p_metadata, 'p_metadata', false);
    perform orchestrator_private.check_lease(p_lease, p_token);
    perform orchestrator_private.lock_worker(p_worker_id);
    update public.workers
       set metadata = coalesce(metadata, '{}'::jsonb) || v_meta
     where id = p_worker_id
    returning * into w;
    return to_jsonb(w);
end
$$;

-- Every In Progress task of the worker goes back to the queue with its attempt counted, or, at the
-- limit, is dead-lettered as Failed with the reason in error_message. Attempts always increase: a poison
-- task cannot kill workers for ever.
create or replace function public.orch_requeue_worker_tasks(
    p_token bigint, p_worker_id text, p_reason text, p_max_attempts integer default 3,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_requeued jsonb;
    v_failed jsonb;
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

    with locked as (
        select t.id, coalesce(t.attempts, 0) + 1 as next_attempts
        from public.tasks t
        where t.worker_id = p_worker_id and t.status = 'In Progress'
        for update
    ),
    changed as (
        update public.tasks t
           set attempts = l.next_attempts,
               status = case when l.next_attempts >= p_max_attempts then 'Failed' else 'Queued' end,
               worker_id = case when l.next_attempts >= p_max_attempts then t.worker_id else null end,
               generation_started_at = case when l.next_attempts >= p_max_attempts
                                            then t.generation_started_at else null end,
               generation_processed_at = case when l.next_attempts >= p_max_attempts
                                              then now() else t.generation_processed_at end,
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

    if jsonb_array_length(v_requeued) + jsonb_array_length(v_failed) > 0 then
        perform orchestrator_private.append_event('tasks_requeued', p_worker_id, null, p_reason,
            jsonb_build_object('requeued', v_requeued, 'failed', v_failed, 'max_attempts', p_max_attempts), null);
    end if;
    return jsonb_build_object('requeued', v_requeued, 'failed', v_failed);
end
$$;

create or replace function public.orch_append_event(
    p_token bigint, p_kind text, p_worker_id text default null, p_runpod_id text default null,
    p_reason text default null, p_details jsonb default '{}'::jsonb, p_cost_usd numeric default null,
    p_lease text default 'orchestrator')
returns bigint language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_details jsonb;
begin
    perform orchestrator_private.check_arg(p_kind is not null, 'p_kind must not be null', '22004');
    perform orchestrator_private.check_arg(p_kind ~ '^[a-z][a-z0-9_]{0,63}$',
        format('p_kind must be a snake_case event name, got "%s"', p_kind));
    v_details := orchestrator_private.check_object(p_details, 'p_details', true);
    perform orchestrator_private.check_lease(p_lease, p_token);
    return orchestrator_private.append_event(p_kind, p_worker_id, p_runpod_id, p_reason, v_details, p_cost_usd);
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- Operator side (the CLI): no lease, each appends an event.

create or replace function public.orch_set_paused(p_paused boolean, p_by text default null, p_reason text default null)
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    c public.orchestrator_control%rowtype;
begin
    perform orchestrator_private.check_arg(p_paused is not null, 'p_paused must not be null', '22004');
    insert into public.orchestrator_control (id) values (true) on conflict (id) do nothing;
    update public.orchestrator_control
       set paused = p_paused, paused_by = p_by, paused_reason = p_reason, changed_at = now()
     where id
    returning * into c;
    perform orchestrator_private.append_event(case when p_paused then 'paused' else 'resumed' end,
        null, null, p_reason, jsonb_build_object('by', p_by), null);
    return jsonb_build_object('paused', c.paused, 'paused_by', c.paused_by, 'paused_reason', c.paused_reason,
                              'changed_at', c.changed_at);
end
$$;

create or replace function public.orch_request_termination(p_worker_id text, p_by text default null)
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    w public.workers%rowtype;
begin
    w := orchestrator_private.lock_worker(p_worker_id);
    if w.status = 'terminated' then
        raise exception 'worker "%" is already terminated', p_worker_id using errcode = 'OR002';
    end if;
    update public.workers
       set metadata = coalesce(metadata, '{}'::jsonb)
                      || jsonb_build_object('terminate_requested_at', now(), 'terminate_requested_by', p_by)
     where id = p_worker_id
    returning * into w;
    perform orchestrator_private.append_event('termination_requested', w.id, w.metadata ->> 'runpod_id', null,
        jsonb_build_object('by', p_by), null);
    return to_jsonb(w);
end
$$;

create or replace function public.orch_events(p_limit integer default 50, p_worker_id text default null)
returns jsonb language plpgsql stable security definer set search_path = public, pg_temp as $$
begin
    perform orchestrator_private.check_arg(p_limit is not null, 'p_limit must not be null', '22004');
    perform orchestrator_private.check_arg(p_limit between 1 and 10000,
        format('p_limit must be between 1 and 10000, got %s', p_limit));
    return coalesce((
        select jsonb_agg(to_jsonb(e) order by e.id desc)
        from (select * from public.orchestrator_events
              where p_worker_id is null or worker_id = p_worker_id
              order by id desc limit p_limit) e
    ), '[]'::jsonb);
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- Worker side.

-- Claim the oldest claimable task. Only a worker in a claiming state (initializing, active) gets one;
-- the worker row is held FOR SHARE so a concurrent move to draining waits for this claim (and the next
-- claim then sees draining). SKIP LOCKED lets concurrent claimers pass each other; the re-check of
-- `q.status` on the locked row (EvalPlanQual) is what makes a task go to exactly one worker.
create or replace function public.worker_claim_task(p_worker_id text, p_task_types text[] default null)
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_status text;
    v_id uuid;
    t public.tasks%rowtype;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    select status into v_status from public.workers where id = p_worker_id for share;
    if not found then
        raise exception 'unknown worker "%"', p_worker_id using errcode = 'OR003';
    end if;
    if v_status not in ('initializing', 'active') then
        return null;
    end if;

    -- Walk the queued partial index oldest first and probe the view once per candidate. The OFFSET 0
    -- keeps the probe a per-row subplan: flattened into a join, the planner may pick a nested loop that
    -- rescans the whole queue per row when statistics are stale (seen: 200 ms per claim at 1,000 rows).
    -- An operator's view should therefore be cheap to probe by id.
    select q.id into v_id
      from public.tasks q
     where q.status = 'Queued'
       and (p_task_types is null or q.task_type = any (p_task_types))
       and exists (select 1 from public.orchestrator_claimable_tasks c where c.id = q.id offset 0)
     order by q.created_at, q.id
     limit 1
       for update of q skip locked;
    if v_id is null then
        return null;
    end if;

    update public.tasks
       set status = 'In Progress', worker_id = p_worker_id, generation_started_at = now(), updated_at = now()
     where id = v_id
    returning * into t;
    return to_jsonb(t);
end
$$;

-- Record a heartbeat. It never changes a worker's state except the one promotion the contract allows
-- (initializing -> active once the orchestrator recorded metadata.process_started_at), and it records
-- nothing for draining, terminating, error or terminated workers: a heartbeat cannot resurrect one.
create or replace function public.worker_heartbeat(
    p_worker_id text, p_vram_total_mb integer default null, p_vram_used_mb integer default null)
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    w public.workers%rowtype;
    v_vram jsonb;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    perform orchestrator_private.check_arg(p_vram_total_mb is null or p_vram_total_mb >= 0,
        format('p_vram_total_mb must be >= 0, got %s', p_vram_total_mb));
    perform orchestrator_private.check_arg(p_vram_used_mb is null or p_vram_used_mb >= 0,
        format('p_vram_used_mb must be >= 0, got %s', p_vram_used_mb));
    w := orchestrator_private.lock_worker(p_worker_id);

    if w.status = 'draining' then
        -- A draining worker may still be finishing a task it claimed: its heartbeat is the evidence that
        -- it lives. Recorded, but it never changes the state (it cannot un-drain itself).
        update public.workers set last_heartbeat = now() where id = p_worker_id returning * into w;
        return jsonb_build_object('status', w.status, 'accepted', true);
    end if;
    if w.status is null or w.status not in ('spawning', 'initializing', 'active') then
        return jsonb_build_object('status', w.status, 'accepted', false);
    end if;

    v_vram := jsonb_strip_nulls(jsonb_build_object(
        'vram_total_mb', p_vram_total_mb, 'vram_used_mb', p_vram_used_mb,
        'vram_timestamp', case when p_vram_total_mb is not null or p_vram_used_mb is not null
                               then to_jsonb(now()) end));

    if w.status = 'initializing' and coalesce(w.metadata ->> 'process_started_at', '') <> '' then
        update public.workers
           set last_heartbeat = now(), metadata = coalesce(metadata, '{}'::jsonb) || v_vram,
               status = 'active', status_changed_at = now(), status_reason = 'first_heartbeat',
               activated_at = coalesce(activated_at, now()),
               boot_outcome = coalesce(boot_outcome, 'activated'), boot_outcome_at = coalesce(boot_outcome_at, now())
         where id = p_worker_id
        returning * into w;
        perform orchestrator_private.append_event('transition', w.id, w.metadata ->> 'runpod_id',
            'first_heartbeat', jsonb_build_object('from', 'initializing', 'to', 'active'), null);
    else
        update public.workers
           set last_heartbeat = now(), metadata = coalesce(metadata, '{}'::jsonb) || v_vram
         where id = p_worker_id
        returning * into w;
    end if;
    return jsonb_build_object('status', w.status, 'accepted', true);
end
$$;

-- Only the task's own worker, only while In Progress; otherwise false and nothing written (a late reply
-- from a worker whose task was already requeued must not overwrite another worker's run).
create or replace function public.worker_complete_task(p_worker_id text, p_task_id uuid, p_result jsonb default null)
returns boolean language plpgsql security definer set search_path = public, pg_temp as $$
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    perform orchestrator_private.check_arg(p_task_id is not null, 'p_task_id must not be null', '22004');
    if not exists (select 1 from public.workers where id = p_worker_id) then
        raise exception 'unknown worker "%"', p_worker_id using errcode = 'OR003';
    end if;
    if not exists (select 1 from public.tasks where id = p_task_id) then
        raise exception 'unknown task %', p_task_id using errcode = 'OR003';
    end if;
    update public.tasks
       set status = 'Complete', generation_processed_at = now(), result_data = p_result, updated_at = now()
     where id = p_task_id and worker_id = p_worker_id and status = 'In Progress';
    return found;
end
$$;

create or replace function public.worker_fail_task(
    p_worker_id text, p_task_id uuid, p_error text default null, p_max_attempts integer default 3)
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    t public.tasks%rowtype;
    v_next integer;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    perform orchestrator_private.check_arg(p_task_id is not null, 'p_task_id must not be null', '22004');
    perform orchestrator_private.check_arg(p_max_attempts is not null, 'p_max_attempts must not be null', '22004');
    perform orchestrator_private.check_arg(p_max_attempts between 1 and 1000,
        format('p_max_attempts must be between 1 and 1000, got %s', p_max_attempts));
    if not exists (select 1 from public.workers where id = p_worker_id) then
        raise exception 'unknown worker "%"', p_worker_id using errcode = 'OR003';
    end if;
    select * into t from public.tasks where id = p_task_id for update;
    if not found then
        raise exception 'unknown task %', p_task_id using errcode = 'OR003';
    end if;
    if t.worker_id is distinct from p_worker_id or t.status is distinct from 'In Progress' then
        -- Not this worker's running task (any more): nothing to fail, nothing written.
        return jsonb_build_object('status', t.status, 'attempts', coalesce(t.attempts, 0), 'accepted', false);
    end if;

    v_next := coalesce(t.attempts, 0) + 1;
    if v_next >= p_max_attempts then
        update public.tasks
           set attempts = v_next, status = 'Failed', generation_processed_at = now(), updated_at = now(),
               error_message = format('dead-lettered after attempt %s of %s: %s',
                                      v_next, p_max_attempts, coalesce(p_error, 'no error given'))
         where id = p_task_id
        returning * into t;
    else
        update public.tasks
           set attempts = v_next, status = 'Queued', worker_id = null, generation_started_at = null,
               updated_at = now(),
               error_message = format('attempt %s of %s failed on worker %s: %s',
                                      v_next, p_max_attempts, p_worker_id, coalesce(p_error, 'no error given'))
         where id = p_task_id
        returning * into t;
    end if;
    return jsonb_build_object('status', t.status, 'attempts', t.attempts, 'accepted', true);
end
$$;

-- ---------------------------------------------------------------------------------------------------
-- Wake the daemon when work arrives: it LISTENs on `orchestrator_tasks`. One notification per INSERT
-- statement (bulk loads do not flood the queue) and one per task that moves back to Queued.

create or replace function orchestrator_private.notify_tasks_inserted()
returns trigger language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_count bigint;
begin
    select count(*) into v_count from new_rows where status = 'Queued';
    if v_count > 0 then
        perform pg_notify('orchestrator_tasks', json_build_object('event', 'queued', 'count', v_count)::text);
    end if;
    return null;
end
$$;

create or replace function orchestrator_private.notify_task_requeued()
returns trigger language plpgsql security definer set search_path = public, pg_temp as $$
begin
    perform pg_notify('orchestrator_tasks',
        json_build_object('event', 'queued', 'count', 1, 'task_id', new.id)::text);
    return null;
end
$$;

drop trigger if exists orchestrator_tasks_inserted on public.tasks;
create trigger orchestrator_tasks_inserted
    after insert on public.tasks
    referencing new table as new_rows
    for each statement execute function orchestrator_private.notify_tasks_inserted();

drop trigger if exists orchestrator_task_requeued on public.tasks;
create trigger orchestrator_task_requeued
    after update of status on public.tasks
    for each row when (new.status = 'Queued' and old.status is distinct from 'Queued')
    execute function orchestrator_private.notify_task_requeued();

-- The event log is append-only, for the table owner too (privileges alone do not bind the owner).
create or replace function orchestrator_private.refuse_event_change()
returns trigger language plpgsql as $$
begin
    raise exception 'orchestrator_events is append-only: % refused', tg_op using errcode = '42501';
end
$$;

drop trigger if exists orchestrator_events_append_only on public.orchestrator_events;
create trigger orchestrator_events_append_only
    before update or delete on public.orchestrator_events
    for each row execute function orchestrator_private.refuse_event_change();

drop trigger if exists orchestrator_events_no_truncate on public.orchestrator_events;
create trigger orchestrator_events_no_truncate
    before truncate on public.orchestrator_events
    for each statement execute function orchestrator_private.refuse_event_change();
