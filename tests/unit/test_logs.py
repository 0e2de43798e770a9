"""Redaction: a run that logs every configured secret, in every place one can hide, prints none."""

from __future__ import annotations

import io
import json
from pathlib import Path

import structlog

from orchestrator.core import config
from orchestrator.logs import configure_logging


def _settings_with_every_secret(tmp_path: Path) -> tuple[config.Settings, list[str]]:
    key = tmp_path / "id_ed25519"
    key_body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
    key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{key_body}\n-----END OPENSSH PRIVATE KEY-----\n")
    secrets = {
        "RUNPOD_API_KEY": "rpa_7QXK2LMN4PZ8RT6W",
        "SUPABASE_SERVICE_ROLE_KEY": "sb_service_role_Q9w8E7r6T5y4",
        "SUPABASE_ANON_KEY": "sb_anon_key_Z1x2C3v4B5n6",
        "DATABASE_URL": "postgresql://orch:Pg-Pass-981273@db.internal:5432/postgres",
    }
    env = dict(secrets, RUNPOD_SSH_PRIVATE_KEY_PATH=str(key))
    s = config.load_settings(env, env_file=None)
    return s, [
        "rpa_7QXK2LMN4PZ8RT6W",
        "sb_service_role_Q9w8E7r6T5y4",
        "sb_anon_key_Z1x2C3v4B5n6",
        "Pg-Pass-981273",
        key_body,
    ]


def test_no_secret_survives_any_event(tmp_path: Path) -> None:
    settings, secrets = _settings_with_every_secret(tmp_path)
    out = io.StringIO()
    configure_logging(settings, stream=out, fmt="json", level="DEBUG")
    log = structlog.get_logger("test")
    api_key, service, anon, password, key_body = secrets
    log.info("plain_field", api_key=api_key)
    log.info(f"in_the_event_name_{service}")
    log.warning(
        "nested", payload={"env": {"SUPABASE_ANON_KEY": anon, "list": [password, {"deep": key_body}]}}
    )
    log.info(
        "command_line",
        cmd=f"python headless.py --supabase-access-token {service} --db postgres://u:{password}@h/db",
    )
    try:
        raise RuntimeError(f"connection to postgresql://orch:{password}@db failed with key {api_key}")
    except RuntimeError:
        log.exception("exception_text")
    log.info("bytes_value", raw=f"Authorization: Bearer {anon}".encode())
    text = out.getvalue()
    assert text.count("\n") == 6  # one line per event
    for secret in secrets:
        assert secret not in text, secret
    assert "[REDACTED]" in text
    # Each line is JSON with a stable event name.
    events = [json.loads(line)["event"] for line in text.splitlines()]
    assert events[0] == "plain_field" and events[-1] == "bytes_value"


def test_secret_shapes_are_masked_without_configuration() -> None:
    out = io.StringIO()
    configure_logging(None, stream=out, fmt="json")
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    structlog.get_logger("t").info(
        "shapes", a=f"Bearer {jwt}", b="https://x.test/graphql?api_key=abcdef123456", c=jwt
    )
    text = out.getvalue()
    assert jwt not in text and "abcdef123456" not in text


def test_a_library_line_keeps_the_log_contract() -> None:
    # psycopg, paramiko and the others log through the stdlib: one JSON event with its time, masked.
    import logging

    out = io.StringIO()
    configure_logging(None, stream=out, fmt="console")
    logging.getLogger("psycopg").warning("error connecting: postgresql://u:Pg-Pass-981273@db/x")
    [line] = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["event"] == "library_log" and line["level"] == "warning" and line["ts"].endswith("Z")
    assert "Pg-Pass-981273" not in line["message"]
