"""``python -m orchestrator.standins.postgrest``: the PostgREST stand-in's server (see :mod:`.server`)."""

from __future__ import annotations

import sys

from orchestrator.standins.postgrest.server import serve

sys.exit(serve())
