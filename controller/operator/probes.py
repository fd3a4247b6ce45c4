"""Data-plane probes: every zonal endpoint of an app, all at once, each within a timeout.

Each answer becomes a :class:`~controller.core.health.ProbeResult`; the decision core
aggregates a zone's endpoints and debounces. What a probe does depends on its URL:

* ``http://`` and ``https://``: one ``GET`` (``Connection: close``, redirects never
  followed). Healthy when the status is one of ``http.expectedStatus`` (default 200-299:
  3xx no longer counts) and, with ``http.body``, the first ``http.maxBodyBytes`` of the
  body contain the text or match the pattern. ``http.host`` is sent as the Host header
  (and, for HTTPS, is the TLS server name unless ``tls.serverName`` says otherwise);
  ``tls.caBundle`` names the CA certificates the endpoint's certificate must chain to.
* ``tcp://host:port``: a TCP connect; healthy when the connection is accepted.

A refused or reset connection, a TLS failure, or no answer within the timeout is not.

**A probe timed by a stalled operator is no evidence.** A probe judged by the clock (no
answer in time, or an answer later than the timeout) while the operator's own event loop
ran late by a quarter of the timeout or more (:class:`LoopLag`) is left out of the round:
the answer may have been waiting in the socket while the loop was busy elsewhere (a
100-app fleet's start-up once timed out healthy zones in bulk and failed an app over). The
zone keeps its state for that round; refused and reset connections and wrong answers still
count. Such probes are counted (``lifeboat_probes_inconclusive_total``) and logged.

**Every probe opens a new connection** and closes it after the answer: a probe must find
out whether the zone accepts *new* connections (a stopped zone must not hide behind a
pooled socket, and a zone whose listener is gone must fail at once). What makes the engine
cheap is everything around that connection (measured by ``python -m bench.probes``):

* each endpoint is compiled once per spec change into a :class:`Target` (request bytes,
  status set, TLS context, body matcher), so a probe allocates little more than its
  connection and its result;
* the HTTP exchange is an :class:`asyncio.Protocol` over the event loop's transport with
  a C parser (``httptools``, the llhttp parser Node and aiohttp use), not a full client
  session with its cookie jar, redirects and tracing;
* one timer per probe (``loop.call_at``) bounds connect, TLS handshake and answer
  together, instead of an ``asyncio.timeout`` scope;
* names are resolved at most once per :data:`DNS_CACHE_SECONDS` per name (concurrent
  lookups of one name share one ``getaddrinfo``); IP literals are never resolved;
* on the ``uvloop`` event loop (used by ``lifeboat run`` when installed) connection
  set-up costs a third of asyncio's.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import logging
import math
import os
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import urlsplit

import httptools

from controller import __version__, metrics
from controller.api.models import (
    BodyMatch,
    ConfigMapKeyRef,
    HealthPolicy,
    ResilientAppSpec,
    ZoneEndpoint,
)
from controller.core.health import ProbeOutcome, ProbeResult, ZoneKey

log = logging.getLogger(__name__)

DNS_CACHE_SECONDS: Final = 10.0
"""How long a name's addresses are used before it is resolved again (a failed lookup is
never cached): short against the TTLs of zonal load balancers' names (60 s on AWS)."""
CA_REFRESH_SECONDS: Final = 60.0
"""How often a CA bundle's ConfigMap is read again."""
USER_AGENT: Final = f"lifeboat-probe/{__version__}"

STALL_SHARE: Final = 0.25
"""A probe judged by the clock is inconclusive when the event loop ran this share of its
timeout late (or more) while it was in flight."""
LAG_PERIOD: Final = 0.05
"""How often :class:`LoopLag` looks at the clock."""
STALL_LOG_SECONDS: Final = 60.0
"""Inconclusive probes are said in the log at most once per this many seconds."""

ReadConfigMap = Callable[[str, str], Awaitable[Mapping[str, str]]]
"""``(namespace, name) -> data`` of a ConfigMap; raises LookupError when there is none."""


# ----------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint compiled for probing: everything a probe needs, built once."""

    key: ZoneKey
    host: str
    """What to connect to: a name or an IP literal (without brackets)."""
    port: int
    request: bytes = b""
    """The HTTP request; empty for a TCP connect."""
    tls: ssl.SSLContext | None = None
    server_name: str | None = None
    statuses: frozenset[int] = frozenset()
    expected: str = ""
    body: BodyMatch | None = None
    max_body: int = 0
    broken: str | None = None
    """Why the endpoint cannot be probed as configured (e.g. its CA bundle is missing):
    every probe of it fails with this detail."""
    numeric: bool = False
    """``host`` is an IP literal: nothing to resolve."""


def compile_target(
    key: ZoneKey,
    endpoint: ZoneEndpoint,
    health: HealthPolicy,
    tls: ssl.SSLContext | None = None,
    *,
    broken: str | None = None,
) -> Target:
    """``endpoint`` as a :class:`Target` under the app's ``health`` defaults; ``tls``: the
    context for HTTPS (default: the system's trust store)."""
    parts = urlsplit(endpoint.url)
    host = parts.hostname or ""
    numeric = _is_ip(host)
    if endpoint.tcp:
        return Target(key, host, parts.port or 0, broken=broken, numeric=numeric)
    http, tls_settings = endpoint.settings(health)
    assert http is not None  # settings() gives HTTP settings to every http(s) endpoint
    secure = parts.scheme == "https"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = http.host or parts.netloc
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
        "Accept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    server_name = None
    if secure:
        server_name = (tls_settings.server_name if tls_settings else None) or (
            _without_port(http.host) if http.host else host
        )
    return Target(
        key,
        host,
        parts.port or (443 if secure else 80),
        request=request,
        tls=(tls or default_tls()) if secure else None,
        server_name=server_name,
        statuses=http.statuses,
        expected=",".join(http.expected_status),
        body=http.body,
        max_body=http.max_body_bytes,
        broken=broken,
        numeric=numeric,
    )


@functools.cache
def default_tls() -> ssl.SSLContext:
    """The system's trust store, loaded once per process."""
    return ssl.create_default_context()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _without_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if ":" in host else host


# ----------------------------------------------------------------------------- CA bundles


class TrustError(RuntimeError):
    """A CA bundle cannot be used; the message names the ConfigMap, never its content."""


@dataclass
class _Bundle:
    read_at: float
    context: ssl.SSLContext | None
    problem: str | None


class TrustStore:
    """CA bundles from ConfigMaps (``tls.caBundle``) as TLS contexts, read again every
    :data:`CA_REFRESH_SECONDS`. A bundle that cannot be read again keeps its last good
    context (and reports the problem); one never read fails the probes that need it.
    Bundles are never logged: problems name the ConfigMap and key only."""

    def __init__(
        self,
        read: ReadConfigMap | None = None,
        *,
        refresh: float = CA_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._refresh = refresh
        self._clock = clock
        self._bundles: dict[tuple[str, str, str], _Bundle] = {}
        self._contexts: dict[bytes, ssl.SSLContext] = {}  # by digest: one per distinct PEM

    async def context(self, namespace: str, ref: ConfigMapKeyRef) -> ssl.SSLContext:
        """The TLS context trusting ``ref``'s certificates (TrustError when none)."""
        slot = (namespace, ref.name, ref.key)
        bundle = self._bundles.get(slot)
        now = self._clock()
        if bundle is None or now - bundle.read_at >= self._refresh:
            context, problem = await self._load(namespace, ref)
            if context is None and bundle is not None:
                context = bundle.context  # the last good one
            bundle = self._bundles[slot] = _Bundle(now, context, problem)
        if bundle.context is None:
            raise TrustError(bundle.problem or "CA bundle unavailable")
        return bundle.context

    def problems(self, namespace: str) -> list[str]:
        """What is wrong with the bundles of ``namespace``, as last read."""
        return sorted(
            b.problem for (ns, _, _), b in self._bundles.items() if ns == namespace and b.problem
        )

    def forget(self, namespace: str, names: set[tuple[str, str]]) -> None:
        """Drop the bundles of ``namespace`` other than ``names`` ((name, key) pairs)."""
        for slot in [s for s in self._bundles if s[0] == namespace and s[1:] not in names]:
            del self._bundles[slot]

    async def _load(
        self, namespace: str, ref: ConfigMapKeyRef
    ) -> tuple[ssl.SSLContext | None, str | None]:
        where = f"CA bundle ConfigMap {namespace}/{ref.name}"
        if self._read is None:
            return None, f"{where}: no Kubernetes client to read it"
        try:
            data = await self._read(namespace, ref.name)
        except LookupError:
            return None, f"{where}: not found"
        except Exception as error:  # API errors: say which, not what the answer held
            return None, f"{where}: cannot be read ({type(error).__name__})"
        pem = data.get(ref.key)
        if not pem:
            return None, f"{where}: has no key {ref.key}"
        digest = hashlib.sha256(pem.encode()).digest()
        context = self._contexts.get(digest)
        if context is None:
            try:
                context = ssl.create_default_context(cadata=pem)
            except (ssl.SSLError, ValueError):
                return None, f"{where}: key {ref.key} holds no usable PEM certificate"
            self._contexts[digest] = context
        return context, None


# ----------------------------------------------------------------------------- names


class Resolver:
    """Addresses of names, cached for ``ttl`` seconds; one lookup per name at a time."""

    def __init__(self, ttl: float = DNS_CACHE_SECONDS) -> None:
        self._ttl = ttl
        self._cache: dict[tuple[str, int], tuple[float, list[tuple[str, int]]]] = {}
        self._pending: dict[tuple[str, int], asyncio.Future[list[tuple[str, int]]]] = {}

    async def addresses(self, host: str, port: int) -> list[tuple[str, int]]:
        """``(address, port)`` pairs for ``host``, in the resolver's order."""
        now = time.monotonic()
        slot = (host, port)
        cached = self._cache.get(slot)
        if cached is not None and cached[0] > now:
            return cached[1]
        pending = self._pending.get(slot)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[tuple[str, int]]] = loop.create_future()
        self._pending[slot] = future
        try:
            found = await self.lookup(host, port)
            if len(self._cache) > 10_000:  # names of removed apps: drop the expired
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[slot] = (now + self._ttl, found)
            future.set_result(found)
            return found
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._pending[slot]

    async def lookup(self, host: str, port: int) -> list[tuple[str, int]]:
        """Resolve ``host`` now (the system's resolver, in the loop's thread pool)."""
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys((str(i[4][0]), int(i[4][1])) for i in infos))


# ----------------------------------------------------------------------------- exchanges


class _Exchange(asyncio.Protocol):
    """One HTTP request and its answer on a fresh connection."""

    __slots__ = ("body", "done", "parser", "size", "status", "target", "transport", "waiter")

    def __init__(self, target: Target, waiter: asyncio.Future[tuple[ProbeOutcome, str]]) -> None:
        self.target = target
        self.waiter = waiter
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.body: list[bytes] | None = [] if target.body is not None else None
        self.size = 0
        self.done = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport.write(self.target.request)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            if self.status and isinstance(error, httptools.HttpParserUpgrade):
                self._answered()
            else:
                self._finish(ProbeOutcome.FAIL, "not an HTTP answer")

    def eof_received(self) -> bool:
        if self.status:  # an answer without a length ends with the connection
            self._answered()
        else:
            self._finish(ProbeOutcome.FAIL, "server closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.eof_received()
        else:
            self._finish(ProbeOutcome.FAIL, describe(exc))

    # httptools callbacks

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, chunk: bytes) -> None:
        if self.done:
            return
        self.size += len(chunk)
        if self.body is not None:
            self.body.append(chunk)
        if self.size >= self.target.max_body:
            self._answered()

    def on_message_complete(self) -> None:
        self._answered()

    # verdict

    def _answered(self) -> None:
        if self.done:
            return
        target, status = self.target, self.status
        if status not in target.statuses:
            self._finish(ProbeOutcome.FAIL, f"HTTP {status}, expected {target.expected}")
        elif target.body is not None and not target.body.matches(self._text()):
            self._finish(ProbeOutcome.FAIL, f"HTTP {status}, body does not match")
        else:
            self._finish(ProbeOutcome.OK, f"HTTP {status}")

    def _text(self) -> str:
        raw = b"".join(self.body or ())[: self.target.max_body]
        return raw.decode("utf-8", errors="replace")

    def _finish(self, outcome: ProbeOutcome, detail: str) -> None:
        if self.done:
            return
        self.done = True
        if not self.waiter.done():
            self.waiter.set_result((outcome, detail))
        if self.transport is not None:
            self.transport.close()


class _Deadline:
    """Cancels the probing task when its time is up: one timer bounds connect, TLS
    handshake and answer (cheaper than an ``asyncio.timeout`` scope per probe)."""

    __slots__ = ("cancelling", "expired", "handle", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        task = asyncio.current_task(loop)
        assert task is not None
        self.task = task
        self.cancelling = task.cancelling()
        self.expired = False
        self.handle = loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self.task.cancel()

    def timed_out(self) -> bool:
        """After a CancelledError: whether this deadline caused it (then it is absorbed)."""
        return self.expired and self.task.uncancel() <= self.cancelling


class LoopLag:
    """How late the event loop runs: a timer every ``period`` seconds notes how late it
    fired. Started on first use inside the loop; ``worst(since)`` is the latest delay seen
    since then, including one still going on (the timer overdue now)."""

    def __init__(self, period: float = LAG_PERIOD, kept: int = 256) -> None:
        self.period = period
        self._samples: deque[tuple[float, float]] = deque(maxlen=kept)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start on the running loop (again, if the loop is another one)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._handle is not None:
            return
        self.stop()
        self._loop = loop
        self._schedule(loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.period
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._samples.append((now, now - self._due))
        self._schedule(now)

    def worst(self, since: float) -> float:
        """The longest the loop ran late since ``since`` (loop time), seconds."""
        if self._loop is None:
            return 0.0
        now = self._loop.time()
        worst = max(0.0, now - self._due) if self._handle is not None else 0.0
        for at, late in reversed(self._samples):
            if at < since:
                break
            worst = max(worst, late)
        return worst


# ----------------------------------------------------------------------------- the prober


@dataclass
class _AppTargets:
    sites: Any
    health: HealthPolicy
    refreshed: float
    targets: tuple[Target, ...] = field(default=())


class HttpProber:
    """Probes zonal endpoints; one per operator, shared by every app's worker."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        read_config_map: ReadConfigMap | None = None,
        resolver: Resolver | None = None,
        source_address: str | None = None,
    ) -> None:
        """``source_address``: the local IP address every probe connects from (``lifeboat
        run --probe-source-address``); ``None`` lets the kernel choose. Only endpoint
        addresses of its family are tried."""
        self._clock = clock
        self.trust = TrustStore(read_config_map)
        self._resolver = resolver or Resolver()
        self._apps: dict[Hashable, _AppTargets] = {}
        self._source = source_address_of(source_address) if source_address else None
        self.lag = LoopLag()
        self._stalls = 0
        self._stalls_said = -math.inf

    async def close(self) -> None:
        """Nothing stays open between probes; kept for the operator's clean-up."""
        self._apps.clear()
        self.lag.stop()

    # --------------------------------------------------------------- rounds

    async def probe_app(
        self, spec: ResilientAppSpec, namespace: str = "", app: Hashable = None
    ) -> tuple[ProbeResult, ...]:
        """One round: every endpoint of every site, concurrently. ``namespace`` is where
        CA bundles are read; ``app`` (any key) keeps the app's compiled endpoints from
        one round to the next."""
        targets = await self.targets(spec, namespace, app)
        limit = spec.health.timeout_seconds
        self.lag.start()
        if len(targets) == 1:
            results: tuple[ProbeResult | None, ...] = (await self._conclusive(targets[0], limit),)
        else:
            results = tuple(await asyncio.gather(*[self._conclusive(t, limit) for t in targets]))
        return tuple(r for r in results if r is not None)

    async def _conclusive(self, target: Target, limit: float) -> ProbeResult | None:
        """A probe of ``target``, None when the clock judged it while the loop stalled."""
        begun = asyncio.get_running_loop().time()
        result = await self.probe(target, limit)
        timed = result.outcome is ProbeOutcome.TIMEOUT or (result.ok and result.latency > limit)
        if not timed:
            return result
        stalled = self.lag.worst(begun)
        if stalled < STALL_SHARE * limit:
            return result
        metrics.PROBES_INCONCLUSIVE.inc()
        self._stalls += 1
        now = time.monotonic()
        if now - self._stalls_said >= STALL_LOG_SECONDS:
            log.warning(
                "%d probe(s) judged by the clock while the operator ran %.2fs late are no "
                "evidence (e.g. %s: %s); the operator is overloaded",
                self._stalls,
                stalled,
                target.key,
                result.detail,
            )
            self._stalls, self._stalls_said = 0, now
        return None

    def forget(self, app: Hashable) -> None:
        """The app is gone: drop what was kept for it."""
        self._apps.pop(app, None)

    def problems(self, namespace: str) -> list[str]:
        """Why some endpoints of ``namespace`` cannot be probed as configured."""
        return self.trust.problems(namespace)

    async def targets(
        self, spec: ResilientAppSpec, namespace: str = "", app: Hashable = None
    ) -> tuple[Target, ...]:
        """The app's endpoints compiled; again only when the spec changed or a CA bundle
        is due to be read again."""
        kept = self._apps.get(app) if app is not None else None
        now = time.monotonic()
        if (
            kept is not None
            and kept.sites == spec.sites
            and kept.health == spec.health
            and now - kept.refreshed < CA_REFRESH_SECONDS
        ):
            return kept.targets
        compiled = []
        for site in spec.sites:
            for endpoint in site.endpoints:
                compiled.append(await self._compile(namespace, site.name, endpoint, spec.health))
        if app is not None:
            self._apps[app] = _AppTargets(spec.sites, spec.health, now, tuple(compiled))
        return tuple(compiled)

    async def _compile(
        self, namespace: str, site: str, endpoint: ZoneEndpoint, health: HealthPolicy
    ) -> Target:
        key = ZoneKey(site, endpoint.zone)
        _, tls = endpoint.settings(health)
        if tls is None or tls.ca_bundle is None:
            return compile_target(key, endpoint, health)
        try:
            context = await self.trust.context(namespace, tls.ca_bundle)
        except TrustError as error:
            return compile_target(key, endpoint, health, broken=str(error))
        return compile_target(key, endpoint, health, context)

    # --------------------------------------------------------------- one probe

    async def probe(self, target: Target, limit: float) -> ProbeResult:
        """Probe ``target`` once, given up after ``limit`` seconds."""
        at = self._clock()
        started = time.monotonic()
        if target.broken is not None:
            return ProbeResult(target.key, ProbeOutcome.FAIL, at, 0.0, target.broken)
        loop = asyncio.get_running_loop()
        deadline = _Deadline(loop, loop.time() + limit)
        transport: asyncio.BaseTransport | None = None
        try:
            if target.numeric:
                addresses = [(target.host, target.port)]
            else:
                addresses = await self._resolver.addresses(target.host, target.port)
            if not target.request:
                transport = await _connect(loop, target, addresses, asyncio.Protocol, self._source)
                outcome, detail = ProbeOutcome.OK, "connected"
            else:
                waiter: asyncio.Future[tuple[ProbeOutcome, str]] = loop.create_future()
                transport = await _connect(
                    loop, target, addresses, lambda: _Exchange(target, waiter), self._source
                )
                outcome, detail = await waiter
        except asyncio.CancelledError:
            if not deadline.timed_out():
                raise
            outcome, detail = ProbeOutcome.TIMEOUT, f"no answer in {limit:g}s"
        except Exception as error:  # one odd endpoint must never fail the whole round
            outcome, detail = ProbeOutcome.FAIL, describe(error)
        finally:
            deadline.handle.cancel()
            if transport is not None:
                transport.close()
        return ProbeResult(target.key, outcome, at, time.monotonic() - started, detail)


async def _connect(
    loop: asyncio.AbstractEventLoop,
    target: Target,
    addresses: list[tuple[str, int]],
    factory: Callable[[], asyncio.BaseProtocol],
    source: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
) -> asyncio.BaseTransport:
    """A new connection to the first address that accepts one (as ``create_connection``
    does with a name, but without resolving it again); from ``source`` when given, to the
    addresses of its family only."""
    failure: Exception | None = None
    local = (str(source), 0) if source is not None else None
    for host, port in addresses:
        if source is not None and ipaddress.ip_address(host).version != source.version:
            failure = failure or OSError(
                f"{target.host} has no IPv{source.version} address to probe from {source}"
            )
            continue
        try:
            transport, _ = await loop.create_connection(
                factory,
                host,
                port,
                ssl=target.tls,
                server_hostname=target.server_name,
                local_addr=local,
            )
            return transport
        except ssl.SSLError:
            raise  # the address answered: its certificate is the verdict
        except OSError as error:
            failure = error
    raise failure or OSError(f"{target.host} has no address")


def source_address_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A probe source address: an IP literal (``ValueError`` otherwise)."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def describe(error: BaseException) -> str:
    """A failed probe's detail: what went wrong, in a few words (never a secret)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS: certificate not accepted: {error.verify_message or error.reason}"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error.reason or type(error).__name__}"
    if isinstance(error, socket.gaierror):
        return f"name does not resolve: {error.strerror or error}"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, OSError):
        errno = error.errno
        reason = os.strerror(errno) if errno else str(error.strerror or error)
        return f"connection failed: {reason}"
    return type(error).__name__


# ----------------------------------------------------------------------------- when


class RoundSchedule:
    """When each app's probe rounds start: on a fixed grid of its interval, shifted by a
    phase drawn from a stable hash of the app's name. Apps started together (every app,
    when the operator starts or takes the lead) spread over the interval instead of
    probing in one burst, and a late round does not move the later ones."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._origin = clock()

    def phase(self, app: str, interval: float) -> float:
        """Seconds into each interval at which ``app``'s rounds fall."""
        return zlib.crc32(app.encode()) / 2**32 * interval

    def after(self, app: str, interval: float, moment: float) -> float:
        """``app``'s first slot strictly after ``moment`` (both on the monotonic clock)."""
        start = self._origin + self.phase(app, interval)
        slots = math.floor((moment - start) / interval) + 1
        return start + slots * interval
