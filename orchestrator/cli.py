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
import json
import sys
from collections.abc import Callable, Sequence
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
