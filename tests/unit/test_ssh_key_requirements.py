"""Day one against Runpod itself: what `orchestrator doctor` and `orchestrator run` say about the SSH key
pair and the network volume, which the emulator tolerates and Runpod's images do not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paramiko
import pytest

from orchestrator import setup_commands
from orchestrator.core import config
from orchestrator.core.errors import ConfigError

REAL = "https://api.runpod.io"
EMULATOR = "http://127.0.0.1:9"
BASE = {"RUNPOD_API_KEY": "rpa_x", "DATABASE_URL": "postgresql://u@127.0.0.1:9/db"}


def _keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """A private key file and its public line, as `ssh-keygen` writes them."""
    key = paramiko.RSAKey.generate(2048)
    private = directory / name
    key.write_private_key_file(str(private))
    public = directory / f"{name}.pub"
    public.write_text(f"{key.get_name()} {key.get_base64()} {name}\n")
    return private, public


def _settings(**env: str) -> config.Settings:
    return config.load_settings({**BASE, **env}, env_file=None)


def _by_name(checks: list[setup_commands.Check]) -> dict[str, setup_commands.Check]:
    return {c.name: c for c in checks}


def test_run_against_runpod_without_a_private_key_exits_2_listing_every_problem() -> None:
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--env-file", "/dev/null", "run"],
        env={**keep, **BASE, "MIN_ACTIVE_GPUS": "5", "MAX_ACTIVE_GPUS": "2"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "RUNPOD_SSH_PRIVATE_KEY_PATH is unset" in result.stderr
    assert "no root password" in result.stderr
    assert "MIN_ACTIVE_GPUS=5 is greater than MAX_ACTIVE_GPUS=2" in result.stderr, "one report"


def test_the_key_stays_optional_against_the_emulator_and_for_commands_that_never_log_in() -> None:
    _settings(RUNPOD_API_BASE_URL=EMULATOR).require(database=True, runpod=True, ssh=True)
    _settings().require(database=True, runpod=True)  # `orchestrator plan`, `pods`: they only read
    _settings().require(runpod=True)  # `orchestrator gpus`, `volumes`
    _settings().require(database=True)  # `status`, `migrate`
    with pytest.raises(ConfigError, match="RUNPOD_SSH_PRIVATE_KEY_PATH"):
        _settings(RUNPOD_API_BASE_URL="https://api.runpod.io/").require(database=True, runpod=True, ssh=True)


@pytest.mark.parametrize(("url", "status"), [(REAL, "FAIL"), (EMULATOR, "warn")])
def test_doctor_without_a_private_key(url: str, status: str) -> None:
    found = _by_name(setup_commands._doctor_ssh(_settings(RUNPOD_API_BASE_URL=url)))
    assert found["ssh: private key"].status == status
    assert "RUNPOD_SSH_PRIVATE_KEY_PATH" in found["ssh: private key"].detail


def test_doctor_fails_a_public_key_of_another_pair(tmp_path: Path) -> None:
    private, public = _keypair(tmp_path, "id_a")
    _, other_public = _keypair(tmp_path, "id_b")
    found = _by_name(
        setup_commands._doctor_ssh(
            _settings(RUNPOD_SSH_PRIVATE_KEY_PATH=str(private), RUNPOD_SSH_PUBLIC_KEY_PATH=str(other_public))
        )
    )
    assert found["ssh: private key"].status == "ok"
    assert found["ssh: public key"].status == "FAIL"
    assert "is not the public half of" in found["ssh: public key"].detail
    found = _by_name(
        setup_commands._doctor_ssh(
            _settings(RUNPOD_SSH_PRIVATE_KEY_PATH=str(private), RUNPOD_SSH_PUBLIC_KEY_PATH=str(public))
        )
    )
    assert found["ssh: public key"].status == "ok", found["ssh: public key"].detail


def test_a_private_key_given_as_the_public_one_stops_everything_before_a_pod_gets_it(tmp_path: Path) -> None:
    """RUNPOD_SSH_PUBLIC_KEY_PATH goes into every pod's creation env as PUBLIC_KEY, which Runpod shows to
    whoever holds the API key: the private file named there by mistake (``.pub`` forgotten) must never
    get that far, and no message may quote it."""
    from orchestrator.adapters import provider as provider_mod

    private, _ = _keypair(tmp_path, "id_a")
    body = private.read_text().splitlines()[1]
    with pytest.raises(ConfigError) as info:
        _settings(RUNPOD_SSH_PRIVATE_KEY_PATH=str(private), RUNPOD_SSH_PUBLIC_KEY_PATH=str(private)).require(
            database=True, runpod=True, ssh=True
        )
    assert "holds a private key" in str(info.value) and body not in str(info.value)
    # `orchestrator pods` and `plan` only read: they stay usable to look at the fleet.
    _settings(RUNPOD_SSH_PRIVATE_KEY_PATH=str(private), RUNPOD_SSH_PUBLIC_KEY_PATH=str(private)).require(
        database=True, runpod=True
    )
    found = _by_name(
        setup_commands._doctor_ssh(
            _settings(RUNPOD_SSH_PRIVATE_KEY_PATH=str(private), RUNPOD_SSH_PUBLIC_KEY_PATH=str(private))
        )
    )
    assert found["ssh: public key"].status == "FAIL" and body not in found["ssh: public key"].detail
    # The daemon's own start refuses too (exit 2), before its first tick could create a pod.
    rp = provider_mod.RunpodProvider(
        api_key="rpa_x", ssh_private_key_path=str(private), ssh_public_key_path=str(private), env={}
    )
    with pytest.raises(ConfigError, match="holds a private key"):
        rp.startup_warnings()
    with pytest.raises(ConfigError):
        rp._worker_env("gpu-x", {})


def test_the_daemon_refuses_a_public_key_of_another_pair_at_start(tmp_path: Path) -> None:
    from orchestrator.adapters import provider as provider_mod

    private, public = _keypair(tmp_path, "id_a")
    _, other_public = _keypair(tmp_path, "id_b")
    rp = provider_mod.RunpodProvider(
        api_key="rpa_x", ssh_private_key_path=str(private), ssh_public_key_path=str(other_public), env={}
    )
    with pytest.raises(ConfigError, match="is not the public half of"):
        rp.startup_warnings()
    good = provider_mod.RunpodProvider(
        api_key="rpa_x", ssh_private_key_path=str(private), ssh_public_key_path=str(public), env={}
    )
    assert [check for check, _ in good.startup_warnings()] == ["worker_unpinned"]  # no password login
    assert good._worker_env("gpu-x", {})["PUBLIC_KEY"] == public.read_text().strip()


class _Provider:
    def list_gpu_types(self, fresh: bool = False) -> list[Any]:
        return [SimpleNamespace(id="NVIDIA GeForce RTX 4090")]

    def resolve_gpu_type(self, name: str) -> Any:
        return SimpleNamespace(id=name)

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("url", "status"), [(REAL, "FAIL"), (EMULATOR, "warn")])
def test_doctor_without_a_storage_name(monkeypatch: pytest.MonkeyPatch, url: str, status: str) -> None:
    import orchestrator.wiring

    monkeypatch.setattr(orchestrator.wiring, "make_provider", lambda settings: _Provider())
    found = _by_name(setup_commands._doctor_runpod(_settings(RUNPOD_API_BASE_URL=url)))
    assert found["runpod: network volume"].status == status
    assert "RUNPOD_STORAGE_NAME unset" in found["runpod: network volume"].detail
    verdict = setup_commands.render_doctor(list(found.values())).splitlines()[-1]
    assert verdict.startswith("NOT READY") if status == "FAIL" else verdict.startswith("ready")


@pytest.mark.parametrize(
    "env",
    [{"WORKER_DIRS": "/opt/Reigh-Worker"}, {"AUTO_START_WORKER_PROCESS": "false"}],
    ids=["checkout-in-the-image", "started-by-hand"],
)
def test_doctor_agrees_with_run_when_no_volume_is_needed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str]
) -> None:
    """`run` accepts no RUNPOD_STORAGE_NAME when the checkout is baked into the image or the daemon starts
    no worker: doctor must not call the same configuration NOT READY."""
    import orchestrator.wiring

    monkeypatch.setattr(orchestrator.wiring, "make_provider", lambda settings: _Provider())
    real = {
        "RUNPOD_API_BASE_URL": REAL,
        "SUPABASE_URL": "https://ref.supabase.co",
        "SUPABASE_SERVICE_ROLE_KEY": "sk",
        "RUNPOD_SSH_PRIVATE_KEY_PATH": str(_keypair(tmp_path, "id_rsa")[0]),
        **env,
    }
    settings = _settings(**real)
    settings.require(database=True, runpod=True, ssh=True)  # what `run` checks: accepted
    check = _by_name(setup_commands._doctor_runpod(settings))["runpod: network volume"]
    assert check.status == "warn", check
    assert "RUNPOD_STORAGE_NAME unset" in check.detail and "outlives" in check.detail
    # The checkout on the volume (the default WORKER_DIRS) and workers we start: still a FAIL.
    default = {k: v for k, v in real.items() if k not in env}
    assert (
        _by_name(setup_commands._doctor_runpod(_settings(**default)))["runpod: network volume"].status
        == "FAIL"
    )


@pytest.mark.parametrize(("url", "status"), [(REAL, "warn"), (EMULATOR, "ok")])
def test_doctor_says_when_the_worker_follows_a_branch(
    monkeypatch: pytest.MonkeyPatch, url: str, status: str
) -> None:
    # banodoco/reigh-worker's main no longer polls the queue (its pull request 33): against Runpod, a
    # checkout that follows a branch deserves a look; pinned, it is said where.
    import orchestrator.wiring

    monkeypatch.setattr(orchestrator.wiring, "make_provider", lambda settings: _Provider())
    found = _by_name(setup_commands._doctor_runpod(_settings(RUNPOD_API_BASE_URL=url)))
    assert found["worker: version"].status == status
    assert "WORKER_GIT_COMMIT unset" in found["worker: version"].detail
    pinned = _by_name(
        setup_commands._doctor_runpod(
            _settings(RUNPOD_API_BASE_URL=url, WORKER_GIT_COMMIT="22cbba9473f19df7e01900bb3025341d7808ada3")
        )
    )
    assert (
        pinned["worker: version"].status == "ok"
        and "22cbba9473f19df7e01900bb3025341d7808ada3" in pinned["worker: version"].detail
    )


def test_a_worker_started_by_hand_is_not_called_unpinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """With AUTO_START_WORKER_PROCESS=false the daemon never touches the checkout: the operator chose the
    worker's version, so neither doctor nor the daemon's start-up warns that it follows a branch."""
    import structlog.testing

    import orchestrator.wiring
    from orchestrator.loop.daemon import Daemon

    monkeypatch.setattr(orchestrator.wiring, "make_provider", lambda settings: _Provider())
    settings = _settings(RUNPOD_API_BASE_URL=REAL, AUTO_START_WORKER_PROCESS="false")
    found = _by_name(setup_commands._doctor_runpod(settings))
    assert found["worker: version"].status == "ok"
    assert "AUTO_START_WORKER_PROCESS=false" in found["worker: version"].detail

    class Controller:
        def __init__(self, auto_start: bool) -> None:
            self.settings = SimpleNamespace(auto_start_worker_process=auto_start)
            self.provider = SimpleNamespace(
                startup_warnings=lambda: [("worker_unpinned", "follows main"), ("ssh_password_login", "x")]
            )

        def tick(self) -> None:
            pass

        def shutdown(self) -> None:
            pass

    for auto_start, expected in (
        (True, ["worker_unpinned", "ssh_password_login"]),
        (False, ["ssh_password_login"]),
    ):
        daemon = Daemon(Controller(auto_start), 3600)
        with structlog.testing.capture_logs() as logs:
            daemon.start()
            daemon.shutdown()
        assert [e["check"] for e in logs if e["event"] == "startup_warning"] == expected


def test_an_unreadable_key_is_named_with_the_uid_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The container case: the daemon runs as uid 10001, the key is root's and 0640. The tests run as
    root, who reads anything, so the refusal the kernel would give that uid is raised in its place."""
    from orchestrator.adapters import provider as provider_mod

    private, _ = _keypair(tmp_path, "id_root")
    private.chmod(0o640)

    def refused(path: Any, password: Any = None) -> paramiko.PKey:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(paramiko.PKey, "from_path", staticmethod(refused))
    monkeypatch.setattr(os, "getuid", lambda: 10001)
    settings = _settings(RUNPOD_SSH_PRIVATE_KEY_PATH=str(private))
    detail = _by_name(setup_commands._doctor_ssh(settings))["ssh: private key"].detail
    assert f"{private}: this process (uid 10001) cannot read it" in detail
    assert "mode 0640" in detail
    assert "chown" in detail and "--group-add" in detail
    assert "passphrase" not in detail
    # The daemon refuses to start with the same words (exit 2), before any pod is spawned.
    rp = provider_mod.RunpodProvider(api_key="rpa_x", ssh_private_key_path=str(private))
    with pytest.raises(ConfigError) as info:
        rp.startup_warnings()
    assert "(uid 10001) cannot read it" in str(info.value)


@pytest.mark.parametrize(
    ("url", "cap", "status"), [(REAL, "0", "warn"), (REAL, "12", "ok"), (EMULATOR, "0", "ok")]
)
def test_doctor_warns_when_nothing_but_the_gpu_count_bounds_the_spend(
    monkeypatch: pytest.MonkeyPatch, url: str, cap: str, status: str
) -> None:
    import orchestrator.wiring

    monkeypatch.setattr(orchestrator.wiring, "make_provider", lambda settings: _Provider())
    found = _by_name(setup_commands._doctor_runpod(_settings(RUNPOD_API_BASE_URL=url, MAX_HOURLY_SPEND=cap)))
    assert found["runpod: spend cap"].status == status
    assert ("MAX_HOURLY_SPEND unset" in found["runpod: spend cap"].detail) == (cap == "0")


def test_the_pod_env_carries_the_credentials_the_start_hands_over() -> None:
    """WORKER_ENV may name the Supabase URL too; the pod's env must then say what the start hands the
    worker (the setting, checked by the configuration), not an unchecked second value."""
    from orchestrator.adapters import provider as provider_mod

    rp = provider_mod.RunpodProvider(
        api_key="rpa_x",
        supabase_url="https://checked.supabase.co",
        supabase_service_role_key="service",
        pod_env_supabase_keys=True,
        env={},
    )
    env = rp._worker_env(
        "gpu-x", {"SUPABASE_URL": "https://other.example/", "WORKER_ID": "spoof", "HF_HOME": "/h"}
    )
    assert (env["SUPABASE_URL"], env["SUPABASE_SERVICE_ROLE_KEY"], env["WORKER_ID"], env["HF_HOME"]) == (
        "https://checked.supabase.co",
        "service",
        "gpu-x",
        "/h",
    )
    # The client built from the environment reads the setting as the configuration does: unset, the
    # keys go into the pod env only when the daemon does not start the workers.
    for given, expected in (
        ({}, False),
        ({"AUTO_START_WORKER_PROCESS": "false"}, True),
        ({"AUTO_START_WORKER_PROCESS": "false", "POD_ENV_SUPABASE_KEYS": "no"}, False),
        ({"POD_ENV_SUPABASE_KEYS": "true"}, True),
    ):
        assert provider_mod.RunpodProvider(api_key="rpa_x", env=given).pod_env_supabase_keys is expected, (
            given
        )
