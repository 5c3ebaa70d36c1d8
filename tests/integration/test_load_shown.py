"""What operators see of the measured load and the pins, on real ZooKeeper, SQL and Redis:
``allot status`` and ``allot nodes`` (tables in 80 columns and JSON, run as real processes),
the bucket map's data and the metrics. The nodes publish their load as workers do
(:func:`allot.zk.load.publish_load`, from their own sessions) and the pins are set as
``allot pin`` sets them (:func:`allot.zk.pins.set_pin`)."""

from __future__ import annotations

import contextlib
import html
import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from allot.metrics import ClusterCollector, metrics_registry, serve_metrics
from allot.metrics.bucket_map import bucket_map, map_app
from allot.metrics.cluster import LOADED_BUCKETS
from allot.testing.processes import allot_env
from allot.testing.servers import ServerProcess, free_port
from allot.zk.load import publish_load
from allot.zk.paths import ZkPaths
from allot.zk.pins import set_pin
from models.engine import session_factory
from tests.cli import allot
from tests.e2e.browser import chromium
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

WINDOW = 600.0
TOLERANCE = 1.3


@dataclass
class Loaded:
    """Two live nodes of weight 1 after a cycle: every bucket measured, a@h's buckets at 2 s
    but its first, ``heavy``, at 52 s (a@h: 150 s), b@h's at 1 s (b@h: 50 s); ``heavy`` pinned
    to a@h, b@h's first bucket ``stray`` pinned to gone@h (not live)."""

    cluster: Cluster
    env: dict[str, str]
    held: dict[str, list[int]]
    heavy: int
    stray: int


@pytest.fixture
def loaded(cluster: Cluster, zookeeper: ServerProcess, redis_server: ServerProcess) -> Loaded:
    cluster.join("a@h")
    cluster.join("b@h")
    cluster.cycle().run()
    held = cluster.zk_assignment()
    assert sorted(map(len, held.values())) == [50, 50]
    paths = ZkPaths(cluster.settings.zk_root)
    heavy, stray = held["a@h"][0], held["b@h"][0]
    a_load = dict.fromkeys(held["a@h"], 2.0) | {heavy: 52.0}
    publish_load(cluster.nodes["a@h"], paths, "a@h", WINDOW, a_load)
    publish_load(cluster.nodes["b@h"], paths, "b@h", WINDOW, dict.fromkeys(held["b@h"], 1.0))
    set_pin(cluster.client, paths, heavy, "a@h")
    set_pin(cluster.client, paths, stray, "gone@h")
    env = allot_env(
        zookeeper,
        redis_server,
        zk_root=cluster.settings.zk_root,
        database_url=cluster.settings.database_url,
        cluster=f"loadtest-{uuid.uuid4().hex[:8]}",
        load_window=str(WINDOW),
        load_tolerance=str(TOLERANCE),
    )
    return Loaded(cluster, env, held, heavy, stray)


def run(loaded: Loaded, *args: str, columns: int = 80) -> str:
    result = allot(*args, env=loaded.env | {"COLUMNS": str(columns)})
    assert result.returncode == 0, result.stderr
    return result.stdout


def fits_80_columns(text: str) -> list[str]:
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text
    return lines


def row(lines: list[str], first: str) -> list[str]:
    """The cells of the first table row whose first cell is ``first``."""
    for line in lines:
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n" + "\n".join(lines))


def test_status_json_has_each_nodes_load_share_and_ratio_the_heaviest_buckets_and_pins(
    loaded: Loaded,
) -> None:
    state = json.loads(run(loaded, "status", "--format", "json"))

    nodes = {node["node_key"]: node for node in state["nodes"]}
    assert {key: (n["load"], n["share"], n["ratio"]) for key, n in nodes.items()} == {
        "a@h": (150.0, 100.0, 1.5),
        "b@h": (50.0, 100.0, 0.5),
    }
    load = state["load"]
    assert {key: load[key] for key in ("window", "strategy", "tolerance", "ratio")} == {
        "window": WINDOW,
        "strategy": "balanced",
        "tolerance": TOLERANCE,
        "ratio": 1.5,
    }
    assert (load["total"], load["measured"], load["problems"]) == (200.0, 100, [])
    others = [bucket for bucket in loaded.held["a@h"] if bucket != loaded.heavy][:4]
    assert load["heaviest"] == [
        {"bucket": loaded.heavy, "load": 52.0, "owner": "a@h", "pinned_to": "a@h"},
        *({"bucket": b, "load": 2.0, "owner": "a@h", "pinned_to": None} for b in others),
    ]
    assert state["pins"] == sorted(
        [
            {"bucket": loaded.heavy, "node": "a@h", "live": True, "owner": "a@h"},
            {"bucket": loaded.stray, "node": "gone@h", "live": False, "owner": "b@h"},
        ],
        key=lambda pin: loaded.heavy if pin["node"] == "a@h" else loaded.stray,
    )  # in bucket order
    assert state["pins_problem"] is None


def test_status_in_80_columns_shows_the_ratio_against_the_tolerance_the_heaviest_and_pins(
    loaded: Loaded,
) -> None:
    lines = fits_80_columns(run(loaded, "status"))

    text = "\n".join(lines)
    assert "ratio 1.50 (tolerance 1.3, strategy balanced)" in " ".join(text.split())
    assert "load over the last 600 s" in text
    assert row(lines, "a@h") == ["a@h", "live", "1", "50", "0", "0"]  # the nodes table first
    loads = [line for line in lines if "a@h" in line or "b@h" in line]
    assert any(line.split() == ["│", "a@h", "│", "50", "│", "150.0", "│", "100.0", "│", "1.50", "│"]
               for line in loads)  # fmt: skip
    assert row(lines, str(loaded.heavy)) == [str(loaded.heavy), "52.0", "a@h", "a@h"]
    assert row(lines, str(loaded.stray)) == [str(loaded.stray), "gone@h (not live)", "b@h"]


def test_after_a_cycle_under_strategy_load_status_shows_its_ratios_and_the_new_spread(
    loaded: Loaded,
) -> None:
    # Given the cycle planning with strategy load and the tolerance the commands are given
    cluster = loaded.cluster
    cluster.settings = cluster.settings.model_copy(
        update={"strategy": "load", "load_tolerance": TOLERANCE}
    )

    # When a cycle moves buckets for load
    report = cluster.cycle().run()
    assert report.moves > 0
    assert report.load_ratio_before == pytest.approx(1.5)
    assert report.load_ratio_after is not None
    assert report.load_ratio_after <= TOLERANCE
    assert [(pin["bucket"], pin["node"]) for pin in report.pins_ignored] == [
        (loaded.stray, "gone@h")
    ]

    # Then status shows the last cycle's ratios, and now that ratio for the cluster
    env = loaded.env | {"ALLOT_STRATEGY": "load"}
    result = allot("status", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["load"]["ratio"] == pytest.approx(report.load_ratio_after, abs=1e-3)
    assert state["load"]["strategy"] == "load"
    assert {pin["bucket"]: pin["live"] for pin in state["pins"]} == {
        loaded.heavy: True,
        loaded.stray: False,
    }
    heaviest = state["load"]["heaviest"][0]
    assert (heaviest["bucket"], heaviest["owner"]) == (loaded.heavy, "a@h")  # kept by its pin
    people = allot("status", env=env | {"COLUMNS": "80"})
    assert people.returncode == 0, people.stderr
    text = " ".join(" ".join(fits_80_columns(people.stdout)).split())
    after = f"{report.load_ratio_after:.2f}"
    assert f"{report.moves} move(s)" in text
    assert f"load ratio 1.50 -> {after}" in text
    assert f"ratio {after} (tolerance 1.3, strategy load)" in text


def test_nodes_show_load_share_and_ratio_in_80_columns_and_in_json(loaded: Loaded) -> None:
    lines = fits_80_columns(run(loaded, "nodes"))

    b_rows = [line.split() for line in lines if " b@h " in line]
    assert ["│", "b@h", "│", "50", "│", "50.0", "│", "100.0", "│", "0.50", "│"] in b_rows
    assert any("ratio 1.50" in line for line in lines)
    nodes = json.loads(run(loaded, "nodes", "--format", "json"))
    assert [(n["node_key"], n["load"], n["share"], n["ratio"]) for n in nodes] == [
        ("a@h", 150.0, 100.0, 1.5),
        ("b@h", 50.0, 100.0, 0.5),
    ]


def test_without_measured_load_status_says_so_and_has_no_ratio(cluster: Cluster) -> None:
    cluster.join("a@h")
    cluster.cycle().run()
    env = {
        "ALLOT_ZK_HOSTS": cluster.settings.zk_hosts,
        "ALLOT_ZK_ROOT": cluster.settings.zk_root,
        "ALLOT_DATABASE_URL": cluster.settings.database_url,
    }

    people = allot("status", env=env | {"COLUMNS": "80"})
    state = json.loads(allot("status", "--format", "json", env=env).stdout)

    assert people.returncode == 0, people.stderr
    assert "none measured yet (tolerance 1.15, strategy balanced)" in people.stdout
    assert "pins: none" in people.stdout
    assert (state["load"]["ratio"], state["load"]["heaviest"], state["pins"]) == (None, [], [])
    assert [(n["load"], n["share"], n["ratio"]) for n in state["nodes"]] == [(0.0, 0.0, None)]


def test_status_lists_what_it_could_not_read_of_the_load_and_the_pins(loaded: Loaded) -> None:
    # Given a load znode that is not JSON and pins that are not JSON
    client, paths = loaded.cluster.client, ZkPaths(loaded.cluster.settings.zk_root)
    client.create(paths.load_of("odd@h"), b"{not json", ephemeral=True)
    client.set(paths.pins, b"[1, 2")

    state = json.loads(run(loaded, "status", "--format", "json"))
    lines = fits_80_columns(run(loaded, "status"))

    # Then the rest is shown, and each unreadable part is named once
    assert state["load"]["ratio"] == 1.5
    assert state["pins"] == []
    assert len(state["load"]["problems"]) == 1
    assert "load/odd@h: not JSON" in state["load"]["problems"][0]
    assert state["pins_problem"].startswith("pins are not JSON")
    ignored = [line for line in lines if line.startswith("ignored: ")]
    assert [line.split()[1] for line in ignored] == ["load/odd@h:", "pins"]
    assert "pins: none" in lines


def test_the_bucket_map_has_each_buckets_load_and_pin(loaded: Loaded) -> None:
    cluster = loaded.cluster
    settings = cluster.settings.model_copy(update={"load_tolerance": TOLERANCE})

    picture = bucket_map(cluster.client, session_factory(cluster.engine), settings)

    buckets = {bucket["id"]: bucket for bucket in picture["buckets"]}
    assert (buckets[loaded.heavy]["load"], buckets[loaded.heavy]["pinned"]) == (52.0, "a@h")
    assert (buckets[loaded.stray]["load"], buckets[loaded.stray]["pinned"]) == (1.0, "gone@h")
    assert sum(bucket["pinned"] is not None for bucket in buckets.values()) == 2
    assert {n["node_key"]: (n["load"], n["load_share"], n["ratio"]) for n in picture["nodes"]} == {
        "a@h": (150.0, 100.0, 1.5),
        "b@h": (50.0, 100.0, 0.5),
    }
    assert picture["load"] == {
        "ratio": 1.5,
        "tolerance": TOLERANCE,
        "strategy": "balanced",
        "window": cluster.settings.load_window,
        "measured": 100,
        "mean": 2.0,
        "max": 52.0,
    }


def test_the_bucket_map_works_without_load_data(cluster: Cluster) -> None:
    cluster.join("a@h")
    cluster.cycle().run()

    picture = bucket_map(cluster.client, session_factory(cluster.engine), cluster.settings)

    assert {bucket["load"] for bucket in picture["buckets"]} == {None}
    assert {bucket["pinned"] for bucket in picture["buckets"]} == {None}
    assert (picture["load"]["measured"], picture["load"]["max"], picture["load"]["ratio"]) == (
        0,
        0.0,
        None,
    )
    assert [n["ratio"] for n in picture["nodes"]] == [None]


@contextlib.contextmanager
def scraped_text(collector: ClusterCollector) -> Iterator[str]:
    server = serve_metrics(free_port(), metrics_registry(collector), address="127.0.0.1")
    assert server is not None
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            yield response.read().decode()
    finally:
        server.stop()


def samples(text: str, name: str, label: str) -> dict[str, float]:
    found: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[sample.labels[label]] = sample.value
    return found


def test_the_metrics_give_each_live_nodes_load_and_the_heaviest_buckets_only(
    loaded: Loaded,
) -> None:
    cluster = loaded.cluster
    collector = ClusterCollector(cluster.client, session_factory(cluster.engine), cluster.settings)

    with scraped_text(collector) as text:
        node_load = samples(text, "allot_node_load", "node")
        bucket_load = samples(text, "allot_bucket_load", "bucket")

    assert node_load == {"a@h": 150.0, "b@h": 50.0}
    assert len(bucket_load) == LOADED_BUCKETS < 100
    assert bucket_load[str(loaded.heavy)] == 52.0
    assert set(bucket_load.values()) == {52.0, 2.0}  # the heaviest: a@h's, never b@h's 1 s


CELL = re.compile(r'<div class="bucket [^"]*"(?P<attrs>[^>]*)>(?P<id>\d+)</div>')


def test_the_bucket_map_page_shades_buckets_by_load_and_marks_pins(
    loaded: Loaded, tmp_path: Path
) -> None:
    # Given the bucket map served as a worker serves it, behind Flower's credentials
    cluster = loaded.cluster
    sessions = session_factory(cluster.engine)
    pages = map_app(lambda: bucket_map(cluster.client, sessions, cluster.settings), "op:pw")
    server = serve_metrics(free_port(), metrics_registry(None), "127.0.0.1", pages=pages)
    assert server is not None
    try:
        # When a browser renders it
        url = f"http://op:pw@127.0.0.1:{server.port}/map"
        dom = chromium(url, tmp_path, "--dump-dom").stdout
        chromium(url, tmp_path, f"--screenshot={tmp_path / 'bucket-map-load.png'}")
    finally:
        server.stop()

    # Then the heaviest bucket has its owner's full colour, a light one a pale shade of it,
    # and the tooltips give each bucket's load and pin
    cells = {int(m["id"]): html.unescape(m["attrs"]) for m in CELL.finditer(dom)}
    assert len(cells) == 100
    heavy, stray, light = cells[loaded.heavy], cells[loaded.stray], cells[loaded.held["a@h"][1]]
    assert alpha(heavy) == 1.0
    assert alpha(light) == pytest.approx(0.15 + 0.85 * 2 / 52, abs=0.005)  # 8-bit alpha
    assert colour(light) == colour(heavy)  # a@h's colour, paler
    assert 'data-pinned="a@h"' in heavy
    assert 'data-pinned="gone@h"' in stray
    assert "data-pinned" not in light
    assert f"bucket {loaded.heavy}: a@h (live)\nload: 52 s of work over the last" in heavy
    assert "\npinned to gone@h" in stray
    assert '<td class="over">1.50</td>' in dom  # a@h's ratio: above the tolerance
    assert "load ratio 1.50 (tolerance 1.15, strategy balanced)" in dom


def colour(attrs: str) -> tuple[int, ...]:
    found = re.search(r"background-color: rgba?\((\d+), (\d+), (\d+)", attrs)
    assert found, attrs
    return tuple(int(part) for part in found.groups())


def alpha(attrs: str) -> float:
    """The alpha of a cell's background colour (1 when it is plain ``rgb``)."""
    found = re.search(r"background-color: rgba\([^)]*, ([0-9.]+)\)", attrs)
    return float(found[1]) if found else 1.0
