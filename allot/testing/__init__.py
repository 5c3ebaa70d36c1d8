"""Support for tests, benchmarks and ``make run``: never needed by a production node.

- :mod:`allot.testing.servers`: a ZooKeeper from the Debian jars and a ``redis-server``, each in
  a child process on loopback (``python -m allot.testing zookeeper|redis|wait`` runs one in the
  foreground for ``make run``'s Procfile);
- :mod:`allot.testing.ensemble`: a three-server ZooKeeper ensemble whose leader a fault test can
  kill;
- :mod:`allot.testing.processes` and :mod:`allot.testing.cluster`: real ``celery`` processes
  started, waited for and stopped, and a local cluster of them with observers, shared by the
  end-to-end tests and the benchmarks.
- :mod:`allot.testing.netns`: real network partitions (network namespaces on a bridge, cut
  by blackhole routes; root and iproute2).

The production image leaves this package out (``.dockerignore``): it needs Java and the
ZooKeeper jars, which the image does not have.
"""
