"""The embedded default: everything the daemon talks to, on this machine, with no account anywhere.

A throwaway PostgreSQL with the migrations applied, the Supabase stand-in in front of it (so the
default transport, Supabase's REST API, is the one exercised, and the worker finds the heartbeat RPC,
the table endpoints and the app's Edge Functions where the real one looks for them:
``{SUPABASE_URL}/rest/v1/...`` and ``{SUPABASE_URL}/functions/v1/...``), the Runpod emulator whose pods
are real sshd sandboxes running the simulated worker, and a fresh SSH key pair. ``orchestrator demo``,
the end-to-end tests and the benchmarks all stand on this, and ``settings()`` gives the configuration
a user would write to point the daemon at it.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from orchestrator.adapters.db.migrate import apply_migrations
from orchestrator.core import config
from orchestrator.standins.emulator import EmulatorServer
from orchestrator.standins.emulator.admin import EmulatorAdmin
from orchestrator.standins.pg import TempPostgres
from orchestrator.standins.postgrest.server import PostgrestServer

DEMO_API_KEY = "rpa_demo_emulator_key"


def make_keypair(directory: Path) -> tuple[Path, Path]:
    """An ed25519 key pair for logging into pods (ssh-keygen, as an operator would make one)."""
    private = directory / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "orchestrator-demo", "-f", str(private)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return private, private.with_suffix(".pub")


class Stack:
    """Starts and stops the embedded default; every part is torn down by ``stop()``."""

    def __init__(
        self, *, speed: float = 50.0, state_dir: Path | None = None, pg: TempPostgres | None = None
    ) -> None:
        self.speed = speed
        self._own_dir = state_dir is None
        self.dir = Path(state_dir or tempfile.mkdtemp(prefix="orchestrator-stack-"))
        self._own_pg = pg is None
        self.pg = pg
        self.database_url = ""
        self.service_role_key = "sb_service_" + secrets.token_hex(16)
        self.anon_key = "sb_anon_" + secrets.token_hex(16)
        self.rest: PostgrestServer | None = None
        self.supabase_url = ""
        self.emulator: EmulatorServer | None = None
        self.runpod_url = ""
        self.private_key = self.public_key = Path()

    def start(self) -> Stack:
        try:
            if self.pg is None:
                self.pg = TempPostgres().start()
            self.database_url = self.pg.create_database(f"orch_{uuid.uuid4().hex[:10]}")
            apply_migrations(self.database_url)
            self.rest = PostgrestServer(self.database_url, self.service_role_key, self.anon_key)
            self.supabase_url = self.rest.start()
            self.emulator = EmulatorServer(speed=self.speed, state_dir=self.dir / "emulator")
            self.runpod_url = self.emulator.start()
            self.private_key, self.public_key = make_keypair(self.dir)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def edge_url(self) -> str:
        """Where the worker's Edge Function calls go: ``{SUPABASE_URL}/functions/v1`` (the real worker
        builds ``{supabase_url}/functions/v1/<name>`` from its ``--supabase-url``)."""
        return f"{self.supabase_url}/functions/v1" if self.supabase_url else ""

    @property
    def admin(self) -> EmulatorAdmin:
        return EmulatorAdmin(self.runpod_url)

    def environ(self, **overrides: Any) -> dict[str, str]:
        """The environment a user would set to run the daemon against this stack."""
        env = {
            "RUNPOD_API_KEY": DEMO_API_KEY,
            "RUNPOD_API_BASE_URL": self.runpod_url,
            "RUNPOD_STORAGE_NAME": "workspace",
            "RUNPOD_SSH_PRIVATE_KEY_PATH": str(self.private_key),
            "RUNPOD_SSH_PUBLIC_KEY_PATH": str(self.public_key),
            "SUPABASE_URL": self.supabase_url,
            "SUPABASE_SERVICE_ROLE_KEY": self.service_role_key,
            "SUPABASE_ANON_KEY": self.anon_key,
            "DATABASE_URL": self.database_url,
            "DB_BACKEND": "supabase",
        }
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def settings(self, **overrides: Any) -> config.Settings:
        return config.load_settings(self.environ(**overrides), env_file=None)

    def sql(
        self, query: str, params: Mapping[str, Any] | tuple[Any, ...] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement on the stack's database (tests and the demo's task stream)."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    def enqueue(
        self,
        count: int,
        *,
        duration_sec: float = 2.0,
        task_type: str = "generate_video",
        params: Mapping[str, Any] | None = None,
    ) -> list[str]:
        import json

        body = json.dumps({"duration_sec": duration_sec, **dict(params or {})})
        rows = self.sql(
            "INSERT INTO tasks (task_type, params, status) "
            "SELECT %s, %s::jsonb, 'Queued'::task_status FROM generate_series(1, %s) RETURNING id::text",
            (task_type, body, count),
        )
        return [r[0] for r in rows]

    def stop(self) -> None:
        for part in (self.emulator, self.rest):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()
        self.emulator = None
        self.rest = None
        if self.pg is not None and self._own_pg:
            self.pg.stop()
            self.pg = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
