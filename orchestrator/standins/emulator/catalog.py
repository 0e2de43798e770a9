"""The emulator's static world: GPU types, data centers, initial stock and network volumes.

Part of the Runpod emulator (``orchestrator/standins/emulator``). Read once from
``orchestrator/standins/emulator/data/catalog.json`` or a user's file of the same shape; the live state model
(:mod:`.state`) copies stock and volumes out of it and mutates its own copies, so a reset goes back to
exactly what the catalog says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.errors import ConfigError

DEFAULT_CATALOG_PATH = Path(__file__).resolve().parent / "data" / "catalog.json"

REGIONS = frozenset(
    {
        "NORTH_AMERICA",
        "SOUTH_AMERICA",
        "EUROPE",
        "ASIA",
        "MIDDLE_EAST",
        "AFRICA",
        "OCEANIA",
        "ANTARCTICA",
        "UNKNOWN",
    }
)
VOLUME_TYPES = frozenset({"STANDARD", "HIGH_PERFORMANCE"})


@dataclass(frozen=True)
class GpuTypeSpec:
    id: str
    display_name: str
    manufacturer: str
    memory_gb: int
    pool: str | None
    cuda_cores: int
    cuda_version: str
    secure_price: float
    community_price: float
    secure_spot_price: float
    community_spot_price: float
    serverless_price: float | None
    max_count_secure: int
    max_count_community: int
    vcpu_per_gpu: int
    ram_gb_per_gpu: int

    def price(self, cloud: str) -> float:
        """USD per GPU-hour on that cloud tier (SECURE unless COMMUNITY is asked for)."""
        return self.community_price if cloud == "COMMUNITY" else self.secure_price


@dataclass(frozen=True)
class DataCenterSpec:
    id: str
    name: str
    region: str
    country_code: str
    global_network: bool
    network_volume_types: tuple[str, ...]
    compliance: tuple[str, ...]


@dataclass(frozen=True)
class VolumeSpec:
    id: str
    name: str
    size: int
    data_center_id: str
    type: str


@dataclass(frozen=True)
class Catalog:
    account_id: str
    pub_key: str | None
    gpus: tuple[GpuTypeSpec, ...]
    data_centers: tuple[DataCenterSpec, ...]
    stock: dict[tuple[str, str], int] = field(default_factory=dict)
    volumes: tuple[VolumeSpec, ...] = ()

    def gpu(self, gpu_id: str) -> GpuTypeSpec | None:
        return next((g for g in self.gpus if g.id == gpu_id), None)

    def data_center(self, dc_id: str) -> DataCenterSpec | None:
        return next((d for d in self.data_centers if d.id == dc_id), None)


def load_catalog(path: Path | str | None = None) -> Catalog:
    """Read and check a catalog file; every problem is reported at once as a ConfigError."""
    p = Path(path) if path is not None else DEFAULT_CATALOG_PATH
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"emulator catalog {p}: {exc}"]) from exc
    problems: list[str] = []
    try:
        catalog = _parse(raw, problems)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError([*problems, f"emulator catalog {p}: malformed ({exc!r})"]) from exc
    if problems:
        raise ConfigError([f"emulator catalog {p}: {m}" for m in problems])
    return catalog


def _parse(raw: dict[str, Any], problems: list[str]) -> Catalog:
    gpus = tuple(
        GpuTypeSpec(
            id=str(g["id"]),
            display_name=str(g["displayName"]),
            manufacturer=str(g.get("manufacturer", "NVIDIA")),
            memory_gb=int(g["memoryInGb"]),
            pool=g.get("pool"),
            cuda_cores=int(g.get("cudaCores", 0)),
            cuda_version=str(g.get("cudaVersion", "12.8")),
            secure_price=float(g["securePrice"]),
            community_price=float(g["communityPrice"]),
            secure_spot_price=float(g.get("secureSpotPrice", g["securePrice"])),
            community_spot_price=float(g.get("communitySpotPrice", g["communityPrice"])),
            serverless_price=None if g.get("serverlessPrice") is None else float(g["serverlessPrice"]),
            max_count_secure=int(g.get("maxGpuCount", {}).get("secure", 8)),
            max_count_community=int(g.get("maxGpuCount", {}).get("community", 8)),
            vcpu_per_gpu=int(g.get("podVcpuPerGpu", 8)),
            ram_gb_per_gpu=int(g.get("podRamGbPerGpu", 32)),
        )
        for g in raw["gpus"]
    )
    dcs = tuple(
        DataCenterSpec(
            id=str(d["id"]),
            name=str(d.get("name", d["id"])),
            region=str(d.get("region", "UNKNOWN")),
            country_code=str(d.get("countryCode", "")),
            global_network=bool(d.get("globalNetwork", False)),
            network_volume_types=tuple(d.get("networkVolumeTypes", ["STANDARD"])),
            compliance=tuple(d.get("compliance", [])),
        )
        for d in raw["dataCenters"]
    )
    gpu_ids = {g.id for g in gpus}
    dc_ids = {d.id for d in dcs}
    if len(gpu_ids) != len(gpus):
        problems.append("duplicate GPU ids")
    if len(dc_ids) != len(dcs):
        problems.append("duplicate data center ids")
    for d in dcs:
        if d.region not in REGIONS:
            problems.append(f"data center {d.id}: unknown region {d.region!r}")
        for t in d.network_volume_types:
            if t not in VOLUME_TYPES:
                problems.append(f"data center {d.id}: unknown volume type {t!r}")
    stock: dict[tuple[str, str], int] = {}
    for gpu_id, per_dc in raw.get("stock", {}).items():
        if gpu_id not in gpu_ids:
            problems.append(f"stock names unknown GPU type {gpu_id!r}")
        for dc_id, n in per_dc.items():
            if dc_id not in dc_ids:
                problems.append(f"stock names unknown data center {dc_id!r}")
            if int(n) < 0:
                problems.append(f"stock of {gpu_id} in {dc_id} is negative")
            stock[(gpu_id, dc_id)] = int(n)
    volumes = tuple(
        VolumeSpec(
            id=str(v["id"]),
            name=str(v["name"]),
            size=int(v.get("size", 100)),
            data_center_id=str(v["dataCenterId"]),
            type=str(v.get("type", "STANDARD")),
        )
        for v in raw.get("networkVolumes", [])
    )
    for v in volumes:
        if v.data_center_id not in dc_ids:
            problems.append(f"network volume {v.name}: unknown data center {v.data_center_id!r}")
        if not 10 <= v.size <= 4096:
            problems.append(f"network volume {v.name}: size {v.size} outside 10..4096 GB")
    account = raw.get("account", {})
    return Catalog(
        account_id=str(account.get("id", "emulated-user")),
        pub_key=account.get("pubKey"),
        gpus=gpus,
        data_centers=dcs,
        stock=stock,
        volumes=volumes,
    )
