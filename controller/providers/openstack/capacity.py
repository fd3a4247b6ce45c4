"""Nova servers made from a template as a :class:`~controller.providers.protocols.CapacityDriver`.

Nova has no scaling group: a site's capacity is the site's servers (see
:mod:`~controller.providers.openstack.servers`), made from a declared
:class:`ServerTemplate` in the availability zones asked for. Unlike an Auto Scaling group,
which balances a total over its zones, Nova places exactly: ``set_zones({"az-1a": 2})``
makes the zone hold two of the site's servers.

``observe``: per zone, every live server of the site counts as *desired* (what the site
holds there), ``ACTIVE`` ones as *running*; a server still in ``BUILD``, or one in
``ERROR`` or ``SHUTOFF``, is desired but not running. ``minimum`` is 0 (servers have no
floor) and ``maximum`` the total held now (Nova's limit is the project's quota, which
this driver does not read).

``set_zones``: zones left out get no servers. It checks every zone asked for against
Nova's zone list before changing anything, then deletes the surplus of each zone —
servers in ``ERROR`` or ``SHUTOFF`` first, then the newest — and boots what is missing,
one multi-create request per zone (``min_count`` 1, ``max_count`` the number missing).
Every mutating request is marked mutating, so an impaired region refuses it before it
leaves the process. Already so: no mutating call at all. A boot request that is retried
after a timeout does not boot twice: each request names its servers uniquely, and a retry
first looks for servers of that name.

Then it watches the boots (one listing per ``boot_poll_seconds``, up to
``boot_timeout_seconds``; servers still building after that are left building). A boot
that ends in ``ERROR`` with Nova's "No valid host" fault (or a quota fault) is the 2012
cascade symptom: the listing that sees it raises :class:`NoValidHost` (a
:class:`~controller.providers.openstack.connector.CapacityError`) through the connector,
so the region's gate records a ``capacity_error`` outcome; the failed servers, which hold
nothing but a quota slot, are deleted and the error reaches the caller. Boots failing for
other reasons stay (desired, not running) until a smaller count removes them.

``observe`` also reads the project's limits (``GET /limits``): where the instance quota
is set, what it still allows is the site's headroom (``CapacityState.headroom``; unlimited
or unreadable: None). It reports the site's servers in ``ERROR`` with their faults
(``CapacityState.failures``); each one whose fault is a capacity fault that the boot watch
did not count already (a boot Lifeboat did not watch to its end: a restart, a boot that
outlived ``boot_timeout_seconds``) is counted once against the region's API plane.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.api.models import OpenStackServersTemplate
from controller.api.names import TAG_SITE
from controller.core.apiplane import CallOutcome
from controller.providers.openstack.connector import (
    CALL_ERRORS,
    CAPACITY_MARKERS,
    CLEANUP_ERRORS,
    CapacityError,
    OpenStackConnector,
)
from controller.providers.openstack.servers import (
    BROKEN_STATUSES,
    ServerMatch,
    fault_message,
    list_matching,
    site_servers,
    status_of,
    zone_of,
)
from controller.providers.outcomes import Classified
from controller.providers.protocols import CapacityState, ZoneCapacity

log = logging.getLogger(__name__)

_SLUG = re.compile(r"[^a-z0-9]+")
_FAILURES_REPORTED = 3


@dataclass(frozen=True)
class ServerTemplate:
    """How the site's servers are made (and, through ``name_prefix`` and ``site``, found)."""

    name_prefix: str
    """Servers are called ``<name_prefix>-<zone>-<random>`` (``-<n>`` appended by Nova when
    one request boots several); a DNS label."""
    site: str
    """Written to each server's metadata as ``lifeboat.dev/site``."""
    flavor: str
    """Flavor ID or name (Nova)."""
    image: str
    """Image ID, or a name looked up in Glance."""
    networks: tuple[str, ...] | Literal["auto", "none"] = "auto"
    """Networks to attach (IDs, or names looked up in Neutron), or Nova's ``auto`` (give
    the project's network, allocating one if needed) / ``none``."""
    server_group: str | None = None
    """Server group (scheduler hint ``group``), e.g. an anti-affinity group: ID, or a name
    looked up in Nova."""
    security_groups: tuple[str, ...] = ()
    key_name: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    """More metadata for every server (``lifeboat.dev/site`` is set from ``site``)."""

    def __post_init__(self) -> None:
        ServerMatch(self.name_prefix, self.site)  # validates the prefix and the site
        if not self.flavor or not self.image:
            raise ValueError("a server template needs a flavor and an image")
        if TAG_SITE in self.metadata and self.metadata[TAG_SITE] != self.site:
            raise ValueError(f"template metadata sets {TAG_SITE} to another site")
        if isinstance(self.networks, str) and self.networks not in ("auto", "none"):
            raise ValueError("networks must be networks (IDs or names), 'auto' or 'none'")

    @property
    def match(self) -> ServerMatch:
        return ServerMatch(self.name_prefix, self.site)


@dataclass(frozen=True)
class _Resolved:
    """The template's references as IDs."""

    flavor: str
    image: str
    networks: tuple[str, ...] | Literal["auto", "none"]
    server_group: str | None

    def server_attributes(
        self, template: ServerTemplate, name: str, zone: str, count: int
    ) -> dict[str, Any]:
        """openstacksdk ``create_server`` attributes for ``count`` servers in ``zone``."""
        attributes: dict[str, Any] = {
            "name": name,
            "flavor_id": self.flavor,
            "image_id": self.image,
            "availability_zone": zone,
            "networks": (
                self.networks
                if isinstance(self.networks, str)
                else [{"uuid": network} for network in self.networks]
            ),
            "metadata": {**template.metadata, TAG_SITE: template.site},
        }
        if count > 1:
            attributes.update(min_count=1, max_count=count)
        if self.server_group:
            attributes["scheduler_hints"] = {"group": self.server_group}
        if template.security_groups:
            attributes["security_groups"] = [{"name": group} for group in template.security_groups]
        if template.key_name:
            attributes["key_name"] = template.key_name
        return attributes


class NoValidHost(CapacityError):
    """Nova could not place servers Lifeboat booted (their boot ended in ``ERROR``)."""

    def __init__(self, region: str, failed: Sequence[Any]) -> None:
        zones = sorted({zone_of(server) for server in failed})
        message = fault_message(failed[0]) if failed else ""
        super().__init__(
            f"{len(failed)} server(s) could not be placed in {region} "
            f"(zone(s) {', '.join(zones)}): {message}"
        )
        self.region = region
        self.zones = tuple(zones)
        self.server_ids = tuple(str(server.id) for server in failed)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _slug(zone: str) -> str:
    return _SLUG.sub("-", zone.lower()).strip("-") or "zone"


def _booted_by(name: str, requests: Iterable[str]) -> bool:
    """Whether ``name`` is a server one of the boot requests named ``requests`` made."""
    for request in requests:
        if name == request:
            return True
        rest = name.removeprefix(f"{request}-")
        if rest != name and rest.isdigit():
            return True  # "<name>-<n>": one of several booted by one request
    return False


def _capacity_failure(server: Any) -> bool:
    return status_of(server) == "ERROR" and any(
        marker in fault_message(server) for marker in CAPACITY_MARKERS
    )


def deletion_order(servers: Iterable[Any]) -> list[Any]:
    """Servers in the order they go when a zone shrinks: ERROR/SHUTOFF, then the newest."""
    newest_first = sorted(servers, key=lambda s: (str(s.created_at or ""), str(s.id)), reverse=True)
    return sorted(newest_first, key=lambda s: status_of(s) not in BROKEN_STATUSES)


class NovaServersCapacity:
    """The site's servers in one region; see the module docstring."""

    def __init__(
        self,
        connector: OpenStackConnector,
        region: str,
        template: ServerTemplate,
        *,
        boot_timeout_seconds: float = 600.0,
        boot_poll_seconds: float = 2.0,
    ) -> None:
        self.connector = connector
        self.region = region
        self.template = template
        self.boot_timeout_seconds = boot_timeout_seconds
        self.boot_poll_seconds = boot_poll_seconds
        self._zones: frozenset[str] = frozenset()
        self._resolved: _Resolved | None = None
        self._lock = asyncio.Lock()
        self._counted: set[str] = set()
        """Servers whose capacity fault was counted against the API plane already."""

    def __repr__(self) -> str:
        return f"NovaServersCapacity({self.region}/{self.template.name_prefix})"

    async def observe(self) -> CapacityState:
        servers = await site_servers(self.connector, self.region, self.template.match)
        desired = Counter(zone_of(server) for server in servers)
        running = Counter(zone_of(server) for server in servers if status_of(server) == "ACTIVE")
        failed = sorted((s for s in servers if status_of(s) == "ERROR"), key=lambda s: str(s.id))
        for server in failed:
            if _capacity_failure(server) and str(server.id) not in self._counted:
                self._counted.add(str(server.id))
                self.connector.calls.evidence(
                    self.region,
                    "compute",
                    "ServerFault",
                    Classified(CallOutcome.CAPACITY_ERROR, "NoValidHost"),
                )
        return CapacityState(
            tuple(ZoneCapacity(zone, desired[zone], running[zone]) for zone in sorted(desired)),
            minimum=0,
            maximum=sum(desired.values()),
            headroom=await self._headroom(),
            failures=tuple(
                f"server {server.id} in {zone_of(server)}: ERROR: "
                + " ".join((fault_message(server) or "no fault given").split())[:300]
                for server in failed[:_FAILURES_REPORTED]
            ),
            unit="servers ACTIVE",
        )

    async def _headroom(self) -> int | None:
        """Servers more the project's instance quota allows (None: unlimited, or the cloud
        does not say: a policy that hides the limits, an error)."""

        def read(conn: Any) -> tuple[int | None, int | None]:
            absolute = conn.compute.get_limits().absolute
            return absolute.instances, absolute.instances_used

        try:
            quota, used = await self.connector.call(
                self.region, "compute", "GetLimits", read, mutating=False
            )
        except CALL_ERRORS as error:
            log.info("%s: limits not read: %s", self, type(error).__name__)
            return None
        if quota is None or quota < 0:
            return None
        return max(0, int(quota) - int(used or 0))

    async def set_zones(self, desired: Mapping[str, int]) -> None:
        if any(count < 0 for count in desired.values()):
            raise ValueError(f"negative capacity asked for: {dict(desired)}")
        wanted = {zone: count for zone, count in desired.items() if count > 0}
        async with self._lock:  # one change at a time: counts are read, then acted on
            await self._check_zones(wanted)
            servers = await site_servers(self.connector, self.region, self.template.match)
            by_zone: dict[str, list[Any]] = defaultdict(list)
            for server in servers:
                by_zone[zone_of(server)].append(server)
            surplus: list[Any] = []
            missing: dict[str, int] = {}
            for zone in sorted(set(by_zone) | set(wanted)):
                have, want = by_zone.get(zone, []), wanted.get(zone, 0)
                if len(have) > want:
                    surplus += deletion_order(have)[: len(have) - want]
                elif want > len(have):
                    missing[zone] = want - len(have)
            for server in surplus:
                await self._delete(str(server.id))
            if not missing:
                return
            resolved = await self._resolve()
            requests = [await self._boot(zone, count, resolved) for zone, count in missing.items()]
            try:
                await self._watch(requests)
            except NoValidHost as error:
                self._counted.update(error.server_ids)  # the watch's listing counted them
                await asyncio.shield(self._remove_failed(error.server_ids))
                raise

    async def _check_zones(self, wanted: Mapping[str, int]) -> None:
        """Every zone asked for must be one of Nova's (the list is read when needed)."""
        if set(wanted) <= self._zones:
            return
        self._zones = frozenset(
            await self.connector.call(
                self.region,
                "compute",
                "ListAvailabilityZones",
                lambda conn: [str(z.name) for z in conn.compute.availability_zones(details=False)],
                mutating=False,
            )
        )
        unknown = sorted(set(wanted) - self._zones)
        if unknown:
            raise ValueError(
                f"no availability zone {', '.join(unknown)} in {self.region} "
                f"(Nova's zones: {', '.join(sorted(self._zones)) or 'none'})"
            )

    async def _resolve(self) -> _Resolved:
        """Flavor, image, networks and server group as IDs (looked up once, when needed)."""
        if self._resolved is None:
            template = self.template
            flavor = await self._lookup(
                "compute", "GetFlavor", lambda c: c.compute.find_flavor, template.flavor
            )
            image = template.image
            if not _is_uuid(image):
                image = await self._lookup("image", "GetImage", lambda c: c.image.find_image, image)
            networks = template.networks
            if not isinstance(networks, str):
                networks = tuple(
                    [
                        net
                        if _is_uuid(net)
                        else await self._lookup(
                            "network", "GetNetwork", lambda c: c.network.find_network, net
                        )
                        for net in networks
                    ]
                )
            group = template.server_group
            if group and not _is_uuid(group):
                group = await self._lookup(
                    "compute", "GetServerGroup", lambda c: c.compute.find_server_group, group
                )
            self._resolved = _Resolved(flavor, image, networks, group)
        return self._resolved

    async def _lookup(
        self, service: str, operation: str, finder: Callable[[Any], Any], name_or_id: str
    ) -> str:
        """The ID of what ``finder(conn)(name_or_id)`` (an SDK ``find_*``) finds."""
        found = await self.connector.call(
            self.region,
            service,
            operation,
            lambda conn: finder(conn)(name_or_id, ignore_missing=False),
            mutating=False,
        )
        return str(found.id)

    async def _boot(self, zone: str, count: int, resolved: _Resolved) -> str:
        """Ask Nova for ``count`` servers in ``zone``; the name of the request."""
        name = f"{self.template.name_prefix}-{_slug(zone)}-{secrets.token_hex(3)}"
        attributes = resolved.server_attributes(self.template, name, zone, count)

        def boot(conn: Any) -> None:
            # A retry of this call must not boot again what the first attempt booted.
            earlier = conn.compute.servers(details=False, name=f"^{name}")
            if any(_booted_by(str(server.name), [name]) for server in earlier):
                return
            conn.compute.create_server(**attributes)

        await self.connector.call(self.region, "compute", "CreateServer", boot, mutating=True)
        log.info("%s: booting %d server(s) %s in %s", self, count, name, zone)
        return name

    async def _watch(self, requests: list[str]) -> None:
        """Wait until the boots leave ``BUILD``; raise :class:`NoValidHost` for capacity."""
        deadline = time.monotonic() + self.boot_timeout_seconds
        match, region = self.template.match, self.region

        def outcome(conn: Any) -> int:
            booted = [s for s in list_matching(conn, match) if _booted_by(str(s.name), requests)]
            failed = [server for server in booted if _capacity_failure(server)]
            if failed:
                raise NoValidHost(region, failed)
            return sum(1 for server in booted if status_of(server) == "BUILD")

        while True:
            building = await self.connector.call(
                self.region, "compute", "ListServers", outcome, mutating=False
            )
            if not building:
                return
            if time.monotonic() >= deadline:
                log.warning("%s: %d server(s) still building; not waiting longer", self, building)
                return
            await asyncio.sleep(self.boot_poll_seconds)

    async def _delete(self, server_id: str) -> None:
        await self.connector.call(
            self.region,
            "compute",
            "DeleteServer",
            lambda conn: conn.compute.delete_server(server_id, ignore_missing=True),
            mutating=True,
        )

    async def _remove_failed(self, server_ids: Sequence[str]) -> None:
        """Delete servers whose boot failed for lack of capacity (best effort)."""
        for server_id in server_ids:
            try:
                await self._delete(server_id)
            except CLEANUP_ERRORS as error:
                log.warning(
                    "%s: server %s (no valid host) not deleted: %s",
                    self,
                    server_id,
                    self.connector.explain(error),
                )


def capacity_for_site(
    connector: OpenStackConnector, region: str, site: str, spec: OpenStackServersTemplate
) -> NovaServersCapacity:
    """The driver of a ResilientApp site's ``capacity.openstackServers``: the site's servers
    are named from ``namePrefix`` and carry ``lifeboat.dev/site=<site>``; no networks
    given means Nova's ``auto``."""
    template = ServerTemplate(
        name_prefix=spec.name_prefix,
        site=site,
        flavor=spec.flavor,
        image=spec.image,
        networks=tuple(spec.networks) or "auto",
        server_group=spec.server_group,
    )
    return NovaServersCapacity(connector, region, template)
