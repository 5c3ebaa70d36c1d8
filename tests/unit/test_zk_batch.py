"""Turning plans into bounded transactions: diff, exact sizes, packing, safe step order."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kazoo.client import KazooClient
from kazoo.protocol.serialization import Transaction
from kazoo.security import OPEN_ACL_UNSAFE, READ_ACL_UNSAFE, make_digest_acl

from allot.errors import InvalidPlan, PlanTooLarge
from allot.zk.batch import REQUEST_OVERHEAD_BYTES, Op, diff, op_size, plan_steps
from allot.zk.codec import decode_buckets, decode_version, encode_buckets
from allot.zk.paths import ASSIGNMENTS, LAST_UPDATE_TIME, ZkPaths
from allot.zk.snapshot import AllAssignments, NodeAssignment
from allot.zk.version import AssignmentVersion

PATHS = ZkPaths("/default/allot")
BOTH = frozenset({ASSIGNMENTS, LAST_UPDATE_TIME})


def snapshot_of(assignments: dict[str, list[int]], zversion: int = 0) -> AllAssignments:
    return AllAssignments(
        {k: NodeAssignment(k, tuple(sorted(v)), 1) for k, v in assignments.items()},
        AssignmentVersion(epoch=zversion + 1 if zversion >= 0 else 0, zversion=zversion),
        present=dict.fromkeys(assignments, BOTH),
    )


def test_diff_keeps_only_changed_nodes_and_refuses_double_owners() -> None:
    snapshot = snapshot_of({"a": [1, 2, 3], "b": [4, 5], "c": [6]})
    changes = diff(snapshot, {"a": [1, 2], "b": [3, 4, 5]}, remove=["c", "gone"])
    assert dict(changes.final) == {"a": (1, 2), "b": (3, 4, 5)}
    assert changes.remove == ("c",)  # a node that is not stored is ignored
    assert changes.shrinking == {"a"}
    with pytest.raises(InvalidPlan, match="bucket 6 would be held by both"):
        diff(snapshot, {"a": [1, 2, 3, 6]})  # c keeps 6: it is neither assigned nor removed
    with pytest.raises(InvalidPlan, match="both assigned and removed"):
        diff(snapshot, {"c": [6]}, remove=["c"])
    with pytest.raises(InvalidPlan, match="not a positive integer"):
        diff(snapshot, {"a": [0]})
    with pytest.raises(InvalidPlan, match="invalid node key"):
        diff(snapshot, {"../x": [1]})
    assert diff(snapshot, {"a": [3, 2, 1]}).empty


@pytest.mark.parametrize("auth", [False, True])
def test_op_size_is_exactly_what_kazoo_sends(auth: bool) -> None:
    acl = [make_digest_acl("allot", "pw", all=True), *READ_ACL_UNSAFE] if auth else None
    client = KazooClient(hosts="127.0.0.1:1/chroot", default_acl=acl)
    ops = [
        Op("create", "/r/assignment-version", b'{"epoch":1}'),
        Op("set", "/r/bucket-assignments/n\u00e9@h/assignments", b'["1"]', 3),
        Op("delete", "/r/bucket-assignments/x", version=0),
        Op("check", "/r/locks/assign/x__lock__0000000001"),
    ]
    transaction = client.transaction()
    for op in ops:
        op.add_to(transaction)
    sent = len(Transaction(transaction.operations).serialize()) + 8
    planned = REQUEST_OVERHEAD_BYTES + sum(
        op_size(op, acl or OPEN_ACL_UNSAFE, client.chroot) for op in ops
    )
    assert planned == sent


def _simulate(steps: list[list[Op]]) -> list[dict[str, tuple[int, ...]]]:
    """Apply steps to an in-memory tree; return the owners after each step."""
    tree: dict[str, bytes] = {}
    states = []
    for ops in steps:
        for op in ops:
            if op.kind in ("create", "set"):
                tree[op.path] = op.data
            elif op.kind == "delete":
                tree.pop(op.path, None)
        states.append(
            {
                path.split("/")[-2]: decode_buckets(data)
                for path, data in tree.items()
                if path.endswith("/assignments")
            }
        )
    return states


def test_a_plan_too_big_for_one_request_is_split_and_only_the_last_step_bumps_the_epoch() -> None:
    before = {f"n{i}": list(range(i * 10 + 1, i * 10 + 11)) for i in range(20)}
    after = {f"n{i}": list(range(i * 10 + 1, i * 10 + 10)) for i in range(20)}
    after["new"] = [i * 10 + 10 for i in range(20)]
    snapshot = snapshot_of(before, zversion=4)
    changes = diff(snapshot, after)
    steps = plan_steps(
        None, None, PATHS, snapshot, changes, plan_id="p", now=1, removed_children={},
        lock_node="/default/allot/locks/assign/x", max_request_bytes=1_200,
    )  # fmt: skip
    assert len(steps) > 2
    for step in steps:
        size = REQUEST_OVERHEAD_BYTES + sum(op_size(op, OPEN_ACL_UNSAFE) for op in step)
        assert size <= 1_200
        assert step[0].path == PATHS.assignment_version
        assert step[1] == Op("check", "/default/allot/locks/assign/x")
    records = [decode_version(step[0].data) for step in steps]
    assert [r.epoch for r in records] == [5] * (len(steps) - 1) + [6]
    assert all(r.pending is not None for r in records[:-1])
    assert records[-1].pending is None
    assert steps[0][0].version == 4


def test_a_plan_that_fits_is_one_transaction() -> None:
    snapshot = snapshot_of({"a": [1, 2], "b": [3]}, zversion=-1)
    steps = plan_steps(
        None, None, PATHS, snapshot, diff(snapshot, {"a": [1], "b": [2, 3]}),
        plan_id="p", now=7, removed_children={},
    )  # fmt: skip
    assert len(steps) == 1
    assert steps[0][0].kind == "create"  # no version znode yet: created, fenced by NodeExists


def test_one_node_over_the_limit_cannot_be_stored() -> None:
    snapshot = snapshot_of({})
    with pytest.raises(PlanTooLarge, match=r"jute\.maxbuffer"):
        plan_steps(
            None, None, PATHS, snapshot, diff(snapshot, {"a": list(range(1, 2_000))}),
            plan_id="p", now=1, removed_children={}, max_request_bytes=5_000,
        )  # fmt: skip


@st.composite
def moves(draw: Any) -> tuple[dict[str, list[int]], dict[str, list[int]], list[str]]:
    buckets = list(range(1, draw(st.integers(1, 60)) + 1))
    nodes = [f"n{i}" for i in range(draw(st.integers(1, 8)))]
    before: dict[str, list[int]] = {n: [] for n in nodes}
    after: dict[str, list[int]] = {n: [] for n in nodes}
    for bucket in buckets:
        before[draw(st.sampled_from(nodes))].append(bucket)
        after[draw(st.sampled_from(nodes))].append(bucket)
    gone = [n for n in nodes if not after[n] and draw(st.booleans())]
    return before, {n: b for n, b in after.items() if n not in gone}, gone


@settings(max_examples=200, deadline=None)
@given(moves(), st.integers(900, 3_000))
def test_no_step_ever_gives_a_bucket_to_two_nodes(
    case: tuple[dict[str, list[int]], dict[str, list[int]], list[str]], budget: int
) -> None:
    before, after, gone = case
    snapshot = snapshot_of(before)
    changes = diff(snapshot, after, remove=gone)
    if changes.empty:
        return
    children = {k: [ASSIGNMENTS, LAST_UPDATE_TIME] for k in gone}
    steps = plan_steps(
        None, None, PATHS, snapshot, changes, plan_id="p", now=1,
        removed_children=children, max_request_bytes=budget,
    )  # fmt: skip
    initial = [Op("create", PATHS.assignments(k), encode_buckets(v)) for k, v in before.items()]
    states = _simulate([initial, *steps])
    for state in states:
        owners = [b for buckets in state.values() for b in buckets]
        assert len(owners) == len(set(owners))
    assert states[-1] == {k: tuple(sorted(v)) for k, v in after.items()}
