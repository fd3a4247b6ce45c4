"""OpenStack Designate as a :class:`~controller.providers.protocols.TrafficManager`.

Designate has no weighted or failover routing: one recordset answers for a name and type.
Lifeboat keeps that recordset holding exactly the values of the sites with a positive
weight — the active site's — so a failover is one recordset update, which Designate
applies atomically. ``Failover`` routing is served the same way (there are no DNS health
checks to attach). A renamed record's old recordset is deleted after the new one is in
place; the change is in sync once the new recordset is ``ACTIVE`` and the old one gone.

Designate is a regional service: the TrafficManager works in one region (``traffic.region``,
default the provider's first region).

Ownership and fencing: the name's owner record (TXT ``_lifeboat.<name>``, see
:class:`~controller.providers.protocols.DnsOwner`) is read, checked (same owner, no newer
epoch) and replaced *before* the address recordset changes, then read again after it. Designate
offers no conditional or multi-recordset atomic change, so this is weaker than Route 53's:
a writer holding an older epoch is refused if it reads the owner record after a newer
writer replaced it, but two writers racing inside the few milliseconds between a read and
the following write can both write; the loser's owner record then no longer holds its
epoch when it reads it again (:class:`DnsFenced`), and the winner's read-back sets DNS
again if the loser's addresses landed last.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import openstack.exceptions

from controller.providers.errors import DnsFenced, DnsOwnedByOther, DnsZoneNotFound
from controller.providers.openstack.connector import OpenStackConnector
from controller.providers.protocols import (
    DnsOwner,
    DnsReading,
    DnsRecord,
    TrafficChange,
    TrafficPlan,
    owner_name,
)


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
                raise DnsZoneNotFound(f"no Designate zone named {name} in {self.region}")
            self._zones[name] = str(zones[0].id)
        return self._zones[name]

    async def _recordset(self, zone: str, record: DnsRecord) -> Any | None:
        return await self._find(zone, _fqdn(record.name), record.type)

    async def _find(self, zone: str, name: str, type_: str) -> Any | None:
        found = await self._call(
            "ListRecordsets",
            lambda conn: list(conn.dns.recordsets(zone, name=name, type=type_)),
            mutating=False,
        )
        return found[0] if found else None

    async def _owner(self, zone: str, record: DnsRecord) -> tuple[Any | None, str | None]:
        """The name's owner recordset and its text (None, None: there is none)."""
        found = await self._find(zone, owner_name(record.name), "TXT")
        if found is None:
            return None, None
        return found, "".join(str(v).strip('"') for v in found.records or ())

    async def read(self, plan: TrafficPlan) -> DnsReading:
        zone = await self.zone_id(plan.record)
        _, text = await self._owner(zone, plan.record)
        owner = DnsOwner.parse(text) if text is not None else None
        if text is not None and owner is None:
            return DnsReading(None, f"an owner record Lifeboat did not write ({text[:80]!r})")
        if owner is None:
            current = await self._recordset(zone, plan.record)
            ours = {v for r in plan.records for v in r.values}
            if current is not None and not set(current.records or ()) <= ours:
                return DnsReading(None, "a recordset Lifeboat did not write")
        return DnsReading(owner)

    async def _claim(self, zone: str, plan: TrafficPlan, current: Any | None) -> None:
        """Check the owner record and replace it with the plan's (raises when the name is
        another owner's or holds a newer epoch)."""
        mine, name = plan.owner, plan.record.name
        if mine is None:
            return
        record, text = await self._owner(zone, plan.record)
        held = DnsOwner.parse(text) if text is not None else None
        if text is not None and held is None:
            raise DnsOwnedByOther(name, f"an owner record Lifeboat did not write ({text[:80]!r})")
        if held is not None and held.owner != mine.owner:
            raise DnsOwnedByOther(name, held.owner)
        if held is not None and held.epoch > mine.epoch:
            raise DnsFenced(name, held.epoch, mine.epoch)
        if held is None and current is not None and current.records:
            ours = {v for r in plan.records for v in r.values}
            if not set(current.records) <= ours:
                raise DnsOwnedByOther(name, "a recordset Lifeboat did not write")
        value = [f'"{mine.text()}"']
        if held == mine:
            return  # already this change's record
        if record is None:
            await self._call(
                "CreateRecordset",
                lambda conn: conn.dns.create_recordset(
                    zone, name=owner_name(name), type="TXT", records=value, ttl=plan.record.ttl
                ),
                mutating=True,
            )
        else:
            await self._call(
                "UpdateRecordset",
                lambda conn: conn.dns.update_recordset(record, records=value),
                mutating=True,
            )

    async def _still_mine(self, zone: str, plan: TrafficPlan) -> None:
        """After the change: the owner record must still hold the plan's epoch."""
        if plan.owner is None:
            return
        _, text = await self._owner(zone, plan.record)
        held = DnsOwner.parse(text or "")
        if held is None or (held.owner, held.epoch) != (plan.owner.owner, plan.owner.epoch):
            raise DnsFenced(plan.record.name, held.epoch if held else None, plan.owner.epoch)

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        zone = await self.zone_id(plan.record)
        values = sorted({v for r in plan.records if r.weight > 0 for v in r.values})
        current = await self._recordset(zone, plan.record)
        await self._claim(zone, plan, current)
        submitted = time.time()
        if (
            current is not None
            and plan.owner is not None
            and plan.retire is None
            and sorted(current.records or ()) == values
            and current.ttl == plan.record.ttl
        ):
            # Already so (a change made before a crash, its completion never recorded).
            return TrafficChange(f"{current.id}@in-place", True, submitted, submitted)
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
        await self._still_mine(zone, plan)
        if plan.retire is not None and synced is not None:
            synced = await self._retire(plan.retire, plan.owner)
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

    async def _retire(self, record: DnsRecord, owner: DnsOwner | None) -> float | None:
        """Delete the old name's record set (and its owner record, when it is this
        owner's) and wait until it is gone from DNS."""
        zone = await self.zone_id(record)
        marker, text = await self._owner(zone, record)
        held = DnsOwner.parse(text or "")
        if marker is not None and (owner is None or (held and held.owner == owner.owner)):
            await self._call(
                "DeleteRecordset",
                lambda conn: conn.dns.delete_recordset(marker, zone, ignore_missing=True),
                mutating=True,
            )
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
