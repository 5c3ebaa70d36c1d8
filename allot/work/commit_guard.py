"""Only allot commits the session of ``TableContext.commit()`` (:mod:`allot.work.task`).

That session's transaction begins with the fence check (which locks the bucket's fence row) and
ends by inserting the run's ``committed`` row: the body's writes, the check and the row land
together or not at all. A body that commits the session itself (``session.commit()``) would
land its writes without the committed row and release the fence row: a redelivered message
would run the body again, and a commit after the bucket moved would not be refused. A body that
rolls it back (``session.rollback()``, ``session.close()``) would go on writing in a new
transaction without the fence. :class:`OwnCommit` refuses both:

- a ``before_commit`` listener on the session raises :class:`EarlyCommit` unless allot's own
  commit is in progress (a savepoint, ``session.begin_nested()``, commits freely: it only ends
  inside the transaction);
- before allot commits, it checks the transaction it began is still the session's, and active.

A refusal is remembered: a body that catches the error and goes on still commits nothing.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from allot.errors import AllotError

FIX = "use `with ctx.commit() as session:` and let allot commit at the end of the block"


class EarlyCommit(AllotError):
    """A table task's body committed or rolled back the session allot commits: nothing of the
    run is committed (the attempt fails with this message)."""


class OwnCommit:
    """Begins ``session``'s transaction and makes :meth:`commit` the only way to commit it
    (see the module). Use as a context manager; leaving it without :meth:`commit` rolls the
    transaction back."""

    def __init__(self, session: Session, run_id: str) -> None:
        self.session = session
        self.run_id = run_id
        self.refused: str | None = None
        self._committing = False
        self._transaction: SessionTransaction | None = None

    def __enter__(self) -> OwnCommit:
        event.listen(self.session, "before_commit", self._before_commit)
        self._transaction = self.session.begin()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        event.remove(self.session, "before_commit", self._before_commit)
        if self.session.in_transaction():
            self.session.rollback()

    def commit(self) -> None:
        """Commit the transaction :meth:`__enter__` began.

        Raises:
            EarlyCommit: the body committed, rolled back or closed the session meanwhile
                (nothing is committed).
        """
        self.check()
        assert self._transaction is not None
        self._committing = True
        try:
            self._transaction.commit()
        finally:
            self._committing = False

    def check(self) -> None:
        """Raise :class:`EarlyCommit` if the transaction is no longer the one allot began."""
        if self.refused is None:
            transaction = self._transaction
            if self.session.get_transaction() is not transaction or not (
                transaction is not None and transaction.is_active
            ):
                self.refused = (
                    f"table task run {self.run_id}: the body rolled back or closed the session "
                    f"of ctx.commit(), which ended the fenced transaction; {FIX}"
                )
        if self.refused is not None:
            raise EarlyCommit(self.refused)

    def _before_commit(self, session: Session) -> None:
        if self._committing or session.in_nested_transaction():
            return
        self.refused = (
            f"table task run {self.run_id}: session.commit() inside ctx.commit() is refused "
            "(it would commit the body's writes without the run's marker and release the "
            f"fence); {FIX}"
        )
        raise EarlyCommit(self.refused)
