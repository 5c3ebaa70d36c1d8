"""Is a process on this host still running? Used to tell a crashed predecessor's membership
znode (safe to take over) from a live process's (never taken).

Read through psutil: the process state (a zombie has exited and is not running) and its start
time (a pid reused by a newer process is not the one that registered). On Linux psutil reads
``/proc``, where the boot time is in whole seconds, so start times are exact to about ±1 s.
"""

from __future__ import annotations

import psutil

_NOT_RUNNING = frozenset({psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD})


def pid_running(pid: int) -> bool:
    """True when a non-zombie process with ``pid`` exists (pid 0 or less: False)."""
    if pid <= 0:
        return False
    try:
        status = psutil.Process(pid).status()
    except psutil.NoSuchProcess:  # ZombieProcess included: a platform that cannot read it
        return False
    except psutil.AccessDenied:
        return True  # it exists, under another user
    return status not in _NOT_RUNNING


def process_started_ms(pid: int) -> int | None:
    """Start time of process ``pid`` in epoch milliseconds (±1 s: the boot time is in whole
    seconds), or None when unknown (no such process, or it cannot be read)."""
    if pid <= 0:
        return None
    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except psutil.Error:
        return None
