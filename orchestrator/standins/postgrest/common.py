"""Pieces every route of the Supabase stand-in shares: roles, keys, error responses and PostgREST's
SQLSTATE -> HTTP status table (``orchestrator.standins.postgrest`` says what the stand-in is).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

ANON_ROLE = "anon"
SERVICE_ROLE = "service_role"

JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Reply:
    """A response, ready to send: status, body (None for none) and headers."""

    status: int
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def json_reply(status: int, value: Any, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(value).encode(), {"Content-Type": JSON_TYPE, **dict(headers or {})})


# --- keys ------------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_api_key(
    role: str, jwt_secret: str, *, issuer: str = "supabase-sim", ttl_sec: int = 10 * 365 * 86400
) -> str:
    """A Supabase-style API key: an HS256 JWT whose ``role`` claim names the database role.

    Only the shape matters to this stand-in (it compares keys, it does not verify them); real
    Supabase keys have the same shape, so clients that inspect keys see something plausible.
    """
    now = int(time.time())
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(
        json.dumps(
            {"iss": issuer, "role": role, "iat": now, "exp": now + ttl_sec}, separators=(",", ":")
        ).encode()
    )
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = _b64url(hmac.new(jwt_secret.encode(), signing_input, hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


@dataclass(frozen=True)
class ApiKeys:
    """A fresh pair of keys for one simulated project. ``repr`` never shows them."""

    service_role: str = field(repr=False)
    anon: str = field(repr=False)
    jwt_secret: str = field(repr=False)


def generate_keys(jwt_secret: str | None = None) -> ApiKeys:
    secret = jwt_secret or secrets.token_urlsafe(32)
    return ApiKeys(
        service_role=make_api_key(SERVICE_ROLE, secret),
        anon=make_api_key(ANON_ROLE, secret),
        jwt_secret=secret,
    )


# --- errors ----------------------------------------------------------------------------------------


class HttpError(Exception):
    """An error response, already shaped: status, JSON body, extra headers."""

    def __init__(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {body.get('code')}: {body.get('message')}")
        self.status = status
        self.body = dict(body)
        self.headers = dict(headers or {})


def pgrst_error(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    hint: Any = None,
    headers: Mapping[str, str] | None = None,
) -> HttpError:
    return HttpError(status, {"code": code, "details": details, "hint": hint, "message": message}, headers)


def status_for_sqlstate(code: str, message: str, *, authenticated: bool) -> int:
    """HTTP status for a Postgres error, per PostgREST's documented table (and its source's order)."""
    c = code.upper()
    exact: dict[str, int] = {
        "23503": 409,  # foreign key violation
        "23505": 409,  # unique violation
        "25006": 405,  # read-only sql transaction
        "53400": 500,  # config limit exceeded
        "57P01": 503,  # terminating connection due to administrator command
        "P0001": 400,  # default code for RAISE
        "42P01": 404,  # undefined table
        "42P17": 500,  # infinite recursion
    }
    if c in exact:
        return exact[c]
    if c == "21000":  # cardinality violation: a client error only for pg-safeupdate's message
        return 400 if message.endswith("requires a WHERE clause") else 500
    if c == "22023":  # invalid parameter value; a missing role (from the JWT) is an auth failure
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if c == "42883":  # undefined function
        return 406 if message.startswith("function xmlagg(") else 404
    if c == "42501":  # insufficient privilege
        return 403 if authenticated else 401
    if c.startswith("PT") and c[2:].isdigit():
        status = int(c[2:])
        return status if 100 <= status <= 599 else 500
    prefixes: list[tuple[str, int]] = [
        ("08", 503), ("09", 500), ("0L", 403), ("0P", 403), ("25", 500), ("28", 403), ("2D", 500),
        ("38", 500), ("39", 500), ("3B", 500), ("40", 500), ("53", 503), ("54", 500), ("55", 500),
        ("57", 500), ("58", 500), ("F0", 500), ("HV", 500), ("P0", 500), ("XX", 500),
    ]  # fmt: skip
    for prefix, status in prefixes:
        if c.startswith(prefix):
            return status
    return 400


def error_from_pg(exc: psycopg.Error, *, authenticated: bool) -> HttpError:
    diag = exc.diag
    code = exc.sqlstate
    if code is None:
        # No SQLSTATE: the connection itself failed (PostgREST's ClientError -> PGRST001, 503).
        return pgrst_error(
            503, "PGRST001", "Database client error. Retrying the connection.", str(exc) or None
        )
    message = diag.message_primary or str(exc)
    if code == "PGRST":
        return raise_pgrst(message, diag.message_detail)
    status = status_for_sqlstate(code, message, authenticated=authenticated)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return pgrst_error(status, code, message, diag.message_detail, diag.message_hint, headers)


def raise_pgrst(message: str, detail: str | None) -> HttpError:
    """``RAISE SQLSTATE 'PGRST'``: message and detail are JSON objects giving the whole response."""
    try:
        body = json.loads(message)
        if not isinstance(body, dict) or "code" not in body or "message" not in body:
            raise ValueError("missing keys")
    except ValueError:
        return pgrst_error(
            500,
            "PGRST121",
            "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
            f"Invalid JSON value for MESSAGE: '{message}'",
            "MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and optional keys: 'details', 'hint'.",
        )
    try:
        extra = json.loads(detail or "")
        if not isinstance(extra, dict) or "status" not in extra or "headers" not in extra:
            raise ValueError("missing keys")
        status = int(extra["status"])
        headers = {str(k): str(v) for k, v in dict(extra["headers"]).items()}
    except (ValueError, TypeError):
        return pgrst_error(
            500,
            "PGRST121",
            "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
            "DETAIL is missing in the RAISE statement"
            if not detail
            else f"Invalid JSON value for DETAIL: '{detail}'",
            "DETAIL must be a JSON object with obligatory keys: 'status', 'headers' and optional key: 'status_text'.",
        )
    return HttpError(
        status,
        {
            "code": str(body["code"]),
            "details": body.get("details"),
            "hint": body.get("hint"),
            "message": str(body["message"]),
        },
        headers,
    )
