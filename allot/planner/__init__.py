"""The planner: the pure function at the heart of allot.

Given who holds which bucket and the nodes' states and weights, return a balanced assignment
that moves the fewest buckets possible (DESIGN.md, "Balanced and minimal" and "Planner
contract"). No I/O, deterministic.

Public API:

- :func:`plan_from_json` — the JSON contract: snapshot object in, plan object out.
- :func:`plan` — the typed form: :class:`Snapshot` in, :class:`Plan` out.
- :func:`snapshot_from_json` — parse and validate a snapshot's JSON object.
- :func:`get_strategy`, :func:`strategy_names` — the strategies by name.

Modules: :mod:`.model` (typed values), :mod:`.parse` (JSON to snapshot), :mod:`.problem`
(node-state rules, pins, quotas, minimum moves), :mod:`.balance` (exact shares, quotas, the
balance test, spread), :mod:`.loads` (bucket loads, load shares, the load ratio), :mod:`.core`
(the shared planning pipeline), :mod:`.strategies` (``balanced``, ``amoro``, ``hrw``,
``load``).
"""

from __future__ import annotations

from allot.planner.core import plan, plan_from_json
from allot.planner.model import IgnoredPin, Move, NodeInfo, NodeState, Plan, PlanStats, Snapshot
from allot.planner.parse import snapshot_from_json
from allot.planner.strategies import DEFAULT_STRATEGY, get_strategy, strategy_names

__all__ = [
    "DEFAULT_STRATEGY",
    "IgnoredPin",
    "Move",
    "NodeInfo",
    "NodeState",
    "Plan",
    "PlanStats",
    "Snapshot",
    "get_strategy",
    "plan",
    "plan_from_json",
    "snapshot_from_json",
    "strategy_names",
]
