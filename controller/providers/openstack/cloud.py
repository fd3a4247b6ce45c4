"""An ``openstack`` CloudProvider, connected: Designate, Nova, Swift, Cinder and Keystone
behind the provider Protocols. OpenStack sends no change notices (S3 event notifications
have no Swift counterpart here): a dataset's changes at an OpenStack site are found by
the scan alone."""

from __future__ import annotations

from collections.abc import Mapping

from controller.api.models import CloudProviderSpec, OpenStackServersTemplate, Site
from controller.providers.backend import Capability, Cloud
from controller.providers.calls import OutcomeHook
from controller.providers.openstack.apiplane import NovaApiPlaneProbe
from controller.providers.openstack.capacity import NovaServersCapacity, capacity_for_site
from controller.providers.openstack.connector import OpenStackConnector, OpenStackCredentials
from controller.providers.openstack.dns import DesignateTraffic
from controller.providers.openstack.identity import KeystoneIdentity
from controller.providers.openstack.objects import SwiftObjectStore
from controller.providers.openstack.volumes import CinderBackups


class OpenStackCloud(Cloud):
    """Designate is regional: one traffic manager per region, judged in its gate."""

    connector: OpenStackConnector

    def __init__(self, connector: OpenStackConnector) -> None:
        super().__init__(
            connector.name,
            connector.spec,
            connector,
            NovaApiPlaneProbe(connector),
            KeystoneIdentity(connector, connector.spec.regions[0]),
        )
        self._designate: dict[str, DesignateTraffic] = {}

    def traffic(self, region: str) -> DesignateTraffic:
        return self._designate.setdefault(region, DesignateTraffic(self.connector, region))

    def object_store(self, region: str, bucket: str) -> SwiftObjectStore:
        """A Swift container (large objects' segments in ``<container>_segments``)."""
        return SwiftObjectStore(self.connector, region, bucket)

    def volume_snapshots(self, region: str) -> CinderBackups:
        """Cinder backups, copied across regions by export and import."""
        return CinderBackups(self.connector, region)

    def capacity(self, site: Site) -> NovaServersCapacity:
        template = self._servers(site, Capability.CAPACITY)
        return capacity_for_site(self.connector, site.region, site.name, template)

    def _servers(self, site: Site, capability: Capability) -> OpenStackServersTemplate:
        if site.capacity is None or site.capacity.openstack_servers is None:
            raise self.unsupported(capability, self._kind_of(site))
        return site.capacity.openstack_servers


def connect(
    name: str,
    spec: CloudProviderSpec,
    secret: Mapping[str, str] | None,
    on_outcome: OutcomeHook | None,
) -> OpenStackCloud:
    """The CloudProvider ``name``, with the credentials in ``secret`` (None: the
    environment's, as openstacksdk reads them); raises CredentialsError when they cannot
    be used."""
    cloud = spec.openstack.cloud if spec.openstack else "lifeboat"
    credentials = (
        OpenStackCredentials.from_secret_data(secret, cloud) if secret is not None else None
    )
    return OpenStackCloud(OpenStackConnector(name, spec, credentials, on_outcome=on_outcome))
