"""The operator's read side: what ``allot status``, ``allot nodes`` and ``allot verify`` show.

- :mod:`allot.inspect.status`: nodes, buckets, tables, backlog, epoch and the last cycle;
- :mod:`allot.inspect.backlog`: how many messages wait in each bucket queue (Redis);
- :mod:`allot.inspect.verify`: one read of the facts of a live cluster (writes nothing);
- :mod:`allot.inspect.invariants`: the pure judgement of those facts.
"""
