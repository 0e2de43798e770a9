"""Placement: which GPU type in which data center a new worker's pod is created in.

Where this sits: :meth:`orchestrator.adapters.provider.RunpodProvider.spawn` resolves the candidates
(the GPU types of the priority list, the configured network volumes) and calls :func:`create` to try
them. The order is GPU type x volume, GPU types first: every volume for the first GPU type, then every
volume for the next. That is the order the original kept in its later versions (the original
orchestrator, banodoco/reigh-worker-orchestrator, ``gpu_orchestrator/runpod_client.py``, 2025-10: each
RAM tier across every storage volume before the next tier), with the GPU type in the place of the RAM
tier, since the GPU type is the stronger preference. "No instances available" falls through, and so
does a REST 400 whose wording we do not know (its body is logged, ``runpod_create_refused``) and a 403;
``avoid`` skips the (GPU type, data center) pairs the control loop is backing off, and a GPU type the
catalog says is not on Secure Cloud is skipped when the pod is to be created there.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from orchestrator.adapters.runpod.base import GpuType, NetworkVolume, PodSpec, RunpodTransport
from orchestrator.core import errors

log = structlog.get_logger(__name__)

# ``skipped[].reason`` of a GPU type the catalog says is not on Secure Cloud (avoided pairs have none).
NOT_SECURE = "not_on_secure_cloud"


def is_avoided(gpu: GpuType, data_center: str | None, avoid: Collection[tuple[str, str | None]]) -> bool:
    """Whether the (GPU type, data center) candidate is one the caller asked to skip."""
    return any(gpu.matches(str(name)) and (dc is None or dc == data_center) for name, dc in avoid)


def create(
    transport: RunpodTransport,
    worker_id: str,
    spec: PodSpec,
    gpus: Sequence[GpuType],
    volumes: Sequence[NetworkVolume | None],
    avoid: Collection[tuple[str, str | None]] = (),
) -> dict[str, Any]:
    """Create the pod ``spec`` describes on the first candidate that has capacity; its details.

    ``spec`` carries everything but the placement (GPU type, data center, network volume), which each
    candidate fills in. Returns the original's spawn dict (``capacity_misses``: the (GPU type, data center)
    pairs that had none; ``skipped``: those avoided, and the GPU types not on Secure Cloud, with
    ``reason``). Raises ``RunpodCapacityError`` (every candidate exhausted or skipped; it carries
    ``capacity_misses`` and ``skipped``), ``RunpodAuthError`` (status 403: every candidate asked answered
    403, so the key most likely lacks the permission; same attributes), ``RunpodRequestError`` (status
    400: every candidate refused, at least one for a reason not known to be capacity) and the other
    ``RunpodError`` types as they come.
    """
    misses: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    refusals: list[str] = []
    # Candidates answered with a 400 we cannot read as "no capacity" (fell through all the same).
    refused: list[str] = []
    # Candidates answered with a 403 (the transport's RunpodCapacityError of status 403).
    forbidden: list[str] = []
    forbidden_payload: Any = None
    for gpu in gpus:
        if spec.cloud == "SECURE" and gpu.secure_cloud is False:
            # The catalog's ``secure`` (openapi GpuType: "Available on secure cloud") says a create on
            # Secure Cloud cannot place this type anywhere: asking would only spend a request per
            # volume. Unknown (None) is tried.
            skipped.append({"gpu_type": gpu.display_name, "data_center": None, "reason": NOT_SECURE})
            log.warning("runpod_candidate_not_secure", worker_id=worker_id, gpu_type=gpu.id, cloud=spec.cloud)
            continue
        for volume in volumes:
            data_center = volume.data_center if volume else None
            if is_avoided(gpu, data_center, avoid):
                skipped.append({"gpu_type": gpu.display_name, "data_center": data_center})
                log.info(
                    "runpod_candidate_avoided", worker_id=worker_id, gpu_type=gpu.id, data_center=data_center
                )
                continue
            label = f"{gpu.display_name}{f' in {data_center}' if data_center else ''}"
            candidate = dataclasses.replace(
                spec,
                gpu_type_id=gpu.id,
                data_center_id=data_center,
                network_volume_id=volume.id if volume else None,
            )
            started = time.monotonic()
            try:
                pod = transport.create_pod(candidate)
            except errors.RunpodCapacityError as e:
                refusals.append(f"{label}: {e}")
                if e.status == 403:
                    forbidden.append(label)
                    forbidden_payload = e.payload
                misses.append(
                    {
                        "gpu_type": gpu.display_name,
                        "data_center": data_center,
                        "network_volume": volume.name if volume else None,
                        "at": datetime.now(UTC).isoformat(),
                    }
                )
                log.info(
                    "runpod_no_capacity",
                    worker_id=worker_id,
                    gpu_type=gpu.id,
                    data_center=data_center,
                    network_volume=volume.name if volume else None,
                    status=e.status,
                )
                continue
            except errors.RunpodRequestError as e:
                if e.status != 400:
                    log.info(
                        "runpod_pod_create_failed",
                        worker_id=worker_id,
                        gpu_type=gpu.id,
                        data_center=data_center,
                        error_type=type(e).__name__,
                        error=str(e)[:300],
                        transport=transport.name,
                    )
                    raise
                # REST v2 says no capacity with a 400 whose wording is not documented (openapi
                # createPod gives no machine-readable code), and the words we match are those
                # seen so far. A 400 we cannot read may be one more way of saying it: try the next
                # candidate rather than give up the whole priority list, back this one off like a
                # capacity miss, and log the body so the wording can be learned.
                refused.append(f"{label}: {e}")
                misses.append(
                    {
                        "gpu_type": gpu.display_name,
                        "data_center": data_center,
                        "network_volume": volume.name if volume else None,
                        "at": datetime.now(UTC).isoformat(),
                        "refused": str(e)[:300],
                    }
                )
                log.warning(
                    "runpod_create_refused",
                    worker_id=worker_id,
                    gpu_type=gpu.id,
                    data_center=data_center,
                    network_volume=volume.name if volume else None,
                    status=e.status,
                    body=str(e.payload)[:1000] if e.payload is not None else None,
                    transport=transport.name,
                )
                continue
            except errors.RunpodError as e:
                log.info(
                    "runpod_pod_create_failed",
                    worker_id=worker_id,
                    gpu_type=gpu.id,
                    data_center=data_center,
                    error_type=type(e).__name__,
                    error=str(e)[:300],
                    transport=transport.name,
                )
                raise
            log.info(
                "runpod_pod_created",
                worker_id=worker_id,
                runpod_id=pod.id,
                gpu_type=gpu.id,
                data_center=pod.data_center or data_center,
                network_volume=volume.name if volume else None,
                cost_per_hr=pod.cost_per_hr,
                transport=transport.name,
                env_keys=sorted(spec.env),
                elapsed_ms=round((time.monotonic() - started) * 1000),
            )
            return {
                "worker_id": worker_id,
                "runpod_id": pod.id,
                "pod_name": pod.name or worker_id,
                "status": "spawning",
                "gpu_type": gpu.display_name,
                "gpu_type_id": gpu.id,
                "data_center": pod.data_center or data_center,
                "network_volume_id": volume.id if volume else None,
                "network_volume": volume.name if volume else None,
                "desired_status": pod.desired_status,
                "actual_status": pod.actual_status,
                "cost_per_hr": pod.cost_per_hr,
                "capacity_misses": misses,
                "skipped": skipped,
                "created_at": pod.created_at,
                "transport": transport.name,
            }
    centers = sorted({v.data_center for v in volumes if v is not None})
    where = f" in {', '.join(centers)}" if centers else ""
    avoided = [_skip_text(x) for x in skipped]
    if forbidden and len(forbidden) == len(misses):
        # createPod's 403 is "your account cannot access the requested pool: skip this candidate", but
        # a valid key lacking permission for the action gets 403 as well (openapi: securitySchemes
        # ApiKeyAuth, "requests may return 403 when a valid key lacks access to the requested resource
        # or action"; ForbiddenError). One pool out of reach is a miss; every candidate asked refused
        # so is the key, and read as "no capacity" the daemon would back off and ask again forever.
        message = (
            "the Runpod API key most likely lacks permission to create pods (or to rent these GPU types):"
            f" every candidate answered HTTP 403 ({', '.join(forbidden)}){where}, which Runpod also answers"
            " for a pool the account cannot access; check RUNPOD_API_KEY's permissions: "
            + "; ".join(refusals + avoided)
        )
        log.warning(
            "runpod_create_forbidden",
            worker_id=worker_id,
            candidates=forbidden,
            skipped=len(skipped),
            transport=transport.name,
        )
        denied = errors.RunpodAuthError(message, status=403, payload=forbidden_payload)
        denied.capacity_misses = misses  # type: ignore[attr-defined]
        denied.skipped = skipped  # type: ignore[attr-defined]
        raise denied
    if refused:
        # Not known to be capacity: a spec Runpod refuses everywhere (a bad image name, say) must
        # count as a failed spawn, or the breaker would never see it.
        message = f"Runpod refused every candidate of {[g.display_name for g in gpus]}{where}: " + "; ".join(
            refused + refusals + avoided
        )
        failure = errors.RunpodRequestError(message, status=400)
        failure.capacity_misses = misses  # type: ignore[attr-defined]
        failure.skipped = skipped  # type: ignore[attr-defined]
        raise failure
    exc_text = "; ".join(refusals + avoided)
    message = f"no capacity for any GPU type of {[g.display_name for g in gpus]}{where}: {exc_text}"
    exc = errors.RunpodCapacityError(message)
    exc.capacity_misses = misses  # type: ignore[attr-defined]
    exc.skipped = skipped  # type: ignore[attr-defined]
    raise exc


def _skip_text(skip: dict[str, Any]) -> str:
    """One skipped candidate, for the round's summary."""
    if skip.get("reason") == NOT_SECURE:
        return f"{skip['gpu_type']}: not on Secure Cloud (catalog)"
    return f"{skip['gpu_type']} in {skip['data_center'] or 'any data center'}: backing off"
