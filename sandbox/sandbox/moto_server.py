"""moto in server mode: the sandbox's AWS, as a child process on a loopback port.

One moto server serves every region (the region comes from each request's
SigV4 scope); put one :class:`~sandbox.faults.FaultProxy` per region
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

from sandbox.procs import ChildProcess, Service, free_loopback_port, require_loopback

_PORT_ATTEMPTS = 3  # a free port can be taken by someone else before moto binds it
_PROBE_PATH = "/moto-api/data.json"
_RESET_PATH = "/moto-api/reset"


class MotoError(RuntimeError):
    """moto could not be started or did not answer as expected."""


class MotoServer(Service):
    """Runs moto's server (``python -m sandbox.moto_strict``: Route 53 change batches as
    strict as the real service's) as a child that never outlives this process.

    ``start()`` waits until moto answers. ``reset()`` wipes all of moto's state.
    ``stop()`` (or leaving the ``with`` block) ends the process. Output goes to
    ``log_path`` (a fresh temporary file unless given, removed again by ``stop()``).
    Call ``start()`` from the main thread: on Linux the kernel kills the child when the thread that
    started it ends (see :class:`~sandbox.procs.ChildProcess`).
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
        super().__init__("moto")
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

    def reset(self) -> None:
        """Wipe all moto state (every service, every region)."""
        status, body = self._request("POST", _RESET_PATH, timeout=30.0)
        if status != 200:
            raise MotoError(
                f"moto reset at {self.url}{_RESET_PATH} answered {status}: {body[:200]!r}"
            )

    def _start(self) -> None:
        attempts = 1 if self._requested_port else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self._port = self._requested_port or free_loopback_port(self.host)
            # moto builds some URLs (e.g. SQS queue URLs) from MOTO_PORT; never inherit one.
            child = ChildProcess(
                [
                    sys.executable,
                    "-m",
                    "sandbox.moto_strict",
                    "-H",
                    self.host,
                    "-p",
                    str(self._port),
                ],
                log_path=self.log_path,
                name="moto",
                env={**os.environ, "MOTO_PORT": str(self._port)},
            )
            try:
                child.start()
                self._await_ready(
                    lambda: None if self._answers() else "no answer yet",
                    what=f"moto to answer on {self.host}:{self._port}",
                    deadline=time.monotonic() + self.startup_timeout,
                    children=[child],
                )
            except MotoError:
                child.stop()
                if attempt == attempts:
                    raise
                continue
            self._child = child
            return

    def _stop(self) -> None:
        """End the moto process; a temporary log file is removed."""
        child, self._child = self._child, None
        if child is not None:
            child.stop()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    def _startup_error(self, message: str, exited: ChildProcess | None) -> Exception:
        return MotoError(f"moto server: {message}")

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
