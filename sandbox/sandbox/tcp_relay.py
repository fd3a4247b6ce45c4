"""A TCP relay that can cut a client off from a server: for API-server outages.

The HTTP fault proxy (:mod:`faults`) sits in front of cloud APIs; the Kubernetes API server
speaks TLS with client certificates, which an HTTP proxy cannot see into. This relay
forwards bytes untouched (TLS passes through end to end, so the server's certificate,
issued for 127.0.0.1, still matches) and has three modes:

* ``serve()``: forward every connection (the default);
* ``refuse()``: close every open connection and refuse new ones (the server is down, or a
  network path is cut: clients see "connection refused");
* ``blackhole()``: accept connections and hold them without forwarding a byte (a silent
  network partition: clients see timeouts, never an answer).

Only loopback addresses are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from enum import StrEnum

from sandbox.procs import LoopThread, Service, require_loopback

_CHUNK = 64 * 1024


class RelayMode(StrEnum):
    SERVE = "serve"
    REFUSE = "refuse"
    BLACKHOLE = "blackhole"


class TcpRelay(Service):
    """Forwards ``listen_host:port`` to ``upstream_host:upstream_port`` on loopback."""

    def __init__(self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1"):
        super().__init__(f"tcp-relay-{upstream_port}")
        self.upstream = (require_loopback(upstream_host), upstream_port)
        self.listen_host = require_loopback(listen_host)
        self._loop = LoopThread(f"tcp-relay-{upstream_port}")
        self._server: asyncio.Server | None = None
        self._port = 0
        self._mode = RelayMode.SERVE
        self._links: set[asyncio.Task[None]] = set()
        self.connections = 0
        """Connections accepted while serving (forwarded to the upstream)."""

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the relay is not started")
        return self._port

    @property
    def mode(self) -> RelayMode:
        return self._mode

    def _start(self) -> None:
        self._loop.start()
        self._loop.run(self._listen())

    def _stop(self) -> None:
        """Close every link and the listener, and stop the relay's thread."""
        if self._loop.running:
            with contextlib.suppress(RuntimeError, TimeoutError):
                self._loop.run(self._close(listening=True))
            self._loop.stop()
        self._server = None

    def serve(self) -> None:
        """Forward connections again (the server is reachable)."""
        self._loop.run(self._set(RelayMode.SERVE))

    def refuse(self) -> None:
        """Cut every connection and refuse new ones."""
        self._loop.run(self._set(RelayMode.REFUSE))

    def blackhole(self) -> None:
        """Cut every connection; accept new ones but never answer."""
        self._loop.run(self._set(RelayMode.BLACKHOLE))

    # ------------------------------------------------------------------ on the loop

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.listen_host, self._port or 0, reuse_address=True
        )
        sockets = self._server.sockets or ()
        self._port = int(sockets[0].getsockname()[1])

    async def _set(self, mode: RelayMode) -> None:
        previous, self._mode = self._mode, mode
        if mode is RelayMode.SERVE:
            if self._server is None:
                await self._listen()
            return
        if previous is not RelayMode.SERVE and mode is previous:
            return
        await self._close(listening=mode is RelayMode.REFUSE)
        if mode is RelayMode.BLACKHOLE and self._server is None:
            await self._listen()

    async def _close(self, *, listening: bool) -> None:
        """Cut every link (and stop listening, so that connects are refused)."""
        if listening and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        links = list(self._links)
        for link in links:
            link.cancel()
        await asyncio.gather(*links, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            if self._mode is RelayMode.SERVE:
                self.connections += 1
                await self._forward(reader, writer)
            else:
                await asyncio.Event().wait()  # held until the mode changes
        except asyncio.CancelledError:
            _abort(writer)
        finally:
            self._links.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(writer)
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except asyncio.CancelledError:
            _abort(up_writer)
            raise
        finally:
            with contextlib.suppress(Exception):
                up_writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(_CHUNK):
            sink.write(chunk)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if sink.can_write_eof():
                sink.write_eof()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Reset the connection (RST), as a vanished server or a cut path does."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
