"""What operators are promised by the CLI, the configuration and the logs.

Each test was written against a defect found in review and failed before its fix; its docstring says
what a user or operator would see. (The apply step's tests are in
tests/integration/test_controller_fencing.py.)
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import structlog

from orchestrator.core import config
from orchestrator.logs import Redactor

# -- the CLI and configuration ---------------------------------------------------------------------------


def _cli(args: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--env-file", "/dev/null", *args],
        env={k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ} | {"HOME": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_run_lists_malformed_and_missing_settings_in_one_report(tmp_path: Path) -> None:
    """``orchestrator run`` with a malformed value AND missing required settings lists them all at once.

    Consequence on the reviewed code: the malformed values are reported first (exit 2); only after the
    operator fixes them and restarts do the missing keys appear (exit 2 again). The README promises
    "Invalid configuration exits with code 2 and lists every problem at once".
    """
    proc = _cli(["run"], {"MAX_ACTIVE_GPUS": "ten", "ORCHESTRATOR_POLL_SEC": "fast"}, tmp_path)
    assert proc.returncode == 2, proc.stderr
    # (RUNPOD_SSH_PRIVATE_KEY_PATH is optional: without it pods are logged into with their password.)
    for needle in (
        "MAX_ACTIVE_GPUS",
        "ORCHESTRATOR_POLL_SEC",
        "RUNPOD_API_KEY",
        "neither database is configured",
    ):
        assert needle in proc.stderr, f"{needle} missing from:\n{proc.stderr}"
    # One report, each problem once: a key whose path does not exist is not also called "unset".
    proc = _cli(
        ["run"], {"RUNPOD_SSH_PRIVATE_KEY_PATH": str(tmp_path / "nope"), "MAX_ACTIVE_GPUS": "ten"}, tmp_path
    )
    assert proc.returncode == 2
    assert (
        "RUNPOD_SSH_PRIVATE_KEY_PATH" in proc.stderr
        and "RUNPOD_SSH_PRIVATE_KEY_PATH is unset" not in proc.stderr
    ), proc.stderr


def test_values_that_would_fail_at_first_use_are_configuration_errors_that_show_no_secret(
    tmp_path: Path,
) -> None:
    """A URL that does not parse, a port out of range, a key with a passphrase: exit 2, all listed.

    Consequence on the reviewed code: ``DATABASE_URL=postgresql://u:pw@[bad/db`` crashed the command
    before logging was set up, and structlog's default traceback printed every local variable (the
    Runpod key and the database password among them) in the clear, exit 1; the others passed the
    check and crashed later (exit 1, so systemd restarted a daemon that could never start), and
    ``orchestrator config`` showed a ``?password=`` in DATABASE_URL as typed.
    """
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(key)], check=True, timeout=30
    )
    env = {
        "RUNPOD_API_KEY": "rk_SECRETAPIKEY123456",
        "DATABASE_URL": "postgresql://u:P4SSWORDzz@[bad/db",
        "SUPABASE_URL": "https://x.supabase.co:99999",
        "METRICS_PORT": "70000",
    }
    proc = _cli(["run"], env, tmp_path)
    assert proc.returncode == 2, proc.stderr
    for needle in (
        "DATABASE_URL",
        "not a valid URL",
        "SUPABASE_URL",
        "Port out of range",
        "METRICS_PORT=70000",
    ):
        assert needle in proc.stderr, f"{needle} missing from:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    for secret in ("rk_SECRETAPIKEY123456", "P4SSWORDzz"):
        assert secret not in proc.stderr + proc.stdout
    db = {"DATABASE_URL": "postgresql://review@127.0.0.1:1/none"}
    # (Workers started by hand, on a volume: the key's passphrase is the one problem left.)
    usable = {"RUNPOD_STORAGE_NAME": "vol", "AUTO_START_WORKER_PROCESS": "false", **db}
    proc = _cli(
        ["run"], {"RUNPOD_API_KEY": "rk_x", "RUNPOD_SSH_PRIVATE_KEY_PATH": str(key), **usable}, tmp_path
    )
    assert proc.returncode == 2 and "passphrase" in proc.stderr and "Traceback" not in proc.stderr, (
        proc.stderr
    )
    shown = config.load_settings(
        {"DATABASE_URL": "postgresql://u:P4SSWORDzz@h:5432/db?sslmode=require&password=QSECRETzz"},
        env_file=None,
    )
    table = config.render(shown)
    assert "QSECRETzz" not in table and "P4SSWORDzz" not in table and "password=****" in table
    # What libpq accepts stays accepted: no host (a Unix socket), several hosts, an IPv6 literal.
    for url in (
        "postgresql:///db?host=/var/run/postgresql",
        "postgresql://u:pw@h1:5432,h2:5433/db?target_session_attrs=read-write",
        "postgresql://u@[::1]:5432/db",
    ):
        assert config.load_settings({"DATABASE_URL": url}, env_file=None).database_url == url


def test_events_with_an_out_of_range_limit_is_a_usage_error(tmp_path: Path) -> None:
    """``orchestrator events --limit 0`` is bad usage: exit 2 before touching the database.

    Consequence on the reviewed code: the value goes to the database, which refuses it, and the command
    exits 1 ("the operation failed"), so a script or an alert cannot tell a typo from an outage.
    """
    proc = _cli(
        ["events", "--limit", "0"], {"DATABASE_URL": "postgresql://review@127.0.0.1:1/none"}, tmp_path
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-500:])
    assert "--limit" in proc.stderr


def test_run_with_its_metrics_port_taken_says_so_without_a_traceback_and_goes_on(tmp_path: Path) -> None:
    """``orchestrator run`` whose METRICS_PORT is taken logs it and goes on to manage the fleet (here
    as far as the next problem, an unusable key: exit 2, listed).

    On the first reviewed code the bind error escaped ``main`` as an uncaught OSError, so the operator
    got a Python traceback, which bypasses the redacting logger. Since then a taken port no longer stops
    the daemon: the pods it manages would go on billing with nobody managing them.
    """
    key = tmp_path / "id_ed25519"
    key.write_text("not a key\n")
    (tmp_path / "id_ed25519.pub").write_text("ssh-ed25519 AAAA review\n")
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "DATABASE_URL": "postgresql://review@127.0.0.1:1/none",
            "RUNPOD_API_KEY": "rpa_review_only_key_0001",
            "RUNPOD_SSH_PRIVATE_KEY_PATH": str(key),
            "RUNPOD_SSH_PUBLIC_KEY_PATH": str(tmp_path / "id_ed25519.pub"),
            "RUNPOD_STORAGE_NAME": "vol",
            "AUTO_START_WORKER_PROCESS": "false",
            "METRICS_PORT": str(port),
        }
        proc = _cli(["run"], env, tmp_path)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-800:]
    assert '"event": "metrics_server_failed"' in out and f"METRICS_PORT={port}" in out, out[-800:]
    assert proc.returncode == 2 and "RUNPOD_SSH_PRIVATE_KEY_PATH" in proc.stderr, out[-800:]


# -- redaction -----------------------------------------------------------------------------------------


def test_password_shaped_connection_strings_are_masked_without_configuration() -> None:
    """A database password is masked in every connection-string shape libpq accepts.

    Consequence on the reviewed code: only ``scheme://user:password@host`` is recognised, so a
    password in a URL with an empty user name, in the ``?password=`` query parameter, or in a keyword
    DSN (``host=... password=...``) reaches logs and printouts in the clear.
    """
    redactor = Redactor()
    for text in (
        "postgresql://:Pg-Review-Pass-1@db.internal:5432/postgres",
        "postgresql://orch@db.internal/postgres?sslmode=require&password=Pg-Review-Pass-1",
        "host=db.internal user=orch password=Pg-Review-Pass-1 dbname=postgres",
    ):
        assert "Pg-Review-Pass-1" not in redactor.text(text), text


def test_a_password_given_as_a_url_parameter_is_a_registered_secret() -> None:
    """DATABASE_URL's password is masked wherever it appears, also when given as ``?password=``.

    Consequence on the reviewed code: only the password of ``user:password@`` is registered; with the
    query-parameter form (offered by some hosted Postgres dashboards) the bare password, once it shows
    up in an error or a printout, is not masked.
    """
    settings = config.load_settings(
        {
            "DATABASE_URL": "postgresql://orch@db.internal:5432/postgres?password=Pg-Review-Pass-2&sslmode=require"
        },
        env_file=None,
    )
    assert "Pg-Review-Pass-2" in settings.secrets


def test_a_runpod_key_in_the_wrong_setting_is_shown_masked(tmp_path: Path) -> None:
    """``RUNPOD_API=rpa_...`` (the key pasted one setting up, ``RUNPOD_API_KEY``) was printed in clear in
    the problem line, which goes to the journal under systemd."""
    key = "rpa_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab"
    proc = _cli(["config"], {"RUNPOD_API": key}, tmp_path)
    assert proc.returncode == 2 and "RUNPOD_API=" in proc.stderr, proc.stderr
    assert key not in proc.stderr + proc.stdout
    assert key not in Redactor().text(f"pasted {key} here")


def test_runpod_commands_without_a_key_are_invalid_configuration_listed_at_once(tmp_path: Path) -> None:
    """``gpus`` and ``volumes`` without RUNPOD_API_KEY exited 1 (the operation failed), and ``pods`` with
    neither a database nor a key reported only the database: not exit 2 with every problem at once."""
    for command in ("gpus", "volumes"):
        proc = _cli([command], {}, tmp_path)
        assert proc.returncode == 2 and "RUNPOD_API_KEY" in proc.stderr, (command, proc.stderr)
    proc = _cli(["pods"], {}, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "RUNPOD_API_KEY" in proc.stderr and "DATABASE_URL" in proc.stderr, proc.stderr


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(tmp_path: Path) -> None:
    """``orchestrator config | head -2`` logged command_crashed with a traceback and exited 1."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes a line
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "--env-file", "/dev/null", "config"],
            env={k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
            | {"HOME": str(tmp_path)},
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_a_failed_metrics_request_is_one_structured_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A client resetting the connection made the metrics endpoint print the standard library's
    traceback on stderr: plain text in a log whose every line is meant to be one JSON object."""
    from structlog.testing import capture_logs

    from orchestrator.loop.metrics import Metrics, MetricsServer

    server = MetricsServer(Metrics(), 0, max_tick_age=60, host="127.0.0.1")
    # capture_logs replaces the processors only: a level filter another test in this worker process
    # configured would drop the line before them.
    kept = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as logs:
            try:
                raise ConnectionResetError(104, "Connection reset by peer")
            except ConnectionResetError:
                server._server.handle_error(None, ("127.0.0.1", 50000))
    finally:
        server._server.server_close()
        structlog.configure(**kept)
    # Another test's thread in this worker process may log while the capture is on: only this server's.
    ours = [e for e in logs if e.get("server") == "metrics"]
    assert [e["event"] for e in ours] == ["http_request_failed"], logs
    assert ours[0]["error_type"] == "ConnectionResetError"
    assert "Traceback" not in capsys.readouterr().err


def test_the_workers_gauge_counts_the_warm_pool() -> None:
    """With two workers stopped in the pool, orchestrator_workers was 0 in every state: the docs promise
    live workers by state, every state the code knows present."""
    from orchestrator.loop.metrics import Metrics

    metrics = Metrics()
    metrics.observe_tick(
        duration=0.1,
        workers_by_state={"stopped": 2, "resuming": 1},
        claimable=0,
        running=0,
        oldest_queued_age=None,
        spend_rate=0.0,
        blocked={},
        leader=True,
    )
    text = metrics.render().decode()
    assert 'orchestrator_workers{state="stopped"} 2.0' in text
    assert 'orchestrator_workers{state="resuming"} 1.0' in text
    assert 'orchestrator_workers{state="stopping"} 0.0' in text


def test_the_metrics_endpoint_listens_where_the_operator_says() -> None:
    """The endpoint tells the fleet's size and spend to whoever reaches it, without authentication: on
    this machine only unless the operator (or the container image) opens it."""
    from orchestrator.fleet_commands import metrics_server
    from orchestrator.loop.metrics import Metrics

    for environ, host in (({}, "127.0.0.1"), ({"METRICS_HOST": "0.0.0.0"}, "0.0.0.0")):
        settings = config.load_settings(environ, env_file=None)
        server = metrics_server(settings, Metrics())
        try:
            assert server._server.server_address[0] == host
        finally:
            server._server.server_close()
