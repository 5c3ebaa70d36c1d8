"""Local ZooKeeper and Redis servers for development and tests.

``make run`` and the test suite start their own servers from the system packages: ZooKeeper from
the Debian jars in ``/usr/share/java`` (package ``zookeeper``) and ``redis-server`` (package
``redis-server``). Each server runs in the foreground of a child process, listens on 127.0.0.1,
keeps its data under a directory of the caller's choosing, and is stopped with
:meth:`ServerProcess.stop`. A missing package raises :class:`~allot.errors.ServiceError` naming
the package to install; it never falls back silently.

``python -m allot.testing`` (:mod:`allot.testing.__main__`) runs one of these servers in
the foreground until SIGTERM or SIGINT, for ``make run``'s Procfile.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from allot.errors import ConfigurationError, ServiceError

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
ZOOKEEPER_MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports_in_a_row(count: int, host: str = "127.0.0.1", attempts: int = 50) -> int:
    """The first of ``count`` consecutive TCP ports on ``host`` that nothing listens on.

    Raises:
        ServiceError: no such run was found in ``attempts`` tries.
    """
    for _ in range(attempts):
        first = free_port(host)
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind((host, port))
            except OSError:
                continue
        return first
    raise ServiceError(f"found no {count} free ports in a row on {host}")


def _ask(host: str, port: int, request: bytes, timeout: float = 1.0) -> bytes:
    """Send ``request`` on a fresh connection and return what the server answers."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        with contextlib.suppress(TimeoutError):
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                chunks.append(data)
                if request.startswith(b"PING") and b"\r\n" in data:
                    break
        return b"".join(chunks)


def zookeeper_answers(host: str, port: int) -> bool:
    """True when a ZooKeeper server on ``host:port`` answers ``ruok`` with ``imok``."""
    try:
        return _ask(host, port, b"ruok") == b"imok"
    except OSError:
        return False


def redis_answers(host: str, port: int) -> bool:
    """True when a Redis server on ``host:port`` answers ``PING``."""
    try:
        return _ask(host, port, b"PING\r\n").startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class ServerProcess:
    """A server started by this module, running as a child process."""

    name: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path = field(repr=False)

    @property
    def address(self) -> str:
        """``host:port`` of the server."""
        return f"{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel send SIGTERM to this process when its parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _server_popen_options(own_session: bool) -> dict[str, Any]:
    """``Popen`` options for a server child.

    By default the server shares the caller's process group, so a Ctrl-C at a terminal stops it
    with everything else. ``own_session=True`` is for a caller that runs under a process manager
    which signals whole process groups (honcho): the server is then out of reach of that signal,
    so the caller decides when it stops (after its clients are gone: see
    ``python -m allot.testing``), and on Linux the kernel still stops it if the caller dies
    without doing so.
    """
    if not own_session:
        return {}
    return {"start_new_session": True, "preexec_fn": _die_with_parent}


def _wait_until_ready(server: ServerProcess, probe: str, timeout: float) -> ServerProcess:
    checks = {"zookeeper": zookeeper_answers, "redis": redis_answers}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServiceError(
                f"{server.name} exited with status {server.process.returncode} on start:\n"
                f"{server.log_tail()}"
            )
        if checks[probe](server.host, server.port):
            return server
        time.sleep(0.1)
    server.stop()
    raise ServiceError(
        f"{server.name} did not answer on {server.address} within {timeout:.0f} s:\n"
        f"{server.log_tail()}"
    )


def start_zookeeper(
    workdir: Path,
    port: int | None = None,
    host: str = "127.0.0.1",
    tick_time_ms: int = 500,
    timeout: float = 60.0,
    *,
    own_session: bool = False,
) -> ServerProcess:
    """Start a standalone ZooKeeper server from the Debian jars and wait until it answers.

    Sessions may last from 2 ticks up to 60 s (``tick_time_ms`` 500 allows 1 s sessions, which
    fault-injection tests need). Data and the log live under ``workdir``. With ``own_session``
    the server runs in a session of its own (see :func:`_server_popen_options`).

    Raises:
        ServiceError: Java or the ZooKeeper jars are missing, or the server did not come up.
    """
    java = shutil.which("java")
    if not ZOOKEEPER_JAR.exists() or java is None:
        raise ServiceError(
            f"ZooKeeper is not installed ({ZOOKEEPER_JAR} or java missing): "
            "install it with `apt-get install -y zookeeper` (make test does this as root)"
        )
    port = port or free_port(host)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    config = workdir / "zoo.cfg"
    config.write_text(
        "\n".join(
            [
                f"tickTime={tick_time_ms}",
                f"dataDir={workdir / 'data'}",
                f"clientPort={port}",
                f"clientPortAddress={host}",
                "maxClientCnxns=0",
                "minSessionTimeout=1000",
                "maxSessionTimeout=60000",
                "admin.enableServer=false",
                "4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,wchs,wchc",
                "autopurge.purgeInterval=1",
                "",
            ]
        )
    )
    log_path = workdir / "zookeeper.log"
    command = [
        java,
        "-Xmx256m",
        "-XX:+UseSerialGC",
        "-Dzookeeper.jmx.log4j.disable=true",
        "-cp",
        f"{ZOOKEEPER_JAR}",
        ZOOKEEPER_MAIN,
        str(config),
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            **_server_popen_options(own_session),
        )
    server = ServerProcess("ZooKeeper", host, port, process, workdir, log_path)
    return _wait_until_ready(server, "zookeeper", timeout)


def start_redis(
    workdir: Path,
    port: int | None = None,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    *,
    own_session: bool = False,
    appendonly: bool = False,
) -> ServerProcess:
    """Start ``redis-server`` without persistence and wait until it answers ``PING``.

    With ``own_session`` the server runs in a session of its own (see
    :func:`_server_popen_options`); with ``appendonly`` it keeps its data in an append-only
    file in ``workdir``, so a server started again there has the same queues.

    Raises:
        ServiceError: ``redis-server`` is missing or did not come up.
    """
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if binary is None:
        raise ServiceError(
            "redis-server is not installed: install it with `apt-get install -y redis-server` "
            "(make test does this as root)"
        )
    port = port or free_port(host)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "redis.log"
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        host,
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "always",
        "--dir",
        str(workdir),
        "--logfile",
        str(log_path),
        # a test's own address (allot.testing.netns) serves clients of other addresses
        "--protected-mode",
        "yes" if host in ("127.0.0.1", "localhost", "::1") else "no",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        **_server_popen_options(own_session),
    )
    server = ServerProcess("Redis", host, port, process, workdir, log_path)
    return _wait_until_ready(server, "redis", timeout)


def zookeeper_address(zk_hosts: str) -> tuple[str, int]:
    """The first ``host:port`` of a ZooKeeper connection string (a chroot suffix is ignored).

    >>> zookeeper_address("zk1:2182,zk2:2182/allot")
    ('zk1', 2182)
    """
    first = zk_hosts.split("/", 1)[0].split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host:
        host, port = first, "2181"
    if not host or not port.isdigit():
        raise ConfigurationError(f"cannot read host:port from ALLOT_ZK_HOSTS={zk_hosts!r}")
    return host, int(port)


def redis_address(broker_url: str) -> tuple[str, int]:
    """``(host, port)`` of a ``redis://`` broker URL.

    Raises:
        ConfigurationError: the URL is not a ``redis://`` URL.
    """
    parts = urlsplit(broker_url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError(
            f"ALLOT_BROKER_URL={broker_url!r} is not a redis:// URL; only a Redis broker can be "
            "started locally"
        )
    try:
        port = parts.port or 6379
    except ValueError:
        raise ConfigurationError(f"bad port in ALLOT_BROKER_URL={broker_url!r}") from None
    return parts.hostname or "127.0.0.1", port


def client_count(server: ServerProcess) -> int | None:
    """How many clients are connected to ``server`` (the asking connection included).

    None when the server does not answer the question (ZooKeeper's ``mntr``, Redis' ``INFO``).
    """
    key = b"zk_num_alive_connections" if server.name == "ZooKeeper" else b"connected_clients:"
    request = b"mntr" if server.name == "ZooKeeper" else b"INFO clients\r\nQUIT\r\n"
    try:
        reply = _ask(server.host, server.port, request)
    except OSError:
        return None
    for line in reply.splitlines():
        if line.startswith(key):
            value = line[len(key) :].strip()
            return int(value) if value.isdigit() else None
    return None
