"""What every part of the sandbox that runs is built on.

The sandbox runs inside a synchronous program (a pytest session, the demo CLI)
while the operator runs in another thread. Everything here serves that setting:

- :class:`Service`: the one base of whatever the sandbox starts and stops (a child
  process, a background HTTP server, moto, Keystone/Swift, an emulator, a fault proxy,
  a zonal endpoint, the kube control plane, the whole sandbox): ``start()`` returns once
  it is ready and cleans up after itself when it fails, ``stop()`` is idempotent, a
  ``with`` block does both, and :meth:`Service._await_ready` is the one readiness wait.
- :func:`require_loopback` / :func:`free_loopback_port`: the sandbox only ever
  listens on, and talks to, loopback addresses (127.0.0.0/8).
- :class:`LoopThread`: an asyncio event loop in a daemon thread with a
  synchronous, thread-safe way to run coroutines on it.
- :class:`BackgroundHttpServer`: an aiohttp application served from a
  :class:`LoopThread`, whose listener can be closed (connection refused) and
  reopened on the same address and port, and which can cut off the clients of one source
  address (:class:`SourceCut`); :class:`HttpService`, a service that is such an
  application.
- :class:`ChildProcess`: a subprocess that never outlives its parent: it is
  killed on ``stop()``, at interpreter exit, and on Linux by the kernel when
  the parent dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from aiohttp import web

T = TypeVar("T")

LOOPBACK_NETWORK = ipaddress.IPv4Network("127.0.0.0/8")

# Requests with very long presigned URLs or signed headers must still pass.
_MAX_HTTP_LINE = 64 * 1024


# --- the base of everything the sandbox starts ---------------------------------------------


class StartupError(RuntimeError):
    """A service did not become ready: a child process ended first, or time ran out."""


class Service(ABC):
    """Something the sandbox starts and stops.

    ``start()`` runs :meth:`_start`, which returns once the service is ready; if it
    fails, ``stop()`` runs at once (so :meth:`_stop` must cope with a start that got
    only part of the way) and the error is raised. ``stop()`` runs :meth:`_stop` once
    per start: calling it again, or on a service never started, does nothing. A
    ``with`` block starts and stops the service. Start and stop are serialised.
    """

    ready_poll_seconds: ClassVar[float] = 0.05
    """How often :meth:`_await_ready` asks whether the service is ready."""
    log_tail_lines: ClassVar[int] = 30
    """How much of each child's log a startup error quotes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lifecycle = threading.RLock()
        self._started = False

    @property
    def running(self) -> bool:
        """Between ``start()`` and ``stop()``."""
        return self._started

    def start(self) -> Self:
        with self._lifecycle:
            if self._started:
                raise RuntimeError(f"{self.name}: already running")
            self._started = True
            try:
                self._start()
            except BaseException:
                self.stop()
                raise
            return self

    def stop(self) -> None:
        """Stop what :meth:`start` started. Idempotent."""
        with self._lifecycle:
            if not self._started:
                return
            self._started = False
            self._stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @abstractmethod
    def _start(self) -> None:
        """Bring the service up; return once it is ready."""

    @abstractmethod
    def _stop(self) -> None:
        """Take down whatever is up (after a failed start, whatever got up)."""

    def _await_ready(
        self,
        probe: Callable[[], str | None],
        *,
        what: str,
        deadline: float,
        children: Sequence[ChildProcess] = (),
    ) -> None:
        """Poll ``probe`` (``None``: ready; else why not) until ``deadline`` (monotonic).

        Fails with :meth:`_startup_error` when one of ``children`` ends first or the
        deadline passes; the message ends with the last lines of the children's logs.
        """
        while True:
            for child in children:
                code = child.exit_code()
                if code is not None:
                    message = f"{child.name} exited with code {code} while waiting for {what}"
                    raise self._startup_error(self._with_log_tails(message, children), child)
            reason = probe()
            if reason is None:
                return
            if time.monotonic() > deadline:
                message = f"timed out waiting for {what}: {reason}"
                raise self._startup_error(self._with_log_tails(message, children), None)
            time.sleep(self.ready_poll_seconds)

    def _with_log_tails(self, message: str, children: Sequence[ChildProcess]) -> str:
        return message + "".join(
            f"\n--- last lines of {child.log_path} ---\n{child.log_tail(self.log_tail_lines)}"
            for child in children
        )

    def _startup_error(self, message: str, exited: ChildProcess | None) -> Exception:
        """The error :meth:`_await_ready` raises; ``exited`` is the child that ended, if one
        did. Services override it to raise their own error types."""
        return StartupError(f"{self.name}: {message}")


def require_loopback(host: str) -> str:
    """Return ``host`` if it is an IPv4 address in 127.0.0.0/8, else raise ``ValueError``."""
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(
            f"{host!r} is not an IPv4 address; the sandbox only uses loopback "
            "addresses in 127.0.0.0/8 (e.g. 127.0.0.1)"
        ) from None
    if address not in LOOPBACK_NETWORK:
        raise ValueError(f"{host} is outside 127.0.0.0/8; the sandbox only uses loopback addresses")
    return host


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now.

    Another process may take the port before the caller binds it; callers that
    hand the port to a child process should retry on a bind failure.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((require_loopback(host), 0))
        port: int = sock.getsockname()[1]
        return port


class LoopThread:
    """An asyncio event loop running in a daemon thread.

    ``run()`` submits a coroutine from any other thread and waits for its
    result. ``stop()`` cancels whatever is still running on the loop, closes it
    and joins the thread.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: event loop thread is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._main, args=(loop,), name=self.name, daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run ``coro`` on the loop and return its result (or raise its exception)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            coro.close()
            raise RuntimeError(f"{self.name}: event loop thread is not running")
        if threading.current_thread() is thread:
            coro.close()
            raise RuntimeError(f"{self.name}: run() called from the loop's own thread")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"{self.name}: {coro!r} did not finish within {timeout} s") from None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop, cancel its remaining tasks and join the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"{self.name}: event loop thread did not stop within {timeout} s")
        self._loop = self._thread = None

    @staticmethod
    def _main(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            _cancel_remaining_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()


def _cancel_remaining_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


class SourceCut(StrEnum):
    """How a server treats the connections of a source address it is cut off from (the
    network path between that client and the server is broken; others still reach it)."""

    RESET = "reset"
    """Accepted and reset at once (TCP RST), before a byte is read: the client sees its
    connection reset."""
    BLACKHOLE = "blackhole"
    """Accepted and held without a byte in either direction: the client times out."""


def _reset(transport: asyncio.BaseTransport) -> None:
    """Abort with a TCP RST (SO_LINGER 0), as a broken path or a vanished server does."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _abort(transport)


def _abort(transport: asyncio.BaseTransport) -> None:
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:
        transport.close()


class _Gate(asyncio.Protocol):
    """One accepted connection: handed to aiohttp's handler unless its source is cut off."""

    def __init__(self, owner: BackgroundHttpServer, make: Callable[[], asyncio.Protocol]):
        self._owner = owner
        self._make = make
        self._inner: asyncio.Protocol | None = None
        self._held: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        cut = self._owner.cut_of(str(peer[0])) if peer else None
        if cut is None:
            self._inner = self._make()
            self._inner.connection_made(transport)
        elif cut is SourceCut.RESET:
            self._owner.refused += 1
            _reset(transport)
        else:
            self._owner.refused += 1
            self._held = transport
            self._owner._held.add(transport)
            if isinstance(transport, asyncio.ReadTransport):
                transport.pause_reading()  # not a byte read: the client's writes pile up

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._inner.connection_lost(exc)
        elif self._held is not None:
            self._owner._held.discard(self._held)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class _GatedSite(web.BaseSite):
    """A TCP listener whose connections pass the owner's source cuts first."""

    def __init__(self, runner: web.AppRunner, owner: BackgroundHttpServer, port: int) -> None:
        super().__init__(runner)
        self._owner = owner
        self._host = owner.host
        self.port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Gate(self._owner, server), self._host, self.port, reuse_address=True
        )
        if self._server.sockets:
            self.port = int(self._server.sockets[0].getsockname()[1])


class BackgroundHttpServer(Service):
    """An aiohttp application served on a loopback address from its own event-loop thread.

    ``make_app`` builds a fresh application at every ``start()`` (an aiohttp
    application belongs to one event loop), so the server can be stopped and
    started again. Port 0 picks a free port at the first ``start()``; the port
    then stays fixed, so ``stop_listening()`` / ``start_listening()`` make the
    server refuse connections and come back on the same address. Handlers are
    cancelled when their client disconnects, so held requests never outlive
    their client. ``cut(source, how)`` cuts off the clients connecting from one source
    address (their open connections are dropped, new ones reset or held, see
    :class:`SourceCut`) while others are served; ``heal(source)`` undoes it.
    ``stop()`` drops every connection, shuts the application down and stops the thread.
    """

    def __init__(
        self, make_app: Callable[[], web.Application], *, host: str, port: int = 0, name: str
    ) -> None:
        super().__init__(name)
        self.host = require_loopback(host)
        self._app_factory = make_app
        self._port = port
        self._loop = LoopThread(name)
        self._runner: web.AppRunner | None = None
        self._site: _GatedSite | None = None
        self._cuts: dict[str, SourceCut] = {}
        self._held: set[asyncio.BaseTransport] = set()
        self.refused = 0
        """Connections refused or held because their source was cut off."""

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError(
                f"{self.name}: the port is chosen at start(); start the server first"
            )
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._site is not None

    def stop_listening(self) -> None:
        """Close the listener and drop open connections: clients get connection refused."""
        with self._lifecycle:
            self._loop.run(self._close_listener())

    def start_listening(self) -> None:
        """Listen again on the same address and port."""
        with self._lifecycle:
            self._loop.run(self._open_listener())

    def cut(self, source: str, how: SourceCut = SourceCut.RESET) -> None:
        """Cut off clients connecting from ``source`` (a loopback address): their open
        connections are dropped, new ones treated as ``how`` says."""
        source = require_loopback(source)
        with self._lifecycle:
            self._loop.run(self._set_cut(source, SourceCut(how)))

    def heal(self, source: str | None = None) -> None:
        """Serve ``source`` again (``None``: every source that was cut off)."""
        with self._lifecycle:
            self._loop.run(self._set_cut(source, None))

    def cut_of(self, source: str) -> SourceCut | None:
        """How ``source`` is cut off, if it is."""
        return self._cuts.get(source)

    @property
    def cuts(self) -> dict[str, SourceCut]:
        return dict(self._cuts)

    async def _set_cut(self, source: str | None, how: SourceCut | None) -> None:
        if how is None:
            if source is None:
                self._cuts.clear()
            else:
                self._cuts.pop(source, None)
        else:
            assert source is not None
            self._cuts[source] = how
        server = self._runner.server if self._runner is not None else None
        for connection in list(server.connections) if server is not None else []:
            transport = connection.transport
            peer = transport.get_extra_info("peername") if transport is not None else None
            if transport is not None and peer and str(peer[0]) in self._cuts:
                _reset(transport)
        for held in list(self._held):
            peer = held.get_extra_info("peername")
            if not peer or self._cuts.get(str(peer[0])) is not SourceCut.BLACKHOLE:
                _reset(held)  # healed, or now reset instead: the client sees the break

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run ``coro`` on the server's event loop (see :meth:`LoopThread.run`)."""
        return self._loop.run(coro, timeout)

    def _start(self) -> None:
        self._loop.start()
        self._loop.run(self._setup())

    def _stop(self) -> None:
        try:
            if self._runner is not None:
                self._loop.run(self._cleanup())
        finally:
            self._runner = None
            self._loop.stop()

    async def _setup(self) -> None:
        runner = web.AppRunner(
            self._app_factory(),
            handler_cancellation=True,
            access_log=None,
            auto_decompress=False,
            max_line_size=_MAX_HTTP_LINE,
            max_field_size=_MAX_HTTP_LINE,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        self._runner = runner
        try:
            await self._open_listener()
        except BaseException:
            await runner.cleanup()
            self._runner = None
            raise

    async def _cleanup(self) -> None:
        await self._close_listener()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _open_listener(self) -> None:
        if self._site is not None:
            return
        if self._runner is None:
            raise RuntimeError(f"{self.name}: not running; call start() first")
        site = _GatedSite(self._runner, self, self._port)
        try:
            await site.start()
        except OSError as exc:
            raise OSError(
                exc.errno, f"{self.name}: cannot listen on {self.host}:{self._port}: {exc}"
            ) from exc
        self._site = site
        self._port = site.port

    async def _close_listener(self) -> None:
        site, self._site = self._site, None
        if site is None or self._runner is None:
            return
        await site.stop()
        server = self._runner.server
        for connection in server.connections if server is not None else []:
            if connection.transport is not None:
                connection.transport.abort()
        for held in list(self._held):
            _abort(held)


class HttpService(Service):
    """A service that is an aiohttp application (:meth:`_make_app`), served on loopback by
    its own :class:`BackgroundHttpServer`: fault proxies, zonal endpoints, emulators."""

    def __init__(
        self, name: str, *, host: str, port: int = 0, server_name: str | None = None
    ) -> None:
        super().__init__(name)
        self._server = BackgroundHttpServer(
            self._make_app, host=host, port=port, name=server_name or name
        )

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """The base URL, ``http://<host>:<port>``."""
        return self._server.url

    def cut(self, source: str, how: SourceCut = SourceCut.RESET) -> None:
        """Cut off the clients of one source address (see :meth:`BackgroundHttpServer.cut`)."""
        self._server.cut(source, how)

    def heal(self, source: str | None = None) -> None:
        """Serve ``source`` again (``None``: every source)."""
        self._server.heal(source)

    @property
    def cuts(self) -> dict[str, SourceCut]:
        """The source addresses cut off, and how."""
        return self._server.cuts

    @property
    def refused(self) -> int:
        """Connections refused or held because their source was cut off."""
        return self._server.refused

    def _start(self) -> None:
        self._server.start()

    def _stop(self) -> None:
        self._server.stop()

    @abstractmethod
    def _make_app(self) -> web.Application:
        """A fresh application (one per start: an application belongs to one event loop)."""


# --- child processes -------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_LOG_TAIL_BYTES = 64 * 1024

# Resolved in the parent: the child, between fork and exec, must not load libraries.
_prctl: Callable[..., int] | None = (
    ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
)

_live_children: set[ChildProcess] = set()
_live_children_lock = threading.Lock()


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """Build a ``preexec_fn`` that makes the kernel SIGKILL the child when the parent dies.

    Linux delivers the signal when the *thread* that forked the child exits, so
    start children from a thread that lives as long as they should (the main thread).
    """

    def preexec() -> None:
        if _prctl is not None and _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class ChildProcess(Service):
    """A subprocess that is killed on ``stop()``, at interpreter exit and when its parent dies.

    ``stop()`` sends SIGTERM, then SIGKILL after ``stop_grace`` seconds, and waits for
    the process. Parent death is caught by the kernel (Linux ``PR_SET_PDEATHSIG``), which
    fires when the *thread* that called ``start()`` ends: start children from
    the main thread. stdout and stderr go to ``log_path`` (appended), so a crash
    can be explained with :meth:`log_tail`. The child runs in its own session,
    so a Ctrl-C in the terminal reaches only the parent, which then stops it.
    ``start()`` does not wait for the program to be ready: its owner knows what ready
    means (:meth:`Service._await_ready`).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        name: str,
        env: Mapping[str, str] | None = None,
        stop_grace: float = 5.0,
    ) -> None:
        super().__init__(name)
        self.argv = list(argv)
        self.log_path = log_path
        self.stop_grace = stop_grace
        self._env = dict(env) if env is not None else None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def exit_code(self) -> int | None:
        """The exit code once the process has ended, ``None`` while it runs (or before start)."""
        return self._process.poll() if self._process is not None else None

    def _start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        with _live_children_lock:
            _live_children.add(self)

    def _stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            process.terminate()
            try:
                process.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with _live_children_lock:
            _live_children.discard(self)

    def kill(self) -> None:
        """SIGKILL, as a machine that dies: nothing is cleaned up. ``stop()`` still reaps it."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """SIGSTOP: the process holds its sockets but answers nothing (a frozen machine)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"{self.name}: not running")
        process.send_signal(sig)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the log, for error messages."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                text = log.read().decode(errors="replace")
        except OSError as exc:
            return f"(log {self.log_path} unreadable: {exc})"
        return "\n".join(text.splitlines()[-lines:])


@atexit.register
def _kill_live_children() -> None:
    with _live_children_lock:
        children = list(_live_children)
    for child in children:
        child.stop_grace = min(child.stop_grace, 1.0)
        child.stop()
