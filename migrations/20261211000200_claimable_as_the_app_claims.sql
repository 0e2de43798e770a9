-- On Reigh's database, the claimable view counts only what a GPU worker's claim can take.
--
-- The default orchestrator_claimable_tasks was every Queued task. The app's claim
-- (claim_next_task_service_role, banodoco/reigh-app 20260323213000_add_max_task_wait_to_claim.sql), as
-- the GPU worker calls it (run type "gpu", Reigh-Worker source/core/db/task_claim.py), takes a Queued
-- task only when:
--   * its type's run type is "gpu" (get_task_run_type: task_types.run_type of an active type, else "gpu";
--     API tasks such as fal image models are another worker's),
--   * its project's user has credits > 0 and allows cloud generation
--     (users.settings.ui.generationMethods.inCloud, true when absent),
--   * that user has fewer than 5 tasks In Progress, parents (types containing "orchestrator") aside.
-- Counted as claimable, a task of a user without credits or with cloud generation off, which the app
-- never hands to a GPU worker, asked for a pod for as long as it stayed Queued: the pod idled until the
-- idle timeout drained it, and the next tick asked again, for ever. An API task asked for one while
-- it waited for its own worker.
--
-- So, where the app's tables are there (users with credits and settings, projects with user_id,
-- tasks.project_id, task_types, get_task_run_type), this migration defines
-- orchestrator_private.app_claimable_tasks with those rules and, unless an operator has redefined the
-- public view, makes it the public view's definition. The app's dependency rule still applies on top in
-- the snapshot and the claim, as before (20261209000100). Elsewhere (no app tables) nothing changes.
-- Where the app's tables arrive after this migration ran, the view stays every Queued task until an
-- operator redefines it with the body below (docs/database.md).
--
-- One difference, on purpose: the app casts inCloud to boolean and a value that is not one makes its
-- claim fail for everyone; here such a user counts as allowing the cloud, so one malformed setting does
-- not stop the snapshot. The view calls nothing of ours: the public view runs with its reader's rights.
--
-- Idempotent, like every migration of this project.

do $$
declare
    v_body text := $body$
        with eligible as (
            select u.id as user_id
              from public.users u
              left join public.projects p on p.user_id = u.id
              left join public.tasks ip on ip.project_id = p.id
                   and ip.status = 'In Progress'
                   and coalesce(ip.task_type, '') not ilike '%orchestrator%'
             where u.credits > 0
               -- PostgreSQL's spellings of false (its boolean input, prefixes included); anything
               -- else, or nothing, allows the cloud, as the app's default does.
               and coalesce(lower(btrim(u.settings #>> '{ui,generationMethods,inCloud}')), 'true')
                   not in ('f', 'fa', 'fal', 'fals', 'false', 'n', 'no', 'of', 'off', '0')
             group by u.id
            having count(ip.id) < 5
        )
        select t.id, t.task_type, t.created_at
          from public.tasks t
          join public.projects p on p.id = t.project_id
         where t.status = 'Queued'
           and exists (select 1 from eligible e where e.user_id = p.user_id)
           and public.get_task_run_type(t.task_type) = 'gpu'
    $body$;
    v_default boolean;
begin
    if to_regclass('public.users') is null or to_regclass('public.projects') is null
       or to_regclass('public.task_types') is null
       or to_regprocedure('public.get_task_run_type(text)') is null
       or (select count(*) from information_schema.columns
            where table_schema = 'public'
              and (table_name, column_name) in (('users', 'credits'), ('users', 'settings'),
                                                ('projects', 'user_id'), ('tasks', 'project_id'))) < 4
    then
        return;
    end if;
    execute 'create or replace view orchestrator_private.app_claimable_tasks as ' || v_body;
    revoke all on orchestrator_private.app_claimable_tasks from public;

    v_default := to_regclass('public.orchestrator_claimable_tasks') is not null
        and pg_get_viewdef('public.orchestrator_claimable_tasks'::regclass)
            = pg_get_viewdef('orchestrator_private.default_claimable_tasks'::regclass);
    if v_default then
        execute 'create or replace view public.orchestrator_claimable_tasks as ' || v_body;
        comment on view public.orchestrator_claimable_tasks is
            'Queued tasks a GPU worker may claim now, by the app''s rules (run type gpu, credits, cloud '
            'allowed, fewer than 5 In Progress per user); redefine with CREATE OR REPLACE VIEW (keep id, '
            'task_type, created_at).';
        -- CREATE OR REPLACE VIEW keeps the grants but not the view's options.
        if current_setting('server_version_num')::int >= 150000 then
            alter view public.orchestrator_claimable_tasks set (security_invoker = true);
        end if;
    end if;
end
$$;
