#!/usr/bin/env python3
"""Draw the package's layers and the imports between them, from the code, as a mermaid graph.

docs/architecture.md shows this picture between its ``<!-- architecture-graph -->`` markers, and
tests/unit/test_architecture.py fails when the two differ, so the picture cannot drift from the code.
The imports are read with Python's own parser (every ``import`` statement, including those inside
functions, which the CLI uses to keep start-up light), never by importing the package.

One node per layer or subpackage: ``core``, ``ports``, ``adapters.db``, ``adapters.runpod``, the loose
modules of ``adapters``, ``loop``, each part of ``standins``, ``studies``, and each top-level module.
Nodes are listed in the order of the layers contract in pyproject.toml (highest first), which is the one
place the layers are written down.

    python scripts/architecture_graph.py           # print the mermaid graph
    python scripts/architecture_graph.py --write   # rewrite the block in docs/architecture.md
    python scripts/architecture_graph.py --check   # exit 1 when docs/architecture.md is stale
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "orchestrator"
DOC = ROOT / "docs" / "architecture.md"
START, END = "<!-- architecture-graph -->", "<!-- /architecture-graph -->"
# Subpackages drawn as several nodes in a subgraph rather than as one node: standins one node per part
# (each stands in for a different service), adapters one per subpackage plus one for its loose modules.
EACH_PART = "standins"
EACH_SUBPACKAGE = "adapters"
SPLIT = (EACH_PART, EACH_SUBPACKAGE)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its ``__init__.py``)."""
    found: dict[str, Path] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path, known: Iterable[str]) -> Iterator[str]:
    """The package's modules that ``module`` imports, absolute or relative, at any depth of its code."""
    names = set(known)
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # ``from . import x`` in a module means its package; in a package's __init__, itself.
                anchor = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                # ``from orchestrator.adapters import ssh`` imports a module; ``from x import name``, x.
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in names else base


def node_of(module: str, packages: set[str]) -> str | None:
    """The node a module is drawn in; None outside the package, for the root package, and for the
    ``__init__`` of a split subpackage (a namespace, nothing in it to draw)."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) == 1:
        return None
    top = parts[1]
    if top not in SPLIT:
        return top
    if len(parts) == 2:
        return None
    part = f"{top}.{parts[2]}"
    if top == EACH_SUBPACKAGE and f"{PACKAGE}.{part}" not in packages:
        return top
    return part


def edges(root: Path = ROOT) -> set[tuple[str, str]]:
    """(importer node, imported node) for every import that crosses from one node to another."""
    known = modules(root)
    packages = _packages(known)
    found: set[tuple[str, str]] = set()
    for module, path in known.items():
        source = node_of(module, packages)
        for target_module in _imported(module, path, known):
            target = node_of(target_module, packages)
            if source and target and source != target:
                found.add((source, target))
    return found


def _packages(known: dict[str, Path]) -> set[str]:
    return {name for name, path in known.items() if path.name == "__init__.py"}


def nodes(root: Path = ROOT) -> set[str]:
    known = modules(root)
    packages = _packages(known)
    return {n for n in (node_of(m, packages) for m in known) if n}


def layer_order(root: Path = ROOT) -> list[str]:
    """The layers of the contract in pyproject.toml, highest first, each a top-level name."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    for contract in config.get("tool", {}).get("importlinter", {}).get("contracts", []):
        if contract.get("type") == "layers" and PACKAGE in contract.get("containers", []):
            order: list[str] = []
            for layer in contract["layers"]:
                for tail in layer.replace("|", ":").split(":"):
                    order.append(tail.strip().strip("()"))
            return order
    return []


def _rank(node: str, order: list[str]) -> tuple[int, str]:
    top = node.split(".")[0]
    return (order.index(top) if top in order else len(order), node)


def _id(node: str) -> str:
    return node.replace(".", "_")


def _label(node: str, known: dict[str, Path], packages: set[str]) -> str:
    """The node's name; a layer made of modules (core, loop, studies, the loose adapters) lists them,
    so the picture also says what each layer holds."""
    if "." in node or f"{PACKAGE}.{node}" not in packages:
        return node
    members = sorted(
        m.rsplit(".", 1)[1]
        for m in known
        if m.startswith(f"{PACKAGE}.{node}.") and node_of(m, packages) == node and m.count(".") == 2
    )
    title = f"{node} (modules)" if node in SPLIT else node
    return f"{title}<br/>{', '.join(members)}" if members else title


def render(root: Path = ROOT) -> str:
    """The mermaid block, fenced, with nothing in it that changes unless the imports do."""
    order = layer_order(root)
    known = modules(root)
    packages = _packages(known)
    all_nodes = sorted(nodes(root), key=lambda n: _rank(n, order))
    lines = ["```mermaid", "flowchart TD"]
    done: set[str] = set()
    for node in all_nodes:
        if node in done:
            continue
        top = node.split(".")[0]
        if top in SPLIT:
            members = [n for n in all_nodes if n.split(".")[0] == top]
            lines.append(f"    subgraph {top}_pkg [{top}]")
            for member in members:
                lines.append(f'        {_id(member)}["{_label(member, known, packages)}"]')
            lines.append("    end")
            done.update(members)
        else:
            lines.append(f'    {_id(node)}["{_label(node, known, packages)}"]')
            done.add(node)
    for source, target in sorted(edges(root), key=lambda e: (_rank(e[0], order), _rank(e[1], order))):
        lines.append(f"    {_id(source)} --> {_id(target)}")
    lines.append("```")
    return "\n".join(lines)


def updated_doc(text: str, graph: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"{DOC.relative_to(ROOT)}: no {START} ... {END} markers")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{graph}\n{END}{tail}"


def main(argv: list[str]) -> int:
    graph = render()
    if "--write" in argv or "--check" in argv:
        text = DOC.read_text()
        new = updated_doc(text, graph)
        if "--check" in argv:
            if new != text:
                print(
                    "docs/architecture.md: the graph is stale; run python scripts/architecture_graph.py --write",
                    file=sys.stderr,
                )
                return 1
            return 0
        DOC.write_text(new)
        return 0
    print(graph)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
