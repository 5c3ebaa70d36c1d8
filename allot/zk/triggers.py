"""Deduplicated triggers: many workers see one membership change, one of them acts on it.

Every worker watches ``{root}/nodes``. When the children change, each worker reads the parent's
``cversion`` (the number of child changes so far) and tries to *claim* it: the claim raises the
number stored in ``{root}/triggers/membership`` with a version-checked write, so for a given
change exactly one worker wins and sends the cycle task. Workers that read a later ``cversion``
in the same burst may win again, so one change causes at most two triggered cycles whatever the
number of workers.

Failure modes:
    SUSPENDED / LOST: a claim that cannot be made returns False (the beat cycle is the safety
    net); nothing ephemeral is involved.
    Malformed data in the trigger znode: treated as 0, and the next claim rewrites it.
"""

from __future__ import annotations

import logging

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError

log = logging.getLogger(__name__)


def claim(client: KazooClient, path: str, token: int) -> bool:
    """Claim ``token`` at ``path``: True for exactly one caller per token greater than the last.

    Never raises for ZooKeeper trouble: a failed claim returns False (and is logged).
    """
    try:
        try:
            data, stat = client.get(path)
        except NoNodeError:
            try:
                client.create(path, str(token).encode(), makepath=True)
                return True
            except NodeExistsError:
                data, stat = client.get(path)
        try:
            last = int(data.decode() or 0)
        except (UnicodeDecodeError, ValueError):
            last = 0
        if token <= last:
            return False
        client.set(path, str(token).encode(), version=stat.version)
        return True
    except BadVersionError:
        return False
    except KazooException as exc:
        log.warning("could not claim trigger %s at %s: %s", token, path, exc)
        return False
