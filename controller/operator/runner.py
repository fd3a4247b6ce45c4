"""Run the operator: in its own process (``lifeboat run``) or in a thread (tests, demo).

With leader election (the default) the operator first takes the ``lifeboat`` Lease in
the controller namespace and only then starts its handlers. If it loses the Lease (another
instance took it, or it could not renew it in time, e.g. while the API server is
unreachable) it stops acting at once — its handlers, their running actions and
replication stop — and becomes a candidate again, in the same process: it never exits
for that, so recovery does not depend on a kubelet restart. Every term of leadership
starts from what the API server holds (the apps' status is the operator's memory).

As one of several peers (``--peer-name``, ADR 0009) the operator first sets the peers up
from ``LifeboatPeers/lifeboat`` in its own cluster (:mod:`.peer_setup`), then runs the peer
link (:class:`~controller.operator.peers.Peers`: its view published every heartbeat, the
others' read) for as long as it runs, leading or not, and hands it to every app worker. A
changed peer list sets the peers up anew in the same process: the running session goes on
until the new set-up succeeds, then makes way for it (its heartbeat goes on, without app
views, until its operator has shut down, so the other peers never stop hearing this one).
A peer's session runs its handlers from the start — every peer probes, decides and
publishes — and a
:class:`~.quorum.QuorumElector` holds the ``lifeboat`` Lease in every peer cluster it
reaches: the workers act only while it holds a majority, and write apps' status to a
majority of the peer clusters (:class:`~.peer_status.PeerStatusWriter`, ADR 0010).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import aiohttp.web
import kopf
import kubernetes.client
from prometheus_client import start_http_server

from controller import metrics
from controller.operator import handlers, kubeconfig, peer_setup
from controller.operator.context import Leadership, NoPeers, PeerLink
from controller.operator.kube import KubeClient
from controller.operator.leader import LeadershipLost, LeaseElector, LeaseTimings
from controller.operator.loop import EventLoop, loop_factory, loop_name
from controller.operator.peer_status import PeerStatusWriter, StatusStore
from controller.operator.peers import Peers
from controller.operator.quorum import QuorumElector
from controller.operator.shards import Shard

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
    lease_seconds: float = 10.0
    """Leader Lease duration; the renew deadline and retry period follow client-go's
    proportions (:meth:`~controller.operator.leader.LeaseTimings.for_lease`)."""
    secret_recheck_seconds: float = 60.0
    """How often every CloudProvider's credentials Secret is read again (a rotation
    reconnects the provider and restarts its replication flows)."""
    volume_interval_override: float | None = None
    """Sandbox and tests only: snapshot every volume dataset this often (seconds) instead
    of its ``intervalSeconds``, which the API keeps at a minute or more."""
    event_loop: EventLoop = "auto"
    """``auto``: uvloop where installed, else asyncio's loop (see :mod:`.loop`)."""
    probe_source_address: str | None = None
    """The local IP address every probe connects from (``None``: the kernel's choice). Peers
    sharing a host (the sandbox) probe from distinct addresses, so that a fault can cut one
    peer off from a zone."""
    peer_name: str | None = None
    """Multi-peer mode: this peer's name in ``LifeboatPeers/lifeboat`` (None: one cluster)."""
    shard: Shard = field(default_factory=Shard)
    """The apps this process serves (:mod:`.shards`; the default serves all)."""

    def __post_init__(self) -> None:
        if self.shard.sharded and self.peer_name is not None:
            raise ValueError("shards (--shard) and peers (--peer-name) do not combine yet")


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
    """Run until stopped by ``stop_flag`` or SIGINT/SIGTERM (main thread).

    With leader election, act only while holding the Lease; a lost Lease ends the term
    (handlers stop) and the instance waits for the Lease again.
    """
    configuration = kubeconfig.load(config.kubeconfig, config.context)
    halt = asyncio.Event()
    helpers = [asyncio.create_task(_follow(stop_flag, halt))] if stop_flag else []
    _stop_on_signals(halt)
    try:
        if config.peer_name is None:
            await _session(config, configuration, halt, ready_flag, NoPeers())
        else:
            await _as_peer(config, configuration, config.peer_name, halt, ready_flag)
    finally:
        halt.set()
        for helper in helpers:
            helper.cancel()


async def _session(
    config: OperatorConfig,
    configuration: kubernetes.client.Configuration,
    halt: asyncio.Event,
    ready_flag: threading.Event | None,
    peers: PeerLink,
) -> None:
    """Operate (while holding the Lease, with leader election) until ``halt`` is set."""
    if not config.leader_election:
        metrics.LEADER.set(1)
        try:
            await _operate(config, configuration, halt, ready_flag, peers)
        finally:
            metrics.LEADER.set(0)
        return
    elector = LeaseElector(
        kubernetes.client.CoordinationV1Api(kubeconfig.api_client(configuration)),
        config.controller_namespace,
        config.shard.lease_name,
        timings=LeaseTimings.for_lease(config.lease_seconds),
    )
    while not halt.is_set():
        async with _standby_health(config.liveness_endpoint):
            if not await elector.acquire(halt):
                return
        await _lead(config, configuration, elector, halt, ready_flag, peers)


SET_UP_RETRY_SECONDS = 10.0
"""How often a peer list that cannot be set up (a Secret missing, a peer not listed) is
tried again while the previous set-up goes on."""


async def _as_peer(
    config: OperatorConfig,
    configuration: kubernetes.client.Configuration,
    me: str,
    halt: asyncio.Event,
    ready_flag: threading.Event | None,
) -> None:
    """Sessions with the peer link running throughout, one per set-up of the peers: a
    changed peer list ends the session once the new set-up is ready."""
    own = kubeconfig.api_client(configuration)
    try:
        clusters: peer_setup.PeerClusters | None = await peer_setup.build_async(
            own, me, config.controller_namespace
        )
        while clusters is not None and not halt.is_set():
            peers = Peers.connect(clusters)
            log.info(
                "peer %s of %s (heartbeat %gs)",
                me,
                ", ".join(p.name for p in clusters.spec.peers),
                peers.heartbeat,
            )
            session, beating = asyncio.Event(), asyncio.Event()
            # The link beats until the session's operator has shut down (which can take
            # tens of seconds), not only until the session was told to end: the other
            # peers keep hearing this one across a new set-up. Its views are withdrawn as
            # the session ends, so nothing stale is published meanwhile.
            link = asyncio.create_task(peers.run(beating))
            withdraw = asyncio.create_task(_withdraw_when(session, peers))
            relay = asyncio.create_task(_relay(halt, session))
            anew = asyncio.create_task(_set_up_anew(own, me, config, peers, session))
            try:
                await _quorum_session(config, configuration, clusters, session, ready_flag, peers)
            finally:
                session.set()
                beating.set()
                relay.cancel()
                if not anew.done():
                    anew.cancel()
                await asyncio.gather(link, withdraw, relay, anew, return_exceptions=True)
                peers.close()
                clusters.close()
            clusters = None
            if not halt.is_set() and not anew.cancelled() and anew.exception() is None:
                clusters = anew.result()  # the peer list changed: the next session
    finally:
        own.close()  # type: ignore[no-untyped-call]


async def _withdraw_when(session: asyncio.Event, peers: Peers) -> None:
    await session.wait()
    peers.withdraw()


async def _quorum_session(
    config: OperatorConfig,
    configuration: kubernetes.client.Configuration,
    clusters: peer_setup.PeerClusters,
    halt: asyncio.Event,
    ready_flag: threading.Event | None,
    peers: Peers,
) -> None:
    """Operate until ``halt`` is set: handlers from the start (every peer probes, decides
    and publishes), acting only while the quorum elector holds the ``lifeboat`` Lease in a
    majority of the peer clusters, apps' status written to a majority of them."""
    elector = QuorumElector(
        [(c.name, kubernetes.client.CoordinationV1Api(c.api)) for c in clusters.clusters],
        config.controller_namespace,
        clusters.me,
        timings=LeaseTimings.for_lease(config.lease_seconds),
        allow_solo=clusters.spec.allow_solo,
    )
    # Each peer cluster's status calls on threads of their own: a lost cluster's calls,
    # each waiting out its deadline, hold only its own threads.
    pools = {
        c.name: ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"lifeboat-status-{c.name}")
        for c in clusters.clusters
    }
    statuses = PeerStatusWriter(
        [(c.name, KubeClient(c.api, executor=pools[c.name])) for c in clusters.clusters]
    )
    log.info(
        "peer %s acts only while holding the lifeboat Lease in %d of %d peer clusters",
        clusters.me,
        clusters.majority,
        len(clusters.clusters),
    )
    peers.follow(elector)
    stop = asyncio.Event()
    election = asyncio.create_task(elector.run(stop))
    try:
        await _operate(
            config, configuration, halt, ready_flag, peers, leadership=elector, statuses=statuses
        )
    finally:
        stop.set()
        await election  # gives the Leases up
        for pool in pools.values():
            pool.shutdown(wait=False, cancel_futures=True)


async def _set_up_anew(
    own: kubernetes.client.ApiClient,
    me: str,
    config: OperatorConfig,
    peers: Peers,
    session: asyncio.Event,
) -> peer_setup.PeerClusters:
    """Once the peer list changed: the new set-up (retried while it fails), then the end
    of the current session."""
    await peers.membership_changed.wait()
    failing: str | None = None
    while True:
        try:
            clusters = await peer_setup.build_async(own, me, config.controller_namespace)
        except Exception as error:
            problem = str(error).splitlines()[0] if str(error) else type(error).__name__
            if problem != failing:
                log.warning(
                    "peers: the new peer list cannot be set up (%s); going on with the "
                    "previous one, trying again every %gs",
                    problem,
                    SET_UP_RETRY_SECONDS,
                )
            failing = problem
            await asyncio.sleep(SET_UP_RETRY_SECONDS)
            continue
        log.info("peers: set up anew (%s)", ", ".join(p.name for p in clusters.spec.peers))
        session.set()
        return clusters


async def _lead(
    config: OperatorConfig,
    configuration: kubernetes.client.Configuration,
    elector: LeaseElector,
    halt: asyncio.Event,
    ready_flag: threading.Event | None,
    peers: PeerLink,
) -> None:
    """One term of leadership: operate while the Lease is held; release it when halted."""
    term = asyncio.Event()
    relay = asyncio.create_task(_relay(halt, term))
    keeper = asyncio.create_task(_hold(elector, term))
    metrics.LEADER.set(1)  # from here on this instance acts
    try:
        await _operate(config, configuration, term, ready_flag, peers)
    finally:
        metrics.LEADER.set(0)
        term.set()
        relay.cancel()
        lost = await keeper  # releases the Lease unless it was lost
    if not lost:
        # kopf returns on its own only when it caught SIGINT/SIGTERM itself (it replaces
        # our signal handlers while it runs): stop, as asked.
        halt.set()


async def _operate(
    config: OperatorConfig,
    configuration: kubernetes.client.Configuration,
    halt: asyncio.Event,
    ready_flag: threading.Event | None,
    peers: PeerLink,
    *,
    leadership: Leadership | None = None,
    statuses: StatusStore | None = None,
) -> None:
    wiring = handlers.build(
        configuration,
        config.controller_namespace,
        volume_interval_override=config.volume_interval_override,
        probe_source_address=config.probe_source_address,
        peers=peers,
        secret_recheck_seconds=config.secret_recheck_seconds,
        leadership=leadership,
        statuses=statuses,
        shard=config.shard,
    )
    settings = kopf.OperatorSettings()
    handlers.configure(settings, config.shard)
    log.info(
        "Lifeboat operator for %s on %s (%s event loop)%s",
        ", ".join(config.namespaces) or "all namespaces",
        configuration.host,
        loop_name(),
        f", shard {config.shard}" if config.shard.sharded else "",
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


async def _hold(elector: LeaseElector, term: asyncio.Event) -> bool:
    """Keep the Lease until ``term`` is set (then release it); whether it was lost."""
    try:
        await elector.keep(term)
    except LeadershipLost as error:
        metrics.LEADERSHIP_LOSSES.inc()
        log.error("leader election: %s; stopping at once, then standing by", error)
        term.set()
        return True
    return False


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    """Set ``target`` when ``source`` is set."""
    await source.wait()
    target.set()


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
    with asyncio.Runner(loop_factory=loop_factory(config.event_loop)) as runner:
        runner.run(serve(config))


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
            with asyncio.Runner(loop_factory=loop_factory(config.event_loop)) as runner:
                runner.run(serve(config, stop_flag=stop, ready_flag=ready))
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
