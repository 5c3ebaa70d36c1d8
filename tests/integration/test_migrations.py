"""The Alembic migrations: up, down, up again; models in step; the bucket count is fixed."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text, update

from allot import database
from allot.errors import BucketCountMismatch, DatabaseNotReady
from models import Base, Bucket
from models.schema import BucketLease, FenceGeneration, MirrorState

SCHEMA_TABLES = {
    "bucket",
    "bucket_lease",
    "fence_generation",
    "mirror_state",
    "node",
    "plan",
    "plan_move",
    "table_identifier",
    "table_task_run",
}


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_creates_the_schema_the_view_and_the_buckets(engine: Engine) -> None:
    result = database.upgrade(engine, bucket_count=64)

    assert (result.revision_before, result.revision_after) == (None, database.head_revision())
    assert result.buckets_created == 64
    assert table_names(engine) == SCHEMA_TABLES
    assert "table_assignment" in inspect(engine).get_view_names()
    with engine.connect() as connection:
        ids = connection.execute(select(Bucket.bucket_id).order_by(Bucket.bucket_id)).scalars()
        assert list(ids) == list(range(1, 65))


def test_upgrade_is_safe_to_repeat(engine: Engine) -> None:
    database.upgrade(engine, bucket_count=10)
    again = database.upgrade(engine, bucket_count=10)
    assert again.revision_before == again.revision_after == database.head_revision()
    assert again.buckets_created == 0


def test_downgrade_to_base_removes_everything_and_upgrade_restores_it(engine: Engine) -> None:
    database.upgrade(engine, bucket_count=10)
    database.downgrade(engine, "base")
    assert table_names(engine) == set()
    assert inspect(engine).get_view_names() == []

    database.upgrade(engine, bucket_count=10)
    assert table_names(engine) == SCHEMA_TABLES


def test_models_match_the_newest_migration(migrated: Engine) -> None:
    with migrated.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_a_changed_bucket_count_is_refused_and_changes_nothing(migrated: Engine) -> None:
    with pytest.raises(BucketCountMismatch, match="has 100 buckets but ALLOT_BUCKET_COUNT is 64"):
        database.upgrade(migrated, bucket_count=64)
    with migrated.connect() as connection:
        assert database.stored_bucket_count(connection) == 100
        with pytest.raises(BucketCountMismatch):
            database.check_schema(connection, bucket_count=101)
        database.check_schema(connection, bucket_count=100)


def test_an_empty_database_is_reported_as_not_ready(engine: Engine) -> None:
    with engine.connect() as connection, pytest.raises(DatabaseNotReady, match="allot db upgrade"):
        database.check_schema(connection, bucket_count=100)


def test_the_schema_revision_constant_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(database.alembic_config()).get_heads() == [
        database.head_revision()
    ]


def test_0002_starts_the_mirror_fence_at_the_epoch_sql_already_mirrors(engine: Engine) -> None:
    # Given a database at 0001 whose buckets were mirrored up to epoch 7
    database.upgrade(engine, bucket_count=8)
    database.downgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(update(Bucket).where(Bucket.bucket_id == 3).values(epoch=7))
    # When it is upgraded to 0002
    database.upgrade(engine, bucket_count=8)
    # Then the fence starts at epoch 7 with no holder, so SQL's epoch never goes backwards
    with engine.connect() as connection:
        row = connection.execute(select(MirrorState.holder_token, MirrorState.epoch)).one()
    assert tuple(row) == (0, 7)


HISTORY_INDEXES = {
    "ix_table_task_run_started_at_attempt_id",
    "ix_table_task_run_node_key_started_at",
    "ix_table_task_run_status_started_at",
    "ix_table_task_run_task_name_started_at",
}


def run_indexes(engine: Engine) -> set[str]:
    return {str(index["name"]) for index in inspect(engine).get_indexes("table_task_run")}


def test_the_history_indexes_come_with_0004_and_go_with_it(migrated: Engine) -> None:
    assert run_indexes(migrated) >= HISTORY_INDEXES

    database.downgrade(migrated, "0003")  # through 0005's downgrade, then 0004's
    assert not HISTORY_INDEXES & run_indexes(migrated)
    assert "fence_generation" not in table_names(migrated)
    assert "ix_table_task_run_table_id_started_at" in run_indexes(migrated)

    database.upgrade(migrated, bucket_count=100)
    assert run_indexes(migrated) >= HISTORY_INDEXES


def test_0005_adds_the_zookeeper_generation_to_the_fences_and_removes_it_again(
    engine: Engine,
) -> None:
    # Given a database at 0004 (0005's parent) where node a holds bucket 2's fence with
    # token 900 and the assignment mirror's fence holds lock token 7000 at epoch 12
    database.upgrade(engine, bucket_count=8)
    database.downgrade(engine, "0004")
    assert run_indexes(engine) >= HISTORY_INDEXES
    assert "fence_generation" not in table_names(engine)
    assert "generation" not in columns(engine, "bucket_lease")
    assert "generation" not in columns(engine, "mirror_state")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO bucket_lease (bucket_id, node_key, token, taken_at) "
                "VALUES (2, 'a@h', 900, CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(text("UPDATE mirror_state SET holder_token = 7000, epoch = 12"))
    # When it is upgraded
    database.upgrade(engine, bucket_count=8)
    # Then both fences are of generation 0 (before generations) and the counter starts at
    # 0, so the first ZooKeeper generation handed out (1) takes over from them
    with engine.connect() as connection:
        fence = connection.execute(
            select(BucketLease.node_key, BucketLease.token, BucketLease.generation)
        ).one()
        mirror = connection.execute(
            select(MirrorState.generation, MirrorState.holder_token, MirrorState.epoch)
        ).one()
        counter = connection.execute(select(FenceGeneration.name, FenceGeneration.generation)).one()
    assert tuple(fence) == ("a@h", 900, 0)
    assert tuple(mirror) == (0, 7000, 12)
    assert tuple(counter) == ("zookeeper", 0)
    # And downgrading to 0004 removes all three, keeping the fence rows and 0004's indexes
    database.downgrade(engine, "0004")
    assert "fence_generation" not in table_names(engine)
    assert "generation" not in columns(engine, "bucket_lease")
    assert "generation" not in columns(engine, "mirror_state")
    assert run_indexes(engine) >= HISTORY_INDEXES
    with engine.connect() as connection:
        row = connection.execute(text("SELECT node_key, token FROM bucket_lease")).one()
        kept = connection.execute(text("SELECT holder_token, epoch FROM mirror_state")).one()
    assert tuple(row) == ("a@h", 900)
    assert tuple(kept) == (7000, 12)


def columns(engine: Engine, table: str) -> set[str]:
    return {str(column["name"]) for column in inspect(engine).get_columns(table)}
