"""The worker's start-up refusals, without processes: what the one line says."""

from __future__ import annotations

import pytest

from allot.errors import BucketCountMismatch, ConfigurationError, InvalidNodeKey
from allot.settings import Settings
from tasks.node import DATABASE_CHECK_TIMEOUT, WorkerNode, _connect_timeout, refusal


def test_a_bad_setting_is_refused_in_the_words_of_the_cli() -> None:
    exc = ConfigurationError("invalid setting ALLOT_NODE_WEIGHT: Input should be greater than 0")
    assert refusal("w@h", exc) == str(exc)


def test_any_other_refusal_names_the_worker() -> None:
    exc = BucketCountMismatch("database sqlite:///x.db: the database has 100 buckets ...")
    assert refusal("w@h", exc) == (
        "worker w@h refuses to join the cluster: database sqlite:///x.db: "
        "the database has 100 buckets ..."
    )


def test_a_worker_name_that_is_no_node_key_is_refused_before_the_database_is_opened() -> None:
    # an unsupported URL would raise ConfigurationError if the check got that far
    settings = Settings(database_url="sqlite:///unused.db")
    node = WorkerNode(settings.model_copy(update={"database_url": "mysql://db/x"}), "a/b@h")
    with pytest.raises(InvalidNodeKey, match=r"'a/b@h'.*worker's name \(-n\)"):
        node.check()


def test_only_postgresql_connections_get_a_timeout() -> None:
    assert _connect_timeout("sqlite:///var/allot.db") == {}
    assert _connect_timeout("postgresql://allot@db/allot") == {
        "connect_args": {"connect_timeout": DATABASE_CHECK_TIMEOUT}
    }
