"""Zonal app endpoints: the data plane of the sandbox's sample app.

A :class:`ZoneEndpoint` is a small HTTP server standing in for one zone of one
site. It answers ``GET /`` and ``GET /healthz`` with 200 and a JSON body naming
its site and zone, on its own loopback address, and counts requests. Its mode
is switched at runtime from any thread to play out zone failures:

==============  ==========================================================
``serve()``     answer normally (reopens the listener if it was down)
``down()``      close the listener and drop connections: connection refused
``hang()``      accept requests and never answer them
``slow(s)``     answer after ``s`` seconds
``error(st)``   answer every request with HTTP status ``st``
``flaky(p)``    answer a share ``p`` of requests, drawn at random, with an error
==============  ==========================================================

A :class:`ZoneFleet` starts one endpoint per ``(site, zone)``, each on a
distinct address ``127.10.<site #>.<zone #>``.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from aiohttp import web

from sandbox.procs import HttpService, Service, require_loopback

HEALTH_PATH = "/healthz"
_ZONE_NETWORK_OCTET = 10  # fleets use 127.10.0.0/16, apart from the 127.0.0.x services


class ZoneMode(StrEnum):
    SERVING = "serving"
    DOWN = "down"
    HANGING = "hanging"
    SLOW = "slow"
    ERROR = "error"
    FLAKY = "flaky"


@dataclass(frozen=True)
class ZoneCounts:
    """Requests received, answered with 200, and answered with an injected error."""

    total: int = 0
    ok: int = 0
    failed: int = 0


@dataclass(frozen=True)
class _Behaviour:
    mode: ZoneMode
    delay: float = 0.0
    status: int = 500
    share: float = 0.0
    seed: int | None = None


def _check_error_status(status: int) -> int:
    if not 400 <= status <= 599:
        raise ValueError(f"an error status must be in 400..599, got {status}")
    return status


class ZoneEndpoint(HttpService):
    """The HTTP endpoint of one zone of one site, with switchable failure modes.

    Runs its own event loop in a daemon thread; every public method is
    synchronous and thread-safe. ``start()`` / ``stop()`` (or a ``with`` block)
    manage its life; ``down()`` is a failure mode, undone by ``serve()``.
    Requests held by ``hang()`` stay unanswered until their client gives up,
    the endpoint stops or closes, or ``max_hold`` seconds pass.
    """

    def __init__(
        self, site: str, zone: str, *, host: str, port: int = 0, max_hold: float = 300.0
    ) -> None:
        super().__init__(f"zone {site}/{zone}", host=require_loopback(host), port=port)
        self.site = site
        self.zone = zone
        self.max_hold = max_hold
        self._lock = threading.Lock()  # behaviour, random draws and counts; never held long
        self._mode_lock = threading.Lock()  # one mode switch (and listener change) at a time
        self._behaviour = _Behaviour(ZoneMode.SERVING)
        self._rng = random.Random()
        self._counts = ZoneCounts()

    @property
    def health_url(self) -> str:
        return f"{self.url}{HEALTH_PATH}"

    @property
    def mode(self) -> ZoneMode:
        with self._lock:
            return self._behaviour.mode

    # modes

    def serve(self) -> None:
        self._switch(_Behaviour(ZoneMode.SERVING))

    def down(self) -> None:
        """Refuse connections (and drop open ones) until another mode is set."""
        self._switch(_Behaviour(ZoneMode.DOWN))

    def hang(self) -> None:
        self._switch(_Behaviour(ZoneMode.HANGING))

    def slow(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"slow() needs a delay >= 0 seconds, got {seconds}")
        self._switch(_Behaviour(ZoneMode.SLOW, delay=seconds))

    def error(self, status: int = 500) -> None:
        self._switch(_Behaviour(ZoneMode.ERROR, status=_check_error_status(status)))

    def flaky(self, share: float, seed: int | None = None, status: int = 500) -> None:
        """Answer a ``share`` (0..1) of requests with ``status``; ``seed`` makes it reproducible."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"flaky() needs a share in 0..1, got {share}")
        behaviour = _Behaviour(
            ZoneMode.FLAKY, status=_check_error_status(status), share=share, seed=seed
        )
        self._switch(behaviour)

    def _switch(self, behaviour: _Behaviour) -> None:
        if not self._server.running:
            raise RuntimeError(
                f"zone {self.site}/{self.zone}: start() the endpoint before setting modes"
            )
        with self._mode_lock:
            with self._lock:
                self._behaviour = behaviour
                self._rng = random.Random(behaviour.seed)
            if behaviour.mode is ZoneMode.DOWN:
                self._server.stop_listening()
            else:
                self._server.start_listening()

    # counts

    def counts(self) -> ZoneCounts:
        with self._lock:
            return self._counts

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = ZoneCounts()

    # request handling (event-loop thread)

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._handle)
        app.router.add_get(HEALTH_PATH, self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            behaviour = self._behaviour
            fails = behaviour.mode is ZoneMode.ERROR or (
                behaviour.mode is ZoneMode.FLAKY and self._rng.random() < behaviour.share
            )
            self._counts = replace(self._counts, total=self._counts.total + 1)
        if behaviour.mode is ZoneMode.HANGING:
            await asyncio.sleep(self.max_hold)  # cancelled as soon as the client leaves
            if request.transport is not None:
                request.transport.abort()
            return web.Response()
        await asyncio.sleep(behaviour.delay)
        with self._lock:
            counts = self._counts
            self._counts = (
                replace(counts, failed=counts.failed + 1)
                if fails
                else replace(counts, ok=counts.ok + 1)
            )
        if fails:
            body = {"site": self.site, "zone": self.zone, "error": "injected failure"}
            return web.json_response(body, status=behaviour.status)
        return web.json_response({"site": self.site, "zone": self.zone, "status": "ok"})


class ZoneFleet(Service):
    """Zone endpoints for a list of ``(site, zone)`` pairs, each on its own loopback address.

    The n-th site (in order of first appearance) and its m-th zone get
    ``127.10.<n>.<m>`` (both counted from 1) and a free port. ``start()`` starts every
    endpoint (if one fails, the ones already started are stopped); ``stop()`` stops them.
    """

    def __init__(self, zones: Iterable[tuple[str, str]], *, max_hold: float = 300.0) -> None:
        super().__init__("zone fleet")
        self._endpoints: dict[tuple[str, str], ZoneEndpoint] = {}
        zone_numbers: dict[str, int] = {}
        site_numbers: dict[str, int] = {}
        for site, zone in zones:
            if (site, zone) in self._endpoints:
                raise ValueError(f"zone {site}/{zone} is listed twice")
            site_number = site_numbers.setdefault(site, len(site_numbers) + 1)
            zone_number = zone_numbers[site] = zone_numbers.get(site, 0) + 1
            if site_number > 255 or zone_number > 254:
                raise ValueError("a fleet holds at most 255 sites of at most 254 zones")
            host = f"127.{_ZONE_NETWORK_OCTET}.{site_number}.{zone_number}"
            self._endpoints[site, zone] = ZoneEndpoint(site, zone, host=host, max_hold=max_hold)

    @property
    def endpoints(self) -> list[ZoneEndpoint]:
        return list(self._endpoints.values())

    def endpoint(self, site: str, zone: str) -> ZoneEndpoint:
        try:
            return self._endpoints[site, zone]
        except KeyError:
            known = ", ".join(f"{s}/{z}" for s, z in self._endpoints) or "none"
            raise KeyError(f"no endpoint for zone {site}/{zone}; the fleet has: {known}") from None

    def site_endpoints(self, site: str) -> list[ZoneEndpoint]:
        return [endpoint for (s, _), endpoint in self._endpoints.items() if s == site]

    def url(self, site: str, zone: str) -> str:
        """The health URL of a zone."""
        return self.endpoint(site, zone).health_url

    def down_all(self) -> None:
        """Put every endpoint ``down`` (connection refused), e.g. a whole-site outage."""
        for endpoint in self._endpoints.values():
            endpoint.down()

    def _start(self) -> None:
        for endpoint in self._endpoints.values():
            endpoint.start()

    def _stop(self) -> None:
        for endpoint in self._endpoints.values():
            endpoint.stop()
