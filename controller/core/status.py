"""Translate between the core's state and a ResilientApp's ``status`` (both directions).

The status is the operator's memory: a restarted operator rebuilds the core's state from
it and carries on (zone counters, epoch, evacuated zones, what DNS and capacity were last
set to, the failover budget, a pending recommendation). Pure.

Each value of the core has one wire form in :mod:`controller.api.models` (FailoverRecord
and FailoverStatus, RestoredVolume and RestoredVolumeStatus, AppliedTraffic and
TrafficStatus, ...), and the conversions between the two live here, nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.api.conditions import ConditionType, parse_rfc3339, rfc3339, set_condition
from controller.api.models import (
    MAX_EPOCH,
    CapacityStatus,
    Condition,
    DecisionRecord,
    DrillEvacuationStatus,
    Fact,
    FailoverStatus,
    PendingAction,
    PlannedSwitchoverStatus,
    ReadinessStatus,
    RecommendationStatus,
    RequestStatus,
    ResilientAppSpec,
    ResilientAppStatus,
    RestoredVolumeStatus,
    SiteStatus,
    TrafficStatus,
    VolumeRestoreStatus,
    ZoneCount,
    ZoneStatus,
)
from controller.core import model as m
from controller.core.apiplane import ApiPlaneState
from controller.core.capacity import SiteReadiness, capacity_timeout, verified
from controller.core.decide import (
    capacity_asked_at,
    initial_state,
    judged_state,
    real_evacuations,
    traffic_in_place,
)
from controller.core.health import ZoneHealth, ZoneKey, ZoneState


def _ts(value: str | None) -> float | None:
    return parse_rfc3339(value) if value else None


def _fmt(value: float | None, *, precise: bool = True) -> str | None:
    return rfc3339(value, precise=precise) if value is not None else None


# --------------------------------------------------------------------------- status -> state


def recorded_epoch(status: ResilientAppStatus) -> int:
    """The highest epoch ``status`` records anywhere (0: none): its own, the one DNS was
    last set for, the last failover's, the restores'. They agree in a status Lifeboat
    wrote; when a field was lost or edited, the epoch still never goes back."""
    return max(
        status.epoch or 0,
        status.traffic.epoch if status.traffic else 0,
        status.last_failover.epoch if status.last_failover else 0,
        *(r.epoch for r in status.volume_restores),
    )


def stated_epoch(raw: object) -> int:
    """The highest epoch a stored status states where epochs are recorded (``epoch``,
    ``traffic.epoch``, ``lastFailover.epoch``, ``volumeRestores[].epoch``), read from the
    raw status: a record dropped because another of its fields is unreadable still says
    how far the epoch went (0: nowhere)."""

    def epoch(value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_EPOCH:
            return value
        return 0

    if not isinstance(raw, Mapping):
        return 0
    found = [epoch(raw.get("epoch"))]
    for key in ("traffic", "lastFailover"):
        record = raw.get(key)
        if isinstance(record, Mapping):
            found.append(epoch(record.get("epoch")))
    restores = raw.get("volumeRestores")
    if isinstance(restores, list):
        found += [epoch(r.get("epoch")) for r in restores if isinstance(r, Mapping)]
    return max(found)


def _recorded_site(status: ResilientAppStatus, epoch: int, spec: ResilientAppSpec) -> str:
    """The active site of ``epoch`` as ``status`` records it: ``activeSite``, else what
    DNS was set to or the last failover went to under that epoch, else the site marked
    active; the declared primary when none says (DNS, read back before anything moves,
    then tells which site the epoch went to)."""
    candidates = [status.active_site]
    if status.traffic and status.traffic.epoch == epoch:
        candidates.append(status.traffic.active_site)
    if status.last_failover and status.last_failover.epoch == epoch:
        candidates.append(status.last_failover.to_site)
    candidates += [s.name for s in status.sites if s.active]
    known = (site for site in candidates if site and spec.site(site) is not None)
    return next(known, status.active_site or spec.primary.name)


def state_from_status(
    status: ResilientAppStatus, spec: ResilientAppSpec, *, floor: int = 0
) -> m.AppState:
    """The core state persisted in ``status``; a fresh state when there is none. A status
    that lost its epoch or active site keeps the highest epoch it records, or ``floor``
    (what the stored status stated, :func:`stated_epoch`) when higher: the epoch never
    goes back, and DNS read back says where that epoch went."""
    epoch = max(recorded_epoch(status), floor)
    if epoch == 0:
        return initial_state(spec)
    active_site = _recorded_site(status, epoch, spec)
    zones = {ZoneKey(z.site, z.zone): _zone_health(z) for z in status.zones}
    evacuated = frozenset(ZoneKey(z.site, z.zone) for z in status.zones if not z.in_traffic)
    capacity = {
        s.name: m.AppliedCapacity(
            s.capacity.fingerprint,
            parse_rfc3339(s.capacity.applied_time),
            tuple((c.zone, c.count) for c in s.capacity.zones),
            ready_at=_ts(s.capacity.ready_time),
            overdue=bool(s.capacity.overdue),
        )
        for s in status.sites
        if s.capacity is not None
    }
    healthy_since = {
        s.name: parse_rfc3339(s.healthy_since) for s in status.sites if s.healthy_since
    }
    return m.AppState(
        active_site=active_site,
        epoch=epoch,
        zones=zones,
        evacuated=evacuated,
        traffic=_applied_traffic(status.traffic) if status.traffic else None,
        capacity=capacity,
        last_failover=_failover(status.last_failover) if status.last_failover else None,
        failover_times=tuple(parse_rfc3339(t) for t in status.recent_failovers),
        recommendation=_recommendation(status.recommendation),
        last_request=_request(status.last_request),
        last_rule=m.Verdict.parse(status.last_decision.rule if status.last_decision else None),
        site_healthy_since=healthy_since,
        restores={r.site: _restore(r) for r in status.volume_restores},
        planned=_planned(status.planned_switchover),
        drill_evacuation=_drill_evacuation(status.drill_evacuation, evacuated),
    )


def _drill_evacuation(
    saved: DrillEvacuationStatus | None, evacuated: frozenset[ZoneKey]
) -> m.DrillEvacuation | None:
    """The drill's claim, if its zone is still out (a claim without it holds nothing)."""
    if saved is None or ZoneKey(saved.site, saved.zone) not in evacuated:
        return None
    return m.DrillEvacuation(
        saved.drill,
        saved.request_id,
        saved.site,
        saved.zone,
        parse_rfc3339(saved.start_time),
        parse_rfc3339(saved.expiry_time),
    )


def _drill_evacuation_status(held: m.DrillEvacuation | None) -> DrillEvacuationStatus | None:
    if held is None:
        return None
    return DrillEvacuationStatus(
        drill=held.drill[:253],
        request_id=held.request_id[:256],
        site=held.site,
        zone=held.zone,
        start_time=rfc3339(held.started_at, precise=True),
        expiry_time=rfc3339(held.expires_at, precise=True),
    )


def _planned(saved: PlannedSwitchoverStatus | None) -> m.PlannedMove | None:
    if saved is None:
        return None
    return m.PlannedMove(
        request_id=saved.id,
        op=saved.op,
        from_site=saved.from_site,
        to_site=saved.to_site,
        epoch=saved.epoch,
        step=m.PlannedStep(saved.step),
        started_at=parse_rfc3339(saved.start_time),
        forced=saved.forced,
        drill=saved.drill,
        fence=saved.fence,
        stopped_at=_ts(saved.writes_stopped_time),
        drained_at=_ts(saved.drained_time),
        moved_epoch=saved.moved_epoch,
        resume_site=saved.resume_site,
        resumed_at=_ts(saved.writes_resumed_time),
        fence_answer=saved.fence_answer,
        message=saved.message,
    )


def _restore(saved: VolumeRestoreStatus) -> m.AppliedRestore:
    return m.AppliedRestore(
        epoch=saved.epoch,
        applied_at=parse_rfc3339(saved.time),
        volumes=tuple(
            m.RestoredVolume(
                v.dataset, v.volume, v.volume_id, v.zone, v.snapshot_id, _ts(v.snapshot_time)
            )
            for v in saved.volumes
        ),
        missing=saved.missing,
    )


def _zone_health(z: ZoneStatus) -> ZoneHealth:
    return ZoneHealth(
        state=ZoneState(z.state),
        consecutive_failures=z.consecutive_failures,
        consecutive_successes=z.consecutive_successes,
        since=_ts(z.since),
        failing_since=_ts(z.failing_since),
        last_ok=_ts(z.last_ok_time),
        last_probe=_ts(z.last_probe_time),
        last_latency=z.latency_ms / 1000 if z.latency_ms is not None else None,
        last_detail=z.message,
    )


def _applied_traffic(saved: TrafficStatus) -> m.AppliedTraffic | None:
    if not saved.active_site or not saved.applied_time:
        return None
    dns = None
    if saved.record_name and saved.record_type and saved.ttl is not None:
        dns = m.DnsName(
            saved.hosted_zone_id,
            saved.hosted_zone_name,
            saved.record_name,
            saved.record_type,
            saved.ttl,
        )
    return m.AppliedTraffic(
        saved.active_site,
        saved.epoch,
        parse_rfc3339(saved.applied_time),
        saved.change_id or "",
        saved.fingerprint or "",
        dns,
    )


def _failover(f: FailoverStatus) -> m.FailoverRecord:
    return m.FailoverRecord(
        epoch=f.epoch,
        from_site=f.from_site,
        to_site=f.to_site,
        reason=f.reason,
        decided_at=parse_rfc3339(f.decided_time),
        outage_start=_ts(f.outage_start_time),
        completed_at=_ts(f.completed_time),
        manual=f.manual,
        forced=f.forced,
        planned=f.planned,
        rpo_seconds=f.rpo_seconds,
        drill=f.drill,
    )


def _recommendation(saved: RecommendationStatus | None) -> m.Recommendation | None:
    """The pending recommendation (none for a response this version does not know, as a
    status edited by hand or written by a newer Lifeboat may hold: it cannot be carried
    out, and the next round recommends anew)."""
    if saved is None or saved.response not in {r.value for r in m.Response}:
        return None
    return m.Recommendation(
        saved.id,
        m.Response(saved.response),
        saved.summary,
        saved.target,
        saved.zones,
        parse_rfc3339(saved.time),
    )


def _request(saved: RequestStatus | None) -> m.RequestOutcome | None:
    if saved is None:
        return None
    return m.RequestOutcome(
        saved.id, saved.op, saved.accepted, saved.reason, parse_rfc3339(saved.time)
    )


# --------------------------------------------------------------------------- state -> status


def status_from_state(
    decision: m.Decision,
    spec: ResilientAppSpec,
    previous: ResilientAppStatus,
    *,
    observations: m.Observations,
    running: str | None,
    generation: int | None,
    now: float,
) -> ResilientAppStatus:
    """The status to write after a decision round (``running``: the action in flight)."""
    state = decision.state
    keys = [ZoneKey(s.name, z) for s in spec.sites for z in s.zones]
    # The zones as decisions see them (every peer's view weighed; this peer's own counters
    # and times): with peers, the status is the leader's, and its own view alone is one
    # vantage of several (a zone only the leader cannot reach is not Down).
    seen = judged_state(state, spec, observations.vantage)
    zones = tuple(_zone_status(key, seen, spec) for key in keys)
    readiness = {r.site: r for r in decision.readiness}
    sites = tuple(
        _site_status(state, spec, s.name, observations, readiness.get(s.name)) for s in spec.sites
    )
    healthy = sum(1 for z in zones if z.state == ZoneState.HEALTHY.value)
    conditions = _conditions(decision, spec, observations, previous.conditions, generation, now)
    return ResilientAppStatus(
        observed_generation=generation,
        phase=decision.phase.value,
        active_site=state.active_site,
        epoch=state.epoch,
        healthy_zones=f"{healthy}/{len(zones)}",
        zones=zones,
        sites=sites,
        traffic=_traffic_status(state.traffic),
        last_failover=_failover_status(state.last_failover),
        recent_failovers=tuple(rfc3339(t, precise=True) for t in state.failover_times),
        last_decision=_decision_record(decision.trace, previous.last_decision, now),
        actions=_pending(decision, running),
        recommendation=_recommendation_status(state.recommendation),
        last_request=_request_status(state.last_request),
        planned_switchover=_planned_status(state.planned),
        drill_evacuation=_drill_evacuation_status(state.drill_evacuation),
        pinned_site=observations.pinned,
        volume_restores=tuple(
            _restore_status(site, state.restores[site])
            for site in (s.name for s in spec.sites)
            if site in state.restores
        ),
        conditions=conditions,
    )


def _restore_status(site: str, applied: m.AppliedRestore) -> VolumeRestoreStatus:
    return VolumeRestoreStatus(
        site=site,
        epoch=applied.epoch,
        time=rfc3339(applied.applied_at, precise=True),
        volumes=tuple(
            RestoredVolumeStatus(
                dataset=v.dataset,
                volume=v.volume,
                volume_id=v.volume_id,
                zone=v.zone,
                snapshot_id=v.snapshot_id,
                snapshot_time=_fmt(v.snapshot_time),
            )
            for v in applied.volumes[:2048]
        ),
        missing=applied.missing[:2048],
    )


def _zone_status(key: ZoneKey, state: m.AppState, spec: ResilientAppSpec) -> ZoneStatus:
    """A zone's status. Its streak counters are recorded up to the thresholds they are
    compared with: beyond them a count decides nothing, and a count that rose every round
    would make every round's status a new one to write."""
    health = state.zone(key)
    return ZoneStatus(
        site=key.site,
        zone=key.zone,
        state=health.state.value,
        consecutive_failures=min(health.consecutive_failures, spec.health.failure_threshold),
        consecutive_successes=min(health.consecutive_successes, spec.health.success_threshold),
        since=_fmt(health.since, precise=False),
        failing_since=_fmt(health.failing_since),
        last_ok_time=_fmt(health.last_ok),
        last_probe_time=_fmt(health.last_probe, precise=False),
        latency_ms=round(health.last_latency * 1000, 1)
        if health.last_latency is not None
        else None,
        message=health.last_detail[:1024],
        in_traffic=key not in state.evacuated,
    )


def _site_status(
    state: m.AppState,
    spec: ResilientAppSpec,
    name: str,
    obs: m.Observations,
    readiness: SiteReadiness | None = None,
) -> SiteStatus:
    site = spec.site(name)
    assert site is not None
    health = [state.zone(ZoneKey(name, z)) for z in site.zones]
    healthy = sum(1 for h in health if h.healthy)
    probed = [h for h in health if h.state is not ZoneState.UNKNOWN]
    if not probed:
        site_state = "Unknown"
    elif all(h.down for h in probed):
        site_state = "Down"
    elif healthy == len(health):
        site_state = "Healthy"
    else:
        site_state = "Degraded"
    applied = state.capacity.get(name)
    capacity = None
    if applied is not None:
        asked = capacity_asked_at(state, name, applied.applied_at)
        capacity = CapacityStatus(
            applied_time=rfc3339(applied.applied_at, precise=True),
            fingerprint=applied.fingerprint,
            zones=tuple(ZoneCount(zone=z, count=n) for z, n in applied.zones),
            ready_time=_fmt(applied.ready_at),
            ready_seconds=_round(max(0.0, applied.ready_at - asked))
            if applied.ready_at is not None
            else None,
            overdue=True if applied.overdue else None,
        )
    since = state.site_healthy_since.get(name)
    api = obs.api_planes.get((site.provider, site.region), ApiPlaneState.UNKNOWN)
    return SiteStatus(
        name=name,
        active=name == state.active_site,
        state=site_state,
        healthy_zones=healthy,
        total_zones=len(health),
        api_plane=api.value,
        healthy_since=_fmt(since, precise=False),
        capacity=capacity,
        readiness=_readiness_status(readiness),
    )


def _readiness_status(readiness: SiteReadiness | None) -> ReadinessStatus | None:
    if readiness is None:
        return None
    verdict = {True: "True", False: "False", None: "Unknown"}[readiness.ready]
    return ReadinessStatus(
        ready=verdict,
        reasons=tuple(reason[:512] for reason in readiness.causes[:16]),
        ready_instances=readiness.ready_instances,
        standby_instances=readiness.wanted,
        failover_instances=readiness.failover_needs,
        max_size=readiness.maximum,
        headroom=max(0, readiness.headroom) if readiness.headroom is not None else None,
        checked_time=_fmt(readiness.checked_at, precise=False),
    )


def _traffic_status(applied: m.AppliedTraffic | None) -> TrafficStatus | None:
    if applied is None:
        return None
    dns = applied.dns
    return TrafficStatus(
        active_site=applied.active_site,
        epoch=applied.epoch,
        applied_time=_fmt(applied.applied_at),
        change_id=applied.change_id or None,
        hosted_zone_id=dns.hosted_zone_id if dns else None,
        hosted_zone_name=dns.hosted_zone_name if dns else None,
        record_name=dns.name if dns else None,
        record_type=dns.type if dns else None,
        ttl=dns.ttl if dns else None,
        fingerprint=applied.fingerprint or None,
    )


def _failover_status(record: m.FailoverRecord | None) -> FailoverStatus | None:
    if record is None:
        return None
    return FailoverStatus(
        epoch=record.epoch,
        from_site=record.from_site,
        to_site=record.to_site,
        reason=record.reason[:1024],
        outage_start_time=_fmt(record.outage_start),
        decided_time=rfc3339(record.decided_at, precise=True),
        completed_time=_fmt(record.completed_at),
        detection_seconds=_round(record.detection_seconds),
        rto_seconds=_round(record.rto_seconds),
        manual=record.manual,
        forced=record.forced,
        planned=record.planned,
        rpo_seconds=_round(record.rpo_seconds),
        drill=record.drill,
    )


def _planned_status(move: m.PlannedMove | None) -> PlannedSwitchoverStatus | None:
    if move is None:
        return None
    return PlannedSwitchoverStatus(
        id=move.request_id,
        op=move.op,
        from_site=move.from_site,
        to_site=move.to_site,
        epoch=move.epoch,
        step=move.step.value,
        fence="Webhook" if move.fence == "Webhook" else "None",
        forced=move.forced,
        drill=move.drill,
        start_time=rfc3339(move.started_at, precise=True),
        writes_stopped_time=_fmt(move.stopped_at),
        drained_time=_fmt(move.drained_at),
        moved_epoch=move.moved_epoch,
        resume_site=move.resume_site,
        writes_resumed_time=_fmt(move.resumed_at),
        fence_answer=move.fence_answer[:256],
        message=move.message[:1024],
    )


def _pending(decision: m.Decision, running: str | None) -> tuple[PendingAction, ...]:
    rows = [
        PendingAction(
            id=a.id,
            kind=a.kind,
            target=a.target[:512],
            state="Running" if a.id == running else "Pending",
        )
        for a in decision.actions
    ]
    rows += [
        PendingAction(
            id=h.action.id,
            kind=h.action.kind,
            target=h.action.target[:512],
            state="Held",
            reason=h.reason[:1024],
        )
        for h in decision.held
    ]
    return tuple(rows[:32])


def _recommendation_status(rec: m.Recommendation | None) -> RecommendationStatus | None:
    if rec is None:
        return None
    return RecommendationStatus(
        id=rec.id,
        response=rec.response.value,
        summary=rec.summary[:1024],
        target=rec.target,
        zones=rec.zones,
        time=rfc3339(rec.decided_at),
    )


def _request_status(outcome: m.RequestOutcome | None) -> RequestStatus | None:
    if outcome is None:
        return None
    return RequestStatus(
        id=outcome.id,
        op=outcome.op,
        accepted=outcome.accepted,
        reason=outcome.reason[:1024],
        time=rfc3339(outcome.at),
    )


def _decision_record(trace: m.Trace, previous: DecisionRecord | None, now: float) -> DecisionRecord:
    """The trace as status; an unchanged decision keeps the time it was first taken."""
    facts = tuple(Fact(name=n[:128], value=v[:1024]) for n, v in trace.facts[:64])
    rule = str(trace.rule)
    if previous and previous.rule == rule and previous.summary == trace.summary:
        return previous.model_copy(update={"facts": facts})
    summary = trace.summary[:1024]
    return DecisionRecord(time=rfc3339(now), rule=rule, summary=summary, facts=facts)


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _conditions(
    decision: m.Decision,
    spec: ResilientAppSpec,
    obs: m.Observations,
    previous: tuple[Condition, ...],
    generation: int | None,
    now: float,
) -> tuple[Condition, ...]:
    state, phase, trace = decision.state, decision.phase, decision.trace

    def put(
        conditions: tuple[Condition, ...],
        type_: ConditionType,
        ok: bool,
        reason: str,
        message: str,
    ) -> tuple[Condition, ...]:
        return set_condition(
            conditions,
            type_,
            "True" if ok else "False",
            reason,
            message[:4096],
            generation=generation,
            now=now,
        )

    serving = phase in (m.Phase.HEALTHY, m.Phase.DEGRADED, m.Phase.FROZEN)
    routed = spec.failover.mode == "Observe" or traffic_in_place(state, spec)
    reason = "Serving" if serving and routed else phase.value
    if serving and not routed:
        reason = "TrafficNotApplied"
    conditions = put(
        previous,
        ConditionType.READY,
        serving and routed,
        reason,
        f"active site {state.active_site}: {trace.summary}",
    )
    seen = judged_state(state, spec, obs.vantage)  # the zones as decisions see them
    out = real_evacuations(seen)  # a drill's Healthy zone is out on purpose: no trouble
    troubles = [
        f"{key}={seen.zone(key).state}" + (" (out of traffic)" if key in out else "")
        for key in (ZoneKey(s.name, z) for s in spec.sites for z in s.zones)
        if seen.zone(key).state in (ZoneState.SUSPECT, ZoneState.DOWN, ZoneState.RECOVERING)
        or key in out
    ]
    impaired = [
        f"{region} API plane {verdict}"
        for (_, region), verdict in sorted(obs.api_planes.items())
        if verdict in (ApiPlaneState.DEGRADED, ApiPlaneState.IMPAIRED)
    ]
    degraded = troubles + impaired
    conditions = put(
        conditions,
        ConditionType.DEGRADED,
        bool(degraded),
        ("Frozen" if phase is m.Phase.FROZEN else "ZonesUnhealthy" if troubles else "ApiPlane")
        if degraded
        else "AllZonesHealthy",
        ", ".join(degraded) if degraded else "no zone is failing",
    )
    failing_over = phase is m.Phase.FAILING_OVER
    record = state.last_failover
    conditions = put(
        conditions,
        ConditionType.FAILING_OVER,
        failing_over,
        "TrafficShiftPending" if failing_over else "Idle",
        f"{record.from_site} -> {record.to_site}, epoch {record.epoch}"
        if failing_over and record
        else "no failover in progress",
    )
    conditions = _standby_condition(conditions, decision, generation, now)
    return _capacity_condition(conditions, state, spec, obs, generation, now)


def _standby_condition(
    conditions: tuple[Condition, ...],
    decision: m.Decision,
    generation: int | None,
    now: float,
) -> tuple[Condition, ...]:
    """StandbyReady: every site that does not take the traffic could take it now."""
    found = decision.readiness
    if not found:
        status, reason, message = "True", "NoStandby", "no site other than the active one"
    elif any(r.ready is False for r in found):
        status, reason = "False", "StandbyNotReady"
        message = "; ".join(r.summary for r in found if r.ready is not True)
    elif any(r.ready is None for r in found):
        status, reason = "Unknown", "CapacityNotRead"
        message = "; ".join(r.summary for r in found if r.ready is None)
    else:
        status, reason = "True", "StandbyReady"
        message = "; ".join(r.summary for r in found)
    return set_condition(
        conditions,
        ConditionType.STANDBY_READY,
        status,  # type: ignore[arg-type]  # one of the three words
        reason,
        message[:4096],
        generation=generation,
        now=now,
    )


def _capacity_condition(
    conditions: tuple[Condition, ...],
    state: m.AppState,
    spec: ResilientAppSpec,
    obs: m.Observations,
    generation: int | None,
    now: float,
) -> tuple[Condition, ...]:
    """CapacityReady: the capacity last set for every site is Ready, as its driver reports
    it; False once some site's is not within ``readiness.capacityTimeoutSeconds``."""
    timeout = capacity_timeout(spec)
    late: list[str] = []
    waiting: list[str] = []
    for site in spec.sites:
        applied = state.capacity.get(site.name)
        if applied is None or applied.ready_at is not None:
            continue
        reading = obs.capacity.get(site.name)
        ready = verified(applied.zones, applied.applied_at, reading)
        unit = reading.unit if reading is not None else "instances Ready"
        count = f"{ready}/{applied.total} {unit}" if ready is not None else "not read yet"
        overdue = now - applied.applied_at >= timeout
        # Figures that count up every round would make every round's status a new one.
        text = f"{site.name}: {count}" + (
            f" after {timeout:g} s" if overdue else f" (waiting up to {timeout:g} s)"
        )
        if reading is not None and reading.failures:
            text += "".join(f"; scale-up failed: {failure}" for failure in reading.failures)
        (late if overdue else waiting).append(text)
    if late:
        status, reason, message = "False", "CapacityNotReady", "; ".join(late + waiting)
    elif waiting:
        status, reason, message = "Unknown", "Waiting", "; ".join(waiting)
    else:
        status, reason = "True", "CapacityReady"
        message = "the capacity set for every site is Ready"
    return set_condition(
        conditions,
        ConditionType.CAPACITY_READY,
        status,  # type: ignore[arg-type]  # one of the three words
        reason,
        message[:4096],
        generation=generation,
        now=now,
    )
