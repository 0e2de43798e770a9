"""A small client for the emulator's admin endpoints (``/_emulator/...``).

Part of ``orchestrator/standins/emulator``. Tests, benchmarks and the demo use it to read every pod
(terminated ones too, with billed cost), turn fault knobs, set capacity, preempt pods and crash or hang
their workers. It speaks HTTP like any other client would, so it works against a server in another
process (``orchestrator sim serve``) as well as an in-process :class:`EmulatorServer`.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from orchestrator.core.errors import RunpodError


class EmulatorAdmin:
    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            r = httpx.request(method, f"{self.base_url}/_emulator{path}", json=body, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise RunpodError(f"emulator admin {method} {path}: {exc}") from exc
        if r.status_code >= 400:
            raise RunpodError(
                f"emulator admin {method} {path}: {r.status_code} {r.text}",
                status=r.status_code,
                payload=r.text[:500],
            )
        return r.json()

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "/health"))

    def pods(self) -> list[dict[str, Any]]:
        """Every pod the emulator has seen, terminated ones included, with billedSeconds/billedUsd."""
        return list(self._call("GET", "/pods")["pods"])

    def pod(self, pod_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/pods/{pod_id}"))

    def faults(self) -> dict[str, Any]:
        return dict(self._call("GET", "/faults"))

    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        return dict(self._call("PATCH", "/faults", knobs))

    def capacity(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/capacity")["capacity"])

    def set_capacity(self, gpu: str, data_center: str, total: int) -> list[dict[str, Any]]:
        return list(
            self._call("PATCH", "/capacity", {"gpu": gpu, "dataCenter": data_center, "total": total})[
                "capacity"
            ]
        )

    def reset(self) -> None:
        self._call("POST", "/reset", {})

    def preempt(self, pod_id: str, to: str = "EXITED") -> dict[str, Any]:
        return dict(self._call("POST", f"/pods/{pod_id}/preempt", {"to": to}))

    def crash_worker(self, pod_id: str) -> bool:
        return bool(self._call("POST", f"/pods/{pod_id}/worker", {"action": "crash"})["applied"])

    def hang_worker(self, pod_id: str) -> bool:
        return bool(self._call("POST", f"/pods/{pod_id}/worker", {"action": "hang"})["applied"])

    def wait_status(self, pod_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll until the pod reaches ``status``; raises TimeoutError with the last view otherwise."""
        deadline = time.monotonic() + timeout
        view = self.pod(pod_id)
        while view["status"] != status:
            if time.monotonic() > deadline:
                raise TimeoutError(f"pod {pod_id} is {view['status']}, not {status}, after {timeout} s")
            time.sleep(0.02)
            view = self.pod(pod_id)
        return view
