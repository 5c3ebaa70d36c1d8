"""``allot pin BUCKET NODE`` and ``allot unpin BUCKET``: keep a bucket on a node while it is
live (:mod:`allot.zk.pins`; every planner strategy honours a pin, the next cycle applies it)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from allot.cli._common import console, err_console
from allot.cli._context import cli_config, open_zookeeper
from allot.errors import InvalidInput
from allot.names import validate_node_key
from allot.zk.members import read_members
from allot.zk.paths import ZkPaths
from allot.zk.pins import read_pins, remove_pin, set_pin

BucketArgument = Annotated[str, typer.Argument(help="The bucket id, 1..ALLOT_BUCKET_COUNT.")]


def parse_bucket(text: str, bucket_count: int) -> int:
    """The bucket id ``text`` names.

    Raises:
        InvalidInput: ``text`` is not an integer in ``1..bucket_count``.
    """
    try:
        bucket = int(text.strip())
    except ValueError:
        raise InvalidInput(f"invalid bucket {text!r}: expected an integer") from None
    if not 1 <= bucket <= bucket_count:
        raise InvalidInput(
            f"invalid bucket {bucket}: bucket ids are 1..{bucket_count} (ALLOT_BUCKET_COUNT)"
        )
    return bucket


def pin(
    bucket: BucketArgument,
    node: Annotated[str, typer.Argument(help="The node key that keeps the bucket.")],
) -> None:
    """Keep BUCKET on NODE while NODE is live (the next cycle moves it there).

    A pin to a node that is not live is kept and reported by every cycle; the bucket is then
    placed as if unpinned until the node is back.
    """
    settings = cli_config().settings
    bucket_id = parse_bucket(bucket, settings.bucket_count)
    node_key = validate_node_key(node)
    paths = ZkPaths(settings.zk_root)
    with open_zookeeper(settings, "writing the pins") as client:
        before = read_pins(client, paths, settings.bucket_count)
        set_pin(client, paths, bucket_id, node_key)
        live = read_members(client, paths).live
    if before.problem is not None:
        err_console.print(
            f"[yellow]warning:[/yellow] {escape(before.problem)} (replaced)",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"bucket {bucket_id} pinned to {node_key}", highlight=False)
    if node_key not in live:
        err_console.print(
            f"[yellow]warning:[/yellow] node {escape(node_key)} is not live now: the pin "
            "applies when it is back",
            highlight=False,
            soft_wrap=True,
        )


def unpin(bucket: BucketArgument) -> None:
    """Let BUCKET move again like any other."""
    settings = cli_config().settings
    bucket_id = parse_bucket(bucket, settings.bucket_count)
    paths = ZkPaths(settings.zk_root)
    with open_zookeeper(settings, "writing the pins") as client:
        before = read_pins(client, paths, settings.bucket_count)
        if bucket_id in before.by_bucket:
            remove_pin(client, paths, bucket_id)
    node_key = before.by_bucket.get(bucket_id)
    if node_key is None:
        console.print(f"bucket {bucket_id} was not pinned", highlight=False)
    else:
        console.print(f"bucket {bucket_id} unpinned (was on {node_key})", highlight=False)
