"""Capacity drivers for an app's sites, built from their ``capacity`` spec.

* ``autoScalingGroup``: the site's CloudProvider must be AWS;
* ``openstackServers``: the site's CloudProvider must be OpenStack;
* ``kubernetesDeployments``: this cluster, or a member cluster whose kubeconfig is in a
  Secret of the controller namespace.

Drivers are cached per site and rebuilt when the site's capacity spec or its provider
changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import kubernetes.client

from controller.api.models import CapacitySpec, Site
from controller.operator.kube import Kube, NotFound
from controller.operator.providers import ProviderRegistry, ProviderUnavailable
from controller.providers.aws.capacity import AutoScalingGroupCapacity
from controller.providers.aws.connector import AwsConnector
from controller.providers.kubernetes.capacity import (
    DeploymentsCapacity,
    KubeconfigError,
    client_from_kubeconfig,
)
from controller.providers.protocols import CapacityDriver


@dataclass
class CapacityDrivers:
    providers: ProviderRegistry
    kube: Kube
    local_cluster: kubernetes.client.ApiClient
    controller_namespace: str
    _cache: dict[str, tuple[object, CapacityDriver]] = field(default_factory=dict)

    async def for_site(self, app: str, site: Site) -> CapacityDriver:
        """The driver of ``site`` (of app ``app``, a cache key); raises ProviderUnavailable."""
        spec = site.capacity
        assert spec is not None
        handle = await self.providers.handle(site.provider)
        key = f"{app}/{site.name}"
        identity = (spec, site.provider, site.region, id(handle.connector))
        cached = self._cache.get(key)
        if cached is not None and cached[0] == identity:
            return cached[1]
        driver = await self._build(site, spec, handle.connector)
        self._cache[key] = (identity, driver)
        return driver

    async def _build(self, site: Site, spec: CapacitySpec, connector: object) -> CapacityDriver:
        if spec.auto_scaling_group is not None:
            if not isinstance(connector, AwsConnector):
                raise ProviderUnavailable(
                    "CapacityDriverMismatch",
                    f"site {site.name}: autoScalingGroup needs an aws CloudProvider",
                )
            group = spec.auto_scaling_group
            return AutoScalingGroupCapacity(
                connector, site.region, group.name, list(group.subnets) or None
            )
        if spec.openstack_servers is not None:
            from controller.providers.openstack.capacity import capacity_for_site
            from controller.providers.openstack.connector import OpenStackConnector

            if not isinstance(connector, OpenStackConnector):
                raise ProviderUnavailable(
                    "CapacityDriverMismatch",
                    f"site {site.name}: openstackServers needs an openstack CloudProvider",
                )
            return capacity_for_site(connector, site.region, site.name, spec.openstack_servers)
        assert spec.kubernetes_deployments is not None
        deployments = spec.kubernetes_deployments
        api = self.local_cluster
        if deployments.kubeconfig_secret_ref is not None:
            ref = deployments.kubeconfig_secret_ref
            try:
                data, _ = await self.kube.read_secret(self.controller_namespace, ref.name)
            except NotFound:
                raise ProviderUnavailable(
                    "SecretNotFound",
                    f"site {site.name}: Secret {self.controller_namespace}/{ref.name} not found",
                ) from None
            if ref.key not in data:
                raise ProviderUnavailable(
                    "SecretKeyMissing", f"site {site.name}: Secret {ref.name} has no {ref.key}"
                )
            try:
                api = client_from_kubeconfig(data[ref.key])
            except KubeconfigError as error:
                raise ProviderUnavailable(
                    "KubeconfigInvalid", f"site {site.name}: {error}"
                ) from None
        return DeploymentsCapacity(
            api, deployments.namespace, dict(deployments.selector), deployments.zone_label
        )
