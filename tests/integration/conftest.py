"""Fixtures shared by the integration tests (the database ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from orchestrator.adapters.db.base import Database
from orchestrator.standins.pg import TempPostgres
from orchestrator.standins.stack import Stack
from tests.conftest import embedded_stack
from tests.integration.test_runpod_failures import Stub


@pytest.fixture
def raw(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A plain autocommit session: the operator's psql, or a writer that is not one of our functions."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def token(db: Database) -> int:
    """The fencing token of a freshly acquired leader lease, for the functions that demand one."""
    lease = db.lease_acquire("leader-1", 60)
    assert lease["acquired"] is True
    return int(lease["token"])


@pytest.fixture
def stack(pg: TempPostgres) -> Iterator[Stack]:
    """The embedded stack at 500x, for tests that run the CLI against it."""
    with embedded_stack(pg, 500.0) as s:
        yield s


@pytest.fixture
def stub() -> Iterator[Stub]:
    """A tiny HTTP server answering fixed bodies where Runpod would (``test_runpod_failures.Stub``)."""
    s = Stub()
    try:
        yield s
    finally:
        s.stop()
