"""``orchestrator sim serve``: run the Runpod emulator in the foreground until SIGTERM or SIGINT.

Part of ``orchestrator/standins/emulator``. The project's CLI hands the words after ``sim serve`` to
:func:`serve_main`; ``python -m orchestrator.standins.emulator`` does the same. Every fault knob of
:class:`.faults.Faults` is also an option here (``--api-error-rate 0.1``, ``--boot-cold-s 60``,
``--rtt-ms 100`` to put the pods and the API 100 ms away ...),
and ``--capacity 'NVIDIA GeForce RTX 4090@EU-RO-1=3'`` sets stock per GPU type and data center.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from orchestrator.core.errors import ConfigError, OrchestratorError
from orchestrator.logs import configure_logging
from orchestrator.loop.daemon import stop_signals, wait_for_stop

from .faults import Faults
from .server import EmulatorServer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="orchestrator sim serve",
        description="Run a local Runpod (REST v2 + GraphQL) whose pods are SSH sandboxes.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--speed", type=float, default=1.0, help="boot delays are divided by this factor")
    p.add_argument("--state-dir", default=None, help="where volumes and pod dirs live (default: a temp dir)")
    p.add_argument("--api-key", default=None, help="accept only this key (default: any non-empty key)")
    p.add_argument(
        "--catalog",
        default=None,
        help="catalog JSON replacing orchestrator/standins/emulator/data/catalog.json",
    )
    p.add_argument("--log-level", default="INFO", help="log level of the emulator's own lines (to stderr)")
    p.add_argument(
        "--capacity",
        action="append",
        default=[],
        metavar="GPU@DC=N",
        help="total GPUs of a type in a data center (repeatable)",
    )
    knobs = p.add_argument_group("fault knobs (also settable at PATCH /_emulator/faults)")
    for f in fields(Faults):
        knobs.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f"knob_{f.name}",
            default=None,
            metavar="V",
            help=f"default {f.default}",
        )
    return p


def serve_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    faults = Faults()
    changes = {f.name: getattr(args, f"knob_{f.name}") for f in fields(Faults)}
    problems = faults.update({k: v for k, v in changes.items() if v is not None})
    capacity: list[tuple[str, str, int]] = []
    for item in args.capacity:
        try:
            where, n = item.rsplit("=", 1)
            gpu, dc = where.rsplit("@", 1)
            capacity.append((gpu, dc, int(n)))
        except ValueError:
            problems.append(f"--capacity {item!r}: expected GPU@DC=N")
    if problems:
        raise ConfigError(problems)
    # stdout carries only the base URL (scripts read it); logs go to stderr, the key masked in them.
    configure_logging(
        stream=sys.stderr, level=args.log_level, extra_secrets=[args.api_key] if args.api_key else []
    )
    server = EmulatorServer(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        speed=args.speed,
        state_dir=args.state_dir,
        catalog_path=args.catalog,
        faults=faults,
    )
    with stop_signals() as received:
        try:
            for gpu, dc, n in capacity:
                server.state.set_capacity(gpu, dc, n)
            try:
                base_url = server.start()
            except OSError as exc:
                # A taken port: one line and exit 1 (the operation failed), not a traceback.
                raise OrchestratorError(
                    f"--port {args.port}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
                ) from exc
            print(base_url, flush=True)
            wait_for_stop(received)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover - python -m orchestrator.standins.emulator.cli
    sys.exit(serve_main())
