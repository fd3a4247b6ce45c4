"""The per-app loop: probe, decide, act, report.

One :class:`AppWorker` runs per ResilientApp (as a kopf daemon). Each round it probes every
zonal endpoint, collects the API-plane verdicts of the app's regions and any user request
(annotations), hands it all to the pure decision core, starts the actions the core returns
through the provider layer, and writes status and Events.

The worker is the loop; its collaborators do the rest:

* :class:`~controller.operator.actions.ActionRunner` carries out actions one at a time in
  the background, so a slow cloud call never stops the probing;
* :class:`~controller.operator.status_writer.StatusWriter` composes the status (the
  worker's memory: a restarted operator reads it back and resumes) and writes it, fenced
  by the epoch, when something material changed or a heartbeat is due;
* :class:`~controller.operator.app_replication.AppReplication` runs the app's replication
  engines and reports their figures;
* :class:`~controller.operator.exporter.AppExporter` keeps the app's metrics;
* :class:`~controller.operator.vantage_report.VantageReport` says how the other peers'
  views compare (with peers: ``ctx.peers``). Every round the worker hands the core the
  other peers' latest views of the app (``ctx.peers.vantage``) and publishes its own zone
  states, with the digest of the spec it read, for them (``ctx.peers.publish``).

User requests arrive as annotations (set by ``lifeboat failover|failback|approve|pin``):

* ``lifeboat.dev/request``: ``{"id": ..., "op": "failover"|"failback", "site": ...,
  "force": false, "planned": false}``, answered once (``status.lastRequest``); a planned
  one is answered once its writes are stopped and replication drained and it moved (or it
  gave up), its steps in ``status.plannedSwitchover`` and its write-fence calls carried out
  as actions (:mod:`controller.operator.write_fence`);
* ``lifeboat.dev/approve``: the ID of the recommendation to carry out (Manual mode);
* ``lifeboat.dev/pin``: a site name; while set, nothing moves the app automatically;
* ``lifeboat.dev/drill``: the FailoverDrill holding the app; a zone a ZoneEvacuation drill
  took out stays out only while that drill holds it (``Observations.drill``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from controller.api.annotations import ManualOperations
from controller.api.conditions import ConditionType
from controller.api.digest import spec_digest
from controller.api.events import EventReason
from controller.api.models import ResilientAppSpec
from controller.api.names import DRILL_ANNOTATION
from controller.core import decide as core
from controller.core import inputs
from controller.core import model as m
from controller.core.health import ProbeResult, ZoneKey, ZoneState, round_interval, zone_states
from controller.core.status import state_from_status
from controller.operator.actions import ActionRunner, traffic_plan
from controller.operator.app_replication import AppReplication
from controller.operator.capacity_watch import CapacityWatch
from controller.operator.context import (
    AppContext,
    AppLog,
    Capacities,
    FollowsAppState,
    ObservesRestoredVolumes,
    Prober,
    Providers,
    ReplicationFactory,
    ReplicationSource,
    StartGate,
)
from controller.operator.dns_readback import DnsReadBack
from controller.operator.exporter import AppExporter
from controller.operator.kube import ObjectRef, StaleEpoch
from controller.operator.peer_status import NoMajority
from controller.operator.providers import spec_error
from controller.operator.status_writer import StatusWriter
from controller.operator.vantage_report import VantageReport
from controller.providers.kubernetes.client import unreachable

__all__ = [
    "AppContext",
    "AppWorker",
    "Capacities",
    "FollowsAppState",
    "ObservesRestoredVolumes",
    "Prober",
    "Providers",
    "ReplicationFactory",
    "ReplicationSource",
    "traffic_plan",
]

log = logging.getLogger(__name__)

INVALID_RETRY_SECONDS = 30.0
ERROR_RETRY_SECONDS = 10.0
FENCED_RETRY_SECONDS = 1.0


class AppWorker:
    def __init__(self, ref: ObjectRef, context: AppContext) -> None:
        self.ref = ref
        self.ctx = context
        self.log = AppLog(log, ref)
        self.state: m.AppState | None = None
        self.status = StatusWriter(ref, self.log, context.statuses)
        self.actions = ActionRunner(ref, context, self.log)
        self.replication = AppReplication(ref, context.replication, context.kube, self.log)
        self.metrics = AppExporter(ref)
        self.dns = DnsReadBack(ref, context.providers, context.kube, self.log)
        self.peers = VantageReport(ref, context.kube, self.log)
        self.capacity = CapacityWatch(ref, context, self.log)
        self.name = f"{ref.namespace or ''}/{ref.name}"
        """``namespace/name``: what the app is published under to the other peers."""
        self._digest: tuple[int | None, str] | None = None
        self._spec: ResilientAppSpec | None = None
        self._spec_generation: int | None = None
        """The generation ``_spec`` was validated from (None: not known)."""
        self._generation: int | None = None
        self._decision: m.Decision | None = None
        self._observations = m.Observations()
        self._term = context.leadership.term
        self._held: str | None = None
        """The action last held for want of a majority (said once)."""

    # ------------------------------------------------------------------ the loop

    async def run(self, body: Mapping[str, Any], stopped: Callable[[], bool]) -> None:
        """Rounds every ``intervalSeconds`` until stopped: the first as soon as the
        operator's start gate lets it through (:class:`~.context.StartGate`: a few apps at
        a time), then on the app's slots (:class:`~controller.operator.probes.RoundSchedule`:
        a fixed grid, each app at its own phase, so that apps do not all probe at the same
        moment)."""
        due = time.monotonic()
        gate: StartGate | None = self.ctx.starting  # the first round waits its turn
        try:
            while not stopped():
                started = time.monotonic()
                self.metrics.round_started(started - due)
                interval = ERROR_RETRY_SECONDS
                try:
                    if gate is not None:
                        async with gate.slot():
                            gate = None
                            interval = await self.round(body)
                    else:
                        interval = await self.round(body)
                    self.metrics.round_done(self.ctx.clock())
                    due = self._next_round(max(started, due), interval)
                    await self.pause(due, stopped)
                except StaleEpoch as error:
                    await self._fenced_out(error)
                    await asyncio.sleep(FENCED_RETRY_SECONDS)
                    due = time.monotonic()
                except Exception as error:  # a round must never end the loop
                    self.metrics.round_failed()
                    if (why := unreachable(error)) is not None:
                        self.log.warning("round failed: %s", why)
                    else:
                        self.log.exception("round failed")
                    due = self._next_round(max(started, due), interval)
                    await self.pause(due, stopped)
        finally:
            self.ctx.prober.forget(self.ref.uid)
            self.ctx.peers.forget(self.name)
            await self.actions.stop()
            await self.capacity.close()
            await self.replication.close()

    def _next_round(self, started: float, interval: float) -> float:
        """The app's first slot after the round that ``started``. A round that overran
        that slot is followed at once, and the next round's lag says by how much."""
        return self.ctx.schedule.after(self.name, interval, started)

    async def pause(self, until: float, stopped: Callable[[], bool]) -> None:
        """Sleep until the monotonic time ``until``; finish an action as soon as it ends."""
        while not stopped() and (left := until - time.monotonic()) > 0:
            nap = asyncio.ensure_future(asyncio.sleep(min(left, 0.5)))
            waiting: set[asyncio.Future[Any]] = {nap}
            if self.actions.task is not None:
                waiting.add(self.actions.task)
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                nap.cancel()
            await self._finish_action()
            if self.ctx.leadership.term != self._term:
                await self.actions.stop()  # no longer (or newly) leading: act no more
                return

    async def _fenced_out(self, error: StaleEpoch) -> None:
        """Another instance recorded a newer epoch: this worker's state is stale. Its round
        is abandoned, its running action stopped (nothing of an older epoch may move), and
        its state read again from the stored status on the next round."""
        self.log.warning("%s: round abandoned, reading the status again", error)
        await self.actions.stop()
        self.state, self._decision = None, None

    async def _leading(self) -> bool:
        """Whether this instance acts in this round. Leadership gained or lost since the
        last round (its term changed) drops what the worker holds in memory: its running
        action stops and its state is rebuilt from the world."""
        term = self.ctx.leadership.term
        leading = self.ctx.leadership.leading
        if self.ctx.leadership.term != term:
            leading = False  # changed while being read: the next round sees it settled
        if term != self._term:
            self._term = term
            self.log.info("%s: state rebuilt", "leading" if leading else "following")
            await self.actions.stop()
            self.state, self._decision = None, None
        return leading

    async def _load_status(self, body: Mapping[str, Any], leading: bool) -> bool:
        """Take the stored status as the starting point; whether there is one to take.
        A leader among peers takes the freshest of a majority of the peer clusters."""
        if not leading:
            self.status.load(body)
            return True
        try:
            freshest = await self.ctx.statuses.freshest(self.ref)
        except NoMajority as error:
            self.log.warning("holding: cannot rebuild the state: %s", error)
            return False
        self.status.load(body if freshest is None else {"status": freshest})
        return True

    async def round(self, body: Mapping[str, Any]) -> float:
        """One probe-decide-act round; the seconds until the next one.

        With peers, a follower probes and decides as the leader does (its view is
        published for the others) but writes no status, posts no Event and acts on
        nothing; its replication engines stay idle."""
        self._generation = body.get("metadata", {}).get("generation")
        leading = await self._leading()
        if self.state is None and not await self._load_status(body, leading):
            return ERROR_RETRY_SECONDS
        try:
            spec = self._parsed_spec(body)
        except ValidationError as error:
            if leading:
                status = body.get("status")
                phase = status.get("phase") if isinstance(status, Mapping) else None
                await self._report_invalid(spec_error(error), phase)
            return INVALID_RETRY_SECONDS
        self.status.spec_accepted()
        self._spec = spec
        if self.state is None:
            # Rebuilt from the status: DNS is read back before anything changes it.
            self.state = replace(
                state_from_status(self.status.current, spec, floor=self.status.floor),
                dns_read=False,
            )
            self.dns.soon()
            if self.status.unreadable and leading:
                await self.ctx.kube.event(
                    self.ref,
                    "Warning",
                    EventReason.STATUS_UNREADABLE,
                    f"status fields dropped, rebuilt from what DNS holds: {self.status.unreadable}",
                )
        await self._finish_action()

        if leading:
            await self.replication.sync(spec, self.state)
            self.capacity.poll(spec, self.state)
        probes = await self.ctx.prober.probe_app(spec, self.ref.namespace or "", self.ref.uid)
        observations = await self._observe(spec, probes, body, leading)
        decision = core.decide(self.state, observations, spec, self.ctx.clock())
        self.state, self._decision, self._observations = decision.state, decision, observations
        digest = self._spec_digest(spec)
        self.ctx.peers.publish(self.name, digest, own_zones(self.state))
        self.metrics.probes(probes)
        if not leading:
            self._held = None  # only the leader holds actions
            self.metrics.no_majority(False)
            return self._interval(spec)
        self.metrics.decided(decision)
        await self.replication.sync(spec, self.state)  # a failover reverses replication at once
        for note in decision.notes:
            await self._announce(note)
        await self.dns.report(
            self.status,
            observations.dns,
            decision,
            spec,
            generation=self._generation,
            now=self.ctx.clock(),
        )
        await self._check_configuration(spec)
        await self.peers.report(
            self.status,
            decision.vantage,
            self.ctx.peers.drift(self.name, digest) if decision.vantage is not None else (),
            generation=self._generation,
            now=self.ctx.clock(),
        )
        await self.actions.preempt(decision.actions)
        if decision.actions and self.actions.idle:
            # Nothing moves before the decision is on record under its epoch.
            if await self._write(force=True):
                self._held = None
                self.actions.start(decision.actions[0], spec, self.state.restores)
            elif self.status.no_majority is not None:
                await self._hold_no_majority(decision.actions[0], self.status.no_majority)
            self.metrics.no_majority(self._held is not None)
            return self._interval(spec)
        if not decision.actions:
            self._held = None
            self.metrics.no_majority(False)
        await self._write()
        return self._interval(spec)

    def _interval(self, spec: ResilientAppSpec) -> float:
        """Seconds to the next round: faster while a zone is Suspect or Recovering here, or
        (with peers) seen Down or Healthy here and not yet confirmed by the others, so that
        their confirmation is read as soon as it is published."""
        zones = self.state.zones if self.state is not None else {}
        vantage = self._decision.vantage if self._decision is not None else None
        doubt = [ZoneState.SUSPECT] * len(vantage.in_doubt) if vantage is not None else []
        return round_interval([*zone_states(zones), *doubt], spec.health)

    def _parsed_spec(self, body: Mapping[str, Any]) -> ResilientAppSpec:
        """The app's spec, validated once per generation (the API server bumps it on every
        change of the spec; an object without one is validated every round)."""
        generation = self._generation
        if (
            isinstance(generation, int)
            and self._spec is not None
            and self._spec_generation == generation
        ):
            return self._spec
        spec = ResilientAppSpec.model_validate(body.get("spec") or {})
        self._spec_generation = generation if isinstance(generation, int) else None
        return spec

    # ------------------------------------------------------------------ observations

    async def _observe(
        self,
        spec: ResilientAppSpec,
        probes: tuple[ProbeResult, ...],
        body: Mapping[str, Any],
        leading: bool = True,
    ) -> m.Observations:
        """What the core decides on. A follower does not read DNS back (the leader does;
        a follower that becomes leader reads it before anything moves)."""
        planes = {
            key: await self.ctx.providers.api_plane_health(*key) for key in inputs.regions(spec)
        }
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        asked = ManualOperations.from_annotations(annotations)
        for annotation in asked.unreadable:
            self.log.warning("ignoring unreadable %s annotation", annotation)
        answered = self.status.current.unreplicated_request
        self.replication.resolve(asked.unreplicated, answered.id if answered else None)
        return inputs.observations(
            spec,
            probes=probes,
            api_planes=planes,
            traffic_plane=await self.ctx.providers.traffic_plane(
                spec.traffic.provider, spec.traffic.region
            ),
            request=asked.request,
            approval=asked.approval,
            pinned=asked.pin,
            replication_lag=self.replication.lag(spec),
            replication_flows=self.replication.flows(spec),
            dns=await self.dns.observe(spec, self.state) if self.state and leading else None,
            vantage=self.ctx.peers.vantage(self.name),
            capacity=self.capacity.readings() if leading else None,
            drill=annotations.get(DRILL_ANNOTATION),
        )

    def _spec_digest(self, spec: ResilientAppSpec) -> str:
        """The digest of the spec the other peers compare theirs with (computed again
        when the generation changes)."""
        if self._digest is None or self._generation is None or self._digest[0] != self._generation:
            self._digest = (self._generation, spec_digest(spec))
        return self._digest[1]

    # ------------------------------------------------------------------ actions

    async def _finish_action(self) -> None:
        """Record how the action that just ended went, and say so."""
        if not self.actions.finished:
            return
        finished = await self.actions.take()
        if finished is None or self.state is None:
            return
        action, result = finished
        if result.done:
            assert result.at is not None
            before = self.state
            self.state = core.complete(
                before,
                action,
                result.at,
                result.change_id,
                restored=result.restored,
                missing=result.missing,
            )
            if self.state is not before:  # else stale: a newer epoch was decided meanwhile
                await self.actions.report_done(action, result, self.state.last_failover)
            if isinstance(action, m.ShiftTraffic):
                self.dns.soon()  # read the change back: DNSInSync says what DNS now holds
        else:
            await self.actions.report_failed(action, result)
            if result.reason in (EventReason.DNS_FENCED, EventReason.DNS_OWNERSHIP_CONFLICT):
                self.dns.soon()  # see what DNS holds now before trying again
        if self._decision is not None:
            remaining = tuple(a for a in self._decision.actions if a.id != action.id)
            self._decision = replace(self._decision, state=self.state, actions=remaining)
        await self._write(force=True)

    # ------------------------------------------------------------------ reporting

    async def _announce(self, note: m.Note) -> None:
        record = self.state.last_failover if self.state else None
        if note.kind in (m.NoteKind.FAILOVER, m.NoteKind.FAILBACK) and record:
            self.metrics.failover_started(record)
        self.log.log(logging.WARNING if note.warning else logging.INFO, "%s", note.message)
        await self.ctx.kube.event(
            self.ref, "Warning" if note.warning else "Normal", note.kind.value, note.message
        )

    async def _hold_no_majority(self, action: m.Action, why: NoMajority) -> None:
        """The decision is not durable: its action waits (said once per action)."""
        if self._held == action.id:
            return
        self._held = action.id
        message = f"{action.kind} held: {why}"
        self.log.warning("%s", message)
        await self.ctx.kube.event(self.ref, "Warning", EventReason.NO_MAJORITY, message)

    async def _check_configuration(self, spec: ResilientAppSpec) -> None:
        """References the API server cannot check: providers, their regions, endpoints,
        CA bundles."""
        problems = self.ctx.providers.check_references(spec)
        problems += [
            (EventReason.CA_BUNDLE_UNAVAILABLE, problem)
            for problem in self.ctx.prober.problems(self.ref.namespace or "")
        ]
        blind = [s.name for s in spec.sites if not s.endpoints]
        if problems:
            ok, reason, message = False, problems[0][0], "; ".join(m for _, m in problems)
        elif blind:
            ok, reason = True, EventReason.SITES_WITHOUT_ENDPOINTS
            message = (
                f"no endpoints to probe in site(s) {', '.join(blind)}: their health is "
                "unknown, so they are never chosen as failover targets"
            )
        else:
            ok, reason, message = True, "Resolved", "all providers and regions resolved"
        self.metrics.configuration(ok)
        previous = self.status.condition(ConditionType.CONFIGURATION_VALID)
        changed = previous is None or (previous.reason, previous.message) != (reason, message)
        self.status.set_condition(
            ConditionType.CONFIGURATION_VALID,
            "True" if ok else "False",
            reason,
            message,
            generation=self._generation,
            now=self.ctx.clock(),
        )
        if changed and reason != "Resolved":
            await self.ctx.kube.event(self.ref, "Warning", reason, message)

    async def _write(self, force: bool = False) -> bool:
        """Compose the status and write it when due; whether it is on record. A newer epoch
        on record raises :class:`StaleEpoch`."""
        if self.state is None or self._spec is None or self._decision is None:
            return False
        now = self.ctx.clock()
        earlier = {
            v.volume_id: v.state
            for r in self.status.current.volume_restores
            for v in r.volumes
            if v.state is not None
        }
        running = self.actions.running
        decision = self.status.compose(
            replace(self._decision, state=self.state),
            self._spec,
            self._observations,
            running=running.id if running else None,
            generation=self._generation,
            now=now,
        )
        self.metrics.state(self._spec, self.state)
        self.metrics.decision(decision, self._spec, self._observations)
        self.replication.report_restored_volumes(self.status, earlier)
        await self.replication.report(self.status, self._spec, self._generation, now)
        return await self.status.write(self.state.epoch, now, force=force)

    async def _report_invalid(self, message: str, stored_phase: Any) -> None:
        """Say why the spec is refused (in the status, until it says so, and in an Event,
        once per generation); leave everything Lifeboat remembers untouched."""
        epoch = self.state.epoch if self.state is not None else None
        self.metrics.configuration(False)
        self.metrics.invalid()  # what this process knows, whether or not the write lands
        if await self.status.write_invalid(
            message,
            generation=self._generation,
            epoch=epoch,
            now=self.ctx.clock(),
            stored_phase=stored_phase,
        ):
            await self.ctx.kube.event(self.ref, "Warning", EventReason.INVALID_SPEC, message)


def own_zones(state: m.AppState) -> dict[ZoneKey, ZoneState]:
    """This peer's own zone states (what it publishes: its probes, its thresholds)."""
    return {key: health.state for key, health in state.zones.items()}
