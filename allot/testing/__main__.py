"""``python -m allot.testing``: a local ZooKeeper or Redis in the foreground, for a Procfile.

::

    python -m allot.testing zookeeper --dir var/zookeeper   # on ALLOT_ZK_HOSTS' address
    python -m allot.testing redis --dir var/redis           # on ALLOT_BROKER_URL's address
    python -m allot.testing wait --timeout 120              # until both answer

``zookeeper`` and ``redis`` run until SIGTERM or SIGINT. Where a server already answers on the
configured address they use it: they say so and wait for the signal without starting anything,
so a taken port is not an error. Nothing is started for an address that is not on this machine.
A server started here runs in a session of its own, out of reach of a process manager that
signals whole process groups (honcho): on the signal it keeps serving until its clients have
disconnected (``--linger`` seconds at most), so the workers stopping beside it can still
unregister and acknowledge, then it stops.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from allot.errors import AllotError, ServiceError
from allot.testing.servers import (
    ServerProcess,
    client_count,
    redis_address,
    redis_answers,
    start_redis,
    start_zookeeper,
    zookeeper_address,
    zookeeper_answers,
)


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _configured(kind: str) -> tuple[str, int]:
    from allot.settings import load_settings

    settings = load_settings()
    if kind == "zookeeper":
        return zookeeper_address(settings.zk_hosts)
    return redis_address(settings.broker_url)


def _drain(server: ServerProcess, linger: float) -> None:
    """Keep serving until no other client is connected, for at most ``linger`` seconds.

    The processes started beside a server get the same stop signal at the same time; a worker
    that unregisters from ZooKeeper or acknowledges its last message on Redis while shutting
    down needs the server a moment longer than it needs itself.
    """
    deadline = time.monotonic() + linger
    told = False
    while time.monotonic() < deadline and server.process.poll() is None:
        count = client_count(server)
        if count is None or count <= 1:
            return
        if not told:
            print(f"{server.name}: waiting for {count - 1} client(s) to disconnect", flush=True)
            told = True
        time.sleep(0.2)


def _wait_for_signal(server: ServerProcess | None, linger: float = 0.0) -> int:
    """Block until SIGTERM or SIGINT (0), or until ``server`` exits on its own (1).

    On the signal, a ``server`` of our own keeps serving its clients for up to ``linger``
    seconds (see :func:`_drain`), then stops.
    """
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not stop.wait(0.5):
        if server is not None and server.process.poll() is not None:
            print(
                f"{server.name} exited with status {server.process.returncode}:\n"
                f"{server.log_tail()}",
                file=sys.stderr,
                flush=True,
            )
            return 1
    if server is not None:
        _drain(server, linger)
        server.stop()
        print(f"{server.name} stopped", flush=True)
    return 0


def _serve(kind: str, workdir: Path, linger: float) -> int:
    name = {"zookeeper": "ZooKeeper", "redis": "Redis"}[kind]
    answers = {"zookeeper": zookeeper_answers, "redis": redis_answers}[kind]
    host, port = _configured(kind)
    if answers(host, port):
        print(f"{name} already answers on {host}:{port}: using it", flush=True)
        return _wait_for_signal(None)
    if not _is_local(host):
        raise ServiceError(
            f"{name} does not answer on {host}:{port}, and a local {name} can only be started "
            "on this machine's loopback address"
        )
    bind = "127.0.0.1" if host == "localhost" else host
    start: Callable[..., ServerProcess] = start_zookeeper if kind == "zookeeper" else start_redis
    server = start(workdir.resolve(), port=port, host=bind, own_session=True)
    print(f"{name} started on {server.address} (data and log in {workdir})", flush=True)
    return _wait_for_signal(server, linger)


def _wait(timeout: float) -> int:
    targets = [
        ("ZooKeeper", zookeeper_answers, *_configured("zookeeper")),
        ("Redis", redis_answers, *_configured("redis")),
    ]
    deadline = time.monotonic() + timeout
    for name, answers, host, port in targets:
        while not answers(host, port):
            if time.monotonic() > deadline:
                raise ServiceError(f"{name} did not answer on {host}:{port} within {timeout:g} s")
            time.sleep(0.2)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m allot.testing``; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m allot.testing",
        description="Run a local ZooKeeper or Redis in the foreground until SIGTERM/SIGINT, on "
        "the address allot's settings name (ALLOT_ZK_HOSTS, ALLOT_BROKER_URL), or wait for them.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for kind in ("zookeeper", "redis"):
        sub = commands.add_parser(kind, help=f"run {kind} (or use the one already answering)")
        sub.add_argument("--dir", type=Path, required=True, help="data and log directory")
        sub.add_argument(
            "--linger",
            type=float,
            default=4.0,
            help="on SIGTERM/SIGINT, seconds to keep serving connected clients (default 4)",
        )
    wait = commands.add_parser("wait", help="wait until the ZooKeeper and the Redis answer")
    wait.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    args = parser.parse_args(argv)
    try:
        if args.command == "wait":
            return _wait(args.timeout)
        return _serve(args.command, args.dir, args.linger)
    except AllotError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
