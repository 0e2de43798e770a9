"""Pytest fixtures for the emulated pods (``orchestrator.standins.sandbox``): real sshd in namespaces.

``ssh_keypair`` is one ed25519 key per session (generated with ``cryptography``; the public half goes
into a pod's ``PUBLIC_KEY``, the private half is what paramiko logs in with). ``sandbox_factory``
builds and starts pods and stops every one of them at teardown, so no test leaves a process behind.
``sim_volume`` is a network-volume directory with the simulated Headless-Wan2GP laid out on it.
``ssh_to`` opens a paramiko client to a pod, pinning the pod's own host key (read from its container
disk). ``wait_ready`` waits for sshd's banner, ``wait_booted`` for the end of a pod's start script.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator.standins.sandbox import PodSandbox, lay_out_volume

DEFAULT_GPU = "NVIDIA GeForce RTX 4090"
DEFAULT_VRAM_MB = 24564


@dataclass(frozen=True)
class SSHKeyPair:
    private_key_path: Path
    public_key: str  # one OpenSSH line, as Runpod takes it in PUBLIC_KEY

    @property
    def pkey(self) -> paramiko.PKey:
        return paramiko.Ed25519Key.from_private_key_file(str(self.private_key_path))


def generate_keypair(directory: Path, name: str = "id_ed25519") -> SSHKeyPair:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path = directory / name
    path.write_bytes(private)
    path.chmod(0o600)
    return SSHKeyPair(path, public.decode() + " tests@orchestrator")


@pytest.fixture(scope="session")
def ssh_keypair(tmp_path_factory: pytest.TempPathFactory) -> SSHKeyPair:
    return generate_keypair(tmp_path_factory.mktemp("ssh-keys"))


def wait_ready(box: PodSandbox, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not box.ready():
        if not box.alive:
            raise AssertionError(f"pod {box.pod_id} died before sshd answered:\n{pod_logs(box)}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"pod {box.pod_id}: sshd did not answer within {timeout} s:\n{pod_logs(box)}"
            )
        time.sleep(0.02)


def wait_booted(box: PodSandbox, timeout: float = 10.0) -> None:
    """Until the pod's start script has run its last step (``source /etc/rp_environment`` in ~/.bashrc)."""
    bashrc = box.container_dir / "root" / ".bashrc"
    deadline = time.monotonic() + timeout
    while "source /etc/rp_environment" not in (bashrc.read_text() if bashrc.exists() else ""):
        if not box.alive:
            raise AssertionError(f"pod {box.pod_id} died while starting:\n{pod_logs(box)}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"pod {box.pod_id}: start script not done within {timeout} s:\n{pod_logs(box)}"
            )
        time.sleep(0.02)


def pod_logs(box: PodSandbox) -> str:
    """The pod's console (PID 1's output) and sshd's log, for failure messages."""
    parts = []
    for path in (box.dir / "pod.log", box.container_dir / "etc" / "ssh" / "sshd.log"):
        if path.exists():
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
    return "\n".join(parts)


SandboxFactory = Callable[..., PodSandbox]


@pytest.fixture
def sandbox_factory(tmp_path: Path, ssh_keypair: SSHKeyPair) -> Iterator[SandboxFactory]:
    boxes: list[PodSandbox] = []
    counter = iter(range(1, 10_000))

    def make(
        pod_id: str | None = None,
        *,
        volume_dir: Path | None = None,
        env: dict[str, str] | None = None,
        mount_path: str = "/workspace",
        gpu_name: str = DEFAULT_GPU,
        vram_mb: int = DEFAULT_VRAM_MB,
        ssh_refuse: bool = False,
        public_key: bool = True,
        ready: bool = True,
        keep_container_disk: bool = False,
    ) -> PodSandbox:
        pod_env = {"PUBLIC_KEY": ssh_keypair.public_key} if public_key else {}
        pod_env.update(env or {})
        box = PodSandbox(
            pod_id or f"pod-{next(counter)}",
            env=pod_env,
            volume_dir=volume_dir,
            mount_path=mount_path,
            gpu_name=gpu_name,
            vram_mb=vram_mb,
            state_dir=tmp_path / "pods",
            ssh_refuse=ssh_refuse,
            keep_container_disk=keep_container_disk,
        )
        boxes.append(box)
        box.start()
        if ready:
            # A pod without sshd (no PUBLIC_KEY, or refusing) is ready once its start script is done.
            if box.serves_ssh:
                wait_ready(box)
            else:
                wait_booted(box)
        return box

    try:
        yield make
    finally:
        for box in boxes:
            box.stop()


@pytest.fixture
def sim_volume(tmp_path: Path) -> Path:
    volume = tmp_path / "volumes" / "workspace"
    volume.mkdir(parents=True)
    lay_out_volume(volume)
    return volume


def ssh_to(box: PodSandbox, keypair: SSHKeyPair, *, timeout: float = 10.0) -> paramiko.SSHClient:
    """A paramiko client logged into ``box`` as root, trusting only the pod's own host key."""
    return ssh_connect(box.port, box.host_key_pub, keypair, timeout=timeout)


def ssh_connect(
    port: int, host_key_pub: Path, keypair: SSHKeyPair, *, timeout: float = 10.0
) -> paramiko.SSHClient:
    """Log in as root on 127.0.0.1:``port``, accepting only the host key in ``host_key_pub``."""
    client = paramiko.SSHClient()
    host_pub = host_key_pub.read_text().split()
    host_key = paramiko.PKey.from_type_string(host_pub[0], base64.b64decode(host_pub[1]))
    client.get_host_keys().add(f"[127.0.0.1]:{port}", host_pub[0], host_key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=port,
        username="root",
        pkey=keypair.pkey,
        allow_agent=False,
        look_for_keys=False,
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
    )
    return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run ``command`` over SSH; (exit status, stdout, stderr)."""
    _, out, err = client.exec_command(command, timeout=timeout)
    stdout = out.read().decode()
    stderr = err.read().decode()
    return out.channel.recv_exit_status(), stdout, stderr
