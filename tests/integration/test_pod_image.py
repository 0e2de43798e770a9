"""Emulated pods behave like Runpod's official image (runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04).

What a client can rely on, and must not: the pod's variables live in its init process (PID 1, the
image's start script) and are readable by root at /proc/1/environ, never in an SSH session's
environment; interactive shells get only RUNPOD_* and PATH (through /etc/rp_environment); PUBLIC_KEY
decides whether sshd runs at all; apt's lists are empty until `apt-get update`. Sources are cited in
orchestrator/standins/sandbox.py.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import socket
import time
from pathlib import Path

import pytest

from orchestrator.standins.sandbox import _cmdline
from tests.plugins.sandbox import SandboxFactory, SSHKeyPair, run, ssh_to

# What sshd gives root's sessions (Debian's --with-superuser-path), and PID 1's PATH (the CUDA base image's).
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_PATH = "/usr/local/nvidia/bin:/usr/local/cuda/bin:" + STD_PATH
# Quotes, $, backquotes, a backslash, runs of spaces and a newline: what a shell would mangle.
TRICKY = "a 'single' \"double\" $HOME $(id) `id` back\\slash  two  spaces\nsecond line\n"
SESSION_VARS = {
    "HOME",
    "LOGNAME",
    "MAIL",
    "PATH",
    "PWD",
    "SHELL",
    "SHLVL",
    "SSH_CLIENT",
    "SSH_CONNECTION",
    "USER",
    "_",
}
RUNPOD_VARS = {"RUNPOD_POD_ID", "RUNPOD_PUBLIC_IP", "RUNPOD_TCP_PORT_22", "RUNPOD_GPU_COUNT"}


def _env0(text: str) -> dict[str, str]:
    """A NUL-separated environment (``env -0``, /proc/PID/environ) as a dict."""
    return dict(item.split("=", 1) for item in text.split("\0") if item)


def _host_state() -> tuple[str | None, str]:
    """What apt in a pod must never change on the host: its ffmpeg and its dpkg database."""
    status = Path("/var/lib/dpkg/status")
    digest = hashlib.sha256(status.read_bytes()).hexdigest() if status.exists() else ""
    return shutil.which("ffmpeg"), digest


def test_the_pod_env_lives_in_pid_1_and_not_in_ssh_sessions(
    sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair
) -> None:
    env = {
        "SUPABASE_URL": "https://abc.supabase.co",
        "SUPABASE_ANON_KEY": "anon",
        "SUPABASE_SERVICE_ROLE_KEY": TRICKY,
        "WORKER_ID": "gpu-20250912_101500-1a2b3c4d",
    }
    box = sandbox_factory(env=env)
    with ssh_to(box, ssh_keypair) as client:
        # `ssh pod 'echo $SUPABASE_URL'` prints an empty line: sshd gives sessions a clean environment.
        assert run(client, 'echo "$SUPABASE_URL"') == (0, "\n", "")
        code, out, err = run(client, "env -0")
        session = _env0(out)
        assert code == 0 and set(session) <= SESSION_VARS, (set(session) - SESSION_VARS, err)
        assert session["PATH"] == STD_PATH and session["USER"] == "root" and session["HOME"] == "/root"
        # sshd accepts LANG and LC_* from a client (Debian's AcceptEnv), nothing else.
        _, out_f, _ = client.exec_command(
            'echo "$LANG|$LC_ALL|$SUPABASE_URL|$WORKER_ID"',
            environment={"LANG": "C.UTF-8", "LC_ALL": "C", "SUPABASE_URL": "sent", "WORKER_ID": "sent"},
        )
        assert out_f.read().decode() == "C.UTF-8|C||\n"

        # Root reads every variable of the pod from its init, byte for byte.
        code, out, err = run(client, "cat /proc/1/environ")
        assert code == 0, err
        init = _env0(out)
        for key, value in env.items():
            assert init[key] == value, key
        assert init["PUBLIC_KEY"] == ssh_keypair.public_key
        assert init["RUNPOD_POD_ID"] == box.pod_id and init["RUNPOD_TCP_PORT_22"] == str(box.port)
        assert init["RUNPOD_PUBLIC_IP"] and init["RUNPOD_GPU_COUNT"] == "1"
        assert init["PATH"] == IMAGE_PATH and init["HOME"] == "/root"
        # ...which is how a command started over SSH can take them up without them crossing the wire.
        take_up = 'while IFS= read -r -d "" kv; do export "$kv"; done < /proc/1/environ; printf %s "$SUPABASE_SERVICE_ROLE_KEY"'
        assert run(client, f"bash -c {shlex.quote(take_up)}") == (0, TRICKY, "")

        # PID 1 of the pod's PID namespace is the start script; sshd is its child.
        code, ps, _ = run(client, "ps -e -o pid=,ppid=,args=")
        rows = [line.split(None, 2) for line in ps.splitlines()]
        assert ["1", "0", "/bin/bash /etc/sim-pod/start.sh"] in rows, ps
        assert any(ppid == "1" and args.startswith("sshd: /usr/sbin/sshd") for _, ppid, args in rows), ps


def test_interactive_shells_get_runpod_variables_and_nothing_else(
    sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair
) -> None:
    box = sandbox_factory(env={"SUPABASE_URL": "https://abc.supabase.co", "WORKER_ID": "w1"})
    with ssh_to(box, ssh_keypair) as client:
        code, out, _ = run(client, "cat /etc/rp_environment")
        names = sorted(line.split("=", 1)[0].removeprefix("export ") for line in out.splitlines())
        assert code == 0 and names == sorted({*RUNPOD_VARS, "PATH", "_"}), out
        assert run(client, "tail -n 1 ~/.bashrc")[1] == "source /etc/rp_environment\n"
        # ~/.bashrc stops non-interactive shells before that line (Ubuntu's guard)...
        plain = _env0(run(client, "bash -c 'env -0'")[1])
        login = _env0(run(client, "bash -lc 'env -0'")[1])
        # ...and lets an interactive one through.
        interactive = _env0(run(client, "bash -ic 'env -0' 2>/dev/null")[1])
        changed = {k for k in interactive.keys() | plain.keys() if interactive.get(k) != plain.get(k)} - {
            "_",
            "SHLVL",
        }
        assert changed == {*RUNPOD_VARS, "PATH"}, changed
        assert interactive["PATH"] == IMAGE_PATH and interactive["RUNPOD_POD_ID"] == box.pod_id
        assert not RUNPOD_VARS & (plain.keys() | login.keys())
        assert "SUPABASE_URL" not in interactive and "WORKER_ID" not in interactive


def test_public_key_goes_into_authorized_keys_as_the_start_script_does(
    sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair
) -> None:
    box = sandbox_factory()
    with ssh_to(box, ssh_keypair) as client:
        assert run(client, "cat /root/.ssh/authorized_keys")[1] == ssh_keypair.public_key + "\n"
        assert run(client, "stat -c %a /root/.ssh /root/.ssh/authorized_keys")[1] == "700\n700\n"
    first_key = box.host_key_pub.read_text()
    box.stop()

    # A restart keeps the container disk: same host key, and the start script appends its lines again.
    restarted = sandbox_factory(box.pod_id, keep_container_disk=True)
    assert restarted.host_key_pub.read_text() == first_key
    with ssh_to(restarted, ssh_keypair) as client:
        assert run(client, "cat /root/.ssh/authorized_keys")[1] == (ssh_keypair.public_key + "\n") * 2
        assert run(client, "grep -c '^source /etc/rp_environment$' /root/.bashrc")[1] == "2\n"
    restarted.stop()

    # A start after a stop gets a new container disk, with a new host key (generated at start-up).
    resumed = sandbox_factory(box.pod_id)
    assert resumed.host_key_pub.read_text() != first_key
    with ssh_to(resumed, ssh_keypair) as client:
        assert run(client, "cat /root/.ssh/authorized_keys")[1] == ssh_keypair.public_key + "\n"


def test_without_public_key_no_sshd_runs_and_the_port_refuses(sandbox_factory: SandboxFactory) -> None:
    box = sandbox_factory(public_key=False, env={"WORKER_ID": "w1"})  # waits for the start script's end
    assert box.alive and not box.serves_ssh and not box.ready()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", box.port), timeout=2).close()
    assert not any("sshd" in _cmdline(pid) for pid in box.pids())
    assert not (box.container_dir / "root" / ".ssh").exists()
    # The rest of the start script ran as on a real pod.
    assert (box.container_dir / "etc" / "rp_environment").read_text().count("export RUNPOD_") == len(
        RUNPOD_VARS
    )


def test_apt_needs_an_update_first_and_installs_only_into_this_pod(
    sandbox_factory: SandboxFactory, ssh_keypair: SSHKeyPair
) -> None:
    host_before = _host_state()
    a, b = sandbox_factory(), sandbox_factory()
    with ssh_to(a, ssh_keypair) as ca, ssh_to(b, ssh_keypair) as cb:
        # As the image: python3 and python present, no ffmpeg, apt's lists empty.
        assert run(ca, "python3 -c 'print(1 + 1)' && python -c 'print(2 + 2)'")[:2] == (0, "2\n4\n")
        assert run(ca, "command -v ffmpeg ffprobe || echo none")[1] == "none\n"
        assert run(ca, "ls -A /var/lib/apt/lists")[1] == ""
        code, _, err = run(ca, "apt-get install -y ffmpeg")
        assert code == 100 and "E: Unable to locate package ffmpeg" in err, err
        code, _, err = run(ca, "apt-get install -y -qq python3.10-venv ffmpeg")
        assert code == 100 and "E: Unable to locate package python3.10-venv" in err, err
        assert run(ca, "dpkg -s ffmpeg >/dev/null 2>&1 || echo absent")[1] == "absent\n"

        started = time.monotonic()
        code, out, err = run(ca, "apt-get update")
        assert code == 0 and "Reading package lists" in out, err
        assert time.monotonic() - started >= 0.5  # it takes a little time, as the real one does
        # Without -y, with nothing on stdin, apt aborts at its question.
        code, out, _ = run(ca, "apt-get install ffmpeg < /dev/null")
        assert code == 1 and out.rstrip().endswith("Abort.")
        assert run(ca, "apt-get install -y no-such-package-xyz")[0] == 100
        code, _, err = run(ca, "apt-get install -y --no-install-recommends python3.10-venv ffmpeg")
        assert code == 0, err
        assert (
            run(ca, "dpkg -s ffmpeg python3.10-venv > /dev/null && command -v ffmpeg")[1]
            == "/usr/bin/ffmpeg\n"
        )
        assert run(ca, "ffmpeg -version")[0] == 0

        # The other pod has its own container disk.
        assert run(cb, "apt-get install -y ffmpeg")[0] == 100
        assert run(cb, "command -v ffmpeg || echo none")[1] == "none\n"
    assert _host_state() == host_before

    # The container disk goes with a stop: a new start has empty lists and no ffmpeg again.
    a.stop()
    fresh = sandbox_factory(a.pod_id)
    with ssh_to(fresh, ssh_keypair) as client:
        assert run(client, "apt-get install -y ffmpeg")[0] == 100
        assert run(client, "command -v ffmpeg || echo none")[1] == "none\n"
