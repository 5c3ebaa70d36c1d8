"""What a table task's body gets: :class:`TableContext` and its fenced commit.

:meth:`TableContext.commit` is the one way a body's writes land: a session whose transaction
first holds the bucket's fence row (:func:`~allot.work.fence.hold_fence`: it still names this
node and token, and stays locked until the commit) and last inserts the attempt ``committed``
in the run history (:func:`~allot.work.runs.insert_committed`), so the body's writes, the fence
check and the committed row land together or not at all: a successful run is one write
transaction. A refused check raises
:class:`~allot.errors.Fenced` and writes nothing; the run (:mod:`allot.work.run`) then sends
the message back to its bucket's queue.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.orm import Session, sessionmaker

from allot.errors import AllotError, Fenced
from allot.names import TableName
from allot.work.commit_guard import OwnCommit
from allot.work.fence import FenceRow, hold_fence, read_fence
from allot.work.runs import Attempt, insert_committed


class TableContext:
    """What a table task's body gets: the table, its bucket, this node and its fence token.

    ``token`` is the fencing token under which this node runs the bucket's work: the ``czxid``
    of its lease znode, so a later holder of the bucket always has a larger one, or a larger
    ``generation`` (a ZooKeeper rebuilt from scratch, :mod:`allot.generation`).
    """

    def __init__(
        self,
        table: TableName,
        table_id: int,
        attempt: Attempt,
        sessions: sessionmaker[Session],
    ) -> None:
        self.table = str(table)
        self.table_name = table
        self.table_id = table_id
        self.bucket_id = attempt.bucket_id
        self.node_key = attempt.node_key
        self.token = attempt.token
        self.generation = attempt.generation
        self.run_id = attempt.run_id
        self._attempt = attempt
        self._sessions = sessions
        self.committing = False
        """Whether the commit was sent: an error from here on may hide a commit that landed."""
        self.committed = False
        self.fenced = False
        """Whether a commit was refused: the run is fenced whatever the body raises next."""

    def owns(self) -> bool:
        """Whether the bucket's fence still names this node, token and generation (a hint for
        long work: a commit checks again, atomically)."""
        with self._sessions() as session:
            fence = read_fence(session, self.bucket_id)
        return fence == FenceRow(self.bucket_id, self.node_key, self.token, self.generation)

    @contextlib.contextmanager
    def commit(self) -> Iterator[Session]:
        """A session whose transaction commits the body's writes only while the bucket's fence
        names this node and token, and records this run committed in the same transaction.

        Raises:
            Fenced: the bucket's work moved: nothing written (allot re-queues the message).
            AllotError: ``commit()`` was already used in this run.
            EarlyCommit: the body committed or rolled back the session itself (nothing
                written; :mod:`allot.work.commit_guard`).
        """
        if self.committed:
            raise AllotError(f"table task run {self.run_id}: commit() is used once per run")
        with self._sessions() as session, OwnCommit(session, self.run_id) as own:
            try:
                hold_fence(
                    session,
                    self.bucket_id,
                    self.node_key,
                    self.token,
                    generation=self.generation,
                )
            except Fenced:
                self.fenced = True
                raise
            yield session
            own.check()  # the body did not end the transaction itself
            insert_committed(session, self._attempt)
            self.committing = True
            own.commit()
        self.committed = True
