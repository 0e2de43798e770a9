"""Parsing helpers for the values the database and the provider return: timestamps, numbers, text.

The bottom of the pure core's parsing (``orchestrator.core``): :mod:`orchestrator.core.observed` and
:mod:`orchestrator.core.evidence` read the snapshot with these, so one malformed value is read the same
way everywhere (a timestamp in free-form metadata as absent, a non-finite number as an error). No I/O.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any


def as_utc(value: datetime) -> datetime:
    """Aware UTC; a naive value is taken as UTC (Postgres returns timestamptz, tests may not)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_ts(value: Any) -> datetime | None:
    """A timestamp from the snapshot's JSON (ISO 8601 text), a datetime, or None."""
    if value is None or value == "":
        return None
    # A timestamp that parses but leaves datetime's range when moved to UTC ("0001-01-01T00:00:00+01:00",
    # .NET's DateTime.MinValue with an offset) raises OverflowError: read as malformed like any other, or
    # one hand-edited row would stop every tick before it ends anything.
    if isinstance(value, datetime):
        try:
            return as_utc(value)
        except OverflowError as exc:
            raise ValueError(f"timestamp out of range: {value!r}") from exc
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            return as_utc(datetime.fromisoformat(text))
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"not an ISO 8601 timestamp in range: {value!r}") from exc
    raise ValueError(f"not a timestamp: {value!r}")


def ts_or_none(value: Any) -> datetime | None:
    """Like parse_ts, but a malformed value in free-form metadata reads as absent."""
    try:
        return parse_ts(value)
    except ValueError:
        return None


def as_int(value: Any, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    try:
        number = float(value)
    except OverflowError as exc:  # an integer of hundreds of digits
        raise ValueError(f"not a finite number: {str(value)[:40]}...") from exc
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return int(number)


def float_or_none(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
