"""Fault injection against a real ZooKeeper server, for tests and benchmarks, the cleanup
of a test's root (:func:`delete_root`) and a client that records what it asks
(:class:`CountingClient`).

:func:`expire_session` uses the technique of kazoo's own test suite: a second client joins
the session with the same id and password, then closes it; the server expires the session,
deletes its ephemeral znodes, and the first client sees LOST when it reconnects (then kazoo
opens a new session: CONNECTED).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import NotEmptyError

from allot.settings import Settings
from allot.zk.client import connect


def expire_session(client: KazooClient, hosts: str, timeout: float = 15.0) -> None:
    """Expire ``client``'s session on the server and wait until it has reconnected with a new
    session (LOST then CONNECTED seen by its listeners).

    Raises:
        TimeoutError: the expiry or the reconnection did not happen within ``timeout``.
    """
    lost, back = threading.Event(), threading.Event()

    def listener(state: str) -> bool:
        if state == KazooState.LOST:
            lost.set()
        elif state == KazooState.CONNECTED and lost.is_set():
            back.set()
            return True
        return False

    client.add_listener(listener)
    deadline = time.monotonic() + timeout
    while not lost.is_set() and time.monotonic() < deadline:
        session_id, password = client.client_id
        intruder = KazooClient(hosts=hosts, client_id=(session_id, password), timeout=2.0)
        intruder.start(timeout=max(1.0, deadline - time.monotonic()))
        intruder.stop()
        intruder.close()
        lost.wait(1.0)
    if not lost.is_set():
        client.remove_listener(listener)
        raise TimeoutError("the session did not expire")
    if not back.wait(max(0.0, deadline - time.monotonic())):
        client.remove_listener(listener)
        raise TimeoutError("the client did not reconnect after the session expired")


def delete_root(settings: Settings, attempts: int = 3) -> None:
    """Delete the top znode of ``settings.zk_root`` (``/allottest-…``) and all below it.

    A session that is still closing may create a znode meanwhile (``NotEmptyError``): the
    delete is tried again, ``attempts`` times in all, as kazoo's own test harness does.
    """
    top = "/" + settings.zk_root.strip("/").split("/")[0]
    client = connect(settings)
    try:
        for attempt in range(attempts):
            try:
                client.delete(top, recursive=True)
                return
            except NotEmptyError:
                if attempt == attempts - 1:
                    raise
    finally:
        client.stop()
        client.close()


@dataclass(frozen=True)
class Request:
    """One request a :class:`CountingClient` sent: kazoo's request type (``GetData``,
    ``Exists``, ``GetChildren2``, ``Transaction``, ...), the znodes it names (every operation's
    of a transaction or a ``multiRead``) and whether it sets a watch."""

    kind: str
    paths: tuple[str, ...]
    watch: bool


class CountingClient(KazooClient):  # type: ignore[misc]  # kazoo ships no types
    """A real :class:`KazooClient` that records every request it queues (:attr:`requests`,
    in order), so a test or a benchmark can count what a component asks ZooKeeper and which
    znodes it watches. Pings and the connection's own handshake are not requests here.

    It records at ``KazooClient._call``, the one method every request of kazoo's API goes
    through (the one :mod:`allot.zk.multiread` queues its ``multiRead`` with)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[Request] = []
        self._requests_lock = threading.Lock()

    def _call(self, request: Any, async_object: Any) -> Any:
        operations = getattr(request, "operations", None)
        if operations is not None:  # a transaction
            paths = tuple(operation.path for operation in operations)
        elif hasattr(request, "paths"):  # a multiRead
            paths = tuple(request.paths)
        else:
            paths = (request.path,) if isinstance(getattr(request, "path", None), str) else ()
        found = Request(
            type(request).__name__, paths, getattr(request, "watcher", None) is not None
        )
        with self._requests_lock:
            self.requests.append(found)
        return super()._call(request, async_object)

    def since(self, start: int) -> list[Request]:
        """The requests recorded after the first ``start`` (``len(client.requests)`` taken
        earlier)."""
        with self._requests_lock:
            return self.requests[start:]
