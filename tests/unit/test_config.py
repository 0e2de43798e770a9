"""Configuration: defaults, sources, and one message listing every problem (exit code 2)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import structlog.testing

from orchestrator import cli
from orchestrator.core import config
from orchestrator.core.errors import ConfigError


def test_defaults_are_the_documented_ones() -> None:
    s = config.defaults()
    assert s.max_active_gpus == 10
    assert s.min_active_gpus == 0
    assert s.tasks_per_gpu_threshold == 3
    assert s.gpu_idle_timeout_sec == 600
    assert s.task_stuck_timeout_sec is None  # unset: judged from evidence (docs/policy.md, "Long tasks")
    assert s.orchestrator_poll_sec == 10  # chosen from bench/results/policy.md, not the old 30
    assert s.gpu_overcapacity_idle_timeout_sec == 10
    assert s.auto_start_worker_process is True
    assert s.gpu_types == ["NVIDIA GeForce RTX 4090"]
    assert s.runpod_volume_mount_path == "/workspace"
    assert s.runpod_disk_size_gb == 20 and s.runpod_container_disk_gb == 10
    assert all(src == "default" for src in s.sources.values())


def test_environment_beats_env_file_beats_default(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text('# comment\nexport MAX_ACTIVE_GPUS=7\nMIN_ACTIVE_GPUS="1"\nRUNPOD_GPU_TYPE=A, B ,C\n')
    s = config.load_settings({"MAX_ACTIVE_GPUS": "4"}, env_file=env_file)
    assert s.max_active_gpus == 4 and s.sources["MAX_ACTIVE_GPUS"] == "environment"
    assert s.min_active_gpus == 1 and s.sources["MIN_ACTIVE_GPUS"] == ".env"
    assert s.gpu_types == ["A", "B", "C"]
    assert s.sources["GPU_IDLE_TIMEOUT_SEC"] == "default"


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    env = {
        "MAX_ACTIVE_GPUS": "two",
        "MIN_ACTIVE_GPUS": "-1",
        "AUTO_START_WORKER_PROCESS": "maybe",
        "RUNPOD_SSH_PRIVATE_KEY_PATH": str(tmp_path / "missing_key"),
        "ORCHESTRATOR_POLL_SEC": "nan",
        "DATABASE_URL": "mysql://u:hunter2secret@h/db",
        "RUNPOD_API": "soap",
    }
    with pytest.raises(ConfigError) as info:
        config.load_settings(env, env_file=None)
    text = str(info.value)
    for name in env:
        assert name in text, name
    assert len(info.value.problems) == len(env)
    assert "hunter2secret" not in text


def test_min_above_max_is_refused() -> None:
    with pytest.raises(ConfigError, match="MIN_ACTIVE_GPUS=5 is greater than MAX_ACTIVE_GPUS=2"):
        config.load_settings({"MIN_ACTIVE_GPUS": "5", "MAX_ACTIVE_GPUS": "2"}, env_file=None)


def test_daemon_requirements_name_what_is_missing() -> None:
    s = config.defaults()
    with pytest.raises(ConfigError) as info:
        s.require(database=True, runpod=True)
    text = str(info.value)
    assert "neither database is configured" in text
    assert "RUNPOD_API_KEY" in text


def test_ssh_key_paths_are_optional_against_the_emulator_as_in_the_original() -> None:
    """The original's table lists RUNPOD_SSH_PUBLIC_KEY_PATH and RUNPOD_SSH_PRIVATE_KEY_PATH with no
    default: without them it logged in with the pod's password. Against the emulator the daemon starts
    (and warns); against Runpod, whose images have no password, it refuses to."""
    env = {"RUNPOD_API_KEY": "rpa_x", "DATABASE_URL": "postgresql://u@127.0.0.1:9/db"}
    s = config.load_settings({**env, "RUNPOD_API_BASE_URL": "http://127.0.0.1:9"}, env_file=None)
    s.require(database=True, runpod=True)
    assert s.runpod_ssh_private_key_path is None and s.runpod_ssh_public_key_path is None
    with pytest.raises(ConfigError, match="RUNPOD_SSH_PRIVATE_KEY_PATH is unset"):
        config.load_settings(env, env_file=None, require_database=True, require_runpod=True, require_ssh=True)


def test_against_runpod_run_refuses_what_no_worker_could_start_without(tmp_path: Path) -> None:
    """Against Runpod itself, a pod without the network volume has no worker checkout and a worker
    without Supabase's URL and service-role key cannot reach the queue: each pod would boot, fail and
    bill first. ``run`` lists them with the other problems (exit 2); the emulator keeps them optional."""
    env = {"RUNPOD_API_KEY": "rpa_x", "DATABASE_URL": "postgresql://u@127.0.0.1:9/db"}
    kwargs = {"env_file": None, "require_database": True, "require_runpod": True, "require_ssh": True}
    with pytest.raises(ConfigError) as info:
        config.load_settings(env, **kwargs)
    problems = "\n".join(info.value.problems)
    for name in (
        "RUNPOD_SSH_PRIVATE_KEY_PATH",
        "RUNPOD_STORAGE_NAME",
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
    ):
        assert f"{name} is unset" in problems, problems
    assert len(info.value.problems) == 4, problems
    # Workers started by hand: the daemon needs no Supabase credentials for them.
    with pytest.raises(ConfigError) as info:
        config.load_settings({**env, "AUTO_START_WORKER_PROCESS": "false"}, **kwargs)
    assert not any("SUPABASE" in p for p in info.value.problems), info.value.problems
    key = tmp_path / "id_ed25519"
    key.write_text("a key file (its contents are the provider's business)")
    complete = {
        **env,
        "RUNPOD_SSH_PRIVATE_KEY_PATH": str(key),
        "RUNPOD_STORAGE_NAME": "vol",
        "SUPABASE_URL": "https://x.supabase.co",
        "SUPABASE_SERVICE_ROLE_KEY": "k",
    }
    config.load_settings(complete, **kwargs)
    config.load_settings({**env, "RUNPOD_API_BASE_URL": "http://127.0.0.1:9"}, **kwargs)
    # The credentials given to the pods in WORKER_ENV, and a checkout baked into the image (WORKER_DIRS
    # outside the volume's mount), need neither the settings nor a volume.
    baked = {
        **env,
        "RUNPOD_SSH_PRIVATE_KEY_PATH": str(key),
        "WORKER_DIRS": "/opt/Reigh-Worker",
        "WORKER_ENV": '{"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k"}',
    }
    config.load_settings(baked, **kwargs)
    with pytest.raises(ConfigError, match="RUNPOD_STORAGE_NAME is unset"):
        config.load_settings({**baked, "WORKER_DIRS": "/workspace/Reigh-Worker"}, **kwargs)


def test_supabase_url_is_the_projects_root() -> None:
    """The worker appends /functions/v1/... to SUPABASE_URL by concatenation: a copied trailing slash is
    dropped, and an endpoint's URL or one with a query is a problem; a reverse proxy's path is kept."""
    s = config.load_settings({"SUPABASE_URL": "https://x.supabase.co/"}, env_file=None)
    assert s.supabase_url == "https://x.supabase.co"
    proxied = config.load_settings({"SUPABASE_URL": "https://host.example/supabase/"}, env_file=None)
    assert proxied.supabase_url == "https://host.example/supabase"
    for url in (
        "https://x.supabase.co/rest/v1",
        "https://x.supabase.co/functions/v1/claim-next-task",
        "https://x.supabase.co?apikey=1",
    ):
        with pytest.raises(ConfigError, match="expected the project's URL"):
            config.load_settings({"SUPABASE_URL": url}, env_file=None)


def test_worker_start_settings_default_to_the_original_and_are_validated() -> None:
    s = config.defaults()
    assert s.worker_dirs == ("Reigh-Worker", "Headless-Wan2GP", "reigh/Headless-Wan2GP")
    assert s.worker_launch == "auto" and s.worker_wgp_profile == 1
    assert s.worker_git_branch == "main"
    assert s.worker_uv_install_url == "https://astral.sh/uv/install.sh"
    assert s.worker_apt_packages == ("python3.10-venv", "python3.10-dev", "ffmpeg")
    assert s.runpod_storage_name is None
    s = config.load_settings(
        {
            "RUNPOD_STORAGE_NAME": "vol-ro, vol-ks ,",
            "WORKER_DIRS": "Reigh-Worker,Headless-Wan2GP",
            "WORKER_LAUNCH": "UV",
            "WORKER_WGP_PROFILE": "3",
            "WORKER_POLL_INTERVAL_SEC": "4",
            "WORKER_GIT_BRANCH": "release/2026-05",
            "WORKER_APT_PACKAGES": "ffmpeg libgl1",
            "WORKER_UV_INSTALL_URL": "https://astral.sh/uv/0.9.26/install.sh",
            "WORKER_GIT_COMMIT": "22cbba9473f19df7e01900bb3025341d7808ada3",
        },
        env_file=None,
    )
    assert s.worker_uv_install_url == "https://astral.sh/uv/0.9.26/install.sh"
    assert (
        s.worker_git_commit == "22cbba9473f19df7e01900bb3025341d7808ada3"
        and config.defaults().worker_git_commit is None
    )
    assert s.runpod_storage_name == ("vol-ro", "vol-ks")
    assert s.worker_dirs == ("Reigh-Worker", "Headless-Wan2GP")
    assert (s.worker_launch, s.worker_wgp_profile, s.worker_git_branch) == ("uv", 3, "release/2026-05")
    assert s.worker_poll_interval_sec == 4
    assert s.worker_apt_packages == ("ffmpeg", "libgl1")
    assert s.display_value("WORKER_APT_PACKAGES") == "ffmpeg,libgl1"
    off = config.load_settings({"WORKER_APT_PACKAGES": "none"}, env_file=None)
    assert off.worker_apt_packages == () and off.display_value("WORKER_APT_PACKAGES") == "none"

    bad = {
        "WORKER_DIRS": "../elsewhere,ok",
        "WORKER_LAUNCH": "docker",
        "WORKER_WGP_PROFILE": "0",
        "WORKER_POLL_INTERVAL_SEC": "0.5",  # the worker parses a whole number
        "WORKER_GIT_BRANCH": "--upload-pack=evil",
        "WORKER_APT_PACKAGES": "ffmpeg;reboot",
        "WORKER_UV_INSTALL_URL": "http://astral.sh/uv/install.sh; rm -rf /",
        "WORKER_GIT_COMMIT": "v1.2; reboot",
        "RUNPOD_DISK_SIZE_GB": "5",
    }
    with pytest.raises(ConfigError) as info:
        config.load_settings(bad, env_file=None)
    text = str(info.value)
    for name in bad:
        assert name in text, name
    assert len(info.value.problems) == len(bad)
    # A volume disk under REST v2's 10 GB floor is fine when a network volume replaces it.
    config.load_settings({"RUNPOD_DISK_SIZE_GB": "5", "RUNPOD_STORAGE_NAME": "v"}, env_file=None)
    config.load_settings({"RUNPOD_DISK_SIZE_GB": "5", "RUNPOD_API": "graphql"}, env_file=None)


def test_cli_exits_2_listing_every_bad_worker_start_setting() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--env-file", "/nonexistent/.env", "config"],
        env={
            "PATH": "/usr/bin:/bin",
            "WORKER_GIT_BRANCH": "a..b",
            "WORKER_APT_PACKAGES": "Bad_Name",
            "WORKER_LAUNCH": "x",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    for name in ("WORKER_GIT_BRANCH", "WORKER_APT_PACKAGES", "WORKER_LAUNCH"):
        assert name in proc.stderr, proc.stderr


def test_secrets_are_masked_in_the_printout(tmp_path: Path) -> None:
    s = config.load_settings(
        {
            "RUNPOD_API_KEY": "rpa_SECRETSECRETSECRET",
            "SUPABASE_SERVICE_ROLE_KEY": "service-role-key-very-secret",
            "DATABASE_URL": "postgresql://orch:dbpassword123@db.example:5432/postgres",
        },
        env_file=None,
    )
    out = config.render(s)
    assert "SECRETSECRET" not in out
    assert "service-role-key-very-secret" not in out
    assert "dbpassword123" not in out
    assert "db.example" in out


def test_cli_exits_2_and_lists_every_problem() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--env-file", "/nonexistent/.env", "config"],
        env={"PATH": "/usr/bin:/bin", "MAX_ACTIVE_GPUS": "x", "LOG_LEVEL": "loud"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "MAX_ACTIVE_GPUS='x'" in proc.stderr and "LOG_LEVEL='loud'" in proc.stderr


def test_cli_config_shows_sources(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MACHINES_TO_KEEP_IDLE=2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--env-file", str(env_file), "config"],
        env={"PATH": "/usr/bin:/bin", "MAX_ACTIVE_GPUS": "3"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = {
        line.split()[0]: line.split()
        for line in proc.stdout.splitlines()
        if line and not line.startswith("#")
    }
    assert lines["MAX_ACTIVE_GPUS"][1:] == ["environment", "3"]
    assert lines["MACHINES_TO_KEEP_IDLE"][1:] == [".env", "2"]
    assert lines["MIN_ACTIVE_GPUS"][1:] == ["default", "0"]


def test_worker_env_is_a_json_object_of_strings_masked_in_the_printout() -> None:
    s = config.load_settings(
        {"WORKER_ENV": '{"HF_TOKEN": "hf_abcdefghijklmnop", "HF_HOME": "/workspace/hf"}'}, env_file=None
    )
    assert s.worker_env == {"HF_TOKEN": "hf_abcdefghijklmnop", "HF_HOME": "/workspace/hf"}
    assert "hf_abcdefghijklmnop" in s.secrets
    out = config.render(s)
    assert "hf_abcdefghijklmnop" not in out and "HF_TOKEN=" in out
    for bad in ('["a"]', '{"A": 1}', "{not json", '{"1BAD": "x"}'):
        with pytest.raises(ConfigError, match="WORKER_ENV"):
            config.load_settings({"WORKER_ENV": bad}, env_file=None)


# -- nothing ignored without a word -----------------------------------------------------------------


def _cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_a_named_env_file_that_does_not_exist_exits_2(tmp_path: Path) -> None:
    """``--env-file /etc/orchestrator/typo.env config`` must not pass the pre-flight check on the defaults.

    Before: the missing file was skipped without a word and ``config`` exited 0.
    """
    proc = _cli("--env-file", str(tmp_path / "typo.env"), "config", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout[-500:]
    assert f"--env-file {tmp_path / 'typo.env'}: no such file" in proc.stderr
    # Listed with every other problem, in one report.
    proc = _cli(
        "--env-file", str(tmp_path / "typo.env"), "config", env={"MAX_ACTIVE_GPUS": "ten"}, cwd=tmp_path
    )
    assert proc.returncode == 2 and "no such file" in proc.stderr and "MAX_ACTIVE_GPUS='ten'" in proc.stderr
    # The default ./.env stays optional, and /dev/null (the tests' "no file") reads as empty.
    assert _cli("config", cwd=tmp_path).returncode == 0
    assert _cli("--env-file", "/dev/null", "config", cwd=tmp_path).returncode == 0
    # A file that exists but cannot be read is a problem even when it is only the default.
    (tmp_path / ".env").mkdir()
    proc = _cli("config", cwd=tmp_path)
    assert proc.returncode == 2 and "env file .env: cannot be read" in proc.stderr, proc.stderr


def test_load_settings_requires_only_a_named_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    settings = config.load_settings({}, env_file=missing)
    assert [(f.path, f.read, f.required) for f in settings.files] == [(str(missing), False, False)]
    with pytest.raises(ConfigError, match="no such file"):
        config.load_settings({}, env_file=missing, env_file_required=True)


def test_env_file_is_accepted_after_the_command_too(tmp_path: Path) -> None:
    """``orchestrator config --env-file x`` reads x (before: "unrecognized arguments", exit 2)."""
    env_file = tmp_path / "orchestrator.env"
    env_file.write_text("MACHINES_TO_KEEP_IDLE=2\n")
    for args in (
        ("config", "--env-file", str(env_file)),
        ("--env-file", "/dev/null", "config", "--env-file", str(env_file)),
    ):
        proc = _cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        row = next(
            line.split() for line in proc.stdout.splitlines() if line.startswith("MACHINES_TO_KEEP_IDLE")
        )
        assert row[1:] == [".env", "2"], args


def test_config_says_which_files_it_read_and_which_wins(tmp_path: Path) -> None:
    env_file = tmp_path / "orchestrator.env"
    env_file.write_text("MACHINES_TO_KEEP_IDLE=2\n")
    proc = _cli("--env-file", str(env_file), "config", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    head = proc.stdout.splitlines()[0]
    assert head.startswith("# read, the first wins: the process environment; ")
    assert head.index("environment") < head.index(str(env_file)) < head.index("the defaults"), head
    # Without --env-file: the default ./.env, said to be absent.
    proc = _cli("config", cwd=tmp_path)
    assert "# not read: .env (no such file; optional)" in proc.stdout.splitlines()[:3], proc.stdout[:400]


def test_config_json_has_sources_files_warnings_and_masked_values(tmp_path: Path) -> None:
    env_file = tmp_path / "orchestrator.env"
    env_file.write_text("MACHINES_TO_KEEP_IDLE=2\nRUNPOD_GPU_TYPES=A\n")
    proc = _cli(
        "config",
        "--json",
        "--env-file",
        str(env_file),
        cwd=tmp_path,
        env={
            "MAX_ACTIVE_GPUS": "3",
            "RUNPOD_API_KEY": "rpa_SECRETSECRETSECRET",
            "WORKER_ENV": '{"HF_TOKEN": "hf_abcdefghijklmnop"}',
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert "SECRETSECRET" not in proc.stdout and "hf_abcdefghijklmnop" not in proc.stdout
    doc = json.loads(proc.stdout)
    assert doc["precedence"] == ["environment", str(env_file), "default"]
    assert doc["files"] == [
        {"path": str(env_file), "resolved": str(env_file.resolve()), "read": True, "required": True}
    ]
    settings = {s["name"]: s for s in doc["settings"]}
    assert [s["name"] for s in doc["settings"]] == [v.name for v in config.VARIABLES]
    assert (settings["MAX_ACTIVE_GPUS"]["value"], settings["MAX_ACTIVE_GPUS"]["source"]) == (3, "environment")
    assert (settings["MACHINES_TO_KEEP_IDLE"]["value"], settings["MACHINES_TO_KEEP_IDLE"]["source"]) == (
        2,
        ".env",
    )
    assert settings["RUNPOD_GPU_TYPE"]["value"] == ["NVIDIA GeForce RTX 4090"]
    assert settings["RUNPOD_API_KEY"]["secret"] is True and settings["RUNPOD_API_KEY"]["value"].startswith(
        "rpa"
    )
    assert settings["SUPABASE_URL"]["value"] is None
    assert [(w["event"], w["name"], w["suggestion"]) for w in doc["warnings"]] == [
        ("config_unknown_variable", "RUNPOD_GPU_TYPES", "RUNPOD_GPU_TYPE")
    ]


def _warned(environ: dict[str, str], file_values: dict[str, str] | None = None) -> dict[str, str | None]:
    return {
        w.fields["name"]: w.fields["suggestion"]
        for w in config.name_warnings(environ, file_values or {}, "orch.env")
    }


def test_misspelt_names_are_reported_with_the_closest_setting() -> None:
    """``MAX_ACTIVE_GPU=4`` was ignored without a word: the fleet ran with the default ceiling of 10."""
    assert _warned(
        {
            "MAX_ACTIVE_GPU": "4",  # a letter short
            "RUNPOD_GPU_TYPES": "A",  # a letter more
            "GPU_IDLE_TIMEOUT": "60",  # the unit forgotten
            "SUPABASE_SERVICE_KEY": "k",  # a word forgotten (the worker's own name for the key)
            "RUNPOD_API_KY": "k",  # closer to RUNPOD_API_KEY than to RUNPOD_API, a word away
            "log_level": "DEBUG",  # lower case
            "ORCHESTRATOR_POLL_INTERVAL": "5",  # our namespace, however far from a setting
            "ORCHESTRATOR_WHATEVER": "1",
        }
    ) == {
        "MAX_ACTIVE_GPU": "MAX_ACTIVE_GPUS",
        "RUNPOD_GPU_TYPES": "RUNPOD_GPU_TYPE",
        "GPU_IDLE_TIMEOUT": "GPU_IDLE_TIMEOUT_SEC",
        "SUPABASE_SERVICE_KEY": "SUPABASE_SERVICE_ROLE_KEY",
        "RUNPOD_API_KY": "RUNPOD_API_KEY",
        "log_level": "LOG_LEVEL",
        "ORCHESTRATOR_POLL_INTERVAL": "ORCHESTRATOR_POLL_SEC",
        "ORCHESTRATOR_WHATEVER": None,
    }
    # The env file exists for us: any Runpod or Supabase name there that is not ours is reported too.
    assert _warned({}, {"RUNPOD_VOLUME": "v", "SUPABASE_PROJECT": "p", "MAX_HOURLY_SPEND_USD": "5"}) == {
        "RUNPOD_VOLUME": None,
        "SUPABASE_PROJECT": None,
        "MAX_HOURLY_SPEND_USD": "MAX_HOURLY_SPEND",
    }
    # Found in both places: one warning naming both.
    (both,) = config.name_warnings({"MAX_ACTIVE_GPU": "4"}, {"MAX_ACTIVE_GPU": "4"}, "orch.env")
    assert "in the environment and orch.env" in both.message


def test_an_ordinary_environment_is_not_reported() -> None:
    """A login shell, a systemd service, a container and a Runpod pod have names of their own, some of
    them close to ours; none is reported, and neither are the names the package itself reads."""
    ordinary = dict.fromkeys(
        [
            "PATH",
            "HOME",
            "LANG",
            "LC_ALL",
            "TERM",
            "SHELL",
            "USER",
            "LOGNAME",
            "PWD",
            "OLDPWD",
            "HOSTNAME",
            "TZ",
            "PYTHONPATH",
            "VIRTUAL_ENV",
            "SSH_AUTH_SOCK",
            "SSH_CLIENT",
            "SSH_CONNECTION",
            "SSH_TTY",
            "INVOCATION_ID",
            "JOURNAL_STREAM",
            "SYSTEMD_EXEC_PID",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "http_proxy",
            "CUDA_VISIBLE_DEVICES",
            "NVIDIA_VISIBLE_DEVICES",
            "HF_HOME",
            "HF_TOKEN",
            "PGHOST",
            "PGPASSWORD",
            "PGDATABASE",
            "DATABASE_USER",
            "DATABASE_HOST",
            "DATABASE_NAME",
            "DB_HOST",
            "DB_PORT",
            "LOG_FILE",
            "LOG_DIR",
            "METRICS_PATH",
            "METRICS_ADDR",
            "WEB_CONCURRENCY",
            "MAX_WORKERS",
            "TASK_TIMEOUT",
            "PUBLIC_KEY",
            "JUPYTER_PASSWORD",
            "RUNPOD_POD_ID",
            "RUNPOD_PUBLIC_IP",
            "RUNPOD_TCP_PORT_22",
            "RUNPOD_GPU_COUNT",
            "RUNPOD_CPU_COUNT",
            "RUNPOD_DC_ID",
            "RUNPOD_VOLUME_ID",
            "RUNPOD_POD_HOSTNAME",
            "RUNPOD_AI_API_KEY",
            "RUNPOD_DEBUG_LEVEL",
            "RUNPOD_ENDPOINT_ID",
            "SUPABASE_ACCESS_TOKEN",
            "SUPABASE_DB_PASSWORD",
            "SUPABASE_PROJECT_ID",
            "ORCHESTRATOR_PG_BINDIR",
            "ORCHESTRATOR_MIGRATIONS_DIR",
            "ORCHESTRATOR_TEST_CRASH_AT",
        ],
        "x",
    )
    assert _warned(ordinary) == {}
    # The SDK's own names are not ours, but not mistakes either, even in the env file.
    assert (
        _warned({}, {"RUNPOD_DEBUG_LEVEL": "DEBUG", "RUNPOD_UA_INTEGRATION": "x", "MAX_ACTIVE_GPUS": "3"})
        == {}
    )


def test_every_orchestrator_name_the_package_reads_is_known() -> None:
    """An ``ORCHESTRATOR_*`` variable the code reads but the check does not know would be reported as a
    mistake to the very people who set it on purpose."""
    root = Path(config.__file__).resolve().parent
    read = {
        m.group(1)
        for path in root.rglob("*.py")
        for m in re.finditer(r"[\"'](ORCHESTRATOR_[A-Z0-9_]+)[\"']", path.read_text())
    }
    assert read and read <= config.KNOWN_NAMES, sorted(read - config.KNOWN_NAMES)


def test_warnings_never_carry_values(tmp_path: Path) -> None:
    env_file = tmp_path / "orchestrator.env"
    env_file.write_text("RUNPOD_API_KY=rpa_FILESECRETFILESECRET\nRUNPOD_API_KEY rpa_LINESECRETLINESECRET\n")
    settings = config.load_settings({"SUPABASE_SERVICE_ROLE_KY": "sb_ENVSECRETENVSECRET"}, env_file=env_file)
    text = json.dumps([w.to_dict() for w in settings.warnings])
    assert "RUNPOD_API_KY" in text and "SUPABASE_SERVICE_ROLE_KY" in text and "line 2" in text
    assert "SECRET" not in text


def test_env_file_lines_that_are_not_assignments_or_repeat_a_name_are_reported(tmp_path: Path) -> None:
    env_file = tmp_path / "orchestrator.env"
    env_file.write_text("# comment\nMAX_ACTIVE_GPUS=3\nMIN_ACTIVE_GPUS 1\n\nMAX_ACTIVE_GPUS=5\n")
    settings = config.load_settings({}, env_file=env_file)
    assert settings.max_active_gpus == 5
    found = sorted((w.event, dict(w.fields)) for w in settings.warnings)
    assert found == [
        ("config_env_file_duplicate", {"file": str(env_file), "name": "MAX_ACTIVE_GPUS", "lines": [2, 5]}),
        ("config_env_file_line_ignored", {"file": str(env_file), "line": 3}),
    ]


def test_cli_names_a_misspelt_variable_beside_the_problems_it_causes(tmp_path: Path) -> None:
    """``RUNPOD_API_KY=...``: the report says RUNPOD_API_KEY is unset, and why, without the key."""
    proc = _cli(
        "--env-file",
        "/dev/null",
        "run",
        cwd=tmp_path,
        env={"RUNPOD_API_KY": "rpa_SECRETSECRETSECRET", "DATABASE_URL": "postgresql://u@127.0.0.1:9/db"},
    )
    assert proc.returncode == 2
    assert "RUNPOD_API_KEY is unset" in proc.stderr
    assert (
        "RUNPOD_API_KY (in the environment) is not a setting of the orchestrator and is ignored; did you mean RUNPOD_API_KEY?"
        in proc.stderr
    )
    assert "SECRETSECRET" not in proc.stderr


def test_cli_logs_a_warning_for_a_misspelt_variable_and_still_runs(tmp_path: Path) -> None:
    """A one-off command that works logs one warning line (stderr, JSON when piped) per suspect name."""
    env_file = tmp_path / "orchestrator.env"
    env_file.write_text("MAX_ACTIVE_GPUS 3\nMIN_ACTIVE_GPUS=1\nMIN_ACTIVE_GPUS=0\n")
    proc = _cli(
        "--env-file",
        str(env_file),
        "sim",
        "run",
        "--trace",
        "spike",
        "--policy",
        "ours",
        env={"MAX_ACTIVE_GPU": "4"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [{k: v for k, v in e.items() if k != "ts"} for e in lines] == [
        {"event": "config_env_file_line_ignored", "level": "warning", "file": str(env_file), "line": 1},
        {
            "event": "config_env_file_duplicate",
            "level": "warning",
            "file": str(env_file),
            "name": "MIN_ACTIVE_GPUS",
            "lines": [2, 3],
        },
        {
            "event": "config_unknown_variable",
            "level": "warning",
            "name": "MAX_ACTIVE_GPU",
            "source": "the environment",
            "suggestion": "MAX_ACTIVE_GPUS",
        },
    ]
    assert "config_" not in proc.stdout
    # `config` shows them in its own output instead of logging them.
    proc = _cli("--env-file", "/dev/null", "config", env={"MAX_ACTIVE_GPU": "4"}, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    assert "# warning: MAX_ACTIVE_GPU (in the environment) is not a setting" in proc.stdout


def test_every_setting_is_a_typed_attribute_checked_against_the_table() -> None:
    # One attribute per variable, in the table's order, with the type its kind parses to: mypy sees
    # `settings.max_active_gpus` as an int, and no attribute lookup falls through to a mapping.
    assert config.field_problems() == []
    assert "__getattr__" not in vars(config.Settings)
    s = config.defaults()
    for var in config.VARIABLES:
        assert getattr(s, var.name.lower()) == s.get(var.name) == s.values[var.name]
    with pytest.raises(AttributeError):
        s.no_such_setting  # type: ignore[attr-defined]  # noqa: B018


def test_replace_refuses_a_name_that_is_not_a_setting() -> None:
    # A misspelt override in a test or a benchmark candidate must not pass silently.
    with pytest.raises(ConfigError, match="MAX_ACTIVE_GPU: not a setting"):
        config.defaults().replace(MAX_ACTIVE_GPU=3)
    assert config.defaults().replace(max_active_gpus=3).max_active_gpus == 3


def test_a_blank_text_setting_reads_as_unset_so_its_default_holds() -> None:
    # "  " was read as None, so a blank WORKER_ID_PREFIX named pods "None..." and a blank image sent none.
    s = config.load_settings(
        {"WORKER_ID_PREFIX": "  ", "RUNPOD_WORKER_IMAGE": " ", "SUPABASE_URL": " "}, env_file=None
    )
    assert s.worker_id_prefix == "gpu-"
    assert s.runpod_worker_image == config.BY_NAME["RUNPOD_WORKER_IMAGE"].default
    assert s.supabase_url is None


def test_a_heartbeat_timeout_under_three_of_the_workers_beats_is_warned_about(tmp_path: Path) -> None:
    # Headless-Wan2GP's guardian beats every 20 s: at 30 s one late beat fails a worker mid-task.
    assert config.load_settings({"HEARTBEAT_TIMEOUT_SEC": "60"}).warnings == ()
    assert config.defaults().warnings == ()
    proc = _cli("config", cwd=tmp_path, env={"HEARTBEAT_TIMEOUT_SEC": "30"})
    assert proc.returncode == 0, proc.stderr
    assert "# warning: HEARTBEAT_TIMEOUT_SEC=30 is under 60 s" in proc.stdout, proc.stdout[:600]
    doc = json.loads(_cli("config", "--json", cwd=tmp_path, env={"HEARTBEAT_TIMEOUT_SEC": "30"}).stdout)
    assert [(w["event"], w["value"]) for w in doc["warnings"]] == [("config_heartbeat_timeout_short", 30)]
    # Beside the problems of a configuration that fails, as for a misspelt name.
    failed = _cli("plan", cwd=tmp_path, env={"HEARTBEAT_TIMEOUT_SEC": "30"})
    assert failed.returncode == 2 and "warning: HEARTBEAT_TIMEOUT_SEC=30 is under 60 s" in failed.stderr
    # And as an event, once, from the commands that run the fleet (the daemon's log, for alerts); not
    # from one-off commands such as `ssh`, whose stderr is the remote command's.
    short = config.load_settings({"HEARTBEAT_TIMEOUT_SEC": "30"})
    with structlog.testing.capture_logs() as logs:
        cli._log_warnings(short, runs_the_fleet=True)
    assert [(e["event"], e["value"], e["below"]) for e in logs] == [
        ("config_heartbeat_timeout_short", 30, 60)
    ]
    with structlog.testing.capture_logs() as logs:
        cli._log_warnings(short, runs_the_fleet=False)
    assert logs == []


def test_a_worker_poll_as_long_as_the_wait_target_is_warned_about() -> None:
    # A task that finds only idle workers waits for the first of their polls, which the wait target's
    # model does not count: polls as far apart as the target can spend all of it.
    assert config.load_settings({"WAIT_TARGET_SEC": "20", "WORKER_POLL_INTERVAL_SEC": "19"}).warnings == ()
    assert config.load_settings({"WAIT_TARGET_SEC": "0", "WORKER_POLL_INTERVAL_SEC": "30"}).warnings == ()
    slow = config.load_settings({"WAIT_TARGET_SEC": "10", "WORKER_POLL_INTERVAL_SEC": "10"})
    assert [(w.event, w.fields["value"], w.fields["wait_target_sec"]) for w in slow.warnings] == [
        ("config_worker_poll_slow", 10, 10)
    ]
    with structlog.testing.capture_logs() as logs:
        cli._log_warnings(slow, runs_the_fleet=True)
    assert [(e["event"], e["value"]) for e in logs] == [("config_worker_poll_slow", 10)]


def test_a_new_style_secret_key_is_warned_about_without_its_value() -> None:
    # The workers pass the key to the app's Edge Functions, which grant the service role only to the
    # legacy service_role key and refuse any other token (403): they would never claim a task.
    secret = "sb_secret_" + "k" * 30
    settings = config.load_settings({"SUPABASE_SERVICE_ROLE_KEY": secret})
    [warning] = settings.warnings
    assert warning.event == "config_secret_key_for_workers" and "legacy service_role key" in warning.message
    with structlog.testing.capture_logs() as logs:
        cli._log_warnings(settings, runs_the_fleet=True)
    assert [(e["event"], e["name"]) for e in logs] == [
        ("config_secret_key_for_workers", "SUPABASE_SERVICE_ROLE_KEY")
    ]
    assert secret not in repr(logs) and secret not in warning.message
    assert config.load_settings({"SUPABASE_SERVICE_ROLE_KEY": "eyJhbGciOiJIUzI1NiJ9.e30.x"}).warnings == ()


def test_workers_not_started_by_the_daemon_find_the_keys_in_the_pod_env_unless_refused() -> None:
    # The daemon hands the keys to the workers it starts over SSH; a worker the image or an operator
    # starts finds them only in the pod's creation env. Unset, the setting follows who starts them.
    key = "eyJhbGciOiJIUzI1NiJ9.e30.x"
    started_by_us = config.load_settings({"SUPABASE_SERVICE_ROLE_KEY": key}, env_file=None)
    assert started_by_us.pod_env_supabase_keys is None and started_by_us.pod_env_keys is False
    base = {"SUPABASE_SERVICE_ROLE_KEY": key, "AUTO_START_WORKER_PROCESS": "false"}
    by_hand = config.load_settings(base, env_file=None)
    assert by_hand.pod_env_keys is True and by_hand.warnings == ()
    assert config.load_settings({**base, "POD_ENV_SUPABASE_KEYS": "true"}, env_file=None).pod_env_keys is True
    # Refused explicitly: said at start-up, since such a worker then finds no key at all.
    refused = config.load_settings({**base, "POD_ENV_SUPABASE_KEYS": "false"}, env_file=None)
    assert refused.pod_env_keys is False
    [warning] = refused.warnings
    assert warning.event == "config_pods_without_keys" and "e30" not in warning.message
    with structlog.testing.capture_logs() as logs:
        cli._log_warnings(refused, runs_the_fleet=True)
    assert [(e["event"], e["name"]) for e in logs] == [("config_pods_without_keys", "POD_ENV_SUPABASE_KEYS")]
    given = {**base, "POD_ENV_SUPABASE_KEYS": "false", "WORKER_ENV": '{"SUPABASE_SERVICE_ROLE_KEY": "k"}'}
    assert config.load_settings(given, env_file=None).warnings == ()


def test_the_workers_credentials_in_worker_env_are_checked_as_the_settings_are() -> None:
    """The start hands the workers WORKER_ENV's URL and key when the settings leave them unset, so the
    checks that catch a wrong key or URL in the settings catch it there too."""
    import base64 as b64

    def jwt(claims: dict[str, str]) -> str:
        body = b64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return f"eyJhbGciOiJIUzI1NiJ9.{body}.sig"

    db = {
        "DB_BACKEND": "postgres",
        "DATABASE_URL": "postgresql://u:p@db.bbbbbbbbbbbbbbbbbbbb.supabase.co:5432/postgres",
    }

    def problems(worker_env: dict[str, str]) -> str:
        with pytest.raises(ConfigError) as info:
            config.load_settings({**db, "WORKER_ENV": json.dumps(worker_env)}, env_file=None)
        return "\n".join(info.value.problems)

    ok_url = "https://bbbbbbbbbbbbbbbbbbbb.supabase.co"
    anon = problems({"SUPABASE_URL": ok_url, "SUPABASE_SERVICE_ROLE_KEY": jwt({"role": "anon"})})
    assert "SUPABASE_SERVICE_ROLE_KEY (given in WORKER_ENV) is a key of role 'anon'" in anon
    other = problems(
        {"SUPABASE_URL": "https://aaaaaaaaaaaaaaaaaaaa.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k"}
    )
    assert "different Supabase projects" in other and "WORKER_ENV" in other
    endpoint = problems({"SUPABASE_URL": ok_url + "/rest/v1/", "SUPABASE_SERVICE_ROLE_KEY": "k"})
    assert "expected the project's URL" in endpoint and "(given in WORKER_ENV)" in endpoint
    secret = "sb_secret_" + "k" * 30
    settings = config.load_settings(
        {**db, "WORKER_ENV": json.dumps({"SUPABASE_URL": ok_url + "/", "SUPABASE_SERVICE_ROLE_KEY": secret})},
        env_file=None,
    )
    assert [w.event for w in settings.warnings] == ["config_secret_key_for_workers"]
    creds, borrowed = config.worker_credentials(settings.values)
    assert creds["SUPABASE_URL"] == ok_url and borrowed == {"SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"}
    # The settings win over WORKER_ENV, as they do at the start.
    both = config.load_settings(
        {**db, "SUPABASE_URL": ok_url, "WORKER_ENV": json.dumps({"SUPABASE_URL": "https://x.example"})},
        env_file=None,
    )
    assert config.worker_credentials(both.values) == (
        {"SUPABASE_URL": ok_url, "SUPABASE_SERVICE_ROLE_KEY": None, "SUPABASE_ANON_KEY": None},
        frozenset(),
    )


def test_the_transaction_pooler_is_warned_about_because_listen_hears_nothing_there() -> None:
    pooler = (
        "postgresql://postgres.abcdefghijklmnopqrst:pw@aws-0-eu-central-1.pooler.supabase.com:{port}/postgres"
    )
    assert config.transaction_pooler(pooler.format(port=6543))
    assert not config.transaction_pooler(pooler.format(port=5432))
    # The dedicated pooler beside the database runs in transaction mode on 6543 too.
    assert config.transaction_pooler("postgresql://u@db.abcdefghijklmnopqrst.supabase.co:6543/postgres")
    assert not config.transaction_pooler("postgresql://u@db.abcdefghijklmnopqrst.supabase.co:5432/postgres")
    # The daemon listens only on the Postgres transport: over the REST API the URL serves `migrate` alone.
    rest = {"DB_BACKEND": "supabase", "SUPABASE_URL": "https://abcdefghijklmnopqrst.supabase.co"}
    assert (
        config.load_settings({**rest, "DATABASE_URL": pooler.format(port=6543)}, env_file=None).warnings == ()
    )
    settings = config.load_settings({"DATABASE_URL": pooler.format(port=6543)}, env_file=None)
    assert [w.event for w in settings.warnings] == ["config_transaction_pooler"]
    with structlog.testing.capture_logs() as logs:
        cli._log_warnings(settings, runs_the_fleet=True)
    assert [(e["event"], e["port"]) for e in logs] == [("config_transaction_pooler", 6543)]
    assert "pw" not in repr(logs)
    assert config.load_settings({"DATABASE_URL": pooler.format(port=5432)}, env_file=None).warnings == ()


def test_an_inline_comment_in_the_env_file_is_warned_about_with_its_line(tmp_path: Path) -> None:
    # systemd's EnvironmentFile (systemd.exec(5): only lines beginning with '#' or ';' are comments) and
    # `docker run --env-file` keep "4 # four" whole, so the deployed daemon would read another value
    # (or fail to start) than `orchestrator config` shows.
    env_file = tmp_path / "orchestrator.env"
    env_file.write_text(
        'MAX_ACTIVE_GPUS=4 # four\nRUNPOD_API_KEY="rpa_A"\n# MIN_ACTIVE_GPUS=1 # off\n'
        # Quotes these values need (a ' #' cut unquoted, a backslash): no warning.
        'SUPABASE_ANON_KEY="a #b"\nSUPABASE_SERVICE_ROLE_KEY="x\\y"\n'
    )
    settings = config.load_settings({}, env_file=env_file)
    assert settings.max_active_gpus == 4
    found = [(w.event, dict(w.fields)) for w in settings.warnings]
    assert found == [
        ("config_env_file_inline_comment", {"file": str(env_file), "line": 1, "name": "MAX_ACTIVE_GPUS"}),
        # Quoted: `docker run --env-file` keeps the quotes in the key (systemd and this reader drop them).
        ("config_env_file_quoted_value", {"file": str(env_file), "line": 2, "name": "RUNPOD_API_KEY"}),
    ]
    assert settings.runpod_api_key == "rpa_A"
    assert "rpa_A" not in json.dumps([w.to_dict() for w in settings.warnings])


def test_a_database_password_with_a_slash_is_explained_and_never_echoed() -> None:
    """libpq ends a URI's address part at the first '/': a password holding one reads as host and port.
    Before: "port 'Sup3r...' is not a TCP port", the password's first part printed to the terminal and
    the journal. Now: what to percent-encode, and nothing of the password."""
    url = "postgresql://postgres.abcd:Sup3rSecretPart#Rest/pw@aws-0-eu.pooler.supabase.com:5432/postgres"
    with pytest.raises(ConfigError) as info:
        config.load_settings({"DATABASE_URL": url}, env_file=None)
    text = "\n".join(info.value.problems)
    assert "percent-encoded" in text and "%2F" in text
    assert "Sup3rSecretPart" not in text and "Rest/pw" not in text


def test_the_original_orchestrators_later_names_point_to_ours() -> None:
    """An env file carried over from a later version of the original orchestrator names its GPU type,
    image, disk and WGP profile differently; each is warned about with the setting that replaces it
    (before, REIGH_WORKER_PROFILE was ignored without a word and RUNPOD_CONTAINER_IMAGE was pointed at
    RUNPOD_CONTAINER_DISK_GB)."""
    carried = {
        "RUNPOD_INSTANCE_TYPE": "NVIDIA RTX A4000",
        "RUNPOD_CONTAINER_IMAGE": "me/worker:1",
        "RUNPOD_CONTAINER_DISK_SIZE_GB": "20",
        "REIGH_WORKER_PROFILE": "3",
    }
    found = {
        w.fields["name"]: w.fields["suggestion"]
        for w in config.name_warnings({}, carried, "orch.env")
        if w.event == "config_unknown_variable"
    }
    assert found == {
        "RUNPOD_INSTANCE_TYPE": "RUNPOD_GPU_TYPE",
        "RUNPOD_CONTAINER_IMAGE": "RUNPOD_WORKER_IMAGE",
        "RUNPOD_CONTAINER_DISK_SIZE_GB": "RUNPOD_CONTAINER_DISK_GB",
        "REIGH_WORKER_PROFILE": "WORKER_WGP_PROFILE",
    }


def test_the_anon_key_in_the_service_roles_place_is_refused() -> None:
    """Supabase's legacy keys are JWTs that state their role; the anon and service_role keys are easily
    swapped, and with the anon key row-level security hides every row from the daemon and the workers.
    Before, `config` accepted it and the first sign was doctor's 401s or an empty fleet."""
    import base64
    import json as json_mod

    def key(role: str) -> str:
        def part(obj: dict[str, str]) -> str:
            return base64.urlsafe_b64encode(json_mod.dumps(obj).encode()).decode().rstrip("=")

        return (
            f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'iss': 'supabase', 'role': role})}.c2lnbmF0dXJl"
        )

    assert config.jwt_role(key("anon")) == "anon" and config.jwt_role("sb_secret_abc") is None
    with pytest.raises(ConfigError) as info:
        config.load_settings({"SUPABASE_SERVICE_ROLE_KEY": key("anon")}, env_file=None)
    assert any("role 'anon'" in p for p in info.value.problems)
    assert config.load_settings({"SUPABASE_SERVICE_ROLE_KEY": key("service_role")}, env_file=None)


def _jwt(**claims: str) -> str:
    import base64
    import json as json_mod

    def part(obj: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json_mod.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


OURS, OTHER = "abcdefghijklmnopqrst", "zyxwvutsrqponmlkjihg"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        (
            {"DATABASE_URL": f"postgresql://postgres:p%40ss@db.{OTHER}.supabase.co:5432/postgres"},
            "DATABASE_URL",
        ),
        (
            {
                "DATABASE_URL": f"postgresql://postgres.{OTHER}:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"
            },
            "DATABASE_URL",
        ),
        (
            {"SUPABASE_SERVICE_ROLE_KEY": _jwt(iss="supabase", ref=OTHER, role="service_role")},
            "SUPABASE_SERVICE_ROLE_KEY",
        ),
    ],
    ids=["direct", "pooler", "key"],
)
def test_settings_of_two_supabase_projects_are_refused(changes: dict[str, str], named: str) -> None:
    """SUPABASE_URL goes to the workers (their Edge Function calls and heartbeats); DATABASE_URL is the
    daemon's own way to the queue. Copied from two projects (a staging one and production), the daemon
    spawned for tasks no worker could see and the workers polled a queue the daemon never read. The
    project is in each: its API host, the database's host or the pooler's user, the legacy key's `ref`."""
    same = {
        "SUPABASE_URL": f"https://{OURS}.supabase.co",
        "DATABASE_URL": f"postgresql://postgres.{OURS}:pw@aws-0-eu-central-1.pooler.supabase.com:5432/postgres",
        "SUPABASE_SERVICE_ROLE_KEY": _jwt(iss="supabase", ref=OURS, role="service_role"),
    }
    assert config.load_settings(same, env_file=None).supabase_url == same["SUPABASE_URL"]
    with pytest.raises(ConfigError) as info:
        config.load_settings({**same, **changes}, env_file=None)
    [problem] = [p for p in info.value.problems if "different Supabase projects" in p]
    assert f"{named} project {OTHER}" in problem and f"SUPABASE_URL project {OURS}" in problem
    assert "pw" not in problem and "p%40ss" not in problem


@pytest.mark.parametrize(
    "database_url",
    [
        "postgresql://orchestrator:pw@10.0.0.5:5432/postgres",  # self-hosted: no project in it
        f"postgresql://postgres:pw@db.{OTHER}.supabase.co/postgres?host=db.{OURS}.supabase.co",  # the query wins
        f"postgresql://postgres:pw@db.{OURS}.supabase.co:6543/postgres",  # the dedicated pooler's port
    ],
)
def test_settings_that_cannot_be_told_apart_or_agree_are_accepted(database_url: str) -> None:
    settings = {"SUPABASE_URL": f"https://{OURS}.supabase.co", "DATABASE_URL": database_url}
    assert config.load_settings(settings, env_file=None).database_url == database_url


def test_a_vanity_subdomain_that_reads_like_a_project_is_not_refused() -> None:
    # A vanity subdomain (a paid add-on) of twenty letters reads like a project's reference; the
    # database and the key, which agree, say which project it is.
    settings = {
        "SUPABASE_URL": "https://acmeproductionapiabc.supabase.co",
        "DATABASE_URL": f"postgresql://postgres.{OURS}:pw@aws-0-eu-central-1.pooler.supabase.com:5432/postgres",
        "SUPABASE_SERVICE_ROLE_KEY": _jwt(iss="supabase", ref=OURS, role="service_role"),
    }
    assert config.load_settings(settings, env_file=None).database_url == settings["DATABASE_URL"]


def test_a_key_whose_payload_nests_without_end_is_read_as_no_key_claims() -> None:
    import base64

    payload = base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).decode().rstrip("=")
    assert config.jwt_role(f"eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln") is None
    assert config.load_settings(
        {"SUPABASE_SERVICE_ROLE_KEY": f"eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln"}, env_file=None
    )


@pytest.mark.parametrize("password", ["123456/Rest", "a@b", "99999/x"])
def test_a_database_password_libpq_cannot_read_is_caught_without_echoing_it(password: str) -> None:
    url = f"postgresql://postgres.abcd:{password}@aws-0-eu.pooler.supabase.com:5432/postgres"
    with pytest.raises(ConfigError) as info:
        config.load_settings({"DATABASE_URL": url}, env_file=None)
    text = "\n".join(info.value.problems)
    assert "percent-encoded" in text and password[:4] not in text


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres.abcd:123456#Rest@aws-0-eu.pooler.supabase.com:5432/postgres",
        "postgresql://u:ab?c@h:5432?sslmode=require",
        "postgresql://u:p@h1:5432,h2:5433/db",
        "postgresql://u:p@[::1]:5432/db",
        "postgresql:///db?host=/var/run/postgresql",
        "postgresql://u:p@h/db?options=a@b",
    ],
)
def test_database_urls_libpq_reads_are_accepted(url: str) -> None:
    """'#' and '?' in a password, several hosts, IPv6, a socket directory, '@' in a parameter: libpq
    reads each as meant (psycopg.conninfo.conninfo_to_dict), so the configuration takes it."""
    assert config.load_settings({"DATABASE_URL": url}, env_file=None).database_url == url


def test_config_warns_about_a_private_key_the_process_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading checks only that the key file exists; the daemon's start reads it and refuses it (exit 2).
    `config`, the documented check "as the service will see it", now says so too. The tests run as root,
    who reads anything, so the answer the kernel would give the daemon's uid is given in its place."""
    key = tmp_path / "id_ed25519"
    key.write_text("not read here\n")
    real_access = config.os.access
    monkeypatch.setattr(
        config.os, "access", lambda p, mode: False if str(p) == str(key) else real_access(p, mode)
    )
    settings = config.load_settings({"RUNPOD_SSH_PRIVATE_KEY_PATH": str(key)}, env_file=None)
    [unreadable] = [w for w in settings.warnings if w.event == "config_private_key_unreadable"]
    assert str(key) in unreadable.message and "cannot read it" in unreadable.message
    # Logged under its own name, as every command logs the configuration's warnings at start.
    with structlog.testing.capture_logs() as logs:
        cli._log_warnings(settings)
    assert [e["event"] for e in logs] == ["config_private_key_unreadable"]


def test_demo_refuses_an_env_file_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`demo` reads no env file, but one named on the command line must exist, as for every command."""
    code = cli.main(["--env-file", str(tmp_path / "missing.env"), "demo"])
    assert code == 2
    assert "no such file" in capsys.readouterr().err
