"""Route 53 as a :class:`~controller.providers.protocols.TrafficManager`.

Weighted routing: one record set per site (``SetIdentifier`` = site name), weight 100 on
the active site and 0 on the others, all in one change batch, which Route 53 applies
atomically: there is no moment where two sites (or none) carry the weight. Record sets
of sites no longer in the plan are deleted in the same batch. Weighted records carry no
health checks: Lifeboat probes the zones itself and decides.

Failover routing: the active site's record set (the highest weight, the first of equals)
is ``PRIMARY``, the best standby's ``SECONDARY``; other sites get none. A site with a
``health_check_url`` gets a Route 53 health check attached, so that Route 53 itself
answers the secondary when the primary's check fails, with no call to any control plane
(static stability). Health checks are created idempotently: each carries a
``CallerReference`` that starts with a digest of the record (hosted zone, name, type) and
of the URL and check settings, so an existing one is found by listing and reused, and a
retried create returns the same check. Checks of a record that its record sets no longer
reference are deleted once the change is in sync (Route 53 refuses to delete a check that
a record set still uses).

Switching a site between routing policies (weighted <-> failover) deletes its record set
and creates the new one in the same atomic batch. All deletions come first in a batch.

Route 53's data plane (answering DNS queries) is global and keeps working when a region
fails; changing records and health checks uses its control plane.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import botocore.exceptions

from controller.providers.aws.connector import GLOBAL, AwsConnector
from controller.providers.calls import RegionImpaired
from controller.providers.errors import DnsFenced, DnsOwnedByOther, DnsZoneNotFound
from controller.providers.outcomes import describe
from controller.providers.protocols import (
    DnsOwner,
    DnsReading,
    DnsRecord,
    SiteRecord,
    TrafficChange,
    TrafficPlan,
    owner_name,
)

if TYPE_CHECKING:
    from mypy_boto3_route53.type_defs import (
        ChangeTypeDef,
        HealthCheckConfigTypeDef,
        HealthCheckTypeDef,
        ListHealthChecksRequestTypeDef,
        ResourceRecordSetOutputTypeDef,
    )

log = logging.getLogger(__name__)

FailoverRole = Literal["PRIMARY", "SECONDARY"]
_CALLER_REFERENCE_PREFIX = "lifeboat"


def _set_key(rrset: Any) -> tuple[str, str, str]:
    """A record set's identity in its zone: name, type and set identifier."""
    return (str(rrset["Name"]).lower(), str(rrset["Type"]), str(rrset.get("SetIdentifier", "")))


LOOK_PAGE = "40"
"""Record sets read per look at a name: its own (one per site, at most 16 of a type) and
its owner record, listed right after it. Route 53 allows 300 a page, but in a zone shared
by a fleet the rest are other apps' records, parsed for nothing by every app's read-back
(the owner record is looked up on its own when it falls off the page)."""


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else f"{name}."


@dataclass
class Route53Traffic:
    """Route 53 records (and health checks) for one CloudProvider's account.

    ``health_check_interval_seconds`` (10 or 30) and ``health_check_failure_threshold``
    (1-10) configure the health checks of failover records; Route 53 cannot change a
    check's interval later, so they are part of the check's identity.
    """

    connector: AwsConnector
    sync_timeout_seconds: float = 180.0
    sync_poll_seconds: float = 2.0
    health_check_interval_seconds: int = 30
    health_check_failure_threshold: int = 3
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
                raise DnsZoneNotFound(f"no Route 53 hosted zone named {name}")
            if len(zones) > 1:
                raise DnsZoneNotFound(
                    f"{len(zones)} Route 53 hosted zones are named {name} (public and "
                    "private?); set traffic.hostedZoneId"
                )
            self._zone_ids[name] = zones[0]["Id"].removeprefix("/hostedzone/")
        return self._zone_ids[name]

    async def _list(
        self, zone_id: str, start: str, start_type: str | None = None, set_id: str | None = None
    ) -> tuple[list[Any], tuple[str, str | None, str | None] | None]:
        """Record sets from ``start`` on (from ``start_type`` and ``set_id`` within it, as
        Route 53's Next* markers say), in Route 53's order, one page; where the next page
        starts, None when none follows."""
        client = self.connector.route53()
        where: dict[str, str] = {"StartRecordName": start}
        if start_type is not None:
            where["StartRecordType"] = start_type
            if set_id is not None:
                where["StartRecordIdentifier"] = set_id
        answer = await self.connector.call(
            GLOBAL,
            "route53",
            "ListResourceRecordSets",
            lambda: client.list_resource_record_sets(
                HostedZoneId=zone_id,
                MaxItems=LOOK_PAGE,
                **where,  # type: ignore[arg-type]
            ),
        )
        more = None
        if answer.get("IsTruncated") and answer.get("NextRecordName"):
            more = (
                str(answer["NextRecordName"]),
                answer.get("NextRecordType"),
                answer.get("NextRecordIdentifier"),
            )
        return list(answer["ResourceRecordSets"]), more

    async def _look(self, zone_id: str, record: DnsRecord) -> _Name:
        """What ``record``'s name holds: its record sets of the record's type and its owner
        record. One listing when the owner record (a child name, listed right after the
        name in Route 53's order) is on the same page, more when the name's own sets go on
        past the page or the owner record falls off it."""
        name, owner = _fqdn(record.name).lower(), owner_name(record.name).lower()
        listed, more = await self._list(zone_id, name)
        keys = {_set_key(rrset) for rrset in listed}
        while more is not None and more[0].lower() == name:
            # The name's own sets go on past the page. A page that brings no set not seen
            # before is no progress: the look stops there rather than read it for ever.
            page, more = await self._list(zone_id, *more)
            fresh = [rrset for rrset in page if _set_key(rrset) not in keys]
            if not fresh:
                break
            keys.update(_set_key(rrset) for rrset in fresh)
            listed += fresh
        names = {rrset["Name"].lower() for rrset in listed}
        if more is not None and owner not in names:
            listed += (await self._list(zone_id, owner))[0]
        sets = [r for r in listed if r["Name"].lower() == name and r["Type"] == record.type]
        owner_sets = [r for r in listed if r["Name"].lower() == owner and r["Type"] == "TXT"]
        return _Name(
            sites=[r for r in sets if "SetIdentifier" in r],
            simple=[r for r in sets if "SetIdentifier" not in r],
            owner=owner_sets[0] if owner_sets else None,
        )

    async def read(self, plan: TrafficPlan) -> DnsReading:
        zone_id = await self.hosted_zone_id(plan.record)
        look = await self._look(zone_id, plan.record)
        owner, foreign = _ownership(plan, look)
        return DnsReading(owner, foreign)

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        zone_id = await self.hosted_zone_id(plan.record)
        look = await self._look(zone_id, plan.record)
        existing = look.sites
        owned = _owner_changes(plan, look)
        wanted = await self._wanted(plan, zone_id)
        held = DnsOwner.parse(_txt(look.owner) or "")
        mine = plan.owner
        if mine is not None and held == mine and not plan.retire and _in_place(existing, wanted):
            # Already so (a change made before a crash, its completion never recorded):
            # nothing to send again.
            at = time.time()
            return TrafficChange(f"in-place/epoch-{mine.epoch}", True, at, at)
        changes = owned + _changes(existing, wanted)
        owners = [_record_key(zone_id, plan.record)]
        # Health checks are looked after only where they are or were in use, so weighted
        # routing makes exactly the calls it always made.
        checked = plan.routing == "Failover" or _use_checks(existing)
        later: list[tuple[str, list[ChangeTypeDef]]] = []
        if plan.retire is not None:
            retired_zone = await self.hosted_zone_id(plan.retire)
            retired_look = await self._look(retired_zone, plan.retire)
            retired_sets = retired_look.sites
            retired: list[ChangeTypeDef] = [
                {"Action": "DELETE", "ResourceRecordSet": _as_input(rrset)}
                for rrset in retired_sets
            ]
            previous = DnsOwner.parse(_txt(retired_look.owner) or "")
            if retired_look.owner is not None and (
                plan.owner is None or (previous is not None and previous.owner == plan.owner.owner)
            ):
                retired.append(
                    {"Action": "DELETE", "ResourceRecordSet": _as_input(retired_look.owner)}
                )
            owners.append(_record_key(retired_zone, plan.retire))
            checked = checked or _use_checks(retired_sets)
            if retired_zone == zone_id:
                changes = retired + changes  # deletions first; the batch is atomic
            elif retired:
                later.append((retired_zone, retired))
        submitted = time.time()
        try:
            change_id, status = await self._submit(zone_id, changes, plan.comment)
        except botocore.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if plan.owner is None or code != "InvalidChangeBatch":
                raise
            # The owner record changed between reading it and the conditional change:
            # Route 53 refused the whole batch. Say who holds it now.
            now = DnsOwner.parse(_txt((await self._look(zone_id, plan.record)).owner) or "")
            if now is not None and now.owner != plan.owner.owner:
                raise DnsOwnedByOther(plan.record.name, now.owner) from None
            raise DnsFenced(
                plan.record.name, now.epoch if now else None, plan.owner.epoch
            ) from None
        synced = await self._wait_in_sync(change_id, status)
        for other_zone, other_changes in later:
            await self._submit(other_zone, other_changes, plan.comment)
        if synced is not None and checked:
            keep = {rrset["HealthCheckId"] for rrset in wanted if "HealthCheckId" in rrset}
            await self._delete_unused_health_checks(owners, keep)
        return TrafficChange(change_id, synced is not None, submitted, synced)

    async def _wanted(self, plan: TrafficPlan, zone_id: str) -> list[dict[str, Any]]:
        """The record sets the plan asks for (creating the health checks they need)."""
        if plan.routing == "Weighted":
            return [_weighted(plan, r) for r in plan.records]
        pair = _failover_pair(plan.records)
        if not any(r.health_check_url for _, r in pair):
            return [_failover(plan, r, role, None) for role, r in pair]
        checks = await self._health_checks()
        wanted = []
        for role, site in pair:
            check = None
            if site.health_check_url:
                check = await self._health_check(
                    zone_id, plan.record, site.health_check_url, checks
                )
            wanted.append(_failover(plan, site, role, check))
        return wanted

    # ------------------------------------------------------------------ health checks

    def _check_settings(self, url: str) -> HealthCheckConfigTypeDef:
        return _health_check_config(
            url, self.health_check_interval_seconds, self.health_check_failure_threshold
        )

    async def _health_check(
        self, zone_id: str, record: DnsRecord, url: str, known: list[HealthCheckTypeDef]
    ) -> str:
        """The ID of the record's health check of ``url``: a known one, or a new one (which
        then joins ``known``)."""
        config = self._check_settings(url)
        prefix = f"{_record_key(zone_id, record)}-{_digest(repr(sorted(config.items())), 16)}-"
        for check in known:
            if check["CallerReference"].startswith(prefix):
                return check["Id"]
        # A fresh suffix: Route 53 refuses a CallerReference of a deleted check for good.
        reference = f"{prefix}{time.time_ns():x}"
        client = self.connector.route53()
        answer = await self.connector.call(
            GLOBAL,
            "route53",
            "CreateHealthCheck",
            lambda: client.create_health_check(CallerReference=reference, HealthCheckConfig=config),
            mutating=True,
        )
        known.append(answer["HealthCheck"])
        log.info("Route 53 health check %s created for %s", answer["HealthCheck"]["Id"], url)
        return answer["HealthCheck"]["Id"]

    async def _health_checks(self) -> list[HealthCheckTypeDef]:
        """Every health check of the account (ListHealthChecks, all pages)."""
        client = self.connector.route53()
        checks: list[HealthCheckTypeDef] = []
        marker: str | None = None
        while True:
            request: ListHealthChecksRequestTypeDef = {"MaxItems": "1000"}
            if marker:
                request["Marker"] = marker
            page = await self.connector.call(
                GLOBAL,
                "route53",
                "ListHealthChecks",
                functools.partial(client.list_health_checks, **request),
            )
            checks += page["HealthChecks"]
            if not page.get("IsTruncated") or not page.get("NextMarker"):
                return checks
            marker = page["NextMarker"]

    async def _delete_unused_health_checks(self, owners: list[str], keep: set[str]) -> None:
        """Delete the health checks created for ``owners`` (record keys) not in ``keep``.

        Best effort: the DNS change is done; a check left behind is found again by the
        next apply, so failures are logged, not raised.
        """
        client = self.connector.route53()
        try:
            checks = await self._health_checks()
            for check in checks:
                ours = any(check["CallerReference"].startswith(f"{o}-") for o in owners)
                if not ours or check["Id"] in keep:
                    continue
                check_id = check["Id"]
                try:
                    await self.connector.call(
                        GLOBAL,
                        "route53",
                        "DeleteHealthCheck",
                        functools.partial(client.delete_health_check, HealthCheckId=check_id),
                        mutating=True,
                    )
                    log.info("Route 53 health check %s deleted (no longer used)", check_id)
                except botocore.exceptions.ClientError as error:
                    code = error.response.get("Error", {}).get("Code", "")
                    if code not in ("NoSuchHealthCheck", "HealthCheckInUse"):
                        raise
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            log.warning(
                "unused Route 53 health checks not deleted: %s",
                self.connector.redact(describe(error)),
            )
        except RegionImpaired as error:
            log.warning("unused Route 53 health checks not deleted: %s", error)

    # ------------------------------------------------------------------ changes

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
        """Weights by site; failover records count as 100 (PRIMARY) and 0 (SECONDARY)."""
        zone_id = await self.hosted_zone_id(plan.record)
        return {
            rrset["SetIdentifier"]: _weight_of(rrset)
            for rrset in (await self._look(zone_id, plan.record)).sites
        }


@dataclass(frozen=True)
class _Name:
    """What a DNS name holds: record sets per site (with a SetIdentifier), simple record
    sets (without one: not Lifeboat's), and its owner record."""

    sites: list[Any]
    simple: list[Any]
    owner: Any | None


def _txt(rrset: Any | None) -> str | None:
    """The text of a TXT record set (its values joined), None for no record set."""
    if rrset is None:
        return None
    return "".join(str(r["Value"]).strip('"') for r in rrset.get("ResourceRecords", ()))


def _ownership(plan: TrafficPlan, look: _Name) -> tuple[DnsOwner | None, str | None]:
    """The name's owner record, or else what at the name is someone else's: an owner
    record Lifeboat did not write, or — with no owner record — record sets of sites the
    plan does not have or without a set identifier (a name never owned is taken over only
    when all it holds are this app's sites' record sets, as a Lifeboat from before owner
    records wrote them)."""
    text = _txt(look.owner)
    if text is not None:
        owner = DnsOwner.parse(text)
        if owner is None:
            return None, f"an owner record Lifeboat did not write ({text[:80]!r})"
        return owner, None
    ours = {r.site for r in plan.records}
    foreign = [r["SetIdentifier"] for r in look.sites if r["SetIdentifier"] not in ours]
    if look.simple or foreign:
        what = ", ".join(foreign) or "a record without a set identifier"
        return None, f"record sets Lifeboat did not write ({what})"
    return None, None


def _owner_changes(plan: TrafficPlan, look: _Name) -> list[ChangeTypeDef]:
    """The conditional replacement of the name's owner record, first in the batch: DELETE
    of the exact record read + CREATE of the new one. Route 53 refuses the whole batch if
    the record changed meanwhile, so a writer that lost the race changes nothing. Raises
    when the name is someone else's, or holds a newer epoch than the plan's."""
    mine = plan.owner
    if mine is None:
        return []
    name = plan.record.name
    current, foreign = _ownership(plan, look)
    if foreign is not None:
        raise DnsOwnedByOther(name, foreign)
    if current is not None and current.owner != mine.owner:
        raise DnsOwnedByOther(name, current.owner)
    if current is not None and current.epoch > mine.epoch:
        raise DnsFenced(name, current.epoch, mine.epoch)
    changes: list[ChangeTypeDef] = []
    if look.owner is not None:
        changes.append({"Action": "DELETE", "ResourceRecordSet": _as_input(look.owner)})
    changes.append(
        {
            "Action": "CREATE",
            "ResourceRecordSet": {
                "Name": owner_name(name),
                "Type": "TXT",
                "TTL": plan.record.ttl,
                "ResourceRecords": [{"Value": f'"{mine.text()}"'}],
            },
        }
    )
    return changes


def _changes(
    existing: list[ResourceRecordSetOutputTypeDef], wanted: list[dict[str, Any]]
) -> list[ChangeTypeDef]:
    """One batch from ``existing`` to ``wanted``: deletions first, then upserts.

    A record set whose routing policy changes is deleted and created anew (Route 53 does
    not turn a weighted record set into a failover one in place).
    """
    by_site = {rrset["SetIdentifier"]: rrset for rrset in wanted}
    replaced: set[str] = set()
    changes: list[ChangeTypeDef] = []
    for rrset in existing:
        site = rrset["SetIdentifier"]
        if site in by_site and _policy(rrset) == _policy(by_site[site]):
            continue
        if site in by_site:
            replaced.add(site)
        changes.append({"Action": "DELETE", "ResourceRecordSet": _as_input(rrset)})
    changes += [
        {
            "Action": "CREATE" if rrset["SetIdentifier"] in replaced else "UPSERT",
            "ResourceRecordSet": rrset,  # type: ignore[typeddict-item]
        }
        for rrset in wanted
    ]
    return changes


def _in_place(existing: list[Any], wanted: list[dict[str, Any]]) -> bool:
    """Whether the record sets listed are exactly those wanted (per site: routing, weight,
    TTL, values and health check)."""

    def shape(rrset: Any) -> tuple[Any, ...]:
        return (
            rrset.get("Weight"),
            rrset.get("Failover"),
            rrset.get("TTL"),
            tuple(sorted(str(r["Value"]) for r in rrset.get("ResourceRecords", ()))),
            rrset.get("HealthCheckId"),
        )

    have = {r["SetIdentifier"]: shape(r) for r in existing}
    return have == {r["SetIdentifier"]: shape(r) for r in wanted}


def _use_checks(rrsets: list[ResourceRecordSetOutputTypeDef]) -> bool:
    return any("HealthCheckId" in rrset for rrset in rrsets)


def _policy(rrset: Any) -> str:
    """The routing policy of a record set, as far as Lifeboat tells them apart."""
    if "Failover" in rrset:
        return "Failover"
    if "Weight" in rrset:
        return "Weighted"
    return "other"


def _weight_of(rrset: ResourceRecordSetOutputTypeDef) -> int:
    if "Failover" in rrset:
        return 100 if rrset["Failover"] == "PRIMARY" else 0
    return int(rrset.get("Weight", 0))


def _failover_pair(records: tuple[SiteRecord, ...]) -> list[tuple[FailoverRole, SiteRecord]]:
    """PRIMARY: the highest weight; SECONDARY: the highest of the rest (first in order)."""
    if not records:
        return []
    primary = max(records, key=lambda r: r.weight)  # max keeps the first of equals
    rest = [r for r in records if r is not primary]
    if not rest:
        return [("PRIMARY", primary)]
    return [("PRIMARY", primary), ("SECONDARY", max(rest, key=lambda r: r.weight))]


def _weighted(plan: TrafficPlan, record: SiteRecord) -> dict[str, Any]:
    """One site's weighted record set."""
    return {
        "Name": _fqdn(plan.record.name),
        "Type": plan.record.type,
        "SetIdentifier": record.site,
        "Weight": record.weight,
        "TTL": plan.record.ttl,
        "ResourceRecords": [{"Value": v} for v in record.values],
    }


def _failover(
    plan: TrafficPlan, record: SiteRecord, role: FailoverRole, health_check_id: str | None
) -> dict[str, Any]:
    """One site's failover record set, with its health check if it has one."""
    rrset: dict[str, Any] = {
        "Name": _fqdn(plan.record.name),
        "Type": plan.record.type,
        "SetIdentifier": record.site,
        "Failover": role,
        "TTL": plan.record.ttl,
        "ResourceRecords": [{"Value": v} for v in record.values],
    }
    if health_check_id is not None:
        rrset["HealthCheckId"] = health_check_id
    return rrset


def _as_input(rrset: ResourceRecordSetOutputTypeDef) -> Any:
    """A listed record set as a DELETE needs it (exactly as it is)."""
    return dict(rrset)


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _record_key(zone_id: str, record: DnsRecord) -> str:
    """The CallerReference prefix of a record's health checks (fits Route 53's 64 chars
    with the URL digest and a nanosecond suffix)."""
    identity = f"{zone_id}|{_fqdn(record.name).lower()}|{record.type}"
    return f"{_CALLER_REFERENCE_PREFIX}-{_digest(identity, 12)}"


def _health_check_config(url: str, interval: int, threshold: int) -> HealthCheckConfigTypeDef:
    """An HTTP(S) health check of ``url``: by IP address when the host is one, else by
    name (with SNI for HTTPS). Route 53 counts 2xx and 3xx answers as healthy."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    if not parts.hostname or parts.scheme not in ("http", "https"):
        raise ValueError(f"health check URL must be http(s)://host[:port]/path, got {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    config: HealthCheckConfigTypeDef = {
        "Type": "HTTPS" if secure else "HTTP",
        "Port": parts.port or (443 if secure else 80),
        "ResourcePath": path,
        "RequestInterval": interval,
        "FailureThreshold": threshold,
    }
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        config["FullyQualifiedDomainName"] = parts.hostname
        if secure:
            config["EnableSNI"] = True
    else:
        config["IPAddress"] = parts.hostname
    return config
