"""Fixtures for end-to-end tests: a real local cluster per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from allot.settings import Settings
from allot.testing.cluster import LocalCluster
from allot.testing.processes import Processes, fresh_allot_env
from allot.testing.servers import ServerProcess
from allot.testing.zookeeper import delete_root
from allot.zk.client import connect

SESSION_TIMEOUT = 2.0
OFFLINE_TIMEOUT = 2.0
START = 60.0  # seconds allowed for workers to start and a cycle to settle


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the end-to-end tests ``e2e``: ``make pytest`` runs them after the others, one after
    another, because each starts a cluster of real processes whose timeouts assume the machine
    is not also running other tests. Run under xdist anyway, they stay together in one process
    (``--dist loadgroup``)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.xdist_group("e2e"))


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Start processes with ``processes.worker(...)``, ``.flower(...)``, ``.start(...)``; all
    are stopped after the test, and their logs are printed when it failed."""
    with Processes(tmp_path / "logs") as group:
        yield group


@pytest.fixture
def cluster_env(
    zookeeper: ServerProcess, redis_server: ServerProcess, zk_root: str, migrated: Engine
) -> dict[str, str]:
    """Environment for the cluster's processes: short timeouts, this test's root and database."""
    return fresh_allot_env(
        zookeeper,
        redis_server,
        zk_root=zk_root,
        database_url=migrated.url.render_as_string(hide_password=False),
        zk_session_timeout=str(SESSION_TIMEOUT),
        node_offline_timeout=str(OFFLINE_TIMEOUT),
        assign_interval="3",
    )


@pytest.fixture
def cluster(
    cluster_env: dict[str, str], migrated: Engine, zk_root: str, tmp_path: Path
) -> Iterator[LocalCluster]:
    """Start processes with ``cluster.worker(name)`` / ``cluster.beat()``; all are stopped after
    the test, their logs are printed when it failed, and the test's root is deleted."""
    settings = Settings(zk_hosts=cluster_env["ALLOT_ZK_HOSTS"], zk_root=zk_root)
    client = connect(settings)
    local = LocalCluster(tmp_path, cluster_env, client, migrated, settings)
    try:
        yield local
    finally:
        local.stop_all()
        client.stop()
        client.close()
        print(local.logs())
        delete_root(settings)
