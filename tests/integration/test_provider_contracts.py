"""Contract tests of the provider Protocols, run against every cloud backend.

Each test takes a :class:`Backend`: the implementations under test, typed only by their
Protocols, and levers on the emulated cloud behind them (set-up, inspection and faults,
applied straight to the emulator, never through the fault layer). A cloud joins by
implementing :class:`Backend` and adding its fixture to ``BACKENDS``. There are two:

* AWS: moto with a :class:`FaultProxy` in front of each region (us-east-1, us-west-2) and
  one for global services (Route 53), reached through an :class:`AwsConnector` whose
  ``endpointOverrides`` point at the proxies;
* OpenStack: the sandbox's OpenStackWorld (real Keystone and Swift, emulated Nova,
  Designate and Cinder; RegionOne, RegionTwo) with a fault proxy per catalog endpoint,
  reached through an :class:`OpenStackConnector` authenticated with a clouds.yaml; the
  catalog points at the proxies.

Where the clouds differ in kind the Backend says so and the tests check each its own way:
Route 53 keeps a record set per site with a weight or failover role and DNS health
checks, Designate one record set holding the active site's values; an Auto Scaling group
balances a total over its zones with a floor, Nova places exactly what each zone is
asked for; a Cinder backup copied to another region keeps its ID and is exported from
the source region first; keystoneauth answers a 401 by authenticating again and
repeating the request once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

import boto3
import botocore.exceptions
import openstack.exceptions
import pytest

from controller.api.models import CloudProviderSpec, Site
from controller.api.names import TAG_SITE
from controller.core.apiplane import ApiPlaneState, CallOutcome
from controller.providers import registry
from controller.providers.aws.apiplane import Ec2ApiPlaneProbe
from controller.providers.aws.capacity import AutoScalingGroupCapacity
from controller.providers.aws.connector import AwsConnector, AwsCredentials
from controller.providers.aws.objects import S3ObjectStore
from controller.providers.aws.route53 import Route53Traffic
from controller.providers.aws.volumes import EbsSnapshots
from controller.providers.calls import CloudCalls, RegionImpaired
from controller.providers.errors import DnsFenced, DnsOwnedByOther, DnsZoneNotFound
from controller.providers.integrity import IntegrityError
from controller.providers.openstack.apiplane import NovaApiPlaneProbe
from controller.providers.openstack.capacity import (
    NoValidHost,
    NovaServersCapacity,
    ServerTemplate,
)
from controller.providers.openstack.connector import (
    CALL_ERRORS,
    OpenStackConnector,
    OpenStackCredentials,
)
from controller.providers.openstack.dns import DesignateTraffic
from controller.providers.openstack.objects import SwiftObjectStore
from controller.providers.openstack.volumes import CinderBackups
from controller.providers.outcomes import Classified
from controller.providers.protocols import (
    ApiPlaneProbe,
    CapacityDriver,
    DnsOwner,
    DnsReading,
    DnsRecord,
    ObjectStore,
    SiteRecord,
    TrafficManager,
    TrafficPlan,
    VolumeSnapshots,
)
from controller.providers.retry import RetryPolicy
from controller.replication import volumes as rv
from sandbox.faults import Fault, FaultProxy, FaultSpec, failed_scale_up
from sandbox.moto_server import MotoServer
from sandbox.openstack.cinder import BackupStore
from sandbox.openstack.cloud import CLOUD_NAME, REGIONAL_SERVICES, OpenStackWorld
from sandbox.openstack.nova import IMAGES
from tests.fixtures.cloud import MakeFaultProxy

pytestmark = pytest.mark.integration

EAST: Final = "us-east-1"
WEST: Final = "us-west-2"
GLOBAL: Final = "global"
ONE: Final = "RegionOne"
TWO: Final = "RegionTwo"
MiB: Final = 1024 * 1024


# ----------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class Outcome:
    """One call as the connector reported it."""

    region: str
    service: str
    operation: str
    outcome: CallOutcome
    code: str
    latency: float


@dataclass(frozen=True)
class DnsSet:
    """One site's record set as the DNS service holds it."""

    routing: str  # "Weighted" or "Failover"
    weight: int | None
    role: str | None  # "PRIMARY" / "SECONDARY" for failover
    values: tuple[str, ...]
    health_check_url: str | None


@dataclass(frozen=True)
class Group:
    """A scaling group made by a backend's lever."""

    region: str
    name: str
    zones: tuple[str, ...]


class RegionProxy(Protocol):
    """The fault layer in front of one region's API plane (one proxy or several)."""

    def set_faults(self, *specs: FaultSpec) -> None: ...
    def clear_faults(self) -> None: ...
    def clear_records(self) -> None: ...
    def count(
        self,
        *,
        service: str | None = None,
        action: str | None = None,
        mutating: bool | None = None,
        fault: Fault | None = None,
        forwarded: bool | None = None,
    ) -> int: ...


class Backend(Protocol):
    """A cloud, emulated, as the contract tests see it."""

    name: str
    regions: tuple[str, str]
    """Two regions of the cloud, each behind its own fault proxy (or proxies)."""
    dns_region: str
    """Where the DNS service's proxy is (a region, or "global")."""
    calls: CloudCalls
    """The gates of the connector the implementations use."""
    spec: CloudProviderSpec
    """The CloudProvider that connector was made for."""
    secret: Mapping[str, str]
    """Its credentials Secret's data."""
    outcomes: list[Outcome]
    """Every call's outcome, as that connector reported it."""
    errors: tuple[type[BaseException], ...]
    """What the SDK raises for a failed call (an error answer, a broken connection)."""
    error_codes: Mapping[tuple[Fault, str], str]
    """The provider's error code for a fault injected into a call of (probe, capacity,
    objects)."""
    dns_per_site: bool
    """True: one record set per site with a weight or a failover role, failover record
    sets with DNS health checks (Route 53). False: one record set per name that holds the
    active site's values, no health checks (Designate has neither weights nor checks)."""
    capacity_floor: int
    """What a group made by :meth:`group` keeps at the least (an Auto Scaling group's
    MinSize; Nova servers have no floor)."""
    places_exactly: bool
    """Each zone runs exactly what it is asked for (Nova); False: the provider balances a
    total over the enabled zones (Auto Scaling; moto even launches in one subnet)."""
    copies_keep_ids: bool
    """A snapshot copied to another region keeps its ID there (Cinder imports a backup
    under its own ID; EBS gives a copy a new one)."""
    copy_reads_source: bool
    """Copying reads the source region (Cinder exports the backup record there; EBS copies
    from the destination alone)."""
    requests_to_open_large: int
    """Requests ``open`` of a large object sends (Swift reads an SLO's manifest too, to
    check each segment it reads)."""

    def proxy(self, region: str) -> RegionProxy: ...
    def requests_per_call(self, fault: Fault | None) -> int:
        """Requests one call sends to a region whose proxy injects ``fault``."""
        ...

    def capacity_mutations(self, removed: int, zones_grown: int) -> int:
        """Mutating requests of one ``set_zones`` that removes ``removed`` instances and
        adds some in ``zones_grown`` zones."""
        ...

    def unusable_zone(self, region: str) -> tuple[str, str]:
        """A zone ``set_zones`` refuses for the groups made here, and the words it uses."""
        ...

    def reconnected(self, *, timeout_seconds: float = 5.0, attempts: int = 3) -> Backend:
        """The same cloud through a fresh connector (fresh gates, other limits)."""
        ...

    # implementations
    def traffic(self) -> TrafficManager: ...
    def probe(self) -> ApiPlaneProbe: ...
    def capacity(self, group: Group) -> CapacityDriver: ...
    def objects(self, region: str, bucket: str, **options: int) -> ObjectStore:
        """Options: multipart_threshold, part_size (bytes), chunk_size (of reads), page_size
        (of listings)."""
        ...

    def snapshots(self, region: str) -> VolumeSnapshots: ...

    # levers
    def zones(self, region: str) -> list[str]: ...
    def dns_zone(self, name: str) -> str:
        """Create a DNS zone; its ID."""
        ...

    def dns_sets(self, record: DnsRecord) -> dict[str, DnsSet]:
        """Per-site record sets (backends with ``dns_per_site``; others have none)."""
        ...

    def dns_answer(self, record: DnsRecord) -> tuple[str, ...]:
        """The values DNS answers for the record now (sorted; empty when it does not)."""
        ...

    def health_checks(self) -> dict[str, str]:
        """Every DNS health check: ID -> URL it checks."""
        ...

    def group(self, region: str, per_zone: Mapping[str, int]) -> Group:
        """A group whose instances run ``per_zone``; it may use every zone named."""
        ...

    def group_zones(self, group: Group) -> set[str]:
        """The zones the group may place instances in now."""
        ...

    def site_capacity(self, group: Group) -> dict[str, Any]:
        """A site's ``capacity`` (wire form) naming the group."""
        ...

    def unhealthy_instance(self, group: Group, zone: str) -> str:
        """Make one instance of the zone unhealthy as the cloud itself would (AWS: the group
        marks it Unhealthy, as a failed EC2 status check or, with health check type ELB, a
        failed target group check does; OpenStack: Nova reports it SHUTOFF); its ID."""
        ...

    def fail_scale_up(self, group: Group, zone: str) -> str:
        """Make the cloud report a scale-up of the group that failed for capacity (AWS: a
        failed scaling activity, answered by the region's fault proxy since moto keeps
        none; OpenStack: a server of the zone in ERROR with Nova's "No valid host" fault);
        words the failure is reported with."""
        ...

    def bucket(self, region: str) -> str: ...
    def pending_uploads(self, region: str, bucket: str) -> int: ...
    def volume(self, region: str, zone: str, size_gb: int) -> str: ...
    def volume_info(self, region: str, volume_id: str) -> tuple[str, str, dict[str, str]]:
        """(zone, snapshot it was made from, tags)."""
        ...


# ----------------------------------------------------------------------------- AWS

AMI: Final = "ami-12c6146b"  # one of moto's built-in images
FAST_RETRIES: Final = RetryPolicy(
    attempts=3, deadline_seconds=10.0, base_seconds=0.01, max_backoff_seconds=0.05
)
AWS_ERROR_CODES: Final = {
    (Fault.THROTTLE, "probe"): "RequestLimitExceeded",
    (Fault.THROTTLE, "capacity"): "Throttling",
    (Fault.THROTTLE, "objects"): "SlowDown",
    (Fault.SERVER_ERROR, "probe"): "InternalError",
    (Fault.UNAVAILABLE, "probe"): "Unavailable",
    (Fault.AUTH, "probe"): "AuthFailure",
    (Fault.AUTH, "capacity"): "InvalidClientTokenId",
}


@dataclass
class AwsBackend:
    """moto behind a fault proxy per region; boto3 through an AwsConnector."""

    moto: MotoServer
    proxies: dict[str, FaultProxy]
    timeout_seconds: float = 5.0
    attempts: int = 3
    name: str = "aws"
    regions: tuple[str, str] = (EAST, WEST)
    dns_region: str = GLOBAL
    outcomes: list[Outcome] = field(default_factory=list)
    errors: tuple[type[BaseException], ...] = (
        botocore.exceptions.BotoCoreError,
        botocore.exceptions.ClientError,
    )
    error_codes: Mapping[tuple[Fault, str], str] = field(default_factory=lambda: AWS_ERROR_CODES)
    dns_per_site: bool = True
    capacity_floor: int = 1
    places_exactly: bool = False
    copies_keep_ids: bool = False
    copy_reads_source: bool = False
    requests_to_open_large: int = 1
    _session: boto3.Session = field(
        default_factory=lambda: boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing"
        )
    )

    def __post_init__(self) -> None:
        spec = CloudProviderSpec.model_validate(
            {
                "type": "aws",
                "regions": [EAST, WEST],
                "credentials": {"source": "Secret", "secretRef": {"name": "aws-test"}},
                "endpointOverrides": [
                    {"service": "route53", "url": self.proxies[GLOBAL].url},
                    {"region": EAST, "url": self.proxies[EAST].url},
                    {"region": WEST, "url": self.proxies[WEST].url},
                ],
            }
        )
        self.spec = spec
        self.secret: Mapping[str, str] = {
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        self.connector = AwsConnector(
            "aws-test",
            spec,
            AwsCredentials.from_secret_data(self.secret),
            timeout_seconds=self.timeout_seconds,
            retry_policy=replace(FAST_RETRIES, attempts=self.attempts),
            on_outcome=self._seen,
        )
        self.calls = self.connector.calls

    def _seen(
        self, region: str, service: str, operation: str, verdict: Classified, latency: float
    ) -> None:
        self.outcomes.append(
            Outcome(region, service, operation, verdict.outcome, verdict.code, latency)
        )

    def _direct(self, service: str, region: str = EAST) -> Any:
        """A client straight to moto, bypassing the fault layer."""
        return self._session.client(  # type: ignore[call-overload]
            service, region_name=region, endpoint_url=self.moto.url
        )

    def proxy(self, region: str) -> FaultProxy:
        return self.proxies[region]

    def requests_per_call(self, fault: Fault | None) -> int:
        return 1  # botocore's own retries are off

    def capacity_mutations(self, removed: int, zones_grown: int) -> int:
        return 1 if removed or zones_grown else 0  # one UpdateAutoScalingGroup

    def unusable_zone(self, region: str) -> tuple[str, str]:
        return self.zones(region)[3], "no subnet"  # groups get subnets in the first three

    def reconnected(self, *, timeout_seconds: float = 5.0, attempts: int = 3) -> AwsBackend:
        return AwsBackend(self.moto, self.proxies, timeout_seconds, attempts)

    # implementations

    def traffic(self) -> Route53Traffic:
        return Route53Traffic(self.connector, sync_poll_seconds=0.1)

    def probe(self) -> Ec2ApiPlaneProbe:
        return Ec2ApiPlaneProbe(self.connector)

    def capacity(self, group: Group) -> AutoScalingGroupCapacity:
        return AutoScalingGroupCapacity(self.connector, group.region, group.name)

    def objects(self, region: str, bucket: str, **options: int) -> S3ObjectStore:
        return S3ObjectStore(self.connector, region, bucket, **options)

    def snapshots(self, region: str) -> EbsSnapshots:
        return EbsSnapshots(self.connector, region)

    # levers

    def zones(self, region: str) -> list[str]:
        answer = self._direct("ec2", region).describe_availability_zones()
        return sorted(zone["ZoneName"] for zone in answer["AvailabilityZones"])

    def dns_zone(self, name: str) -> str:
        answer = self._direct("route53").create_hosted_zone(
            Name=name, CallerReference=f"test-{time.time_ns()}"
        )
        return str(answer["HostedZone"]["Id"]).removeprefix("/hostedzone/")

    def dns_sets(self, record: DnsRecord) -> dict[str, DnsSet]:
        route53 = self._direct("route53")
        zone_id = record.hosted_zone_id
        if zone_id is None:
            zones = route53.list_hosted_zones_by_name(DNSName=record.hosted_zone_name)
            zone_id = zones["HostedZones"][0]["Id"]
        name = record.name.rstrip(".") + "."
        listed = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        checks = self.health_checks()
        return {
            rrset["SetIdentifier"]: DnsSet(
                "Failover" if "Failover" in rrset else "Weighted",
                rrset.get("Weight"),
                rrset.get("Failover"),
                tuple(r["Value"] for r in rrset.get("ResourceRecords", [])),
                checks.get(rrset["HealthCheckId"]) if "HealthCheckId" in rrset else None,
            )
            for rrset in listed
            if rrset["Name"] == name and rrset["Type"] == record.type and "SetIdentifier" in rrset
        }

    def dns_answer(self, record: DnsRecord) -> tuple[str, ...]:
        sets = self.dns_sets(record).values()
        primary = [s for s in sets if s.role == "PRIMARY"]
        chosen = primary or [s for s in sets if (s.weight or 0) > 0]
        return tuple(sorted(value for s in chosen for value in s.values))

    def health_checks(self) -> dict[str, str]:
        found = {}
        for check in self._direct("route53").list_health_checks()["HealthChecks"]:
            config = check["HealthCheckConfig"]
            host = config.get("IPAddress") or config.get("FullyQualifiedDomainName")
            url = f"{config['Type'].lower()}://{host}:{config['Port']}{config['ResourcePath']}"
            found[check["Id"]] = url
        return found

    def group(self, region: str, per_zone: Mapping[str, int]) -> Group:
        """moto launches every instance in the group's first subnet, so the group is grown
        one zone at a time with that zone's subnet first, then given all of them."""
        ec2, scaling = self._direct("ec2", region), self._direct("autoscaling", region)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)[
                "Subnet"
            ]["SubnetId"]
            for i, zone in enumerate(per_zone)
        ]
        name = f"web-{time.time_ns()}"
        template = ec2.create_launch_template(
            LaunchTemplateName=name, LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.micro"}
        )["LaunchTemplate"]["LaunchTemplateId"]
        total = sum(per_zone.values())
        scaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
            MinSize=0,
            MaxSize=max(total, 1),
            DesiredCapacity=0,
            VPCZoneIdentifier=subnets[0],
        )
        running = 0
        for subnet, count in zip(subnets, per_zone.values(), strict=True):
            running += count
            scaling.update_auto_scaling_group(
                AutoScalingGroupName=name, VPCZoneIdentifier=subnet, DesiredCapacity=running
            )
        scaling.update_auto_scaling_group(
            AutoScalingGroupName=name, VPCZoneIdentifier=",".join(subnets), MinSize=1
        )
        return Group(region, name, tuple(per_zone))

    def _group(self, group: Group) -> Any:
        scaling = self._direct("autoscaling", group.region)
        return scaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group.name])[
            "AutoScalingGroups"
        ][0]

    def group_zones(self, group: Group) -> set[str]:
        subnets = [s for s in self._group(group)["VPCZoneIdentifier"].split(",") if s]
        described = self._direct("ec2", group.region).describe_subnets(SubnetIds=subnets)
        return {subnet["AvailabilityZone"] for subnet in described["Subnets"]}

    def site_capacity(self, group: Group) -> dict[str, Any]:
        return {"perZone": 1, "autoScalingGroup": {"name": group.name}}

    def _instance_in(self, group: Group, zone: str) -> str:
        return str(
            next(
                i["InstanceId"]
                for i in self._group(group)["Instances"]
                if i["AvailabilityZone"] == zone
            )
        )

    def unhealthy_instance(self, group: Group, zone: str) -> str:
        instance = self._instance_in(group, zone)
        self._direct("autoscaling", group.region).set_instance_health(
            InstanceId=instance, HealthStatus="Unhealthy"
        )
        return instance

    def fail_scale_up(self, group: Group, zone: str) -> str:
        message = (
            f"We currently do not have sufficient t3.micro capacity in the Availability Zone "
            f"you requested ({zone}). Launching EC2 instance failed. "
            "(InsufficientInstanceCapacity)"
        )
        self.proxies[group.region].set_faults(*failed_scale_up(group.name, message))
        return "InsufficientInstanceCapacity"

    def bucket(self, region: str) -> str:
        name = f"lifeboat-{region}-{time.time_ns()}"
        s3 = self._direct("s3", region)
        if region == EAST:
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        return name

    def pending_uploads(self, region: str, bucket: str) -> int:
        answer = self._direct("s3", region).list_multipart_uploads(Bucket=bucket)
        return len(answer.get("Uploads", []))

    def volume(self, region: str, zone: str, size_gb: int) -> str:
        answer = self._direct("ec2", region).create_volume(AvailabilityZone=zone, Size=size_gb)
        return str(answer["VolumeId"])

    def volume_info(self, region: str, volume_id: str) -> tuple[str, str, dict[str, str]]:
        volume = self._direct("ec2", region).describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
        tags = {t["Key"]: t["Value"] for t in volume.get("Tags", [])}
        return volume["AvailabilityZone"], volume.get("SnapshotId", ""), tags


@pytest.fixture
def aws_backend(moto: MotoServer, make_fault_proxy: MakeFaultProxy) -> Iterator[Backend]:
    proxies = {name: make_fault_proxy(moto.url, name=name) for name in (EAST, WEST, GLOBAL)}
    backend = AwsBackend(moto, proxies)
    yield backend
    backend.connector.close()


# ----------------------------------------------------------------------------- OpenStack

IMAGE: Final = IMAGES[0].id  # the emulator's CirrOS
FLAVOR: Final = "m1.tiny"  # by name: the driver looks it up
OPENSTACK_ERROR_CODES: Final = {
    (Fault.THROTTLE, "probe"): "429 HttpException",
    (Fault.THROTTLE, "capacity"): "429 HttpException",
    (Fault.THROTTLE, "objects"): "429 HttpException",
    (Fault.SERVER_ERROR, "probe"): "500 HttpException",
    (Fault.UNAVAILABLE, "probe"): "503 HttpException",
    (Fault.AUTH, "probe"): "401 HttpException",
    (Fault.AUTH, "capacity"): "401 HttpException",
}
_OBJECT_OPTIONS: Final = {
    "multipart_threshold": "large_object_threshold",
    "part_size": "segment_size",
    "chunk_size": "chunk_size",
    "page_size": "page_size",
}


@dataclass(frozen=True)
class RegionProxies:
    """Every fault proxy of one OpenStack region (compute, object-store, dns, volumev3),
    acting as one: faults go to all, counts add up. Keystone's proxy, shared by the
    regions, is not among them."""

    proxies: tuple[FaultProxy, ...]

    def set_faults(self, *specs: FaultSpec) -> None:
        for proxy in self.proxies:
            proxy.set_faults(*specs)

    def clear_faults(self) -> None:
        for proxy in self.proxies:
            proxy.clear_faults()

    def clear_records(self) -> None:
        for proxy in self.proxies:
            proxy.clear_records()

    def count(
        self,
        *,
        service: str | None = None,
        action: str | None = None,
        mutating: bool | None = None,
        fault: Fault | None = None,
        forwarded: bool | None = None,
    ) -> int:
        return sum(
            proxy.count(
                service=service, action=action, mutating=mutating, fault=fault, forwarded=forwarded
            )
            for proxy in self.proxies
        )


@dataclass
class OpenStackBackend:
    """The sandbox's OpenStack world; openstacksdk through an OpenStackConnector."""

    world: OpenStackWorld
    timeout_seconds: float = 5.0
    attempts: int = 3
    made_zones: list[str] = field(default_factory=list)
    """Names of the DNS zones made here (removed after the test; shared with reconnected
    copies)."""
    name: str = "openstack"
    regions: tuple[str, str] = (ONE, TWO)
    dns_region: str = ONE
    outcomes: list[Outcome] = field(default_factory=list)
    errors: tuple[type[BaseException], ...] = CALL_ERRORS
    error_codes: Mapping[tuple[Fault, str], str] = field(
        default_factory=lambda: OPENSTACK_ERROR_CODES
    )
    dns_per_site: bool = False
    capacity_floor: int = 0
    places_exactly: bool = True
    copies_keep_ids: bool = True
    copy_reads_source: bool = True
    requests_to_open_large: int = 2

    def __post_init__(self) -> None:
        spec = CloudProviderSpec.model_validate(
            {
                "type": "openstack",
                "regions": [ONE, TWO],
                "credentials": {"source": "Secret", "secretRef": {"name": "openstack-test"}},
                "openstack": {"cloud": CLOUD_NAME},
            }
        )
        self.spec = spec
        self.secret: Mapping[str, str] = {"clouds.yaml": self.world.clouds_yaml()}
        credentials = OpenStackCredentials.from_secret_data(self.secret, CLOUD_NAME)
        self.connector = OpenStackConnector(
            "openstack-test",
            spec,
            credentials,
            timeout_seconds=self.timeout_seconds,
            retry_policy=replace(FAST_RETRIES, attempts=self.attempts),
            on_outcome=self._seen,
        )
        self.calls = self.connector.calls
        self._warm_up()

    def _warm_up(self) -> None:
        """Authenticate and discover every service's versions now, then forget the
        requests, so that the tests count (and fault) the calls they make, not the SDK's
        first-use discovery. A generous timeout meanwhile: the connector's own may be
        short on purpose, and a loaded machine slow."""
        for region in self.regions:
            conn = self.connector.connection(region)
            session = conn.session
            session.timeout, short = 60.0, session.timeout
            try:
                session.get_token()
                for service in (conn.compute, conn.block_storage, conn.dns):
                    service.get_endpoint_data()
            finally:
                session.timeout = short
            self.proxy(region).clear_records()

    def _seen(
        self, region: str, service: str, operation: str, verdict: Classified, latency: float
    ) -> None:
        self.outcomes.append(
            Outcome(region, service, operation, verdict.outcome, verdict.code, latency)
        )

    def _direct(self, region: str) -> Any:
        """An SDK connection straight to Keystone and the services, past the fault layer."""
        return self.world.direct_connection(region)

    def proxy(self, region: str) -> RegionProxies:
        return RegionProxies(tuple(self.world.proxy(region, s) for s in REGIONAL_SERVICES))

    def requests_per_call(self, fault: Fault | None) -> int:
        # keystoneauth answers a 401 by authenticating again (at Keystone) and repeating
        # the request once.
        return 2 if fault is Fault.AUTH else 1

    def capacity_mutations(self, removed: int, zones_grown: int) -> int:
        return removed + zones_grown  # one DELETE per server, one multi-create per zone

    def unusable_zone(self, region: str) -> tuple[str, str]:
        other = next(r for r in self.regions if r != region)
        return self.zones(other)[0], "no availability zone"

    def reconnected(self, *, timeout_seconds: float = 5.0, attempts: int = 3) -> OpenStackBackend:
        return OpenStackBackend(self.world, timeout_seconds, attempts, self.made_zones)

    # implementations

    def traffic(self) -> DesignateTraffic:
        return DesignateTraffic(self.connector, self.dns_region, sync_poll_seconds=0.1)

    def probe(self) -> NovaApiPlaneProbe:
        return NovaApiPlaneProbe(self.connector)

    def capacity(self, group: Group) -> NovaServersCapacity:
        template = ServerTemplate(
            name_prefix=group.name, site=group.name, flavor=FLAVOR, image=IMAGE, networks="none"
        )
        return NovaServersCapacity(
            self.connector,
            group.region,
            template,
            boot_poll_seconds=0.1,
            boot_timeout_seconds=60.0,
        )

    def objects(self, region: str, bucket: str, **options: int) -> SwiftObjectStore:
        settings = {_OBJECT_OPTIONS[name]: value for name, value in options.items()}
        return SwiftObjectStore(self.connector, region, bucket, **settings)

    def snapshots(self, region: str) -> CinderBackups:
        return CinderBackups(self.connector, region, wait_seconds=60.0, poll_seconds=0.1)

    # levers

    def zones(self, region: str) -> list[str]:
        return sorted(self.world.zones(region))

    def dns_zone(self, name: str) -> str:
        """Create the zone in the DNS region's Designate (replacing one of that name that an
        earlier test left: Designate zones live as long as the session's world)."""
        fqdn = name.rstrip(".") + "."
        dns = self._direct(self.dns_region).dns
        for old in list(dns.zones(name=fqdn)):
            dns.delete_zone(old, ignore_missing=True)
        eventually(lambda: not list(dns.zones(name=fqdn)), f"zone {fqdn} gone")
        zone = dns.create_zone(name=fqdn, email="ops@lifeboat.test", ttl=300)
        self.made_zones.append(fqdn)
        eventually(lambda: dns.get_zone(zone.id).status == "ACTIVE", f"zone {fqdn} active")
        return str(zone.id)

    def remove_zones(self) -> None:
        dns = self._direct(self.dns_region).dns
        for fqdn in self.made_zones:
            for zone in list(dns.zones(name=fqdn)):
                dns.delete_zone(zone, ignore_missing=True)

    def dns_sets(self, record: DnsRecord) -> dict[str, DnsSet]:
        return {}  # one record set per name, holding the active site's values

    def dns_answer(self, record: DnsRecord) -> tuple[str, ...]:
        designate = self.world.designate(self.dns_region)
        return tuple(sorted(designate.resolve(record.name, record.type)))

    def health_checks(self) -> dict[str, str]:
        return {}  # Designate has no DNS health checks

    def group(self, region: str, per_zone: Mapping[str, int]) -> Group:
        """Servers made as the driver makes them (name prefix and site metadata), booted
        straight at Nova, exactly ``per_zone``; there is no load balancer to register
        with."""
        name = f"web-{uuid.uuid4().hex[:8]}"
        compute = self._direct(region).compute
        made = [
            compute.create_server(
                name=f"{name}-{zone}-{index}",
                flavor_id="1",
                image_id=IMAGE,
                networks="none",
                availability_zone=zone,
                metadata={TAG_SITE: name},
            ).id
            for zone, count in per_zone.items()
            for index in range(count)
        ]
        nova = self.world.nova(region)
        eventually(
            lambda: all(s.status == "ACTIVE" for s in nova.servers() if s.id in made),
            f"servers of {name} active",
        )
        return Group(region, name, tuple(per_zone))

    def _servers(self, group: Group) -> list[Any]:
        return sorted(
            (
                s
                for s in self.world.nova(group.region).servers()
                if s.name.startswith(f"{group.name}-")
                and s.metadata.get(TAG_SITE) == group.name
                and s.task_state != "deleting"
            ),
            key=lambda s: s.name,
        )

    def group_zones(self, group: Group) -> set[str]:
        return {server.availability_zone for server in self._servers(group)}

    def site_capacity(self, group: Group) -> dict[str, Any]:
        template = {"namePrefix": group.name, "flavor": FLAVOR, "image": IMAGE}
        return {"perZone": 1, "openstackServers": template}

    def _running_in(self, group: Group, zone: str) -> str:
        return str(
            next(
                s.id
                for s in self._servers(group)
                if s.availability_zone == zone and s.status == "ACTIVE"
            )
        )

    def unhealthy_instance(self, group: Group, zone: str) -> str:
        server = self._running_in(group, zone)
        self.world.nova(group.region).set_server_status(server, "SHUTOFF")
        return server

    def fail_scale_up(self, group: Group, zone: str) -> str:
        server = self._running_in(group, zone)
        self.world.nova(group.region).set_server_status(
            server, "ERROR", fault_message="No valid host was found. There are not enough hosts"
        )
        return "No valid host"

    def bucket(self, region: str) -> str:
        name = f"lifeboat-{region.lower()}-{uuid.uuid4().hex[:12]}"
        self._direct(region).object_store.create_container(name)
        return name

    def pending_uploads(self, region: str, bucket: str) -> int:
        """Uploads whose segments are stored but that no manifest of the bucket uses."""
        store = self._direct(region).object_store
        referenced: set[str] = set()
        for item in store.get(f"/{bucket}", params={"format": "json"}).json():
            if "slo_etag" in item:
                manifest = store.get(
                    f"/{bucket}/{item['name']}",
                    params={"multipart-manifest": "get", "format": "raw"},
                ).json()
                referenced |= {entry["path"].lstrip("/") for entry in manifest}
        listing = store.get(f"/{bucket}_segments", params={"format": "json"})
        segments = listing.json() if listing.status_code == 200 else []
        unused = {
            item["name"].rsplit("/", 1)[0]
            for item in segments
            if f"{bucket}_segments/{item['name']}" not in referenced
        }
        return len(unused)

    def volume(self, region: str, zone: str, size_gb: int) -> str:
        storage = self._direct(region).block_storage
        volume = storage.create_volume(size=size_gb, availability_zone=zone)
        storage.wait_for_status(volume, "available", ["error"], interval=0.1, wait=60)
        return str(volume.id)

    def volume_info(self, region: str, volume_id: str) -> tuple[str, str, dict[str, str]]:
        volume = next(v for v in self.world.cinder(region).volumes() if v.id == volume_id)
        return volume.availability_zone, volume.backup_id or "", dict(volume.metadata)

    def segments(self, region: str, bucket: str) -> list[str]:
        """The names in the bucket's segments container."""
        listing = self._direct(region).object_store.get(
            f"/{bucket}_segments", params={"format": "json"}
        )
        return [item["name"] for item in listing.json()] if listing.status_code == 200 else []

    def exhaust_zone(self, region: str, zone: str) -> None:
        """Nova finds no host in ``zone`` any more (undone after the test)."""
        self.world.nova(region).set_zone_capacity(zone, 0)


def eventually(check: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Poll ``check`` until it is truthy (generous: a loaded machine is slow)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def openstack_backend(openstack_cloud: OpenStackWorld) -> Iterator[OpenStackBackend]:
    backend = OpenStackBackend(openstack_cloud)
    yield backend
    backend.connector.close()
    backend.remove_zones()


BACKENDS: Final = [
    pytest.param("aws_backend", id="aws"),
    pytest.param("openstack_backend", id="openstack", marks=pytest.mark.openstack),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    chosen: Backend = request.getfixturevalue(request.param)
    return chosen


# ----------------------------------------------------------------------------- helpers


async def chunked(
    data: bytes, size: int, on_chunk: Callable[[int], None] | None = None
) -> AsyncIterator[bytes]:
    """``data`` in ``size`` pieces; ``on_chunk(offset)`` is called before each one."""
    for offset in range(0, len(data), size):
        if on_chunk is not None:
            on_chunk(offset)
        yield data[offset : offset + size]
        await asyncio.sleep(0)


async def read_all(store: ObjectStore, key: str) -> tuple[bytes, int]:
    """The object's bytes and its largest chunk."""
    parts = [chunk async for chunk in store.get(key)]
    return b"".join(parts), max((len(p) for p in parts), default=0)


async def keys(store: ObjectStore, prefix: str) -> list[str]:
    return [info.key async for info in store.list(prefix)]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# ----------------------------------------------------------------------------- traffic


ADDRESSES: Final = {"use1": "127.0.0.1", "usw2": "127.0.0.2", "euc1": "127.0.0.3"}


def plan(record: DnsRecord, routing: str, *sites: tuple[str, int, str | None]) -> TrafficPlan:
    """A plan giving each (site, weight, health check URL) its own address (ADDRESSES)."""
    return TrafficPlan(
        record=record,
        records=tuple(
            SiteRecord(site, (ADDRESSES[site],), weight, url) for site, weight, url in sites
        ),
        comment="contract test",
        routing="Failover" if routing == "Failover" else "Weighted",
    )


async def test_weighted_traffic_moves_atomically_and_drops_orphans(backend: Backend) -> None:
    zone_id = backend.dns_zone("lifeboat.test")
    record = DnsRecord(None, "lifeboat.test", "web.lifeboat.test", "A", 30)
    traffic = backend.traffic()

    first = plan(record, "Weighted", ("use1", 100, None), ("usw2", 0, None))
    change = await traffic.apply(first)
    assert change.in_sync and change.synced_at is not None
    assert await traffic.weights(first) == {"use1": 100, "usw2": 0}
    assert backend.dns_answer(record) == (ADDRESSES["use1"],)

    # Fail over to usw2 while use1 leaves the plan: its record set goes in the same change.
    moved = plan(record, "Weighted", ("usw2", 100, None), ("euc1", 0, None))
    await traffic.apply(moved)
    assert await traffic.weights(moved) == {"usw2": 100, "euc1": 0}
    assert backend.dns_answer(record) == (ADDRESSES["usw2"],)
    if backend.dns_per_site:
        sets = backend.dns_sets(record)
        assert {site: s.weight for site, s in sets.items()} == {"usw2": 100, "euc1": 0}
        assert sets["usw2"].values == (ADDRESSES["usw2"],)
    assert backend.proxy(backend.dns_region).count(mutating=True) == 2  # one change each
    assert not any("HealthCheck" in o.operation for o in backend.outcomes)

    # Renamed: the new name is published and the old one retired.
    renamed = DnsRecord(zone_id, None, "www.lifeboat.test", "A", 30)
    await traffic.apply(replace(moved, record=renamed, retire=record))
    assert backend.dns_answer(record) == ()
    assert backend.dns_answer(renamed) == (ADDRESSES["usw2"],)
    assert await traffic.weights(replace(moved, record=renamed)) == {"usw2": 100, "euc1": 0}
    if backend.dns_per_site:
        assert backend.dns_sets(record) == {}
        assert {site: s.weight for site, s in backend.dns_sets(renamed).items()} == {
            "usw2": 100,
            "euc1": 0,
        }


def owned(base: TrafficPlan, owner: str, epoch: int) -> TrafficPlan:
    """``base`` written on behalf of ``owner`` at ``epoch``."""
    active = max(base.records, key=lambda r: r.weight).site
    return replace(base, owner=DnsOwner(owner, epoch, active, f"fp-{epoch}"))


async def test_a_name_has_one_owner_and_an_older_epoch_is_refused(backend: Backend) -> None:
    backend.dns_zone("lifeboat.test")
    record = DnsRecord(None, "lifeboat.test", "owned.lifeboat.test", "A", 30)
    traffic = backend.traffic()
    base = plan(record, "Weighted", ("use1", 100, None), ("usw2", 0, None))
    assert await traffic.read(base) == DnsReading(None)

    await traffic.apply(owned(base, "shop/web", 1))
    assert await traffic.read(base) == DnsReading(DnsOwner("shop/web", 1, "use1", "fp-1"))
    moved = plan(record, "Weighted", ("use1", 0, None), ("usw2", 100, None))
    await traffic.apply(owned(moved, "shop/web", 2))
    assert (await traffic.read(base)).owner == DnsOwner("shop/web", 2, "usw2", "fp-2")

    with pytest.raises(DnsFenced) as fenced:  # a deposed writer, late
        await traffic.apply(owned(base, "shop/web", 1))
    assert (fenced.value.stored, fenced.value.mine) == (2, 1)
    with pytest.raises(DnsOwnedByOther) as taken:  # another app, same name
        await traffic.apply(owned(base, "other/app", 9))
    assert taken.value.owner == "shop/web"
    assert backend.dns_answer(record) == (ADDRESSES["usw2"],)  # neither changed anything
    assert (await traffic.read(base)).owner == DnsOwner("shop/web", 2, "usw2", "fp-2")


async def test_a_change_dns_already_holds_is_not_sent_again(backend: Backend) -> None:
    """After a crash between a DNS change and its record in status, the same change is
    asked for again: it is found in place, and no mutating call goes out."""
    backend.dns_zone("lifeboat.test")
    record = DnsRecord(None, "lifeboat.test", "again.lifeboat.test", "A", 30)
    traffic = backend.traffic()
    change = owned(plan(record, "Weighted", ("use1", 100, None), ("usw2", 0, None)), "a/b", 3)
    await traffic.apply(change)
    proxy = backend.proxy(backend.dns_region)
    before = proxy.count(mutating=True)
    again = await traffic.apply(change)
    assert again.in_sync
    assert proxy.count(mutating=True) == before


async def test_route53_reads_a_name_whose_owner_record_falls_off_the_page(
    aws_backend: AwsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a zone full of other names, a look reads a page of record sets from the name on,
    and its owner record on its own when it falls off that page: with 16 sets a page, an
    app of 16 sites is found in place and nothing is sent again. (moto names no
    NextRecordIdentifier, so paging inside one name's sets of one type cannot be shown
    here; the look stops on a page that brings nothing new rather than loop.)"""
    from controller.providers.aws import route53 as route53_module

    monkeypatch.setattr(route53_module, "LOOK_PAGE", "16")
    aws_backend.dns_zone("lifeboat.test")
    traffic = aws_backend.traffic()
    for i in range(12):  # neighbours before and after the name, in Route 53's order
        other = DnsRecord(None, "lifeboat.test", f"big{i:02d}.lifeboat.test", "A", 30)
        await traffic.apply(owned(plan(other, "Weighted", ("use1", 100, None)), f"n/{i}", 1))
    record = DnsRecord(None, "lifeboat.test", "big.lifeboat.test", "A", 30)
    sixteen = TrafficPlan(
        record=record,
        records=tuple(
            SiteRecord(f"site{i:02d}", (f"192.0.2.{i + 1}",), 100 if i == 0 else 0, None)
            for i in range(16)
        ),
        comment="contract test",
        routing="Weighted",
    )
    change = owned(sixteen, "a/b", 2)
    await traffic.apply(change)
    proxy = aws_backend.proxy(aws_backend.dns_region)
    before = proxy.count(mutating=True)
    again = await traffic.apply(change)
    assert again.in_sync
    assert proxy.count(mutating=True) == before
    reading = await traffic.read(change)
    assert reading.owner is not None and reading.owner.epoch == 2


async def test_records_lifeboat_did_not_write_are_someone_elses(backend: Backend) -> None:
    backend.dns_zone("lifeboat.test")
    record = DnsRecord(None, "lifeboat.test", "theirs.lifeboat.test", "A", 30)
    traffic = backend.traffic()
    theirs = plan(record, "Weighted", ("euc1", 100, None))
    await traffic.apply(theirs)  # written without an owner record (not by Lifeboat)
    mine = plan(record, "Weighted", ("use1", 100, None), ("usw2", 0, None))
    reading = await traffic.read(mine)
    assert reading.owner is None and reading.foreign is not None
    with pytest.raises(DnsOwnedByOther):
        await traffic.apply(owned(mine, "shop/web", 1))
    assert backend.dns_answer(record) == (ADDRESSES["euc1"],)
    # Records of this app's own sites only (a Lifeboat from before owner records): taken over.
    legacy = DnsRecord(None, "lifeboat.test", "legacy.lifeboat.test", "A", 30)
    await traffic.apply(plan(legacy, "Weighted", ("use1", 100, None), ("usw2", 0, None)))
    adopted = plan(legacy, "Weighted", ("use1", 0, None), ("usw2", 100, None))
    assert await traffic.read(adopted) == DnsReading(None)
    await traffic.apply(owned(adopted, "shop/web", 2))
    assert backend.dns_answer(legacy) == (ADDRESSES["usw2"],)


async def test_route53_refuses_a_change_whose_owner_record_moved_meanwhile(
    aws_backend: AwsBackend,
) -> None:
    """The race a read-check-write cannot close: the owner record changes between this
    writer's read and its change. Route 53 itself refuses the batch (DELETE of the exact
    record read no longer matches) and nothing of it is applied."""
    aws_backend.dns_zone("lifeboat.test")
    record = DnsRecord(None, "lifeboat.test", "race.lifeboat.test", "A", 30)
    traffic = aws_backend.traffic()
    base = plan(record, "Weighted", ("use1", 100, None), ("usw2", 0, None))
    await traffic.apply(owned(base, "shop/web", 1))
    look = traffic._look
    stale = await look(await traffic.hosted_zone_id(record), record)
    moved = plan(record, "Weighted", ("use1", 0, None), ("usw2", 100, None))
    await traffic.apply(owned(moved, "shop/web", 2))  # the new leader, meanwhile

    async def as_read_before(zone_id: str, name: DnsRecord) -> Any:
        traffic._look = look  # type: ignore[method-assign]  # only the first look is stale
        return stale

    traffic._look = as_read_before  # type: ignore[method-assign,assignment]
    late = plan(record, "Weighted", ("use1", 100, None), ("euc1", 0, None))
    with pytest.raises(DnsFenced) as fenced:  # what it read allows it; Route 53 does not
        await traffic.apply(owned(late, "shop/web", 1))
    assert fenced.value.stored == 2
    assert aws_backend.dns_answer(record) == (ADDRESSES["usw2"],)


def test_the_sandbox_applies_route53_batches_all_or_nothing(aws_backend: AwsBackend) -> None:
    """moto alone would accept these; Route 53 (and the sandbox) refuses them whole."""
    route53 = aws_backend._direct("route53")
    zone = aws_backend.dns_zone("lifeboat.test")
    name = "strict.lifeboat.test."

    def txt(value: str) -> dict[str, Any]:
        return {"Name": name, "Type": "TXT", "TTL": 30, "ResourceRecords": [{"Value": value}]}

    def change(*changes: tuple[str, dict[str, Any]]) -> None:
        route53.change_resource_record_sets(
            HostedZoneId=zone,
            ChangeBatch={"Changes": [{"Action": a, "ResourceRecordSet": r} for a, r in changes]},
        )

    change(("CREATE", txt('"one"')))
    with pytest.raises(botocore.exceptions.ClientError, match="already exists"):
        change(("CREATE", txt('"two"')))
    change(("DELETE", txt('"one"')), ("CREATE", txt('"two"')))
    with pytest.raises(botocore.exceptions.ClientError, match="do not match"):
        # deleting what the record held before: refused, and the CREATE before it undone
        change(("CREATE", {**txt('"x"'), "Name": "other." + name}), ("DELETE", txt('"one"')))
    listed = route53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    texts = {
        r["Name"]: [v["Value"] for v in r["ResourceRecords"]] for r in listed if r["Type"] == "TXT"
    }
    assert texts.get(name) == ['"two"'] and "other." + name not in texts


async def test_failover_traffic_with_health_checks(backend: Backend) -> None:
    backend.dns_zone("lifeboat.test")
    record = DnsRecord(None, "lifeboat.test", "app.lifeboat.test", "A", 30)
    traffic = backend.traffic()
    a, b, c = (f"http://127.0.0.{i}:8080/healthz" for i in (1, 2, 3))
    await traffic.apply(plan(record, "Weighted", ("use1", 100, None), ("usw2", 0, None)))

    # Weighted -> failover: the best standby is the secondary, the third site gets nothing.
    three = plan(record, "Failover", ("use1", 100, a), ("usw2", 0, b), ("euc1", 0, c))
    await traffic.apply(three)
    assert backend.dns_answer(record) == (ADDRESSES["use1"],)
    weights = await traffic.weights(three)
    assert (weights["use1"], weights["usw2"], weights.get("euc1", 0)) == (100, 0, 0)
    if backend.dns_per_site:
        sets = backend.dns_sets(record)
        assert {site: (s.routing, s.role, s.health_check_url) for site, s in sets.items()} == {
            "use1": ("Failover", "PRIMARY", a),
            "usw2": ("Failover", "SECONDARY", b),
        }
        assert sorted(backend.health_checks().values()) == [a, b]
        assert await traffic.weights(plan(record, "Failover")) == {"use1": 100, "usw2": 0}
    checks = backend.health_checks()

    # Applying again and failing over reuse the health checks: none created, none deleted.
    await traffic.apply(plan(record, "Failover", ("use1", 100, a), ("usw2", 0, b)))
    await traffic.apply(plan(record, "Failover", ("use1", 0, a), ("usw2", 100, b)))
    assert backend.health_checks() == checks
    assert backend.dns_answer(record) == (ADDRESSES["usw2"],)
    if backend.dns_per_site:
        sets = backend.dns_sets(record)
        assert (sets["usw2"].role, sets["use1"].role) == ("PRIMARY", "SECONDARY")

    # use1 leaves: its record set and (once in sync) its health check go; euc1's is made.
    await traffic.apply(plan(record, "Failover", ("usw2", 100, b), ("euc1", 0, c)))
    assert backend.dns_answer(record) == (ADDRESSES["usw2"],)
    if backend.dns_per_site:
        sets = backend.dns_sets(record)
        assert {site: (s.role, s.health_check_url) for site, s in sets.items()} == {
            "usw2": ("PRIMARY", b),
            "euc1": ("SECONDARY", c),
        }
        assert sorted(backend.health_checks().values()) == [b, c]

    # Back to weighted: every failover record set is replaced, every health check deleted.
    back = plan(record, "Weighted", ("usw2", 100, b), ("euc1", 0, c))
    await traffic.apply(back)
    assert backend.dns_answer(record) == (ADDRESSES["usw2"],)
    assert await traffic.weights(back) == {"usw2": 100, "euc1": 0}
    if backend.dns_per_site:
        sets = backend.dns_sets(record)
        assert {site: (s.routing, s.weight, s.health_check_url) for site, s in sets.items()} == {
            "usw2": ("Weighted", 100, None),
            "euc1": ("Weighted", 0, None),
        }
    assert backend.health_checks() == {}
    if not backend.dns_per_site:
        assert not any("HealthCheck" in o.operation for o in backend.outcomes)


# ----------------------------------------------------------------------------- API plane


async def test_probe_reports_each_region_and_its_zones(backend: Backend) -> None:
    east, west = backend.regions
    probe = backend.probe()
    for region in (east, west):
        report = await probe.probe(region)
        assert (report.region, report.outcome) == (region, CallOutcome.OK)
        assert report.latency > 0
        assert {zone for zone, _ in report.zones} == set(backend.zones(region))
        assert {state for _, state in report.zones} == {"available"}
        assert backend.proxy(region).count(mutating=False) == 1
        assert backend.proxy(region).count(mutating=True) == 0


async def test_throttled_probe_is_reported_not_raised(backend: Backend) -> None:
    east, west = backend.regions
    backend.proxy(east).set_faults(FaultSpec(throttle=1.0))
    probe = backend.probe()

    report = await probe.probe(east)
    assert report.outcome is CallOutcome.THROTTLED
    assert backend.error_codes[(Fault.THROTTLE, "probe")] in report.detail
    assert {o.outcome for o in backend.outcomes if o.region == east} == {CallOutcome.THROTTLED}
    assert (await probe.probe(west)).outcome is CallOutcome.OK


# ----------------------------------------------------------------------------- capacity


async def test_capacity_evacuates_a_zone(backend: Backend) -> None:
    east = backend.regions[0]
    first, second, third = backend.zones(east)[:3]
    group = backend.group(east, {first: 2, second: 2, third: 2})
    driver = backend.capacity(group)
    assert driver.region == east

    state = await driver.observe()
    assert state.desired == 6 and (state.minimum, state.maximum) == (backend.capacity_floor, 6)
    assert {(z.zone, z.desired, z.running) for z in state.zones} == {
        (first, 2, 2),
        (second, 2, 2),
        (third, 2, 2),
    }

    proxy = backend.proxy(east)
    proxy.clear_records()
    await driver.set_zones({first: 0, second: 3, third: 3})
    assert backend.group_zones(group) == {second, third}
    state = await driver.observe()
    assert state.desired == 6
    assert (state.zone(first).desired, state.zone(second).desired) == (0, 3)
    assert proxy.count(mutating=True) == backend.capacity_mutations(removed=2, zones_grown=2)

    proxy.clear_records()
    await driver.set_zones({second: 3, third: 3})  # already so: nothing to change
    assert proxy.count(mutating=True) == 0

    # The zone comes back (the AWS driver remembers the group's subnets), and more
    # capacity than the maximum raises the maximum.
    await driver.set_zones({first: 4, second: 4, third: 4})
    assert backend.group_zones(group) == {first, second, third}
    state = await driver.observe()
    assert (state.desired, state.maximum) == (12, 12)
    if backend.places_exactly:
        assert {(z.zone, z.desired, z.running) for z in state.zones} == {
            (first, 4, 4),
            (second, 4, 4),
            (third, 4, 4),
        }

    # Asking for less than the group's floor asks for the floor (Nova servers have none).
    await driver.set_zones({second: 0})
    state = await driver.observe()
    floor = backend.capacity_floor
    assert (state.desired, state.minimum) == (floor, floor)

    unusable, words = backend.unusable_zone(east)
    proxy.clear_records()
    with pytest.raises(ValueError, match=words):
        await driver.set_zones({unusable: 1})
    assert proxy.count(mutating=True) == 0


async def test_capacity_counts_ready_instances_and_reports_failed_scale_ups(
    backend: Backend,
) -> None:
    """What readiness rests on: Ready counts only what the cloud itself calls healthy, and a
    scale-up that failed for capacity is reported, and counted once against the region's
    API plane however often it is read."""
    east = backend.regions[0]
    first, second = backend.zones(east)[:2]
    group = backend.group(east, {first: 2, second: 1})
    driver = backend.capacity(group)

    state = await driver.observe()
    assert {z.zone: z.running for z in state.zones if z.running} == {first: 2, second: 1}
    assert state.failures == ()
    assert state.unit in ("instances InService", "servers ACTIVE")

    backend.unhealthy_instance(group, first)
    state = await driver.observe()
    assert (state.zone(first).running, state.zone(first).desired) == (1, 2)

    def capacity_errors() -> list[Outcome]:
        return [
            o
            for o in backend.outcomes
            if o.region == east and o.outcome is CallOutcome.CAPACITY_ERROR
        ]

    assert capacity_errors() == []
    words = backend.fail_scale_up(group, second)
    state = await driver.observe()
    assert len(state.failures) == 1 and words in state.failures[0], state.failures
    assert len(capacity_errors()) == 1
    state = await driver.observe()
    assert len(state.failures) == 1
    assert len(capacity_errors()) == 1  # the same failure, read again, counts once
    assert capacity_errors()[0].latency == 0.0


# ----------------------------------------------------------------------------- registry


async def test_the_registry_connects_a_provider_whose_capabilities_reach_its_cloud(
    backend: Backend,
) -> None:
    """What the operator uses: the CloudProvider connected through its type's backend
    (controller.providers.registry), every capability built from it and called once."""
    east = backend.regions[0]
    zone = backend.zones(east)[0]
    cloud = registry.connect("registry-test", backend.spec, backend.secret)
    try:
        assert (await cloud.probe.probe(east)).outcome is CallOutcome.OK
        assert await cloud.identity.whoami()

        group = backend.group(east, {zone: 1})
        site = Site.model_validate(
            {
                "name": group.name,
                "provider": "registry-test",
                "region": east,
                "zones": [zone],
                "trafficTargets": ["192.0.2.1"],
                "capacity": backend.site_capacity(group),
            }
        )
        observed = await cloud.capacity(site).observe()
        assert (observed.zone(zone).desired, observed.zone(zone).running) == (1, 1)

        store = cloud.object_store(east, backend.bucket(east))
        data = b"through the registry"
        await store.put("registry/key", chunked(data, 8), len(data), {}, md5_hex=md5(data))
        headed = await store.head("registry/key")
        assert headed is not None and headed.size == len(data)

        tags = {"lifeboat.dev/test": uuid.uuid4().hex}
        assert await cloud.volume_snapshots(east).list(tags) == []

        missing = DnsRecord(None, f"missing-{uuid.uuid4().hex[:8]}.test.", "www", "A", 60)
        traffic = cloud.traffic(east)
        with pytest.raises(DnsZoneNotFound, match="missing-"):
            await traffic.apply(plan(missing, "Weighted", ("use1", 100, None)))
    finally:
        cloud.close()


# ----------------------------------------------------------------------------- objects


async def test_small_object_round_trip(backend: Backend) -> None:
    west = backend.regions[1]
    store = backend.objects(west, backend.bucket(west), chunk_size=64 * 1024)
    assert store.region == west
    data = os.urandom(300 * 1024)
    metadata = {"origin": "use1", "Sha256": hashlib.sha256(data).hexdigest()}

    info = await store.put(
        "a/small", chunked(data, 100_000), len(data), metadata, md5_hex=md5(data)
    )
    assert (info.key, info.size, info.etag) == ("a/small", len(data), md5(data))
    assert info.metadata == {"origin": "use1", "sha256": hashlib.sha256(data).hexdigest()}
    headed = await store.head("a/small")
    assert headed is not None
    # put() describes the object from the write's answer (no HEAD): its time may have the
    # answer's one-second resolution; everything else is what HEAD says.
    assert abs(headed.last_modified - info.last_modified) < 1.0
    assert replace(headed, last_modified=info.last_modified) == info
    body, largest = await read_all(store, "a/small")
    assert body == data and largest <= 64 * 1024

    await store.delete("a/small")
    await store.delete("a/small")  # already gone: no error
    assert await store.head("a/small") is None
    with pytest.raises(KeyError):
        await read_all(store, "a/small")


async def test_large_object_streams_as_multipart(backend: Backend) -> None:
    east = backend.regions[0]
    store = backend.objects(
        east, backend.bucket(east), multipart_threshold=5 * MiB, part_size=5 * MiB
    )
    data = os.urandom(12 * MiB)
    proxy = backend.proxy(east)
    sent_before_end: list[int] = []

    def watch(offset: int) -> None:
        sent_before_end.append(proxy.count(mutating=True))

    info = await store.put(
        "b/large", chunked(data, 256 * 1024, watch), len(data), {"kind": "big"}, md5_hex=md5(data)
    )
    assert sent_before_end[-1] >= 2  # parts went out while the stream was still read
    assert proxy.count(mutating=True) >= 3  # three parts at least
    assert (info.size, info.metadata) == (len(data), {"kind": "big"})
    body, _ = await read_all(store, "b/large")
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


async def test_an_opened_object_describes_itself_with_one_request(backend: Backend) -> None:
    """``open`` is one GET whose answer says what HEAD says (simple and large objects), so a
    copy needs no HEAD; a response dropped unread leaves the store usable."""
    east = backend.regions[0]
    store = backend.objects(
        east, backend.bucket(east), multipart_threshold=5 * MiB, part_size=5 * MiB
    )
    small, large = os.urandom(1000), os.urandom(11 * MiB)
    await store.put("o/small", chunked(small, 512), len(small), {"k": "v"}, md5_hex=md5(small))
    await store.put("o/large", chunked(large, MiB), len(large), {"k": "w"}, md5_hex=md5(large))
    proxy = backend.proxy(east)

    for key, data, requests in (
        ("o/small", small, 1),
        ("o/large", large, backend.requests_to_open_large),
    ):
        headed = await store.head(key)
        before = proxy.count()
        opened = await store.open(key)
        assert opened is not None and proxy.count() == before + requests
        assert opened.info == headed
        body = b"".join([chunk async for chunk in opened.chunks])
        await opened.aclose()
        assert body == data and proxy.count() == before + requests

    # Dropped unread, twice over (release, then aclose): later calls are served as usual.
    for _ in range(3):
        opened = await store.open("o/large")
        assert opened is not None
        opened.release()
        await opened.aclose()
    body, _ = await read_all(store, "o/small")
    assert body == small
    assert await store.open("o/missing") is None


@pytest.mark.parametrize("size", [1000, 7 * MiB], ids=["single", "multipart"])
async def test_a_body_that_does_not_match_is_never_stored(backend: Backend, size: int) -> None:
    east = backend.regions[0]
    bucket = backend.bucket(east)
    store = backend.objects(east, bucket, multipart_threshold=5 * MiB, part_size=5 * MiB)
    data = os.urandom(size)

    with pytest.raises(ValueError, match="MD5"):
        await store.put("c/bad", chunked(data, 512 * 1024), size, {}, md5_hex=md5(b"other"))
    with pytest.raises(ValueError, match="declared"):
        await store.put("c/bad", chunked(data, 512 * 1024), size + 1, {})
    with pytest.raises(ValueError, match="longer"):
        await store.put("c/bad", chunked(data + b"x", 512 * 1024), size, {})
    assert await store.head("c/bad") is None
    assert backend.pending_uploads(east, bucket) == 0


@pytest.mark.parametrize("size", [1000, 11 * MiB], ids=["single", "multipart"])
async def test_a_read_corrupted_on_its_way_is_found_before_its_end(
    backend: Backend, size: int
) -> None:
    """A simple object is checked by the reader against its ETag (the store's put and the
    replication engine do); a large one by the store as it reads: S3 against the
    whole-object checksum it keeps (moto's CRC64NVME, as S3's default), Swift each segment
    against the SLO's manifest. So a bit flipped on the way never reaches a commit."""
    east = backend.regions[0]
    store = backend.objects(
        east, backend.bucket(east), multipart_threshold=5 * MiB, part_size=5 * MiB
    )
    data = os.urandom(size)
    await store.put("v/obj", chunked(data, MiB), size, {}, md5_hex=md5(data))
    headed = await store.head("v/obj")
    assert headed is not None
    proxy = backend.proxy(east)
    proxy.set_faults(FaultSpec(corrupt=1.0, action="GET */v/obj", times=1))
    opened = await store.open("v/obj")
    assert opened is not None
    read = bytearray()
    refused: Exception | None = None
    try:
        async for chunk in opened.chunks:
            read += chunk
    except Exception as error:  # the stream ends in an error, not cleanly
        refused = error
    finally:
        await opened.aclose()
    if size > 5 * MiB:
        assert refused is not None and re.search("(?i)checksum|MD5", str(refused)), refused
    else:  # S3 keeps a CRC32 of it (boto3 sends one); Swift leaves it to its ETag
        assert refused is not None or md5(bytes(read)) != headed.md5
    assert proxy.count(fault=Fault.CORRUPT) == 1
    body, _ = await read_all(store, "v/obj")  # the next read is whole
    assert body == data


async def test_listing_is_paginated_in_key_order(backend: Backend) -> None:
    east = backend.regions[0]
    store = backend.objects(east, backend.bucket(east), page_size=3)
    names = [f"p/{i:02d}" for i in (7, 3, 0, 5, 1, 6, 2, 4)] + ["q/0", "q/1"]
    for name in names:
        await store.put(name, chunked(name.encode(), 10), len(name), {})

    proxy = backend.proxy(east)
    proxy.clear_records()
    listed = [info async for info in store.list("p/")]
    assert [i.key for i in listed] == [f"p/{i:02d}" for i in range(8)]
    assert all(i.size == 4 and i.etag == md5(i.key.encode()) for i in listed)
    assert proxy.count(mutating=False) == 3  # 3 + 3 + 2
    assert await keys(store, "") == sorted(names)
    assert await keys(store, "none/") == []


async def test_reset_mid_multipart_upload_leaves_nothing(backend: Backend) -> None:
    east = backend.regions[0]
    backend = backend.reconnected(attempts=1)  # one failure: the region stays usable
    bucket = backend.bucket(east)
    store = backend.objects(east, bucket, multipart_threshold=5 * MiB, part_size=5 * MiB)
    proxy = backend.proxy(east)

    def break_after_first_part(offset: int) -> None:
        if offset == 6 * MiB:
            proxy.set_faults(FaultSpec(reset=1.0, action="PUT *"))

    data = os.urandom(12 * MiB)
    with pytest.raises(backend.errors):
        await store.put("d/big", chunked(data, MiB, break_after_first_part), len(data), {})
    assert proxy.count(fault=Fault.RESET) == 1
    proxy.clear_faults()
    assert await store.head("d/big") is None
    assert backend.pending_uploads(east, bucket) == 0  # aborted


async def test_upload_cut_off_by_an_impaired_region_stays_invisible(backend: Backend) -> None:
    east, west = backend.regions
    bucket = backend.bucket(east)
    store = backend.objects(east, bucket, multipart_threshold=5 * MiB, part_size=5 * MiB)
    proxy = backend.proxy(east)

    def fail_after_first_part(offset: int) -> None:
        if offset == 6 * MiB:
            proxy.set_faults(FaultSpec(server_error=1.0))

    data = os.urandom(11 * MiB)
    with pytest.raises((*backend.errors, RegionImpaired)):
        await store.put("e/big", chunked(data, MiB, fail_after_first_part), len(data), {})
    # The retries made the region Impaired, so even the abort was not sent.
    assert backend.calls.gate(east).health.state is ApiPlaneState.IMPAIRED
    assert backend.calls.gate(east).refused >= 1
    proxy.clear_faults()
    assert backend.pending_uploads(east, bucket) == 1
    elsewhere = backend.objects(west, backend.bucket(west))
    assert await elsewhere.head("e/big") is None  # the other region works on


# ----------------------------------------------------------------------------- volumes


async def test_snapshot_copy_restore_delete(backend: Backend) -> None:
    east, west = backend.regions
    source, target = backend.snapshots(east), backend.snapshots(west)
    assert (source.region, target.region) == (east, west)
    east_zone, west_zone = backend.zones(east)[0], backend.zones(west)[1]
    volume = backend.volume(east, east_zone, 8)
    # Unique values: a cloud that lives as long as the session may hold earlier snapshots.
    run = uuid.uuid4().hex[:8]
    tags = {"lifeboat.dev/app": "web", "lifeboat.dev/dataset": f"db-{run}"}
    second_round = {"round": f"2-{run}"}

    first = await source.create(volume, tags)
    await asyncio.sleep(1.1)  # moto reports start times to the second
    second = await source.create(volume, {**tags, **second_round})
    assert (first.volume_id, first.region, first.size_gb) == (volume, east, 8)
    assert first.state in ("pending", "completed") and dict(first.tags) == tags
    assert [s.id for s in await source.list(tags)] == [second.id, first.id]  # newest first
    assert [s.id for s in await source.list(second_round)] == [second.id]

    backend.proxy(east).clear_records()
    copy = await target.copy_from(second, {**tags, "copied-from": second.id})
    assert backend.proxy(east).count(mutating=True) == 0  # the source region is only read
    if not backend.copy_reads_source:
        assert backend.proxy(east).count() == 0  # the copy needs nothing of the source region
    assert (copy.region, copy.size_gb, copy.volume_id) == (west, 8, volume)
    if backend.copies_keep_ids:
        assert copy.id == second.id  # the same backup, now held by this region too
    else:
        assert copy.id not in (first.id, second.id)
    assert [s.id for s in await target.list(tags)] == [copy.id]
    got = await target.get(copy.id)
    assert got is not None and got.tags["copied-from"] == second.id
    assert await target.get(first.id) is None  # not in this region

    restored = await target.restore(
        copy.id, west_zone, {"lifeboat.dev/app": "web"}, key=f"web/db/{volume}/{run}"
    )
    assert backend.volume_info(west, restored) == (west_zone, copy.id, {"lifeboat.dev/app": "web"})
    found = [v for v in await target.volumes({"lifeboat.dev/app": "web"}) if v.id == restored]
    assert [(v.zone, dict(v.tags)) for v in found] == [(west_zone, {"lifeboat.dev/app": "web"})]
    assert found[0].snapshot_id in (copy.id, "")  # Cinder does not say which backup it was
    assert await target.volumes({"lifeboat.dev/app": f"none-{run}"}) == []
    unknown = "vol-0123456789abcdef0" if backend.name == "aws" else str(uuid.uuid4())
    (by_id,) = await target.volumes_by_id([restored, unknown])  # unknown: left out
    assert (by_id.id, by_id.zone, by_id.state) == (restored, west_zone, found[0].state)
    assert by_id.state in ("creating", "restoring-backup", "available")
    assert await target.volumes_by_id([]) == []

    await target.delete(copy.id)
    await target.delete(copy.id)  # already gone: no error
    assert await target.get(copy.id) is None
    assert await target.list(tags) == []
    assert [s.id for s in await source.list(tags)] == [second.id, first.id]


# ----------------------------------------------------------------------------- faults


async def _call(backend: Backend, api: str) -> None:
    """One call of ``api`` in the first region (errors swallowed: the outcome counts)."""
    east = backend.regions[0]
    if api == "probe":
        await backend.probe().probe(east)
        return
    expected: tuple[type[BaseException], ...] = (*backend.errors, LookupError)
    try:
        if api == "capacity":
            await backend.capacity(Group(east, "absent", ())).observe()
        else:
            # A listing, not a HEAD: error answers to HEAD have no body, hence no code.
            await anext(backend.objects(east, "absent").list())
    except expected:
        return


@pytest.mark.parametrize(
    ("spec", "api", "expected"),
    [
        pytest.param(FaultSpec(latency=0.3), "probe", CallOutcome.OK, id="latency"),
        pytest.param(
            FaultSpec(timeout=1.0, max_hold=5.0), "probe", CallOutcome.TIMEOUT, id="timeout"
        ),
        pytest.param(FaultSpec(reset=1.0), "probe", CallOutcome.UNREACHABLE, id="reset"),
        pytest.param(FaultSpec(throttle=1.0), "probe", CallOutcome.THROTTLED, id="throttle-probe"),
        pytest.param(
            FaultSpec(throttle=1.0), "capacity", CallOutcome.THROTTLED, id="throttle-capacity"
        ),
        pytest.param(
            FaultSpec(throttle=1.0), "objects", CallOutcome.THROTTLED, id="throttle-objects"
        ),
        pytest.param(FaultSpec(server_error=1.0), "probe", CallOutcome.SERVER_ERROR, id="500"),
        pytest.param(FaultSpec(unavailable=1.0), "probe", CallOutcome.SERVER_ERROR, id="503"),
        pytest.param(FaultSpec(auth=1.0), "probe", CallOutcome.AUTH_ERROR, id="auth-probe"),
        pytest.param(FaultSpec(auth=1.0), "capacity", CallOutcome.AUTH_ERROR, id="auth-capacity"),
    ],
)
async def test_faults_are_classified_into_the_region_gate(
    backend: Backend, spec: FaultSpec, api: str, expected: CallOutcome
) -> None:
    east, west = backend.regions
    # A short client timeout only where a timeout is the point (a loaded machine must not
    # turn added latency into a timeout).
    backend = backend.reconnected(timeout_seconds=0.5 if spec.timeout else 5.0, attempts=1)
    proxy = backend.proxy(east)
    proxy.set_faults(spec)
    await _call(backend, api)

    (seen,) = backend.outcomes
    assert (seen.region, seen.outcome) == (east, expected)
    fault = next((f for f, share in spec.shares() if share), None)
    if fault is not None and (fault, api) in backend.error_codes:
        assert seen.code == backend.error_codes[(fault, api)]
    assert proxy.count() == backend.requests_per_call(fault)
    figures = backend.calls.gate(east).health.figures
    assert figures.calls == 1
    assert figures.throttled == (1 if expected is CallOutcome.THROTTLED else 0)
    assert figures.errors == (1 if expected.error else 0)
    if spec.latency:
        assert figures.p99 is not None and figures.p99 >= spec.latency
    assert backend.calls.gate(west).health.figures.calls == 0


async def test_an_impaired_region_gets_only_probes(backend: Backend) -> None:
    east, west = backend.regions
    first, second = backend.zones(east)[:2]
    group = backend.group(east, {first: 1, second: 1})
    bucket = backend.bucket(east)
    volume = backend.volume(east, first, 1)
    backend = backend.reconnected(attempts=1)
    proxy = backend.proxy(east)
    probe = backend.probe()

    proxy.set_faults(FaultSpec(server_error=1.0))
    for _ in range(4):
        assert (await probe.probe(east)).outcome is CallOutcome.SERVER_ERROR
    gate = backend.calls.gate(east)
    assert gate.health.state is ApiPlaneState.IMPAIRED

    proxy.clear_faults()
    proxy.clear_records()
    with pytest.raises(RegionImpaired):
        await backend.capacity(group).set_zones({second: 2})
    with pytest.raises(RegionImpaired):
        await backend.objects(east, bucket).put("k", chunked(b"x", 1), 1, {})
    with pytest.raises(RegionImpaired):
        await backend.snapshots(east).create(volume, {"app": "web"})
    assert proxy.count() == 0  # nothing left the process
    assert gate.refused == 3

    assert (await probe.probe(east)).outcome is CallOutcome.OK  # probes still go
    assert proxy.count() == 1
    west_volume = backend.volume(west, backend.zones(west)[0], 1)
    snapshot = await backend.snapshots(west).create(west_volume, {})
    assert snapshot.region == west


async def test_sustained_throttling_stays_under_the_retry_budget(backend: Backend) -> None:
    """Every working call throttled: requests stay within one first attempt per call plus
    the retry budget (never ``attempts`` per call), and once the region is judged Impaired
    working calls send nothing at all while probes still go, counted at the fault layer."""
    east, _ = backend.regions
    bucket = backend.bucket(east)
    attempts = 5
    backend = backend.reconnected(attempts=attempts)
    proxy = backend.proxy(east)
    store = backend.objects(east, bucket)
    gate = backend.calls.gate(east)
    proxy.set_faults(FaultSpec(throttle=1.0))
    proxy.clear_records()
    started = time.monotonic()
    tokens = gate.budget.level(started)

    sent_calls = 0
    while gate.health.state is not ApiPlaneState.IMPAIRED:
        assert sent_calls < 50, f"never judged Impaired: {gate.health}"
        with pytest.raises(backend.errors) as caught:  # throttled, retries spent
            await store.head("k")
        assert not isinstance(caught.value, RegionImpaired)
        sent_calls += 1
    elapsed = time.monotonic() - started
    budget = tokens + elapsed * gate.budget.refill_per_second
    requests = proxy.count()
    assert requests <= backend.requests_per_call(Fault.THROTTLE) * sent_calls + budget
    assert requests < attempts * sent_calls  # the budget, not the policy, bounded retries

    proxy.clear_records()
    for _ in range(10):
        with pytest.raises(RegionImpaired):
            await store.head("k")
    assert proxy.count() == 0  # working calls: nothing leaves the process
    assert gate.budget.level(time.monotonic()) == 0  # no retries allowed while Impaired
    probe = backend.probe()
    report = await probe.probe(east)
    assert report.outcome is CallOutcome.THROTTLED
    assert proxy.count() == backend.requests_per_call(Fault.THROTTLE)  # one probe, no retry


def test_route53_health_check_settings_from_a_url() -> None:
    from controller.providers.aws.route53 import _health_check_config

    assert _health_check_config("https://app.example.test/health?deep=1", 30, 3) == {
        "Type": "HTTPS",
        "Port": 443,
        "ResourcePath": "/health?deep=1",
        "RequestInterval": 30,
        "FailureThreshold": 3,
        "FullyQualifiedDomainName": "app.example.test",
        "EnableSNI": True,
    }
    with pytest.raises(ValueError, match="http"):
        _health_check_config("ftp://127.0.0.1/", 30, 3)
    assert _health_check_config("http://[::1]:81/", 10, 2)["IPAddress"] == "::1"


# ----------------------------------------------------------------------------- OpenStack only


async def test_a_boot_nova_cannot_place_is_a_capacity_error(
    openstack_backend: OpenStackBackend,
) -> None:
    """The 2012 symptom, OpenStack's way: the boot ends in ERROR, "No valid host"."""
    backend = openstack_backend
    first, second = backend.zones(ONE)[:2]
    group = backend.group(ONE, {first: 1, second: 1})
    driver = backend.capacity(group)
    backend.exhaust_zone(ONE, second)

    with pytest.raises(NoValidHost, match="No valid host") as caught:
        await driver.set_zones({first: 2, second: 2})
    assert caught.value.zones == (second,)
    capacity = [o for o in backend.outcomes if o.outcome is CallOutcome.CAPACITY_ERROR]
    assert [(o.region, o.service, o.operation) for o in capacity] == [
        (ONE, "compute", "ListServers")
    ]
    assert backend.calls.gate(ONE).health.figures.errors == 1

    # The server that found no host is gone again; the one that did boots.
    state = await driver.observe()
    assert {(z.zone, z.desired, z.running) for z in state.zones} == {(first, 2, 2), (second, 1, 1)}


async def test_nova_reports_its_instance_quota_as_headroom_and_refuses_beyond_it(
    openstack_backend: OpenStackBackend,
) -> None:
    """The project's instance quota (GET /limits) is the site's headroom; a boot beyond it
    is refused as Nova refuses it ("Quota exceeded"), a capacity error of the region."""
    backend = openstack_backend
    first = backend.zones(ONE)[0]
    group = backend.group(ONE, {first: 1})
    driver = backend.capacity(group)
    nova = backend.world.nova(ONE)
    assert (await driver.observe()).headroom is None  # unlimited: the cloud sets no bound
    try:
        nova.set_instance_quota(1000)
        headroom = (await driver.observe()).headroom
        assert headroom is not None
        used = 1000 - headroom  # the whole project's servers, other tests' included
        nova.set_instance_quota(used + 1)
        assert (await driver.observe()).headroom == 1

        await driver.set_zones({first: 3})  # two more wanted, one allowed: Nova boots one
        state = await driver.observe()
        assert (state.zone(first).desired, state.headroom) == (2, 0)
        before = [o for o in backend.outcomes if o.outcome is CallOutcome.CAPACITY_ERROR]
        with pytest.raises(openstack.exceptions.HttpException, match="Quota exceeded for"):
            await driver.set_zones({first: 3})
        refused = [o for o in backend.outcomes if o.outcome is CallOutcome.CAPACITY_ERROR]
        assert [(o.operation) for o in refused[len(before) :]] == ["CreateServer"]
    finally:
        nova.set_instance_quota(-1)


async def test_swift_segments_go_with_the_large_object(
    openstack_backend: OpenStackBackend,
) -> None:
    backend = openstack_backend
    bucket = backend.bucket(ONE)
    store = backend.objects(ONE, bucket, multipart_threshold=MiB, part_size=MiB)
    parts = [os.urandom(MiB) for _ in range(3)] + [os.urandom(5)]
    data = b"".join(parts)

    info = await store.put("k/big", chunked(data, 256 * 1024), len(data), {"v": "1"})
    first = backend.segments(ONE, bucket)
    assert len(first) == 4
    whole = md5("".join(md5(part) for part in parts).encode())  # Swift's ETag of an SLO
    assert (info.size, info.etag, info.metadata) == (len(data), whole, {"v": "1"})
    assert [(i.key, i.size, i.etag) async for i in store.list()] == [("k/big", len(data), whole)]

    # Replaced by another large object: its segments replace the old ones.
    again = os.urandom(2 * MiB)
    await store.put("k/big", chunked(again, MiB), len(again), {"v": "2"}, md5_hex=md5(again))
    second = backend.segments(ONE, bucket)
    assert len(second) == 2 and not set(first) & set(second)
    assert (await read_all(store, "k/big"))[0] == again

    # Replaced by a small object: no segment is left.
    await store.put("k/big", chunked(b"small", 5), 5, {})
    assert backend.segments(ONE, bucket) == []

    # Deleting a large object deletes its segments, in the same request.
    await store.put("k/big", chunked(data, MiB), len(data), {})
    proxy = backend.proxy(ONE)
    proxy.clear_records()
    await store.delete("k/big")
    assert proxy.count(mutating=True) == 1
    assert backend.segments(ONE, bucket) == []
    assert await store.head("k/big") is None
    await store.delete("k/big")  # already gone: no error


async def test_swift_checks_the_segments_of_slos_made_by_others(
    openstack_backend: OpenStackBackend,
) -> None:
    """SLOs Lifeboat did not write: with an inline data segment (checked, like any other
    segment), and with a byte range of a segment (readable, not checked segment-wise)."""
    backend = openstack_backend
    bucket = backend.bucket(ONE)
    swift = backend._direct(ONE).object_store
    swift.create_container(f"{bucket}_segments")
    first, second, inline = os.urandom(64 * 1024), os.urandom(1000), b"interstitial"
    for name, body in (("a", first), ("b", second)):
        swift.put(f"/{bucket}_segments/{name}", data=body).raise_for_status()

    def manifest(key: str, entries: list[dict[str, Any]]) -> None:
        swift.put(
            f"/{bucket}/{key}", params={"multipart-manifest": "put"}, data=json.dumps(entries)
        ).raise_for_status()

    segment_a = {"path": f"/{bucket}_segments/a", "etag": md5(first), "size_bytes": len(first)}
    segment_b = {"path": f"/{bucket}_segments/b", "etag": md5(second)}
    manifest("hand/inline", [segment_a, {"data": base64.b64encode(inline).decode()}, segment_b])
    manifest("hand/range", [{**segment_a, "range": "0-99"}, segment_b])
    store = backend.objects(ONE, bucket)

    assert (await read_all(store, "hand/inline"))[0] == first + inline + second
    assert (await read_all(store, "hand/range"))[0] == first[:100] + second

    proxy = backend.proxy(ONE)
    proxy.set_faults(FaultSpec(corrupt=1.0, action="GET */hand/inline", times=1))
    with pytest.raises(IntegrityError, match="segment 1 MD5"):
        await read_all(store, "hand/inline")
    assert proxy.count(fault=Fault.CORRUPT) == 1

    # Between the GET and the GET of its manifest, the SLO is replaced, or deleted.
    call = store._call
    meanwhile: list[Callable[[], Any]] = []

    async def racing(operation: str, fn: Any, *, mutating: bool) -> Any:
        if operation == "GetObjectManifest":
            meanwhile.pop()().raise_for_status()
        return await call(operation, fn, mutating=mutating)

    store._call = racing  # type: ignore[method-assign]
    meanwhile.append(lambda: swift.put(f"/{bucket}/hand/range", data=b"simple now"))
    with pytest.raises(IntegrityError, match="changed while it was read"):
        await store.open("hand/range")
    manifest("hand/range", [segment_b])
    meanwhile.append(
        lambda: swift.delete(f"/{bucket}/hand/range", params={"multipart-manifest": "delete"})
    )
    assert await store.open("hand/range") is None  # as if the GET had found nothing


async def test_swift_writes_a_key_said_to_be_new_without_looking_first(
    openstack_backend: OpenStackBackend,
) -> None:
    backend = openstack_backend
    bucket = backend.bucket(ONE)
    store = backend.objects(ONE, bucket, multipart_threshold=MiB, part_size=MiB)
    proxy = backend.proxy(ONE)
    data = os.urandom(2 * MiB)
    for key, size in (("new/small", 5), ("new/big", len(data))):
        proxy.clear_records()
        await store.put(key, chunked(data[:size], MiB), size, {}, replacing=False)
        assert proxy.count(mutating=False) == (0 if size == 5 else 1)  # the SLO's own HEAD
    assert len(backend.segments(ONE, bucket)) == 2

    # The default looks: replacing the large object removes its segments.
    proxy.clear_records()
    await store.put("new/big", chunked(b"small", 5), 5, {})
    assert proxy.count(mutating=False) >= 1
    assert backend.segments(ONE, bucket) == []


async def test_swift_refuses_metadata_it_would_lose(openstack_backend: OpenStackBackend) -> None:
    backend = openstack_backend
    store = backend.objects(ONE, backend.bucket(ONE))
    proxy = backend.proxy(ONE)
    proxy.clear_records()
    with pytest.raises(ValueError, match="letters, digits and hyphens"):
        await store.put("k", chunked(b"x", 1), 1, {"with_underscore": "v"})
    assert proxy.count() == 0


async def test_backup_tags_are_cinder_metadata(openstack_backend: OpenStackBackend) -> None:
    backend = openstack_backend
    zone = backend.zones(ONE)[0]
    volume = backend.volume(ONE, zone, 1)
    backups = backend.snapshots(ONE)
    with pytest.raises(ValueError, match="cannot be Cinder metadata"):
        await backups.create(volume, {"app@web": "x"})
    made = await backups.create(volume, {"lifeboat.dev/app": "web", "note": "a b:c"})
    stored = next(b for b in backend.world.cinder(ONE).backups() if b.id == made.id)
    assert stored.metadata == {"lifeboat.dev/app": "web", "note": "a b:c"}
    assert stored.name is not None and stored.name.startswith("lifeboat-")
    await backups.delete(made.id)


async def test_a_restore_that_loses_its_metadata_is_found_again_by_its_key(
    openstack_backend: OpenStackBackend,
) -> None:
    """Cinder puts the backed-up volume's metadata in place of the restored volume's own:
    Lifeboat's tags do not survive, so a repeated restore finds the volume by its key."""
    backend = openstack_backend
    storage = backend.world.direct_connection(ONE).block_storage
    zone = backend.zones(ONE)[0]
    made = storage.create_volume(size=1, availability_zone=zone, metadata={"owner": "orders"})
    storage.wait_for_status(made, "available", ["error"], interval=0.1, wait=60)
    backups = backend.snapshots(ONE)
    backup = await backups.create(str(made.id), {"lifeboat.dev/app": "db"})
    storage.wait_for_status(
        storage.get_backup(backup.id), "available", ["error"], interval=0.1, wait=60
    )
    tags = {"lifeboat.dev/app": "db", "lifeboat.dev/restored-for": "os1/7"}
    key = f"db/{uuid.uuid4().hex}"
    restored = await backups.restore(backup.id, zone, tags, key=key)
    assert backend.volume_info(ONE, restored)[2] == tags  # while the restore runs
    storage.wait_for_status(
        storage.get_volume(restored), "available", ["error"], interval=0.1, wait=60
    )
    assert backend.volume_info(ONE, restored)[2] == {"owner": "orders"}
    assert await backups.volumes(tags) == []  # not found by its tags any more
    assert await backups.restore(backup.id, zone, tags, key=key) == restored
    assert await backups.restore(backup.id, zone, tags, key=f"{key}-other") != restored


async def test_a_copied_backup_restores_only_where_its_backup_store_is_reachable(
    openstack_backend: OpenStackBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Cinder copy is the source's backup record imported: the data stay in the backup
    store the source region wrote to. A target region whose backup service reaches another
    store accepts the restore, and the volume ends in ``error_restoring``: a failed volume
    to Lifeboat, never a made one."""
    backend = openstack_backend
    source, target = backend.snapshots(ONE), backend.snapshots(TWO)
    volume = backend.volume(ONE, backend.zones(ONE)[0], 1)
    original = await source.create(volume, {"lifeboat.dev/app": "db"})
    copy = await target.copy_from(original, {"lifeboat.dev/app": "db", "copy": "yes"})
    assert copy.id == original.id

    async def settled(volume_id: str) -> str:
        for _ in range(150):
            (found,) = await target.volumes_by_id([volume_id])
            if found.state not in rv.MAKING_STATES:
                return found.state
            await asyncio.sleep(0.1)
        raise AssertionError(f"volume {volume_id} still being made")

    elsewhere = BackupStore("RegionTwo-only")
    monkeypatch.setattr(backend.world.cinder(TWO), "backup_store", elsewhere)
    zone = backend.zones(TWO)[0]
    lost = await target.restore(copy.id, zone, {"lifeboat.dev/app": "db"}, key=f"{copy.id}/a")
    state = await settled(lost)
    assert state == "error_restoring" and rv.volume_failed(state)
    assert "backup store" in rv.failure(state)

    monkeypatch.undo()  # both regions' backup services reach one store again
    made = await target.restore(copy.id, zone, {"lifeboat.dev/app": "db"}, key=f"{copy.id}/b")
    assert await settled(made) == "available"


async def test_a_copied_backup_restores_while_its_source_region_is_impaired(
    openstack_backend: OpenStackBackend,
) -> None:
    """Static stability: once copied, a backup needs nothing of its source region."""
    backend = openstack_backend.reconnected(attempts=1)
    source, target = backend.snapshots(ONE), backend.snapshots(TWO)
    volume = backend.volume(ONE, backend.zones(ONE)[0], 2)
    original = await source.create(volume, {"lifeboat.dev/app": "db"})
    copy = await target.copy_from(original, {"lifeboat.dev/app": "db", "copy": "yes"})

    proxy = backend.proxy(ONE)
    proxy.set_faults(FaultSpec(server_error=1.0))
    for _ in range(4):
        await backend.probe().probe(ONE)
    assert backend.calls.gate(ONE).health.state is ApiPlaneState.IMPAIRED
    proxy.clear_records()

    zone = backend.zones(TWO)[2]
    restored = await target.restore(copy.id, zone, {"lifeboat.dev/app": "db"}, key=copy.id)
    assert backend.volume_info(TWO, restored) == (zone, copy.id, {"lifeboat.dev/app": "db"})
    assert proxy.count() == 0
    with pytest.raises(RegionImpaired):
        await target.copy_from(original, {})  # a new copy would need the source region
