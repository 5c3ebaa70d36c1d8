"""A worker started with settings that cannot work says so in one line and stops."""

from __future__ import annotations

import subprocess
import sys

import pytest

from allot.settings import Settings
from allot.testing.processes import ROOT
from allot.zk.client import connect
from allot.zk.paths import ZkPaths

WORKER = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-c", "1", "-n", "bad@test",
          "--without-mingle", "--without-gossip"]  # fmt: skip


def run_worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        WORKER, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ALLOT_NODE_WEIGHT", "-1", "greater than 0"),
        ("ALLOT_NODE_WEIGHT", "0", "greater than 0"),
        ("ALLOT_NODE_WEIGHT", "abc", "valid number"),
        ("ALLOT_NODE_KEY", "a/b", "invalid node key"),
    ],
)
def test_a_bad_setting_stops_the_worker_with_one_line(
    cluster_env: dict[str, str], variable: str, value: str, says: str
) -> None:
    # When a worker starts with a setting that cannot work
    result = run_worker(cluster_env | {variable: value})
    # Then it exits with the configuration error's status and one line naming the setting
    output = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2
    assert len(output) == 1, output
    assert output[0].startswith(f"error: invalid setting {variable}:")
    assert says in output[0]


def test_a_worker_whose_bucket_count_differs_from_the_database_never_registers(
    cluster_env: dict[str, str], zk_root: str
) -> None:
    # When a worker configured for 64 buckets starts against a database of 100
    result = run_worker(cluster_env | {"ALLOT_BUCKET_COUNT": "64"})
    # Then it stops with one error line naming both counts, and no traceback
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, result.stderr
    assert "stops: the database has 100 buckets but ALLOT_BUCKET_COUNT is 64" in errors[0]
    assert "Traceback" not in result.stderr
    # And it never appeared in ZooKeeper: no membership, no assignment entry
    client = connect(Settings(zk_hosts=cluster_env["ALLOT_ZK_HOSTS"], zk_root=zk_root))
    try:
        paths = ZkPaths(zk_root)
        for parent in (paths.nodes, paths.bucket_assignments):
            children = client.get_children(parent) if client.exists(parent) else []
            assert "bad@test" not in children
    finally:
        client.stop()
        client.close()
