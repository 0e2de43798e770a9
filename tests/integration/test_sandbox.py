"""Emulated pods (orchestrator.standins.sandbox): real sshd, real namespaces, checked from outside over SSH."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from orchestrator.standins.sandbox import PodSandbox
from tests.plugins.sandbox import DEFAULT_GPU, DEFAULT_VRAM_MB, SandboxFactory, SSHKeyPair, run, ssh_to


def _processes_of(box: PodSandbox, ns: str | None) -> list[str]:
    """Every live process on the host that belongs to the pod: in its PID namespace or naming its dir."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            pid_ns = os.readlink(f"/proc/{name}/ns/pid")
        except OSError:
            continue
        if stat[stat.rfind(")") + 2 :].startswith("Z") and not (ns and pid_ns == ns):
            continue
        if (ns is not None and pid_ns == ns) or str(box.dir) in cmd:
            found.append(f"{name}: {cmd}")
    return found


def _pod_ns(box: PodSandbox) -> str:
    pids = box.pids()
    assert pids, "the pod has no processes"
    return os.readlink(f"/proc/{pids[0]}/ns/pid")


def _wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def test_login_with_public_key_sees_volume_gpu_and_python(
    sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair, tmp_path: Path
) -> None:
    volume = tmp_path / "vol-a"
    volume.mkdir()
    (volume / "hello.txt").write_text("from the volume\n")
    box = sandbox_factory(volume_dir=volume, env={"WORKER_ID": "gpu-1"})

    with ssh_to(box, ssh_keypair) as client:
        assert run(client, "id -u; hostname") == (0, f"0\n{box.pod_id}\n", "")
        assert run(client, "cat /workspace/hello.txt")[1] == "from the volume\n"
        assert run(client, "mountpoint -q /workspace && echo mounted")[1] == "mounted\n"

        code, plain, _ = run(client, "nvidia-smi")
        assert code == 0 and DEFAULT_GPU in plain and f"{DEFAULT_VRAM_MB}MiB" in plain
        query = "nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader,nounits"
        assert run(client, query) == (0, f"{DEFAULT_GPU}, {DEFAULT_VRAM_MB}, 0\n", "")
        code, csv, _ = run(client, "nvidia-smi --query-gpu=memory.total --format=csv")
        assert csv == f"memory.total [MiB]\n{DEFAULT_VRAM_MB} MiB\n"
        # Where the image has them, on the PATH sshd gives a clean session.
        assert run(client, "command -v nvidia-smi")[1] == "/usr/bin/nvidia-smi\n"
        assert run(client, "python3 -c 'print(6 * 7)'")[:2] == (0, "42\n")


def test_the_volume_checkout_reaches_the_projects_interpreter_from_a_clean_session(
    sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair, sim_volume: Path
) -> None:
    """How the client starts the simulated worker: `python headless.py` in the checkout, after its venv."""
    box = sandbox_factory(volume_dir=sim_volume)
    with ssh_to(box, ssh_keypair) as client:
        command = (
            "cd /workspace/reigh/Headless-Wan2GP && . venv/bin/activate && "
            "python -c 'import orchestrator.standins.worker, sys; print(sys.prefix)'"
        )
        code, out, err = run(client, f"bash -c {shlex.quote(command)}")
        assert code == 0, err
        assert out.strip() != "/usr"  # the project's interpreter, not the pod's


def test_pods_share_their_volume_and_nothing_else(
    sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair, tmp_path: Path
) -> None:
    vol1, vol2 = tmp_path / "vol1", tmp_path / "vol2"
    vol1.mkdir()
    vol2.mkdir()
    a = sandbox_factory(volume_dir=vol1)
    b = sandbox_factory(volume_dir=vol1)
    c = sandbox_factory(volume_dir=vol2)

    with ssh_to(a, ssh_keypair) as ca, ssh_to(b, ssh_keypair) as cb, ssh_to(c, ssh_keypair) as cc:
        assert (
            run(ca, "echo written-by-a > /workspace/shared.txt; echo a > /tmp/a.txt; echo a > /root/a.txt")[0]
            == 0
        )
        assert run(cb, "cat /workspace/shared.txt")[1] == "written-by-a\n"
        assert (vol1 / "shared.txt").read_text() == "written-by-a\n"
        # Another volume, another /workspace.
        assert run(cc, "ls -A /workspace")[1] == ""
        # /tmp and root's home are the pod's own.
        assert run(cb, "ls /tmp/a.txt /root/a.txt 2>&1 >/dev/null | wc -l")[1].strip() == "2"
        assert run(ca, "cat /tmp/a.txt /root/a.txt")[1] == "a\na\n"
        assert not Path("/tmp/a.txt").exists() and not Path("/root/a.txt").exists()
        # Each pod sees only its own processes: PID 1 is its start script.
        code, ps, _ = run(cb, "ps -e -o pid=,args=")
        assert code == 0 and len(ps.splitlines()) < 12, ps
        assert any(
            line.split(None, 1) == ["1", "/bin/bash /etc/sim-pod/start.sh"] for line in ps.splitlines()
        ), ps


def test_stop_ends_every_process_including_a_nohup_worker(
    sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair
) -> None:
    box = sandbox_factory()
    ns = _pod_ns(box)
    with ssh_to(box, ssh_keypair) as client:
        assert run(client, "nohup sleep 600 >/dev/null 2>&1 & echo $!")[0] == 0
    _wait_for(lambda: any("sleep 600" in line for line in _processes_of(box, ns)), what="the nohup sleep")

    box.stop()

    assert _processes_of(box, ns) == []
    assert not box.alive and not box.ready()
    box.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", box.port), timeout=1).close()


def test_ssh_refuse_accepts_no_connection(sandbox_factory: SandboxFactory) -> None:
    box = sandbox_factory(ssh_refuse=True)
    assert box.alive
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", box.port), timeout=1).close()
    assert not box.ready()
    ns = _pod_ns(box)
    box.stop()
    assert _processes_of(box, ns) == []


def test_host_keys_differ_per_pod_and_are_the_pods_own(
    sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair
) -> None:
    a, b = sandbox_factory(), sandbox_factory()
    keys = []
    for box in (a, b):
        with ssh_to(box, ssh_keypair) as client:  # pins the key from the pod's state dir
            transport = client.get_transport()
            assert transport is not None
            keys.append(transport.get_remote_server_key().get_fingerprint())
    assert keys[0] != keys[1]


def test_a_wrong_key_is_refused(
    sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair, tmp_path: Path
) -> None:
    from tests.plugins.sandbox import generate_keypair

    other = generate_keypair(tmp_path, "other")
    box = sandbox_factory()
    with pytest.raises(paramiko.AuthenticationException):
        ssh_to(box, other)


def test_crash_and_hang_the_worker_process(sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair) -> None:
    box = sandbox_factory()
    assert not box.crash_worker() and not box.hang_worker()
    # Any process whose command line names the simulated worker's module counts as the worker.
    start = "nohup python3 -c 'import time; time.sleep(600)' orchestrator.standins.worker >/dev/null 2>&1 &"
    with ssh_to(box, ssh_keypair) as client:
        run(client, start)
        first = _wait_for(box.worker_pids, what="the first worker")
        assert box.hang_worker()
        _wait_for(
            lambda: Path(f"/proc/{first[0]}/stat").read_text().split(") ")[1].startswith("T"), what="SIGSTOP"
        )
        assert box.resume_worker()
        _wait_for(
            lambda: not Path(f"/proc/{first[0]}/stat").read_text().split(") ")[1].startswith("T"),
            what="SIGCONT",
        )
        assert box.hang_worker()
        assert box.crash_worker()
        _wait_for(lambda: not box.worker_pids(), what="the worker to die")
        assert box.alive and box.ready()


def test_pods_die_with_the_process_that_started_them(tmp_path: Path, ssh_keypair: SSHKeyPair) -> None:
    """Even a SIGKILLed emulator (no atexit) leaves no pod behind: the lifeline pipe ends them."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from orchestrator.standins.sandbox import PodSandbox
        box = PodSandbox("orphan", env={{"PUBLIC_KEY": {ssh_keypair.public_key!r}}}, volume_dir=None,
                         mount_path="/workspace", gpu_name="x", vram_mb=1, state_dir=Path({str(tmp_path)!r}))
        box.start()
        while not box.ready():
            time.sleep(0.01)
        print(box.pids()[0], flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        while not line.strip().isdigit():  # skip the log lines
            assert line, "the child exited"
            line = proc.stdout.readline()
        init = int(line)
        ns = os.readlink(f"/proc/{init}/ns/pid")
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def gone() -> bool:
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    if os.readlink(f"/proc/{name}/ns/pid") == ns:
                        return False
                except OSError:
                    continue
        return True

    _wait_for(gone, what="the orphaned pod to end")


# --- unprivileged mode -------------------------------------------------------------------------------

_USERNS_SCRIPT = """
import json, sys
from pathlib import Path
from orchestrator.standins.sandbox import PodSandbox, detect_mode
box = PodSandbox("userpod", env={"PUBLIC_KEY": sys.argv[1], "GREETING": "hi there"},
                 volume_dir=Path(sys.argv[2]), mount_path="/workspace", gpu_name="NVIDIA RTX A4000",
                 vram_mb=16376, state_dir=Path(sys.argv[3]))
box.start()
import time
deadline = time.monotonic() + 20
while not box.ready() and box.alive and time.monotonic() < deadline:
    time.sleep(0.02)
print(json.dumps({"mode": detect_mode(), "port": box.port, "ready": box.ready(), "dir": str(box.dir),
                  "host_key": str(box.host_key_pub)}), flush=True)
sys.stdin.readline()  # the test says when to stop
box.stop()
print(json.dumps({"left": box.pids(), "alive": box.alive}), flush=True)
"""


def _unprivileged_runner() -> list[str]:
    """How to run Python as an ordinary user: ourselves if we are one, else `runuser` to one."""
    if os.geteuid() != 0:
        return [sys.executable]
    import pwd

    user = next(u for u in ("postgres", "nobody") if _has_user(u))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/python{version}", "/usr/bin/python3"):
        probe = ["runuser", "-u", user, "--", python, "-c", "import sys; print(sys.version_info[:2])"]
        res = subprocess.run(probe, capture_output=True, text=True, cwd="/", check=False)
        if res.returncode == 0 and res.stdout.strip() == str(sys.version_info[:2]):
            return ["runuser", "-u", user, "--", python]
    raise AssertionError(f"no Python {version} that {user} ({pwd.getpwnam(user).pw_uid}) may run")


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def _reachable_by_others(path: Path) -> Iterator[None]:
    """Let an ordinary user import from ``path`` (the checkout): a clone made in a private directory
    (``mktemp -d`` makes one 0700) is out of its reach. Adds search permission (o+x) to the directories
    above it that lack it, and to ``path`` listing too (o+rx: Python's importer lists a path entry to find
    a package in it); restores them afterwards."""
    changed: list[tuple[Path, int]] = []
    target = path.resolve()
    try:
        for d in [*reversed(target.parents), target]:
            mode = stat.S_IMODE(d.stat().st_mode)
            wanted = mode | stat.S_IXOTH | (stat.S_IROTH if d == target else 0)
            if wanted != mode:
                d.chmod(wanted)
                changed.append((d, mode))
        yield
    finally:
        for d, mode in reversed(changed):
            d.chmod(mode)


def test_works_as_an_ordinary_user_in_a_user_namespace(ssh_keypair: SSHKeyPair) -> None:
    checkout = Path(__file__).resolve().parents[2]
    if os.geteuid() != 0:
        _works_as_an_ordinary_user(ssh_keypair)
        return
    with _reachable_by_others(checkout):
        _works_as_an_ordinary_user(ssh_keypair)


def _works_as_an_ordinary_user(ssh_keypair: SSHKeyPair) -> None:
    import json
    import shutil
    import tempfile

    from tests.plugins.sandbox import ssh_connect

    runner = _unprivileged_runner()
    Path("/workspace").mkdir(exist_ok=True)  # an ordinary user cannot create the mountpoint
    base = Path(tempfile.mkdtemp(prefix="sandbox-userns-"))
    try:
        volume, state = base / "volume", base / "state"
        volume.mkdir()
        state.mkdir()
        (volume / "f.txt").write_text("shared\n")
        if os.geteuid() == 0:
            owner = runner[2]
            shutil.chown(base, owner)
            for p in (volume, state, volume / "f.txt"):
                shutil.chown(p, owner)
        env = dict(os.environ)
        site = [p for p in sys.path if p.endswith("site-packages")]
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), *site])
        cmd = [*runner, "-c", _USERNS_SCRIPT, ssh_keypair.public_key, str(volume), str(state)]
        with subprocess.Popen(
            cmd,
            env=env,
            cwd="/",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            try:
                line = proc.stdout.readline()
                while line and not line.startswith("{"):
                    line = proc.stdout.readline()
                assert line, proc.stderr.read()
                info = json.loads(line)
                expected_mode = "userns" if os.geteuid() == 0 else detect_mode_for_test()
                assert info["mode"] == expected_mode and info["ready"], info
                with ssh_connect(info["port"], Path(info["host_key"]), ssh_keypair) as client:
                    assert run(client, "id -un")[1] == "root\n"
                    # The pod's variables are PID 1's, readable by root, and not the session's.
                    assert run(client, 'cat /workspace/f.txt; echo "[$GREETING]"')[1] == "shared\n[]\n"
                    code, environ, err = run(client, "cat /proc/1/environ")
                    assert code == 0 and "GREETING=hi there" in environ.split("\0"), err
                    assert (
                        run(client, "command -v nvidia-smi python3")[1]
                        == "/usr/bin/nvidia-smi\n/usr/bin/python3\n"
                    )
                    query = "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits"
                    assert run(client, query)[1] == "NVIDIA RTX A4000, 16376\n"
                    assert run(client, "nohup sleep 600 >/dev/null 2>&1 &")[0] == 0
                proc.stdin.write("stop\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
                while line and not line.startswith("{"):
                    line = proc.stdout.readline()
                assert json.loads(line) == {"left": [], "alive": False}
            finally:
                proc.stdin.close()
                proc.kill()
                proc.stdout.close()
                proc.stderr.close()
        assert not any("sleep 600" in _cmd_of(p) and str(base) in _cmd_of(p) for p in os.listdir("/proc"))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _cmd_of(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def detect_mode_for_test() -> str:
    from orchestrator.standins.sandbox import detect_mode

    return detect_mode()


@pytest.mark.parametrize("mount_path", ["/runpod-volume", "/tmp/data", "/root/data"])
def test_the_volume_appears_at_any_mount_path(
    mount_path: str, sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair, tmp_path: Path
) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "f.txt").write_text("here\n")
    box = sandbox_factory(volume_dir=volume, mount_path=mount_path)
    with ssh_to(box, ssh_keypair) as client:
        assert run(client, f"cat {mount_path}/f.txt")[1] == "here\n"
    box.stop()
    if not mount_path.startswith(("/tmp/", "/root/")):
        Path(mount_path).rmdir()  # the test's own mountpoint on the host, empty again
