"""`orchestrator doctor`'s migration check on a database whose schema came from `supabase db push`: the
CLI's ledger (supabase_migrations.schema_migrations, one row per file version) stands in for ours."""

from __future__ import annotations

import psycopg

from orchestrator import setup_commands
from orchestrator.adapters.db import migrate
from orchestrator.core import config


def _check(database_url: str) -> setup_commands.Check:
    settings = config.load_settings({"DATABASE_URL": database_url}, env_file=None)
    return setup_commands._doctor_migrations(settings, client=None)


def _as_if_pushed_by_the_cli(database_url: str, skip: str | None = None) -> None:
    """Our ledger gone, the CLI's in its place, as `supabase db push` leaves a database."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("drop table public.orchestrator_schema_migrations")
        conn.execute("create schema supabase_migrations")
        conn.execute(
            "create table supabase_migrations.schema_migrations "
            "(version text not null primary key, statements text[], name text)"
        )
        for m in migrate.discover():
            version, _, rest = m.filename.partition("_")
            if m.filename != skip:
                conn.execute(
                    "insert into supabase_migrations.schema_migrations (version, name) values (%s, %s)",
                    (version, rest.removesuffix(".sql")),
                )


def test_a_database_pushed_with_the_supabase_cli_is_up_to_date(database_url: str) -> None:
    _as_if_pushed_by_the_cli(database_url)
    check = _check(database_url)
    assert check.status == "ok", check.detail
    assert "Supabase CLI" in check.detail


def test_a_file_the_cli_never_pushed_is_named(database_url: str) -> None:
    newest = migrate.discover()[-1].filename
    _as_if_pushed_by_the_cli(database_url, skip=newest)
    check = _check(database_url)
    assert check.status == "FAIL"
    assert newest in check.detail and "supabase db push" in check.detail


def test_no_ledger_at_all_is_a_warning(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("drop table public.orchestrator_schema_migrations")
    check = _check(database_url)
    assert check.status == "warn", check.detail
    assert "no ledger" in check.detail


def test_our_own_ledger_still_decides_when_present(database_url: str) -> None:
    assert _check(database_url).status == "ok"
    newest = migrate.discover()[-1].filename
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("delete from orchestrator_schema_migrations where filename = %s", (newest,))
    check = _check(database_url)
    assert check.status == "FAIL" and newest in check.detail
