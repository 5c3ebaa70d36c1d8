"""The planner's refusals (bad snapshots, one line naming the problem) and ``allot plan``.

Each test reads as Given (a snapshot) / When (plan it) / Then (what the plan must say).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from allot.errors import ConfigurationError, InvalidSnapshot
from allot.planner import (
    plan_from_json,
)
from tests.cli import allot
from tests.unit.snapshots import DESIGN_SNAPSHOT

# --- bad input ---------------------------------------------------------------------------------

OK_NODES = {"a": {"state": "live"}}

BAD_SNAPSHOTS: list[tuple[str, Any, str]] = [
    ("not an object", [1, 2], "expected a JSON object"),
    ("no bucket_count", {"nodes": OK_NODES}, "bucket_count is missing"),
    ("bucket_count string", {"bucket_count": "10"}, "bucket_count must be an integer"),
    ("bucket_count boolean", {"bucket_count": True}, "bucket_count must be an integer"),
    ("bucket_count float", {"bucket_count": 10.0}, "bucket_count must be an integer"),
    ("bucket_count zero", {"bucket_count": 0}, "bucket_count must be in 1..1000000"),
    ("bucket_count huge", {"bucket_count": 10**7}, "bucket_count must be in 1..1000000"),
    ("unknown field", {"bucket_count": 3, "max_move": 1}, "unknown field 'max_move'"),
    ("nodes not an object", {"bucket_count": 3, "nodes": ["a"]}, "nodes must be a JSON object"),
    (
        "node not an object",
        {"bucket_count": 3, "nodes": {"a": "live"}},
        "node 'a' must be a JSON object",
    ),
    (
        "unknown node field",
        {"bucket_count": 3, "nodes": {"a": {"wieght": 2}}},
        "unknown field 'wieght' in node 'a'",
    ),
    (
        "unknown state",
        {"bucket_count": 3, "nodes": {"a": {"state": "dead"}}},
        "node 'a' has unknown state 'dead'",
    ),
    ("state not a string", {"bucket_count": 3, "nodes": {"a": {"state": 1}}}, "unknown state 1"),
    ("weight zero", {"bucket_count": 3, "nodes": {"a": {"weight": 0}}}, "node 'a' has weight 0"),
    ("weight negative", {"bucket_count": 3, "nodes": {"a": {"weight": -1.5}}}, "weight -1.5"),
    ("weight string", {"bucket_count": 3, "nodes": {"a": {"weight": "2"}}}, "weight '2'"),
    ("weight boolean", {"bucket_count": 3, "nodes": {"a": {"weight": True}}}, "weight True"),
    ("weight null", {"bucket_count": 3, "nodes": {"a": {"weight": None}}}, "weight None"),
    ("weight NaN", {"bucket_count": 3, "nodes": {"a": {"weight": math.nan}}}, "weight nan"),
    ("weight infinite", {"bucket_count": 3, "nodes": {"a": {"weight": math.inf}}}, "weight inf"),
    ("bad key in nodes", {"bucket_count": 3, "nodes": {"a/b": {}}}, "invalid node key 'a/b'"),
    ("dot-dot key", {"bucket_count": 3, "assignments": {"..": [1]}}, "invalid node key '..'"),
    ("empty key", {"bucket_count": 3, "assignments": {"": [1]}}, "invalid node key ''"),
    (
        "assignments not an object",
        {"bucket_count": 3, "assignments": [[1]]},
        "assignments must be a JSON object",
    ),
    (
        "buckets not a list",
        {"bucket_count": 3, "assignments": {"a": 1}},
        "assignments of node 'a' must be a list",
    ),
    (
        "bucket as string",
        {"bucket_count": 3, "assignments": {"a": ["1"]}},
        "node 'a' lists bucket '1'",
    ),
    (
        "bucket as float",
        {"bucket_count": 3, "assignments": {"a": [1.0]}},
        "node 'a' lists bucket 1.0",
    ),
    (
        "bucket as boolean",
        {"bucket_count": 3, "assignments": {"a": [True]}},
        "node 'a' lists bucket True",
    ),
    (
        "bucket zero",
        {"bucket_count": 3, "assignments": {"a": [0, 1]}},
        "bucket 0 of node 'a' is out of range 1..3",
    ),
    (
        "bucket too high",
        {"bucket_count": 3, "assignments": {"a": [4]}},
        "bucket 4 of node 'a' is out of range 1..3",
    ),
    (
        "twice in a node",
        {"bucket_count": 3, "assignments": {"a": [2, 1, 2]}},
        "bucket 2 is listed twice by node 'a'",
    ),
    (
        "twice across nodes",
        {"bucket_count": 3, "assignments": {"b": [2], "a": [2]}},
        "bucket 2 is listed twice (by nodes 'a' and 'b')",
    ),
    (
        "max_moves negative",
        {"bucket_count": 3, "max_moves": -1},
        "max_moves must be null or an integer >= 0",
    ),
    (
        "max_moves string",
        {"bucket_count": 3, "max_moves": "2"},
        "max_moves must be null or an integer",
    ),
    (
        "max_moves float",
        {"bucket_count": 3, "max_moves": 1.5},
        "max_moves must be null or an integer",
    ),
    (
        "max_moves boolean",
        {"bucket_count": 3, "max_moves": False},
        "max_moves must be null or an integer",
    ),
    ("load not an object", {"bucket_count": 3, "load": [1.0]}, "load must be a JSON object"),
    (
        "load negative",
        {"bucket_count": 3, "load": {"2": -0.5}},
        "load of bucket 2 is -0.5; loads must be finite and >= 0",
    ),
    ("load NaN", {"bucket_count": 3, "load": {"2": math.nan}}, "load of bucket 2 is nan"),
    ("load infinite", {"bucket_count": 3, "load": {"2": math.inf}}, "load of bucket 2 is inf"),
    ("load string", {"bucket_count": 3, "load": {"2": "5"}}, "load of bucket 2 is '5'"),
    ("load boolean", {"bucket_count": 3, "load": {"2": True}}, "load of bucket 2 is True"),
    (
        "load bucket out of range",
        {"bucket_count": 3, "load": {"4": 1.0}},
        "load names bucket 4, out of range 1..3",
    ),
    ("load bucket zero", {"bucket_count": 3, "load": {"0": 1.0}}, "load names bucket 0"),
    ("load key not decimal", {"bucket_count": 3, "load": {"b1": 1.0}}, "load has key 'b1'"),
    ("load key padded", {"bucket_count": 3, "load": {"01": 1.0}}, "load has key '01'"),
    ("load key signed", {"bucket_count": 3, "load": {"+1": 1.0}}, "load has key '+1'"),
    ("pins not an object", {"bucket_count": 3, "pins": ["a"]}, "pins must be a JSON object"),
    (
        "pin bucket out of range",
        {"bucket_count": 3, "pins": {"7": "a"}},
        "pins names bucket 7, out of range 1..3",
    ),
    ("pin key not decimal", {"bucket_count": 3, "pins": {"one": "a"}}, "pins has key 'one'"),
    (
        "pin to an invalid node key",
        {"bucket_count": 3, "pins": {"1": "a/b"}},
        "invalid node key 'a/b'",
    ),
    ("pin to a number", {"bucket_count": 3, "pins": {"1": 5}}, "(in the pin of bucket 1)"),
    (
        "tolerance below one",
        {"bucket_count": 3, "tolerance": 0.99},
        "tolerance must be a finite number >= 1, got 0.99",
    ),
    ("tolerance NaN", {"bucket_count": 3, "tolerance": math.nan}, "tolerance must be a finite"),
    ("tolerance string", {"bucket_count": 3, "tolerance": "1.2"}, "tolerance must be a number"),
    ("tolerance null", {"bucket_count": 3, "tolerance": None}, "tolerance must be a number"),
    (
        "max_load_moves negative",
        {"bucket_count": 3, "max_load_moves": -1},
        "max_load_moves must be an integer >= 0, got -1",
    ),
    (
        "max_load_moves float",
        {"bucket_count": 3, "max_load_moves": 2.0},
        "max_load_moves must be an integer >= 0",
    ),
]


@pytest.mark.parametrize(
    ("snapshot", "message"),
    [pytest.param(snapshot, message, id=name) for name, snapshot, message in BAD_SNAPSHOTS],
)
def test_bad_snapshots_raise_one_line_naming_the_problem(snapshot: Any, message: str) -> None:
    with pytest.raises(InvalidSnapshot) as raised:
        plan_from_json(snapshot)

    assert message in str(raised.value)
    assert str(raised.value).startswith("invalid snapshot: ")
    assert "\n" not in str(raised.value)


# --- allot plan ------------------------------------------------------------------------------


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``allot`` through its real entry point in a fresh interpreter."""
    return allot(*args, input=stdin)


@pytest.fixture
def snapshot_file(tmp_path: Path) -> Path:
    """The DESIGN.md example snapshot in a file."""
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(DESIGN_SNAPSHOT))
    return path


def test_cli_plan_prints_the_same_json_as_plan_from_json(snapshot_file: Path) -> None:
    from allot.cli import app

    result = CliRunner().invoke(app, ["plan", "--input", str(snapshot_file)])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == plan_from_json(DESIGN_SNAPSHOT)


def test_cli_plan_reads_stdin_and_takes_a_strategy() -> None:
    from allot.cli import app

    result = CliRunner().invoke(
        app, ["plan", "-i", "-", "--strategy", "amoro"], input=json.dumps(DESIGN_SNAPSHOT)
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == plan_from_json(DESIGN_SNAPSHOT, "amoro")


def test_cli_plan_defaults_to_the_configured_strategy(
    snapshot_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from allot.cli import app

    monkeypatch.setenv("ALLOT_STRATEGY", "hrw")
    result = CliRunner().invoke(app, ["plan", "-i", str(snapshot_file)])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stats"]["strategy"] == "hrw"


def test_cli_plan_without_live_node_warns_on_stderr() -> None:
    result = run_cli("plan", "-i", "-", stdin='{"bucket_count": 2}')

    assert result.returncode == 0
    assert json.loads(result.stdout)["stats"]["unplaced"] == [1, 2]
    assert result.stderr.startswith("warning: no live node")


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ('{"bucket_count": 3,', "error: invalid snapshot: standard input is not valid JSON"),
        ('{"bucket_count": 3, "nodes": {"a": {"state": "gone"}}}', "unknown state 'gone'"),
        (
            '{"bucket_count": 3, "assignments": {"a": [1, 1]}}',
            "bucket 1 is listed twice by node 'a'",
        ),
    ],
)
def test_cli_plan_bad_input_is_one_line_and_exit_2(stdin: str, message: str) -> None:
    result = run_cli("plan", "-i", "-", stdin=stdin)

    assert result.returncode == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_plan_unreadable_file_is_one_line(tmp_path: Path) -> None:
    result = run_cli("plan", "-i", str(tmp_path / "missing.json"))

    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: cannot read snapshot {tmp_path / 'missing.json'}: No such file or directory"
    )


def test_cli_plan_unknown_strategy_is_one_line(snapshot_file: Path) -> None:
    result = run_cli("plan", "-i", str(snapshot_file), "-s", "magic")

    assert result.returncode == 2
    assert "error: invalid --strategy: unknown planner strategy 'magic'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_plan_names_allot_strategy_when_the_setting_is_wrong(snapshot_file: Path) -> None:
    from allot.cli import app

    result = CliRunner().invoke(
        app, ["plan", "-i", str(snapshot_file)], env={"ALLOT_STRATEGY": "magic"}
    )

    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigurationError)
    assert "invalid setting ALLOT_STRATEGY: unknown strategy 'magic'" in str(result.exception)
