-- What the fleet costs, in the dashboard views, and a bounded retention for the event log
-- (docs/database.md, "Dashboard views" and "Event retention").
--
-- A pod bills per second from its creation until it is terminated (Runpod's pricing: "billed by the
-- second"; an EXITED pod bills no GPU). The orchestrator knows each worker's price (metadata.cost_per_hr,
-- the pod's own cost when it was created) and its lifetime: from the row's creation (the intent is
-- written just before the pod is created) to the moment it asked Runpod to terminate the pod
-- (metadata.pod_terminate_requested_at), else to the confirmation (status_changed_at of the
-- 'terminated' row), else now. Runpod's invoice is authoritative; these are estimates that agree with it
-- to the second for every pod the orchestrator created and ended.
--
-- The event log keeps its append-only guard for everyone; the one way rows leave it is
-- orch_prune_events, fenced by the lease and limited to rows older than the retention the daemon
-- passes (EVENTS_RETENTION_DAYS), in bounded batches so a first prune of a large table never holds a
-- long lock. Idempotent.

-- ---------------------------------------------------------------------------------------------------
-- Estimated spend of one worker row. The helpers live in a schema of their own: the views are
-- security_invoker, so whoever reads them (the dashboard, as the service role) calls these pure
-- functions, and orchestrator_private (the lease, the counters) stays closed to every API role.

create schema if not exists orchestrator_dashboard;
revoke all on schema orchestrator_dashboard from public;

create or replace function orchestrator_dashboard.worker_cost_per_hr(p_metadata jsonb)
returns numeric language sql immutable as $$
    select case
        when jsonb_typeof(p_metadata -> 'cost_per_hr') = 'number' and (p_metadata ->> 'cost_per_hr')::numeric > 0
            then (p_metadata ->> 'cost_per_hr')::numeric
    end;
$$;

create or replace function orchestrator_dashboard.worker_billed_until(
    p_status text, p_status_changed_at timestamptz, p_metadata jsonb
) returns timestamptz language plpgsql stable as $$
declare
    v_asked timestamptz;
begin
    begin
        v_asked := (p_metadata ->> 'pod_terminate_requested_at')::timestamptz;
    exception when others then
        v_asked := null;  -- free-form metadata: a malformed value reads as absent
    end;
    if v_asked is not null then
        return least(v_asked, now());
    end if;
    if p_status = 'terminated' then
        return coalesce(p_status_changed_at, now());
    end if;
    return now();
end
$$;

create or replace function orchestrator_dashboard.worker_spend_usd(
    p_status text, p_created_at timestamptz, p_status_changed_at timestamptz, p_metadata jsonb
) returns numeric language sql stable as $$
    select round(
        orchestrator_dashboard.worker_cost_per_hr(p_metadata)
        * greatest(0, extract(epoch from
              orchestrator_dashboard.worker_billed_until(p_status, p_status_changed_at, p_metadata) - p_created_at))
        / 3600.0,
        4);
$$;

-- ---------------------------------------------------------------------------------------------------
-- The views. New ones rather than new columns on orchestrator_worker_health: migrations are re-run on
-- upgrades (and by `supabase db push` tooling), and an older migration's CREATE OR REPLACE VIEW with
-- fewer columns would fail on a view a later one widened.

create or replace view public.orchestrator_worker_spend as
    select w.id,
           w.status,
           w.instance_type,
           w.metadata ->> 'runpod_id' as runpod_id,
           orchestrator_dashboard.worker_cost_per_hr(w.metadata) as cost_per_hr,
           w.created_at as billed_since,
           orchestrator_dashboard.worker_billed_until(w.status, w.status_changed_at, w.metadata) as billed_until,
           orchestrator_dashboard.worker_spend_usd(w.status, w.created_at, w.status_changed_at, w.metadata)
               as spend_usd
      from public.workers w
     where w.orchestrator_managed
       and (w.status is distinct from 'terminated' or w.status_changed_at > now() - interval '7 days');
comment on view public.orchestrator_worker_spend is
    'Per worker (live, and ended in the last 7 days): $/h and the estimated spend so far, from its price and lifetime.';

create or replace view public.orchestrator_spend as
    with rows as (
        select w.status,
               w.created_at,
               orchestrator_dashboard.worker_billed_until(w.status, w.status_changed_at, w.metadata) as until,
               orchestrator_dashboard.worker_cost_per_hr(w.metadata) as price
          from public.workers w
         where w.orchestrator_managed
    ),
    spans as (
        select status, created_at, until, price,
               price * greatest(0, extract(epoch from until - created_at)) / 3600.0 as usd
          from rows
    )
    select count(*) filter (where status is distinct from 'terminated') as live_workers,
           round(coalesce(sum(price) filter (where status is distinct from 'terminated' and until >= now() - interval '1 second'), 0), 4)
               as cost_per_hr,
           round(coalesce(sum(usd) filter (where status is distinct from 'terminated'), 0), 4) as live_spend_usd,
           round(coalesce(sum(price * greatest(0, extract(epoch from until - greatest(created_at, now() - interval '24 hours'))) / 3600.0)
                          filter (where until > now() - interval '24 hours'), 0), 4) as spend_24h_usd,
           round(coalesce(sum(price * greatest(0, extract(epoch from until - greatest(created_at, now() - interval '7 days'))) / 3600.0)
                          filter (where until > now() - interval '7 days'), 0), 4) as spend_7d_usd,
           round(coalesce(sum(usd), 0), 4) as spend_total_usd,
           count(*) filter (where price is null) as workers_without_price
      from spans;
comment on view public.orchestrator_spend is
    'The fleet''s cost: $/h now, spend of the live workers so far, over the last 24 hours, 7 days and in all (estimates from each pod''s price and lifetime).';

do $$
begin
    if current_setting('server_version_num')::int >= 150000 then
        alter view public.orchestrator_worker_spend set (security_invoker = true);
        alter view public.orchestrator_spend set (security_invoker = true);
    end if;
end
$$;
revoke all on public.orchestrator_worker_spend, public.orchestrator_spend from public, anon, authenticated;
grant select on public.orchestrator_worker_spend, public.orchestrator_spend to service_role;

-- ---------------------------------------------------------------------------------------------------
-- Event retention.

create or replace function orchestrator_private.refuse_event_change()
returns trigger language plpgsql as $$
declare
    v_before text := coalesce(current_setting('orchestrator.prune_events_before', true), '');
begin
    -- orch_prune_events sets the cutoff for its own transaction only; nothing else can delete, and
    -- nobody can update or truncate.
    if tg_op = 'DELETE' and v_before <> '' and old.at < v_before::timestamptz then
        return old;
    end if;
    raise exception 'orchestrator_events is append-only: % refused', tg_op using errcode = '42501';
end
$$;

create or replace function public.orch_prune_events(
    p_token bigint,
    p_retention_days integer,
    p_batch integer default 5000,
    p_lease text default 'orchestrator'
) returns jsonb
language plpgsql volatile security definer set search_path = public, pg_temp as $$
declare
    v_cutoff timestamptz;
    v_deleted integer;
    v_oldest timestamptz;
begin
    perform orchestrator_private.check_lease(p_lease, p_token);
    if p_retention_days is null or p_retention_days < 1 then
        raise exception 'p_retention_days must be >= 1, got %', p_retention_days using errcode = '22023';
    end if;
    if p_batch is null or p_batch < 1 or p_batch > 100000 then
        raise exception 'p_batch must be between 1 and 100000, got %', p_batch using errcode = '22023';
    end if;
    v_cutoff := now() - make_interval(days => p_retention_days);
    perform set_config('orchestrator.prune_events_before', v_cutoff::text, true);
    -- Oldest first, by the primary key's order: one index range, a bounded number of rows.
    with doomed as (
        select id from public.orchestrator_events where at < v_cutoff order by id limit p_batch
    )
    delete from public.orchestrator_events e using doomed where e.id = doomed.id;
    get diagnostics v_deleted = row_count;
    perform set_config('orchestrator.prune_events_before', '', true);
    select min(at) into v_oldest from public.orchestrator_events;
    return jsonb_build_object('deleted', v_deleted, 'more', v_deleted = p_batch, 'cutoff', v_cutoff,
                              'oldest_kept_at', v_oldest);
end
$$;
comment on function public.orch_prune_events(bigint, integer, integer, text) is
    'Delete at most p_batch events older than p_retention_days (fenced by the lease); {deleted, more, cutoff, oldest_kept_at}.';

-- EXECUTE for the service role only (as 20261129000300 does for every function of ours).
revoke all on function public.orch_prune_events(bigint, integer, integer, text) from public, anon, authenticated;
grant execute on function public.orch_prune_events(bigint, integer, integer, text) to service_role;
grant usage on schema orchestrator_dashboard to service_role;
revoke all on function orchestrator_dashboard.worker_cost_per_hr(jsonb) from public, anon, authenticated;
revoke all on function orchestrator_dashboard.worker_billed_until(text, timestamptz, jsonb) from public, anon, authenticated;
revoke all on function orchestrator_dashboard.worker_spend_usd(text, timestamptz, timestamptz, jsonb)
    from public, anon, authenticated;
grant execute on function orchestrator_dashboard.worker_cost_per_hr(jsonb) to service_role;
grant execute on function orchestrator_dashboard.worker_billed_until(text, timestamptz, jsonb) to service_role;
grant execute on function orchestrator_dashboard.worker_spend_usd(text, timestamptz, timestamptz, jsonb) to service_role;
