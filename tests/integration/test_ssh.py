"""SSHClient against real sshd: host key pinning, failure kinds, deadlines; hostile values end to end.

Parts: a plain OpenSSH server started here (so a host key can change on the same port), the
emulator's pod sandboxes (``tests/plugins/sandbox.py``), and the emulator itself over both
transports for values that travel API -> pod env -> SSH session -> worker command line.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest

from orchestrator.adapters.runpod.base import Pod
from orchestrator.adapters.ssh import SSHClient, fingerprint
from orchestrator.adapters.worker_recipe import WorkerStart, build_start_command, credential_records
from orchestrator.core import errors

SSHD = "/usr/sbin/sshd"


# --- a plain sshd whose host key we control --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sshd:
    """``/usr/sbin/sshd -D`` on a loopback port with its own host key and one authorized key."""

    root: Path
    authorized_key: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host_key_path(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    def new_host_key(self) -> None:
        for p in (self.host_key_path, Path(f"{self.host_key_path}.pub")):
            p.unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key_path)], check=True
        )

    def host_fingerprint(self) -> str:
        return fingerprint(paramiko.PKey.from_path(str(self.host_key_path)))

    def start(self) -> Sshd:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.host_key_path.exists():
            self.new_host_key()
        auth = self.root / "authorized_keys"
        auth.write_text(self.authorized_key + "\n")
        auth.chmod(0o600)
        conf = self.root / "sshd_config"
        conf.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key_path}\n"
            f"AuthorizedKeysFile {auth}\nPidFile {self.root / 'sshd.pid'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nPrintMotd no\nLogLevel ERROR\nMaxStartups 200\n"
        )
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not answer within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


@pytest.fixture
def sshd(tmp_path: Path, ssh_keypair) -> Iterator[Sshd]:  # type: ignore[no-untyped-def]
    server = Sshd(tmp_path / "sshd", ssh_keypair.public_key).start()
    try:
        yield server
    finally:
        server.stop()


def _client(port: int, keypair, **kw) -> SSHClient:  # type: ignore[no-untyped-def]
    kw.setdefault("connect_timeout", 5.0)
    return SSHClient("127.0.0.1", port, "root", private_key_path=keypair.private_key_path, **kw)


# --- host keys -----------------------------------------------------------------------------------------


def test_trust_on_first_use_then_a_changed_host_key_is_refused(sshd: Sshd, ssh_keypair) -> None:  # type: ignore[no-untyped-def]
    first = _client(sshd.port, ssh_keypair)
    with first:
        assert first.execute("echo hi") == (0, "hi\n", "")
        seen = first.host_key_fingerprint
    assert seen == sshd.host_fingerprint() and seen.startswith("SHA256:")

    # Same key, pinned: accepted.
    with _client(sshd.port, ssh_keypair, expected_fingerprint=seen) as again:
        assert again.execute("true")[0] == 0

    # The "pod" comes back on the same address with another host key: refused before auth.
    sshd.stop()
    sshd.new_host_key()
    sshd.start()
    assert sshd.host_fingerprint() != seen
    with pytest.raises(errors.SSHHostKeyChanged, match=r"host key of \[?127.0.0.1.* changed") as info:
        _client(sshd.port, ssh_keypair, expected_fingerprint=seen).connect()
    assert seen in str(info.value) and sshd.host_fingerprint() in str(info.value)
    # The client that trusted the first key keeps it pinned when it reconnects.
    with pytest.raises(errors.SSHHostKeyChanged):
        first.connect()


# --- failures told apart --------------------------------------------------------------------------------


def test_refused_when_nothing_listens(ssh_keypair) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.SSHRefused, match="refused"):
        _client(free_port(), ssh_keypair).connect()


def test_auth_failed_with_a_key_the_pod_does_not_know(sshd: Sshd, tmp_path: Path) -> None:
    from tests.plugins.sandbox import generate_keypair

    stranger = generate_keypair(tmp_path, "stranger")
    with pytest.raises(errors.SSHAuthFailed, match="authentication"):
        _client(sshd.port, stranger).connect()


def test_timeout_when_the_port_never_speaks_ssh(ssh_keypair) -> None:  # type: ignore[no-untyped-def]
    # A listener that accepts and then says nothing: the banner never comes.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        started = time.monotonic()
        with pytest.raises(errors.SSHTimeout, match="timed out"):
            _client(listener.getsockname()[1], ssh_keypair, connect_timeout=1.0).connect()
        assert time.monotonic() - started < 5
    finally:
        stop.set()
        t.join(timeout=5)
        for c in held:
            c.close()
        listener.close()


def test_remote_command_deadline_and_streams(sshd: Sshd, ssh_keypair) -> None:  # type: ignore[no-untyped-def]
    with _client(sshd.port, ssh_keypair) as c:
        code, out, err = c.execute("echo out; echo err >&2; exit 3")
        assert (code, out, err) == (3, "out\n", "err\n")
        # Large output on both streams does not deadlock.
        code, out, err = c.execute(
            "head -c 300000 /dev/zero | tr '\\0' a; head -c 300000 /dev/zero | tr '\\0' b >&2"
        )
        assert code == 0 and len(out) == 300000 and len(err) == 300000
        started = time.monotonic()
        with pytest.raises(errors.SSHTimeout, match=r"did not finish within 0\.5s"):
            c.execute("sleep 20", timeout=0.5)
        assert time.monotonic() - started < 5


def test_a_connection_that_dies_as_a_session_opens_is_an_ssh_failure(sshd: Sshd, ssh_keypair) -> None:  # type: ignore[no-untyped-def]
    """paramiko re-raises the transport's saved error (EOFError, a socket's OSError) from open_session
    when the connection died under it; that came out raw, past the boot checks' "never raises"."""
    with _client(sshd.port, ssh_keypair) as c:
        assert c.execute("true")[0] == 0
        transport = c._client.get_transport()  # type: ignore[union-attr]

        def died(*args: object, **kwargs: object) -> None:
            raise EOFError()

        transport.open_session = died  # type: ignore[method-assign,union-attr]
        with pytest.raises(errors.SSHRefused, match=r"cannot open a session.*EOFError"):
            c.execute("true")


# --- emulated pods (sandboxes) ----------------------------------------------------------------------------


def test_sandbox_pod_refusing_ssh_is_refused(sandbox_factory, ssh_keypair) -> None:  # type: ignore[no-untyped-def]
    box = sandbox_factory(ssh_refuse=True)
    with pytest.raises(errors.SSHRefused):
        _client(box.port, ssh_keypair).connect()


def test_start_command_in_a_sandbox_keeps_hostile_values_intact(
    sandbox_factory, sim_volume, ssh_keypair
) -> None:  # type: ignore[no-untyped-def]
    """Credentials sent on the session's stdin reach the worker's argv untouched; nothing in them runs."""
    from tests.integration.test_worker_start import caught_worker

    hostile = {
        "SUPABASE_URL": 'http://x/"$(touch /tmp/pwned-ssh-test)"`id`',
        "SUPABASE_ANON_KEY": "back\\slash'quote;semicolon",
        "SUPABASE_SERVICE_ROLE_KEY": "multi\nline\tvalue",
    }
    box = sandbox_factory(volume_dir=sim_volume)
    with _client(box.port, ssh_keypair) as c:
        records = credential_records({**hostile, "WORKER_ID": "w-hostile"})
        code, out, err = c.execute(
            build_start_command("w-hostile", WorkerStart(apt_packages=())), stdin=records
        )
        assert code == 0, err
        assert out.startswith("started pid ")
        argv, env = caught_worker(box)
        assert argv[-12:] == [
            "--supabase-url", hostile["SUPABASE_URL"],
            "--supabase-anon-key", hostile["SUPABASE_SERVICE_ROLE_KEY"],
            "--supabase-access-token", hostile["SUPABASE_SERVICE_ROLE_KEY"],
            "--worker", "w-hostile",
            "--wgp-profile", str(WorkerStart.wgp_profile),
            "--poll-interval", str(WorkerStart.poll_interval),
        ]  # fmt: skip
        assert all(env[k] == v for k, v in hostile.items())
        # The sandbox's /tmp is private to the pod: look there for the canary, not on the host.
        code, out, _ = c.execute("test -e /tmp/pwned-ssh-test && echo PWNED || echo clean")
        assert out.strip() == "clean"
    assert not os.path.exists("/tmp/pwned-ssh-test")


# --- through RunpodClient and the emulator, over both transports ------------------------------------------

HOSTILE_ENV = {
    "HOSTILE_QUOTES": "double \" single ' back ` end",
    "HOSTILE_BACKSLASH": "C:\\path\\n\\\\ not-a-newline \\",
    "HOSTILE_NEWLINES": "line1\nline2\r\nline3\t",
    "HOSTILE_SUBST": "$(touch /tmp/pwned-env-test) ${HOME} `id`; rm -rf /nonexistent",
    "HOSTILE_GRAPHQL": '"}) { id } mutation { podTerminate(input: {podId: "x"}) } #',
}


@pytest.mark.parametrize("api", ["rest", "graphql"])
@pytest.mark.parametrize("worker_id", ["w;reboot", "w$(id)", "w'q", 'w"q', "w\\x", "w\nx", "w x"])
def test_hostile_worker_ids_are_refused_before_any_call(
    api: str, worker_id: str, emulator, ssh_keypair, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.test_runpod_contract import make_client

    with make_client(emulator, ssh_keypair, tmp_path, api) as client:
        with pytest.raises(errors.RunpodRequestError, match="worker id"):
            client.spawn_worker(worker_id)
        assert client.start_worker_process("abcdefghijklmn", worker_id) is False
    assert emulator.admin.pods() == []


@pytest.mark.parametrize("api", ["rest", "graphql"])
def test_hostile_env_values_arrive_intact_and_are_never_executed(
    api: str, emulator, ssh_keypair, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """WORKER_ENV values travel API -> the pod's init process -> the started worker's environment intact."""
    from tests.integration.test_runpod_contract import initialize, make_client
    from tests.integration.test_worker_start import caught_worker, sandbox_of

    with make_client(
        emulator, ssh_keypair, tmp_path, api, supabase_anon_key='anon"key\\with\nnewline'
    ) as client:
        worker_id = f"gpu-hostile-{api}"
        spawned = client.spawn_worker(worker_id, HOSTILE_ENV)
        runpod_id = spawned["runpod_id"]
        # The API stored exactly what we sent.
        stored = client.get_pod(runpod_id)
        assert stored is not None
        for k, v in HOSTILE_ENV.items():
            assert stored.env.get(k) == v, k
        initialize(client, worker_id, runpod_id)
        assert client.start_worker_process(runpod_id, worker_id) is True
        argv, env = caught_worker(sandbox_of(emulator, runpod_id))
        for k, v in HOSTILE_ENV.items():
            assert env.get(k) == v, k
        assert env["SUPABASE_ANON_KEY"] == 'anon"key\\with\nnewline'
        # The anon-key flag carries the service-role key (Headless-Wan2GP's client takes the flag first).
        flag = argv[argv.index("--supabase-anon-key") + 1]
        assert flag == argv[argv.index("--supabase-access-token") + 1] and flag
        _code, out, _ = client.execute_command_on_worker(
            runpod_id, "test -e /tmp/pwned-env-test && echo PWNED || echo clean"
        )
        assert out.strip() == "clean"
        assert client.terminate_worker(runpod_id) is True


@pytest.mark.parametrize("api", ["rest", "graphql"])
def test_pinned_host_key_mismatch_is_refused_through_the_client(
    api: str, emulator, ssh_keypair, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.test_runpod_contract import initialize, make_client

    with make_client(emulator, ssh_keypair, tmp_path, api) as client:
        spawned = client.spawn_worker(f"gpu-pin-{api}")
        runpod_id = spawned["runpod_id"]
        fp = initialize(client, spawned["worker_id"], runpod_id)["host_key_fingerprint"]

        # The fingerprint the daemon recorded in workers.metadata is accepted on a later connection...
        with make_client(emulator, ssh_keypair, tmp_path, api) as later:
            later.remember_host_key(runpod_id, fp)
            assert later.execute_command_on_worker(runpod_id, "true")[0] == 0
            assert later.check_and_initialize_worker(spawned["worker_id"], runpod_id)["status"] == "active"

        # ...and a different one (the pod's key changed, or someone is in the middle) is refused.
        other = "SHA256:" + "A" * 43
        res = client.check_and_initialize_worker(spawned["worker_id"], runpod_id, expected_fingerprint=other)
        assert res["status"] == "error" and res["ssh_error"] == "host_key_changed", res
        assert (
            client.start_worker_process(runpod_id, spawned["worker_id"], expected_fingerprint=other) is False
        )
        with make_client(emulator, ssh_keypair, tmp_path, api) as wary:
            wary.remember_host_key(runpod_id, other)
            with pytest.raises(errors.SSHHostKeyChanged):
                wary.get_ssh_client(runpod_id)
        assert client.terminate_worker(runpod_id) is True


def test_init_checks_name_the_failed_step_with_its_output(
    sandbox_factory, sim_volume, tmp_path: Path, ssh_keypair
) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.adapters.worker_recipe import run_init_checks

    good = sandbox_factory(volume_dir=sim_volume)
    with _client(good.port, ssh_keypair) as c:
        outcomes = run_init_checks(c, "/workspace")
        # The checkout check follows WORKER_DIRS: the first directory that exists passes...
        later = run_init_checks(c, "/workspace", dirs=("Reigh-Worker", "reigh/Headless-Wan2GP"))
        # ...and none existing fails, naming them.
        missing = run_init_checks(c, "/workspace", dirs=("Reigh-Worker", "Headless-Wan2GP"))
    assert [o.name for o in outcomes] == ["storage_mount", "headless_dir", "nvidia_smi", "python"]
    assert all(o.ok for o in outcomes)
    assert "reigh" in outcomes[0].stdout
    assert "venv" in outcomes[1].stdout and "Python 3" in outcomes[3].stdout
    assert all(o.ok for o in later) and "venv" in later[1].stdout
    assert [o.ok for o in missing] == [True, False]
    assert (
        "/workspace/Reigh-Worker, /workspace/Headless-Wan2GP: No such file or directory" in missing[1].stdout
    )

    empty = tmp_path / "volumes" / "empty"
    empty.mkdir(parents=True)
    bare = sandbox_factory(volume_dir=empty)
    with _client(bare.port, ssh_keypair) as c:
        outcomes = run_init_checks(c, "/workspace")
    assert [o.name for o in outcomes] == ["storage_mount", "headless_dir"]
    assert outcomes[0].ok and not outcomes[1].ok
    assert "No such file or directory" in outcomes[1].stdout


def test_logged_commands_and_outputs_mask_secrets(emulator, ssh_keypair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from structlog.testing import capture_logs

    from tests.integration.test_runpod_contract import initialize, make_client

    secret = "service-role-secret-value"  # make_client's SUPABASE_SERVICE_ROLE_KEY
    with capture_logs() as logs, make_client(emulator, ssh_keypair, tmp_path, "rest") as client:
        spawned = client.spawn_worker("gpu-logs")
        initialize(client, "gpu-logs", spawned["runpod_id"])
        code, out, _ = client.execute_command_on_worker(
            spawned["runpod_id"], f"echo {secret}; echo {secret} >&2"
        )
        assert code == 0 and out.count(secret) == 1  # the caller gets the real output...
        assert client.start_worker_process(spawned["runpod_id"], "gpu-logs") is True
        assert client.terminate_worker(spawned["runpod_id"]) is True
    ours = {
        "runpod_pod_created",
        "ssh_connected",
        "ssh_command_result",
        "worker_process_started",
        "runpod_pod_terminated",
    }
    assert ours <= {e["event"] for e in logs}
    assert all(e["log_level"] == "info" for e in logs if e["event"] in ours)
    # ...the log lines do not.
    assert secret not in repr(logs)
    assert any("[REDACTED]" in str(e.get("stdout", "")) for e in logs)


# --- the original's API: execute_command, and the password when no key file exists ---------------------


@dataclass
class PasswordSshd:
    """sshd accepting root's password ``runpod`` (the original's default for Runpod pods).

    Root's password lives in a private mount namespace: /etc/shadow is bind-mounted over with one line
    for root, so the host's own accounts are untouched.
    """

    root: Path
    password: str = "runpod"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PasswordSshd:
        self.root.mkdir(parents=True, exist_ok=True)
        key = self.root / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        hashed = subprocess.run(
            ["openssl", "passwd", "-6", "-stdin"],
            input=self.password,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        shadow = self.root / "shadow"
        shadow.write_text(f"root:{hashed}:19000:0:99999:7:::\n")
        shadow.chmod(0o600)
        conf = self.root / "sshd_config"
        conf.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile none\n"
            "PermitRootLogin yes\nPasswordAuthentication yes\nPubkeyAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPrintMotd no\nLogLevel ERROR\n"
        )
        script = f"mount --bind {shadow} /etc/shadow && exec {SSHD} -D -e -f {conf}"
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not answer within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def password_sshd(tmp_path: Path) -> Iterator[PasswordSshd]:
    server = PasswordSshd(tmp_path / "password-sshd").start()
    try:
        yield server
    finally:
        server.stop()


def test_the_original_usage_pattern_and_its_password_fallback(
    password_sshd: PasswordSshd, tmp_path: Path
) -> None:
    """The original: ``SSHClient(hostname, port, username, password, private_key_path)``, the key when
    its file exists, else the password; ``connect(); execute_command(cmd) -> (exit, out, err); disconnect()``."""
    ssh_client = SSHClient("127.0.0.1", password_sshd.port, "root", "runpod", str(tmp_path / "no-such-key"))
    ssh_client.connect()
    exit_code, stdout, stderr = ssh_client.execute_command("whoami; echo err >&2; exit 4")
    ssh_client.disconnect()
    assert (exit_code, stdout, stderr) == (4, "root\n", "err\n")
    assert not ssh_client.connected
    with pytest.raises(errors.SSHAuthFailed):
        SSHClient("127.0.0.1", password_sshd.port, "root", "not-the-password", timeout=5).connect()
    with pytest.raises(errors.SSHAuthFailed, match=r"no-such-key does not exist\) and no password"):
        SSHClient(
            "127.0.0.1", password_sshd.port, "root", private_key_path=str(tmp_path / "no-such-key")
        ).connect()


def _pod_at(port: int, *, password: str | None = None) -> Pod:
    return Pod(
        id="abcdefghijklmn", name="gpu-pw", desired_status="RUNNING", actual_status="RUNNING",
        ip="127.0.0.1", ssh_port=port, ssh_password=password,
    )  # fmt: skip


def test_runpod_client_logs_in_with_the_pods_password_without_a_key(
    password_sshd: PasswordSshd, ssh_keypair, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.runpod_client import RunpodClient

    # No key configured, or a key path whose file does not exist: the pod's password, "runpod" by default.
    for key_path in (None, tmp_path / "missing_key"):
        client = RunpodClient(api_key="rpa_x", ssh_private_key_path=key_path, env={})
        ssh = client.ssh_client_for(_pod_at(password_sshd.port))
        assert ssh.password == "runpod" and ssh.pkey is None
        with ssh:
            assert ssh.execute_command("echo ok") == (0, "ok\n", "")
        assert "ssh_password_login" in [check for check, _ in client.startup_warnings()]
    # A pod that reports its own password gets that one.
    assert client.ssh_client_for(_pod_at(password_sshd.port, password="p0d-pass")).password == "p0d-pass"
    # With a key file: the key, and no password unless one is configured explicitly.
    keyed = RunpodClient(api_key="rpa_x", ssh_private_key_path=ssh_keypair.private_key_path, env={})
    ssh = keyed.ssh_client_for(_pod_at(password_sshd.port))
    assert ssh.pkey is not None and ssh.password is None
    # Against Runpod itself an unpinned worker is still worth a line at start-up; pinned, nothing is.
    assert [check for check, _ in keyed.startup_warnings()] == ["worker_unpinned"]
    pinned = RunpodClient(
        api_key="rpa_x",
        ssh_private_key_path=ssh_keypair.private_key_path,
        env={},
        worker_git_commit="22cbba9473f19df7e01900bb3025341d7808ada3",
    )
    assert pinned.startup_warnings() == []


class _CountingController:
    """The daemon's view of a controller: its provider, and how many ticks it was asked for."""

    def __init__(self, provider: object) -> None:
        self.provider = provider
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1

    def shutdown(self) -> None:
        pass


def test_the_daemon_warns_once_at_start_up_when_it_has_no_key(tmp_path: Path, ssh_keypair) -> None:  # type: ignore[no-untyped-def]
    from structlog.testing import capture_logs

    from orchestrator.loop.daemon import Daemon
    from orchestrator.runpod_client import RunpodClient

    for key_path, expected in ((None, 1), (ssh_keypair.private_key_path, 0)):
        pin = {"worker_git_commit": "22cbba9473f19df7e01900bb3025341d7808ada3"}  # not the case under test
        controller = _CountingController(
            RunpodClient(api_key="rpa_x", ssh_private_key_path=key_path, env={}, **pin)
        )
        daemon = Daemon(controller, 0.05)
        with capture_logs() as logs:
            daemon.start()
            deadline = time.monotonic() + 10
            while controller.ticks < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            daemon.shutdown()
        warnings = [e for e in logs if e["event"] == "startup_warning"]
        assert len(warnings) == expected, logs
        assert controller.ticks >= 3  # the daemon runs all the same
        if expected:
            assert warnings[0]["log_level"] == "warning" and warnings[0]["check"] == "ssh_password_login"
            assert "rarely enable password login" in warnings[0]["detail"]


def test_a_key_the_daemon_cannot_use_stops_it_before_its_first_tick(tmp_path: Path) -> None:
    """A key with a passphrase is invalid configuration (exit 2). It was found after the first tick had
    run: the daemon spawned pods, then exited 2, and under systemd (no restart on 2) they billed with
    nobody to manage them."""
    from orchestrator.core import errors as core_errors
    from orchestrator.loop.daemon import Daemon
    from orchestrator.runpod_client import RunpodClient

    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(key)], check=True, timeout=30
    )

    controller = _CountingController(RunpodClient(api_key="rpa_x", ssh_private_key_path=str(key), env={}))
    daemon = Daemon(controller, 0.05)
    with pytest.raises(core_errors.ConfigError, match="passphrase"):
        daemon.start()
    # Nothing was scheduled: no tick job, no tick thread.
    assert daemon._job is None and daemon._ticker is None
    daemon.shutdown()
    assert controller.ticks == 0


def test_the_failed_workers_log_is_read_pinned_to_the_rows_host_key_whatever_this_process_remembers(
    sshd: Sshd, ssh_keypair
) -> None:  # type: ignore[no-untyped-def]
    """The log tail a failed worker's details carry is read over SSH pinned to the fingerprint its row
    recorded: a daemon restarted (or whose listing missed the pod) has no pin of its own, and a pod that
    answers with another key gets neither the connection nor our password."""
    from types import SimpleNamespace

    from orchestrator.adapters.provider import RunpodProvider
    from orchestrator.adapters.runpod.base import RUNNING, Pod

    pod = Pod("pod-1", "gpu-x", RUNNING, RUNNING, ip="127.0.0.1", ssh_port=sshd.port)
    transport = SimpleNamespace(
        name="rest", get_pod=lambda _id: pod, list_pods=lambda: [], close=lambda: None
    )
    provider = RunpodProvider(
        "rpa_test", transport=transport, ssh_private_key_path=ssh_keypair.private_key_path, env={}
    )  # type: ignore[arg-type]
    try:
        recorded = sshd.host_fingerprint()
        out = provider.log_tail("pod-1", "gpu-x", lines=5, timeout=10, expected_fingerprint=recorded)
        assert "gpu-x" in out  # tail's own words about the log file it looked for
        provider.list_pods()  # a listing without the pod: no pin of this process's own is left
        with pytest.raises(errors.SSHHostKeyChanged):
            provider.log_tail(
                "pod-1", "gpu-x", lines=5, timeout=10, expected_fingerprint="SHA256:" + "A" * 43
            )
    finally:
        provider.close()
