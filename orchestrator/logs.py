"""structlog set-up: one JSON line per event, secrets masked everywhere.

Every module logs through ``structlog.get_logger(__name__)`` with a stable snake_case event name and
its facts as fields; the controller binds ``tick``, ``worker_id`` and ``runpod_id`` as context. The
redaction processor runs last before rendering, after exceptions have been turned into text, so a key
that leaks into an exception message, a nested dict or a command line is masked all the same.

The daemon logs on stdout at ``LOG_LEVEL`` (its log is its product); a one-off command logs on stderr
at WARNING (:func:`command_level`), so its own output on stdout is all a script or a reader sees.

A log call never raises. Its sink can fail under a running daemon (a log file on a full disk, a pipe
whose reader died, a closed stream), and the calls sit inside the very paths that end billing and in
the handlers that keep the tick thread alive: one raising there would leave pods billing with nothing
to end them. A line that cannot be written is counted and dropped; the next line that can be written
is followed by ``log_lines_dropped`` with the count.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

from orchestrator.core.config import Settings

REDACTED = "[REDACTED]"

# Shapes that are secret whatever their value: a password inside a URL, a bearer token, a JWT
# (Supabase keys are JWTs), a private key block.
_PATTERNS = (
    # The user name may be empty (``postgresql://:pw@host``), which libpq accepts.
    (
        re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?P<post>@)", re.I),
        r"\g<pre>" + REDACTED + r"\g<post>",
    ),
    # libpq's other places for a password: a URL parameter and a keyword DSN.
    (
        re.compile(r"(?P<pre>\b(?:password|passwd)=)(?:'(?:[^'\\]|\\.)*'|[^&\s\"']+)", re.I),
        r"\g<pre>" + REDACTED,
    ),
    (re.compile(r"(?P<pre>bearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.I), r"\g<pre>" + REDACTED),
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"), REDACTED),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S), REDACTED),
    (re.compile(r"(?P<pre>[?&]api_key=)[^&\s\"']+", re.I), r"\g<pre>" + REDACTED),
    # Runpod API keys (rpa_ and a long run of letters and digits), wherever one was pasted.
    (re.compile(r"\brpa_[A-Za-z0-9]{16,}"), REDACTED),
)


class Redactor:
    """Masks every registered secret value and every secret-shaped string, recursively."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Short values would mask innocent text everywhere ("1", "true"); real keys are long.
        fresh = {s for s in secrets if s and len(s) >= 6}
        with self._lock:
            merged = set(self._secrets) | fresh
            # Longest first, so a secret that contains another is masked whole.
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", "replace"))
        if isinstance(value, BaseException):
            return self.text(f"{type(value).__name__}: {value}")
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.text(str(value))

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        return {k: self.value(v) for k, v in event_dict.items()}


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def command_level(configured: str | None, *, daemon: bool, verbosity: int = 0) -> str:
    """The level a command logs at.

    The daemon: ``LOG_LEVEL``. A one-off command: WARNING, or quieter when ``LOG_LEVEL`` is (progress
    lines such as ``migration_applied`` or an SSH command's echo would otherwise come before its
    answer). ``-v`` lowers either to INFO, ``-vv`` to DEBUG; verbosity never makes a command quieter.
    """
    rank = {name: i for i, name in enumerate(LEVELS)}
    level = (configured or "INFO").upper()
    if level not in rank:
        level = "INFO"
    if not daemon and rank[level] < rank["WARNING"]:
        level = "WARNING"
    wanted = "DEBUG" if verbosity >= 2 else "INFO" if verbosity == 1 else None
    if wanted is not None and rank[wanted] < rank[level]:
        level = wanted
    return level


# One process-wide redactor: secrets discovered at run time (a pod's SSH password) are added to it.
REDACTOR = Redactor()


def redact(value: Any) -> Any:
    """Mask secrets in any value with the process-wide redactor (for printouts outside logging)."""
    return REDACTOR.value(value)


class _Dropped:
    """Lines lost to a failing sink since the last one written (shared by every logger)."""

    lock = threading.Lock()
    count = 0

    @classmethod
    def add(cls) -> None:
        with cls.lock:
            cls.count += 1

    @classmethod
    def take(cls) -> int:
        with cls.lock:
            count, cls.count = cls.count, 0
            return count


def _never_raising(bound: type[Any]) -> type[Any]:
    """``bound`` (a structlog bound-logger class) whose calls drop what they cannot write."""

    class NeverRaising(bound):
        def _proxy_to_logger(self, method_name: str, event: str | None = None, **event_kw: Any) -> Any:
            try:
                result = super()._proxy_to_logger(method_name, event, **event_kw)
            except Exception:  # the sink's OSError, a closed stream's ValueError, a processor's bug
                _Dropped.add()
                return None
            dropped = _Dropped.take()
            if dropped:
                try:
                    super()._proxy_to_logger("warning", "log_lines_dropped", count=dropped)
                except Exception:
                    for _ in range(dropped):
                        _Dropped.add()
            return result

    return NeverRaising


def configure_logging(
    settings: Settings | None = None,
    *,
    stream: TextIO | None = None,
    level: str | None = None,
    fmt: str | None = None,
    extra_secrets: Iterable[str] = (),
) -> Redactor:
    """Configure structlog (and the stdlib loggers libraries use) once for the process."""
    out = stream or sys.stdout
    if settings is not None:
        REDACTOR.add(settings.secrets)
        level = level or settings.log_level
        fmt = fmt or settings.log_format
    REDACTOR.add(extra_secrets)
    level = (level or "INFO").upper()
    fmt = fmt or "auto"
    console = fmt == "console" or (fmt == "auto" and hasattr(out, "isatty") and out.isatty())

    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if console
        else structlog.processors.JSONRenderer(default=str, sort_keys=False)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.StackInfoRenderer(),
        # Exceptions become text here, before redaction, so secrets inside them are masked too.
        structlog.processors.format_exc_info,
        REDACTOR,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=_never_raising(
            structlog.make_filtering_bound_logger(getattr(logging, level, logging.INFO))
        ),
        # One write per line, its newline included: print() writes the text and the newline apart, and
        # two processes sharing a log file (the real worker and its heartbeat guardian, a daemon and its
        # children) could run their lines together between the two.
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the stdlib; route them through the same redaction, quieter.
    handler = logging.StreamHandler(out)
    handler.setFormatter(_StdlibRedactingFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    return REDACTOR


class _StdlibRedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return json.dumps(
            {
                "event": "library_log",
                "logger": record.name,
                "level": record.levelname.lower(),
                "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
                "message": REDACTOR.text(message),
            }
        )


http_log = structlog.get_logger("orchestrator.http")


def log_http_error(server: str, client_address: Any) -> None:
    """``handle_error`` of the project's HTTP servers (the metrics endpoint, the stand-ins): the failed
    request as one structured line. The standard library's own prints a traceback on stderr, several
    lines of plain text in a log every line of which is meant to be one JSON object (a client that
    resets the connection mid-request is enough)."""
    exc = sys.exc_info()[1]
    http_log.info(
        "http_request_failed",
        server=server,
        client=str(client_address[0]) if isinstance(client_address, tuple) and client_address else None,
        error_type=type(exc).__name__ if exc else None,
        error=str(exc)[:300] if exc else None,
    )
