-- Every function that addresses an existing worker row accepts whatever id the row has.
--
-- check_worker_id (20261129000200) refused ids longer than 200 characters in every function, also in
-- those that look up a row that already exists (orch_transition_worker, orch_merge_worker_metadata,
-- orch_requeue_worker_tasks, orch_request_termination). A row another system left with a longer id could
-- then never be moved to error or terminated, and its tasks never requeued: the daemon could only
-- terminate its pod. Now only a missing or blank id is refused there (such an id cannot name a row);
-- the length limit stays where an id is made, in orch_register_worker.
--
-- Idempotent, like every migration of this project.

create or replace function orchestrator_private.check_worker_id(p_worker_id text)
returns void language plpgsql immutable as $$
begin
    if p_worker_id is null then
        raise exception 'p_worker_id must not be null' using errcode = '22004';
    end if;
    if btrim(p_worker_id) = '' then
        raise exception 'p_worker_id must be a non-empty text' using errcode = '22023';
    end if;
end
$$;

-- As in 20261206000200, with the length limit for a new id.
create or replace function public.orch_register_worker(
    p_token bigint, p_worker_id text, p_instance_type text, p_metadata jsonb default '{}'::jsonb,
    p_lease text default 'orchestrator')
returns jsonb language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_meta jsonb;
    w public.workers%rowtype;
begin
    perform orchestrator_private.check_worker_id(p_worker_id);
    perform orchestrator_private.check_arg(length(p_worker_id) <= 200,
        'p_worker_id must be a non-empty text of at most 200 characters');
    v_meta := orchestrator_private.check_object(p_metadata, 'p_metadata', true);
    perform orchestrator_private.check_lease(p_lease, p_token);
    begin
        insert into public.workers (id, instance_type, status, metadata, created_at, status_changed_at,
                                    orchestrator_prefix, orchestrator_managed)
        values (p_worker_id, p_instance_type, 'spawning', v_meta, now(), now(), v_meta ->> 'orchestrator_prefix',
                true)
        returning * into w;
    exception when unique_violation then
        raise exception 'worker "%" already exists', p_worker_id using errcode = '23505';
    end;
    perform orchestrator_private.append_event('worker_registered', w.id, null, null,
        jsonb_build_object('instance_type', p_instance_type), null);
    return to_jsonb(w);
end
$$;

revoke all on function orchestrator_private.check_worker_id(text) from public;
