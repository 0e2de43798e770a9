"""Installable like a Python tool: build the wheel, install it into a clean virtualenv, migrate from anywhere.

The migrations have one source, the top-level ``migrations/`` (what ``supabase db push`` users copy);
``orchestrator/adapters/db/migrations`` is a symbolic link to it, and building the wheel copies the files it
points at into the package. So: the wheel must carry exactly those files, byte for byte, and an
``orchestrator migrate`` installed from it must apply them to a throwaway PostgreSQL from a directory
that has no checkout in sight. Before this, the wheel carried no SQL at all and ``migrate`` looked for
``./migrations`` in the working directory.

The wheel is built the way the Dockerfile's build stage builds it (``pip wheel --no-deps`` from the
files it copies), in a temporary copy of the source so nothing is written into the checkout; the
virtualenv gets the runtime dependencies from ``requirements.lock`` (hash-checked, as the image does).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
import pytest

from orchestrator.standins.pg import TempPostgres

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "migrations"

pytestmark = pytest.mark.timeout(900)


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing pointing back at this checkout or its virtualenv."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "ORCHESTRATOR_MIGRATIONS_DIR", "PYTHONHOME", "DATABASE_URL"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "orchestrator", src / "orchestrator", symlinks=True, ignore=ignore)
    shutil.copytree(MIGRATIONS, src / "migrations", ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), str(src)],
        cwd=src,
        env=_clean_env(),
    )
    [built] = sorted(out.glob("runpod_fleet_orchestrator-*.whl"))
    return built


def test_the_wheel_carries_exactly_the_top_level_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        packaged = {
            Path(name).name: hashlib.sha256(archive.read(name)).hexdigest()
            for name in archive.namelist()
            if name.startswith("orchestrator/adapters/db/migrations/")
        }
    source = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in MIGRATIONS.glob("*.sql")}
    assert source and packaged == source


def test_the_package_directory_is_the_top_level_one() -> None:
    # One source of truth in the checkout too: the package's directory resolves to migrations/.
    packaged = ROOT / "orchestrator" / "adapters" / "db" / "migrations"
    assert packaged.is_symlink() and packaged.resolve() == MIGRATIONS.resolve()


def test_installed_in_a_clean_virtualenv_migrate_works_from_any_directory(
    wheel: Path, tmp_path: Path, pg: TempPostgres
) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=_clean_env())
    python = venv / "bin" / "python"
    env = _clean_env()
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--require-hashes",
            "-r",
            str(ROOT / "requirements.lock"),
        ],
        cwd=tmp_path,
        env=env,
    )
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], cwd=tmp_path, env=env)

    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    where = _run(
        [str(python), "-c", "import orchestrator.adapters.db.migrate as m; print(m.default_directory())"],
        cwd=elsewhere,
        env=env,
    )
    installed = Path(where.strip())
    assert venv in installed.parents and not installed.is_symlink()  # the wheel's copy, not the checkout

    url = pg.create_database("wheel_install")
    try:
        out = _run(
            [str(venv / "bin" / "orchestrator"), "migrate", "--database-url", url], cwd=elsewhere, env=env
        )
        names = sorted(p.name for p in MIGRATIONS.glob("*.sql"))
        assert [
            line.removeprefix("applied ") for line in out.splitlines() if line.startswith("applied ")
        ] == names
        with psycopg.connect(url) as conn:
            tables = {
                r[0] for r in conn.execute("select tablename from pg_tables where schemaname = 'public'")
            }
            ledger = [
                r[0] for r in conn.execute("select filename from orchestrator_schema_migrations order by 1")
            ]
            functions = {
                r[0] for r in conn.execute("select proname from pg_proc where proname like 'orch\\_%'")
            }
        assert {"tasks", "workers", "orchestrator_events", "orchestrator_lease"} <= tables
        assert ledger == names
        assert {"orch_snapshot", "orch_requeue_unowned_tasks", "orch_queue_probe"} <= functions
        again = _run(
            [str(venv / "bin" / "orchestrator"), "migrate", "--database-url", url], cwd=elsewhere, env=env
        )
        assert "nothing to apply" in again
    finally:
        pg.drop_database("wheel_install")
