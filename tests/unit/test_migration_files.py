"""The migrations are in the form ``supabase db push`` applies, and the docs say how to push them.

The Supabase CLI (supabase/cli, ``pkg/migration/list.go`` ``ListLocalMigrations`` and
``pkg/migration/file.go``) reads the top level of ``supabase/migrations`` in directory order, keeps the
files whose name matches ``^([0-9]+)_(.*)\\.sql$`` (anything else is skipped with "file name must match
pattern "<timestamp>_name.sql""), takes the digits as the version it records in
``supabase_migrations.schema_migrations``, and skips a first file named ``<14 digits>_init.sql`` older
than 20211209000000. A file the CLI would skip, a version used twice, or a name whose sort order is not
its version order would make ``supabase db push`` apply something other than ``orchestrator migrate``.
"""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.adapters.db.migrate import MIGRATION_NAME, discover

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "migrations"
OPERATIONS = ROOT / "docs" / "operations.md"

# supabase/cli pkg/migration/file.go: migrateFilePattern
CLI_PATTERN = re.compile(r"^([0-9]+)_(.*)\.sql$")
CLI_INIT_SKIP = re.compile(r"([0-9]{14})_init\.sql")


def test_every_file_is_one_the_supabase_cli_applies() -> None:
    entries = sorted(MIGRATIONS.iterdir())
    assert entries
    assert [e.name for e in entries if not e.is_file()] == []  # the CLI reads the top level only
    versions = []
    for entry in entries:
        match = CLI_PATTERN.match(entry.name)
        assert match, f"{entry.name}: the Supabase CLI would skip it"
        assert MIGRATION_NAME.match(entry.name), f"{entry.name}: orchestrator migrate would refuse it"
        assert len(match.group(1)) == 14, f"{entry.name}: not a YYYYMMDDHHMMSS timestamp"
        versions.append(match.group(1))
    assert len(set(versions)) == len(versions), "two files share a version: the CLI records versions only"
    assert versions == sorted(versions, key=int), "directory order (the CLI's) differs from version order"
    first = CLI_INIT_SKIP.fullmatch(entries[0].name)
    assert not (first and int(first.group(1)) < 20211209000000), "the CLI skips such a first file"


def test_both_runners_see_the_same_files_in_the_same_order() -> None:
    ours = [m.filename for m in discover(MIGRATIONS)]
    theirs = [e.name for e in sorted(MIGRATIONS.iterdir()) if CLI_PATTERN.match(e.name)]
    assert ours == theirs


def test_the_operations_guide_gives_the_db_push_route_with_the_reload() -> None:
    text = OPERATIONS.read_text()
    assert "supabase db push" in text and "supabase/migrations/" in text
    assert "NOTIFY pgrst, 'reload schema'" in text
    assert "pip install" in text
