"""The ``apt-get``/``apt`` stand-in of a pod sandbox: empty lists until ``update``, stub installs after.

Part of the pod sandboxes (``orchestrator.standins.sandbox``). The image's Dockerfile ends with
``rm -rf /var/lib/apt/lists/*``, so in a fresh pod ``apt-get install`` fails the way apt does ("E: Unable
to locate package X", exit 100) until ``apt-get update`` has run in that pod; then the packages of
:data:`APT_CATALOG` "install" by joining the pod's dpkg status (so ``dpkg -s`` sees them) and putting
stub programs in ``/usr/bin``. It works only on the pod's container disk (its lists, dpkg status and
``/usr/bin`` overlay), never on the host's. :func:`apt_script` is the program itself, a POSIX shell
script that :mod:`orchestrator.standins.sandbox_container` installs as both names.
"""

from __future__ import annotations

from orchestrator.standins.sandbox_host import APT_LISTS, DPKG_STATUS

#: How long the apt stand-in takes (real seconds, not scaled: commands over SSH run in real time).
APT_UPDATE_S = 0.7
APT_INSTALL_S_PER_PACKAGE = 0.2


#: Packages the emulated Ubuntu mirror offers once ``apt-get update`` has run: name -> (version,
#: section, programs the stub install puts in /usr/bin). Versions are jammy's.
APT_CATALOG: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "ffmpeg": ("7:4.4.2-0ubuntu0.22.04.1", "video", ("ffmpeg", "ffprobe", "ffplay")),
    "python3.10-venv": ("3.10.12-1~22.04.11", "python", ()),
    "python3.10-dev": ("3.10.12-1~22.04.11", "python", ()),
    "python3-venv": ("3.10.6-1~22.04.1", "python", ()),
    "python3-pip": ("22.0.2+dfsg-1ubuntu0.6", "python", ("pip3",)),
    "libgl1": ("1.4.0-1", "libs", ()),
    "libglib2.0-0": ("2.72.4-0ubuntu2.6", "libs", ()),
    "libsm6": ("2:1.2.3-1build2", "libs", ()),
    "libxext6": ("2:1.3.4-1build1", "libs", ()),
    "libxrender1": ("1:0.9.10-1build4", "libs", ()),
    "git": ("1:2.34.1-1ubuntu1.15", "vcs", ("git",)),
    "git-lfs": ("3.0.2-1ubuntu0.3", "vcs", ("git-lfs",)),
    "curl": ("7.81.0-1ubuntu1.20", "web", ("curl",)),
    "wget": ("1.21.2-2ubuntu1.1", "web", ("wget",)),
    "aria2": ("1.36.0-1", "net", ("aria2c",)),
    "jq": ("1.6-2.1ubuntu3", "utils", ("jq",)),
    "unzip": ("6.0-26ubuntu3.2", "utils", ("unzip",)),
    "zip": ("3.0-12build2", "utils", ("zip",)),
    "rsync": ("3.2.7-0ubuntu0.22.04.4", "net", ("rsync",)),
    "tmux": ("3.2a-4ubuntu0.2", "admin", ("tmux",)),
    "htop": ("3.0.5-7build2", "utils", ("htop",)),
    "nano": ("6.2-1ubuntu0.1", "editors", ("nano",)),
    "vim": ("2:8.2.3995-1ubuntu2.24", "editors", ("vim",)),
    "build-essential": ("12.9ubuntu3", "devel", ()),
}


def apt_script(update_s: float, install_s: float) -> str:
    catalog = "\n".join(
        f"{name} {version} {section} {','.join(progs) or '-'}"
        for name, (version, section, progs) in sorted(APT_CATALOG.items())
    )
    return f"""#!/bin/sh
# apt-get and apt of an emulated Runpod pod (orchestrator.standins.sandbox). The image ships with empty
# package lists (its Dockerfile ends with `rm -rf /var/lib/apt/lists/*`), so `install` fails the way
# apt does until `update` has run in this pod. Nothing here touches the host: the lists, dpkg's status
# file and /usr/bin belong to the pod's container disk.
LISTS={APT_LISTS}
STATUS={DPKG_STATUS}
PACKAGES=$LISTS/archive.ubuntu.com_ubuntu_dists_jammy_main_binary-amd64_Packages
UPDATE_S={update_s:g}
INSTALL_S={install_s:g}
# name version section programs: what the emulated mirror offers
CATALOG='{catalog}'

prog=${{0##*/}}
if [ "$prog" = apt ] && ! [ -t 1 ]; then
    printf '\\nWARNING: apt does not have a stable CLI interface. Use with caution in scripts.\\n\\n' >&2
fi
yes=0 quiet=0 op= pkgs=
while [ $# -gt 0 ]; do
    case $1 in
        --yes|--assume-yes|--force-yes) yes=1;;
        --quiet) quiet=$((quiet + 1));;
        --quiet=*|-q=*) quiet=${{1#*=}};;
        --option|--config-file|--target-release) shift;;
        --*) ;;
        -?*)
            flags=${{1#-}}
            while [ -n "$flags" ]; do
                c=${{flags%"${{flags#?}}"}}
                flags=${{flags#?}}
                case $c in
                    y) yes=1;;
                    q) quiet=$((quiet + 1));;
                    o|c|t) [ -z "$flags" ] && shift; flags=;;
                esac
            done;;
        *) if [ -z "$op" ]; then op=$1; else pkgs="$pkgs $1"; fi;;
    esac
    shift
done
# apt-get(8): quiet level 2 implies -y.
[ "$quiet" -ge 2 ] && yes=1
say() {{ [ "$quiet" -ge 2 ] || printf '%s\\n' "$*"; }}
fail() {{ printf 'E: %s\\n' "$@" >&2; exit 100; }}

take_lock() {{
    mkdir -p "$LISTS/partial"
    exec 9>>"$LISTS/lock"
    if ! flock -n 9; then
        holder=$(cat "$LISTS/lock" 2>/dev/null)
        if [ "$1" = update ]; then
            fail "Could not get lock $LISTS/lock. It is held by process ${{holder:-0}} (apt-get)" \\
                "Unable to lock directory $LISTS/"
        fi
        echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process ${{holder:-0}} (apt-get)" >&2
        echo "N: Be aware that removing the lock file is not a solution and may break your system." >&2
        fail "Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?"
    fi
    echo $$ > "$LISTS/lock"
}}

installed() {{
    dpkg-query -W -f='${{Status}}' "$1" 2>/dev/null | grep -q ' installed$'
}}

offered() {{
    [ -r "$PACKAGES" ] && grep -qxF "Package: $1" "$PACKAGES"
}}

do_update() {{
    take_lock update
    say "Get:1 http://archive.ubuntu.com/ubuntu jammy InRelease [270 kB]"
    say "Get:2 http://archive.ubuntu.com/ubuntu jammy-updates InRelease [128 kB]"
    say "Get:3 http://security.ubuntu.com/ubuntu jammy-security InRelease [129 kB]"
    say "Get:4 http://archive.ubuntu.com/ubuntu jammy/main amd64 Packages [1792 kB]"
    sleep "$UPDATE_S"
    printf '%s\\n' "$CATALOG" | while read -r name version section _progs; do
        printf 'Package: %s\\nVersion: %s\\nSection: %s\\nArchitecture: amd64\\n\\n' "$name" "$version" "$section"
    done > "$PACKAGES.new" && mv "$PACKAGES.new" "$PACKAGES"
    : > "$LISTS/archive.ubuntu.com_ubuntu_dists_jammy_InRelease"
    say "Fetched 2319 kB in 1s (2319 kB/s)"
    say "Reading package lists..."
}}

do_install() {{
    take_lock install
    say "Reading package lists..."
    say "Building dependency tree..."
    say "Reading state information..."
    missing=0 todo=
    for p in $pkgs; do
        name=${{p%%=*}}
        name=${{name%%:*}}
        if installed "$name"; then
            say "$name is already the newest version."
            continue
        fi
        if ! offered "$name"; then
            echo "E: Unable to locate package $p" >&2
            case $p in
                *[.?*]*)
                    echo "E: Couldn't find any package by glob '$p'" >&2
                    echo "E: Couldn't find any package by regex '$p'" >&2;;
            esac
            missing=1
            continue
        fi
        todo="$todo $name"
    done
    [ "$missing" = 0 ] || exit 100
    count=$(echo $todo | wc -w)
    if [ "$count" = 0 ]; then
        say "0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded."
        exit 0
    fi
    say "The following NEW packages will be installed:"
    say " $todo"
    say "0 upgraded, $count newly installed, 0 to remove and 0 not upgraded."
    if [ "$yes" = 0 ]; then
        printf 'Do you want to continue? [Y/n] '
        # apt reads the answer from stdin; end of input (no terminal, nothing piped) aborts.
        if ! read -r answer; then echo "Abort."; exit 1; fi
        case $answer in ''|[Yy]*) ;; *) echo "Abort."; exit 1;; esac
    fi
    for name in $todo; do
        sleep "$INSTALL_S"
        line=$(printf '%s\\n' "$CATALOG" | awk -v n="$name" '$1 == n')
        set -- $line
        version=$2 section=$3 progs=$4
        printf '\\nPackage: %s\\nStatus: install ok installed\\nPriority: optional\\nSection: %s\\nInstalled-Size: 1\\nMaintainer: Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>\\nArchitecture: amd64\\nVersion: %s\\nDescription: %s (stand-in installed by the emulated pod)\\n' \\
            "$name" "$section" "$version" "$name" >> "$STATUS"
        if [ "$progs" != - ]; then
            for exe in $(echo "$progs" | tr , ' '); do
                [ -e "/usr/bin/$exe" ] && continue
                printf '#!/bin/sh\\n# %s of an emulated Runpod pod: a stand-in that does nothing.\\necho "%s version %s (emulated pod stand-in)"\\n' \\
                    "$exe" "$exe" "$version" > "/usr/bin/$exe"
                chmod 755 "/usr/bin/$exe"
            done
        fi
        say "Setting up $name ($version) ..."
    done
}}

case $op in
    update) do_update;;
    install) do_install;;
    upgrade|dist-upgrade|full-upgrade|clean|autoclean|autoremove|remove|purge|check|list|search|show|policy)
        exit 0;;
    '') echo "apt (emulated pod stand-in): usage: $prog [options] update|install PACKAGE..." >&2; exit 100;;
    *) fail "Invalid operation $op";;
esac
"""
