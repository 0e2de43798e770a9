-- A restarted daemon takes over the lease of its own dead predecessor at once.
--
-- orch_lease_acquire hands over an expired lease only: a daemon killed without releasing it (SIGKILL,
-- the OOM killer, a supervisor's stop timeout) left the next process waiting LEASE_TTL_SEC (90 s by
-- default) with nobody acting for the fleet. The daemon can tell that the holder is dead when it ran on
-- the same machine in the same process namespace and its process is gone (orchestrator/loop/lease.py);
-- it then asks for the lease from that holder by name. This is a compare-and-swap on the holder: it
-- succeeds only while the named holder still holds the lease, and it draws a new, larger token, so any
-- write the old holder still had in flight is refused as after an expiry.
--
-- Idempotent, like every migration of this project.

create or replace function public.orch_lease_take_over(
    p_holder text, p_from text, p_ttl_sec numeric, p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v public.orchestrator_lease%rowtype;
begin
    perform orchestrator_private.check_arg(p_holder is not null, 'p_holder must not be null', '22004');
    perform orchestrator_private.check_arg(btrim(p_holder) <> '', 'p_holder must not be empty');
    perform orchestrator_private.check_arg(p_from is not null, 'p_from must not be null', '22004');
    perform orchestrator_private.check_arg(p_ttl_sec is not null, 'p_ttl_sec must not be null', '22004');
    perform orchestrator_private.check_arg(p_ttl_sec > 0 and p_ttl_sec <= 86400,
        format('p_ttl_sec must be in (0, 86400] seconds, got %s', p_ttl_sec));
    perform orchestrator_private.check_arg(p_lease is not null and p_lease <> '', 'p_lease must not be empty', '22004');

    update public.orchestrator_lease
       set holder = p_holder,
           token = nextval('public.orchestrator_lease_token_seq'),
           acquired_at = now(),
           renewed_at = now(),
           expires_at = clock_timestamp() + make_interval(secs => p_ttl_sec::float8)
     where name = p_lease and holder = p_from
    returning * into v;
    if not found then
        select * into v from public.orchestrator_lease where name = p_lease;
        return jsonb_build_object('acquired', false, 'token', null, 'holder', v.holder, 'expires_at', v.expires_at);
    end if;
    perform orchestrator_private.append_event('lease_acquired', null, null, null,
        jsonb_build_object('lease', p_lease, 'holder', p_holder, 'token', v.token, 'previous_holder', p_from,
                           'taken_over', true),
        null);
    return jsonb_build_object('acquired', true, 'token', v.token, 'holder', v.holder, 'expires_at', v.expires_at);
end
$$;

revoke all on function public.orch_lease_take_over(text, text, numeric, text) from public, anon, authenticated;
grant execute on function public.orch_lease_take_over(text, text, numeric, text) to service_role;
