"""Real processes for end-to-end tests and benchmarks: their environment; start them, wait for
them, stop them, show their logs.

Every process started here

- runs in a session of its own (``start_new_session=True``), so stopping it signals its whole
  process group: a Celery worker's pool children, the shell of a Procfile line and its children;
- writes its standard output and error to ``<log_dir>/<name>.log``; a wait that times out says
  what it waited for and shows the tail of every log;
- is stopped when the :class:`Processes` group that started it closes (SIGTERM to the group,
  then SIGKILL after a deadline), also when the test failed.

Typical use in a test (``processes`` is the e2e fixture that opens and closes a group)::

    def test_something(processes, ...):
        env = fresh_allot_env(zookeeper, redis_server, zk_root=..., database_url=...)
        processes.worker("node1", env)
        flower = processes.flower(env | flower_env(port, "user:pass", tmp_path / "flower.db"))
        processes.wait_for_http(flower_url + "/healthcheck")
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis

from allot.testing import polling
from allot.testing.servers import ServerProcess

# the checkout that tests, benchmarks and make run run from
ROOT = Path(__file__).resolve().parents[2]
FLOWER_CONFIG = ROOT / "flowerconfig.py"
VENV_BIN = Path(sys.executable).parent

T = TypeVar("T")


def inherited_env() -> dict[str, str]:
    """This process's environment without its ``ALLOT_*`` and ``FLOWER_*`` variables: what a
    process started by a test or a benchmark inherits, so that only the settings its caller
    gives reach it."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ALLOT_", "FLOWER_"))}


def allot_env(
    zookeeper: ServerProcess,
    redis_server: ServerProcess,
    *,
    zk_root: str,
    database_url: str,
    **settings: str,
) -> dict[str, str]:
    """The environment of an allot process: these servers, this root and database only.

    The caller's ``ALLOT_*`` and ``FLOWER_*`` variables are dropped (:func:`inherited_env`);
    Celery's broker is database 0 of ``redis_server``; ``settings`` adds more
    (``assign_interval="2"`` sets ``ALLOT_ASSIGN_INTERVAL=2``). The venv's ``bin`` comes first
    on ``PATH`` so ``celery``, ``allot`` and ``honcho`` are the project's.
    """
    env = inherited_env()
    env |= {
        "ALLOT_ZK_HOSTS": zookeeper.address,
        "ALLOT_ZK_ROOT": zk_root,
        "ALLOT_BROKER_URL": f"redis://{redis_server.address}/0",
        "ALLOT_DATABASE_URL": database_url,
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    env |= {f"ALLOT_{name.upper()}": value for name, value in settings.items()}
    return env


def empty_redis(redis_server: ServerProcess) -> None:
    """Flush the whole Redis: Celery's queues and its event and control channels live in it,
    and a message a previous test left there would otherwise reach this test's workers."""
    redis.Redis(host=redis_server.host, port=redis_server.port).flushall()


def fresh_allot_env(
    zookeeper: ServerProcess,
    redis_server: ServerProcess,
    *,
    zk_root: str,
    database_url: str,
    **settings: str,
) -> dict[str, str]:
    """:func:`allot_env` on an emptied Redis (:func:`empty_redis`)."""
    empty_redis(redis_server)
    return allot_env(
        zookeeper, redis_server, zk_root=zk_root, database_url=database_url, **settings
    )


def flower_env(port: int, basic_auth: str, db: Path, save_interval_ms: int = 500) -> dict[str, str]:
    """Flower's variables (read by flowerconfig.py) for a test: its port, credentials and db."""
    return {
        "FLOWER_PORT": str(port),
        "FLOWER_BASIC_AUTH": basic_auth,
        "FLOWER_DB": str(db),
        "FLOWER_STATE_SAVE_INTERVAL": str(save_interval_ms),
    }


@dataclass
class ManagedProcess:
    """A process started by :class:`Processes`, leader of its own process group."""

    name: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path
    signalled: bool = False  # the test stopped it on purpose: its exit is no failure

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def output(self) -> str:
        """Everything the process wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the process group (as a terminal does with Ctrl-C)."""
        self.signalled = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def kill(self) -> None:
        """SIGKILL to the whole group: a crash, nothing gets to clean up."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM to the group, SIGKILL after ``timeout`` s; return the exit status.

        Whatever is left in the group once the leader has exited is killed too.
        """
        if self.running:
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(10)
        self.signal_group(signal.SIGKILL)
        return self.popen.returncode


@dataclass
class Processes:
    """The processes of one test; closing the group stops them all (a context manager)."""

    log_dir: Path
    started: list[ManagedProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        # pytest shows this only for a test that failed
        print(self.report())

    def start(
        self, name: str, args: list[str], env: Mapping[str, str], cwd: Path = ROOT
    ) -> ManagedProcess:
        """Start ``args`` in ``cwd`` with exactly ``env``; output goes to ``<name>.log``."""
        log_path = self.log_dir / f"{name}.log"
        suffix = 1
        while log_path.exists():  # a restarted process keeps its first log
            suffix += 1
            log_path = self.log_dir / f"{name}.{suffix}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                args,
                cwd=cwd,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        process = ManagedProcess(name, args, popen, log_path)
        self.started.append(process)
        return process

    def celery(
        self, name: str, args: list[str], env: Mapping[str, str], app: str = "tasks"
    ) -> ManagedProcess:
        """``celery -A APP ARGS`` with the venv's Python."""
        return self.start(name, [sys.executable, "-m", "celery", "-A", app, *args], env)

    def worker(
        self, node: str, env: Mapping[str, str], *extra: str, app: str = "tasks"
    ) -> ManagedProcess:
        """A worker node ``<node>@<host>`` with one pool process, as ``make run`` starts it."""
        args = ["worker", "-n", f"{node}@%h", "-c", "1", "--loglevel", "INFO", *extra]
        return self.celery(node, args, env, app)

    def beat(self, schedule: Path, env: Mapping[str, str]) -> ManagedProcess:
        return self.celery("beat", ["beat", "--schedule", str(schedule), "-l", "INFO"], env)

    def flower(self, env: Mapping[str, str], name: str = "flower") -> ManagedProcess:
        """Flower with allot's flowerconfig.py (see :func:`flower_env` for its variables)."""
        return self.celery(name, ["flower", f"--conf={FLOWER_CONFIG}"], env)

    def stop_all(self) -> None:
        """Stop every process, the last started first."""
        for process in reversed(self.started):
            process.stop()

    def report(self, lines: int = 40) -> str:
        """The tail of every log, for failure messages."""
        return "\n".join(
            f"--- {p.name} (pid {p.pid}, exit {p.returncode}) {p.log_path} ---\n{p.tail(lines)}"
            for p in self.started
        )

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        what: str,
        timeout: float = 60.0,
        interval: float | None = None,
    ) -> T:
        """Poll ``predicate`` until it returns a truthy value, and return it
        (:func:`allot.testing.polling.wait_for`; ``interval`` polls at a fixed period).

        Fails, naming ``what`` and showing every log, at the deadline or as soon as a process of
        the group has exited unexpectedly.
        """
        return polling.wait_for(
            predicate, what, timeout, interval=interval, failed=self.exited, details=self.report
        )

    def exited(self) -> str | None:
        """``"node1, beat exited"`` when processes of the group exited that were not stopped on
        purpose (and not with status 0), else None."""
        dead = [p for p in self.started if p.returncode not in (0, None) and not p.signalled]
        return f"{', '.join(p.name for p in dead)} exited" if dead else None

    def wait_for_http(self, url: str, timeout: float = 60.0) -> None:
        """Wait until ``url`` answers 200 (no credentials: Flower's /healthcheck)."""

        def answers() -> bool:
            status, _ = http("GET", url, timeout=1.0)
            return status == 200

        self.wait_for(answers, f"{url} to answer", timeout)


def http(
    method: str,
    url: str,
    *,
    auth: str | None = None,
    body: Any = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One HTTP request; ``(status, body)``, status 0 when nothing answers.

    ``auth`` is ``user:password`` for basic auth; ``body`` is sent as JSON.
    """
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"tests only talk to their own servers on loopback, not {url}")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (checked above)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def http_json(method: str, url: str, *, auth: str, body: Any = None) -> Any:
    """An authenticated JSON request that must succeed; the decoded answer."""
    status, payload = http(method, url, auth=auth, body=body)
    assert status == 200, f"{method} {url}: HTTP {status}: {payload[:500]!r}"
    return json.loads(payload)


def flower_tasks(base_url: str, auth: str, **params: str) -> dict[str, dict[str, Any]]:
    """Flower's ``GET /api/tasks`` (task id -> task), ``{}`` while Flower does not answer."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    status, payload = http("GET", f"{base_url}/api/tasks?{query}", auth=auth)
    if status != 200:
        return {}
    tasks: dict[str, dict[str, Any]] = json.loads(payload)
    return tasks
