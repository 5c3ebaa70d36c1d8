"""Table work on the owning node: write a table task, allot decides where and when it runs.

API: :func:`table_task`, :class:`TableContext`, :class:`~allot.errors.Fenced`. A worker loads
the modules named by ``ALLOT_TASK_MODULES``; each table task call goes to the queue of its
table's bucket (:func:`allot.work.task.route`), which only the bucket's lease holder consumes
(:mod:`allot.work.leases`, :mod:`allot.work.consumer`); a commit is fenced on the bucket's
``bucket_lease`` row (:mod:`allot.work.runs`); ``every=S`` adds a tick per bucket per period
(:mod:`allot.work.periodic`).

Why two nodes never commit for one bucket at once, and no stale commit lands
=============================================================================
Three mechanisms, each enforced where it cannot be bypassed:

(L) **The lease.** ``{root}/leases/{b}`` is created by one ZooKeeper transaction that also
    checks the version of the creator's assignment znode, and is ephemeral: at most one
    session holds it, only a node the assignment named when it was created, and it ends with
    the session. Its ``czxid`` is the holder's *token*; ZooKeeper's zxids only grow, so every
    later holder has a larger token.
(F) **The fence.** A holder writes ``(node, token)`` into ``bucket_lease[b]`` (only ever
    raising the token) before it consumes the bucket's queue. Every commit of a table task
    first runs ``UPDATE bucket_lease ... WHERE node = me AND token = mine`` in the same
    transaction as its writes: that both checks and locks the row until the commit, so commits
    and fence changes of one bucket are totally ordered by the database. A commit ordered
    after a larger token was written is refused (:class:`~allot.errors.Fenced`) and writes
    nothing; the fence write of a new holder waits for a commit that passed the check.
(Q) **The queue.** A node consumes the bucket's queue only while its session is connected, the
    bucket is assigned to it, it holds the lease and the fence names it. Giving a bucket away,
    it drops the queue first, waits until the worker confirmed the drop and holds none of the
    bucket's messages (reserved, running or waiting for an ETA), then deletes the lease;
    the waiting lasts at most ``ALLOT_HANDOFF_TIMEOUT``.

Exactly once: a commit also marks its attempt ``committed`` in ``table_task_run``, and a
partial unique index allows one committed attempt per run (the Celery task id); an attempt of
a run that already committed is not run. Messages are acknowledged late and rejected back to
their queue when a pool process dies; a message whose commit was fenced, or that reached a
node the fence does not name, is sent back to its bucket's queue with the same task id before
it is acknowledged. So a message is neither lost nor committed twice. A commit whose reply is
lost (the connection drops after the server committed) ends the attempt in an error and is
retried; recording that end never overwrites a ``committed`` attempt (the ``UPDATE`` matches
only one that is not), so the retry finds the commit and runs nothing. Only allot commits the
transaction of ``ctx.commit()``: a body that commits or rolls back its session itself is
refused (:mod:`allot.work.commit_guard`), since that would land its writes without the marker
and the fence.

Every interleaving of a move with a running task, case by case:

1. *Planned move, task running on the donor A.* A drops the queue; the task finishes and
   commits under A's fence (B cannot hold the lease yet, so the fence is still A's); A
   releases; B takes the lease, writes its fence, consumes. No two nodes run the bucket's
   tasks at once.
2. *Task longer than the handoff timeout.* A releases at the timeout with the task running;
   B fences and consumes. A's late commit is refused (F) and its message goes back to the
   queue, where B runs it. Two nodes *run* at once, bounded by the timeout; they never both
   *commit*.
3. *A frozen (SIGSTOP, GC pause, cut network) mid-task.* Its session expires, the lease
   vanishes (L); after the grace the cycle moves the bucket, B takes the lease and fences.
   When A resumes, its loop sees the session LOST and stops every queue, and the task's
   commit is refused (F). Frozen *inside* a commit that passed the check, A holds the row:
   B's fence write waits for it; on PostgreSQL the server ends a transaction idle for longer
   than ``ALLOT_HANDOFF_TIMEOUT`` (nothing of it lands), on SQLite B waits until A resumes and
   commits first (SQLite is the single-host default, where a frozen process holds the whole
   database anyway).
4. *A killed (-9).* Its session expires and its leases with it; the messages it had taken come
   back to their bucket queue after ``ALLOT_REDELIVERY_TIMEOUT``; B runs them; a run that had
   committed before the kill is not run again.
5. *A's session SUSPENDED.* The state listener stops every queue at once (no new task),
   running tasks go on and their commits are checked by (F). If the session comes back, A
   serves again, and a bucket that moved away meanwhile is drained like any other (its lease
   is kept until A holds none of its messages); if it is LOST, A forgets its leases and takes
   them again only if still assigned and free. A ZooKeeper error in the middle of a take or a
   release (the reply lost) leaves a lease A may not know: after any interrupted pass or
   reconnect, A adopts the leases of its session it is assigned and deletes the others.
6. *Move and move back before the release.* The draining bucket is simply served again: A
   never let its lease go.
7. *B's view of the assignment is stale* (the bucket moved on to C before B took the lease):
   B's take checks its assignment znode's version and fails; C takes it.
8. *A foreign writer deletes or replaces a lease.* The watch on ``{root}/leases`` makes the
   holder re-check its leases: a lease no longer its own stops its queue at once; a persistent
   znode in the lease's place is no lease (no session owns it) and is deleted. Taking the
   lease again yields a new token, so a task started under the old one is fenced. A foreign
   write to a ``bucket_lease`` row is found by the holder's re-read (every
   :data:`~allot.work.leases.REREAD_SECONDS`): a smaller token is overwritten with the
   holder's; a larger one stops the bucket on this node until an operator deletes the row (no
   commit under the holder's token can land past it, so the writer can only stall work).
   Until then the bucket's tasks cannot commit and go back to the queue.
9. *SQL down.* No fence can be written: a new holder does not consume; commits fail and the
   task is retried (1 s, backing off to 60 s; if the broker refuses the retry, the delivery
   is rejected back to its queue). ZooKeeper's side (leases, assignment) goes on; work
   resumes with SQL. A body whose own SQL is wrong fails once, it is not retried; a body that
   wraps a refused commit in an error of its own is still fenced and sent back.
10. *Redis restarted or the connection cut.* Celery rebuilds the consumer from the selected
    queues and :class:`~allot.work.consumer.BucketQueues` applies the wanted set again.
    Messages survive a restart only if Redis persists them (``appendonly yes``); messages
    taken and not acknowledged return after the redelivery timeout. One window is kombu's, not
    closable here: its Redis transport pops a message (``BRPOP``) and then records it as
    unacknowledged in a second command; a message popped in the instant Redis stops, or the
    worker is killed, between the two is lost.
11. *A message on a queue that is not its bucket's* (sent around the router, or a tick that
    came late): the run finds the fence naming another node and sends it back through the
    router, untouched.
12. *Periodic ticks.* A tick whose result never shows up (expired, lost with Redis) holds its
    bucket's next period back for one period plus the redelivery timeout at most; a tick sent
    twice runs each table's run once (run ids ``{task}:{table_id}:{period}``).

Where this departs from DESIGN.md, and why
-----------------------------------------
- The fence is the ``bucket_lease`` row, written by the node that takes the lease, not the
  ``bucket`` row the cycle's mirror writes. The mirror changes ``bucket`` when a plan is
  applied, while the donor may still be finishing a task legitimately: fencing on it would
  refuse that commit (no graceful handoff), make the mirror wait on users' transactions, and
  make the receiver wait for the mirror (down with SQL) instead of its own one-row write.
- The token is the lease znode's ``czxid``, not the bucket's epoch: a node that loses its
  session and takes the same bucket again under the same epoch gets a new, larger token, so a
  task started before the loss cannot commit after it.
- ``table_task_run`` keeps every attempt (``attempt_id``), with a partial unique index for one
  ``committed`` attempt per run: the fenced and abandoned attempts stay in the history.
- ``ALLOT_REDELIVERY_TIMEOUT`` bounds when a killed worker's message comes back (Redis'
  visibility timeout, an hour by default in kombu).

Bounds (each a setting): a handoff of an idle bucket takes the donor's reconcile
(:data:`~allot.work.leases.POLL_SECONDS`) plus the receiver's watch, one ZooKeeper
transaction, one SQL write and one Redis poll (0.1 s); of a busy bucket, the running task
(at most ``ALLOT_HANDOFF_TIMEOUT``) plus the same. A dead node's buckets are worked again
after ``ALLOT_ZK_SESSION_TIMEOUT`` + ``ALLOT_NODE_OFFLINE_TIMEOUT`` + one cycle + the above;
its in-flight messages after ``ALLOT_REDELIVERY_TIMEOUT``.
"""

from allot.errors import Fenced
from allot.work.queues import bucket_queue
from allot.work.task import TableContext, TableTask, table_task, table_tasks

__all__ = ["Fenced", "TableContext", "TableTask", "bucket_queue", "table_task", "table_tasks"]
