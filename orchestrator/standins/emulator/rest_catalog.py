"""REST v2's catalog endpoints: GPU types and data centers, with their filters and availability.

Part of ``orchestrator/standins/emulator``: :mod:`.rest` routes ``GET /v2/catalog/gpus[/{id}]`` and
``GET /v2/catalog/datacenters[/{id}]`` here and sends back the bodies these functions return; a bad
filter or an unknown id raises :class:`.state.EmulatorRefusal`, which :mod:`.rest` renders as its
problem document. Shapes follow ``openapi-v2.json`` (``GpuType``, ``DataCenter``); availability levels
are computed from the state model's free stock.
"""

from __future__ import annotations

import re
from typing import Any

from .catalog import REGIONS, VOLUME_TYPES
from .rest_create import CUDA_VERSION
from .state import EmulatorRefusal, EmulatorState

_COUNTRY_CODE = re.compile(r"^[A-Z]{2}$")
_LEVELS = ["NONE", "LOW", "MEDIUM", "HIGH"]


def level(free: int) -> str:
    # The real thresholds are not published; these make LOW mean "a handful".
    if free <= 0:
        return "NONE"
    if free <= 2:
        return "LOW"
    if free <= 8:
        return "MEDIUM"
    return "HIGH"


def _csv(params: dict[str, str], key: str) -> list[str]:
    raw = params.get(key)
    return [x.strip() for x in raw.split(",") if x.strip()] if raw else []


def _count(params: dict[str, str]) -> int | None:
    """The ``count`` filter (1 when absent); None when it is not an integer >= 1."""
    try:
        count = int(params.get("count", "1"))
    except ValueError:
        return None
    return count if count >= 1 else None


def _ver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


# --- GPU types -------------------------------------------------------------------------------------


def _gpu_filter_errors(params: dict[str, str], include: list[str], products: list[str]) -> list[str]:
    errors = [f"include: unknown value {v!r}" for v in include if v != "AVAILABILITY"]
    errors += [f"product: unknown value {v!r}" for v in products if v not in ("POD", "CLUSTER", "SERVERLESS")]
    cloud = params.get("cloud")
    if cloud is not None and cloud not in ("SECURE", "COMMUNITY"):
        errors.append("cloud: must be SECURE or COMMUNITY")
    if "count" in params and _count(params) is None:
        errors.append("count: must be an integer >= 1")
    errors += [
        f"countryCodes: {c!r} is not an ISO 3166-1 alpha-2 code"
        for c in _csv(params, "countryCodes")
        if not _COUNTRY_CODE.match(c)
    ]
    errors += [
        f"cudaVersions: {c!r} is not major.minor"
        for c in _csv(params, "cudaVersions")
        if not CUDA_VERSION.match(c)
    ]
    min_cuda = params.get("minCudaVersion")
    if min_cuda is not None and not re.match(r"^\d+(\.\d+)?$", min_cuda):
        errors.append(f"minCudaVersion: {min_cuda!r} is malformed")
    return errors


def gpu_filters(params: dict[str, str]) -> dict[str, Any]:
    """The query of a GPU type request, checked: 422 for a malformed value, 400 for a misplaced one."""
    include = _csv(params, "include")
    products = _csv(params, "product")
    errors = _gpu_filter_errors(params, include, products)
    if errors:
        raise EmulatorRefusal("invalid", "Request validation failed.", errors=errors)
    avail = "AVAILABILITY" in include
    if avail and not products:
        raise EmulatorRefusal("bad_request", "product is required with include=AVAILABILITY")
    if not avail:
        for key in ("product", "count", "cloud", "countryCodes", "cudaVersions", "minCudaVersion"):
            if key in params:
                raise EmulatorRefusal("bad_request", f"{key} is valid only with include=AVAILABILITY")
    cudas = _csv(params, "cudaVersions")
    min_cuda = params.get("minCudaVersion")
    if cudas and min_cuda:
        raise EmulatorRefusal("bad_request", "cudaVersions and minCudaVersion are mutually exclusive")
    count = _count(params) or 1
    countries = _csv(params, "countryCodes")
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
        entries.append({"id": d.id, "name": d.name, "availability": level(free // f["count"])})
    best = max((e["availability"] for e in entries), key=_LEVELS.index, default="NONE")
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


def list_gpus(state: EmulatorState, params: dict[str, str]) -> dict[str, Any]:
    """``GET /v2/catalog/gpus``: every GPU type, leaving out those outside the requested countries."""
    f = gpu_filters(params)
    with state.lock:
        gpus = [_render_gpu(state, g.id, f) for g in state.catalog.gpus]
    return {"gpus": [g for g in gpus if g is not None]}


def get_gpu(state: EmulatorState, gpu_id: str, params: dict[str, str]) -> dict[str, Any]:
    """``GET /v2/catalog/gpus/{id}``; an unknown id is a 404."""
    f = gpu_filters(params)
    if state.catalog.gpu(gpu_id) is None:
        raise EmulatorRefusal("not_found", f"GPU type {gpu_id} not found")
    with state.lock:
        out = _render_gpu(state, gpu_id, {**f, "countries": []}) or {}
        if f["countries"] and f["avail"]:
            # The single-GPU endpoint keeps the type and reports NONE outside those countries.
            scoped = _render_gpu(state, gpu_id, f)
            if scoped is None:
                out["availability"] = "NONE"
                out.pop("dataCenters", None)
            else:
                out = scoped
    return out


# --- data centers ----------------------------------------------------------------------------------


def dc_filters(params: dict[str, str]) -> dict[str, Any]:
    """The query of a data center request, checked (422 for any unknown value)."""
    include = _csv(params, "include")
    errors = [
        f"include: unknown value {v!r}" for v in include if v not in ("GPU_AVAILABILITY", "CPU_AVAILABILITY")
    ]
    regions = _csv(params, "regions")
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
                {"id": g.id, "name": g.display_name, "availability": level(state.free(g.id, d.id))}
                for g in offered
            ]
    return out


def _dc_selected(d: Any, f: dict[str, Any]) -> bool:
    if f["regions"] and d.region not in f["regions"]:
        return False
    if any(t not in d.network_volume_types for t in f["vtypes"]):
        return False
    if any(c not in d.compliance for c in f["compliance"]):
        return False
    return f["gn"] is None or d.global_network == (f["gn"] == "true")


def list_dcs(state: EmulatorState, params: dict[str, str]) -> dict[str, Any]:
    """``GET /v2/catalog/datacenters``, filtered by region, volume types, compliance and global network."""
    f = dc_filters(params)
    with state.lock:
        out = [
            _render_dc(state, d.id, f["include"]) for d in state.catalog.data_centers if _dc_selected(d, f)
        ]
    return {"dataCenters": out}


def get_dc(state: EmulatorState, dc_id: str, params: dict[str, str]) -> dict[str, Any]:
    """``GET /v2/catalog/datacenters/{id}``; an unknown id is a 404."""
    f = dc_filters(params)
    if state.catalog.data_center(dc_id) is None:
        raise EmulatorRefusal("not_found", f"data center {dc_id} not found")
    with state.lock:
        return _render_dc(state, dc_id, f["include"])
