"""The committed facts of Runpod's REST v2 OpenAPI document: what the client calls is in them, and they
carry no prose (scripts/runpod_contract.py writes them from the document)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONTRACT = Path(__file__).resolve().parents[2] / "tests" / "data" / "runpod-rest-v2-contract.json"


def _prose_keys(node: Any, parent: str | None = None, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if parent != "properties" and key in ("description", "summary", "title", "example", "examples"):
                found.append(f"{path}/{key}")
            found += _prose_keys(value, key, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _prose_keys(value, None, f"{path}/{i}")
    return found


def test_the_operations_the_client_uses_are_in_the_contract() -> None:
    doc = json.loads(CONTRACT.read_text(encoding="utf-8"))
    paths = doc["paths"]
    for path, method in [
        ("/v2/pods", "get"),
        ("/v2/pods", "post"),
        ("/v2/pods/{id}", "get"),
        ("/v2/pods/{id}", "delete"),
        ("/v2/pods/{id}/action", "post"),
        ("/v2/catalog/gpus", "get"),
        ("/v2/network-volumes", "get"),
    ]:
        assert method in paths[path], f"{method.upper()} {path}"
    assert {"Pod", "CreatePodRequest"} <= set(doc["components"]["schemas"])


def test_the_contract_keeps_facts_not_prose() -> None:
    doc = json.loads(CONTRACT.read_text(encoding="utf-8"))
    assert _prose_keys(doc) == []
