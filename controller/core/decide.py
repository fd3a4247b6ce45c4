"""The decision core: observations in, a new state, actions and an explanation out.

``decide(state, observations, spec, now) -> Decision`` is pure: no I/O, no clock reads.
The operator feeds it probe rounds, API-plane verdicts and user requests, executes the
actions it returns through the provider layer and reports each executed action back with
:func:`complete`.

How the active site is doing is classified first (the first matching row wins), and the
classification picks the response:

======================  =============================================  ==================
situation               when                                           response
======================  =============================================  ==================
site-down               every probed zone of the active site is Down   region failover
multi-zone-failure      at least ``cascade.zonesDown`` zones Down      region failover
cascade                 a zone Down while the site's region API plane  region failover
                        is at ``cascade.apiPlane`` or worse
lone-zone-failure       one zone Down, the API plane fine              zonal evacuation
api-plane-impairment    the API plane Impaired, every zone serving     freeze
healthy-but-noisy       zones Suspect or Recovering, none Down         nothing
steady                  all zones Healthy                              nothing
======================  =============================================  ==================

With peers (``Observations.vantage``), the zones are classified as the peers see them
together (:mod:`controller.core.vantage`): Down or Healthy only on a majority of the heard
peers, with a majority of all peers heard; a peer that hears fewer holds, with that reason,
the failover or evacuation its own view calls for. Single-cluster mode uses this peer's own
zone states unchanged.

Then, in this order: a user request (failover to a site, failback), the return of
evacuated zones that stayed Healthy for ``zonalEvacuation.restoreAfterSeconds``, and an
automatic failback when the policy asks for it.

A ``ZoneEvacuation`` drill takes a Healthy zone of the active site out of traffic with an
``evacuate`` request and puts it back with ``restore`` (:func:`_zone_request`). Its zone is
evacuated like any other (DNS values and capacity leave it), and recorded as the drill's
(``AppState.drill_evacuation``): the return of evacuated zones leaves it alone. The drill's
claim ends before anything else is decided in a round (:func:`_drill_evacuation_tick`) when
a real outage strikes the site (any situation but steady or healthy-but-noisy: a zone Down,
the drill's own included, or the region's API plane Impaired), when the app leaves the site,
when the drill no longer holds the app (its annotation) or when the drill's lease runs out.
The zone then goes back into traffic at once if it is Healthy and its region's API plane is
not Impaired (it never failed: no restore period), else it stays out as a real evacuation
under the automatic rules. The real decision of that round is then taken with it.

Safety, always:

* **fencing**: a failover raises the epoch, and the one DNS change that makes the new site
  active demotes the old one (weight 0); completions of an older epoch are ignored;
* **one primary**: exactly one site carries weight 100 in every traffic action;
* **failover targets** must have ``minHealthyTargetZones`` Healthy zones and a region whose
  API plane is not Impaired; the DNS service's own API plane must not be Impaired;
* **static stability**: no action is ever emitted towards an Impaired region; it is
  *held* (and shown in the trace) until the region recovers;
* **anti-flapping**: debounced zone health (a single failed probe never acts), a minimum
  dwell time between failovers and a failover budget per hour;
* **modes**: ``Automatic`` acts; ``Manual`` records a recommendation and acts once it is
  approved; ``Observe`` records and never acts (no action at all is emitted).

Actions are desired-state and idempotent: the core computes the DNS record and the
capacity every site should have, compares them with what was last applied (persisted in
the status), and emits an action for each difference. A failed or interrupted action is
therefore simply emitted again, a restarted operator resumes where it stopped, and a
completed one is never repeated. A failover to a site that holds volume datasets also
calls for a volume restore there (``RestoreVolumes``, once per epoch, after the traffic
shift): the volumes are made from the newest copies in the new site's region, and the
restored volumes are what replication snapshots from then on (its direction reverses).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from controller.api.annotations import Request, RequestOp
from controller.api.models import MAX_EPOCH, ResilientAppSpec, Site
from controller.core.apiplane import ApiPlaneState
from controller.core.capacity import (
    SiteReadiness,
    capacity_timeout,
    readiness_key,
    standby_readiness,
    verified,
)
from controller.core.health import (
    ProbeOutcome,
    ProbeResult,
    ZoneHealth,
    ZoneKey,
    ZoneState,
    ZoneThresholds,
    aggregate_round,
    observe,
)
from controller.core.model import (
    ACTIVE_WEIGHT,
    FENCED_WEIGHT,
    Action,
    AppliedCapacity,
    AppliedRestore,
    AppliedTraffic,
    AppState,
    Decision,
    DnsName,
    DrillEvacuation,
    FailoverRecord,
    FenceWrites,
    FlowProgress,
    Held,
    Note,
    NoteKind,
    Observations,
    Outcome,
    Ownership,
    Phase,
    PlannedMove,
    PlannedStep,
    Recommendation,
    RegionKey,
    RequestOutcome,
    Response,
    RestoredVolume,
    RestoreVolumes,
    Rule,
    SetCapacity,
    ShiftTraffic,
    SiteTarget,
    Situation,
    Trace,
    Verdict,
    prune_times,
    recommendation_id,
)
from controller.core.vantage import Consensus, Vantage, consensus

RULES: tuple[tuple[Situation, Response], ...] = (
    (Situation.SITE_DOWN, Response.FAILOVER),
    (Situation.MULTI_ZONE, Response.FAILOVER),
    (Situation.CASCADE, Response.FAILOVER),
    (Situation.LONE_ZONE, Response.EVACUATE),
    (Situation.API_PLANE_ONLY, Response.FREEZE),
    (Situation.NOISY, Response.NOTHING),
    (Situation.STEADY, Response.NOTHING),
)
RESPONSE = dict(RULES)

_LEVEL = {
    ApiPlaneState.UNKNOWN: 0,
    ApiPlaneState.HEALTHY: 0,
    ApiPlaneState.DEGRADED: 1,
    ApiPlaneState.IMPAIRED: 2,
}


def initial_state(spec: ResilientAppSpec) -> AppState:
    return AppState(active_site=spec.primary.name)


# --------------------------------------------------------------------------- the round


@dataclass
class _Round:
    """The working set of one decision (local to :func:`decide`)."""

    spec: ResilientAppSpec
    obs: Observations
    now: float
    state: AppState
    notes: list[Note]
    facts: list[tuple[str, str]]
    vantage: Consensus | None = None
    """How the peers' views were weighed (None: single-cluster mode)."""
    judged: Mapping[ZoneKey, ZoneHealth] | None = None
    """The zones as decisions see them (None: as this peer sees them)."""

    def api(self, site: Site) -> ApiPlaneState:
        return self.obs.api_planes.get((site.provider, site.region), ApiPlaneState.UNKNOWN)

    def seen(self) -> AppState:
        """The state with its zones as decisions see them (every vantage weighed)."""
        return self.state if self.judged is None else replace(self.state, zones=self.judged)

    def zone(self, site: str, zone: str) -> ZoneHealth:
        """A zone as decisions see it."""
        return self.seen().zone(ZoneKey(site, zone))

    def note(self, kind: NoteKind, message: str, warning: bool = False) -> None:
        self.notes.append(Note(kind, message, warning))


def decide(
    state: AppState, observations: Observations, spec: ResilientAppSpec, now: float
) -> Decision:
    """One decision round. Pure: same inputs, same outputs."""
    work = _Round(spec, observations, now, state, [], [])
    _conform_to_spec(work)
    _follow_dns(work)
    _observe_probes(work)
    _weigh_vantages(work)
    _track_site_health(work)
    _verify_capacity(work)
    _drill_evacuation_tick(work)
    _planned_tick(work)
    verdict, summary = _decide(work)
    _planned_overtaken(work)
    work.state = replace(
        work.state,
        last_rule=verdict,
        failover_times=prune_times(work.state.failover_times, now),
        hold=work.state.hold if verdict.held else None,
    )
    actions, held = _reconcile(work)
    readiness = _standby_readiness(work)
    facts = tuple(_facts(work)) + tuple(work.facts)
    return Decision(
        work.state,
        actions,
        held,
        Trace(verdict, summary, facts),
        tuple(work.notes),
        phase_of(work.state, spec, observations),
        _outcome(verdict, work.notes, work.state),
        work.vantage,
        readiness,
    )


REFUSED = Verdict(Rule.REQUEST_REFUSED)
_QUIET = frozenset({Rule.STEADY, Rule.NOISY, Rule.API_PLANE_ONLY})


def _outcome(verdict: Verdict, notes: list[Note], state: AppState) -> Outcome:
    """What came of the round: a failover (or failback) started, a zonal evacuation, the
    return of evacuated zones, a hold, a refused request, a recommendation waiting for
    approval (or Observe mode), or nothing."""
    kinds = {note.kind for note in notes}
    if kinds & {NoteKind.FAILOVER, NoteKind.FAILBACK}:
        return Outcome.FAILOVER
    if NoteKind.EVACUATION in kinds:
        return Outcome.EVACUATION
    if NoteKind.ZONE_RESTORED in kinds:
        return Outcome.RESTORE
    if verdict.held:
        return Outcome.HELD
    if verdict.rule is Rule.REQUEST_REFUSED:
        return Outcome.REFUSED
    if state.recommendation is not None and verdict.rule not in _QUIET:
        return Outcome.RECOMMENDED
    return Outcome.NONE


def complete(
    state: AppState,
    action: Action,
    now: float,
    change_id: str = "",
    *,
    restored: tuple[RestoredVolume, ...] = (),
    missing: tuple[str, ...] = (),
) -> AppState:
    """Record that ``action`` was carried out at ``now`` (a volume restore: the volumes it
    made, ``restored``, and the ``dataset/volume`` it found no copy of, ``missing``).

    A completion for another epoch than the current one is stale (fencing) and ignored.
    """
    if action.epoch != state.epoch:
        return state
    if isinstance(action, FenceWrites):
        return _record_fence(state, action, now, change_id)
    if isinstance(action, RestoreVolumes):
        restores = dict(state.restores)
        restores[action.site] = AppliedRestore(action.epoch, now, restored, missing)
        return replace(state, restores=restores)
    if isinstance(action, SetCapacity):
        capacity = dict(state.capacity)
        capacity[action.site] = AppliedCapacity(action.fingerprint, now, action.zones)
        return replace(state, capacity=capacity)
    return _record_traffic(state, action, now, change_id)


def _record_traffic(state: AppState, action: ShiftTraffic, now: float, change_id: str) -> AppState:
    """``action`` is what DNS holds since ``now`` (a failover of its epoch is complete)."""
    failover = state.last_failover
    if failover is not None and failover.epoch == action.epoch and failover.completed_at is None:
        failover = replace(failover, completed_at=now)
    applied = AppliedTraffic(
        action.active_site, action.epoch, now, change_id, action.fingerprint, action.dns
    )
    return replace(state, traffic=applied, last_failover=failover)


# --------------------------------------------------------------------------- inputs


def _conform_to_spec(work: _Round) -> None:
    """Forget zones that are no longer probed; re-anchor an active site that vanished.

    A zone removed from the spec, or left without endpoints, has no data-plane evidence
    any more: it goes back to Unknown instead of keeping a stale verdict.
    """
    spec, state = work.spec, work.state
    probed = {ZoneKey(s.name, e.zone) for s in spec.sites for e in s.endpoints}
    declared = {ZoneKey(s.name, z) for s in spec.sites for z in s.zones}
    zones = {k: v for k, v in state.zones.items() if k in probed}
    evacuated = frozenset(k for k in state.evacuated if k in declared)
    restores = {k: v for k, v in state.restores.items() if spec.site(k) is not None}
    held = state.drill_evacuation
    if held is not None and held.key not in evacuated:
        held = None  # its zone left the spec (or was put back): nothing left to hold
    state = replace(
        state, zones=zones, evacuated=evacuated, restores=restores, drill_evacuation=held
    )
    if state.recommendation and _stale(state.recommendation, spec):
        state = replace(state, recommendation=None)
    if spec.site(state.active_site) is None:
        work.note(
            NoteKind.SPEC_CHANGED,
            f"active site {state.active_site} was removed from the spec; "
            f"traffic goes back to the declared primary {spec.primary.name}",
            warning=True,
        )
        epoch = min(state.epoch + 1, MAX_EPOCH)
        state = replace(state, active_site=spec.primary.name, epoch=epoch)
    work.state = state


def _follow_dns(work: _Round) -> None:
    """Reconcile the state with DNS as read back (the world, not the status, says what
    users reach), toward the higher epoch:

    * another owner holds the name: remember it (no traffic change is made meanwhile);
    * DNS carries a newer epoch than the state (the status was lost, rolled back, or
      written by an instance that lost a race): adopt its epoch and active site;
    * DNS carries the state's epoch with another site while the state records nothing
      applied (a status that lost its active site or traffic record): adopt its site;
    * DNS already holds what the current epoch calls for (carried out, but the completion
      was never recorded: a crash): record it as applied, without changing it again;
    * DNS no longer holds what was recorded as applied (changed or deleted behind
      Lifeboat's back): forget the record, so that the change is made again.
    """
    dns, state, spec = work.obs.dns, work.state, work.spec
    if dns is None or dns.ownership is Ownership.UNKNOWN:
        return
    state = replace(state, dns_read=True)
    if dns.ownership is Ownership.OTHER:
        if state.dns_conflict != dns.owner:
            work.note(
                NoteKind.DNS_CONFLICT,
                f"DNS name {spec.traffic.record_name} is held by {dns.owner}: Lifeboat "
                "never touches a record another owner holds; traffic changes are held",
                warning=True,
            )
        work.state = replace(state, dns_conflict=dns.owner)
        return
    if state.dns_conflict is not None:
        work.note(NoteKind.DNS_RESOLVED, f"DNS name {spec.traffic.record_name} is free again")
        state = replace(state, dns_conflict=None)
    epoch, site = dns.epoch, dns.active_site
    if epoch is not None and epoch > state.epoch:
        known = site is not None and spec.site(site) is not None
        work.note(
            NoteKind.DNS_DIVERGED,
            f"DNS holds epoch {epoch} (active site {site}), newer than the recorded epoch "
            f"{state.epoch} (active site {state.active_site}): following DNS"
            + ("" if known else f"; {site} is no longer in the spec, so DNS is set again"),
            warning=True,
        )
        if known and site is not None:
            applied = AppliedTraffic(
                site, epoch, work.now, "", dns.fingerprint or "", _dns_name(spec)
            )
            state = replace(state, active_site=site, epoch=epoch, traffic=applied)
        else:
            state = replace(state, epoch=epoch, traffic=None)
    elif (
        epoch == state.epoch
        and state.traffic is None
        and site is not None
        and site != state.active_site
        and spec.site(site) is not None
    ):
        # The state does not know what its own epoch set (a status that lost its active
        # site or its traffic record): DNS, written by that epoch's decision, says.
        work.note(
            NoteKind.DNS_DIVERGED,
            f"DNS holds epoch {epoch} with active site {site}; the recorded state of that "
            f"epoch named {state.active_site} but not what was applied: following DNS",
            warning=True,
        )
        applied = AppliedTraffic(site, epoch, work.now, "", dns.fingerprint or "", _dns_name(spec))
        state = replace(state, active_site=site, traffic=applied)
    elif epoch == state.epoch and dns.fingerprint == desired_traffic(state, spec).fingerprint:
        if state.traffic_epoch < state.epoch or not traffic_in_place(state, spec):
            state = _record_traffic(state, desired_traffic(state, spec), work.now, "")
    elif state.traffic is not None and (epoch, dns.fingerprint) != (
        state.traffic.epoch,
        state.traffic.fingerprint,
    ):
        held = "no owner record" if epoch is None else f"epoch {epoch}"
        work.note(
            NoteKind.DNS_DIVERGED,
            f"DNS holds {held}, not what epoch {state.traffic.epoch} set: setting it again",
            warning=True,
        )
        state = replace(state, traffic=None)
    work.state = state


def _dns_name(spec: ResilientAppSpec) -> DnsName:
    traffic = spec.traffic
    return DnsName(
        traffic.hosted_zone_id,
        traffic.hosted_zone_name,
        traffic.record_name,
        traffic.record_type,
        traffic.ttl,
    )


def _stale(recommendation: Recommendation, spec: ResilientAppSpec) -> bool:
    return recommendation.target is not None and spec.site(recommendation.target) is None


def _observe_probes(work: _Round) -> None:
    health = work.spec.health
    thresholds = ZoneThresholds.of(health)
    by_zone: dict[ZoneKey, list[ProbeResult]] = defaultdict(list)
    for probe in work.obs.probes:
        by_zone[probe.key].append(_judged(probe, health.latency_threshold_seconds))
    zones = dict(work.state.zones)
    for key, results in sorted(by_zone.items()):
        verdict = aggregate_round(key, results)
        if verdict is None or work.spec.site(key.site) is None:
            continue
        before = work.state.zone(key)
        after = observe(before, verdict, thresholds)
        zones[key] = after
        if after.state is not before.state:
            detail = f" ({after.last_detail})" if after.last_detail and not after.healthy else ""
            work.note(
                NoteKind.ZONE_STATE,
                f"zone {key} {before.state} -> {after.state}{detail}",
                warning=after.state in (ZoneState.DOWN, ZoneState.SUSPECT),
            )
    work.state = replace(work.state, zones=zones)


def _judged(probe: ProbeResult, latency_threshold: float | None) -> ProbeResult:
    """A probe that answered, but slower than the latency threshold, counts as failed."""
    if latency_threshold is not None and probe.ok and probe.latency > latency_threshold:
        return replace(
            probe,
            outcome=ProbeOutcome.FAIL,
            detail=f"slow: {probe.latency:.2f}s > {latency_threshold:g}s",
        )
    return probe


def probed_zones(spec: ResilientAppSpec) -> tuple[ZoneKey, ...]:
    """The zones with endpoints to probe, in spec order (the others stay Unknown)."""
    keys = (ZoneKey(s.name, e.zone) for s in spec.sites for e in s.endpoints)
    return tuple(dict.fromkeys(keys))


def consensus_of(state: AppState, spec: ResilientAppSpec, vantage: Vantage | None) -> Consensus:
    """The probed zones' states for decisions: this peer's own (``state``) weighed with the
    other peers' views (:func:`controller.core.vantage.consensus`)."""
    own = {key: health.state for key, health in state.zones.items()}
    return consensus(own, vantage, probed_zones(spec))


def judged_state(state: AppState, spec: ResilientAppSpec, vantage: Vantage | None) -> AppState:
    """``state`` with its zones as decisions see them (``state`` itself with one vantage).
    A zone keeps this peer's figures (counters, times); only its state is the peers'."""
    if vantage is None:
        return state
    return replace(state, zones=_judged_zones(state, consensus_of(state, spec, vantage)))


def _judged_zones(state: AppState, weighed: Consensus) -> dict[ZoneKey, ZoneHealth]:
    zones = dict(state.zones)
    for key, judged in weighed.zones.items():
        health = state.zone(key)
        if health.state is not judged:
            zones[key] = replace(health, state=judged)
    return zones


def _weigh_vantages(work: _Round) -> None:
    """Weigh this peer's zone states with the other peers' views (multi-peer mode): the
    rules below see the zones as a majority of the heard peers do."""
    if work.obs.vantage is None:
        return
    weighed = consensus_of(work.state, work.spec, work.obs.vantage)
    work.vantage = weighed
    work.judged = _judged_zones(work.state, weighed)


def _track_site_health(work: _Round) -> None:
    since = dict(work.state.site_healthy_since)
    seen = work.seen()
    for site in work.spec.sites:
        probed = _probed(seen, site)
        if probed and all(z.healthy for z in probed):
            since.setdefault(site.name, work.now)
        else:
            since.pop(site.name, None)
    work.state = replace(work.state, site_healthy_since=since)


def _verify_capacity(work: _Round) -> None:
    """Capacity set for a site is Ready once a reading of its driver taken after it was set
    counts every instance asked for; said once (CapacityReady), with the time it took. Not
    Ready within ``readiness.capacityTimeoutSeconds``: said once (CapacityNotReady), with
    the figures and the failed scale-ups the driver reports."""
    state, spec = work.state, work.spec
    timeout = capacity_timeout(spec)
    capacity = dict(state.capacity)
    for name, applied in state.capacity.items():
        site = spec.site(name)
        if site is None or applied.ready_at is not None:
            continue
        reading = work.obs.capacity.get(name)
        ready = verified(applied.zones, applied.applied_at, reading)
        wanted = applied.total
        if ready is not None and ready >= wanted and reading is not None:
            since = capacity_asked_at(state, name, applied.applied_at)
            took = max(0.0, reading.at - since)
            capacity[name] = replace(applied, ready_at=reading.at)
            work.note(
                NoteKind.CAPACITY_READY,
                f"capacity of {name} ({site.region}) Ready: {ready}/{wanted} "
                f"{reading.unit} {took:.0f} s after it was asked for",
            )
        elif not applied.overdue and work.now - applied.applied_at >= timeout:
            capacity[name] = replace(applied, overdue=True)
            words = _not_ready_words(work, name, applied.applied_at, wanted)
            waiting = _shrinks_waiting(work) if name == state.active_site else []
            if waiting:
                words += (
                    f"; {', '.join(waiting)} no longer wait(s) for it and shrink(s) now "
                    f"(readiness.capacityTimeoutSeconds {timeout:g})"
                )
            work.note(NoteKind.CAPACITY_NOT_READY, words, warning=True)
    work.state = replace(state, capacity=capacity)


def _shrinks_waiting(work: _Round) -> list[str]:
    """Sites that no longer take the traffic and are to run less than they do."""
    applied = work.state.capacity
    return [
        change.site
        for change in desired_capacity(work.state, work.spec)
        if change.site != work.state.active_site
        and change.site in applied
        and sum(n for _, n in change.zones) < applied[change.site].total
    ]


def capacity_asked_at(state: AppState, site: str, applied_at: float) -> float:
    """When the capacity now set for ``site`` was asked for: the decision of the failover
    that made it the active site (its scale-up is part of that failover), else when it was
    set."""
    record = state.last_failover
    if (
        record is not None
        and record.epoch == state.epoch
        and record.to_site == site
        and record.decided_at <= applied_at
    ):
        return record.decided_at
    return applied_at


def _not_ready_words(work: _Round, name: str, applied_at: float, wanted: int) -> str:
    """``usw2: 2/6 instances InService after 300 s`` (and the failed scale-ups)."""
    applied = work.state.capacity[name]
    reading = work.obs.capacity.get(name)
    after = f"after {work.now - applied_at:.0f} s"
    if reading is None:
        text = f"{name}: capacity not read since it was set {after}"
    elif reading.error is not None:
        text = f"{name}: capacity unreadable {after}: {reading.error}"
    else:
        ready = verified(applied.zones, applied_at, reading)
        count = ready if ready is not None else reading.ready
        text = f"{name}: {count}/{wanted} {reading.unit} {after}"
        text += "".join(f"; scale-up failed: {failure}" for failure in reading.failures)
    return f"capacity not Ready: {text}"


def _standby_readiness(work: _Round) -> tuple[SiteReadiness, ...]:
    """Whether each site that does not take the traffic could take it now; a change is
    announced (StandbyNotReady, StandbyReady) before any failover needs the site."""
    seen = work.seen()
    found: list[SiteReadiness] = []
    announced = dict(work.state.standby_ready)
    for site in work.spec.sites:
        if site.name == work.state.active_site:
            announced.pop(site.name, None)
            continue
        why = work.obs.api_plane_reasons.get((site.provider, site.region))
        unfit = target_unfit(seen, site, work.api(site), work.spec, why)
        readiness = standby_readiness(site, work.obs.capacity.get(site.name), unfit)
        found.append(readiness)
        key = readiness_key(readiness)
        before = announced.get(site.name)
        if before is None or before[0] is not readiness.ready or before[1] != key[1]:
            if readiness.ready is False:
                work.note(
                    NoteKind.STANDBY_NOT_READY,
                    f"standby {readiness.summary}",
                    warning=True,
                )
            elif readiness.ready and before is not None and before[0] is not True:
                work.note(NoteKind.STANDBY_READY, f"standby {readiness.summary}")
        announced[site.name] = key
    announced = {k: v for k, v in announced.items() if work.spec.site(k) is not None}
    work.state = replace(work.state, standby_ready=announced)
    return tuple(found)


# --------------------------------------------------------------------------- classification


def classify(
    state: AppState, site: Site, api: ApiPlaneState, spec: ResilientAppSpec
) -> tuple[Situation, list[str]]:
    """How ``site`` is doing, and its Down zones."""
    probed = [(z, state.zone(ZoneKey(site.name, z))) for z in site.zones]
    probed = [(z, h) for z, h in probed if h.state is not ZoneState.UNKNOWN]
    down = [z for z, h in probed if h.down]
    cascade_level = _LEVEL[ApiPlaneState(spec.failover.cascade.api_plane)]
    if probed and len(down) == len(probed):
        return Situation.SITE_DOWN, down
    if len(down) >= spec.failover.cascade.zones_down:
        return Situation.MULTI_ZONE, down
    if down and _LEVEL[api] >= cascade_level:
        return Situation.CASCADE, down
    if down:
        return Situation.LONE_ZONE, down
    if api is ApiPlaneState.IMPAIRED:
        return Situation.API_PLANE_ONLY, down
    if any(not h.healthy for _, h in probed):
        return Situation.NOISY, down
    return Situation.STEADY, down


# --------------------------------------------------------------------------- decisions


def _decide(work: _Round) -> tuple[Verdict, str]:
    """Apply the rules; the rule that decided and a one-sentence summary."""
    spec = work.spec
    active = spec.site(work.state.active_site)
    assert active is not None  # _conform_to_spec guarantees it
    request, planned = work.obs.request, work.state.planned
    if request is not None and _new_request(work.state, request):
        if planned is not None and planned.step.waiting and not request.force:
            why = (
                f"a planned switchover ({planned.request_id}) to {planned.to_site} is under way "
                "(--force overrides it)"
            )
            return _answer(work, request, False, why)
        if request.op in (RequestOp.EVACUATE, RequestOp.RESTORE):
            return _zone_request(work, request)
        if request.planned:
            return _start_planned(work, request)
        return _handle_request(work, request)
    if planned is not None and planned.step.waiting:
        progressed, waiting = _planned_progress(work, planned)
        situation, _ = classify(work.seen(), active, work.api(active), spec)
        # An outage of the active site meanwhile still fails the app over (the planned
        # switchover is then overtaken, and writes resume where the app lands).
        if not waiting or RESPONSE[situation] is not Response.FAILOVER:
            return progressed

    situation, down = classify(work.seen(), active, work.api(active), spec)
    response = RESPONSE[situation]
    work.facts.append(("situation", f"{situation} -> {response}"))
    _announce_freeze(work, active, situation)
    unconfirmed = _hold_unconfirmed(work, active)
    if unconfirmed:
        return unconfirmed

    if response is Response.FAILOVER:
        reason = _failover_reason(situation, active, down, work.api(active))
        return _failover(work, active, reason, situation)
    if response is Response.EVACUATE:
        fresh = [z for z in down if ZoneKey(active.name, z) not in work.state.evacuated]
        if fresh and spec.failover.zonal_evacuation.enabled:
            return _evacuate(work, active, fresh)
    restored = _restore_zones(work)
    if restored:
        return restored
    failback = _automatic_failback(work, active, situation)
    if failback:
        return failback
    return Verdict(Rule.of(situation)), _steady_summary(work, active, situation)


def _hold_unconfirmed(work: _Round, active: Site) -> tuple[Verdict, str] | None:
    """Too few peers heard to act on zone evidence (and no ``allowSolo``): what this peer's
    own view would call for (a failover, an evacuation) is held, with the reason."""
    why = work.vantage.why_not() if work.vantage is not None else None
    if why is None:
        return None
    situation, down = classify(work.state, active, work.api(active), work.spec)
    response = RESPONSE[situation]
    fresh = [z for z in down if ZoneKey(active.name, z) not in work.state.evacuated]
    if response is Response.FAILOVER:
        reason = _failover_reason(situation, active, down, work.api(active))
        kind, what = NoteKind.HELD, "failover"
    elif response is Response.EVACUATE and fresh and work.spec.failover.zonal_evacuation.enabled:
        reason = f"zone(s) {', '.join(fresh)} of active site {active.name} are Down"
        kind, what = NoteKind.EVACUATION_HELD, "evacuation"
    else:
        return None
    verdict = Verdict(Rule.of(situation), held=True)
    summary = f"{reason} as this peer sees it; {what} held: {why}"
    if work.state.last_rule != verdict:
        work.note(kind, summary, warning=True)
    return verdict, summary


def _failover_reason(situation: Situation, site: Site, down: list[str], api: ApiPlaneState) -> str:
    if situation is Situation.SITE_DOWN:
        return f"every probed zone of active site {site.name} is Down"
    if situation is Situation.MULTI_ZONE:
        return f"{len(down)} zones of active site {site.name} are Down ({', '.join(down)})"
    return (
        f"zone(s) {', '.join(down)} of active site {site.name} are Down while region "
        f"{site.region}'s API plane is {api}: a cascade"
    )


def _announce_freeze(work: _Round, active: Site, situation: Situation) -> None:
    was = work.state.last_rule == Verdict(Rule.API_PLANE_ONLY)
    now = situation is Situation.API_PLANE_ONLY
    if now and not was:
        work.note(
            NoteKind.FROZEN,
            f"region {active.region} API plane is Impaired while every zone serves: frozen, "
            "no mutating call goes there; the app keeps serving",
            warning=True,
        )
    elif was and not now and situation in (Situation.STEADY, Situation.NOISY):
        work.note(NoteKind.UNFROZEN, f"region {active.region} API plane recovered")


def _failover(
    work: _Round,
    active: Site,
    reason: str,
    situation: Situation,
    *,
    target_name: str | None = None,
    manual: bool = False,
    force: bool = False,
    failback: bool = False,
    planned: bool = False,
    drill: bool = False,
) -> tuple[Verdict, str]:
    rule = (
        Rule.PLANNED
        if planned
        else Rule.FAILBACK
        if failback
        else Rule.MANUAL_FAILOVER
        if manual
        else Rule.of(situation)
    )
    fresh = work.state.last_rule.rule is not rule
    causes = [] if force else _failover_gate(work)
    if work.state.epoch >= MAX_EPOCH:  # forced or not: no epoch to raise it to
        causes.append(f"the epoch is at its highest ({MAX_EPOCH})")
    target, evaluation, unfit = _pick_target(
        work, exclude=active.name, wanted=target_name, force=force
    )
    work.facts.extend(evaluation)
    if target is None:
        causes.extend(unfit or [f"no other site than {active.name} to fail over to"])
    if work.obs.traffic_plane is ApiPlaneState.IMPAIRED and not force:
        causes.append("API plane of the DNS service Impaired: traffic cannot be moved")
    if causes:
        blocked = "; ".join(causes)
        hold = hold_key(blocked)
        if fresh or hold != work.state.hold:  # a new hold, or new causes (figures aside)
            kind = NoteKind.NO_TARGET if target is None else NoteKind.HELD
            work.note(kind, f"{reason}; failover held: {blocked}", warning=True)
        work.state = replace(work.state, hold=hold)
        return Verdict(rule, held=True), f"{reason}; failover held: {blocked}"
    assert target is not None
    summary = f"{reason}; {'failing back' if failback else 'failing over'} to {target.name}"
    if not manual and not _may_act(work, Response.FAILOVER, target.name, (), summary):
        return Verdict(rule), f"{summary} (recommended, {work.spec.failover.mode} mode)"
    _start_failover(
        work,
        active,
        target,
        reason,
        manual=manual,
        failback=failback,
        forced=force,
        planned=planned,
        drill=drill,
    )
    return Verdict(rule), f"{summary} (epoch {work.state.epoch})"


_FIGURES = re.compile(r"\d+(\.\d+)?")


def hold_key(causes: str) -> str:
    """The causes of a hold without their figures: the dwell counting down is the same
    hold, the budget taking over from the dwell is a new one."""
    return _FIGURES.sub("#", causes)


def rescue_allowed(state: AppState) -> bool:
    """Whether the app stands on a site a forced failover moved it onto (and nothing has
    moved it since): the automatic rules may then leave that site whatever dwell or budget
    is left, since a user's ``--force`` is not counted by the anti-flapping guards."""
    last = state.last_failover
    return (
        last is not None
        and last.unguarded
        and last.epoch == state.epoch
        and last.to_site == state.active_site
    )


def _failover_gate(work: _Round) -> list[str]:
    """Why a failover may not happen now, each cause with its figure (pin, dwell, budget).

    A forced failover starts no dwell and spends no budget: a site a user forced the app
    onto can be left as soon as it fails (:func:`rescue_allowed`).
    """
    policy = work.spec.failover
    causes: list[str] = []
    if work.obs.pinned is not None:
        causes.append(f"pinned to {work.obs.pinned}")
    if rescue_allowed(work.state):
        return causes
    last = work.state.last_failover
    if (
        last is not None
        and not last.unguarded
        and work.now - last.decided_at < policy.min_dwell_seconds
    ):
        ago = max(0.0, work.now - last.decided_at)
        causes.append(f"dwell: {ago:.0f} s of {policy.min_dwell_seconds} s")
    recent = prune_times(work.state.failover_times, work.now)
    if len(recent) >= policy.max_failovers_per_hour:
        plural = "s" if len(recent) != 1 else ""
        causes.append(
            f"budget: {len(recent)} failover{plural} in the last hour "
            f"(max {policy.max_failovers_per_hour})"
        )
    return causes


def _pick_target(
    work: _Round, exclude: str, wanted: str | None, force: bool
) -> tuple[Site | None, list[tuple[str, str]], list[str]]:
    """The first site, by (priority, spec order), fit to take the traffic; the evaluation
    of every candidate (trace facts); why each candidate is unfit (``site: cause``)."""
    spec = work.spec
    ranked = sorted(
        (s for s in spec.sites if s.name != exclude and (wanted is None or s.name == wanted)),
        key=lambda s: (s.priority, spec.sites.index(s)),
    )
    evaluation: list[tuple[str, str]] = []
    causes: list[str] = []
    chosen: Site | None = None
    seen = work.seen()
    for site in ranked:
        api = work.api(site)
        healthy = healthy_zones(seen, site)
        why = work.obs.api_plane_reasons.get((site.provider, site.region))
        unfit = None if force else target_unfit(seen, site, api, spec, why)
        if unfit is not None:
            verdict = unfit
            causes.append(f"{site.name}: {unfit}")
        elif chosen is None:
            chosen, verdict = site, "chosen"
        else:
            verdict = "fit, lower preference"
        evaluation.append(
            (
                f"target {site.name}",
                f"{healthy}/{len(site.zones)} healthy, API {api}{_capacity_words(work, site)}: "
                f"{verdict}",
            )
        )
    return chosen, evaluation, causes


def _capacity_words(work: _Round, site: Site) -> str:
    """``, capacity 2/3 instances InService`` as the site's driver last reported it."""
    reading = work.obs.capacity.get(site.name)
    if site.capacity is None or reading is None:
        return ""
    if reading.error is not None:
        return ", capacity unreadable"
    failed = f", {len(reading.failures)} failed scale-up(s)" if reading.failures else ""
    return f", capacity {reading.ready} {reading.unit}{failed}"


def healthy_zones(state: AppState, site: Site) -> int:
    return sum(1 for z in site.zones if state.zone(ZoneKey(site.name, z)).healthy)


def target_unfit(
    state: AppState,
    site: Site,
    api: ApiPlaneState,
    spec: ResilientAppSpec,
    api_reason: str | None = None,
) -> str | None:
    """Why ``site`` cannot take the traffic now, with the figure (``0/3 zones Healthy
    (needs 1)``, ``API plane of us-west-2 Impaired: throttle share 40% >= 30%``), or None
    when it qualifies as a failover target."""
    if api is ApiPlaneState.IMPAIRED:
        return f"API plane of {site.region} Impaired" + (f": {api_reason}" if api_reason else "")
    healthy, needed = healthy_zones(state, site), spec.failover.min_healthy_target_zones
    if healthy < needed:
        return f"{healthy}/{len(site.zones)} zones Healthy (needs {needed})"
    return None


def qualified_standbys(
    state: AppState, spec: ResilientAppSpec, api_planes: Mapping[RegionKey, ApiPlaneState]
) -> int:
    """Sites other than the active one that a failover could go to now (the test
    :func:`_pick_target` applies, without user preferences)."""
    return sum(
        target_unfit(
            state, site, api_planes.get((site.provider, site.region), ApiPlaneState.UNKNOWN), spec
        )
        is None
        for site in spec.sites
        if site.name != state.active_site
    )


def _start_failover(
    work: _Round,
    active: Site,
    target: Site,
    reason: str,
    *,
    manual: bool,
    failback: bool,
    forced: bool = False,
    planned: bool = False,
    drill: bool = False,
) -> None:
    if work.state.drill_evacuation is not None:
        _end_drill_evacuation(work, f"the app fails over to {target.name}")
    state = work.state
    epoch = state.epoch + 1
    record = FailoverRecord(
        epoch,
        active.name,
        target.name,
        reason,
        work.now,
        None if planned else _outage_start(state, active),
        manual=manual,
        forced=forced,
        planned=planned,
        rpo_seconds=0.0 if planned else None,
        drill=drill,
    )
    # The new site's failed zones stay out of its DNS record from the start.
    failed = {
        ZoneKey(target.name, z)
        for z in target.zones
        if work.zone(target.name, z).state in (ZoneState.DOWN, ZoneState.RECOVERING)
    }
    evacuated = frozenset(k for k in state.evacuated if k.site != target.name) | failed
    work.state = replace(
        state,
        active_site=target.name,
        epoch=epoch,
        last_failover=record,
        failover_times=prune_times(state.failover_times, work.now)
        + (() if record.unguarded else (work.now,)),
        evacuated=evacuated,
        recommendation=None,
    )
    kind = NoteKind.FAILBACK if failback else NoteKind.FAILOVER
    verb = "failing back" if failback else "failing over"
    work.note(kind, f"{reason}: {verb} {active.name} -> {target.name}, epoch {epoch}", warning=True)


def _outage_start(state: AppState, site: Site) -> float | None:
    """When the site stopped serving, conservatively: the last moment any of its zones
    answered a probe (the outage began between then and the next, failed, probe).
    Without any successful probe on record: the latest start of a zone's failure streak.
    """
    zones = [state.zone(ZoneKey(site.name, z)) for z in site.zones]
    answered = [z.last_ok for z in zones if z.last_ok is not None]
    if answered:
        return max(answered)
    failing = [z.failing_since for z in zones if z.failing_since is not None]
    return max(failing) if failing else None


def _evacuate(work: _Round, site: Site, zones: list[str]) -> tuple[Verdict, str]:
    serving = [
        z
        for z in site.zones
        if ZoneKey(site.name, z) not in work.state.evacuated
        and z not in zones
        and work.zone(site.name, z).healthy
    ]
    rule = Verdict(Rule.LONE_ZONE)
    if not serving:
        return rule, (
            f"zone(s) {', '.join(zones)} of {site.name} are Down and no healthy zone is left "
            "to take over"
        )
    summary = (
        f"zone(s) {', '.join(zones)} of active site {site.name} are Down, the region's API "
        f"plane is {work.api(site)}: evacuating them inside {site.region}"
    )
    if not _may_act(work, Response.EVACUATE, site.name, tuple(zones), summary):
        return rule, f"{summary} (recommended, {work.spec.failover.mode} mode)"
    work.state = replace(
        work.state,
        evacuated=work.state.evacuated | {ZoneKey(site.name, z) for z in zones},
        recommendation=None,
    )
    work.note(
        NoteKind.EVACUATION,
        f"zone(s) {', '.join(zones)} of {site.name} out of traffic; capacity moves to "
        f"{', '.join(serving)}",
        warning=True,
    )
    return rule, summary


def _restore_zones(work: _Round) -> tuple[Verdict, str] | None:
    """Evacuated zones (of any site) back in traffic once Healthy for the restore period,
    unless their region's API plane is Impaired (capacity cannot move back there)."""
    after = work.spec.failover.zonal_evacuation.restore_after_seconds
    back: list[ZoneKey] = []
    for key in sorted(work.state.evacuated):
        if key == drill_zone(work.state):
            continue  # a drill's: the drill puts it back (or a real outage ends its claim)
        site = work.spec.site(key.site)
        health = work.zone(key.site, key.zone)
        if site is None or not health.healthy or work.api(site) is ApiPlaneState.IMPAIRED:
            continue
        since = health.since if health.since is not None else work.now
        if work.now - since >= after:
            back.append(key)
    if not back:
        return None
    names = ", ".join(str(k) for k in back)
    summary = f"zone(s) {names} have been Healthy for {after}s: back in traffic"
    target = back[0].site
    zones = tuple(k.zone for k in back)
    if not _may_act(work, Response.EVACUATE, target, zones, summary, restore=True):
        mode = work.spec.failover.mode
        return Verdict(Rule.ZONE_RESTORE), f"{summary} (recommended, {mode} mode)"
    work.state = replace(
        work.state, evacuated=work.state.evacuated - set(back), recommendation=None
    )
    work.note(NoteKind.ZONE_RESTORED, summary)
    return Verdict(Rule.ZONE_RESTORE), summary


# --------------------------------------------------------------------------- zone drills

DEFAULT_LEASE_SECONDS = 3600.0
"""A drill evacuation asked without a lease is kept out at most this long."""
MAX_LEASE_SECONDS = 2 * 86400.0
ZONE_DRILL = Verdict(Rule.ZONE_DRILL)


def drill_zone(state: AppState) -> ZoneKey | None:
    """The zone a ZoneEvacuation drill holds out of traffic (None: none)."""
    return state.drill_evacuation.key if state.drill_evacuation is not None else None


def real_evacuations(state: AppState) -> frozenset[ZoneKey]:
    """The evacuated zones that make the app Degraded: every one but a drill's Healthy
    zone (taken out on purpose, it is no trouble of the app's)."""
    key = drill_zone(state)
    if key is not None and state.zone(key).healthy:
        return state.evacuated - {key}
    return state.evacuated


def _drill_evacuation_tick(work: _Round) -> None:
    """End the drill's claim on its zone when it may not keep it any longer (the reasons
    are in :func:`drill_claim_over`); the zone goes back or becomes a real evacuation."""
    held = work.state.drill_evacuation
    if held is None:
        return
    why = _drill_claim_over(work, held)
    if why is not None:
        _end_drill_evacuation(work, why)


def _drill_claim_over(work: _Round, held: DrillEvacuation) -> str | None:
    """Why the drill may no longer keep its zone out (None: it may), first match:
    the app left the zone's site; the drill no longer holds the app; the lease ran out; a
    real outage of the site (any situation but steady or healthy-but-noisy)."""
    state, spec = work.state, work.spec
    if state.active_site != held.site:
        return f"the app left {held.site} (active site {state.active_site})"
    if work.obs.drill != held.drill:
        return f"FailoverDrill {held.drill} no longer holds the app"
    if work.now >= held.expires_at:
        return f"the drill's lease of {held.expires_at - held.started_at:.0f} s ran out"
    site = spec.site(held.site)
    if site is None:
        return f"site {held.site} left the spec"
    situation, down = classify(work.seen(), site, work.api(site), spec)
    if situation in (Situation.STEADY, Situation.NOISY):
        return None
    what = (
        f"zone(s) {', '.join(down)} Down"
        if down
        else f"region {site.region}'s API plane {work.api(site)}"
    )
    return f"a real outage of {site.name}: {situation} ({what})"


def _end_drill_evacuation(work: _Round, why: str) -> bool:
    """The drill's claim on its zone ends: the zone goes back into traffic at once when it
    is Healthy and its region's API plane is not Impaired (it never failed, so there is no
    restore period to wait), else it stays out as a real evacuation under the automatic
    rules. Whether it went back."""
    held = work.state.drill_evacuation
    assert held is not None
    key = held.key
    site = work.spec.site(held.site)
    health = work.zone(held.site, held.zone)
    state = replace(work.state, drill_evacuation=None)
    back = (
        site is not None
        and health.healthy
        and work.api(site) is not ApiPlaneState.IMPAIRED
        and key in state.evacuated
    )
    if back:
        work.state = replace(state, evacuated=state.evacuated - {key})
        work.note(
            NoteKind.ZONE_RESTORED,
            f"zone {key} back in traffic (taken out by FailoverDrill {held.drill}): {why}",
        )
        return True
    work.state = state
    if key in state.evacuated:
        api = f", API plane of {site.region} {work.api(site)}" if site is not None else ""
        after = work.spec.failover.zonal_evacuation.restore_after_seconds
        work.note(
            NoteKind.EVACUATION,
            f"zone {key} (taken out by FailoverDrill {held.drill}) stays out of traffic as a "
            f"real evacuation: {why}; it is {health.state}{api}; the automatic rules put it "
            f"back once Healthy for {after} s",
            warning=True,
        )
    return False


def _zone_request(work: _Round, request: Request) -> tuple[Verdict, str]:
    """An ``evacuate`` or ``restore`` request of a ZoneEvacuation drill."""
    if request.op is RequestOp.EVACUATE:
        return _drill_evacuate(work, request)
    state = work.state
    key = ZoneKey(request.site or state.active_site, request.zone or "")
    held = state.drill_evacuation
    if not request.drill:
        return _answer(work, request, False, "zone restore requests are made by drills only")
    if held is None or held.key != key:
        if key not in state.evacuated:
            return _answer(work, request, True, f"zone {key} is in traffic already", ZONE_DRILL)
        after = work.spec.failover.zonal_evacuation.restore_after_seconds
        return _answer(
            work,
            request,
            False,
            f"zone {key} is out of traffic under the automatic rules, not a drill's: they "
            f"put it back once Healthy for {after} s",
        )
    back = _end_drill_evacuation(work, f"FailoverDrill {held.drill} puts it back")
    if back:
        return _answer(work, request, True, f"zone {key} back in traffic", ZONE_DRILL)
    health = work.zone(key.site, key.zone)
    return _answer(
        work,
        request,
        False,
        f"zone {key} is {health.state} or its region's API plane Impaired: it stays out of "
        "traffic under the automatic rules",
    )


def _drill_evacuate(work: _Round, request: Request) -> tuple[Verdict, str]:
    causes = evacuation_unfit(work, request)
    if causes:
        return _answer(work, request, False, "; ".join(causes))
    state = work.state
    assert request.site is not None and request.zone is not None and work.obs.drill is not None
    site = work.spec.site(request.site)
    assert site is not None
    lease = min(request.lease_seconds or DEFAULT_LEASE_SECONDS, MAX_LEASE_SECONDS)
    held = DrillEvacuation(
        work.obs.drill, request.id, site.name, request.zone, work.now, work.now + lease
    )
    key = held.key
    serving = [
        z for z in site.zones if z != request.zone and ZoneKey(site.name, z) not in state.evacuated
    ]
    work.state = replace(
        state,
        evacuated=state.evacuated | {key},
        drill_evacuation=held,
        recommendation=None,
    )
    summary = (
        f"zone {key} out of traffic for FailoverDrill {held.drill}; capacity moves to "
        f"{', '.join(serving)}; it stays out until the drill puts it back (at most {lease:.0f} s)"
    )
    work.note(NoteKind.EVACUATION, summary)
    return _answer(work, request, True, summary, ZONE_DRILL)


def evacuation_unfit(work: _Round, request: Request) -> list[str]:
    """Why a drill may not take ``request.zone`` of the active site out now, each cause
    with its figure (empty: it may). The zone must be Healthy, the site steady, and the
    zones left carry the traffic: at least ``failover.minHealthyTargetZones`` (and 1) of
    them Healthy, none probed and failing; DNS and the region's API plane fit to move."""
    spec, state = work.spec, work.state
    if spec.failover.mode == "Observe":
        return ["Observe mode never acts"]
    if not request.drill:
        return ["zone evacuation requests are made by ZoneEvacuation drills only"]
    if work.obs.drill is None:
        return ["no FailoverDrill holds the app (its lifeboat.dev/drill annotation)"]
    held = state.drill_evacuation
    if held is not None:
        return [f"zone {held.key} is out already for FailoverDrill {held.drill}"]
    site = spec.site(request.site or "")
    if site is None or site.name != state.active_site:
        return [f"{request.site} is not the active site ({state.active_site})"]
    zone = request.zone or ""
    if zone not in site.zones:
        return [f"{site.name} has no zone {zone!r} (zones: {', '.join(site.zones)})"]
    key = ZoneKey(site.name, zone)
    if key in state.evacuated:
        return [f"zone {key} is out of traffic already"]
    causes: list[str] = []
    if not spec.failover.zonal_evacuation.enabled:
        causes.append("zonal evacuation is disabled (failover.zonalEvacuation.enabled)")
    situation, _ = classify(work.seen(), site, work.api(site), spec)
    if situation is not Situation.STEADY:
        causes.append(f"active site {site.name} is not steady: {situation}")
    health = work.zone(site.name, zone)
    if not health.healthy:
        causes.append(f"zone {key} is {health.state}, not Healthy")
    left = [z for z in site.zones if z != zone and ZoneKey(site.name, z) not in state.evacuated]
    healthy = [z for z in left if work.zone(site.name, z).healthy]
    failing = [
        f"{z}={work.zone(site.name, z).state}"
        for z in left
        if work.zone(site.name, z).state not in (ZoneState.HEALTHY, ZoneState.UNKNOWN)
    ]
    needed = max(1, spec.failover.min_healthy_target_zones)
    if len(healthy) < needed:
        causes.append(
            f"without {zone}, {site.name} would serve from {len(healthy)} Healthy zone(s)"
            f" ({', '.join(healthy) or 'none'}); needs {needed} (failover.minHealthyTargetZones)"
        )
    if failing:
        causes.append(f"zones of {site.name} left to serve not Healthy: {', '.join(failing)}")
    if not site.values(set(left)):
        causes.append(f"the zones of {site.name} left to serve have no DNS values")
    elif site.values(set(left)) == site.values({*left, zone}):
        causes.append(f"zone {zone} has no DNS values of its own (zoneTargets): no DNS change")
    if work.api(site) is ApiPlaneState.IMPAIRED:
        causes.append(f"API plane of {site.region} Impaired (static stability)")
    if work.obs.traffic_plane is ApiPlaneState.IMPAIRED:
        causes.append("API plane of the DNS service Impaired: traffic cannot be moved")
    if state.dns_conflict is not None:
        causes.append(f"DNS name held by {state.dns_conflict}")
    if state.traffic_epoch < state.epoch:
        causes.append(
            f"a failover is under way (epoch {state.epoch}, traffic at {state.traffic_epoch})"
        )
    if state.planned is not None and not state.planned.step.final:
        causes.append(f"a planned switchover ({state.planned.request_id}) is under way")
    return causes


def _automatic_failback(
    work: _Round, active: Site, situation: Situation
) -> tuple[Verdict, str] | None:
    policy = work.spec.failover.failback
    primary = work.spec.primary
    if policy.mode != "Automatic" or active.name == primary.name:
        return None
    if situation not in (Situation.STEADY, Situation.NOISY, Situation.LONE_ZONE):
        return None
    since = work.state.site_healthy_since.get(primary.name)
    if since is None or work.now - since < policy.stable_seconds:
        return None
    if _LEVEL[work.api(primary)] > 0:
        return None
    lagging = _replication_lag(work, primary.name)
    if lagging is not None:
        work.facts.append(("failback", f"waiting: {lagging}"))
        return None
    reason = (
        f"declared primary {primary.name} has been healthy for {work.now - since:.0f}s "
        f"(policy {policy.stable_seconds}s) and replication has caught up"
    )
    return _failover(
        work, active, reason, Situation.STEADY, target_name=primary.name, failback=True
    )


def _replication_lag(work: _Round, site: str) -> str | None:
    """Why replication to ``site`` has not caught up, or None when it has (or is unused)."""
    if site not in work.obs.replication_lag:
        return None
    lag = work.obs.replication_lag[site]
    target = work.obs.replication_target
    if lag is None:
        return f"replication lag of {site} unknown"
    if target is not None and lag > target:
        return f"replication lag of {site} {lag:.0f}s above target {target:.0f}s"
    return None


def _may_act(
    work: _Round,
    response: Response,
    target: str | None,
    zones: tuple[str, ...],
    summary: str,
    *,
    restore: bool = False,
) -> bool:
    """Automatic: yes. Manual: only the approved recommendation. Observe: never."""
    mode = work.spec.failover.mode
    if mode == "Automatic":
        return True
    base = recommendation_id(response, target, zones, work.state.epoch)
    if restore:
        base = f"restore-{base}"
    current = work.state.recommendation
    # An ID names one recommendation, not one kind of decision: it carries the time the
    # recommendation was first made, and an approval is used up when it is acted on, so an
    # old approval never approves the same decision again when the situation comes back.
    if current is not None and current.id.rpartition("@")[0] == base:
        rec_id = current.id
    else:
        rec_id = f"{base}@{work.now:.0f}"
    if mode == "Manual" and current is not None and work.obs.approval == current.id == rec_id:
        work.note(NoteKind.REQUEST_ACCEPTED, f"approved: {summary}")
        work.state = replace(work.state, recommendation=None)
        return True
    if current is None or current.id != rec_id:
        recommendation = Recommendation(rec_id, response, summary, target, zones, work.now)
        work.state = replace(work.state, recommendation=recommendation)
        how = "approve with `lifeboat approve`" if mode == "Manual" else "Observe mode: not acting"
        work.note(NoteKind.RECOMMENDED, f"recommended: {summary} ({how}; id {rec_id})", True)
    return False


# --------------------------------------------------------------------------- requests


def _new_request(state: AppState, request: Request) -> bool:
    if state.planned is not None and state.planned.request_id == request.id:
        return False  # a planned switchover answers its request when it moves or gives up
    return state.last_request is None or state.last_request.id != request.id


def _request_unfit(work: _Round, request: Request) -> tuple[str | None, str | None]:
    """The site ``request`` moves the app to, and why it cannot be carried out at all
    (None: it can be weighed)."""
    spec, state = work.spec, work.state
    if spec.failover.mode == "Observe":
        return None, "Observe mode never acts"
    target_name = spec.primary.name if request.op is RequestOp.FAILBACK else request.site
    if target_name is None or spec.site(target_name) is None:
        return None, f"no site named {target_name!r}"
    if target_name == state.active_site:
        return target_name, f"{target_name} is already the active site"
    if work.obs.pinned is not None and work.obs.pinned != target_name and not request.force:
        return target_name, f"the active site is pinned to {work.obs.pinned}"
    return target_name, None


def _handle_request(work: _Round, request: Request) -> tuple[Verdict, str]:
    spec, state = work.spec, work.state
    active = spec.site(state.active_site)
    assert active is not None
    target_name, unfit = _request_unfit(work, request)
    if unfit is not None or target_name is None:
        return _answer(work, request, False, unfit or "no target")
    if request.op is RequestOp.FAILBACK and not request.force:
        lagging = _replication_lag(work, target_name)
        if lagging is not None:
            return _answer(work, request, False, lagging)
    who = "a FailoverDrill" if request.drill else "a user"
    reason = f"requested by {who} ({request.op}{' --force' if request.force else ''})"
    verdict, summary = _failover(
        work,
        active,
        reason,
        Situation.STEADY,
        target_name=target_name,
        manual=True,
        force=request.force,
        failback=request.op is RequestOp.FAILBACK,
        drill=request.drill,
    )
    accepted = work.state.active_site == target_name
    return _answer(work, request, accepted, summary, verdict)


def _answer(
    work: _Round,
    request: Request,
    accepted: bool,
    why: str,
    verdict: Verdict = REFUSED,
) -> tuple[Verdict, str]:
    outcome = RequestOutcome(request.id, request.op.value, accepted, why, work.now)
    work.state = replace(work.state, last_request=outcome)
    kind = NoteKind.REQUEST_ACCEPTED if accepted else NoteKind.REQUEST_REFUSED
    work.note(kind, f"{request.op.value} request {request.id}: {why}", warning=not accepted)
    return verdict, why


# --------------------------------------------------------------------------- planned switchover


def _start_planned(work: _Round, request: Request) -> tuple[Verdict, str]:
    """A planned switchover (``lifeboat failover --planned``): checked as the move will be
    (so that writes are not stopped for a move that cannot happen), then its first step:
    the write fence stops writes at the active site (no fence declared: the user has
    stopped them, and the drain is waited for at once)."""
    spec, state = work.spec, work.state
    active = spec.site(state.active_site)
    assert active is not None
    target_name, unfit = _request_unfit(work, request)
    if unfit is not None or target_name is None:
        return _answer(work, request, False, unfit or "no target")
    if not request.force:
        causes = _failover_gate(work)
        target, evaluation, unfits = _pick_target(
            work, exclude=active.name, wanted=target_name, force=False
        )
        work.facts.extend(evaluation)
        if target is None:
            causes.extend(unfits)
        if work.obs.traffic_plane is ApiPlaneState.IMPAIRED:
            causes.append("API plane of the DNS service Impaired: traffic cannot be moved")
        if causes:
            return _answer(work, request, False, "; ".join(causes))
    fence = "Webhook" if spec.failover.planned.write_fence.webhook is not None else "None"
    move = PlannedMove(
        request.id,
        request.op.value,
        active.name,
        target_name,
        state.epoch,
        PlannedStep.STOP_WRITES,
        work.now,
        forced=request.force,
        drill=request.drill,
        fence=fence,
    )
    timeout = spec.failover.planned.drain_timeout_seconds
    if fence == "None":
        move = replace(
            move,
            step=PlannedStep.DRAIN,
            stopped_at=work.now,
            fence_answer="no write fence declared: writes are stopped by the user",
        )
        first = f"no write fence declared: writes at {active.name} are taken as stopped now"
    else:
        first = f"stopping writes at {active.name} (webhook)"
    summary = (
        f"planned {request.op.value} {request.id} {active.name} -> {target_name}: {first}; "
        f"then replication to {target_name} must drain within {timeout} s"
    )
    work.state = replace(state, planned=move)
    work.note(NoteKind.PLANNED_STARTED, summary)
    return Verdict(Rule.PLANNED), summary


def _planned_request(move: PlannedMove) -> Request:
    return Request(
        move.request_id,
        RequestOp(move.op),
        move.to_site,
        move.forced,
        planned=True,
        drill=move.drill,
    )


def _planned_progress(work: _Round, move: PlannedMove) -> tuple[tuple[Verdict, str], bool]:
    """The next step of a planned switchover whose writes are (being) stopped: still
    waiting (True), or moved, or given up (refused: writes resume where the app is)."""
    spec = work.spec
    timeout = spec.failover.planned.drain_timeout_seconds
    waited = work.now - move.started_at
    head = f"planned switchover {move.from_site} -> {move.to_site}"
    if move.step is PlannedStep.STOP_WRITES:
        if waited >= timeout:
            why = (
                f"writes at {move.from_site} were not stopped within {timeout} s "
                "(drainTimeoutSeconds): the write fence did not answer"
            )
            return _abort_planned(work, move, why), False
        # No figure that counts up: each new summary would be a status write of its own.
        summary = f"{head}: stopping writes at {move.from_site} (gives up after {timeout} s)"
        return (Verdict(Rule.PLANNED), summary), True
    lagging = undrained(spec, move, work.obs.replication_flows)
    if lagging:
        work.facts.append(("drain", "; ".join(lagging)[:1024]))
        if waited >= timeout:
            why = (
                f"replication to {move.to_site} did not drain within {timeout} s "
                f"(drainTimeoutSeconds): {'; '.join(lagging)}"
            )
            return _abort_planned(work, move, why), False
        summary = (
            f"{head}: writes stopped, waiting for replication to {move.to_site} to drain "
            f"(gives up after {timeout} s): {'; '.join(lagging)}"
        )
        return (Verdict(Rule.PLANNED), summary), True
    if move.drained_at is None:
        move = replace(move, drained_at=work.now)
        work.state = replace(work.state, planned=move)
        work.note(
            NoteKind.DRAINED,
            f"{head}: replication to {move.to_site} drained: every change made before writes "
            f"stopped is there (RPO 0)",
        )
    active = spec.site(work.state.active_site)
    assert active is not None
    reason = (
        f"planned {move.op} requested by {'a FailoverDrill' if move.drill else 'a user'}"
        f"{' --force' if move.forced else ''}: writes "
        f"stopped at {move.from_site}, replication to {move.to_site} drained"
    )
    verdict, summary = _failover(
        work,
        active,
        reason,
        Situation.STEADY,
        target_name=move.to_site,
        manual=True,
        force=move.forced,
        failback=move.op == RequestOp.FAILBACK.value,
        planned=True,
        drill=move.drill,
    )
    if work.state.active_site != move.to_site:  # held by a safety check: wait, bounded
        if waited >= timeout:
            return _abort_planned(work, move, f"{summary} (drainTimeoutSeconds {timeout})"), False
        return (verdict, summary), True
    work.state = replace(
        work.state,
        planned=replace(
            move,
            step=PlannedStep.RESUME,
            moved_epoch=work.state.epoch,
            resume_site=move.to_site,
            message=summary[:1024],
        ),
    )
    return _answer(work, _planned_request(move), True, summary, verdict), False


def _abort_planned(work: _Round, move: PlannedMove, why: str) -> tuple[Verdict, str]:
    """Give a planned switchover up: the app stays, writes resume where it is."""
    work.state = replace(
        work.state,
        planned=replace(
            move, step=PlannedStep.ABORT, resume_site=work.state.active_site, message=why[:1024]
        ),
    )
    work.note(
        NoteKind.PLANNED_ABORTED,
        f"planned switchover {move.from_site} -> {move.to_site} given up: {why}; writes "
        f"resume at {work.state.active_site}",
        warning=True,
    )
    return _answer(work, _planned_request(move), False, why)


def _planned_overtaken(work: _Round) -> None:
    """A planned switchover still waiting when the app moved or the epoch rose another way
    (an outage's failover, a forced request, DNS holding a newer epoch) is given up; its
    request is answered unless this round answered another one."""
    move = work.state.planned
    if move is None or not move.step.waiting:
        return
    state = work.state
    if state.active_site == move.from_site and state.epoch == move.epoch:
        return
    why = (
        f"overtaken: the app is at {state.active_site}, epoch {state.epoch}, since the "
        f"planned switchover was asked at epoch {move.epoch}"
    )
    answered = state.last_request
    request = work.obs.request
    if request is not None and answered is not None and answered.id == request.id:
        work.state = replace(
            state,
            planned=replace(
                move, step=PlannedStep.ABORT, resume_site=state.active_site, message=why
            ),
        )
        work.note(NoteKind.PLANNED_ABORTED, f"planned switchover given up: {why}", warning=True)
        return
    _abort_planned(work, move, why)


def _planned_tick(work: _Round) -> None:
    """Carry a planned switchover on from what was completed since the last round: writes
    stopped (the fence answered) -> Drain; writes resumed -> Done or Aborted. Without a
    write fence the resume is the user's: said, and done at once (once DNS points at the
    new site, after a move)."""
    move = work.state.planned
    if move is None:
        return
    # A fence removed from the spec meanwhile leaves the resume to the user too.
    unfenced = move.fence == "None" or work.spec.failover.planned.write_fence.webhook is None
    if move.step is PlannedStep.STOP_WRITES and move.stopped_at is not None:
        move = replace(move, step=PlannedStep.DRAIN)
    elif move.step.resuming and (move.resumed_at is not None or unfenced):
        if move.step is PlannedStep.RESUME and not traffic_in_place(work.state, work.spec):
            pass  # the resume waits for DNS to point at the new site
        else:
            done = move.step is PlannedStep.RESUME
            site = move.resume_site or work.state.active_site
            resumed = (
                f"writes resumed at {site}"
                if move.resumed_at is not None
                else f"no write fence declared: resume writes at {site} yourself"
            )
            move = replace(
                move,
                step=PlannedStep.DONE if done else PlannedStep.ABORTED,
                resumed_at=move.resumed_at if move.resumed_at is not None else work.now,
            )
            if done:
                work.note(
                    NoteKind.PLANNED_DONE,
                    f"planned switchover {move.from_site} -> {move.to_site} done, epoch "
                    f"{move.moved_epoch}, RPO 0: {resumed}",
                )
            else:
                work.note(NoteKind.PLANNED_ABORTED, f"planned switchover ended: {resumed}")
    work.state = replace(work.state, planned=move)


def undrained(
    spec: ResilientAppSpec, move: PlannedMove, flows: Iterable[FlowProgress]
) -> list[str]:
    """What keeps replication from ``move.from_site`` to ``move.to_site`` from being
    drained, each dataset with its figure (empty: drained). Every dataset located at both
    sites must report, under the move's source and epoch, nothing pending and a catch-up
    that began after writes were stopped."""
    if spec.replication is None or move.stopped_at is None:
        return [] if spec.replication is None else ["writes not stopped yet"]
    sites = {move.from_site, move.to_site}
    located = [(d.name, {loc.site for loc in d.locations}) for d in spec.replication.objects]
    located += [(d.name, {loc.site for loc in d.locations}) for d in spec.replication.volumes]
    datasets = [name for name, at in located if sites <= at]
    found = {(f.dataset, f.destination): f for f in flows}
    causes = []
    for name in datasets:
        flow = found.get((name, move.to_site))
        if flow is None:
            causes.append(f"{name}: no figures yet")
        elif flow.source != move.from_site or flow.epoch != move.epoch:
            causes.append(f"{name}: figures of {flow.source} at epoch {flow.epoch}")
        elif flow.pending > 0:
            causes.append(f"{name}: {flow.pending} pending")
        elif flow.caught_up_at is None:
            causes.append(f"{name}: not known caught up yet")
        elif flow.caught_up_at < move.stopped_at:
            ago = move.stopped_at - flow.caught_up_at
            causes.append(f"{name}: last caught up {ago:.0f} s before writes stopped")
    return causes


def _record_fence(state: AppState, action: FenceWrites, now: float, answer: str) -> AppState:
    """The write fence answered ``action`` at ``now`` (its answer recorded)."""
    move = state.planned
    if move is None or move.request_id != action.request_id:
        return state
    if action.stop and move.step is PlannedStep.STOP_WRITES and move.stopped_at is None:
        move = replace(move, stopped_at=now, fence_answer=answer[:256])
    elif not action.stop and move.step.resuming and move.resumed_at is None:
        move = replace(move, resumed_at=now, fence_answer=answer[:256])
    else:
        return state
    return replace(state, planned=move)


def desired_fence(state: AppState, spec: ResilientAppSpec) -> tuple[FenceWrites | None, str]:
    """The write-fence call a planned switchover waits for (None: none), or why the one it
    will need waits (a resume at the new site waits for DNS to point there)."""
    move = state.planned
    if move is None or move.fence != "Webhook" or spec.failover.planned.write_fence.webhook is None:
        return None, ""
    if move.step is PlannedStep.STOP_WRITES and move.stopped_at is None:
        return FenceWrites(move.from_site, True, state.epoch, move.request_id), ""
    if move.step.resuming and move.resumed_at is None:
        site = move.resume_site or state.active_site
        call = FenceWrites(site, False, state.epoch, move.request_id)
        if move.step is PlannedStep.RESUME and not traffic_in_place(state, spec):
            return call, f"waits for DNS to point at {site} before writes resume there"
        return call, ""
    return None, ""


# --------------------------------------------------------------------------- actions


def desired_traffic(state: AppState, spec: ResilientAppSpec) -> ShiftTraffic:
    """The DNS state for ``state``: the active site weighted 100, every other site 0;
    evacuated zones' values left out."""
    targets = tuple(
        SiteTarget(
            s.name,
            _site_values(state, s),
            ACTIVE_WEIGHT if s.name == state.active_site else FENCED_WEIGHT,
            s.traffic_health_check_url,
        )
        for s in spec.sites
    )
    dns = _dns_name(spec)
    previous = state.traffic.dns if state.traffic else None
    retire = previous if previous is not None and not previous.same_record(dns) else None
    return ShiftTraffic(state.active_site, state.epoch, dns, targets, retire, spec.traffic.routing)


def _site_values(state: AppState, site: Site) -> tuple[str, ...]:
    serving = {z for z in site.zones if ZoneKey(site.name, z) not in state.evacuated}
    values = site.values(serving)
    return values or site.values()  # never publish an empty record


def desired_capacity(state: AppState, spec: ResilientAppSpec) -> tuple[SetCapacity, ...]:
    """The capacity every site with a capacity driver should run, per zone.

    The active site runs ``perZone`` in each zone; an evacuated zone runs nothing and its
    share goes to the site's serving zones (the total is kept). A standby runs
    ``standbyPerZone``.
    """
    wanted = []
    for site in spec.sites:
        if site.capacity is None:
            continue
        active = site.name == state.active_site
        per_zone = site.capacity.per_zone if active else site.capacity.standby()
        out = (
            {z for z in site.zones if ZoneKey(site.name, z) in state.evacuated} if active else set()
        )
        serving = [z for z in site.zones if z not in out] or list(site.zones)
        total = per_zone * len(site.zones)
        base, extra = divmod(total, len(serving))
        counts = dict.fromkeys(site.zones, 0)
        for i, zone in enumerate(serving):
            counts[zone] = base + (1 if i < extra else 0)
        zones = tuple((z, counts[z]) for z in site.zones)
        wanted.append(SetCapacity(site.name, (site.provider, site.region), zones, state.epoch))
    return tuple(wanted)


def volume_datasets_at(spec: ResilientAppSpec, site: str) -> tuple[str, ...]:
    """Names of the volume datasets with a location at ``site``."""
    if spec.replication is None:
        return ()
    return tuple(
        d.name for d in spec.replication.volumes if any(loc.site == site for loc in d.locations)
    )


def desired_restore(state: AppState, spec: ResilientAppSpec) -> RestoreVolumes | None:
    """The volume restore the latest failover calls for and that was not carried out.

    A failover to a site that holds volume datasets restores them there, once per epoch,
    into the site's serving zones (all of them when none serves).
    """
    record = state.last_failover
    if record is None or record.epoch != state.epoch or record.to_site != state.active_site:
        return None
    applied = state.restores.get(state.active_site)
    if applied is not None and applied.epoch == state.epoch:
        return None
    site = spec.site(state.active_site)
    datasets = volume_datasets_at(spec, state.active_site)
    if site is None or not datasets:
        return None
    serving = tuple(
        z
        for z in site.zones
        if ZoneKey(site.name, z) not in state.evacuated
        and state.zone(ZoneKey(site.name, z)).state in (ZoneState.HEALTHY, ZoneState.UNKNOWN)
    )
    return RestoreVolumes(
        site.name,
        (site.provider, site.region),
        state.epoch,
        datasets,
        record.from_site,
        serving or site.zones,
    )


def traffic_in_place(state: AppState, spec: ResilientAppSpec) -> bool:
    """Whether DNS holds what the current state and spec call for."""
    applied = state.traffic
    return (
        applied is not None
        and applied.epoch == state.epoch
        and applied.fingerprint == desired_traffic(state, spec).fingerprint
    )


def _reconcile(work: _Round) -> tuple[tuple[Action, ...], tuple[Held, ...]]:
    """The actions that close the gap between desired and applied state.

    Nothing in Observe mode, nor in Manual mode beyond what was approved (the desired
    state only changes through approved decisions). Actions towards an Impaired region
    are held, not emitted.
    """
    if work.spec.failover.mode == "Observe":
        return (), ()
    state, spec = work.state, work.spec
    due: list[Action] = []
    if not traffic_in_place(state, spec):
        due.append(desired_traffic(state, spec))
    restore = desired_restore(work.seen(), spec)
    if restore is not None:
        due.append(restore)
    fence, fence_waits = desired_fence(state, spec)
    capacity = desired_capacity(state, spec)
    order = sorted(capacity, key=lambda c: c.site != state.active_site)
    for change in order:
        applied = state.capacity.get(change.site)
        if applied is None or applied.fingerprint != change.fingerprint:
            due.append(change)
    actions: list[Action] = []
    held: list[Held] = []
    if fence is not None and fence_waits:
        held.append(Held(fence, fence_waits))
    elif fence is not None:  # a webhook, not a region's API plane: static stability aside
        actions.append(fence)
    for action in due:
        if isinstance(action, FenceWrites):
            continue
        region = (
            work.obs.traffic_plane
            if isinstance(action, ShiftTraffic)
            else work.obs.api_planes.get(action.region, ApiPlaneState.UNKNOWN)
        )
        if isinstance(action, ShiftTraffic) and state.dns_conflict is not None:
            held.append(Held(action, f"DNS name held by {state.dns_conflict}"))
        elif isinstance(action, ShiftTraffic) and not state.dns_read:
            held.append(Held(action, "DNS not read back yet since the status was loaded"))
        elif region is ApiPlaneState.IMPAIRED:
            where = "the DNS service" if isinstance(action, ShiftTraffic) else action.region[1]
            why = (
                None
                if isinstance(action, ShiftTraffic)
                else work.obs.api_plane_reasons.get(action.region)
            )
            figure = f": {why}" if why else ""
            held.append(Held(action, f"API plane of {where} Impaired{figure} (static stability)"))
        elif (waiting := _waits_for_active(work, action)) is not None:
            held.append(Held(action, waiting))
        else:
            actions.append(action)
    return tuple(actions), tuple(held)


def _waits_for_active(work: _Round, action: Action) -> str | None:
    """Why a capacity decrease of a site that no longer takes the traffic must wait: the
    active site has not reached the capacity it was asked for (its change is held, failed
    or not carried out yet), or its driver has not reported that capacity Ready yet. Serving
    capacity never falls below what one site runs; the wait for Ready is bounded by
    ``readiness.capacityTimeoutSeconds`` (then the site shrinks anyway, and the trace and
    the CapacityNotReady Event say why)."""
    state, spec = work.state, work.spec
    if not isinstance(action, SetCapacity) or action.site == state.active_site:
        return None
    applied = state.capacity.get(action.site)
    if applied is None or sum(n for _, n in action.zones) >= applied.total:
        return None
    wanted = next((c for c in desired_capacity(state, spec) if c.site == state.active_site), None)
    if wanted is None:
        return None
    done = state.capacity.get(state.active_site)
    if done is None or done.fingerprint != wanted.fingerprint:
        return f"waits for {state.active_site} to reach its capacity before {action.site} shrinks"
    if done.ready_at is not None:
        return None
    timeout = capacity_timeout(spec)
    waited = work.now - done.applied_at
    if waited >= timeout:
        work.facts.append(
            (
                "capacity",
                f"{action.site} shrinks although the capacity of {state.active_site} is not "
                f"Ready after {waited:.0f} s (capacityTimeoutSeconds {timeout:g})",
            )
        )
        return None
    reading = work.obs.capacity.get(state.active_site)
    ready = verified(done.zones, done.applied_at, reading)
    figure = f"{ready}/{done.total} Ready" if ready is not None else "not read since it was set"
    return (
        f"waits for the capacity of {state.active_site} to be Ready ({figure}) before "
        f"{action.site} shrinks, at most {timeout:g} s after it was set"
    )


# --------------------------------------------------------------------------- reporting


def _probed(state: AppState, site: Site) -> list[ZoneHealth]:
    zones = [state.zone(ZoneKey(site.name, z)) for z in site.zones]
    return [z for z in zones if z.state is not ZoneState.UNKNOWN]


def _facts(work: _Round) -> Iterable[tuple[str, str]]:
    state, spec = work.state, work.spec
    yield "active site", state.active_site
    yield "epoch", str(state.epoch)
    cascade = spec.failover.cascade
    yield (
        "thresholds",
        f"fail {spec.health.failure_threshold}, ok {spec.health.success_threshold}, "
        f"cascade {cascade.zones_down} zones or API {cascade.api_plane}",
    )
    for site in spec.sites:
        zones = ", ".join(
            f"{z}={work.zone(site.name, z).state}"
            + _own_state(work, ZoneKey(site.name, z))
            + _out_words(state, ZoneKey(site.name, z))
            for z in site.zones
        )
        yield f"site {site.name}", f"{zones}; API plane {work.api(site)}"
    if work.obs.pinned:
        yield "pinned", work.obs.pinned
    if work.vantage is not None:
        yield "vantage", work.vantage.summary()
        for disagreement in work.vantage.disagreements:
            yield "disagreement", f"{disagreement}: not Down for decisions"


def _out_words(state: AppState, key: ZoneKey) -> str:
    if key == drill_zone(state) and state.drill_evacuation is not None:
        return f"(out: drill {state.drill_evacuation.drill})"
    return "(out)" if key in state.evacuated else ""


def _own_state(work: _Round, key: ZoneKey) -> str:
    """`` (here X)`` when this peer sees the zone otherwise than decisions do."""
    own = work.state.zone(key).state
    return "" if own is work.zone(key.site, key.zone).state else f"(here {own})"


def _steady_summary(work: _Round, active: Site, situation: Situation) -> str:
    healthy = sum(1 for z in active.zones if work.zone(active.name, z).healthy)
    text = f"active site {active.name} serves with {healthy}/{len(active.zones)} zones healthy"
    if situation is Situation.API_PLANE_ONLY:
        return f"{text}; region {active.region} API plane Impaired: frozen, no mutating calls there"
    if situation is Situation.LONE_ZONE and not work.spec.failover.zonal_evacuation.enabled:
        return f"{text}; a zone is Down but zonal evacuation is disabled"
    if situation is Situation.LONE_ZONE:
        return f"{text}; the failed zone is out of traffic"
    if work.vantage is not None and work.vantage.disagreements:
        zones = ", ".join(str(d.zone) for d in work.vantage.disagreements)
        return f"{text}; peers disagree on {zones}: a minority sees Down, not acted on"
    return f"{text}; nothing to do"


def phase_of(state: AppState, spec: ResilientAppSpec, obs: Observations | None = None) -> Phase:
    """The app's overall phase in ``state`` (its zones as decisions see them, every
    vantage in ``obs`` weighed)."""
    if obs is not None:
        state = judged_state(state, spec, obs.vantage)
    active = spec.site(state.active_site)
    assert active is not None
    failover = state.last_failover
    if failover and failover.epoch == state.epoch and state.traffic_epoch < state.epoch:
        return Phase.FAILING_OVER
    probed = _probed(state, active)
    if not probed:
        return Phase.PENDING
    if all(z.down for z in probed):
        return Phase.DOWN
    api = (obs.api_planes if obs else {}).get((active.provider, active.region))
    if api is ApiPlaneState.IMPAIRED:
        return Phase.FROZEN
    every = [state.zone(ZoneKey(s.name, z)) for s in spec.sites for z in s.zones]
    if real_evacuations(state) or any(
        z.state not in (ZoneState.HEALTHY, ZoneState.UNKNOWN) for z in every
    ):
        return Phase.DEGRADED
    return Phase.HEALTHY
