"""The metrics' shape without servers: instrument names, labels and help texts, what the record
helpers count, the families built from a read of the cluster, and how the registry is built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kazoo.client import KazooClient
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from sqlalchemy.orm import sessionmaker

from allot.cycle.report import CycleOutcome, CycleReport
from allot.errors import ConfigurationError
from allot.metrics import (
    CYCLE_DURATION,
    CYCLES,
    FAMILIES,
    HANDOFF_DURATION,
    INSTRUMENTS,
    MOVES,
    MULTIPROC_ENV,
    TABLE_TASKS,
    ClusterCollector,
    metrics_registry,
    prepare_multiprocess_dir,
    record_cycle,
    record_failed_cycle,
    record_table_task,
    serve_metrics,
)
from allot.metrics.cluster import NodeView, SqlView, ZooKeeperView
from allot.metrics.instruments import CYCLE_OUTCOMES
from allot.settings import Settings
from models.states import NodeState, RunStatus

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "allot-rules.yml"


def samples(metrics: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of every sample of ``metrics``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in metrics
        for sample in metric.samples
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_the_instruments_have_allot_names_labels_and_help_texts() -> None:
    shapes = {
        instrument._name: (instrument._type, instrument._labelnames) for instrument in INSTRUMENTS
    }

    assert shapes == {
        "allot_cycles": ("counter", ("trigger", "outcome")),
        "allot_cycle_duration_seconds": ("histogram", ()),
        "allot_moves": ("counter", ()),
        "allot_handoff_duration_seconds": ("histogram", ()),
        "allot_table_tasks": ("counter", ("task", "status")),
    }
    assert all(len(instrument._documentation) > 40 for instrument in INSTRUMENTS)
    assert CYCLE_OUTCOMES == (
        "applied", "unchanged", "generated", "skipped", "aborted", "rejected", "failed",
    )  # fmt: skip


def test_the_registry_exports_the_counters_with_their_total_suffix() -> None:
    registry = metrics_registry()
    record_table_task("demo.compact", RunStatus.COMMITTED)
    HANDOFF_DURATION.observe(0.3)

    names = {metric.name: metric.type for metric in registry.collect()}

    assert names == {
        "allot_cycles": "counter",
        "allot_cycle_duration_seconds": "histogram",
        "allot_moves": "counter",
        "allot_handoff_duration_seconds": "histogram",
        "allot_table_tasks": "counter",
    }
    assert value(registry, "allot_table_tasks_total", task="demo.compact", status="committed") >= 1
    assert value(registry, "allot_handoff_duration_seconds_count") >= 1


def test_an_applied_cycle_counts_its_outcome_duration_and_moves() -> None:
    registry = metrics_registry()
    labels = {"trigger": "membership", "outcome": "applied"}
    before = [
        value(registry, "allot_cycles_total", **labels),
        value(registry, "allot_cycle_duration_seconds_count"),
        value(registry, "allot_cycle_duration_seconds_sum"),
        value(registry, "allot_moves_total"),
    ]
    report = CycleReport(CycleOutcome.APPLIED, "membership", moves=7, duration_ms=250.0)

    record_cycle(report)

    after = [
        value(registry, "allot_cycles_total", **labels),
        value(registry, "allot_cycle_duration_seconds_count"),
        value(registry, "allot_cycle_duration_seconds_sum"),
        value(registry, "allot_moves_total"),
    ]
    assert [b - a for a, b in zip(before, after, strict=True)] == pytest.approx([1, 1, 0.25, 7])


def test_a_skipped_cycle_is_counted_but_not_timed_and_a_failed_one_is_failed() -> None:
    registry = metrics_registry()
    timed = value(registry, "allot_cycle_duration_seconds_count")
    skipped = value(registry, "allot_cycles_total", trigger="beat", outcome="skipped")
    failed = value(registry, "allot_cycles_total", trigger="grace", outcome="failed")

    record_cycle(CycleReport(CycleOutcome.SKIPPED, "beat", reason="another cycle holds the lock"))
    record_failed_cycle("grace")

    assert value(registry, "allot_cycles_total", trigger="beat", outcome="skipped") == skipped + 1
    assert value(registry, "allot_cycles_total", trigger="grace", outcome="failed") == failed + 1
    assert value(registry, "allot_cycle_duration_seconds_count") == timed


def test_a_running_attempt_is_not_an_ending() -> None:
    with pytest.raises(ValueError, match="not 'running'"):
        record_table_task("demo.compact", RunStatus.RUNNING)


def test_zookeeper_families_carry_every_node_and_state() -> None:
    view = ZooKeeperView(
        nodes=(
            NodeView("a@h", NodeState.LIVE, 2.0, (1, 2, 3)),
            NodeView("b@h", NodeState.SUSPECT, None, (4,)),
        ),
        unowned=1,
        without_lease=2,
        spread=0.5,
        epoch=9,
        membership=1,
    )

    got = samples([*view.families(), view.backlog({1: 5, 3: 1, 4: 2, 5: 100})])

    states = {
        (labels[0][1], labels[1][1]): v
        for (name, labels), v in got.items()
        if name == "allot_node_state"
    }
    others = {key: v for key, v in got.items() if key[0] != "allot_node_state"}
    assert states == {
        ("a@h", "live"): 1, ("a@h", "suspect"): 0, ("a@h", "offline"): 0,
        ("b@h", "live"): 0, ("b@h", "suspect"): 1, ("b@h", "offline"): 0,
    }  # fmt: skip
    assert others == {
        ("allot_node_buckets", (("node", "a@h"),)): 3,
        ("allot_node_buckets", (("node", "b@h"),)): 1,
        ("allot_node_weight", (("node", "a@h"),)): 2.0,
        ("allot_unowned_buckets", ()): 1,
        ("allot_buckets_without_lease", ()): 2,
        ("allot_spread", ()): 0.5,
        ("allot_epoch", ()): 9,
        ("allot_membership_size", ()): 1,
        ("allot_bucket_queue_backlog", (("node", "a@h"),)): 6,
        ("allot_bucket_queue_backlog", (("node", "b@h"),)): 2,
    }


def test_load_families_carry_each_live_nodes_load_and_the_buckets_given() -> None:
    view = ZooKeeperView(
        nodes=(NodeView("a@h", NodeState.LIVE, 1.0, (1, 2)),),
        unowned=0,
        without_lease=0,
        spread=0.0,
        epoch=1,
        membership=1,
        node_load={"a@h": 12.5, "b@h": 0.0},
        bucket_load=((2, 10.0), (1, 2.5)),
    )

    got = samples(list(view.families()))

    assert {key: v for key, v in got.items() if key[0].endswith("_load")} == {
        ("allot_node_load", (("node", "a@h"),)): 12.5,
        ("allot_node_load", (("node", "b@h"),)): 0.0,
        ("allot_bucket_load", (("bucket", "2"),)): 10.0,
        ("allot_bucket_load", (("bucket", "1"),)): 2.5,
    }


def test_sql_families_list_every_open_plan_status_and_no_history_count() -> None:
    view = SqlView(epoch=4, plans={"applying": 1})

    got = samples(list(view.families()))

    assert got[("allot_sql_epoch", ())] == 4
    assert {labels[0][1]: v for (name, labels), v in got.items() if name == "allot_plans"} == {
        "generated": 0,
        "applying": 1,
    }
    assert {name for name, _ in got} == {"allot_sql_epoch", "allot_plans"}


def test_the_cluster_collector_describes_its_families_without_reading() -> None:
    never_started = KazooClient(hosts="127.0.0.1:1")
    collector = ClusterCollector(never_started, sessionmaker(), Settings())
    registry = CollectorRegistry()

    registry.register(collector)  # a name clash check: describe() only

    assert [metric.name for metric in collector.describe()] == list(FAMILIES)
    assert all(name.startswith("allot_") for name in FAMILIES)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(ClusterCollector(never_started, sessionmaker(), Settings()))


def test_a_node_that_does_not_report_reads_nothing_and_says_so() -> None:
    # a client that was never started: any read of ZooKeeper would fail (allot_up 0)
    never_started = KazooClient(hosts="127.0.0.1:1")
    collector = ClusterCollector(never_started, sessionmaker(), Settings(), reporting=lambda: False)

    got = samples(list(collector.collect()))

    assert got == {("allot_cluster_reporter", ()): 0}


def test_a_multiprocess_directory_set_after_import_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # prometheus_client was imported without the variable: this process keeps its values in
    # memory, and a registry reading the directory would serve counters that never move
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))

    with pytest.raises(ConfigurationError, match="was not when prometheus_client was imported"):
        metrics_registry()


def test_preparing_the_multiprocess_directory_removes_only_metric_files(tmp_path: Path) -> None:
    folder = tmp_path / "metrics" / "node1"
    prepare_multiprocess_dir(folder)
    (folder / "counter_123.db").write_bytes(b"old")
    (folder / "histogram_123.db").write_bytes(b"old")
    (folder / "README").write_text("kept")

    prepare_multiprocess_dir(folder)

    assert sorted(path.name for path in folder.iterdir()) == ["README"]


def test_port_zero_disables_the_server_and_a_bad_port_is_refused() -> None:
    assert serve_metrics(0, metrics_registry()) is None
    with pytest.raises(ValueError, match="0 \\(disabled\\) to 65535"):
        serve_metrics(70000, metrics_registry())


def test_the_instruments_are_in_no_default_registry() -> None:
    from prometheus_client import REGISTRY

    default = {metric.name for metric in REGISTRY.collect()}

    assert not {instrument._name for instrument in INSTRUMENTS} & default
    assert {CYCLES, CYCLE_DURATION, MOVES, HANDOFF_DURATION, TABLE_TASKS} == set(INSTRUMENTS)


def test_the_alerting_rules_use_only_metrics_allot_exports() -> None:
    rules = [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    exported = set(FAMILIES) | {
        instrument._name + suffix
        for instrument in INSTRUMENTS
        for suffix in suffixes[instrument._type]
    }

    used = {name for rule in rules for name in re.findall(r"\ballot_\w+", rule["expr"])}

    assert used <= exported
    assert {"allot_unowned_buckets", "allot_cycles_total", "allot_sql_epoch"} <= used


def test_the_suspect_alert_waits_out_the_default_grace_period_and_one_cycle() -> None:
    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    defaults = Settings()

    waits = rules["AllotNodeSuspectPastGrace"]["for"]  # "1m": a number and a unit
    unit = {"s": 1, "m": 60, "h": 3600}[waits[-1]]

    assert float(waits[:-1]) * unit == defaults.node_offline_timeout + defaults.assign_interval
