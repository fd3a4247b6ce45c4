"""kopf wiring: the only module that registers handlers.

* ResilientApp: one daemon per app runs an :class:`~controller.operator.app.AppWorker`.
* CloudProvider: an index (so apps can resolve providers without API calls) and a
  credentials check on create/update/resume, re-tried while it fails.

kopf keeps its own bookkeeping in ``lifeboat.dev/*`` annotations and a ``lifeboat.dev/
finalizer`` (daemons need one so they are stopped before the object goes away); the
status is entirely Lifeboat's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf
import kubernetes.client
from pydantic import ValidationError

from controller import metrics
from controller.api.conditions import get_condition, rfc3339, set_condition
from controller.api.models import GROUP, VERSION, ProviderStatus
from controller.core.status import READY
from controller.operator.app import AppContext, AppWorker
from controller.operator.kube import Kube, KubeClient, ObjectRef
from controller.operator.kubeconfig import connection_info
from controller.operator.probes import HttpProber
from controller.operator.providers import ProviderInfo, ProviderRegistry, ProviderUnavailable
from controller.providers.aws.identity import StsIdentity
from controller.providers.outcomes import describe

log = logging.getLogger(__name__)

PROVIDER_RECHECK_SECONDS = 60.0
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


def build(configuration: kubernetes.client.Configuration, controller_namespace: str) -> Wiring:
    """A kopf registry with Lifeboat's handlers, bound to one Kubernetes connection."""
    registry = kopf.OperatorRegistry()
    kube = KubeClient(kubernetes.client.ApiClient(configuration))
    providers = ProviderRegistry(kube, controller_namespace, lookup=lambda _name: None)
    prober = HttpProber()
    context = AppContext(kube=kube, providers=providers, prober=prober)
    background: list[asyncio.Task[None]] = []

    def index_of(kwargs: dict[str, Any]) -> kopf.Index[str, ProviderInfo]:
        index: kopf.Index[str, ProviderInfo] = kwargs["cloud_providers"]
        return index

    def lookup_in(index: kopf.Index[str, ProviderInfo]) -> Callable[[str], ProviderInfo | None]:
        def lookup(name: str) -> ProviderInfo | None:
            store = index.get(name)
            return next(iter(store), None) if store else None

        return lookup

    @kopf.on.login(id="login", registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(configuration)

    @kopf.on.startup(id="startup", registry=registry)
    async def startup(**kwargs: Any) -> None:
        index = index_of(kwargs)
        providers.lookup = lookup_in(index)
        background.append(asyncio.create_task(_recheck_providers(index, providers, kube)))

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(**_: Any) -> None:
        for task in background:
            task.cancel()
        await prober.close()

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
    async def provider_check(name: str, **kwargs: Any) -> None:
        info = lookup_in(index_of(kwargs))(name)
        if info is not None:
            await verify_provider(info, providers, kube)

    @kopf.on.delete(*PROVIDERS, id="provider-deleted", registry=registry, optional=True)
    def provider_deleted(name: str, **_: Any) -> None:
        providers.forget(name)
        metrics.PROVIDER_READY.remove(name) if name in _ready_series() else None

    return Wiring(registry, context)


def _ready_series() -> set[str]:
    return {labels[0] for labels in metrics.PROVIDER_READY._metrics}


async def _recheck_providers(
    index: kopf.Index[str, ProviderInfo], providers: ProviderRegistry, kube: Kube
) -> None:
    """Verify every CloudProvider's credentials again, every PROVIDER_RECHECK_SECONDS.

    Catches credentials revoked after they worked and Secrets fixed after they failed.
    """
    while True:
        await asyncio.sleep(PROVIDER_RECHECK_SECONDS)
        for name in list(index):
            store = index.get(name)
            info = next(iter(store), None) if store else None
            if info is None:
                continue
            try:
                await verify_provider(info, providers, kube)
            except Exception:
                metrics.RECONCILE_ERRORS.labels(kind="CloudProvider").inc()
                log.exception("CloudProvider %s: check failed", name)


async def verify_provider(
    info: ProviderInfo,
    providers: ProviderRegistry,
    kube: Kube,
    clock: Callable[[], float] = time.time,
) -> None:
    """Check the provider's credentials with a cheap identity call; write the verdict.

    An Event is posted only when the verdict changes.
    """
    ref = ObjectRef("CloudProvider", "cloudproviders", info.name, None, info.uid)
    try:
        previous = ProviderStatus.model_validate(info.status)
    except ValidationError:
        previous = ProviderStatus()
    now = clock()
    account: str | None = None
    try:
        spec, _ = providers.parse(info.name)
        connector = await providers.connector(info.name)
        account = await StsIdentity(connector, spec.regions[0]).whoami()
        ok, reason, message = True, "CredentialsVerified", f"credentials work for account {account}"
    except ProviderUnavailable as error:
        ok, reason, message = False, error.reason, str(error)
    except Exception as error:
        ok, reason = False, "VerificationFailed"
        message = f"sts:GetCallerIdentity failed: {describe(error)}"
        message = providers.cached_redactor(info.name)(message)
    conditions = set_condition(
        previous.conditions,
        READY,
        "True" if ok else "False",
        reason,
        message,
        generation=info.generation,
        now=now,
    )
    status = ProviderStatus(
        observed_generation=info.generation,
        account=account if ok else previous.account,
        last_checked_time=rfc3339(now),
        conditions=conditions,
    )
    await kube.patch_status(ref, status.to_merge_patch())
    metrics.PROVIDER_READY.labels(info.name).set(1 if ok else 0)
    before = get_condition(previous.conditions, READY)
    if before is None or (before.status, before.reason, before.message) != (
        "True" if ok else "False",
        reason,
        message,
    ):
        await kube.event(ref, "Normal" if ok else "Warning", reason, message)
