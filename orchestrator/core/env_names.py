"""Names in the environment and the env file that look meant for a setting, and the env file's reader.

Part of the configuration in the pure core (:mod:`orchestrator.core.config` calls it while loading):
nothing is ignored without a word. A variable name that is not a setting but looks meant for one
(``MAX_ACTIVE_GPU``, ``RUNPOD_GPU_TYPES``, any ``ORCHESTRATOR_*``) becomes a :class:`ConfigWarning`
naming the closest setting. Warnings name variables and line numbers, never values, which may be
secrets.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.variables import BY_NAME

# Read elsewhere in the package, outside Settings (paths for the embedded stack, a test hook): known
# names, so the check for misspelt settings stays quiet about them.
OTHER_NAMES: frozenset[str] = frozenset(
    {
        "ORCHESTRATOR_MIGRATIONS_DIR",  # orchestrator.adapters.db.migrate: where migrations/ is
        "ORCHESTRATOR_PG_BINDIR",  # orchestrator.standins.pg: PostgreSQL's binaries for the embedded stack
        "ORCHESTRATOR_TEST_CRASH_AT",  # orchestrator.loop.effects: the crash-recovery tests' crash point
    }
)
# Read by the runpod SDK this package depends on (runpod-python: runpod/__init__.py, runpod/api,
# runpod/serverless): they may be set beside ours on purpose, and some look like near misses of ours.
RUNPOD_SDK_NAMES: frozenset[str] = frozenset(
    {
        "RUNPOD_AI_API_KEY",
        "RUNPOD_DEBUG_LEVEL",
        "RUNPOD_ENDPOINT_ID",
        "RUNPOD_POD_HOSTNAME",
        "RUNPOD_POD_ID",
        "RUNPOD_PROJECT_ID",
        "RUNPOD_UA_INTEGRATION",
        "RUNPOD_PING_INTERVAL",
        "RUNPOD_REALTIME_CONCURRENCY",
        "RUNPOD_REALTIME_PORT",
        "RUNPOD_WEBHOOK_GET_JOB",
        "RUNPOD_WEBHOOK_PING",
        "RUNPOD_WEBHOOK_POST_OUTPUT",
        "RUNPOD_WEBHOOK_POST_STREAM",
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS",
        "RUNPOD_SKIP_GPU_CHECK",
        "RUNPOD_GPU_BENCHMARK_TIMEOUT",
        "RUNPOD_GPU_MAX_ERROR_MESSAGES",
        "RUNPOD_GPU_TEST_TIMEOUT",
        "RUNPOD_MIN_CUDA_VERSION",
        "RUNPOD_MIN_DISK_PERCENT",
        "RUNPOD_MIN_MEMORY_GB",
        "RUNPOD_NETWORK_CHECK_TIMEOUT",
    }
)
KNOWN_NAMES: frozenset[str] = frozenset(BY_NAME) | OTHER_NAMES | RUNPOD_SDK_NAMES
# The same settings under the names later versions of the original orchestrator use
# (banodoco/reigh-worker-orchestrator, env.example; its start script exports WGP_PROFILE from
# REIGH_WORKER_PROFILE): an env file carried over names them, and no spelling rule finds ours from them.
RENAMED: Mapping[str, str] = {
    "RUNPOD_INSTANCE_TYPE": "RUNPOD_GPU_TYPE",
    "RUNPOD_CONTAINER_IMAGE": "RUNPOD_WORKER_IMAGE",
    "RUNPOD_CONTAINER_DISK_SIZE_GB": "RUNPOD_CONTAINER_DISK_GB",
    "REIGH_WORKER_PROFILE": "WORKER_WGP_PROFILE",
    "WGP_PROFILE": "WORKER_WGP_PROFILE",
}
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


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: KEY=VALUE lines, optional ``export``, quotes, ``#`` comments."""
    return read_env_lines(path)[0]


def read_env_lines(
    path: Path,
) -> tuple[dict[str, str], list[int], dict[str, list[int]], list[tuple[int, str]], list[tuple[int, str]]]:
    """(values, numbers of lines without ``=``, names assigned on more than one line -> their lines,
    (line, name) of unquoted values cut at an inline `` #`` comment, (line, name) of quoted values)."""
    result: dict[str, str] = {}
    ignored: list[int] = []
    seen: dict[str, list[int]] = {}
    commented: list[tuple[int, str]] = []
    quoted: list[tuple[int, str]] = []
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
            # Dropped here as by systemd's EnvironmentFile and Compose's env_file, but `docker run
            # --env-file` keeps them in the value: the caller warns, unless the value needs them (a
            # ` #` this reader would cut, a backslash or edge spaces systemd would read otherwise).
            value = value[1:-1]
            if " #" not in value and "\\" not in value and value == value.strip():
                quoted.append((number, key.strip()))
        elif " #" in value:
            # Read the dotenv way (python-dotenv, Compose's env_file), but systemd's EnvironmentFile and
            # `docker run --env-file` keep the comment in the value: the caller warns.
            value = value.split(" #", 1)[0].rstrip()
            commented.append((number, key.strip()))
        result[key.strip()] = value
        seen.setdefault(key.strip(), []).append(number)
    return result, ignored, {k: v for k, v in seen.items() if len(v) > 1}, commented, quoted


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


def name_warnings(
    environ: Mapping[str, str], file_values: Mapping[str, str], file_label: str = ".env"
) -> list[ConfigWarning]:
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
            if name.upper() in RENAMED:
                places, _ = found.setdefault(name, ([], RENAMED[name.upper()]))
                places.append(where)
                continue
            suggestion = closest_setting(name, cutoff)
            if suggestion is None and not name.upper().startswith(families):
                continue
            if suggestion is None:
                suggestion = _family_suggestion(name)
            places, _ = found.setdefault(name, ([], suggestion))
            places.append(where)
    return [_unknown(name, places, suggestion) for name, (places, suggestion) in found.items()]
