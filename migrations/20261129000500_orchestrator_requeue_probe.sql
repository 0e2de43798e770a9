-- The wake probe must also see tasks that go *back* to Queued.
--
-- Over Supabase's REST API the daemon cannot LISTEN, so it polls orch_queue_probe() every
-- WAKE_PROBE_SEC and ticks at once when the answer changes. Until now the answer was only the
-- created_at of the newest Queued task; a task moved back to Queued (orch_requeue_worker_tasks, a
-- worker's failure report below the attempt limit, anyone's UPDATE of tasks.status) keeps its old
-- created_at, so the answer did not change and the task waited a whole poll interval. Over Postgres
-- the trigger orchestrator_task_requeued already NOTIFYs on that move; this file gives the probe the
-- same knowledge, at constant cost: a one-row counter, never a scan of the queue.
--
-- Why a row and not a sequence: nextval() is not transactional, so a probe could see the bump before
-- the requeuing transaction commits, tick, find no newly queued task in its snapshot, and then see
-- no further change - the task would wait for the poll again. A row bumped inside the transaction
-- becomes visible exactly when the requeued task does.
--
-- Why a deferred constraint trigger: an immediate bump would hold the counter row's lock from the
-- first requeued task to commit, serialising every concurrent requeuer (and an operator's open psql
-- transaction would block every worker's failure report) and risking deadlocks against task-row
-- locks. Deferred to commit, the bump takes the row lock only while committing, after the
-- transaction's own statements have taken every task-row lock they need, so concurrent committers
-- queue on it for a moment and never hold it while waiting for a task row. Requeues are rare (a dead
-- worker, a failed attempt, an operator's retry), so that moment of serialisation costs nothing
-- measurable. (A session that runs SET CONSTRAINTS ALL IMMEDIATE gets the immediate behaviour, for
-- itself only.) The row-level trigger fires once per requeued task; the bump is guarded by the
-- transaction id so a requeue of 50 tasks still writes the row once.

create table if not exists orchestrator_private.queue_requeues (
    -- A single row: the boolean key with its check allows exactly one.
    id boolean primary key default true check (id),
    -- Committed transactions that moved at least one task back to Queued. Only its changes matter.
    requeues bigint not null default 0,
    -- The transaction that last bumped it (the once-per-transaction guard).
    last_xact xid8
);
-- Not in an exposed schema, and nobody but the owner (our security definer functions) may touch it.
alter table orchestrator_private.queue_requeues enable row level security;
revoke all on table orchestrator_private.queue_requeues from public;

insert into orchestrator_private.queue_requeues (id, requeues) values (true, 0)
on conflict (id) do nothing;

create or replace function orchestrator_private.count_task_requeue()
returns trigger language plpgsql security definer set search_path = public, pg_temp as $$
begin
    update orchestrator_private.queue_requeues
       set requeues = requeues + 1, last_xact = pg_current_xact_id()
     where id and last_xact is distinct from pg_current_xact_id();
    return null;
end
$$;
revoke all on function orchestrator_private.count_task_requeue() from public;

-- Same condition as orchestrator_task_requeued (000200), which keeps sending its NOTIFY unchanged.
-- For a constraint trigger the WHEN condition is still evaluated at once, on the row as updated.
drop trigger if exists orchestrator_task_requeued_count on public.tasks;
create constraint trigger orchestrator_task_requeued_count
    after update of status on public.tasks
    deferrable initially deferred
    for each row when (new.status = 'Queued' and old.status is distinct from 'Queued')
    execute function orchestrator_private.count_task_requeue();

-- The probe now answers {newest_queued_at, requeues}: a new task changes the first, a task moved back
-- to Queued changes the second. Still one backward probe of tasks_orch_queued_idx plus one primary-key
-- read, whatever the queue length.
create or replace function public.orch_queue_probe()
returns json language sql stable security definer
set search_path = public, pg_temp
as $$
    select json_build_object(
        'newest_queued_at', (select t.created_at from public.tasks t
                              where t.status = 'Queued'
                              order by t.created_at desc, t.id desc limit 1),
        'requeues', (select r.requeues from orchestrator_private.queue_requeues r where r.id));
$$;

revoke all on function public.orch_queue_probe() from public, anon, authenticated;
grant execute on function public.orch_queue_probe() to service_role;
