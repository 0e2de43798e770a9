#!/bin/sh
# Installs the system programs the tests and the demo start for themselves: OpenSSH's server (each
# emulated pod is a real sshd), PostgreSQL's server binaries (the throwaway database) and, with
# `--tests`, systemd's tools (the deployment test verifies the unit file; the demo needs none).
set -eu
tests=false
[ "${1:-}" = "--tests" ] && tests=true
missing=""
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing="$missing postgresql"
fi
# systemd-analyze verifies the unit in deploy/ (the deployment test).
if $tests; then command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"; fi
[ -n "$missing" ] || exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing:$missing; install them (as root: apt-get install$missing)" >&2
    exit 1
fi
echo "system-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# Debian's postinst starts services we do not use; the tests start their own.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now ssh postgresql >/dev/null 2>&1 || true; fi
service ssh stop >/dev/null 2>&1 || true
service postgresql stop >/dev/null 2>&1 || true
