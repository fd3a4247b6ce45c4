"""OpenStack providers (openstacksdk): Designate, Nova, Swift, Cinder, Keystone.

:func:`components` builds what every CloudProvider of type ``openstack`` has (connector,
Designate per region, API-plane probe, identity check); the factories below build what a
site of such a provider uses, mirroring the AWS implementations' needs: a capacity driver
from a server template (AWS: an Auto Scaling group's name), instance health from the
site's server match (AWS: the group, and optionally a target group), an object store from
a container (AWS: a bucket), and volume snapshots of a region.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from controller.api.models import CloudProviderSpec
from controller.providers.calls import OutcomeHook
from controller.providers.openstack.apiplane import NovaApiPlaneProbe
from controller.providers.openstack.capacity import NovaServersCapacity, ServerTemplate
from controller.providers.openstack.connector import OpenStackConnector, OpenStackCredentials
from controller.providers.openstack.dns import DesignateTraffic
from controller.providers.openstack.identity import KeystoneIdentity
from controller.providers.openstack.instances import NovaInstanceHealth
from controller.providers.openstack.objects import SwiftObjectStore
from controller.providers.openstack.servers import ServerMatch
from controller.providers.openstack.volumes import CinderBackups

__all__ = [
    "CinderBackups",
    "DesignateTraffic",
    "KeystoneIdentity",
    "NovaApiPlaneProbe",
    "NovaInstanceHealth",
    "NovaServersCapacity",
    "OpenStackConnector",
    "ServerMatch",
    "ServerTemplate",
    "SwiftObjectStore",
    "capacity",
    "components",
    "instances",
    "objects",
    "volumes",
]


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


def capacity(
    connector: OpenStackConnector, region: str, template: ServerTemplate
) -> NovaServersCapacity:
    """A site's capacity in ``region``: its servers, made from ``template``."""
    return NovaServersCapacity(connector, region, template)


def instances(
    connector: OpenStackConnector, region: str, match: ServerMatch, zones: Sequence[str] = ()
) -> NovaInstanceHealth:
    """Nova's view of a site's servers in ``region``; ``zones`` are always reported."""
    return NovaInstanceHealth(connector, region, match, zones)


def objects(connector: OpenStackConnector, region: str, container: str) -> SwiftObjectStore:
    """A Swift container of ``region`` (large objects' segments in ``<container>_segments``)."""
    return SwiftObjectStore(connector, region, container)


def volumes(connector: OpenStackConnector, region: str) -> CinderBackups:
    """Cinder backups of ``region``, copied across regions by export and import."""
    return CinderBackups(connector, region)
