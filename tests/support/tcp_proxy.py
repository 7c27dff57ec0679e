"""A small TCP proxy the tests control: pass bytes through, hold them (pause), or cut connections.

The proxy runs its own asyncio loop in a daemon thread, so sync tests, async tests and the
benchmark drive it alike. Each accepted connection is put in a *group* by a ``classify``
callable (given the client's source port; the system harness maps it to the service whose
process owns that socket), and faults are applied per group or to all:

* ``pause(group)``: stop moving bytes both ways; the sockets stay open, so the peers only see
  silence (like a network partition that drops nothing); ``resume`` moves the held bytes on;
* ``cut(group)``: close that group's connections now and refuse (accept-then-close) new ones
  until ``restore``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

ALL = "*"
OTHER = "other"
_CHUNK = 64 * 1024


@dataclass
class _Group:
    """The fault state of one group of connections."""

    flowing: asyncio.Event
    cut: bool = False
    connections: set[_Connection] = field(default_factory=set)


@dataclass(eq=False)
class _Connection:
    """One proxied client connection and its upstream twin."""

    group: str
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        """Abort both sockets (RST, no graceful FIN) and stop the pumps."""
        for writer in (self.client, self.upstream):
            transport = writer.transport
            with contextlib.suppress(Exception):
                transport.abort()
        for task in self.tasks:
            task.cancel()


class TcpProxy:
    """Listens on 127.0.0.1:``listen_port`` (0: any free port) and forwards to ``upstream``."""

    def __init__(
        self,
        *,
        upstream_host: str = "127.0.0.1",
        upstream_port: int,
        listen_port: int = 0,
        classify: Callable[[int], str] | None = None,
    ) -> None:
        """Describe a proxy; nothing listens until ``start``."""
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self._listen_port = listen_port
        self._classify = classify or (lambda _port: OTHER)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._groups: dict[str, _Group] = {}
        self.accepted: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        return self._listen_port

    @property
    def address(self) -> str:
        """``host:port`` of the proxy."""
        return f"127.0.0.1:{self._listen_port}"

    def start(self) -> None:
        """Start the loop thread and listen."""
        if self._thread is not None:
            return
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="tcp-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        self._call(self._listen)

    def stop(self) -> None:
        """Close every connection, stop listening and end the loop thread."""
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ faults

    def pause(self, group: str = ALL) -> None:
        """Hold bytes in both directions for ``group`` (or every group) until ``resume``."""
        self._call(lambda: self._set(group, flowing=False))

    def resume(self, group: str = ALL) -> None:
        """Let held bytes move again."""
        self._call(lambda: self._set(group, flowing=True))

    def cut(self, group: str = ALL) -> None:
        """Close ``group``'s connections and refuse new ones until ``restore``."""
        self._call(lambda: self._set(group, cut=True))

    def restore(self, group: str = ALL) -> None:
        """Accept ``group``'s connections again (and let bytes flow)."""
        self._call(lambda: self._set(group, cut=False, flowing=True))

    def connection_count(self, group: str = ALL) -> int:
        """How many connections are open now (for one group, or all)."""

        async def count() -> int:
            return sum(len(g.connections) for name, g in self._groups.items() if group in (ALL, name))

        return self._call(count)

    # ------------------------------------------------------------------ inside the loop

    def _call(self, factory: Callable[[], object]) -> int:
        """Run a function (or coroutine function) on the proxy's loop and return its result."""
        if self._loop is None:
            raise RuntimeError("the proxy is not running")

        async def wrapper() -> object:
            result = factory()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        future: concurrent.futures.Future[object] = asyncio.run_coroutine_threadsafe(wrapper(), self._loop)
        result = future.result(timeout=30)
        return result if isinstance(result, int) else 0

    def _group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            default = self._groups.get(ALL)
            flowing = asyncio.Event()
            if default is None or default.flowing.is_set():
                flowing.set()
            group = _Group(flowing=flowing, cut=default.cut if default else False)
            self._groups[name] = group
        return group

    def _set(self, name: str, *, flowing: bool | None = None, cut: bool | None = None) -> None:
        targets = (
            [self._group(ALL), *(g for n, g in self._groups.items() if n != ALL)]
            if name == ALL
            else [self._group(name)]
        )
        for group in targets:
            if flowing is not None:
                if flowing:
                    group.flowing.set()
                else:
                    group.flowing.clear()
            if cut is not None:
                group.cut = cut
                if cut:
                    for connection in list(group.connections):
                        connection.close()
                    group.connections.clear()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._listen_port)
        self._listen_port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for group in self._groups.values():
            for connection in list(group.connections):
                connection.close()
            group.connections.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            name = self._classify(int(peer[1]))
        except Exception:
            name = OTHER
        self.accepted[name] = self.accepted.get(name, 0) + 1
        group = self._group(name)
        if group.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        connection = _Connection(group=name, client=writer, upstream=up_writer)
        group.connections.add(connection)
        connection.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, group, connection)),
            asyncio.create_task(self._pump(up_reader, writer, group, connection)),
        ]

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        group: _Group,
        connection: _Connection,
    ) -> None:
        try:
            while True:
                await group.flowing.wait()
                data = await source.read(_CHUNK)
                if not data:
                    break
                # Bytes read just before a pause are held here until the group flows again.
                await group.flowing.wait()
                if group.cut:
                    break
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        connection.close()
        group.connections.discard(connection)
