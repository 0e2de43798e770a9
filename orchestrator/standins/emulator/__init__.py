"""A local Runpod: emulated REST API v2 and GraphQL APIs whose pods are real SSH sandboxes.

Where it sits: ``orchestrator/standins/`` holds everything that stands in for the outside world. This
package is the Runpod side: one state model (:mod:`.state` over the records of :mod:`.records`, with
:mod:`.boot` booting its pods) behind the REST v2 subset (:mod:`.rest`, which checks create bodies in
:mod:`.rest_create` and answers the catalog in :mod:`.rest_catalog`) and the GraphQL subset the official
SDK 1.12 uses (:mod:`.gql`), served by :mod:`.server` with the
fault knobs of :mod:`.faults` and a catalog from :mod:`.catalog` (default
``orchestrator/standins/emulator/data/catalog.json``: two data centers, one network volume in each, every volume
holding the simulated worker's checkout). Each pod that boots gets a sandbox from
:mod:`orchestrator.standins.sandbox`: a container-like process tree that behaves like Runpod's official
``runpod/pytorch`` image (its start script as PID 1 holding the pod's variables, a real ``sshd`` on a
loopback port giving sessions a clean environment, empty apt lists, the pod's volume mounted).
:mod:`.latency` puts the pods and the API at a distance when ``rtt_ms`` is set. Tests, the demo and
the benchmarks all run against it; users run ``orchestrator sim serve`` (or ``python -m
orchestrator.standins.emulator``) to rehearse offline.

Usage::

    with EmulatorServer(speed=1000, rtt_ms=100) as emu:   # boots take 30 ms; pods are 100 ms away
        os.environ["RUNPOD_API_BASE_URL"] = emu.base_url
        emu.admin.set_faults(never_ready_share=0.5)

Known differences from the real service (deliberate, or where the real behaviour is unknown):

* Scope: REST v2 covers only pods (no PATCH: 501), the GPU and data-center catalog, and network
  volumes; CPU pods, templates (any ``templateId`` -> 404), clusters, serverless, registries,
  billing and ``/v2/account/ssh-keys`` are absent. ``startSsh`` injects nothing (no account keys
  exist); pass ``PUBLIC_KEY`` in ``env``. GraphQL covers ``gpuTypes``, ``myself``, ``pod`` and
  ``podFindAndDeployOnDemand``/``podStop``/``podResume``/``podTerminate``; its schema is a subset,
  so other fields fail validation (HTTP 400) where the real API would answer them; ``deployCpuPod``
  and other operations are absent. ``myself.pubKey`` is null. ``minVcpuCount``/``minMemoryInGb`` above
  what the GPU type's machines give (catalog ``podVcpuPerGpu``/``podRamGbPerGpu`` times the count)
  fail with the real "no instances" message; ``countryCode`` narrows the data centers;
  ``supportPublicIp``, ``minDownload``/``minUpload`` are accepted and ignored.
* Defaults the real service does not document: REST ``disk`` 50 GB; a pod without a network volume
  gets a private directory at its mount path (``mounts.persistent.path``, GraphQL
  ``volumeMountPath``, else ``/workspace``); GraphQL ``containerDiskInGb`` 10.
* Network: every pod's ``22/tcp`` is published as ``127.0.0.1:<port>`` (REST ``runtime.ports``,
  ``ssh.direct``; GraphQL public mapping plus one internal ``100.65.x.x`` entry): sshd's own port, or
  with ``rtt_ms`` > 0 (``sim serve --rtt-ms N``, ``EmulatorServer(rtt_ms=N)``, default 0) a relay's
  that delays each direction by half the round trip, pipelined (:mod:`.latency`); the API then pays a
  round trip per request and two more per new connection (TCP and TLS 1.3 handshakes). Pods started
  while the knob is 0 stay direct; relayed pods and the API follow later changes at once. Loopback
  has no loss, jitter or bandwidth limit, and a relayed client's ``connect()`` returns at once (the
  handshake's round trip is charged before the server hears it). Other ports are accepted and listed
  but never mapped. ``ssh.proxy`` names ``ssh.runpod.io``, which is not emulated. PID 1's environment
  carries ``RUNPOD_POD_ID``, ``RUNPOD_PUBLIC_IP=127.0.0.1``, ``RUNPOD_TCP_PORT_22`` (the published
  port) and ``RUNPOD_GPU_COUNT``; real pods set more (``RUNPOD_API_KEY``, ``RUNPOD_CPU_COUNT``...).
* Pods: each behaves like the ``runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04`` image
  whatever ``image`` was asked for (sources in :mod:`orchestrator.standins.sandbox`): the pod's variables
  live only in PID 1 (readable by root at ``/proc/1/environ``) and its children, SSH sessions get
  sshd's clean environment (``ssh pod 'echo $SUPABASE_URL'`` prints an empty line), interactive shells
  only ``RUNPOD_*`` and ``PATH`` through ``/etc/rp_environment``; sshd runs only when ``PUBLIC_KEY`` is
  non-empty (else the port refuses), after appending it to root's ``authorized_keys``; apt's lists are
  empty until ``apt-get update``, ``ffmpeg`` is absent. Still kinder than a real pod: the host's
  programs and network are the pod's (``git``, the host's ``python3``, the database on loopback);
  ``apt-get update`` takes ~0.7 s and installs only stubs of a short package list; no CUDA, GPU or
  ``/dev/nvidia*`` (a fake ``nvidia-smi``); a fresh container disk costs nothing to make (no image
  layers); ``docker args``/``dockerStartCmd`` are otherwise ignored (the image's start script always runs),
  except that a pod created with them given as an empty string (GraphQL ``dockerArgs: ""``, the
  runpod-python SDK's default, ``ctl_commands.create_pod(docker_args="")``; REST ``"args": ""``) never
  starts sshd: the empty args replace the image's CMD, ``/start.sh``, which is what starts sshd
  (runpod/containers ``container-template/start.sh``; a user's report of exactly this,
  donaldbraman/docling-testing#66). Where it differs: that report saw the pod RUNNING with ``runtime``
  never populated; here the port is published and refuses, as with the SSH-refusal knob. Either way the
  pod never becomes ready and bills until the orchestrator's spawning timeout.
* Lifecycle: a pod is RUNNING (and its port published, ``runtime`` non-null) only once its sshd
  answers; the real service reports RUNNING when the container is up, whether or not sshd answers.
  The exception is a pod without sshd (no ``PUBLIC_KEY``, or the SSH-refusal knob): it is RUNNING with
  its port published as soon as its container runs, and connections to the port are refused (as when
  a real image never starts sshd). A stop, a restart or a termination wipes the container disk, as
  Runpod's storage docs say (docs.runpod.io/pods/storage: the container disk is "lost on
  stop/restart"), so a resumed or restarted pod's start script makes a new host key and apt's lists are
  empty again, while its volume (volume disk or network volume) is as it was.
* Stop and start (REST ``stop``/``start`` actions, GraphQL ``podStop``/``podResume``): a stop takes the
  ``stop_grace_sec`` knob (default 10 s, divided by the speed): the image's PID 1, ``/start.sh`` ending
  in ``sleep infinity`` (runpod/containers ``container-template``), handles no signal and PID 1 ignores
  those it has no handler for, so ``docker stop`` waits out its grace (10 s by default) before killing
  the container. Meanwhile the pod answers as it was (REST ``status`` RUNNING, GraphQL ``desiredStatus``
  EXITED with ``runtime`` still set), bills its GPU, and its worker keeps polling and may claim a task;
  a start is refused (409) and a restart too. Runpod publishes no figure; this is the harsher reading
  of "the pod moves to EXITED" (openapi podAction). A stopped pod is then EXITED with ``desiredStatus``
  EXITED, ``runtime`` null, and holds no GPU (another create can take it). A start boots in ``resume_sec`` (default 20 s, jittered and divided by the speed like the boots:
  the image is still on the host, so there is no pull; Runpod publishes no figure). It is refused with
  Runpod's "There are not enough free GPUs on the host machine to start this pod" (REST 400, whose real
  status is not documented) when its host's GPU was taken, when the data center's stock is short, or
  at the ``resume_no_gpu_share`` knob's share; at ``resume_zero_gpu_share`` it starts with no GPU
  (GraphQL ``gpuCount`` 0, REST without ``gpu``, an ``nvidia-smi`` that finds no device), as a stopped
  pod whose host GPU was taken may (docs.runpod.io/references/troubleshooting/pod-migration, "Start Pod
  with CPUs"). There are no machines: a stopped pod's "host GPU" is modelled as taken by the first
  create of its GPU type in its data center after the stop (the longest stopped first), whatever other
  stock is free, until that pod gives it back (the harsher reading).
  Boot delays are drawn from the fault knobs (cached about 30 s, cold about 165 s, +-20 %, divided by
  the speed factor); an image counts as cached in a data center after its first pull there. 10 % of
  the delay is PROVISIONING, the rest STARTING. A restart takes 5 s / speed. Pods that "never become
  ready" stay STARTING with ``runtime`` null forever (and keep billing).
* Terminated pods vanish from the API at once: REST GET answers 404 and GraphQL ``pod`` null (openapi
  deletePod: the pod "no longer appears in listPods"; the real service may show TERMINATED briefly), and
  their GPU stops billing then, but their processes run on for the stop grace (as a stop's do), so a
  worker on a terminated pod may still call the app meanwhile. The admin view keeps them. Stopped pods lose their port mapping
  (real ones can keep stale ports).
* Billing accrues per real second (not scaled by the speed factor) at the GPU's secure price
  (community price for ``cloud: COMMUNITY``) times the GPU count while the pod is PROVISIONING,
  STARTING, RUNNING or ERROR (Runpod bills an active pod per second, docs.runpod.io/pods/pricing, and
  openapi-v2.json's ``Pod.cost`` is 0 only when EXITED or TERMINATED); an ERROR pod's GPUs go back to
  stock; there is no credit check. An EXITED pod bills its volume disk at $0.20/GB/month (30-day
  months; docs.runpod.io/pods/storage and get-started/billing-information), shown by the admin view
  (``stoppedDiskUsd``, part of ``billedUsd``) but not by the API's ``cost``, which the spec fixes at 0;
  its container disk is wiped and costs nothing, and a network volume replaces the volume disk. Kinder
  than Runpod: a running pod's storage ($0.10/GB/month) and network volumes ($0.07/GB/month) are
  free. A pod started without a GPU bills at its GPU price (the real price of that case is not
  published).
* Stock is a plain count per (GPU type, data center); ``cloudType: ALL`` and SECURE/COMMUNITY share
  it. Catalog availability levels are the emulator's own thresholds (0 NONE, <=2 LOW, <=8 MEDIUM).
  Stopped pods' GPUs count as free stock (see stop and start above).
* Errors whose real wording is unknown are the emulator's own: REST 400 details (unknown GPU type,
  unknown data center, volume/data-center mismatch, volume on COMMUNITY), 404 for an unknown volume
  id, 409 for an action invalid in the pod's status; GraphQL messages for the same cases (the known
  real ones - no capacity, ``pod not found to terminate``, not enough free GPUs, "Something went
  wrong..." for a volume off Secure Cloud - are used verbatim). REST's no-capacity 400 reuses the
  GraphQL no-capacity sentence as its ``detail``: the real REST wording is unknown, and openapi
  createPod says capacity carries no machine-readable code, so a client must not depend on it. A key
  lacking permission (real: HTTP 200 ``Unauthorized``; REST 403) is modelled only for creations: the
  ``create_forbidden_share`` knob answers that share of them 403 (openapi createPod, the account "cannot
  access the requested pool"; over GraphQL an error in the same words, whose real wording is unknown);
  otherwise any accepted key may do everything. The account's balance is not modelled: the
  ``create_no_balance_share`` knob refuses that share of creations 402 "Insufficient balance." (openapi
  createPod's table of failures gives the status and those words; Runpod wants about an hour of credit
  to start a pod; over GraphQL the same words, whose real wording is unknown). Running pods are never
  stopped for a balance running out (Runpod's billing docs: below about 10 s of remaining runtime it
  stops them all; the admin preemption stands in for a pod stopped from outside).
* Rate limits: fixed windows per key with configurable quotas (default 1000/min, 20000/h,
  200000/day). The real quotas are not published; openapi's ``RateLimitPolicyHeader`` example, 60/min,
  3000/h, 50000/day, is harsher, but the tests and the demo run time compressed (a tick a second, whose
  listing alone spends 60 a minute), so the defaults are higher and the tests that need a quota set a
  small one. Headers only on REST responses. GraphQL 429s
  carry a gateway's HTML page ("429 Too Many Requests"): the real body is unknown, and a page the
  SDK cannot decode is the harsher case.
* API 5xx faults: REST answers 503 (before the request is applied) or 502 (after it was applied)
  as problem+json; GraphQL answers 502 with an HTML body, as a gateway would.
* Preemption is an admin action that ends a RUNNING pod at once (to EXITED, ERROR or TERMINATED):
  there are no interruptible (spot) pods, so no SIGTERM-then-SIGKILL grace.
* Pods and their state are in memory: restarting the emulator forgets them (volume directories under
  ``--state-dir`` survive). Admin endpoints (``/_emulator/``) need no key.

Admin endpoints (JSON; :class:`EmulatorAdmin` wraps them): ``GET /_emulator/health``;
``GET /_emulator/pods`` and ``GET /_emulator/pods/{id}`` (every pod ever created, with
``billedSeconds``, ``billedUsd``, ``stoppedSeconds``, ``stoppedDiskUsd``, ``createToReadySeconds``,
``bootToReadySeconds``, ``bootKind`` (cached, cold, resume), ``hostGpuTakenBy``, ``stuck``...);
``GET``/``PATCH /_emulator/faults`` (any :class:`Faults` knob; all-or-nothing, 422 on a bad one);
``GET``/``PATCH /_emulator/capacity`` (``{"gpu", "dataCenter", "total"}``);
``POST /_emulator/pods/{id}/preempt`` (``{"to": "EXITED"}``); ``POST /_emulator/pods/{id}/worker``
(``{"action": "crash" | "hang"}``); ``POST /_emulator/reset`` (pods gone, catalog stock, volumes and
the start-up knobs restored).
"""

from __future__ import annotations

from .admin import EmulatorAdmin
from .catalog import DEFAULT_CATALOG_PATH, Catalog, load_catalog
from .cli import serve_main
from .faults import Faults
from .server import EmulatorServer
from .state import EmulatorRefusal, EmulatorState

__all__ = [
    "DEFAULT_CATALOG_PATH",
    "Catalog",
    "EmulatorAdmin",
    "EmulatorRefusal",
    "EmulatorServer",
    "EmulatorState",
    "Faults",
    "load_catalog",
    "serve_main",
]
