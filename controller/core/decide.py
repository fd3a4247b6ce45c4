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

Then, in this order: a user request (failover to a site, failback), the return of
evacuated zones that stayed Healthy for ``zonalEvacuation.restoreAfterSeconds``, and an
automatic failback when the policy asks for it.

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

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from controller.api.models import ResilientAppSpec, Site
from controller.core.apiplane import ApiPlaneState
from controller.core.health import (
    ProbeOutcome,
    ProbeResult,
    Thresholds,
    ZoneHealth,
    ZoneKey,
    ZoneState,
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
    FailoverRecord,
    Held,
    Note,
    NoteKind,
    Observations,
    Phase,
    Recommendation,
    Request,
    RequestOp,
    RequestOutcome,
    Response,
    RestoredVolume,
    RestoreVolumes,
    SetCapacity,
    ShiftTraffic,
    SiteTarget,
    Situation,
    Trace,
    prune_times,
    recommendation_id,
)

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

    def api(self, site: Site) -> ApiPlaneState:
        return self.obs.api_planes.get((site.provider, site.region), ApiPlaneState.UNKNOWN)

    def zone(self, site: str, zone: str) -> ZoneHealth:
        return self.state.zone(ZoneKey(site, zone))

    def note(self, kind: NoteKind, message: str, warning: bool = False) -> None:
        self.notes.append(Note(kind, message, warning))


def decide(
    state: AppState, observations: Observations, spec: ResilientAppSpec, now: float
) -> Decision:
    """One decision round. Pure: same inputs, same outputs."""
    work = _Round(spec, observations, now, state, [], [])
    _conform_to_spec(work)
    _observe_probes(work)
    _track_site_health(work)
    rule, summary = _decide(work)
    work.state = replace(
        work.state,
        last_rule=rule,
        failover_times=prune_times(work.state.failover_times, now),
    )
    actions, held = _reconcile(work)
    facts = tuple(_facts(work)) + tuple(work.facts)
    trace = Trace(rule, summary, facts)
    return Decision(
        work.state,
        actions,
        held,
        trace,
        tuple(work.notes),
        phase_of(work.state, spec, observations),
    )


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
    if isinstance(action, RestoreVolumes):
        restores = dict(state.restores)
        restores[action.site] = AppliedRestore(action.epoch, now, restored, missing)
        return replace(state, restores=restores)
    if isinstance(action, SetCapacity):
        capacity = dict(state.capacity)
        capacity[action.site] = AppliedCapacity(action.fingerprint, now, action.zones)
        return replace(state, capacity=capacity)
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
    state = replace(state, zones=zones, evacuated=evacuated, restores=restores)
    if state.recommendation and _stale(state.recommendation, spec):
        state = replace(state, recommendation=None)
    if spec.site(state.active_site) is None:
        work.note(
            NoteKind.SPEC_CHANGED,
            f"active site {state.active_site} was removed from the spec; "
            f"traffic goes back to the declared primary {spec.primary.name}",
            warning=True,
        )
        state = replace(state, active_site=spec.primary.name, epoch=state.epoch + 1)
    work.state = state


def _stale(recommendation: Recommendation, spec: ResilientAppSpec) -> bool:
    return recommendation.target is not None and spec.site(recommendation.target) is None


def _observe_probes(work: _Round) -> None:
    health = work.spec.health
    thresholds = Thresholds(health.failure_threshold, health.success_threshold)
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


def _track_site_health(work: _Round) -> None:
    since = dict(work.state.site_healthy_since)
    for site in work.spec.sites:
        probed = _probed(work.state, site)
        if probed and all(z.healthy for z in probed):
            since.setdefault(site.name, work.now)
        else:
            since.pop(site.name, None)
    work.state = replace(work.state, site_healthy_since=since)


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


def _decide(work: _Round) -> tuple[str, str]:
    """Apply the rules; the rule that decided and a one-sentence summary."""
    spec = work.spec
    active = spec.site(work.state.active_site)
    assert active is not None  # _conform_to_spec guarantees it
    if work.obs.request is not None and _new_request(work.state, work.obs.request):
        return _handle_request(work, work.obs.request)

    situation, down = classify(work.state, active, work.api(active), spec)
    response = RESPONSE[situation]
    work.facts.append(("situation", f"{situation} -> {response}"))
    _announce_freeze(work, active, situation)

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
    return situation.value, _steady_summary(work, active, situation)


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
    was = work.state.last_rule == Situation.API_PLANE_ONLY.value
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
) -> tuple[str, str]:
    rule = "failback" if failback else (situation.value if not manual else "manual-failover")
    fresh = work.state.last_rule not in (rule, f"{rule}-held")
    blocked = None if force else _failover_gate(work)
    target, evaluation = _pick_target(work, exclude=active.name, wanted=target_name, force=force)
    work.facts.extend(evaluation)
    if blocked is None and target is None:
        blocked = "no site qualifies as a failover target"
    if blocked is None and work.obs.traffic_plane is ApiPlaneState.IMPAIRED and not force:
        blocked = "the DNS service's API plane is Impaired: traffic cannot be moved"
    if blocked is not None:
        if fresh:
            kind = NoteKind.NO_TARGET if target is None else NoteKind.HELD
            work.note(kind, f"{reason}; failover held: {blocked}", warning=True)
        return f"{rule}-held", f"{reason}; failover held: {blocked}"
    assert target is not None
    summary = f"{reason}; {'failing back' if failback else 'failing over'} to {target.name}"
    if not manual and not _may_act(work, Response.FAILOVER, target.name, (), summary):
        return rule, f"{summary} (recommended, {work.spec.failover.mode} mode)"
    _start_failover(work, active, target, reason, manual=manual, failback=failback)
    return rule, f"{summary} (epoch {work.state.epoch})"


def _failover_gate(work: _Round) -> str | None:
    """Why a failover may not happen now (dwell, budget, pin), or None."""
    policy = work.spec.failover
    if work.obs.pinned is not None:
        return f"the app is pinned to site {work.obs.pinned}"
    last = work.state.last_failover
    if last is not None and work.now - last.decided_at < policy.min_dwell_seconds:
        ago = work.now - last.decided_at
        return (
            f"minimum dwell: the last failover was {ago:.0f}s ago "
            f"(policy {policy.min_dwell_seconds}s)"
        )
    recent = prune_times(work.state.failover_times, work.now)
    if len(recent) >= policy.max_failovers_per_hour:
        return (
            f"failover budget spent: {len(recent)} in the last hour "
            f"(max {policy.max_failovers_per_hour})"
        )
    return None


def _pick_target(
    work: _Round, exclude: str, wanted: str | None, force: bool
) -> tuple[Site | None, list[tuple[str, str]]]:
    """The first site, by (priority, spec order), fit to take the traffic."""
    spec = work.spec
    ranked = sorted(
        (s for s in spec.sites if s.name != exclude and (wanted is None or s.name == wanted)),
        key=lambda s: (s.priority, spec.sites.index(s)),
    )
    evaluation: list[tuple[str, str]] = []
    chosen: Site | None = None
    for site in ranked:
        healthy = sum(1 for z in site.zones if work.zone(site.name, z).healthy)
        api = work.api(site)
        if api is ApiPlaneState.IMPAIRED and not force:
            verdict = f"API plane of {site.region} Impaired"
        elif healthy < spec.failover.min_healthy_target_zones and not force:
            verdict = f"needs {spec.failover.min_healthy_target_zones} healthy zone(s)"
        elif chosen is None:
            chosen, verdict = site, "chosen"
        else:
            verdict = "fit, lower preference"
        evaluation.append(
            (f"target {site.name}", f"{healthy}/{len(site.zones)} healthy, API {api}: {verdict}")
        )
    return chosen, evaluation


def _start_failover(
    work: _Round, active: Site, target: Site, reason: str, *, manual: bool, failback: bool
) -> None:
    state = work.state
    epoch = state.epoch + 1
    record = FailoverRecord(
        epoch,
        active.name,
        target.name,
        reason,
        work.now,
        _outage_start(state, active),
        manual=manual,
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
        failover_times=(*prune_times(state.failover_times, work.now), work.now),
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


def _evacuate(work: _Round, site: Site, zones: list[str]) -> tuple[str, str]:
    serving = [
        z
        for z in site.zones
        if ZoneKey(site.name, z) not in work.state.evacuated
        and z not in zones
        and work.zone(site.name, z).healthy
    ]
    rule = Situation.LONE_ZONE.value
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


def _restore_zones(work: _Round) -> tuple[str, str] | None:
    """Evacuated zones (of any site) back in traffic once Healthy for the restore period,
    unless their region's API plane is Impaired (capacity cannot move back there)."""
    after = work.spec.failover.zonal_evacuation.restore_after_seconds
    back: list[ZoneKey] = []
    for key in sorted(work.state.evacuated):
        site = work.spec.site(key.site)
        health = work.zone(key.site, key.zone)
        if site is None or not health.healthy or work.api(site) is ApiPlaneState.IMPAIRED:
            continue
        if work.now - (health.since or work.now) >= after:
            back.append(key)
    if not back:
        return None
    names = ", ".join(str(k) for k in back)
    summary = f"zone(s) {names} have been Healthy for {after}s: back in traffic"
    target = back[0].site
    zones = tuple(k.zone for k in back)
    if not _may_act(work, Response.EVACUATE, target, zones, summary, restore=True):
        return "zone-restore", f"{summary} (recommended, {work.spec.failover.mode} mode)"
    work.state = replace(
        work.state, evacuated=work.state.evacuated - set(back), recommendation=None
    )
    work.note(NoteKind.ZONE_RESTORED, summary)
    return "zone-restore", summary


def _automatic_failback(work: _Round, active: Site, situation: Situation) -> tuple[str, str] | None:
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
    return state.last_request is None or state.last_request.id != request.id


def _handle_request(work: _Round, request: Request) -> tuple[str, str]:
    spec, state = work.spec, work.state
    active = spec.site(state.active_site)
    assert active is not None
    if spec.failover.mode == "Observe":
        return _answer(work, request, False, "Observe mode never acts")
    target_name = spec.primary.name if request.op is RequestOp.FAILBACK else request.site
    if target_name is None or spec.site(target_name) is None:
        return _answer(work, request, False, f"no site named {target_name!r}")
    if target_name == active.name:
        return _answer(work, request, False, f"{target_name} is already the active site")
    if work.obs.pinned is not None and work.obs.pinned != target_name and not request.force:
        return _answer(work, request, False, f"the active site is pinned to {work.obs.pinned}")
    if request.op is RequestOp.FAILBACK and not request.force:
        lagging = _replication_lag(work, target_name)
        if lagging is not None:
            return _answer(work, request, False, lagging)
    reason = f"requested by a user ({request.op}{' --force' if request.force else ''})"
    rule, summary = _failover(
        work,
        active,
        reason,
        Situation.STEADY,
        target_name=target_name,
        manual=True,
        force=request.force,
        failback=request.op is RequestOp.FAILBACK,
    )
    accepted = work.state.active_site == target_name
    return _answer(work, request, accepted, summary, rule)


def _answer(
    work: _Round, request: Request, accepted: bool, why: str, rule: str = "request-refused"
) -> tuple[str, str]:
    outcome = RequestOutcome(request.id, request.op.value, accepted, why, work.now)
    work.state = replace(work.state, last_request=outcome)
    kind = NoteKind.REQUEST_ACCEPTED if accepted else NoteKind.REQUEST_REFUSED
    work.note(kind, f"{request.op.value} request {request.id}: {why}", warning=not accepted)
    return rule, why


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
    traffic = spec.traffic
    dns = DnsName(
        traffic.hosted_zone_id,
        traffic.hosted_zone_name,
        traffic.record_name,
        traffic.record_type,
        traffic.ttl,
    )
    previous = state.traffic.dns if state.traffic else None
    retire = previous if previous is not None and not previous.same_record(dns) else None
    return ShiftTraffic(state.active_site, state.epoch, dns, targets, retire, traffic.routing)


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
    restore = desired_restore(state, spec)
    if restore is not None:
        due.append(restore)
    capacity = desired_capacity(state, spec)
    order = sorted(capacity, key=lambda c: c.site != state.active_site)
    for change in order:
        applied = state.capacity.get(change.site)
        if applied is None or applied.fingerprint != change.fingerprint:
            due.append(change)
    actions: list[Action] = []
    held: list[Held] = []
    for action in due:
        region = (
            work.obs.traffic_plane
            if isinstance(action, ShiftTraffic)
            else work.obs.api_planes.get(action.region, ApiPlaneState.UNKNOWN)
        )
        if region is ApiPlaneState.IMPAIRED:
            where = "the DNS service" if isinstance(action, ShiftTraffic) else action.region[1]
            held.append(Held(action, f"API plane of {where} is Impaired (static stability)"))
        else:
            actions.append(action)
    return tuple(actions), tuple(held)


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
            + ("(out)" if ZoneKey(site.name, z) in state.evacuated else "")
            for z in site.zones
        )
        yield f"site {site.name}", f"{zones}; API plane {work.api(site)}"
    if work.obs.pinned:
        yield "pinned", work.obs.pinned


def _steady_summary(work: _Round, active: Site, situation: Situation) -> str:
    healthy = sum(1 for z in active.zones if work.zone(active.name, z).healthy)
    text = f"active site {active.name} serves with {healthy}/{len(active.zones)} zones healthy"
    if situation is Situation.API_PLANE_ONLY:
        return f"{text}; region {active.region} API plane Impaired: frozen, no mutating calls there"
    if situation is Situation.LONE_ZONE and not work.spec.failover.zonal_evacuation.enabled:
        return f"{text}; a zone is Down but zonal evacuation is disabled"
    if situation is Situation.LONE_ZONE:
        return f"{text}; the failed zone is out of traffic"
    return f"{text}; nothing to do"


def phase_of(state: AppState, spec: ResilientAppSpec, obs: Observations | None = None) -> Phase:
    """The app's overall phase in ``state``."""
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
    if state.evacuated or any(z.state not in (ZoneState.HEALTHY, ZoneState.UNKNOWN) for z in every):
        return Phase.DEGRADED
    return Phase.HEALTHY
