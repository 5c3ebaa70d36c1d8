"""Validation of table names and node keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from allot.errors import InvalidNodeKey, InvalidTableName
from allot.names import TableName, parse_table_name, validate_node_key


def test_a_valid_name_splits_into_its_three_parts() -> None:
    assert parse_table_name("hive.sales_2024.orders-v2$") == TableName(
        "hive", "sales_2024", "orders-v2$"
    )
    assert str(TableName("a", "b", "c")) == "a.b.c"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "got 1 part"),
        ("a.b", "got 2 part"),
        ("a.b.c.d", "got 4 part"),
        ("a..c", "the database part is empty"),
        (".b.c", "the catalog part is empty"),
        ("a.b.", "the table part is empty"),
        ("a.b/x.c", "may only use"),
        ("a.b.c d", "may only use"),
        ("a.b.-c", "must not start"),
        ("a.b.ö", "may only use"),
        ("a.b." + "x" * 129, "longer than 128"),
    ],
)
def test_bad_table_names_are_refused_with_the_reason(name: str, reason: str) -> None:
    with pytest.raises(InvalidTableName, match=reason):
        parse_table_name(name)


@given(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_$-]{0,20}", fullmatch=True), st.integers(0, 2))
def test_any_name_of_valid_parts_round_trips(part: str, position: int) -> None:
    parts = ["cat", "db", "tbl"]
    parts[position] = part
    name = ".".join(parts)
    assert str(parse_table_name(name)) == name


@pytest.mark.parametrize("key", ["node1@host", "a", "10.0.0.1:5000", "w-1.example.org", "x" * 128])
def test_valid_node_keys_pass(key: str) -> None:
    assert validate_node_key(key) == key


@pytest.mark.parametrize("key", ["", ".", "..", "a/b", "a b", "x" * 129, "ñ", "a\n"])
def test_invalid_node_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidNodeKey, match="invalid node key"):
        validate_node_key(key)
