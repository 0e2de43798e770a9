"""The architecture as documented is the architecture in the code.

docs/architecture.md draws the layers and the imports between them; scripts/architecture_graph.py draws
the same picture from the code, and these tests fail when the two differ or when the picture misses an
import. The layers themselves are import-linter contracts in pyproject.toml (``make lint`` runs
``lint-imports``); the last tests run them here too, and show that they fail on a forbidden import.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "architecture_graph.py"


@pytest.fixture(scope="module")
def graph() -> ModuleType:
    spec = importlib.util.spec_from_file_location("architecture_graph", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_picture_in_the_docs_is_the_one_the_code_draws() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_a_new_import_makes_the_picture_stale(graph: ModuleType) -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    drawn = graph.render()
    assert graph.updated_doc(doc, drawn) == doc
    # An edge the code does not have (core importing loop) must not survive a rewrite.
    stale = doc.replace("\n```\n" + graph.END, "\n    core --> loop\n```\n" + graph.END, 1)
    assert stale != doc and graph.updated_doc(stale, drawn) == doc


def test_the_picture_has_every_import_python_sees(graph: ModuleType) -> None:
    # grimp (import-linter's graph builder) reads imports its own way: the two must agree, so the
    # picture's reader neither misses nor invents an edge.
    known = graph.modules()
    packages = graph._packages(known)
    imports = grimp.build_graph("orchestrator", cache_dir=None)
    assert set(known) == set(imports.modules)
    seen = set()
    for importer in imports.modules:
        for imported in imports.find_modules_directly_imported_by(importer):
            source, target = graph.node_of(importer, packages), graph.node_of(imported, packages)
            if source and target and source != target:
                seen.add((source, target))
    assert graph.edges() == seen


def test_every_node_sits_in_a_layer_of_the_contract(graph: ModuleType) -> None:
    layers = graph.layer_order()
    assert layers[0] == "cli" and layers[-1] == "core"
    assert {node.split(".")[0] for node in graph.nodes()} <= set(layers)


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package found in ``tree`` (first on the path), with its pyproject.toml."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
        ],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_layers_hold() -> None:
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_layers_contract_fails_on_a_forbidden_import(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "orchestrator",
        tmp_path / "orchestrator",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "orchestrator" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport orchestrator.loop.controller  # noqa: E402\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode == 1
    assert "orchestrator.core is not allowed to import orchestrator.loop" in proc.stdout
