"""The commands that prepare a deployment and rehearse it before it goes live: ``config`` (what is
set and where from), ``migrate`` (the schema), ``doctor`` (the pre-flight checks), ``sim serve`` and
``sim run`` (the Runpod emulator and the traffic replay) and ``demo`` (the whole system offline).

Each is a handler ``(args, settings) -> exit code`` that ``orchestrator.cli`` wires to its subcommand.
None of them touches a live fleet's pods; ``migrate`` is the only one that writes to the configured
database (the schema). Heavy imports stay inside each handler so that ``orchestrator config``
and ``orchestrator doctor`` still answer when a dependency of another command is broken.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.cli_contract import EXIT_FAILED, EXIT_OK, print_json
from orchestrator.core import config as config_mod
from orchestrator.core.errors import ConfigError, OrchestratorError


def cmd_config(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    if args.json:
        print_json(config_mod.to_json(settings))
    else:
        print(config_mod.render(settings))
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.adapters.db.migrate import apply_migrations

    url = args.database_url or settings.database_url
    if not url:
        raise ConfigError(
            ["DATABASE_URL is unset: `orchestrator migrate` applies migrations/ over direct Postgres"]
        )
    if args.database_url:
        # Checked as DATABASE_URL is, so the same value fails the same way (exit 2), not in libpq (exit 1).
        problem = config_mod.url_problem(
            "--database-url", url, ("postgres", "postgresql"), "a postgresql:// URL", libpq=True
        )
        if problem:
            raise ConfigError([problem])
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


def cmd_demo(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.demo import run_demo

    return run_demo(tasks=args.tasks, as_json=args.json, max_gpus=args.max_gpus, timeout=args.timeout)


# -- doctor: what a real deployment needs, checked before the daemon runs -----------------------------

# The app's Edge Functions the real worker calls on every task (banodoco/Reigh-Worker source/core/db).
WORKER_EDGE_FUNCTIONS = ("claim-next-task", "task-counts", "complete_task", "update-task-status")
# Called only by a parent (``*_orchestrator``) task's handler (Reigh-Worker
# source/task_handlers/travel/orchestrator.py, source/core/db/task_dependencies.py): missing, those tasks
# fail, the rest of the queue runs, so a warning.
PARENT_EDGE_FUNCTIONS = ("create-task", "get-orchestrator-children")
# The heartbeat guardian's body keys (banodoco/Reigh-Worker heartbeat_guardian.py): they select the
# function overload it calls.
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
        return Check(
            name,
            FAIL,
            f"missing: the database has no {function} taking the worker's arguments; apply migrations/",
        )
    if resp.status_code in (401, 403):
        return Check(
            name,
            FAIL,
            f"refused ({resp.status_code}): SUPABASE_SERVICE_ROLE_KEY is not this project's service key",
        )
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
    for function in (*WORKER_EDGE_FUNCTIONS, *PARENT_EDGE_FUNCTIONS):
        name = f"edge function: {function}"
        try:
            resp = client.options(f"{url}/functions/v1/{function}")
        except Exception as exc:
            checks.append(Check(name, FAIL, f"unreachable: {type(exc).__name__}: {exc}"[:300]))
            continue
        if resp.status_code in (200, 204):
            checks.append(Check(name, OK, "deployed (OPTIONS answered)"))
        elif resp.status_code == 404 and function in PARENT_EDGE_FUNCTIONS:
            checks.append(
                Check(
                    name, WARN, "not deployed (404): parent tasks (*_orchestrator) cannot make their children"
                )
            )
        elif resp.status_code == 404:
            checks.append(
                Check(name, FAIL, "not deployed (404): the real worker cannot claim, complete or fail tasks")
            )
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
        checks.append(
            Check(
                name,
                FAIL,
                f"{resp.status_code}: the function does not take SUPABASE_SERVICE_ROLE_KEY as the service role"
                + (
                    " (a new-style secret key: the app's Edge Functions take only the legacy service_role key)"
                    if key.startswith(config_mod.NEW_SECRET_KEY_PREFIX)
                    else ""
                ),
            )
        )
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

        cli_versions: set[str] | None = None
        try:
            with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=10) as conn:
                try:
                    recorded = migrate.applied(conn)
                except psycopg.errors.UndefinedTable:
                    cli_versions = _supabase_cli_versions(conn)
            how = "DATABASE_URL"
        except psycopg.Error as exc:
            return Check(name, FAIL, f"cannot read the ledger over DATABASE_URL: {str(exc).strip()[:200]}")
        if recorded is None:
            return _compare_with_supabase_cli(name, list(files), cli_versions)
    elif settings.supabase_url and settings.supabase_service_role_key:
        url, key = settings.supabase_url.rstrip("/"), settings.supabase_service_role_key
        try:
            resp = client.get(
                f"{url}/rest/v1/orchestrator_schema_migrations",
                params={"select": "filename,sha256"},
                headers=_rest_headers(key),
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
            parts.append(
                f"{len(pending)} not applied ({', '.join(pending[:3])}{', ...' if len(pending) > 3 else ''}): run `orchestrator migrate`"
            )
        if changed:
            parts.append(f"changed since applied: {', '.join(changed[:3])}")
        return Check(name, FAIL, "; ".join(parts))
    return Check(name, OK, f"all {len(files)} applied (read over {how})")


# The Supabase CLI's ledger: `supabase db push` records each file's version, the digits before its
# first "_", in a text column (supabase/cli, pkg/migration/history.go and file.go).
SUPABASE_CLI_LEDGER = "supabase_migrations.schema_migrations"


def _supabase_cli_versions(conn: Any) -> set[str] | None:
    """The versions the Supabase CLI recorded as applied, or None when it has no ledger here."""
    if conn.execute("select to_regclass(%s)", (SUPABASE_CLI_LEDGER,)).fetchone()[0] is None:
        return None
    return {str(row[0]) for row in conn.execute(f"select version from {SUPABASE_CLI_LEDGER}").fetchall()}


def _compare_with_supabase_cli(name: str, files: list[str], versions: set[str] | None) -> Check:
    """Our files against the CLI's ledger, for a database set up with `supabase db push`: by version
    only, since the CLI keeps no checksum."""
    if versions is None:
        # Without any ledger nothing says what was applied; orch_snapshot's own check fails when our
        # functions are missing, so this one only points at the way to know.
        return Check(
            name,
            WARN,
            f"no ledger: neither orchestrator_schema_migrations nor {SUPABASE_CLI_LEDGER} exists, so "
            "what is applied is unknown; apply migrations/ with `orchestrator migrate`",
        )
    pending = [f for f in files if f.split("_", 1)[0] not in versions]
    if pending:
        shown = ", ".join(pending[:3]) + (", ..." if len(pending) > 3 else "")
        return Check(
            name,
            FAIL,
            f"{len(pending)} not in the Supabase CLI's ledger ({shown}): copy them into "
            "supabase/migrations/ and `supabase db push`",
        )
    return Check(
        name,
        OK,
        f"all {len(files)} recorded by the Supabase CLI ({SUPABASE_CLI_LEDGER}, read over DATABASE_URL; "
        "by version, without checksums)",
    )


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
        checks.append(
            Check(
                "database: orchestrator functions",
                OK,
                f"orch_snapshot answers ({workers} live workers) over {settings.database_backend}",
            )
        )
    except Exception as exc:
        checks.append(
            Check(
                "database: orchestrator functions",
                FAIL,
                f"orch_snapshot failed: {type(exc).__name__}: {str(exc)[:250]}",
            )
        )
    checks.append(_doctor_migrations(settings, client))
    # What the workers will get: the settings, else WORKER_ENV's (config_mod.worker_credentials).
    creds, _ = config_mod.worker_credentials(settings.values)
    if creds["SUPABASE_URL"] and creds["SUPABASE_SERVICE_ROLE_KEY"]:
        url, key = creds["SUPABASE_URL"], creds["SUPABASE_SERVICE_ROLE_KEY"]
        heartbeat_args = {
            "worker_id_param": "orchestrator-doctor-probe",
            "vram_total_mb_param": "not-a-number",
            "vram_used_mb_param": 0,
            "logs_param": [],
            "status_param": "active",
        }
        checks.append(_probe_rpc(client, url, key, HEARTBEAT_RPC, heartbeat_args))
        checks.append(
            _probe_rpc(
                client,
                url,
                key,
                CLAIM_RPC,
                {"p_worker_id": "orchestrator-doctor-probe", "p_include_active": "not-a-boolean"},
            )
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
        Check(
            f"database: {fn}()",
            OK if fn in found else FAIL,
            "present" if fn in found else "missing: apply migrations/",
        )
        for fn in (HEARTBEAT_RPC, CLAIM_RPC)
    ]


def _doctor_runpod(settings: config_mod.Settings) -> list[Check]:
    try:
        settings.require(runpod=True)
    except ConfigError as exc:
        return [Check("runpod: configuration", FAIL, "; ".join(exc.problems))]
    from orchestrator.wiring import make_provider

    checks: list[Check] = []
    volumes = list(settings.runpod_storage_name or ())
    # Known without asking the API, so reported even when the key is refused: one round of fixes.
    known: list[Check] = []
    if not volumes:
        # The worker's checkout lives on the volume: against Runpod every pod would fail its check.
        # The emulator's pods carry a stand-in worker, so there it only deserves a look; so does a
        # checkout baked into the image, or workers started by hand, which `run` accepts too.
        needed = settings.auto_start_worker_process and config_mod.checkout_on_volume(
            settings.worker_dirs, settings.runpod_volume_mount_path
        )
        if needed:
            detail = "so no worker checkout (`orchestrator volumes` lists the account's volumes)"
        else:
            why = (
                "WORKER_DIRS are in the image"
                if settings.auto_start_worker_process
                else "workers started by hand"
            )
            detail = f"so nothing they write outlives them ({why}; models are fetched on every pod)"
        real = config_mod.targets_real_runpod(settings.runpod_api_base_url)
        known.append(
            Check(
                "runpod: network volume",
                FAIL if needed and real else WARN,
                f"RUNPOD_STORAGE_NAME unset: pods get no volume, {detail}",
            )
        )
    known.append(_doctor_worker_pin(settings))
    known.append(_doctor_spend_cap(settings))
    provider = make_provider(settings)
    try:
        try:
            gpus = provider.list_gpu_types(fresh=True)
        except Exception as exc:
            return [Check("runpod: API key", FAIL, f"{type(exc).__name__}: {str(exc)[:250]}"), *known]
        checks.append(
            Check(
                "runpod: API key",
                OK,
                f"accepted by {settings.runpod_api_base_url} ({len(gpus)} GPU types listed)",
            )
        )
        for gpu in settings.gpu_types:
            try:
                found = provider.resolve_gpu_type(gpu)
                checks.append(Check(f"runpod: GPU type {gpu}", OK, f"exists ({getattr(found, 'id', gpu)})"))
            except Exception as exc:
                checks.append(Check(f"runpod: GPU type {gpu}", FAIL, str(exc)[:250]))
        checks.extend(known)
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


def _doctor_spend_cap(settings: config_mod.Settings) -> Check:
    """Whether anything bounds the spend but MAX_ACTIVE_GPUS: a first start against a backlog may
    create that many pods at once, and a fault that keeps them billing is bounded only by the cap."""
    name = "runpod: spend cap"
    cap = settings.max_hourly_spend
    if cap > 0:
        return Check(name, OK, f"MAX_HOURLY_SPEND={cap:g} USD/h (MAX_ACTIVE_GPUS={settings.max_active_gpus})")
    status = WARN if config_mod.targets_real_runpod(settings.runpod_api_base_url) else OK
    return Check(
        name,
        status,
        f"MAX_HOURLY_SPEND unset: only MAX_ACTIVE_GPUS={settings.max_active_gpus} bounds the spend; set it "
        "a little above MAX_ACTIVE_GPUS times your GPU's price",
    )


def _doctor_worker_pin(settings: config_mod.Settings) -> Check:
    """Whether the checkout follows a branch whose head may no longer be a queue worker."""
    name = "worker: version"
    if settings.worker_git_commit:
        return Check(name, OK, f"pinned at {settings.worker_git_commit} (WORKER_GIT_COMMIT)")
    if not settings.auto_start_worker_process:
        return Check(
            name, OK, "started by hand (AUTO_START_WORKER_PROCESS=false): the checkout is not ours to move"
        )
    status = WARN if config_mod.targets_real_runpod(settings.runpod_api_base_url) else OK
    return Check(name, status, config_mod.unpinned_worker(settings.worker_git_branch))


def _doctor_ssh(settings: config_mod.Settings) -> list[Check]:
    import paramiko

    checks: list[Check] = []
    private = settings.runpod_ssh_private_key_path
    public = settings.runpod_ssh_public_key_path
    key: paramiko.PKey | None = None
    if not private:
        real = config_mod.targets_real_runpod(settings.runpod_api_base_url)
        checks.append(
            Check(
                "ssh: private key",
                FAIL if real else WARN,
                config_mod.SSH_KEY_REQUIRED
                if real
                else "RUNPOD_SSH_PRIVATE_KEY_PATH unset: pods are logged into with a password, which "
                "Runpod's images do not have (fine against the emulator only)",
            )
        )
    else:
        path = Path(str(private)).expanduser()
        try:
            key = paramiko.PKey.from_path(path)
            checks.append(Check("ssh: private key", OK, f"{path} readable ({key.get_name()})"))
        except Exception as exc:  # a passphrase raises TypeError, a file that is not a key ValueError
            checks.append(
                Check("ssh: private key", FAIL, config_mod.private_key_problem(str(path), exc)[:800])
            )
    if public:
        path = Path(str(public)).expanduser()
        try:
            text = path.read_text()
            pair = (key.get_name(), key.get_base64()) if key is not None else None
            problem = config_mod.public_key_problem(str(path), text, pair, str(private))
        except (OSError, ValueError) as exc:
            problem = f"{path}: {type(exc).__name__}: {exc}"[:300]
        if problem is not None:
            checks.append(Check("ssh: public key", FAIL, problem))
        else:
            matched = " (matches the private key)" if key is not None else ""
            checks.append(Check("ssh: public key", OK, f"{path} readable ({text.split()[0]}){matched}"))
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
    verdict = (
        "ready: everything the daemon and the real worker need is there"
        if not failed
        else f"NOT READY: {failed} problem(s)"
    )
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
