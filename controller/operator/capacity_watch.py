"""Reading every site's capacity from its driver, slowly and in the background.

One :class:`CapacityWatch` per app worker (the leader's: a follower reads nothing). A site
with a capacity driver is read (``CapacityDriver.observe``: one or two read calls) every
``failover.readiness.intervalSeconds``; a site whose capacity was set and is not Ready yet
is read every ``health.intervalSeconds``, at least :data:`FAST_SECONDS` apart, until it is
Ready or ``capacityTimeoutSeconds`` have passed since it was set. The reads run as one
background task beside the worker's loop (each bounded by :data:`READ_TIMEOUT`), so a slow
cloud never delays probing; what they found is handed to the decision core as readings
stamped with the time each read began.

A read goes through the provider's calls like any other, so its outcome is evidence about
the region's API plane as any call's is (a timeout counts, a missing group does not);
what the driver reports of failed scale-ups is counted by the driver itself. A site whose
region's API plane is Impaired is not read (the region's gate refuses the call): its
reading says so. Every word a reading carries from the cloud goes through the provider's
redactor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from controller.api.models import ResilientAppSpec, Site
from controller.core import model as m
from controller.core.capacity import CapacityReading, ZoneReading
from controller.operator.context import AppContext, AppLog
from controller.operator.kube import ObjectRef
from controller.providers.calls import RegionImpaired
from controller.providers.errors import ProviderUnavailable
from controller.providers.protocols import CapacityState

FAST_SECONDS = 5.0
"""The shortest time between two reads of one site (while its capacity comes up)."""
READ_TIMEOUT = 30.0
"""A site's read that takes longer is given up (and said so in its reading)."""

log = logging.getLogger(__name__)


class CapacityWatch:
    """Reads one app's sites' capacity; keeps the latest reading of each."""

    def __init__(self, ref: ObjectRef, context: AppContext, log: AppLog) -> None:
        self.ref = ref
        self.ctx = context
        self.log = log
        self._readings: dict[str, CapacityReading] = {}
        self._read_at: dict[str, float] = {}
        """When each site's last read was started (the context's clock)."""
        self._task: asyncio.Task[dict[str, CapacityReading]] | None = None

    @property
    def app(self) -> str:
        return f"{self.ref.namespace or ''}/{self.ref.name}"

    def readings(self) -> Mapping[str, CapacityReading]:
        """The latest reading of each site (of the sites read at least once)."""
        self._collect()
        return dict(self._readings)

    def poll(self, spec: ResilientAppSpec, state: m.AppState) -> None:
        """Start reading the sites that are due (unless a read is under way)."""
        self._collect()
        if self._task is not None:
            return
        names = {s.name for s in spec.sites}
        for gone in [name for name in self._readings if name not in names]:
            del self._readings[gone]
            self._read_at.pop(gone, None)
        now = self.ctx.clock()
        due = [s for s in spec.sites if s.capacity is not None and self._due(s, spec, state, now)]
        if not due:
            return
        for site in due:
            self._read_at[site.name] = now
        self._task = asyncio.create_task(self._read(due), name=f"capacity-watch/{self.app}")

    def _due(self, site: Site, spec: ResilientAppSpec, state: m.AppState, now: float) -> bool:
        last = self._read_at.get(site.name)
        if last is None:
            return True
        readiness = spec.failover.readiness
        interval = float(readiness.interval_seconds)
        applied = state.capacity.get(site.name)
        if (
            applied is not None
            and applied.ready_at is None
            and now - applied.applied_at <= readiness.capacity_timeout_seconds
        ):
            interval = max(float(spec.health.interval_seconds), FAST_SECONDS)
        return now - last >= interval

    def _collect(self) -> None:
        task = self._task
        if task is None or not task.done():
            return
        self._task = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # a bug, not a cloud failure: the next poll reads again
            self.log.error("capacity read crashed: %s", type(error).__name__)
            return
        self._readings.update(task.result())

    async def _read(self, sites: list[Site]) -> dict[str, CapacityReading]:
        found = await asyncio.gather(*(self._read_site(site) for site in sites))
        return {site.name: reading for site, reading in zip(sites, found, strict=True)}

    async def _read_site(self, site: Site) -> CapacityReading:
        redact = self.ctx.providers.cached_redactor(site.provider)
        # Stamped with when the read began: a read under way while capacity is being set
        # may show the site as it was, so it must not count as a reading taken after it.
        started = self.ctx.clock()
        try:
            driver = await self.ctx.capacity.for_site(self.app, site)
            observed = await asyncio.wait_for(driver.observe(), READ_TIMEOUT)
        except ProviderUnavailable as error:
            return self._failed(site, redact(str(error)))
        except RegionImpaired:
            return self._failed(site, f"not read: the API plane of {site.region} is Impaired")
        except TimeoutError:
            return self._failed(site, f"no answer within {READ_TIMEOUT:g} s")
        except Exception as error:
            return self._failed(site, self.ctx.providers.explain(site.provider, error))
        return _reading(observed, started, redact)

    def _failed(self, site: Site, why: str) -> CapacityReading:
        self.log.info("capacity of %s not read: %s", site.name, why)
        return CapacityReading(at=self.ctx.clock(), error=why[:400])

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def _reading(observed: CapacityState, at: float, redact: Callable[[str], str]) -> CapacityReading:
    return CapacityReading(
        at=at,
        zones=tuple(ZoneReading(z.zone, z.running, z.desired) for z in observed.zones),
        maximum=observed.max_size,
        headroom=observed.headroom,
        failures=tuple(redact(failure) for failure in observed.failures),
        unit=observed.unit,
    )
