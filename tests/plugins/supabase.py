"""Pytest fixtures for Supabase's REST layer: the PostgREST stand-in and the Database over it.

``postgrest`` is a running ``orchestrator.sim.postgrest.PostgrestServer`` over the test's own database
(``database_url`` from tests/conftest.py, migrations applied), with freshly generated keys
(``postgrest.service_role_key`` / ``postgrest.anon_key``). ``supabase_db`` is the ``Database`` facade
over ``SupabaseTransport`` (supabase-py) against it, with short retry waits so fault tests stay fast.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.db.base import Database
from orchestrator.db.supabase import SupabaseTransport
from orchestrator.sim.postgrest import PostgrestServer, generate_keys


@pytest.fixture
def postgrest(database_url: str) -> Iterator[PostgrestServer]:
    keys = generate_keys()
    server = PostgrestServer(database_url, keys.service_role, keys.anon, pool_size=8)
    server.start()
    try:
        yield server
    finally:
        # Before the database is dropped: the server's pool holds connections to it.
        server.stop()


def make_supabase_transport(
    server: PostgrestServer, *, retry_attempts: int = 5, retry_deadline_sec: float = 10.0
) -> SupabaseTransport:
    """A transport against ``server`` with test-sized retry waits (milliseconds, not seconds)."""
    assert server.base_url is not None, "start the server first"
    return SupabaseTransport(
        server.base_url,
        server.service_role_key,
        timeout_sec=10.0,
        retry_attempts=retry_attempts,
        retry_initial_sec=0.01,
        retry_max_sec=0.05,
        retry_deadline_sec=retry_deadline_sec,
    )


@pytest.fixture
def supabase_db(postgrest: PostgrestServer) -> Iterator[Database]:
    database = Database(make_supabase_transport(postgrest))
    try:
        yield database
    finally:
        database.close()
