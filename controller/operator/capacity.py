"""Capacity drivers for an app's sites, built from their ``capacity`` spec.

The driver is chosen by the kind of capacity a site names (``autoScalingGroup``,
``openstackServers``, ``kubernetesDeployments``) through the provider registry: a cloud's
own kind needs a site at a CloudProvider of that type; ``kubernetesDeployments`` runs in
this cluster, or in a member cluster its CloudProvider lists (with the kubeconfig Secret
it names, in the controller namespace), whatever the site's CloudProvider type; in the
app's own namespace unless that CloudProvider grants another.

One :class:`CapacityDrivers` serves one app, through the provider registry as its
namespace sees it (a CloudProvider that does not admit the namespace is refused before
anything is built). Drivers are cached per site and rebuilt when the site's capacity spec
or its provider changes. The cache is bounded: at most :data:`DRIVER_CACHE_SIZE` drivers
(the least recently used goes first), and a driver unused for :data:`DRIVER_CACHE_TTL`
seconds is dropped (a renamed site's, a deleted app's). :class:`NoCapacity` stands in where
an operator drives no capacity at all.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import kubernetes.client

from controller.api.events import EventReason
from controller.api.models import Site
from controller.operator.kube import Kube, NotFound
from controller.providers import registry
from controller.providers.backend import Capability, Cloud
from controller.providers.errors import CapabilityUnsupported, ProviderUnavailable
from controller.providers.protocols import CapacityDriver


class TenantHandles(Protocol):
    """The provider registry as one namespace's apps may use it."""

    @property
    def namespace(self) -> str: ...

    async def handle(self, name: str) -> Cloud:
        """The CloudProvider, connected; ProviderUnavailable when it is missing, unusable
        or does not admit the namespace."""
        ...


@dataclass(frozen=True)
class _Clusters:
    """This cluster, Secrets of the controller namespace (member clusters), the app's
    namespace."""

    kube: Kube
    local: kubernetes.client.ApiClient
    controller_namespace: str
    namespace: str

    async def secret(self, name: str) -> Mapping[str, str]:
        try:
            data, _ = await self.kube.read_secret(self.controller_namespace, name)
        except NotFound:
            raise ProviderUnavailable(
                EventReason.SECRET_NOT_FOUND,
                f"Secret {self.controller_namespace}/{name} not found",
            ) from None
        return data


DRIVER_CACHE_SIZE = 64
"""Drivers kept at most (an app has at most 16 sites)."""
DRIVER_CACHE_TTL = 3600.0
"""Seconds an unused driver is kept."""


@dataclass
class CapacityDrivers:
    """The capacity drivers of one namespace's apps."""

    providers: TenantHandles
    kube: Kube
    local_cluster: kubernetes.client.ApiClient
    controller_namespace: str
    clock: Callable[[], float] = time.monotonic
    max_size: int = DRIVER_CACHE_SIZE
    ttl: float = DRIVER_CACHE_TTL
    _cache: OrderedDict[str, tuple[object, CapacityDriver, float]] = field(
        default_factory=OrderedDict
    )
    """key -> (identity, driver, last used), least recently used first."""

    def __len__(self) -> int:
        return len(self._cache)

    async def for_site(self, app: str, site: Site) -> CapacityDriver:
        """The driver of ``site`` (of app ``app``, a cache key); raises ProviderUnavailable
        (CapabilityUnsupported when the site's provider cannot run its kind)."""
        handle = await self.providers.handle(site.provider)
        key = f"{app}/{site.name}"
        identity = (site.capacity, site.provider, site.region, id(handle))
        now = self.clock()
        while self._cache:  # drop what has not been used for the TTL (oldest use first)
            oldest = next(iter(self._cache))
            if now - self._cache[oldest][2] < self.ttl:
                break
            del self._cache[oldest]
        cached = self._cache.get(key)
        if cached is not None and cached[0] == identity:
            self._cache[key] = (identity, cached[1], now)
            self._cache.move_to_end(key)
            return cached[1]
        clusters = _Clusters(
            self.kube, self.local_cluster, self.controller_namespace, self.providers.namespace
        )
        driver = await registry.capacity_driver(site, handle, clusters)
        self._cache[key] = (identity, driver, now)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_size:
            self._cache.popitem(last=False)
        return driver


class NoCapacity:
    """An operator that drives no capacity: every site's driver is unsupported."""

    async def for_site(self, app: str, site: Site) -> CapacityDriver:
        raise CapabilityUnsupported(
            Capability.CAPACITY, f"site {site.name}: this operator drives no capacity"
        )
