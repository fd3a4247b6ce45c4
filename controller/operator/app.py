"""The per-app loop: probe, decide, act, report.

One :class:`AppWorker` runs per ResilientApp (as a kopf daemon). Each round it probes every
zonal endpoint, collects the API-plane verdicts of the app's regions and any user request
(annotations), hands it all to the pure decision core, starts the actions the core returns
through the provider layer, and writes status and Events.

Actions run as background tasks, one at a time, so a slow cloud call (a Route 53 change
waiting to be in sync, retries against a throttled API) never stops the probing; its
completion is fed back to the core as soon as it ends.

The status is the worker's memory: a restarted operator reads it back and resumes, e.g. a
traffic shift decided but not yet applied is applied on the first round. Status is written
before an action starts (so the decision survives a crash) and after it ends (so its
completion does); between decisions it is written only when something material changed,
plus a heartbeat, to keep load off the API server.

User requests arrive as annotations (set by ``lifeboat failover|failback|approve|pin``):

* ``lifeboat.dev/request``: ``{"id": ..., "op": "failover"|"failback", "site": ...,
  "force": false}``, answered once (``status.lastRequest``);
* ``lifeboat.dev/approve``: the ID of the recommendation to carry out (Manual mode);
* ``lifeboat.dev/pin``: a site name; while set, nothing moves the app automatically.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError

from controller import metrics
from controller.api.conditions import REPLICATING, RPO_BREACHED, get_condition, set_condition
from controller.api.models import ReplicationStatus, ResilientAppSpec, ResilientAppStatus, Site
from controller.core import decide as core
from controller.core import model as m
from controller.core.apiplane import ApiPlaneState
from controller.core.health import ProbeResult, ZoneKey
from controller.core.status import READY, state_from_status, status_from_state
from controller.operator.kube import Kube, NotFound, ObjectRef, StaleEpoch
from controller.operator.providers import ProviderUnavailable, spec_error
from controller.operator.volumes import CopyPending, VolumeRestorer, restore_message
from controller.providers.aws.route53 import HostedZoneError
from controller.providers.calls import RegionImpaired
from controller.providers.openstack.dns import ZoneNotFound
from controller.providers.protocols import (
    CapacityDriver,
    DnsRecord,
    SiteRecord,
    TrafficManager,
    TrafficPlan,
)
from controller.replication import volumes as rv
from controller.replication.figures import (
    describe_rpo,
    replication_conditions,
    replication_lag,
)

log = logging.getLogger(__name__)

INVALID_RETRY_SECONDS = 30.0
ERROR_RETRY_SECONDS = 10.0
HEARTBEAT_SECONDS = 60.0
CONFIGURATION = "ConfigurationValid"
REQUEST_ANNOTATION = "lifeboat.dev/request"
APPROVE_ANNOTATION = "lifeboat.dev/approve"
PIN_ANNOTATION = "lifeboat.dev/pin"
# Fields that change every round without meaning anything new; they alone do not
# justify a status write (the heartbeat refreshes them).
_VOLATILE_ZONE_FIELDS = ("lastProbeTime", "lastOkTime", "latencyMs", "message")
_VOLATILE_REPLICATION_FIELDS = ("rpoSeconds", "throughputBytesPerSecond", "lastSyncTime")


class Prober(Protocol):
    async def probe_app(self, spec: ResilientAppSpec) -> tuple[ProbeResult, ...]: ...


class Providers(Protocol):
    """What a worker needs from the provider registry."""

    async def traffic(self, name: str, region: str | None = None) -> TrafficManager: ...

    def check_references(self, spec: ResilientAppSpec) -> list[tuple[str, str]]: ...

    def cached_redactor(self, name: str) -> Callable[[str], str]: ...

    def explain(self, name: str, error: BaseException) -> str: ...

    async def api_plane(self, provider: str, region: str) -> ApiPlaneState: ...

    async def traffic_plane(self, provider: str, region: str | None) -> ApiPlaneState: ...


class Capacities(Protocol):
    async def for_site(self, app: str, site: Site) -> CapacityDriver: ...


class ReplicationSource(Protocol):
    """One replication engine of an app (objects, volumes, ...), run beside its worker.

    Every round the worker calls :meth:`sync` with the spec, the active site and the epoch
    (before deciding, and again right after a decision that changed them, so that a
    failover reverses replication before traffic moves), and reads :meth:`figures`: one
    ``status.replication`` entry per dataset and destination. The worker merges the entries
    of every source into the status (a list the API server replaces whole, so they are
    written by the worker alone), derives the ``Replicating`` and ``RPOBreached``
    conditions from them, and feeds each destination's worst RPO to the decision core,
    whose automatic failback waits for replication to the declared primary to catch up.
    A source reports every destination it is responsible for from its first ``sync`` on
    (RPO unknown until measured), so that an unmeasured destination holds failback back.
    """

    async def sync(
        self, spec: ResilientAppSpec, active_site: str, epoch: int, epoch_since: float | None
    ) -> None:
        """Replicate what ``spec`` declares from ``active_site`` under ``epoch``
        (``epoch_since``: when that epoch began, if known)."""
        ...

    def figures(self) -> Sequence[ReplicationStatus]: ...

    async def close(self) -> None:
        """Stop (the app's worker is stopping)."""
        ...


@runtime_checkable
class FollowsAppState(Protocol):
    """A replication source that also reads the decision core's state (volume replication:
    the volumes a failover restored are its source; it waits while a restore is due). The
    worker hands it the state right before every :meth:`ReplicationSource.sync`."""

    def follow(self, state: m.AppState) -> None: ...


@runtime_checkable
class ObservesRestoredVolumes(Protocol):
    """A replication source that looks at the volumes a failover restored; the worker puts
    their states into ``status.volumeRestores``."""

    def volume_states(self) -> Mapping[str, str]:
        """Restored volume ID -> its state when last looked."""
        ...


ReplicationFactory = Callable[[ObjectRef], ReplicationSource]


@dataclass
class AppContext:
    """What every app worker shares."""

    kube: Kube
    providers: Providers
    prober: Prober
    capacity: Capacities | None = None
    clock: Callable[[], float] = time.time
    replication: tuple[ReplicationFactory, ...] = ()
    """Replication engines to run beside each app (object replication, volumes, ...)."""
    restorer: VolumeRestorer | None = None
    """Carries out the volume restores failovers call for."""


@dataclass(frozen=True)
class _Done:
    """How an action ended: carried out (at, change ID), or why not."""

    at: float | None
    change_id: str = ""
    reason: str = ""
    detail: str = ""
    message: str = ""
    restored: tuple[m.RestoredVolume, ...] = ()
    missing: tuple[str, ...] = ()


class AppWorker:
    def __init__(self, ref: ObjectRef, context: AppContext) -> None:
        self.ref = ref
        self.ctx = context
        self.state: m.AppState | None = None
        self._spec: ResilientAppSpec | None = None
        self._generation: int | None = None
        self._decision: m.Decision | None = None
        self._observations = m.Observations()
        self._status = ResilientAppStatus()
        self._written: dict[str, Any] | None = None
        self._written_at = 0.0
        self._invalid_generation: int | None = None
        self._exported: set[tuple[str, str]] = set()
        self._action: m.Action | None = None
        self._task: asyncio.Task[_Done] | None = None
        self._sources: list[ReplicationSource] | None = None

    @property
    def _labels(self) -> tuple[str, str]:
        return (self.ref.namespace or "", self.ref.name)

    # ------------------------------------------------------------------ the loop

    async def run(self, body: Mapping[str, Any], stopped: Callable[[], bool]) -> None:
        """Rounds every ``intervalSeconds`` (measured start to start) until stopped."""
        try:
            while not stopped():
                started = time.monotonic()
                try:
                    interval = await self.round(body)
                    metrics.LAST_RECONCILE.labels(*self._labels).set(self.ctx.clock())
                    metrics.RECONCILE_ROUNDS.labels(kind="ResilientApp").inc()
                except Exception:
                    # A round must never end the loop: log, count, and try again.
                    metrics.RECONCILE_ERRORS.labels(kind="ResilientApp").inc()
                    log.exception("%s/%s: round failed", self.ref.namespace, self.ref.name)
                    interval = ERROR_RETRY_SECONDS
                await self.pause(started + interval, stopped)
        finally:
            if self._task is not None:
                self._task.cancel()  # re-applied by whoever runs next: actions are idempotent
                await asyncio.gather(self._task, return_exceptions=True)
            for source in self._sources or ():
                try:
                    await source.close()
                except Exception:
                    log.exception(
                        "%s/%s: replication did not stop", self.ref.namespace, self.ref.name
                    )

    async def pause(self, until: float, stopped: Callable[[], bool]) -> None:
        """Sleep until the monotonic time ``until``; finish an action as soon as it ends."""
        while not stopped() and (left := until - time.monotonic()) > 0:
            nap = asyncio.ensure_future(asyncio.sleep(min(left, 0.5)))
            waiting: set[asyncio.Future[Any]] = {nap}
            if self._task is not None:
                waiting.add(self._task)
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                nap.cancel()
            if self._task is not None and self._task.done():
                await self._finish_action()

    async def round(self, body: Mapping[str, Any]) -> float:
        """One probe-decide-act round; the seconds until the next one."""
        self._generation = body.get("metadata", {}).get("generation")
        if self.state is None:
            self._load_status(body)
        try:
            spec = ResilientAppSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            await self._report_invalid(spec_error(error))
            return INVALID_RETRY_SECONDS
        self._invalid_generation = None
        self._spec = spec
        if self.state is None:
            self.state = state_from_status(self._status, spec)
        if self._task is not None and self._task.done():
            await self._finish_action()

        await self._sync_replication(spec)
        probes = await self.ctx.prober.probe_app(spec)
        observations = await self._observe(spec, probes, body)
        decision = core.decide(self.state, observations, spec, self.ctx.clock())
        self.state, self._decision, self._observations = decision.state, decision, observations
        metrics.record_decision(*self._labels, decision)
        await self._sync_replication(spec)  # a failover reverses replication at once
        self._export_probes(probes)
        for note in decision.notes:
            await self._announce(note)
        await self._check_configuration(spec)
        await self._preempt(decision.actions)
        if decision.actions and self._task is None:
            await self._write(force=True)  # the decision is on record before anything moves
            self._start(decision.actions[0], spec)
        await self._write()
        return float(spec.health.interval_seconds)

    # ------------------------------------------------------------------ observations

    async def _observe(
        self, spec: ResilientAppSpec, probes: tuple[ProbeResult, ...], body: Mapping[str, Any]
    ) -> m.Observations:
        planes: dict[m.RegionKey, ApiPlaneState] = {}
        for site in spec.sites:
            key = (site.provider, site.region)
            if key not in planes:
                planes[key] = await self.ctx.providers.api_plane(*key)
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        replication = spec.replication
        return m.Observations(
            replication_lag=replication_lag(self._replication_figures()) if replication else {},
            replication_target=float(replication.rpo_target_seconds) if replication else None,
            probes=probes,
            api_planes=planes,
            traffic_plane=await self.ctx.providers.traffic_plane(
                spec.traffic.provider, spec.traffic.region
            ),
            request=_request(annotations.get(REQUEST_ANNOTATION)),
            approval=annotations.get(APPROVE_ANNOTATION) or None,
            pinned=annotations.get(PIN_ANNOTATION) or None,
        )

    def _load_status(self, body: Mapping[str, Any]) -> None:
        try:
            self._status = ResilientAppStatus.model_validate(body.get("status") or {})
        except ValidationError as error:
            log.warning("%s: ignoring unreadable status (%s)", self.ref.name, spec_error(error))
            self._status = _salvage(body.get("status") or {})

    # ------------------------------------------------------------------ actions

    async def _preempt(self, wanted: tuple[m.Action, ...]) -> None:
        """Stop a running action that a newer decision overtook: one no longer wanted, or a
        capacity or volume step of an older epoch while a traffic shift waits (a slow boot
        in an evacuated region must not hold a failover's DNS change back). Actions are
        idempotent: a stopped one is carried out again if it is still wanted."""
        running = self._action
        if self._task is None or self._task.done() or running is None or not wanted:
            return
        first = wanted[0]
        overtaken = all(a.id != running.id for a in wanted) or (
            isinstance(first, m.ShiftTraffic)
            and not isinstance(running, m.ShiftTraffic)
            and first.epoch > running.epoch
        )
        if not overtaken:
            return
        log.info(
            "%s/%s: stopping %s: overtaken by %s",
            self.ref.namespace,
            self.ref.name,
            running.id,
            first.id,
        )
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task, self._action = None, None

    def _start(self, action: m.Action, spec: ResilientAppSpec) -> None:
        self._action = action
        self._task = asyncio.create_task(self._carry_out(action, spec), name=action.id)

    async def _carry_out(self, action: m.Action, spec: ResilientAppSpec) -> _Done:
        provider = spec.traffic.provider if isinstance(action, m.ShiftTraffic) else action.region[0]
        try:
            if isinstance(action, m.ShiftTraffic):
                return await self._shift(action, spec)
            if isinstance(action, m.RestoreVolumes):
                return await self._restore(action, spec)
            return await self._set_capacity(action, spec)
        except CopyPending as error:
            return _Done(None, reason="VolumeCopyPending", detail=str(error))
        except ProviderUnavailable as error:
            return _Done(None, reason=error.reason, detail=str(error))
        except (HostedZoneError, ZoneNotFound) as error:
            return _Done(None, reason="HostedZoneNotFound", detail=str(error))
        except RegionImpaired as error:
            return _Done(None, reason="RegionImpaired", detail=str(error))
        except Exception as error:
            detail = self.ctx.providers.explain(provider, error)
            return _Done(None, reason=f"{action.kind}Failed", detail=detail)

    async def _shift(self, action: m.ShiftTraffic, spec: ResilientAppSpec) -> _Done:
        traffic = await self.ctx.providers.traffic(spec.traffic.provider, spec.traffic.region)
        change = await traffic.apply(traffic_plan(action, self.ref))
        if change.synced_at is None:
            return _Done(
                None,
                reason="TrafficShiftNotInSync",
                detail=f"change {change.change_id} not in sync",
            )
        weights = ", ".join(f"{site}={weight}" for site, weight in action.weights)
        message = (
            f"DNS {action.dns.name} now routes to {action.active_site} "
            f"(weights {weights}), epoch {action.epoch}, change {change.change_id} in sync "
            f"after {change.synced_at - change.submitted_at:.1f}s"
        )
        return _Done(change.synced_at, change.change_id, message=message)

    async def _set_capacity(self, action: m.SetCapacity, spec: ResilientAppSpec) -> _Done:
        site = spec.site(action.site)
        if site is None or site.capacity is None or self.ctx.capacity is None:
            return _Done(
                None, reason="CapacityUnavailable", detail=f"no capacity for {action.site}"
            )
        driver = await self.ctx.capacity.for_site(f"{self.ref.namespace}/{self.ref.name}", site)
        await driver.set_zones(dict(action.zones))
        counts = ", ".join(f"{z}={n}" for z, n in action.zones)
        return _Done(self.ctx.clock(), message=f"capacity of {site.name} set: {counts}")

    async def _finish_action(self) -> None:
        task, action = self._task, self._action
        self._task, self._action = None, None
        assert task is not None and action is not None and self.state is not None
        try:
            done = task.result()
        except asyncio.CancelledError:
            return
        except Exception as error:  # a bug, not a cloud failure: report and retry
            log.exception("%s/%s: action %s crashed", self.ref.namespace, self.ref.name, action.id)
            done = _Done(None, reason=f"{action.kind}Failed", detail=type(error).__name__)
        if done.at is None:
            await self._action_failed(action, done)
        else:
            await self._action_done(action, done)
        if self._decision is not None:
            remaining = tuple(a for a in self._decision.actions if a.id != action.id)
            self._decision = replace(self._decision, state=self.state, actions=remaining)
        await self._write(force=True)

    async def _restore(self, action: m.RestoreVolumes, spec: ResilientAppSpec) -> _Done:
        if self.ctx.restorer is None or self.state is None:
            return _Done(None, reason="VolumesUnavailable", detail="no volume restorer")
        app = f"{self.ref.namespace or ''}/{self.ref.name}"
        outcome = await self.ctx.restorer.restore(app, action, spec, self.state.restores)
        now = self.ctx.clock()
        return _Done(
            now,
            message=restore_message(action, outcome, now),
            restored=outcome.volumes,
            missing=outcome.missing,
        )

    async def _action_done(self, action: m.Action, done: _Done) -> None:
        assert self.state is not None and done.at is not None
        before = self.state
        self.state = core.complete(
            self.state,
            action,
            done.at,
            done.change_id,
            restored=done.restored,
            missing=done.missing,
        )
        if self.state is before:
            return  # stale: a newer epoch was decided meanwhile
        message = done.message
        record = self.state.last_failover
        if (
            isinstance(action, m.ShiftTraffic)
            and record
            and record.epoch == action.epoch
            and record.rto_seconds is not None
        ):
            detection = record.detection_seconds or 0.0
            message += f"; RTO {record.rto_seconds:.1f}s (detection {detection:.1f}s)"
            metrics.LAST_FAILOVER_RTO.labels(*self._labels).set(record.rto_seconds)
            metrics.LAST_FAILOVER_DETECTION.labels(*self._labels).set(detection)
        reason = "TrafficShifted" if isinstance(action, m.ShiftTraffic) else "CapacitySet"
        if isinstance(action, m.RestoreVolumes):
            reason = "VolumesRestored"
        log.info("%s/%s: %s", self.ref.namespace, self.ref.name, message)
        await self.ctx.kube.event(
            self.ref, "Warning" if done.missing else "Normal", reason, message
        )

    async def _action_failed(self, action: m.Action, done: _Done) -> None:
        if isinstance(action, m.ShiftTraffic):
            metrics.TRAFFIC_SHIFT_ERRORS.labels(*self._labels).inc()
        metrics.ACTION_FAILURES.labels(*self._labels, action.kind).inc()
        message = f"{action.target} (epoch {action.epoch}) failed: {done.detail}; retrying"
        log.warning("%s/%s: %s", self.ref.namespace, self.ref.name, message)
        await self.ctx.kube.event(self.ref, "Warning", done.reason, message)

    # ------------------------------------------------------------------ reporting

    async def _announce(self, note: m.Note) -> None:
        record = self.state.last_failover if self.state else None
        if note.kind in (m.NoteKind.FAILOVER, m.NoteKind.FAILBACK) and record:
            metrics.FAILOVERS.labels(*self._labels, record.from_site, record.to_site).inc()
        level = logging.WARNING if note.warning else logging.INFO
        log.log(level, "%s/%s: %s", self.ref.namespace, self.ref.name, note.message)
        await self.ctx.kube.event(
            self.ref, "Warning" if note.warning else "Normal", note.kind.value, note.message
        )

    # ------------------------------------------------------------------ replication

    async def _sync_replication(self, spec: ResilientAppSpec) -> None:
        """Keep every replication source in step with the spec, active site and epoch."""
        if self.state is None:
            return
        if self._sources is None:
            self._sources = [factory(self.ref) for factory in self.ctx.replication]
        record = self.state.last_failover
        since = record.decided_at if record and record.epoch == self.state.epoch else None
        for source in self._sources:
            try:
                if isinstance(source, FollowsAppState):
                    source.follow(self.state)
                await source.sync(spec, self.state.active_site, self.state.epoch, since)
            except Exception:  # one engine's trouble must not stop the app's loop
                log.exception("%s/%s: replication sync failed", self.ref.namespace, self.ref.name)

    def _replication_figures(self) -> tuple[ReplicationStatus, ...]:
        """Every source's entries, by dataset and destination (the list's map keys)."""
        entries: dict[tuple[str, str], ReplicationStatus] = {}
        for source in self._sources or ():
            try:
                figures = source.figures()
            except Exception:
                log.exception("%s/%s: replication figures", self.ref.namespace, self.ref.name)
                continue
            for entry in figures:
                entries.setdefault((entry.dataset, entry.destination), entry)
        return tuple(entries[k] for k in sorted(entries))

    def _report_restored_volumes(self, earlier: Mapping[str, str]) -> None:
        """Put the restored volumes' states into the status being written: as the sources
        saw them, or else as the previous status had them (``earlier``: a restarted
        operator keeps showing them until it looks again)."""
        states = dict(earlier)
        for source in self._sources or ():
            if isinstance(source, ObservesRestoredVolumes):
                states.update(source.volume_states())
        restores = self._status.volume_restores
        if not states or not restores:
            return
        self._status = self._status.model_copy(
            update={
                "volume_restores": tuple(
                    r.model_copy(
                        update={
                            "volumes": tuple(
                                v.model_copy(update={"state": states[v.volume_id]})
                                if v.volume_id in states
                                else v
                                for v in r.volumes
                            )
                        }
                    )
                    for r in restores
                )
            }
        )

    async def _report_replication(self, spec: ResilientAppSpec, now: float) -> None:
        """Put the replication figures and conditions into the status being written."""
        figures = self._replication_figures()
        conditions = self._status.conditions
        had = get_condition(conditions, RPO_BREACHED)
        if spec.replication is None and had is None:
            self._status = self._status.model_copy(update={"replication": figures})
            return
        target = float(spec.replication.rpo_target_seconds) if spec.replication else 0.0
        replicating, breached = replication_conditions(figures, target)
        for type_, (status, reason, message) in (
            (REPLICATING, replicating),
            (RPO_BREACHED, breached),
        ):
            conditions = set_condition(
                conditions,
                type_,
                status,
                reason,
                message,
                generation=self._generation,
                now=now,
            )
        self._status = self._status.model_copy(
            update={"replication": figures, "conditions": conditions}
        )
        was = had.status if had is not None else "False"
        if breached[0] == "True" and was != "True":
            message = describe_rpo(figures, target)
            log.warning("%s/%s: RPO breached: %s", self.ref.namespace, self.ref.name, message)
            await self.ctx.kube.event(self.ref, "Warning", "RPOBreached", message)
        elif breached[0] == "False" and was == "True":
            message = describe_rpo(figures, target)
            await self.ctx.kube.event(self.ref, "Normal", "RPORecovered", message)

    async def _check_configuration(self, spec: ResilientAppSpec) -> None:
        """References the API server cannot check: providers, their regions, endpoints."""
        problems = self.ctx.providers.check_references(spec)
        blind = [s.name for s in spec.sites if not s.endpoints]
        if problems:
            ok, reason, message = False, problems[0][0], "; ".join(m for _, m in problems)
        elif blind:
            ok, reason = True, "SitesWithoutEndpoints"
            message = (
                f"no endpoints to probe in site(s) {', '.join(blind)}: their health is "
                "unknown, so they are never chosen as failover targets"
            )
        else:
            ok, reason, message = True, "Resolved", "all providers and regions resolved"
        previous = get_condition(self._status.conditions, CONFIGURATION)
        changed = previous is None or (previous.reason, previous.message) != (reason, message)
        self._status = self._status.model_copy(
            update={
                "conditions": set_condition(
                    self._status.conditions,
                    CONFIGURATION,
                    "True" if ok else "False",
                    reason,
                    message,
                    generation=self._generation,
                    now=self.ctx.clock(),
                )
            }
        )
        if changed and reason != "Resolved":
            await self.ctx.kube.event(self.ref, "Warning", reason, message)

    async def _write(self, force: bool = False) -> None:
        if self.state is None or self._spec is None or self._decision is None:
            return
        now = self.ctx.clock()
        decision = replace(
            self._decision,
            state=self.state,
            phase=core.phase_of(self.state, self._spec, self._observations),
        )
        earlier = {
            v.volume_id: v.state
            for r in self._status.volume_restores
            for v in r.volumes
            if v.state is not None
        }
        self._status = status_from_state(
            decision,
            self._spec,
            self._status,
            observations=self._observations,
            running=self._action.id if self._action else None,
            generation=self._generation,
            now=now,
        )
        self._export_state(self._spec)
        self._export_decision(decision)
        self._report_restored_volumes(earlier)
        await self._report_replication(self._spec, now)
        wire = self._status.to_merge_patch()
        due = now - self._written_at >= HEARTBEAT_SECONDS
        if not force and not due and _material(wire) == _material(self._written):
            return
        await self._patch(wire)
        self._written, self._written_at = wire, now

    async def _patch(self, wire: dict[str, Any]) -> None:
        """Write status, fenced by the epoch; a failure is logged and the next round writes
        again. A newer stored epoch means another instance failed over meanwhile: this
        worker's state is stale, so it is dropped and read again from the stored status."""
        try:
            epoch = self.state.epoch if self.state is not None else None
            await self.ctx.kube.patch_status(self.ref, wire, epoch=epoch)
        except NotFound:
            pass  # deleted under us; the daemon is being stopped
        except StaleEpoch as error:
            log.warning("%s/%s: %s; reading it again", self.ref.namespace, self.ref.name, error)
            self.state, self._written, self._written_at = None, None, 0.0
        except Exception as error:
            self._written_at = 0.0  # make the next round write
            log.warning("%s/%s: status not written: %s", self.ref.namespace, self.ref.name, error)

    async def _report_invalid(self, message: str) -> None:
        """Say why the spec is refused; leave everything Lifeboat remembers untouched."""
        if self._invalid_generation == self._generation:
            return
        self._invalid_generation = self._generation
        metrics.set_app_phase(*self._labels, "Invalid")
        conditions = set_condition(
            self._status.conditions,
            READY,
            "False",
            "InvalidSpec",
            message,
            generation=self._generation,
            now=self.ctx.clock(),
        )
        self._status = self._status.model_copy(update={"conditions": conditions})
        patch = {
            "phase": "Invalid",
            "observedGeneration": self._generation,
            "conditions": [c.to_wire() for c in conditions],
        }
        await self._patch(patch)
        await self.ctx.kube.event(self.ref, "Warning", "InvalidSpec", message)

    def _export_probes(self, probes: tuple[ProbeResult, ...]) -> None:
        for probe in probes:
            metrics.PROBE_DURATION.labels(
                *self._labels, probe.key.site, probe.key.zone, probe.outcome.value
            ).observe(probe.latency)

    def _export_state(self, spec: ResilientAppSpec) -> None:
        assert self.state is not None
        current = {(site.name, zone) for site in spec.sites for zone in site.zones}
        for gone_site, gone_zone in self._exported - current:
            metrics.forget_zone(*self._labels, gone_site, gone_zone)
        for gone in {s for s, _ in self._exported} - {s.name for s in spec.sites}:
            metrics.forget_site(*self._labels, gone)
        self._exported = current
        for site in spec.sites:
            metrics.ACTIVE_SITE.labels(*self._labels, site.name).set(
                1 if site.name == self.state.active_site else 0
            )
            for zone in site.zones:
                health = self.state.zone(ZoneKey(site.name, zone))
                metrics.set_zone_state(*self._labels, site.name, zone, health.state)
        metrics.APP_EPOCH.labels(*self._labels).set(self.state.epoch)

    def _export_decision(self, decision: m.Decision) -> None:
        """Phase, outstanding actions, failover readiness and the latest failover."""
        assert self._spec is not None
        labels, spec, state = self._labels, self._spec, decision.state
        metrics.start_app(*labels, (site.name for site in spec.sites))
        metrics.set_app_phase(*labels, decision.phase.value)
        metrics.ACTIONS_PENDING.labels(*labels).set(len(decision.actions))
        metrics.ACTIONS_HELD.labels(*labels).set(len(decision.held))
        metrics.STANDBY_SITES.labels(*labels).set(len(spec.sites) - 1)
        metrics.HEALTHY_STANDBY_SITES.labels(*labels).set(
            metrics.qualified_standbys(state, spec, self._observations.api_planes)
        )
        metrics.PROBE_INTERVAL.labels(*labels).set(spec.health.interval_seconds)
        record = state.last_failover
        metrics.LAST_FAILOVER_TIMESTAMP.labels(*labels).set(record.decided_at if record else 0)
        if record is not None and record.rto_seconds is not None:
            metrics.LAST_FAILOVER_RTO.labels(*labels).set(record.rto_seconds)
            metrics.LAST_FAILOVER_DETECTION.labels(*labels).set(record.detection_seconds or 0.0)


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
    )


def _request(raw: str | None) -> m.Request | None:
    """The request annotation, or None when absent or unreadable (logged)."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return m.Request(
            id=str(data["id"]),
            op=m.RequestOp(data["op"]),
            site=data.get("site"),
            force=bool(data.get("force", False)),
        )
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable %s annotation", REQUEST_ANNOTATION)
        return None


def _salvage(raw: Mapping[str, Any]) -> ResilientAppStatus:
    """What can be kept of a status that does not parse: never let the epoch go back."""
    epoch = raw.get("epoch")
    active = raw.get("activeSite")
    if isinstance(epoch, int) and epoch >= 1 and isinstance(active, str):
        # The next decision raises the epoch past anything written before.
        return ResilientAppStatus(active_site=active, epoch=epoch + 1)
    return ResilientAppStatus()


def _material(wire: Mapping[str, Any] | None) -> Any:
    """The status without the fields that change every round."""
    if wire is None:
        return None
    zones = [
        {k: v for k, v in zone.items() if k not in _VOLATILE_ZONE_FIELDS}
        for zone in wire.get("zones", ())
    ]
    replication = [
        {k: v for k, v in entry.items() if k not in _VOLATILE_REPLICATION_FIELDS}
        | {"rpoKnown": entry.get("rpoSeconds") is not None}
        for entry in wire.get("replication", ())
    ]
    restores = [
        {
            **record,
            "volumes": [
                {**v, "state": _readiness(v.get("state"))} for v in record.get("volumes", ())
            ],
        }
        for record in wire.get("volumeRestores", ())
    ]
    return {**wire, "zones": zones, "replication": replication, "volumeRestores": restores}


def _readiness(state: str | None) -> str | None:
    """What matters of a restored volume's state: a volume going from ``available`` to
    ``backing-up`` and back at every snapshot is not worth a status write of its own."""
    if state is None or rv.volume_failed(state):
        return state
    return "ready" if rv.volume_ready(state) else "being made"
