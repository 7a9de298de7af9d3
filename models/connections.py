"""Connection pools per upstream, as an Envoy cluster keeps them.

* HTTP/1.1 (and TCP): one request per connection at a time. A request takes an idle
  connection, or opens one while there are fewer than ``max_connections``, or waits in the
  pending queue; past ``max_pending_requests`` it overflows (503, ``UO``).
* HTTP/2 and gRPC: requests are streams multiplexed on a connection, up to
  ``max_concurrent_streams`` each; a new connection opens only when all are full.

Opening a connection costs what the ``opener`` does (a TCP round trip and, with mTLS, a TLS
handshake); the pool only decides when. A handshake may fail (the opener returns False: a
certificate had expired at the TLS handshake): the requests waiting for that connection get
None and fail as a connect failure; an established connection is never checked again, so it
outlives its certificates (Envoy verifies the peer at the handshake only:
``source/common/tls/cert_validator/default_validator.cc``, called from the SSL handshaker).

Connections are kept alive after use unless ``max_requests_per_connection`` says otherwise,
and closed after ``idle_timeout`` without a request on them (Envoy's
``HttpProtocolOptions.idle_timeout``, Istio's ``connectionPool.http.idleTimeout``, default
1 h): the codec client arms an idle timer when its last active request ends and disarms it
when a new stream starts (``source/common/http/codec_client.cc``, ``CodecClient::
deleteRequest``, ``newStream``, ``onIdleTimeout``). One timer per pool (the reaper) covers
every idle connection of the pool: it is set for the earliest deadline, so a busy pool with a
1 h timeout costs one check per request and no event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from typing import Annotated, Any, Protocol

import simpy
from pydantic import BaseModel, ConfigDict, Field

from sim.engine import drive, schedule_at
from sim.units import Duration

__all__ = ["Acceptor", "ConnectionPoolSpec", "ConnectionPool", "Connection", "PoolLimits"]

UNLIMITED = 2**32 - 1


class ConnectionPoolSpec(BaseModel):
    """Istio's DestinationRule ``connectionPool`` fields (Istio's defaults).

    Attributes:
        max_connections: ``tcp.maxConnections``: connections per upstream host.
        max_pending_requests: ``http.http1MaxPendingRequests``: requests waiting for one.
        max_requests_per_connection: ``http.maxRequestsPerConnection`` (0 = unlimited,
            1 = no keep-alive).
        max_concurrent_streams: HTTP/2 streams per connection.
        idle_timeout: ``http.idleTimeout``: a connection with no request on it for this
            long is closed (seconds; ``0`` = never). Envoy's default: 1 h.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_connections: Annotated[int, Field(ge=1)] = UNLIMITED
    max_pending_requests: Annotated[int, Field(ge=0)] = UNLIMITED
    max_requests_per_connection: Annotated[int, Field(ge=0)] = 0
    max_concurrent_streams: Annotated[int, Field(ge=1)] = 2**31 - 1
    idle_timeout: Duration = 3600.0


class PoolLimits:
    """The limits of one pool, or of every pool of one Envoy cluster, which share them: its
    circuit breakers count connections and pending requests per cluster, not per endpoint.

    Attributes:
        max_connections: connections open or opening at once.
        max_pending: requests waiting for a connection at once.
        per_connection: requests one connection carries before it closes (0: unlimited).
        idle_timeout: a connection idle this long closes (seconds; 0: never).
        connections, pending: the counts now.
    """

    __slots__ = (
        "max_connections",
        "max_pending",
        "per_connection",
        "idle_timeout",
        "connections",
        "pending",
    )

    def __init__(
        self,
        max_connections: int,
        max_pending: int,
        per_connection: int,
        idle_timeout: float = 3600.0,
    ) -> None:
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.per_connection = per_connection
        self.idle_timeout = idle_timeout
        self.connections = 0
        self.pending = 0


class Connection:
    """One open connection: its active streams, the requests it has carried, whether its
    handshake is done (``ready``: None once it is, else the event that fires then), and since
    when it has had no request on it (``idle_since``, seconds)."""

    __slots__ = ("active", "served", "ready", "idle_since", "worker")

    def __init__(self, env: simpy.Environment, worker: int = -1) -> None:
        self.active = 0
        self.served = 0
        self.ready: simpy.Event | None = env.event()
        self.idle_since = 0.0
        # The peer's worker that accepted it and runs every request on it (-1: the peer's
        # workers are not pinned).
        self.worker = worker


class Acceptor(Protocol):
    """The side that accepts connections: which of its workers takes a new one."""

    def accept(self) -> int:
        """The worker that accepts a new connection."""
        ...

    def closed(self, worker: int) -> None:
        """A connection that ``worker`` accepted is closed."""
        ...


class ConnectionPool:
    """The connections from one proxy to one upstream (see the module docstring).

    Args:
        env: the SimPy environment.
        spec: the pool's limits.
        multiplexed: HTTP/2 semantics (streams) instead of HTTP/1.1 (one at a time).
        opener: a generator function that models opening a connection (handshakes); it gets
            the trace of the request that waits for it and the connection, and returns False
            when the handshake failed.
        on_change: called with +1/-1 as connections open and close (memory).
        limits: limits shared with other pools (an Envoy cluster's); None: the pool's own,
            from ``spec``.
        acceptor: the peer whose pinned workers accept the connections (None: no pinning).
    """

    def __init__(
        self,
        env: simpy.Environment,
        spec: ConnectionPoolSpec,
        multiplexed: bool,
        opener: Callable[[list | None, Connection], Generator[simpy.Event, Any, bool]],
        on_change: Callable[[int], None],
        limits: PoolLimits | None = None,
        acceptor: Acceptor | None = None,
    ) -> None:
        self.env = env
        self.spec = spec
        self.limits = limits or PoolLimits(
            spec.max_connections,
            spec.max_pending_requests,
            spec.max_requests_per_connection,
            spec.idle_timeout,
        )
        self.multiplexed = multiplexed
        self._opener = opener
        self._on_change = on_change
        self._acceptor = acceptor
        self._idle: list[Connection] = []
        self._open: list[Connection] = []
        self._pending: deque[simpy.Event] = deque()
        self.opened = 0
        self.overflows = 0
        self.idle_closed = 0  # connections closed by the idle timeout
        self.failed = 0  # handshakes that failed
        self._idle_timeout = self.limits.idle_timeout
        self._reaper_at = -1.0  # when the idle reaper fires next (< 0: not set)

    @property
    def size(self) -> int:
        """Connections open (or opening) now."""
        return len(self._open)

    def has_free(self) -> bool:
        """Whether a request could go now on a connection already open (an idle HTTP/1.1
        one, an HTTP/2 one with a free stream), without opening one."""
        if not self.multiplexed:
            return bool(self._idle)
        limit = self.spec.max_concurrent_streams
        return any(conn.active < limit and conn.ready is None for conn in self._open)

    def acquire(self, trace: list | None = None) -> Connection | simpy.Event | None:
        """A connection to send one request on, now; or the event that gives one later (a
        handshake or a free connection to wait for); or None when the pool overflows (``UO``).

        Args:
            trace: the trace of the request, which records the handshake if it pays for one.
        """
        limits = self.limits
        if self.multiplexed:
            limit = self.spec.max_concurrent_streams
            per_conn = limits.per_connection
            for conn in self._open:
                if conn.active < limit and not (per_conn and conn.served + conn.active >= per_conn):
                    conn.active += 1
                    # Still shaking hands: its event gives the connection when it is ready.
                    return conn if conn.ready is None else conn.ready
        elif self._idle:
            conn = self._idle.pop()
            conn.active = 1
            return conn
        # Envoy opens a connection to a host that has none even when the cluster's limit is
        # reached, so that its requests are never queued with no way to be served
        # (ConnPoolImplBase::tryCreateNewConnection).
        if limits.connections < limits.max_connections or not self._open:
            conn = self._reserve()
            ready = conn.ready
            assert ready is not None
            drive(self.env, self._opener(trace, conn), lambda ok: self._opened(conn, ok))
            return ready
        if limits.pending >= limits.max_pending:
            self.overflows += 1
            return None
        waiter = self.env.event()
        self._pending.append(waiter)
        limits.pending += 1
        return waiter

    def cancel(self, waiter: simpy.Event) -> bool:
        """A request waiting for a connection gives up (its timeout fired): it leaves the
        pending queue. False when ``waiter`` is not waiting there (its connection is being
        opened: it is handed over, then released, when it is ready)."""
        try:
            self._pending.remove(waiter)
        except ValueError:
            return False
        self.limits.pending -= 1
        return True

    def reset(self, conn: Connection) -> None:
        """The request on ``conn`` is reset (its timeout fired): an HTTP/2 stream ends, an
        HTTP/1.1 connection closes (Envoy cannot reuse one with a response half read)."""
        if self.multiplexed:
            self.release(conn)
            return
        conn.active -= 1
        self._close(conn)

    def _reserve(self) -> Connection:
        """A new connection, counted at once (so nobody else opens past the limit)."""
        acceptor = self._acceptor
        conn = Connection(self.env, acceptor.accept() if acceptor is not None else -1)
        conn.active = 1
        self._open.append(conn)
        self.limits.connections += 1
        self.opened += 1
        self._on_change(1)
        return conn

    def _opened(self, conn: Connection, ok: bool | None) -> None:
        """The opener is done: the connection is ready, or (``ok`` False) its handshake
        failed and whoever waits for it gets None."""
        if ok is False:
            self._failed(conn)
        else:
            self._ready(conn)

    def _ready(self, conn: Connection) -> None:
        """The handshake is done: whoever waits for the connection gets it."""
        ready, conn.ready = conn.ready, None
        assert ready is not None
        ready.succeed(conn)

    def _failed(self, conn: Connection, waiters: list[simpy.Event] | None = None) -> None:
        """The handshake of ``conn`` failed: it is gone; the requests on it get None, and so
        do the pool's pending ones (Envoy fails every pending stream of a pool on a connect
        failure, so that the callers' retry logic decides: ``ConnPoolImplBase::
        onConnectionEvent`` calls ``purgePendingStreams``, in
        ``source/common/conn_pool/conn_pool_base.cc``)."""
        self.failed += 1
        self._open.remove(conn)
        self.limits.connections -= 1
        self._on_change(-1)
        if self._acceptor is not None:
            self._acceptor.closed(conn.worker)
        ready, conn.ready = conn.ready, None
        assert ready is not None
        ready.succeed(None)
        for waiter in waiters or ():
            waiter.succeed(None)
        while self._pending:
            self.limits.pending -= 1
            self._pending.popleft().succeed(None)

    def release(self, conn: Connection) -> None:
        """The request on ``conn`` is done: hand the connection on, keep it, or close it."""
        conn.served += 1
        limit = self.limits.per_connection
        # The requests this connection will have carried, the streams still on it included:
        # at the limit it takes no more, and closes when its last stream ends.
        if limit and conn.served + conn.active - 1 >= limit:
            conn.active -= 1
            if conn.active > 0:
                return
            self._close(conn)
            return
        if self._pending:
            self.limits.pending -= 1
            self._pending.popleft().succeed(conn)  # it keeps the stream / the connection
            return
        conn.active -= 1
        if not self.multiplexed:
            self._idle.append(conn)
        elif conn.active:
            return
        # No request on it now: the idle timer runs (one reaper per pool, see the module).
        if self._idle_timeout:
            now = self.env.now
            conn.idle_since = now
            if self._reaper_at < 0.0:
                self._set_reaper(now + self._idle_timeout)

    def _set_reaper(self, when: float) -> None:
        self._reaper_at = when
        event = simpy.Event(self.env)
        event._ok = True
        event._value = None
        event.callbacks.append(self._reap)  # type: ignore[union-attr]
        schedule_at(self.env, when, event)

    def _idle_now(self) -> list[Connection]:
        """The connections with no request on them (and ready)."""
        if not self.multiplexed:
            return list(self._idle)
        return [conn for conn in self._open if conn.active == 0 and conn.ready is None]

    def _reap(self, _event: Any) -> None:
        """Close every connection idle for ``idle_timeout``; wait for the next deadline."""
        now = self.env.now
        timeout = self._idle_timeout
        self._reaper_at = -1.0
        nxt = -1.0
        for conn in self._idle_now():
            deadline = conn.idle_since + timeout
            if deadline <= now:
                if not self.multiplexed:
                    self._idle.remove(conn)
                self.idle_closed += 1
                self._close(conn)
            elif nxt < 0.0 or deadline < nxt:
                nxt = deadline
        if nxt >= 0.0:
            self._set_reaper(nxt)

    def _close(self, conn: Connection) -> None:
        """Close ``conn`` (no stream left on it); waiters take the freed slot on a new
        connection (with its handshake): one for HTTP/1.1, as many as its streams and its
        request limit allow for HTTP/2."""
        self._open.remove(conn)
        self.limits.connections -= 1
        self._on_change(-1)
        if self._acceptor is not None:
            self._acceptor.closed(conn.worker)
        if not self._pending:
            return
        conn = self._reserve()
        limit = self.limits.per_connection
        share = (
            min(self.spec.max_concurrent_streams, limit or self.spec.max_concurrent_streams)
            if self.multiplexed
            else 1
        )
        waiters = [self._pending.popleft()]
        while self._pending and len(waiters) < share:
            waiters.append(self._pending.popleft())
        self.limits.pending -= len(waiters)
        conn.active = len(waiters)
        drive(self.env, self._opener(None, conn), lambda ok: self._hand_over(conn, waiters, ok))

    def _hand_over(self, conn: Connection, waiters: list[simpy.Event], ok: bool | None) -> None:
        if ok is False:
            self._failed(conn, waiters)
            return
        self._ready(conn)
        for waiter in waiters:
            waiter.succeed(conn)
