"""The REST API v2 subset of the Runpod emulator.

Part of ``orchestrator/standins/emulator``: :mod:`.server` authenticates, applies the API fault knobs and
rate limits, then calls :func:`handle` with the method, path, query and body. Shapes, field names and
status codes follow ``openapi-v2.json`` (``Pod``, ``ListPodsResponse``, ``GpuType``, ``DataCenter``,
``NetworkVolume``, ``ErrorResponse`` in RFC 9457 form). Every refusal of the state model
(:class:`.state.EmulatorRefusal`) becomes a problem document here.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, unquote

from .state import (
    RUNNING,
    EmulatorRefusal,
    EmulatorState,
    Pod,
    PodSpec,
    Volume,
    rfc3339,
)

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

_CREATE_KEYS = frozenset(
    {
        "name",
        "image",
        "args",
        "disk",
        "env",
        "ports",
        "registry",
        "cloud",
        "cpu",
        "dataCenterIds",
        "globalNetworking",
        "gpu",
        "mounts",
        "startJupyter",
        "startSsh",
        "templateId",
    }
)
_GPU_KEYS = frozenset({"id", "count", "allowedCudaVersions", "minCudaVersion"})
_CUDA_RE = re.compile(r"^\d+\.\d+$")
_CC_RE = re.compile(r"^[A-Z]{2}$")


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
    return {
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


def render_volume(v: Volume) -> dict[str, Any]:
    return {"id": v.id, "name": v.name, "size": v.size, "dataCenter": v.data_center_id, "type": v.type}


def _level(free: int) -> str:
    # The real thresholds are not published; these make LOW mean "a handful".
    if free <= 0:
        return "NONE"
    if free <= 2:
        return "LOW"
    if free <= 8:
        return "MEDIUM"
    return "HIGH"


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


def parse_create(data: Any) -> PodSpec:
    """Check a CreatePodRequest the way openapi-v2.json describes it: 422 for the schema, 400 for rules."""
    errors: list[str] = []
    if not isinstance(data, dict):
        raise EmulatorRefusal("invalid", "Request validation failed.", errors=["body: must be an object"])

    def typed(
        key: str,
        kind: type | tuple[type, ...],
        where: dict[str, Any] = data,
        prefix: str = "",
        nullable: bool = False,
    ) -> Any:
        if key not in where:
            return None
        v = where[key]
        if v is None:
            # An explicit null is not "absent": the schema types these fields without null (422).
            if not nullable:
                errors.append(f"{prefix}{key}: must not be null")
            return None
        if isinstance(v, bool) and kind is int:
            errors.append(f"{prefix}{key}: must be an integer")
            return None
        if not isinstance(v, kind):
            errors.append(f"{prefix}{key}: wrong type")
            return None
        return v

    for k in sorted(set(data) - _CREATE_KEYS):
        errors.append(f"{k}: unexpected property")
    name = typed("name", str)
    if "name" not in data:
        errors.append("name: required")
    elif name == "":
        errors.append("name: must not be empty")
    image = typed("image", str)
    if "templateId" not in data and "image" not in data:
        errors.append("image: required unless templateId is set")
    args = typed("args", str) or ""
    disk = typed("disk", int)
    if disk is not None and disk < 1:
        errors.append("disk: must be at least 1")
    env = typed("env", dict) or {}
    for k, v in env.items():
        if not isinstance(v, str):
            errors.append(f"env.{k}: must be a string")
    ports = typed("ports", list) or []
    for p in ports:
        if not isinstance(p, str):
            errors.append("ports: items must be strings")
    cloud = data.get("cloud", "SECURE")
    if cloud not in ("SECURE", "COMMUNITY"):
        errors.append("cloud: must be one of SECURE, COMMUNITY")
    dcs = typed("dataCenterIds", list) or []
    if any(not isinstance(d, str) for d in dcs):
        errors.append("dataCenterIds: items must be strings")
    for flag in ("startSsh", "startJupyter", "globalNetworking"):
        typed(flag, bool)
    typed("registry", str, nullable=True)
    template_id = typed("templateId", str)
    gpu = typed("gpu", dict)
    gpu_count, min_cuda = 1, None
    allowed: list[str] = []
    if gpu is not None:
        for k in sorted(set(gpu) - _GPU_KEYS):
            errors.append(f"gpu.{k}: unexpected property")
        if not isinstance(gpu.get("id"), str):
            errors.append("gpu.id: required string")
        c = typed("count", int, gpu, "gpu.")
        if c is not None:
            if c < 1:
                errors.append("gpu.count: must be at least 1")
            gpu_count = c
        allowed = typed("allowedCudaVersions", list, gpu, "gpu.") or []
        for v in allowed:
            if not isinstance(v, str) or not _CUDA_RE.match(v):
                errors.append(f"gpu.allowedCudaVersions: {v!r} is not major.minor")
        min_cuda = typed("minCudaVersion", str, gpu, "gpu.")
        if min_cuda is not None and not _CUDA_RE.match(min_cuda):
            errors.append(f"gpu.minCudaVersion: {min_cuda!r} is not major.minor")
    volume_id: str | None = None
    mount_path: str | None = None
    persistent = 0
    mounts = typed("mounts", dict)
    if mounts is not None:
        for k in sorted(set(mounts) - {"persistent", "network"}):
            errors.append(f"mounts.{k}: unexpected property")
        for k in ("persistent", "network"):
            if k in mounts and mounts[k] is None:
                errors.append(f"mounts.{k}: must not be null")
        net = mounts.get("network")
        if net is not None:
            if not isinstance(net, list):
                errors.append("mounts.network: must be an array")
            elif len(net) > 1:
                errors.append("mounts.network: at most 1 item")
            elif net:
                item = net[0]
                if not isinstance(item, dict):
                    errors.append("mounts.network[0]: must be an object")
                else:
                    for k in sorted(set(item) - {"volumeId", "path"}):
                        errors.append(f"mounts.network[0].{k}: unexpected property")
                    if not isinstance(item.get("volumeId"), str):
                        errors.append("mounts.network[0].volumeId: required string")
                    if not isinstance(item.get("path"), str):
                        errors.append("mounts.network[0].path: required string")
                    volume_id, mount_path = item.get("volumeId"), item.get("path")
        per = mounts.get("persistent")
        if per is not None:
            if not isinstance(per, dict):
                errors.append("mounts.persistent: must be an object")
            else:
                for k in sorted(set(per) - {"size", "path"}):
                    errors.append(f"mounts.persistent.{k}: unexpected property")
                size = per.get("size")
                if not isinstance(size, int) or isinstance(size, bool) or size < 10:
                    errors.append("mounts.persistent.size: required integer >= 10")
                if not isinstance(per.get("path"), str):
                    errors.append("mounts.persistent.path: required string")
                if not errors:
                    persistent, mount_path = int(per["size"]), str(per["path"])
    if errors:
        raise EmulatorRefusal("invalid", "Request validation failed.", errors=errors)
    # Cross-field rules: the body matches the schema but cannot be honoured -> 400.
    if (gpu is None) == ("cpu" not in data):
        raise EmulatorRefusal("bad_request", "exactly one of gpu or cpu must be set")
    if gpu is None:
        raise EmulatorRefusal("bad_request", "CPU pods are not offered by this emulator")
    if mounts and mounts.get("network") and mounts.get("persistent"):
        raise EmulatorRefusal("bad_request", "mounts: persistent and network are mutually exclusive")
    if allowed and min_cuda:
        raise EmulatorRefusal(
            "bad_request", "gpu: allowedCudaVersions and minCudaVersion are mutually exclusive"
        )
    if template_id is not None:
        raise EmulatorRefusal("not_found", f"template {template_id} not found")
    return PodSpec(
        name=name or "",
        image=image or "",
        gpu_id=gpu["id"],
        gpu_count=gpu_count,
        cloud=cloud,
        data_center_ids=list(dcs),
        volume_id=volume_id,
        mount_path=mount_path,
        persistent_gb=persistent,
        disk_gb=disk if disk is not None else 50,
        args=args,
        ports=list(ports),
        env=dict(env),
        allowed_cuda=list(allowed),
        min_cuda=min_cuda,
        via="rest",
    )


def _not_implemented(state: EmulatorState, m: dict[str, str], _p: dict[str, str], _b: bytes) -> Response:
    return 501, problem(501, "updating a pod is not implemented by the emulator"), {}


# --- catalog --------------------------------------------------------------------------------------


def _csv(params: dict[str, str], key: str) -> list[str]:
    raw = params.get(key)
    return [x.strip() for x in raw.split(",") if x.strip()] if raw else []


def _gpu_filters(state: EmulatorState, params: dict[str, str]) -> dict[str, Any]:
    include = _csv(params, "include")
    products = _csv(params, "product")
    errors = [f"include: unknown value {v!r}" for v in include if v != "AVAILABILITY"]
    errors += [f"product: unknown value {v!r}" for v in products if v not in ("POD", "CLUSTER", "SERVERLESS")]
    cloud = params.get("cloud")
    if cloud is not None and cloud not in ("SECURE", "COMMUNITY"):
        errors.append("cloud: must be SECURE or COMMUNITY")
    count_raw = params.get("count")
    count = 1
    if count_raw is not None:
        try:
            count = int(count_raw)
            if count < 1:
                raise ValueError
        except ValueError:
            errors.append("count: must be an integer >= 1")
    countries = _csv(params, "countryCodes")
    errors += [
        f"countryCodes: {c!r} is not an ISO 3166-1 alpha-2 code" for c in countries if not _CC_RE.match(c)
    ]
    cudas = _csv(params, "cudaVersions")
    errors += [f"cudaVersions: {c!r} is not major.minor" for c in cudas if not _CUDA_RE.match(c)]
    min_cuda = params.get("minCudaVersion")
    if min_cuda is not None and not re.match(r"^\d+(\.\d+)?$", min_cuda):
        errors.append(f"minCudaVersion: {min_cuda!r} is malformed")
    if errors:
        raise EmulatorRefusal("invalid", "Request validation failed.", errors=errors)
    avail = "AVAILABILITY" in include
    if avail and not products:
        raise EmulatorRefusal("bad_request", "product is required with include=AVAILABILITY")
    if not avail:
        for key in ("product", "count", "cloud", "countryCodes", "cudaVersions", "minCudaVersion"):
            if key in params:
                raise EmulatorRefusal("bad_request", f"{key} is valid only with include=AVAILABILITY")
    if cudas and min_cuda:
        raise EmulatorRefusal("bad_request", "cudaVersions and minCudaVersion are mutually exclusive")
    return {"avail": avail, "count": count, "countries": countries, "cudas": cudas, "min_cuda": min_cuda}


def _render_gpu(state: EmulatorState, gpu_id: str, f: dict[str, Any]) -> dict[str, Any] | None:
    g = state.catalog.gpu(gpu_id)
    assert g is not None
    price: dict[str, Any] = {"secure": g.secure_price, "community": g.community_price}
    if g.serverless_price is not None:
        price["serverless"] = g.serverless_price
    out: dict[str, Any] = {
        "id": g.id,
        "name": g.display_name,
        "pool": g.pool,
        "manufacturer": g.manufacturer if g.manufacturer in ("NVIDIA", "AMD") else "UNKNOWN",
        "memory": g.memory_gb,
        "secure": True,
        "community": True,
        "price": price,
        "maxCount": {"secure": g.max_count_secure, "community": g.max_count_community},
    }
    if not f["avail"]:
        return out
    dcs = [state.catalog.data_center(d) for d in state.offered_in(g.id)]
    if f["countries"]:
        dcs = [d for d in dcs if d is not None and d.country_code in f["countries"]]
    cuda_ok = (not f["cudas"] or g.cuda_version in f["cudas"]) and (
        not f["min_cuda"] or _ver(g.cuda_version) >= _ver(f["min_cuda"])
    )
    entries = []
    for d in dcs:
        assert d is not None
        free = state.free(g.id, d.id) if cuda_ok else 0
        # Availability counts pods of the requested size that would still fit.
        entries.append({"id": d.id, "name": d.name, "availability": _level(free // f["count"])})
    best = max(
        (e["availability"] for e in entries), key=["NONE", "LOW", "MEDIUM", "HIGH"].index, default="NONE"
    )
    out["availability"] = best
    if best != "NONE":
        out["dataCenters"] = entries
    if cuda_ok:
        out["cudaVersions"] = [{"version": g.cuda_version, "available": best != "NONE"}]
    else:
        out["cudaVersions"] = []
    if f["countries"] and not dcs:
        return None
    return out


def _ver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def _list_gpus(state: EmulatorState, _m: dict[str, str], params: dict[str, str], _b: bytes) -> Response:
    f = _gpu_filters(state, params)
    with state.lock:
        gpus = [_render_gpu(state, g.id, f) for g in state.catalog.gpus]
    return 200, {"gpus": [g for g in gpus if g is not None]}, {}


def _get_gpu(state: EmulatorState, m: dict[str, str], params: dict[str, str], _b: bytes) -> Response:
    f = _gpu_filters(state, params)
    if state.catalog.gpu(m["id"]) is None:
        return 404, problem(404, f"GPU type {m['id']} not found"), {}
    with state.lock:
        out = _render_gpu(state, m["id"], {**f, "countries": []}) or {}
        if f["countries"] and f["avail"]:
            # The single-GPU endpoint keeps the type and reports NONE outside those countries.
            scoped = _render_gpu(state, m["id"], f)
            if scoped is None:
                out["availability"] = "NONE"
                out.pop("dataCenters", None)
            else:
                out = scoped
    return 200, out, {}


def _dc_filters(params: dict[str, str]) -> dict[str, Any]:
    include = _csv(params, "include")
    errors = [
        f"include: unknown value {v!r}" for v in include if v not in ("GPU_AVAILABILITY", "CPU_AVAILABILITY")
    ]
    regions = _csv(params, "regions")
    from .catalog import REGIONS, VOLUME_TYPES

    errors += [f"regions: unknown value {v!r}" for v in regions if v not in REGIONS]
    vtypes = _csv(params, "networkVolumeTypes")
    errors += [f"networkVolumeTypes: unknown value {v!r}" for v in vtypes if v not in VOLUME_TYPES]
    compliance = _csv(params, "compliance")
    gn = params.get("globalNetwork")
    if gn is not None and gn not in ("true", "false"):
        errors.append("globalNetwork: must be true or false")
    if errors:
        raise EmulatorRefusal("invalid", "Request validation failed.", errors=errors)
    return {"include": include, "regions": regions, "vtypes": vtypes, "compliance": compliance, "gn": gn}


def _render_dc(state: EmulatorState, dc_id: str, include: list[str]) -> dict[str, Any]:
    d = state.catalog.data_center(dc_id)
    assert d is not None
    out: dict[str, Any] = {
        "id": d.id,
        "name": d.name,
        "region": d.region,
        "globalNetwork": d.global_network,
        "networkVolumeTypes": list(d.network_volume_types),
        "compliance": list(d.compliance),
    }
    if "GPU_AVAILABILITY" in include:
        offered = [g for g in state.catalog.gpus if state.capacity.get((g.id, d.id), 0) > 0]
        if offered:
            out["gpuAvailability"] = [
                {"id": g.id, "name": g.display_name, "availability": _level(state.free(g.id, d.id))}
                for g in offered
            ]
    return out


def _list_dcs(state: EmulatorState, _m: dict[str, str], params: dict[str, str], _b: bytes) -> Response:
    f = _dc_filters(params)
    out = []
    with state.lock:
        for d in state.catalog.data_centers:
            if f["regions"] and d.region not in f["regions"]:
                continue
            if any(t not in d.network_volume_types for t in f["vtypes"]):
                continue
            if any(c not in d.compliance for c in f["compliance"]):
                continue
            if f["gn"] is not None and d.global_network != (f["gn"] == "true"):
                continue
            out.append(_render_dc(state, d.id, f["include"]))
    return 200, {"dataCenters": out}, {}


def _get_dc(state: EmulatorState, m: dict[str, str], params: dict[str, str], _b: bytes) -> Response:
    f = _dc_filters(params)
    if state.catalog.data_center(m["id"]) is None:
        return 404, problem(404, f"data center {m['id']} not found"), {}
    with state.lock:
        return 200, _render_dc(state, m["id"], f["include"]), {}


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
