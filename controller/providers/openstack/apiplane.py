"""The API-plane probe of an OpenStack region: Keystone, then Nova's availability zones.

Two cheap reads, both as probes (admitted even when the region is Impaired): a token from
Keystone (re-used while valid, so usually no request) and Nova's availability-zone list,
which also says which zones Nova considers available.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from controller.providers.openstack.connector import OpenStackConnector, classify
from controller.providers.protocols import ProbeReport


@dataclass
class NovaApiPlaneProbe:
    connector: OpenStackConnector

    async def probe(self, region: str) -> ProbeReport:
        started = time.monotonic()
        try:
            zones = await self.connector.call(
                region, "compute", "ListAvailabilityZones", _zones, mutating=False, probe=True
            )
        except Exception as error:
            verdict = classify(error)
            return ProbeReport(
                region,
                verdict.outcome,
                time.monotonic() - started,
                (),
                self.connector.explain(error),
            )
        return ProbeReport(region, classify(None).outcome, time.monotonic() - started, zones)


def _zones(conn: Any) -> tuple[tuple[str, str], ...]:
    conn.session.get_token()  # Keystone first: no token, no API plane
    found = []
    for zone in conn.compute.availability_zones(details=False):
        available = bool((zone.state or {}).get("available"))
        found.append((str(zone.name), "available" if available else "unavailable"))
    return tuple(sorted(found))
