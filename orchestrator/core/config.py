"""Frozen, typed settings, read once from the environment and an optional ``.env`` file, validated as a whole.

Sits at the very bottom of the design, in the pure core: every other module receives a
:class:`Settings` value and never reads the environment itself. Validation collects every problem before
failing, so an operator fixes a bad deployment in one round (the CLI turns
:class:`~orchestrator.core.errors.ConfigError` into exit code 2).

The variables themselves (kind, default, help) are the table of :mod:`orchestrator.core.variables`;
:class:`Settings` has one typed attribute per row, checked against the table when this module is
imported (:func:`_check_fields`), so ``settings.max_active_gpus`` is an ``int`` mypy can see. Nothing is
ignored without a word: an env file named explicitly must exist, and a name that looks meant for a
setting becomes a :class:`ConfigWarning` (:mod:`orchestrator.core.env_names`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from orchestrator.core.env_names import KNOWN_NAMES as KNOWN_NAMES
from orchestrator.core.env_names import ConfigWarning as ConfigWarning
from orchestrator.core.env_names import closest_setting as closest_setting
from orchestrator.core.env_names import name_warnings as name_warnings
from orchestrator.core.env_names import read_env_file as read_env_file
from orchestrator.core.env_names import read_env_lines
from orchestrator.core.errors import ConfigError
from orchestrator.core.states import WORKER_ID_MAX, WORKER_ID_SUFFIX_EXAMPLE, usable_worker_id
from orchestrator.core.variables import BY_NAME as BY_NAME
from orchestrator.core.variables import DEFAULT_UV_INSTALL_URL as DEFAULT_UV_INSTALL_URL
from orchestrator.core.variables import REAL_RUNPOD_BASE_URL as REAL_RUNPOD_BASE_URL
from orchestrator.core.variables import UV_INSTALL_URL_RE as UV_INSTALL_URL_RE
from orchestrator.core.variables import VARIABLES as VARIABLES
from orchestrator.core.variables import Var as Var
from orchestrator.core.variables import apt_package_problems as apt_package_problems
from orchestrator.core.variables import default_value as default_value
from orchestrator.core.variables import git_branch_problem as git_branch_problem
from orchestrator.core.variables import git_commit_problem as git_commit_problem
from orchestrator.core.variables import mask as mask
from orchestrator.core.variables import mask_url_password as mask_url_password
from orchestrator.core.variables import parse_packages as parse_packages
from orchestrator.core.variables import parse_value as parse_value
from orchestrator.core.variables import uv_install_url_problem as uv_install_url_problem
from orchestrator.core.variables import worker_dir_problems as worker_dir_problems


@dataclass(frozen=True)
class EnvFile:
    """An env file the settings were asked to read, and whether it was there."""

    path: str  # as given (``.env``, ``/etc/orchestrator/orchestrator.env``)
    resolved: str
    read: bool
    required: bool

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "resolved": self.resolved, "read": self.read, "required": self.required}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every variable of :data:`VARIABLES` as a typed attribute (its name in lower case), plus where
    each value came from.

    ``sources`` maps a variable name to ``environment``, ``.env``, ``default`` or ``override``;
    ``files`` are the env files asked for, in the order they were considered (the environment wins over
    them, they win over the defaults); ``warnings`` what was ignored in the environment or those files.
    Build one with :func:`load_settings`, :func:`defaults` or :meth:`replace`.
    """

    # --- runpod
    runpod_api_key: str | None
    runpod_api: str
    runpod_api_base_url: str
    runpod_gpu_type: tuple[str, ...]
    runpod_worker_image: str
    runpod_storage_name: tuple[str, ...] | None
    runpod_volume_mount_path: str
    runpod_disk_size_gb: int
    runpod_container_disk_gb: int
    worker_env: Mapping[str, str] | None
    pod_env_supabase_keys: bool | None  # None: as AUTO_START_WORKER_PROCESS=false asks (pod_env_keys)
    runpod_ssh_public_key_path: str | None
    runpod_ssh_private_key_path: str | None
    # --- worker
    worker_dirs: tuple[str, ...]
    worker_launch: str
    worker_wgp_profile: int
    worker_uv_install_url: str
    worker_poll_interval_sec: int
    worker_git_branch: str
    worker_git_commit: str | None
    worker_apt_packages: tuple[str, ...]
    # --- database
    supabase_url: str | None
    supabase_service_role_key: str | None
    supabase_anon_key: str | None
    database_url: str | None
    db_backend: str  # as configured: auto, supabase or postgres (the one in effect: database_backend)
    # --- scaling
    min_active_gpus: int
    max_active_gpus: int
    machines_to_keep_idle: int
    tasks_per_gpu_threshold: int
    max_hourly_spend: float
    wait_target_sec: float
    warm_pool_max: int
    warm_pool_ttl_sec: int
    warm_pool_terminate_on_pause: bool
    # --- timeouts
    gpu_idle_timeout_sec: int
    parent_release_min_sec: int
    gpu_overcapacity_idle_timeout_sec: int
    spawning_timeout_sec: int
    worker_setup_timeout_sec: int
    heartbeat_timeout_sec: int
    task_stuck_timeout_sec: int | None
    unowned_task_timeout_sec: int
    error_cleanup_grace_period_sec: int
    orphan_grace_sec: int
    # --- safety
    max_consecutive_failures: int
    spawn_backoff_base_sec: int
    spawn_backoff_max_sec: int
    max_task_attempts: int
    # --- daemon
    orchestrator_poll_sec: float
    wake_probe_sec: float
    auto_start_worker_process: bool
    worker_id_prefix: str
    lease_ttl_sec: float
    apply_concurrency: int
    ssh_connect_timeout_sec: float
    ssh_command_timeout_sec: float
    events_retention_days: int
    metrics_port: int
    metrics_host: str
    log_level: str
    log_format: str
    # --- where the values came from
    sources: Mapping[str, str] = field(default_factory=dict)
    files: tuple[EnvFile, ...] = ()
    warnings: tuple[ConfigWarning, ...] = ()

    @classmethod
    def from_values(
        cls,
        values: Mapping[str, Any],
        sources: Mapping[str, str] | None = None,
        files: tuple[EnvFile, ...] = (),
        warnings: tuple[ConfigWarning, ...] = (),
    ) -> Settings:
        """From ``{VARIABLE_NAME: parsed value}``; a variable missing from ``values`` takes its default."""
        typed = {
            var.name.lower(): values[var.name] if var.name in values else default_value(var)
            for var in VARIABLES
        }
        return cls(**typed, sources=dict(sources or {}), files=files, warnings=warnings)

    @property
    def pod_env_keys(self) -> bool:
        """Whether pods are created with the Supabase keys in their env: as set, else only when the
        daemon does not start the workers (theirs find the keys nowhere else)."""
        if self.pod_env_supabase_keys is not None:
            return self.pod_env_supabase_keys
        return not self.auto_start_worker_process

    @property
    def values(self) -> dict[str, Any]:
        """``{VARIABLE_NAME: value}`` for every variable, in the table's order."""
        return {var.name: getattr(self, var.name.lower()) for var in VARIABLES}

    def get(self, name: str) -> Any:
        """A value by its variable name (``MAX_ACTIVE_GPUS``): for tables that walk :data:`VARIABLES`."""
        if name not in BY_NAME:
            raise KeyError(name)
        return getattr(self, name.lower())

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed (tests, the demo, the simulator's candidates), by variable
        name in either case; cross-checked like the original. Values are taken as given (parsed)."""
        fields_: dict[str, Any] = {}
        sources = dict(self.sources)
        unknown = [key for key in changes if key.upper() not in BY_NAME]
        if unknown:
            raise ConfigError(
                [f"{key}: not a setting (`orchestrator config` lists every variable)" for key in unknown]
            )
        for key, value in changes.items():
            fields_[key.lower()] = value
            sources[key.upper()] = "override"
        new = dataclasses.replace(self, **fields_, sources=sources)
        problems = _cross_checks(new.values)
        if problems:
            raise ConfigError(problems)
        return new

    @property
    def secrets(self) -> list[str]:
        """Every secret value configured, including the database password and the private key's text."""
        found: list[str] = []
        for var in VARIABLES:
            value = self.get(var.name)
            if var.secret and value and isinstance(value, str):
                found.append(value)
        found.extend(v for v in (self.worker_env or {}).values() if v)
        if self.database_url:
            parts = urlsplit(self.database_url)
            # libpq takes the password from user:password@ or from ?password=, percent-encoded in both.
            candidates = [parts.password, *parse_qs(parts.query).get("password", [])]
            for password in filter(None, candidates):
                found.extend({password, unquote(password)})
        if self.runpod_ssh_private_key_path:
            try:
                text = Path(self.runpod_ssh_private_key_path).read_text()
            except OSError:
                text = ""
            found.extend(line for line in text.splitlines() if len(line) >= 16 and "-----" not in line)
        return found

    @property
    def gpu_types(self) -> list[str]:
        return list(self.runpod_gpu_type)

    @property
    def database_backend(self) -> str:
        """The database transport in effect: ``supabase`` or ``postgres`` (or ``none``)."""
        return _backend(self.values)

    def display_value(self, name: str) -> str:
        value = self.get(name)
        var = BY_NAME[name]
        if value is None:
            return "(unset)"
        if var.kind == "json":
            return ", ".join(f"{k}={mask(v)}" for k, v in value.items()) or "(empty)"
        if var.secret:
            text = str(value)
            if name == "DATABASE_URL" and "://" in text and urlsplit(text).password:
                return mask_url_password(text)
            return mask(value)
        if var.kind == "list":
            return ",".join(value)
        if var.kind == "packages":
            return ",".join(value) or "none"
        if var.kind == "bool":
            return "true" if value else "false"
        return str(value)

    def public_value(self, name: str) -> Any:
        """The value as JSON may show it: typed, but masked like :meth:`display_value` when secret."""
        value = self.get(name)
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

    def require(self, *, database: bool = False, runpod: bool = False, ssh: bool = False) -> None:
        """Check what a command needs beyond well-formed values (the daemon needs all three: ``ssh``
        for the commands that log into pods)."""
        problems = _requirement_problems(self.values, database=database, runpod=runpod, ssh=ssh)
        if problems:
            raise ConfigError(problems)


# What each kind of variable is as an attribute (``None`` is allowed where the default is None).
_KIND_TYPES: dict[str, str] = {
    "str": "str",
    "path": "str",
    "choice": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "list": "tuple[str, ...]",
    "packages": "tuple[str, ...]",
    "json": "Mapping[str, str]",
}
_META_FIELDS = ("sources", "files", "warnings")


def field_problems() -> list[str]:
    """Where :class:`Settings`' attributes and the table disagree (name, order or type); empty when
    they agree. Checked at import, so a variable added to one and not the other fails at once."""
    declared = [f for f in dataclasses.fields(Settings) if f.name not in _META_FIELDS]
    problems: list[str] = []
    names = [f.name for f in declared]
    wanted = [var.name.lower() for var in VARIABLES]
    if names != wanted:
        problems.append(
            f"Settings attributes {sorted(set(names) ^ set(wanted)) or 'in another order'} differ from VARIABLES"
        )
    for f, var in zip(declared, VARIABLES, strict=False):
        expected = _KIND_TYPES[var.kind]
        if var.default is None:
            expected += " | None"
        if str(f.type) != expected:
            problems.append(f"Settings.{f.name} is {f.type}, expected {expected} for a {var.kind} variable")
    return problems


def _check_fields() -> None:
    problems = field_problems()
    if problems:
        raise TypeError("; ".join(problems))


_check_fields()


def _backend(values: Mapping[str, Any]) -> str:
    chosen = values["DB_BACKEND"]
    if chosen != "auto":
        return str(chosen)
    if values.get("SUPABASE_URL"):
        return "supabase"
    if values.get("DATABASE_URL"):
        return "postgres"
    return "none"


def _requirement_problems(
    values: Mapping[str, Any],
    *,
    database: bool,
    runpod: bool,
    ssh: bool = False,
    skip: frozenset[str] = frozenset(),
) -> list[str]:
    """What a command needs set; ``skip`` names variables already reported as malformed."""
    found: list[tuple[str, str]] = []
    if database:
        backend = _backend(values)
        if backend == "none":
            found.append(
                (
                    "DATABASE_URL",
                    "neither database is configured: set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY, or DATABASE_URL",
                )
            )
        elif backend == "supabase":
            if not values.get("SUPABASE_URL"):
                found.append(("SUPABASE_URL", "DB_BACKEND=supabase but SUPABASE_URL is unset"))
            if not values.get("SUPABASE_SERVICE_ROLE_KEY"):
                found.append(
                    (
                        "SUPABASE_SERVICE_ROLE_KEY",
                        "SUPABASE_SERVICE_ROLE_KEY is unset: the Supabase transport needs the service-role key",
                    )
                )
        elif backend == "postgres" and not values.get("DATABASE_URL"):
            found.append(("DATABASE_URL", "DB_BACKEND=postgres but DATABASE_URL is unset"))
    if runpod and not values.get("RUNPOD_API_KEY"):
        found.append(
            ("RUNPOD_API_KEY", "RUNPOD_API_KEY is unset: expected the API key of your Runpod account")
        )
    # Only the commands that manage pods (run, tick) log into them. Against the emulator
    # the key stays optional, as in the original (a password login, warned about at start-up); against
    # Runpod itself a password login cannot work, so the daemon would spawn pods that never pass a check.
    real = targets_real_runpod(values.get("RUNPOD_API_BASE_URL"))
    if ssh and real and not values.get("RUNPOD_SSH_PRIVATE_KEY_PATH"):
        found.append(("RUNPOD_SSH_PRIVATE_KEY_PATH", SSH_KEY_REQUIRED))
    # The commands that manage pods (run, tick) give it to every pod; the read-only ones (pods, plan)
    # stay usable, an operator's view exactly when the daemon refused to start.
    public = values.get("RUNPOD_SSH_PUBLIC_KEY_PATH")
    if ssh and isinstance(public, str) and public:
        try:
            text = Path(public).expanduser().read_text()
        except (OSError, UnicodeDecodeError):
            text = None  # an unreadable file is the start's to refuse, with the reason
        problem = public_key_problem(public, text) if text is not None else None
        if problem is not None:
            found.append(("RUNPOD_SSH_PUBLIC_KEY_PATH", problem))
    # On Runpod itself these are not preferences when the daemon starts the workers: every pod spawned
    # without them bills until it fails (the emulator's pods carry a stand-in worker, so there they stay
    # optional). A checkout baked into the image (absolute WORKER_DIRS outside the mount) needs no
    # volume, and credentials given to the pods in WORKER_ENV count.
    starts = (
        ssh
        and real
        and values.get("AUTO_START_WORKER_PROCESS", True)
        and ("AUTO_START_WORKER_PROCESS" not in skip)
    )
    on_volume = checkout_on_volume(values.get("WORKER_DIRS") or (), values.get("RUNPOD_VOLUME_MOUNT_PATH"))
    if starts and not values.get("RUNPOD_STORAGE_NAME") and on_volume:
        found.append(("RUNPOD_STORAGE_NAME", STORAGE_REQUIRED))
    if starts:
        creds, _ = worker_credentials(values)
        for name in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"):
            if creds[name] is None and not any(n == name for n, _ in found):
                found.append((name, WORKER_API_REQUIRED.format(name=name)))
    # A malformed value was reset to its default; calling it "unset" as well would report it twice.
    return [problem for name, problem in found if name not in skip]


# Paths under a Supabase project's URL: a URL ending in one was copied from an endpoint.
SUPABASE_API_PATHS = ("/rest/v1", "/functions/v1", "/auth/v1", "/storage/v1", "/realtime/v1", "/graphql/v1")


def _supabase_url_problem(url: str) -> str | None:
    """The project's URL must take the paths its clients append (the worker concatenates them): no
    query or fragment, and not an endpoint's own URL. A path of a reverse proxy (self-hosted Supabase
    under ``https://host/supabase``) is kept."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if parts.query or parts.fragment or any(path.endswith(p) or f"{p}/" in path for p in SUPABASE_API_PATHS):
        return (
            f"SUPABASE_URL={url}: expected the project's URL (https://<ref>.supabase.co), with no query and "
            "not an endpoint's: the orchestrator and the worker append /rest/v1 and /functions/v1 themselves"
        )
    return None


def checkout_on_volume(dirs: Sequence[Any], mount_path: str | None) -> bool:
    """Whether some WORKER_DIRS entry lies on the volume (relative, or under RUNPOD_VOLUME_MOUNT_PATH)."""
    mount = str(mount_path or "/workspace").rstrip("/") + "/"
    return not dirs or any(not str(d).startswith("/") or str(d).startswith(mount) for d in dirs)


# The worker's checkout and models live on the network volume (the start script never clones): a pod
# without one has no worker to start.
STORAGE_REQUIRED = (
    "RUNPOD_STORAGE_NAME is unset: against Runpod every pod would come up without the network volume that "
    "holds the worker's checkout (WORKER_DIRS), fail its start and bill until then; set it to your volume's "
    "name (`orchestrator volumes` lists them)"
)
# Reigh-Worker and Headless-Wan2GP reach the queue only over Supabase's HTTP API (Edge Functions and the
# heartbeat RPC), never over DATABASE_URL.
WORKER_API_REQUIRED = (
    "{name} is unset: the worker reaches the queue only through Supabase's HTTP API (never DATABASE_URL), "
    "so every worker the daemon starts on Runpod would fail; set it (with DB_BACKEND=postgres the daemon "
    "itself keeps DATABASE_URL), give it to the pods in WORKER_ENV, or set AUTO_START_WORKER_PROCESS=false "
    "if you start the workers yourself"
)


def unpinned_worker(branch: str) -> str:
    """What ``doctor`` and the daemon's start-up say while WORKER_GIT_COMMIT is unset."""
    return (
        f"WORKER_GIT_COMMIT unset: every start brings the volume's checkout to the head of {branch}; if its "
        "origin is banodoco/reigh-worker, whose main no longer polls the Supabase queue since its pull "
        "request 33 (2026-09), every start is refused (exit 11). Pin a commit (docs/worker-start.md, "
        "'Pin the worker') unless the origin's head still polls"
    )


# Runpod's official images have no root password: their start script installs PUBLIC_KEY as the way
# in (runpod/containers, container-template/start.sh), and Runpod's "Connect to a Pod with SSH" page has
# a password login only after running its own script on the pod.
SSH_KEY_REQUIRED = (
    "RUNPOD_SSH_PRIVATE_KEY_PATH is unset: Runpod's images take SSH logins only with the key given as "
    "PUBLIC_KEY (they have no root password), so no worker could pass its checks; set "
    "RUNPOD_SSH_PRIVATE_KEY_PATH and RUNPOD_SSH_PUBLIC_KEY_PATH to an unencrypted key pair"
)


def targets_real_runpod(base_url: Any) -> bool:
    """Whether RUNPOD_API_BASE_URL is Runpod's own API (any host under runpod.io, the default
    included) rather than the emulator or another stand-in."""
    try:
        host = urlsplit(str(base_url or REAL_RUNPOD_BASE_URL)).hostname or ""
    except ValueError:
        return False
    return host == "runpod.io" or host.endswith(".runpod.io")


def private_key_problem(path: str, exc: BaseException) -> str:
    """Why the key file at ``path`` cannot be used, and what to do, from what loading it raised.

    Unreadable is told apart: the file is fine and only its owner or mode is wrong, which the generic
    "not a key, or has a passphrase" would send the operator looking in the wrong place."""
    if isinstance(exc, PermissionError):
        try:
            st = os.stat(path)
            owner = f"owned by uid {st.st_uid}, gid {st.st_gid}, mode {st.st_mode & 0o777:04o}"
        except OSError:
            owner = "its directory is not searchable either"
        return (
            f"RUNPOD_SSH_PRIVATE_KEY_PATH={path}: this process (uid {os.getuid()}) cannot read it "
            f"({owner}); make it readable to the daemon's user: `chown` it to that uid (10001 in the "
            "image), or give the process the file's group (`docker run --group-add <gid>`)"
        )
    # paramiko raises TypeError for a key protected by a passphrase and ValueError (or UnknownKeyType)
    # for a file that is not a key: the same fix for both.
    return (
        f"RUNPOD_SSH_PRIVATE_KEY_PATH={path}: not a usable private key ({type(exc).__name__}: {exc}); "
        "it must be unencrypted (no passphrase)"
    )


def public_key_problem(
    path: str, text: str, private: tuple[str, str] | None = None, private_path: str | None = None
) -> str | None:
    """Why the text of ``RUNPOD_SSH_PUBLIC_KEY_PATH`` cannot be what pods get as ``PUBLIC_KEY``, None when
    it is one OpenSSH public key line (of the private key, when ``private`` gives its type and base64).
    It goes into every pod's creation env, which Runpod shows to whoever holds the API key: the private
    half given by mistake must stop the daemon, and is never quoted."""
    if "PRIVATE KEY" in text:
        return (
            f"RUNPOD_SSH_PUBLIC_KEY_PATH={path} holds a private key: pods would get it in their environment, "
            "readable through Runpod's API; point it at the .pub file (`ssh-keygen -y -f <private key>` "
            "writes it)"
        )
    words = text.split()
    try:
        if len(words) < 2 or not words[0].startswith(("ssh-", "ecdsa-", "sk-")):
            raise ValueError("not an OpenSSH public key line")
        base64.b64decode(words[1], validate=True)
    except ValueError as exc:
        return f"RUNPOD_SSH_PUBLIC_KEY_PATH={path}: {exc}"[:300]
    if private is not None and (words[0], words[1]) != private:
        # Pods authorise this line and the daemon logs in with the private key: two halves of different
        # pairs both parse, and every login is refused while the pods bill.
        return (
            f"RUNPOD_SSH_PUBLIC_KEY_PATH={path} ({words[0]}) is not the public half of "
            f"RUNPOD_SSH_PRIVATE_KEY_PATH={private_path}: pods would refuse every login; write the right one "
            f"with `ssh-keygen -y -f {private_path} > {path}`"
        )
    return None


@dataclass(frozen=True)
class _LibpqAddress:
    """A PostgreSQL connection URI's address part as libpq reads it (which is not urlsplit's reading:
    '#' and '?' in a password are fine there): it runs to the first '/', its user part to its first
    '@' (None: no '@'), its hosts to a '?'."""

    userinfo: str | None
    hosts: str
    query: str  # after a '?' in the address part
    path: str  # after the first '/' (the database name and its query)


def _libpq_address(url: str) -> _LibpqAddress:
    rest = url.split("://", 1)[1] if "://" in url else ""
    authority, _, path = rest.partition("/")
    userinfo, _, hosts = authority.partition("@") if "@" in authority else (None, "", authority)
    hosts, _, query = hosts.partition("?")
    return _LibpqAddress(userinfo, hosts, query, path)


def url_problem(
    name: str, url: str, schemes: tuple[str, ...], expected: str, *, libpq: bool = False
) -> str | None:
    """What is wrong with a URL setting, or None. Checked here rather than at first use: a URL that
    does not parse (``https://[bad``) or names a port beyond 65535 raised deep in a client, after the
    configuration had been accepted, as a crash (exit 1, and a restart loop under systemd).

    ``libpq``: a PostgreSQL connection URI, which may name no host (a Unix socket, or ``?host=``) or
    several (``h1:5432,h2:5432``), both of which the URL parser's own host and port reading refuses."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"{name}={mask(url)}: not a valid URL ({exc}); expected {expected}"
    if parts.scheme not in schemes:
        # Shown masked: a value that is not the URL asked for is often a key pasted in the wrong place.
        return f"{name}={mask(url)}: expected {expected}"
    if libpq:
        # Read as libpq reads a URI (_libpq_address). A '/' or '@' in the password is what breaks it: the
        # password's start then reads as a port, or its end as a host. Nothing of the value is echoed:
        # it may be the password.
        unencoded = (
            f"{name}={mask(url)}: the address part cannot be read as libpq reads it: if the password holds "
            "'/' or '@', write them percent-encoded (%2F, %40)"
        )
        address = _libpq_address(url)
        hosts = address.hosts
        if "@" in hosts or (address.userinfo is None and "@" in address.path.split("?", 1)[0]):
            return unencoded
        for host in filter(None, hosts.split(",")):
            after_address = host.rpartition("]")[2]  # past an IPv6 literal's brackets
            port = after_address.rpartition(":")[2] if ":" in after_address else ""
            if port and not port.isdigit():
                return unencoded
            if port and not 0 < int(port) <= 65535:
                return f"{name}={mask(url)}: the port is not a TCP port (1 to 65535)"
        return None
    try:
        parts.port  # noqa: B018 (reading it is the check: out of range raises)
    except ValueError as exc:
        return f"{name}={mask(url)}: not a valid URL ({exc}); expected {expected}"
    if not parts.hostname:
        return f"{name}={mask(url)}: no host; expected {expected}"
    return None


# Headless-Wan2GP's heartbeat_guardian.py beats every 20 s (curl -m 10): a timeout under three beats
# fails a healthy worker, mid-task, after one late or lost beat.
WORKER_BEAT_SEC = 20
HEARTBEAT_TIMEOUT_WARN_BELOW_SEC = 3 * WORKER_BEAT_SEC


def _value_warnings(values: Mapping[str, Any]) -> list[ConfigWarning]:
    """Values that parse and are allowed, but that hurt with the real worker (the tests' fast stand-in
    worker beats every second, so they are not errors)."""
    found: list[ConfigWarning] = []
    key = values.get("RUNPOD_SSH_PRIVATE_KEY_PATH")
    if isinstance(key, str) and key and not os.access(key, os.R_OK):
        # Loading checks only that the file exists; doctor and the daemon's start read it. Said here too,
        # so that `config`, the documented check "as the service will see it", does not pass a key the
        # service then refuses (exit 2).
        found.append(
            ConfigWarning(
                "config_private_key_unreadable",
                f"RUNPOD_SSH_PRIVATE_KEY_PATH={key}: this process (uid {os.getuid()}) cannot read it; "
                "`run` and `tick` will refuse to start (give the file to the daemon's user or group)",
                {"name": "RUNPOD_SSH_PRIVATE_KEY_PATH", "uid": os.getuid()},
            )
        )
    timeout = values.get("HEARTBEAT_TIMEOUT_SEC")
    if isinstance(timeout, int) and timeout < HEARTBEAT_TIMEOUT_WARN_BELOW_SEC:
        found.append(
            ConfigWarning(
                "config_heartbeat_timeout_short",
                f"HEARTBEAT_TIMEOUT_SEC={timeout} is under {HEARTBEAT_TIMEOUT_WARN_BELOW_SEC} s, three beats of "
                f"the Headless-Wan2GP worker's {WORKER_BEAT_SEC} s heartbeat: one late beat fails a healthy "
                "worker and requeues its task",
                {
                    "name": "HEARTBEAT_TIMEOUT_SEC",
                    "value": timeout,
                    "below": HEARTBEAT_TIMEOUT_WARN_BELOW_SEC,
                },
            )
        )
    # An idle worker takes a task at its next claim poll: with polls as far apart as the wait target,
    # a task that finds only idle workers can wait the whole target, which the model does not count.
    poll, target = values.get("WORKER_POLL_INTERVAL_SEC"), values.get("WAIT_TARGET_SEC")
    if isinstance(poll, int) and isinstance(target, int | float) and 0 < target <= poll:
        found.append(
            ConfigWarning(
                "config_worker_poll_slow",
                f"WORKER_POLL_INTERVAL_SEC={poll} is not shorter than WAIT_TARGET_SEC={target:g}: a task that "
                "finds only idle workers waits for the first of their polls, up to the whole target",
                {"name": "WORKER_POLL_INTERVAL_SEC", "value": poll, "wait_target_sec": target},
            )
        )
    if _backend({"DB_BACKEND": "auto", **values}) == "postgres" and transaction_pooler(
        values.get("DATABASE_URL")
    ):
        found.append(
            ConfigWarning(
                "config_transaction_pooler",
                "DATABASE_URL is a Supabase pooler in transaction mode (port 6543), where LISTEN hears "
                "nothing and a session's settings (the daemon's statement_timeout) may not hold: new tasks "
                "wake the daemon only through the one-row probe every WAKE_PROBE_SEC; the session pooler "
                "(port 5432 of *.pooler.supabase.com) or the direct connection (port 5432) keeps both",
                {"name": "DATABASE_URL", "port": 6543},
            )
        )
    # Workers started by hand, or by the image itself, do not get the keys over SSH from the daemon.
    if (
        values.get("AUTO_START_WORKER_PROCESS") is False
        and values.get("POD_ENV_SUPABASE_KEYS") is False
        and values.get("SUPABASE_SERVICE_ROLE_KEY")
        and not _worker_env(values).get("SUPABASE_SERVICE_ROLE_KEY")
    ):
        found.append(
            ConfigWarning(
                "config_pods_without_keys",
                "AUTO_START_WORKER_PROCESS=false and POD_ENV_SUPABASE_KEYS=false: the pods are created without "
                "SUPABASE_SERVICE_ROLE_KEY in their environment, so a worker the image starts by itself finds "
                "none (and is failed SPAWNING_TIMEOUT_SEC after the checks); feed the keys to the start "
                "command on stdin (docs/worker-start.md) or leave POD_ENV_SUPABASE_KEYS unset",
                {"name": "POD_ENV_SUPABASE_KEYS"},
            )
        )
    # The worker hands this key to the app's Edge Functions as its access token. Reigh's grant service
    # access only to a token equal to their SUPABASE_SERVICE_ROLE_KEY (banodoco/reigh-app,
    # supabase/functions/_shared/auth.ts), which in Edge Functions is the legacy service_role key; the
    # new secret keys are in SUPABASE_SECRET_KEYS (Supabase docs, "Edge Functions: Environment
    # Variables"). Any other token is looked up as a personal access token and refused: workers would
    # heartbeat and never claim a task, their GPUs billing.
    key = worker_credentials(values)[0]["SUPABASE_SERVICE_ROLE_KEY"]
    if isinstance(key, str) and key.startswith(NEW_SECRET_KEY_PREFIX):
        found.append(
            ConfigWarning(
                "config_secret_key_for_workers",
                f"SUPABASE_SERVICE_ROLE_KEY is a new-style secret key ({NEW_SECRET_KEY_PREFIX}...): the workers "
                "pass it to the app's Edge Functions, which take only the legacy service_role key as the "
                "service role and refuse other tokens (403), so no worker would claim a task; use the "
                "legacy service_role key (Settings > API Keys > Legacy API Keys) until the app accepts "
                "secret keys (`orchestrator doctor` checks task-counts with it)",
                {"name": "SUPABASE_SERVICE_ROLE_KEY", "prefix": NEW_SECRET_KEY_PREFIX},
            )
        )
    return found


def _jwt_claim(token: Any, claim: str) -> str | None:
    """A claim of a legacy Supabase API key (a JWT; read, not verified), None when the value is not one
    (a new-style ``sb_`` key, or anything else) or has no such text claim."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, TypeError, RecursionError):  # RecursionError: a payload nested thousands deep
        return None
    value = claims.get(claim) if isinstance(claims, dict) else None
    return value if isinstance(value, str) else None


def jwt_role(token: Any) -> str | None:
    """The ``role`` claim of a legacy Supabase API key, None when the value is not one."""
    return _jwt_claim(token, "role")


# A Supabase project's reference: 20 lowercase letters, in its API host
# (https://<ref>.supabase.co), its database's direct host (db.<ref>.supabase.co) and the shared pooler's
# user name (postgres.<ref> at aws-<n>-<region>.pooler.supabase.com), Supabase's "Connect to your
# database"; and the `ref` claim of its legacy API keys.
_PROJECT_REF = re.compile(r"[a-z]{20}")


def _ref_of_api_url(url: Any) -> str | None:
    try:
        host = (urlsplit(str(url)).hostname or "").lower()
    except ValueError:
        return None
    ref, _, domain = host.partition(".")
    return ref if domain in ("supabase.co", "supabase.in") and _PROJECT_REF.fullmatch(ref) else None


def _ref_of_database_url(url: Any) -> str | None:
    """Read as libpq reads the address part (:func:`_libpq_address`); None when it names no Supabase
    project, several hosts, or sets the host or user in its query (which would win)."""
    address = _libpq_address(str(url))
    query = address.query or address.path.partition("?")[2]
    if any(key in ("host", "hostaddr", "user") for key in parse_qs(query)):
        return None
    if "," in address.hosts or address.hosts.startswith("["):
        return None
    host = address.hosts.rsplit(":", 1)[0].lower()
    user = unquote((address.userinfo or "").split(":", 1)[0]).lower()
    if host.startswith("db.") and host.endswith(".supabase.co"):
        ref = host[len("db.") : -len(".supabase.co")]
    elif host.endswith(".pooler.supabase.com") and user.startswith("postgres."):
        ref = user[len("postgres.") :]
    else:
        return None
    return ref if _PROJECT_REF.fullmatch(ref) else None


def transaction_pooler(url: Any) -> bool:
    """Whether a DATABASE_URL points at one of Supabase's poolers in transaction mode: the shared one
    (``*.pooler.supabase.com:6543``) or the dedicated one beside the database (``db.<ref>.supabase.co:6543``).
    Each transaction may run on another server connection, so LISTEN there hears nothing (Supabase
    docs, "Connect to your database": transaction mode suits short-lived serverless connections)."""
    if not url:
        return False
    address = _libpq_address(str(url))
    if "," in address.hosts or address.hosts.startswith("["):
        return False
    host, _, port = address.hosts.lower().rpartition(":")
    supabase = host.endswith(".pooler.supabase.com") or (
        host.startswith("db.") and host.endswith(".supabase.co")
    )
    return supabase and port == "6543"


def project_ref_problem(values: Mapping[str, Any]) -> str | None:
    """The Supabase project named by SUPABASE_URL, DATABASE_URL and the service-role key, when they
    disagree. The daemon reads and writes the queue through DATABASE_URL (when set) while the workers
    reach the project of SUPABASE_URL with the key: two projects, and every worker polled a queue the
    daemon never saw while the daemon spawned for one nobody claimed from."""
    named = {
        "SUPABASE_URL": _ref_of_api_url(values["SUPABASE_URL"]) if values.get("SUPABASE_URL") else None,
        "DATABASE_URL": _ref_of_database_url(values["DATABASE_URL"]) if values.get("DATABASE_URL") else None,
        "SUPABASE_SERVICE_ROLE_KEY": _jwt_claim(values.get("SUPABASE_SERVICE_ROLE_KEY"), "ref"),
    }
    known = {name: ref for name, ref in named.items() if ref}
    if len(set(known.values())) <= 1:
        return None
    database, key = named["DATABASE_URL"], named["SUPABASE_SERVICE_ROLE_KEY"]
    if database and database == key:
        # The database and the key agree: the API host is then a vanity subdomain of the same project
        # (a paid add-on) whose name merely reads like a reference.
        return None
    said = ", ".join(f"{name} project {ref}" for name, ref in known.items())
    return (
        f"these settings name different Supabase projects ({said}): `migrate` and the daemon over "
        "DATABASE_URL would use one project's queue while the workers claim from another's; take them all "
        "from the same project (its Settings > API and Connect)"
    )


# Supabase's new secret API keys ("Migrating to publishable and secret API keys").
NEW_SECRET_KEY_PREFIX = "sb_secret_"

# What the worker gets over SSH at its start (orchestrator.adapters.pod_ssh): the setting, else the same
# name in WORKER_ENV (a daemon on DATABASE_URL may leave the setting unset).
WORKER_CREDENTIALS = ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_ANON_KEY")


def _worker_env(values: Mapping[str, Any]) -> Mapping[str, Any]:
    given = values.get("WORKER_ENV")
    return given if isinstance(given, Mapping) else {}


def worker_credentials(values: Mapping[str, Any]) -> tuple[dict[str, str | None], frozenset[str]]:
    """The Supabase URL and keys the workers will get, and which of them come from ``WORKER_ENV``. The
    URL loses trailing slashes as the setting does (the worker appends its paths to it)."""
    pod_env = _worker_env(values)
    found: dict[str, str | None] = {}
    borrowed: set[str] = set()
    for name in WORKER_CREDENTIALS:
        value = values.get(name)
        if not value and isinstance(pod_env.get(name), str) and pod_env[name]:
            value = pod_env[name]
            borrowed.add(name)
        if name == "SUPABASE_URL" and isinstance(value, str):
            value = value.rstrip("/")
        found[name] = value if isinstance(value, str) and value else None
    return found, frozenset(borrowed)


def _cross_checks(values: Mapping[str, Any], skip: frozenset[str] = frozenset()) -> list[str]:
    problems: list[str] = []
    values = {k: v for k, v in values.items() if k not in skip}
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
    # The workers' URL and key are checked as the settings' are wherever they come from.
    creds, borrowed = worker_credentials(values)
    seen = {**values, **{name: creds[name] for name in borrowed}}
    in_env = {name: " (given in WORKER_ENV)" if name in borrowed else "" for name in WORKER_CREDENTIALS}
    role = jwt_role(seen.get("SUPABASE_SERVICE_ROLE_KEY"))
    if role is not None and role != "service_role":
        # The legacy keys are JWTs that say their role; the anon key given here (the two are easily
        # swapped) let row-level security hide every row from the daemon and the workers.
        problems.append(
            f"SUPABASE_SERVICE_ROLE_KEY{in_env['SUPABASE_SERVICE_ROLE_KEY']} is a key of role {role!r}, not "
            "'service_role': the anon key in the service role's place? (Settings > API Keys > Legacy API "
            "Keys: service_role)"
        )
    mixed = project_ref_problem(seen)
    if mixed:
        problems.append(mixed + (" (the workers' URL or key given in WORKER_ENV)" if borrowed else ""))
    port = values.get("METRICS_PORT")
    if isinstance(port, int) and port > 65535:
        problems.append(f"METRICS_PORT={port}: expected a TCP port up to 65535 (0 = off)")
    for name in ("SUPABASE_URL", "RUNPOD_API_BASE_URL"):
        url = seen.get(name)
        if url:
            problem = url_problem(name, str(url), ("http", "https"), "an http(s) URL")
            if problem is None and name == "SUPABASE_URL":
                problem = _supabase_url_problem(str(url))
            if problem:
                problems.append(problem + in_env.get(name, ""))
    db_url = values.get("DATABASE_URL")
    if db_url:
        problem = url_problem(
            "DATABASE_URL", str(db_url), ("postgres", "postgresql"), "a postgresql:// URL", libpq=True
        )
        if problem:
            problems.append(problem)
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
    commit = values.get("WORKER_GIT_COMMIT")
    if isinstance(commit, str) and commit:
        problem = git_commit_problem(commit)
        if problem:
            problems.append(problem)
    installer = values.get("WORKER_UV_INSTALL_URL")
    if isinstance(installer, str):
        problem = uv_install_url_problem(installer)
        if problem:
            problems.append(problem)
    disk = values.get("RUNPOD_DISK_SIZE_GB")
    if (
        values.get("RUNPOD_API") == "rest"
        and not values.get("RUNPOD_STORAGE_NAME")
        and isinstance(disk, int)
        and 0 < disk < 10
    ):
        problems.append(
            f"RUNPOD_DISK_SIZE_GB={disk}: REST v2's volume disk (persistent mount) takes 0 (none) or at least 10 GB"
        )
    prefix = values.get("WORKER_ID_PREFIX")
    if prefix is not None and (not prefix or not all(c.isalnum() or c in "-_" for c in str(prefix))):
        problems.append(f"WORKER_ID_PREFIX={prefix!r}: expected letters, digits, '-' or '_' (it names pods)")
    elif prefix is not None and not usable_worker_id(f"{prefix}{WORKER_ID_SUFFIX_EXAMPLE}"):
        # Each worker's id (= its pod's name) is the prefix and a 24-character stamp; one that cannot
        # be a pod name failed every spawn after writing its row.
        problems.append(
            f"WORKER_ID_PREFIX={str(prefix)[:40]!r}: must start with a letter or a digit and be at most "
            f"{WORKER_ID_MAX - len(WORKER_ID_SUFFIX_EXAMPLE)} characters (each worker id adds "
            f"{len(WORKER_ID_SUFFIX_EXAMPLE)})"
        )
    return problems


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: Path | str | None = ".env",
    *,
    env_file_required: bool = False,
    require_database: bool = False,
    require_runpod: bool = False,
    require_ssh: bool = False,
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
            file_values, ignored, repeated, commented, quoted = read_env_lines(path)
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
            # Values this reader takes one way and `docker run --env-file` (or systemd) another.
            differing = (
                (
                    "config_env_file_inline_comment",
                    commented,
                    "the text after ' #' in {name}'s value is read here as a comment, but systemd's "
                    "EnvironmentFile and `docker run --env-file` keep it in the value; put the comment on a "
                    "line of its own",
                ),
                (
                    "config_env_file_quoted_value",
                    quoted,
                    "{name}'s value is quoted; the quotes are dropped here and by systemd's EnvironmentFile, "
                    "but `docker run --env-file` keeps them in the value (a key or URL that then fails); "
                    "write it unquoted",
                ),
            )
            warnings.extend(
                ConfigWarning(
                    event,
                    f"{label} line {n}: " + text.format(name=name),
                    {"file": label, "line": n, "name": name},
                )
                for event, lines, text in differing
                for n, name in lines
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
            values[var.name] = default_value(var)
            sources[var.name] = "default"
            continue
        value, problem = parse_value(var, raw)
        if problem:
            problems.append(problem)
            malformed.add(var.name)
        values[var.name] = value if problem is None else default_value(var)
        sources[var.name] = source
    # Every client appends its path to the project's URL (/rest/v1/..., /functions/v1/...): the worker
    # by string concatenation, so a copied "https://x.supabase.co/" made "//functions/v1" of it.
    if isinstance(values.get("SUPABASE_URL"), str):
        values["SUPABASE_URL"] = values["SUPABASE_URL"].rstrip("/")
    # A malformed value stands at its default here: a cross-check naming it would quote a value the
    # operator never wrote, so checks about it wait for a value that parses.
    problems.extend(p for p in _cross_checks(values, skip=frozenset(malformed)) if p not in problems)
    problems.extend(
        _requirement_problems(
            values,
            database=require_database,
            runpod=require_runpod,
            ssh=require_ssh,
            skip=frozenset(malformed),
        )
    )
    warnings.extend(_value_warnings(values))
    if problems:
        error = ConfigError(problems)
        for warning in warnings:
            error.add_note(warning.message)
        raise error
    return Settings.from_values(values, sources, tuple(files), tuple(warnings))


def defaults() -> Settings:
    """The settings with nothing configured (the pure policy's tests and the simulator start here)."""
    return load_settings(environ={}, env_file=None)


def precedence(settings: Settings) -> list[str]:
    """Where values come from, the winning source first."""
    return ["environment", *(f.path for f in settings.files if f.read), "default"]


def render(settings: Settings) -> str:
    """The table `orchestrator config` prints: what was read, then name, effective value, source."""
    lines = [
        f"# read, the first wins: {'; '.join(_describe_source(settings, s) for s in precedence(settings))}"
    ]
    lines += [f"# not read: {f.path} (no such file; optional)" for f in settings.files if not f.read]
    lines += [f"# warning: {w.message}" for w in settings.warnings]
    width = max(len(v.name) for v in VARIABLES)
    lines.append(f"{'VARIABLE'.ljust(width)}  {'SOURCE':11}  VALUE")
    group = None
    for var in VARIABLES:
        if var.group != group:
            group = var.group
            lines.append(f"# {group}")
        lines.append(
            f"{var.name.ljust(width)}  {settings.sources.get(var.name, 'default'):11}  {settings.display_value(var.name)}"
        )
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
