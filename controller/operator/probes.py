"""Data-plane probes: HTTP GET of every zonal endpoint, all at once, with a timeout.

Each answer becomes a :class:`~controller.core.health.ProbeResult`; the decision core
aggregates a zone's endpoints and debounces. Any 2xx/3xx answer is healthy; anything else,
a refused or reset connection, or no answer within the timeout, is not.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import aiohttp

from controller import __version__
from controller.api.models import ResilientAppSpec
from controller.core.health import ProbeOutcome, ProbeResult, ZoneKey

MAX_BODY = 64 * 1024


class HttpProber:
    """Probes zonal endpoints over one shared connection pool."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # No connection reuse: a probe must find out whether the zone accepts *new*
                # connections, and a stopped zone must not hide behind a pooled socket.
                # No pool limit either: waiting for a free connection would count against
                # the probe timeout and turn many hung endpoints into false alarms elsewhere.
                connector=aiohttp.TCPConnector(force_close=True, limit=0),
                headers={"User-Agent": f"lifeboat-probe/{__version__}"},
            )
        return self._session

    async def probe_app(self, spec: ResilientAppSpec) -> tuple[ProbeResult, ...]:
        """One round: every endpoint of every site, concurrently."""
        limit = spec.health.timeout_seconds
        jobs = [
            self.probe(ZoneKey(site.name, endpoint.zone), endpoint.url, limit)
            for site in spec.sites
            for endpoint in site.endpoints
        ]
        return tuple(await asyncio.gather(*jobs))

    async def probe(self, key: ZoneKey, url: str, limit: float) -> ProbeResult:
        """One GET of ``url``, given up after ``limit`` seconds."""
        at = self._clock()
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                async with self._client().get(url, allow_redirects=False) as response:
                    await response.content.read(MAX_BODY)  # enough to see it answers
        except TimeoutError:
            return ProbeResult(
                key,
                ProbeOutcome.TIMEOUT,
                at,
                time.monotonic() - started,
                f"no answer in {limit:g}s",
            )
        except aiohttp.ClientError as error:
            return ProbeResult(
                key, ProbeOutcome.FAIL, at, time.monotonic() - started, _describe(error)
            )
        except (ValueError, OSError) as error:  # an unusable URL (bad host name, ...)
            return ProbeResult(
                key, ProbeOutcome.FAIL, at, time.monotonic() - started, f"bad URL: {error}"
            )
        except Exception as error:  # one odd endpoint must never fail the whole round
            return ProbeResult(
                key, ProbeOutcome.FAIL, at, time.monotonic() - started, type(error).__name__
            )
        latency = time.monotonic() - started
        if response.status < 400:
            return ProbeResult(key, ProbeOutcome.OK, at, latency, f"HTTP {response.status}")
        return ProbeResult(key, ProbeOutcome.FAIL, at, latency, f"HTTP {response.status}")


def _describe(error: aiohttp.ClientError) -> str:
    if isinstance(error, aiohttp.ClientConnectorError):
        errno = error.os_error.errno
        reason = os.strerror(errno) if errno else str(error.os_error.strerror or error.os_error)
        return f"connection failed: {reason}"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(error, aiohttp.ClientOSError):
        return f"connection error: {error.strerror or error}"
    return type(error).__name__
