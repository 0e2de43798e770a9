-- The warm pool: an idle worker's pod can be stopped instead of terminated, and resumed when work comes
-- back. Runpod's docs ("Manage Pods"): pods with a network volume can be stopped as well as terminated; a
-- stopped pod frees its GPU, keeps its volume disk (billed while stopped) and restarts on the same host.
--
-- Additive: three worker states (stopping, stopped, resuming) admitted by the workers.status CHECK, and
-- their edges in the transition table. Every value and edge that was allowed still is. The claim guard
-- admits only initializing and active, so none of the three can claim a task.

do $$
declare
    v_con record;
    v_values text[] := array['stopping', 'stopped', 'resuming'];
    v_found text[];
    v_name text := 'workers_status_check';
    v_status_attnum smallint;
begin
    select attnum into v_status_attnum from pg_attribute
     where attrelid = 'public.workers'::regclass and attname = 'status' and not attisdropped;
    for v_con in
        select c.conname, pg_get_constraintdef(c.oid) as def
          from pg_constraint c
         where c.conrelid = 'public.workers'::regclass and c.contype = 'c'
           and c.conkey = array[v_status_attnum]
    loop
        select array_agg(m[1]) into v_found
          from regexp_matches(v_con.def, '''((?:[^'']|'''')*)''', 'g') as m;
        v_values := v_values || coalesce(v_found, '{}');
        v_name := v_con.conname;
        execute format('alter table public.workers drop constraint %I', v_con.conname);
    end loop;
    select v_values || coalesce(array_agg(distinct w.status) filter (where w.status is not null), '{}')
      into v_values from public.workers w;
    select array_agg(distinct replace(v, '''''', '''') order by replace(v, '''''', '''')) into v_values
      from unnest(v_values) as v;
    execute format('alter table public.workers add constraint %I check (status in (%s))',
                   v_name, (select string_agg(quote_literal(v), ', ') from unnest(v_values) as v));
end
$$;

insert into public.orchestrator_worker_transitions (from_status, to_status, meaning) values
    ('draining',  'stopping',     'idle and the pool has room: pod stop asked of the provider'),
    ('stopping',  'stopped',      'the provider confirms the pod stopped: in the warm pool'),
    ('stopping',  'terminating',  'the stop did not take, or the pool has no room: terminate'),
    ('stopping',  'error',        'the pod failed while stopping'),
    ('stopping',  'terminated',   'the provider confirms the pod is gone'),
    ('stopped',   'resuming',     'work came back: pod start asked of the provider'),
    ('stopped',   'terminating',  'pool past its time to live, shrunk, or paused'),
    ('stopped',   'error',        'the stopped pod failed'),
    ('stopped',   'terminated',   'the provider confirms the pod is gone'),
    ('resuming',  'initializing', 'the resumed pod is ready: checks and process start again'),
    ('resuming',  'terminating',  'the resume failed (no GPU on the host) or was cancelled'),
    ('resuming',  'error',        'the resume failed or timed out'),
    ('resuming',  'terminated',   'the provider confirms the pod is gone')
on conflict (from_status, to_status) do update set meaning = excluded.meaning;
