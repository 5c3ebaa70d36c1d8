"""Table work on the owning node: write a table task, allot decides where and when it runs.

API: :func:`table_task`, :class:`TableContext`, :class:`~allot.errors.Fenced`. A worker loads
the modules named by ``ALLOT_TASK_MODULES``; each table task call goes to the queue of its
table's bucket (:func:`allot.work.routing.route`), which only the bucket's lease holder consumes
(:mod:`allot.work.leases`, :mod:`allot.work.consumer`); a commit is fenced on the bucket's
``bucket_lease`` row (:mod:`allot.work.fence`, :meth:`TableContext.commit`) and recorded once in
the run history (:mod:`allot.work.runs`); ``every=S`` adds a tick per bucket per period
(:mod:`allot.work.periodic`).

Why two nodes never commit for one bucket at once, and no stale commit lands: the lease (one
ZooKeeper session holds it; its ``czxid`` is a token that only grows, paired with the
ZooKeeper's generation so a rebuilt ZooKeeper takes over, :mod:`allot.generation`), the
fence (a holder writes its pair into ``bucket_lease`` before it consumes; every commit checks
and locks that row in its own transaction, under the pair of its own node's lease, shared with
the pool processes by :mod:`allot.work.tokens`, never one read back from SQL) and the queue
(consumed only by the lease holder, dropped and drained before a handoff). A message is
neither lost nor committed twice. The argument, case by case, with the bounds:
``docs/table-work.md``.
"""

from allot.errors import Fenced
from allot.work.context import TableContext
from allot.work.queues import bucket_queue
from allot.work.task import TableTask, table_task, table_tasks

__all__ = ["Fenced", "TableContext", "TableTask", "bucket_queue", "table_task", "table_tasks"]
