"""Lightweight allot members for bench/scale.py: many ZooKeeper sessions in one process.

Each member opens a real ZooKeeper session and prints ``ready``; on a ``go`` line from stdin
every member registers ``{root}/nodes/{key}`` at once and, like a worker node, queues for the
trigger duty (:class:`allot.zk.triggers.TriggerDuty`: the holder watches membership and sends
one ``allot.assign`` per membership version). Settings come from the ``ALLOT_*`` environment. Prints
``joined <epoch seconds>`` once every member is registered, then stays until stdin closes.

Run by bench/scale.py: ``python bench/members.py --count 100 --prefix m1``.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kazoo.client import KazooClient

from allot.settings import get_settings
from allot.zk.client import connect
from allot.zk.codec import encode_member_info
from allot.zk.paths import ZkPaths
from allot.zk.registration import this_process
from allot.zk.triggers import TriggerDuty
from tasks.app import app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--no-watch", action="store_true", help="register only, no trigger duty")
    args = parser.parse_args()
    settings = get_settings()
    paths = ZkPaths(settings.zk_root)
    clients: list[KazooClient] = []

    def request_cycle(membership: int) -> None:
        app.send_task("allot.assign", kwargs={"trigger": "membership", "membership": membership})

    def open_session(_index: int) -> KazooClient:
        return connect(settings)

    with ThreadPoolExecutor(max_workers=32) as pool:
        clients.extend(pool.map(open_session, range(args.count)))
    keys = [f"{args.prefix}-{index}@bench" for index in range(args.count)]
    records = [encode_member_info(this_process(key, 1.0)) for key in keys]
    print("ready", flush=True)
    sys.stdin.readline()
    # a fresh key's registration is one ephemeral create (NodeRegistration adds the takeover
    # of a crashed predecessor, which fresh keys never need): all sent at once
    pending = [
        client.create_async(paths.node(key), record, ephemeral=True)
        for client, key, record in zip(clients, keys, records, strict=True)
    ]
    for result in pending:
        result.get()
    print(f"joined {time.time():.3f}", flush=True)
    duties = (
        []
        if args.no_watch
        else [
            TriggerDuty(client, paths, key, request_cycle)
            for client, key in zip(clients, keys, strict=True)
        ]
    )
    sys.stdin.read()
    for duty in duties:
        duty.stop(timeout=0.1)
    for client in clients:
        client.stop()
        client.close()


if __name__ == "__main__":
    main()
