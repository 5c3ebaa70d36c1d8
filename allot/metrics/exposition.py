"""What a scrape is served from: the registry (:func:`metrics_registry`), the HTTP server
(:func:`serve_metrics`) and the multiprocess directory (:func:`prepare_multiprocess_dir`).

prometheus_client decides once, when it is first imported, whether the process keeps its
values in memory or, with ``PROMETHEUS_MULTIPROC_DIR`` set, in files of that directory shared
by every process forked from it (multiprocess mode). :func:`metrics_registry` follows the same
variable and refuses a process where the two disagree, because such a process would serve
counters that never move.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app, values
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from allot.errors import ConfigurationError, ServiceError
from allot.metrics.bucket_map import WsgiApp
from allot.metrics.instruments import INSTRUMENTS

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - a scrape target must be reachable from Prometheus


def multiprocess_dir() -> Path | None:
    """The multiprocess directory named by ``PROMETHEUS_MULTIPROC_DIR`` (or its deprecated
    lower-case spelling, which prometheus_client still honours); None when neither is set.

    Raises:
        ConfigurationError: the variable is set but empty.
    """
    value = os.environ.get(MULTIPROC_ENV, os.environ.get(MULTIPROC_ENV.lower()))
    if value is None:
        return None
    if not value.strip():
        raise ConfigurationError(f"{MULTIPROC_ENV} is set but empty: name a directory or unset it")
    return Path(value)


def prepare_multiprocess_dir(path: Path) -> None:
    """Create ``path`` and delete the metric files (``*.db``) a previous run left in it.

    Call it before the process that sets ``PROMETHEUS_MULTIPROC_DIR`` to ``path`` starts (from
    the start-up script, or the launcher that starts it), never while a process writes there:
    files left from another run would be summed into this run's counters. One directory per
    node: two nodes sharing one would count each other's cycles and tasks.
    """
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def metrics_registry(cluster: Collector | None = None) -> CollectorRegistry:
    """A registry with ``cluster`` (a :class:`~allot.metrics.ClusterCollector`, if given) and
    the process-local instruments (:mod:`allot.metrics.instruments`).

    With ``PROMETHEUS_MULTIPROC_DIR`` set, the instruments are read from that directory by a
    ``MultiProcessCollector`` (the values of every process of the node, pool children
    included); otherwise they are this process's own.

    Raises:
        ConfigurationError: ``PROMETHEUS_MULTIPROC_DIR`` names no directory, or was set after
            prometheus_client was imported in this process (or is unset while it was set
            then): the variable must be in the environment the process starts with.
    """
    path = multiprocess_dir()
    registry = CollectorRegistry()
    if cluster is not None:
        registry.register(cluster)
    multiprocess = bool(getattr(values.ValueClass, "_multiprocess", False))
    if multiprocess != (path is not None):
        state = f"set to {path}" if path is not None else "unset"
        raise ConfigurationError(
            f"{MULTIPROC_ENV} is {state} now but was not when prometheus_client was imported: "
            "set it in the environment the process starts with"
        )
    if path is None:
        for instrument in INSTRUMENTS:
            registry.register(instrument)
        return registry
    if not path.is_dir():
        raise ConfigurationError(f"{MULTIPROC_ENV}={path} is not a directory: create it first")
    MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    return registry


@dataclass
class MetricsServer:
    """prometheus_client's HTTP server answering scrapes on ``port`` in a daemon thread."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self.server.server_port)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop answering, close the socket and wait up to ``timeout`` s for the thread."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def serve_metrics(
    port: int,
    registry: CollectorRegistry,
    address: str = ALL_INTERFACES,
    pages: WsgiApp | None = None,
) -> MetricsServer | None:
    """Serve ``registry`` on ``http://{address}:{port}/metrics`` (any other path answers the
    same, as prometheus_client does, except ``/map...``, which goes to ``pages``: the bucket
    map) from a daemon thread of this process; port 0 means metrics are disabled (None).

    A process forked afterwards (a Celery pool child) closes its copy of the listening socket
    at once: only the serving process holds the port, and a child outliving it never keeps the
    port from the next start.

    Raises:
        ValueError: ``port`` is negative or above 65535.
        ServiceError: the address cannot be bound (the port is taken, or no such address).
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics port must be 0 (disabled) to 65535, got {port}")
    if port == 0:
        return None
    metrics = make_wsgi_app(registry)

    def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if pages is not None and environ.get("PATH_INFO", "").startswith("/map"):
            return pages(environ, start_response)
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    try:
        server = make_server(address, port, route, ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise ServiceError(
            f"cannot serve metrics on {address}:{port}: {exc.strerror or exc}"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="allot-metrics", daemon=True)
    thread.start()
    held = weakref.ref(server)  # the hook must not keep a stopped server alive

    def close_in_child() -> None:
        child_copy = held()
        if child_copy is not None:
            child_copy.socket.close()

    os.register_at_fork(after_in_child=close_in_child)
    return MetricsServer(server, thread)
