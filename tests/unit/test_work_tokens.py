"""The node's shared lease tokens (allot.work.tokens): what the main process writes, every
process forked from it reads, also after the fork, as Celery's prefork pool processes do."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from allot.work import tokens
from allot.work.tokens import SLOT_WORDS, NoTokens, OwnLease, TokenTable

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
        pipe.send(None if table is None else [table.lease(b) for b in buckets])
    pipe.close()


def forked_reader(buckets: list[int]) -> tuple[multiprocessing.process.BaseProcess, Connection]:
    parent, child = FORK.Pipe()
    process = FORK.Process(target=read_when_told, args=(child, buckets), daemon=True)
    process.start()
    return process, parent


def ask(pipe: Connection) -> list[OwnLease | None] | None:
    """What the pool process reads: (generation, token) per bucket, None where not served."""
    pipe.send("read")
    assert pipe.poll(10)
    answer: list[OwnLease | None] | None = pipe.recv()
    return answer


def test_a_new_table_serves_no_bucket() -> None:
    table = TokenTable(100)
    assert [table.token(b) for b in (0, 1, 50, 100, 101, -1)] == [0] * 6
    assert [table.lease(b) for b in (0, 1, 50, 100, 101, -1)] == [None] * 6
    assert table.held() == {}


def test_tokens_are_held_forgotten_and_read_whole() -> None:
    table = TokenTable(100)
    big = 2**63 - 1  # a zxid uses all 64 bits: epoch in the high half, counter in the low
    table.hold(1, 7, generation=0)
    table.hold(100, big, generation=big)
    table.hold(2, 2**32 + 5, generation=3)
    assert table.held() == {1: (0, 7), 2: (3, 2**32 + 5), 100: (big, big)}
    assert table.token(2) == 2**32 + 5
    table.forget(2)
    table.forget(101)  # no slot: nothing to forget
    assert table.held() == {1: (0, 7), 100: (big, big)}
    table.forget_all()
    assert table.held() == {}


@pytest.mark.parametrize(
    ("bucket", "token", "generation"), [(0, 5, 1), (101, 5, 1), (3, 0, 1), (3, -1, 1), (3, 5, -1)]
)
def test_a_token_is_positive_of_a_generation_and_its_bucket_has_a_slot(
    bucket: int, token: int, generation: int
) -> None:
    with pytest.raises(ValueError, match="no token"):
        TokenTable(100).hold(bucket, token, generation=generation)


def test_a_slot_is_changed_under_its_sequence_only_when_its_pair_changes() -> None:
    table = TokenTable(10)
    seq = table._words[SLOT_WORDS * 4]
    table.hold(4, 30, generation=2)
    assert table._words[SLOT_WORDS * 4] == seq + 2  # odd while changing, even again after
    table.hold(4, 30, generation=2)  # the lease loop writes it every pass: no change
    assert table._words[SLOT_WORDS * 4] == seq + 2
    table.hold(4, 30, generation=3)  # the same token under another generation is a change
    assert table.lease(4) == (3, 30)
    assert table._words[SLOT_WORDS * 4] == seq + 4


def test_a_reader_never_accepts_a_slot_being_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a writer stopped in the middle of a change (the sequence odd), as a pool process
    # would find it when it reads between the writer's stores
    table = TokenTable(10)
    table.hold(4, 30, generation=1)
    at = SLOT_WORDS * 4
    table._words[at] += 1
    table._words[at + 1] = 2  # the new generation is there, the token still the old lease's
    monkeypatch.setattr(tokens, "RETRY_SECONDS", 0.0)
    # Then it answers "not here" rather than the pair (2, 30), which no lease had
    assert table.lease(4) is None
    assert table.token(4) == 0
    # And once the change is whole it reads the new pair
    table._words[at + 2] = 40
    table._words[at] += 1
    assert table.lease(4) == (2, 40)


def test_a_reader_reads_again_when_the_slot_changed_under_it() -> None:
    # Given a slot whose sequence moves between the reader's two reads of it (a change began
    # and ended meanwhile), then the reader does not accept its first reading
    table = TokenTable(10)
    table.hold(4, 30, generation=1)
    words = table._words
    at = SLOT_WORDS * 4
    reads: list[int] = []

    class Moving:
        """The table's words, with a whole change made after the reader's first read."""

        def __getitem__(self, index: int) -> int:
            value = int(words[index])
            reads.append(index)
            if len(reads) == 1:
                words[at] += 1
                words[at + 1] = 2
                words[at + 2] = 40
                words[at] += 1
            return value

    table._words = Moving()  # type: ignore[assignment]
    assert table.lease(4) == (2, 40)
    assert reads.count(at) == 4  # two reads per try, two tries


def test_a_process_forked_from_the_worker_sees_every_later_change(no_node_tokens: None) -> None:
    # Given the worker's main process sharing its table, then its pool process forked
    table = tokens.share_node_tokens(100)
    assert tokens.share_node_tokens(100) is table  # once per worker
    table.hold(3, 41, generation=1)
    process, pipe = forked_reader([3, 4, 5])
    try:
        assert ask(pipe) == [(1, 41), None, None]
        # When the main process takes, gives away and loses leases after the fork
        table.hold(4, 2**40 + 1, generation=2)
        table.forget(3)
        # Then the pool process sees each change
        assert ask(pipe) == [None, (2, 2**40 + 1), None]
        table.forget_all()
        assert ask(pipe) == [None, None, None]
        table.hold(5, 99, generation=2)
        assert ask(pipe) == [None, None, (2, 99)]
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
    table.hold(9, 12, generation=1)
    second, pipe = forked_reader([9])
    try:
        assert ask(pipe) == [(1, 12)]
        table.hold(9, 13, generation=1)
        assert ask(pipe) == [(1, 13)]
    finally:
        pipe.send("stop")
        second.join(10)


def test_a_worker_process_that_inherited_no_table_serves_no_bucket(no_node_tokens: None) -> None:
    assert tokens.node_tokens() is None  # outside a worker: nothing (runs read SQL's fence)
    found = tokens.require_node_tokens()
    assert isinstance(found, NoTokens)
    assert found.token(1) == 0
    assert found.lease(1) is None
    assert tokens.node_tokens() is found


def test_a_worker_process_keeps_the_table_it_inherited(no_node_tokens: None) -> None:
    table = tokens.share_node_tokens(10)
    assert tokens.require_node_tokens() is table
