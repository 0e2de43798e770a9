"""The project's exception hierarchy.

Every error the orchestrator raises on purpose derives from :class:`OrchestratorError`. Errors of the
libraries we call (psycopg, httpx, postgrest, requests, paramiko) are mapped to these at the adapter
boundary and chained with ``from``, so the control loop only ever handles our own types and can tell
"retry later" (``Transient*``) from "this will never work" (everything else).
"""

from __future__ import annotations

from typing import Any


class OrchestratorError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(OrchestratorError):
    """The configuration is invalid; ``problems`` lists every one of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


# --- database --------------------------------------------------------------------------------------


class DatabaseError(OrchestratorError):
    """A SQL function failed. Carries the function's name and the server's own words."""

    def __init__(
        self,
        function: str,
        message: str,
        *,
        code: str | None = None,
        details: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.function = function
        self.message = message
        self.code = code
        self.details = details
        self.hint = hint
        text = f"{function}: {message}"
        if code:
            text += f" [{code}]"
        if details:
            text += f" ({details})"
        super().__init__(text)


class TransientDatabaseError(DatabaseError):
    """Connection reset, timeout, 5xx/503: worth retrying, bounded."""


class LeaseLost(DatabaseError):
    """The fencing token is stale: another orchestrator holds the lease. Nothing was written."""


class IllegalTransition(DatabaseError):
    """The worker cannot move to that state from its current one. Nothing was written."""


class NotFound(DatabaseError):
    """Unknown worker or task."""


class InvalidArgument(DatabaseError):
    """A null, malformed or out-of-range argument. Nothing was written."""


class Conflict(DatabaseError):
    """A uniqueness or foreign-key conflict (for example a worker id registered twice)."""


class MigrationError(OrchestratorError):
    """A migration failed, or an applied migration file has changed since it was applied."""


# --- Runpod ----------------------------------------------------------------------------------------


class RunpodError(OrchestratorError):
    """Any failure talking to Runpod. ``payload`` holds an excerpt of what came back, if anything."""

    def __init__(self, message: str, *, status: int | None = None, payload: Any = None) -> None:
        self.status = status
        self.payload = payload
        super().__init__(message)


class RunpodAuthError(RunpodError):
    """401/403: the API key is missing, wrong or lacks permission. Never retried."""


class RunpodNotFound(RunpodError):
    """The pod (or other resource) does not exist."""


class RunpodCapacityError(RunpodError):
    """No instances available with the requested specification; back off or try another GPU type."""


class RunpodNoGpuOnHost(RunpodCapacityError):
    """A stopped pod cannot start: its host machine has no free GPU of its type any more.

    Runpod's words: "There are not enough free GPUs on the host machine to start this pod". A stopped
    pod is tied to its host, so no retry elsewhere helps: terminate it and create a new pod.
    """


class RunpodRateLimited(RunpodError):
    """429 after the retries we allow; ``retry_after`` seconds is the server's reset time if given."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, held_back: bool = False, **kw: Any
    ) -> None:
        self.retry_after = retry_after
        # Refused by our own client to keep a rate-limit reserve, never sent: not waited for, the
        # caller's next attempt (a next tick) asks again.
        self.held_back = held_back
        super().__init__(message, **kw)


class RunpodTransientError(RunpodError):
    """5xx, timeouts, connection faults, after bounded retries."""


class RunpodMalformedResponse(RunpodError):
    """The service answered something we cannot read (HTML, missing fields, no port 22 mapping)."""


class RunpodRequestError(RunpodError):
    """The service refused the request as invalid (400/409/422)."""


class GpuTypeNotFound(RunpodError):
    """No GPU type with that display name; the message lists the available ones."""


class VolumeNotFound(RunpodError):
    """No network volume with that name; the message lists the volumes and their data centers."""


# --- SSH -------------------------------------------------------------------------------------------


class SSHError(OrchestratorError):
    """Any SSH failure. Subclasses tell the causes apart for the result dicts and the policy."""


class SSHRefused(SSHError):
    """The port did not accept a connection (sshd not up yet, or gone)."""


class SSHAuthFailed(SSHError):
    """The server refused our key or password."""


class SSHTimeout(SSHError):
    """Connecting or the remote command took longer than allowed."""


class SSHHostKeyChanged(SSHError):
    """The pod presented a host key different from the one recorded on first use."""


# --- the offline stand-ins -------------------------------------------------------------------------


class SandboxError(OrchestratorError):
    """An emulated pod's sandbox (sshd in its own namespaces) could not be set up."""
