"""The bucket map page in a real browser: headless Chromium logs in with Flower's credentials
and the page it renders shows each bucket's owner as ZooKeeper has it, through a kill -9 (the
dead node's buckets marked suspect during its grace, then on the survivor). The screenshots are
kept in the test's temporary directory (``bucket-map-*.png``)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

from allot.testing.cluster import LocalCluster
from allot.testing.processes import http
from allot.testing.servers import free_port
from tests.e2e.browser import WINDOW, chromium, png_size
from tests.e2e.conftest import START

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
CELL = re.compile(
    r'<div class="bucket (?P<state>[a-z]+)"[^>]*title="bucket (?P<id>\d+): (?P<who>[^"\n]*)'
)  # the title's first line: its load and pin, when known, are on the next lines


def rendered(url: str, tmp_path: Path) -> dict[int, tuple[str, str]]:
    """bucket -> (state, who) as the page Chromium rendered shows it."""
    dom = chromium(url, tmp_path, "--dump-dom").stdout
    return {int(m["id"]): (m["state"], m["who"]) for m in CELL.finditer(dom)}


def test_the_bucket_map_shows_owners_and_a_failover_as_it_happens(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    user, password = "operator", secrets.token_urlsafe(12)
    cluster.env["FLOWER_BASIC_AUTH"] = f"{user}:{password}"
    # A grace period wide enough for a few renders of the page (one Chromium run each, seconds
    # on a busy machine), so the suspect state cannot pass between two looks
    cluster.env["ALLOT_NODE_OFFLINE_TIMEOUT"] = "10"
    ports = {name: free_port() for name in ("node1", "node2")}
    cluster.worker("node1", ALLOT_METRICS_PORT=str(ports["node1"]))
    cluster.wait_for(lambda: cluster.settled([100]), "node1 holding every bucket", START)
    base = f"127.0.0.1:{ports['node1']}"
    page = f"http://{user}:{password}@{base}/map"
    node1 = cluster.key("node1")

    def all_on_node1() -> bool:
        shown = rendered(page, tmp_path)
        return len(shown) == 100 and set(shown.values()) == {("live", f"{node1} (live)")}

    cluster.wait_for(all_on_node1, "the map to show every bucket on node1", 30)

    # When node2 joins, the page shows it taking its half
    cluster.worker("node2", ALLOT_METRICS_PORT=str(ports["node2"]))
    cluster.wait_for(lambda: cluster.settled([50, 50]), "two nodes sharing the buckets", START)

    # The page is behind Flower's credentials only
    assert http("GET", f"http://{base}/map")[0] == 401
    assert http("GET", f"http://{base}/map.json", auth="operator:wrong")[0] == 401
    assert http("GET", f"http://{base}/map.json", auth=f"{user}:{password}")[0] == 200

    # Given both nodes holding their buckets, the page shows each bucket's owner
    def owners_shown() -> dict[int, tuple[str, str]] | None:
        zk = {b: node for node, buckets in cluster.zk().items() for b in buckets}
        shown = rendered(page, tmp_path)
        expected = {b: ("live", f"{node} (live)") for b, node in zk.items()}
        return shown if shown == expected else None

    cluster.wait_for(owners_shown, "the map to show the assignment", 60)
    before = tmp_path / "bucket-map-two-nodes.png"
    chromium(page, tmp_path, f"--screenshot={before}")
    assert png_size(before) == WINDOW
    assert before.stat().st_size > 20_000  # a blank or error page compresses to far less

    # When node2 is killed, its buckets show as held by a suspect node during its grace period
    node2 = cluster.key("node2")
    its_buckets = set(cluster.zk()[node2])
    cluster.processes["node2"].kill()

    def suspect_shown() -> dict[int, tuple[str, str]] | None:
        shown = rendered(page, tmp_path)
        marked = {b for b, (state, who) in shown.items() if state == "suspect" and node2 in who}
        return shown if marked == its_buckets else None

    cluster.wait_for(suspect_shown, "the dead node's buckets marked suspect", 30, interval=0.2)
    during = tmp_path / "bucket-map-suspect.png"
    chromium(page, tmp_path, f"--screenshot={during}")

    # Then, after the failover, every bucket shows on the survivor
    cluster.wait_for(all_on_node1, "every bucket on node1 again", START)
    after = tmp_path / "bucket-map-after-failover.png"
    chromium(page, tmp_path, f"--screenshot={after}")
    assert png_size(after) == WINDOW
