"""The Runpod provider port: one interface, two wire protocols.

``RunpodTransport`` is what ``orchestrator.runpod_client`` (and through it the controller) sees of
Runpod. Two adapters implement it: ``orchestrator.adapters.runpod.rest`` (REST API v2 over httpx, the default)
and ``orchestrator.adapters.runpod.graphql`` (the official ``runpod`` SDK, which speaks GraphQL). Both return the
frozen values defined here (``Pod``, ``GpuType``, ``NetworkVolume``), normalised from either API's
shape, and both raise only ``orchestrator.core.errors`` types: the error mapping and the bounded retry
policy shared by the adapters also live here, so "what is retried, how often, and for how long" is
decided in one place.

Retry policy, at this boundary:
- 401/403: ``RunpodAuthError``, never retried.
- 429: ``RunpodRateLimited``, retried after the server's reset time (``Retry-After`` or the
  ``RateLimit`` header's exhausted window), bounded in attempts and in total wait.
- 5xx, timeouts, connection faults: ``RunpodTransientError``, retried with jittered exponential
  backoff (tenacity), bounded.
- No capacity: ``RunpodCapacityError``, not retried here (the caller falls through to the next GPU type
  and the control loop backs off); a stopped pod whose host has no free GPU for it any more:
  ``RunpodNoGpuOnHost``, a kind of it, whatever the HTTP status (the caller terminates the pod).
- Anything we cannot read: ``RunpodMalformedResponse`` carrying an excerpt of the payload.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

import structlog
import tenacity

from orchestrator import telemetry
from orchestrator.core import errors
from orchestrator.core.states import PodStatus

log = structlog.get_logger(__name__)

T = TypeVar("T")

EXCERPT_CHARS = 400

# Status values of REST v2's PodStatus enum, spelled once in core.states; the GraphQL adapter derives
# the same vocabulary.
PROVISIONING = PodStatus.PROVISIONING
STARTING = PodStatus.STARTING
RUNNING = PodStatus.RUNNING
EXITED = PodStatus.EXITED
ERROR = PodStatus.ERROR
TERMINATED = PodStatus.TERMINATED
# Not Runpod's: the state of a listed pod whose entry could not be read (lenient_pods).
UNREADABLE = "UNKNOWN"

# The real service's words for "no capacity" (the GraphQL error users of the SDK report, "There are no
# longer any instances available with the requested specifications"; a resume on a full host, "There are
# not enough free GPUs on the host machine") and REST v2's 400 "could not be placed" (Runpod's OpenAPI
# document for REST v2, createPod); matched case-insensitively. A 400 in other words falls through to
# the next candidate all the same (orchestrator.runpod_client.RunpodClient.spawn_worker).
_CAPACITY_RE = re.compile(
    r"no longer any instances available|no instances available|not enough free gpus|could not be placed"
    r"|no capacity|insufficient capacity",
    re.I,
)


def is_capacity_message(message: str) -> bool:
    """True when a provider error message means "no machine for this spec right now"."""
    return bool(_CAPACITY_RE.search(message or ""))


# A stopped pod's host has no free GPU for it any more (Runpod: "There are not enough free GPUs on the
# host machine to start this pod"; docs.runpod.io/references/troubleshooting/pod-migration explains
# why: a stopped pod stays tied to its machine, whose GPU another user may have rented meanwhile).
_NO_GPU_ON_HOST_RE = re.compile(r"not enough free gpus", re.I)


def is_no_gpu_on_host_message(message: str) -> bool:
    """True when a refused start means the pod's host machine has no free GPU for it."""
    return bool(_NO_GPU_ON_HOST_RE.search(message or ""))


def excerpt(payload: Any, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable excerpt of a payload for error messages (never the whole page)."""
    if isinstance(payload, bytes):
        text = payload.decode("utf-8", "replace")
    elif isinstance(payload, str):
        text = payload
    else:
        try:
            text = json.dumps(payload, default=str)
        except (TypeError, ValueError):
            text = repr(payload)
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


# --- values ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortMapping:
    """One published port of a running pod."""

    private_port: int
    public_port: int | None
    ip: str | None
    type: str
    is_public: bool

    def as_dict(self) -> dict[str, Any]:
        # The GraphQL shape, which the original orchestrator's ``get_pod_status()["ports"]`` returned
        # (banodoco/reigh-worker-orchestrator).
        return {
            "ip": self.ip,
            "isIpPublic": self.is_public,
            "privatePort": self.private_port,
            "publicPort": self.public_port,
            "type": self.type,
        }


@dataclass(frozen=True)
class Pod:
    """A pod as the orchestrator needs it, whichever API described it."""

    id: str
    name: str
    desired_status: str
    actual_status: str
    ip: str | None = None
    ssh_port: int | None = None
    ports: tuple[PortMapping, ...] = ()
    cost_per_hr: float = 0.0
    created_at: str | None = None
    uptime_seconds: int = 0
    gpu: str | None = None
    data_center: str | None = None
    ssh_password: str | None = None
    # GraphQL's ``lastStatusChange`` (e.g. "Rented by User: ..."); REST v2 has no such field.
    last_status_change: str | None = None
    # Whether the pod asked for ``22/tcp``; with a running runtime and no mapping, that is a fault.
    requested_ssh_port: bool = True
    has_runtime: bool = False
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False, compare=False)
    # GPUs attached to the pod (REST ``gpu.count``, absent for a pod without a GPU; GraphQL
    # ``gpuCount``); None when the answer did not say. A stopped pod whose host GPU was taken may be
    # started with none (docs.runpod.io/references/troubleshooting/pod-migration, "Start Pod with CPUs").
    gpu_count: int | None = None

    @property
    def ssh_ready(self) -> bool:
        """The provider reports a public address for sshd (readiness still needs a command to succeed)."""
        return self.actual_status == RUNNING and self.ip is not None and self.ssh_port is not None

    @property
    def is_gone(self) -> bool:
        return self.actual_status == TERMINATED or self.desired_status == TERMINATED

    @property
    def has_failed(self) -> bool:
        return self.actual_status in (ERROR, EXITED)

    @property
    def is_stopped(self) -> bool:
        """Stopped (EXITED and meant to be): its GPU freed, its volume disk kept and billed."""
        return self.actual_status == EXITED and self.desired_status == EXITED


@dataclass(frozen=True)
class GpuType:
    """A GPU type of the catalog. ``available`` is None when the API did not say."""

    id: str
    display_name: str
    memory_gb: int | None = None
    secure_price: float | None = None
    community_price: float | None = None
    secure_cloud: bool | None = None
    available: bool | None = None
    availability: str | None = None
    data_centers: tuple[str, ...] = ()

    def matches(self, wanted: str) -> bool:
        w = wanted.strip().casefold()
        return w in (self.id.casefold(), self.display_name.casefold())


@dataclass(frozen=True)
class NetworkVolume:
    id: str
    name: str
    size_gb: int | None
    data_center: str


@dataclass(frozen=True)
class PodSpec:
    """Everything needed to create one worker pod (gpu count 1, Secure Cloud, ``22/tcp``)."""

    name: str
    image: str
    gpu_type_id: str
    gpu_count: int = 1
    cloud: str = "SECURE"
    data_center_id: str | None = None
    network_volume_id: str | None = None
    volume_mount_path: str = "/workspace"
    container_disk_gb: int = 10
    volume_gb: int = 20
    ports: tuple[str, ...] = ("22/tcp",)
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    start_ssh: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))


# --- the port --------------------------------------------------------------------------------------


class RunpodTransport(Protocol):
    """What the orchestrator needs from Runpod. Adapters raise only ``orchestrator.core.errors`` types."""

    name: str

    def list_gpu_types(self, *, with_availability: bool = False) -> list[GpuType]: ...

    def list_network_volumes(self) -> list[NetworkVolume]: ...

    def create_pod(self, spec: PodSpec) -> Pod: ...

    def get_pod(self, pod_id: str) -> Pod | None: ...

    def list_pods(self) -> list[Pod]: ...

    def terminate_pod(self, pod_id: str) -> bool: ...

    def stop_pod(self, pod_id: str) -> Pod:
        """Stop the pod (its GPU freed, its container disk wiped, its volume disk kept).

        Returns the pod as the provider reports it after the stop; an already stopped pod is returned
        as it is. Raises ``RunpodNotFound`` for a pod the provider does not know and
        ``RunpodRequestError`` (409 on REST) when the pod's status allows no stop (ERROR)."""
        ...

    def start_pod(self, pod_id: str, gpu_count: int) -> Pod:
        """Start (resume) a stopped pod on its host with ``gpu_count`` GPUs.

        Returns the pod as reported after the start, ``gpu_count`` read back (0: it started without a
        GPU). Raises ``RunpodNoGpuOnHost`` when the host has no free GPU for it, ``RunpodNotFound`` for
        an unknown pod, ``RunpodRequestError`` when its status allows no start."""
        ...

    def close(self) -> None: ...


# --- retries ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds for retrying transient faults and rate limits (tests shrink them)."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    # A rate-limit reset further away than this is not waited for: the caller gets RunpodRateLimited.
    max_rate_limit_wait: float = 60.0
    # Upper bound on the total time spent retrying one call.
    max_total: float = 120.0


DEFAULT_RETRY = RetryPolicy()


def _rate_limit_members(headers: Mapping[str, str]) -> list[tuple[str, str, float]]:
    """``RateLimit``'s members as ``(window, r as written, t)``; one without a readable ``t`` is left
    out (openapi ``RateLimitHeader``: ``"minute";r=0;t=12, "hour";r=2800;t=1812, ...``)."""
    raw = next((v for k, v in headers.items() if k.lower() == "ratelimit"), None)
    members: list[tuple[str, str, float]] = []
    for member in (raw or "").split(","):
        name, *pairs = (p.strip() for p in member.split(";"))
        params = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in pairs)}
        try:
            members.append((name.strip('"'), params.get("r", ""), float(params.get("t", ""))))
        except ValueError:
            continue
    return members


def parse_rate_limit_windows(headers: Mapping[str, str]) -> dict[str, tuple[int, float]]:
    """``RateLimit``'s windows as ``{name: (requests left, seconds to reset)}``; members it cannot read
    are left out."""
    windows: dict[str, tuple[int, float]] = {}
    for name, left, reset in _rate_limit_members(headers):
        try:
            windows[name] = (int(left), reset)
        except ValueError:
            continue
    return windows


def parse_rate_limit_reset(headers: Mapping[str, str]) -> float | None:
    """Seconds until the server lets us in again, from ``Retry-After`` or the ``RateLimit`` header.

    ``RateLimit`` is a structured-field list, one member per window, e.g.
    ``"minute";r=0;t=12, "hour";r=2800;t=1812``: we wait for the latest reset among exhausted
    windows (``r=0``); when none is marked exhausted, for the earliest reset.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    retry_after = lower.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after.strip()))
        except ValueError:
            pass  # an HTTP date; fall back to the RateLimit header
    members = _rate_limit_members(headers)
    resets = [t for _name, _left, t in members]
    exhausted = [t for _name, left, t in members if left == "0"]
    if exhausted:
        return max(exhausted)
    return min(resets) if resets else None


def _is_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    if isinstance(exc, errors.RunpodRateLimited):
        if exc.held_back:
            return False
        return exc.retry_after is None or exc.retry_after <= policy.max_rate_limit_wait
    return isinstance(exc, errors.RunpodTransientError)


def retry_reason(exc: BaseException | None) -> str:
    """The ``reason`` label of ``orchestrator_api_retries_total`` for a retried Runpod fault."""
    if isinstance(exc, errors.RunpodRateLimited):
        return telemetry.RATE_LIMITED
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status >= 500:
        return telemetry.SERVER_ERROR
    if "timed out" in str(exc).lower() or "timeout" in str(exc).lower():
        return telemetry.TIMEOUT
    return telemetry.CONNECTION


def call_with_retries(
    fn: Callable[[], T],
    *,
    op: str,
    policy: RetryPolicy = DEFAULT_RETRY,
    sleep: Callable[[float], None] | None = None,
    api: str = telemetry.RUNPOD_REST,
) -> T:
    """Run ``fn`` with the boundary's retry policy; the last typed error is re-raised as is. Each retry
    is counted (``api``: which Runpod API) through :mod:`orchestrator.telemetry`."""
    backoff = tenacity.wait_random_exponential(multiplier=policy.base_delay, max=policy.max_delay)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, errors.RunpodRateLimited) and exc.retry_after is not None:
            # The server told us when; a little jitter keeps a fleet of callers from stampeding.
            return float(exc.retry_after) + float(tenacity.wait_random(0, policy.base_delay / 2)(state))
        return float(backoff(state))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        telemetry.retried(api, retry_reason(exc))
        log.warning(
            "runpod_call_retry",
            op=op,
            attempt=state.attempt_number,
            error_type=type(exc).__name__,
            error=str(exc)[:200],
            wait_s=round(state.next_action.sleep, 3) if state.next_action else None,
        )

    kwargs: dict[str, Any] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts) | tenacity.stop_after_delay(policy.max_total),
        wait=wait,
        retry=tenacity.retry_if_exception(lambda e: _is_retryable(e, policy)),
        before_sleep=before_sleep,
        reraise=True,
        **kwargs,
    )
    return retrying(fn)


# --- validation shared by both adapters -------------------------------------------------------------

_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_POD_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_env(env: Mapping[str, str]) -> dict[str, str]:
    """Env keys must be shell identifiers (anything else cannot be read back as ``$KEY``); values are
    passed through intact, whatever they contain, as long as they are text."""
    out: dict[str, str] = {}
    for k, v in env.items():
        if not isinstance(k, str) or not _ENV_KEY_RE.match(k):
            raise errors.RunpodRequestError(
                f"refused before sending: env name {k!r} is not a shell identifier ([A-Za-z_][A-Za-z0-9_]*)"
            )
        if not isinstance(v, str):
            raise errors.RunpodRequestError(
                f"refused before sending: env {k} must be a string, got {type(v).__name__}"
            )
        if "\x00" in v:
            raise errors.RunpodRequestError(f"refused before sending: env {k} contains a NUL byte")
        out[k] = v
    return out


def check_pod_id(pod_id: str) -> str:
    """Pod ids are short alphanumerics; anything else is refused before it reaches a URL or a query."""
    if not isinstance(pod_id, str) or not _POD_ID_RE.match(pod_id):
        raise errors.RunpodRequestError(f"refused before sending: {pod_id!r} is not a valid pod id")
    return pod_id


class LostCreate:
    """A create whose answer may have been lost, across the attempts of one create call.

    A 5xx or a timeout can come after Runpod made the pod. Before trying again, the pod is looked for by
    name (``find``: the live pod of that name, None when the list has none, raising when the list cannot
    be read). A look that failed is not "no such pod": read so, the retry made a second GPU pod for the
    same worker. So the create stays unconfirmed, and every later attempt looks again before it creates.
    """

    def __init__(self, name: str, find: Callable[[str], Pod | None]) -> None:
        self.name = name
        self.find = find
        self.unconfirmed = False

    def _found(self, pod: Pod | None) -> Pod | None:
        if pod is not None:
            log.info("runpod_create_recovered", pod_name=self.name, runpod_id=pod.id)
        return pod

    def before_attempt(self) -> Pod | None:
        """The pod an earlier attempt made, when that is still unconfirmed; raises while the list
        cannot be read."""
        if not self.unconfirmed:
            return None
        pod = self.find(self.name)
        self.unconfirmed = False
        return self._found(pod)

    def after_failure(self, failure: errors.RunpodError) -> Pod | None:
        """After an attempt that failed without saying whether the pod was made: the pod, or None when
        the list shows none; a RunpodTransientError (the create unconfirmed) when the list cannot be read."""
        try:
            pod = self.find(self.name)
        except errors.RunpodError as look:
            self.unconfirmed = True
            raise errors.RunpodTransientError(
                f"{failure}; whether the pod was made is unknown: the pod list could not be read ({look})",
                status=failure.status,
            ) from failure
        return self._found(pod)


def pod_parser(parse: Callable[[Any], Pod]) -> Callable[[Any], Pod]:
    """A pod parser whose every failure is ``RunpodMalformedResponse``: its own checks raise that, and
    a shape they did not foresee (``runtime.ports`` a number, ``env`` a number) raised a bare TypeError
    out of the client, past callers that promise never to raise (the boot check) or to catch only
    Runpod's errors (the spawn, which then left its row without a pod id)."""

    def guarded(p: Any) -> Pod:
        try:
            return parse(p)
        except errors.RunpodError:
            raise
        except Exception as e:
            pid = p.get("id") if isinstance(p, Mapping) else None
            raise errors.RunpodMalformedResponse(
                f"malformed pod {pid!r}: {type(e).__name__}: {e}; payload: {excerpt(p)}", payload=excerpt(p)
            ) from e

    guarded.__doc__ = parse.__doc__
    return guarded


def lenient_pods(items: list[Any], parse: Any, *, transport: str) -> list[Pod]:
    """Parse a pod listing entry by entry: one malformed entry must not hide the others.

    An entry that does not parse but has a string ``id`` becomes a minimal pod in an unknown state
    (never ready, never failed, so it neither boots nor kills a worker, but the orphan sweep and the
    MAX_ACTIVE_GPUS count still see its name); one without an id cannot be acted on and is dropped.
    """
    pods: list[Pod] = []
    for item in items:
        try:
            pods.append(parse(item))
        except Exception as e:  # the parser's own error, or whatever an unforeseen shape raises in it
            pid = item.get("id") if isinstance(item, Mapping) else None
            log.warning(
                "runpod_pod_unreadable",
                transport=transport,
                runpod_id=pid,
                error_type=type(e).__name__,
                error=str(e)[:300],
            )
            if isinstance(pid, str) and pid:
                name = item.get("name")
                name = name if isinstance(name, str) else ""
                pods.append(Pod(id=pid, name=name, desired_status=UNREADABLE, actual_status=UNREADABLE))
    return pods


def require(obj: Any, key: str, kind: type | tuple[type, ...], *, what: str, payload: Any) -> Any:
    """Read a required field or raise ``RunpodMalformedResponse`` with an excerpt of the payload."""
    if not isinstance(obj, Mapping) or key not in obj:
        raise errors.RunpodMalformedResponse(
            f"malformed {what}: missing field {key!r}; payload: {excerpt(payload)}", payload=excerpt(payload)
        )
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise errors.RunpodMalformedResponse(
            f"malformed {what}: field {key!r} has type {type(value).__name__}; payload: {excerpt(payload)}",
            payload=excerpt(payload),
        )
    return value
