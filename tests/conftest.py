"""Shared fixtures. The throwaway Postgres lives here; each stand-in's fixtures live in tests/plugins/.

``pg`` is one PostgreSQL server per test session (``orchestrator.standins.pg.TempPostgres``); ``template_url``
is a database with every migration applied, which ``database_url`` clones per test (CREATE DATABASE ...
TEMPLATE, a file copy: tens of milliseconds), so each test starts from the same clean schema and no
test sees another's rows. ``db`` is the ``Database`` facade over the direct Postgres transport.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import structlog

from orchestrator.adapters.db.base import Database
from orchestrator.adapters.db.migrate import apply_migrations
from orchestrator.adapters.db.postgres import PostgresTransport
from orchestrator.standins.pg import TempPostgres
from orchestrator.standins.stack import Stack

pytest_plugins = ["tests.plugins.supabase", "tests.plugins.emulator", "tests.plugins.sandbox"]

TEMPLATE_DB = "orchestrator_template"


@pytest.fixture(autouse=True)
def _structlog_as_it_was() -> Iterator[None]:
    """A test that runs a command (``cli.main``) configures structlog for that process, a level filter
    included, which ``structlog.testing.capture_logs`` does not replace: a later test in the same worker
    would capture nothing. Each test leaves the configuration as it found it."""
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.fixture(scope="session")
def pg() -> Iterator[TempPostgres]:
    server = TempPostgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template_url(pg: TempPostgres) -> str:
    url = pg.create_database(TEMPLATE_DB)
    apply_migrations(url)
    return url


@pytest.fixture
def database_url(pg: TempPostgres, template_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = pg.create_database(name, template=TEMPLATE_DB)
    try:
        yield url
    finally:
        pg.drop_database(name)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(PostgresTransport(database_url, max_size=8))
    try:
        yield database
    finally:
        database.close()


@contextmanager
def embedded_stack(pg: TempPostgres, speed: float) -> Iterator[Stack]:
    """The embedded stack (a migrated database, the PostgREST stand-in, the Runpod emulator) on the
    session's server, for tests that run the CLI or the daemon against it; its database is dropped after."""
    s = Stack(pg=pg, speed=speed)
    s.start()
    dbname = psycopg.conninfo.conninfo_to_dict(s.database_url).get("dbname")
    try:
        yield s
    finally:
        s.stop()
        if dbname:
            pg.drop_database(str(dbname))
