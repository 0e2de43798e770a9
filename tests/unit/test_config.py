"""Configuration: defaults, sources, and one message listing every problem (exit code 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.errors import ConfigError


def test_defaults_are_the_documented_ones() -> None:
    s = config.defaults()
    assert s.max_active_gpus == 10
    assert s.min_active_gpus == 0
    assert s.tasks_per_gpu_threshold == 3
    assert s.gpu_idle_timeout_sec == 600
    assert s.task_stuck_timeout_sec == 1200
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


def test_ssh_key_paths_are_optional_as_in_the_original() -> None:
    """The original's table lists RUNPOD_SSH_PUBLIC_KEY_PATH and RUNPOD_SSH_PRIVATE_KEY_PATH with no
    default: without them it logged in with the pod's password. The daemon starts (and warns)."""
    s = config.load_settings({"RUNPOD_API_KEY": "rpa_x", "DATABASE_URL": "postgresql://u@127.0.0.1:9/db"}, env_file=None)
    s.require(database=True, runpod=True)
    assert s.runpod_ssh_private_key_path is None and s.runpod_ssh_public_key_path is None


def test_worker_start_settings_default_to_the_original_and_are_validated() -> None:
    s = config.defaults()
    assert s.worker_dirs == ("reigh/Headless-Wan2GP",)
    assert s.worker_launch == "venv" and s.worker_wgp_profile == 1
    assert s.worker_git_branch == "main"
    assert s.worker_apt_packages == ("python3.10-venv", "ffmpeg")
    assert s.runpod_storage_name is None
    s = config.load_settings(
        {
            "RUNPOD_STORAGE_NAME": "vol-ro, vol-ks ,",
            "WORKER_DIRS": "Reigh-Worker,Headless-Wan2GP",
            "WORKER_LAUNCH": "UV",
            "WORKER_WGP_PROFILE": "3",
            "WORKER_GIT_BRANCH": "release/2026-05",
            "WORKER_APT_PACKAGES": "ffmpeg libgl1",
        },
        env_file=None,
    )
    assert s.runpod_storage_name == ("vol-ro", "vol-ks")
    assert s.worker_dirs == ("Reigh-Worker", "Headless-Wan2GP")
    assert (s.worker_launch, s.worker_wgp_profile, s.worker_git_branch) == ("uv", 3, "release/2026-05")
    assert s.worker_apt_packages == ("ffmpeg", "libgl1")
    assert s.display_value("WORKER_APT_PACKAGES") == "ffmpeg,libgl1"
    off = config.load_settings({"WORKER_APT_PACKAGES": "none"}, env_file=None)
    assert off.worker_apt_packages == () and off.display_value("WORKER_APT_PACKAGES") == "none"

    bad = {
        "WORKER_DIRS": "../elsewhere,ok",
        "WORKER_LAUNCH": "docker",
        "WORKER_WGP_PROFILE": "0",
        "WORKER_GIT_BRANCH": "--upload-pack=evil",
        "WORKER_APT_PACKAGES": "ffmpeg;reboot",
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
        env={"PATH": "/usr/bin:/bin", "WORKER_GIT_BRANCH": "a..b", "WORKER_APT_PACKAGES": "Bad_Name", "WORKER_LAUNCH": "x"},
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
    s = config.load_settings({"WORKER_ENV": '{"HF_TOKEN": "hf_abcdefghijklmnop", "HF_HOME": "/workspace/hf"}'}, env_file=None)
    assert s.worker_env == {"HF_TOKEN": "hf_abcdefghijklmnop", "HF_HOME": "/workspace/hf"}
    assert "hf_abcdefghijklmnop" in s.secrets
    out = config.render(s)
    assert "hf_abcdefghijklmnop" not in out and "HF_TOKEN=" in out
    for bad in ('["a"]', '{"A": 1}', "{not json", '{"1BAD": "x"}'):
        with pytest.raises(ConfigError, match="WORKER_ENV"):
            config.load_settings({"WORKER_ENV": bad}, env_file=None)
