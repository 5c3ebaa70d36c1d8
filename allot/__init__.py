"""allot: shard a catalog of tables across worker nodes through a fixed set of buckets.

Tables get a bucket once (:mod:`allot.registry`); buckets move between nodes with the fewest
moves that keep the nodes balanced. Settings live in :mod:`allot.settings`, errors in
:mod:`allot.errors`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("allot")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
