"""``orchestrator migrate``: apply the migrations to a PostgreSQL database, in order, once.

Part of the database layer (docs/database.md). The SQL lives in one place, the top-level ``migrations/``
of the source tree, which is what ``supabase db push`` users copy; ``orchestrator/adapters/db/migrations`` is a
symbolic link to it, so the wheel carries the same files inside the package and an installed
``orchestrator migrate`` works from any directory. This runner is for direct Postgres (``DATABASE_URL``),
the tests' template database and the demo. Each file runs in its own transaction and is recorded in
``orchestrator_schema_migrations`` with its SHA-256, so a second run is a no-op, and a file that changed
after it was applied stops the run with :class:`~orchestrator.core.errors.MigrationError` instead of silently
diverging from production. Concurrent runners serialise on an advisory lock.

After applying anything it sends ``NOTIFY pgrst, 'reload schema'``: PostgREST (Supabase's REST layer)
serves functions and tables from a schema cache that it reloads on that notification (PostgREST docs,
"Schema Cache" and "Listener"), so without it a function a migration just created is not callable over
``/rest/v1/rpc/...`` until PostgREST restarts. ``supabase db push`` users send it themselves
(docs/operations.md).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
import structlog

from orchestrator.core.errors import MigrationError

log = structlog.get_logger(__name__)

# Supabase CLI naming: <14-digit timestamp>_<name>.sql
MIGRATION_NAME = re.compile(r"^\d{14}_[A-Za-z0-9_]+\.sql$")
# An arbitrary constant shared by every runner, so two `orchestrator migrate` never interleave.
_ADVISORY_LOCK_KEY = 0x6F7263685F6D6967  # "orch_mig"

_LEDGER_DDL = """
create table if not exists public.orchestrator_schema_migrations (
    filename text primary key,
    sha256 text not null,
    applied_at timestamptz not null default now()
);
alter table public.orchestrator_schema_migrations enable row level security;
"""


@dataclass(frozen=True)
class Migration:
    filename: str
    path: Path
    sha256: str

    def read(self) -> str:
        return self.path.read_text(encoding="utf-8")


PACKAGED = Path(__file__).resolve().parent / "migrations"


def default_directory() -> Path:
    """Where the migrations are: ``ORCHESTRATOR_MIGRATIONS_DIR`` when set (a deployment's own copy),
    else the package's ``orchestrator/adapters/db/migrations`` (the top-level ``migrations/`` in a checkout, its
    copy in an installed wheel)."""
    configured = os.environ.get("ORCHESTRATOR_MIGRATIONS_DIR")
    if configured:
        return Path(configured)
    return PACKAGED


def discover(directory: Path | None = None) -> list[Migration]:
    """The migration files of ``directory`` in application order (their names sort by timestamp)."""
    root = Path(directory) if directory is not None else default_directory()
    if not root.is_dir():
        hint = (
            ""
            if directory is not None or os.environ.get("ORCHESTRATOR_MIGRATIONS_DIR")
            else " (this installation of the package lacks its migrations: reinstall it, or point "
            "ORCHESTRATOR_MIGRATIONS_DIR at a copy of the source tree's migrations/)"
        )
        raise MigrationError(f"migrations directory not found: {root}{hint}")
    found: list[Migration] = []
    for path in sorted(root.glob("*.sql")):
        if not MIGRATION_NAME.match(path.name):
            raise MigrationError(f"migration file name {path.name!r} does not match YYYYMMDDHHMMSS_name.sql")
        found.append(Migration(path.name, path, hashlib.sha256(path.read_bytes()).hexdigest()))
    return found


def applied(conn: psycopg.Connection) -> dict[str, str]:
    """filename -> sha256 of every migration recorded as applied."""
    rows = conn.execute("select filename, sha256 from public.orchestrator_schema_migrations").fetchall()
    return {str(name): str(digest) for name, digest in rows}


def apply_migrations(url: str, directory: Path | str | None = None) -> list[str]:
    """Apply the pending migrations to the database at ``url``; return the file names applied now.

    Raises :class:`MigrationError` if an applied file has changed, a recorded file has disappeared, or a
    file fails (that file's transaction is rolled back; the files before it stay applied).
    """
    migrations = discover(Path(directory) if directory is not None else None)
    done: list[str] = []
    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        raise MigrationError(f"cannot connect to the database to migrate: {exc}") from exc
    with conn:
        conn.execute("select pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
        try:
            with conn.transaction():
                conn.execute(_LEDGER_DDL)
            recorded = applied(conn)
            _check_unchanged(migrations, recorded)
            for migration in migrations:
                if migration.filename in recorded:
                    continue
                _apply_one(conn, migration)
                done.append(migration.filename)
        finally:
            if done:
                _reload_rest_schema(conn)
            conn.execute("select pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
    log.info("migrations_applied", applied=done, total=len(migrations))
    return done


def _reload_rest_schema(conn: psycopg.Connection) -> None:
    """Tell PostgREST to reload its schema cache (its documented channel and payload).

    Sent after every run that applied something, also one that stopped at a failing file: the files
    before it are committed. Delivered on commit (autocommit here); a database without PostgREST
    listening simply drops it.
    """
    try:
        conn.execute("notify pgrst, 'reload schema'")
    except psycopg.Error as exc:  # the migrations are applied; only the REST layer's cache waits
        log.warning("rest_schema_reload_not_sent", error=str(exc)[:300])
    else:
        log.info("rest_schema_reload_sent", channel="pgrst")


def _check_unchanged(migrations: list[Migration], recorded: dict[str, str]) -> None:
    problems: list[str] = []
    on_disk = {m.filename: m for m in migrations}
    for name, digest in sorted(recorded.items()):
        migration = on_disk.get(name)
        if migration is None:
            problems.append(f"{name} was applied but is no longer in the migrations directory")
        elif migration.sha256 != digest:
            problems.append(
                f"{name} changed since it was applied (sha256 {digest[:12]}... now {migration.sha256[:12]}...);"
                " write a new migration instead of editing an applied one"
            )
    if problems:
        raise MigrationError("refusing to migrate: " + "; ".join(problems))


def _apply_one(conn: psycopg.Connection, migration: Migration) -> None:
    text = migration.read()
    try:
        with conn.transaction():
            # A file is a script of many statements: send it whole over the simple query protocol.
            conn.execute(text.encode("utf-8"), prepare=False)
            conn.execute(
                "insert into public.orchestrator_schema_migrations (filename, sha256) values (%s, %s)",
                (migration.filename, migration.sha256),
            )
    except psycopg.Error as exc:
        diag = exc.diag
        where = f" at: {diag.context.strip().splitlines()[0]}" if diag and diag.context else ""
        raise MigrationError(
            f"migration {migration.filename} failed and was rolled back: "
            f"{(diag.message_primary if diag else None) or exc}{where}"
        ) from exc
    log.info("migration_applied", filename=migration.filename, sha256=migration.sha256[:12])
