"""Capacity of a site that is a Kubernetes cluster: one Deployment per zone.

The site's Deployments are found by a label selector in a namespace; each carries its
zone in a label (``topology.kubernetes.io/zone`` by default — the same key its pods'
nodeSelector or affinity should use). ``observe`` reads desired (``spec.replicas``) and
ready (``status.readyReplicas``) replicas per zone; ``set_zones`` scales through the
``scale`` subresource, so nothing else in the Deployment is touched.

The cluster is Lifeboat's own (the operator's connection) or a member cluster that the
site's CloudProvider lists, reached through a kubeconfig kept in a Secret in the controller
namespace. The namespace is the app's own unless that CloudProvider grants another
(:mod:`controller.core.tenancy`). Calls run off the event loop, at most a few at a time.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes.client
import kubernetes.config
import yaml

from controller.api.events import EventReason
from controller.api.models import MemberCluster, Site
from controller.core import tenancy
from controller.providers.backend import Capability, Cloud, Clusters
from controller.providers.errors import CapabilityUnsupported, ProviderUnavailable
from controller.providers.kubernetes.client import api_client_from_kubeconfig
from controller.providers.protocols import CapacityState, ZoneCapacity

ZONE_LABEL = "topology.kubernetes.io/zone"


class KubeconfigError(ValueError):
    """A member cluster's kubeconfig cannot be used (the message never quotes it)."""


def client_from_kubeconfig(text: str) -> kubernetes.client.ApiClient:
    """An API client for the cluster a kubeconfig document describes."""
    try:
        document = yaml.safe_load(text)
        if not isinstance(document, dict):
            raise TypeError("not a mapping")
        return api_client_from_kubeconfig(document)
    except (yaml.YAMLError, kubernetes.config.ConfigException, TypeError, KeyError) as error:
        raise KubeconfigError(f"unusable kubeconfig: {type(error).__name__}") from None


@dataclass
class DeploymentsCapacity:
    api: kubernetes.client.ApiClient
    namespace: str
    selector: Mapping[str, str]
    zone_label: str = ZONE_LABEL
    region: str = ""
    max_concurrency: int = 4
    _apps: kubernetes.client.AppsV1Api = field(init=False)
    _semaphore: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._apps = kubernetes.client.AppsV1Api(self.api)
        self._semaphore = asyncio.Semaphore(self.max_concurrency)

    @property
    def _label_selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.selector.items()))

    async def _deployments(self) -> list[Any]:
        async with self._semaphore:
            listing = await asyncio.to_thread(
                self._apps.list_namespaced_deployment,
                self.namespace,
                label_selector=self._label_selector,
            )
        return [
            d
            for d in listing.items
            if d.metadata is not None and (d.metadata.labels or {}).get(self.zone_label)
        ]

    async def observe(self) -> CapacityState:
        desired: dict[str, int] = defaultdict(int)
        ready: dict[str, int] = defaultdict(int)
        failures: list[str] = []
        for deployment in await self._deployments():
            zone = deployment.metadata.labels[self.zone_label]
            desired[zone] += deployment.spec.replicas or 0
            ready[zone] += (deployment.status.ready_replicas or 0) if deployment.status else 0
            failures.extend(_failed(deployment))
        zones = tuple(ZoneCapacity(z, desired[z], ready[z]) for z in sorted(desired))
        total = sum(desired.values())
        return CapacityState(
            zones, minimum=0, maximum=total, failures=tuple(failures[:3]), unit="replicas ready"
        )

    async def set_zones(self, desired: Mapping[str, int]) -> None:
        by_zone: dict[str, list[Any]] = defaultdict(list)
        for deployment in await self._deployments():
            by_zone[deployment.metadata.labels[self.zone_label]].append(deployment)
        missing = sorted(z for z, n in desired.items() if n > 0 and z not in by_zone)
        if missing:
            raise LookupError(
                f"no Deployment labelled {self.zone_label} in zone(s) {', '.join(missing)} "
                f"matches {self._label_selector} in namespace {self.namespace}"
            )
        jobs = []
        for zone, deployments in by_zone.items():
            for deployment, replicas in zip(
                deployments, _spread(desired.get(zone, 0), len(deployments)), strict=True
            ):
                if (deployment.spec.replicas or 0) != replicas:
                    jobs.append(self._scale(deployment.metadata.name, replicas))
        await asyncio.gather(*jobs)

    async def _scale(self, name: str, replicas: int) -> None:
        async with self._semaphore:
            await asyncio.to_thread(
                self._apps.patch_namespaced_deployment_scale,
                name,
                self.namespace,
                {"spec": {"replicas": replicas}},
            )


def _spread(total: int, parts: int) -> list[int]:
    """``total`` split over ``parts`` as evenly as possible (the first ones get more)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass(frozen=True)
class DeploymentsBackend:
    """Capacity of kind ``kubernetesDeployments``, whatever the site's CloudProvider's type,
    within what that CloudProvider grants: in the app's own namespace or one of its
    ``tenancy.capacityNamespaces``; in this cluster, or in a member cluster it lists in
    ``spec.clusters`` (whose kubeconfig Secret, in the controller namespace, it names)."""

    kind: str = "kubernetesDeployments"

    async def driver(self, site: Site, cloud: Cloud, clusters: Clusters) -> DeploymentsCapacity:
        deployments = site.capacity.kubernetes_deployments if site.capacity else None
        if deployments is None:
            raise CapabilityUnsupported(
                Capability.CAPACITY, f"site {site.name} declares no kubernetesDeployments"
            )
        namespace = deployments.namespace or clusters.namespace
        if not tenancy.scales_in(cloud.spec.tenancy, clusters.namespace, namespace):
            raise ProviderUnavailable(
                EventReason.NAMESPACE_NOT_PERMITTED,
                tenancy.not_granted(cloud.name, site.name, clusters.namespace, namespace),
            )
        api = clusters.local
        if deployments.cluster is not None:
            member = cloud.spec.cluster(deployments.cluster)
            if member is None:
                raise ProviderUnavailable(
                    EventReason.CLUSTER_NOT_FOUND,
                    tenancy.no_cluster(cloud.name, site.name, deployments.cluster),
                )
            api = await _member(site, member, clusters)
        return DeploymentsCapacity(
            api, namespace, dict(deployments.selector), deployments.zone_label
        )


async def _member(
    site: Site, member: MemberCluster, clusters: Clusters
) -> kubernetes.client.ApiClient:
    """A client for ``member`` from its kubeconfig Secret."""
    ref = member.kubeconfig_secret_ref
    where = f"site {site.name}, cluster {member.name}"
    try:
        data = await clusters.secret(ref.name)
    except ProviderUnavailable as error:
        raise ProviderUnavailable(error.reason, f"{where}: {error}") from None
    if ref.key not in data:
        raise ProviderUnavailable(
            EventReason.SECRET_KEY_MISSING, f"{where}: Secret {ref.name} has no {ref.key}"
        )
    try:
        return client_from_kubeconfig(data[ref.key])
    except KubeconfigError as error:
        raise ProviderUnavailable(EventReason.KUBECONFIG_INVALID, f"{where}: {error}") from None


def _failed(deployment: Any) -> list[str]:
    """Why a Deployment's scale-up failed, as its controller says: a ``ReplicaFailure``
    (pods refused, e.g. by a ResourceQuota) or ``Progressing`` False with
    ``ProgressDeadlineExceeded``. Not API-plane evidence: the cluster is no cloud region."""
    found = []
    for condition in (deployment.status.conditions if deployment.status else None) or []:
        failed = (condition.type == "ReplicaFailure" and condition.status == "True") or (
            condition.type == "Progressing"
            and condition.status == "False"
            and condition.reason == "ProgressDeadlineExceeded"
        )
        if failed:
            words = " ".join(str(condition.message or "").split())[:300]
            found.append(f"Deployment {deployment.metadata.name}: {condition.reason}: {words}")
    return found
