"""The GraphQL subset of the Runpod emulator: what the official SDK (``runpod`` 1.12) sends.

Part of ``orchestrator/standins/emulator``. :mod:`.server` authenticates (401 on a bad key) and applies
the API fault knobs; :func:`execute` then parses and validates the query with graphql-core against
:data:`SDL` - a subset of Runpod's schema covering ``gpuTypes``, ``myself``, ``pod`` and the
``podFindAndDeployOnDemand`` / ``podStop`` / ``podResume`` / ``podTerminate`` mutations
(``graphql-wire.md``) - and resolves it against the shared :class:`.state.EmulatorState`.

Wire behaviour copied from the real service: parse and validation errors answer HTTP 400 with
``errors``; resolver errors answer HTTP 200 with ``errors[0].message`` and the field null (no
capacity, ``pod not found to terminate``); an unknown or terminated pod is ``{"pod": null}``;
``desiredStatus`` is RUNNING from creation; ``runtime`` is null until sshd answers; ``env`` comes back
as ``"K=V"`` strings and ``ports`` as one comma-separated string; ``uptimeSeconds`` is stuck at 0
while ``runtime.uptimeInSeconds`` is live.
"""

from __future__ import annotations

import json
import time
from typing import Any

from graphql import GraphQLError, GraphQLSchema, build_schema, graphql_sync

from .state import (
    NO_CAPACITY,
    RUNNING,
    EmulatorRefusal,
    EmulatorState,
    Pod,
    PodSpec,
)

#: Runpod's message when a network volume is used off Secure Cloud (as users met it: github.com/runpod/runpodctl/issues/172).
SOMETHING_WRONG = "Something went wrong. Please try again later or contact support."
TERMINATE_NOT_FOUND = "pod not found to terminate"

SDL = """
scalar Void

enum CloudTypeEnum { ALL SECURE COMMUNITY }

input GpuTypeFilter { id: String ids: [String] }
input GpuLowestPriceInput {
  gpuCount: Int
  minDisk: Int
  minMemoryInGb: Int
  minVcpuCount: Int
  secureCloud: Boolean
  compliance: [String]
  dataCenterId: String
  globalNetwork: Boolean
}
input PodFilter { podId: String! }
input EnvironmentVariableInput { key: String! value: String! }
input PodFindAndDeployOnDemandInput {
  name: String
  imageName: String
  cloudType: CloudTypeEnum
  startSsh: Boolean
  startJupyter: Boolean
  gpuTypeId: String
  gpuTypeIdList: [String]
  supportPublicIp: Boolean
  gpuCount: Int
  volumeInGb: Int
  containerDiskInGb: Int
  minVcpuCount: Int
  minMemoryInGb: Int
  allowedCudaVersions: [String]
  dataCenterId: String
  countryCode: String
  dockerArgs: String
  ports: String
  volumeMountPath: String
  env: [EnvironmentVariableInput]
  templateId: String
  networkVolumeId: String
  minDownload: Int
  minUpload: Int
  instanceId: String
}
input PodStopInput { podId: String! incrementVersion: Boolean }
input PodResumeInput { podId: String! gpuCount: Int syncMachine: Boolean }
input PodTerminateInput { podId: String! }

type LowestPrice {
  gpuName: String
  gpuTypeId: String
  minimumBidPrice: Float
  uninterruptablePrice: Float
  minMemory: Int
  minVcpu: Int
  stockStatus: String
  maxUnreservedGpuCount: Int
  availableGpuCounts: [Int]
}

type GpuType {
  id: String!
  displayName: String
  manufacturer: String
  memoryInGb: Int
  cudaCores: Int
  secureCloud: Boolean
  communityCloud: Boolean
  securePrice: Float
  communityPrice: Float
  oneMonthPrice: Float
  threeMonthPrice: Float
  sixMonthPrice: Float
  oneWeekPrice: Float
  communitySpotPrice: Float
  secureSpotPrice: Float
  maxGpuCount: Int
  maxGpuCountSecureCloud: Int
  maxGpuCountCommunityCloud: Int
  lowestPrice(input: GpuLowestPriceInput): LowestPrice
}

type PodRuntimePorts { ip: String isIpPublic: Boolean privatePort: Int publicPort: Int type: String }
type PodRuntimeGpus { id: String gpuUtilPercent: Int memoryUtilPercent: Int }
type PodRuntimeContainer { cpuPercent: Int memoryPercent: Int }
type PodRuntime {
  uptimeInSeconds: Int
  ports: [PodRuntimePorts]
  gpus: [PodRuntimeGpus]
  container: PodRuntimeContainer
}
type Machine { podHostId: String gpuDisplayName: String gpuTypeId: String }

type Pod {
  id: String!
  name: String
  imageName: String
  dockerArgs: String
  dockerId: String
  env: [String]
  gpuCount: Int
  containerDiskInGb: Int
  volumeInGb: Float
  volumeMountPath: String
  costPerHr: Float
  desiredStatus: String
  lastStatusChange: String
  machineId: String
  memoryInGb: Float
  vcpuCount: Float
  podType: String
  port: Int
  ports: String
  uptimeSeconds: Int
  networkVolumeId: String
  runtime: PodRuntime
  machine: Machine
}

type NetworkVolume { id: String! name: String size: Int dataCenterId: String }

type User {
  id: String
  pubKey: String
  networkVolumes: [NetworkVolume]
  pods: [Pod]
}

type Query {
  myself: User
  gpuTypes(input: GpuTypeFilter): [GpuType]
  pod(input: PodFilter): Pod
}

type Mutation {
  podFindAndDeployOnDemand(input: PodFindAndDeployOnDemandInput): Pod
  podStop(input: PodStopInput!): Pod
  podResume(input: PodResumeInput!): Pod
  podTerminate(input: PodTerminateInput!): Void
}
"""

_SCHEMA: GraphQLSchema = build_schema(SDL)


def render_pod(state: EmulatorState, pod: Pod, mono: float | None = None) -> dict[str, Any]:
    now = time.monotonic() if mono is None else mono
    runtime = None
    if pod.status == RUNNING and pod.ssh_port is not None:
        ports: list[dict[str, Any]] = []
        if "22/tcp" in pod.ports:
            # As on the real service, an internal (100.65.x.x) mapping is listed next to the public one.
            ports.append(
                {
                    "ip": _internal_ip(pod),
                    "isIpPublic": False,
                    "privatePort": 22,
                    "publicPort": 22,
                    "type": "tcp",
                }
            )
            ports.append(
                {
                    "ip": "127.0.0.1",
                    "isIpPublic": True,
                    "privatePort": 22,
                    "publicPort": pod.ssh_port,
                    "type": "tcp",
                }
            )
        runtime = {
            "uptimeInSeconds": pod.uptime_s(now),
            "ports": ports,
            "gpus": [
                {"id": f"GPU-{pod.machine_id}-{i}", "gpuUtilPercent": 0, "memoryUtilPercent": 0}
                for i in range(pod.gpu_count)
            ],
            "container": {"cpuPercent": 1, "memoryPercent": 3},
        }
    return {
        "id": pod.id,
        "name": pod.name,
        "imageName": pod.image,
        "dockerArgs": pod.args,
        "dockerId": None,
        "env": [f"{k}={v}" for k, v in pod.env.items()],
        "gpuCount": pod.gpu_count,
        "containerDiskInGb": pod.disk_gb,
        "volumeInGb": float(pod.persistent_gb),
        "volumeMountPath": pod.mount_path,
        "costPerHr": pod.current_cost(),
        "desiredStatus": pod.desired_status,
        "lastStatusChange": pod.last_status_change,
        "machineId": pod.machine_id,
        "memoryInGb": float(pod.gpu.ram_gb_per_gpu * pod.spec_gpu_count),
        "vcpuCount": float(pod.gpu.vcpu_per_gpu * pod.spec_gpu_count),
        "podType": "RESERVED",
        "port": None,
        "ports": ",".join(pod.ports),
        "uptimeSeconds": 0,
        "networkVolumeId": pod.volume_id,
        "runtime": runtime,
        "machine": {
            "podHostId": pod.host_id,
            "gpuDisplayName": pod.gpu.display_name,
            "gpuTypeId": pod.gpu.id,
        },
    }


def _internal_ip(pod: Pod) -> str:
    n = int(pod.machine_id[:6], 36)
    return f"100.65.{n % 250 + 1}.{n // 250 % 250 + 1}"


class _Root:
    """Root value: graphql-core's default resolver calls these with (info, **arguments)."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    # --- queries -----------------------------------------------------------------------------------

    def gpuTypes(self, _info: Any, input: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        wanted: set[str] | None = None
        if input:
            ids = list(input.get("ids") or [])
            if input.get("id") is not None:
                ids.append(input["id"])
            wanted = set(ids)
        return [self._gpu(g.id) for g in self.state.catalog.gpus if wanted is None or g.id in wanted]

    def _gpu(self, gpu_id: str) -> dict[str, Any]:
        state = self.state
        g = state.catalog.gpu(gpu_id)
        assert g is not None

        def lowest_price(_info: Any, input: dict[str, Any] | None = None) -> dict[str, Any]:
            count = int((input or {}).get("gpuCount") or 1)
            with state.lock:
                free = max((state.free(g.id, d.id) for d in state.catalog.data_centers), default=0)
            in_stock = free >= count
            return {
                "gpuName": g.display_name,
                "gpuTypeId": g.id,
                "minimumBidPrice": round(g.community_spot_price * count, 4) if in_stock else None,
                # The real API answers null here when nothing is free.
                "uninterruptablePrice": round(g.secure_price * count, 4) if in_stock else None,
                "minMemory": g.ram_gb_per_gpu * count,
                "minVcpu": g.vcpu_per_gpu * count,
                "stockStatus": ("High" if free > 8 else "Medium" if free > 2 else "Low")
                if in_stock
                else None,
                "maxUnreservedGpuCount": free,
                "availableGpuCounts": [n for n in (1, 2, 4, 8) if n <= free],
            }

        return {
            "id": g.id,
            "displayName": g.display_name,
            "manufacturer": "Nvidia" if g.manufacturer == "NVIDIA" else g.manufacturer,
            "memoryInGb": g.memory_gb,
            "cudaCores": g.cuda_cores,
            "secureCloud": True,
            "communityCloud": True,
            "securePrice": g.secure_price,
            "communityPrice": g.community_price,
            "oneMonthPrice": None,
            "threeMonthPrice": None,
            "sixMonthPrice": None,
            "oneWeekPrice": None,
            "communitySpotPrice": g.community_spot_price,
            "secureSpotPrice": g.secure_spot_price,
            "maxGpuCount": max(g.max_count_secure, g.max_count_community),
            "maxGpuCountSecureCloud": g.max_count_secure,
            "maxGpuCountCommunityCloud": g.max_count_community,
            "lowestPrice": lowest_price,
        }

    def myself(self, _info: Any) -> dict[str, Any]:
        state = self.state
        with state.lock:
            mono = time.monotonic()
            return {
                "id": state.catalog.account_id,
                "pubKey": state.catalog.pub_key,
                "networkVolumes": [
                    {"id": v.id, "name": v.name, "size": v.size, "dataCenterId": v.data_center_id}
                    for v in state.volumes.values()
                ],
                "pods": [render_pod(state, p, mono) for p in state.list_pods()],
            }

    def pod(self, _info: Any, input: dict[str, Any] | None = None) -> dict[str, Any] | None:
        if not input:
            return None
        with self.state.lock:
            pod = self.state.get_pod(input["podId"])
            return None if pod is None else render_pod(self.state, pod)

    # --- mutations ---------------------------------------------------------------------------------

    def podFindAndDeployOnDemand(self, _info: Any, input: dict[str, Any] | None = None) -> dict[str, Any]:
        spec = _parse_deploy(self.state, input or {})
        try:
            pod = self.state.create_pod(spec)
        except EmulatorRefusal as exc:
            raise GraphQLError(exc.detail) from exc
        with self.state.lock:
            return render_pod(self.state, pod)

    def podStop(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        try:
            pod = self.state.stop_pod(input["podId"])
        except EmulatorRefusal as exc:
            raise GraphQLError(exc.detail) from exc
        with self.state.lock:
            return render_pod(self.state, pod)

    def podResume(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        try:
            pod = self.state.start_pod(input["podId"], input.get("gpuCount"))
        except EmulatorRefusal as exc:
            raise GraphQLError(exc.detail) from exc
        with self.state.lock:
            return render_pod(self.state, pod)

    def podTerminate(self, _info: Any, input: dict[str, Any]) -> None:
        try:
            self.state.terminate_pod(input["podId"])
        except EmulatorRefusal as exc:
            raise GraphQLError(TERMINATE_NOT_FOUND) from exc
        return None


def _parse_deploy(state: EmulatorState, inp: dict[str, Any]) -> PodSpec:
    gpu_id = inp.get("gpuTypeId")
    if not gpu_id:
        raise GraphQLError("gpuTypeId is required for podFindAndDeployOnDemand")
    if inp.get("templateId"):
        raise GraphQLError(f"template {inp['templateId']} not found")
    cloud_in = inp.get("cloudType") or "ALL"
    if inp.get("networkVolumeId") and cloud_in == "COMMUNITY":
        raise GraphQLError(SOMETHING_WRONG)
    gpu = state.catalog.gpu(gpu_id)
    count = int(inp.get("gpuCount") or 1)
    # Minimum RAM / vCPU above what a machine of this type gives is "no instances", as on Runpod.
    if gpu is not None and (
        (inp.get("minMemoryInGb") or 0) > gpu.ram_gb_per_gpu * count
        or (inp.get("minVcpuCount") or 0) > gpu.vcpu_per_gpu * count
    ):
        raise GraphQLError(NO_CAPACITY)
    dcs: list[str] = [inp["dataCenterId"]] if inp.get("dataCenterId") else []
    if inp.get("countryCode"):
        in_country = [d.id for d in state.catalog.data_centers if d.country_code == inp["countryCode"]]
        dcs = [d for d in dcs if d in in_country] if dcs else in_country
        if not dcs:
            raise GraphQLError(NO_CAPACITY)
    env: dict[str, str] = {}
    for item in inp.get("env") or []:
        if item is not None:
            env[item["key"]] = item["value"]
    ports = [p for p in (inp.get("ports") or "").split(",") if p]
    volume_id = inp.get("networkVolumeId")
    return PodSpec(
        name=inp.get("name") or "",
        image=inp.get("imageName") or "",
        gpu_id=gpu_id,
        gpu_count=count,
        # ALL lets the scheduler pick; the emulator's data centers are all Secure Cloud.
        cloud="COMMUNITY" if cloud_in == "COMMUNITY" else "SECURE",
        data_center_ids=dcs,
        volume_id=volume_id,
        mount_path=inp.get("volumeMountPath") or "/workspace",
        persistent_gb=0 if volume_id else int(inp.get("volumeInGb") or 0),
        disk_gb=int(inp.get("containerDiskInGb") or 10),
        args=inp.get("dockerArgs") or "",
        args_given_empty=inp.get("dockerArgs") == "",
        ports=ports,
        env=env,
        allowed_cuda=[v for v in inp.get("allowedCudaVersions") or [] if v],
        via="graphql",
    )


def execute(state: EmulatorState, body: bytes) -> tuple[int, dict[str, Any]]:
    """Run one GraphQL request body; returns (HTTP status, JSON response)."""
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return 400, {"errors": [{"message": "POST body sent invalid JSON."}]}
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        return 400, {"errors": [{"message": "GraphQL operations must contain a non-empty `query`."}]}
    variables = payload.get("variables")
    if variables is not None and not isinstance(variables, dict):
        return 400, {"errors": [{"message": "Variables must be an object."}]}
    result = graphql_sync(
        _SCHEMA,
        payload["query"],
        root_value=_Root(state),
        variable_values=variables,
        operation_name=payload.get("operationName"),
    )
    out: dict[str, Any] = {}
    if result.errors:
        out["errors"] = [e.formatted for e in result.errors]
    if result.data is None and result.errors:
        # Parse and validation failures never reach execution: HTTP 400, no data.
        return 400, out
    out["data"] = result.data
    return 200, out


__all__ = ["SDL", "execute", "render_pod"]
