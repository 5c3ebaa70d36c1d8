"""Validation of the names users hand to allot: table names and node keys.

Table names are ``catalog.database.table``: exactly three dot-separated parts, each 1 to
128 characters from ``A-Z a-z 0-9 _ - $``, starting with a letter, a digit or ``_``. Names are
case-sensitive and stored as given.

Node keys match ``^[A-Za-z0-9._@:-]{1,128}$`` and are neither ``.`` nor ``..`` (they become
ZooKeeper path components, so a slash or a relative component is never allowed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from allot.errors import InvalidNodeKey, InvalidTableName

TABLE_PART_MAX = 128
_TABLE_PART = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_$-]{{0,{TABLE_PART_MAX - 1}}}")
_NODE_KEY = re.compile(r"[A-Za-z0-9._@:-]{1,128}")


class TableName(NamedTuple):
    """A validated ``catalog.database.table`` name."""

    catalog: str
    database: str
    table: str

    def __str__(self) -> str:
        return f"{self.catalog}.{self.database}.{self.table}"


def parse_table_name(name: str) -> TableName:
    """Split and validate ``catalog.database.table``.

    Raises:
        InvalidTableName: the name does not have three valid parts; the message says which rule
            it breaks.
    """
    parts = name.split(".")
    if len(parts) != 3:
        raise InvalidTableName(
            f"invalid table name {name!r}: expected catalog.database.table "
            f"(three dot-separated parts), got {len(parts)} part(s)"
        )
    for label, part in zip(("catalog", "database", "table"), parts, strict=True):
        if not part:
            raise InvalidTableName(f"invalid table name {name!r}: the {label} part is empty")
        if len(part) > TABLE_PART_MAX:
            raise InvalidTableName(
                f"invalid table name {name!r}: the {label} part is longer than "
                f"{TABLE_PART_MAX} characters"
            )
        if not _TABLE_PART.fullmatch(part):
            raise InvalidTableName(
                f"invalid table name {name!r}: the {label} part {part!r} may only use "
                "letters, digits, '_', '-' and '$', and must not start with '-' or '$'"
            )
    return TableName(*parts)


def validate_node_key(key: str) -> str:
    """Return ``key`` if it is a valid node key.

    Raises:
        InvalidNodeKey: the key is empty, too long, uses a character outside
            ``A-Z a-z 0-9 . _ @ : -``, or is ``.`` or ``..``.
    """
    if not isinstance(key, str) or not _NODE_KEY.fullmatch(key) or key in (".", ".."):
        raise InvalidNodeKey(
            f"invalid node key {key!r}: use 1 to 128 characters from A-Z a-z 0-9 . _ @ : - "
            "(not '.' or '..')"
        )
    return key


def split_node_keys(names: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """Sort ZooKeeper child ``names`` into valid node keys (sorted) and the others, each with
    the reason it is not a node key (nothing under allot's parents is trusted blindly)."""
    keys: list[str] = []
    invalid: dict[str, str] = {}
    for name in sorted(names):
        try:
            keys.append(validate_node_key(name))
        except InvalidNodeKey as exc:
            invalid[name] = str(exc)
    return keys, invalid
