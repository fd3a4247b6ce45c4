"""OpenStack Designate as a :class:`~controller.providers.protocols.TrafficManager`.

Designate has no weighted or failover routing: one recordset answers for a name and type.
Lifeboat keeps that recordset holding exactly the values of the sites with a positive
weight — the active site's — so a failover is one recordset update, which Designate
applies atomically. ``Failover`` routing is served the same way (there are no DNS health
checks to attach). A renamed record's old recordset is deleted after the new one is in
place; the change is in sync once the new recordset is ``ACTIVE`` and the old one gone.

Designate is a regional service: the TrafficManager works in one region (``traffic.region``,
default the provider's first region).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import openstack.exceptions

from controller.providers.openstack.connector import OpenStackConnector
from controller.providers.protocols import DnsRecord, TrafficChange, TrafficPlan


class ZoneNotFound(LookupError):
    """No Designate zone by that name or ID is visible to the project."""


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else f"{name}."


@dataclass
class DesignateTraffic:
    connector: OpenStackConnector
    region: str
    sync_timeout_seconds: float = 180.0
    sync_poll_seconds: float = 1.0
    _zones: dict[str, str] = field(default_factory=dict)

    async def _call(self, operation: str, fn: Any, *, mutating: bool) -> Any:
        return await self.connector.call(self.region, "dns", operation, fn, mutating=mutating)

    async def zone_id(self, record: DnsRecord) -> str:
        if record.hosted_zone_id:
            return record.hosted_zone_id
        assert record.hosted_zone_name is not None  # guaranteed by the model's rules
        name = _fqdn(record.hosted_zone_name).lower()
        if name not in self._zones:
            zones = await self._call(
                "ListZones", lambda conn: list(conn.dns.zones(name=name)), mutating=False
            )
            if not zones:
                raise ZoneNotFound(f"no Designate zone named {name} in {self.region}")
            self._zones[name] = str(zones[0].id)
        return self._zones[name]

    async def _recordset(self, zone: str, record: DnsRecord) -> Any | None:
        name = _fqdn(record.name)
        found = await self._call(
            "ListRecordsets",
            lambda conn: list(conn.dns.recordsets(zone, name=name, type=record.type)),
            mutating=False,
        )
        return found[0] if found else None

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        zone = await self.zone_id(plan.record)
        values = sorted({v for r in plan.records if r.weight > 0 for v in r.values})
        current = await self._recordset(zone, plan.record)
        submitted = time.time()
        if current is None:
            changed = await self._call(
                "CreateRecordset",
                lambda conn: conn.dns.create_recordset(
                    zone,
                    name=_fqdn(plan.record.name),
                    type=plan.record.type,
                    records=values,
                    ttl=plan.record.ttl,
                    description=plan.comment[:160],
                ),
                mutating=True,
            )
        else:
            changed = await self._call(
                "UpdateRecordset",
                lambda conn: conn.dns.update_recordset(
                    current, records=values, ttl=plan.record.ttl, description=plan.comment[:160]
                ),
                mutating=True,
            )
        synced = await self._wait_active(zone, str(changed.id))
        if plan.retire is not None and synced is not None:
            synced = await self._retire(plan.retire)
        # openstacksdk's Recordset does not carry Designate's "version": the change is
        # named by the record set and when Designate last updated it (or when it was sent).
        stamp = changed.updated_at or f"{submitted:.3f}"
        return TrafficChange(f"{changed.id}@{stamp}", synced is not None, submitted, synced)

    async def _wait_active(
        self, zone: str, recordset_id: str, *, deleted: bool = False
    ) -> float | None:
        """When the record set was seen ACTIVE (``deleted``: gone) on the name servers;
        None if it went to ERROR or the sync timeout passed."""
        deadline = time.monotonic() + self.sync_timeout_seconds
        while True:
            current = await self._call(
                "GetRecordset",
                lambda conn: _get_recordset(conn, recordset_id, zone),
                mutating=False,
            )
            if current is None and deleted:
                return time.time()
            status = str(current.status).upper() if current is not None else "GONE"
            if status == "ACTIVE" and not deleted:
                return time.time()
            if status in ("ERROR", "GONE") or time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self.sync_poll_seconds)

    async def _retire(self, record: DnsRecord) -> float | None:
        """Delete the old name's record set and wait until it is gone from DNS."""
        zone = await self.zone_id(record)
        old = await self._recordset(zone, record)
        if old is None:
            return time.time()
        await self._call(
            "DeleteRecordset",
            lambda conn: conn.dns.delete_recordset(old, zone, ignore_missing=True),
            mutating=True,
        )
        return await self._wait_active(zone, str(old.id), deleted=True)

    async def weights(self, plan: TrafficPlan) -> dict[str, int]:
        zone = await self.zone_id(plan.record)
        current = await self._recordset(zone, plan.record)
        published = set(current.records or ()) if current is not None else set()
        return {r.site: 100 if r.values and set(r.values) <= published else 0 for r in plan.records}


def _get_recordset(conn: Any, recordset_id: str, zone: str) -> Any | None:
    try:
        return conn.dns.get_recordset(recordset_id, zone)
    except openstack.exceptions.NotFoundException:
        return None
