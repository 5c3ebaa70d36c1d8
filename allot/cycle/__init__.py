"""The assignment cycle: read the cluster, plan, apply to ZooKeeper, mirror to SQL.

One module per step a newcomer would look for by name:

- :mod:`allot.cycle.assignment`: :class:`AssignmentCycle`, one cycle under the lock;
- :mod:`allot.cycle.observe`: one read of ZooKeeper (and SQL's view of departures), classified
  by :mod:`allot.cycle.classify` after :mod:`allot.cycle.repair` made it plannable;
- :mod:`allot.cycle.fence`: the cycle's SQL writes, fenced by the lock holder's token;
- :mod:`allot.cycle.mirror`: what those writes make SQL say (bucket owners, node states);
- :mod:`allot.cycle.plans`: every plan and its moves, as recorded in SQL;
- :mod:`allot.cycle.report`: the summary Flower shows as the task's result.

Celery stays outside: ``tasks.assign`` wraps :class:`AssignmentCycle` in a task.
"""

from allot.cycle.assignment import AssignmentCycle, Clock, CycleHooks

__all__ = ["AssignmentCycle", "Clock", "CycleHooks"]
