"""The per-app loop: probe, decide, act, report.

One :class:`AppWorker` runs per ResilientApp (as a kopf daemon). Each round it probes every
zonal endpoint, hands the results to the pure decision core, carries out the actions the
core returns through the provider layer, and writes status and Events.

The status is the worker's memory: a restarted operator reads it back and resumes, e.g. a
traffic shift decided but not yet applied is applied on the first round. Status is written
before an action runs (so the decision survives a crash) and after (so its completion
does); between decisions it is written only when something material changed, plus a
heartbeat, to keep load off the API server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from controller import metrics
from controller.api.conditions import set_condition
from controller.api.models import ResilientAppSpec, ResilientAppStatus
from controller.core import decide as core
from controller.core.health import ProbeResult, ZoneKey
from controller.core.status import READY, state_from_status, status_from_state
from controller.operator.kube import Kube, NotFound, ObjectRef
from controller.operator.probes import HttpProber
from controller.operator.providers import ProviderRegistry, ProviderUnavailable, spec_error
from controller.providers.aws.route53 import HostedZoneNotFound
from controller.providers.outcomes import classify
from controller.providers.protocols import SiteRecord, TrafficPlan

log = logging.getLogger(__name__)

INVALID_RETRY_SECONDS = 30.0
HEARTBEAT_SECONDS = 60.0
# Fields that change every round without meaning anything new; they alone do not
# justify a status write (the heartbeat refreshes them).
_VOLATILE_ZONE_FIELDS = ("lastProbeTime", "latencyMs", "message")


class Stopped(Protocol):
    """kopf's daemon stop flag, as far as the worker uses it."""

    def __bool__(self) -> bool: ...


@dataclass
class AppContext:
    """What every app worker shares."""

    kube: Kube
    providers: ProviderRegistry
    prober: HttpProber
    clock: Callable[[], float] = time.time


class AppWorker:
    def __init__(self, ref: ObjectRef, context: AppContext) -> None:
        self.ref = ref
        self.ctx = context
        self.state: core.AppState | None = None
        self._status = ResilientAppStatus()
        self._written: dict[str, Any] | None = None
        self._written_at = 0.0
        self._invalid_generation: int | None = None

    @property
    def _labels(self) -> tuple[str, str]:
        return (self.ref.namespace or "", self.ref.name)

    async def round(self, body: Mapping[str, Any]) -> float:
        """One probe-decide-act round; the seconds to wait before the next one."""
        generation = body.get("metadata", {}).get("generation")
        try:
            spec = ResilientAppSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            await self._report_invalid(spec_error(error), generation)
            return INVALID_RETRY_SECONDS
        self._invalid_generation = None
        if self.state is None:
            self.state = self._restore(body, spec)

        probes = await self.ctx.prober.probe_app(spec)
        decision = core.decide(self.state, core.Observations(probes), spec, self.ctx.clock())
        self.state = decision.state
        self._export_probes(probes)
        for note in decision.notes:
            await self._announce(note)
        if decision.actions:
            await self._write(decision.trace, spec, generation, force=True)
            for action in decision.actions:
                await self._execute(action, spec)
        await self._write(decision.trace, spec, generation)
        return float(spec.health.interval_seconds)

    def _restore(self, body: Mapping[str, Any], spec: ResilientAppSpec) -> core.AppState:
        raw = body.get("status") or {}
        try:
            self._status = ResilientAppStatus.model_validate(raw)
        except ValidationError as error:
            log.warning("%s: ignoring unreadable status (%s)", self.ref.name, spec_error(error))
            return core.AppState.initial(spec)
        return state_from_status(self._status, spec)

    async def _announce(self, note: core.Note) -> None:
        if note.kind is core.NoteKind.FAILOVER and self.state and self.state.last_failover:
            record = self.state.last_failover
            metrics.FAILOVERS.labels(*self._labels, record.from_site, record.to_site).inc()
        level = logging.WARNING if note.warning else logging.INFO
        log.log(level, "%s/%s: %s", self.ref.namespace, self.ref.name, note.message)
        await self.ctx.kube.event(
            self.ref, "Warning" if note.warning else "Normal", note.kind.value, note.message
        )

    async def _execute(self, action: core.Action, spec: ResilientAppSpec) -> None:
        assert self.state is not None
        plan = traffic_plan(action, spec, self.ref)
        try:
            traffic = await self.ctx.providers.traffic(spec.traffic.provider)
            change = await traffic.apply(plan)
        except ProviderUnavailable as error:
            await self._shift_failed(action, error.reason, str(error))
            return
        except HostedZoneNotFound as error:
            await self._shift_failed(action, "HostedZoneNotFound", str(error))
            return
        except Exception as error:
            verdict = classify(error)
            detail = f"{verdict.outcome.value} ({verdict.code})"
            await self._shift_failed(action, "TrafficShiftFailed", detail)
            return
        if change.synced_at is None:
            await self._shift_failed(
                action, "TrafficShiftNotInSync", f"change {change.change_id} not yet in sync"
            )
            return
        self.state = core.complete(self.state, action, change.synced_at, change.change_id)
        weights = ", ".join(f"{site}={weight}" for site, weight in action.weights)
        message = (
            f"DNS {spec.traffic.record_name} now routes to {action.active_site} "
            f"(weights {weights}), epoch {action.epoch}, change {change.change_id} in sync "
            f"after {change.synced_at - change.submitted_at:.1f}s"
        )
        record = self.state.last_failover
        if record and record.epoch == action.epoch and record.rto_seconds is not None:
            detection = record.detection_seconds or 0.0
            message += f"; RTO {record.rto_seconds:.1f}s (detection {detection:.1f}s)"
            metrics.LAST_FAILOVER_RTO.labels(*self._labels).set(record.rto_seconds)
            metrics.LAST_FAILOVER_DETECTION.labels(*self._labels).set(detection)
        log.info("%s/%s: %s", self.ref.namespace, self.ref.name, message)
        await self.ctx.kube.event(self.ref, "Normal", "TrafficShifted", message)

    async def _shift_failed(self, action: core.Action, reason: str, detail: str) -> None:
        metrics.TRAFFIC_SHIFT_ERRORS.labels(*self._labels).inc()
        message = f"could not route traffic to {action.active_site} (epoch {action.epoch}): "
        message += f"{detail}; retrying next round"
        log.warning("%s/%s: %s", self.ref.namespace, self.ref.name, message)
        await self.ctx.kube.event(self.ref, "Warning", reason, message)

    async def _write(
        self, trace: core.Trace, spec: ResilientAppSpec, generation: int | None, force: bool = False
    ) -> None:
        assert self.state is not None
        now = self.ctx.clock()
        phase = core.phase_of(self.state, spec)
        self._status = status_from_state(
            self.state, phase, trace, spec, self._status, generation=generation, now=now
        )
        self._export_state(spec)
        wire = self._status.to_merge_patch()
        due = now - self._written_at >= HEARTBEAT_SECONDS
        if not force and not due and _material(wire) == _material(self._written):
            return
        try:
            await self.ctx.kube.patch_status(self.ref, wire)
        except NotFound:
            return  # deleted under us; the daemon is being stopped
        self._written, self._written_at = wire, now

    async def _report_invalid(self, message: str, generation: int | None) -> None:
        if self._invalid_generation == generation:
            return
        self._invalid_generation = generation
        now = self.ctx.clock()
        conditions = set_condition(
            self._status.conditions,
            READY,
            "False",
            "InvalidSpec",
            message,
            generation=generation,
            now=now,
        )
        self._status = self._status.model_copy(
            update={"phase": "Invalid", "observed_generation": generation, "conditions": conditions}
        )
        await self.ctx.kube.patch_status(self.ref, self._status.to_merge_patch())
        await self.ctx.kube.event(self.ref, "Warning", "InvalidSpec", message)

    def _export_probes(self, probes: tuple[ProbeResult, ...]) -> None:
        for probe in probes:
            metrics.PROBE_DURATION.labels(
                *self._labels, probe.key.site, probe.key.zone, probe.outcome.value
            ).observe(probe.latency)

    def _export_state(self, spec: ResilientAppSpec) -> None:
        assert self.state is not None
        for site in spec.sites:
            metrics.ACTIVE_SITE.labels(*self._labels, site.name).set(
                1 if site.name == self.state.active_site else 0
            )
            for zone in site.zones:
                health = self.state.zone(ZoneKey(site.name, zone))
                metrics.set_zone_state(*self._labels, site.name, zone, health.state)
        metrics.APP_EPOCH.labels(*self._labels).set(self.state.epoch)


def traffic_plan(action: core.Action, spec: ResilientAppSpec, ref: ObjectRef) -> TrafficPlan:
    """The DNS change that carries out ``action``."""
    weights = dict(action.weights)
    return TrafficPlan(
        hosted_zone_id=spec.traffic.hosted_zone_id,
        hosted_zone_name=spec.traffic.hosted_zone_name,
        record_name=spec.traffic.record_name,
        record_type=spec.traffic.record_type,
        ttl=spec.traffic.ttl,
        records=tuple(
            SiteRecord(site.name, site.traffic_targets, weights.get(site.name, 0))
            for site in spec.sites
        ),
        comment=f"lifeboat {ref.namespace}/{ref.name}: epoch {action.epoch}, "
        f"active site {action.active_site}",
    )


def _material(wire: Mapping[str, Any] | None) -> Any:
    """The status without the fields that change every round."""
    if wire is None:
        return None
    zones = [
        {k: v for k, v in zone.items() if k not in _VOLATILE_ZONE_FIELDS}
        for zone in wire.get("zones", ())
    ]
    return {**wire, "zones": zones}
