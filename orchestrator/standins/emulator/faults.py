"""Fault and timing knobs of the Runpod emulator.

Part of ``orchestrator/standins/emulator``. One mutable :class:`Faults` value lives in the state model;
the admin endpoint (``GET/PATCH /_emulator/faults``) and the ``orchestrator sim serve`` options both
go through :func:`Faults.update`, which checks every value, so a typo cannot silently disable a fault.
Capacity, preemption and worker crash/hang are per-resource actions, so they have their own admin
endpoints (see :mod:`.server`) rather than scalar knobs here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any


@dataclass
class Faults:
    # --- API ---------------------------------------------------------------------------------------
    #: Share (0..1) of API requests answered with a 5xx before anything is done.
    api_error_rate: float = 0.0
    #: Share (0..1) of *mutating* API requests that are carried out and then answered with a 5xx,
    #: the "response lost" case that makes idempotency matter.
    api_error_after_rate: float = 0.0
    #: The next N API requests are answered 429 (a burst); counts down to 0.
    api_429_burst: int = 0
    #: Retry-After (seconds) sent with burst 429s.
    retry_after_s: int = 2
    #: Added to every API request, in seconds (not scaled by speed: it is network time).
    api_latency_s: float = 0.0
    #: Round-trip time to Runpod, in ms (not scaled by speed), as from a machine whose pods and API are
    #: 50-150 ms away. The API pays it on every request (three times on a new connection: TCP's and
    #: TLS 1.3's handshakes); pods started while it is above 0 publish 22/tcp through a relay that
    #: delays each direction by half of it (orchestrator.standins.emulator.latency). 0 = loopback.
    rtt_ms: float = 0.0
    #: Quotas of the three rate-limit windows (requests per window), per API key.
    rate_limit_minute: int = 1000
    rate_limit_hour: int = 20000
    rate_limit_day: int = 200000
    # --- pod lifecycle -----------------------------------------------------------------------------
    #: Create -> SSH ready with the image already on the host: about 30 s as users measured it (e.g.
    #: github.com/Crazytieguy/alignment-hive/issues/98: 30-33 s on Secure Cloud).
    boot_cached_s: float = 30.0
    #: Create -> SSH ready when the image must be pulled: 165-169 s for a 16 GB image in the same
    #: measurements.
    boot_cold_s: float = 165.0
    #: Each boot delay is multiplied by uniform(1 - jitter, 1 + jitter).
    boot_jitter: float = 0.2
    #: Share (0..1) of boots forced cold even when the image is cached in that data center.
    cold_share: float = 0.0
    #: Share (0..1) of new pods that never become ready (stuck in STARTING, runtime null forever).
    never_ready_share: float = 0.0
    #: Share (0..1) of new pods whose sshd refuses logins (the sandbox's ``ssh_refuse``).
    ssh_refuse_share: float = 0.0
    #: Start of a stopped pod -> SSH ready, in seconds (jittered and divided by the speed like the
    #: boots). A stopped pod restarts on its host, whose disk still holds its image, so there is no pull;
    #: Runpod publishes no figure, so this is the harsh end of "faster than a cached create" (30 s).
    resume_sec: float = 20.0
    #: Share (0..1) of resumes refused with Runpod's "There are not enough free GPUs on the host machine
    #: to start this pod", whatever the stock (another user rented the host's GPU meanwhile).
    resume_no_gpu_share: float = 0.0
    #: Share (0..1) of resumes that start the pod with no GPU (``gpuCount`` 0; REST: no ``gpu``), as a
    #: stopped pod whose host GPU was taken may (docs.runpod.io/references/troubleshooting/pod-migration).
    resume_zero_gpu_share: float = 0.0
    #: Stop or termination request -> the container's processes end, in seconds (divided by the speed).
    #: Runpod's pods are containers whose PID 1 is the image's ``/start.sh`` (runpod/containers
    #: ``container-template``), a shell that ends in ``sleep infinity`` and traps no signal; PID 1 ignores
    #: a signal it has no handler for, so ``docker stop`` waits out its grace period (10 s by default,
    #: docs.docker.com ``docker container stop``) and then kills everything. Runpod publishes no figure;
    #: until then a stopped pod is still RUNNING, bills its GPU, and its worker keeps polling and may
    #: claim a task; a terminated pod is gone from the API at once (openapi deletePod: it "no longer
    #: appears in listPods") while its processes run on. 0 = at once.
    stop_grace_sec: float = 10.0
    #: Share (0..1) of pod creations refused with 403 (openapi createPod: the account "cannot access the
    #: requested pool"; a key without the permission to create pods gets 403 too, ApiKeyAuth). Drawn only
    #: while above 0, so a seeded run's other draws are unchanged when it is off.
    create_forbidden_share: float = 0.0
    #: Share (0..1) of pod creations refused with 402 for the account's balance (openapi createPod's
    #: table: "402 | Insufficient balance. | Stop; no candidate will succeed."; Runpod wants about an hour
    #: of credit to start an on-demand pod). Drawn only while above 0, as the 403 share.
    create_no_balance_share: float = 0.0
    #: Seed of the emulator's random generator; None draws from the OS.
    seed: int | None = None

    _SHARES = (
        "api_error_rate",
        "api_error_after_rate",
        "boot_jitter",
        "cold_share",
        "never_ready_share",
        "ssh_refuse_share",
        "resume_no_gpu_share",
        "resume_zero_gpu_share",
        "create_forbidden_share",
        "create_no_balance_share",
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def update(self, changes: dict[str, Any]) -> list[str]:
        """Apply ``changes`` (knob -> value) if all are valid; return the problems otherwise.

        All-or-nothing: with any problem, nothing changes.
        """
        known = {f.name: f for f in fields(self)}
        problems: list[str] = []
        parsed: dict[str, Any] = {}
        for name, value in changes.items():
            f = known.get(name)
            if f is None:
                problems.append(f"unknown knob {name!r}; known: {', '.join(sorted(known))}")
                continue
            try:
                parsed[name] = _coerce(name, value)
            except (TypeError, ValueError) as exc:
                problems.append(f"{name}: {exc}")
                continue
            v = parsed[name]
            if v is None:
                continue
            if name in self._SHARES and not 0.0 <= v <= 1.0:
                problems.append(f"{name}: {v} is not within 0..1")
            elif v < 0:
                problems.append(f"{name}: {v} is negative")
        if not problems:
            for name, v in parsed.items():
                setattr(self, name, v)
        return problems


_INT_KNOBS = frozenset(
    {"api_429_burst", "retry_after_s", "rate_limit_minute", "rate_limit_hour", "rate_limit_day", "seed"}
)


def _coerce(name: str, value: Any) -> Any:
    """Accept JSON numbers and command-line strings alike; reject booleans posing as numbers."""
    if name == "seed" and value in (None, "", "none", "None"):
        return None
    if isinstance(value, bool):
        raise TypeError("expected a number, got a boolean")
    if name in _INT_KNOBS:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"expected an integer, got {value}")
        return int(value)
    return float(value)
