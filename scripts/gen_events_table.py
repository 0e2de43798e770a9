#!/usr/bin/env python3
"""Generate the table of log event names in docs/operations.md from the code itself.

Operators build alerts on event names, so the documented list must be the real one: this reads every
structlog call in ``orchestrator/`` (``log.info("event_name", field=...)``) with Python's own parser and
writes the table between the ``<!-- events-table -->`` markers. ``--check`` exits 1 when the docs are
stale (the test suite runs it).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "operations.md"
START, END = "<!-- events-table -->", "<!-- /events-table -->"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def _names(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _names(node.body) + _names(node.orelse)
    return []


def _is_logger(node: ast.expr) -> bool:
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.endswith("log") or name == "logger"


def _record_literal(node: ast.AST) -> tuple[str, str, set[str]] | None:
    """``{"event": "name", "level": ..., ...}``: (name, level, other keys); the level is the record's own
    when not a constant."""
    if not isinstance(node, ast.Dict):
        return None
    keys = {k.value: v for k, v in zip(node.keys, node.values, strict=True) if isinstance(k, ast.Constant)}
    event, level = keys.get("event"), keys.get("level")
    if not (isinstance(event, ast.Constant) and isinstance(event.value, str)) or level is None:
        return None
    shown = str(level.value) if isinstance(level, ast.Constant) else "any"
    others = {str(k) for k in keys if k not in ("event", "level", "ts")}
    return event.value, shown, others


def collect(package: Path = ROOT / "orchestrator") -> dict[str, dict[str, set[str]]]:
    """event name -> {"levels", "modules", "fields"}."""
    found: dict[str, dict[str, set[str]]] = defaultdict(
        lambda: {"levels": set(), "modules": set(), "fields": set()}
    )
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        dict_keys = _dict_literal_keys(tree)
        for node in ast.walk(tree):
            record = _record_literal(node)
            if record is not None:
                # A JSON line built by hand (the standard library's records: ``library_log``).
                entry = found[record[0]]
                entry["levels"].add(record[1])
                entry["modules"].add(module)
                entry["fields"].update(record[2])
                continue
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr == "_proxy_to_logger" and len(node.args) >= 2:
                # The logger's own line, below the level methods (``log_lines_dropped``).
                level, event = node.args[0], node.args[1]
                if isinstance(level, ast.Constant) and level.value in LEVELS:
                    for name in _names(event):
                        entry = found[name]
                        entry["levels"].add(str(level.value))
                        entry["modules"].add(module)
                        entry["fields"].update(k.arg for k in node.keywords if k.arg)
                continue
            if node.func.attr not in LEVELS or not _is_logger(node.func.value) or not node.args:
                continue
            for name in _names(node.args[0]):
                entry = found[name]
                entry["levels"].add(node.func.attr)
                entry["modules"].add(module)
                entry["fields"].update(k.arg for k in node.keywords if k.arg)
                for k in node.keywords:
                    if k.arg is None and isinstance(k.value, ast.Name):
                        entry["fields"].update(dict_keys.get(k.value.id, ()))
    return dict(found)


def _dict_literal_keys(tree: ast.AST) -> dict[str, set[str]]:
    """``name = {"key": ...}`` assignments: the keys a ``log.info("event", **name)`` call logs."""
    keys: dict[str, set[str]] = defaultdict(set)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            literal = {
                k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
            }
            for target in node.targets:
                if isinstance(target, ast.Name):
                    keys[target.id] |= literal
    return keys


def render(events: dict[str, dict[str, set[str]]]) -> str:
    lines = [
        START,
        "| event | level | where | fields |",
        "| --- | --- | --- | --- |",
    ]
    for name in sorted(events):
        e = events[name]
        lines.append(
            f"| `{name}` | {', '.join(sorted(e['levels']))} | {', '.join(sorted(m.removeprefix('orchestrator.') for m in e['modules']))} "
            f"| {', '.join(sorted(e['fields'])) or '-'} |"
        )
    lines.append(END)
    return "\n".join(lines)


def updated_doc(text: str, table: str) -> str:
    if START not in text:
        raise SystemExit(f"{DOC}: no {START} marker")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END) if END in rest else ("", "", rest)
    return head + table + tail


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    new = updated_doc(text, render(collect()))
    if "--check" in argv:
        if new != text:
            print(
                "docs/operations.md: the log events table is stale; run scripts/gen_events_table.py",
                file=sys.stderr,
            )
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
