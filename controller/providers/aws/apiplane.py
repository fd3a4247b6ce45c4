"""EC2 DescribeAvailabilityZones as an :class:`~controller.providers.protocols.ApiPlaneProbe`
(and Route 53 ListHostedZones for the ``global`` gate DNS changes go through).

The cheapest read of a region's management API that still goes through its front door,
sent as a *probe*: the region's gate admits it even when the region is Impaired, because
probes are how an impaired region is seen to recover. The probe never raises for a cloud
error; how the call went is the report's ``outcome``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import botocore.exceptions

from controller.core.apiplane import CallOutcome
from controller.providers.aws.connector import GLOBAL, AwsConnector
from controller.providers.outcomes import classify, describe
from controller.providers.protocols import ProbeReport

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

_AVAILABILITY_ZONE = "availability-zone"  # not local zones, Wavelength or Outposts


@dataclass
class Ec2ApiPlaneProbe:
    """Probes one CloudProvider's regions; ``latency`` is the whole call as the caller
    saw it (retries under the region's budget included)."""

    connector: AwsConnector

    async def probe(self, region: str) -> ProbeReport:
        if region == GLOBAL:
            return await self._probe_route53()
        client: EC2Client = self.connector.client("ec2", region)
        started = time.monotonic()
        try:
            answer = await self.connector.call(
                region,
                "ec2",
                "DescribeAvailabilityZones",
                client.describe_availability_zones,
                mutating=False,
                probe=True,
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
            return ProbeReport(
                region,
                classify(e).outcome,
                time.monotonic() - started,
                detail=self.connector.redact(describe(e)),
            )
        latency = time.monotonic() - started
        zones = tuple(
            sorted(
                (zone.get("ZoneName", ""), str(zone.get("State", "unknown")))
                for zone in answer["AvailabilityZones"]
                if zone.get("ZoneType", _AVAILABILITY_ZONE) == _AVAILABILITY_ZONE
            )
        )
        unavailable = [name for name, state in zones if state != "available"]
        detail = f"{len(zones)} zone(s)" + (
            f", not available: {', '.join(unavailable)}" if unavailable else ""
        )
        return ProbeReport(region, CallOutcome.OK, latency, zones, detail)

    async def _probe_route53(self) -> ProbeReport:
        """Route 53's control plane (global, served from us-east-1): the cheapest read."""
        client = self.connector.route53()
        started = time.monotonic()
        try:
            answer = await self.connector.call(
                GLOBAL,
                "route53",
                "ListHostedZones",
                lambda: client.list_hosted_zones(MaxItems="1"),
                mutating=False,
                probe=True,
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
            return ProbeReport(
                GLOBAL,
                classify(e).outcome,
                time.monotonic() - started,
                detail=self.connector.redact(describe(e)),
            )
        zones = len(answer.get("HostedZones", ()))
        return ProbeReport(
            GLOBAL, CallOutcome.OK, time.monotonic() - started, (), f"DNS: {zones} zone(s) seen"
        )
