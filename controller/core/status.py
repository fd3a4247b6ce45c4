"""Translate between the core's state and a ResilientApp's ``status`` (both directions).

The status is the operator's memory: a restarted operator rebuilds the core's state from
it and carries on (zone counters, epoch, a traffic shift not yet applied). Pure.
"""

from __future__ import annotations

from controller.api.conditions import parse_rfc3339, rfc3339, set_condition
from controller.api.models import (
    Condition,
    DecisionRecord,
    Fact,
    FailoverRecord,
    ResilientAppSpec,
    ResilientAppStatus,
    SiteStatus,
    TrafficStatus,
    ZoneStatus,
)
from controller.core import decide as core
from controller.core.health import ZoneHealth, ZoneKey, ZoneState

READY = "Ready"
DEGRADED = "Degraded"
FAILING_OVER = "FailingOver"


def _ts(value: str | None) -> float | None:
    return parse_rfc3339(value) if value else None


def _fmt(value: float | None, *, precise: bool = True) -> str | None:
    return rfc3339(value, precise=precise) if value is not None else None


def state_from_status(status: ResilientAppStatus, spec: ResilientAppSpec) -> core.AppState:
    """The core state persisted in ``status``; a fresh state when there is none."""
    if not status.active_site or status.epoch is None:
        return core.AppState.initial(spec)
    zones = {
        ZoneKey(z.site, z.zone): ZoneHealth(
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
        for z in status.zones
    }
    traffic = _applied_traffic(status.traffic) if status.traffic else None
    failover = None
    if status.last_failover:
        f = status.last_failover
        failover = core.FailoverRecord(
            epoch=f.epoch,
            from_site=f.from_site,
            to_site=f.to_site,
            reason=f.reason,
            decided_at=parse_rfc3339(f.decided_time),
            outage_start=_ts(f.outage_start_time),
            completed_at=_ts(f.completed_time),
        )
    return core.AppState(
        active_site=status.active_site,
        epoch=status.epoch,
        traffic=traffic,
        zones=zones,
        last_failover=failover,
        last_rule=status.last_decision.rule if status.last_decision else "steady",
    )


def _applied_traffic(saved: TrafficStatus) -> core.AppliedTraffic | None:
    if not saved.active_site or not saved.applied_time:
        return None
    dns = None
    if saved.record_name and saved.record_type and saved.ttl is not None:
        dns = core.DnsName(
            saved.hosted_zone_id,
            saved.hosted_zone_name,
            saved.record_name,
            saved.record_type,
            saved.ttl,
        )
    return core.AppliedTraffic(
        saved.active_site,
        saved.epoch,
        parse_rfc3339(saved.applied_time),
        saved.change_id or "",
        saved.fingerprint or "",
        dns,
    )


def status_from_state(
    state: core.AppState,
    phase: core.Phase,
    trace: core.Trace,
    spec: ResilientAppSpec,
    previous: ResilientAppStatus,
    *,
    generation: int | None,
    now: float,
) -> ResilientAppStatus:
    """The status to write after a decision round."""
    zones = tuple(_zone_status(key, state.zone(key)) for key in _declared(spec))
    sites = tuple(_site_status(state, spec, name) for name in (s.name for s in spec.sites))
    healthy = sum(1 for z in zones if z.state == ZoneState.HEALTHY.value)
    conditions = _conditions(state, phase, trace, spec, previous.conditions, generation, now)
    return ResilientAppStatus(
        observed_generation=generation,
        phase=phase.value,
        active_site=state.active_site,
        epoch=state.epoch,
        healthy_zones=f"{healthy}/{len(zones)}",
        zones=zones,
        sites=sites,
        traffic=_traffic_status(state.traffic),
        last_failover=_failover_status(state.last_failover),
        last_decision=_decision_record(trace, previous.last_decision, now),
        conditions=conditions,
    )


def _declared(spec: ResilientAppSpec) -> list[ZoneKey]:
    return [ZoneKey(s.name, z) for s in spec.sites for z in s.zones]


def _zone_status(key: ZoneKey, health: ZoneHealth) -> ZoneStatus:
    return ZoneStatus(
        site=key.site,
        zone=key.zone,
        state=health.state.value,
        consecutive_failures=health.consecutive_failures,
        consecutive_successes=health.consecutive_successes,
        since=_fmt(health.since, precise=False),
        failing_since=_fmt(health.failing_since),
        last_ok_time=_fmt(health.last_ok),
        last_probe_time=_fmt(health.last_probe, precise=False),
        latency_ms=_millis(health.last_latency),
        message=health.last_detail[:1024],
    )


def _millis(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def _site_status(state: core.AppState, spec: ResilientAppSpec, name: str) -> SiteStatus:
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
    return SiteStatus(
        name=name,
        active=name == state.active_site,
        state=site_state,
        healthy_zones=healthy,
        total_zones=len(health),
    )


def _traffic_status(applied: core.AppliedTraffic | None) -> TrafficStatus | None:
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


def _failover_status(record: core.FailoverRecord | None) -> FailoverRecord | None:
    if record is None:
        return None
    return FailoverRecord(
        epoch=record.epoch,
        from_site=record.from_site,
        to_site=record.to_site,
        reason=record.reason,
        outage_start_time=_fmt(record.outage_start),
        decided_time=rfc3339(record.decided_at, precise=True),
        completed_time=_fmt(record.completed_at),
        detection_seconds=_round(record.detection_seconds),
        rto_seconds=_round(record.rto_seconds),
    )


def _decision_record(
    trace: core.Trace, previous: DecisionRecord | None, now: float
) -> DecisionRecord:
    """The trace as status; an unchanged decision keeps the time it was first taken."""
    facts = tuple(Fact(name=n, value=v[:1024]) for n, v in trace.facts[:64])
    if previous and previous.rule == trace.rule and previous.summary == trace.summary:
        return previous.model_copy(update={"facts": facts})
    return DecisionRecord(time=rfc3339(now), rule=trace.rule, summary=trace.summary, facts=facts)


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _conditions(
    state: core.AppState,
    phase: core.Phase,
    trace: core.Trace,
    spec: ResilientAppSpec,
    previous: tuple[Condition, ...],
    generation: int | None,
    now: float,
) -> tuple[Condition, ...]:
    def put(
        conditions: tuple[Condition, ...], type_: str, ok: bool, reason: str, message: str
    ) -> tuple[Condition, ...]:
        return set_condition(
            conditions,
            type_,
            "True" if ok else "False",
            reason,
            message,
            generation=generation,
            now=now,
        )

    serving = phase in (core.Phase.HEALTHY, core.Phase.DEGRADED)
    routed = spec.failover.mode == "Observe" or core.traffic_in_place(state, spec)
    ready_reason = "Serving" if serving and routed else phase.value
    if serving and not routed:
        ready_reason = "TrafficNotApplied"
    conditions = put(
        previous,
        READY,
        serving and routed,
        ready_reason,
        f"active site {state.active_site}: {trace.summary}",
    )
    unhealthy = [
        f"{key}={state.zone(key).state}"
        for key in _declared(spec)
        if state.zone(key).state in (ZoneState.SUSPECT, ZoneState.DOWN, ZoneState.RECOVERING)
    ]
    conditions = put(
        conditions,
        DEGRADED,
        bool(unhealthy),
        "ZonesUnhealthy" if unhealthy else "AllZonesHealthy",
        ", ".join(unhealthy) if unhealthy else "no zone is failing",
    )
    failing_over = phase is core.Phase.FAILING_OVER
    record = state.last_failover
    return put(
        conditions,
        FAILING_OVER,
        failing_over,
        "TrafficShiftPending" if failing_over else "Idle",
        f"{record.from_site} -> {record.to_site}, epoch {record.epoch}"
        if failing_over and record
        else "no failover in progress",
    )
