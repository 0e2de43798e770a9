"""The ``orchestrator`` command: the daemon, one-off operations and the offline rehearsal tools.

Sits at the top of the design: it reads the settings once and hands them to the command's handler.
This module holds what every command shares: the argument parser (each subcommand wired to its
handler with ``handler=``), the settings check, logging set-up and the mapping of failures to exit
codes in ``main``. The handlers live by what they do: ``fleet_commands`` runs and operates the live
fleet, ``setup_commands`` prepares and rehearses a deployment; ``cli_contract`` holds the exit codes
and the JSON printer they share. Heavy imports happen inside each handler so that ``orchestrator
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
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from orchestrator.cli_contract import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LEASE, EXIT_OK
from orchestrator.core import config as config_mod
from orchestrator.core.errors import ConfigError, LeaseLost, OrchestratorError
from orchestrator.fleet_commands import (
    cmd_events,
    cmd_gpus,
    cmd_pause,
    cmd_plan,
    cmd_pods,
    cmd_run,
    cmd_ssh,
    cmd_status,
    cmd_tick,
    cmd_volumes,
    cmd_workers,
)
from orchestrator.setup_commands import cmd_config, cmd_demo, cmd_doctor, cmd_migrate, cmd_sim, cmd_sim_run

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
        project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())[
            "project"
        ]
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
        require_ssh=getattr(args, "command", None) in FLEET_COMMANDS,
    )


EVENTS_LIMIT_MAX = 10000  # orch_events refuses more


def _events_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a whole number from 1 to {EVENTS_LIMIT_MAX}"
        ) from None
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


# What each command needs configured, checked together with the values (one report, exit 2).
DAEMON_NEEDS = ("database", "runpod")
DB_NEEDS = ("database",)
RUNPOD_NEEDS = ("runpod",)


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
        help="log INFO lines (-vv: DEBUG), on stderr for a one-off command (which otherwise logs only warnings and errors) and on stdout for the daemon (run)",
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
        sub,
        "config",
        "print every setting, its effective value and where it came from (secrets masked)",
        [
            "orchestrator config --env-file /etc/orchestrator/orchestrator.env",
            "orchestrator config --json | jq .warnings",
        ],
        details="The first lines say which sources were read, the winning one first (the environment, then the "
        "env file, then the defaults), and warn about names that look like misspelt settings.",
        handler=cmd_config,
        json_help="one JSON document: {precedence, files, warnings, settings: [{name, group, source, value, secret}]}",
    )
    p.set_defaults(shows_warnings=True)

    p = _command(
        sub,
        "migrate",
        "apply migrations/ to DATABASE_URL (a no-op when up to date)",
        ["orchestrator migrate --database-url postgresql://postgres@127.0.0.1:5432/postgres"],
        details="Refuses an applied file that has changed since.",
        handler=cmd_migrate,
        json_help='one JSON document: {"applied": [file names applied now]}',
    )
    p.add_argument("--database-url", default=None, help="override DATABASE_URL")

    p = _command(
        sub,
        "sim",
        "offline stand-ins: `sim serve` runs the Runpod emulator, `sim run` replays traffic",
        ["orchestrator sim serve --port 8765 --speed 20", "orchestrator sim run --trace bursty --json"],
    )
    sim_sub = p.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")
    s = _command(
        sim_sub,
        "serve",
        "run the Runpod emulator (REST v2 and GraphQL) until interrupted",
        ["orchestrator sim serve --port 8765 --speed 20 --api-key rehearsal"],
        details="Prints its base URL on stdout; point RUNPOD_API_BASE_URL at it.",
        handler=cmd_sim,
    )
    s.add_argument("--port", type=_port, default=8765)
    s.add_argument(
        "--speed", type=_positive_float, default=1.0, help="boot-time divisor: 10 makes boots 10x faster"
    )
    s.add_argument("--state-dir", default=None)
    s.add_argument("--api-key", default=None, help="accept only this key (default: any non-empty key)")
    s.add_argument(
        "extra",
        nargs=argparse.REMAINDER,
        help="fault knobs and --capacity, as `python -m orchestrator.standins.emulator --help` lists",
    )
    s = _command(
        sim_sub,
        "run",
        "replay a trace in virtual time: cost and task waits of your settings vs other policies",
        ["orchestrator sim run --trace bursty --policy ours original --set MAX_ACTIVE_GPUS=4"],
        details="Replays a trace of task arrivals against scaling policies in virtual time (seconds for a day) "
        "and prints each policy's cost, GPU-hours and task waits. `ours` is your configuration (environment, .env, "
        "then --set). See docs/operations.md, 'Replaying traffic with `orchestrator sim run`'.",
        handler=cmd_sim_run,
        json_help="one JSON document: trace -> policy -> metric",
    )
    s.add_argument(
        "--trace",
        default="steady",
        metavar="NAME_OR_CSV",
        help="steady, bursty, diurnal, spike, heavy_tail, long_tasks, or a CSV file with columns id,at,duration,task_type (default: steady)",
    )
    s.add_argument(
        "--policy",
        dest="policies",
        action="extend",
        nargs="+",
        default=None,
        metavar="NAME",
        help="ours, ours_min2, original, original_min2, serverless, static, oracle (default: ours original serverless oracle)",
    )
    s.add_argument(
        "--set",
        dest="changes",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a setting for `ours` (and ours_min2) only; repeatable",
    )
    s.add_argument(
        "--seeds",
        type=_positive_int,
        default=1,
        help="simulation seeds per policy; means are shown (default: 1)",
    )

    p = _command(
        sub,
        "doctor",
        "pre-flight: is everything the daemon and the real worker need there? (exit 0 only when it is)",
        ["orchestrator doctor", "orchestrator doctor --json | jq '.checks[] | select(.status != \"ok\")'"],
        details="Checks, without changing anything: the configuration's names, the database (our migrations, the "
        "worker's heartbeat RPC and claim function, the app's Edge Functions answering with the workers' token), "
        "the Runpod key, GPU types and network volumes, and the SSH key files. Exit 0 when nothing is missing, "
        "1 otherwise.",
        handler=cmd_doctor,
        json_help="one JSON document: {ok, checks: [{check, status, detail}]}",
    )
    p.set_defaults(shows_warnings=True)

    _command(
        sub,
        "run",
        "the daemon: tick every ORCHESTRATOR_POLL_SEC until SIGTERM",
        ["orchestrator --env-file /etc/orchestrator/orchestrator.env run"],
        details="Logs one JSON line per event on stdout at LOG_LEVEL; SIGTERM finishes the tick, releases the "
        "lease and exits 0.",
        handler=cmd_run,
        needs=DAEMON_NEEDS,
    )

    p = _command(
        sub,
        "tick",
        "run one cycle now and print its JSON summary (exit 3 when another orchestrator leads)",
        ["orchestrator tick --wait 60"],
        handler=cmd_tick,
        needs=DAEMON_NEEDS,
        json_help="accepted for symmetry: the summary is always one JSON line",
    )
    p.add_argument(
        "--wait",
        type=_positive_float,
        default=120.0,
        help="seconds to wait for the tick's slow actions (SSH)",
    )

    _command(
        sub,
        "plan",
        "dry run: the actions and reasons a tick would take now, changing nothing",
        ["orchestrator plan", "orchestrator plan --json | jq .actions"],
        handler=cmd_plan,
        needs=DAEMON_NEEDS,
        json_help="one JSON document: the plan, its actions and their reasons",
    )

    _command(
        sub,
        "status",
        "the fleet: workers, states, ages, heartbeats, tasks, cost; the queue",
        ["orchestrator status", "orchestrator status --json | jq .queue"],
        handler=cmd_status,
        needs=DB_NEEDS,
        json_help="one JSON document: {now, paused, queue, workers, pool, spend_per_hr, spend_usd}",
    )

    _command(
        sub,
        "pods",
        "the provider's pods beside the database's workers, orphans marked",
        ["orchestrator pods --json | jq '.[] | select(.orphan)'"],
        handler=cmd_pods,
        needs=DAEMON_NEEDS,
        json_help="one JSON array: a row per pod (and per worker whose pod is gone)",
    )

    p = _command(
        sub,
        "events",
        "the newest orchestrator events",
        ["orchestrator events --limit 200 --worker gpu-20261129_101500-1a2b3c4d"],
        handler=cmd_events,
        needs=DB_NEEDS,
        json_help="one JSON array of events, newest first",
    )
    p.add_argument("--limit", type=_events_limit, default=50, help=f"1 to {EVENTS_LIMIT_MAX} (default: 50)")
    p.add_argument("--worker", default=None, help="only this worker's events")

    p = _command(
        sub,
        "pause",
        "stop spawning (healing, draining and termination go on)",
        ['orchestrator pause --reason "image rollout"'],
        handler=cmd_pause,
        needs=DB_NEEDS,
        json_help="one JSON document: the pause switch as the database now has it",
    )
    p.add_argument("--reason", default=None)
    _command(
        sub,
        "resume",
        "allow spawning again",
        ["orchestrator resume --json"],
        handler=cmd_pause,
        needs=DB_NEEDS,
        json_help="one JSON document: the pause switch as the database now has it",
    )

    p = _command(
        sub,
        "workers",
        "operate on one worker",
        ["orchestrator workers terminate gpu-20261129_101500-1a2b3c4d"],
    )
    w_sub = p.add_subparsers(dest="workers_command", required=True, metavar="ACTION")
    w = _command(
        w_sub,
        "terminate",
        "drain the worker and terminate its pod (the next tick does it)",
        ["orchestrator workers terminate gpu-20261129_101500-1a2b3c4d --json"],
        handler=cmd_workers,
        needs=DB_NEEDS,
        json_help="one JSON document: {worker_id, status, terminate_requested_at, terminate_requested_by}",
    )
    w.add_argument("worker_id")

    p = _command(
        sub,
        "ssh",
        "run a command on a worker's pod (host key pinned): orchestrator ssh ID -- CMD",
        ["orchestrator ssh gpu-20261129_101500-1a2b3c4d --timeout 30 -- nvidia-smi"],
        details="Everything after `--` is the remote command. Its stdout and stderr are passed through and its "
        "exit code is the command's.",
        handler=cmd_ssh,
        needs=DB_NEEDS,
        json_help="one JSON document: {worker_id, runpod_id, exit_code, stdout, stderr}",
    )
    p.add_argument("worker_id")
    p.add_argument("cmd", nargs="*", metavar="-- CMD")
    p.add_argument("--timeout", type=_positive_float, default=60.0)

    _command(
        sub,
        "gpus",
        "GPU types: memory, price, availability",
        ["orchestrator gpus", "orchestrator gpus --json | jq '.gpu_types[] | select(.priority != null)'"],
        handler=cmd_gpus,
        needs=RUNPOD_NEEDS,
        json_help="one JSON document: {transport, gpu_types: [...]}, cheapest first",
    )
    _command(
        sub,
        "volumes",
        "network volumes: name, size, data center, usable now",
        ["orchestrator volumes --json"],
        handler=cmd_volumes,
        needs=RUNPOD_NEEDS,
        json_help="one JSON document: {storage_names, gpu_stock_error, volumes: [...]}",
    )

    p = _command(
        sub,
        "demo",
        "the whole system offline: Postgres, the emulator, the daemon, a stream of tasks",
        ["orchestrator demo --tasks 12 --max-gpus 2"],
        handler=cmd_demo,
        json_help="end with one JSON line of totals (no live table)",
    )
    p.add_argument("--tasks", type=_positive_int, default=24)
    p.add_argument("--max-gpus", type=_positive_int, default=4)
    p.add_argument("--timeout", type=_positive_float, default=600.0)
    # The demo brings its own database, emulator and settings: a deployment's ./.env in the checkout (or
    # a broken one) has nothing to say to it, and read, one bad value there made `make run` exit 2.
    p.set_defaults(own_settings=True)

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
        parser.error(
            f"unrecognized arguments: {' '.join(unknown)} (the remote command goes after `--`: orchestrator ssh ID -- CMD)"
        )
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


# Warnings about what a value does to the running fleet: said by the commands that run it, not by every
# one-off command (`ssh` keeps its stderr for the remote command's).
FLEET_WARNINGS = frozenset(
    {
        "config_heartbeat_timeout_short",
        "config_worker_poll_slow",
        "config_secret_key_for_workers",
        "config_pods_without_keys",
        "config_transaction_pooler",
    }
)
FLEET_COMMANDS = frozenset({"run", "tick"})


def _log_warnings(settings: config_mod.Settings, *, runs_the_fleet: bool = True) -> None:
    """One warning line per thing the configuration ignored (names and line numbers, never values)."""
    log = structlog.get_logger(__name__)
    for warning in settings.warnings:
        f = warning.fields
        if warning.event in FLEET_WARNINGS and not runs_the_fleet:
            continue
        # Spelt out per event so that the event names and their fields reach the documented table.
        if warning.event == "config_unknown_variable":
            log.warning(
                "config_unknown_variable", name=f["name"], source=f["source"], suggestion=f["suggestion"]
            )
        elif warning.event == "config_heartbeat_timeout_short":
            log.warning("config_heartbeat_timeout_short", name=f["name"], value=f["value"], below=f["below"])
        elif warning.event == "config_worker_poll_slow":
            log.warning(
                "config_worker_poll_slow",
                name=f["name"],
                value=f["value"],
                wait_target_sec=f["wait_target_sec"],
            )
        elif warning.event == "config_secret_key_for_workers":
            log.warning("config_secret_key_for_workers", name=f["name"], prefix=f["prefix"])
        elif warning.event == "config_transaction_pooler":
            log.warning("config_transaction_pooler", name=f["name"], port=f["port"], detail=warning.message)
        elif warning.event == "config_pods_without_keys":
            log.warning("config_pods_without_keys", name=f["name"], detail=warning.message)
        elif warning.event == "config_private_key_unreadable":
            log.warning("config_private_key_unreadable", name=f["name"], uid=f["uid"], detail=warning.message)
        elif warning.event == "config_env_file_inline_comment":
            log.warning("config_env_file_inline_comment", file=f["file"], line=f["line"], name=f["name"])
        elif warning.event == "config_env_file_quoted_value":
            log.warning("config_env_file_quoted_value", file=f["file"], line=f["line"], name=f["name"])
        elif warning.event == "config_env_file_duplicate":
            log.warning("config_env_file_duplicate", file=f["file"], name=f["name"], lines=f["lines"])
        else:
            log.warning("config_env_file_line_ignored", file=f.get("file"), line=f.get("line"))


def _port(text: str) -> int:
    """argparse type: a TCP port (0 = any free one); a usage error (exit 2) otherwise."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0-65535)")
    return port


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured): nothing to silence
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parse_args(parser, argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help and --version
        return int(exc.code or 0)
    handler: Handler = args.handler
    try:
        from orchestrator.logs import configure_logging

        # Before the settings: a crash while reading them logs through the redacting set-up, never
        # structlog's default, which prints a traceback with every local variable's value.
        configure_logging(stream=sys.stderr, level="WARNING")
        if getattr(args, "own_settings", False):
            named = getattr(args, "env_file", None)
            if named is not None and not Path(named).exists():
                # It reads none, but a file named must exist, as for every command: a typo says so.
                raise ConfigError([f"--env-file {named}: no such file"])
            settings = config_mod.defaults()
        else:
            settings = _settings(args)
        from orchestrator.logs import command_level

        daemon = args.command == "run"
        configure_logging(
            settings,
            stream=sys.stdout if daemon else sys.stderr,
            level=command_level(settings.log_level, daemon=daemon, verbosity=args.verbose),
        )
        if not getattr(args, "shows_warnings", False):
            _log_warnings(settings, runs_the_fleet=args.command in FLEET_COMMANDS)
        code = handler(args, settings)
        sys.stdout.flush()  # here, where a reader gone early is handled, not at the interpreter's exit
        return code
    except ConfigError as exc:
        # Notes are the names that look like misspelt settings: often the cause of the problems above.
        from orchestrator.logs import redact

        for note in getattr(exc, "__notes__", ()):
            print(f"orchestrator: warning: {redact(note)}", file=sys.stderr)
        # Secret settings are masked in the problems already; a key pasted into another setting is
        # caught by its shape here.
        print(f"orchestrator: {redact(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except LeaseLost as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        return EXIT_LEASE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader closed the pipe (``orchestrator status | head -2``): it had what it wanted. Python's
        # final flush of stdout would fail again, so stdout goes to /dev/null first.
        _quiet_stdout()
        return EXIT_OK
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
