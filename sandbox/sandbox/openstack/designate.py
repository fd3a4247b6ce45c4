"""The emulated Designate: DNS API v2 (zones and recordsets) in one region.

Zones and recordsets go ``PENDING`` -> ``ACTIVE`` as the name servers would take them;
:meth:`DesignateEmulator.resolve` answers what those name servers would. See
:class:`DesignateEmulator`.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Unpack

from aiohttp import web

from sandbox.openstack.base import (
    JSON,
    ApiError,
    EmulatedService,
    ServiceOptions,
    base_url,
    int_param,
    json_body,
    new_id,
    next_link,
    now_iso,
    request_token,
    truthy,
)

_DNS_NAME = re.compile(r"^(?=.{1,254}$)((?!-)[A-Za-z0-9_-]{1,63}(?<!-)\.)+$")
_RECORD_TYPES = frozenset(
    {"A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SPF", "SRV", "SSHFP", "TXT", "CAA", "NAPTR"}
)
_ZONE_QUERY = ("name", "type", "email", "status", "description", "ttl")
_RECORDSET_QUERY = ("name", "type", "ttl", "data", "status", "description")
NAMESERVER = "ns1.lifeboat.test."
_POOL_ID = "794ccc2c-d751-44fe-b57f-8894c9f5c842"


@dataclass
class DnsZone:
    id: str
    name: str
    email: str
    ttl: int
    description: str | None
    type: str
    project_id: str
    serial: int
    created_at: str
    status: str = "PENDING"
    action: str = "CREATE"
    updated_at: str | None = None
    version: int = 1
    settle_at: float | None = None


@dataclass
class RecordSet:
    id: str
    zone_id: str
    name: str
    type: str
    records: list[str]
    ttl: int | None
    description: str | None
    project_id: str
    created_at: str
    status: str = "PENDING"
    action: str = "CREATE"
    updated_at: str | None = None
    version: int = 1
    settle_at: float | None = None
    published: list[str] | None = None  # what the name servers serve; None: not yet


class DesignateEmulator(EmulatedService):
    """Designate's DNS API v2 in one region: zones and record sets.

    Changes are ``PENDING`` and become ``ACTIVE`` ``propagation_seconds``
    later, as when Designate's workers have pushed them to the name servers;
    :meth:`resolve` answers from what is ``ACTIVE``, like a name server.
    """

    service_type = "dns"
    service_name = "designate"

    def __init__(
        self,
        region: str,
        *,
        propagation_seconds: float = 0.2,
        **options: Unpack[ServiceOptions],
    ) -> None:
        super().__init__(region, **options)
        self.propagation_seconds = propagation_seconds
        self._reset_state()

    @property
    def endpoint_path(self) -> str:
        return ""

    def _reset_state(self) -> None:
        self._zones: dict[str, DnsZone] = {}
        self._recordsets: dict[str, RecordSet] = {}

    # --- state for tests

    def zones(self) -> list[DnsZone]:
        with self._lock:
            self._advance(self._clock())
            return [dataclasses.replace(zone) for zone in self._zones.values()]

    def recordsets(self, zone_name: str | None = None) -> list[RecordSet]:
        with self._lock:
            self._advance(self._clock())
            zone_ids = {z.id for z in self._zones.values() if zone_name in (None, z.name)}
            return [copy.deepcopy(rs) for rs in self._recordsets.values() if rs.zone_id in zone_ids]

    def resolve(self, name: str, record_type: str = "A") -> list[str]:
        """What a name server of this region answers for ``name`` (ACTIVE data only)."""
        fqdn = name if name.endswith(".") else f"{name}."
        with self._lock:
            self._advance(self._clock())
            for rs in self._recordsets.values():
                if rs.name == fqdn and rs.type == record_type and rs.published is not None:
                    return list(rs.published)
        return []

    # --- plumbing

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self._versions),
            web.get("/v2/zones", self._list_zones),
            web.post("/v2/zones", self._create_zone),
            web.get("/v2/zones/{zone_id}", self._show_zone),
            web.patch("/v2/zones/{zone_id}", self._update_zone),
            web.delete("/v2/zones/{zone_id}", self._delete_zone),
            web.get("/v2/zones/{zone_id}/recordsets", self._list_recordsets),
            web.post("/v2/zones/{zone_id}/recordsets", self._create_recordset),
            web.get("/v2/zones/{zone_id}/recordsets/{recordset_id}", self._show_recordset),
            web.put("/v2/zones/{zone_id}/recordsets/{recordset_id}", self._update_recordset),
            web.delete("/v2/zones/{zone_id}/recordsets/{recordset_id}", self._delete_recordset),
            web.get("/v2/recordsets", self._list_recordsets),
        ]

    def _is_public(self, request: web.Request) -> bool:
        return request.path == "/"

    def _error_body(self, error: ApiError, request_id: str) -> JSON:
        kind = error.kind or {
            400: "bad_request",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            409: "duplicate",
        }.get(error.status, "unknown")
        body: JSON = {"code": error.status, "type": kind, "message": error.message}
        if error.errors is not None:
            body["errors"] = error.errors
        body["request_id"] = request_id
        return body

    def _advance(self, now: float) -> None:
        for rs in list(self._recordsets.values()):
            if rs.settle_at is not None and rs.settle_at <= now:
                if rs.action == "DELETE":
                    del self._recordsets[rs.id]
                    continue
                rs.status, rs.action, rs.settle_at = "ACTIVE", "NONE", None
                rs.published = list(rs.records)
        for zone in list(self._zones.values()):
            if zone.settle_at is not None and zone.settle_at <= now:
                if zone.action == "DELETE":
                    del self._zones[zone.id]
                    for rs in [r for r in self._recordsets.values() if r.zone_id == zone.id]:
                        del self._recordsets[rs.id]
                    continue
                zone.status, zone.action, zone.settle_at = "ACTIVE", "NONE", None

    async def _versions(self, request: web.Request) -> web.Response:
        entry = {
            "id": "v2",
            "status": "CURRENT",
            "links": [{"href": f"{base_url(request)}/v2", "rel": "self"}],
        }
        return web.json_response({"versions": {"values": [entry]}})

    # --- zones

    def _zone_body(self, request: web.Request, zone: DnsZone) -> JSON:
        return {
            "id": zone.id,
            "pool_id": _POOL_ID,
            "project_id": zone.project_id,
            "name": zone.name,
            "email": zone.email,
            "ttl": zone.ttl,
            "serial": zone.serial,
            "status": zone.status,
            "action": zone.action,
            "description": zone.description,
            "masters": [],
            "type": zone.type,
            "transferred_at": None,
            "version": zone.version,
            "created_at": zone.created_at,
            "updated_at": zone.updated_at,
            "attributes": {},
            "shared": False,
            "links": {"self": f"{base_url(request)}/v2/zones/{zone.id}"},
        }

    def _visible_zone(self, request: web.Request, zone_id: str) -> DnsZone:
        _check_uuid(zone_id)
        zone = self._zones.get(zone_id)
        info = request_token(request)
        everyone = info.is_admin and truthy(request.headers.get("X-Auth-All-Projects", "false"))
        if zone is None or (zone.project_id != info.project_id and not everyone):
            raise ApiError(404, "Could not find Zone", kind="zone_not_found")
        return zone

    def _touch_zone(self, zone: DnsZone) -> None:
        """A change is on its way to the name servers: PENDING UPDATE, a new serial."""
        zone.serial = max(zone.serial + 1, int(time.time()))
        zone.updated_at = now_iso(microseconds=True)
        zone.version += 1
        if zone.action != "CREATE":
            zone.status, zone.action = "PENDING", "UPDATE"
        zone.settle_at = self._clock() + self.propagation_seconds
        soa = self._find_recordset(zone.id, zone.name, "SOA")
        if soa is not None:
            soa.records = [_soa_record(zone)]

    def _find_recordset(self, zone_id: str, name: str, rtype: str) -> RecordSet | None:
        return next(
            (
                rs
                for rs in self._recordsets.values()
                if rs.zone_id == zone_id and rs.name == name and rs.type == rtype
            ),
            None,
        )

    async def _list_zones(self, request: web.Request) -> web.Response:
        info = request_token(request)
        everyone = info.is_admin and truthy(request.headers.get("X-Auth-All-Projects", "false"))
        with self._lock:
            zones = [
                z
                for z in sorted(self._zones.values(), key=lambda z: (z.created_at, z.id))
                if (everyone or z.project_id == info.project_id)
                and _designate_filters(request, _ZONE_QUERY, self._zone_body(request, z))
            ]
            return self._designate_page(request, "zones", zones, self._zone_body)

    def _designate_page(
        self,
        request: web.Request,
        key: str,
        items: Sequence[Any],
        render: Callable[[web.Request, Any], JSON],
    ) -> web.Response:
        limit = int_param(request, "limit", minimum=1)
        marker = request.query.get("marker")
        start = 0
        if marker is not None:
            ids = [item.id for item in items]
            if marker not in ids:
                raise ApiError(400, "Marker not found", kind="marker_not_found")
            start = ids.index(marker) + 1
        page = list(items[start:])
        links: JSON = {"self": f"{base_url(request)}{request.path_qs}"}
        if limit is not None and len(page) > limit:
            page = page[:limit]
            links["next"] = next_link(request, page[-1].id)
        body = {key: [render(request, item) for item in page], "links": links}
        body["metadata"] = {"total_count": len(items)}
        return web.json_response(body)

    async def _create_zone(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        info = request_token(request)
        name, email = body.get("name"), body.get("email")
        zone_type = str(body.get("type", "PRIMARY")).upper()
        problems = []
        if not isinstance(name, str) or not _DNS_NAME.match(name):
            problems.append(_schema_error("name", f"{name!r} is not a 'zonename'"))
        if zone_type not in ("PRIMARY", "SECONDARY"):
            problems.append(
                _schema_error("type", f"{zone_type!r} is not one of ['PRIMARY', 'SECONDARY']")
            )
        if zone_type == "PRIMARY" and (not isinstance(email, str) or "@" not in email):
            problems.append(_schema_error("email", f"{email!r} is not a 'email'"))
        ttl = body.get("ttl", 3600)
        if not isinstance(ttl, int) or not 1 <= ttl <= 2147483647:
            problems.append(_schema_error("ttl", f"{ttl!r} is not valid under any given schema"))
        if problems:
            raise _invalid_object(problems)
        assert isinstance(name, str)  # checked above
        with self._lock:
            if any(z.name == name for z in self._zones.values()):
                raise ApiError(409, "Duplicate Zone", kind="duplicate_zone")
            now = now_iso(microseconds=True)
            zone = DnsZone(
                id=new_id(),
                name=name,
                email=str(email or ""),
                ttl=ttl,
                description=body.get("description"),
                type=zone_type,
                project_id=str(info.project_id),
                serial=int(time.time()),
                created_at=now,
                settle_at=self._clock() + self.propagation_seconds,
            )
            self._zones[zone.id] = zone
            if zone_type == "PRIMARY":
                for rtype, records in (("SOA", [_soa_record(zone)]), ("NS", [NAMESERVER])):
                    rs = RecordSet(
                        id=new_id(),
                        zone_id=zone.id,
                        name=name,
                        type=rtype,
                        records=records,
                        ttl=None,
                        description=None,
                        project_id=zone.project_id,
                        created_at=now,
                        settle_at=zone.settle_at,
                    )
                    self._recordsets[rs.id] = rs
            rendered = self._zone_body(request, zone)
        return web.json_response(
            rendered, status=202, headers={"Location": rendered["links"]["self"]}
        )

    async def _show_zone(self, request: web.Request) -> web.Response:
        with self._lock:
            zone = self._visible_zone(request, request.match_info["zone_id"])
            return web.json_response(self._zone_body(request, zone))

    async def _update_zone(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        allowed = {"email", "ttl", "description"}
        if set(body) - allowed:
            raise _invalid_object(
                [_schema_error(k, f"'{k}' is a read-only field") for k in set(body) - allowed]
            )
        with self._lock:
            zone = self._visible_zone(request, request.match_info["zone_id"])
            if zone.action == "DELETE":
                raise ApiError(400, "Zone is being deleted", kind="bad_request")
            if "ttl" in body:
                zone.ttl = int(body["ttl"])
            if "email" in body:
                zone.email = str(body["email"])
            if "description" in body:
                zone.description = body["description"]
            self._touch_zone(zone)
            return web.json_response(self._zone_body(request, zone), status=202)

    async def _delete_zone(self, request: web.Request) -> web.Response:
        with self._lock:
            zone = self._visible_zone(request, request.match_info["zone_id"])
            zone.status, zone.action = "PENDING", "DELETE"
            zone.settle_at = self._clock() + self.propagation_seconds
            return web.json_response(self._zone_body(request, zone), status=202)

    # --- record sets

    def _recordset_body(self, request: web.Request, rs: RecordSet) -> JSON:
        zone = self._zones[rs.zone_id]
        return {
            "id": rs.id,
            "zone_id": rs.zone_id,
            "zone_name": zone.name,
            "project_id": rs.project_id,
            "name": rs.name,
            "type": rs.type,
            "records": list(rs.records),
            "ttl": rs.ttl,
            "description": rs.description,
            "status": rs.status,
            "action": rs.action,
            "version": rs.version,
            "created_at": rs.created_at,
            "updated_at": rs.updated_at,
            "links": {"self": f"{base_url(request)}/v2/zones/{rs.zone_id}/recordsets/{rs.id}"},
        }

    def _visible_recordset(self, request: web.Request) -> tuple[DnsZone, RecordSet]:
        zone = self._visible_zone(request, request.match_info["zone_id"])
        recordset_id = request.match_info["recordset_id"]
        _check_uuid(recordset_id)
        rs = self._recordsets.get(recordset_id)
        if rs is None or rs.zone_id != zone.id:
            raise ApiError(404, "Could not find RecordSet", kind="recordset_not_found")
        return zone, rs

    async def _list_recordsets(self, request: web.Request) -> web.Response:
        info = request_token(request)
        with self._lock:
            if "zone_id" in request.match_info:
                zone_ids = {self._visible_zone(request, request.match_info["zone_id"]).id}
            else:
                zone_ids = {z.id for z in self._zones.values() if z.project_id == info.project_id}
            recordsets = [
                rs
                for rs in sorted(self._recordsets.values(), key=lambda r: (r.created_at, r.id))
                if rs.zone_id in zone_ids
                and _designate_filters(request, _RECORDSET_QUERY, self._recordset_body(request, rs))
            ]
            return self._designate_page(request, "recordsets", recordsets, self._recordset_body)

    async def _create_recordset(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        with self._lock:
            zone = self._visible_zone(request, request.match_info["zone_id"])
            name, rtype, records, ttl = _validate_recordset(body)
            if rtype == "SOA":
                raise ApiError(400, "Creating a SOA recordset is not allowed")
            self._check_placement(zone, name, rtype)
            if self._find_recordset(zone.id, name, rtype) is not None:
                raise ApiError(409, "Duplicate RecordSet", kind="duplicate_recordset")
            rs = RecordSet(
                id=new_id(),
                zone_id=zone.id,
                name=name,
                type=rtype,
                records=records,
                ttl=ttl,
                description=body.get("description"),
                project_id=zone.project_id,
                created_at=now_iso(microseconds=True),
                settle_at=self._clock() + self.propagation_seconds,
            )
            self._recordsets[rs.id] = rs
            self._touch_zone(zone)
            rendered = self._recordset_body(request, rs)
        return web.json_response(
            rendered, status=202, headers={"Location": rendered["links"]["self"]}
        )

    def _check_placement(self, zone: DnsZone, name: str, rtype: str) -> None:
        if not (name == zone.name or name.endswith(f".{zone.name}")):
            raise ApiError(
                400,
                "RecordSet is not contained within it's zone",
                kind="invalid_recordset_location",
            )
        if rtype == "CNAME" and name == zone.name:
            raise ApiError(
                400,
                "CNAME recordsets may not be created at the zone apex.",
                kind="invalid_recordset_location",
            )
        same_name = [
            rs for rs in self._recordsets.values() if rs.zone_id == zone.id and rs.name == name
        ]
        if any((rtype == "CNAME") != (rs.type == "CNAME") for rs in same_name):
            raise ApiError(
                400,
                "CNAME recordsets may not share a name with any other records",
                kind="invalid_recordset_location",
            )

    async def _show_recordset(self, request: web.Request) -> web.Response:
        with self._lock:
            _, rs = self._visible_recordset(request)
            return web.json_response(self._recordset_body(request, rs))

    async def _update_recordset(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        with self._lock:
            zone, rs = self._visible_recordset(request)
            if rs.type == "SOA":
                raise ApiError(400, "Updating SOA recordsets is not allowed")
            if rs.type == "NS" and rs.name == zone.name:
                raise ApiError(400, "Updating a root zone NS record is not allowed")
            if set(body) - {"records", "ttl", "description"}:
                unknown = sorted(set(body) - {"records", "ttl", "description"})
                raise _invalid_object(
                    [_schema_error(k, f"'{k}' is a read-only field") for k in unknown]
                )
            merged = {"name": rs.name, "type": rs.type, "records": rs.records, "ttl": rs.ttl}
            merged.update(body)
            _, _, records, ttl = _validate_recordset(merged)
            rs.records, rs.ttl = records, ttl
            if "description" in body:
                rs.description = body["description"]
            rs.status, rs.action = "PENDING", "UPDATE"
            rs.version += 1
            rs.updated_at = now_iso(microseconds=True)
            rs.settle_at = self._clock() + self.propagation_seconds
            self._touch_zone(zone)
            return web.json_response(self._recordset_body(request, rs), status=202)

    async def _delete_recordset(self, request: web.Request) -> web.Response:
        with self._lock:
            zone, rs = self._visible_recordset(request)
            if rs.type == "SOA":
                raise ApiError(400, "Deleting a SOA recordset is not allowed")
            rs.status, rs.action = "PENDING", "DELETE"
            rs.settle_at = self._clock() + self.propagation_seconds
            self._touch_zone(zone)
            return web.json_response(self._recordset_body(request, rs), status=202)


def _check_uuid(value: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ApiError(400, "Invalid UUID", kind="invalid_uuid") from None


def _schema_error(path: str, message: str) -> JSON:
    return {"path": [path], "message": message, "validator": "format", "raw": message}


def _invalid_object(problems: list[JSON]) -> ApiError:
    return ApiError(
        400,
        "Provided object does not match schema",
        kind="invalid_object",
        errors={"errors": problems},
    )


def _soa_record(zone: DnsZone) -> str:
    mailbox = zone.email.replace("@", ".") + "."
    return f"{NAMESERVER} {mailbox} {zone.serial} 3585 600 86400 3600"


def _designate_filters(request: web.Request, names: Sequence[str], body: JSON) -> bool:
    """Designate's exact-match filters, ``*`` as a wildcard; ``data`` looks into records."""
    for name in names:
        wanted = request.query.get(name)
        if wanted is None:
            continue
        pattern = re.compile("^" + re.escape(wanted).replace(r"\*", ".*") + "$", re.IGNORECASE)
        values = body.get("records", []) if name == "data" else [body.get(name)]
        if not any(pattern.match(str(value)) for value in values):
            return False
    return True


def _validate_recordset(body: JSON) -> tuple[str, str, list[str], int | None]:
    name, rtype, records, ttl = (body.get(k) for k in ("name", "type", "records", "ttl"))
    problems = []
    if not isinstance(name, str) or not _DNS_NAME.match(name):
        problems.append(_schema_error("name", f"{name!r} is not a 'hostname'"))
    if not isinstance(rtype, str) or rtype.upper() not in _RECORD_TYPES:
        problems.append(_schema_error("type", f"{rtype!r} is not a valid record type"))
    if not isinstance(records, list) or not records or not all(isinstance(r, str) for r in records):
        problems.append(_schema_error("records", f"{records!r} is not a list of records"))
    if ttl is not None and (not isinstance(ttl, int) or not 1 <= ttl <= 2147483647):
        problems.append(_schema_error("ttl", f"{ttl!r} is not valid under any given schema"))
    if problems:
        raise _invalid_object(problems)
    assert isinstance(name, str) and isinstance(rtype, str) and isinstance(records, list)
    rtype = rtype.upper()
    for record in records:
        if not _valid_record(rtype, record):
            raise _invalid_object(
                [_schema_error("records", f"{record!r} is not a valid {rtype} record")]
            )
    if rtype == "CNAME" and len(records) > 1:
        raise _invalid_object(
            [_schema_error("records", "only one CNAME record is allowed per rrset")]
        )
    return name, rtype, list(records), ttl


def _valid_record(rtype: str, record: str) -> bool:
    try:
        if rtype == "A":
            ipaddress.IPv4Address(record)
        elif rtype == "AAAA":
            ipaddress.IPv6Address(record)
        elif rtype in ("CNAME", "NS", "PTR"):
            return bool(_DNS_NAME.match(record))
        elif rtype == "MX":
            priority, _, host = record.partition(" ")
            return priority.isdigit() and bool(_DNS_NAME.match(host))
    except ValueError:
        return False
    return True
