"""Table registration on SQLite and PostgreSQL: balance, ties, idempotence, drops, the view."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import Engine, func, select, text

from allot import registry
from allot.errors import NotFound
from allot.names import TableName, parse_table_name
from allot.work.fence import take_fence
from allot.work.runs import Attempt, insert_committed
from models import Bucket, TableIdentifier
from models.base import utcnow
from models.engine import session_factory
from models.schema import TableTaskRun


def names(count: int, prefix: str = "t") -> list[TableName]:
    return [TableName("hive", "db", f"{prefix}{i:06d}") for i in range(count)]


def bucket_counts(engine: Engine) -> dict[int, int]:
    with engine.connect() as connection:
        return dict(connection.execute(select(Bucket.bucket_id, Bucket.table_count)).all())


def test_ten_thousand_tables_fill_every_bucket_with_exactly_one_hundred(migrated: Engine) -> None:
    # Given 100 empty buckets, when 10,000 tables are registered in bulk
    results = registry.register_in_batches(session_factory(migrated), names(10_000), 3_000)

    # Then every bucket holds exactly 100, by its counter and by the rows themselves
    assert all(result.created for result in results)
    assert set(bucket_counts(migrated).values()) == {100}
    with migrated.connect() as connection:
        actual = connection.execute(
            select(TableIdentifier.bucket_id, func.count()).group_by(TableIdentifier.bucket_id)
        ).all()
    assert sorted(actual) == [(bucket_id, 100) for bucket_id in range(1, 101)]


def test_new_tables_go_to_the_emptiest_bucket_with_ties_to_the_lowest_id(
    migrated: Engine,
) -> None:
    sessions = session_factory(migrated)
    first = registry.register_in_batches(sessions, names(3))
    assert [r.bucket_id for r in first] == [1, 2, 3]

    # Filling every bucket once, then dropping a table from bucket 42, makes 42 the emptiest
    registry.register_in_batches(sessions, names(97, prefix="fill"))
    with sessions.begin() as session:
        victim = next(
            r.name
            for r in registry.register_tables(session, names(100, "fill"))
            if r.bucket_id == 42
        )
        assert registry.drop_table(session, victim) == 42
    with sessions.begin() as session:
        [again] = registry.register_tables(session, [TableName("hive", "db", "next")])
    assert again.bucket_id == 42
    assert again.created


def test_registering_an_existing_table_is_a_no_op_returning_its_bucket(migrated: Engine) -> None:
    sessions = session_factory(migrated)
    with sessions.begin() as session:
        [created] = registry.register_tables(session, [parse_table_name("c.d.orders")])
    before = bucket_counts(migrated)

    with sessions.begin() as session:
        results = registry.register_tables(
            session, [parse_table_name("c.d.orders"), parse_table_name("c.d.orders")]
        )

    assert results == [registry.Registration(created.name, created.bucket_id, False)]
    assert bucket_counts(migrated) == before
    with migrated.connect() as connection:
        assert connection.execute(select(func.count()).select_from(TableIdentifier)).scalar() == 1


def test_a_batch_mixing_new_and_existing_tables_only_counts_the_new_ones(migrated: Engine) -> None:
    sessions = session_factory(migrated)
    registry.register_in_batches(sessions, names(150))
    results = registry.register_in_batches(sessions, names(300), batch_size=70)

    assert [r.created for r in results] == [False] * 150 + [True] * 150
    assert sum(bucket_counts(migrated).values()) == 300
    assert Counter(bucket_counts(migrated).values()) == {3: 100}


def test_drop_of_an_unknown_table_is_refused_and_changes_nothing(migrated: Engine) -> None:
    sessions = session_factory(migrated)
    registry.register_in_batches(sessions, names(5))
    before = bucket_counts(migrated)
    with (
        pytest.raises(NotFound, match=r"table x\.y\.z is not registered"),
        sessions.begin() as session,
    ):
        registry.drop_table(session, TableName("x", "y", "z"))
    assert bucket_counts(migrated) == before


def test_plain_sql_on_table_assignment_answers_which_node_owns_a_table(migrated: Engine) -> None:
    sessions = session_factory(migrated)
    [orders] = registry.register_in_batches(sessions, [parse_table_name("hive.sales.orders")])
    with migrated.begin() as connection:
        connection.execute(
            text("UPDATE bucket SET node_key = 'node1@host', epoch = 3 WHERE bucket_id = :b"),
            {"b": orders.bucket_id},
        )
        row = connection.execute(
            text(
                "SELECT node_key, bucket_id, epoch FROM table_assignment "
                "WHERE catalog_name = 'hive' AND db_name = 'sales' AND table_name = 'orders'"
            )
        ).one()
    assert tuple(row) == ("node1@host", orders.bucket_id, 3)

    with sessions() as session:
        assert registry.mapping(session, node_key="node1@host")[0].table_name == "orders"
        assert registry.mapping(session, node_key="other@host") == []


def test_list_tables_is_ordered_by_name_and_filters_by_bucket(migrated: Engine) -> None:
    sessions = session_factory(migrated)
    registry.register_in_batches(
        sessions, [parse_table_name(n) for n in ("b.x.t", "a.x.t", "a.x.s")]
    )
    with sessions() as session:
        listed = [f"{c}.{d}.{t}" for _, c, d, t, _ in registry.list_tables(session)]
        in_bucket_two = registry.list_tables(session, bucket_id=2)
        assert registry.count_tables(session) == 3
    assert listed == ["a.x.s", "a.x.t", "b.x.t"]
    assert [row.table_name for row in in_bucket_two] == ["t"]


def test_a_table_with_run_history_can_be_dropped_and_its_history_goes_with_it(
    migrated: Engine,
) -> None:
    sessions = session_factory(migrated)
    [orders] = registry.register_in_batches(sessions, [parse_table_name("hive.sales.orders")])
    with sessions.begin() as session:
        table_id = session.scalar(select(TableIdentifier.table_id))
        assert table_id is not None
        assert take_fence(session, orders.bucket_id, "a@h", 7)
        attempt = Attempt("run-1", "t.compact", table_id, orders.bucket_id, "a@h", 7, utcnow())
        insert_committed(session, attempt)
    with sessions.begin() as session:
        assert registry.drop_table(session, parse_table_name("hive.sales.orders")) == (
            orders.bucket_id
        )
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(TableTaskRun)) == 0
