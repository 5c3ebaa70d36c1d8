"""Is a process on this host still running? Used to tell a crashed predecessor's membership
znode (safe to take over) from a live process's (never taken).

Linux-first: ``/proc/{pid}/stat`` gives the state (a zombie is dead) and the start time (a pid
reused by a newer process is not the one that registered). Elsewhere only ``os.kill(pid, 0)``
is used, which cannot see pid reuse.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
    return raw[raw.rfind(")") + 2 :].split()


def pid_running(pid: int) -> bool:
    """True when a non-zombie process with ``pid`` exists (pid 0 or less: False)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    fields = _stat_fields(pid)
    return not (fields and fields[0] in ("Z", "X"))


def process_started_ms(pid: int) -> int | None:
    """Start time of process ``pid`` in epoch milliseconds (±1 s: the boot time is in whole
    seconds), or None when unknown (no /proc, no such process)."""
    fields = _stat_fields(pid)
    if not fields or len(fields) < 20:
        return None
    try:
        boot = next(
            int(line.split()[1])
            for line in (_PROC / "stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        ticks = os.sysconf("SC_CLK_TCK")
        return boot * 1000 + int(fields[19]) * 1000 // ticks
    except (OSError, StopIteration, ValueError):
        return None
