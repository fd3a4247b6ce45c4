"""Capacity of a site that is a Kubernetes cluster: one Deployment per zone.

The site's Deployments are found by a label selector in a namespace; each carries its
zone in a label (``topology.kubernetes.io/zone`` by default — the same key its pods'
nodeSelector or affinity should use). ``observe`` reads desired (``spec.replicas``) and
ready (``status.readyReplicas``) replicas per zone; ``set_zones`` scales through the
``scale`` subresource, so nothing else in the Deployment is touched.

The cluster is Lifeboat's own (the operator's connection) or a member cluster reached
through a kubeconfig kept in a Secret in the controller namespace. Calls run off the event
loop, at most a few at a time.
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

from controller.providers.protocols import CapacityState, ZoneCapacity

ZONE_LABEL = "topology.kubernetes.io/zone"


class KubeconfigError(ValueError):
    """A member cluster's kubeconfig cannot be used (the message never quotes it)."""


def client_from_kubeconfig(text: str) -> kubernetes.client.ApiClient:
    """An API client for the cluster a kubeconfig document describes."""
    try:
        document = yaml.safe_load(text)
        return kubernetes.config.new_client_from_config_dict(document)  # type: ignore[no-untyped-call,no-any-return]
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
        for deployment in await self._deployments():
            zone = deployment.metadata.labels[self.zone_label]
            desired[zone] += deployment.spec.replicas or 0
            ready[zone] += (deployment.status.ready_replicas or 0) if deployment.status else 0
        zones = tuple(ZoneCapacity(z, desired[z], ready[z]) for z in sorted(desired))
        total = sum(desired.values())
        return CapacityState(zones, minimum=0, maximum=total)

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
