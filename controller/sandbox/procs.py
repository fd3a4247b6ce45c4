"""Background plumbing shared by the sandbox servers.

The sandbox runs inside a synchronous program (a pytest session, the demo CLI)
while the operator runs in another thread. Everything here serves that setting:

- :func:`require_loopback` / :func:`free_loopback_port`: the sandbox only ever
  listens on, and talks to, loopback addresses (127.0.0.0/8).
- :class:`LoopThread`: an asyncio event loop in a daemon thread with a
  synchronous, thread-safe way to run coroutines on it.
- :class:`BackgroundHttpServer`: an aiohttp application served from a
  :class:`LoopThread`, whose listener can be closed (connection refused) and
  reopened on the same address and port.
- :class:`ChildProcess`: a subprocess that never outlives its parent: it is
  killed on ``stop()``, at interpreter exit, and on Linux by the kernel when
  the parent dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

T = TypeVar("T")

LOOPBACK_NETWORK = ipaddress.IPv4Network("127.0.0.0/8")

# Requests with very long presigned URLs or signed headers must still pass.
_MAX_HTTP_LINE = 64 * 1024


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


class BackgroundHttpServer:
    """An aiohttp application served on a loopback address from its own event-loop thread.

    ``make_app`` builds a fresh application at every ``start()`` (an aiohttp
    application belongs to one event loop), so the server can be stopped and
    started again. Port 0 picks a free port at the first ``start()``; the port
    then stays fixed, so ``stop_listening()`` / ``start_listening()`` make the
    server refuse connections and come back on the same address. Handlers are
    cancelled when their client disconnects, so held requests never outlive
    their client.
    """

    def __init__(
        self, make_app: Callable[[], web.Application], *, host: str, port: int = 0, name: str
    ) -> None:
        self.host = require_loopback(host)
        self.name = name
        self._make_app = make_app
        self._port = port
        self._loop = LoopThread(name)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._control_lock = threading.Lock()  # one start/stop/listen change at a time

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
    def running(self) -> bool:
        return self._runner is not None

    @property
    def listening(self) -> bool:
        return self._site is not None

    def start(self) -> None:
        with self._control_lock:
            if self._runner is not None:
                raise RuntimeError(f"{self.name}: already running at {self.url}")
            self._loop.start()
            try:
                self._loop.run(self._setup())
            except BaseException:
                self._loop.stop()
                raise

    def stop(self) -> None:
        """Drop every connection, shut the application down and stop the thread. Idempotent."""
        with self._control_lock:
            if self._runner is None:
                return
            try:
                self._loop.run(self._cleanup())
            finally:
                self._runner = None
                self._loop.stop()

    def stop_listening(self) -> None:
        """Close the listener and drop open connections: clients get connection refused."""
        with self._control_lock:
            self._loop.run(self._close_listener())

    def start_listening(self) -> None:
        """Listen again on the same address and port."""
        with self._control_lock:
            self._loop.run(self._open_listener())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run ``coro`` on the server's event loop (see :meth:`LoopThread.run`)."""
        return self._loop.run(coro, timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _setup(self) -> None:
        runner = web.AppRunner(
            self._make_app(),
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
        site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
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


class ChildProcess:
    """A subprocess that is killed on ``stop()``, at interpreter exit and when its parent dies.

    Parent death is caught by the kernel (Linux ``PR_SET_PDEATHSIG``), which
    fires when the *thread* that called ``start()`` ends: start children from
    the main thread. stdout and stderr go to ``log_path`` (appended), so a crash
    can be explained with :meth:`log_tail`. The child runs in its own session,
    so a Ctrl-C in the terminal reaches only the parent, which then stops it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        name: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.name = name
        self._env = dict(env) if env is not None else None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError(f"{self.name}: already started (pid {self._process.pid})")
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

    def exit_code(self) -> int | None:
        """The exit code once the process has ended, ``None`` while it runs (or before start)."""
        return self._process.poll() if self._process is not None else None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; wait for the process. Idempotent."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with _live_children_lock:
            _live_children.discard(self)

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
        child.stop(grace=1.0)
