"""Digest ACLs (ALLOT_ZK_AUTH): allot's znodes are writable only with the credentials."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import Permissions

from allot.errors import AccessDenied
from allot.settings import Settings
from allot.testing.servers import ServerProcess
from allot.zk import (
    AssignmentLock,
    AssignmentStore,
    NodeRegistration,
    ZkPaths,
    this_process,
)


@pytest.fixture
def zk_settings(zookeeper: ServerProcess, zk_root: str) -> Settings:
    """This test's root, with credentials (the root is deleted with them after the test)."""
    return Settings(
        zk_hosts=zookeeper.address, zk_root=zk_root, zk_session_timeout=4, zk_auth="allot:s3cr:et"
    )


@pytest.fixture
def secured(zk_settings: Settings, zk_connect: Callable[[], KazooClient]) -> KazooClient:
    """A tree written by allot with credentials: assignments, a node, the lock."""
    client = zk_connect()
    paths = ZkPaths(zk_settings.zk_root)
    store = AssignmentStore(client, paths)
    store.apply(store.read_all(), {"a@h": [1, 2]}, plan_id="p1")
    NodeRegistration(client, paths, this_process("a@h")).register()
    assert AssignmentLock(client, paths).acquire() is not None
    return client


@pytest.fixture
def anonymous(zookeeper: ServerProcess) -> Iterator[KazooClient]:
    client = KazooClient(hosts=zookeeper.address)
    client.start(timeout=10)
    yield client
    client.stop()
    client.close()


def test_without_credentials_nothing_of_allots_can_be_written(
    secured: KazooClient, anonymous: KazooClient, zk_settings: Settings
) -> None:
    paths = ZkPaths(zk_settings.zk_root)
    # Then reading works (world READ) ...
    assert anonymous.get(paths.assignments("a@h"))[0] == b'["1","2"]'
    # ... but no write, create or delete, at any level allot created
    with pytest.raises(NoAuthError):
        anonymous.set(paths.assignments("a@h"), b'["9"]')
    with pytest.raises(NoAuthError):
        anonymous.set(paths.assignment_version, b"{}")
    with pytest.raises(NoAuthError):
        anonymous.delete(paths.last_update_time("a@h"))
    with pytest.raises(NoAuthError):
        anonymous.delete(paths.node("a@h"))
    for parent in (paths.root, paths.bucket_assignments, paths.node_entry("a@h"), paths.nodes):
        with pytest.raises(NoAuthError):
            anonymous.create(f"{parent}/intruder", b"")
    lock_children = anonymous.get_children(paths.assign_lock)
    with pytest.raises(NoAuthError):
        anonymous.delete(f"{paths.assign_lock}/{lock_children[0]}")
    # And allot's own API, used without credentials, says what is wrong
    store = AssignmentStore(anonymous, paths)
    with pytest.raises(AccessDenied, match="ALLOT_ZK_AUTH"):
        store.apply(store.read_all(), {"a@h": [1, 2, 3]}, plan_id="p2")
    assert anonymous.get(paths.assignments("a@h"))[0] == b'["1","2"]'


def test_acls_are_digest_all_plus_world_read_and_ancestors_stay_open(
    secured: KazooClient, anonymous: KazooClient, zk_settings: Settings
) -> None:
    paths = ZkPaths(zk_settings.zk_root)
    for path in (paths.root, paths.assignments("a@h"), paths.node("a@h"), paths.assign_lock):
        acls, _ = secured.get_acls(path)
        schemes = {(acl.id.scheme, acl.perms) for acl in acls}
        assert schemes == {("digest", Permissions.ALL), ("world", Permissions.READ)}, path
    # The root's ancestors are shared namespace: other applications may still use them
    ancestor = paths.root.rsplit("/", 1)[0]
    anonymous.create(f"{ancestor}/another-application", b"")
