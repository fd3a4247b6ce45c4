"""kopf wiring: the only module that registers handlers.

* ResilientApp: one daemon per app runs an :class:`~controller.operator.app.AppWorker`,
  with the app's replication engines beside it (object replication:
  :class:`~controller.operator.replication.ObjectReplication`; volume replication:
  :class:`~controller.operator.volumes.VolumeReplication`).
* CloudProvider: an index (so apps can resolve providers without API calls) and a
  credentials check on create/update/resume, re-tried while it fails.

kopf keeps its own bookkeeping in ``lifeboat.dev/*`` annotations and a ``lifeboat.dev/
finalizer`` (daemons need one so they are stopped before the object goes away); the
status is entirely Lifeboat's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf
import kubernetes.client

from controller import metrics
from controller.api.models import GROUP, VERSION
from controller.operator.app import AppContext, AppWorker, ReplicationSource
from controller.operator.capacity import CapacityDrivers
from controller.operator.kube import KubeClient, ObjectRef
from controller.operator.kubeconfig import connection_info
from controller.operator.probes import HttpProber
from controller.operator.provider_monitor import ProviderMonitor
from controller.operator.providers import ProviderInfo, ProviderRegistry
from controller.operator.replication import ObjectReplication
from controller.operator.volumes import VolumeReplication, VolumeRestorer

log = logging.getLogger(__name__)

APPS = (GROUP, VERSION, "resilientapps")
PROVIDERS = (GROUP, VERSION, "cloudproviders")


@dataclass(frozen=True)
class Wiring:
    """Everything the handlers share, built once per operator."""

    registry: kopf.OperatorRegistry
    context: AppContext


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings: our annotation prefix, our finalizer, quiet event posting."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events tell the story
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60


def build(
    configuration: kubernetes.client.Configuration,
    controller_namespace: str,
    *,
    volume_interval_override: float | None = None,
) -> Wiring:
    """A kopf registry with Lifeboat's handlers, bound to one Kubernetes connection.

    ``volume_interval_override`` (sandbox and tests only) replaces every volume dataset's
    snapshot interval."""
    registry = kopf.OperatorRegistry()
    kube_client = kubernetes.client.ApiClient(configuration)
    capacity_client = kubernetes.client.ApiClient(configuration)
    kube = KubeClient(kube_client)
    providers = ProviderRegistry(kube, controller_namespace, lookup=lambda _name: None)
    prober = HttpProber()
    monitor = ProviderMonitor(providers, kube)
    capacity = CapacityDrivers(providers, kube, capacity_client, controller_namespace)

    def object_replication(ref: ObjectRef) -> ReplicationSource:
        return ObjectReplication(ref, kube, providers)

    def volume_replication(ref: ObjectRef) -> ReplicationSource:
        return VolumeReplication(ref, providers, kube, interval_override=volume_interval_override)

    context = AppContext(
        kube=kube,
        providers=providers,
        prober=prober,
        capacity=capacity,
        replication=(object_replication, volume_replication),
        restorer=VolumeRestorer(providers),
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
        background.append(asyncio.create_task(monitor.run(every_provider(index))))

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

    @kopf.daemon(*APPS, id="app", registry=registry, cancellation_timeout=10.0)
    async def app_daemon(
        body: kopf.Body,
        name: str,
        namespace: str | None,
        uid: str,
        stopped: kopf.DaemonStopped,
        **_: Any,
    ) -> None:
        ref = ObjectRef("ResilientApp", "resilientapps", name, namespace, uid)
        await AppWorker(ref, context).run(body, lambda: bool(stopped))

    @kopf.on.delete(*APPS, id="app-deleted", registry=registry, optional=True)
    def app_deleted(name: str, namespace: str | None, **_: Any) -> None:
        metrics.forget_app(namespace or "", name)

    @kopf.on.resume(*PROVIDERS, id="credentials", registry=registry)
    @kopf.on.create(*PROVIDERS, id="credentials", registry=registry)
    @kopf.on.update(*PROVIDERS, id="credentials", registry=registry)
    async def provider_changed(name: str, **kwargs: Any) -> None:
        info = lookup_in(index_of(kwargs))(name)
        if info is not None:
            await monitor.check(info, force_identity=True)

    @kopf.on.delete(*PROVIDERS, id="provider-deleted", registry=registry, optional=True)
    def provider_deleted(name: str, **_: Any) -> None:
        providers.forget(name)
        monitor.forget(name)

    return Wiring(registry, context)
