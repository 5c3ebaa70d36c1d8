"""The names of the bucket queues: ``allot.{cluster}.bucket.{bucket_id}``."""

from __future__ import annotations

import re

_BUCKET_QUEUE = re.compile(r"allot\.(?P<cluster>[A-Za-z0-9._-]+)\.bucket\.(?P<bucket>[0-9]+)")


def bucket_queue(cluster: str, bucket_id: int) -> str:
    """The queue of bucket ``bucket_id``'s table tasks."""
    return f"allot.{cluster}.bucket.{bucket_id}"


def queue_bucket(cluster: str, queue: str) -> int | None:
    """The bucket whose queue ``queue`` is, in ``cluster``; None for any other queue."""
    match = _BUCKET_QUEUE.fullmatch(queue)
    if match is None or match["cluster"] != cluster:
        return None
    return int(match["bucket"])
