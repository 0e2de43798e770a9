-- What a worker bills *now* (orchestrator_worker_spend.cost_per_hr, and the rates orchestrator_spend
-- sums), for the pods on their way out. Before this, a worker's rate now was its GPU price in every state
-- but `stopped`:
--
-- 1. Once the termination was asked of Runpod (metadata.pod_terminate_requested_at), or the worker is
--    `terminated`, it bills nothing now: the spend estimate already ends there
--    (orchestrator_dashboard.worker_billed_until, 20261206009000), and orchestrator_spend's fleet rate
--    already left such rows out; the per-worker rate now says the same.
-- 2. A pooled pod being terminated (`terminating`, its last pool event a confirmed stop: metadata.stopped_at
--    later than any metadata.resume_requested_at) is still stopped until the termination takes it, and
--    bills its volume disk, not a GPU ("Billing information", docs.runpod.io/get-started/billing-information).
--    A `terminating` worker whose resume was asked after its last stop may hold a GPU again: its GPU price.
--
-- 3. Timestamps in metadata are read as the orchestrator's Python reads them (orchestrator.core.parsing
--    parse_ts, what `orchestrator status` shows): ISO 8601 text only, and a value without an offset taken
--    as UTC whatever the session's time zone. Before this a session in another zone read such a value in
--    that zone, and Postgres's other spellings ('now', 'epoch', 'Dec 6 2026') counted as times.
--    orchestrator_dashboard.worker_billed_until reads the termination request through the same function.
--
-- Only the rate now changes: the spend so far still counts the moment between `stopped -> terminating` and
-- the termination request at the GPU price (the dearer reading; one executor step, usually well under a
-- second). Idempotent, like every migration of this project.

-- A timestamp from free-form metadata text; anything but ISO 8601 reads as absent.
create or replace function orchestrator_dashboard.as_timestamptz(p_value text)
returns timestamptz language plpgsql stable set timezone = 'UTC' as $$
begin
    if p_value is null or p_value !~ '^\s*\d{4}-\d{2}-\d{2}' then
        return null;
    end if;
    return p_value::timestamptz;
exception when others then
    return null;
end
$$;

create or replace function orchestrator_dashboard.worker_billed_until(
    p_status text, p_status_changed_at timestamptz, p_metadata jsonb
) returns timestamptz language plpgsql stable as $$
declare
    v_asked timestamptz := orchestrator_dashboard.as_timestamptz(p_metadata ->> 'pod_terminate_requested_at');
begin
    if v_asked is not null then
        return least(v_asked, now());
    end if;
    if p_status = 'terminated' then
        return coalesce(p_status_changed_at, now());
    end if;
    return now();
end
$$;

-- A terminating worker whose pod was last stopped by us and not resumed since.
create or replace function orchestrator_dashboard.worker_ending_from_pool(p_status text, p_metadata jsonb)
returns boolean language sql stable as $$
    select p_status = 'terminating'
           and orchestrator_dashboard.as_timestamptz(p_metadata ->> 'stopped_at') is not null
           and coalesce(orchestrator_dashboard.as_timestamptz(p_metadata ->> 'resume_requested_at')
                        < orchestrator_dashboard.as_timestamptz(p_metadata ->> 'stopped_at'), true);
$$;

-- USD per hour the worker bills now: nothing once its billing ended, its stopped disk while its pod is
-- stopped (in the pool, or being terminated out of it), its GPU price otherwise. Stable, not immutable:
-- it reads now().
create or replace function orchestrator_dashboard.worker_rate_per_hr(p_status text, p_metadata jsonb)
returns numeric language sql stable as $$
    select case
        when p_status = 'terminated'
             or orchestrator_dashboard.as_timestamptz(p_metadata ->> 'pod_terminate_requested_at') <= now()
            then 0
        when p_status = 'stopped' or orchestrator_dashboard.worker_ending_from_pool(p_status, p_metadata)
            then orchestrator_dashboard.stopped_disk_usd_per_hr(p_metadata)
        else orchestrator_dashboard.worker_cost_per_hr(p_metadata) end;
$$;

revoke all on function orchestrator_dashboard.worker_ending_from_pool(text, jsonb) from public, anon, authenticated;
grant execute on function orchestrator_dashboard.worker_ending_from_pool(text, jsonb) to service_role;
