"""Carrying out the decision core's actions for one app, one at a time, in the background.

A slow cloud call (a Route 53 change waiting to be in sync, retries against a throttled
API) never stops the app's probing: the action runs as a task beside the loop, and its
result is handed back to the worker as soon as it ends. A newer decision can pre-empt the
running action (see :meth:`ActionRunner.preempt`); actions are idempotent, so one that was
stopped is simply carried out again if it is still wanted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from controller import metrics
from controller.api.events import EventReason, action_failed
from controller.api.models import ResilientAppSpec
from controller.core import model as m
from controller.operator.context import AppContext, AppLog
from controller.operator.kube import ObjectRef
from controller.operator.volumes import CopyPending, restore_message
from controller.operator.write_fence import FenceRefused, call_fence
from controller.providers.calls import RegionImpaired
from controller.providers.errors import (
    DnsFenced,
    DnsOwnedByOther,
    DnsZoneNotFound,
    ProviderUnavailable,
)
from controller.providers.protocols import DnsOwner, DnsRecord, SiteRecord, TrafficPlan


@dataclass(frozen=True)
class ActionResult:
    """How an action ended: carried out (at, change ID), or why not."""

    at: float | None
    change_id: str = ""
    reason: str = ""
    detail: str = ""
    message: str = ""
    restored: tuple[m.RestoredVolume, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return self.at is not None


class ActionRunner:
    """Runs one action at a time for one app and says how each ended."""

    def __init__(self, ref: ObjectRef, context: AppContext, log: AppLog) -> None:
        self.ref = ref
        self.ctx = context
        self.log = log
        self.running: m.Action | None = None
        self.task: asyncio.Task[ActionResult] | None = None

    @property
    def labels(self) -> tuple[str, str]:
        return (self.ref.namespace or "", self.ref.name)

    @property
    def idle(self) -> bool:
        return self.task is None

    @property
    def finished(self) -> bool:
        """An action ended and its result waits to be taken."""
        return self.task is not None and self.task.done()

    def start(
        self, action: m.Action, spec: ResilientAppSpec, restores: Mapping[str, m.AppliedRestore]
    ) -> None:
        self.running = action
        self.task = asyncio.create_task(self._carry_out(action, spec, restores), name=action.id)

    async def preempt(self, wanted: tuple[m.Action, ...]) -> None:
        """Stop a running action that a newer decision overtook: one no longer wanted, or a
        capacity or volume step of an older epoch while a traffic shift waits (a slow boot
        in an evacuated region must not hold a failover's DNS change back)."""
        running = self.running
        if self.task is None or self.task.done() or running is None or not wanted:
            return
        first = wanted[0]
        overtaken = all(a.id != running.id for a in wanted) or (
            isinstance(first, m.ShiftTraffic)
            and not isinstance(running, m.ShiftTraffic)
            and first.epoch > running.epoch
        )
        if overtaken:
            self.log.info("stopping %s: overtaken by %s", running.id, first.id)
            await self.stop()

    async def stop(self) -> None:
        """Cancel the running action (re-applied by whoever runs next: it is idempotent)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.task, self.running = None, None

    async def take(self) -> tuple[m.Action, ActionResult] | None:
        """The finished action and its result (None if it was cancelled); frees the runner."""
        task, action = self.task, self.running
        self.task, self.running = None, None
        assert task is not None and action is not None
        try:
            return action, task.result()
        except asyncio.CancelledError:
            return None
        except Exception as error:  # a bug, not a cloud failure: report and retry
            self.log.exception("action %s crashed", action.id)
            return action, ActionResult(
                None, reason=action_failed(action.kind), detail=type(error).__name__
            )

    # ------------------------------------------------------------------ carrying out

    async def _carry_out(
        self, action: m.Action, spec: ResilientAppSpec, restores: Mapping[str, m.AppliedRestore]
    ) -> ActionResult:
        if isinstance(action, m.FenceWrites):
            return await self._fence(action, spec)
        provider = spec.traffic.provider if isinstance(action, m.ShiftTraffic) else action.region[0]
        try:
            if isinstance(action, m.ShiftTraffic):
                return await self._shift(action, spec)
            if isinstance(action, m.RestoreVolumes):
                return await self._restore(action, spec, restores)
            return await self._set_capacity(action, spec)
        except CopyPending as error:
            return ActionResult(None, reason=EventReason.VOLUME_COPY_PENDING, detail=str(error))
        except ProviderUnavailable as error:
            return ActionResult(None, reason=error.reason, detail=str(error))
        except DnsFenced as error:
            return ActionResult(None, reason=EventReason.DNS_FENCED, detail=str(error))
        except DnsOwnedByOther as error:
            return ActionResult(None, reason=EventReason.DNS_OWNERSHIP_CONFLICT, detail=str(error))
        except DnsZoneNotFound as error:
            return ActionResult(None, reason=EventReason.HOSTED_ZONE_NOT_FOUND, detail=str(error))
        except RegionImpaired as error:
            return ActionResult(None, reason=EventReason.REGION_IMPAIRED, detail=str(error))
        except Exception as error:
            detail = self.ctx.providers.explain(provider, error)
            return ActionResult(None, reason=action_failed(action.kind), detail=detail)

    async def _shift(self, action: m.ShiftTraffic, spec: ResilientAppSpec) -> ActionResult:
        traffic = await self.ctx.providers.traffic(spec.traffic.provider, spec.traffic.region)
        change = await traffic.apply(traffic_plan(action, self.ref))
        if change.synced_at is None:
            return ActionResult(
                None,
                reason=EventReason.TRAFFIC_SHIFT_NOT_IN_SYNC,
                detail=f"change {change.change_id} not in sync",
            )
        weights = ", ".join(f"{site}={weight}" for site, weight in action.weights)
        message = (
            f"DNS {action.dns.name} now routes to {action.active_site} "
            f"(weights {weights}), epoch {action.epoch}, change {change.change_id} in sync "
            f"after {change.synced_at - change.submitted_at:.1f}s"
        )
        return ActionResult(change.synced_at, change.change_id, message=message)

    async def _set_capacity(self, action: m.SetCapacity, spec: ResilientAppSpec) -> ActionResult:
        site = spec.site(action.site)
        if site is None:
            return ActionResult(
                None,
                reason=EventReason.CAPACITY_UNAVAILABLE,
                detail=f"no site {action.site}",
            )
        driver = await self.ctx.capacity.for_site(f"{self.ref.namespace}/{self.ref.name}", site)
        await driver.set_zones(dict(action.zones))
        counts = ", ".join(f"{z}={n}" for z, n in action.zones)
        return ActionResult(self.ctx.clock(), message=f"capacity of {site.name} set: {counts}")

    async def _fence(self, action: m.FenceWrites, spec: ResilientAppSpec) -> ActionResult:
        """Call the app's write fence (a webhook) to stop or resume writes at a site."""
        webhook = spec.failover.planned.write_fence.webhook
        reason = action_failed(action.kind)
        if webhook is None:
            return ActionResult(None, reason=reason, detail="no write-fence webhook declared")
        app = f"{self.ref.namespace or ''}/{self.ref.name}"
        try:
            answer = await call_fence(webhook, app, action)
        except FenceRefused as error:
            return ActionResult(None, reason=reason, detail=f"{webhook.url}: {error}")
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            detail = str(error) or type(error).__name__
            return ActionResult(None, reason=reason, detail=f"{webhook.url}: {detail}")
        verb = "stopped" if action.stop else "resumed"
        message = (
            f"writes {verb} at {action.site} (planned switchover {action.request_id}, epoch "
            f"{action.epoch}): the write fence answered {answer!r}"
        )
        return ActionResult(self.ctx.clock(), answer, message=message)

    async def _restore(
        self,
        action: m.RestoreVolumes,
        spec: ResilientAppSpec,
        restores: Mapping[str, m.AppliedRestore],
    ) -> ActionResult:
        app = f"{self.ref.namespace or ''}/{self.ref.name}"
        outcome = await self.ctx.restorer.restore(app, action, spec, restores)
        now = self.ctx.clock()
        return ActionResult(
            now,
            message=restore_message(action, outcome, now),
            restored=outcome.volumes,
            missing=outcome.missing,
        )

    # ------------------------------------------------------------------ reporting

    async def report_done(
        self, action: m.Action, result: ActionResult, record: m.FailoverRecord | None
    ) -> None:
        """Say that ``action`` was carried out (``record``: the failover it completed)."""
        message = result.message
        if isinstance(action, m.ShiftTraffic):
            metrics.set_dns_weights(*self.labels, action.weights)
        if (
            isinstance(action, m.ShiftTraffic)
            and record
            and record.epoch == action.epoch
            and record.rto_seconds is not None
        ):
            detection = record.detection_seconds or 0.0
            message += f"; RTO {record.rto_seconds:.1f}s (detection {detection:.1f}s)"
            metrics.LAST_FAILOVER_RTO.labels(*self.labels).set(record.rto_seconds)
            metrics.LAST_FAILOVER_DETECTION.labels(*self.labels).set(detection)
        reason = {
            m.ShiftTraffic.kind: EventReason.TRAFFIC_SHIFTED,
            m.RestoreVolumes.kind: EventReason.VOLUMES_RESTORED,
        }.get(action.kind, EventReason.CAPACITY_SET)
        if isinstance(action, m.FenceWrites):
            reason = EventReason.WRITES_STOPPED if action.stop else EventReason.WRITES_RESUMED
        self.log.info("%s", message)
        await self.ctx.kube.event(
            self.ref, "Warning" if result.missing else "Normal", reason, message
        )

    async def report_failed(self, action: m.Action, result: ActionResult) -> None:
        if isinstance(action, m.ShiftTraffic):
            metrics.TRAFFIC_SHIFT_ERRORS.labels(*self.labels).inc()
        metrics.ACTION_FAILURES.labels(*self.labels, action.kind).inc()
        message = f"{action.target} (epoch {action.epoch}) failed: {result.detail}; retrying"
        self.log.warning("%s", message)
        await self.ctx.kube.event(self.ref, "Warning", result.reason, message)


def traffic_plan(action: m.ShiftTraffic, ref: ObjectRef) -> TrafficPlan:
    """The DNS change that carries out ``action``."""

    def record(dns: m.DnsName) -> DnsRecord:
        return DnsRecord(dns.hosted_zone_id, dns.hosted_zone_name, dns.name, dns.type, dns.ttl)

    return TrafficPlan(
        record=record(action.dns),
        records=tuple(
            SiteRecord(t.site, t.values, t.weight, t.health_check_url) for t in action.targets
        ),
        retire=record(action.retire) if action.retire else None,
        comment=f"lifeboat {ref.namespace}/{ref.name}: epoch {action.epoch}, "
        f"active site {action.active_site}",
        routing="Failover" if action.routing == "Failover" else "Weighted",
        owner=DnsOwner(
            f"{ref.namespace or ''}/{ref.name}",
            action.epoch,
            action.active_site,
            action.fingerprint,
        ),
    )
