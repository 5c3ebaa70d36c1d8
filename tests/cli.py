"""Run the real ``allot`` command line in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping


def allot(
    *args: str, env: Mapping[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m allot ARGS`` with ``env`` added to a clean ALLOT_-free environment."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ALLOT_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "allot", *args],
        env=environment,
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
