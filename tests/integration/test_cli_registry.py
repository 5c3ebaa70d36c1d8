"""The ``allot db``, ``allot tables`` and ``allot mapping`` commands, run as real processes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli import allot


def test_db_upgrade_then_register_list_map_and_drop(database_url: str) -> None:
    env = {"ALLOT_DATABASE_URL": database_url}
    upgraded = allot("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "created buckets 1..100" in upgraded.stdout

    registered = allot(
        "tables", "register", "hive.sales.orders", "hive.sales.items", "-f", "json", env=env
    )
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout)["tables"] == [
        {"name": "hive.sales.orders", "bucket_id": 1, "created": True},
        {"name": "hive.sales.items", "bucket_id": 2, "created": True},
    ]

    mapped = allot("mapping", "--table", "hive.sales.items", "-f", "json", env=env)
    assert json.loads(mapped.stdout) == [
        {"name": "hive.sales.items", "bucket_id": 2, "node_key": None, "epoch": 0}
    ]
    listed = allot("tables", "list", "-f", "json", env=env)
    assert [t["name"] for t in json.loads(listed.stdout)] == [
        "hive.sales.items",
        "hive.sales.orders",
    ]

    dropped = allot("tables", "drop", "hive.sales.orders", env=env)
    assert dropped.returncode == 0
    assert "bucket 1" in dropped.stdout
    assert [
        t["name"] for t in json.loads(allot("tables", "list", "-f", "json", env=env).stdout)
    ] == ["hive.sales.items"]


def test_register_from_a_file_and_from_stdin(database_url: str, tmp_path: Path) -> None:
    env = {"ALLOT_DATABASE_URL": database_url}
    allot("db", "upgrade", env=env)
    listing = tmp_path / "tables.txt"
    listing.write_text("# catalog tables\nc.d.t1\n\nc.d.t2\n")

    from_file = allot("tables", "register", "--file", str(listing), "-f", "json", env=env)
    from_stdin = allot(
        "tables", "register", "--file", "-", "-f", "json", env=env, input="c.d.t2\nc.d.t3\n"
    )

    assert json.loads(from_file.stdout)["registered"] == 2
    assert json.loads(from_stdin.stdout) | {"tables": None} == {
        "registered": 1,
        "existing": 1,
        "tables": None,
    }


def test_a_bad_name_in_a_file_names_the_line_and_writes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    env = {"ALLOT_DATABASE_URL": database_url}
    allot("db", "upgrade", env=env)
    listing = tmp_path / "tables.txt"
    listing.write_text("c.d.good\nc.d/bad.x\n")

    result = allot("tables", "register", "--file", str(listing), env=env)

    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"{listing}, line 2: invalid table name 'c.d/bad.x'" in result.stderr
    assert json.loads(allot("tables", "list", "-f", "json", env=env).stdout) == []


def test_user_mistakes_print_one_line_and_exit_non_zero(database_url: str) -> None:
    env = {"ALLOT_DATABASE_URL": database_url}
    not_ready = allot("tables", "list", env=env)
    assert not_ready.returncode == 1
    assert "run `allot db upgrade`" in not_ready.stderr

    allot("db", "upgrade", env=env)
    cases = [
        (("tables", "register", "only.two"), {}, "expected catalog.database.table"),
        (("mapping", "--node", "bad/key"), {}, "invalid node key 'bad/key'"),
        (("mapping", "--table", "a.b.c"), {}, "table a.b.c is not registered"),
        (("tables", "list"), {"ALLOT_BUCKET_COUNT": "64"}, "ALLOT_BUCKET_COUNT is 64"),
        (("db", "upgrade"), {"ALLOT_BUCKET_COUNT": "64"}, "has 100 buckets"),
        (("tables", "list"), {"ALLOT_BUCKET_COUNT": "zero"}, "invalid setting ALLOT_BUCKET_COUNT"),
    ]
    for args, extra, message in cases:
        result = allot(*args, env=env | extra)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unreachable_database_is_one_clear_line() -> None:
    result = allot(
        "tables", "list", env={"ALLOT_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/x"}
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: cannot use the database at postgresql://nobody@127.0.0.1:9/x"
    )
    assert "Traceback" not in result.stderr
