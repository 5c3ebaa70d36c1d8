"""Deduplicated triggers: one membership change, one claim, whatever the number of workers."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient

from allot.devservers import ServerProcess
from allot.zk.triggers import claim


@pytest.fixture
def clients(zookeeper: ServerProcess) -> Iterator[list[KazooClient]]:
    started = [KazooClient(hosts=zookeeper.address) for _ in range(8)]
    for client in started:
        client.start(timeout=10)
    yield started
    for client in started:
        client.stop()
        client.close()


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
