-- The wake probe sees every new task at the commit that makes it visible, whatever its created_at.
--
-- orch_queue_probe() answered the created_at of the newest Queued task (20261129000400) and the requeue
-- counter (20261129000500). created_at is the time the inserting transaction took its snapshot, not when
-- it committed: a task inserted by a long transaction (a batch import, an app function that inserts and
-- then does slow work before committing) becomes visible carrying a created_at older than the newest
-- queued task already seen, so the answer did not change, the daemon was not woken, and the task waited a
-- whole poll interval. A counter bumped at commit has no such blind spot: the answer changes exactly when
-- a transaction that queued at least one task commits.
--
-- Built like the requeue counter (see 20261129000500 for why a row, not a sequence, and why a deferred
-- constraint trigger): a second column on the same private row, bumped once per committing transaction
-- that inserted a Queued task, by a constraint trigger deferred to commit. newest_queued_at stays in the
-- answer for readers that show it. Nothing else changes.
--
-- Idempotent, like every migration of this project.

alter table orchestrator_private.queue_requeues add column if not exists enqueued bigint not null default 0;
alter table orchestrator_private.queue_requeues add column if not exists enqueue_xact xid8;

create or replace function orchestrator_private.count_task_enqueue()
returns trigger language plpgsql security definer set search_path = public, pg_temp as $$
begin
    update orchestrator_private.queue_requeues
       set enqueued = enqueued + 1, enqueue_xact = pg_current_xact_id()
     where id and enqueue_xact is distinct from pg_current_xact_id();
    return null;
end
$$;
revoke all on function orchestrator_private.count_task_enqueue() from public;

drop trigger if exists orchestrator_task_enqueued_count on public.tasks;
create constraint trigger orchestrator_task_enqueued_count
    after insert on public.tasks
    deferrable initially deferred
    for each row when (new.status = 'Queued')
    execute function orchestrator_private.count_task_enqueue();

-- {newest_queued_at, requeues, enqueued}: a transaction that queues a task changes `enqueued` when it
-- commits, one that moves a task back to Queued changes `requeues`. Two primary-key reads and one backward
-- probe of tasks_orch_queued_idx, whatever the queue length.
create or replace function public.orch_queue_probe()
returns json language sql stable security definer
set search_path = public, pg_temp
as $$
    select json_build_object(
        'newest_queued_at', (select t.created_at from public.tasks t
                              where t.status = 'Queued'
                              order by t.created_at desc, t.id desc limit 1),
        'requeues', (select r.requeues from orchestrator_private.queue_requeues r where r.id),
        'enqueued', (select r.enqueued from orchestrator_private.queue_requeues r where r.id));
$$;

revoke all on function public.orch_queue_probe() from public, anon, authenticated;
grant execute on function public.orch_queue_probe() to service_role;
