"""kopf wiring: the only module that registers handlers.

* ResilientApp: one daemon per app runs an :class:`~controller.operator.app.AppWorker`,
  with the app's replication engines beside it (object replication:
  :class:`~controller.operator.replication.ObjectReplication`; volume replication:
  :class:`~controller.operator.volumes.VolumeReplication`).
* CloudProvider: an index (so apps can resolve providers without API calls) and a
  credentials check on create/update/resume, re-tried while it fails.
* FailoverDrill: a timer per drill advances it (:class:`~controller.operator.drills.
  DrillTicker`: the pure drill core, the app's request annotation, the drill's status).
* Namespace: an index of their labels, for the CloudProviders' tenancy selectors. Each
  app's worker, actions, capacity drivers and replication engines see the providers
  through :class:`~controller.operator.providers.TenantProviders`, the view of the app's
  namespace.

kopf keeps its own bookkeeping in ``lifeboat.dev/*`` annotations and a ``lifeboat.dev/
finalizer`` (daemons need one so they are stopped before the object goes away); the
status is entirely Lifeboat's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
import kubernetes.client

from controller import metrics
from controller.api.annotations import LAST_HANDLED_CONFIGURATION
from controller.api.names import (
    CLOUD_PROVIDER,
    FAILOVER_DRILL,
    GROUP,
    RESILIENT_APP,
    VERSION,
)
from controller.operator import drills, kubeconfig
from controller.operator.app import AppContext, AppWorker, ReplicationSource
from controller.operator.capacity import CapacityDrivers
from controller.operator.context import Leadership, NoPeers, PeerLink, Sole, StartGate
from controller.operator.kube import KubeClient, ObjectRef
from controller.operator.kubeconfig import connection_info
from controller.operator.peer_status import StatusStore
from controller.operator.probes import HttpProber
from controller.operator.provider_monitor import ProviderMonitor
from controller.operator.providers import ProviderInfo, ProviderRegistry
from controller.operator.replication import ObjectReplication
from controller.operator.shards import Shard
from controller.operator.volumes import VolumeReplication, VolumeRestorer
from controller.providers.kubernetes.client import unreachable

log = logging.getLogger(__name__)

APPS = (GROUP, VERSION, RESILIENT_APP.plural)
PROVIDERS = (GROUP, VERSION, CLOUD_PROVIDER.plural)
DRILLS = (GROUP, VERSION, FAILOVER_DRILL.plural)
NAMESPACES = ("v1", "namespaces")
RETIRE_SECONDS = 300.0
"""At least this long a replaced CloudProvider connection stays open (see
:class:`~controller.operator.providers.ProviderRegistry`)."""


@dataclass(frozen=True)
class Wiring:
    """Everything the handlers share, built once per operator."""

    registry: kopf.OperatorRegistry
    app_context: Callable[[str], AppContext]
    """The context of the apps of a namespace (the providers as that namespace sees them)."""


def configure(settings: kopf.OperatorSettings, shard: Shard | None = None) -> None:
    """kopf settings: our annotation prefix, our finalizer (each shard's own), quiet event
    posting."""
    mine = shard or Shard()
    settings.persistence.finalizer = mine.finalizer
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=mine.kopf_prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=mine.kopf_prefix, key=LAST_HANDLED_CONFIGURATION
    )
    settings.posting.level = logging.WARNING  # our own Events tell the story
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 5
    settings.networking.error_backoffs = ApiRetries()


class ApiRetries:
    """kopf's retries of failed API requests: 1, 1, 2, 3, 5, 8, 13, 21 s, then every 30 s
    for ever. kopf's default gives up after the eighth retry (about a minute and a half)
    and ends the operator; an API server outage is waited out instead (with leader
    election the operator stops acting much sooner, when it cannot renew its Lease).

    A fresh iterator per request (kopf iterates the setting once per request), unsized,
    so kopf does not count attempts against a total.
    """

    FIRST = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)
    THEN = 30.0

    def __iter__(self) -> Iterator[float]:
        yield from self.FIRST
        yield from itertools.repeat(self.THEN)


def build(
    configuration: kubernetes.client.Configuration,
    controller_namespace: str,
    *,
    volume_interval_override: float | None = None,
    probe_source_address: str | None = None,
    peers: PeerLink | None = None,
    secret_recheck_seconds: float = 60.0,
    leadership: Leadership | None = None,
    statuses: StatusStore | None = None,
    shard: Shard | None = None,
) -> Wiring:
    """A kopf registry with Lifeboat's handlers, bound to one Kubernetes connection.

    ``volume_interval_override`` (sandbox and tests only) replaces every volume dataset's
    snapshot interval; ``probe_source_address`` is the local address probes connect from;
    ``peers``: the link to the other peers (multi-peer mode); ``secret_recheck_seconds``:
    how often every CloudProvider's credentials Secret is read again
    (:meth:`ProviderRegistry.recheck`); with peers, ``leadership`` says whether this peer
    acts (the quorum elector) and ``statuses`` keeps apps' status on a majority of the peer
    clusters; ``shard``: the apps this process serves (:mod:`.shards`; None: all)."""
    link = peers if peers is not None else NoPeers()
    mine = shard or Shard()

    def app_in_shard(namespace: str | None, name: str, **_: Any) -> bool:
        return mine.owns(namespace, name)

    def drill_in_shard(namespace: str | None, spec: kopf.Spec, **_: Any) -> bool:
        """A FailoverDrill is served by the shard of the app it names."""
        return mine.owns(namespace, spec.get("app"))

    registry = kopf.OperatorRegistry()
    kube_client = kubeconfig.api_client(configuration)
    capacity_client = kubeconfig.api_client(configuration)
    kube = KubeClient(kube_client)
    providers = ProviderRegistry(
        kube,
        controller_namespace,
        lookup=lambda _name: None,
        secret_ttl=secret_recheck_seconds,
        # A replaced connection stays open for the flows still on it until their app's
        # next round restarts them (rounds come every health.intervalSeconds).
        retire_seconds=max(RETIRE_SECONDS, 2 * secret_recheck_seconds),
    )
    prober = HttpProber(read_config_map=kube.read_config_map, source_address=probe_source_address)
    monitor = ProviderMonitor(providers, kube, writes=mine.writes_providers)

    def object_replication(ref: ObjectRef) -> ReplicationSource:
        return ObjectReplication(ref, kube, providers.tenant(ref.namespace or ""))

    def volume_replication(ref: ObjectRef) -> ReplicationSource:
        return VolumeReplication(
            ref,
            providers.tenant(ref.namespace or ""),
            kube,
            interval_override=volume_interval_override,
        )

    gate = StartGate()  # one for the whole operator: first rounds, a few at a time

    def app_context(namespace: str) -> AppContext:
        """The context of an app in ``namespace``: every provider it reaches, through
        capacity, volume restores and replication too, is checked against its tenancy."""
        tenant = providers.tenant(namespace)
        return AppContext(
            kube=kube,
            providers=tenant,
            prober=prober,
            capacity=CapacityDrivers(tenant, kube, capacity_client, controller_namespace),
            replication=(object_replication, volume_replication),
            restorer=VolumeRestorer(tenant),
            peers=link,
            leadership=leadership or Sole(),
            status_store=statuses,
            starting=gate,
        )

    background: list[asyncio.Task[None]] = []

    def index_of(kwargs: dict[str, Any]) -> kopf.Index[str, ProviderInfo]:
        index: kopf.Index[str, ProviderInfo] = kwargs["cloud_providers"]
        return index

    def lookup_in(index: kopf.Index[str, ProviderInfo]) -> Callable[[str], ProviderInfo | None]:
        def lookup(name: str) -> ProviderInfo | None:
            store = index.get(name)
            return next(iter(store), None) if store else None

        return lookup

    def labels_in(
        index: kopf.Index[str, Mapping[str, str]],
    ) -> Callable[[str], Mapping[str, str] | None]:
        def labels(namespace: str) -> Mapping[str, str] | None:
            store = index.get(namespace)
            return next(iter(store), None) if store else None

        return labels

    def every_provider(index: kopf.Index[str, ProviderInfo]) -> Callable[[], list[ProviderInfo]]:
        def listing() -> list[ProviderInfo]:
            return [info for name in list(index) for info in index.get(name, [])]

        return listing

    @kopf.on.login(id="login", registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(configuration)

    @kopf.on.startup(id="startup", registry=registry)
    async def startup(**kwargs: Any) -> None:
        index = index_of(kwargs)
        providers.lookup = lookup_in(index)
        providers.namespace_labels = labels_in(kwargs["namespace_labels"])
        background.append(asyncio.create_task(monitor.run(every_provider(index))))
        background.append(asyncio.create_task(providers.run_rechecks()))

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(**_: Any) -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await prober.close()
        for client in (kube_client, capacity_client):
            client.close()  # type: ignore[no-untyped-call]

    @kopf.index(*PROVIDERS, id="cloud_providers", registry=registry)
    def cloud_providers(
        name: str, uid: str, spec: kopf.Spec, meta: kopf.Meta, status: kopf.Status, **_: Any
    ) -> dict[str, ProviderInfo]:
        return {
            name: ProviderInfo(
                name, uid, int(meta.get("generation") or 0), dict(spec), dict(status)
            )
        }

    @kopf.index(*NAMESPACES, id="namespace_labels", registry=registry)
    def namespace_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
        return {name: dict(labels)}

    @kopf.daemon(*APPS, id="app", registry=registry, cancellation_timeout=10.0, when=app_in_shard)
    async def app_daemon(
        body: kopf.Body,
        name: str,
        namespace: str | None,
        uid: str,
        stopped: kopf.DaemonStopped,
        **_: Any,
    ) -> None:
        ref = ObjectRef(RESILIENT_APP.kind, RESILIENT_APP.plural, name, namespace, uid)
        stale = mine.stale_finalizers(body.get("metadata", {}).get("finalizers") or ())
        if stale:  # left by another shard layout: nobody else would take them off
            await kube.drop_finalizers(ref, stale)
        await AppWorker(ref, app_context(namespace or "")).run(body, lambda: bool(stopped))

    @kopf.on.delete(*APPS, id="app-deleted", registry=registry, optional=True, when=app_in_shard)
    def app_deleted(name: str, namespace: str | None, uid: str, **_: Any) -> None:
        metrics.forget_app(namespace or "", name)
        kube.forget(uid)

    ticker = drills.DrillTicker(
        drills.CustomObjects(kubernetes.client.CustomObjectsApi(kube_client))
    )
    acting = leadership or Sole()

    drills_failing: dict[str, str] = {}
    """Drill -> the API-server outage its ticks last failed on (said once, not each tick)."""

    @kopf.timer(
        *DRILLS,
        id="drill",
        registry=registry,
        interval=drills.TICK_SECONDS,
        when=drill_in_shard,
    )
    async def drill_timer(
        name: str, namespace: str | None, uid: str, meta: kopf.Meta, **_: Any
    ) -> None:
        if not acting.leading:
            return
        ref = ObjectRef(FAILOVER_DRILL.kind, FAILOVER_DRILL.plural, name, namespace, uid)
        stale = mine.stale_finalizers(meta.get("finalizers") or ())
        if stale:  # left by another shard layout: nobody else would take them off
            await kube.drop_finalizers(ref, stale)
        key = f"{namespace}/{name}"
        try:
            events = await asyncio.to_thread(ticker.tick, namespace or "", name)
        except Exception as error:
            metrics.RECONCILE_ERRORS.labels(kind=FAILOVER_DRILL.kind).inc()
            outage = unreachable(error)
            if outage is None:
                raise  # kopf retries the handler and shows what went wrong
            # The API server is down or partitioned away: one line, no traceback; the
            # next tick tries again (the drill's state is in its status, nothing is lost).
            if drills_failing.get(key) != outage:
                log.warning("FailoverDrill %s: tick failed, trying again: %s", key, outage)
            drills_failing[key] = outage
            return
        if drills_failing.pop(key, None) is not None:
            log.info("FailoverDrill %s: ticking again", key)
        metrics.RECONCILE_ROUNDS.labels(kind=FAILOVER_DRILL.kind).inc()
        for type_, reason, message in events:
            await kube.event(ref, type_, reason, message)

    @kopf.on.delete(
        *DRILLS, id="drill-deleted", registry=registry, optional=True, when=drill_in_shard
    )
    async def drill_deleted(name: str, namespace: str | None, spec: kopf.Spec, **_: Any) -> None:
        drills_failing.pop(f"{namespace}/{name}", None)
        await asyncio.to_thread(ticker.forget, namespace or "", name, spec.get("app"))

    @kopf.on.resume(*PROVIDERS, id="credentials", registry=registry)
    @kopf.on.create(*PROVIDERS, id="credentials", registry=registry)
    @kopf.on.update(*PROVIDERS, id="credentials", registry=registry)
    async def provider_changed(name: str, **kwargs: Any) -> None:
        info = lookup_in(index_of(kwargs))(name)
        if info is not None:
            try:
                await monitor.check(info, force_identity=True)
            except Exception:  # kopf retries the handler; the failure counts as an error
                metrics.RECONCILE_ERRORS.labels(kind=CLOUD_PROVIDER.kind).inc()
                raise

    @kopf.on.delete(*PROVIDERS, id="provider-deleted", registry=registry, optional=True)
    def provider_deleted(name: str, **_: Any) -> None:
        providers.forget(name)
        monitor.forget(name)

    return Wiring(registry, app_context)
