"""The shipped Prometheus files, checked by Prometheus' own ``promtool`` (Debian's
``prometheus`` package; ``scripts/ensure-services.sh`` installs it): the alerting rules and
the scrape configuration are valid, and each alert fires on the series it is about, and only
then (``promtool test rules``). A missing promtool fails these tests; it never skips them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "allot-rules.yml"
CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"
JOB = {"job": "allot"}


MISSING = "promtool is not installed: `apt-get install -y prometheus` (make test does it as root)"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(MISSING, pytrace=False)
    return found


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_rules_file_is_valid(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(RULES))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_the_scrape_config_is_valid_and_loads_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "config", str(CONFIG))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    targets = yaml.safe_load(CONFIG.read_text())["scrape_configs"][0]["static_configs"][0]
    assert targets["targets"] == ["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"]


def test_the_compose_scrape_config_is_valid_and_loads_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "config", str(CONFIG.with_name("compose.yml")))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    """An input series of a promtool rule test, scraped every 15 s."""
    shown = ",".join(f'{key}="{value}"' for key, value in {**JOB, **labels}.items())
    return {"series": f"{name}{{{shown}}}", "values": values}


def fires(alert: str, at: str, *alerts: dict[str, str]) -> dict[str, Any]:
    """At ``at``, ``alert`` fires exactly once per label set of ``alerts`` (none: not at all)."""
    return {
        "eval_time": at,
        "alertname": alert,
        "exp_alerts": [{"exp_labels": {**JOB, **labels}} for labels in alerts],
    }


REPORTER = {"instance": "n1:9101"}
"""The node serving the cluster-wide gauges (allot_cluster_reporter 1)."""


def reporter(name: str, values: str, **labels: str) -> list[dict[str, str]]:
    """A cluster-wide series as the one node serving them exports it."""
    return [series(name, values, **REPORTER, **labels)]


CRITICAL, WARNING = {"severity": "critical"}, {"severity": "warning"}
CASES: dict[str, tuple[list[dict[str, str]], list[dict[str, Any]]]] = {
    "unowned buckets for a minute": (
        reporter("allot_unowned_buckets", "3x20"),
        [
            fires("AllotBucketsUnowned", "30s"),
            fires("AllotBucketsUnowned", "2m", {**REPORTER, **CRITICAL}),
        ],
    ),
    "a node suspect past the grace period": (
        reporter("allot_node_state", "1x20", node="b@h", state="suspect")
        + reporter("allot_node_state", "0x20", node="a@h", state="suspect"),
        [
            fires("AllotNodeSuspectPastGrace", "45s"),
            fires(
                "AllotNodeSuspectPastGrace",
                "2m",
                {"node": "b@h", "state": "suspect", **REPORTER, **CRITICAL},
            ),
        ],
    ),
    "an offline node holding buckets, not one holding none": (
        reporter("allot_node_state", "1x20", node="b@h", state="offline")
        + reporter("allot_node_buckets", "5x20", node="b@h")
        + reporter("allot_node_state", "1x20", node="c@h", state="offline")
        + reporter("allot_node_buckets", "0x20", node="c@h"),
        [
            fires(
                "AllotOfflineNodeHoldsBuckets",
                "2m",
                {"node": "b@h", "state": "offline", **REPORTER, **CRITICAL},
            )
        ],
    ),
    "cycles aborting with none succeeding": (
        [
            series(
                "allot_cycles_total", "0+1x80", instance="n1", trigger="beat", outcome="aborted"
            ),
            series("allot_cycles_total", "5x80", instance="n2", trigger="beat", outcome="applied"),
        ],
        [fires("AllotCyclesFailing", "10m", CRITICAL), fires("AllotNoCycles", "10m")],
    ),
    "cycles aborting now and then among successes": (
        [
            series(
                "allot_cycles_total", "0+1x80", instance="n1", trigger="beat", outcome="aborted"
            ),
            series(
                "allot_cycles_total", "0+1x80", instance="n2", trigger="beat", outcome="unchanged"
            ),
        ],
        [fires("AllotCyclesFailing", "10m")],
    ),
    "no cycle at all": (
        [series("allot_cycles_total", "7x80", instance="n1", trigger="beat", outcome="unchanged")],
        [fires("AllotNoCycles", "10m", WARNING), fires("AllotCyclesFailing", "10m")],
    ),
    "SQL behind ZooKeeper": (
        reporter("allot_epoch", "4x20") + reporter("allot_sql_epoch", "3x20"),
        [
            fires("AllotSqlBehindZooKeeper", "1m"),
            fires("AllotSqlBehindZooKeeper", "3m", {**REPORTER, **WARNING}),
        ],
    ),
    "SQL level with ZooKeeper": (
        reporter("allot_epoch", "4x20") + reporter("allot_sql_epoch", "4x20"),
        [fires("AllotSqlBehindZooKeeper", "3m")],
    ),
    "fenced commits counted by workers": (
        [
            series(
                "allot_table_tasks_total",
                "0 0 0 1x20",
                instance="n1",
                task="demo.compact",
                status="fenced",
            ),
            series(
                "allot_table_tasks_total",
                "0 0 0 9x20",
                instance="n2",
                task="other.task",
                status="committed",
            ),
        ],
        [
            fires(
                "AllotFencedCommitsRising",
                "2m",
                {"task": "demo.compact", "status": "fenced", **WARNING},
            )
        ],
    ),
    "the reporting node cannot read SQL": (
        reporter("allot_up", "0x20", source="sql") + reporter("allot_up", "1x20", source="redis"),
        [fires("AllotSourceUnreadable", "3m", {**REPORTER, "source": "sql", **WARNING})],
    ),
    "the duty moves from one node to another: the gauges go on, no alert": (
        [
            series("allot_cluster_reporter", "1x4 0x16", instance="n1:9101"),
            series("allot_cluster_reporter", "0x4 1x16", instance="n2:9102"),
            series("allot_cluster_reporter", "0x20", instance="n3:9103"),
        ],
        [fires("AllotNoClusterReporter", "4m")],
    ),
    "no node serves the cluster's gauges": (
        [
            series("allot_cluster_reporter", "1x4 0x16", instance="n1:9101"),
            series("allot_cluster_reporter", "0x20", instance="n2:9102"),
        ],
        [
            fires("AllotNoClusterReporter", "2m"),
            fires("AllotNoClusterReporter", "4m", WARNING),
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_alert_fires_on_its_series_only(promtool: str, tmp_path: Path, case: str) -> None:
    # Given the rules without their annotations (promtool compares annotations word for word;
    # the labels are what routes an alert) and the series of one situation
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    input_series, alert_tests = CASES[case]
    test = {"interval": "15s", "input_series": input_series, "alert_rule_test": alert_tests}
    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "15s", "tests": [test]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests))

    # When promtool evaluates them, Then every expected alert fires and no other
    result = run(promtool, "test", "rules", str(tmp_path / "test.yml"))

    assert result.returncode == 0, result.stdout + result.stderr
