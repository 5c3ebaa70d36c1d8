"""Deduplicated triggers: one membership change, one claim, whatever the number of workers."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from kazoo.client import KazooClient

from allot.testing.polling import wait_for
from allot.testing.servers import ServerProcess
from allot.testing.zookeeper import expire_session
from allot.zk.paths import ZkPaths
from allot.zk.triggers import TriggerDuty, claim


@pytest.fixture
def clients(zk_connect: Callable[[], KazooClient]) -> list[KazooClient]:
    return [zk_connect() for _ in range(8)]


def test_exactly_one_of_many_workers_claims_a_change(
    clients: list[KazooClient], zk_root: str
) -> None:
    path = f"{zk_root}/triggers/membership"
    for token in (3, 4, 9):
        assert sorted(claim_together(clients, path, token)) == [False] * (len(clients) - 1) + [True]


def claim_together(clients: list[KazooClient], path: str, token: int) -> list[bool]:
    """Every client claims ``token`` at the same moment; return what each got."""
    results: list[bool] = []
    barrier = threading.Barrier(len(clients))

    def attempt(client: KazooClient) -> None:
        barrier.wait()
        results.append(claim(client, path, token))

    threads = [threading.Thread(target=attempt, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_an_old_or_repeated_token_is_never_claimed_again(
    clients: list[KazooClient], zk_root: str
) -> None:
    path = f"{zk_root}/triggers/membership"
    assert claim(clients[0], path, 5)
    assert not claim(clients[1], path, 5)
    assert not claim(clients[1], path, 4)
    clients[0].set(path, b"garbage")
    assert claim(clients[2], path, 1)  # malformed data counts as 0 and is rewritten
    assert clients[0].get(path)[0] == b"1"


def test_one_worker_at_a_time_holds_the_trigger_duty_and_a_successor_takes_over(
    clients: list[KazooClient], zk_root: str, zookeeper: ServerProcess
) -> None:
    # Given eight workers queueing for the trigger duty
    paths = ZkPaths(zk_root)
    claimed: list[tuple[int, int]] = []

    def recorder(worker: int) -> Callable[[int], None]:
        return lambda version: claimed.append((worker, version))

    duties = [TriggerDuty(client, paths, f"w{i}", recorder(i)) for i, client in enumerate(clients)]
    try:
        wait_for(lambda: sum(d.holding.is_set() for d in duties) == 1, "one duty holder", 10)
        [holder] = [i for i, d in enumerate(duties) if d.holding.is_set()]
        # When a member joins, exactly one cycle is requested, by the holder
        before = len(claimed)
        clients[0].create(paths.node("a@h"), b"{}", ephemeral=True, makepath=True)
        version = clients[0].exists(paths.nodes).cversion
        wait_for(lambda: (holder, version) in claimed, f"w{holder} to claim {version}", 10)
        # When the holder's session ends
        expire_session(clients[holder], zookeeper.address)
        # Then another worker takes the duty and acts on the next change
        wait_for(
            lambda: any(d.holding.is_set() for i, d in enumerate(duties) if i != holder),
            "another worker to take the duty",
            10,
        )
        clients[1 if holder != 1 else 2].create(paths.node("b@h"), b"{}", ephemeral=True)
        later = clients[2].exists(paths.nodes).cversion
        wait_for(lambda: any(v >= later for _, v in claimed), f"a claim of version {later}", 10)
        # And no version was ever claimed twice
        versions = [v for _, v in claimed]
        assert len(versions) == len(set(versions))
        assert before <= len(claimed)
    finally:
        for duty in duties:
            duty.stop()
