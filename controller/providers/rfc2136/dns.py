"""An RFC 2136 server as a :class:`~controller.providers.protocols.TrafficManager`.

DNS has no weights: as with Designate, one RRset answers for a name and type, and
Lifeboat keeps it holding exactly the values of the sites with a positive weight (the
active site's); ``Failover`` routing is served the same way (no DNS health checks).

Ownership and fencing are as strong as Route 53's, because an RFC 2136 update is atomic
and carries *prerequisites* the server checks before it changes anything: every change is
one signed UPDATE whose prerequisite is the name's owner record (TXT ``_lifeboat.<name>``,
see :class:`~controller.providers.protocols.DnsOwner`) exactly as Lifeboat read it — its
whole RRset, value for value ("RRset exists, value dependent", RFC 2136 §2.4.2) — or, for
a name without one, that there is none (§2.4.3). The same message replaces the owner
record, the address RRset and, for a renamed record in the same zone, deletes the old
name's RRsets. A writer whose read is stale (another writer changed the owner record
since) is refused by the server itself (YXRRSET/NXRRSET) and nothing changes; Lifeboat
then reads the owner record again and raises :class:`DnsFenced` or
:class:`DnsOwnedByOther` — unless the record already holds this very change (an earlier
attempt whose answer was lost), which counts as done.

"In sync" means the primary server holds the change: it answers an update only after
committing it. Secondaries follow by NOTIFY and IXFR, as the zone's operator set them up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.update

from controller.providers.errors import DnsFenced, DnsOwnedByOther, DnsZoneNotFound
from controller.providers.protocols import (
    DnsOwner,
    DnsReading,
    DnsRecord,
    TrafficChange,
    TrafficPlan,
    owner_name,
)
from controller.providers.rfc2136.connector import PREREQUISITE_FAILED, Rfc2136Connector


def _fqdn(name: str) -> str:
    return (name if name.endswith(".") else f"{name}.").lower()


def _text(rrset: dns.rrset.RRset | None) -> str | None:
    """The TXT RRset's text, its strings joined (None: no RRset)."""
    if rrset is None:
        return None
    return "".join(b"".join(rdata.strings).decode("utf-8", "replace") for rdata in rrset)


def _values(rrset: dns.rrset.RRset | None) -> set[str]:
    if rrset is None:
        return set()
    return {rdata.to_text().rstrip(".").lower() for rdata in rrset}


def _normal(values: set[str] | list[str] | tuple[str, ...]) -> set[str]:
    return {v.rstrip(".").lower() for v in values}


@dataclass
class Rfc2136Traffic:
    connector: Rfc2136Connector
    region: str

    # ------------------------------------------------------------------ reading

    def zone_of(self, record: DnsRecord) -> str:
        """The zone of ``record``: one of the CloudProvider's zones, holding the name."""
        given = record.hosted_zone_name or record.hosted_zone_id
        zones = {_fqdn(z) for z in self.connector.settings.zones}
        zone = _fqdn(given) if given else None
        name = _fqdn(record.name)
        if zone is None or zone not in zones:
            raise DnsZoneNotFound(
                f"zone {given} is not one of CloudProvider {self.connector.name}'s "
                f"rfc2136.zones ({', '.join(sorted(zones))})"
            )
        if not dns.name.from_text(name).is_subdomain(dns.name.from_text(zone)):
            raise DnsZoneNotFound(f"{record.name} is not in zone {zone}")
        return zone

    async def _query(self, name: str, rdtype: str) -> dns.rrset.RRset | None:
        rrset, _ = await self.connector.call(
            self.region,
            f"Query{rdtype}",
            lambda: self.connector.query(name, rdtype),
            mutating=False,
        )
        return rrset

    async def _check_zone(self, zone: str) -> None:
        soa = await self._query(zone, "SOA")
        if soa is None:
            raise DnsZoneNotFound(
                f"{self.connector.settings.server} does not serve zone {zone} (no SOA)"
            )

    async def _state(
        self, record: DnsRecord
    ) -> tuple[dns.rrset.RRset | None, dns.rrset.RRset | None]:
        """(the owner record's RRset, the address RRset) as the server holds them."""
        owner = await self._query(owner_name(record.name), "TXT")
        current = await self._query(_fqdn(record.name), record.type)
        return owner, current

    async def read(self, plan: TrafficPlan) -> DnsReading:
        zone = self.zone_of(plan.record)
        await self._check_zone(zone)
        owner_rrset, current = await self._state(plan.record)
        text = _text(owner_rrset)
        owner = DnsOwner.parse(text) if text is not None else None
        if text is not None and owner is None:
            return DnsReading(None, f"an owner record Lifeboat did not write ({text[:80]!r})")
        if owner is None and not _values(current) <= _normal(
            [v for r in plan.records for v in r.values]
        ):
            return DnsReading(None, "an RRset Lifeboat did not write")
        return DnsReading(owner)

    async def weights(self, plan: TrafficPlan) -> dict[str, int]:
        self.zone_of(plan.record)
        published = _values(await self._query(_fqdn(plan.record.name), plan.record.type))
        return {
            r.site: 100 if r.values and _normal(r.values) <= published else 0 for r in plan.records
        }

    # ------------------------------------------------------------------ changing

    def _judge(self, plan: TrafficPlan, text: str | None, current: set[str]) -> DnsOwner | None:
        """The owner record held now, after checking that the plan may replace it
        (raises when the name is another owner's or holds a newer epoch)."""
        name, mine = plan.record.name, plan.owner
        held = DnsOwner.parse(text) if text is not None else None
        if text is not None and held is None:
            raise DnsOwnedByOther(name, f"an owner record Lifeboat did not write ({text[:80]!r})")
        if mine is None:
            return held
        if held is not None and held.owner != mine.owner:
            raise DnsOwnedByOther(name, held.owner)
        if held is not None and held.epoch > mine.epoch:
            raise DnsFenced(name, held.epoch, mine.epoch)
        if held is None and not current <= _normal([v for r in plan.records for v in r.values]):
            raise DnsOwnedByOther(name, "an RRset Lifeboat did not write")
        return held

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        record = plan.record
        zone = self.zone_of(record)
        await self._check_zone(zone)
        values = sorted({v for r in plan.records if r.weight > 0 for v in r.values})
        owner_rrset, current = await self._state(record)
        held = self._judge(plan, _text(owner_rrset), _values(current))
        submitted = time.time()
        already = (
            plan.owner is not None
            and held == plan.owner
            and _values(current) == _normal(values)
            and (current is None or current.ttl == record.ttl)
            and plan.retire is None
        )
        if already:  # a change made before a crash, its completion never recorded
            return TrafficChange(f"{zone}@in-place", True, submitted, submitted)

        update = dns.update.UpdateMessage(zone)
        marker = owner_name(record.name)
        if plan.owner is not None:
            if owner_rrset is not None:
                # Value dependent: every record of the RRset as read, with TTL 0 (RFC 2136
                # §2.4.2; an Rdataset would carry its TTL, which servers refuse: FORMERR).
                update.present(marker, *owner_rrset)
            else:
                update.absent(marker, "TXT")
            update.replace(marker, record.ttl, "TXT", f'"{plan.owner.text()}"')
        if values:
            update.replace(_fqdn(record.name), record.ttl, record.type, *values)
        else:
            update.delete(_fqdn(record.name), record.type)
        retire_elsewhere = None
        if plan.retire is not None:
            if self.zone_of(plan.retire) == zone:
                await self._retire_into(update, plan.retire, plan.owner)
            else:
                retire_elsewhere = plan.retire

        answer = await self.connector.call(
            self.region, "Update", lambda: self.connector.update(update), mutating=True
        )
        if answer in PREREQUISITE_FAILED:
            await self._refused(plan, values)
        synced = time.time()
        if retire_elsewhere is not None:
            await self._retire_alone(retire_elsewhere, plan.owner)
            synced = time.time()
        serial = await self._serial(zone)
        return TrafficChange(f"{zone}@{serial}", True, submitted, synced)

    async def _refused(self, plan: TrafficPlan, values: list[str]) -> None:
        """The server refused the update's prerequisite: the owner record changed since it
        was read. Done if it holds this very change (an earlier attempt's answer was
        lost); else fenced, or the name is someone else's now."""
        owner_rrset, current = await self._state(plan.record)
        text = _text(owner_rrset)
        held = DnsOwner.parse(text) if text is not None else None
        if (
            plan.owner is not None
            and held == plan.owner
            and _values(current) == _normal(values)
            and plan.retire is None
        ):
            return
        if text is not None and held is None:
            raise DnsOwnedByOther(plan.record.name, "an owner record Lifeboat did not write")
        if held is not None and plan.owner is not None and held.owner != plan.owner.owner:
            raise DnsOwnedByOther(plan.record.name, held.owner)
        mine = plan.owner.epoch if plan.owner is not None else 0
        raise DnsFenced(plan.record.name, held.epoch if held is not None else None, mine)

    async def _retire_into(
        self, update: dns.update.UpdateMessage, record: DnsRecord, owner: DnsOwner | None
    ) -> None:
        """Add the deletion of a renamed record's RRset (and of its owner record, when it
        is this owner's) to ``update``."""
        marker, _ = await self._state(record)
        held = DnsOwner.parse(_text(marker) or "")
        if marker is not None and (owner is None or (held and held.owner == owner.owner)):
            update.delete(owner_name(record.name), "TXT")
        update.delete(_fqdn(record.name), record.type)

    async def _retire_alone(self, record: DnsRecord, owner: DnsOwner | None) -> None:
        zone = self.zone_of(record)
        update = dns.update.UpdateMessage(zone)
        await self._retire_into(update, record, owner)
        await self.connector.call(
            self.region, "Update", lambda: self.connector.update(update), mutating=True
        )

    async def _serial(self, zone: str) -> str:
        soa = await self._query(zone, "SOA")
        if soa is None:
            return "unknown"
        return str(soa[0].serial)
