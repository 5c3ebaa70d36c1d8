"""Prometheus metrics: the cluster as gauges read at scrape time, and the counters and
histograms of what a node's processes did.

Two kinds, served together by each node's Celery main process:

- **Cluster-wide gauges** (:class:`ClusterCollector`, :mod:`allot.metrics.cluster`): buckets,
  state and weight per node, unowned and lease-less buckets, spread, epoch, membership, SQL's
  mirrored epoch, plans and table task attempts by status, the bucket queues' backlog. Read
  from ZooKeeper, SQL and Redis when scraped, by one node at a time (the holder of the trigger
  duty), so the fleet's scrapes read the cluster once and PromQL needs no deduplication
  (``sum(allot_node_buckets)`` is the bucket count); ``allot_cluster_reporter`` (1/0, on every
  node) says which node serves them. A source that cannot be read gives
  ``allot_up{source=...} 0`` and leaves its families out; a scrape never fails.
- **Process-local instruments** (:mod:`allot.metrics.instruments`): cycles by trigger and
  outcome, cycle duration, moves, handoff duration, table task attempts by status. Observed
  where the events happen, mostly in pool children; the cluster's total is
  ``sum without(instance)``.

Serving them from a prefork Celery worker (prometheus_client's multiprocess mode):

1. Give every node its own directory (``var/metrics/node1``; two nodes sharing one would sum
   each other's counters). Before the worker starts, from its start-up script and not from
   Python, empty it and put it in the worker's environment::

       rm -rf var/metrics/node1 && mkdir -p var/metrics/node1   # or prepare_multiprocess_dir
       PROMETHEUS_MULTIPROC_DIR=var/metrics/node1 celery -A tasks worker -n node1@%h ...

   prometheus_client chooses between in-memory and file-backed values when it is first
   imported, and pool children inherit the choice: set later, the variable does nothing (and
   :func:`metrics_registry` refuses such a process with a ``ConfigurationError``).
2. In the worker's main process, once it has its ZooKeeper client, a session factory and a
   Redis client with socket timeouts: ``server = serve_metrics(port,
   metrics_registry(ClusterCollector(client, sessions, settings, redis,
   reporting=duty.holding.is_set)))``, and ``server.stop()`` at shutdown. Only the main
   process serves; pool children only observe (they close their inherited copy of the
   listening socket at fork). Beat and Flower serve nothing.
3. Observe where things happen: :func:`record_cycle` with each cycle's report,
   :func:`record_failed_cycle` when a cycle raises, :func:`record_table_task` when a table task
   attempt ends, ``HANDOFF_DURATION.observe(seconds)`` when a lost bucket's lease is released.
4. No instrument here is a gauge, so ``multiprocess.mark_process_dead`` is not needed; a gauge
   added later needs a ``multiprocess_mode`` and that call when a pool child exits.

Without ``PROMETHEUS_MULTIPROC_DIR`` (one process: tests, a CLI) the registry holds the
process's own instruments. Alerting rules on these metrics: ``ops/prometheus/allot-rules.yml``.
"""

from allot.metrics.cluster import FAMILIES, ClusterCollector
from allot.metrics.exposition import (
    MULTIPROC_ENV,
    MetricsServer,
    metrics_registry,
    multiprocess_dir,
    prepare_multiprocess_dir,
    serve_metrics,
)
from allot.metrics.instruments import (
    CYCLE_DURATION,
    CYCLE_FAILED,
    CYCLES,
    HANDOFF_DURATION,
    INSTRUMENTS,
    MOVES,
    TABLE_TASKS,
    record_cycle,
    record_failed_cycle,
    record_table_task,
)

__all__ = [
    "CYCLES",
    "CYCLE_DURATION",
    "CYCLE_FAILED",
    "FAMILIES",
    "HANDOFF_DURATION",
    "INSTRUMENTS",
    "MOVES",
    "MULTIPROC_ENV",
    "TABLE_TASKS",
    "ClusterCollector",
    "MetricsServer",
    "metrics_registry",
    "multiprocess_dir",
    "prepare_multiprocess_dir",
    "record_cycle",
    "record_failed_cycle",
    "record_table_task",
    "serve_metrics",
]
