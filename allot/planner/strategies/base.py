"""The interface every planning strategy implements.

A strategy only decides *which buckets go where*. Everything else is the planner's job and the
same for every strategy: classifying nodes (:class:`~allot.planner.problem.Problem`), cutting a
plan at ``max_moves`` (orphans first), checking the proposal, applying it and computing the
statistics. That keeps strategies small and makes them comparable.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from allot.planner.model import Move
from allot.planner.problem import Problem


class Strategy(abc.ABC):
    """A way to turn a :class:`Problem` into moves.

    Subclasses set ``name`` (the name users pass as ``--strategy`` / ``ALLOT_STRATEGY``) and
    ``summary`` (one line for help texts), and implement :meth:`propose`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]

    @abc.abstractmethod
    def propose(self, problem: Problem) -> list[Move]:
        """The moves of the complete plan, ignoring ``problem.max_moves``, in priority order.

        ``problem.live`` is never empty when this is called. Rules a proposal must follow (the
        planner checks them and raises ``RuntimeError`` on a broken one):

        - each bucket moves at most once;
        - a move's ``source`` is the bucket's holder: a live node, the offline node in
          ``problem.origin``, or ``None`` for a bucket nobody holds;
        - a move's ``target`` is a live node other than the source;
        - buckets of suspect nodes never move.

        Orphans left out of the proposal stay unplaced. When ``max_moves`` is set the planner
        keeps the orphan moves first, then the others, each group in the proposal's order, up
        to the limit: put the moves that matter most first.
        """
