"""Run the real ``allot`` command line in a child process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

from allot.testing.processes import inherited_env

# ``allot`` as this checkout's Python runs it
ALLOT_COMMAND = [sys.executable, "-m", "allot"]


def allot(
    *args: str, env: Mapping[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m allot ARGS`` with ``env`` added to a clean environment (no ``ALLOT_*``
    or ``FLOWER_*`` variable of the caller's: :func:`~allot.testing.processes.inherited_env`)."""
    return subprocess.run(
        [*ALLOT_COMMAND, *args],
        env=inherited_env() | dict(env or {}),
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
