"""The REST layer sees what was migrated: PostgREST's schema cache, and ``orchestrator migrate``'s NOTIFY.

PostgREST serves functions and tables from a schema cache it refills only at start, when its listener
reconnects, and on ``NOTIFY pgrst, 'reload schema'`` (docs.postgrest.org, "Schema Cache" and "Listener").
The stand-in used to read ``pg_proc`` on every call, kinder than the real thing: a function a migration
had just created was callable at once, so nothing showed that ``orchestrator migrate`` must ask for the
reload. Real PostgreSQL, the stand-in over HTTP, supabase-py (the daemon's REST transport), and the real
``orchestrator migrate`` command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from orchestrator.adapters.db.base import Database
from orchestrator.adapters.db.migrate import default_directory
from orchestrator.core import errors
from orchestrator.standins.postgrest.server import PostgrestServer
from tests.plugins.supabase import make_supabase_transport

PROBE_FN = """
create function public.orch_rest_probe(p_x integer) returns integer language sql immutable as 'select p_x * 2';
revoke all on function public.orch_rest_probe(integer) from public, anon, authenticated;
grant execute on function public.orch_rest_probe(integer) to service_role;
"""


@pytest.fixture
def rest(postgrest: PostgrestServer) -> Iterator[Database]:
    database = Database(make_supabase_transport(postgrest, retry_attempts=1))
    try:
        yield database
    finally:
        database.close()


def _rpc(server: PostgrestServer, fn: str, body: dict[str, Any]) -> httpx.Response:
    key = server.service_role_key
    headers = {"apikey": key, "Authorization": f"Bearer {key}"}
    return httpx.post(f"{server.base_url}/rest/v1/rpc/{fn}", json=body, headers=headers, timeout=10)


def test_a_function_created_without_a_reload_is_unknown_until_the_notification(
    postgrest: PostgrestServer, rest: Database, database_url: str
) -> None:
    reloads = postgrest.schema_reloads
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(PROBE_FN)
    answer = _rpc(postgrest, "orch_rest_probe", {"p_x": 21})
    assert answer.status_code == 404 and answer.json()["code"] == "PGRST202", answer.text
    assert "schema cache" in answer.json()["message"]
    with pytest.raises(errors.InvalidArgument):
        rest._call("orch_rest_probe", p_x=21)
    # Another payload (PostgREST's configuration reload) does not refill the schema cache.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("notify pgrst, 'reload config'")
        conn.execute("notify pgrst, 'reload schema'")
    assert postgrest.wait_for_reload(reloads, timeout=10)
    assert postgrest.schema_reloads == reloads + 1
    assert rest._call("orch_rest_probe", p_x=21) == 42


def test_orchestrator_migrate_sends_the_reload_and_the_new_function_is_callable_at_once(
    postgrest: PostgrestServer, rest: Database, database_url: str, tmp_path: Path
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(default_directory(), migrations)
    (migrations / "29991231235959_rest_probe.sql").write_text(PROBE_FN)
    with pytest.raises(errors.InvalidArgument):
        rest._call("orch_rest_probe", p_x=4)
    reloads = postgrest.schema_reloads
    env = {**os.environ, "ORCHESTRATOR_MIGRATIONS_DIR": str(migrations)}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("orchestrator")), "migrate", "--database-url", database_url],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "applied 29991231235959_rest_probe.sql" in done.stdout
    # The command has returned: the notification was sent at its commit; the stand-in's listener
    # refills the cache when it arrives, and requests wait for the refill.
    assert postgrest.wait_for_reload(reloads, timeout=10)
    assert rest._call("orch_rest_probe", p_x=4) == 8
    # Nothing applied: no reload asked for.
    again = subprocess.run(
        [str(Path(sys.executable).with_name("orchestrator")), "migrate", "--database-url", database_url],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "nothing to apply" in again.stdout
    assert not postgrest.wait_for_reload(reloads + 1, timeout=1.0)


def test_table_columns_come_from_the_cache_too(postgrest: PostgrestServer, database_url: str) -> None:
    key = postgrest.service_role_key
    headers = {"apikey": key, "Authorization": f"Bearer {key}", "Prefer": "return=representation"}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("insert into workers (id, instance_type, status) values ('w-cache', 'x', 'active')")
        conn.execute("alter table workers add column cache_probe text")
    url = f"{postgrest.base_url}/rest/v1/workers?id=eq.w-cache"
    stale = httpx.patch(url, json={"cache_probe": "x"}, headers=headers, timeout=10)
    assert stale.status_code == 400 and stale.json()["code"] == "PGRST204", stale.text
    reloads = postgrest.schema_reloads
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("notify pgrst")  # an empty payload reloads everything
    assert postgrest.wait_for_reload(reloads, timeout=10)
    fresh = httpx.patch(url, json={"cache_probe": "x"}, headers=headers, timeout=10)
    assert fresh.status_code == 200 and fresh.json()[0]["cache_probe"] == "x", fresh.text


def test_a_lost_listener_reconnects_and_reloads(
    postgrest: PostgrestServer, rest: Database, database_url: str
) -> None:
    """PostgREST refills the cache whenever its listener connection is re-established (its connection
    worker obtains "a healthy connection to pg and an up-to-date schema cache")."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(PROBE_FN)
        reloads = postgrest.schema_reloads
        killed = conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = current_database() and query ilike 'listen%%'"
        ).fetchall()
        assert killed, "the listener's connection was not found"
    assert postgrest.wait_for_reload(reloads, timeout=20)
    assert rest._call("orch_rest_probe", p_x=5) == 10
