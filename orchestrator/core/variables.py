"""The settings table: every environment variable the orchestrator reads, its kind, default and help,
and how one raw value is parsed and checked.

The bottom of the configuration in the pure core: :mod:`orchestrator.core.config` reads the
environment and the env file through this table and builds the typed
:class:`~orchestrator.core.config.Settings` from it; ``orchestrator config``, the generated
``deploy/orchestrator.env.example`` and the operations guide print it. The variables and defaults are
those users of the system we replace already know; where a default of that system cost money (see
``docs/operations.md``), the new default is explained next to it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REAL_RUNPOD_BASE_URL = "https://api.runpod.io"
# astral's installer for uv, which Runpod's pytorch images lack (docs.astral.sh/uv, "Installing uv"; a
# versioned URL, https://astral.sh/uv/<version>/install.sh, installs that version).
DEFAULT_UV_INSTALL_URL = "https://astral.sh/uv/install.sh"
UV_INSTALL_URL_RE = re.compile(r"(https|file)://[^\s'\"\\]+")


@dataclass(frozen=True)
class Var:
    """One environment variable: how to read it, its default, and what it means."""

    name: str
    kind: str  # str | int | float | bool | path | list | choice
    default: Any
    help: str
    group: str
    secret: bool = False
    minimum: float | None = None
    choices: tuple[str, ...] = ()


def _v(name: str, kind: str, default: Any, help: str, group: str, **kw: Any) -> Var:
    return Var(name, kind, default, help, group, **kw)


# The order here is the order of `orchestrator config` and of deploy/orchestrator.env.example.
VARIABLES: tuple[Var, ...] = (
    # --- Runpod -----------------------------------------------------------------------------------
    _v(
        "RUNPOD_API_KEY",
        "str",
        None,
        "Runpod API key (required; the emulator accepts any non-empty key)",
        "runpod",
        secret=True,
    ),
    _v(
        "RUNPOD_API",
        "choice",
        "rest",
        "Runpod transport: rest (REST v2, default) or graphql (official SDK)",
        "runpod",
        choices=("rest", "graphql"),
    ),
    _v(
        "RUNPOD_API_BASE_URL",
        "str",
        REAL_RUNPOD_BASE_URL,
        "Runpod API base URL (point it at `orchestrator sim serve` to rehearse offline)",
        "runpod",
    ),
    _v(
        "RUNPOD_GPU_TYPE",
        "list",
        "NVIDIA GeForce RTX 4090",
        "GPU display names in priority order, comma-separated; no capacity on one falls through to the next",
        "runpod",
    ),
    _v(
        "RUNPOD_WORKER_IMAGE",
        "str",
        "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
        "container image of the worker pods",
        "runpod",
    ),
    _v(
        "RUNPOD_STORAGE_NAME",
        "list",
        None,
        "network volumes holding the worker's checkout, comma-separated in priority order (one per data center); a volume pins its pods to its data center, and a spawn tries each GPU type in every volume before the next GPU type; required by run and tick against Runpod itself",
        "runpod",
    ),
    _v(
        "RUNPOD_VOLUME_MOUNT_PATH",
        "str",
        "/workspace",
        "where the network volume is mounted in each pod",
        "runpod",
    ),
    _v(
        "RUNPOD_DISK_SIZE_GB",
        "int",
        20,
        "pod volume disk, GB, sent as GraphQL volumeInGb or REST v2's persistent mount (0, or 10 and up); with a network volume REST v2 cannot take it (the network volume replaces the volume disk)",
        "runpod",
        minimum=0,
    ),
    _v("RUNPOD_CONTAINER_DISK_GB", "int", 10, "container disk size, GB", "runpod", minimum=1),
    _v(
        "WORKER_ENV",
        "json",
        None,
        'extra environment for every worker pod, a JSON object of strings, e.g. {"HF_HOME": "/workspace/hf"}',
        "runpod",
        secret=True,
    ),
    # Runpod shows a pod's creation env to every holder of the account's API key (the pod objects of
    # GET /v2/pods, and the console), and its images write it into a world-readable
    # /etc/rp_environment. The daemon hands the keys to the worker over SSH at each start, so only an
    # image that starts its own worker from the creation env needs them there.
    _v(
        "POD_ENV_SUPABASE_KEYS",
        "bool",
        None,
        "put SUPABASE_SERVICE_ROLE_KEY and SUPABASE_ANON_KEY into each pod's creation env too, where "
        "whoever holds the Runpod API key can read them; unset = only with AUTO_START_WORKER_PROCESS=false "
        "(a worker the image or the operator starts finds them there; the daemon gives the workers it "
        "starts theirs over SSH)",
        "runpod",
    ),
    _v(
        "RUNPOD_SSH_PUBLIC_KEY_PATH",
        "path",
        None,
        "SSH public key injected into pods as PUBLIC_KEY (optional: derived from the private key when unset)",
        "runpod",
    ),
    _v(
        "RUNPOD_SSH_PRIVATE_KEY_PATH",
        "path",
        None,
        "SSH private key the orchestrator logs into pods with; required by run and tick against Runpod itself (its images take only the key given as PUBLIC_KEY); against the emulator optional, the pod's SSH password (default runpod) then",
        "runpod",
    ),
    # --- Worker start -----------------------------------------------------------------------------
    _v(
        "WORKER_DIRS",
        "list",
        "Reigh-Worker,Headless-Wan2GP,reigh/Headless-Wan2GP",
        "the worker's checkout, searched in order, comma-separated, relative to RUNPOD_VOLUME_MOUNT_PATH unless absolute (today's original looks for Reigh-Worker, then Headless-Wan2GP; its first version used reigh/Headless-Wan2GP)",
        "worker",
    ),
    _v(
        "WORKER_LAUNCH",
        "choice",
        "auto",
        "auto: uv when the checkout has uv.lock, else venv; venv: git pull, then python worker.py (else headless.py) --db-type supabase ... in the checkout's venv, as the original; uv: git fetch and reset to the branch, uv installed if missing, uv sync --locked, then uv run --python 3.10 --extra cuda124 python worker.py ... --wgp-profile N, as today's original",
        "worker",
        choices=("auto", "venv", "uv"),
    ),
    _v(
        "WORKER_WGP_PROFILE",
        "int",
        1,
        "--wgp-profile the worker is started with (worker.py, either launch; the older headless.py gets none)",
        "worker",
        minimum=1,
    ),
    _v(
        "WORKER_UV_INSTALL_URL",
        "str",
        DEFAULT_UV_INSTALL_URL,
        "the uv launch installs uv with this installer (curl ... | sh) on a pod without it; https://astral.sh/uv/<version>/install.sh pins a version; none installs nothing (a pod without uv then starts no worker, exit 7)",
        "worker",
    ),
    _v(
        "WORKER_POLL_INTERVAL_SEC",
        "int",
        3,
        "--poll-interval given to the worker: seconds an idle worker sleeps between claims, a whole number (the worker's own default, which the original kept, is 10; each idle poll is one Edge Function call)",
        "worker",
        minimum=1,
    ),
    _v(
        "WORKER_GIT_BRANCH",
        "str",
        "main",
        "branch brought up to date before each start (venv: git pull origin BRANCH; uv: git fetch origin BRANCH and reset --hard to it; then git submodule update --init --recursive; failures tolerated, but a declared submodule left empty starts no worker)",
        "worker",
    ),
    # banodoco/reigh-worker's main moved its entrypoint to an Astrid GenericPackHost that no longer
    # polls the Supabase queue (pull request 33, 2026-09): a checkout that follows main stops working.
    _v(
        "WORKER_GIT_COMMIT",
        "str",
        None,
        "a full commit hash (40 hex digits) the checkout is put at before each start instead of the head of WORKER_GIT_BRANCH (git fetch, then git checkout -f -B BRANCH COMMIT), for every launch; a commit that cannot be found starts no worker; unset: follow the branch",
        "worker",
    ),
    _v(
        "WORKER_APT_PACKAGES",
        "packages",
        "python3.10-venv,python3.10-dev,ffmpeg",
        "apt packages installed after apt-get update before each start, comma-separated (python3.10-dev: uv sync builds insightface against its headers); none skips the apt step",
        "worker",
    ),
    # --- Database ---------------------------------------------------------------------------------
    _v(
        "SUPABASE_URL",
        "str",
        None,
        "Supabase project URL (REST API transport, the default when set)",
        "database",
    ),
    _v(
        "SUPABASE_SERVICE_ROLE_KEY",
        "str",
        None,
        "Supabase service-role key (orchestrator and workers)",
        "database",
        secret=True,
    ),
    _v("SUPABASE_ANON_KEY", "str", None, "Supabase anon key, passed to workers", "database", secret=True),
    _v(
        "DATABASE_URL",
        "str",
        None,
        "direct Postgres URL for the orchestrator (instant wake-up on new tasks); the workers still need SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY, since they speak only Supabase's HTTP API",
        "database",
        secret=True,
    ),
    _v(
        "DB_BACKEND",
        "choice",
        "auto",
        "auto (Supabase when SUPABASE_URL is set, else Postgres), supabase or postgres",
        "database",
        choices=("auto", "supabase", "postgres"),
    ),
    # --- Scaling ----------------------------------------------------------------------------------
    _v(
        "MIN_ACTIVE_GPUS",
        "int",
        0,
        "floor of live workers; 0 scales to zero when the queue is empty",
        "scaling",
        minimum=0,
    ),
    _v(
        "MAX_ACTIVE_GPUS",
        "int",
        10,
        "ceiling of non-terminal workers (spawning ones included)",
        "scaling",
        minimum=0,
    ),
    _v(
        "MACHINES_TO_KEEP_IDLE",
        "int",
        0,
        "spare idle workers kept above demand for fast starts",
        "scaling",
        minimum=0,
    ),
    _v(
        "TASKS_PER_GPU_THRESHOLD",
        "int",
        3,
        "claimable-plus-running tasks one worker is expected to absorb before another is spawned",
        "scaling",
        minimum=1,
    ),
    _v(
        "MAX_HOURLY_SPEND",
        "float",
        0.0,
        "cap on the fleet's USD per hour at current prices (stopped pods' disks included); 0 = no cap",
        "scaling",
        minimum=0,
    ),
    # Chosen on the policy benchmark (docs/policy.md, "The wait target").
    _v(
        "WAIT_TARGET_SEC",
        "float",
        20,
        "p95 queue wait (queued -> claimed) the fleet is sized for at least cost, from the recent arrival rate, each task type's durations and the recent boot and resume times; 0 = off (TASKS_PER_GPU_THRESHOLD alone, the earlier rule)",
        "scaling",
        minimum=0,
    ),
    _v(
        "WARM_POOL_MAX",
        "int",
        10,
        "stopped pods kept for fast resumes (Runpod stops pods that have a network volume; a stopped pod bills its volume disk only): scale-down stops idle workers into the pool while it has room, scale-up resumes them before spawning; 0 = terminate as before",
        "scaling",
        minimum=0,
    ),
    _v(
        "WARM_POOL_TTL_SEC",
        "int",
        21600,
        "a pod stopped longer than this is terminated (the longer it waits, the likelier its host's GPUs are taken); 0 = no limit",
        "scaling",
        minimum=0,
    ),
    _v(
        "WARM_POOL_TERMINATE_ON_PAUSE",
        "bool",
        False,
        "terminate the pool's stopped pods while the orchestrator is paused",
        "scaling",
    ),
    # --- Timeouts ---------------------------------------------------------------------------------
    _v(
        "GPU_IDLE_TIMEOUT_SEC",
        "int",
        600,
        "idle time (no running task, measured from the last completion or activation) before a worker above the floor is drained",
        "timeouts",
        minimum=0,
    ),
    # A parent's run may pause between the children it makes, and a parent claimed again after its
    # holder died re-runs before it makes the missing ones; a holder ended then takes the run with it.
    _v(
        "PARENT_RELEASE_MIN_SEC",
        "int",
        600,
        "least idle time, counted from its parents' start and newest child, before a worker holding only parent tasks that wait on their children is let go, however low GPU_IDLE_TIMEOUT_SEC is",
        "timeouts",
        minimum=0,
    ),
    # 10, not the old 30: measured in bench/results/policy.md (docs/policy.md), 2-9% cheaper on every
    # trace at the same p95 wait.
    _v(
        "GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC",
        "int",
        10,
        "idle time before draining a worker that is above the desired count",
        "timeouts",
        minimum=0,
    ),
    # 20 minutes, not the original orchestrator's 10 (banodoco/reigh-worker-orchestrator): cold image pulls plus a first PyTorch install take
    # 5-20 minutes, and the shorter timeout killed healthy cold starts.
    _v(
        "SPAWNING_TIMEOUT_SEC",
        "int",
        1200,
        "creation-to-active deadline for a new worker before it is failed",
        "timeouts",
        minimum=1,
    ),
    # A first `uv sync` on a fresh volume downloads and builds the whole environment, and a second pod
    # waits for the first's (up to 1800 s, as today's original lets it; the sync itself is cut at 1800 s):
    # longer than a boot timeout that still catches a hung pod. Time the start is seen in those steps is
    # not counted against that timeout, up to this.
    _v(
        "WORKER_SETUP_TIMEOUT_SEC",
        "int",
        3600,
        "time the worker's start may spend in its setup steps (git sync, apt, uv sync), as seen over SSH while they run, on top of SPAWNING_TIMEOUT_SEC; 0 counts them against it",
        "timeouts",
        minimum=0,
    ),
    _v(
        "HEARTBEAT_TIMEOUT_SEC",
        "int",
        120,
        "heartbeat age that fails a worker while it runs a task or tasks wait; under 60 s (three beats of the worker's 20 s heartbeat) is warned about",
        "timeouts",
        minimum=1,
    ),
    # Unset, not the old fixed 1200: long task types (a long video, a LoRA training: 10-25 minutes) ran
    # past it on healthy workers and were dead-lettered after three attempts (docs/policy.md, "Long
    # tasks"). Unset, each running task is judged against its own type's observed durations.
    _v(
        "TASK_STUCK_TIMEOUT_SEC",
        "int",
        None,
        "an explicit stuck-task limit: a task running longer fails its worker and is requeued (types containing _orchestrator exempt); unset (the default) = judged from evidence: past 3x its type's p99 duration over the last day, never before 1200 s, and 3600 s for a type with fewer than 10 completions",
        "timeouts",
        minimum=1,
    ),
    # A task In Progress that names no worker is, on Reigh's database, usually running on a user's own
    # machine: the app's claim through a personal access token (claim_next_task_user_pat) sets no
    # worker_id, and the app fails such a task itself once it has not been updated for 24 hours
    # (auto_fail_stale_tasks). Requeued after the stuck timeout, a local run of more than 20 minutes went
    # back to the queue under the user, and a local travel orchestrator's chain was dead-lettered and
    # cascaded. So it is not ours to move unless the operator says so.
    _v(
        "UNOWNED_TASK_TIMEOUT_SEC",
        "int",
        0,
        "requeue tasks In Progress that name no worker once they have been In Progress this long (an attempt counted, dead-lettered at MAX_TASK_ATTEMPTS); 0 (the default) = never: on Reigh's database they are runs on users' own machines (claimed with a personal access token, which records no worker), which the app fails itself after 24 h without an update",
        "timeouts",
        minimum=0,
    ),
    _v(
        "ERROR_CLEANUP_GRACE_PERIOD_SEC",
        "int",
        600,
        "accepted for old env files and ignored: an errored worker's pod is terminated at once, its row closed when the provider confirms",
        "timeouts",
        minimum=0,
    ),
    _v(
        "ORPHAN_GRACE_SEC",
        "int",
        120,
        "age a prefixed pod no live row claims must reach before it is terminated",
        "timeouts",
        minimum=0,
    ),
    # --- Safety -----------------------------------------------------------------------------------
    _v(
        "MAX_CONSECUTIVE_FAILURES",
        "int",
        3,
        "failed workers in a row that stop spawning for a growing interval",
        "safety",
        minimum=1,
    ),
    _v(
        "SPAWN_BACKOFF_BASE_SEC",
        "int",
        60,
        "first back-off after a failed spawn or boot (per GPU type and data center), doubling",
        "safety",
        minimum=1,
    ),
    _v("SPAWN_BACKOFF_MAX_SEC", "int", 3600, "longest back-off", "safety", minimum=1),
    _v(
        "MAX_TASK_ATTEMPTS",
        "int",
        3,
        "attempts before a task is dead-lettered as Failed",
        "safety",
        minimum=1,
    ),
    # --- Daemon -----------------------------------------------------------------------------------
    # 10, not the old 30: a tick costs three round trips whatever the fleet size (bench/results/tick.md);
    # over Supabase the poll is the reaction time to new work, and the policy bench measured it cheaper.
    _v(
        "ORCHESTRATOR_POLL_SEC",
        "float",
        10,
        "seconds between ticks (new tasks wake the Postgres transport at once)",
        "daemon",
        minimum=0.05,
    ),
    _v(
        "WAKE_PROBE_SEC",
        "float",
        2,
        "over Supabase's REST API (no LISTEN), how often a one-row query checks for newly queued or requeued tasks to tick at once; 0 = off",
        "daemon",
        minimum=0,
    ),
    _v(
        "AUTO_START_WORKER_PROCESS",
        "bool",
        True,
        "start Headless-Wan2GP over SSH once a pod passes its checks",
        "daemon",
    ),
    _v(
        "WORKER_ID_PREFIX",
        "str",
        "gpu-",
        "prefix of worker ids and pod names; pods without it are never touched",
        "daemon",
    ),
    _v(
        "LEASE_TTL_SEC",
        "float",
        90,
        "leader lease lifetime; a follower takes over within it when the leader dies",
        "daemon",
        minimum=1,
    ),
    _v(
        "APPLY_CONCURRENCY",
        "int",
        64,
        "actions (SSH, API calls) run at once within a tick; pods 50-150 ms away make each SSH step wait on round trips, not CPU (bench/ssh_fanout.py)",
        "daemon",
        minimum=1,
    ),
    _v("SSH_CONNECT_TIMEOUT_SEC", "float", 10, "SSH connect and handshake timeout", "daemon", minimum=0.1),
    _v(
        "SSH_COMMAND_TIMEOUT_SEC", "float", 60, "default timeout of one remote command", "daemon", minimum=0.1
    ),
    _v(
        "EVENTS_RETENTION_DAYS",
        "int",
        90,
        "days orchestrator_events keeps a row; the leader prunes older ones in bounded batches; 0 = keep for ever",
        "daemon",
        minimum=0,
    ),
    _v(
        "METRICS_PORT",
        "int",
        0,
        "port of the Prometheus /metrics and /healthz endpoint; 0 = off",
        "daemon",
        minimum=0,
    ),
    # The endpoint tells the fleet's size and spend to whoever reaches it, without authentication: this
    # machine only by default; the container image sets 0.0.0.0, which publishing the port needs.
    _v(
        "METRICS_HOST",
        "str",
        "127.0.0.1",
        "address the metrics endpoint listens on: 127.0.0.1 = this machine only; 0.0.0.0 = every interface (the container image's value, which publishing the port needs)",
        "daemon",
    ),
    _v(
        "LOG_LEVEL",
        "choice",
        "INFO",
        "the daemon's log level: DEBUG, INFO, WARNING or ERROR (one-off commands log WARNING and above unless -v)",
        "daemon",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
    _v(
        "LOG_FORMAT",
        "choice",
        "auto",
        "json, console, or auto (console on a terminal, json otherwise)",
        "daemon",
        choices=("auto", "json", "console"),
    ),
)

BY_NAME: dict[str, Var] = {v.name: v for v in VARIABLES}


# Debian package names (Debian Policy 5.6.1); anything else could not be installed and would reach a shell.
DEBIAN_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")
# Branch names without anything a shell or git could misread: no leading '-', no '..', no '//'.
GIT_BRANCH_RE = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]{1,200}(?<![./])$")


def parse_packages(text: str) -> tuple[str, ...]:
    """``WORKER_APT_PACKAGES``: names separated by commas or spaces; ``none`` means no apt step."""
    items = tuple(item for item in re.split(r"[,\s]+", text.strip()) if item)
    return () if [i.lower() for i in items] == ["none"] else items


def apt_package_problems(packages: tuple[str, ...] | list[str]) -> list[str]:
    bad = [p for p in packages if not DEBIAN_PACKAGE_RE.match(p)]
    return [f"WORKER_APT_PACKAGES: {', '.join(map(repr, bad))} are not Debian package names"] if bad else []


def worker_dir_problems(dirs: tuple[str, ...] | list[str]) -> list[str]:
    """What is wrong with a ``WORKER_DIRS`` list (empty when nothing is)."""
    if not dirs:
        return ["WORKER_DIRS: expected at least one directory"]
    return [
        f"WORKER_DIRS: {d!r} is not usable: expected a path without '..', newlines or NUL"
        for d in dirs
        if not d or any(c in d for c in "\x00\n\r") or ".." in d.split("/")
    ]


def uv_install_url_problem(url: str) -> str | None:
    if url.strip().lower() == "none" or UV_INSTALL_URL_RE.fullmatch(url):
        return None
    return f"WORKER_UV_INSTALL_URL={url!r}: expected an https:// URL without spaces or quotes, or none"


# Whole: a server hands out a commit by its full hash only (an abbreviation cannot be fetched), and a
# shallow clone may not have it yet.
GIT_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


def git_commit_problem(commit: str) -> str | None:
    if GIT_COMMIT_RE.fullmatch(commit.strip().lower()):
        return None
    return f"WORKER_GIT_COMMIT={commit!r}: expected a full commit hash, 40 hexadecimal digits"


def git_branch_problem(branch: str) -> str | None:
    if GIT_BRANCH_RE.match(branch):
        return None
    return f"WORKER_GIT_BRANCH={branch!r}: expected a branch name (letters, digits, '.', '_', '-', '/')"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def mask(value: Any) -> str:
    """How a secret is shown anywhere: enough to tell two keys apart, never enough to use one."""
    text = str(value)
    if len(text) <= 8:
        return "****"
    return f"{text[:3]}…{text[-2:]} ({len(text)} chars)"


def mask_url_password(url: str) -> str:
    """The URL with its password masked wherever libpq reads one: ``user:password@`` and
    ``?password=`` (a URL that does not parse is masked whole)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask(url)
    if parts.password:
        url = url.replace(f":{parts.password}@", ":****@", 1)
    return _QUERY_PASSWORD.sub(r"\g<key>****", url)


_QUERY_PASSWORD = re.compile(r"(?P<key>[?&](?:password|passwd)=)[^&#\s]*", re.I)


def _looks_like_a_key(raw: str) -> bool:
    """A credential pasted into the wrong setting (``RUNPOD_API=rpa_...`` for ``RUNPOD_API_KEY``): one
    long run of letters and digits, which no other setting's value is. Its problem line shows it
    masked, since that line goes to the journal."""
    text = raw.strip()
    return (
        len(text) >= 20
        and not any(c.isspace() or c in "/.:@" for c in text)
        and any(c.isdigit() for c in text)
        and any(c.isalpha() for c in text)
    )


def _parse(var: Var, raw: str) -> tuple[Any, str | None]:
    """Convert one raw string; return (value, problem)."""

    def shown() -> str:
        return mask(raw) if var.secret or _looks_like_a_key(raw) else repr(raw)

    text = raw.strip()
    if var.kind in ("str", "path"):
        if text == "":
            # Blank is unset, as an empty variable is: the default (None for most).
            return _default(var), None
        if var.kind == "path":
            try:
                path = Path(text).expanduser()
            except RuntimeError as exc:  # "~someone/..." naming no user on this machine
                return None, f"{var.name}={shown()}: cannot be expanded ({exc}); give the path in full"
            if not path.is_file():
                return None, f"{var.name}={shown()}: no such file; expected the path of an existing file"
            return str(path), None
        return text, None
    if var.kind == "json":
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
        ):
            return (
                None,
                f'{var.name}={shown()}: expected a JSON object of string values, e.g. {{"KEY": "value"}}',
            )
        bad = [
            k
            for k in parsed
            if not k or not (k[0].isalpha() or k[0] == "_") or not all(c.isalnum() or c == "_" for c in k)
        ]
        if bad:
            return None, f"{var.name}: {', '.join(map(repr, bad))} are not environment variable names"
        nul = sorted(k for k, v in parsed.items() if "\x00" in v)
        if nul:
            # No process environment can hold one: the Runpod client refuses it before sending, so every
            # spawn would fail.
            return None, f"{var.name}: the value of {', '.join(nul)} contains a NUL character"
        return dict(parsed), None
    if var.kind == "packages":
        packages = parse_packages(text)
        problems = apt_package_problems(packages)
        return (None, problems[0]) if problems else (packages, None)
    if var.kind == "list":
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            return None, f"{var.name}={shown()}: expected a comma-separated list with at least one name"
        return tuple(items), None
    if var.kind == "choice":
        for choice in var.choices:
            if text.lower() == choice.lower():
                return choice, None
        return None, f"{var.name}={shown()}: expected one of {', '.join(var.choices)}"
    if var.kind == "bool":
        low = text.lower()
        if low in _TRUE:
            return True, None
        if low in _FALSE:
            return False, None
        return None, f"{var.name}={shown()}: expected true or false"
    number: float
    try:
        number = int(text) if var.kind == "int" else float(text)
    except ValueError:
        expected = "a whole number" if var.kind == "int" else "a number"
        return None, f"{var.name}={shown()}: expected {expected}"
    if not math.isfinite(number):
        return None, f"{var.name}={shown()}: expected a finite number"
    if var.minimum is not None and number < var.minimum:
        return None, f"{var.name}={shown()}: expected a number >= {var.minimum:g}"
    return number, None


def _default(var: Var) -> Any:
    if var.kind == "list" and isinstance(var.default, str):
        return tuple(item.strip() for item in var.default.split(","))
    if var.kind == "packages" and isinstance(var.default, str):
        return parse_packages(var.default)
    return var.default


def parse_value(var: Var, raw: str) -> tuple[Any, str | None]:
    """One raw string converted and checked exactly as the environment's values are: (value, problem)."""
    return _parse(var, raw)


def default_value(var: Var) -> Any:
    """A variable's default in its parsed form (a list default becomes a tuple)."""
    return _default(var)
