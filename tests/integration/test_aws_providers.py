"""Contract tests of the provider Protocols, run against every cloud backend.

Each test takes a :class:`Backend`: the implementations under test, typed only by their
Protocols, and levers on the emulated cloud behind them (set-up, inspection and faults,
applied straight to the emulator, never through the fault layer). A new cloud joins by
implementing :class:`Backend` and adding its fixture to ``BACKENDS``; for now there is
AWS: moto with a :class:`FaultProxy` in front of each region (us-east-1, us-west-2) and
one for global services (Route 53), reached through an :class:`AwsConnector` whose
``endpointOverrides`` point at the proxies.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

import boto3
import botocore.exceptions
import pytest
from pydantic import SecretStr

from controller.api.models import CloudProviderSpec
from controller.core.apiplane import ApiPlaneState, CallOutcome
from controller.providers.aws.apiplane import Ec2ApiPlaneProbe
from controller.providers.aws.capacity import AutoScalingGroupCapacity
from controller.providers.aws.connector import AwsConnector, AwsCredentials
from controller.providers.aws.instances import Ec2InstanceHealth
from controller.providers.aws.objects import S3ObjectStore
from controller.providers.aws.route53 import Route53Traffic
from controller.providers.aws.volumes import EbsSnapshots
from controller.providers.calls import CloudCalls, RegionImpaired
from controller.providers.outcomes import Classified
from controller.providers.protocols import (
    ApiPlaneProbe,
    CapacityDriver,
    DnsRecord,
    InstanceHealth,
    ObjectStore,
    SiteRecord,
    TrafficManager,
    TrafficPlan,
    VolumeSnapshots,
    ZoneInstances,
)
from controller.providers.retry import RetryPolicy
from controller.sandbox.faults import Fault, FaultProxy, FaultSpec
from controller.sandbox.moto_server import MotoServer
from tests.fixtures.cloud import MakeFaultProxy

pytestmark = pytest.mark.integration

EAST: Final = "us-east-1"
WEST: Final = "us-west-2"
GLOBAL: Final = "global"
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
    target_group: str | None = None


class Backend(Protocol):
    """A cloud, emulated, as the contract tests see it."""

    name: str
    regions: tuple[str, str]
    """Two regions of the cloud, each behind its own fault proxy."""
    dns_region: str
    """Where the DNS service's proxy is (a region, or "global")."""
    calls: CloudCalls
    """The gates of the connector the implementations use."""
    outcomes: list[Outcome]
    """Every call's outcome, as that connector reported it."""
    errors: tuple[type[BaseException], ...]
    """What the SDK raises for a failed call (an error answer, a broken connection)."""
    error_codes: Mapping[tuple[Fault, str], str]
    """The provider's error code for a fault injected into a call of (probe, capacity,
    objects)."""

    def proxy(self, region: str) -> FaultProxy: ...
    def reconnected(self, *, timeout_seconds: float = 5.0, attempts: int = 3) -> Backend:
        """The same cloud through a fresh connector (fresh gates, other limits)."""
        ...

    # implementations
    def traffic(self) -> TrafficManager: ...
    def probe(self) -> ApiPlaneProbe: ...
    def capacity(self, group: Group) -> CapacityDriver: ...
    def instances(self, group: Group) -> InstanceHealth: ...
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

    def dns_sets(self, record: DnsRecord) -> dict[str, DnsSet]: ...
    def health_checks(self) -> dict[str, str]:
        """Every DNS health check: ID -> URL it checks."""
        ...

    def group(
        self, region: str, per_zone: Mapping[str, int], *, target_group: bool = False
    ) -> Group:
        """A group whose instances run ``per_zone``; it may use every zone named."""
        ...

    def group_zones(self, group: Group) -> set[str]:
        """The zones the group may place instances in now."""
        ...

    def stop_instance(self, group: Group, zone: str) -> str: ...
    def drain_target(self, group: Group, zone: str) -> str: ...
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
        self.connector = AwsConnector(
            "aws-test",
            spec,
            AwsCredentials("testing", SecretStr("testing")),
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

    def reconnected(self, *, timeout_seconds: float = 5.0, attempts: int = 3) -> AwsBackend:
        return AwsBackend(self.moto, self.proxies, timeout_seconds, attempts)

    # implementations

    def traffic(self) -> Route53Traffic:
        return Route53Traffic(self.connector, sync_poll_seconds=0.1)

    def probe(self) -> Ec2ApiPlaneProbe:
        return Ec2ApiPlaneProbe(self.connector)

    def capacity(self, group: Group) -> AutoScalingGroupCapacity:
        return AutoScalingGroupCapacity(self.connector, group.region, group.name)

    def instances(self, group: Group) -> Ec2InstanceHealth:
        return Ec2InstanceHealth(self.connector, group.region, group.name, group.target_group)

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

    def health_checks(self) -> dict[str, str]:
        found = {}
        for check in self._direct("route53").list_health_checks()["HealthChecks"]:
            config = check["HealthCheckConfig"]
            host = config.get("IPAddress") or config.get("FullyQualifiedDomainName")
            url = f"{config['Type'].lower()}://{host}:{config['Port']}{config['ResourcePath']}"
            found[check["Id"]] = url
        return found

    def group(
        self, region: str, per_zone: Mapping[str, int], *, target_group: bool = False
    ) -> Group:
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
        arn = None
        if target_group:
            arn = self._direct("elbv2", region).create_target_group(
                Name=name[:32], Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance"
            )["TargetGroups"][0]["TargetGroupArn"]
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
            TargetGroupARNs=[arn] if arn else [],
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
        return Group(region, name, tuple(per_zone), arn)

    def _group(self, group: Group) -> Any:
        scaling = self._direct("autoscaling", group.region)
        return scaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group.name])[
            "AutoScalingGroups"
        ][0]

    def group_zones(self, group: Group) -> set[str]:
        subnets = [s for s in self._group(group)["VPCZoneIdentifier"].split(",") if s]
        described = self._direct("ec2", group.region).describe_subnets(SubnetIds=subnets)
        return {subnet["AvailabilityZone"] for subnet in described["Subnets"]}

    def _instance_in(self, group: Group, zone: str) -> str:
        return str(
            next(
                i["InstanceId"]
                for i in self._group(group)["Instances"]
                if i["AvailabilityZone"] == zone
            )
        )

    def stop_instance(self, group: Group, zone: str) -> str:
        instance = self._instance_in(group, zone)
        self._direct("ec2", group.region).stop_instances(InstanceIds=[instance])
        return instance

    def drain_target(self, group: Group, zone: str) -> str:
        instance = self._instance_in(group, zone)
        self._direct("elbv2", group.region).deregister_targets(
            TargetGroupArn=group.target_group, Targets=[{"Id": instance}]
        )
        return instance

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


BACKENDS: Final = ["aws_backend"]


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


def plan(record: DnsRecord, routing: str, *sites: tuple[str, int, str | None]) -> TrafficPlan:
    """A plan giving each (site, weight, health check URL) one address of its own."""
    return TrafficPlan(
        record=record,
        records=tuple(
            SiteRecord(site, (f"127.0.0.{i}",), weight, url)
            for i, (site, weight, url) in enumerate(sites, start=1)
        ),
        comment="contract test",
        routing="Failover" if routing == "Failover" else "Weighted",
    )


async def test_weighted_traffic_moves_atomically_and_drops_orphans(backend: Backend) -> None:
    zone_id = backend.dns_zone("lifeboat.test")
    record = DnsRecord(None, "lifeboat.test", "web.lifeboat.test", "A", 30)
    traffic = backend.traffic()

    change = await traffic.apply(plan(record, "Weighted", ("use1", 100, None), ("usw2", 0, None)))
    assert change.in_sync and change.synced_at is not None
    assert await traffic.weights(plan(record, "Weighted")) == {"use1": 100, "usw2": 0}

    # Fail over to usw2 while use1 leaves the plan: its record set goes in the same change.
    moved = plan(record, "Weighted", ("usw2", 100, None), ("euc1", 0, None))
    await traffic.apply(moved)
    sets = backend.dns_sets(record)
    assert {site: s.weight for site, s in sets.items()} == {"usw2": 100, "euc1": 0}
    assert sets["usw2"].values == ("127.0.0.1",)
    assert backend.proxy(backend.dns_region).count(mutating=True) == 2  # one change each
    assert not any("HealthCheck" in o.operation for o in backend.outcomes)

    # Renamed: the new name is published and the old one retired in one change.
    renamed = DnsRecord(zone_id, None, "www.lifeboat.test", "A", 30)
    await traffic.apply(replace(moved, record=renamed, retire=record))
    assert backend.dns_sets(record) == {}
    assert {site: s.weight for site, s in backend.dns_sets(renamed).items()} == {
        "usw2": 100,
        "euc1": 0,
    }


async def test_failover_traffic_with_health_checks(backend: Backend) -> None:
    backend.dns_zone("lifeboat.test")
    record = DnsRecord(None, "lifeboat.test", "app.lifeboat.test", "A", 30)
    traffic = backend.traffic()
    a, b, c = (f"http://127.0.0.{i}:8080/healthz" for i in (1, 2, 3))
    await traffic.apply(plan(record, "Weighted", ("use1", 100, None), ("usw2", 0, None)))

    # Weighted -> failover: the best standby is the secondary, the third site gets nothing.
    await traffic.apply(plan(record, "Failover", ("use1", 100, a), ("usw2", 0, b), ("euc1", 0, c)))
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
    sets = backend.dns_sets(record)
    assert (sets["usw2"].role, sets["use1"].role) == ("PRIMARY", "SECONDARY")

    # use1 leaves: its record set and (once in sync) its health check go; euc1's is made.
    await traffic.apply(plan(record, "Failover", ("usw2", 100, b), ("euc1", 0, c)))
    sets = backend.dns_sets(record)
    assert {site: (s.role, s.health_check_url) for site, s in sets.items()} == {
        "usw2": ("PRIMARY", b),
        "euc1": ("SECONDARY", c),
    }
    assert sorted(backend.health_checks().values()) == [b, c]

    # Back to weighted: every failover record set is replaced, every health check deleted.
    await traffic.apply(plan(record, "Weighted", ("usw2", 100, b), ("euc1", 0, c)))
    sets = backend.dns_sets(record)
    assert {site: (s.routing, s.weight, s.health_check_url) for site, s in sets.items()} == {
        "usw2": ("Weighted", 100, None),
        "euc1": ("Weighted", 0, None),
    }
    assert backend.health_checks() == {}


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
    assert state.desired == 6 and (state.minimum, state.maximum) == (1, 6)
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
    assert proxy.count(mutating=True) == 1

    proxy.clear_records()
    await driver.set_zones({second: 3, third: 3})  # already so: nothing to change
    assert proxy.count(mutating=True) == 0

    # The zone comes back (the driver remembers the group's subnets), and more capacity
    # than the maximum raises the maximum.
    await driver.set_zones({first: 4, second: 4, third: 4})
    assert backend.group_zones(group) == {first, second, third}
    state = await driver.observe()
    assert (state.desired, state.maximum) == (12, 12)

    # Asking for less than the group's floor asks for the floor.
    await driver.set_zones({second: 0})
    state = await driver.observe()
    assert (state.desired, state.minimum) == (1, 1)

    with pytest.raises(ValueError, match="no subnet"):
        await driver.set_zones({backend.zones(east)[3]: 1})


async def test_instance_health_per_zone(backend: Backend) -> None:
    east = backend.regions[0]
    first, second, third = backend.zones(east)[:3]
    group = backend.group(east, {first: 2, second: 1, third: 0}, target_group=True)
    health = backend.instances(group)
    assert health.region == east

    def counts(zones: Iterable[ZoneInstances]) -> dict[str, tuple[int, int]]:
        return {z.zone: (z.total, z.healthy) for z in zones}

    assert counts(await health.zones()) == {first: (2, 2), second: (1, 1), third: (0, 0)}

    stopped = backend.stop_instance(group, first)
    drained = backend.drain_target(group, second)
    zones = {z.zone: z for z in await health.zones()}
    assert counts(zones.values()) == {first: (2, 1), second: (1, 0), third: (0, 0)}
    assert stopped in zones[first].detail and "stopped" in zones[first].detail
    assert drained in zones[second].detail


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
    assert await store.head("a/small") == info
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
    tags = {"lifeboat.dev/app": "web", "lifeboat.dev/dataset": "db"}

    first = await source.create(volume, tags)
    await asyncio.sleep(1.1)  # moto reports start times to the second
    second = await source.create(volume, {**tags, "round": "2"})
    assert (first.volume_id, first.region, first.size_gb) == (volume, east, 8)
    assert first.state in ("pending", "completed") and dict(first.tags) == tags
    assert [s.id for s in await source.list(tags)] == [second.id, first.id]  # newest first
    assert [s.id for s in await source.list({"round": "2"})] == [second.id]

    backend.proxy(east).clear_records()
    copy = await target.copy_from(second, {**tags, "copied-from": second.id})
    assert backend.proxy(east).count() == 0  # the copy needs nothing of the source region
    assert (copy.region, copy.size_gb) == (west, 8) and copy.id not in (first.id, second.id)
    assert [s.id for s in await target.list(tags)] == [copy.id]
    got = await target.get(copy.id)
    assert got is not None and got.tags["copied-from"] == second.id
    assert await target.get(first.id) is None  # not in this region

    restored = await target.restore(copy.id, west_zone, {"lifeboat.dev/app": "web"})
    assert backend.volume_info(west, restored) == (west_zone, copy.id, {"lifeboat.dev/app": "web"})

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
        pytest.param(FaultSpec(throttle=1.0), "probe", CallOutcome.THROTTLED, id="throttle-ec2"),
        pytest.param(
            FaultSpec(throttle=1.0), "capacity", CallOutcome.THROTTLED, id="throttle-autoscaling"
        ),
        pytest.param(FaultSpec(throttle=1.0), "objects", CallOutcome.THROTTLED, id="throttle-s3"),
        pytest.param(FaultSpec(server_error=1.0), "probe", CallOutcome.SERVER_ERROR, id="500"),
        pytest.param(FaultSpec(unavailable=1.0), "probe", CallOutcome.SERVER_ERROR, id="503"),
        pytest.param(FaultSpec(auth=1.0), "probe", CallOutcome.AUTH_ERROR, id="auth-ec2"),
        pytest.param(
            FaultSpec(auth=1.0), "capacity", CallOutcome.AUTH_ERROR, id="auth-autoscaling"
        ),
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
    assert proxy.count() == 1
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
