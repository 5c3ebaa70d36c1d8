"""Planning strategies, side by side behind one interface (:class:`Strategy`), found by name.

- ``balanced`` (:mod:`.balanced`, the default): exactly balanced with weights, fewest moves.
- ``amoro`` (:mod:`.amoro`): Apache Amoro's assignment, reproduced for comparison.
- ``hrw`` (:mod:`.hrw`): weighted rendezvous hashing, for comparison.
- ``load`` (:mod:`.load`): balances measured load rather than bucket counts (DESIGN.md,
  "Assignment by measured work"); with equal loads it is ``balanced``.

``bench/planner.py`` compares them; only ``balanced`` meets allot's contract of a balanced plan
with the fewest moves. ``bench/load.py`` compares ``balanced`` and ``load`` on measured loads.
"""

from __future__ import annotations

from allot.errors import ConfigurationError
from allot.planner.strategies.amoro import AmoroStrategy
from allot.planner.strategies.balanced import BalancedStrategy
from allot.planner.strategies.base import Strategy
from allot.planner.strategies.hrw import HrwStrategy
from allot.planner.strategies.load import LoadStrategy

DEFAULT_STRATEGY = "balanced"

_REGISTRY: dict[str, Strategy] = {
    strategy.name: strategy
    for strategy in (BalancedStrategy(), AmoroStrategy(), HrwStrategy(), LoadStrategy())
}

__all__ = ["DEFAULT_STRATEGY", "Strategy", "get_strategy", "strategy_names"]


def strategy_names() -> tuple[str, ...]:
    """The names of the available strategies, the default first."""
    return tuple(_REGISTRY)


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``.

    Raises:
        ConfigurationError: no strategy has that name; the message lists the valid names.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"unknown planner strategy {name!r}: choose one of {', '.join(_REGISTRY)}"
        ) from None
