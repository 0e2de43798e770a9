"""Process-wide signals from the adapters to whoever counts them (the metrics), without an import.

The Runpod and database adapters retry transient faults deep inside a call; the metrics live with the
control loop, above them. An adapter calls :func:`retried` (cheap, never raises) and every registered
listener hears it; :class:`orchestrator.loop.metrics.Metrics` registers one. No listener, no cost.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable

# The APIs whose calls are retried, and why (the ``api`` and ``reason`` labels of
# ``orchestrator_api_retries_total``).
RUNPOD_REST = "runpod_rest"
RUNPOD_GRAPHQL = "runpod_graphql"
SUPABASE = "supabase"
POSTGRES = "postgres"
APIS = (RUNPOD_REST, RUNPOD_GRAPHQL, SUPABASE, POSTGRES)
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
CONNECTION = "connection"
OTHER = "other"
RETRY_REASONS = (RATE_LIMITED, SERVER_ERROR, TIMEOUT, CONNECTION, OTHER)

RetryListener = Callable[[str, str], None]

_lock = threading.Lock()
# Weak references: a listener's owner (a Metrics of a finished test, say) may go away without
# unregistering, and must not be kept alive, nor counted into, by this list.
_retry_listeners: list[weakref.ref[Callable[[str, str], None]]] = []


def _ref(listener: RetryListener) -> weakref.ref[Callable[[str, str], None]]:
    if hasattr(listener, "__self__"):
        return weakref.WeakMethod(listener)
    return weakref.ref(listener)


def add_retry_listener(listener: RetryListener) -> RetryListener:
    with _lock:
        _retry_listeners.append(_ref(listener))
    return listener


def remove_retry_listener(listener: RetryListener) -> None:
    with _lock:
        _retry_listeners[:] = [r for r in _retry_listeners if r() is not None and r() != listener]


def retried(api: str, reason: str) -> None:
    """A call to ``api`` is about to be retried for ``reason`` (one of RETRY_REASONS)."""
    with _lock:
        _retry_listeners[:] = [r for r in _retry_listeners if r() is not None]
        listeners = [r() for r in _retry_listeners]
    for listener in listeners:
        if listener is None:
            continue
        # A counter must never break the call being retried.
        with contextlib.suppress(Exception):
            listener(api, reason if reason in RETRY_REASONS else OTHER)
