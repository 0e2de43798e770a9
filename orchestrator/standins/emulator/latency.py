"""Distance for the Runpod emulator: a TCP relay that delays each direction by half a round trip.

Part of ``orchestrator/standins/emulator``. Real pods sit 50-150 ms away from the machine that runs the
orchestrator; emulated ones share its loopback. With the ``rtt_ms`` knob above 0 the state model
publishes each pod's ``22/tcp`` port through a :class:`DelayRelay` rather than sshd's own port, so
every SSH exchange pays the round trips it would pay over the Internet (the API's delay is applied by
the HTTP handler, :mod:`.server`).

How it delays: every chunk read from one side is queued with a due time of now + rtt/2 and written to
the other side at that time, in order. Chunks are pipelined (a chunk does not wait for the previous
one to be acknowledged), so a stream's throughput is not throttled, only shifted; in-flight bytes per
direction are capped (``WINDOW_BYTES``, like a TCP window), beyond which the relay stops reading that
side. A new connection reaches the target only 1.5 round trips after the client connected: the
client's SYN, SYN-ACK and ACK, after which a real server's ``accept`` returns; so a server that speaks
first (sshd's banner) is heard 2 round trips after ``connect``, and a client's first bytes arrive 1.5
round trips after it connected, as over a real network. End of stream and resets travel in order
behind the data.

One asyncio event loop in one thread serves every relayed port of one emulator, so relaying costs a few
callbacks per chunk, not a thread per connection. Known differences from a real network: the client's
``connect()`` returns at once (a real one takes a round trip), and a target that refuses the
connection shows up as an accepted connection reset 1.5 round trips later (real: ``ECONNREFUSED`` after
one); the state model avoids the second case by not relaying ports where nothing listens. No loss,
jitter or bandwidth limit is modelled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

#: Bytes one direction of a connection may have in flight before the relay stops reading its sender.
WINDOW_BYTES = 4 * 1024 * 1024
#: Round trips between a client's connect and the target's accept (SYN, SYN-ACK, ACK + half a trip).
CONNECT_RTTS = 1.5

_EOF = object()
_RESET = object()


class RelayPort:
    """One published port: a bound socket that listens (and relays) once :meth:`DelayRelay.forward` runs."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.server: asyncio.AbstractServer | None = None
        self.links: set[_Link] = set()
        self.closed = False


class DelayRelay:
    """Delaying TCP relays on 127.0.0.1, all served by one event loop thread. Thread-safe."""

    def __init__(self, rtt_s: Callable[[], float], host: str = "127.0.0.1") -> None:
        self._rtt_s = rtt_s
        self.host = host
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ports: set[RelayPort] = set()

    # --- lifecycle (any thread) ----------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="emulator-relay", daemon=True)
                self._thread.start()
                ready.wait(10)
                self._loop = loop
            return self._loop

    def close(self) -> None:
        """Close every port and connection and stop the loop thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            with self._lock:
                ports, self._ports = list(self._ports), set()
            for rp in ports:
                with contextlib.suppress(OSError):
                    rp.sock.close()
            return

        async def _shutdown() -> None:
            with self._lock:
                ports = list(self._ports)
            for rp in ports:
                _close_port(rp)
            for task in asyncio.all_tasks(loop):
                if task is not asyncio.current_task():
                    task.cancel()
            # Let the aborted transports run their connection_lost and close their sockets.
            await asyncio.sleep(0.05)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_shutdown(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        with contextlib.suppress(Exception):
            loop.close()

    # --- ports (any thread) --------------------------------------------------------------------------

    def reserve(self) -> RelayPort:
        """A port that is ours but refuses connections until :meth:`forward` (nothing listens yet)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Bound, not listening: connections are refused, and no one else can take the port meanwhile.
        sock.bind((self.host, 0))
        rp = RelayPort(sock)
        with self._lock:
            self._ports.add(rp)
        return rp

    def forward(self, rp: RelayPort, target_port: int) -> None:
        """Start listening on ``rp`` and relay each connection to ``host:target_port``, delayed."""
        loop = self._ensure_loop()

        async def _listen() -> None:
            if rp.closed:
                return
            rp.server = await loop.create_server(
                lambda: _Link(self, rp, target_port).client_side, sock=rp.sock
            )

        asyncio.run_coroutine_threadsafe(_listen(), loop).result(timeout=10)

    def release(self, rp: RelayPort) -> None:
        """Stop listening on ``rp`` and reset its connections (the pod is gone). Idempotent."""
        with self._lock:
            self._ports.discard(rp)
        loop = self._loop
        if loop is None or rp.server is None:
            rp.closed = True
            with contextlib.suppress(OSError):
                rp.sock.close()
            return
        with contextlib.suppress(RuntimeError):  # the loop was stopped meanwhile
            loop.call_soon_threadsafe(_close_port, rp)

    # --- inside the loop -----------------------------------------------------------------------------

    def half_rtt(self) -> float:
        return max(0.0, float(self._rtt_s())) / 2.0


def _close_port(rp: RelayPort) -> None:
    """(In the loop.) Stop listening and reset every connection of ``rp``."""
    rp.closed = True
    if rp.server is not None:
        rp.server.close()
    else:
        with contextlib.suppress(OSError):
            rp.sock.close()
    for link in list(rp.links):
        link.abort()


class _Direction:
    """Bytes travelling one way, each chunk delivered rtt/2 after it was read, in order."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.queue: collections.deque[tuple[float, Any]] = collections.deque()
        self.in_flight = 0
        self.last_due = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None
        self.dst_side: _Side | None = None
        self.src_paused = False
        self.dst_full = False
        self.eof_sent = False

    def push(self, item: Any) -> None:
        loop = self.link.loop
        # Never earlier than the chunk before it: order holds even if the knob changes midway.
        due = max(loop.time() + self.link.relay.half_rtt(), self.last_due)
        self.last_due = due
        self.queue.append((due, item))
        if isinstance(item, bytes):
            self.in_flight += len(item)
        self.throttle()
        self.schedule()

    def schedule(self) -> None:
        if self.timer is not None or not self.queue or self.dst is None:
            return
        self.timer = self.link.loop.call_at(self.queue[0][0], self.flush)

    def flush(self) -> None:
        self.timer = None
        dst = self.dst
        if dst is None:
            return
        now = self.link.loop.time()
        while self.queue and self.queue[0][0] <= now and self.dst is not None:
            _, item = self.queue.popleft()
            if item is _RESET:
                self.link.abort()
                return
            if item is _EOF:
                if self.eof_sent:
                    continue
                self.eof_sent = True
                # Both halves done: close; else shut our sending half and keep reading the other.
                if (self.dst_side is not None and self.dst_side.eof_read) or not dst.can_write_eof():
                    dst.close()
                else:
                    dst.write_eof()
            else:
                self.in_flight -= len(item)
                dst.write(item)
        self.throttle()
        self.schedule()

    def throttle(self) -> None:
        """Stop reading the sender while too much is in flight or the receiver's buffer is full."""
        src = self.src
        if src is None or src.is_closing():
            return
        should_pause = self.in_flight > WINDOW_BYTES or self.dst_full
        if should_pause and not self.src_paused:
            src.pause_reading()
            self.src_paused = True
        elif not should_pause and self.src_paused:
            src.resume_reading()
            self.src_paused = False

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()


class _Side(asyncio.Protocol):
    """One socket of a link: what it reads goes out delayed on ``out``; ``into`` writes to it."""

    def __init__(self, link: _Link, out: _Direction, into: _Direction) -> None:
        self.link = link
        self.out = out
        self.into = into
        self.eof_read = False
        into.dst_side = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.out.src = transport
        self.into.dst = transport
        self.into.schedule()

    def data_received(self, data: bytes) -> None:
        self.out.push(data)

    def eof_received(self) -> bool:
        self.eof_read = True
        self.out.push(_EOF)
        # Keep the socket open for what still travels towards it, unless that is over too.
        return not self.into.eof_sent

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.out.push(_RESET)  # a reset travels like data
        elif not self.eof_read:
            self.out.push(_EOF)
        self.into.dst = None
        self.into.cancel()
        self.link.side_closed()

    def pause_writing(self) -> None:
        self.into.dst_full = True
        self.into.throttle()

    def resume_writing(self) -> None:
        self.into.dst_full = False
        self.into.throttle()


class _Link:
    """One relayed connection: client <-> relay <-> target."""

    def __init__(self, relay: DelayRelay, rp: RelayPort, target_port: int) -> None:
        loop = asyncio.get_running_loop()  # built by the server's protocol factory, in the loop
        self.loop = loop
        self.relay = relay
        self.rp = rp
        self.target_port = target_port
        self.up = _Direction(self)  # client -> target
        self.down = _Direction(self)  # target -> client
        self.client_side = _Side(self, out=self.up, into=self.down)
        self.target_side = _Side(self, out=self.down, into=self.up)
        self.connecting: asyncio.Task[None] | None = None
        self.sides = 2
        rp.links.add(self)
        # The target accepts 1.5 round trips after the client's connect (TCP's handshake).
        loop.call_later(CONNECT_RTTS * 2 * relay.half_rtt(), self._connect_target)

    def _connect_target(self) -> None:
        client_gone = self.up.src is None or (self.up.src.is_closing() and not self.up.queue)
        if self.rp.closed or client_gone:
            self.abort()
            return
        self.connecting = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            await self.loop.create_connection(lambda: self.target_side, self.relay.host, self.target_port)
        except OSError as exc:
            log.debug("relay_target_refused", port=self.rp.port, target=self.target_port, error=str(exc))
            self.abort()

    def side_closed(self) -> None:
        self.sides -= 1
        if self.sides <= 0:
            self.rp.links.discard(self)

    def abort(self) -> None:
        """Reset both sides now (the pod went away, the target refused, or a reset came through)."""
        for d in (self.up, self.down):
            d.cancel()
            for t in (d.src, d.dst):
                if t is not None and not t.is_closing():
                    t.abort()
        self.rp.links.discard(self)
