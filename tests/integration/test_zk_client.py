"""The connection edge: clients built from settings, layout creation, connection failures."""

from __future__ import annotations

import pytest

from allot.errors import ZooKeeperUnavailable
from allot.settings import Settings
from allot.testing.servers import ServerProcess, free_port
from allot.zk import ZkPaths, connect, ensure_layout, make_client


def test_the_client_follows_the_settings() -> None:
    settings = Settings(zk_hosts="127.0.0.1:2181", zk_session_timeout=7.5, zk_auth="u:p:w")
    client = make_client(settings)
    assert client._session_timeout == 7500  # kazoo keeps the timeout in ms
    assert client.auth_data == {("digest", "u:p:w")}
    assert [acl.id.scheme for acl in client.default_acl] == ["digest", "world"]
    assert make_client(Settings()).default_acl is None


def test_connecting_to_nothing_fails_clearly() -> None:
    settings = Settings(zk_hosts=f"127.0.0.1:{free_port()}")
    with pytest.raises(ZooKeeperUnavailable, match="within 1 s"):
        connect(settings, timeout=1)


def test_the_layout_is_created_once_and_safe_to_repeat(
    zookeeper: ServerProcess, zk_root: str
) -> None:
    client = connect(Settings(zk_hosts=zookeeper.address, zk_root=zk_root))
    try:
        paths = ZkPaths(zk_root)
        ensure_layout(client, paths)
        ensure_layout(client, paths)
        assert sorted(client.get_children(zk_root)) == ["bucket-assignments", "locks", "nodes"]
    finally:
        client.stop()
        client.close()
