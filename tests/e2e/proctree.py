"""Every process of a tree (a ``make run`` and all it started), to check that nothing is left
behind after it stops."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from allot.testing.polling import repeating


def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """``(ppid, state, start time)`` of ``pid`` from /proc, None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> set[tuple[int, int]]:
    """``(pid, start time)`` of every live process below ``root``, ``root`` included."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is None or stat[1] == "Z":
            continue
        children.setdefault(stat[0], []).append(int(entry.name))
        starts[int(entry.name)] = stat[2]
    found: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        pid = pending.pop()
        if pid in starts:
            found.add((pid, starts[pid]))
        pending.extend(children.get(pid, []))
    return found


def still_running(processes: set[tuple[int, int]]) -> list[str]:
    """The command lines of those ``(pid, start time)`` that still run (zombies do not)."""
    alive = []
    for pid, start in sorted(processes):
        stat = _proc_stat(pid)
        if stat is None or stat[1] == "Z" or stat[2] != start:
            continue
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        alive.append(f"{pid}: {command.strip()}")
    return alive


@contextlib.contextmanager
def watching_tree(root: int, interval: float = 0.2) -> Iterator[set[tuple[int, int]]]:
    """Collect every process that appears below ``root`` while the block runs (a thread)."""
    seen: set[tuple[int, int]] = set()
    try:
        with repeating(lambda: seen.update(descendants(root)), interval):
            yield seen
    finally:
        seen.update(descendants(root))
