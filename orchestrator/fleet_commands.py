"""The commands that run or operate the live fleet: the daemon, one tick, a dry run, the operator's views
(status, pods, events, GPU types, volumes) and actions (pause, resume, terminate a worker, ssh).

Each is a handler ``(args, settings) -> exit code`` that ``orchestrator.cli`` wires to its subcommand;
the settings arrive loaded, with what the command needs already checked. They read and write the same
database and Runpod account as the daemon, through ``orchestrator.wiring``. Heavy imports stay inside
each handler so that a broken dependency of one command never stops another (``orchestrator config``
above all).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from orchestrator.cli_contract import EXIT_CONFIG, EXIT_FAILED, EXIT_LEASE, EXIT_OK, print_json
from orchestrator.core import config as config_mod
from orchestrator.core.errors import OrchestratorError

# -- the daemon and what one tick would do ------------------------------------------------------------


def _controller(settings: config_mod.Settings, *, logs_into_pods: bool = True, **kw: Any) -> Any:
    from orchestrator.loop.controller import Controller
    from orchestrator.wiring import make_database, make_provider

    # `plan` only reads: it needs no key to log into pods with.
    settings.require(database=True, runpod=True, ssh=logs_into_pods)
    kw.setdefault("worker_env", settings.worker_env or {})
    return Controller(settings, make_database(settings), make_provider(settings), **kw)


def metrics_server(settings: config_mod.Settings, metrics: Any) -> Any:
    """The /metrics and /healthz endpoint the settings ask for (not started)."""
    from orchestrator.loop.metrics import MetricsServer

    return MetricsServer(
        metrics,
        settings.metrics_port,
        max_tick_age=max(3 * settings.orchestrator_poll_sec, 60.0),
        host=settings.metrics_host or "127.0.0.1",
    )


def cmd_run(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.loop.daemon import Daemon

    # Logging is already set up by main(): the daemon's log is its product, JSON lines on stdout at
    # LOG_LEVEL, for the journal or a log pipeline.
    controller = _controller(settings)
    server = None
    if settings.metrics_port:
        try:
            server = metrics_server(settings, controller.metrics).start()
        except OrchestratorError as exc:
            # The fleet matters more than its scrape target: exiting over a taken port (node_exporter
            # also defaults to 9100) would leave the pods billing with nobody managing them.
            import structlog

            log = structlog.get_logger(__name__)
            log.error(
                "metrics_server_failed",
                host=settings.metrics_host or "127.0.0.1",
                port=settings.metrics_port,
                error=str(exc),
                running_without="/metrics and /healthz",
            )
    # LISTEN through the transaction pooler hears nothing: the probe wakes the daemon there instead.
    listen = (
        settings.database_url
        if settings.database_backend == "postgres"
        and not config_mod.transaction_pooler(settings.database_url)
        else None
    )
    daemon = Daemon(
        controller,
        settings.orchestrator_poll_sec,
        listen_url=listen,
        follower_interval=min(settings.orchestrator_poll_sec, settings.lease_ttl_sec / 4),
        probe=controller.db.queue_probe,
        probe_interval=settings.wake_probe_sec,
    )
    try:
        code = daemon.run_forever()
    finally:
        if server is not None:
            server.stop()
    if daemon.stalled:
        # The hung tick's threads (an SSH command, a pool worker) would hold the interpreter's exit,
        # which joins them: leave now, for the supervisor to restart the daemon.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def cmd_tick(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    controller = _controller(settings)
    try:
        result = controller.tick()
        controller.wait_idle(timeout=args.wait)
    finally:
        controller.shutdown()
    print(json.dumps(result.summary, default=str))
    if result.role == "follower":
        print(
            "orchestrator: another orchestrator holds the lease; this tick changed nothing", file=sys.stderr
        )
        return EXIT_LEASE
    return EXIT_OK if result.role == "leader" else EXIT_FAILED


def cmd_plan(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    controller = _controller(settings, logs_into_pods=False)
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


# -- the database's view of the fleet, and the operator's switches on it ------------------------------


def _with_db(settings: config_mod.Settings, call: Callable[[Any], Any]) -> Any:
    """One operator call on a database connection that is closed afterwards."""
    from orchestrator.wiring import make_database

    db = make_database(settings)
    try:
        return call(db)
    finally:
        db.close()


def _snapshot(settings: config_mod.Settings) -> Any:
    """The snapshot, each of its problems said on stderr as the daemon logs them: a row it could not read
    is left out of the tables, and without a word the operator saw a fleet without that worker."""
    import structlog

    from orchestrator.core.observed import Snapshot

    snapshot = Snapshot.from_json(_with_db(settings, lambda db: db.snapshot(settings.worker_id_prefix)))
    for problem in snapshot.problems:
        structlog.get_logger(__name__).warning("snapshot_row_skipped", problem=problem)
    return snapshot


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
    import structlog

    from orchestrator.render import render_events

    answer = _with_db(settings, lambda db: db.events(args.limit, args.worker))
    log = structlog.get_logger(__name__)
    if not isinstance(answer, list):
        log.error("events_unreadable", answer=repr(answer)[:200])
        return EXIT_FAILED
    events = [e for e in answer if isinstance(e, dict)]
    if len(events) < len(answer):
        # One entry the database returned in another shape must not hide the others.
        log.warning("events_entries_skipped", skipped=len(answer) - len(events))
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
        print_json(row if isinstance(row, dict) else {"paused": pause})
    else:
        print("spawning paused; healing, draining and termination continue" if pause else "spawning resumed")
    return EXIT_OK


def cmd_workers(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.render import termination_row

    prefix = settings.worker_id_prefix
    if prefix and not args.worker_id.startswith(prefix):
        # The snapshot lists only this orchestrator's rows (WORKER_ID_PREFIX): a request recorded on
        # another's would say "requested" and never be acted on.
        print(
            f"orchestrator: {args.worker_id!r} is not one of this orchestrator's workers (their ids start "
            f"with WORKER_ID_PREFIX={prefix!r}): no tick would act on it; nothing was recorded",
            file=sys.stderr,
        )
        return EXIT_FAILED
    row = _with_db(settings, lambda db: db.request_termination(args.worker_id, _operator()))
    answer = termination_row(args.worker_id, row if isinstance(row, dict) else {})
    if args.json:
        print_json(answer)
    else:
        print(
            f"termination requested for {args.worker_id} (state {answer['status']}); "
            "the next tick drains it and terminates its pod"
        )
    return EXIT_OK


# -- the provider: a worker's pod, GPU types, network volumes -----------------------------------------


def cmd_ssh(args: argparse.Namespace, settings: config_mod.Settings) -> int:
    from orchestrator.wiring import make_provider

    snapshot = _snapshot(settings)
    worker = next(
        (w for w in snapshot.workers if w.id == args.worker_id or w.runpod_id == args.worker_id), None
    )
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
        answer = {
            "worker_id": worker.id,
            "runpod_id": worker.runpod_id,
            "exit_code": int(code),
            "stdout": out,
            "stderr": err,
        }
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

        print_json(_closing(make_provider(settings), rows))
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

        print_json(_closing(make_provider(settings), rows))
    else:
        from orchestrator.render import format_volumes

        print(_closing(make_provider(settings), format_volumes))
    return EXIT_OK
