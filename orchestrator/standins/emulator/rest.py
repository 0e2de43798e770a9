"""The REST API v2 subset of the Runpod emulator.

Part of ``orchestrator/standins/emulator``: :mod:`.server` authenticates, applies the API fault knobs and
rate limits, then calls :func:`handle` with the method, path, query and body. This module routes the
request and answers the pod and network volume endpoints; the create body is checked by
:mod:`.rest_create` (:func:`parse_create`, re-exported here) and the catalog endpoints are answered by
:mod:`.rest_catalog`. Shapes, field names and status codes follow ``openapi-v2.json`` (``Pod``,
``ListPodsResponse``, ``GpuType``, ``DataCenter``, ``NetworkVolume``, ``ErrorResponse`` in RFC 9457
form). Every refusal of the state model (:class:`.state.EmulatorRefusal`) becomes a problem document here.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, unquote

from . import rest_catalog
from .rest_create import parse_create
from .state import (
    RUNNING,
    EmulatorRefusal,
    EmulatorState,
    Pod,
    Volume,
    rfc3339,
)

__all__ = [
    "MUTATING",
    "TITLES",
    "Response",
    "handle",
    "parse_create",
    "problem",
    "render_pod",
    "render_volume",
]

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

Response = tuple[int, Any, dict[str, str]]


def problem(status: int, detail: str, errors: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"title": TITLES.get(status, "Error"), "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return body


class _Route:
    def __init__(self, pattern: str, methods: dict[str, str]) -> None:
        self.regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        self.methods = methods


_ROUTES = [
    _Route("/v2/pods", {"GET": "list_pods", "POST": "create_pod"}),
    _Route("/v2/pods/{id}", {"GET": "get_pod", "DELETE": "delete_pod", "PATCH": "not_implemented"}),
    _Route("/v2/pods/{id}/action", {"POST": "pod_action"}),
    _Route("/v2/catalog/gpus", {"GET": "list_gpus"}),
    _Route("/v2/catalog/gpus/{id}", {"GET": "get_gpu"}),
    _Route("/v2/catalog/datacenters", {"GET": "list_dcs"}),
    _Route("/v2/catalog/datacenters/{id}", {"GET": "get_dc"}),
    _Route("/v2/network-volumes", {"GET": "list_volumes", "POST": "create_volume"}),
    _Route(
        "/v2/network-volumes/{id}", {"GET": "get_volume", "PATCH": "update_volume", "DELETE": "delete_volume"}
    ),
]

MUTATING = frozenset({"POST", "PATCH", "DELETE", "PUT"})


def handle(state: EmulatorState, method: str, path: str, query: str, body: bytes) -> Response:
    """Answer one authenticated REST v2 request: (status, JSON body or None, extra headers)."""
    for route in _ROUTES:
        m = route.regex.match(path)
        if m is None:
            continue
        name = route.methods.get(method)
        if name is None:
            allow = ", ".join(route.methods)
            return 405, problem(405, "The requested method is not allowed for this path."), {"Allow": allow}
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            path_args = {k: unquote(v) for k, v in m.groupdict().items()}
            result: Response = _HANDLERS[name](state, path_args, params, body)
        except EmulatorRefusal as exc:
            return exc.status, problem(exc.status, exc.detail, exc.errors), {}
        return result
    return 404, problem(404, f"no route for {path}"), {}


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise EmulatorRefusal("bad_request", f"request body is not valid JSON: {exc}") from exc


# --- rendering ------------------------------------------------------------------------------------


def render_pod(state: EmulatorState, pod: Pod, mono: float | None = None) -> dict[str, Any]:
    now = time.monotonic() if mono is None else mono
    published = pod.status == RUNNING and pod.ssh_port is not None
    direct = None
    runtime = None
    if published:
        runtime = {
            "uptime": pod.uptime_s(now),
            "gpus": [{"util": 0, "memoryUtil": 0} for _ in range(pod.gpu_count)],
            "cpu": {"util": 1},
            "memory": {"util": 3},
            "ports": [
                {"private": 22, "public": pod.ssh_port, "type": "tcp", "ip": "127.0.0.1"}
                for p in pod.ports
                if p == "22/tcp"
            ],
        }
        if "22/tcp" in pod.ports:
            direct = {
                "host": "127.0.0.1",
                "port": pod.ssh_port,
                "username": "root",
                "command": f"ssh root@127.0.0.1 -p {pod.ssh_port}",
            }
    if pod.volume_id is not None:
        mounts: dict[str, Any] = {"network": [{"volumeId": pod.volume_id, "path": pod.mount_path}]}
    elif pod.persistent_gb:
        mounts = {"persistent": {"size": pod.persistent_gb, "path": pod.mount_path}}
    else:
        mounts = {}
    body: dict[str, Any] = {
        "id": pod.id,
        "name": pod.name,
        "image": pod.image,
        "args": pod.args,
        "disk": pod.disk_gb,
        "ports": list(pod.ports),
        "env": dict(pod.env),
        "registry": None,
        "status": pod.status,
        "actions": pod.actions,
        "mounts": mounts,
        "gpu": {"id": pod.gpu.id, "count": pod.gpu_count},
        "cloud": pod.cloud,
        "dataCenterId": pod.dc_id,
        "cudaVersion": pod.gpu.cuda_version,
        "ssh": {
            "proxy": {
                "host": "ssh.runpod.io",
                "port": 22,
                "username": pod.proxy_user,
                "command": f"ssh {pod.proxy_user}@ssh.runpod.io",
            },
            "direct": direct,
        },
        "template": None,
        "cost": pod.current_cost(),
        "locked": False,
        "globalNetworking": {"enabled": False},
        "runtime": runtime,
        "createdAt": rfc3339(pod.created_at),
        "startedAt": rfc3339(pod.started_at),
    }
    if pod.gpu_count == 0:
        # Started without a GPU (its host's was taken): openapi's GpuConfig cannot say 0 (count >= 1)
        # and ``gpu`` is "omitted from CPU pods", so the pod is shown as one. The real rendering of this
        # case is not documented.
        del body["gpu"]
    return body


def render_volume(v: Volume) -> dict[str, Any]:
    return {"id": v.id, "name": v.name, "size": v.size, "dataCenter": v.data_center_id, "type": v.type}


# --- pods -----------------------------------------------------------------------------------------


def _list_pods(state: EmulatorState, _m: dict[str, str], params: dict[str, str], _b: bytes) -> Response:
    with state.lock:
        mono = time.monotonic()
        return 200, {"pods": [render_pod(state, p, mono) for p in state.list_pods()]}, {}


def _get_pod(state: EmulatorState, m: dict[str, str], _p: dict[str, str], _b: bytes) -> Response:
    with state.lock:
        pod = state.get_pod(m["id"])
        if pod is None:
            return 404, problem(404, f"pod {m['id']} not found"), {}
        return 200, render_pod(state, pod), {}


def _delete_pod(state: EmulatorState, m: dict[str, str], _p: dict[str, str], _b: bytes) -> Response:
    state.terminate_pod(m["id"])
    return 204, None, {}


def _pod_action(state: EmulatorState, m: dict[str, str], _p: dict[str, str], body: bytes) -> Response:
    data = _json_body(body)
    errors = []
    if not isinstance(data, dict):
        errors.append("body: must be an object")
    else:
        extra = set(data) - {"action"}
        if extra:
            errors.append(f"body: unexpected properties {sorted(extra)}")
        if "action" not in data:
            errors.append("action: required")
        elif data["action"] not in ("start", "stop", "restart", "terminate"):
            errors.append("action: must be one of start, stop, restart, terminate")
    if errors:
        raise EmulatorRefusal("invalid", "Request validation failed.", errors=errors)
    action = data["action"]
    if action == "terminate":
        state.terminate_pod(m["id"])
        return 204, None, {}
    op = {"start": state.start_pod, "stop": state.stop_pod, "restart": state.restart_pod}[action]
    pod = op(m["id"])
    with state.lock:
        return 200, render_pod(state, pod), {}


def _create_pod(state: EmulatorState, _m: dict[str, str], _p: dict[str, str], body: bytes) -> Response:
    data = _json_body(body)
    spec = parse_create(data)
    pod = state.create_pod(spec)
    with state.lock:
        return 201, render_pod(state, pod), {}


def _not_implemented(state: EmulatorState, m: dict[str, str], _p: dict[str, str], _b: bytes) -> Response:
    return 501, problem(501, "updating a pod is not implemented by the emulator"), {}


# --- catalog (bodies from .rest_catalog) ----------------------------------------------------------


def _list_gpus(state: EmulatorState, _m: dict[str, str], params: dict[str, str], _b: bytes) -> Response:
    return 200, rest_catalog.list_gpus(state, params), {}


def _get_gpu(state: EmulatorState, m: dict[str, str], params: dict[str, str], _b: bytes) -> Response:
    return 200, rest_catalog.get_gpu(state, m["id"], params), {}


def _list_dcs(state: EmulatorState, _m: dict[str, str], params: dict[str, str], _b: bytes) -> Response:
    return 200, rest_catalog.list_dcs(state, params), {}


def _get_dc(state: EmulatorState, m: dict[str, str], params: dict[str, str], _b: bytes) -> Response:
    return 200, rest_catalog.get_dc(state, m["id"], params), {}


# --- network volumes ------------------------------------------------------------------------------


def _list_volumes(state: EmulatorState, _m: dict[str, str], _p: dict[str, str], _b: bytes) -> Response:
    with state.lock:
        return 200, {"networkVolumes": [render_volume(v) for v in state.volumes.values()]}, {}


def _get_volume(state: EmulatorState, m: dict[str, str], _p: dict[str, str], _b: bytes) -> Response:
    with state.lock:
        v = state.volumes.get(m["id"])
        if v is None:
            return 404, problem(404, f"network volume {m['id']} not found"), {}
        return 200, render_volume(v), {}


def _size_errors(data: dict[str, Any], errors: list[str]) -> None:
    if "size" in data:
        s = data["size"]
        if not isinstance(s, int) or isinstance(s, bool) or not 10 <= s <= 4096:
            errors.append("size: must be an integer within 10..4096")


def _update_volume(state: EmulatorState, m: dict[str, str], _p: dict[str, str], body: bytes) -> Response:
    data = _json_body(body)
    errors: list[str] = []
    if not isinstance(data, dict):
        errors.append("body: must be an object")
    else:
        if not data:
            errors.append("body: at least one property is required")
        errors += [f"{k}: unexpected property" for k in sorted(set(data) - {"name", "size"})]
        if "name" in data and (not isinstance(data["name"], str) or not data["name"]):
            errors.append("name: must be a non-empty string")
        _size_errors(data, errors)
    if errors:
        raise EmulatorRefusal("invalid", "Request validation failed.", errors=errors)
    v = state.update_volume(m["id"], data.get("name"), data.get("size"))
    return 200, render_volume(v), {}


def _create_volume(state: EmulatorState, _m: dict[str, str], _p: dict[str, str], body: bytes) -> Response:
    data = _json_body(body)
    errors: list[str] = []
    if not isinstance(data, dict):
        errors.append("body: must be an object")
    else:
        errors += [
            f"{k}: unexpected property" for k in sorted(set(data) - {"name", "size", "dataCenter", "type"})
        ]
        for k in ("name", "size", "dataCenter"):
            if k not in data:
                errors.append(f"{k}: required")
        for k in ("name", "dataCenter"):
            if k in data and (not isinstance(data[k], str) or not data[k]):
                errors.append(f"{k}: must be a non-empty string")
        _size_errors(data, errors)
        if "type" in data and data["type"] not in ("STANDARD", "HIGH_PERFORMANCE"):
            errors.append("type: must be STANDARD or HIGH_PERFORMANCE")
    if errors:
        raise EmulatorRefusal("invalid", "Request validation failed.", errors=errors)
    v = state.create_volume(data["name"], data["size"], data["dataCenter"], data.get("type"))
    return 201, render_volume(v), {}


def _delete_volume(state: EmulatorState, m: dict[str, str], _p: dict[str, str], _b: bytes) -> Response:
    state.delete_volume(m["id"])
    return 204, None, {}


_HANDLERS = {
    "list_pods": _list_pods,
    "create_pod": _create_pod,
    "get_pod": _get_pod,
    "delete_pod": _delete_pod,
    "pod_action": _pod_action,
    "not_implemented": _not_implemented,
    "list_gpus": _list_gpus,
    "get_gpu": _get_gpu,
    "list_dcs": _list_dcs,
    "get_dc": _get_dc,
    "list_volumes": _list_volumes,
    "get_volume": _get_volume,
    "update_volume": _update_volume,
    "create_volume": _create_volume,
    "delete_volume": _delete_volume,
}
