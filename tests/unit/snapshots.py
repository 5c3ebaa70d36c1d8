"""Planner snapshots shared by the unit tests: DESIGN.md's example, the Hypothesis strategy of
random valid snapshots (property tests of the planner and of the strategies), and the
contract's reading of a snapshot's node states, written independently of the planner's code."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

DESIGN_SNAPSHOT: dict[str, Any] = {
    "bucket_count": 6,
    "nodes": {
        "a@h": {"weight": 1.0, "state": "live"},
        "b@h": {"weight": 2.0, "state": "suspect"},
        "c@h": {"state": "offline"},
    },
    "assignments": {"a@h": [1, 2, 3], "b@h": [4, 5], "c@h": [6]},
    "max_moves": None,
}

KEYS = ["a", "b", "c", "d", "e", "f", "g", "h", "n1@host", "n2@host"]
GHOSTS = ["gone1", "gone2"]  # listed in assignments only: offline by the contract
STATES = [None, "live", "live", "live", "suspect", "offline"]  # None: the field is left out
WEIGHTS = [None, 1.0, 0.5, 2.0, 3.0, 4.0, 1.5, 0.1, 0.3, 1 / 3, 2 / 3, 7.25, 99.9, 0.001, 1000.0]
NODES = [(state, weight) for weight in WEIGHTS for state in STATES]


@st.composite
def snapshots(draw: st.DrawFn, limit: bool = True) -> dict[str, Any]:
    """A valid snapshot: up to 64 buckets, up to 8 nodes in any state, ghosts, unowned buckets.

    A few wide draws (bit masks, one byte per node or bucket) rather than one draw per element
    keep generation cheap enough for 10,000 examples; they shrink towards fewer nodes, live
    nodes of weight 1 and unowned buckets.
    """
    bucket_count = draw(st.integers(1, 64))
    mask = draw(st.integers(0, 2 ** len(KEYS) - 1))
    keys = [key for bit, key in enumerate(KEYS) if mask >> bit & 1][:8]
    kinds = draw(st.binary(min_size=len(keys), max_size=len(keys)))
    nodes: dict[str, Any] = {}
    for key, byte in zip(keys, kinds, strict=True):
        state, weight = NODES[byte % len(NODES)]
        entry: dict[str, Any] = {}
        if state is not None:
            entry["state"] = state
        if weight is not None:
            entry["weight"] = weight
        nodes[key] = entry
    ghosts = draw(st.integers(0, 3))
    holders = keys + [key for bit, key in enumerate(GHOSTS) if ghosts >> bit & 1]
    empty = draw(st.integers(0, 2 ** len(holders) - 1))  # which holders list an empty entry
    assignments: dict[str, list[int]] = {
        key: [] for bit, key in enumerate(holders) if empty >> bit & 1
    }
    if holders:
        owner = draw(st.binary(min_size=bucket_count, max_size=bucket_count))
        for bucket, byte in enumerate(owner, start=1):
            index = byte % (len(holders) + 1) - 1  # -1: nobody holds the bucket
            if index >= 0:
                assignments.setdefault(holders[index], []).append(bucket)
    snapshot: dict[str, Any] = {
        "bucket_count": bucket_count,
        "nodes": nodes,
        "assignments": assignments,
    }
    if limit:
        snapshot["max_moves"] = draw(st.none() | st.integers(0, bucket_count))
    return snapshot


def state_of(snapshot: dict[str, Any], key: str) -> str:
    """live / suspect / offline, with the contract's defaults."""
    if key not in snapshot["nodes"]:
        return "offline"
    return str(snapshot["nodes"][key].get("state", "live"))


def live_keys(snapshot: dict[str, Any]) -> list[str]:
    return sorted(key for key in snapshot["nodes"] if state_of(snapshot, key) == "live")


def suspect_buckets(snapshot: dict[str, Any]) -> dict[str, list[int]]:
    return {
        key: sorted(snapshot["assignments"].get(key, []))
        for key in snapshot["nodes"]
        if state_of(snapshot, key) == "suspect"
    }


LOADS = [0.0, 0.001, 0.25, 1.0, 1.0, 2.0, 3.5, 10.0, 60.0, 1000.0]  # seconds; repeats are likely
TOLERANCES = [1.0, 1.05, 1.15, 1.15, 2.0]
PIN_NODES = [*KEYS, *GHOSTS, "elsewhere@h"]  # live, suspect, offline, listed only, unknown


@st.composite
def load_snapshots(draw: st.DrawFn, limit: bool = False, measured: bool = True) -> dict[str, Any]:
    """A valid snapshot (:func:`snapshots`) with the measured-work fields: loads on most
    buckets (or none at all), a few pins to any node key, a tolerance and a load-move budget.

    ``measured=False`` leaves ``load`` out. Bytes decide per bucket whether it has a load and
    a pin, as in :func:`snapshots`, to keep generation cheap.
    """
    snapshot = draw(snapshots(limit=limit))
    count = snapshot["bucket_count"]
    if measured and draw(st.integers(0, 7)):  # one snapshot in eight has no load at all
        values = draw(st.binary(min_size=count, max_size=count))
        snapshot["load"] = {
            str(bucket): LOADS[byte % len(LOADS)]
            for bucket, byte in enumerate(values, start=1)
            if byte >= 32  # about one bucket in eight is unmeasured
        }
    marks = draw(st.binary(min_size=count, max_size=count))
    pins = {
        str(bucket): PIN_NODES[byte % len(PIN_NODES)]
        for bucket, byte in enumerate(marks, start=1)
        if byte < 24  # about one bucket in ten is pinned
    }
    if pins:
        snapshot["pins"] = pins
    snapshot["tolerance"] = draw(st.sampled_from(TOLERANCES))
    snapshot["max_load_moves"] = draw(st.integers(0, 12))
    return snapshot
