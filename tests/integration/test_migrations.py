"""Migrations: apply cleanly to an empty database and onto production's tables with rows, twice.

Also the runner's bookkeeping (``orchestrator_schema_migrations``): a second run is a no-op, a changed
or vanished applied file stops it, a failing file is rolled back as a whole.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from orchestrator.adapters.db.base import Database
from orchestrator.adapters.db.migrate import apply_migrations, default_directory, discover
from orchestrator.adapters.db.postgres import PostgresTransport
from orchestrator.core import errors
from orchestrator.standins.pg import TempPostgres
from tests.plugins.supabase import RealWorkerSQL


@pytest.fixture
def empty_url(pg: TempPostgres) -> Iterator[str]:
    name = f"e_{uuid.uuid4().hex[:16]}"
    url = pg.create_database(name)
    try:
        yield url
    finally:
        pg.drop_database(name)


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def schema_fingerprint(url: str) -> str:
    """Tables, columns, functions, views, indexes, policies and triggers of the database, as text."""
    with connect(url) as conn:
        parts = []
        for query in (
            "select table_name, column_name, data_type, column_default, is_nullable from information_schema.columns "
            "where table_schema = 'public' order by 1, 2",
            "select p.oid::regprocedure::text as f, md5(p.prosrc) as src from pg_proc p "
            "join pg_namespace n on n.oid = p.pronamespace where n.nspname in ('public', 'orchestrator_private') order by 1",
            "select viewname, md5(definition) from pg_views where schemaname = 'public' order by 1",
            "select indexname, indexdef from pg_indexes where schemaname = 'public' order by 1",
            "select tablename, policyname, roles::text, cmd from pg_policies order by 1, 2",
            "select tgname, tgrelid::regclass::text from pg_trigger where not tgisinternal order by 1",
            "select relname, relacl::text, relrowsecurity from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'public' order by 1",
            "select from_status, to_status, meaning from orchestrator_worker_transitions order by 1, 2",
        ):
            parts.append(json.dumps(conn.execute(query).fetchall(), default=str))
        return "\n".join(parts)


# -- on an empty database ---------------------------------------------------------------------------


def test_empty_database_then_a_second_run_is_a_no_op(empty_url: str) -> None:
    names = [m.filename for m in discover()]
    assert names and names == sorted(names)
    assert apply_migrations(empty_url) == names
    first = schema_fingerprint(empty_url)
    assert apply_migrations(empty_url) == []
    assert schema_fingerprint(empty_url) == first
    with connect(empty_url) as conn:
        rows = conn.execute(
            "select filename, sha256 from orchestrator_schema_migrations order by 1"
        ).fetchall()
    assert [r["filename"] for r in rows] == names
    assert all(len(r["sha256"]) == 64 for r in rows)


def test_every_file_is_idempotent_sql(empty_url: str) -> None:
    """`supabase db push` or a hand re-run may execute a file again: it must succeed and change nothing."""
    apply_migrations(empty_url)
    with connect(empty_url) as conn:
        conn.execute("insert into workers (id, status) values ('w1', 'active')")
        conn.execute("insert into tasks (task_type) values ('t')")
        # An operator's claimable view survives the re-run.
        conn.execute(
            "create or replace view orchestrator_claimable_tasks as select t.id, t.task_type, t.created_at "
            "from tasks t where t.status = 'Queued' and t.task_type <> 'held'"
        )
    before = schema_fingerprint(empty_url)
    for migration in discover():
        with connect(empty_url) as conn:
            conn.execute(migration.read().encode())
    assert schema_fingerprint(empty_url) == before
    with connect(empty_url) as conn:
        assert conn.execute("select count(*) as n from workers").fetchone()["n"] == 1  # type: ignore[index]
        assert conn.execute("select count(*) as n from tasks").fetchone()["n"] == 1  # type: ignore[index]


# -- onto production's tables -----------------------------------------------------------------------

PRODUCTION_DDL = """
-- Supabase's roles and default privileges exist before we arrive (roles are cluster-wide: another
-- test's database may have created them already).
do $$ begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then create role anon nologin; end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then create role authenticated nologin; end if;
    if not exists (select 1 from pg_roles where rolname = 'service_role') then create role service_role nologin; end if;
end $$;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;

-- The columns the original orchestrator's workers use (banodoco/reigh-worker-orchestrator), plus
-- production's extras; no orchestrator columns yet.
create table public.tasks (
    id uuid primary key default gen_random_uuid(),
    task_type text not null,
    params jsonb,
    status text not null default 'Queued',
    attempts integer default 0,
    worker_id text,
    generation_started_at timestamptz,
    generation_processed_at timestamptz,
    created_at timestamptz default now(),
    updated_at timestamptz default now(),
    error_message text,
    result_data jsonb,
    project_id uuid,
    dependant_on uuid,
    output_location text
);
create table public.workers (
    id text primary key,
    instance_type text,
    status text,
    last_heartbeat timestamptz,
    metadata jsonb,
    created_at timestamptz default now()
);
-- Production's own function that its workers call: the migration must leave its grants alone.
create function public.worker_legacy_ping() returns int language sql as 'select 1';
"""

PRODUCTION_ROWS = """
insert into public.workers (id, instance_type, status, last_heartbeat, metadata, created_at) values
 ('gpu-20250912_101500-1a2b3c4d', 'NVIDIA GeForce RTX 4090', 'active', now() - interval '10 seconds',
  '{"runpod_id": "abc123", "ssh_details": {"ip": "1.2.3.4", "port": 22022}, "vram_total_mb": 24564}',
  now() - interval '2 hours'),
 ('gpu-20250911_090000-deadbeef', 'NVIDIA GeForce RTX 4090', 'terminated', now() - interval '1 day', null,
  now() - interval '1 day'),
 ('gpu-20250912_100000-0badf00d', 'NVIDIA GeForce RTX 4090', 'error', now() - interval '20 minutes',
  '{"runpod_id": "def456", "error_reason": "SSH authentication failed"}', now() - interval '3 hours');
insert into public.tasks (id, task_type, params, status, attempts, worker_id, generation_started_at,
                          generation_processed_at, created_at, error_message, result_data, project_id,
                          dependant_on, output_location) values
 ('11111111-1111-1111-1111-111111111111', 'wan_2_2_t2v', '{"prompt": "a cat"}', 'Complete', 1,
  'gpu-20250912_101500-1a2b3c4d', now() - interval '30 minutes', now() - interval '20 minutes',
  now() - interval '40 minutes', null, '{"url": "https://x/y.mp4"}', '22222222-2222-2222-2222-222222222222',
  null, 'https://x/y.mp4'),
 ('33333333-3333-3333-3333-333333333333', 'travel_orchestrator', '{}', 'In Progress', null,
  'gpu-20250912_101500-1a2b3c4d', now() - interval '5 minutes', null, now() - interval '6 minutes',
  null, null, null, null, null),
 ('44444444-4444-4444-4444-444444444444', 'wan_2_2_i2v', '{"image": "s3://i"}', 'Queued', 2, null, null, null,
  now() - interval '2 minutes', 'previous attempt died', null, null,
  '11111111-1111-1111-1111-111111111111', null);
"""

# The app's tables the GPU claim reads (banodoco/reigh-app: users, projects, task_types and
# get_task_run_type as 20250912001000_enforce_eligibility_in_count_functions.sql defines it).
APP_DDL = """
create table public.users (id uuid primary key, credits numeric default 0, settings jsonb);
create table public.projects (id uuid primary key, user_id uuid not null references public.users(id));
create table public.task_types (
    id uuid primary key default gen_random_uuid(), name text not null unique,
    run_type text not null default 'gpu', is_active boolean default true);
create function public.get_task_run_type(p_task_type text) returns text language plpgsql as $$
declare run_type_result text;
begin
    select run_type into run_type_result from task_types where name = p_task_type and is_active = true;
    return coalesce(run_type_result, 'gpu');
end $$;
"""


ORIGINAL_TASK_COLUMNS = (
    "id, task_type, params, status, attempts, worker_id, generation_started_at, generation_processed_at, "
    "created_at, updated_at, error_message, result_data, project_id, dependant_on, output_location"
)
ORIGINAL_WORKER_COLUMNS = "id, instance_type, status, last_heartbeat, metadata, created_at"


def dump(conn: psycopg.Connection[Any], table: str, columns: str) -> list[dict[str, Any]]:
    return conn.execute(f"select {columns} from {table} order by id").fetchall()


def test_onto_production_schema_with_rows(empty_url: str) -> None:
    with connect(empty_url) as conn:
        conn.execute(PRODUCTION_DDL.encode())
        conn.execute(PRODUCTION_ROWS.encode())
        tasks_before = dump(conn, "tasks", ORIGINAL_TASK_COLUMNS)
        workers_before = dump(conn, "workers", ORIGINAL_WORKER_COLUMNS)

    applied = apply_migrations(empty_url)
    assert applied == [m.filename for m in discover()]
    assert apply_migrations(empty_url) == []

    with connect(empty_url) as conn:
        # The text status became the enum task_status: the same values, read back as text.
        assert (
            conn.execute("select pg_typeof(status)::text as t from tasks limit 1").fetchone()["t"]
            == "task_status"
        )  # type: ignore[index]
        assert (
            dump(conn, "tasks", ORIGINAL_TASK_COLUMNS.replace("status,", "status::text as status,"))
            == tasks_before
        )
        assert dump(conn, "workers", ORIGINAL_WORKER_COLUMNS) == workers_before
        added = conn.execute(
            "select id, status_changed_at = created_at as backfilled, activated_at, orchestrator_prefix from workers"
        ).fetchall()
        assert all(r["backfilled"] and r["activated_at"] is None for r in added)
        # Production's grants stay as they were; ours give anon nothing despite the default privileges.
        ok = conn.execute(
            "select has_function_privilege('anon', 'worker_legacy_ping()', 'EXECUTE') as ok"
        ).fetchone()
        assert ok["ok"] is True  # type: ignore[index]
        for fn in (
            "orch_snapshot(text)",
            "func_worker_heartbeat_with_logs(text,integer,integer,jsonb,uuid,text)",
            "claim_next_task_service_role(text,boolean,text,boolean,integer)",
        ):
            ok = conn.execute("select has_function_privilege('anon', %s, 'EXECUTE') as ok", (fn,)).fetchone()
            assert ok["ok"] is False, fn  # type: ignore[index]
        for table in ("orchestrator_events", "orchestrator_lease", "orchestrator_fleet_status"):
            ok = conn.execute("select has_table_privilege('anon', %s, 'SELECT') as ok", (table,)).fetchone()
            assert ok["ok"] is False, table  # type: ignore[index]

    # The contract works on production's rows.
    db = Database(PostgresTransport(empty_url, max_size=2))
    try:
        snap = db.snapshot(prefix="gpu")
        workers = {w["id"]: w for w in snap["workers"]}
        assert set(workers) == {"gpu-20250912_101500-1a2b3c4d", "gpu-20250912_100000-0badf00d"}
        busy = workers["gpu-20250912_101500-1a2b3c4d"]
        assert busy["running_task_ids"] == ["33333333-3333-3333-3333-333333333333"]
        assert busy["oldest_stuckable_started_at"] is None  # the running task is an _orchestrator parent
        assert busy["last_completion_at"] is not None and busy["metadata"]["runpod_id"] == "abc123"
        assert snap["queue"] == {**snap["queue"], "claimable": 1, "queued_total": 1, "running": 1}

        token = db.lease_acquire("test", 30)["token"]
        result = db.requeue_worker_tasks(token, "gpu-20250912_101500-1a2b3c4d", "test")
        # attempts was NULL in production's row: counted as 0, now 1.
        assert result == {"requeued": ["33333333-3333-3333-3333-333333333333"], "failed": []}
    finally:
        db.close()
    # The real worker's claim (ours: this database had none), oldest first: 3333 (requeued above), then
    # 4444, whose old single-uuid dependant_on names 1111, which is Complete.
    worker = RealWorkerSQL(empty_url)
    first = worker.claim("gpu-20250912_101500-1a2b3c4d")
    second = worker.claim("gpu-20250912_101500-1a2b3c4d")
    assert [first and first["task_id"], second and second["task_id"]] == [
        "33333333-3333-3333-3333-333333333333",
        "44444444-4444-4444-4444-444444444444",
    ]
    row = worker.set_status(
        "44444444-4444-4444-4444-444444444444", "Queued", error_details="boom", clear_worker=True
    )
    assert (row["status"], row["attempts"]) == ("Failed", 3)  # attempts was 2: the limit, dead-lettered


# -- the runner's bookkeeping -----------------------------------------------------------------------


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(default_directory(), target)
    return target


def test_changed_applied_file_is_refused(empty_url: str, migrations_copy: Path) -> None:
    apply_migrations(empty_url, migrations_copy)
    first = sorted(migrations_copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
    (migrations_copy / "29991231235959_later.sql").write_text("create table later_table (id int);")
    with pytest.raises(errors.MigrationError, match=f"{first.name} changed since it was applied"):
        apply_migrations(empty_url, migrations_copy)
    with connect(empty_url) as conn:
        assert conn.execute("select to_regclass('public.later_table') as t").fetchone()["t"] is None  # type: ignore[index]


def test_vanished_applied_file_is_refused(empty_url: str, migrations_copy: Path) -> None:
    apply_migrations(empty_url, migrations_copy)
    last = sorted(migrations_copy.glob("*.sql"))[-1]
    last.unlink()
    with pytest.raises(errors.MigrationError, match="no longer in the migrations directory"):
        apply_migrations(empty_url, migrations_copy)


def test_new_file_is_applied_alone_and_a_failing_one_rolls_back(
    empty_url: str, migrations_copy: Path
) -> None:
    apply_migrations(empty_url, migrations_copy)
    (migrations_copy / "29991231235958_good.sql").write_text("create table good_table (id int);")
    (migrations_copy / "29991231235959_bad.sql").write_text(
        "create table half_done (id int);\nselect no_such_function();\n"
    )
    with pytest.raises(errors.MigrationError, match=r"29991231235959_bad\.sql failed and was rolled back"):
        apply_migrations(empty_url, migrations_copy)
    with connect(empty_url) as conn:
        assert conn.execute("select to_regclass('public.good_table') as t").fetchone()["t"] is not None  # type: ignore[index]
        assert conn.execute("select to_regclass('public.half_done') as t").fetchone()["t"] is None  # type: ignore[index]
        names = [
            r["filename"]
            for r in conn.execute("select filename from orchestrator_schema_migrations").fetchall()
        ]
    assert "29991231235958_good.sql" in names and "29991231235959_bad.sql" not in names
    (migrations_copy / "29991231235959_bad.sql").write_text("create table half_done (id int);\n")
    assert apply_migrations(empty_url, migrations_copy) == ["29991231235959_bad.sql"]


def test_badly_named_file_is_refused(migrations_copy: Path, empty_url: str) -> None:
    (migrations_copy / "add_things.sql").write_text("select 1;")
    with pytest.raises(errors.MigrationError, match=r"YYYYMMDDHHMMSS_name\.sql"):
        apply_migrations(empty_url, migrations_copy)


def test_unreachable_database_is_a_migration_error(pg: TempPostgres) -> None:
    with pytest.raises(errors.MigrationError, match="cannot connect"):
        apply_migrations(pg.url("no_such_database"))


# -- upgrading a database our earlier migrations built ------------------------------------------------


@pytest.fixture
def earlier_migrations(tmp_path: Path) -> Path:
    """The migrations as they were before the production shape (tasks.status text, no guards)."""
    target = tmp_path / "earlier"
    target.mkdir()
    for migration in discover():
        if migration.filename < "20261206":
            shutil.copy(migration.path, target / migration.filename)
    return target


def test_upgrading_a_database_the_earlier_migrations_built(empty_url: str, earlier_migrations: Path) -> None:
    apply_migrations(empty_url, earlier_migrations)
    db = Database(PostgresTransport(empty_url, max_size=2))
    try:
        token = int(db.lease_acquire("leader", 60)["token"])
        db.register_worker(token, "gpu-old", "RTX 4090", {"runpod_id": "pod-old"})
        db.transition_worker(token, "gpu-old", "initializing", "pod_ready")
        with connect(empty_url) as conn:
            conn.execute(
                "insert into tasks (task_type, status, worker_id) values ('t', 'In Progress', 'gpu-old')"
            )
        assert apply_migrations(empty_url) == [m.filename for m in discover() if m.filename >= "20261206"]
        with connect(empty_url) as conn:
            row = conn.execute(
                "select w.orchestrator_managed, pg_typeof(t.status)::text as t from workers w join tasks t on t.worker_id = w.id"
            ).fetchone()
            assert row == {"orchestrator_managed": True, "t": "task_status"}
            # The guard now holds on the row registered before it existed.
            conn.execute("update workers set status = 'active' where id = 'gpu-old'")
            assert conn.execute("select status from workers").fetchone() == {"status": "initializing"}
        assert db.snapshot()["queue"]["running"] == 1
    finally:
        db.close()


def test_a_redefined_claimable_view_stops_the_enum_conversion_clearly(
    empty_url: str, earlier_migrations: Path
) -> None:
    apply_migrations(empty_url, earlier_migrations)
    with connect(empty_url) as conn:
        conn.execute(
            "create or replace view orchestrator_claimable_tasks as select t.id, t.task_type, t.created_at "
            "from tasks t where t.status = 'Queued' and t.task_type <> 'held'"
        )
    with pytest.raises(errors.MigrationError, match="orchestrator_claimable_tasks was redefined"):
        apply_migrations(empty_url)
    with connect(empty_url) as conn:  # nothing changed: still text, the view still the operator's
        assert conn.execute(
            "select format_type(atttypid, atttypmod) as t from pg_attribute where attrelid = 'tasks'::regclass and attname = 'status'"
        ).fetchone() == {"t": "text"}
        assert (
            "held"
            in conn.execute("select pg_get_viewdef('orchestrator_claimable_tasks') as d").fetchone()["d"]
        )  # type: ignore[index]


def test_on_the_apps_database_only_what_a_gpu_claim_can_take_is_claimable(empty_url: str) -> None:
    """The default view counted every Queued task. A task of a user without credits or with cloud
    generation off, which the app never hands to a GPU worker, asked for a pod for as long as it stayed
    Queued (the pod idled until drained, and the next tick asked again); an API task asked for one too."""
    users = {name: str(uuid.uuid4()) for name in ("rich", "broke", "local", "busy", "odd")}
    with connect(empty_url) as conn:
        conn.execute(PRODUCTION_DDL.encode())
        conn.execute(APP_DDL.encode())
        settings = {
            "local": {"ui": {"generationMethods": {"inCloud": False}}},
            "odd": {"ui": {"generationMethods": {"inCloud": "maybe"}}},
        }
        for name, uid in users.items():
            conn.execute(
                "insert into users (id, credits, settings) values (%s, %s, %s)",
                (uid, 0 if name == "broke" else 10, json.dumps(settings.get(name, {}))),
            )
            conn.execute("insert into projects (id, user_id) values (%s, %s)", (uid, uid))
        conn.execute("insert into task_types (name, run_type) values ('qwen_image', 'api')")

        def task(user: str, task_type: str = "wan_2_2_t2v", status: str = "Queued") -> None:
            conn.execute(
                "insert into tasks (task_type, params, status, project_id) values (%s, '{}', %s, %s)",
                (task_type, status, users[user]),
            )

        for _ in range(5):
            task("busy", status="In Progress")
        task("busy", task_type="travel_orchestrator", status="In Progress")  # parents do not count
        task("rich")
        task("rich", task_type="qwen_image")  # an API task: another worker's
        task("rich", task_type="never_registered")  # no task_types row: gpu, as the app reads it
        task("broke")
        task("local")
        task("busy")
        task("odd")  # a malformed setting: the app's cast fails; counted as allowing the cloud

    apply_migrations(empty_url)
    with connect(empty_url) as conn:
        queue = conn.execute("select orch_snapshot()::jsonb -> 'queue' as q").fetchone()["q"]  # type: ignore[index]
        assert (queue["claimable"], queue["queued_total"]) == (3, 7)
        assert {t["task_type"]: t["count"] for t in queue["claimable_by_type"]} == {
            "wan_2_2_t2v": 2,
            "never_registered": 1,
        }
        # The dashboard's reader (the service role, the view running with its rights) reads it too.
        with conn.transaction():
            conn.execute("set local role service_role")
            n = conn.execute("select count(*) as n from orchestrator_claimable_tasks").fetchone()["n"]  # type: ignore[index]
        assert n == 3
        # Two more credits and the broke user's task is claimable: the view reads the rows as they are.
        conn.execute("update users set credits = 2 where id = %s", (users["broke"],))
        queue = conn.execute("select orch_snapshot()::jsonb -> 'queue' as q").fetchone()["q"]  # type: ignore[index]
        assert queue["claimable"] == 4

        # The arrivals and the durations are the GPU claim's too: an API task, claimed by another
        # worker within seconds, read as GPU work arriving, and its seconds as a GPU task's duration.
        for task_type, seconds in (("qwen_image", 8), ("wan_2_2_t2v", 300)):
            conn.execute(
                "insert into tasks (task_type, params, status, project_id, generation_started_at,"
                " generation_processed_at) values (%s, '{}', 'Complete', %s,"
                " now() - make_interval(secs => %s), now())",
                (task_type, users["rich"], seconds),
            )
        snap = conn.execute("select orch_snapshot()::jsonb as s").fetchone()["s"]  # type: ignore[index]
        # 15 tasks created just now, two of them of the API type.
        assert [a["count"] for a in snap["arrivals"]] == [13, 13]
        assert [t["task_type"] for t in snap["task_stats"]["types"]] == ["wan_2_2_t2v"]
