"""A three-server ZooKeeper ensemble from the Debian jars, for fault tests and benchmarks.

Each server runs in a child process on 127.0.0.1 with its own client, quorum and election
ports and its own data directory; :meth:`Ensemble.leader` asks each one (``srvr``) which is
the leader, so a test can kill exactly the leader and watch sessions move to the others.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from allot.errors import ServiceError
from allot.testing.servers import (
    ZOOKEEPER_JAR,
    ServerProcess,
    _ask,
    _wait_until_ready,
    free_port,
)

HOST = "127.0.0.1"
QUORUM_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"


@dataclass
class Ensemble:
    """The servers of an ensemble, by id (1..n), and what is needed to restart one."""

    servers: dict[int, ServerProcess]
    commands: dict[int, list[str]]

    @property
    def hosts(self) -> str:
        """The connection string naming every server (``ALLOT_ZK_HOSTS``)."""
        return ",".join(server.address for server in self.servers.values())

    def mode(self, server_id: int) -> str | None:
        """``leader``, ``follower``, or None when the server does not answer (or is down)."""
        server = self.servers[server_id]
        if server.process.poll() is not None:
            return None
        try:
            reply = _ask(server.host, server.port, b"srvr")
        except OSError:
            return None
        for line in reply.decode(errors="replace").splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return None

    def leader(self, timeout: float = 60.0) -> int:
        """The id of the current leader, waiting up to ``timeout`` s for one to be elected.

        Raises:
            ServiceError: no leader within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for server_id in self.servers:
                if self.mode(server_id) == "leader":
                    return server_id
            time.sleep(0.1)
        raise ServiceError(f"no ZooKeeper leader elected within {timeout:.0f} s")

    def kill(self, server_id: int) -> None:
        """SIGKILL one server (it stays down until :meth:`restart`)."""
        process = self.servers[server_id].process
        process.kill()
        process.wait()

    def restart(self, server_id: int, timeout: float = 60.0) -> None:
        """Start a killed server again with its data and wait until it answers."""
        old = self.servers[server_id]
        with old.log_path.open("ab") as log:
            process = subprocess.Popen(
                self.commands[server_id],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = ServerProcess(old.name, old.host, old.port, process, old.workdir, old.log_path)
        self.servers[server_id] = _wait_until_ready(server, "zookeeper", timeout)

    def stop(self) -> None:
        """Stop every server."""
        for server in self.servers.values():
            server.stop()


def start_ensemble(
    workdir: Path, size: int = 3, tick_time_ms: int = 500, timeout: float = 90.0
) -> Ensemble:
    """Start ``size`` ZooKeeper servers forming one ensemble; return once a leader serves.

    Raises:
        ServiceError: Java or the ZooKeeper jars are missing, or the ensemble did not form.
    """
    java = shutil.which("java")
    if not ZOOKEEPER_JAR.exists() or java is None:
        raise ServiceError(
            f"ZooKeeper is not installed ({ZOOKEEPER_JAR} or java missing): "
            "install it with `apt-get install -y zookeeper` (make test does this as root)"
        )
    ids = range(1, size + 1)
    ports = {i: (free_port(), free_port(), free_port()) for i in ids}
    peers = [f"server.{i}={HOST}:{ports[i][1]}:{ports[i][2]}" for i in ids]
    ensemble = Ensemble({}, {})
    try:
        for i in ids:
            home = workdir / f"zk{i}"
            (home / "data").mkdir(parents=True, exist_ok=True)
            (home / "data" / "myid").write_text(f"{i}\n")
            config = home / "zoo.cfg"
            config.write_text(
                "\n".join(
                    [
                        f"tickTime={tick_time_ms}",
                        "initLimit=20",
                        "syncLimit=4",
                        f"dataDir={home / 'data'}",
                        f"clientPort={ports[i][0]}",
                        f"clientPortAddress={HOST}",
                        "maxClientCnxns=0",
                        "minSessionTimeout=1000",
                        "maxSessionTimeout=60000",
                        "admin.enableServer=false",
                        "4lw.commands.whitelist=ruok,srvr,stat,mntr,cons",
                        *peers,
                        "",
                    ]
                )
            )
            command = [
                java,
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-Dzookeeper.jmx.log4j.disable=true",
                "-cp",
                str(ZOOKEEPER_JAR),
                QUORUM_MAIN,
                str(config),
            ]
            log_path = home / "zookeeper.log"
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            ensemble.commands[i] = command
            ensemble.servers[i] = ServerProcess(
                f"ZooKeeper {i}", HOST, ports[i][0], process, home, log_path
            )
        for server in ensemble.servers.values():
            _wait_until_ready(server, "zookeeper", timeout)
        ensemble.leader(timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            ensemble.stop()
        raise
    return ensemble
