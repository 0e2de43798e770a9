"""Frozen settings, read once from the environment and an optional ``.env`` file, validated as a whole.

Sits at the very bottom of the design: every other module receives a :class:`Settings` value and never
reads the environment itself. Validation collects every problem before failing, so an operator fixes
a bad deployment in one round (the CLI turns :class:`~orchestrator.errors.ConfigError` into exit code 2).

Nothing is ignored without a word: an env file named explicitly must exist, and a variable name that is
not a setting but looks meant for one (``MAX_ACTIVE_GPU``, ``RUNPOD_GPU_TYPES``, any ``ORCHESTRATOR_*``)
becomes a :class:`ConfigWarning` naming the closest setting (:func:`name_warnings`). Warnings name
variables and line numbers, never values, which may be secrets.

The variables and defaults are those users of the system we replace already know; where a default of
that system cost money (see ``docs/operations.md``), the new default is explained next to it.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from orchestrator.errors import ConfigError

REAL_RUNPOD_BASE_URL = "https://api.runpod.io"


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
    _v("RUNPOD_API_KEY", "str", None, "Runpod API key (required; the emulator accepts any non-empty key)", "runpod", secret=True),
    _v("RUNPOD_API", "choice", "rest", "Runpod transport: rest (REST v2, default) or graphql (official SDK)", "runpod", choices=("rest", "graphql")),
    _v("RUNPOD_API_BASE_URL", "str", REAL_RUNPOD_BASE_URL, "Runpod API base URL (point it at `orchestrator sim serve` to rehearse offline)", "runpod"),
    _v("RUNPOD_GPU_TYPE", "list", "NVIDIA GeForce RTX 4090", "GPU display names in priority order, comma-separated; no capacity on one falls through to the next", "runpod"),
    _v("RUNPOD_WORKER_IMAGE", "str", "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04", "container image of the worker pods", "runpod"),
    _v("RUNPOD_STORAGE_NAME", "list", None, "network volumes holding the worker's checkout, comma-separated in priority order (one per data center); a volume pins its pods to its data center, and a spawn tries each GPU type in every volume before the next GPU type", "runpod"),
    _v("RUNPOD_VOLUME_MOUNT_PATH", "str", "/workspace", "where the network volume is mounted in each pod", "runpod"),
    _v("RUNPOD_DISK_SIZE_GB", "int", 20, "pod volume disk, GB, sent as GraphQL volumeInGb or REST v2's persistent mount (0, or 10 and up); with a network volume REST v2 cannot take it (the network volume replaces the volume disk)", "runpod", minimum=0),
    _v("RUNPOD_CONTAINER_DISK_GB", "int", 10, "container disk size, GB", "runpod", minimum=1),
    _v("WORKER_ENV", "json", None, 'extra environment for every worker pod, a JSON object of strings, e.g. {"HF_HOME": "/workspace/hf"}', "runpod", secret=True),
    _v("RUNPOD_SSH_PUBLIC_KEY_PATH", "path", None, "SSH public key injected into pods as PUBLIC_KEY (optional: derived from the private key when unset)", "runpod"),
    _v("RUNPOD_SSH_PRIVATE_KEY_PATH", "path", None, "SSH private key the orchestrator logs into pods with (optional: without it, the pod's SSH password, default runpod, which Runpod's images rarely accept)", "runpod"),
    # --- Worker start -----------------------------------------------------------------------------
    _v("WORKER_DIRS", "list", "reigh/Headless-Wan2GP", "the worker's checkout, searched in order, comma-separated, relative to RUNPOD_VOLUME_MOUNT_PATH unless absolute (later versions of the original used Reigh-Worker,Headless-Wan2GP)", "worker"),
    _v("WORKER_LAUNCH", "choice", "venv", "venv: python worker.py (else headless.py) --db-type supabase ... in the checkout's venv, as the original; uv: uv run --python 3.10 --extra cuda124 python worker.py ... --wgp-profile N, as its later versions", "worker", choices=("venv", "uv")),
    _v("WORKER_WGP_PROFILE", "int", 1, "--wgp-profile of the uv launch", "worker", minimum=1),
    _v("WORKER_GIT_BRANCH", "str", "main", "branch pulled before each start (timeout 30 git pull origin BRANCH; failure tolerated)", "worker"),
    _v("WORKER_APT_PACKAGES", "packages", "python3.10-venv,ffmpeg", "apt packages installed after apt-get update before each start, comma-separated; none skips the apt step", "worker"),
    # --- Database ---------------------------------------------------------------------------------
    _v("SUPABASE_URL", "str", None, "Supabase project URL (REST API transport, the default when set)", "database"),
    _v("SUPABASE_SERVICE_ROLE_KEY", "str", None, "Supabase service-role key (orchestrator and workers)", "database", secret=True),
    _v("SUPABASE_ANON_KEY", "str", None, "Supabase anon key, passed to workers", "database", secret=True),
    _v("DATABASE_URL", "str", None, "direct Postgres URL; the alternative to Supabase's REST API, enables instant wake-up on new tasks", "database", secret=True),
    _v("DB_BACKEND", "choice", "auto", "auto (Supabase when SUPABASE_URL is set, else Postgres), supabase or postgres", "database", choices=("auto", "supabase", "postgres")),
    # --- Scaling ----------------------------------------------------------------------------------
    _v("MIN_ACTIVE_GPUS", "int", 0, "floor of live workers; 0 scales to zero when the queue is empty", "scaling", minimum=0),
    _v("MAX_ACTIVE_GPUS", "int", 10, "ceiling of non-terminal workers (spawning ones included)", "scaling", minimum=0),
    _v("MACHINES_TO_KEEP_IDLE", "int", 0, "spare idle workers kept above demand for fast starts", "scaling", minimum=0),
    _v("TASKS_PER_GPU_THRESHOLD", "int", 3, "claimable-plus-running tasks one worker is expected to absorb before another is spawned", "scaling", minimum=1),
    _v("MAX_HOURLY_SPEND", "float", 0.0, "cap on the fleet's USD per hour at current prices; 0 = no cap", "scaling", minimum=0),
    # --- Timeouts ---------------------------------------------------------------------------------
    _v("GPU_IDLE_TIMEOUT_SEC", "int", 600, "idle time (no running task, measured from the last completion or activation) before a worker above the floor is drained", "timeouts", minimum=0),
    # 10, not the old 30: measured in bench/results/policy.md (docs/policy.md), 2-9% cheaper on every
    # trace at the same p95 wait.
    _v("GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC", "int", 10, "idle time before draining a worker that is above the desired count", "timeouts", minimum=0),
    # 20 minutes, not the old 10: cold image pulls plus a first PyTorch install take 5-20 minutes, and
    # the old default killed healthy cold starts (lessons file, "premature kills").
    _v("SPAWNING_TIMEOUT_SEC", "int", 1200, "creation-to-active deadline for a new worker before it is failed", "timeouts", minimum=1),
    _v("HEARTBEAT_TIMEOUT_SEC", "int", 120, "heartbeat age that fails a worker while it runs a task or tasks wait", "timeouts", minimum=1),
    _v("TASK_STUCK_TIMEOUT_SEC", "int", 1200, "a task running longer fails its worker and is requeued (types containing _orchestrator exempt)", "timeouts", minimum=1),
    _v("ERROR_CLEANUP_GRACE_PERIOD_SEC", "int", 600, "accepted for old env files and ignored: an errored worker's pod is terminated at once, its row closed when the provider confirms", "timeouts", minimum=0),
    _v("ORPHAN_GRACE_SEC", "int", 120, "age a prefixed pod no live row claims must reach before it is terminated", "timeouts", minimum=0),
    # --- Safety -----------------------------------------------------------------------------------
    _v("MAX_CONSECUTIVE_FAILURES", "int", 3, "failed workers in a row that stop spawning for a growing interval", "safety", minimum=1),
    _v("SPAWN_BACKOFF_BASE_SEC", "int", 60, "first back-off after a failed spawn or boot (per GPU type and data center), doubling", "safety", minimum=1),
    _v("SPAWN_BACKOFF_MAX_SEC", "int", 3600, "longest back-off", "safety", minimum=1),
    _v("MAX_TASK_ATTEMPTS", "int", 3, "attempts before a task is dead-lettered as Failed", "safety", minimum=1),
    # --- Daemon -----------------------------------------------------------------------------------
    # 10, not the old 30: a tick costs three round trips whatever the fleet size (bench/results/tick.md);
    # over Supabase the poll is the reaction time to new work, and the policy bench measured it cheaper.
    _v("ORCHESTRATOR_POLL_SEC", "float", 10, "seconds between ticks (new tasks wake the Postgres transport at once)", "daemon", minimum=0.05),
    _v("WAKE_PROBE_SEC", "float", 2, "over Supabase's REST API (no LISTEN), how often a one-row query checks for newly queued or requeued tasks to tick at once; 0 = off", "daemon", minimum=0),
    _v("AUTO_START_WORKER_PROCESS", "bool", True, "start Headless-Wan2GP over SSH once a pod passes its checks", "daemon"),
    _v("WORKER_ID_PREFIX", "str", "gpu-", "prefix of worker ids and pod names; pods without it are never touched", "daemon"),
    _v("LEASE_TTL_SEC", "float", 90, "leader lease lifetime; a follower takes over within it when the leader dies", "daemon", minimum=1),
    _v("APPLY_CONCURRENCY", "int", 64, "actions (SSH, API calls) run at once within a tick; pods 50-150 ms away make each SSH step wait on round trips, not CPU (bench/ssh_fanout.py)", "daemon", minimum=1),
    _v("SSH_CONNECT_TIMEOUT_SEC", "float", 10, "SSH connect and handshake timeout", "daemon", minimum=0.1),
    _v("SSH_COMMAND_TIMEOUT_SEC", "float", 60, "default timeout of one remote command", "daemon", minimum=0.1),
    _v("EVENTS_RETENTION_DAYS", "int", 90, "days orchestrator_events keeps a row; the leader prunes older ones in bounded batches; 0 = keep for ever", "daemon", minimum=0),
    _v("METRICS_PORT", "int", 0, "port of the Prometheus /metrics and /healthz endpoint; 0 = off", "daemon", minimum=0),
    _v("LOG_LEVEL", "choice", "INFO", "the daemon's log level: DEBUG, INFO, WARNING or ERROR (one-off commands log WARNING and above unless -v)", "daemon", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    _v("LOG_FORMAT", "choice", "auto", "json, console, or auto (console on a terminal, json otherwise)", "daemon", choices=("auto", "json", "console")),
)

BY_NAME: dict[str, Var] = {v.name: v for v in VARIABLES}

# Read elsewhere in the package, outside Settings (paths for the embedded stack, a test hook): known
# names, so the check for misspelt settings stays quiet about them.
OTHER_NAMES: frozenset[str] = frozenset(
    {
        "ORCHESTRATOR_MIGRATIONS_DIR",  # orchestrator.db.migrate: where migrations/ is
        "ORCHESTRATOR_PG_BINDIR",  # orchestrator.sim.pg: PostgreSQL's binaries for the embedded stack
        "ORCHESTRATOR_TEST_CRASH_AT",  # orchestrator.controller: the crash-recovery tests' crash point
    }
)
# Read by the runpod SDK this package depends on (runpod-python: runpod/__init__.py, runpod/api,
# runpod/serverless): they may be set beside ours on purpose, and some look like near misses of ours.
RUNPOD_SDK_NAMES: frozenset[str] = frozenset(
    {
        "RUNPOD_AI_API_KEY", "RUNPOD_DEBUG_LEVEL", "RUNPOD_ENDPOINT_ID", "RUNPOD_POD_HOSTNAME", "RUNPOD_POD_ID",
        "RUNPOD_PROJECT_ID", "RUNPOD_UA_INTEGRATION", "RUNPOD_PING_INTERVAL", "RUNPOD_REALTIME_CONCURRENCY",
        "RUNPOD_REALTIME_PORT", "RUNPOD_WEBHOOK_GET_JOB", "RUNPOD_WEBHOOK_PING", "RUNPOD_WEBHOOK_POST_OUTPUT",
        "RUNPOD_WEBHOOK_POST_STREAM", "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", "RUNPOD_SKIP_GPU_CHECK",
        "RUNPOD_GPU_BENCHMARK_TIMEOUT", "RUNPOD_GPU_MAX_ERROR_MESSAGES", "RUNPOD_GPU_TEST_TIMEOUT",
        "RUNPOD_MIN_CUDA_VERSION", "RUNPOD_MIN_DISK_PERCENT", "RUNPOD_MIN_MEMORY_GB", "RUNPOD_NETWORK_CHECK_TIMEOUT",
    }
)
KNOWN_NAMES: frozenset[str] = frozenset(BY_NAME) | OTHER_NAMES | RUNPOD_SDK_NAMES
# Our own namespace: every unknown ORCHESTRATOR_* name is a mistake, wherever it is set.
OWN_PREFIX = "ORCHESTRATOR_"
# In the env file, which exists for the orchestrator, a Runpod or Supabase name that is not ours is a
# mistake too. In the process environment it may belong to another tool (the SDK's, a pod's own
# RUNPOD_POD_ID, the Supabase CLI's SUPABASE_ACCESS_TOKEN), so there only near misses are reported.
FILE_FAMILIES = ("ORCHESTRATOR_", "RUNPOD_", "SUPABASE_")
# difflib ratios from which a name counts as a misspelling of a setting. 0.9 lets one wrong, missing or
# extra character through in names of 10 or more (MAX_ACTIVE_GPU, LOGLEVEL, METRIC_PORT) but not another
# program's word (DATABASE_USER is 0.88 from DATABASE_URL); the env file, meant for us, is read looser.
ENVIRONMENT_CUTOFF = 0.9
FILE_CUTOFF = 0.8

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
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":****@", 1)
    return url


@dataclass(frozen=True)
class EnvFile:
    """An env file the settings were asked to read, and whether it was there."""

    path: str  # as given (``.env``, ``/etc/orchestrator/orchestrator.env``)
    resolved: str
    read: bool
    required: bool

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "resolved": self.resolved, "read": self.read, "required": self.required}


@dataclass(frozen=True)
class ConfigWarning:
    """Something the configuration ignored that the operator probably meant: logged as ``event``.

    Never carries a value: a misspelt ``RUNPOD_API_KY`` holds a key all the same.
    """

    event: str
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "message": self.message, **self.fields}


@dataclass(frozen=True)
class Settings:
    """Every variable in :data:`VARIABLES`, typed, plus where each value came from.

    ``files`` are the env files asked for, in the order they were considered (the environment wins over
    them, they win over the defaults); ``warnings`` what was ignored in the environment or those files.
    """

    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)
    files: tuple[EnvFile, ...] = ()
    warnings: tuple[ConfigWarning, ...] = ()

    def __getattr__(self, item: str) -> Any:
        # Attribute access by lower-case variable name: settings.max_active_gpus.
        values = object.__getattribute__(self, "values")
        key = item.upper()
        if key in values:
            return values[key]
        raise AttributeError(item)

    def get(self, name: str) -> Any:
        return self.values[name]

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed (tests, the demo); validated like the original."""
        values = dict(self.values)
        sources = dict(self.sources)
        for key, value in changes.items():
            values[key.upper()] = value
            sources[key.upper()] = "override"
        new = Settings(values, sources, self.files, self.warnings)
        problems = _cross_checks(new.values)
        if problems:
            raise ConfigError(problems)
        return new

    @property
    def secrets(self) -> list[str]:
        """Every secret value configured, including the database password and the private key's text."""
        found: list[str] = []
        for var in VARIABLES:
            value = self.values.get(var.name)
            if var.secret and value and isinstance(value, str):
                found.append(value)
        found.extend(v for v in (self.values.get("WORKER_ENV") or {}).values() if v)
        db_url = self.values.get("DATABASE_URL")
        if db_url:
            parts = urlsplit(db_url)
            # libpq takes the password from user:password@ or from ?password=, percent-encoded in both.
            candidates = [parts.password, *parse_qs(parts.query).get("password", [])]
            for password in filter(None, candidates):
                found.extend({password, unquote(password)})
        key_path = self.values.get("RUNPOD_SSH_PRIVATE_KEY_PATH")
        if key_path:
            try:
                text = Path(key_path).read_text()
            except OSError:
                text = ""
            found.extend(line for line in text.splitlines() if len(line) >= 16 and "-----" not in line)
        return found

    @property
    def gpu_types(self) -> list[str]:
        return list(self.values["RUNPOD_GPU_TYPE"])

    @property
    def db_backend(self) -> str:
        """The database transport in effect: ``supabase`` or ``postgres`` (or ``none``)."""
        chosen = self.values["DB_BACKEND"]
        if chosen != "auto":
            return str(chosen)
        if self.values.get("SUPABASE_URL"):
            return "supabase"
        if self.values.get("DATABASE_URL"):
            return "postgres"
        return "none"

    @property
    def uses_real_runpod(self) -> bool:
        return str(self.values["RUNPOD_API_BASE_URL"]).rstrip("/") == REAL_RUNPOD_BASE_URL

    def display_value(self, name: str) -> str:
        value = self.values.get(name)
        var = BY_NAME[name]
        if value is None:
            return "(unset)"
        if var.kind == "json":
            return ", ".join(f"{k}={mask(v)}" for k, v in value.items()) or "(empty)"
        if var.secret:
            return mask_url_password(str(value)) if name == "DATABASE_URL" and "://" in str(value) and urlsplit(str(value)).password else mask(value)
        if var.kind == "list":
            return ",".join(value)
        if var.kind == "packages":
            return ",".join(value) or "none"
        if var.kind == "bool":
            return "true" if value else "false"
        return str(value)

    def public_value(self, name: str) -> Any:
        """The value as JSON may show it: typed, but masked like :meth:`display_value` when secret."""
        value = self.values.get(name)
        var = BY_NAME[name]
        if value is None:
            return None
        if var.kind == "json":
            return {k: mask(v) for k, v in value.items()}
        if var.secret:
            return self.display_value(name)
        if isinstance(value, tuple):
            return list(value)
        return value

    def require(self, *, database: bool = False, runpod: bool = False) -> None:
        """Check what a command needs beyond well-formed values (the daemon needs both)."""
        problems = _requirement_problems(self.values, database=database, runpod=runpod)
        if problems:
            raise ConfigError(problems)


def _requirement_problems(
    values: Mapping[str, Any], *, database: bool, runpod: bool, skip: frozenset[str] = frozenset()
) -> list[str]:
    """What a command needs set; ``skip`` names variables already reported as malformed."""
    found: list[tuple[str, str]] = []
    if database:
        backend = Settings(values).db_backend
        if backend == "none":
            found.append(
                ("DATABASE_URL", "neither database is configured: set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY, or DATABASE_URL")
            )
        elif backend == "supabase":
            if not values.get("SUPABASE_URL"):
                found.append(("SUPABASE_URL", "DB_BACKEND=supabase but SUPABASE_URL is unset"))
            if not values.get("SUPABASE_SERVICE_ROLE_KEY"):
                found.append(
                    ("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SERVICE_ROLE_KEY is unset: the Supabase transport needs the service-role key")
                )
        elif backend == "postgres" and not values.get("DATABASE_URL"):
            found.append(("DATABASE_URL", "DB_BACKEND=postgres but DATABASE_URL is unset"))
    if runpod and not values.get("RUNPOD_API_KEY"):
        found.append(("RUNPOD_API_KEY", "RUNPOD_API_KEY is unset: expected the API key of your Runpod account"))
    # The SSH key paths are optional, as they were in the original: without a private key the daemon
    # logs into pods with a password and says so once at start-up (RunpodClient.startup_warnings).
    # A malformed value was reset to its default; calling it "unset" as well would report it twice.
    return [problem for name, problem in found if name not in skip]


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: KEY=VALUE lines, optional ``export``, quotes, ``#`` comments."""
    return _read_env_lines(path)[0]


def _read_env_lines(path: Path) -> tuple[dict[str, str], list[int], dict[str, list[int]]]:
    """(values, numbers of lines without ``=``, names assigned on more than one line -> their lines)."""
    result: dict[str, str] = {}
    ignored: list[int] = []
    seen: dict[str, list[int]] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            ignored.append(number)
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        result[key.strip()] = value
        seen.setdefault(key.strip(), []).append(number)
    return result, ignored, {k: v for k, v in seen.items() if len(v) > 1}


def _one_word_apart(a: str, b: str) -> bool:
    """``GPU_IDLE_TIMEOUT`` and ``GPU_IDLE_TIMEOUT_SEC``: the same words but one (a forgotten unit,
    ``SUPABASE_SERVICE_KEY`` for ``SUPABASE_SERVICE_ROLE_KEY``), at least two words in common."""
    short, long = sorted((a.split("_"), b.split("_")), key=len)
    if len(long) - len(short) != 1 or len(short) < 2:
        return False
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def closest_setting(name: str, cutoff: float) -> str | None:
    """The setting ``name`` most likely misspells, or None when it looks like none of them.

    Case is ignored (``max_active_gpus``); a name one whole word away counts whatever its ratio.
    """
    upper = name.upper()
    if upper in BY_NAME:
        return upper
    apart = [known for known in BY_NAME if _one_word_apart(upper, known)]
    candidates = apart + difflib.get_close_matches(upper, list(BY_NAME), n=1, cutoff=cutoff)
    if not candidates:
        return None
    return max(candidates, key=lambda known: difflib.SequenceMatcher(None, upper, known).ratio())


def _unknown(name: str, where: list[str], suggestion: str | None) -> ConfigWarning:
    places = " and ".join(where)
    hint = f"; did you mean {suggestion}?" if suggestion else " (no setting has a similar name)"
    return ConfigWarning(
        "config_unknown_variable",
        f"{name} (in {places}) is not a setting of the orchestrator and is ignored{hint}",
        {"name": name, "source": places, "suggestion": suggestion},
    )


def _family_suggestion(name: str) -> str | None:
    """A hint for an unknown name of our families, when one is plausible (else the message says none).

    ``ORCHESTRATOR_MAX_ACTIVE_GPUS``: a setting with our prefix added; otherwise a close setting, but
    not by the shared prefix alone (``ORCHESTRATOR_FOO`` is 0.76 from ``ORCHESTRATOR_POLL_SEC``).
    """
    upper = name.upper()
    if upper.startswith(OWN_PREFIX):
        rest = closest_setting(upper[len(OWN_PREFIX) :], FILE_CUTOFF)
        if rest is not None:
            return rest
    return closest_setting(upper, FILE_CUTOFF)


def name_warnings(environ: Mapping[str, str], file_values: Mapping[str, str], file_label: str = ".env") -> list[ConfigWarning]:
    """Names that are not settings but look meant for one, from the environment and the env file.

    Reported: any unknown ``ORCHESTRATOR_*`` name; in the env file also any unknown ``RUNPOD_*`` or
    ``SUPABASE_*`` name; anywhere a name close to a setting's (:func:`closest_setting`; closer in the
    environment, whose other names belong to other programs). Names only: values are never read.
    """
    found: dict[str, tuple[list[str], str | None]] = {}
    for names, where, cutoff, families in (
        (sorted(environ), "the environment", ENVIRONMENT_CUTOFF, (OWN_PREFIX,)),
        (list(file_values), file_label, FILE_CUTOFF, FILE_FAMILIES),
    ):
        for name in names:
            if name in KNOWN_NAMES:
                continue
            suggestion = closest_setting(name, cutoff)
            if suggestion is None and not name.upper().startswith(families):
                continue
            if suggestion is None:
                suggestion = _family_suggestion(name)
            places, _ = found.setdefault(name, ([], suggestion))
            places.append(where)
    return [_unknown(name, places, suggestion) for name, (places, suggestion) in found.items()]


def _parse(var: Var, raw: str) -> tuple[Any, str | None]:
    """Convert one raw string; return (value, problem)."""

    def shown() -> str:
        return mask(raw) if var.secret else repr(raw)

    text = raw.strip()
    if var.kind in ("str", "path"):
        if text == "":
            return None, None
        if var.kind == "path":
            path = Path(text).expanduser()
            if not path.is_file():
                return None, f"{var.name}={shown()}: no such file; expected the path of an existing file"
            return str(path), None
        return text, None
    if var.kind == "json":
        import json

        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()):
            return None, f"{var.name}={shown()}: expected a JSON object of string values, e.g. {{\"KEY\": \"value\"}}"
        bad = [k for k in parsed if not k or not (k[0].isalpha() or k[0] == "_") or not all(c.isalnum() or c == "_" for c in k)]
        if bad:
            return None, f"{var.name}: {', '.join(map(repr, bad))} are not environment variable names"
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


Check = Callable[[Mapping[str, Any]], "str | None"]


def _cross_checks(values: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    lo, hi = values.get("MIN_ACTIVE_GPUS"), values.get("MAX_ACTIVE_GPUS")
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        problems.append(f"MIN_ACTIVE_GPUS={lo} is greater than MAX_ACTIVE_GPUS={hi}: expected MIN <= MAX")
    base, top = values.get("SPAWN_BACKOFF_BASE_SEC"), values.get("SPAWN_BACKOFF_MAX_SEC")
    if isinstance(base, int) and isinstance(top, int) and base > top:
        problems.append(f"SPAWN_BACKOFF_BASE_SEC={base} is greater than SPAWN_BACKOFF_MAX_SEC={top}")
    ttl, poll = values.get("LEASE_TTL_SEC"), values.get("ORCHESTRATOR_POLL_SEC")
    if isinstance(ttl, int | float) and isinstance(poll, int | float) and ttl <= poll:
        problems.append(
            f"LEASE_TTL_SEC={ttl:g} must be longer than ORCHESTRATOR_POLL_SEC={poll:g}, or the leader loses its lease between ticks"
        )
    for name in ("SUPABASE_URL", "RUNPOD_API_BASE_URL"):
        url = values.get(name)
        if url and urlsplit(str(url)).scheme not in ("http", "https"):
            problems.append(f"{name}={url!r}: expected an http(s) URL")
    db_url = values.get("DATABASE_URL")
    if db_url and urlsplit(str(db_url)).scheme not in ("postgres", "postgresql"):
        problems.append(f"DATABASE_URL={mask(db_url)}: expected a postgresql:// URL")
    mount = values.get("RUNPOD_VOLUME_MOUNT_PATH")
    if mount and not str(mount).startswith("/"):
        problems.append(f"RUNPOD_VOLUME_MOUNT_PATH={mount!r}: expected an absolute path")
    dirs = values.get("WORKER_DIRS")
    if isinstance(dirs, tuple):
        problems.extend(worker_dir_problems(dirs))
    branch = values.get("WORKER_GIT_BRANCH")
    if isinstance(branch, str):
        problem = git_branch_problem(branch)
        if problem:
            problems.append(problem)
    disk = values.get("RUNPOD_DISK_SIZE_GB")
    if values.get("RUNPOD_API") == "rest" and not values.get("RUNPOD_STORAGE_NAME") and isinstance(disk, int) and 0 < disk < 10:
        problems.append(
            f"RUNPOD_DISK_SIZE_GB={disk}: REST v2's volume disk (persistent mount) takes 0 (none) or at least 10 GB"
        )
    prefix = values.get("WORKER_ID_PREFIX")
    if prefix is not None and (not prefix or not all(c.isalnum() or c in "-_" for c in str(prefix))):
        problems.append(f"WORKER_ID_PREFIX={prefix!r}: expected letters, digits, '-' or '_' (it names pods)")
    return problems


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: Path | str | None = ".env",
    *,
    env_file_required: bool = False,
    require_database: bool = False,
    require_runpod: bool = False,
) -> Settings:
    """Read every variable once; raise ConfigError listing every problem found.

    The process environment wins over ``.env`` (so a systemd EnvironmentFile or a container's
    ``-e`` can override a checked-in default), and ``.env`` wins over the defaults. An absent
    ``env_file`` is skipped unless ``env_file_required`` (the operator named it: a typo in its path
    must not leave the defaults in force); one that exists but cannot be read is always a problem.
    ``require_*`` add what the calling command needs (:meth:`Settings.require`) to the same single
    report. Names that look like misspelt settings become :attr:`Settings.warnings`, and notes
    (``add_note``) of the ConfigError when there is one.
    """
    env = dict(os.environ if environ is None else environ)
    file_values: dict[str, str] = {}
    problems: list[str] = []
    warnings: list[ConfigWarning] = []
    files: list[EnvFile] = []
    if env_file is not None:
        path = Path(env_file)
        label = str(env_file)
        try:
            file_values, ignored, repeated = _read_env_lines(path)
        except FileNotFoundError:
            files.append(EnvFile(label, str(path.absolute()), read=False, required=env_file_required))
            if env_file_required:
                problems.append(f"--env-file {label}: no such file")
        except (OSError, UnicodeDecodeError) as exc:
            files.append(EnvFile(label, str(path.absolute()), read=False, required=env_file_required))
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            problems.append(f"env file {label}: cannot be read ({reason})")
        else:
            files.append(EnvFile(label, str(path.resolve()), read=True, required=env_file_required))
            warnings.extend(
                ConfigWarning(
                    "config_env_file_line_ignored",
                    f"{label} line {n} is not NAME=value and is ignored",
                    {"file": label, "line": n},
                )
                for n in ignored
            )
            warnings.extend(
                ConfigWarning(
                    "config_env_file_duplicate",
                    f"{name} is set on lines {', '.join(map(str, lines))} of {label}; the last one counts",
                    {"file": label, "name": name, "lines": lines},
                )
                for name, lines in repeated.items()
            )
    warnings.extend(name_warnings(env, file_values, str(env_file)))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    malformed: set[str] = set()
    for var in VARIABLES:
        if var.name in env and env[var.name] != "":
            raw, source = env[var.name], "environment"
        elif var.name in file_values and file_values[var.name] != "":
            raw, source = file_values[var.name], ".env"
        else:
            values[var.name] = _default(var)
            sources[var.name] = "default"
            continue
        value, problem = _parse(var, raw)
        if problem:
            problems.append(problem)
            malformed.add(var.name)
        values[var.name] = value if problem is None else _default(var)
        sources[var.name] = source
    problems.extend(p for p in _cross_checks(values) if p not in problems)
    problems.extend(
        _requirement_problems(values, database=require_database, runpod=require_runpod, skip=frozenset(malformed))
    )
    if problems:
        error = ConfigError(problems)
        for warning in warnings:
            error.add_note(warning.message)
        raise error
    return Settings(values, sources, tuple(files), tuple(warnings))


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


def defaults() -> Settings:
    """The settings with nothing configured (the pure policy's tests and the simulator start here)."""
    return load_settings(environ={}, env_file=None)


def precedence(settings: Settings) -> list[str]:
    """Where values come from, the winning source first."""
    return ["environment", *(f.path for f in settings.files if f.read), "default"]


def render(settings: Settings) -> str:
    """The table `orchestrator config` prints: what was read, then name, effective value, source."""
    lines = [f"# read, the first wins: {'; '.join(_describe_source(settings, s) for s in precedence(settings))}"]
    lines += [f"# not read: {f.path} (no such file; optional)" for f in settings.files if not f.read]
    lines += [f"# warning: {w.message}" for w in settings.warnings]
    width = max(len(v.name) for v in VARIABLES)
    lines.append(f"{'VARIABLE'.ljust(width)}  {'SOURCE':11}  VALUE")
    group = None
    for var in VARIABLES:
        if var.group != group:
            group = var.group
            lines.append(f"# {group}")
        lines.append(f"{var.name.ljust(width)}  {settings.sources.get(var.name, 'default'):11}  {settings.display_value(var.name)}")
    return "\n".join(lines)


def _describe_source(settings: Settings, source: str) -> str:
    if source == "environment":
        return "the process environment"
    if source == "default":
        return "the defaults"
    read = next(f for f in settings.files if f.path == source)
    shown = source if read.resolved == source else f"{source} = {read.resolved}"
    return f"{shown} (SOURCE .env)"


def to_json(settings: Settings) -> dict[str, Any]:
    """``orchestrator config --json``: the same facts as :func:`render`, secrets masked."""
    return {
        "precedence": precedence(settings),
        "files": [f.to_dict() for f in settings.files],
        "warnings": [w.to_dict() for w in settings.warnings],
        "settings": [
            {
                "name": var.name,
                "group": var.group,
                "source": settings.sources.get(var.name, "default"),
                "value": settings.public_value(var.name),
                "secret": var.secret,
            }
            for var in VARIABLES
        ],
    }
