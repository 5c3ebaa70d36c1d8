"""A worker's metrics server: what :mod:`tasks.node` starts in a node's main process when
``ALLOT_METRICS_PORT`` is set."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from kazoo.client import KazooClient

from allot.database import open_engine
from allot.errors import AllotError
from allot.inspect.backlog import broker_redis
from allot.metrics.bucket_map import bucket_map, map_app
from allot.metrics.cluster import ClusterCollector
from allot.metrics.exposition import (
    MetricsServer,
    metrics_registry,
    multiprocess_dir,
    serve_metrics,
)
from allot.settings import Settings
from models.engine import session_factory

log = logging.getLogger(__name__)


def start_node_metrics(
    client: KazooClient, settings: Settings, reporting: Callable[[], bool] | None = None
) -> MetricsServer | None:
    """Serve this node's counters on ``ALLOT_METRICS_PORT`` (None when it is 0), and the
    cluster's gauges while ``reporting()`` (the trigger duty's holder; None: always), and the
    bucket map (``/map``, behind ``FLOWER_BASIC_AUTH``). A server that cannot start (the port
    is taken, the multiprocess directory is wrong) is logged and the node goes on without
    metrics: metrics never stop the work."""
    if settings.metrics_port == 0:
        return None
    try:
        if multiprocess_dir() is None:
            log.warning(
                "metrics: PROMETHEUS_MULTIPROC_DIR is not set: the counters of this worker's "
                "pool processes (cycles, table tasks) are not exported, only the cluster's gauges"
            )
        sessions = session_factory(open_engine(settings.database_url))
        collector = ClusterCollector(
            client, sessions, settings, broker_redis(settings), reporting=reporting
        )
        pages = map_app(
            lambda: bucket_map(client, sessions, settings), os.environ.get("FLOWER_BASIC_AUTH")
        )
        server = serve_metrics(settings.metrics_port, metrics_registry(collector), pages=pages)
    except AllotError as exc:
        log.error("metrics not served: %s", exc)
        return None
    log.info("metrics served on port %d (/metrics)", settings.metrics_port)
    return server
