"""The pod image the sandboxes imitate: ``runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04``.

Part of the pod sandboxes (``orchestrator.standins.sandbox``): the environment PID 1 gets from the image,
the start script that is PID 1 (what runpod/containers ``container-template/start.sh`` does, in our own
words), Ubuntu's dotfiles for ``/root``, the fake ``nvidia-smi``, and what the image lacks (``ffmpeg``,
hidden from the pod when the host has it). :mod:`orchestrator.standins.sandbox_container` writes these
files into each pod's container disk; the sandbox module's docstring gives the sources.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from orchestrator.standins.sandbox_host import STD_PATH

#: PID 1's PATH: the CUDA base image prepends its directories to Ubuntu's default.
IMAGE_PATH = "/usr/local/nvidia/bin:/usr/local/cuda/bin:" + STD_PATH
#: The rest of the image's environment that PID 1 sees (CUDA base image and the pytorch Dockerfile).
IMAGE_ENV = {
    "PATH": IMAGE_PATH,
    "NVIDIA_VISIBLE_DEVICES": "all",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
    "CUDA_VERSION": "12.4.1",
    "LD_LIBRARY_PATH": "/usr/local/nvidia/lib:/usr/local/nvidia/lib64",
    "DEBIAN_FRONTEND": "noninteractive",
    "SHELL": "/bin/bash",
    "HOME": "/root",
}
# Files in the pod's private /tmp: the fake nvidia-smi reads the used VRAM the simulated worker writes.
GPU_STATE_FILE = "/tmp/.sim-gpu-used-mb"
#: PID 1 of the pod: our start script, in the container disk's /etc.
START_SCRIPT = "/etc/sim-pod/start.sh"
#: Programs the image does not have; hidden from the pod when the host has them.
ABSENT_PROGRAMS = ("ffmpeg", "ffprobe", "ffplay")
ABSENT_PACKAGES = ("ffmpeg",)


def nvidia_smi_script(gpu_name: str, vram_mb: int, gpu_count: int = 1) -> str:
    """The fake ``nvidia-smi``: one GPU of the pod's type, or none for a pod started without a GPU
    (then it answers as the real one does when it sees no device: "No devices were found", exit 6)."""
    if gpu_count < 1:
        return (
            "#!/bin/sh\n# Fake nvidia-smi of an emulated Runpod pod started without a GPU.\n"
            'echo "No devices were found"\nexit 6\n'
        )
    name = shlex.quote(gpu_name)
    return f"""#!/bin/sh
# Fake nvidia-smi of an emulated Runpod pod (orchestrator.standins.sandbox): one GPU, {gpu_name}.
NAME={name}
TOTAL={int(vram_mb)}
used() {{
    u=0
    if [ -r {GPU_STATE_FILE} ]; then read -r u < {GPU_STATE_FILE} || u=0; fi
    case $u in ''|*[!0-9]*) u=0;; esac
    [ "$u" -gt "$TOTAL" ] && u=$TOTAL
    echo "$u"
}}
query=""; fmt=""; list=0
while [ $# -gt 0 ]; do
    case $1 in
        --query-gpu=*) query=${{1#--query-gpu=}};;
        --query-gpu) shift; query=$1;;
        --format=*) fmt=${{1#--format=}};;
        --format) shift; fmt=$1;;
        -L|--list-gpus) list=1;;
        -h|--help) echo "NVIDIA System Management Interface (simulated)"; exit 0;;
    esac
    shift
done
if [ "$list" = 1 ]; then
    echo "GPU 0: $NAME (UUID: GPU-00000000-0000-0000-0000-000000000000)"; exit 0
fi
if [ -n "$query" ]; then
    header=1; units=1
    case ",$fmt," in *,noheader,*) header=0;; esac
    case ",$fmt," in *,nounits,*) units=0;; esac
    U=$(used); head=""; row=""
    old_ifs=$IFS; IFS=,
    for f in $query; do
        f=$(echo "$f" | tr -d ' ')
        case $f in
            name|gpu_name) v=$NAME; h=name;;
            memory.total) v=$TOTAL; h="memory.total [MiB]"; [ $units = 1 ] && v="$v MiB";;
            memory.used) v=$U; h="memory.used [MiB]"; [ $units = 1 ] && v="$v MiB";;
            memory.free) v=$((TOTAL - U)); h="memory.free [MiB]"; [ $units = 1 ] && v="$v MiB";;
            index) v=0; h=index;;
            count) v=1; h=count;;
            uuid|gpu_uuid) v=GPU-00000000-0000-0000-0000-000000000000; h=uuid;;
            driver_version) v=550.54.15; h=driver_version;;
            utilization.gpu) v=0; h="utilization.gpu [%]"; [ $units = 1 ] && v="$v %";;
            temperature.gpu) v=34; h=temperature.gpu;;
            *) IFS=$old_ifs; echo "Field \\"$f\\" is not a valid field to query." >&2; exit 2;;
        esac
        if [ -z "$row" ]; then row=$v; head=$h; else row="$row, $v"; head="$head, $h"; fi
    done
    IFS=$old_ifs
    [ $header = 1 ] && echo "$head"
    echo "$row"
    exit 0
fi
U=$(used)
date
cat <<EOF
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|=========================================+========================+======================|
EOF
printf '|   0  %-30.30s On  |   00000000:01:00.0 Off |                  Off |\\n' "$NAME"
printf '| 30%%   34C    P8             21W /  450W | %8sMiB / %6sMiB |      0%%      Default |\\n' "$U" "$TOTAL"
echo "+-----------------------------------------+------------------------+----------------------+"
"""


def start_script(pod_id: str, *, start_sshd: str, host_key: str) -> str:
    """PID 1 of the pod: what runpod/containers container-template/start.sh does, in our own words.

    ``host_key``: where sshd reads its host key; the script makes it when it is missing, as the image's
    does (the image makes RSA, DSA, ECDSA and ed25519 keys; the sandbox only an ed25519 one)."""
    return f"""#!/bin/bash
# PID 1 of emulated Runpod pod {pod_id} (orchestrator.standins.sandbox). It does what the start script of
# Runpod's official images does (github.com/runpod/containers, container-template/start.sh): when
# PUBLIC_KEY is set, install it, generate the SSH host key if the container disk has none (a new
# container disk, after a create or a stop, has none: so a resumed pod presents a new host key) and
# start sshd; write RUNPOD_*, PATH and _ to /etc/rp_environment, have ~/.bashrc source it, then sleep
# forever.
# The emulator's lifeline watchdog ends the pod with SIGUSR1 (a PID 1 ignores signals it does not trap).
trap 'exit 0' USR1
set -e
echo "Pod Started"
if [[ $PUBLIC_KEY ]]; then
    echo "Setting up SSH..."
    mkdir -p ~/.ssh
    printf '%s\\n' "$PUBLIC_KEY" >> ~/.ssh/authorized_keys
    chmod -R 700 ~/.ssh
    if [ ! -f {host_key} ]; then
        ssh-keygen -t ed25519 -f {host_key} -q -N '' -C "root@$HOSTNAME"
        echo "ED25519 key fingerprint:"
        ssh-keygen -lf {host_key}.pub
    fi
{start_sshd}
fi
echo "Exporting environment variables..."
# One `export NAME="VALUE"` per line of printenv that starts with RUNPOD_, PATH= or _=: unescaped,
# and cut at a second '=', as the original's awk -F = does.
printenv | while IFS= read -r line; do
    case $line in
        RUNPOD_*|PATH=*|_=*)
            name=${{line%%=*}}
            case $line in *=*) value=${{line#*=}}; value=${{value%%=*}};; *) value=;; esac
            printf 'export %s="%s"\\n' "$name" "$value";;
    esac
done >> /etc/rp_environment
echo 'source /etc/rp_environment' >> ~/.bashrc
echo "Start script(s) finished, Pod is ready to use."
sleep infinity &
wait $!
"""


#: Ubuntu's ~/.bashrc begins with this guard (/etc/skel/.bashrc): non-interactive shells, which is what
#: `ssh pod 'command'` runs (Debian's bash sources ~/.bashrc for sshd's commands), stop here.
BASHRC = """# ~/.bashrc: executed by bash(1) for non-login shells.

# If not running interactively, don't do anything
case $- in
    *i*) ;;
      *) return;;
esac

HISTCONTROL=ignoreboth
shopt -s histappend
HISTSIZE=1000
HISTFILESIZE=2000
shopt -s checkwinsize
PS1='${debian_chroot:+($debian_chroot)}\\u@\\h:\\w\\$ '
"""

#: Ubuntu's /root/.profile.
PROFILE = """# ~/.profile: executed by Bourne-compatible login shells.

if [ "$BASH" ]; then
  if [ -f ~/.bashrc ]; then
    . ~/.bashrc
  fi
fi

mesg n 2> /dev/null || true
"""


def dpkg_status_without(text: str, packages: Iterable[str]) -> str:
    """The host's dpkg status minus the stanzas of ``packages`` (what the image does not have)."""
    names = set(packages)
    if not any(f"Package: {n}\n" in text for n in names):
        return text
    stanzas = text.split("\n\n")
    kept = [s for s in stanzas if not any(s.lstrip("\n").startswith(f"Package: {n}\n") for n in names)]
    return "\n\n".join(kept)
