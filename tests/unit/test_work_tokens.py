"""The node's shared lease tokens (allot.work.tokens): what the main process writes, every
process forked from it reads, also after the fork, as Celery's prefork pool processes do."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from allot.work import tokens
from allot.work.tokens import NoTokens, TokenTable

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def no_node_tokens() -> Iterator[None]:
    """This process starts as no worker: no node tokens (and none left behind)."""
    saved = tokens._node_tokens
    tokens._node_tokens = None
    yield
    tokens._node_tokens = saved


def read_when_told(pipe: Connection, buckets: list[int]) -> None:
    """A pool process: on each word of the parent, read the node's tokens of ``buckets``."""
    while pipe.recv() == "read":
        table = tokens.node_tokens()
        pipe.send(None if table is None else [table.token(b) for b in buckets])
    pipe.close()


def forked_reader(buckets: list[int]) -> tuple[multiprocessing.process.BaseProcess, Connection]:
    parent, child = FORK.Pipe()
    process = FORK.Process(target=read_when_told, args=(child, buckets), daemon=True)
    process.start()
    return process, parent


def ask(pipe: Connection) -> list[int] | None:
    pipe.send("read")
    assert pipe.poll(10)
    answer: list[int] | None = pipe.recv()
    return answer


def test_a_new_table_serves_no_bucket() -> None:
    table = TokenTable(100)
    assert [table.token(b) for b in (0, 1, 50, 100, 101, -1)] == [0] * 6
    assert table.held() == {}


def test_tokens_are_held_forgotten_and_read_whole() -> None:
    table = TokenTable(100)
    big = 2**63 - 1  # a zxid uses all 64 bits: epoch in the high half, counter in the low
    table.hold(1, 7)
    table.hold(100, big)
    table.hold(2, 2**32 + 5)
    assert table.held() == {1: 7, 2: 2**32 + 5, 100: big}
    table.forget(2)
    table.forget(101)  # no slot: nothing to forget
    assert table.held() == {1: 7, 100: big}
    table.forget_all()
    assert table.held() == {}


@pytest.mark.parametrize(("bucket", "token"), [(0, 5), (101, 5), (3, 0), (3, -1)])
def test_a_token_is_positive_and_its_bucket_has_a_slot(bucket: int, token: int) -> None:
    with pytest.raises(ValueError, match="no token"):
        TokenTable(100).hold(bucket, token)


def test_a_process_forked_from_the_worker_sees_every_later_change(no_node_tokens: None) -> None:
    # Given the worker's main process sharing its table, then its pool process forked
    table = tokens.share_node_tokens(100)
    assert tokens.share_node_tokens(100) is table  # once per worker
    table.hold(3, 41)
    process, pipe = forked_reader([3, 4, 5])
    try:
        assert ask(pipe) == [41, 0, 0]
        # When the main process takes, gives away and loses leases after the fork
        table.hold(4, 2**40 + 1)
        table.forget(3)
        # Then the pool process sees each change
        assert ask(pipe) == [0, 2**40 + 1, 0]
        table.forget_all()
        assert ask(pipe) == [0, 0, 0]
        table.hold(5, 99)
        assert ask(pipe) == [0, 0, 99]
    finally:
        pipe.send("stop")
        process.join(10)
    assert process.exitcode == 0


def test_a_pool_process_forked_again_later_shares_the_same_table(no_node_tokens: None) -> None:
    # Given a pool process that died and one forked in its place (Celery re-forks)
    table = tokens.share_node_tokens(100)
    first, first_pipe = forked_reader([9])
    first_pipe.send("stop")
    first.join(10)
    table.hold(9, 12)
    second, pipe = forked_reader([9])
    try:
        assert ask(pipe) == [12]
        table.hold(9, 13)
        assert ask(pipe) == [13]
    finally:
        pipe.send("stop")
        second.join(10)


def test_a_worker_process_that_inherited_no_table_serves_no_bucket(no_node_tokens: None) -> None:
    assert tokens.node_tokens() is None  # outside a worker: nothing (runs read SQL's fence)
    found = tokens.require_node_tokens()
    assert isinstance(found, NoTokens)
    assert found.token(1) == 0
    assert tokens.node_tokens() is found


def test_a_worker_process_keeps_the_table_it_inherited(no_node_tokens: None) -> None:
    table = tokens.share_node_tokens(10)
    assert tokens.require_node_tokens() is table
