"""Runpod GraphQL adapter, through the official ``runpod`` SDK (``RUNPOD_API=graphql``).

The original orchestrator (banodoco/reigh-worker-orchestrator) talked to Runpod this way
(``runpod.get_gpus()``, ``runpod.create_pod(...)``, ``runpod.terminate_pod(...)``; ``runpod.stop_pod`` /
``resume_pod`` for the warm pool); GraphQL is due to be retired in early 2027, so REST v2
(``orchestrator.adapters.runpod.rest``) is the default and this adapter is kept for users who need the SDK.
The wire facts come from the SDK's own source (runpod/runpod-python: ``runpod/api/graphql.py``,
``runpod/api/ctl_commands.py``, ``runpod/api/mutations/pods.py``, ``runpod/error.py``).

Three things about the SDK shape this module:
- It reads ``RUNPOD_API_BASE_URL`` from the process environment and (for ``create_pod`` and
  ``terminate_pod``) the key from the module attribute ``runpod.api_key`` at call time. Both are
  process-wide, so every SDK call runs under one lock with our values set.
- It interpolates values into the query text without escaping. Every string we hand it is escaped
  here first (GraphQL string escapes are JSON's), so a quote, backslash or newline in an env value
  arrives intact instead of breaking or rewriting the mutation.
- It gives us no HTTP status or headers: 401 is ``AuthenticationError``, any body with ``errors`` is
  ``QueryError(message)``, a non-JSON body is a ``requests`` JSON decode error (whose ``doc`` is the
  body). Rate limits are recognised by their message and retried with backoff (the reset time is not
  visible through the SDK); a non-JSON body that looks like a gateway error page counts as a 5xx.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import runpod
import runpod.error
import structlog

from orchestrator import telemetry
from orchestrator.adapters.runpod.base import (
    DEFAULT_RETRY,
    EXITED,
    RUNNING,
    STARTING,
    TERMINATED,
    GpuType,
    LostCreate,
    NetworkVolume,
    Pod,
    PodSpec,
    PortMapping,
    RetryPolicy,
    call_with_retries,
    check_env,
    check_pod_id,
    excerpt,
    is_capacity_message,
    is_no_gpu_on_host_message,
    lenient_pods,
    pod_parser,
    require,
)
from orchestrator.core import errors

log = structlog.get_logger(__name__)

T = TypeVar("T")

# The SDK's configuration is process-wide (an env var and a module attribute): one call at a time.
_SDK_LOCK = threading.Lock()

_RATE_RE = re.compile(r"rate limit|too many requests", re.I)
_TRANSIENT_RE = re.compile(
    r"internal server error|bad gateway|service unavailable|gateway time-?out|temporarily unavailable"
    r"|something went wrong|timed? ?out|\b50[0-9]\b",
    re.I,
)
_UNAUTHORIZED_RE = re.compile(r"^\s*unauthori[sz]ed|permission denied|forbidden", re.I)
# Runpod's catch-all. Usually worth a retry, but it is also the whole answer to a pod with a network
# volume created outside Secure Cloud (runpod/runpodctl issue #172: "Error: Something went wrong. Please
# try again later or contact support.", resolved by asking for Secure Cloud), which no retry changes.
_SOMETHING_WRONG_RE = re.compile(r"something went wrong", re.I)
_NOT_FOUND_RE = re.compile(r"not found", re.I)


def gql_escape(value: str) -> str:
    """Escape text for the inside of a GraphQL string literal ("..."): GraphQL's escapes are JSON's.

    Non-ASCII text stays as it is (GraphQL source is Unicode); lone surrogates cannot be sent at all
    and are refused.
    """
    if not isinstance(value, str):
        raise errors.RunpodRequestError(f"refused before sending: expected text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise errors.RunpodRequestError("refused before sending: value contains a lone surrogate") from e
    return json.dumps(value, ensure_ascii=False)[1:-1]


class GraphQLTransport:
    """``RunpodTransport`` through the official SDK's GraphQL calls."""

    name = "graphql"

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.runpod.io",
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        if not api_key:
            raise errors.RunpodAuthError("no Runpod API key configured (RUNPOD_API_KEY)")
        self._key = api_key
        self._base_url = base_url.rstrip("/")
        self.retry = retry

    def close(self) -> None:
        pass

    # --- calling the SDK -------------------------------------------------------------------------

    def _sdk(self, op: str, fn: Callable[[], T]) -> T:
        """One SDK call with our key and base URL, its exceptions mapped to ours (no retries)."""
        with _SDK_LOCK:
            previous_key = runpod.api_key
            previous_url = os.environ.get("RUNPOD_API_BASE_URL")
            runpod.api_key = self._key
            os.environ["RUNPOD_API_BASE_URL"] = self._base_url
            try:
                return fn()
            except runpod.error.AuthenticationError as e:
                raise errors.RunpodAuthError(
                    f"{op}: Runpod refused the API key ({e}); check RUNPOD_API_KEY", status=401
                ) from e
            except runpod.error.QueryError as e:
                raise _map_query_error(op, str(e)) from e
            except requests.exceptions.JSONDecodeError as e:
                body = getattr(e, "doc", "") or ""
                if _RATE_RE.search(body[:2000]):
                    # A gateway's 429 page: the SDK decodes before it looks at the status.
                    raise errors.RunpodRateLimited(
                        f"{op}: rate limited (a gateway page instead of JSON): {excerpt(body, 200)}",
                        status=429,
                    ) from e
                if _TRANSIENT_RE.search(body[:2000]) or not body.strip():
                    raise errors.RunpodTransientError(
                        f"{op}: gateway error page instead of JSON: {excerpt(body, 200)}",
                        payload=excerpt(body),
                    ) from e
                raise errors.RunpodMalformedResponse(
                    f"{op}: response is not JSON: {excerpt(body)}", payload=excerpt(body)
                ) from e
            except (requests.Timeout, requests.ConnectionError) as e:
                raise errors.RunpodTransientError(f"{op}: {type(e).__name__}: {e}") from e
            except requests.RequestException as e:
                raise errors.RunpodTransientError(f"{op}: {type(e).__name__}: {e}") from e
            except ValueError as e:
                # The SDK's own input checks; ``create_pod`` looks the GPU id up first (``get_gpu``).
                if "No GPU found" in str(e):
                    raise errors.GpuTypeNotFound(f"{op}: {e}") from e
                raise errors.RunpodRequestError(f"{op}: {e}") from e
            except (KeyError, TypeError, IndexError) as e:
                if isinstance(e, KeyError) and e.args == ("data",):
                    # A JSON answer with neither ``data`` nor ``errors``: runpod-python raises QueryError
                    # only for a body with ``errors``, whatever the status, and its callers then index
                    # ``["data"]``, so an error body of a 429 or a 5xx (``{"message": ...}``) lands here.
                    # It says nothing about the pod, and a retry is what such an answer asks for.
                    raise errors.RunpodTransientError(
                        f"{op}: an answer without data or errors (an error status the SDK does not read)"
                    ) from e
                # The SDK indexes data.<field> blindly: a missing or null field surfaces as these.
                raise errors.RunpodMalformedResponse(
                    f"{op}: unexpected response shape ({type(e).__name__}: {e})", payload=str(e)
                ) from e
            finally:
                runpod.api_key = previous_key
                if previous_url is None:
                    os.environ.pop("RUNPOD_API_BASE_URL", None)
                else:
                    os.environ["RUNPOD_API_BASE_URL"] = previous_url

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        return call_with_retries(
            lambda: self._sdk(op, fn), op=op, policy=self.retry, api=telemetry.RUNPOD_GRAPHQL
        )

    # --- port ------------------------------------------------------------------------------------

    def list_gpu_types(self, *, with_availability: bool = False) -> list[GpuType]:
        items = self._call("get_gpus", lambda: runpod.get_gpus(api_key=self._key))
        if not isinstance(items, list):
            raise errors.RunpodMalformedResponse(
                f"get_gpus: expected a list, got {excerpt(items)}", payload=excerpt(items)
            )
        out = []
        for g in items:
            gid = require(g, "id", str, what="GPU type", payload=g)
            base = GpuType(
                id=gid,
                display_name=str(g.get("displayName") or gid),
                memory_gb=g.get("memoryInGb") if isinstance(g.get("memoryInGb"), int) else None,
            )
            out.append(self._gpu_detail(base) if with_availability else base)
        return out

    def _gpu_detail(self, base: GpuType) -> GpuType:
        """Prices and a rough availability from ``get_gpu`` (one request per type)."""
        try:
            d = self._call("get_gpu", lambda: runpod.get_gpu(gql_escape(base.id), 1, api_key=self._key))
        except errors.RunpodMalformedResponse:
            return base
        if not isinstance(d, dict):
            return base
        raw_lowest = d.get("lowestPrice")
        lowest: dict[str, Any] = raw_lowest if isinstance(raw_lowest, dict) else {}
        # The SDK does not ask for stock; a null on-demand price is how "none to rent" shows here.
        price = lowest.get("uninterruptablePrice")
        available = None if not lowest else price is not None
        return GpuType(
            id=base.id,
            display_name=base.display_name,
            memory_gb=base.memory_gb,
            secure_price=_num(d.get("securePrice")),
            community_price=_num(d.get("communityPrice")),
            secure_cloud=d.get("secureCloud") if isinstance(d.get("secureCloud"), bool) else None,
            available=available,
            availability=None if available is None else ("AVAILABLE" if available else "NONE"),
        )

    def list_network_volumes(self) -> list[NetworkVolume]:
        me = self._call("get_user", lambda: runpod.get_user(api_key=self._key))
        if not isinstance(me, dict):
            raise errors.RunpodMalformedResponse(f"get_user: myself is {excerpt(me)}", payload=excerpt(me))
        vols = me.get("networkVolumes") or []
        out = []
        for v in vols:
            out.append(
                NetworkVolume(
                    id=require(v, "id", str, what="network volume", payload=v),
                    name=require(v, "name", str, what="network volume", payload=v),
                    size_gb=v.get("size") if isinstance(v.get("size"), int) else None,
                    data_center=require(v, "dataCenterId", str, what="network volume", payload=v),
                )
            )
        return out

    def create_pod(self, spec: PodSpec) -> Pod:
        env = {gql_escape(k): gql_escape(v) for k, v in check_env(spec.env).items()}
        kwargs: dict[str, Any] = {
            "name": gql_escape(spec.name),
            "image_name": gql_escape(spec.image),
            "gpu_type_id": gql_escape(spec.gpu_type_id),
            "cloud_type": spec.cloud if spec.cloud in ("SECURE", "COMMUNITY", "ALL") else "SECURE",
            "gpu_count": int(spec.gpu_count),
            # Sent as the original sent RUNPOD_DISK_SIZE_GB, with or without a network volume (which
            # then takes the volume disk's place at the mount path).
            "volume_in_gb": int(spec.volume_gb),
            "container_disk_in_gb": int(spec.container_disk_gb),
            "ports": gql_escape(",".join(spec.ports)),
            "volume_mount_path": gql_escape(spec.volume_mount_path),
            "env": env,
            "start_ssh": bool(spec.start_ssh),
            "support_public_ip": True,
            # Left out, not sent empty: the SDK's default sends dockerArgs: "", and pods created with an
            # empty args list have been seen never to start sshd (the worker then never boots and the
            # pod bills until the spawning timeout).
            "docker_args": None,
        }
        if spec.data_center_id:
            kwargs["data_center_id"] = gql_escape(spec.data_center_id)
        if spec.network_volume_id:
            kwargs["network_volume_id"] = gql_escape(spec.network_volume_id)

        lost = LostCreate(spec.name, self._find_by_name)

        def once() -> Pod:
            earlier = lost.before_attempt()
            if earlier is not None:
                return earlier
            try:
                created = self._sdk("create_pod", lambda: runpod.create_pod(**kwargs))
            except errors.RunpodTransientError as e:
                if spec.network_volume_id and spec.cloud != "SECURE" and _SOMETHING_WRONG_RE.search(str(e)):
                    # Deterministic for this spec: stop at once, and say what is wrong.
                    raise errors.RunpodRequestError(
                        f"create_pod: Runpod answered {str(e).split(': ', 1)[-1]!r} for a pod with network "
                        f"volume {spec.network_volume_id} on {spec.cloud} cloud; network volumes work with "
                        "Secure Cloud only: create the pod with cloud type SECURE"
                    ) from e
                # The mutation may have gone through: look for the pod by name before trying again.
                existing = lost.after_failure(e)
                if existing is not None:
                    return existing
                raise
            if not isinstance(created, dict) or not isinstance(created.get("id"), str):
                raise errors.RunpodMalformedResponse(
                    f"create_pod: no pod id in {excerpt(created)}", payload=excerpt(created)
                )
            env_back = _env_from_list(created.get("env"))
            return Pod(
                id=created["id"],
                name=spec.name,
                desired_status=RUNNING,
                actual_status=STARTING,
                gpu=spec.gpu_type_id,
                data_center=spec.data_center_id,
                requested_ssh_port="22/tcp" in spec.ports,
                env=env_back,
            )

        return call_with_retries(once, op="create_pod", policy=self.retry, api=telemetry.RUNPOD_GRAPHQL)

    def _find_by_name(self, name: str) -> Pod | None:
        """One un-retried look at the pod list (it runs inside the create's own retry budget): the live
        pod of that name, None when the list has none; raises when the list cannot be read, which is
        not "no such pod"."""
        items = self._sdk("get_pods", lambda: runpod.get_pods(api_key=self._key))
        if not isinstance(items, list):
            raise errors.RunpodMalformedResponse(
                f"get_pods: not a list: {excerpt(items)}", payload=excerpt(items)
            )
        # Leniently, as the listing is parsed: one malformed entry of another pod must not hide ours, or
        # the retry creates a second GPU pod for the same worker.
        pods = lenient_pods(items, _pod, transport=self.name)
        return next((p for p in pods if p.name == name and not p.is_gone), None)

    def get_pod(self, pod_id: str) -> Pod | None:
        pid = check_pod_id(pod_id)
        data = self._call("get_pod", lambda: runpod.get_pod(pid, api_key=self._key))
        if data is None:
            return None
        pod = _pod(data)
        return None if pod.is_gone else pod

    def list_pods(self) -> list[Pod]:
        items = self._call("get_pods", lambda: runpod.get_pods(api_key=self._key))
        if not isinstance(items, list):
            raise errors.RunpodMalformedResponse(
                f"get_pods: expected a list, got {excerpt(items)}", payload=excerpt(items)
            )
        return lenient_pods(items, _pod, transport=self.name)

    def terminate_pod(self, pod_id: str) -> bool:
        """True when Runpod accepted the termination or no longer knows the pod."""
        pid = check_pod_id(pod_id)
        try:
            self._call("terminate_pod", lambda: runpod.terminate_pod(pid))
        except errors.RunpodNotFound:
            return True
        return True

    def stop_pod(self, pod_id: str) -> Pod:
        """The SDK's ``stop_pod`` (``podStop``); the pod read back after it (``podStop`` answers only
        ``id`` and ``desiredStatus``). A stop refused for a pod that is stopped already counts as done."""
        pid = check_pod_id(pod_id)
        try:
            answer = self._call("stop_pod", lambda: runpod.stop_pod(pid))
        except errors.RunpodRequestError as e:
            # Runpod's words for "stopping an EXITED pod" are not known: whatever the refusal, a pod
            # found EXITED is stopped, as asked.
            pod = self.get_pod(pid)
            if pod is not None and pod.actual_status == EXITED:
                log.info("runpod_action_already_done", runpod_id=pid, status=EXITED)
                return pod
            if pod is None:
                raise errors.RunpodNotFound(f"{e}; and pod {pid} is not found", status=404) from e
            raise
        return self._after_action(pid, answer, "stop_pod")

    def start_pod(self, pod_id: str, gpu_count: int) -> Pod:
        """The SDK's ``resume_pod`` (``podResume`` with ``gpuCount``); the pod read back after it for its
        ``gpuCount`` (``podResume`` does not answer it): 0 means it started without a GPU. "There are
        not enough free GPUs on the host machine to start this pod" raises ``RunpodNoGpuOnHost``."""
        pid = check_pod_id(pod_id)
        count = int(gpu_count)
        try:
            answer = self._call("resume_pod", lambda: runpod.resume_pod(pid, count))
        except errors.RunpodRequestError:
            # A retried resume whose first answer was lost is refused: the pod is already on its way.
            pod = self.get_pod(pid)
            if pod is not None and pod.desired_status == RUNNING:
                log.info("runpod_action_already_done", runpod_id=pid, status=pod.actual_status)
                return pod
            raise
        return self._after_action(pid, answer, "resume_pod")

    def _after_action(self, pid: str, answer: Any, op: str) -> Pod:
        """The pod after a stop or resume: read back, else what the mutation answered."""
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            raise errors.RunpodMalformedResponse(
                f"{op}: no pod in {excerpt(answer)}", payload=excerpt(answer)
            )
        try:
            pod = self.get_pod(pid)
        except errors.RunpodError as e:
            log.info("runpod_pod_read_back_failed", runpod_id=pid, op=op, error=str(e)[:200])
            pod = None
        if pod is not None:
            return pod
        desired = str(answer.get("desiredStatus") or "")
        actual = EXITED if desired == EXITED else TERMINATED if desired == TERMINATED else STARTING
        return Pod(id=pid, name="", desired_status=desired, actual_status=actual)


# --- mapping -----------------------------------------------------------------------------------------


def _map_query_error(op: str, message: str) -> errors.RunpodError:
    msg = f"{op}: {message}"
    if _UNAUTHORIZED_RE.search(message):
        return errors.RunpodAuthError(f"{msg} (check RUNPOD_API_KEY and its permissions)", status=403)
    if is_no_gpu_on_host_message(message):
        return errors.RunpodNoGpuOnHost(msg)
    if is_capacity_message(message):
        return errors.RunpodCapacityError(msg)
    if _RATE_RE.search(message):
        return errors.RunpodRateLimited(msg, status=429)
    if _NOT_FOUND_RE.search(message):
        return errors.RunpodNotFound(msg, status=404)
    if _TRANSIENT_RE.search(message):
        return errors.RunpodTransientError(msg)
    return errors.RunpodRequestError(msg)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _env_from_list(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    out: dict[str, str] = {}
    if not isinstance(raw, list):
        return out  # informative only: an unforeseen shape says nothing against the pod
    for item in raw:
        if isinstance(item, str) and "=" in item:
            k, v = item.split("=", 1)
            out[k] = v
    return out


@pod_parser
def _pod(p: Any) -> Pod:
    """Normalise the SDK's pod dict. ``desiredStatus`` RUNNING is not readiness: ``runtime`` is."""
    pid = require(p, "id", str, what="pod", payload=p)
    desired = require(p, "desiredStatus", str, what="pod", payload=p)
    runtime = p.get("runtime")
    if runtime is not None and not isinstance(runtime, dict):
        raise errors.RunpodMalformedResponse(
            f"malformed pod {pid}: runtime is {type(runtime).__name__}; payload: {excerpt(p)}",
            payload=excerpt(p),
        )
    mappings: list[PortMapping] = []
    for rp in (runtime or {}).get("ports") or []:
        if isinstance(rp, dict) and rp.get("privatePort") is None:
            # As over REST (openapi PodRuntimePort requires none of its fields): an entry without its
            # private port maps nothing usable, and says nothing against the pod or its other entries.
            log.debug("runpod_runtime_port_skipped", runpod_id=pid, port=excerpt(rp, 120))
            continue
        if not isinstance(rp, dict) or not isinstance(rp.get("privatePort"), int):
            raise errors.RunpodMalformedResponse(
                f"malformed pod {pid}: bad runtime port {excerpt(rp, 120)}", payload=excerpt(p)
            )
        public = rp.get("publicPort") if isinstance(rp.get("publicPort"), int) else None
        mappings.append(
            PortMapping(
                private_port=rp["privatePort"],
                public_port=public,
                ip=rp.get("ip") if isinstance(rp.get("ip"), str) else None,
                type=str(rp.get("type") or ""),
                is_public=bool(rp.get("isIpPublic")),
            )
        )
    actual: str
    if desired == TERMINATED:
        actual = TERMINATED
    elif desired == EXITED:
        actual = EXITED
    elif desired in ("DEAD", "FAILED", "ERROR"):
        actual = "ERROR"
    elif runtime:
        actual = RUNNING
    else:
        actual = STARTING
    ip: str | None = None
    ssh_port: int | None = None
    for m in mappings:
        if m.private_port == 22 and m.type == "tcp" and m.is_public and m.public_port is not None:
            ip, ssh_port = m.ip, m.public_port
            break
    requested = str(p.get("ports") or "")
    machine = p.get("machine") if isinstance(p.get("machine"), dict) else {}
    uptime = p.get("uptimeSeconds")
    gpu_count = p.get("gpuCount")
    return Pod(
        id=pid,
        name=str(p.get("name") or ""),
        desired_status=desired,
        actual_status=actual,
        ip=ip if actual == RUNNING else None,
        ssh_port=ssh_port if actual == RUNNING else None,
        ports=tuple(mappings),
        cost_per_hr=_num(p.get("costPerHr")) or 0.0,
        created_at=p.get("createdAt") if isinstance(p.get("createdAt"), str) else None,
        last_status_change=p.get("lastStatusChange") if isinstance(p.get("lastStatusChange"), str) else None,
        uptime_seconds=uptime if isinstance(uptime, int) else 0,
        gpu=machine.get("gpuDisplayName") if isinstance(machine.get("gpuDisplayName"), str) else None,
        data_center=p.get("dataCenterId") if isinstance(p.get("dataCenterId"), str) else None,
        requested_ssh_port="22/tcp" in requested.replace(" ", "").split(","),
        has_runtime=bool(runtime),
        env=_env_from_list(p.get("env")),
        gpu_count=gpu_count if isinstance(gpu_count, int) and not isinstance(gpu_count, bool) else None,
    )
