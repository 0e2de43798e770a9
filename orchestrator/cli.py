"""The ``orchestrator`` command: the daemon, one-off operations and the offline rehearsal tools.

Sits at the top of the design: it reads the settings once, builds the adapters, and hands them to the
controller or to a one-off operation. Heavy imports happen inside each command so that ``orchestrator
config`` works even when a dependency of another command is broken.

Output: what a command answers goes to stdout, as a table or, with ``--json``, as one JSON document;
log lines go to stderr, and only from WARNING up unless ``-v`` (the daemon, ``run``, logs its JSON lines
on stdout at ``LOG_LEVEL``). ``--env-file`` and ``-v`` are taken before or after the command.

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

from orchestrator.core import config as config_mod
from orchestrator.core.errors import ConfigError, LeaseLost, OrchestratorError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_LEASE = 3
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace, config_mod.Settings], int]

DIST_NAME = "runpod-fleet-orchestrator"
DEFAULT_ENV_FILE = ".env"


def package_version() -> str:
    """The installed distribution's version; in a source checkout that is not installed, pyproject's."""
    from importlib import metadata

    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    try:
        project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
        return f"{project['version']} (source checkout, not installed)"
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown (not installed)"


def _settings(args: argparse.Namespace) -> config_mod.Settings:
    # What the command needs is checked with the values, so one report lists every problem. The
    # default ./.env is optional; a file named on the command line must exist (a typo in its path
    # would otherwise leave every default in force and still exit 0).
    needs = getattr(args, "needs", ())
    named = getattr(args, "env_file", None)
    return config_mod.load_settings(
        env_file=named if named is not None else DEFAULT_ENV_FILE,
        env_file_required=named is not None,
        require_database="database" in needs,
        require_runpod="runpod" in needs,
    )


def _print_json(value: Any) -> None:
    from orchestrator.logs import redact

    print(json.dumps(redact(value), default=str))


def cmd_config(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    if args.json:
        _print_json(config_mod.to_json(settings))
    else:
        print(config_mod.render(settings))
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.adapters.db.migrate import apply_migrations

    url = args.database_url or settings.database_url
    if not url:
        raise ConfigError(["DATABASE_URL is unset: `orchestrator migrate` applies migrations/ over direct Postgres"])
    applied = apply_migrations(url)
    if args.json:
        print(json.dumps({"applied": applied}))
    elif applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("nothing to apply: the database is up to date")
    return EXIT_OK


def cmd_sim(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.standins.emulator import serve_main

    argv: list[str] = ["--port", str(args.port), "--speed", str(args.speed)]
    if args.state_dir:
        argv += ["--state-dir", args.state_dir]
    if args.api_key:
        argv += ["--api-key", args.api_key]
    argv += [a for a in args.extra if a != "--"]
    return int(serve_main(argv) or 0)


def cmd_sim_run(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.studies import run as sim_run

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
    from orchestrator.loop.controller import Controller
    from orchestrator.wiring import make_database, make_provider

    settings.require(database=True, runpod=True)
    kw.setdefault("worker_env", settings.worker_env or {})
    return Controller(settings, make_database(settings), make_provider(settings), **kw)


def cmd_run(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.loop.daemon import Daemon
    from orchestrator.loop.metrics import MetricsServer

    # Logging is already set up by main(): the daemon's log is its product, JSON lines on stdout at
    # LOG_LEVEL, for the journal or a log pipeline.
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
    listen = settings.database_url if settings.database_backend == "postgres" else None
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
    from orchestrator.core.observed import Snapshot

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
    from orchestrator.core.observed import PodView
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
    pause = args.command == "pause"
    row = _with_db(settings, lambda db: db.set_paused(pause, _operator(), getattr(args, "reason", None)))
    if args.json:
        _print_json(row if isinstance(row, dict) else {"paused": pause})
    else:
        print("spawning paused; healing, draining and termination continue" if pause else "spawning resumed")
    return EXIT_OK


def cmd_workers(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.render import termination_row

    row = _with_db(settings, lambda db: db.request_termination(args.worker_id, _operator()))
    answer = termination_row(args.worker_id, row if isinstance(row, dict) else {})
    if args.json:
        _print_json(answer)
    else:
        print(
            f"termination requested for {args.worker_id} (state {answer['status']}); "
            "the next tick drains it and terminates its pod"
        )
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
    if args.json:
        # The remote output as it came: it is the pod's, and the operator asked for it.
        answer = {"worker_id": worker.id, "runpod_id": worker.runpod_id, "exit_code": int(code), "stdout": out, "stderr": err}
        print(json.dumps(answer))
    else:
        sys.stdout.write(out)
        sys.stderr.write(err)
    return int(code)


def _closing(provider: Any, call: Callable[[Any], Any]) -> Any:
    try:
        return call(provider)
    finally:
        close = getattr(provider, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()


def cmd_gpus(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.wiring import make_provider

    if args.json:
        from orchestrator.render import gpus_rows

        def rows(client: Any) -> dict[str, Any]:
            gpus = client.list_gpu_types(with_availability=True)
            return {"transport": client.transport.name, "gpu_types": gpus_rows(gpus, client.gpu_types)}

        _print_json(_closing(make_provider(settings), rows))
    else:
        from orchestrator.render import format_gpus

        print(_closing(make_provider(settings), format_gpus))
    return EXIT_OK


def cmd_volumes(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.wiring import make_provider

    if args.json:
        from orchestrator.core.errors import RunpodError
        from orchestrator.render import volumes_rows

        def rows(client: Any) -> dict[str, Any]:
            volumes = client.list_network_volumes(fresh=True)
            gpus, problem = None, None
            if client.storage_names:
                try:
                    gpus = client.list_gpu_types(with_availability=True)
                except RunpodError as exc:
                    problem = f"{type(exc).__name__}: {exc}"[:200]
            return volumes_rows(volumes, client.storage_names, client.gpu_types, gpus, problem)

        _print_json(_closing(make_provider(settings), rows))
    else:
        from orchestrator.render import format_volumes

        print(_closing(make_provider(settings), format_volumes))
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
    from orchestrator.adapters.db import migrate

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
        checks.append(Check("database: orchestrator functions", OK, f"orch_snapshot answers ({workers} live workers) over {settings.database_backend}"))
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


def _doctor_config(settings: config_mod.Settings) -> list[Check]:
    """What the configuration ignored (misspelt names, lines that are not NAME=value): warnings."""
    return [
        Check(f"config: {w.fields.get('name') or w.fields.get('file') or w.event}", WARN, w.message)
        for w in settings.warnings
    ]


def run_doctor(settings: config_mod.Settings) -> list[Check]:
    """Every check, in the order an operator fixes them: configuration, database, worker API, Runpod, SSH."""
    import httpx

    checks = _doctor_config(settings)
    with httpx.Client(timeout=DOCTOR_HTTP_TIMEOUT) as client:
        checks += _doctor_database(settings, client)
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


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps prose as usual but keeps the example block (lines indented by two spaces) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        blocks = []
        for block in text.split("\n\n"):
            if block.startswith("example") or block.startswith("  "):
                blocks.append("\n".join(indent + line for line in block.splitlines()))
            else:
                blocks.append(super()._fill_text(block, width, indent))
        return "\n\n".join(blocks)


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--env-file`` and ``-v``, taken before the command or after it (the later one wins)."""
    # Below the top level the defaults are SUPPRESS, so a subcommand that is not given the option keeps
    # the value parsed before it instead of overwriting it with its own default.
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        default=None if top else argparse.SUPPRESS,
        help=f"env file to read (NAME=value lines; the environment wins over it). Default: ./{DEFAULT_ENV_FILE} "
        "when present; a file named here must exist (exit 2 otherwise)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top else argparse.SUPPRESS,
        help="log INFO lines on stderr (-vv: DEBUG); one-off commands log only warnings and errors otherwise",
    )


def _command(
    sub: Any,
    name: str,
    summary: str,
    examples: Sequence[str],
    *,
    details: str = "",
    handler: Handler | None = None,
    needs: tuple[str, ...] = (),
    json_help: str | None = None,
) -> argparse.ArgumentParser:
    """One subcommand: a one-line summary (its line in ``orchestrator --help`` and the first line of its
    own ``--help``), optional details, and examples that a test parses with this very parser."""
    epilog = "example" + ("s" if len(examples) > 1 else "") + ":\n" + "\n".join(f"  {e}" for e in examples)
    p = sub.add_parser(
        name,
        help=summary,
        description=summary + (f"\n\n{details}" if details else ""),
        epilog=epilog,
        formatter_class=_HelpFormatter,
    )
    _common_options(p, top=False)
    if json_help is not None:
        p.add_argument("--json", action="store_true", help=json_help)
    if handler is not None:
        p.set_defaults(handler=handler, needs=needs)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Keeps the right number of Runpod GPU pods alive for a Supabase task queue.",
        epilog="Run `orchestrator COMMAND --help` for a command's options and an example.\n\n"
        "Exit codes: 0 ok, 1 failed, 2 invalid configuration or usage, 3 lease held elsewhere, 130 interrupted.\n\n"
        "examples:\n"
        "  orchestrator --env-file /etc/orchestrator/orchestrator.env config\n"
        "  orchestrator status --json",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    _common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(
        sub, "config", "print every setting, its effective value and where it came from (secrets masked)",
        ["orchestrator config --env-file /etc/orchestrator/orchestrator.env", "orchestrator config --json | jq .warnings"],
        details="The first lines say which sources were read, the winning one first (the environment, then the "
        "env file, then the defaults), and warn about names that look like misspelt settings.",
        handler=cmd_config, json_help="one JSON document: {precedence, files, warnings, settings: [{name, group, source, value, secret}]}",
    )
    p.set_defaults(shows_warnings=True)

    p = _command(
        sub, "migrate", "apply migrations/ to DATABASE_URL (a no-op when up to date)",
        ["orchestrator migrate --database-url postgresql://postgres@127.0.0.1:5432/postgres"],
        details="Refuses an applied file that has changed since.",
        handler=cmd_migrate, json_help='one JSON document: {"applied": [file names applied now]}',
    )
    p.add_argument("--database-url", default=None, help="override DATABASE_URL")

    p = _command(
        sub, "sim", "offline stand-ins: `sim serve` runs the Runpod emulator, `sim run` replays traffic",
        ["orchestrator sim serve --port 8765 --speed 20", "orchestrator sim run --trace bursty --json"],
    )
    sim_sub = p.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")
    s = _command(
        sim_sub, "serve", "run the Runpod emulator (REST v2 and GraphQL) until interrupted",
        ["orchestrator sim serve --port 8765 --speed 20 --api-key rehearsal"],
        details="Prints its base URL on stdout; point RUNPOD_API_BASE_URL at it.",
        handler=cmd_sim,
    )
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--speed", type=float, default=1.0, help="boot-time divisor: 10 makes boots 10x faster")
    s.add_argument("--state-dir", default=None)
    s.add_argument("--api-key", default=None, help="accept only this key (default: any non-empty key)")
    s.add_argument("extra", nargs=argparse.REMAINDER, help="fault knobs and --capacity, as `python -m orchestrator.standins.emulator --help` lists")
    s = _command(
        sim_sub, "run", "replay a trace in virtual time: cost and task waits of your settings vs other policies",
        ["orchestrator sim run --trace bursty --policy ours original --set MAX_ACTIVE_GPUS=4"],
        details="Replays a trace of task arrivals against scaling policies in virtual time (seconds for a day) "
        "and prints each policy's cost, GPU-hours and task waits. `ours` is your configuration (environment, .env, "
        "then --set). See docs/operations.md, 'Replaying traffic with `orchestrator sim run`'.",
        handler=cmd_sim_run, json_help="one JSON document: trace -> policy -> metric",
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

    p = _command(
        sub, "doctor", "pre-flight: is everything the daemon and the real worker need there? (exit 0 only when it is)",
        ["orchestrator doctor", "orchestrator doctor --json | jq '.checks[] | select(.status != \"ok\")'"],
        details="Checks, without changing anything: the configuration's names, the database (our migrations, the "
        "worker's heartbeat RPC and claim function, the app's Edge Functions answering with the workers' token), "
        "the Runpod key, GPU types and network volumes, and the SSH key files. Exit 0 when nothing is missing, "
        "1 otherwise.",
        handler=cmd_doctor, json_help="one JSON document: {ok, checks: [{check, status, detail}]}",
    )
    p.set_defaults(shows_warnings=True)

    _command(
        sub, "run", "the daemon: tick every ORCHESTRATOR_POLL_SEC until SIGTERM",
        ["orchestrator --env-file /etc/orchestrator/orchestrator.env run"],
        details="Logs one JSON line per event on stdout at LOG_LEVEL; SIGTERM finishes the tick, releases the "
        "lease and exits 0.",
        handler=cmd_run, needs=DAEMON_NEEDS,
    )

    p = _command(
        sub, "tick", "run one cycle now and print its JSON summary (exit 3 when another orchestrator leads)",
        ["orchestrator tick --wait 60"],
        handler=cmd_tick, needs=DAEMON_NEEDS, json_help="accepted for symmetry: the summary is always one JSON line",
    )
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the tick's slow actions (SSH)")

    _command(
        sub, "plan", "dry run: the actions and reasons a tick would take now, changing nothing",
        ["orchestrator plan", "orchestrator plan --json | jq .actions"],
        handler=cmd_plan, needs=DAEMON_NEEDS, json_help="one JSON document: the plan, its actions and their reasons",
    )

    _command(
        sub, "status", "the fleet: workers, states, ages, heartbeats, tasks, cost; the queue",
        ["orchestrator status", "orchestrator status --json | jq .queue"],
        handler=cmd_status, needs=DB_NEEDS, json_help="one JSON document: {now, paused, queue, workers, spend_per_hr, spend_usd}",
    )

    _command(
        sub, "pods", "the provider's pods beside the database's workers, orphans marked",
        ["orchestrator pods --json | jq '.[] | select(.orphan)'"],
        handler=cmd_pods, needs=DB_NEEDS, json_help="one JSON array: a row per pod (and per worker whose pod is gone)",
    )

    p = _command(
        sub, "events", "the newest orchestrator events",
        ["orchestrator events --limit 200 --worker gpu-20261129_101500-1a2b3c4d"],
        handler=cmd_events, needs=DB_NEEDS, json_help="one JSON array of events, newest first",
    )
    p.add_argument("--limit", type=_events_limit, default=50, help=f"1 to {EVENTS_LIMIT_MAX} (default: 50)")
    p.add_argument("--worker", default=None, help="only this worker's events")

    p = _command(
        sub, "pause", "stop spawning (healing, draining and termination go on)",
        ['orchestrator pause --reason "image rollout"'],
        handler=cmd_pause, needs=DB_NEEDS, json_help="one JSON document: the pause switch as the database now has it",
    )
    p.add_argument("--reason", default=None)
    _command(
        sub, "resume", "allow spawning again",
        ["orchestrator resume --json"],
        handler=cmd_pause, needs=DB_NEEDS, json_help="one JSON document: the pause switch as the database now has it",
    )

    p = _command(
        sub, "workers", "operate on one worker",
        ["orchestrator workers terminate gpu-20261129_101500-1a2b3c4d"],
    )
    w_sub = p.add_subparsers(dest="workers_command", required=True, metavar="ACTION")
    w = _command(
        w_sub, "terminate", "drain the worker and terminate its pod (the next tick does it)",
        ["orchestrator workers terminate gpu-20261129_101500-1a2b3c4d --json"],
        handler=cmd_workers, needs=DB_NEEDS,
        json_help="one JSON document: {worker_id, status, terminate_requested_at, terminate_requested_by}",
    )
    w.add_argument("worker_id")

    p = _command(
        sub, "ssh", "run a command on a worker's pod (host key pinned): orchestrator ssh ID -- CMD",
        ["orchestrator ssh gpu-20261129_101500-1a2b3c4d --timeout 30 -- nvidia-smi"],
        details="Everything after `--` is the remote command. Its stdout and stderr are passed through and its "
        "exit code is the command's.",
        handler=cmd_ssh, needs=DB_NEEDS, json_help="one JSON document: {worker_id, runpod_id, exit_code, stdout, stderr}",
    )
    p.add_argument("worker_id")
    p.add_argument("cmd", nargs="*", metavar="-- CMD")
    p.add_argument("--timeout", type=float, default=60.0)

    _command(
        sub, "gpus", "GPU types: memory, price, availability",
        ["orchestrator gpus", "orchestrator gpus --json | jq '.gpu_types[] | select(.priority != null)'"],
        handler=cmd_gpus, json_help="one JSON document: {transport, gpu_types: [...]}, cheapest first",
    )
    _command(
        sub, "volumes", "network volumes: name, size, data center, usable now",
        ["orchestrator volumes --json"],
        handler=cmd_volumes, json_help="one JSON document: {storage_names, gpu_stock_error, volumes: [...]}",
    )

    p = _command(
        sub, "demo", "the whole system offline: Postgres, the emulator, the daemon, a stream of tasks",
        ["orchestrator demo --tasks 12 --max-gpus 2"],
        handler=cmd_demo, json_help="end with one JSON line of totals (no live table)",
    )
    p.add_argument("--tasks", type=int, default=24)
    p.add_argument("--max-gpus", type=int, default=4)
    p.add_argument("--timeout", type=float, default=600.0)

    return parser


def examples(parser: argparse.ArgumentParser) -> list[str]:
    """Every example of every command's ``--help`` (the tests parse each one)."""
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                text = child.epilog or ""
                found += [line.strip() for line in text.splitlines() if line.startswith("  orchestrator ")]
                found += examples(child)
    return found


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, raising SystemExit (argparse's habit) on bad usage or after ``--help``/``--version``."""
    words = list(sys.argv[1:] if argv is None else argv)
    # `ssh ID [options] -- CMD`: everything after the first `--` is the remote command, options and all;
    # argparse alone would hand the options before `--` to the command instead.
    if "--" in words:
        cut = words.index("--")
        head, tail = words[:cut], words[cut + 1 :]
        args, unknown = parser.parse_known_args(head)
        if args.command == "ssh":
            if unknown:
                parser.error(f"unrecognized arguments: {' '.join(unknown)}")
            args.cmd = [*args.cmd, *tail]
            return args
    # `sim serve` forwards the emulator's own options (fault knobs, --capacity) untouched; every
    # other command, `sim run` included, refuses what it does not know.
    args, unknown = parser.parse_known_args(words)
    if unknown and getattr(args, "sim_command", None) == "serve":
        args.extra = [*unknown, *args.extra]
    elif unknown and args.command == "ssh":
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (the remote command goes after `--`: orchestrator ssh ID -- CMD)")
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _log_warnings(settings: config_mod.Settings) -> None:
    """One warning line per thing the configuration ignored (names and line numbers, never values)."""
    log = structlog.get_logger(__name__)
    for warning in settings.warnings:
        f = warning.fields
        # Spelt out per event so that the event names and their fields reach the documented table.
        if warning.event == "config_unknown_variable":
            log.warning("config_unknown_variable", name=f["name"], source=f["source"], suggestion=f["suggestion"])
        elif warning.event == "config_env_file_duplicate":
            log.warning("config_env_file_duplicate", file=f["file"], name=f["name"], lines=f["lines"])
        else:
            log.warning("config_env_file_line_ignored", file=f.get("file"), line=f.get("line"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parse_args(parser, argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help and --version
        return int(exc.code or 0)
    handler: Handler = args.handler
    try:
        settings = _settings(args)
        from orchestrator.logs import command_level, configure_logging

        daemon = args.command == "run"
        configure_logging(
            settings,
            stream=sys.stdout if daemon else sys.stderr,
            level=command_level(settings.log_level, daemon=daemon, verbosity=args.verbose),
        )
        if not getattr(args, "shows_warnings", False):
            _log_warnings(settings)
        return handler(args, settings)
    except ConfigError as exc:
        # Notes are the names that look like misspelt settings: often the cause of the problems above.
        for note in getattr(exc, "__notes__", ()):
            print(f"orchestrator: warning: {note}", file=sys.stderr)
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
