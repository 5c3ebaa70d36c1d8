"""``allot work send``, ``allot work runs`` and what ``allot nodes`` / ``allot status`` say
about table work, run as real processes on real ZooKeeper, Redis and SQL (SQLite, then
PostgreSQL).

Each test has its own cluster name (so its own bucket queues in the shared Redis), its own
ZooKeeper root and a fresh database. The CLI loads the table tasks of
``tests.integration.cli_work_tasks`` through ``ALLOT_TASK_MODULES``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from kazoo.client import KazooClient
from rich.console import Console
from sqlalchemy import Engine

import tests.integration.cli_work_tasks  # noqa: F401  (registers the table tasks used here)
from allot.cli.work import runs_view
from allot.names import parse_table_name
from allot.registry import register_tables
from allot.settings import Settings
from allot.testing.processes import ROOT, allot_env
from allot.testing.servers import ServerProcess, free_port
from allot.work import bucket_queue, table_tasks
from allot.work.database import WorkSql
from allot.work.fence import take_fence
from allot.work.run import execute
from allot.work.runs import ABANDONED, Attempt, RunRow, insert_ended
from allot.zk.client import connect
from allot.zk.codec import MemberInfo
from allot.zk.paths import ZkPaths
from allot.zk.registration import NodeRegistration
from allot.zk.store import AssignmentStore
from models.base import utcnow
from models.engine import session_factory
from models.states import RunStatus
from tests.cli import allot

TASK_MODULE = "tests.integration.cli_work_tasks"
NODE_KEYS = {"node_key", "state", "weight", "buckets", "host", "offline_in"}
STATUS_KEYS = {"epoch", "plan_id", "applied_at", "bucket_count", "unowned", "nodes", "corrupt"}


@dataclass
class Work:
    """One test's cluster: the CLI's environment, its Redis, database and ZooKeeper."""

    env: dict[str, str]
    cluster: str
    engine: Engine
    redis: redis.Redis
    zk: KazooClient
    paths: ZkPaths
    settings: Settings

    def register(self, *names: str) -> None:
        with session_factory(self.engine).begin() as session:
            register_tables(session, [parse_table_name(name) for name in names])

    def queue(self, bucket: int) -> str:
        return bucket_queue(self.cluster, bucket)

    def messages(self, bucket: int) -> list[dict[str, Any]]:
        """The messages waiting in the bucket's queue, oldest first, body decoded."""
        found = []
        for raw in reversed(self.redis.lrange(self.queue(bucket), 0, -1)):
            message = json.loads(raw)
            args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            found.append({"headers": message["headers"], "args": args, "kwargs": kwargs})
        return found

    def queued(self) -> dict[str, int]:
        """The length of every list this cluster's bucket queues use (priority lists too)."""
        keys = self.redis.keys(f"allot.{self.cluster}.bucket.*")
        return {str(key): int(self.redis.llen(key)) for key in keys}

    def join(self, key: str) -> KazooClient:
        """A live node: a session of its own with its membership znode."""
        client = connect(self.settings)
        NodeRegistration(client, self.paths, MemberInfo(key, "host", 1, 1.0, 0)).register()
        return client


@pytest.fixture
def work(
    zookeeper: ServerProcess,
    redis_server: ServerProcess,
    zk_root: str,
    zk: KazooClient,
    migrated: Engine,
) -> Iterator[Work]:
    cluster = f"clitest-{uuid.uuid4().hex[:10]}"
    env = allot_env(
        zookeeper,
        redis_server,
        zk_root=zk_root,
        database_url=migrated.url.render_as_string(hide_password=False),
        cluster=cluster,
        task_modules=TASK_MODULE,
    )
    env["PYTHONPATH"] = str(ROOT)  # the task module is found from any working directory
    settings = Settings(zk_hosts=zookeeper.address, zk_root=zk_root)
    client = redis.Redis(host=redis_server.host, port=redis_server.port, decode_responses=True)
    yield Work(env, cluster, migrated, client, zk, ZkPaths(zk_root), settings)
    for key in client.keys(f"allot.{cluster}.*"):
        client.delete(key)
    client.close()


def one_line_error(result: Any) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return str(result.stderr)


# -- allot work send --------------------------------------------------------------------------


def test_send_puts_the_call_in_the_queue_of_the_tables_bucket(work: Work) -> None:
    work.register("c.d.t1", "c.d.t2")  # buckets 1 and 2

    call = ["clitest.touch", "c.d.t2", "--kwargs", '{"size": 3}']
    sent = allot("work", "send", *call, "--format", "json", env=work.env)

    assert sent.returncode == 0, sent.stderr
    report = json.loads(sent.stdout)
    assert report == {
        "task_id": report["task_id"],
        "task": "clitest.touch",
        "table": "c.d.t2",
        "bucket_id": 2,
        "queue": f"allot.{work.cluster}.bucket.2",
        "kwargs": {"size": 3},
    }
    [message] = work.messages(2)
    assert message["headers"]["task"] == "clitest.touch"
    assert message["headers"]["id"] == report["task_id"]
    assert (message["args"], message["kwargs"]) == (["c.d.t2"], {"size": 3})
    assert work.queued() == {work.queue(2): 1}  # nothing anywhere else


def test_every_refused_call_sends_nothing(work: Work) -> None:
    work.register("c.d.t1")
    before = work.queued() | {"celery": work.redis.llen("celery")}
    cases: list[tuple[tuple[str, ...], dict[str, str], str]] = [
        (
            ("clitest.nope", "c.d.t1"),
            {},
            "no table task named 'clitest.nope'; the table tasks of "
            f"ALLOT_TASK_MODULES={TASK_MODULE} are: clitest.fail, clitest.touch",
        ),
        (("allot.assign", "c.d.t1"), {}, "no table task named 'allot.assign'"),
        (("clitest.touch", "c.d.t1"), {"ALLOT_TASK_MODULES": ""}, "ALLOT_TASK_MODULES is empty"),
        (
            ("clitest.touch", "c.d.t1"),
            {"ALLOT_TASK_MODULES": "tests.integration.no_such_module"},
            "cannot import tests.integration.no_such_module (from ALLOT_TASK_MODULES)",
        ),
        (("clitest.touch", "c.d.t1", "--kwargs", "{size: 3}"), {}, "--kwargs is not valid JSON"),
        (("clitest.touch", "c.d.t1", "--kwargs", "[3]"), {}, "--kwargs must be a JSON object"),
        (
            ("clitest.touch", "c.d.t1", "--kwargs", '{"colour": "red"}'),
            {},
            "table task clitest.touch: bad keyword arguments: got an unexpected keyword "
            "argument 'colour'",
        ),
        (("clitest.touch", "c.d.missing"), {}, "table c.d.missing is not registered"),
        (("clitest.touch", "c.d"), {}, "invalid table name 'c.d'"),
    ]
    for args, extra, message in cases:
        result = allot("work", "send", *args, env=work.env | extra)
        assert message in one_line_error(result), (args, result.stderr)
    after = work.queued() | {"celery": work.redis.llen("celery")}
    assert after == before


def test_send_without_a_broker_is_one_line(work: Work) -> None:
    work.register("c.d.t1")
    broker = f"redis://127.0.0.1:{free_port()}/0"

    result = allot(
        "work", "send", "clitest.touch", "c.d.t1", env=work.env | {"ALLOT_BROKER_URL": broker}
    )

    assert f"cannot reach the broker at {broker}" in one_line_error(result)


def test_send_says_what_it_sent_and_a_wait_without_worker_leaves_it_queued(work: Work) -> None:
    work.register("c.d.t1")

    result = allot(
        "work", "send", "clitest.touch", "c.d.t1", "--wait", "--timeout", "1", env=work.env
    )

    [message] = work.messages(1)
    task = f"clitest.touch[{message['headers']['id']}]"
    assert f"no worker answered {task} within 1 s" in one_line_error(result)
    assert result.stdout.splitlines() == [f"sent {task} for c.d.t1 to {work.queue(1)} (bucket 1)"]
    assert message["args"] == ["c.d.t1"]


# -- allot work runs --------------------------------------------------------------------------


def record_runs(work: Work, database_url: str) -> None:
    """Four attempts, oldest first: run-1 committed on c.d.t1 by a@h, run-2 failed and run-3
    committed on c.d.t2 by b@h, run-4 abandoned on c.d.t1 by a@h (its process died)."""
    work.register("c.d.t1", "c.d.t2")  # buckets 1 and 2
    sessions = session_factory(work.engine)
    sql = WorkSql(os.getpid(), Settings(database_url=database_url), work.engine, sessions)
    with sessions.begin() as session:
        assert take_fence(session, 1, "a@h", 100)
        assert take_fence(session, 2, "b@h", 200)
    specs = table_tasks()
    t1, t2 = parse_table_name("c.d.t1"), parse_table_name("c.d.t2")
    execute(sql, specs["clitest.touch"], t1, "run-1", "a@h", {"size": 2})
    with pytest.raises(RuntimeError):
        execute(sql, specs["clitest.fail"], t2, "run-2", "b@h", {})
    execute(sql, specs["clitest.touch"], t2, "run-3", "b@h", {})
    table_id = sql.find_table(t1)[0]
    lost = Attempt("run-4", "clitest.touch", table_id, 1, "a@h", 100, utcnow())
    with sessions.begin() as session:
        insert_ended(session, lost, RunStatus.FAILED, f"{ABANDONED}its process died")


def runs(work: Work, *args: str) -> list[dict[str, Any]]:
    result = allot("work", "runs", *args, "-f", "json", env=work.env)
    assert result.returncode == 0, result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


def test_runs_are_listed_newest_first_with_every_field(work: Work, database_url: str) -> None:
    record_runs(work, database_url)

    listed = runs(work)

    assert [run["run_id"] for run in listed] == ["run-4", "run-3", "run-2", "run-1"]
    failed = listed[2]
    assert failed == {
        "attempt_id": failed["attempt_id"],
        "run_id": "run-2",
        "task_name": "clitest.fail",
        "table": "c.d.t2",
        "bucket_id": 2,
        "node_key": "b@h",
        "token": 200,
        "status": "failed",
        "started_at": failed["started_at"],
        "finished_at": failed["finished_at"],
        "error": "RuntimeError: disk full on c.d.t2",
    }
    assert failed["finished_at"] is not None
    assert [run["status"] for run in listed] == ["failed", "committed", "failed", "committed"]
    assert listed[0]["error"] == "abandoned: its process died"


def test_runs_filter_by_table_node_status_task_and_limit(work: Work, database_url: str) -> None:
    record_runs(work, database_url)

    def ids(*args: str) -> list[str]:
        return [run["run_id"] for run in runs(work, *args)]

    assert ids("--table", "c.d.t1") == ["run-4", "run-1"]
    assert ids("--node", "b@h") == ["run-3", "run-2"]
    assert ids("--status", "committed") == ["run-3", "run-1"]
    assert ids("--status", "failed") == ["run-4", "run-2"]
    assert ids("--task", "clitest.fail") == ["run-2"]
    assert ids("--table", "c.d.t2", "--status", "committed") == ["run-3"]
    assert ids("--node", "a@h", "--task", "clitest.fail") == []
    assert ids("--limit", "2") == ["run-4", "run-3"]
    assert ids("--limit", "0") == ["run-4", "run-3", "run-2", "run-1"]


def test_runs_as_a_table_for_people_in_80_columns(work: Work, database_url: str) -> None:
    record_runs(work, database_url)

    result = allot("work", "runs", "--limit", "3", env=work.env | {"COLUMNS": "80"})

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout
    for shown in ("run run-4", "run run-3", "run run-2", "c.d.t1", "c.d.t2", "abandoned"):
        assert any(shown in line for line in lines), shown
    assert "showing the newest 3; --limit 0 shows all" in result.stdout


def test_no_run_field_is_cut_in_80_columns() -> None:
    # Given a long table name, a Celery task id and a long error
    started = dt.datetime(2026, 11, 22, 10, 0, 1, tzinfo=dt.UTC)
    run = RunRow(
        attempt_id=123456789,
        run_id="2c7b0c5e-1d2a-4c7b-9a55-0e7b2a4b1c9d",
        task_name="mywork.compact_small_files",
        table="hive.sales_warehouse.orders_q4",
        bucket_id=977,
        node_key="node12@worker-host-12",
        token=1,
        status="committed",
        started_at=started,
        finished_at=None,
        error="RuntimeError: " + "the object store refused the write; " * 3,
    )
    error = "".join(str(run.error).split())
    console = Console(width=80, record=True)

    # When the runs are printed in 80 columns
    console.print(runs_view([run, run]))
    text = console.export_text()

    # Then nothing is cut, and the table name and run id each stand whole on a line
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert any(run.table in line for line in text.splitlines())
    assert any(run.run_id in line for line in text.splitlines())
    for field in ("2026-11-22 10:00:01", "committed", run.task_name, run.node_key, "977"):
        assert field in text
    third_column = "".join(line.split("│")[3] for line in text.splitlines() if line.count("│") == 4)
    assert "".join(third_column.split()).count(error) == 2  # wrapped onto lines, but whole


def test_runs_refuse_bad_filters_in_one_line(work: Work) -> None:
    work.register("c.d.t1")
    cases = [
        (
            ("--status", "done"),
            "unknown run status 'done': use one of running, committed, fenced, failed",
        ),
        (("--table", "c.d.missing"), "table c.d.missing is not registered"),
        (("--table", "c.d"), "invalid table name 'c.d'"),
        (("--node", "bad/key"), "invalid node key 'bad/key'"),
    ]
    for args, message in cases:
        result = allot("work", "runs", *args, env=work.env)
        assert message in one_line_error(result), (args, result.stderr)
    assert runs(work, "--table", "c.d.t1") == []  # registered, no runs yet: no error


# -- allot nodes and allot status -------------------------------------------------------------


@pytest.fixture
def two_nodes(work: Work) -> Iterator[None]:
    """a@h holds buckets 1 and 2, b@h bucket 3; 102 tables (buckets 1 and 2 have two each);
    both live."""
    work.register(*(f"c.d.t{index:03}" for index in range(102)))  # t000 in 1, t002 in 3
    store = AssignmentStore(work.zk, work.paths)
    store.save("a@h", [1, 2])
    store.save("b@h", [3])
    members = [work.join("a@h"), work.join("b@h")]
    yield
    for member in members:
        member.stop()
        member.close()


def nodes_by_key(work: Work, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    result = allot("nodes", "--format", "json", env=env or work.env)
    assert result.returncode == 0, result.stderr
    return {node["node_key"]: node for node in json.loads(result.stdout)}


@pytest.mark.usefixtures("two_nodes")
def test_nodes_show_the_tables_and_the_backlog_of_their_buckets(work: Work) -> None:
    for name in ("c.d.t000", "c.d.t000", "c.d.t001", "c.d.t002", "c.d.t004"):
        assert allot("work", "send", "clitest.touch", name, env=work.env).returncode == 0
    # a message sent with a priority waits in the queue's priority list: it counts too
    work.redis.lpush(f"{work.queue(3)}\x06\x169", "{}")

    nodes = nodes_by_key(work)

    assert set(nodes) == {"a@h", "b@h"}
    for node in nodes.values():
        assert set(node) == NODE_KEYS | {"tables", "backlog", "load", "share", "ratio"}
    a, b = nodes["a@h"], nodes["b@h"]
    assert (a["state"], a["buckets"], a["tables"], a["backlog"]) == ("live", 2, 4, 3)
    assert (b["state"], b["buckets"], b["tables"], b["backlog"]) == ("live", 1, 1, 2)
    # bucket 5's message waits for an owner: nobody's backlog

    table = allot("nodes", env=work.env | {"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[1]
    assert "tables" in header
    assert "backlog" in header


@pytest.mark.usefixtures("two_nodes")
def test_nodes_show_an_unknown_backlog_when_redis_is_out_of_reach(work: Work) -> None:
    env = work.env | {"ALLOT_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}

    nodes = nodes_by_key(work, env)

    assert {key: (n["tables"], n["backlog"]) for key, n in nodes.items()} == {
        "a@h": (4, None),
        "b@h": (1, None),
    }
    table = allot("nodes", env=env | {"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    a_row = next(line for line in table.stdout.splitlines() if "a@h" in line)
    assert [cell.strip() for cell in a_row.split("│")[5:7]] == ["4", "?"]  # tables, backlog
    assert table.stderr.startswith("backlog unknown: cannot read the bucket queues from Redis")


@pytest.mark.usefixtures("two_nodes")
def test_status_lists_the_buckets_without_a_lease(work: Work) -> None:
    for bucket, holder in ((1, "a@h"), (3, "b@h")):
        lease = json.dumps({"node_key": holder, "epoch": 1}).encode()
        work.zk.create(work.paths.lease(bucket), lease, ephemeral=True, makepath=True)
    work.zk.create(f"{work.paths.leases}/not-a-bucket", b"")  # ignored

    result = allot("status", "--format", "json", env=work.env)

    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert set(state) >= STATUS_KEYS | {"last_cycle", "without_lease"}
    assert state["without_lease"] == [2]
    assert state["unowned"] == 97
    assert {node["node_key"]: node["tables"] for node in state["nodes"]} == {"a@h": 4, "b@h": 1}
    people = allot("status", env=work.env)
    assert people.returncode == 0, people.stderr
    assert "100 buckets, 97 unowned, 1 without lease" in people.stdout.splitlines()[0]


@pytest.mark.usefixtures("two_nodes")
def test_status_counts_every_held_bucket_without_a_lease_when_none_exists(work: Work) -> None:
    result = allot("status", "--format", "json", env=work.env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["without_lease"] == [1, 2, 3]
