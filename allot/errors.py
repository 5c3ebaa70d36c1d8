"""Errors raised by allot.

Every error a user can cause or meet derives from :class:`AllotError`. The CLI turns any of them
into one line on standard error and exits with the error's ``exit_code``; nothing else is shown,
so the message must say what went wrong and, where it helps, what to do.

Layout::

    AllotError
    ├── ConfigurationError          a setting or an option is unusable
    ├── InvalidInput                bad data handed to allot
    │   ├── InvalidTableName
    │   ├── InvalidNodeKey
    │   ├── InvalidSnapshot         a planner snapshot that breaks the contract
    │   └── InvalidPlan             a plan the ZooKeeper store refuses to apply
    ├── DatabaseError
    │   ├── DatabaseNotReady        the schema is missing or behind: run ``allot db upgrade``
    │   ├── DatabaseUnavailable     the database cannot be reached
    │   └── BucketCountMismatch     ALLOT_BUCKET_COUNT differs from the database's buckets
    ├── NotFound                    a named table, node, plan or table task does not exist
    ├── Fenced                      a table task's commit was refused: its bucket's work
    │                               moved to another node; nothing it wrote landed
    ├── ServiceError                a server allot needs is missing or does not start
    └── CoordinationError           ZooKeeper could not do what allot asked
        ├── ZooKeeperUnavailable    no connection to ZooKeeper within the timeout
        ├── AccessDenied            ZooKeeper refused: wrong or missing ALLOT_ZK_AUTH
        ├── StaleAssignment         the assignment moved since it was read: someone else
        │                           applied first; nothing of this plan was written
        ├── ApplyOutcomeUnknown     the connection broke during a commit: read the
        │                           assignment version to learn whether it was applied
        ├── PlanTooLarge            one node's assignment exceeds ZooKeeper's request limit
        ├── CorruptAssignment       a stored assignment cannot be decoded
        ├── LockLost                the session was suspended or lost while holding the lock
        └── NodeKeyTaken            another live process is registered under this node key
"""

from __future__ import annotations


class AllotError(Exception):
    """Base class of every error allot raises on purpose.

    ``exit_code`` is the process exit status the CLI uses for this error.
    """

    exit_code: int = 1


class ConfigurationError(AllotError):
    """A setting or a command-line option cannot be used as given."""

    exit_code = 2


class InvalidInput(AllotError):
    """Data handed to allot breaks one of its rules; nothing was written."""

    exit_code = 2


class InvalidTableName(InvalidInput):
    """A table name is not ``catalog.database.table`` in the allowed characters and length."""


class InvalidNodeKey(InvalidInput):
    """A node key does not match ``^[A-Za-z0-9._@:-]{1,128}$`` or is ``.``/``..``."""


class InvalidSnapshot(InvalidInput):
    """A planner snapshot breaks the planner contract (unknown state, bad weight, bad bucket)."""


class DatabaseError(AllotError):
    """The SQL database cannot serve the request."""


class DatabaseNotReady(DatabaseError):
    """The schema is missing or older than this version of allot."""


class DatabaseUnavailable(DatabaseError):
    """The database at ``ALLOT_DATABASE_URL`` cannot be reached or opened."""


class BucketCountMismatch(DatabaseError):
    """``ALLOT_BUCKET_COUNT`` differs from the number of buckets the database was created with.

    Changing the bucket count of an existing database would silently re-home every table, so
    allot refuses instead.
    """


class NotFound(AllotError):
    """A named table, node or plan does not exist."""


class ServiceError(AllotError):
    """A server allot needs (ZooKeeper, Redis, PostgreSQL) is missing or does not start."""


class InvalidPlan(InvalidInput):
    """A plan handed to the ZooKeeper store is unusable (a bucket given to two nodes, a node
    both assigned and removed, a bucket id that is not a positive integer); nothing was written.
    """


class CoordinationError(AllotError):
    """ZooKeeper could not do what allot asked; see the subclasses for what is known."""


class ZooKeeperUnavailable(CoordinationError):
    """No connection to ZooKeeper could be made (or kept) within the allowed time."""


class AccessDenied(CoordinationError):
    """ZooKeeper refused an operation (``NoAuth``): ``ALLOT_ZK_AUTH`` is missing or wrong."""


class StaleAssignment(CoordinationError):
    """The stored assignment changed after it was read: someone else applied a plan first, or
    the subtree was edited. The transaction was rolled back: nothing of the plan was written.
    Re-read and plan again.
    """


class ApplyOutcomeUnknown(CoordinationError):
    """The connection broke while a plan's transaction was in flight, so it may or may not have
    been committed. The ``plan_id`` recorded in ``assignment-version`` tells which.
    """

    def __init__(self, message: str, plan_id: str) -> None:
        super().__init__(message)
        self.plan_id = plan_id


class PlanTooLarge(CoordinationError):
    """A single node's writes exceed ZooKeeper's request size limit (``jute.maxbuffer``), so no
    split of the plan can store it.
    """


class CorruptAssignment(CoordinationError):
    """A stored assignment (or its last-update-time) cannot be decoded; the next applied plan
    rewrites it.
    """


class LockLost(CoordinationError):
    """The ZooKeeper session was suspended or lost after the assignment lock was taken, or the
    lock was released: the holder must stop without writing.
    """


class NodeKeyTaken(CoordinationError):
    """Another live process holds the membership znode of this node key. Give each process its
    own ``ALLOT_NODE_KEY``, or wait for the other one's session to end.
    """


class Superseded(CoordinationError):
    """A newer assignment-lock holder has already written SQL (the mirror's fence holds a
    larger token), or the write would take SQL's epoch backwards: this holder writes nothing.
    """


class Fenced(AllotError):
    """A table task's commit was refused: the bucket's fence (its ``bucket_lease`` row) no
    longer names this node with this task's token, because the bucket's work moved to another
    node. Nothing the task wrote in :meth:`allot.work.TableContext.commit` landed; allot puts
    the message back in the bucket's queue, so the run happens again on the owner."""


class RetriesExhausted(DatabaseError):
    """A table task run met a database error that may pass by itself (a lost connection, a
    locked database) on more than ``ALLOT_RUN_RETRIES`` deliveries in a row: it fails with
    the last error instead of being retried again."""


class RunAbandoned(AllotError):
    """A table task run whose attempts were abandoned ``ALLOT_MAX_ABANDONED`` times (the pool
    process running its body died: OOM, a segfault, a kill) fails without running the body
    again: a message that kills its worker is not delivered forever."""
