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

COMPANIONS = ("models", "migrations", "tasks")
"""The top-level packages installed with allot, beside it (see the README, "Layout")."""


def _check_companions() -> None:
    """Refuse to run with a foreign package named like one of allot's companions earlier on
    ``sys.path`` (a project's own ``models``, say): allot would import it instead of its SQL
    layer and fail far from the cause. Looks the packages up without importing them.

    Raises:
        ImportError: a companion resolves to a package that is not installed beside allot.
    """
    import importlib.util
    from pathlib import Path

    home = Path(__file__).resolve().parent.parent
    for name in COMPANIONS:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue  # not installed here (a trimmed image): whoever imports it will say so
        found = Path(spec.origin).resolve().parent
        if found.parent != home:
            raise ImportError(
                f"allot's package {name!r} is shadowed by {found} (allot is in {home}): "
                f"rename or move that package, or run allot from another directory"
            )


_check_companions()
