-- Review fixes to the worker's claim (docs/database.md, "Worker side"; tests/integration/test_sql_review.py).
--
-- 1. A worker row whose status is NULL (left by the replaced system in a production table whose column
--    is nullable) is not in a claiming state, but `NULL not in (...)` is NULL and plpgsql's IF treats it
--    as false, so the claim went ahead. Only `initializing` and `active` claim, now explicitly.
-- 2. A claim restricted to task types walked the whole queued index (every older queued task of any
--    other type) before finding one of its own: its cost grew with the backlog it cannot take. It now
--    makes one ordered probe per requested type on a (task_type, created_at, id) partial index and
--    takes the oldest of them.
-- Idempotent; 20261129000300 granted EXECUTE by name and CREATE OR REPLACE keeps those grants.

create index if not exists tasks_orch_queued_type_idx
    on public.tasks (task_type, created_at, id) where status = 'Queued';

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
    -- `is null or`: a NULL status must not slip through a NULL-valued NOT IN.
    if v_status is null or v_status not in ('initializing', 'active') then
        return null;
    end if;

    if p_task_types is null then
        -- Walk the queued partial index oldest first and probe the view once per candidate. The OFFSET 0
        -- keeps the probe a per-row subplan (see 20261129000200 for why).
        select q.id into v_id
          from public.tasks q
         where q.status = 'Queued'
           and exists (select 1 from public.orchestrator_claimable_tasks c where c.id = q.id offset 0)
         order by q.created_at, q.id
         limit 1
           for update of q skip locked;
    else
        -- One ordered probe per distinct requested type (tasks_orch_queued_type_idx), the oldest wins.
        -- Each probe locks its own oldest claimable task; the ones not chosen are released at commit, a
        -- moment later (a concurrent claimer skips them meanwhile, as it skips any locked task).
        select c.id into v_id
          from (select distinct u.task_type from unnest(p_task_types) as u(task_type)
                 where u.task_type is not null) ty
          cross join lateral (
                select q.id, q.created_at
                  from public.tasks q
                 where q.status = 'Queued'
                   and q.task_type = ty.task_type
                   and exists (select 1 from public.orchestrator_claimable_tasks v where v.id = q.id offset 0)
                 order by q.created_at, q.id
                 limit 1
                   for update of q skip locked) c
         order by c.created_at, c.id
         limit 1;
    end if;
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
