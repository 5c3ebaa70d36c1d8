"""The operator's read side: what ``allot status``, ``allot nodes`` and ``allot verify`` show.

- :mod:`allot.inspect.status`: nodes, buckets, tables, backlog, load, pins, epoch and the last
  cycle;
- :mod:`allot.inspect.backlog`: how many messages wait in each bucket queue (Redis);
- :mod:`allot.inspect.load`: each node's measured load against its fair share (pure);
- :mod:`allot.inspect.verify`: one read of the facts of a live cluster (writes nothing);
- :mod:`allot.inspect.invariants`: the pure judgement of those facts.
"""
