"""Capacity as the drivers report it: standby readiness, and capacity coming up.

Pure: no I/O, no clock. What a site's capacity driver reported arrives as a
:class:`CapacityReading` stamped with the time it was read; ``now`` is an argument.

**Standby readiness.** A site that does not take the traffic is *ready* to take it when:

* its zones qualify as a failover target (``minHealthyTargetZones`` Healthy zones, as the
  probes see them; its region's API plane not Impaired), the test a failover applies;
* its driver reports at least the instances the standby is asked to run Ready
  (``standbyPerZone`` in each zone: Auto Scaling ``InService`` and ``Healthy``, Nova
  ``ACTIVE``, Deployment ready replicas), counted over the site: an Auto Scaling group
  balances its total over its zones and places no instance exactly;
* no scale-up of the site failed recently (Auto Scaling activities that failed, Nova
  servers in ``ERROR``), in the cloud's words;
* where the cloud reports a limit (:attr:`CapacityReading.headroom`), it leaves room for
  the scale-up a failover asks for (``perZone`` in every zone).

A site without a capacity driver is judged on its zones alone. Capacity not read yet, or
unreadable, makes readiness Unknown (None), never Ready.

**Capacity coming up.** Once capacity was set for a site (a failover, an evacuation, any
change), the first reading taken after it that counts what was asked for Ready marks it
Ready (:func:`verified`); until then it is *pending*, and *overdue* once
``readiness.capacityTimeoutSeconds`` have passed since it was set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from controller.api.models import ResilientAppSpec, Site

_FIGURES = re.compile(r"\d+(\.\d+)?")


@dataclass(frozen=True)
class ZoneReading:
    """One zone as a capacity driver reports it."""

    zone: str
    ready: int
    """Instances Ready (in service and healthy) in the zone."""
    desired: int = 0
    """What the driver holds the zone asked to run."""


@dataclass(frozen=True)
class CapacityReading:
    """A site's capacity as its driver reported it at ``at``."""

    at: float
    zones: tuple[ZoneReading, ...] = ()
    maximum: int | None = None
    """The driver's own bound (an Auto Scaling group's MaxSize), a figure only: the
    Auto Scaling driver raises it when a change needs more."""
    headroom: int | None = None
    """Instances more the cloud's quota allows the site (None: the cloud does not say)."""
    failures: tuple[str, ...] = ()
    """Recent failed scale-ups, in the cloud's words."""
    error: str | None = None
    """Why the capacity could not be read (then the figures mean nothing)."""
    unit: str = "instances Ready"
    """What is counted, for the words (``instances InService``, ``servers ACTIVE``)."""

    @property
    def ready(self) -> int:
        return sum(z.ready for z in self.zones)

    @property
    def desired(self) -> int:
        return sum(z.desired for z in self.zones)


@dataclass(frozen=True)
class SiteReadiness:
    """Whether a site could take the traffic now, and why not, each cause with its figure."""

    site: str
    ready: bool | None
    """True, False, or None: not known (capacity not read yet, or unreadable)."""
    causes: tuple[str, ...] = ()
    """Why not ready (or why unknown)."""
    ready_instances: int | None = None
    wanted: int = 0
    """Instances the site is asked to run now (standby)."""
    failover_needs: int = 0
    """Instances the site runs once it takes the traffic."""
    maximum: int | None = None
    headroom: int | None = None
    checked_at: float | None = None
    """When its capacity was last read (None: never)."""

    @property
    def summary(self) -> str:
        if self.ready:
            return f"{self.site}: ready" + (
                f" ({self.ready_instances}/{self.wanted} instances Ready, a failover asks "
                f"{self.failover_needs})"
                if self.ready_instances is not None
                else ""
            )
        word = "not ready" if self.ready is False else "readiness unknown"
        return f"{self.site}: {word}: {'; '.join(self.causes)}"


def per_zone_counts(site: Site, per_zone: int, out: frozenset[str] = frozenset()) -> dict[str, int]:
    """``per_zone`` instances in each zone of ``site``, the share of zones in ``out`` spread
    over the others (the total is kept), remainder to the first zones."""
    serving = [z for z in site.zones if z not in out] or list(site.zones)
    base, extra = divmod(per_zone * len(site.zones), len(serving))
    counts = dict.fromkeys(site.zones, 0)
    for i, zone in enumerate(serving):
        counts[zone] = base + (1 if i < extra else 0)
    return counts


def ready_count(reading: CapacityReading, zones: Mapping[str, int]) -> int:
    """Instances Ready in the zones asked to run any (``zones``: zone -> count); a driver
    that places no instance exactly (Auto Scaling) may hold them in any of those zones."""
    wanted = {z for z, n in zones.items() if n > 0}
    return sum(z.ready for z in reading.zones if z.zone in wanted)


def capacity_causes(
    site: Site, reading: CapacityReading | None
) -> tuple[bool | None, tuple[str, ...], int | None]:
    """Whether a standby's capacity is ready: (ready, causes, ready instances)."""
    if site.capacity is None:
        return True, (), None
    if reading is None:
        return None, ("capacity not read yet",), None
    if reading.error is not None:
        return None, (f"capacity unreadable: {reading.error}",), None
    standby = per_zone_counts(site, site.capacity.standby())
    wanted = sum(standby.values())
    ready = ready_count(reading, standby)
    causes: list[str] = []
    if ready < wanted:
        causes.append(
            f"{ready}/{wanted} {reading.unit} (standby runs {site.capacity.standby()} per zone)"
        )
    causes.extend(f"scale-up failed: {failure}" for failure in reading.failures)
    needs = site.capacity.per_zone * len(site.zones)
    more = needs - max(reading.desired, ready)
    if reading.headroom is not None and more > reading.headroom:
        causes.append(
            f"headroom: the quota allows {reading.headroom} more instance(s), a failover "
            f"needs {more} more ({needs} in all)"
        )
    return not causes, tuple(causes), ready


def standby_readiness(
    site: Site,
    reading: CapacityReading | None,
    zones_unfit: str | None,
) -> SiteReadiness:
    """The readiness of standby ``site``: ``reading`` its latest capacity reading,
    ``zones_unfit`` why its zones or region disqualify it as a failover target (None: they
    qualify)."""
    capacity, causes, ready = capacity_causes(site, reading)
    if zones_unfit is not None:
        causes = (zones_unfit, *causes)
    if zones_unfit is not None or capacity is False:
        verdict: bool | None = False
    else:
        verdict = capacity
    spec = site.capacity
    usable = reading if reading is not None and reading.error is None else None
    return SiteReadiness(
        site=site.name,
        ready=verdict,
        causes=causes,
        ready_instances=ready,
        wanted=spec.standby() * len(site.zones) if spec else 0,
        failover_needs=spec.per_zone * len(site.zones) if spec else 0,
        maximum=usable.maximum if usable else None,
        headroom=usable.headroom if usable else None,
        checked_at=reading.at if reading is not None else None,
    )


def readiness_key(readiness: SiteReadiness) -> tuple[bool | None, str]:
    """What a change of readiness is announced on: the verdict and its causes without their
    figures (a count going from 1/3 to 2/3 is the same trouble)."""
    return readiness.ready, _FIGURES.sub("#", "; ".join(readiness.causes))


def verified(
    zones: tuple[tuple[str, int], ...], set_at: float, reading: CapacityReading | None
) -> int | None:
    """The instances Ready that ``reading`` counts for capacity set at ``set_at`` (zone,
    count pairs), or None when it says nothing about it (taken before, or unreadable)."""
    if reading is None or reading.error is not None or reading.at < set_at:
        return None
    return ready_count(reading, dict(zones))


def capacity_timeout(spec: ResilientAppSpec) -> float:
    return float(spec.failover.readiness.capacity_timeout_seconds)
