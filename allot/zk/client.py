"""The edge where allot opens ZooKeeper connections; everything else takes a client.

:func:`make_client` builds a :class:`~kazoo.client.KazooClient` from :class:`Settings`;
:func:`connect` also starts it. The store, membership and lock modules never connect on their
own (STYLE 3): they take a started client, so tests and the Celery worker decide its lifetime.

Access control (``ALLOT_ZK_AUTH=user:password``)
    The client authenticates with ``digest user:password`` and creates every znode with
    ``default_acl`` = *digest user:password ALL* plus *world READ*: anyone may read the
    assignment (operators, ``zkCli``, monitoring; nothing in it is secret), only holders of the
    credentials may create, change or delete allot's znodes. kazoo applies ``default_acl`` to
    every create, including parents made by ``makepath`` and the lock recipe's nodes.
    The ancestors of the root (``/default`` for ``/default/allot``) are shared namespace: allot
    creates them, when missing, with open ACLs so other applications can still use them; the
    root and everything below get the restricted ACL. ACLs are set when a znode is created:
    turning auth on for an existing tree does not change it (use ``setAcl -R`` in ``zkCli``).
    Unset: open ACLs, as ZooKeeper does by default.
"""

from __future__ import annotations

import contextlib

from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError, NodeExistsError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry
from kazoo.security import ACL, OPEN_ACL_UNSAFE, READ_ACL_UNSAFE, make_digest_acl

from allot.errors import AccessDenied, ZooKeeperUnavailable
from allot.settings import Settings
from allot.zk.paths import ZkPaths


def parse_auth(zk_auth: str) -> tuple[str, str]:
    """Split ``user:password`` at the first colon (the password may contain colons)."""
    user, _, password = zk_auth.partition(":")
    return user, password


def default_acl(settings: Settings) -> list[ACL] | None:
    """The ACL allot's znodes get: digest ALL for the configured user plus world READ, or
    ``None`` (ZooKeeper's open ACL) when ``zk_auth`` is unset."""
    if settings.zk_auth is None:
        return None
    user, password = parse_auth(settings.zk_auth)
    return [make_digest_acl(user, password, all=True), *READ_ACL_UNSAFE]


def make_client(settings: Settings) -> KazooClient:
    """A KazooClient configured from ``settings``, not yet started.

    Hosts and session timeout come from ``zk_hosts`` and ``zk_session_timeout``; with
    ``zk_auth`` it carries ``auth_data`` and :func:`default_acl`. Connection attempts retry
    forever with backoff (capped at 2 s between attempts) once started, as a long-running
    worker needs; operations retried through ``client.retry`` give up after 5 attempts.
    """
    auth_data = None
    if settings.zk_auth is not None:
        auth_data = [("digest", settings.zk_auth)]
    return KazooClient(
        hosts=settings.zk_hosts,
        timeout=settings.zk_session_timeout,
        auth_data=auth_data,
        default_acl=default_acl(settings),
        connection_retry=KazooRetry(max_tries=-1, max_delay=2.0),
        command_retry=KazooRetry(max_tries=5, max_delay=2.0),
    )


def connect(settings: Settings, timeout: float = 15.0) -> KazooClient:
    """A started client (see :func:`make_client`).

    Raises:
        ZooKeeperUnavailable: no session could be established within ``timeout`` seconds; the
            client is closed before raising.
    """
    client = make_client(settings)
    try:
        client.start(timeout=timeout)
    except KazooTimeoutError:
        client.stop()
        client.close()
        raise ZooKeeperUnavailable(
            f"cannot connect to ZooKeeper at {settings.zk_hosts} within {timeout:g} s"
        ) from None
    return client


def ensure_layout(client: KazooClient, paths: ZkPaths) -> None:
    """Create the root and its fixed children when missing. Safe to repeat and to race.

    Ancestors of the root get open ACLs (shared namespace); the root, ``bucket-assignments``,
    ``nodes`` and ``locks`` get the client's ``default_acl``.

    Raises:
        AccessDenied: a znode exists but the client may not create children in it.
    """
    parts = paths.root.strip("/").split("/")
    ancestors = ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]
    try:
        for path in ancestors:
            _create_if_missing(client, path, OPEN_ACL_UNSAFE)
        for path in paths.containers:
            _create_if_missing(client, path, None)
    except NoAuthError:
        raise AccessDenied(
            f"ZooKeeper refused to create allot's znodes under {paths.root}: check ALLOT_ZK_AUTH"
        ) from None


def _create_if_missing(client: KazooClient, path: str, acl: list[ACL] | None) -> None:
    if client.exists(path) is not None:
        return
    with contextlib.suppress(NodeExistsError):
        client.create(path, b"", acl=acl)
