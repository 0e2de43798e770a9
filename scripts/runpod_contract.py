"""Write the structural facts of Runpod's REST v2 OpenAPI document that the tests check against.

Runpod publishes the document for its REST API v2 (linked from https://docs.runpod.io/api-reference-v2/overview).
The tests validate the emulator's responses and the client's requests against it. The repository keeps
only its machine-checkable facts: paths, methods, status codes, content types, headers and schemas,
with the prose (descriptions, summaries, titles, examples) left out. Re-run after Runpod changes the
document:

    python scripts/runpod_contract.py path/to/openapi-v2.json

writes tests/data/runpod-rest-v2-contract.json (``--check`` exits 1 when that file is not what the
given document yields).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "runpod-rest-v2-contract.json"
PROSE = frozenset({"description", "summary", "title", "example", "examples", "externalDocs", "x-codeSamples"})
KEPT_TOP = ("openapi", "servers", "security", "components", "paths")


def facts(node: Any, parent: str | None = None) -> Any:
    """``node`` without its prose. Under ``properties`` every key is a field name, kept whatever it is."""
    if isinstance(node, dict):
        return {k: facts(v, k) for k, v in node.items() if parent == "properties" or k not in PROSE}
    if isinstance(node, list):
        return [facts(v) for v in node]
    return node


def contract(document: dict[str, Any]) -> dict[str, Any]:
    out = {k: facts(document[k]) for k in KEPT_TOP if k in document}
    out["x-source"] = (
        "Runpod REST API v2 OpenAPI document (https://docs.runpod.io/api-reference-v2/overview), prose removed"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("document", type=Path, help="Runpod's openapi-v2.json")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed contract differs")
    args = parser.parse_args(argv)
    text = (
        json.dumps(contract(json.loads(args.document.read_text(encoding="utf-8"))), indent=1, sort_keys=True)
        + "\n"
    )
    if args.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run scripts/runpod_contract.py {args.document}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
