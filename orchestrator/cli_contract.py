"""What every ``orchestrator`` command promises whoever runs it: its exit code and how it prints JSON.

A leaf under the command line: ``cli.py`` (the parser and ``main``) and the command modules
(``fleet_commands.py``, ``setup_commands.py``) all use it, and it imports none of them. The command
modules cannot take these from ``cli.py`` itself: ``python -m orchestrator.cli`` runs that file as
``__main__``, so importing ``orchestrator.cli`` back would load the parser a second time.

Exit codes: 0 success; 1 the operation failed (the error is logged); 2 invalid configuration or usage
(every problem is listed); 3 the database refused because another orchestrator holds the lease;
130 interrupted. Operators' scripts test them, and deploy/orchestrator.service stops restarting on 2
(restarting cannot mend a configuration), so they do not change.
"""

from __future__ import annotations

import json
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_LEASE = 3
EXIT_INTERRUPTED = 130


def print_json(value: Any) -> None:
    """One JSON document on stdout, secrets masked: an answer may carry settings or database rows."""
    from orchestrator.logs import redact

    print(json.dumps(redact(value), default=str))
