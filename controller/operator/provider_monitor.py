"""Watches every CloudProvider: credentials, and each region's API plane.

Every ``apiPlane.probeIntervalSeconds`` it sends each region one cheap probe (EC2
DescribeAvailabilityZones; Keystone + Nova availability zones) through the region's gate,
takes the gate's verdict over all recent calls (probes and Lifeboat's own working calls),
and writes it to the CloudProvider's status with its figures and the zones the provider
reports. Credentials are verified on every change and every few minutes. Events mark
changes of verdict only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from controller import metrics
from controller.api.conditions import ConditionType, get_condition, rfc3339, set_condition
from controller.api.events import EventReason
from controller.api.models import Condition, ProviderStatus, ProviderZone, RegionStatus
from controller.api.names import CLOUD_PROVIDER
from controller.core.apiplane import ApiPlaneState
from controller.operator.kube import Kube, ObjectRef
from controller.operator.providers import ProviderInfo, ProviderRegistry
from controller.providers.backend import Cloud
from controller.providers.errors import ProviderUnavailable
from controller.providers.kubernetes.client import unreachable
from controller.providers.protocols import ProbeReport

log = logging.getLogger(__name__)

IDENTITY_RECHECK_SECONDS = 300.0
HEARTBEAT_SECONDS = 60.0
# A region's API plane entering a bad state: the reason of the Event (and of the
# ApiPlaneHealthy condition) that says so.
_API_PLANE_EVENTS = {
    ApiPlaneState.DEGRADED.value: EventReason.API_PLANE_DEGRADED,
    ApiPlaneState.IMPAIRED.value: EventReason.API_PLANE_IMPAIRED,
}
# Fields that change on every probe; alone they do not justify a status write.
_VOLATILE = ("lastProbeTime", "calls", "latencyP50Ms", "latencyP99Ms", "retryTokens")


@dataclass
class _Identity:
    generation: int
    checked: float
    ok: bool
    account: str | None
    reason: str
    message: str


@dataclass
class ProviderMonitor:
    registry: ProviderRegistry
    kube: Kube
    clock: Callable[[], float] = time.time
    writes: bool = True
    """Whether this process writes CloudProviders' status and Events (with shards, shard 0
    does; the others probe for their own apps' decisions and keep their metrics)."""
    _next: dict[str, float] = field(default_factory=dict)
    _identity: dict[str, _Identity] = field(default_factory=dict)
    _status: dict[str, ProviderStatus] = field(default_factory=dict)
    _written: dict[str, tuple[Any, float]] = field(default_factory=dict)

    async def run(self, providers: Callable[[], Iterable[ProviderInfo]]) -> None:
        """Check every provider when it is due, forever."""
        while True:
            now = time.monotonic()
            due = [p for p in providers() if self._next.get(p.name, 0.0) <= now]
            await asyncio.gather(*(self._guarded(p) for p in due))
            await asyncio.sleep(1.0)

    async def _guarded(self, info: ProviderInfo) -> None:
        try:
            await self.check(info)
            metrics.RECONCILE_ROUNDS.labels(kind=CLOUD_PROVIDER.kind).inc()
        except Exception as error:
            metrics.RECONCILE_ERRORS.labels(kind=CLOUD_PROVIDER.kind).inc()
            if (why := unreachable(error)) is not None:
                log.warning("CloudProvider %s: check failed: %s", info.name, why)
            else:
                log.exception("CloudProvider %s: check failed", info.name)
            self._next[info.name] = time.monotonic() + 30.0

    def forget(self, name: str) -> None:
        self._next.pop(name, None)
        self._identity.pop(name, None)
        self._status.pop(name, None)
        self._written.pop(name, None)
        metrics.forget_provider(name)

    async def check(self, info: ProviderInfo, *, force_identity: bool = False) -> None:
        """Probe the provider's regions and verify its credentials now; write the status."""
        ref = ObjectRef(CLOUD_PROVIDER.kind, CLOUD_PROVIDER.plural, info.name, None, info.uid)
        previous = self._status.get(info.name) or _parse(info.status)
        try:
            handle = await self.registry.handle(info.name)
        except ProviderUnavailable as error:
            self._next[info.name] = time.monotonic() + 30.0
            identity = _Identity(
                info.generation, time.monotonic(), False, None, error.reason, str(error)
            )
            await self._write(ref, info, previous, identity, previous.regions)
            return
        self._next[info.name] = time.monotonic() + handle.spec.api_plane.probe_interval_seconds
        identity = await self._verify(info, handle, force_identity)
        # Every gate a verdict can latch in is probed: the regions, and the gate of a global
        # DNS service (Route 53's "global") that every traffic change goes through.
        gates = dict.fromkeys([*handle.spec.regions, *map(handle.dns_region, handle.spec.regions)])
        reports = await asyncio.gather(*(handle.probe.probe(r) for r in gates))
        regions = tuple(self._region(handle, report, previous) for report in reports)
        await self._announce(ref, previous.regions, regions)
        await self._write(ref, info, previous, identity, regions)

    async def _verify(self, info: ProviderInfo, handle: Cloud, force: bool) -> _Identity:
        known = self._identity.get(info.name)
        fresh = (
            known is not None
            and known.ok
            and known.generation == info.generation
            and time.monotonic() - known.checked < IDENTITY_RECHECK_SECONDS
        )
        if fresh and not force and known is not None:
            return known
        try:
            account = await handle.identity.whoami()
            result = _Identity(
                info.generation,
                time.monotonic(),
                True,
                account,
                EventReason.CREDENTIALS_VERIFIED,
                f"credentials work for {account}",
            )
        except Exception as error:
            message = f"identity check failed: {handle.connector.explain(error)}"
            result = _Identity(
                info.generation,
                time.monotonic(),
                False,
                None,
                EventReason.VERIFICATION_FAILED,
                message,
            )
        self._identity[info.name] = result
        return result

    def _region(self, handle: Cloud, report: ProbeReport, previous: ProviderStatus) -> RegionStatus:
        gate = handle.connector.calls.gate(report.region)
        health = gate.judge()
        tokens = gate.budget.level(time.monotonic())
        metrics.set_api_plane(handle.name, report.region, health, tokens, gate.refused)
        numbers = health.figures
        return RegionStatus(
            name=report.region,
            api_plane=health.state.value,
            since=rfc3339(health.since) if health.since is not None else None,
            reason=handle.connector.redact(health.reason)[:1024],
            calls=numbers.calls,
            error_share=round(numbers.error_share, 4),
            throttle_share=round(numbers.throttle_share, 4),
            latency_p50_ms=_ms(numbers.p50),
            latency_p99_ms=_ms(numbers.p99),
            retry_tokens=round(tokens, 2),
            zones=tuple(ProviderZone(name=z, state=s) for z, s in report.zones[:32]),
            last_probe_time=rfc3339(self.clock()),
        )

    async def _announce(
        self, ref: ObjectRef, before: tuple[RegionStatus, ...], after: tuple[RegionStatus, ...]
    ) -> None:
        was = {r.name: r.api_plane for r in before}
        for region in after:
            old = was.get(region.name, ApiPlaneState.UNKNOWN.value)
            if region.api_plane == old or region.api_plane == ApiPlaneState.UNKNOWN.value:
                continue
            bad = region.api_plane in _API_PLANE_EVENTS
            reason = _API_PLANE_EVENTS.get(region.api_plane, EventReason.API_PLANE_RECOVERED)
            message = f"region {region.name} API plane {old} -> {region.api_plane}: {region.reason}"
            if region.api_plane == ApiPlaneState.IMPAIRED.value:
                message += "; only probes are sent there until it recovers"
            if not self.writes:
                continue
            await self.kube.event(ref, "Warning" if bad else "Normal", reason, message)

    async def _write(
        self,
        ref: ObjectRef,
        info: ProviderInfo,
        previous: ProviderStatus,
        identity: _Identity,
        regions: tuple[RegionStatus, ...],
    ) -> None:
        now = self.clock()
        conditions = set_condition(
            previous.conditions,
            ConditionType.READY,
            "True" if identity.ok else "False",
            identity.reason,
            identity.message,
            generation=info.generation,
            now=now,
        )
        conditions = _api_plane_condition(conditions, regions, info.generation, now)
        status = ProviderStatus(
            observed_generation=info.generation,
            account=identity.account or previous.account,
            last_checked_time=rfc3339(now),
            regions=regions,
            conditions=conditions,
        )
        await self._announce_identity(ref, previous, identity)
        self._status[info.name] = status
        metrics.PROVIDER_READY.labels(info.name).set(1 if identity.ok else 0)
        metrics.PROVIDER_CONFIGURATION_VALID.labels(info.name).set(
            0 if identity.reason == EventReason.INVALID_PROVIDER else 1
        )
        wire = status.to_merge_patch()
        last = self._written.get(info.name)
        if last and _material(last[0]) == _material(wire) and now - last[1] < HEARTBEAT_SECONDS:
            return
        if not self.writes:
            return
        await self.kube.patch_status(ref, wire)
        self._written[info.name] = (wire, now)

    async def _announce_identity(
        self, ref: ObjectRef, previous: ProviderStatus, identity: _Identity
    ) -> None:
        if not self.writes:
            return
        before = get_condition(previous.conditions, ConditionType.READY)
        now_status = "True" if identity.ok else "False"
        if before is None or (before.status, before.reason, before.message) != (
            now_status,
            identity.reason,
            identity.message,
        ):
            await self.kube.event(
                ref, "Normal" if identity.ok else "Warning", identity.reason, identity.message
            )


def _api_plane_condition(
    conditions: tuple[Condition, ...],
    regions: tuple[RegionStatus, ...],
    generation: int,
    now: float,
) -> tuple[Condition, ...]:
    troubled = [r for r in regions if r.api_plane in ("Degraded", "Impaired")]
    if troubled:
        worst = "Impaired" if any(r.api_plane == "Impaired" for r in troubled) else "Degraded"
        message = "; ".join(f"{r.name} {r.api_plane}: {r.reason}" for r in troubled)
        return set_condition(
            conditions,
            ConditionType.API_PLANE_HEALTHY,
            "False",
            _API_PLANE_EVENTS[worst],
            message[:2048],
            generation=generation,
            now=now,
        )
    if regions and all(r.api_plane == "Unknown" for r in regions):
        return set_condition(
            conditions,
            ConditionType.API_PLANE_HEALTHY,
            "Unknown",
            "NotEnoughCalls",
            "too few calls for a verdict yet",
            generation=generation,
            now=now,
        )
    return set_condition(
        conditions,
        ConditionType.API_PLANE_HEALTHY,
        "True",
        "AllRegionsHealthy",
        ", ".join(f"{r.name} {r.api_plane}" for r in regions) or "no regions",
        generation=generation,
        now=now,
    )


def _parse(raw: Any) -> ProviderStatus:
    try:
        return ProviderStatus.model_validate(raw or {})
    except ValidationError:
        return ProviderStatus()


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def _material(wire: Any) -> Any:
    regions = [
        {k: v for k, v in region.items() if k not in _VOLATILE}
        for region in (wire.get("regions") or ())
    ]
    return {**wire, "regions": regions, "lastCheckedTime": None}
