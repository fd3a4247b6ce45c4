"""kopf wiring: the only module that registers handlers.

* ResilientApp: one daemon per app runs an :class:`~controller.operator.app.AppWorker`.
* CloudProvider: an index (so apps can resolve providers without API calls) and a
  credentials check on create/update/resume, re-tried while it fails.

kopf keeps its own bookkeeping in ``lifeboat.dev/*`` annotations and a ``lifeboat.dev/
finalizer`` (daemons need one so they are stopped before the object goes away); the
status is entirely Lifeboat's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import kopf
import kubernetes.client

from controller import metrics
from controller.api.conditions import rfc3339, set_condition
from controller.api.models import GROUP, VERSION, ProviderStatus
from controller.core.status import READY
from controller.operator.app import AppContext, AppWorker
from controller.operator.kube import KubeClient, ObjectRef
from controller.operator.kubeconfig import connection_info
from controller.operator.probes import HttpProber
from controller.operator.providers import ProviderRegistry, ProviderUnavailable
from controller.providers.aws.identity import StsIdentity
from controller.providers.outcomes import classify

log = logging.getLogger(__name__)

PROVIDER_RECHECK_SECONDS = 300.0
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
    context = AppContext(kube=kube, providers=providers, prober=HttpProber())

    @kopf.on.login(id="login", registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(configuration)

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(**_: Any) -> None:
        await context.prober.close()

    @kopf.index(*PROVIDERS, id="cloud_providers", registry=registry)
    def cloud_providers(
        name: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any
    ) -> dict[str, tuple[dict[str, Any], str]]:
        return {name: (dict(spec), str(meta.get("resourceVersion", "")))}

    def bind(index: kopf.Index[str, tuple[dict[str, Any], str]]) -> None:
        def lookup(name: str) -> tuple[dict[str, Any], str] | None:
            store = index.get(name)
            return next(iter(store), None) if store else None

        providers.lookup = lookup

    @kopf.daemon(*APPS, id="app", registry=registry, cancellation_timeout=10.0)
    async def app_daemon(
        body: kopf.Body,
        name: str,
        namespace: str | None,
        uid: str,
        stopped: kopf.DaemonStopped,
        **kwargs: Any,
    ) -> None:
        bind(kwargs["cloud_providers"])
        ref = ObjectRef("ResilientApp", "resilientapps", name, namespace, uid)
        worker = AppWorker(ref, context)
        while not stopped:
            try:
                wait = await worker.round(body)
            except Exception:
                # A round must never kill the daemon: log, count, and try again.
                metrics.RECONCILE_ERRORS.labels(kind="ResilientApp").inc()
                log.exception("%s/%s: round failed", namespace, name)
                wait = 10.0
            await stopped.wait(wait)

    @kopf.on.delete(*APPS, id="app-deleted", registry=registry, optional=True)
    def app_deleted(name: str, namespace: str | None, **_: Any) -> None:
        metrics.forget_app(namespace or "", name)

    @kopf.on.resume(*PROVIDERS, id="credentials", registry=registry)
    @kopf.on.create(*PROVIDERS, id="credentials", registry=registry)
    @kopf.on.update(*PROVIDERS, id="credentials", registry=registry)
    async def provider_check(
        name: str,
        uid: str,
        meta: kopf.Meta,
        status: kopf.Status,
        **kwargs: Any,
    ) -> None:
        bind(kwargs["cloud_providers"])
        ref = ObjectRef("CloudProvider", "cloudproviders", name, None, uid)
        await verify_provider(ref, meta.get("generation"), dict(status), context)

    return Wiring(registry, context)


async def verify_provider(
    ref: ObjectRef, generation: int | None, raw_status: dict[str, Any], context: AppContext
) -> None:
    """Check the provider's credentials with a cheap identity call; write the verdict.

    On failure the handler raises a temporary error so that kopf checks again later
    (a fixed Secret is then picked up without touching the CloudProvider).
    """
    previous = ProviderStatus.model_validate(raw_status) if raw_status else ProviderStatus()
    now = context.clock()
    account: str | None = previous.account
    try:
        spec, _ = context.providers.parse(ref.name)
        connector = await context.providers.connector(ref.name)
        account = await StsIdentity(connector, spec.regions[0]).whoami()
        ok, reason, message = True, "CredentialsVerified", f"credentials work for account {account}"
    except ProviderUnavailable as error:
        ok, reason, message = False, error.reason, str(error)
    except Exception as error:
        verdict = classify(error)
        ok, reason = False, "VerificationFailed"
        message = f"sts:GetCallerIdentity failed: {verdict.outcome.value} ({verdict.code})"
    conditions = set_condition(
        previous.conditions,
        READY,
        "True" if ok else "False",
        reason,
        message,
        generation=generation,
        now=now,
    )
    status = ProviderStatus(
        observed_generation=generation,
        account=account if ok else previous.account,
        last_checked_time=rfc3339(now),
        conditions=conditions,
    )
    await context.kube.patch_status(ref, status.to_merge_patch())
    metrics.PROVIDER_READY.labels(ref.name).set(1 if ok else 0)
    if previous.conditions != conditions or not ok:
        await context.kube.event(ref, "Normal" if ok else "Warning", reason, message)
    if not ok:
        raise kopf.TemporaryError(message, delay=PROVIDER_RECHECK_SECONDS)
