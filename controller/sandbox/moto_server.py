"""moto in server mode: the sandbox's AWS, as a child process on a loopback port.

One moto server serves every region (the region comes from each request's
SigV4 scope); put one :class:`~controller.sandbox.faults.FaultProxy` per region
in front of it to make regions fail independently.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from controller.sandbox.procs import ChildProcess, free_loopback_port, require_loopback

_PORT_ATTEMPTS = 3  # a free port can be taken by someone else before moto binds it
_PROBE_PATH = "/moto-api/data.json"
_RESET_PATH = "/moto-api/reset"


class MotoError(RuntimeError):
    """moto could not be started or did not answer as expected."""


class MotoServer:
    """Runs ``python -m moto.server`` as a child that never outlives this process.

    ``start()`` waits until moto answers. ``reset()`` wipes all of moto's state.
    ``stop()`` (or leaving the ``with`` block) ends the process. Output goes to
    ``log_path`` (a fresh temporary file unless given, removed again by ``stop()``).
    Call ``start()`` from the main thread: on Linux the kernel kills the child when the thread that
    started it ends (see :class:`~controller.sandbox.procs.ChildProcess`).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        """``port`` 0 picks a free port (retrying if another process takes it first)."""
        self.host = require_loopback(host)
        self._own_log = log_path is None  # a temporary log is removed again on stop
        self.log_path = log_path or _temporary_log_path()
        self.startup_timeout = startup_timeout
        self._requested_port = port
        self._port = port
        self._child: ChildProcess | None = None

    @property
    def port(self) -> int:
        if self._child is None:
            raise MotoError("moto server is not running; call start() first")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if self._child is not None:
            raise MotoError(f"moto server already running at {self.url} (pid {self._child.pid})")
        attempts = 1 if self._requested_port else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self._port = self._requested_port or free_loopback_port(self.host)
            child = self._spawn()
            try:
                self._wait_until_ready(child)
            except MotoError:
                child.stop()
                if attempt == attempts:
                    raise
                continue
            self._child = child
            return

    def reset(self) -> None:
        """Wipe all moto state (every service, every region)."""
        status, body = self._request("POST", _RESET_PATH, timeout=30.0)
        if status != 200:
            raise MotoError(
                f"moto reset at {self.url}{_RESET_PATH} answered {status}: {body[:200]!r}"
            )

    def stop(self) -> None:
        """End the moto process. Idempotent. A temporary log file is removed."""
        child, self._child = self._child, None
        if child is not None:
            child.stop()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

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

    def _spawn(self) -> ChildProcess:
        argv = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self._port)]
        # moto builds some URLs (e.g. SQS queue URLs) from MOTO_PORT; never inherit a stale one.
        env = {**os.environ, "MOTO_PORT": str(self._port)}
        child = ChildProcess(argv, log_path=self.log_path, name="moto", env=env)
        child.start()
        return child

    def _wait_until_ready(self, child: ChildProcess) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = child.exit_code()
            if code is not None:
                raise MotoError(
                    f"moto server on port {self._port} exited with code {code} while starting; "
                    f"end of {self.log_path}:\n{child.log_tail()}"
                )
            if self._answers():
                return
            time.sleep(0.05)
        raise MotoError(
            f"moto server did not answer on {self.host}:{self._port} within "
            f"{self.startup_timeout} s; end of {self.log_path}:\n{child.log_tail()}"
        )

    def _answers(self) -> bool:
        try:
            status, body = self._request("GET", _PROBE_PATH, timeout=2.0)
            json.loads(body)
        except (OSError, ValueError):
            return False
        return status == 200

    def _request(self, method: str, path: str, *, timeout: float) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.host, self._port, timeout=timeout)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def _temporary_log_path() -> Path:
    handle, name = tempfile.mkstemp(prefix="lifeboat-moto-", suffix=".log")
    os.close(handle)
    return Path(name)
