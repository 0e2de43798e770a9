"""``python -m orchestrator.standins.worker``: the simulated worker process (see :mod:`.process`)."""

from __future__ import annotations

import sys

from orchestrator.standins.worker.process import main

sys.exit(main())
