"""``python -m orchestrator.standins.emulator``: the same as ``orchestrator sim serve`` (see :mod:`.cli`)."""

from __future__ import annotations

import sys

from .cli import serve_main

sys.exit(serve_main(sys.argv[1:]))
