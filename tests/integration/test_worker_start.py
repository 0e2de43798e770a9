"""The worker starts on an emulated Runpod pod with exactly the credentials of the settings.

Parts: the Runpod emulator (``tests/plugins/emulator.py``) whose pods are real sshd sandboxes built
like Runpod's official image (``orchestrator/standins/sandbox.py``: the pod's variables live in PID 1, SSH
sessions get sshd's clean environment, apt's lists are empty), the simulated worker laid out on the
emulated network volume, and the daemon's own wiring (``config.load_settings`` ->
``wiring.make_provider``). The test drives spawn -> ``check_and_initialize_worker`` ->
``start_worker_process`` and then reads, as root, what the worker process received:
``/proc/<pid>/cmdline`` and ``/proc/<pid>/environ``. It relies on nothing a session would inherit.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest
from structlog.testing import capture_logs

from orchestrator.adapters.runpod.base import RetryPolicy
from orchestrator.adapters.worker_recipe import WorkerStart
from orchestrator.core import config
from orchestrator.wiring import make_provider
from tests.e2e.conftest import wait_until
from tests.plugins.emulator import TEST_API_KEY

FAST_RETRY = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05, max_rate_limit_wait=5.0, max_total=20.0)

# The settings hold what a shell would mangle if it ever saw them: quotes, $, backticks,
# backslashes, spaces, tabs, newlines.
URL = 'http://127.0.0.1:9/it\'s "quoted" $HOME `id` \\back\\slash\nnext line'
ANON = "anon 'single' \"double\" $(touch /tmp/pwned-worker-start) ${PATH} \\ \t tab\nsecond line"
SERVICE = "svc-role \\\\ '\" $USER `whoami` ;rm -rf /nonexistent\n\n  after two newlines"
EXTRA = {"HF_HOME": "/workspace/hf 'cache' $HOME", "WORKER_NOTE": 'line1\nline2 "q"'}
SECRETS = (ANON, SERVICE)


def settings_for(emulator: Any, keypair: Any, tmp_path: Path, **values: str) -> config.Settings:
    """The settings an operator would write for this emulator, through the real parser."""
    pub = tmp_path / "id_ed25519.pub"
    pub.write_text(keypair.public_key + "\n")
    env = {
        "RUNPOD_API_KEY": TEST_API_KEY,
        "RUNPOD_API_BASE_URL": emulator.base_url,
        "RUNPOD_STORAGE_NAME": "workspace",
        "RUNPOD_SSH_PRIVATE_KEY_PATH": str(keypair.private_key_path),
        "RUNPOD_SSH_PUBLIC_KEY_PATH": str(pub),
        "SUPABASE_URL": URL,
        "SUPABASE_ANON_KEY": ANON,
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE,
        "WORKER_ENV": json.dumps(EXTRA),
    }
    env.update(values)
    return config.load_settings(env, env_file=None)


def initialize(provider: Any, worker_id: str, runpod_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    res: dict[str, Any] = {}
    while time.monotonic() < deadline:
        res = provider.check_and_initialize_worker(worker_id, runpod_id)
        assert res["status"] in ("spawning", "active"), res
        if res["status"] == "active":
            return res
        time.sleep(0.05)
    raise AssertionError(f"pod {runpod_id} not initialized within {timeout}s; last answer: {res}")


def _read_nul(path: str) -> list[bytes]:
    data = Path(path).read_bytes()
    return data.split(b"\0")[:-1] if data.endswith(b"\0") else data.split(b"\0")


def caught_worker(
    box: Any, *, marker: bytes = b"--supabase-access-token", timeout: float = 60.0
) -> tuple[list[str], dict[str, str]]:
    """The first process of the pod started with the worker's arguments, stopped (SIGSTOP) the moment it
    is seen so that nothing it does afterwards matters; its argv and environment, as the kernel holds them."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in box.pids():
            try:
                argv = _read_nul(f"/proc/{pid}/cmdline")
            except OSError:
                continue
            if marker not in argv:
                continue
            try:
                os.kill(pid, signal.SIGSTOP)
                argv = _read_nul(f"/proc/{pid}/cmdline")
                environ = _read_nul(f"/proc/{pid}/environ")
            except (OSError, ProcessLookupError):
                continue
            env = dict(item.split(b"=", 1) for item in environ if b"=" in item)
            return [a.decode() for a in argv], {k.decode(): v.decode() for k, v in env.items()}
        if time.monotonic() > deadline:
            raise AssertionError(f"no worker process appeared in pod {box.pod_id} within {timeout}s")
        time.sleep(0.01)


def sandbox_of(emulator: Any, runpod_id: str) -> Any:
    box = emulator.state.pods[runpod_id].sandbox
    assert box is not None, f"pod {runpod_id} has no running container"
    return box


def leaks(blob: bytes, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    """Every secret, or any line of one long enough to recognise, found in ``blob``."""
    found = []
    for value in secrets:
        for fragment in [value, *(line for line in value.split("\n") if len(line.strip()) >= 8)]:
            if fragment.encode() in blob:
                found.append(repr(fragment))
    return found


def strings(value: Any) -> Iterator[str]:
    """Every string inside a log event (keys and values, nested), as it was handed to the logger."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, list | tuple | set):
        for v in value:
            yield from strings(v)
    elif value is not None:
        yield str(value)


@pytest.fixture
def sent_commands(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every command text sent over any SSH channel of this process, as paramiko sends it."""
    sent: list[str] = []
    original = paramiko.Channel.exec_command

    def spy(self: paramiko.Channel, command: str | bytes) -> None:
        sent.append(command.decode() if isinstance(command, bytes) else command)
        original(self, command)

    monkeypatch.setattr(paramiko.Channel, "exec_command", spy)
    yield sent


def test_the_worker_receives_the_settings_byte_for_byte_and_they_leak_nowhere(
    emulator: Any, ssh_keypair: Any, tmp_path: Path, sent_commands: list[str]
) -> None:
    worker_id = "gpu-20250912_101500-1a2b3c4d"
    # The pod is created by a daemon whose keys were then rotated; the one that starts the worker (after
    # a restart, say) holds the new ones, and those are what the worker must get.
    before = settings_for(
        emulator,
        ssh_keypair,
        tmp_path,
        SUPABASE_SERVICE_ROLE_KEY="stale-service-role-key",
        SUPABASE_ANON_KEY="stale-anon-key",
    )
    settings = settings_for(emulator, ssh_keypair, tmp_path)
    assert (settings.supabase_url, settings.supabase_anon_key, settings.supabase_service_role_key) == (
        URL,
        ANON,
        SERVICE,
    )
    with (
        capture_logs() as logs,
        make_provider(before, retry=FAST_RETRY) as spawner,
        make_provider(settings, retry=FAST_RETRY) as provider,
    ):
        spawned = spawner.spawn_worker(worker_id, before.worker_env)
        runpod_id = spawned["runpod_id"]
        ready = initialize(provider, worker_id, runpod_id)
        started = time.monotonic()
        assert (
            provider.start_worker_process(
                runpod_id, worker_id, expected_fingerprint=ready["host_key_fingerprint"]
            )
            is True
        )
        elapsed = time.monotonic() - started
        argv, env = caught_worker(sandbox_of(emulator, runpod_id))
        volume = emulator.state.volumes[spawned["network_volume_id"]].path
        log = (volume / "reigh" / "logs" / f"{worker_id}.log").read_text()
        assert provider.terminate_worker(runpod_id) is True
    assert elapsed < 10, (
        f"the start command must return at once, not after the pull and the apt step ({elapsed:.1f}s)"
    )

    # The original orchestrator's arguments (banodoco/reigh-worker-orchestrator), each value a setting's,
    # worker.py's memory profile (WORKER_WGP_PROFILE), then the claim poll (WORKER_POLL_INTERVAL_SEC),
    # which the original left at the worker's 10 s.
    assert argv[-14:] == [
        "--db-type", "supabase",
        "--supabase-url", URL,
        "--supabase-anon-key", SERVICE,  # Headless-Wan2GP's client takes this flag first: never anon
        "--supabase-access-token", SERVICE,
        "--worker", worker_id,
        "--wgp-profile", str(WorkerStart.wgp_profile),
        "--poll-interval", str(WorkerStart.poll_interval),
    ]  # fmt: skip
    # The same values in its environment (the real worker reads SUPABASE_SERVICE_ROLE_KEY and the others
    # from there too), with the pod's own variables: WORKER_ENV and Runpod's.
    assert (env["SUPABASE_URL"], env["SUPABASE_ANON_KEY"], env["SUPABASE_SERVICE_ROLE_KEY"]) == (
        URL,
        ANON,
        SERVICE,
    )
    assert env["WORKER_ID"] == worker_id
    for name, value in EXTRA.items():
        assert env[name] == value, name
    assert env["RUNPOD_POD_ID"] == runpod_id
    assert "stale-service-role-key" not in env.values() and "stale-anon-key" not in env.values()

    # The original's start steps ran in the original's order, detached, before the worker started. On a
    # fresh Runpod image `apt-get install` only works after `apt-get update`.
    # The entry is worker.py when the checkout has it (upstream's name since 2025-08), else headless.py.
    entry = "worker.py" if (volume / "reigh" / "Headless-Wan2GP" / "worker.py").exists() else "headless.py"
    steps = [
        "git pull origin main",
        "activating venv",
        "apt-get update: ok",
        "apt-get install: ok",
        f"exec python {entry} ",
    ]
    positions = [log.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), log

    # Nowhere else: not in any command sent over SSH, not in our log lines, not in a file on the volume.
    assert sent_commands and all(leaks(c.encode()) == [] for c in sent_commands)
    assert any(c.startswith("bash --norc --noprofile -c ") and "read -r -d" in c for c in sent_commands)
    assert leaks("\n".join(strings(logs)).encode()) == []
    assert {"runpod_pod_created", "ssh_command_result", "worker_process_started"} <= {
        e["event"] for e in logs
    }
    for path in volume.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert leaks(path.read_bytes()) == [], path
    assert not Path("/tmp/pwned-worker-start").exists()


def _pod_as_the_api_shows_it(emulator: Any, runpod_id: str) -> dict[str, Any]:
    """The pod object anyone holding the account's Runpod API key reads (GET /v2/pods/{id})."""
    r = httpx.get(
        f"{emulator.base_url}/v2/pods/{runpod_id}",
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.parametrize(("asked", "api"), [(False, "rest"), (False, "graphql"), (True, "rest")])
def test_the_supabase_keys_reach_the_pods_creation_env_only_when_asked(
    emulator: Any, ssh_keypair: Any, tmp_path: Path, asked: bool, api: str
) -> None:
    """Runpod shows a pod's creation env to every holder of the API key; the worker the daemon starts
    gets the keys over SSH, so by default they are not there, over either transport."""
    settings = settings_for(
        emulator, ssh_keypair, tmp_path, POD_ENV_SUPABASE_KEYS=str(asked).lower(), RUNPOD_API=api
    )
    worker_id = f"gpu-20250912_101500-keys{int(asked)}{api[:3]}"
    with make_provider(settings, retry=FAST_RETRY) as provider:
        runpod_id = provider.spawn_worker(worker_id, settings.worker_env)["runpod_id"]
        try:
            shown = _pod_as_the_api_shows_it(emulator, runpod_id)
        finally:
            assert provider.terminate_worker(runpod_id) is True
    env = shown["env"]
    assert env["WORKER_ID"] == worker_id and env["SUPABASE_URL"] == URL
    assert {k: env[k] for k in EXTRA} == EXTRA
    text = json.dumps(shown)
    if asked:
        assert (env["SUPABASE_SERVICE_ROLE_KEY"], env["SUPABASE_ANON_KEY"]) == (SERVICE, ANON)
    else:
        assert "SUPABASE_SERVICE_ROLE_KEY" not in env and "SUPABASE_ANON_KEY" not in env
        assert json.dumps(SERVICE)[1:-1] not in text and json.dumps(ANON)[1:-1] not in text


def test_credentials_given_only_in_worker_env_start_the_worker(
    emulator: Any, ssh_keypair: Any, tmp_path: Path
) -> None:
    """A daemon on DATABASE_URL may leave SUPABASE_URL and the keys unset and give them to the pods in
    WORKER_ENV, as its configuration check allows: the start hands the worker those over SSH."""
    given = {"SUPABASE_URL": URL, "SUPABASE_SERVICE_ROLE_KEY": SERVICE, **EXTRA}
    settings = settings_for(
        emulator,
        ssh_keypair,
        tmp_path,
        SUPABASE_URL="",
        SUPABASE_SERVICE_ROLE_KEY="",
        SUPABASE_ANON_KEY="",
        WORKER_ENV=json.dumps(given),
    )
    assert (settings.supabase_url, settings.supabase_service_role_key) == (None, None)
    worker_id = "gpu-20250912_101500-envonly1"
    with make_provider(settings, retry=FAST_RETRY) as provider:
        runpod_id = provider.spawn_worker(worker_id, settings.worker_env)["runpod_id"]
        try:
            ready = initialize(provider, worker_id, runpod_id)
            assert provider.start_worker_process(
                runpod_id, worker_id, expected_fingerprint=ready["host_key_fingerprint"]
            )
            argv, env = caught_worker(sandbox_of(emulator, runpod_id))
        finally:
            assert provider.terminate_worker(runpod_id) is True
    assert argv[argv.index("--supabase-url") + 1] == URL
    assert argv[argv.index("--supabase-access-token") + 1] == SERVICE
    assert (env["SUPABASE_URL"], env["SUPABASE_SERVICE_ROLE_KEY"]) == (URL, SERVICE)


def test_the_original_ssh_pattern_on_an_emulated_pod(emulator: Any, ssh_keypair: Any, tmp_path: Path) -> None:
    """The original's documented usage: get_ssh_client(id); connect(); execute_command(...); disconnect()."""
    with make_provider(settings_for(emulator, ssh_keypair, tmp_path), retry=FAST_RETRY) as provider:
        spawned = provider.spawn_worker("gpu-original-pattern")
        initialize(provider, "gpu-original-pattern", spawned["runpod_id"])
        ssh_client = provider.get_ssh_client(spawned["runpod_id"])
        ssh_client.connect()
        exit_code, stdout, stderr = ssh_client.execute_command("echo hello; echo oops >&2; exit 3")
        ssh_client.disconnect()
        assert (exit_code, stdout, stderr) == (3, "hello\n", "oops\n")
        assert not ssh_client.connected
        assert provider.terminate_worker(spawned["runpod_id"]) is True


def test_a_second_start_of_a_running_worker_starts_nothing(
    emulator: Any, ssh_keypair: Any, tmp_path: Path
) -> None:
    """Two worker processes on one GPU would both load the model and claim tasks: whatever asks for a
    second start of a running worker (a retry, a decision made on an old row), the pod starts none."""
    worker_id = "gpu-20250912_101500-5e6f7a8b"
    settings = settings_for(emulator, ssh_keypair, tmp_path)
    with capture_logs() as logs, make_provider(settings, retry=FAST_RETRY) as provider:
        runpod_id = provider.spawn_worker(worker_id, settings.worker_env)["runpod_id"]
        ready = initialize(provider, worker_id, runpod_id)
        pinned = ready["host_key_fingerprint"]
        assert provider.start_worker_process(runpod_id, worker_id, expected_fingerprint=pinned) is True
        box = sandbox_of(emulator, runpod_id)

        def workers_running() -> list[int]:
            found = []
            for pid in box.pids():
                try:
                    argv = _read_nul(f"/proc/{pid}/cmdline")
                except OSError:
                    continue
                if b"--supabase-access-token" in argv:
                    found.append(pid)
            return found

        wait_until(workers_running, 60, "the worker process")
        # Asked again while it runs: reported as a success (a process runs), and nothing started.
        assert provider.start_worker_process(runpod_id, worker_id, expected_fingerprint=pinned) is True
        first = workers_running()
        assert len(first) == 1, first
        # Once it is gone (a crash), a start starts it again.
        os.kill(first[0], signal.SIGKILL)
        wait_until(lambda: not workers_running(), 30, "the worker process gone")
        assert provider.start_worker_process(runpod_id, worker_id, expected_fingerprint=pinned) is True
        again = wait_until(workers_running, 60, "the worker process started again")
        assert len(again) == 1 and again != first, again
        assert provider.terminate_worker(runpod_id) is True
    events = [e["event"] for e in logs if e["event"].startswith("worker_")]
    assert events.count("worker_process_started") == 2 and events.count("worker_already_running") == 1, events


def test_the_start_watch_sees_the_worker_run_and_then_end(
    emulator: Any, ssh_keypair: Any, tmp_path: Path
) -> None:
    """Over real SSH, on a pod whose variables (TMPDIR among them) live only in PID 1: the watch finds
    the start's lock where the start put it, says the worker runs while it does, and says it ended,
    with the end of its log, once it and its heartbeat guardian are gone."""
    worker_id = "gpu-20250912_101500-9c0d1e2f"
    settings = settings_for(emulator, ssh_keypair, tmp_path)
    with make_provider(settings, retry=FAST_RETRY) as provider:
        runpod_id = provider.spawn_worker(worker_id, settings.worker_env)["runpod_id"]
        pinned = initialize(provider, worker_id, runpod_id)["host_key_fingerprint"]
        # Not started yet: no lock, so nothing is known (never "ended").
        before = provider.watch_start(runpod_id, worker_id, expected_fingerprint=pinned)
        assert before.status == "unknown" and "no lock file" in before.detail
        assert provider.start_worker_process(runpod_id, worker_id, expected_fingerprint=pinned) is True
        box = sandbox_of(emulator, runpod_id)
        caught_worker(box)  # stopped as it appears: it still holds the start's lock
        running = provider.watch_start(runpod_id, worker_id, expected_fingerprint=pinned)
        assert (running.status, running.phase, running.tail) == ("running", "worker", ""), running
        # A worker that printed its credentials before it died: the tail that comes back masks them.
        log = Path(box.volume_dir) / "reigh" / "logs" / f"{worker_id}.log"
        with log.open("a") as f:
            f.write(f"worker: connecting with {SERVICE}\n")
        for pid in box.pids():
            try:
                if b"--supabase-access-token" in _read_nul(f"/proc/{pid}/cmdline"):
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                continue

        def ended() -> Any:
            seen = provider.watch_start(runpod_id, worker_id, expected_fingerprint=pinned)
            return seen if seen.status == "exited" else None

        seen = wait_until(ended, 60, "the watch to see the start ended")
        assert seen.phase == "worker" and "orchestrator: exec python" in seen.tail
        assert "worker: connecting with [REDACTED]" in seen.tail and not leaks(seen.tail.encode())
        assert provider.terminate_worker(runpod_id) is True
