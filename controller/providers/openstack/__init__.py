"""OpenStack providers (openstacksdk): Designate, Nova, Swift, Cinder, Keystone."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from controller.api.models import CloudProviderSpec
from controller.providers.calls import OutcomeHook
from controller.providers.openstack.apiplane import NovaApiPlaneProbe
from controller.providers.openstack.connector import OpenStackConnector, OpenStackCredentials
from controller.providers.openstack.dns import DesignateTraffic
from controller.providers.openstack.identity import KeystoneIdentity


def components(
    name: str,
    spec: CloudProviderSpec,
    secret: Mapping[str, str] | None,
    hook: OutcomeHook,
) -> tuple[
    OpenStackConnector, Callable[[str], DesignateTraffic], NovaApiPlaneProbe, KeystoneIdentity
]:
    """The connector, Designate per region, API-plane probe and identity check of a
    CloudProvider of type openstack (raises ValueError for unusable credentials)."""
    cloud = spec.openstack.cloud if spec.openstack else "lifeboat"
    credentials = (
        OpenStackCredentials.from_secret_data(secret, cloud) if secret is not None else None
    )
    connector = OpenStackConnector(name, spec, credentials, on_outcome=hook)
    designate: dict[str, DesignateTraffic] = {}

    def dns(region: str) -> DesignateTraffic:
        return designate.setdefault(region, DesignateTraffic(connector, region))

    return (
        connector,
        dns,
        NovaApiPlaneProbe(connector),
        KeystoneIdentity(connector, spec.regions[0]),
    )
