"""Pytest fixtures for the Runpod emulator (``orchestrator.standins.emulator``).

``emulator`` is a running :class:`EmulatorServer` whose boots are near-instant (speed 1000: a cached
boot takes 30 ms, a cold one 165 ms), with its own state directory under ``tmp_path``; it yields the
server (``.base_url``, ``.admin`` for the ``/_emulator/`` endpoints, ``.state`` for white-box
checks) and stops it - and with it every pod's sshd - at teardown. ``emulator_factory`` builds more
with other options (an ``api_key``, knobs). ``runpod_openapi`` checks REST v2 responses against
Runpod's OpenAPI document for REST API v2 (linked from https://docs.runpod.io/api-reference-v2/overview).
The repository keeps that document's machine-checkable facts (paths, methods, statuses, headers,
schemas; its prose left out) in ``tests/data/runpod-rest-v2-contract.json``, written from the document
by ``scripts/runpod_contract.py``; a full copy at ``$RUNPOD_OPENAPI`` is used instead when set.
``rest_client(server)`` gives an httpx client that checks every response it receives (``check_rest``
does the same for one response, ``check_rest_request`` for one request:
its operation and JSON body).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.standins.emulator import EmulatorServer

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACT_PATH = REPO_ROOT / "tests" / "data" / "runpod-rest-v2-contract.json"
OPENAPI_PATH = Path(os.environ["RUNPOD_OPENAPI"]) if os.environ.get("RUNPOD_OPENAPI") else CONTRACT_PATH
TEST_API_KEY = "rpa_TESTKEY0000000000000000000000000000"
FAST_SPEED = 1000.0


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Callable[..., EmulatorServer]]:
    servers: list[EmulatorServer] = []

    def make(**kwargs: Any) -> EmulatorServer:
        kwargs.setdefault("speed", FAST_SPEED)
        kwargs.setdefault("state_dir", tmp_path / f"emulator-{len(servers)}")
        faults = dict(kwargs.pop("faults", None) or {})
        faults.setdefault("seed", 7)
        server = EmulatorServer(faults=faults, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for s in reversed(servers):
        s.stop()


@pytest.fixture
def emulator(emulator_factory: Callable[..., EmulatorServer]) -> EmulatorServer:
    return emulator_factory()


class OpenApiChecker:
    """Validates a REST v2 response (status, content type, body, rate-limit headers) against the spec."""

    def __init__(self, path: Path) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        self.doc = json.loads(path.read_text(encoding="utf-8"))
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self._registry: Any = Registry().with_resource("urn:runpod-openapi-v2", resource)
        self._validator_cls = Draft202012Validator
        self._routes = [
            (re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", p) + "$"), p) for p in self.doc["paths"]
        ]
        self.checked = 0
        self.requests_checked = 0

    def _resolve(self, obj: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in obj:
            node: Any = self.doc
            for part in obj["$ref"].lstrip("#/").split("/"):
                node = node[part]
            obj = node
        return obj

    def validate(self, value: Any, schema: dict[str, Any]) -> None:
        ref = schema.get("$ref")
        wrapped = {"$ref": f"urn:runpod-openapi-v2{ref}"} if ref else schema
        self._validator_cls(wrapped, registry=self._registry).validate(value)

    def validate_named(self, value: Any, name: str) -> None:
        self.validate(value, {"$ref": f"#/components/schemas/{name}"})

    def check(self, response: httpx.Response) -> None:
        response.read()
        path = response.request.url.path
        method = response.request.method.lower()
        template = next((t for rx, t in self._routes if rx.match(path)), None)
        assert template is not None, f"{path} is not a REST v2 path of the spec"
        op = self.doc["paths"][template].get(method)
        status = str(response.status_code)
        if op is None:
            # A method the path does not have: the spec's shared 405 response applies.
            assert status == "405", f"{method.upper()} {template} is not in the spec but answered {status}"
            assert response.headers.get("Allow"), "405 without an Allow header"
            op = {"responses": {"405": {"$ref": "#/components/responses/MethodNotAllowedError"}}}
        spec = op["responses"].get(status) or op["responses"].get("default")
        assert spec is not None, f"{method.upper()} {template}: status {status} not documented"
        spec = self._resolve(spec)
        content = spec.get("content")
        if not content:
            assert response.content == b"", f"{status} must have no body"
        else:
            ctype = response.headers.get("content-type", "").split(";")[0]
            assert ctype in content, (
                f"{method.upper()} {template} {status}: content type {ctype!r} not in {list(content)}"
            )
            self.validate(response.json(), content[ctype]["schema"])
        if response.status_code != 401:
            # Present on every authenticated response (openapi-v2.json, RateLimit header schemas).
            for h in ("RateLimit", "RateLimit-Policy"):
                assert h in response.headers, f"{method.upper()} {template} {status}: no {h} header"
            assert re.fullmatch(r'("\w+";r=\d+;t=\d+)(, "\w+";r=\d+;t=\d+)*', response.headers["RateLimit"])
            assert re.fullmatch(
                r'("\w+";q=\d+;w=\d+)(, "\w+";q=\d+;w=\d+)*', response.headers["RateLimit-Policy"]
            )
        if response.status_code == 429:
            assert response.headers.get("Retry-After", "").isdigit()
        self.checked += 1

    def check_request(self, request: httpx.Request) -> None:
        """Validate a REST v2 request (path, method, JSON body) against the spec's operation."""
        path = request.url.path
        template = next((t for rx, t in self._routes if rx.match(path)), None)
        assert template is not None, f"{path} is not a REST v2 path of the spec"
        op = self.doc["paths"][template].get(request.method.lower())
        assert op is not None, f"{request.method} {template} is not an operation of the spec"
        body = self._resolve(op["requestBody"]) if "requestBody" in op else None
        content = request.read()
        if body is None:
            assert content == b"", f"{request.method} {template} takes no body, got {content[:200]!r}"
        else:
            if body.get("required"):
                assert content, f"{request.method} {template} requires a body"
            if content:
                ctype = request.headers.get("content-type", "").split(";")[0]
                assert ctype in body["content"], f"{request.method} {template}: content type {ctype!r}"
                self.validate(json.loads(content), body["content"][ctype]["schema"])
        self.requests_checked += 1


_CHECKER: list[OpenApiChecker] = []


def spec_checker() -> OpenApiChecker:
    """The spec checker (loaded once)."""
    if not _CHECKER:
        _CHECKER.append(OpenApiChecker(OPENAPI_PATH))
    return _CHECKER[0]


def check_rest(response: httpx.Response) -> httpx.Response:
    """Validate a REST v2 response against the spec; returns it."""
    spec_checker().check(response)
    return response


def check_rest_request(request: httpx.Request) -> None:
    """Validate a REST v2 request against the spec (an httpx request hook)."""
    spec_checker().check_request(request)


@pytest.fixture(scope="session")
def runpod_openapi() -> OpenApiChecker:
    return spec_checker()


@pytest.fixture
def rest_client() -> Iterator[Callable[..., httpx.Client]]:
    """``rest_client(server, key=...)``: an httpx client whose every response is checked against the spec.

    Without the spec file the responses go unchecked; the tests that exist to check them request
    ``runpod_openapi`` and skip instead.
    """
    clients: list[httpx.Client] = []

    def make(server: EmulatorServer, key: str | None = TEST_API_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        c = httpx.Client(
            base_url=server.base_url,
            headers=headers,
            timeout=30,
            event_hooks={"response": [check_rest]},
        )
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
