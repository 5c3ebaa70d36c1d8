"""Real network partitions for tests: Linux network namespaces on a bridge, cut by blackhole
routes (iproute2 only; root needed).

A :class:`Lab` makes a bridge on the host with ``servers`` addresses of its own (start each
test server on one of them: a route to one server can then be cut without touching the
others) and, on demand, a :class:`Namespace` per process to isolate: a network namespace
joined to the bridge by a veth pair, with its own address. A process runs inside with
:meth:`Namespace.command` (``ip netns exec``); :meth:`Namespace.blackhole` drops everything it
sends to one address (a new connection fails, an open one goes silent: nothing answers, as on
a cut link; ``both_ways`` also drops what the host sends to the namespace) and
:meth:`Namespace.heal` restores the route. :meth:`Lab.close` (also on leaving
the ``with`` block, after a failure too) deletes the namespaces and the bridge; stop the
processes inside first. Names start with ``al`` and a random tag, so two labs never collide.

:func:`unavailable` says why a lab cannot be built here (not root, no ``ip``), for a skip.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from types import TracebackType

from allot.errors import ServiceError


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is missing: apt-get install -y iproute2"
    return None


def _ip(*args: str) -> None:
    """Run ``ip ARGS``.

    Raises:
        ServiceError: the command failed (its error output is in the message).
    """
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ServiceError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


@dataclass
class Namespace:
    """A network namespace on the lab's bridge, with address :attr:`address`."""

    name: str
    address: str
    host_side: str
    """The veth end on the host, a port of the bridge."""
    cut: set[str] = field(default_factory=set)
    """The addresses this namespace's packets to are dropped."""
    unreachable: bool = False
    """Whether the host drops every packet to this namespace (:meth:`blackhole` both ways)."""

    def command(self, args: list[str]) -> list[str]:
        """``args`` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def blackhole(self, address: str, *, both_ways: bool = False) -> None:
        """Drop everything this namespace sends to ``address`` (until :meth:`heal`). With
        ``both_ways`` the host also drops everything it sends to this namespace (from any of
        its addresses): not even a server's FIN or reset gets in, as on a link that went dead.
        """
        _ip("netns", "exec", self.name, "ip", "route", "replace", "blackhole", f"{address}/32")
        self.cut.add(address)
        if both_ways:
            _ip("route", "replace", "blackhole", f"{self.address}/32")
            self.unreachable = True

    def heal(self, address: str) -> None:
        """Route to ``address`` again (and from the host to this namespace)."""
        _ip("netns", "exec", self.name, "ip", "route", "del", "blackhole", f"{address}/32")
        self.cut.discard(address)
        if self.unreachable:
            _ip("route", "del", "blackhole", f"{self.address}/32")
            self.unreachable = False


class Lab:
    """A bridge with ``servers`` host addresses and the namespaces made on it (module
    docstring). Use it as a context manager, or call :meth:`close`.

    Raises:
        ServiceError: the bridge could not be made (what ``ip`` said); nothing is left behind.
    """

    def __init__(self, servers: int = 2) -> None:
        reason = unavailable()
        if reason is not None:
            raise ServiceError(reason)
        self.tag = secrets.token_hex(3)
        self.bridge = f"al{self.tag}br"
        self.network = _free_network()
        hosts = self.network.hosts()
        self.addresses = [str(next(hosts)) for _ in range(servers)]
        """Host addresses on the bridge: listen on one of these to be reachable from inside."""
        self._hosts = hosts
        self.namespaces: list[Namespace] = []
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            for address in self.addresses:
                _ip("addr", "add", f"{address}/{self.network.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def namespace(self) -> Namespace:
        """A new namespace joined to the bridge, with an address of its own.

        Raises:
            ServiceError: ``ip`` refused (the lab's other namespaces are kept).
        """
        index = len(self.namespaces)
        namespace = Namespace(
            f"al{self.tag}n{index}", str(next(self._hosts)), f"al{self.tag}h{index}"
        )
        inside = f"al{self.tag}v{index}"
        self.namespaces.append(namespace)
        _ip("netns", "add", namespace.name)
        _ip("link", "add", namespace.host_side, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace.name)
        _ip("link", "set", namespace.host_side, "master", self.bridge)
        _ip("link", "set", namespace.host_side, "up")
        run = ("netns", "exec", namespace.name, "ip")
        _ip(*run, "addr", "add", f"{namespace.address}/{self.network.prefixlen}", "dev", inside)
        _ip(*run, "link", "set", inside, "up")
        _ip(*run, "link", "set", "lo", "up")
        return namespace

    def close(self) -> None:
        """Delete every namespace (their veth pairs go with them) and the bridge; what is
        already gone is skipped."""
        for namespace in self.namespaces:
            if namespace.unreachable:  # a host route outlives the bridge: delete it
                with contextlib.suppress(ServiceError):
                    _ip("route", "del", "blackhole", f"{namespace.address}/32")
            with contextlib.suppress(ServiceError):
                _ip("netns", "del", namespace.name)
            with contextlib.suppress(ServiceError):
                _ip("link", "del", namespace.host_side)
        self.namespaces = []
        with contextlib.suppress(ServiceError):
            _ip("link", "del", self.bridge)

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _free_network() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no address or route of the host overlaps.

    Raises:
        ServiceError: none found in 50 tries.
    """
    done = subprocess.run(
        ["ip", "-4", "-o", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        check=False,
    )
    taken = []
    for line in done.stdout.splitlines():
        words = line.split()
        for word in words[:3]:
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.ip_network(word, strict=False))
    for _ in range(50):
        candidate = ipaddress.IPv4Network(
            f"10.{random.randint(200, 207)}.{random.randint(0, 255)}.0/24"
        )
        if not any(candidate.overlaps(network) for network in taken if network.prefixlen > 0):
            return candidate
    raise ServiceError("found no free /24 in 10.200.0.0/13 for a test bridge")
