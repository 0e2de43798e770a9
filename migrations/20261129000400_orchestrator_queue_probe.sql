-- A cheap "has new work arrived?" read for the transport without LISTEN/NOTIFY (Supabase's REST API).
-- The daemon calls it every WAKE_PROBE_SEC and runs a tick at once when the answer changes, so over
-- Supabase a queued task is seen within seconds instead of a whole poll interval later. One backward
-- probe of tasks_orch_queued_idx: constant cost whatever the queue length.
create or replace function public.orch_queue_probe()
returns json language sql stable security definer
set search_path = public, pg_temp
as $$
    select json_build_object(
        'newest_queued_at', (select t.created_at from public.tasks t
                              where t.status = 'Queued'
                              order by t.created_at desc, t.id desc limit 1));
$$;

revoke all on function public.orch_queue_probe() from public, anon, authenticated;
grant execute on function public.orch_queue_probe() to service_role;
