"""Bad settings on a worker: a worker that can never be a node says why in one line and stops
before it touches ZooKeeper; an unreachable database does not stop it; an unexpected error in
its start-up hook is logged and leaves no half-registered node."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from allot.testing.cluster import HOST, QUICK_START, LocalCluster
from allot.testing.processes import ManagedProcess
from allot.testing.servers import free_port
from allot.zk.paths import ZkPaths
from models.schema import SCHEMA_REVISION

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def exit_status(process: ManagedProcess, timeout: float = 60.0) -> int:
    """Wait for a process that must stop by itself, and return its exit status."""
    try:
        return process.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"{process.name} still runs after {timeout:g} s:\n{process.tail()}"
        ) from None


def said(process: ManagedProcess) -> list[str]:
    """What the process wrote, without Celery's warning about running as root (containers
    do), which Celery prints before any of allot's code runs."""
    lines, skipping = [], False
    for line in process.output().splitlines():
        skipping = skipping or "SecurityWarning" in line
        if not skipping:
            lines.append(line)
        skipping = skipping and "_warn_or_raise_security_error" not in line
    return [line for line in lines if line.strip()]


def untouched(cluster: LocalCluster, zk_root: str) -> ZkPaths:
    """Create ``{root}/nodes`` and ``{root}/bucket-assignments`` empty, so a test can prove
    later that nothing was ever created under them."""
    paths = ZkPaths(zk_root)
    for parent in (paths.nodes, paths.bucket_assignments):
        cluster.client.ensure_path(parent)
    return paths


def assert_never_registered(cluster: LocalCluster, paths: ZkPaths) -> None:
    for parent in (paths.nodes, paths.bucket_assignments):
        children, stat = cluster.client.get_children(parent, include_data=True)
        assert children == []
        assert stat.cversion == 0, f"a child of {parent} was created and deleted again"


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ALLOT_NODE_WEIGHT", "-1", "invalid setting ALLOT_NODE_WEIGHT: Input should be greater"),
        ("ALLOT_NODE_WEIGHT", "0", "invalid setting ALLOT_NODE_WEIGHT: Input should be greater"),
        ("ALLOT_NODE_WEIGHT", "abc", "invalid setting ALLOT_NODE_WEIGHT: Input should be a valid"),
        ("ALLOT_NODE_KEY", "a/b", "invalid setting ALLOT_NODE_KEY: invalid node key 'a/b'"),
        ("ALLOT_DATABASE_URL", "mysql://db/allot", "unsupported database 'mysql'"),
    ],
)
def test_a_bad_setting_stops_the_worker_with_one_line(
    cluster: LocalCluster, zk_root: str, variable: str, value: str, says: str
) -> None:
    # Given a cluster's ZooKeeper
    paths = untouched(cluster, zk_root)
    # When a worker starts with a setting that cannot work
    worker = cluster.worker("bad", **{variable: value})
    # Then it exits with the configuration error's status and one line naming the setting,
    # as the allot CLI words it
    assert exit_status(worker) == 2
    output = said(worker)
    assert len(output) == 1, output
    assert output[0].startswith("error: ")
    assert says in output[0]
    assert variable in output[0]
    assert_never_registered(cluster, paths)


@SQLITE_ONLY
def test_a_worker_name_that_is_no_node_key_stops_the_worker_with_one_line(
    cluster: LocalCluster, zk_root: str
) -> None:
    # Given a cluster's ZooKeeper, and no ALLOT_NODE_KEY
    paths = untouched(cluster, zk_root)
    # When a worker starts under a name that is not a valid node key
    args = ["worker", "-n", "bad/name@%h", "-c", "1", *QUICK_START]
    worker = cluster.group.celery("badname", args, cluster.env)
    # Then it exits with status 2 and one line saying so (it used to run on, not a node)
    assert exit_status(worker) == 2
    assert said(worker) == [
        f"error: worker bad/name@{HOST} refuses to join the cluster: invalid node key "
        f"'bad/name@{HOST}': use 1 to 128 characters from A-Z a-z 0-9 . _ @ : - "
        "(not '.' or '..'); the node key is the worker's name (-n) unless ALLOT_NODE_KEY is set"
    ]
    assert_never_registered(cluster, paths)


def test_a_worker_whose_bucket_count_differs_from_the_database_never_registers(
    cluster: LocalCluster, zk_root: str
) -> None:
    # Given a cluster whose database was upgraded with 100 buckets
    paths = untouched(cluster, zk_root)
    # When a worker configured for 64 buckets starts
    worker = cluster.worker("bad", ALLOT_BUCKET_COUNT="64")
    # Then it exits non-zero with one line naming the worker, the database and both counts
    assert exit_status(worker) == 1
    output = said(worker)
    assert len(output) == 1, output
    assert output[0].startswith(f"error: worker {cluster.key('bad')} refuses to join the cluster")
    assert "the database has 100 buckets but ALLOT_BUCKET_COUNT is 64" in output[0]
    assert "set ALLOT_BUCKET_COUNT=100 or use a new database" in output[0]
    # And it never appeared in ZooKeeper: no membership, no assignment entry, ever
    assert_never_registered(cluster, paths)


@SQLITE_ONLY
def test_a_worker_on_a_database_without_schema_never_registers(
    cluster: LocalCluster, zk_root: str, tmp_path: Path
) -> None:
    # Given a cluster, and a database nobody upgraded
    paths = untouched(cluster, zk_root)
    empty = f"sqlite:///{tmp_path}/empty.db"
    # When a worker starts on it
    worker = cluster.worker("bad", ALLOT_DATABASE_URL=empty)
    # Then it exits non-zero with one line telling what to run
    assert exit_status(worker) == 1
    assert said(worker) == [
        f"error: worker {cluster.key('bad')} refuses to join the cluster: database {empty}: "
        "the database has no allot schema "
        f"(this allot needs {SCHEMA_REVISION}): run `allot db upgrade`"
    ]
    assert_never_registered(cluster, paths)


@SQLITE_ONLY
def test_a_worker_registers_while_the_database_is_unreachable(
    cluster: LocalCluster, zk_root: str
) -> None:
    # Given a database nothing listens for (an SQL outage)
    unreachable = f"postgresql://allot@127.0.0.1:{free_port()}/allot"
    # When a worker starts
    worker = cluster.worker("node1", ALLOT_DATABASE_URL=unreachable)
    # Then it registers all the same (ZooKeeper alone decides), with one warning line
    key = cluster.key("node1")
    nodes = ZkPaths(zk_root).nodes
    cluster.wait_for(
        lambda: cluster.client.exists(nodes) and key in cluster.client.get_children(nodes),
        "node1 to register",
        60,
    )
    warnings = [line for line in worker.output().splitlines() if "registering anyway" in line]
    assert len(warnings) == 1, worker.output()
    assert "cannot use the database at postgresql://allot@127.0.0.1:" in warnings[0]
    assert cluster.count_in_logs("Traceback") == 0


@SQLITE_ONLY
def test_an_unexpected_start_up_error_is_logged_and_leaves_no_half_registered_node(
    cluster: LocalCluster, zk_root: str
) -> None:
    # Given a worker whose start-up hook fails after the node has registered
    worker = cluster.worker("node1", app="tests.e2e.broken_startup_app")
    # When it has started
    cluster.wait_for(lambda: cluster.count_in_logs(" ready."), "node1 to be ready", 60)
    # Then the error is logged, with its traceback, and the worker runs on
    errors = [line for line in worker.output().splitlines() if "ERROR" in line]
    assert len(errors) == 1, worker.output()
    assert f"worker {cluster.key('node1')} could not register as an allot node" in errors[0]
    assert "RuntimeError: injected fault: the trigger duty cannot start" in worker.output()
    assert worker.running
    # And it is not left half-registered: its membership znode was removed again
    nodes = ZkPaths(zk_root).nodes
    assert cluster.key("node1") not in cluster.client.get_children(nodes)
    # And it stops cleanly
    assert worker.stop() == 0
