"""``allot status`` and ``allot nodes`` as people read them, in 80 columns: the nodes, their
load against their fair share, the heaviest buckets and the pins (views of
:mod:`allot.cli.cluster` printed on a Console 80 columns wide, without servers)."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console, RenderableType

from allot.cli.cluster import heaviest_view, load_view, nodes_view, pins_view, print_report

LONG = "node12@worker-host-12.eu-west-1.compute.internal"


def node(key: str, state: str = "live", **fields: Any) -> dict[str, Any]:
    """A node of ``allot status --format json`` (a ratio only where there is a share)."""
    share = fields.get("share", 2_400.0)
    return {
        "node_key": key, "state": state, "weight": 1.0, "buckets": 34, "tables": 12_345,
        "backlog": 1_204, "host": key.partition("@")[2], "offline_in": None,
        "load": 3_412.25, "share": share, "ratio": None if share is None else 1.422,
    } | fields  # fmt: skip


STATE: dict[str, Any] = {
    "bucket_count": 16_384,
    "nodes": [
        node(LONG),
        node("node2@h2", weight=2.0, host="10.0.0.2", load=1_200.0, share=4_800.0, ratio=0.25),
        node("node3@h3", "suspect", weight=None, host=None, offline_in=12.34, share=None),
    ],
    "load": {
        "window": 3600.0, "strategy": "balanced", "tolerance": 1.15, "ratio": 1.422,
        "total": 7_200.0, "measured": 1_200, "mean": 3.25, "problems": [],
        "heaviest": [
            {"bucket": 16_001, "load": 1_234.5, "owner": LONG, "pinned_to": LONG},
            {"bucket": 12, "load": 99.0, "owner": None, "pinned_to": None},
        ],
    },
    "pins": [
        {"bucket": 16_001, "node": LONG, "live": True, "owner": LONG},
        {"bucket": 9, "node": "node9@gone-host", "live": False, "owner": "node2@h2"},
    ],
}  # fmt: skip


def printed(*renderables: RenderableType, colour: bool = False) -> list[str]:
    console = Console(width=80, record=True, force_terminal=colour, color_system="standard")
    for renderable in renderables:
        console.print(renderable)
    text = console.export_text(styles=colour)
    if not colour:
        assert "…" not in text
        assert max(len(line) for line in text.splitlines()) <= 80
    return text.splitlines()


def column(lines: list[str], index: int) -> str:
    """The text of column ``index`` of a table, every line of it joined."""
    return "".join(line.split("│")[index + 1].strip() for line in lines if line.count("│") > 2)


def test_the_nodes_table_keeps_every_field_whole_in_80_columns() -> None:
    lines = printed(nodes_view(STATE["nodes"]))

    # the long key folds, whole; a host that is not the key's own shows below the key
    assert LONG in column(lines, 0)
    assert "10.0.0.2" in column(lines, 0)
    assert column(lines, 0).count(LONG.partition("@")[2]) == 1  # its own host: not repeated
    assert "suspect12.3 s left" in column(lines, 1)
    assert [cell.strip() for cell in lines[3].split("│")[2:7]] == [
        "live", "1", "34", "12,345", "1,204",
    ]  # fmt: skip


def test_the_load_table_gives_load_share_and_ratio_of_live_nodes_in_80_columns() -> None:
    lines = printed(load_view(STATE))

    text = " ".join(" ".join(lines).split())
    assert (
        "load over the last 3600 s: ratio 1.42 (tolerance 1.15, strategy balanced); 1,200 of "
        "16,384 buckets measured, the others count as the mean (3.2 s)"
    ) in text
    assert LONG in column(lines, 0)
    rows = [[cell.strip() for cell in line.split("│")[2:6]] for line in lines if "│" in line]
    assert ["34", "3,412.2", "2,400.0", "1.42"] in rows
    assert ["34", "1,200.0", "4,800.0", "0.25"] in rows
    assert "node3@h3" not in text  # a suspect has no share


def test_a_ratio_above_the_tolerance_is_red() -> None:
    lines = printed(load_view(STATE), colour=True)

    red = "\x1b[31m"
    assert f"ratio {red}1.42" in lines[0]
    assert sum(f"{red}1.42" in line for line in lines) == 2  # the headline and the node
    assert not any(f"{red}0.25" in line for line in lines)


def test_without_load_the_line_says_none_is_measured_and_there_is_no_table() -> None:
    nothing = STATE | {"load": STATE["load"] | {"ratio": None, "measured": 0, "total": 0.0}}

    lines = printed(load_view(nothing))

    assert lines == [
        "load over the last 3600 s: none measured yet (tolerance 1.15, strategy balanced)"
    ]


def test_the_heaviest_buckets_read_in_80_columns() -> None:
    lines = printed(heaviest_view(STATE))

    assert lines[0].strip() == "heaviest buckets"
    assert column(lines, 0) == "1600112"
    assert column(lines, 1) == "1,234.599.0"
    assert column(lines, 2) == f"{LONG}-"  # bucket 12 has no owner
    assert column(lines, 3) == LONG  # and no pin


def test_the_pins_say_which_node_is_not_live_in_80_columns() -> None:
    lines = printed(pins_view(STATE["pins"]))

    assert lines[0].strip() == "pins"
    assert column(lines, 0) == "160019"
    assert column(lines, 1) == f"{LONG}node9@gone-host (not live)"
    assert column(lines, 2) == f"{LONG}node2@h2"


def test_a_cycle_report_gives_the_load_ratio_before_and_after_when_measured(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report: dict[str, Any] = {
        "outcome": "applied", "plan_id": "p1", "epoch": 4, "moves": 3, "min_moves": 0,
        "spread_before": 0, "spread_after": 0, "moves_by_node": {}, "buckets": {},
        "load_ratio_before": 1.5, "load_ratio_after": 1.0833,
    }  # fmt: skip

    print_report(report)
    print_report(report | {"load_ratio_before": None, "load_ratio_after": None})

    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("load")] == ["load      ratio 1.50 -> 1.08"]
