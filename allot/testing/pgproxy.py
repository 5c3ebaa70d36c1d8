"""A loopback proxy in front of a PostgreSQL server that can lose the reply to a ``COMMIT``.

The fault it makes is the one a pooler restart, a connection reset or a killed backend makes at
the worst moment: the server has committed, the client never hears so. Armed with
:meth:`PgProxy.lose_next_commit_reply`, the proxy forwards the next ``COMMIT`` any of its
clients sends, waits for the server's answer to it (so the server has processed it), drops that
answer and cuts both sides of the connection. The client sees a lost connection in the middle of
its commit and cannot tell whether it committed.

It understands just enough of the wire protocol (version 3) for that: the untyped start-up
messages (an SSL or GSSAPI encryption request is answered ``N`` by the proxy itself, so the rest
of the conversation is plain text it can read), simple queries (``Q``) and the extended
protocol's ``P``arse, ``B``ind and ``E``xecute, by statement and portal name. psycopg 3 sends
``COMMIT`` as a simple query; a ``COMMIT`` prepared and executed through the extended protocol is
recognised as well. Everything else is forwarded unread.

Bounded: it listens on 127.0.0.1 only, forwards only to a loopback server, holds at most
``max_connections`` connections at once (more are closed at once) and refuses a message longer
than :data:`MAX_MESSAGE` (the connection is cut).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

MAX_MESSAGE = 64 * 1024 * 1024
"""The longest protocol message the proxy reads (bytes, length field included)."""

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
COMMIT_WORDS = frozenset({"COMMIT", "END", "COMMIT WORK", "COMMIT TRANSACTION", "END WORK"})
_LINGER_RESET = struct.pack("ii", 1, 0)


class ProtocolError(Exception):
    """A peer sent something the proxy cannot frame (a message over :data:`MAX_MESSAGE`)."""


def is_commit(sql: str) -> bool:
    """Whether ``sql`` is one ``COMMIT`` statement (``END``, ``COMMIT WORK``..., any case, an
    optional trailing semicolon). ``COMMIT PREPARED`` and ``COMMIT AND CHAIN`` are not."""
    words = " ".join(sql.strip().rstrip(";").split()).upper()
    return words in COMMIT_WORDS


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes from ``sock``, or None when the peer closed first."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 65536))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def _read_message(sock: socket.socket) -> tuple[bytes, bytes, bytes] | None:
    """One typed message: ``(type, header, body)``, or None at the end of the stream.

    Raises:
        ProtocolError: the length field is out of bounds.
    """
    header = _recv_exactly(sock, 5)
    if header is None:
        return None
    (length,) = struct.unpack("!i", header[1:5])
    if not 4 <= length <= MAX_MESSAGE:
        raise ProtocolError(f"message {header[:1]!r} of length {length}")
    body = _recv_exactly(sock, length - 4)
    if body is None:
        return None
    return header[:1], header, body


def _cstrings(body: bytes, count: int) -> list[str]:
    """The first ``count`` NUL-terminated strings of a message body."""
    return [part.decode("utf-8", "replace") for part in body.split(b"\0", count)[:count]]


def _reset(sock: socket.socket) -> None:
    """Drop ``sock`` as a crashed peer would: wake its readers, then close with a reset."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@dataclass(eq=False)
class _Link:
    """One client connection and the server connection it is forwarded to."""

    client: socket.socket
    server: socket.socket
    statements: dict[str, bool] = field(default_factory=dict)
    """Prepared statement name -> whether it is a COMMIT."""
    portals: dict[str, bool] = field(default_factory=dict)
    """Portal name -> whether it executes a COMMIT."""
    losing: bool = False
    """A COMMIT was forwarded whose answer is to be lost: the server's next messages are held."""
    closed: bool = False


class PgProxy:
    """Forwards ``127.0.0.1:<port>`` to the PostgreSQL server at ``target`` (loopback), and can
    lose the reply to a ``COMMIT`` (see the module).

    Raises:
        ValueError: ``target`` is not a loopback address.
    """

    def __init__(self, target: tuple[str, int], *, max_connections: int = 32) -> None:
        host = "127.0.0.1" if target[0] == "localhost" else target[0]
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"PgProxy forwards to loopback only, not {target[0]}")
        self.target = (host, target[1])
        self.max_connections = max_connections
        self.lost_replies: list[str] = []
        """The command tags of the COMMIT replies lost so far (``COMMIT``, or ``ROLLBACK`` for
        a transaction the server had already failed), in order."""
        self.commits_seen: list[str] = []
        """How each COMMIT the clients sent travelled: ``Q`` (simple query) or ``E`` (extended
        protocol), in order."""
        self.reply_lost = threading.Event()
        """Set once a COMMIT's reply has been dropped and its connection cut."""
        self._armed = 0
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="pgproxy-accept", daemon=True).start()

    def lose_next_commit_reply(self) -> None:
        """Lose the reply to the next ``COMMIT`` any client sends (once per call)."""
        with self._lock:
            self._armed += 1

    def close(self) -> None:
        """Stop listening and cut every connection."""
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            links, self._links = self._links, set()
        for link in links:
            self._cut(link)

    def __enter__(self) -> PgProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                full = len(self._links) >= self.max_connections
            if full:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            link = _Link(client, server)
            with self._lock:
                self._links.add(link)
            for pipe in (self._client_to_server, self._server_to_client):
                threading.Thread(target=self._run, args=(pipe, link), daemon=True).start()

    def _run(self, pipe: Callable[[_Link], None], link: _Link) -> None:
        try:
            pipe(link)
        except (OSError, ProtocolError):
            pass
        finally:
            self._cut(link)

    def _cut(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)
            if link.closed:
                return
            link.closed = True
        _reset(link.client)
        _reset(link.server)

    def _take_arm(self) -> bool:
        with self._lock:
            if self._armed == 0:
                return False
            self._armed -= 1
            return True

    def _client_to_server(self, link: _Link) -> None:
        if not self._start_up(link):
            return
        while (message := _read_message(link.client)) is not None:
            kind, header, body = message
            commit = False
            if kind == b"Q":
                commit = is_commit(_cstrings(body, 1)[0])
            elif kind == b"P":
                name, query = _cstrings(body, 2)
                link.statements[name] = is_commit(query)
            elif kind == b"B":
                portal, statement = _cstrings(body, 2)
                link.portals[portal] = link.statements.get(statement, False)
            elif kind == b"E":
                commit = link.portals.get(_cstrings(body, 1)[0], False)
            elif kind == b"C" and body[:1] == b"S":  # Close of a prepared statement
                link.statements.pop(_cstrings(body[1:], 1)[0], None)
            if commit:
                self.commits_seen.append(kind.decode())
                if self._take_arm():
                    link.losing = True  # before the server can answer
            link.server.sendall(header + body)

    def _start_up(self, link: _Link) -> bool:
        """Forward the start-up message, answering encryption requests ``N`` on the server's
        behalf; False when the connection ended (or was a cancel request, forwarded whole)."""
        while True:
            head = _recv_exactly(link.client, 4)
            if head is None:
                return False
            (length,) = struct.unpack("!i", head)
            if not 8 <= length <= MAX_MESSAGE:
                raise ProtocolError(f"start-up message of length {length}")
            rest = _recv_exactly(link.client, length - 4)
            if rest is None:
                return False
            code: int = struct.unpack("!i", rest[:4])[0]
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                link.client.sendall(b"N")
                continue
            link.server.sendall(head + rest)
            return code != CANCEL_REQUEST

    def _server_to_client(self, link: _Link) -> None:
        while (message := _read_message(link.server)) is not None:
            kind, header, body = message
            if not link.losing:
                link.client.sendall(header + body)
                continue
            # held: the COMMIT's answer, and anything the server says before it, is dropped
            if kind in (b"C", b"E"):  # CommandComplete or ErrorResponse: the server is done
                tag = _cstrings(body, 1)[0] if kind == b"C" else "ERROR"
                self.lost_replies.append(tag)
                self._cut(link)
                self.reply_lost.set()
                return
