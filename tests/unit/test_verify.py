"""The invariants of ``allot verify``, judged on plain facts
(:func:`allot.inspect.invariants.evaluate`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from allot.inspect.invariants import Check, Facts, Verdict, evaluate
from allot.zk.leases import Lease, LeaseListing, lease_bucket

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
GRACE = 30.0
HEALTHY = Facts(
    bucket_count=6,
    stored={"a@h": [1, 2, 3], "b@h": [4, 5, 6]},
    now=NOW,
    live=frozenset({"a@h", "b@h"}),
    grace=GRACE,
    epoch=2,
    sql_owners={1: "a@h", 2: "a@h", 3: "a@h", 4: "b@h", 5: "b@h", 6: "b@h"},
    sql_epoch=2,
)


def judged(**changes: Any) -> Verdict:
    return evaluate(dataclasses.replace(HEALTHY, **changes))


def checks(verdict: Verdict) -> list[str]:
    return [violation.check.value for violation in verdict.violations]


def details(verdict: Verdict) -> list[str]:
    return [violation.detail for violation in verdict.violations]


def gone_since(seconds: float) -> int:
    """A stored departure ``seconds`` before NOW, in epoch ms."""
    return int((NOW - dt.timedelta(seconds=seconds)).timestamp() * 1000)


def test_a_healthy_cluster_passes() -> None:
    verdict = evaluate(HEALTHY)

    assert verdict.ok
    assert (verdict.violations, verdict.notes) == ((), ())
    assert (verdict.epoch, verdict.bucket_count, verdict.live, verdict.suspect) == (
        2, 6, ("a@h", "b@h"), (),
    )  # fmt: skip


def test_the_json_form_names_every_check() -> None:
    verdict = judged(sql_owners={**HEALTHY.sql_owners, 2: "x@h"})

    assert json.loads(json.dumps(verdict.to_json())) == {
        "ok": False,
        "epoch": 2,
        "bucket_count": 6,
        "live": ["a@h", "b@h"],
        "suspect": [],
        "violations": [
            {
                "check": "sql-agrees",
                "detail": "bucket.node_key differs for 1 bucket(s): 2 (SQL x@h, ZooKeeper a@h)",
            }
        ],
        "notes": [],
    }


# -- 1. one owner per bucket -------------------------------------------------------------------


def test_a_bucket_listed_under_two_nodes_is_named_once_with_both_nodes() -> None:
    verdict = judged(stored={"a@h": [1, 2, 3, 4, 5], "b@h": [4, 5, 6]})

    # SQL names one of the two listers: the double listing is reported once, by one-owner
    assert details(verdict) == ["bucket(s) 4, 5 listed by 2 nodes: a@h, b@h"]
    assert checks(verdict) == [Check.ONE_OWNER]


def test_an_id_out_of_range_is_a_violation() -> None:
    verdict = judged(stored={"a@h": [0, 1, 2, 3], "b@h": [4, 5, 6, 999]})

    assert details(verdict) == [
        "a@h lists bucket id(s) 0 outside 1..6",
        "b@h lists bucket id(s) 999 outside 1..6",
    ]


def test_an_unreadable_entry_is_a_violation() -> None:
    verdict = judged(
        stored={"a@h": [1, 2, 3, 4, 5, 6]},
        sql_owners=dict.fromkeys(range(1, 7), "a@h"),
        unreadable={"b@h": "assignments is not a JSON list"},
    )

    assert details(verdict) == ["the entry of b@h is unreadable: assignments is not a JSON list"]


def test_a_bucket_nobody_holds_is_a_violation_while_a_node_is_live() -> None:
    verdict = judged(
        stored={"a@h": [1, 2, 3], "b@h": [4, 5]}, sql_owners={**HEALTHY.sql_owners, 6: None}
    )

    assert details(verdict) == ["1 bucket(s) have no owner while 2 node(s) are live: 6"]


def test_a_bucket_nobody_holds_is_fine_while_no_node_is_live() -> None:
    # Given a@h gone within its grace period, holding 1..3, and nobody live to take 4..6
    verdict = judged(
        stored={"a@h": [1, 2, 3]},
        live=frozenset(),
        departures={"a@h": gone_since(5)},
        sql_owners={1: "a@h", 2: "a@h", 3: "a@h"},
    )

    assert verdict.ok
    assert verdict.suspect == ("a@h",)


def test_buckets_between_owners_of_an_apply_in_steps_are_in_flight_while_the_lock_is_held() -> None:
    pending = {"plan_id": "p1", "epoch": 3, "step": 1, "steps": 2}
    in_flight = judged(stored={"a@h": [1, 2], "b@h": [4, 5, 6]}, pending=pending, lock_held=True)
    # (SQL still says 3 is a@h's: the mirror follows the last step)
    assert checks(in_flight) == [Check.SQL_AGREES]
    assert in_flight.notes == ("1 bucket(s) have no owner while a plan is applied in steps: 3",)

    interrupted = judged(stored={"a@h": [1, 2], "b@h": [4, 5, 6]}, pending=pending)
    assert checks(interrupted) == [Check.ONE_OWNER, Check.SQL_AGREES, Check.STUCK_PLAN]
    assert "apply in steps of plan p1 was interrupted" in details(interrupted)[-1]


# -- 2. owners live or suspect -----------------------------------------------------------------


def test_an_owner_gone_within_its_grace_period_is_suspect_and_fine() -> None:
    verdict = judged(live=frozenset({"a@h"}), departures={"b@h": gone_since(GRACE - 1)})

    assert verdict.ok
    assert (verdict.live, verdict.suspect) == (("a@h",), ("b@h",))


def test_an_owner_gone_past_its_grace_period_is_offline() -> None:
    verdict = judged(live=frozenset({"a@h"}), departures={"b@h": gone_since(GRACE + 12)})

    assert details(verdict) == [
        "b@h holds 3 bucket(s) but is offline: gone 42 s, past its grace period of 30 s"
    ]
    assert checks(verdict) == [Check.OWNER_STATE]


def test_an_owner_neither_live_nor_recorded_as_departed_is_unknown() -> None:
    verdict = judged(live=frozenset({"a@h"}))

    assert details(verdict) == [
        "b@h holds 3 bucket(s) but is unknown: not a member, no stored departure"
    ]


def test_a_gone_node_holding_nothing_is_no_owner() -> None:
    verdict = judged(stored={**HEALTHY.stored, "c@h": []}, departures={"c@h": gone_since(600)})

    assert verdict.ok


def test_foreign_members_and_malformed_departures_are_notes() -> None:
    verdict = judged(
        ignored_members={"node-0000000002": "not an allot member (no node_key)"},
        departures_problem="not JSON",
    )

    assert verdict.ok
    assert verdict.notes == (
        "ignored nodes/node-0000000002: not an allot member (no node_key)",
        "departures is malformed (not JSON): grace periods restart",
    )


# -- 3. SQL agrees with ZooKeeper --------------------------------------------------------------


def test_sql_naming_another_owner_is_a_violation() -> None:
    verdict = judged(sql_owners={**HEALTHY.sql_owners, 2: "x@h", 6: None})

    assert details(verdict) == [
        "bucket.node_key differs for 2 bucket(s): 2 (SQL x@h, ZooKeeper a@h), "
        "6 (SQL nobody, ZooKeeper b@h)"
    ]


def test_many_differences_are_one_line() -> None:
    verdict = judged(sql_owners={})

    assert len(verdict.violations) == 1
    assert details(verdict)[0].endswith("5 (SQL nobody, ZooKeeper b@h) and 1 more")


@pytest.mark.parametrize(("sql_epoch", "lock_held"), [(1, False), (3, False), (3, True)])
def test_sql_at_another_epoch_is_a_violation(sql_epoch: int, lock_held: bool) -> None:
    verdict = judged(sql_epoch=sql_epoch, lock_held=lock_held)

    assert details(verdict) == [f"SQL mirrors epoch {sql_epoch}, ZooKeeper is at 2"]


def test_sql_behind_while_a_cycle_holds_the_lock_is_a_mirror_in_flight() -> None:
    verdict = judged(sql_epoch=1, sql_owners={**HEALTHY.sql_owners, 3: "b@h"}, lock_held=True)

    assert verdict.ok
    assert verdict.notes == (
        "SQL mirrors epoch 1, ZooKeeper is at 2: a cycle holds the assignment lock, its mirror "
        "is in flight",
    )


def test_an_unreadable_assignment_version_is_a_violation() -> None:
    verdict = judged(version_problem="not JSON", epoch=5)

    assert details(verdict) == [
        "assignment-version is unreadable (not JSON): ZooKeeper's epoch is unknown"
    ]


# -- 4. leases name the owners -----------------------------------------------------------------


def lease(node_key: str) -> bytes:
    return json.dumps({"node_key": node_key, "epoch": 2}).encode()


def listing(children: dict[str, bytes]) -> LeaseListing:
    """What :func:`read_leases` lists for these children of ``{root}/leases`` and their data."""
    buckets = {name: lease_bucket(name) for name in children}
    return LeaseListing(
        {b: Lease.decode(b, children[name]) for name, b in buckets.items() if b is not None},
        tuple(sorted(name for name, bucket in buckets.items() if bucket is None)),
    )


def test_no_leases_znode_and_leases_naming_the_owners_pass() -> None:
    assert judged(leases=None).ok
    assert judged(leases=listing({})).ok
    assert judged(leases=listing({"1": lease("a@h"), "6": lease("b@h")})).ok


def test_a_lease_naming_a_node_that_is_not_live_is_a_violation() -> None:
    verdict = judged(leases=listing({"1": lease("gone@h")}))

    assert details(verdict) == ["the lease of bucket 1 names gone@h, its owner is a@h"]
    assert checks(verdict) == [Check.LEASE_OWNER]


def test_a_lease_still_held_by_another_live_node_is_a_handoff_note() -> None:
    verdict = judged(leases=listing({"1": lease("b@h")}))

    assert verdict.ok
    assert "bucket 1 is being handed over: b@h holds its lease, its owner is a@h" in verdict.notes


def test_a_lease_of_an_unowned_bucket_is_a_violation() -> None:
    verdict = judged(
        stored={"a@h": [1, 2, 3]},
        live=frozenset(),
        departures={"a@h": gone_since(1)},
        sql_owners={1: "a@h", 2: "a@h", 3: "a@h"},
        leases=listing({"5": lease("b@h")}),
    )

    assert details(verdict) == ["the lease of bucket 5 names b@h, its owner is nobody"]


def test_unreadable_and_out_of_range_leases_are_violations_foreign_names_notes() -> None:
    leases = {"2": b"{not json", "3": b'{"epoch": 2}', "7": lease("a@h"), "lock": b""}
    verdict = judged(leases=listing(leases | {"01": lease("a@h")}))

    assert details(verdict) == [
        "the lease of bucket 2 is unreadable: b'{not json'",
        "the lease of bucket 3 is unreadable: b'{\"epoch\": 2}'",
        "a lease exists for bucket 7, outside 1..6",
    ]
    assert verdict.notes == (
        "ignored leases/01: not a bucket id",
        "ignored leases/lock: not a bucket id",
    )


# -- 5. no plan stuck applying -----------------------------------------------------------------


def test_a_plan_applying_while_nobody_holds_the_lock_is_stuck() -> None:
    verdict = judged(applying=["f" * 32])

    assert details(verdict) == [
        f"plan(s) {'f' * 32} applying while nobody holds the assignment lock"
    ]
    assert checks(verdict) == [Check.STUCK_PLAN]


def test_a_plan_applying_while_a_cycle_holds_the_lock_is_in_flight() -> None:
    assert judged(applying=["f" * 32], lock_held=True).ok


def test_every_violation_is_reported_in_check_order() -> None:
    verdict = judged(
        stored={"a@h": [1, 2, 3, 4], "b@h": [4, 5, 6]},
        live=frozenset({"a@h"}),
        departures={"b@h": gone_since(GRACE * 2)},
        sql_epoch=1,
        leases=listing({"6": lease("gone@h")}),
        applying=["p"],
    )

    assert checks(verdict) == [
        Check.ONE_OWNER, Check.OWNER_STATE, Check.SQL_AGREES, Check.LEASE_OWNER, Check.STUCK_PLAN,
    ]  # fmt: skip
