"""Runpod REST API v2 adapter (httpx), the default transport of ``RunpodTransport``.

Paths, bodies and shapes follow ``openapi-v2.json``: ``GET/POST /v2/pods``, ``GET /v2/pods/{id}``,
``POST /v2/pods/{id}/action`` (``terminate``, ``stop``, ``start``), ``GET /v2/catalog/gpus``,
``GET /v2/network-volumes``. Errors arrive in RFC 9457 form (``{title, status, detail, errors?}``) and
are mapped here to ``orchestrator.core.errors`` types; the retry policy is
``orchestrator.adapters.runpod.base.call_with_retries``. Some mappings follow the spec's per-operation
meaning rather than the status alone: createPod's 403 ("cannot access the requested pool: skip this
candidate") is a ``RunpodCapacityError`` of status 403 (``orchestrator.adapters.placement`` turns a
round of nothing but 403s into a ``RunpodAuthError``); podAction answers 409 to an action the pod's status does not
allow, so a 409 to ``terminate`` (already TERMINATED), ``stop`` (already EXITED) or ``start`` (already
on its way to RUNNING, after a retried start whose first answer was lost) is confirmed by reading the
pod. A refusal in Runpod's words for a full host ("There are not enough free GPUs on the host machine
to start this pod"), whatever its status (the spec does not say which), is ``RunpodNoGpuOnHost``.

Pod creation is not idempotent on the wire. A 429 means the server did nothing, so it is retried as
it is; a 5xx may come after the pod was made (a lost response) and a timeout or dropped connection is
ambiguous, so before trying again we look for a pod with the same name (pods are named after their
worker) and return it if it exists.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from orchestrator.adapters.runpod.base import (
    DEFAULT_RETRY,
    ERROR,
    EXITED,
    PROVISIONING,
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
    parse_rate_limit_reset,
    parse_rate_limit_windows,
    pod_parser,
    require,
)
from orchestrator.core import errors

log = structlog.get_logger(__name__)

_STATUSES = {PROVISIONING, STARTING, RUNNING, EXITED, ERROR, TERMINATED}


class _Ambiguous(errors.RunpodTransientError):
    """The request may have reached the server (timeout or broken connection after sending)."""


# Requests kept, in every rate-limit window, for what ends billing (terminations, stops) and for the
# pod listing that confirms them: below this many left, other requests (creations, reads, starts) wait
# for the window's reset instead of spending what an ending may need. Runpod publishes no quota; its
# openapi example is 60 a minute, 3,000 an hour, 50,000 a day (``RateLimitPolicyHeader``).
RATE_LIMIT_RESERVE = 10
# Two answers whose reset times differ by at most this much speak of the same window (``t`` is whole
# seconds, and answers arrive a round trip apart).
WINDOW_SAME_SEC = 2.0


class RestTransport:
    """``RunpodTransport`` over REST v2.

    Every authenticated answer carries ``RateLimit`` (openapi: requests left and seconds to reset, per
    window); the transport keeps the latest, counts its own requests down from it, and holds back all
    but endings near the end of a window (``RATE_LIMIT_RESERVE``)."""

    name = "rest"

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.runpod.io",
        *,
        timeout: float = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        client: httpx.Client | None = None,
    ) -> None:
        if not api_key:
            raise errors.RunpodAuthError("no Runpod API key configured (RUNPOD_API_KEY)")
        self.base_url = base_url.rstrip("/") + "/v2"
        self.retry = retry
        self._windows: dict[str, tuple[int, float]] = {}  # name -> (left, resets at, monotonic)
        self._windows_lock = threading.Lock()
        self._ending = threading.local()
        self._http = client or httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        )

    def close(self) -> None:
        self._http.close()

    # --- wire ------------------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> httpx.Response:
        """One request, its failure mapped to our types (no retries here)."""
        self._spend_one(method, path)
        try:
            resp = self._http.request(method, path, json=json, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            # Nothing reached the server: safe to retry anything.
            raise errors.RunpodTransientError(f"{method} {path}: cannot connect to Runpod: {e}") from e
        except (httpx.TimeoutException, httpx.TransportError) as e:
            raise _Ambiguous(f"{method} {path}: {type(e).__name__}: {e}") from e
        self._note_windows(resp.headers)
        status = resp.status_code
        if status < 400:
            return resp
        detail = _problem_detail(resp)
        msg = f"{method} {path} -> HTTP {status}: {detail}"
        if status in (401, 403):
            raise errors.RunpodAuthError(
                f"Runpod refused the API key (HTTP {status}: {detail}); check RUNPOD_API_KEY and its permissions",
                status=status,
                payload=excerpt(resp.text),
            )
        if status == 404:
            raise errors.RunpodNotFound(msg, status=status, payload=excerpt(resp.text))
        if status == 429:
            raise errors.RunpodRateLimited(
                msg,
                retry_after=parse_rate_limit_reset(resp.headers),
                status=status,
                payload=excerpt(resp.text),
            )
        if is_no_gpu_on_host_message(detail):
            # Not retried, whatever the status: the pod's host stays full until someone else leaves it.
            raise errors.RunpodNoGpuOnHost(msg, status=status, payload=excerpt(resp.text))
        if status >= 500:
            raise errors.RunpodTransientError(msg, status=status, payload=excerpt(resp.text))
        if status == 400 and is_capacity_message(detail):
            raise errors.RunpodCapacityError(msg, status=status, payload=excerpt(resp.text))
        raise errors.RunpodRequestError(msg, status=status, payload=excerpt(resp.text))

    @contextlib.contextmanager
    def _as_ending(self) -> Iterator[None]:
        """Requests made inside may use the reserve (thread by thread: actions run concurrently)."""
        before = getattr(self._ending, "on", False)
        self._ending.on = True
        try:
            yield
        finally:
            self._ending.on = before

    def _spend_one(self, method: str, path: str) -> None:
        now = time.monotonic()
        with self._windows_lock:
            if not getattr(self._ending, "on", False):
                for window, (left, until) in self._windows.items():
                    if now < until and left <= RATE_LIMIT_RESERVE:
                        # Not sent, so safe to send later. A creation or a start waits for the reset
                        # (call_with_retries, when it is near enough), as it would after a 429; a read
                        # does not: the diagnostics read before a failed worker's termination, or the
                        # catalog refresh on the tick thread, would hold up endings, and the next tick
                        # reads again.
                        raise errors.RunpodRateLimited(
                            f"{method} {path}: held back: {left} requests left in Runpod's {window}"
                            f" rate-limit window, kept for terminations, stops and the pod listing"
                            f" (it resets in {until - now:.0f} s)",
                            retry_after=until - now,
                            held_back=method == "GET",
                        )
            for window, (left, until) in list(self._windows.items()):
                if now < until:
                    self._windows[window] = (left - 1, until)

    def _note_windows(self, headers: Mapping[str, str]) -> None:
        windows = parse_rate_limit_windows(headers)
        if windows:
            now = time.monotonic()
            with self._windows_lock:
                for name, (left, t) in windows.items():
                    until = now + t
                    known = self._windows.get(name)
                    if known is not None and now < known[1] and abs(until - known[1]) <= WINDOW_SAME_SEC:
                        # The same window: an answer counts none of the requests still in flight, and a
                        # slow one carries an older, higher count. Requests spent stay spent.
                        left = min(left, known[0])
                    self._windows[name] = (left, until)

    def _json(self, resp: httpx.Response, what: str) -> Any:
        try:
            return resp.json()
        except ValueError as e:
            raise errors.RunpodMalformedResponse(
                f"malformed {what}: HTTP {resp.status_code} with a body that is not JSON "
                f"({resp.headers.get('content-type', '?')}): {excerpt(resp.text)}",
                status=resp.status_code,
                payload=excerpt(resp.text),
            ) from e

    def _get(self, path: str, what: str, params: dict[str, str] | None = None) -> Any:
        def once() -> Any:
            try:
                return self._json(self._send("GET", path, params=params), what)
            except _Ambiguous as e:  # a GET is safe to repeat
                raise errors.RunpodTransientError(str(e)) from e

        return call_with_retries(once, op=f"GET {path}", policy=self.retry)

    # --- port ------------------------------------------------------------------------------------

    def list_gpu_types(self, *, with_availability: bool = False) -> list[GpuType]:
        params = {"include": "AVAILABILITY", "product": "POD"} if with_availability else None
        body = self._get("/catalog/gpus", "GPU catalog", params)
        items = require(body, "gpus", list, what="GPU catalog", payload=body)
        return [_gpu(g, body) for g in items]

    def list_network_volumes(self) -> list[NetworkVolume]:
        body = self._get("/network-volumes", "network volume list")
        items = require(body, "networkVolumes", list, what="network volume list", payload=body)
        out = []
        for v in items:
            out.append(
                NetworkVolume(
                    id=require(v, "id", str, what="network volume", payload=v),
                    name=require(v, "name", str, what="network volume", payload=v),
                    size_gb=v.get("size") if isinstance(v.get("size"), int) else None,
                    data_center=require(v, "dataCenter", str, what="network volume", payload=v),
                )
            )
        return out

    def create_pod(self, spec: PodSpec) -> Pod:
        body = _create_body(spec)
        lost = LostCreate(spec.name, self._find_by_name)

        def once() -> Pod:
            earlier = lost.before_attempt()
            if earlier is not None:
                return earlier
            try:
                resp = self._send("POST", "/pods", json=body)
            except errors.RunpodAuthError as e:
                # createPod's 403 means "your account cannot access the requested pool: skip this
                # candidate" (openapi createPod), not a bad key (that is 401): the caller falls
                # through to its next GPU type, as for no capacity. A key lacking the permission to
                # create pods gets 403 too (openapi ApiKeyAuth): placement.create reads a round in
                # which every candidate answered 403 as that, a RunpodAuthError.
                if e.status != 403:
                    raise
                raise errors.RunpodCapacityError(
                    f"POST /pods -> HTTP 403: the account cannot rent {spec.gpu_type_id} here ({e})",
                    status=403,
                    payload=e.payload,
                ) from e
            except errors.RunpodTransientError as e:
                # A 5xx can come after the pod was made (a lost response), a timeout may or may not
                # have reached the server: look for the pod by name before trying again.
                existing = lost.after_failure(e)
                if existing is not None:
                    return existing
                if isinstance(e, _Ambiguous):
                    raise errors.RunpodTransientError(str(e)) from e
                raise
            data = self._json(resp, "created pod")
            return _pod(data)

        return call_with_retries(once, op="POST /pods", policy=self.retry)

    def _find_by_name(self, name: str) -> Pod | None:
        """One un-retried look at the pod list (it runs inside the create's own retry budget): the live
        pod of that name, None when the list has none; raises when the list cannot be read, which is
        not "no such pod". May use the reserve: held back, the look-up would fail for want of quota."""
        with self._as_ending():
            try:
                body = self._json(self._send("GET", "/pods"), "pod list")
            except _Ambiguous as e:
                raise errors.RunpodTransientError(str(e)) from e
            items = require(body, "pods", list, what="pod list", payload=body)
            pods = lenient_pods(items, _pod, transport=self.name)
        return next((p for p in pods if p.name == name and not p.is_gone), None)

    def get_pod(self, pod_id: str) -> Pod | None:
        path = f"/pods/{quote(check_pod_id(pod_id), safe='')}"
        try:
            data = self._get(path, "pod")
        except errors.RunpodNotFound:
            return None
        pod = _pod(data)
        return None if pod.actual_status == TERMINATED else pod

    def list_pods(self) -> list[Pod]:
        with self._as_ending():  # the listing is what confirms an ending, and what health is judged on
            body = self._get("/pods", "pod list")
        items = require(body, "pods", list, what="pod list", payload=body)
        return lenient_pods(items, _pod, transport=self.name)

    def terminate_pod(self, pod_id: str) -> bool:
        """True when Runpod confirms the pod is gone or terminating (an unknown pod counts as gone)."""
        path = f"/pods/{quote(check_pod_id(pod_id), safe='')}/action"

        def once() -> bool:
            try:
                resp = self._send("POST", path, json={"action": "terminate"})
            except errors.RunpodNotFound:
                return True
            except _Ambiguous as e:
                # Terminating twice is harmless, so an ambiguous attempt is simply retried.
                raise errors.RunpodTransientError(str(e)) from e
            except errors.RunpodRequestError as e:
                # podAction answers 409 to an action the pod's status does not allow, and TERMINATED
                # is the only status without ``terminate``: a pod still shown as TERMINATED after an
                # earlier terminate lands here. Confirm by reading the pod rather than reporting failure.
                if e.status != 409:
                    raise
                return self._confirm_terminated(pod_id, e)
            return resp.status_code in (200, 202, 204)

        with self._as_ending():
            return call_with_retries(once, op=f"POST {path}", policy=self.retry)

    def stop_pod(self, pod_id: str) -> Pod:
        """``{"action": "stop"}``: the pod as Runpod reports it after the stop (``EXITED``)."""
        path = f"/pods/{quote(check_pod_id(pod_id), safe='')}/action"

        def once() -> Pod:
            try:
                resp = self._send("POST", path, json={"action": "stop"})
            except _Ambiguous as e:
                # Stopping twice is harmless: a stop that did go through makes the retry a 409, below.
                raise errors.RunpodTransientError(str(e)) from e
            except errors.RunpodRequestError as e:
                # Only EXITED and ERROR lack ``stop``: an EXITED pod is stopped already (an ERROR one is
                # not, and the 409 stands).
                if e.status != 409:
                    raise
                return self._confirm_after_conflict(pod_id, e, (EXITED,))
            return self._action_answer(pod_id, resp, "stopped pod")

        with self._as_ending():
            return call_with_retries(once, op=f"POST {path} stop", policy=self.retry)

    def start_pod(self, pod_id: str, gpu_count: int) -> Pod:
        """``{"action": "start"}``: the pod as reported after the start. REST v2's start takes no GPU
        count (``PodActionRequest`` allows ``action`` only): the pod asks for what it was created with,
        and ``gpu_count`` of the answer says what it got."""
        path = f"/pods/{quote(check_pod_id(pod_id), safe='')}/action"

        def once() -> Pod:
            try:
                resp = self._send("POST", path, json={"action": "start"})
            except _Ambiguous as e:
                # A start that reached the server makes the retry a 409 (the pod is no longer EXITED).
                raise errors.RunpodTransientError(str(e)) from e
            except errors.RunpodNoGpuOnHost:
                raise
            except errors.RunpodRequestError as e:
                if e.status != 409:
                    raise
                return self._confirm_after_conflict(pod_id, e, (PROVISIONING, STARTING, RUNNING))
            return self._action_answer(pod_id, resp, "started pod")

        return call_with_retries(once, op=f"POST {path} start", policy=self.retry)

    def _action_answer(self, pod_id: str, resp: httpx.Response, what: str) -> Pod:
        """The pod an accepted action answered with. The openapi documents a body for every action but
        terminate (204, no body); an empty 2xx to a stop or a start was still an accepted action, and read
        as a malformed refusal it logged a stop that went through as failed: the pod is read back."""
        if resp.status_code == 204 or not resp.content.strip():
            return _pod(self._json(self._send("GET", f"/pods/{quote(pod_id, safe='')}"), "pod"))
        return _pod(self._json(resp, what))

    def _confirm_after_conflict(
        self, pod_id: str, conflict: errors.RunpodRequestError, wanted: tuple[str, ...]
    ) -> Pod:
        """After a 409 to an action: the pod when it already is where the action leads, else the 409."""
        try:
            data = self._json(self._send("GET", f"/pods/{quote(pod_id, safe='')}"), "pod")
        except errors.RunpodNotFound as e:
            raise errors.RunpodNotFound(f"{conflict}; and pod {pod_id} is not found", status=404) from e
        pod = _pod(data)
        if pod.actual_status in wanted:
            log.info("runpod_action_already_done", runpod_id=pod_id, status=pod.actual_status)
            return pod
        raise conflict

    def _confirm_terminated(self, pod_id: str, conflict: errors.RunpodRequestError) -> bool:
        """After a 409 to ``terminate``: True if the pod is gone or TERMINATED, else the 409 stands."""
        try:
            data = self._json(self._send("GET", f"/pods/{quote(pod_id, safe='')}"), "pod")
        except errors.RunpodNotFound:
            return True
        status = data.get("status") if isinstance(data, dict) else None
        if status == TERMINATED:
            log.info("runpod_terminate_already_terminated", runpod_id=pod_id)
            return True
        raise conflict


# --- shapes ----------------------------------------------------------------------------------------


def _problem_detail(resp: httpx.Response) -> str:
    """The RFC 9457 ``detail`` (plus ``errors``), or an excerpt of whatever came back."""
    try:
        body = resp.json()
    except ValueError:
        return excerpt(resp.text, 200)
    if isinstance(body, dict):
        detail = str(body.get("detail") or body.get("title") or excerpt(body, 200))
        extra = body.get("errors")
        if isinstance(extra, list) and extra:
            detail += " (" + "; ".join(str(x) for x in extra[:5]) + ")"
        return detail
    return excerpt(body, 200)


def _create_body(spec: PodSpec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": spec.name,
        "image": spec.image,
        "gpu": {"id": spec.gpu_type_id, "count": spec.gpu_count},
        "cloud": spec.cloud,
        "disk": spec.container_disk_gb,
        "ports": list(spec.ports),
        "env": check_env(spec.env),
        "startSsh": spec.start_ssh,
    }
    if spec.data_center_id:
        body["dataCenterIds"] = [spec.data_center_id]
    # RUNPOD_DISK_SIZE_GB is the volume disk (GraphQL's volumeInGb, v2's persistent mount). A network
    # mount and a persistent one are mutually exclusive in v2: with a network volume, which takes the
    # volume disk's place at the mount path, the size cannot be sent at all.
    if spec.network_volume_id:
        body["mounts"] = {"network": [{"volumeId": spec.network_volume_id, "path": spec.volume_mount_path}]}
    elif spec.volume_gb >= 10:
        body["mounts"] = {"persistent": {"size": spec.volume_gb, "path": spec.volume_mount_path}}
    elif spec.volume_gb > 0:
        # openapi PersistentMount.size: minimum 10. Refused here rather than silently dropped.
        raise errors.RunpodRequestError(
            f"refused before sending: a volume disk of {spec.volume_gb} GB (RUNPOD_DISK_SIZE_GB); REST v2 "
            "takes 0 (none) or at least 10"
        )
    return body


def _gpu(g: Any, payload: Any) -> GpuType:
    gid = require(g, "id", str, what="GPU type", payload=g)
    price = g.get("price") if isinstance(g.get("price"), dict) else {}
    availability = g.get("availability") if isinstance(g.get("availability"), str) else None
    dcs = g.get("dataCenters") if isinstance(g.get("dataCenters"), list) else []
    return GpuType(
        id=gid,
        display_name=str(g.get("name") or gid),
        memory_gb=g.get("memory") if isinstance(g.get("memory"), int) else None,
        secure_price=_num(price.get("secure")),
        community_price=_num(price.get("community")),
        secure_cloud=g.get("secure") if isinstance(g.get("secure"), bool) else None,
        available=None if availability is None else availability != "NONE",
        availability=availability,
        data_centers=tuple(
            str(d.get("id")) for d in dcs if isinstance(d, dict) and d.get("availability", "NONE") != "NONE"
        ),
    )


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


# Runpod's internal addresses: the GraphQL API lists them beside the public mapping with isIpPublic
# false (runpod-python's pod queries read ``isIpPublic``); REST v2's PodRuntimePort has no such flag.
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")


def _reachable(host: str) -> bool:
    """Whether a runtime port's ``ip`` can be reached from outside the data center. Private, link-local
    and carrier-grade NAT (100.64/10, which Python does not count as private) addresses cannot. Loopback
    can (a pod on this machine); a host name is taken as given."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True
    if address.is_loopback:
        return True
    if address.version == 4 and address in _SHARED_ADDRESS_SPACE:
        return False
    return not (address.is_private or address.is_link_local or address.is_unspecified)


@pod_parser
def _pod(p: Any) -> Pod:
    """Normalise a v2 ``Pod``; a body that contradicts the schema raises ``RunpodMalformedResponse``."""
    pid = require(p, "id", str, what="pod", payload=p)
    status = require(p, "status", str, what="pod", payload=p)
    if status not in _STATUSES:
        raise errors.RunpodMalformedResponse(
            f"malformed pod {pid}: unknown status {status!r}; payload: {excerpt(p)}", payload=excerpt(p)
        )
    # ``runtime`` is nullable in the schema and only promised null when the pod is not RUNNING; a
    # RUNNING pod whose metrics have not arrived yet is simply not reachable yet (has_runtime False).
    runtime = p.get("runtime")
    if runtime is not None and not isinstance(runtime, dict):
        raise errors.RunpodMalformedResponse(
            f"malformed pod {pid}: runtime is {type(runtime).__name__}; payload: {excerpt(p)}",
            payload=excerpt(p),
        )
    mappings: list[PortMapping] = []
    for rp in (runtime or {}).get("ports") or []:
        if isinstance(rp, dict) and rp.get("private") is None:
            # openapi PodRuntimePort requires none of its fields: an entry without its private port
            # maps nothing we could use, and says nothing against the pod or its other entries.
            log.debug("runpod_runtime_port_skipped", runpod_id=pid, port=excerpt(rp, 120))
            continue
        if not isinstance(rp, dict) or not isinstance(rp.get("private"), int):
            raise errors.RunpodMalformedResponse(
                f"malformed pod {pid}: bad runtime port {excerpt(rp, 120)}", payload=excerpt(p)
            )
        public = rp.get("public") if isinstance(rp.get("public"), int) else None
        port_ip = rp.get("ip") if isinstance(rp.get("ip"), str) else None
        mappings.append(
            PortMapping(
                private_port=rp["private"],
                public_port=public,
                ip=port_ip,
                type=str(rp.get("type") or ""),
                is_public=public is not None and port_ip is not None and _reachable(port_ip),
            )
        )
    ip: str | None = None
    ssh_port: int | None = None
    ssh = p.get("ssh") if isinstance(p.get("ssh"), dict) else {}
    direct = ssh.get("direct") if isinstance(ssh.get("direct"), dict) else None
    if direct and isinstance(direct.get("host"), str) and isinstance(direct.get("port"), int):
        ip, ssh_port = direct["host"], direct["port"]
    else:
        for m in mappings:
            if m.private_port == 22 and m.type == "tcp" and m.is_public:
                ip, ssh_port = m.ip, m.public_port
                break
    requested = p.get("ports") if isinstance(p.get("ports"), list) else []
    env = p.get("env") if isinstance(p.get("env"), dict) else {}
    gpu = p.get("gpu") if isinstance(p.get("gpu"), dict) else {}
    desired = {EXITED: EXITED, TERMINATED: TERMINATED}.get(status, RUNNING)
    uptime = (runtime or {}).get("uptime")
    # ``gpu`` is "present for GPU pods; omitted from CPU pods" (openapi Pod), its count defaulting to 1:
    # a pod without it has no GPU, as a stopped pod started without one (counted 0, leniently, too).
    raw_gpu = p.get("gpu")
    gpu_count: int | None = 0
    if isinstance(raw_gpu, dict):
        count = raw_gpu.get("count", 1)
        gpu_count = count if isinstance(count, int) and not isinstance(count, bool) else None
    return Pod(
        id=pid,
        name=str(p.get("name") or ""),
        desired_status=desired,
        actual_status=status,
        ip=ip if status == RUNNING else None,
        ssh_port=ssh_port if status == RUNNING else None,
        ports=tuple(mappings),
        cost_per_hr=_num(p.get("cost")) or 0.0,
        created_at=p.get("createdAt") if isinstance(p.get("createdAt"), str) else None,
        uptime_seconds=uptime if isinstance(uptime, int) else 0,
        gpu=gpu.get("id") if isinstance(gpu.get("id"), str) else None,
        data_center=p.get("dataCenterId") if isinstance(p.get("dataCenterId"), str) else None,
        requested_ssh_port="22/tcp" in requested,
        has_runtime=bool(runtime),
        env={str(k): str(v) for k, v in env.items()},
        gpu_count=gpu_count,
    )
