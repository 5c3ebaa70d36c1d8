"""The node states and plan statuses SQL stores: part of the data contract (DESIGN.md, "SQL
schema"), defined once here and used everywhere else (``allot.planner`` re-exports
:class:`NodeState`).

Both are :class:`~enum.StrEnum`: a member *is* its value string, so it is written to SQL,
compared with a column and serialized to JSON as the plain string (``"live"``).
"""

from __future__ import annotations

import enum


class NodeState(enum.StrEnum):
    """How the assigner sees a node (DESIGN.md, "Buckets, nodes, tables"); ``node.state``.

    ``live`` nodes are eligible for buckets; ``suspect`` nodes keep what they hold and receive
    nothing; ``offline`` nodes lose everything they hold.
    """

    LIVE = "live"
    SUSPECT = "suspect"
    OFFLINE = "offline"


class PlanStatus(enum.StrEnum):
    """What became of a recorded plan; ``plan.status``.

    ``generated``: a dry run, waiting to be applied by hand. ``applying``: recorded before the
    ZooKeeper transaction (a crash leaves it here; the next cycle finishes or fails it).
    ``applied``, ``rejected`` (refused, e.g. stale), ``failed``.
    """

    GENERATED = "generated"
    APPLYING = "applying"
    APPLIED = "applied"
    REJECTED = "rejected"
    FAILED = "failed"


class RunStatus(enum.StrEnum):
    """What became of one attempt at a table task; ``table_task_run.status``.

    A row is inserted when its attempt has ended. ``running``: only in rows an older allot
    wrote (it inserted a row when an attempt started). ``committed``: its writes landed; at
    most one attempt per run (a unique index), inserted in the transaction of those writes.
    ``fenced``: its commit was refused because the bucket's work had moved to another node;
    nothing it wrote landed and the message runs again on the owner.
    ``failed``: the task raised, or its pool process died under it (an error beginning
    ``abandoned:``, recorded by the worker's main process), or it was given up.
    """

    RUNNING = "running"
    COMMITTED = "committed"
    FENCED = "fenced"
    FAILED = "failed"
