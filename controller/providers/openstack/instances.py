"""Nova's view of a site's servers, per zone, as an
:class:`~controller.providers.protocols.InstanceHealth`.

The site's servers are found as :mod:`~controller.providers.openstack.servers` describes
(name prefix and ``lifeboat.dev/site`` metadata). A server is healthy when Nova reports
it ``ACTIVE``; one in ``BUILD`` is not healthy yet, and ``ERROR`` (with its fault),
``SHUTOFF`` and the other states are problems the zone's ``detail`` names. Servers being
deleted are not counted at all. Every zone in ``zones`` is reported, with zero servers if
it has none, and so is every other zone that holds servers of the site.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from controller.providers.openstack.connector import OpenStackConnector
from controller.providers.openstack.servers import (
    ServerMatch,
    fault_message,
    site_servers,
    status_of,
    zone_of,
)
from controller.providers.protocols import ZoneInstances

_DETAIL_PROBLEMS = 5


class NovaInstanceHealth:
    """The servers of one site in one region."""

    def __init__(
        self,
        connector: OpenStackConnector,
        region: str,
        match: ServerMatch,
        zones: Sequence[str] = (),
    ) -> None:
        self.connector = connector
        self.region = region
        self.match = match
        self.expected_zones = tuple(zones)

    def __repr__(self) -> str:
        return f"NovaInstanceHealth({self.region}/{self.match.name_prefix})"

    async def zones(self) -> tuple[ZoneInstances, ...]:
        servers = await site_servers(self.connector, self.region, self.match)
        totals: dict[str, int] = defaultdict(int)
        healthy: dict[str, int] = defaultdict(int)
        problems: dict[str, list[str]] = defaultdict(list)
        for server in sorted(servers, key=lambda s: str(s.name)):
            zone = zone_of(server)
            totals[zone] += 1
            problem = _problem(server)
            if problem is None:
                healthy[zone] += 1
            else:
                problems[zone].append(f"{server.id}: {problem}")
        zones = sorted(set(self.expected_zones) | set(totals))
        return tuple(ZoneInstances(z, totals[z], healthy[z], _detail(problems[z])) for z in zones)


def _problem(server: Any) -> str | None:
    status = status_of(server)
    if status == "ACTIVE":
        return None
    if status == "BUILD":
        task = server.task_state
        return f"building (task {task})" if task else "building"
    if status == "ERROR":
        message = fault_message(server)
        return f"ERROR: {message[:200]}" if message else "ERROR"
    state = server.vm_state
    return f"{status or 'no status'}" + (f" (vm_state {state})" if state else "")


def _detail(problems: list[str]) -> str:
    shown = "; ".join(problems[:_DETAIL_PROBLEMS])
    more = len(problems) - _DETAIL_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")
