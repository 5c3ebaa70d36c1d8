"""What a cycle plans from besides the assignment: the pins, and the buckets' measured load.

:func:`read_measured` is one ``getData`` of ``{root}/pins`` every cycle, plus, only when the
strategy is ``load``, one listing and one ``multiRead`` of ``{root}/load`` (what each node
measured, :mod:`allot.zk.load`). What the znodes hold never stops a cycle: corrupt pins read
as none and a corrupt or foreign load entry is left out, each reported as a line of
:attr:`Measured.problems` (the cycle's report lists them under ``warnings``).

Bounds: the load is what the nodes published, at most ``ALLOT_LOAD_PUBLISH_INTERVAL`` old,
over each node's ``ALLOT_LOAD_WINDOW``; a node restarted within the window under-reports its
buckets until its window fills again.

Failure modes: reads retry through ``client.retry`` while SUSPENDED; a lost session or a
refused read raises a ``KazooException`` (the cycle ends ``aborted``, as for its other reads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kazoo.client import KazooClient
from kazoo.interfaces import IAsyncResult

from allot.zk.load import read_load
from allot.zk.paths import ZkPaths
from allot.zk.pins import read_pins

LOAD_STRATEGY = "load"
"""The strategy that plans from measured load (the others read only the pins)."""


@dataclass(frozen=True)
class Measured:
    """``load``: seconds per bucket (None: not read, the strategy does not use it); ``pins``:
    bucket -> node key; ``problems``: what was unreadable and left out."""

    load: Mapping[int, float] | None = None
    pins: Mapping[int, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def read_measured(
    client: KazooClient,
    paths: ZkPaths,
    *,
    bucket_count: int,
    strategy: str,
    pending_pins: IAsyncResult | None = None,
) -> Measured:
    """The pins, and the load when ``strategy`` is ``load`` (see the module docstring).
    ``pending_pins``: a ``client.get_async(paths.pins)`` sent with the cycle's other reads.

    Raises:
        kazoo.exceptions.KazooException: ZooKeeper could not be read.
    """
    pins = read_pins(client, paths, bucket_count, pending_pins)
    problems = [] if pins.problem is None else [pins.problem]
    load = None
    if strategy == LOAD_STRATEGY:
        found = client.retry(read_load, client, paths, bucket_count)
        load, problems = found.by_bucket, problems + list(found.problems)
    return Measured(load, pins.by_bucket, tuple(problems))
