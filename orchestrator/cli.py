"""The ``orchestrator`` command: the daemon, one-off operations and the offline rehearsal tools.

Sits at the top of the design: it reads the settings once, builds the adapters, and hands them to the
controller or to a one-off operation. Heavy imports happen inside each command so that ``orchestrator
config`` works even when a dependency of another command is broken.

Exit codes: 0 success; 1 the operation failed (the error is logged); 2 invalid configuration or usage
(every problem is listed); 3 the database refused because another orchestrator holds the lease;
130 interrupted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from orchestrator import config as config_mod
from orchestrator.errors import ConfigError, LeaseLost, OrchestratorError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_LEASE = 3
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace, config_mod.Settings], int]


def _settings(args: argparse.Namespace) -> config_mod.Settings:
    # What the command needs is checked with the values, so one report lists every problem.
    needs = getattr(args, "needs", ())
    return config_mod.load_settings(
        env_file=args.env_file, require_database="database" in needs, require_runpod="runpod" in needs
    )


def cmd_config(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    print(config_mod.render(settings))
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.db.migrate import apply_migrations

    url = args.database_url or settings.database_url
    if not url:
        raise ConfigError(["DATABASE_URL is unset: `orchestrator migrate` applies migrations/ over direct Postgres"])
    applied = apply_migrations(url)
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("nothing to apply: the database is up to date")
    return EXIT_OK


def cmd_sim(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.sim.emulator import serve_main

    argv: list[str] = ["--port", str(args.port), "--speed", str(args.speed)]
    if args.state_dir:
        argv += ["--state-dir", args.state_dir]
    if args.api_key:
        argv += ["--api-key", args.api_key]
    argv += [a for a in args.extra if a != "--"]
    return int(serve_main(argv) or 0)


def cmd_sim_run(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.sim import run as sim_run

    # Check everything first and report every problem at once: a bad --set, an unknown policy and a
    # malformed trace file are all fixed in one round, and no run starts on half-valid input.
    problems: list[str] = []
    names: list[str] = []
    changes: dict[str, Any] = {}
    trace = None
    try:
        names = sim_run.check_policies(args.policies or list(sim_run.DEFAULT_POLICIES))
    except ConfigError as exc:
        problems += exc.problems
    try:
        changes = sim_run.parse_changes(args.changes, settings)
    except ConfigError as exc:
        problems += exc.problems
    try:
        trace = sim_run.resolve_trace(args.trace)
    except ConfigError as exc:
        problems += exc.problems
    if problems or trace is None:
        raise ConfigError(problems)
    results = sim_run.run_policies(trace, names, settings, args.seeds, changes)
    if args.json:
        print(json.dumps({trace.name: results}, indent=1))
    else:
        ours = sim_run.ours_description(settings, changes) if {"ours", "ours_min2"} & set(names) else None
        print(sim_run.render_table(trace, results, seeds=args.seeds, ours=ours))
    return EXIT_OK


EVENTS_LIMIT_MAX = 10000  # orch_events refuses more


def _events_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number from 1 to {EVENTS_LIMIT_MAX}") from None
    if not 1 <= value <= EVENTS_LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number from 1 to {EVENTS_LIMIT_MAX}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


# -- the daemon and its one-offs ----------------------------------------------------------------------


def _controller(settings: config_mod.Settings, **kw: Any) -> Any:
    from orchestrator.controller import Controller
    from orchestrator.wiring import make_database, make_provider

    settings.require(database=True, runpod=True)
    kw.setdefault("worker_env", settings.worker_env or {})
    return Controller(settings, make_database(settings), make_provider(settings), **kw)


def cmd_run(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.daemon import Daemon
    from orchestrator.logs import configure_logging
    from orchestrator.metrics import MetricsServer

    # The daemon's log is its product: JSON lines on stdout, for the journal or a log pipeline.
    configure_logging(settings, stream=sys.stdout)
    controller = _controller(settings)
    server = None
    if settings.metrics_port:
        try:
            server = MetricsServer(
                controller.metrics, settings.metrics_port, max_tick_age=max(3 * settings.orchestrator_poll_sec, 60.0)
            ).start()
        except OrchestratorError:
            controller.shutdown(timeout=0)
            controller.db.close()
            raise
    listen = settings.database_url if settings.db_backend == "postgres" else None
    daemon = Daemon(
        controller,
        settings.orchestrator_poll_sec,
        listen_url=listen,
        follower_interval=min(settings.orchestrator_poll_sec, settings.lease_ttl_sec / 4),
        probe=controller.db.queue_probe,
        probe_interval=settings.wake_probe_sec,
    )
    try:
        return daemon.run_forever()
    finally:
        if server is not None:
            server.stop()


def cmd_tick(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    controller = _controller(settings)
    try:
        result = controller.tick()
        controller.wait_idle(timeout=args.wait)
    finally:
        controller.shutdown()
    print(json.dumps(result.summary, default=str))
    if result.role == "follower":
        print("orchestrator: another orchestrator holds the lease; this tick changed nothing", file=sys.stderr)
        return EXIT_LEASE
    return EXIT_OK if result.role == "leader" else EXIT_FAILED


def cmd_plan(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    controller = _controller(settings)
    try:
        snapshot, pods, plan = controller.dry_run()
    finally:
        controller.shutdown()
    if args.json:
        print(json.dumps(plan.to_dict(), default=str))
        return EXIT_OK
    from orchestrator.render import render_plan

    print(render_plan(snapshot, pods, plan))
    return EXIT_OK


def _with_db(settings: config_mod.Settings, call: Callable[[Any], Any]) -> Any:
    """One operator call on a database connection that is closed afterwards."""
    from orchestrator.wiring import make_database

    db = make_database(settings)
    try:
        return call(db)
    finally:
        db.close()


def _snapshot(settings: config_mod.Settings) -> Any:
    from orchestrator.model import Snapshot

    return Snapshot.from_json(_with_db(settings, lambda db: db.snapshot(settings.worker_id_prefix)))


def cmd_status(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.render import render_status, status_rows

    snapshot = _snapshot(settings)
    if args.json:
        print(json.dumps(status_rows(snapshot), default=str))
    else:
        print(render_status(snapshot))
    return EXIT_OK


def cmd_pods(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.model import PodView
    from orchestrator.render import pods_rows, render_pods
    from orchestrator.wiring import make_provider

    snapshot = _snapshot(settings)
    pods = [PodView.from_pod(p) for p in make_provider(settings).list_pods()]
    rows = pods_rows(snapshot, pods, settings.worker_id_prefix)
    print(json.dumps(rows, default=str) if args.json else render_pods(rows))
    return EXIT_OK


def cmd_events(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.render import render_events

    events = _with_db(settings, lambda db: db.events(args.limit, args.worker))
    print(json.dumps(events, default=str) if args.json else render_events(events))
    return EXIT_OK


def _operator() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def cmd_pause(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    _with_db(settings, lambda db: db.set_paused(args.command == "pause", _operator(), getattr(args, "reason", None)))
    print("spawning paused; healing, draining and termination continue" if args.command == "pause" else "spawning resumed")
    return EXIT_OK


def cmd_workers(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    row = _with_db(settings, lambda db: db.request_termination(args.worker_id, _operator()))
    print(f"termination requested for {args.worker_id} (state {row.get('status')}); the next tick drains it and terminates its pod")
    return EXIT_OK


def cmd_ssh(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.wiring import make_provider

    snapshot = _snapshot(settings)
    worker = next((w for w in snapshot.workers if w.id == args.worker_id or w.runpod_id == args.worker_id), None)
    if worker is None or not worker.runpod_id:
        print(f"orchestrator: no live worker {args.worker_id!r} with a pod", file=sys.stderr)
        return EXIT_FAILED
    command = " ".join(args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd)
    if not command:
        print("orchestrator: usage: orchestrator ssh ID -- COMMAND", file=sys.stderr)
        return EXIT_CONFIG
    provider = make_provider(settings)
    provider.remember_host_key(worker.runpod_id, worker.host_key_fingerprint)
    code, out, err = provider.execute_command_on_worker(worker.runpod_id, command, timeout=args.timeout)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return int(code)


def cmd_gpus(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.runpod_client import format_gpus
    from orchestrator.wiring import make_provider

    print(format_gpus(make_provider(settings)))
    return EXIT_OK


def cmd_volumes(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.runpod_client import format_volumes
    from orchestrator.wiring import make_provider

    print(format_volumes(make_provider(settings)))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.demo import run_demo

    return run_demo(tasks=args.tasks, as_json=args.json, max_gpus=args.max_gpus, timeout=args.timeout)


# -- doctor: what a real deployment needs, checked before the daemon runs -----------------------------

# The app's Edge Functions the real worker calls on every task (banodoco/Reigh-Worker source/core/db).
WORKER_EDGE_FUNCTIONS = ("claim-next-task", "task-counts", "complete_task", "update-task-status")
# The guardian's body keys (heartbeat_guardian.py): they select the function overload it calls.
HEARTBEAT_RPC = "func_worker_heartbeat_with_logs"
CLAIM_RPC = "claim_next_task_service_role"
DOCTOR_HTTP_TIMEOUT = 10.0
OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    """One line of ``orchestrator doctor``: what was checked, what was found."""

    name: str
    status: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail}


def _rest_headers(key: str) -> dict[str, str]:
    return {"apikey": key, "Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _probe_rpc(client: Any, url: str, key: str, function: str, args: dict[str, Any]) -> Check:
    """Does PostgREST know ``function`` with these argument names? Without running it.

    One argument is given a value its type cannot take: PostgREST converts the arguments before the
    call, so an existing function answers 400 (22P02, the conversion) and never runs, while a missing
    one answers 404 (PGRST202). Nothing is written.
    """
    name = f"database: {function}()"
    try:
        resp = client.post(f"{url}/rest/v1/rpc/{function}", json=args, headers=_rest_headers(key))
    except Exception as exc:
        return Check(name, FAIL, f"{url} unreachable: {type(exc).__name__}: {exc}"[:300])
    body = _json_or_none(resp)
    code = body.get("code") if isinstance(body, dict) else None
    if resp.status_code == 400 and code in ("22P02", "22023", "42804"):
        return Check(name, OK, "present (probed with a value it refuses; not run)")
    if resp.status_code in (200, 204):
        return Check(name, OK, "present")
    if resp.status_code == 404 or code == "PGRST202":
        return Check(name, FAIL, f"missing: the database has no {function} taking the worker's arguments; apply migrations/")
    if resp.status_code in (401, 403):
        return Check(name, FAIL, f"refused ({resp.status_code}): SUPABASE_SERVICE_ROLE_KEY is not this project's service key")
    if resp.status_code == 300 or code == "PGRST203":
        return Check(name, WARN, "present, but overloads make the worker's call ambiguous (PGRST203)")
    return Check(name, FAIL, f"unexpected answer {resp.status_code}: {resp.text[:200]}")


def _json_or_none(resp: Any) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _doctor_edge(client: Any, url: str, key: str) -> list[Check]:
    """Each Edge Function the worker calls answers its CORS preflight; task-counts accepts the key."""
    checks: list[Check] = []
    for function in WORKER_EDGE_FUNCTIONS:
        name = f"edge function: {function}"
        try:
            resp = client.options(f"{url}/functions/v1/{function}")
        except Exception as exc:
            checks.append(Check(name, FAIL, f"unreachable: {type(exc).__name__}: {exc}"[:300]))
            continue
        if resp.status_code in (200, 204):
            checks.append(Check(name, OK, "deployed (OPTIONS answered)"))
        elif resp.status_code == 404:
            checks.append(Check(name, FAIL, "not deployed (404): the real worker cannot claim, complete or fail tasks"))
        else:
            checks.append(Check(name, FAIL, f"OPTIONS answered {resp.status_code}: {resp.text[:200]}"))
    # task-counts only reads: with the token the workers get (the service key), it must answer 200.
    name = "edge function: task-counts with the workers' token"
    try:
        resp = client.post(
            f"{url}/functions/v1/task-counts",
            json={"run_type": "gpu", "include_active": True},
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
    except Exception as exc:
        checks.append(Check(name, FAIL, f"unreachable: {type(exc).__name__}: {exc}"[:300]))
        return checks
    body = _json_or_none(resp)
    if resp.status_code == 200 and isinstance(body, dict) and isinstance(body.get("totals"), dict):
        totals = body["totals"]
        checks.append(Check(name, OK, f"service role accepted; queued_only={totals.get('queued_only')}"))
    elif resp.status_code in (401, 403):
        checks.append(Check(name, FAIL, f"{resp.status_code}: the function does not take SUPABASE_SERVICE_ROLE_KEY as the service role"))
    else:
        checks.append(Check(name, FAIL, f"answered {resp.status_code}: {resp.text[:200]}"))
    return checks


def _doctor_migrations(settings: config_mod.Settings, client: Any) -> Check:
    from orchestrator.db import migrate

    name = "database: migrations"
    try:
        files = {m.filename: m.sha256 for m in migrate.discover()}
    except OrchestratorError as exc:
        return Check(name, FAIL, str(exc))
    recorded: dict[str, str] | None = None
    how = ""
    if settings.database_url:
        import psycopg

        try:
            with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=10) as conn:
                recorded = migrate.applied(conn)
            how = "DATABASE_URL"
        except psycopg.errors.UndefinedTable:
            recorded = {}
            how = "DATABASE_URL"
        except psycopg.Error as exc:
            return Check(name, FAIL, f"cannot read the ledger over DATABASE_URL: {str(exc).strip()[:200]}")
    elif settings.supabase_url and settings.supabase_service_role_key:
        url, key = settings.supabase_url.rstrip("/"), settings.supabase_service_role_key
        try:
            resp = client.get(
                f"{url}/rest/v1/orchestrator_schema_migrations", params={"select": "filename,sha256"}, headers=_rest_headers(key)
            )
        except Exception as exc:
            return Check(name, FAIL, f"unreachable: {type(exc).__name__}: {exc}"[:300])
        rows = _json_or_none(resp)
        if resp.status_code == 200 and isinstance(rows, list):
            recorded = {str(r.get("filename")): str(r.get("sha256")) for r in rows if isinstance(r, dict)}
            how = "the REST API"
        else:
            return Check(
                name,
                WARN,
                "no ledger readable over the REST API (applied with `supabase db push`?); "
                "set DATABASE_URL to compare file by file",
            )
    else:
        return Check(name, FAIL, "no database configured (SUPABASE_URL or DATABASE_URL)")
    pending = sorted(set(files) - set(recorded))
    changed = sorted(f for f in set(files) & set(recorded) if files[f] != recorded[f])
    if pending or changed:
        parts = []
        if pending:
            parts.append(f"{len(pending)} not applied ({', '.join(pending[:3])}{', ...' if len(pending) > 3 else ''}): run `orchestrator migrate`")
        if changed:
            parts.append(f"changed since applied: {', '.join(changed[:3])}")
        return Check(name, FAIL, "; ".join(parts))
    return Check(name, OK, f"all {len(files)} applied (read over {how})")


def _doctor_database(settings: config_mod.Settings, client: Any) -> list[Check]:
    checks: list[Check] = []
    try:
        settings.require(database=True)
    except ConfigError as exc:
        return [Check("database: configuration", FAIL, "; ".join(exc.problems))]
    from orchestrator.wiring import make_database

    try:
        db = make_database(settings)
        try:
            snapshot = db.snapshot(settings.worker_id_prefix)
        finally:
            db.close()
        workers = len(snapshot.get("workers") or []) if isinstance(snapshot, dict) else 0
        checks.append(Check("database: orchestrator functions", OK, f"orch_snapshot answers ({workers} live workers) over {settings.db_backend}"))
    except Exception as exc:
        checks.append(Check("database: orchestrator functions", FAIL, f"orch_snapshot failed: {type(exc).__name__}: {str(exc)[:250]}"))
    checks.append(_doctor_migrations(settings, client))
    if settings.supabase_url and settings.supabase_service_role_key:
        url, key = settings.supabase_url.rstrip("/"), settings.supabase_service_role_key
        heartbeat_args = {
            "worker_id_param": "orchestrator-doctor-probe",
            "vram_total_mb_param": "not-a-number",
            "vram_used_mb_param": 0,
            "logs_param": [],
            "status_param": "active",
        }
        checks.append(_probe_rpc(client, url, key, HEARTBEAT_RPC, heartbeat_args))
        checks.append(
            _probe_rpc(client, url, key, CLAIM_RPC, {"p_worker_id": "orchestrator-doctor-probe", "p_include_active": "not-a-boolean"})
        )
        checks.extend(_doctor_edge(client, url, key))
    else:
        checks.append(
            Check(
                "database: the real worker's API",
                FAIL,
                "SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are needed: the worker speaks only HTTP "
                "(Edge Functions and the heartbeat RPC), never DATABASE_URL",
            )
        )
        if settings.database_url:
            checks.extend(_doctor_functions_sql(settings.database_url))
    return checks


def _doctor_functions_sql(database_url: str) -> list[Check]:
    import psycopg

    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
            rows = conn.execute(
                "select proname from pg_proc where pronamespace = 'public'::regnamespace and proname = any(%s)",
                ([HEARTBEAT_RPC, CLAIM_RPC],),
            ).fetchall()
    except psycopg.Error as exc:
        return [Check("database: worker functions", FAIL, str(exc).strip()[:250])]
    found = {str(r[0]) for r in rows}
    return [
        Check(f"database: {fn}()", OK if fn in found else FAIL, "present" if fn in found else "missing: apply migrations/")
        for fn in (HEARTBEAT_RPC, CLAIM_RPC)
    ]


def _doctor_runpod(settings: config_mod.Settings) -> list[Check]:
    try:
        settings.require(runpod=True)
    except ConfigError as exc:
        return [Check("runpod: configuration", FAIL, "; ".join(exc.problems))]
    from orchestrator.wiring import make_provider

    checks: list[Check] = []
    provider = make_provider(settings)
    try:
        try:
            gpus = provider.list_gpu_types(fresh=True)
        except Exception as exc:
            return [Check("runpod: API key", FAIL, f"{type(exc).__name__}: {str(exc)[:250]}")]
        checks.append(Check("runpod: API key", OK, f"accepted by {settings.runpod_api_base_url} ({len(gpus)} GPU types listed)"))
        for gpu in settings.gpu_types:
            try:
                found = provider.resolve_gpu_type(gpu)
                checks.append(Check(f"runpod: GPU type {gpu}", OK, f"exists ({getattr(found, 'id', gpu)})"))
            except Exception as exc:
                checks.append(Check(f"runpod: GPU type {gpu}", FAIL, str(exc)[:250]))
        volumes = list(settings.runpod_storage_name or ())
        if not volumes:
            checks.append(Check("runpod: network volume", WARN, "RUNPOD_STORAGE_NAME unset: pods get no volume, so no worker checkout"))
        for name in volumes:
            try:
                vol = provider.find_volume(name)
                checks.append(Check(f"runpod: volume {name}", OK, f"exists ({vol.id}, {vol.data_center})"))
            except Exception as exc:
                checks.append(Check(f"runpod: volume {name}", FAIL, str(exc)[:250]))
    finally:
        close = getattr(provider, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
    return checks


def _doctor_ssh(settings: config_mod.Settings) -> list[Check]:
    import paramiko

    checks: list[Check] = []
    private = settings.runpod_ssh_private_key_path
    public = settings.runpod_ssh_public_key_path
    if not private:
        checks.append(
            Check("ssh: private key", WARN, "RUNPOD_SSH_PRIVATE_KEY_PATH unset: pods are logged into with a password, which Runpod's images rarely allow")
        )
    else:
        path = Path(str(private)).expanduser()
        try:
            key = paramiko.PKey.from_path(path)
            checks.append(Check("ssh: private key", OK, f"{path} readable ({key.get_name()})"))
        except (OSError, paramiko.SSHException, ValueError) as exc:
            checks.append(Check("ssh: private key", FAIL, f"{path}: {type(exc).__name__}: {exc}"[:300]))
    if public:
        path = Path(str(public)).expanduser()
        try:
            words = path.read_text().split()
            if len(words) < 2 or not words[0].startswith(("ssh-", "ecdsa-", "sk-")):
                raise ValueError("not an OpenSSH public key line")
            base64.b64decode(words[1], validate=True)
            checks.append(Check("ssh: public key", OK, f"{path} readable ({words[0]})"))
        except (OSError, ValueError) as exc:
            checks.append(Check("ssh: public key", FAIL, f"{path}: {type(exc).__name__}: {exc}"[:300]))
    return checks


def run_doctor(settings: config_mod.Settings) -> list[Check]:
    """Every check, in the order an operator fixes them: database, worker API, Runpod, SSH."""
    import httpx

    with httpx.Client(timeout=DOCTOR_HTTP_TIMEOUT) as client:
        checks = _doctor_database(settings, client)
    checks += _doctor_runpod(settings)
    checks += _doctor_ssh(settings)
    return checks


def render_doctor(checks: Sequence[Check]) -> str:
    from orchestrator.logs import redact

    width = max(len(c.name) for c in checks)
    lines = [f"{c.status:<4}  {c.name:<{width}}  {redact(c.detail)}" for c in checks]
    failed = sum(1 for c in checks if c.status == FAIL)
    warned = sum(1 for c in checks if c.status == WARN)
    verdict = "ready: everything the daemon and the real worker need is there" if not failed else f"NOT READY: {failed} problem(s)"
    lines.append(f"{verdict}" + (f" ({warned} warning(s))" if warned else ""))
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    checks = run_doctor(settings)
    failed = any(c.status == FAIL for c in checks)
    if args.json:
        from orchestrator.logs import redact

        print(json.dumps({"ok": not failed, "checks": [redact(c.to_dict()) for c in checks]}))
    else:
        print(render_doctor(checks))
    return EXIT_FAILED if failed else EXIT_OK


# What each command needs configured, checked together with the values (one report, exit 2).
DAEMON_NEEDS = ("database", "runpod")
DB_NEEDS = ("database",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Keeps the right number of Runpod GPU pods alive for a Supabase task queue.",
        epilog="Exit codes: 0 ok, 1 failed, 2 invalid configuration or usage, 3 lease held elsewhere.",
    )
    parser.add_argument("--env-file", default=".env", help="optional .env file (default: ./.env)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print every setting, its effective value and where it came from")
    p.set_defaults(handler=cmd_config)

    p = sub.add_parser("migrate", help="apply migrations/ to DATABASE_URL (no-op when up to date)")
    p.add_argument("--database-url", default=None, help="override DATABASE_URL")
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser("sim", help="offline stand-ins: `sim serve` runs the Runpod emulator, `sim run` replays traffic")
    sim_sub = p.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")
    s = sim_sub.add_parser("serve", help="run the Runpod emulator (REST v2 and GraphQL) until interrupted")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--speed", type=float, default=1.0, help="boot-time divisor: 10 makes boots 10x faster")
    s.add_argument("--state-dir", default=None)
    s.add_argument("--api-key", default=None, help="accept only this key (default: any non-empty key)")
    s.add_argument("extra", nargs=argparse.REMAINDER, help="fault knobs and --capacity, as `python -m orchestrator.sim.emulator --help` lists")
    s.set_defaults(handler=cmd_sim)
    s = sim_sub.add_parser(
        "run",
        help="replay a trace in virtual time: cost and task waits of your settings vs other policies",
        description="Replay a trace of task arrivals against scaling policies in virtual time (seconds for a day) "
        "and print each policy's cost, GPU-hours and task waits. `ours` is your configuration (environment, .env, "
        "then --set). See docs/operations.md, 'Replaying traffic with `orchestrator sim run`'.",
    )
    s.add_argument(
        "--trace", default="steady", metavar="NAME_OR_CSV",
        help="steady, bursty, diurnal, spike, heavy_tail, or a CSV file with columns id,at,duration,task_type (default: steady)",
    )
    s.add_argument(
        "--policy", dest="policies", action="extend", nargs="+", default=None, metavar="NAME",
        help="ours, ours_min2, original, original_min2, serverless, static, oracle (default: ours original serverless oracle)",
    )
    s.add_argument(
        "--set", dest="changes", action="append", default=[], metavar="KEY=VALUE",
        help="change a setting for `ours` (and ours_min2) only; repeatable",
    )
    s.add_argument("--seeds", type=_positive_int, default=1, help="simulation seeds per policy; means are shown (default: 1)")
    s.add_argument("--json", action="store_true", help="one JSON document: trace -> policy -> metric")
    s.set_defaults(handler=cmd_sim_run)

    p = sub.add_parser(
        "doctor",
        help="pre-flight: is everything the daemon and the real worker need there? (exit 0 only when it is)",
        description="Checks, without changing anything: the database (our migrations, the worker's heartbeat "
        "RPC and claim function, the app's Edge Functions answering with the workers' token), the Runpod key, "
        "GPU types and network volumes, and the SSH key files. Exit 0 when nothing is missing, 1 otherwise.",
    )
    p.add_argument("--json", action="store_true", help="one JSON document: {ok, checks: [{check, status, detail}]}")
    p.set_defaults(handler=cmd_doctor)

    p = sub.add_parser("run", help="the daemon: tick every ORCHESTRATOR_POLL_SEC until SIGTERM")
    p.set_defaults(handler=cmd_run, needs=DAEMON_NEEDS)

    p = sub.add_parser("tick", help="run one cycle now and print its JSON summary")
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the tick's slow actions (SSH)")
    p.set_defaults(handler=cmd_tick, needs=DAEMON_NEEDS)

    p = sub.add_parser("plan", help="dry run: the actions and reasons a tick would take now, changing nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_plan, needs=DAEMON_NEEDS)

    p = sub.add_parser("status", help="the fleet: workers, states, ages, heartbeats, tasks, cost; the queue")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status, needs=DB_NEEDS)

    p = sub.add_parser("pods", help="the provider's pods beside the database's workers, orphans marked")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_pods, needs=DB_NEEDS)

    p = sub.add_parser("events", help="the newest orchestrator events")
    p.add_argument("--limit", type=_events_limit, default=50, help=f"1 to {EVENTS_LIMIT_MAX} (default: 50)")
    p.add_argument("--worker", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_events, needs=DB_NEEDS)

    p = sub.add_parser("pause", help="stop spawning (healing, draining and termination go on)")
    p.add_argument("--reason", default=None)
    p.set_defaults(handler=cmd_pause, needs=DB_NEEDS)
    p = sub.add_parser("resume", help="allow spawning again")
    p.set_defaults(handler=cmd_pause, needs=DB_NEEDS)

    p = sub.add_parser("workers", help="operate on one worker")
    w_sub = p.add_subparsers(dest="workers_command", required=True, metavar="ACTION")
    w = w_sub.add_parser("terminate", help="drain the worker and terminate its pod")
    w.add_argument("worker_id")
    w.set_defaults(handler=cmd_workers, needs=DB_NEEDS)

    p = sub.add_parser("ssh", help="run a command on a worker's pod: orchestrator ssh ID -- CMD")
    p.add_argument("worker_id")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(handler=cmd_ssh, needs=DB_NEEDS)

    p = sub.add_parser("gpus", help="GPU types: memory, price, availability")
    p.set_defaults(handler=cmd_gpus)
    p = sub.add_parser("volumes", help="network volumes: name, size, data center")
    p.set_defaults(handler=cmd_volumes)

    p = sub.add_parser("demo", help="the whole system offline: Postgres, the emulator, the daemon, a stream of tasks")
    p.add_argument("--tasks", type=int, default=24)
    p.add_argument("--max-gpus", type=int, default=4)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--json", action="store_true", help="end with one JSON line of totals (no live table)")
    p.set_defaults(handler=cmd_demo)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        # `sim serve` forwards the emulator's own options (fault knobs, --capacity) untouched; every
        # other command, `sim run` included, refuses what it does not know.
        args, unknown = parser.parse_known_args(argv)
        if unknown and getattr(args, "sim_command", None) == "serve":
            args.extra = [*unknown, *args.extra]
        elif unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    handler: Handler = args.handler
    try:
        settings = _settings(args)
        from orchestrator.logs import configure_logging

        configure_logging(settings, stream=sys.stderr)
        return handler(args, settings)
    except ConfigError as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except LeaseLost as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        return EXIT_LEASE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OrchestratorError as exc:
        from orchestrator.logs import redact

        print(f"orchestrator: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        # A bug or an unmapped library error: the traceback goes through the redacting logger (never
        # Python's own hook, which prints secrets in the clear), the operator gets one line and exit 1.
        from orchestrator.logs import redact

        log = structlog.get_logger(__name__)
        log.exception("command_crashed", command=args.command)
        print(f"orchestrator: unexpected {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
