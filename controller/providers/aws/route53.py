"""Route 53 as a :class:`~controller.providers.protocols.TrafficManager`.

Weighted routing: one record set per site (``SetIdentifier`` = site name), weight 100 on
the active site and 0 on the others, all UPSERTed in one change batch, which Route 53
applies atomically: there is no moment where two sites (or none) carry the weight.

Route 53's data plane (answering DNS queries) is global and keeps working when a region
fails; changing records uses its control plane. Health checks are not used here: Lifeboat
probes zones itself and decides.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from controller.providers.aws.connector import GLOBAL, AwsConnector
from controller.providers.protocols import TrafficChange, TrafficPlan


class HostedZoneNotFound(LookupError):
    """No hosted zone by that name is visible to the credentials."""


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else f"{name}."


@dataclass
class Route53Traffic:
    connector: AwsConnector
    sync_timeout_seconds: float = 180.0
    sync_poll_seconds: float = 2.0

    def __post_init__(self) -> None:
        self._zone_ids: dict[str, str] = {}

    async def hosted_zone_id(self, plan: TrafficPlan) -> str:
        """The plan's hosted zone ID (looked up by name once, then cached)."""
        if plan.hosted_zone_id:
            return plan.hosted_zone_id.removeprefix("/hostedzone/")
        assert plan.hosted_zone_name is not None  # guaranteed by the model's rules
        name = _fqdn(plan.hosted_zone_name).lower()
        if name not in self._zone_ids:
            client = self.connector.route53()
            answer = await self.connector.call(
                GLOBAL,
                "route53",
                "ListHostedZonesByName",
                lambda: client.list_hosted_zones_by_name(DNSName=name, MaxItems="1"),
            )
            zones = [z for z in answer["HostedZones"] if z["Name"].lower() == name]
            if not zones:
                raise HostedZoneNotFound(f"no Route 53 hosted zone named {name}")
            self._zone_ids[name] = zones[0]["Id"].removeprefix("/hostedzone/")
        return self._zone_ids[name]

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        zone_id = await self.hosted_zone_id(plan)
        client = self.connector.route53()
        name = _fqdn(plan.record_name)
        changes = [
            {
                "Action": "UPSERT",
                "ResourceRecordSet": {
                    "Name": name,
                    "Type": plan.record_type,
                    "SetIdentifier": record.site,
                    "Weight": record.weight,
                    "TTL": plan.ttl,
                    "ResourceRecords": [{"Value": v} for v in record.values],
                },
            }
            for record in plan.records
        ]
        submitted = time.time()
        answer = await self.connector.call(
            GLOBAL,
            "route53",
            "ChangeResourceRecordSets",
            lambda: client.change_resource_record_sets(
                HostedZoneId=zone_id,
                ChangeBatch={"Comment": plan.comment[:256], "Changes": changes},  # type: ignore[typeddict-item]
            ),
        )
        change_id = answer["ChangeInfo"]["Id"]
        status = answer["ChangeInfo"]["Status"]
        synced = await self._wait_in_sync(change_id, status)
        return TrafficChange(change_id, synced is not None, submitted, synced)

    async def _wait_in_sync(self, change_id: str, status: str) -> float | None:
        """Poll GetChange until INSYNC; the time it was seen in sync, or None at timeout."""
        client = self.connector.route53()
        deadline = time.monotonic() + self.sync_timeout_seconds
        while status != "INSYNC":
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self.sync_poll_seconds)
            answer = await self.connector.call(
                GLOBAL, "route53", "GetChange", lambda: client.get_change(Id=change_id)
            )
            status = answer["ChangeInfo"]["Status"]
        return time.time()

    async def weights(self, plan: TrafficPlan) -> dict[str, int]:
        zone_id = await self.hosted_zone_id(plan)
        client = self.connector.route53()
        name = _fqdn(plan.record_name)
        answer = await self.connector.call(
            GLOBAL,
            "route53",
            "ListResourceRecordSets",
            lambda: client.list_resource_record_sets(
                HostedZoneId=zone_id,
                StartRecordName=name,
                StartRecordType=plan.record_type,  # type: ignore[arg-type]
                MaxItems="100",
            ),
        )
        return {
            rrset["SetIdentifier"]: int(rrset["Weight"])
            for rrset in answer["ResourceRecordSets"]
            if rrset["Name"].lower() == name.lower()
            and rrset["Type"] == plan.record_type
            and "SetIdentifier" in rrset
            and "Weight" in rrset
        }
