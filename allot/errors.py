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
    │   └── InvalidSnapshot         a planner snapshot that breaks the contract
    ├── DatabaseError
    │   ├── DatabaseNotReady        the schema is missing or behind: run ``allot db upgrade``
    │   ├── DatabaseUnavailable     the database cannot be reached
    │   └── BucketCountMismatch     ALLOT_BUCKET_COUNT differs from the database's buckets
    ├── NotFound                    a named table, node or plan does not exist
    └── ServiceError                a server allot needs is missing or does not start
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
