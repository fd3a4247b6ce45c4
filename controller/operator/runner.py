"""Run the operator: in its own process (``lifeboat run``) or in a thread (tests, demo).

With leader election (the default) the operator first takes the ``lifeboat`` Lease in
the controller namespace and only then starts its handlers; if it loses the Lease it stops
at once and :func:`serve` raises :class:`~controller.operator.leader.LeadershipLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp.web
import kopf
import kubernetes.client
from prometheus_client import start_http_server

from controller import metrics
from controller.operator import handlers, kubeconfig
from controller.operator.leader import LeadershipLost, LeaseElector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorConfig:
    kubeconfig: str | None = None
    context: str | None = None
    namespaces: tuple[str, ...] = ()
    """Namespaces whose ResilientApps to serve; empty: every namespace."""
    controller_namespace: str = "lifeboat-system"
    """Where credentials Secrets and the leader Lease live (the namespace Lifeboat runs in)."""
    metrics_address: str | None = "0.0.0.0"  # noqa: S104 - scraped at the pod IP
    metrics_port: int = 8080
    liveness_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    leader_election: bool = True
    lease_seconds: float = 15.0
    volume_interval_override: float | None = None
    """Sandbox and tests only: snapshot every volume dataset this often (seconds) instead
    of its ``intervalSeconds``, which the API keeps at a minute or more."""


def start_metrics(config: OperatorConfig) -> int | None:
    """Serve /metrics in a daemon thread; the bound port (None when disabled)."""
    if config.metrics_address is None:
        return None
    server, _thread = start_http_server(
        config.metrics_port, addr=config.metrics_address, registry=metrics.REGISTRY
    )
    port = int(server.server_address[1])
    log.info("metrics on http://%s:%d/metrics", config.metrics_address, port)
    return port


async def serve(
    config: OperatorConfig,
    *,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
) -> None:
    """Run until stopped: by ``stop_flag``, SIGINT/SIGTERM (main thread), or a lost Lease."""
    configuration = kubeconfig.load(config.kubeconfig, config.context)
    halt = asyncio.Event()
    helpers = [asyncio.create_task(_follow(stop_flag, halt))] if stop_flag else []
    _stop_on_signals(halt)
    keeper: asyncio.Task[None] | None = None
    try:
        if config.leader_election:
            elector = LeaseElector(
                kubernetes.client.CoordinationV1Api(kubernetes.client.ApiClient(configuration)),
                config.controller_namespace,
                lease_seconds=config.lease_seconds,
                renew_seconds=config.lease_seconds / 3,
            )
            async with _standby_health(config.liveness_endpoint):
                acquired = await elector.acquire(halt)
            if not acquired:
                return
            keeper = asyncio.create_task(_hold(elector, halt))
        metrics.LEADER.set(1)  # from here on this instance acts
        await _operate(config, configuration, halt, ready_flag)
    finally:
        metrics.LEADER.set(0)
        halt.set()
        for helper in helpers:
            helper.cancel()
        if keeper is not None:
            await keeper  # releases the Lease, or raises LeadershipLost


async def _operate(
    config: OperatorConfig,
    configuration: kubernetes.client.Configuration,
    halt: asyncio.Event,
    ready_flag: threading.Event | None,
) -> None:
    wiring = handlers.build(
        configuration,
        config.controller_namespace,
        volume_interval_override=config.volume_interval_override,
    )
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    log.info(
        "Lifeboat operator for %s on %s",
        ", ".join(config.namespaces) or "all namespaces",
        configuration.host,
    )
    await kopf.operator(
        registry=wiring.registry,
        settings=settings,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=True,  # one actor at a time is ensured by the Lease, not kopf peering
        liveness_endpoint=config.liveness_endpoint,
        stop_flag=halt,
        ready_flag=ready_flag,
    )


@contextlib.asynccontextmanager
async def _standby_health(endpoint: str | None) -> AsyncIterator[None]:
    """Answer the liveness endpoint while waiting for the Lease: a standby is healthy.

    Once leading, kopf serves the endpoint itself (with its probes). Without this a standby
    replica would fail its liveness probe and be restarted over and over.
    """
    if endpoint is None:
        yield
        return
    parts = urllib.parse.urlsplit(endpoint)

    async def standby(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"leader": False})

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get(parts.path or "/", standby)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await aiohttp.web.TCPSite(runner, parts.hostname or "localhost", parts.port or 80).start()
        yield
    finally:
        await runner.cleanup()


async def _hold(elector: LeaseElector, halt: asyncio.Event) -> None:
    try:
        await elector.keep(halt)
    except LeadershipLost:
        log.error("leader election: lost the lease; stopping at once")
        halt.set()
        raise


async def _follow(flag: threading.Event, halt: asyncio.Event) -> None:
    """Set ``halt`` when the thread-safe ``flag`` is set (polled: no thread left behind)."""
    while not flag.is_set():  # noqa: ASYNC110 - a threading.Event offers no awaitable
        await asyncio.sleep(0.2)
    halt.set()


def _stop_on_signals(halt: asyncio.Event) -> None:
    """SIGINT/SIGTERM stop the operator, also while it waits for the Lease.

    kopf installs its own handlers once it runs; these cover the time before.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, halt.set)


def run(config: OperatorConfig) -> None:
    """``lifeboat run``: metrics, then the operator in this thread until a signal."""
    start_metrics(config)
    asyncio.run(serve(config))


@contextmanager
def in_background(
    config: OperatorConfig, *, wait_ready: bool = True, ready_timeout: float = 60.0
) -> Iterator[threading.Event]:
    """The operator in a daemon thread for the duration of the block (tests, demo).

    Yields its ready flag (set once it runs handlers, i.e. once it leads).
    """
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(serve(config, stop_flag=stop, ready_flag=ready))
        except BaseException as error:  # surfaced to the caller below
            failure.append(error)
            ready.set()

    thread = threading.Thread(target=target, name="lifeboat-operator", daemon=True)
    thread.start()
    if wait_ready and (not ready.wait(ready_timeout) or failure):
        stop.set()
        raise RuntimeError(f"operator did not start: {failure[0] if failure else 'timeout'}")
    try:
        yield ready
    finally:
        stop.set()
        thread.join(30)
