"""Route 53 as a :class:`~controller.providers.protocols.TrafficManager`.

Weighted routing: one record set per site (``SetIdentifier`` = site name), weight 100 on
the active site and 0 on the others, all in one change batch, which Route 53 applies
atomically: there is no moment where two sites (or none) carry the weight. Record sets
of sites no longer in the plan are deleted in the same batch.

Route 53's data plane (answering DNS queries) is global and keeps working when a region
fails; changing records uses its control plane. Health checks are not used here: Lifeboat
probes zones itself and decides.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller.providers.aws.connector import GLOBAL, AwsConnector
from controller.providers.protocols import DnsRecord, SiteRecord, TrafficChange, TrafficPlan

if TYPE_CHECKING:
    from mypy_boto3_route53.type_defs import ChangeTypeDef, ResourceRecordSetOutputTypeDef


class HostedZoneError(LookupError):
    """The hosted zone cannot be determined (missing, or several of that name)."""


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else f"{name}."


@dataclass
class Route53Traffic:
    connector: AwsConnector
    sync_timeout_seconds: float = 180.0
    sync_poll_seconds: float = 2.0
    _zone_ids: dict[str, str] = field(default_factory=dict)

    async def hosted_zone_id(self, record: DnsRecord) -> str:
        """The record's hosted zone ID (looked up by name once, then cached)."""
        if record.hosted_zone_id:
            return record.hosted_zone_id.removeprefix("/hostedzone/")
        assert record.hosted_zone_name is not None  # guaranteed by the model's rules
        name = _fqdn(record.hosted_zone_name).lower()
        if name not in self._zone_ids:
            client = self.connector.route53()
            answer = await self.connector.call(
                GLOBAL,
                "route53",
                "ListHostedZonesByName",
                lambda: client.list_hosted_zones_by_name(DNSName=name, MaxItems="10"),
            )
            zones = [z for z in answer["HostedZones"] if z["Name"].lower() == name]
            if not zones:
                raise HostedZoneError(f"no Route 53 hosted zone named {name}")
            if len(zones) > 1:
                raise HostedZoneError(
                    f"{len(zones)} Route 53 hosted zones are named {name} (public and "
                    "private?); set traffic.hostedZoneId"
                )
            self._zone_ids[name] = zones[0]["Id"].removeprefix("/hostedzone/")
        return self._zone_ids[name]

    async def _record_sets(
        self, zone_id: str, record: DnsRecord
    ) -> list[ResourceRecordSetOutputTypeDef]:
        """The weighted record sets of ``record`` (name and type) in the zone."""
        client = self.connector.route53()
        name = _fqdn(record.name).lower()
        answer = await self.connector.call(
            GLOBAL,
            "route53",
            "ListResourceRecordSets",
            lambda: client.list_resource_record_sets(
                HostedZoneId=zone_id,
                StartRecordName=name,
                StartRecordType=record.type,  # type: ignore[arg-type]
                MaxItems="300",
            ),
        )
        return [
            rrset
            for rrset in answer["ResourceRecordSets"]
            if rrset["Name"].lower() == name
            and rrset["Type"] == record.type
            and "SetIdentifier" in rrset
        ]

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        zone_id = await self.hosted_zone_id(plan.record)
        wanted = {r.site for r in plan.records}
        existing = await self._record_sets(zone_id, plan.record)
        changes: list[ChangeTypeDef] = [
            {"Action": "DELETE", "ResourceRecordSet": _as_input(rrset)}
            for rrset in existing
            if rrset["SetIdentifier"] not in wanted
        ]
        changes += [
            {"Action": "UPSERT", "ResourceRecordSet": _weighted(plan, r)} for r in plan.records
        ]
        later: list[tuple[str, list[ChangeTypeDef]]] = []
        if plan.retire is not None:
            old_zone = await self.hosted_zone_id(plan.retire)
            retired: list[ChangeTypeDef] = [
                {"Action": "DELETE", "ResourceRecordSet": _as_input(rrset)}
                for rrset in await self._record_sets(old_zone, plan.retire)
            ]
            if old_zone == zone_id:
                changes += retired
            elif retired:
                later.append((old_zone, retired))
        submitted = time.time()
        change_id, status = await self._submit(zone_id, changes, plan.comment)
        synced = await self._wait_in_sync(change_id, status)
        for other_zone, other_changes in later:
            await self._submit(other_zone, other_changes, plan.comment)
        return TrafficChange(change_id, synced is not None, submitted, synced)

    async def _submit(
        self, zone_id: str, changes: list[ChangeTypeDef], comment: str
    ) -> tuple[str, str]:
        client = self.connector.route53()
        answer = await self.connector.call(
            GLOBAL,
            "route53",
            "ChangeResourceRecordSets",
            lambda: client.change_resource_record_sets(
                HostedZoneId=zone_id, ChangeBatch={"Comment": comment[:256], "Changes": changes}
            ),
        )
        return answer["ChangeInfo"]["Id"], answer["ChangeInfo"]["Status"]

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
        zone_id = await self.hosted_zone_id(plan.record)
        return {
            rrset["SetIdentifier"]: int(rrset.get("Weight", 0))
            for rrset in await self._record_sets(zone_id, plan.record)
        }


def _weighted(plan: TrafficPlan, record: SiteRecord) -> Any:
    """One site's weighted record set."""
    return {
        "Name": _fqdn(plan.record.name),
        "Type": plan.record.type,
        "SetIdentifier": record.site,
        "Weight": record.weight,
        "TTL": plan.record.ttl,
        "ResourceRecords": [{"Value": v} for v in record.values],
    }


def _as_input(rrset: ResourceRecordSetOutputTypeDef) -> Any:
    """A listed record set as a DELETE needs it (exactly as it is)."""
    return dict(rrset)
