"""An ``aws`` CloudProvider, connected: Route 53, EC2, STS, S3, SQS, EBS and Auto Scaling
behind the provider Protocols."""

from __future__ import annotations

from collections.abc import Mapping

from controller.api.models import AutoScalingGroupRef, CloudProviderSpec, Site
from controller.providers.aws.apiplane import Ec2ApiPlaneProbe
from controller.providers.aws.capacity import AutoScalingGroupCapacity
from controller.providers.aws.connector import AwsConnector, AwsCredentials
from controller.providers.aws.events import SqsChangeFeed
from controller.providers.aws.identity import StsIdentity
from controller.providers.aws.objects import S3ObjectStore
from controller.providers.aws.route53 import Route53Traffic
from controller.providers.aws.volumes import EbsSnapshots
from controller.providers.backend import Capability, Cloud
from controller.providers.calls import OutcomeHook


class AwsCloud(Cloud):
    """Route 53 is a global service: one traffic manager for every region, its changes
    judged in the "global" gate."""

    connector: AwsConnector

    def __init__(self, connector: AwsConnector) -> None:
        super().__init__(
            connector.name,
            connector.spec,
            connector,
            Ec2ApiPlaneProbe(connector),
            StsIdentity(connector, connector.spec.regions[0]),
        )
        self._route53 = Route53Traffic(connector)

    def dns_region(self, region: str) -> str:
        return "global"

    def traffic(self, region: str) -> Route53Traffic:
        return self._route53

    def object_store(self, region: str, bucket: str) -> S3ObjectStore:
        return S3ObjectStore(self.connector, region, bucket)

    def change_feed(self, region: str, queue: str) -> SqsChangeFeed:
        return SqsChangeFeed(self.connector, region, queue)

    def volume_snapshots(self, region: str) -> EbsSnapshots:
        return EbsSnapshots(self.connector, region)

    def capacity(self, site: Site) -> AutoScalingGroupCapacity:
        group = self._group(site, Capability.CAPACITY)
        return AutoScalingGroupCapacity(
            self.connector, site.region, group.name, list(group.subnets) or None
        )

    def _group(self, site: Site, capability: Capability) -> AutoScalingGroupRef:
        if site.capacity is None or site.capacity.auto_scaling_group is None:
            raise self.unsupported(capability, self._kind_of(site))
        return site.capacity.auto_scaling_group


def connect(
    name: str,
    spec: CloudProviderSpec,
    secret: Mapping[str, str] | None,
    on_outcome: OutcomeHook | None,
) -> AwsCloud:
    """The CloudProvider ``name``, with the credentials in ``secret`` (None: the
    environment's); raises CredentialsError when they are incomplete."""
    credentials = AwsCredentials.from_secret_data(secret) if secret is not None else None
    return AwsCloud(AwsConnector(name, spec, credentials, on_outcome=on_outcome))
