"""The decision core: observations in, a new state, actions and an explanation out.

``decide(state, observations, spec, now) -> Decision`` is pure: no I/O, no clock reads.
The operator feeds it probe rounds, executes the actions it returns through the provider
layer and reports each executed action back with :func:`complete`.

Rules, in order (the first that matches decides):

=====================  ===============================================  ===================
rule                   when                                             response
=====================  ===============================================  ===================
all-zones-down         every probed zone of the active site is Down     fail over to the
                                                                        first healthy site
                                                                        (priority, order)
no-failover-target     as above, but no other site has a Healthy zone   stay, phase Down
steady                 anything else                                    nothing
=====================  ===============================================  ===================

After the rules, traffic is reconciled: while the epoch applied to DNS is behind the
app's epoch, a ``ShiftTraffic`` action is emitted (idempotent: it sets the weights, it
does not toggle them), so a failed or interrupted DNS change is retried next round and
the first round of a new app publishes its records.

Fencing: every failover raises the epoch by one, and its ``ShiftTraffic`` demotes the old
primary (weight 0) in the same atomic change that promotes the new one.

In ``Observe`` mode the same rules run, the decision is recorded as a recommendation,
and nothing is changed and no action is emitted.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from controller.api.models import ResilientAppSpec, Site
from controller.core.health import (
    ProbeResult,
    Thresholds,
    ZoneHealth,
    ZoneKey,
    ZoneState,
    aggregate_round,
    observe,
)

ACTIVE_WEIGHT = 100
FENCED_WEIGHT = 0


class Phase(StrEnum):
    PENDING = "Pending"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    FAILING_OVER = "FailingOver"
    DOWN = "Down"


@dataclass(frozen=True)
class FailoverRecord:
    epoch: int
    from_site: str
    to_site: str
    reason: str
    decided_at: float
    outage_start: float | None
    completed_at: float | None = None

    @property
    def detection_seconds(self) -> float | None:
        if self.outage_start is None:
            return None
        return max(0.0, self.decided_at - self.outage_start)

    @property
    def rto_seconds(self) -> float | None:
        if self.outage_start is None or self.completed_at is None:
            return None
        return max(0.0, self.completed_at - self.outage_start)


@dataclass(frozen=True)
class DnsName:
    """The DNS record an app is reached at."""

    hosted_zone_id: str | None
    hosted_zone_name: str | None
    name: str
    type: str
    ttl: int

    @classmethod
    def of(cls, spec: ResilientAppSpec) -> DnsName:
        t = spec.traffic
        return cls(t.hosted_zone_id, t.hosted_zone_name, t.record_name, t.record_type, t.ttl)

    def same_record(self, other: DnsName) -> bool:
        """Whether both address the same record sets (TTL aside)."""
        return replace(self, ttl=0) == replace(other, ttl=0)


@dataclass(frozen=True)
class AppliedTraffic:
    """The traffic shift last carried out."""

    active_site: str
    epoch: int
    applied_at: float
    change_id: str = ""
    fingerprint: str = ""
    dns: DnsName | None = None


@dataclass(frozen=True)
class AppState:
    """Everything the core remembers between rounds (persisted in the app's status)."""

    active_site: str
    epoch: int = 1
    traffic: AppliedTraffic | None = None
    zones: Mapping[ZoneKey, ZoneHealth] = field(default_factory=dict)
    last_failover: FailoverRecord | None = None
    last_rule: str = "steady"

    @property
    def traffic_epoch(self) -> int:
        """The epoch DNS was last set for (0: never)."""
        return self.traffic.epoch if self.traffic else 0

    @classmethod
    def initial(cls, spec: ResilientAppSpec) -> AppState:
        return cls(active_site=spec.primary.name)

    def zone(self, key: ZoneKey) -> ZoneHealth:
        return self.zones.get(key, ZoneHealth())


@dataclass(frozen=True)
class Observations:
    """What was seen since the last decision."""

    probes: tuple[ProbeResult, ...] = ()


@dataclass(frozen=True)
class SiteTarget:
    site: str
    values: tuple[str, ...]
    weight: int
    health_check_url: str | None = None


@dataclass(frozen=True)
class ShiftTraffic:
    """Make DNS send everyone to ``active_site``: weight 100 there, 0 everywhere else.

    Idempotent: it states the whole desired record, it does not toggle. ``retire`` names
    a record the app was published under before (its name changed) to remove.
    """

    active_site: str
    epoch: int
    dns: DnsName
    targets: tuple[SiteTarget, ...]
    retire: DnsName | None = None
    routing: str = "Weighted"

    @property
    def weights(self) -> tuple[tuple[str, int], ...]:
        return tuple((t.site, t.weight) for t in self.targets)

    @property
    def fingerprint(self) -> str:
        """Digest of the desired DNS state: a change of it means DNS must be updated."""
        text = repr((self.dns, self.targets, self.routing))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def id(self) -> str:
        """Stable identity: one traffic shift per epoch and desired DNS state."""
        return f"shift-traffic/epoch-{self.epoch}/{self.fingerprint}"


Action = ShiftTraffic


@dataclass(frozen=True)
class Trace:
    """Why the decision was taken: the rule, a sentence and the facts it rested on."""

    rule: str
    summary: str
    facts: tuple[tuple[str, str], ...] = ()


class NoteKind(StrEnum):
    ZONE_STATE = "ZoneStateChanged"
    FAILOVER = "FailoverStarted"
    FAILOVER_RECOMMENDED = "FailoverRecommended"
    NO_TARGET = "NoFailoverTarget"
    SPEC_CHANGED = "ActiveSiteReset"


@dataclass(frozen=True)
class Note:
    """A notable transition, for the event stream. ``warning`` marks bad news."""

    kind: NoteKind
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Decision:
    state: AppState
    actions: tuple[Action, ...]
    trace: Trace
    notes: tuple[Note, ...]
    phase: Phase


def decide(
    state: AppState, observations: Observations, spec: ResilientAppSpec, now: float
) -> Decision:
    """One decision round. Pure: same inputs, same outputs."""
    notes: list[Note] = []
    state = _conform_to_spec(state, spec, notes)
    state = _observe_probes(state, observations, spec, notes)

    trace, state = _apply_rules(state, spec, now, notes)
    state = replace(state, last_rule=trace.rule)
    actions: tuple[Action, ...] = ()
    if spec.failover.mode == "Automatic" and not traffic_in_place(state, spec):
        actions = (desired_traffic(state, spec),)
    return Decision(state, actions, trace, tuple(notes), phase_of(state, spec))


def traffic_in_place(state: AppState, spec: ResilientAppSpec) -> bool:
    """Whether DNS holds what the current state and spec call for."""
    applied = state.traffic
    return (
        applied is not None
        and applied.epoch == state.epoch
        and applied.fingerprint == desired_traffic(state, spec).fingerprint
    )


def complete(state: AppState, action: Action, now: float, change_id: str = "") -> AppState:
    """Record that ``action`` was carried out at ``now``.

    A completion for another epoch than the current one is stale (fencing) and ignored.
    """
    if action.epoch != state.epoch:
        return state
    failover = state.last_failover
    if failover is not None and failover.epoch == action.epoch and failover.completed_at is None:
        failover = replace(failover, completed_at=now)
    applied = AppliedTraffic(
        action.active_site, action.epoch, now, change_id, action.fingerprint, action.dns
    )
    return replace(state, traffic=applied, last_failover=failover)


# --------------------------------------------------------------------------- steps


def _conform_to_spec(state: AppState, spec: ResilientAppSpec, notes: list[Note]) -> AppState:
    """Forget zones that are no longer probed; re-anchor an active site that vanished.

    A zone removed from the spec, or left without endpoints, has no data-plane evidence
    any more: it goes back to Unknown instead of keeping a stale verdict.
    """
    probed = {ZoneKey(s.name, e.zone) for s in spec.sites for e in s.endpoints}
    zones = {k: v for k, v in state.zones.items() if k in probed}
    if spec.site(state.active_site) is None:
        notes.append(
            Note(
                NoteKind.SPEC_CHANGED,
                f"active site {state.active_site} was removed from the spec; "
                f"traffic goes back to the declared primary {spec.primary.name}",
                warning=True,
            )
        )
        return replace(state, active_site=spec.primary.name, epoch=state.epoch + 1, zones=zones)
    return replace(state, zones=zones)


def _observe_probes(
    state: AppState, observations: Observations, spec: ResilientAppSpec, notes: list[Note]
) -> AppState:
    thresholds = Thresholds(spec.health.failure_threshold, spec.health.success_threshold)
    by_zone: dict[ZoneKey, list[ProbeResult]] = defaultdict(list)
    for probe in observations.probes:
        by_zone[probe.key].append(probe)
    zones = dict(state.zones)
    for key, results in sorted(by_zone.items()):
        verdict = aggregate_round(key, results)
        if verdict is None or spec.site(key.site) is None:
            continue
        before = state.zone(key)
        after = observe(before, verdict, thresholds)
        zones[key] = after
        if after.state is not before.state:
            notes.append(_zone_note(key, before, after))
    return replace(state, zones=zones)


def _zone_note(key: ZoneKey, before: ZoneHealth, after: ZoneHealth) -> Note:
    detail = f" ({after.last_detail})" if after.last_detail and not after.healthy else ""
    return Note(
        NoteKind.ZONE_STATE,
        f"zone {key} {before.state} -> {after.state}{detail}",
        warning=after.state in (ZoneState.DOWN, ZoneState.SUSPECT),
    )


def _apply_rules(
    state: AppState, spec: ResilientAppSpec, now: float, notes: list[Note]
) -> tuple[Trace, AppState]:
    active = spec.site(state.active_site)
    assert active is not None  # _conform_to_spec guarantees it
    facts = _site_facts(state, spec)
    if not _all_probed_zones_down(state, active):
        return Trace("steady", _steady_summary(state, spec), facts), state

    outage_start = _outage_start(state, active)
    target, evaluation = _pick_target(state, spec, exclude=active.name)
    facts += evaluation
    reason = f"every probed zone of active site {active.name} is Down"
    fresh = state.last_rule == "steady"  # only the first round of an outage is announced
    if target is None:
        if fresh:
            notes.append(Note(NoteKind.NO_TARGET, f"{reason}, and no other site is healthy", True))
        summary = f"{reason}; no healthy site to fail over to"
        return Trace("no-failover-target", summary, facts), state

    if spec.failover.mode == "Observe":
        if fresh or state.last_rule == "no-failover-target":
            notes.append(
                Note(
                    NoteKind.FAILOVER_RECOMMENDED,
                    f"{reason}: would fail over {active.name} -> {target.name} "
                    "(Observe mode: not acting)",
                    warning=True,
                )
            )
        summary = f"{reason}; recommend failover to {target.name} (Observe mode)"
        return Trace("all-zones-down", summary, facts), state

    epoch = state.epoch + 1
    record = FailoverRecord(epoch, active.name, target.name, reason, now, outage_start)
    notes.append(
        Note(
            NoteKind.FAILOVER,
            f"{reason}: failing over {active.name} -> {target.name}, epoch {epoch}",
            warning=True,
        )
    )
    new_state = replace(state, active_site=target.name, epoch=epoch, last_failover=record)
    summary = f"{reason}; failing over to {target.name} (epoch {epoch})"
    return Trace("all-zones-down", summary, facts), new_state


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


def _all_probed_zones_down(state: AppState, site: Site) -> bool:
    known = [state.zone(ZoneKey(site.name, z)) for z in site.zones]
    probed = [z for z in known if z.state is not ZoneState.UNKNOWN]
    return bool(probed) and all(z.down for z in probed)


def _healthy_zones(state: AppState, site: Site) -> int:
    return sum(1 for z in site.zones if state.zone(ZoneKey(site.name, z)).healthy)


def _pick_target(
    state: AppState, spec: ResilientAppSpec, exclude: str
) -> tuple[Site | None, tuple[tuple[str, str], ...]]:
    """The first site, by (priority, spec order), with at least one Healthy zone."""
    ranked = sorted(
        (s for s in spec.sites if s.name != exclude),
        key=lambda s: (s.priority, spec.sites.index(s)),
    )
    evaluation: list[tuple[str, str]] = []
    chosen: Site | None = None
    for site in ranked:
        healthy = _healthy_zones(state, site)
        verdict = "candidate" if healthy else "not healthy"
        if healthy and chosen is None:
            chosen, verdict = site, "chosen"
        elif healthy:
            verdict = "healthy, lower preference"
        evaluation.append(
            (f"target {site.name}", f"{healthy}/{len(site.zones)} healthy, {verdict}")
        )
    return chosen, tuple(evaluation)


def _site_facts(state: AppState, spec: ResilientAppSpec) -> tuple[tuple[str, str], ...]:
    facts: list[tuple[str, str]] = [
        ("active site", state.active_site),
        ("epoch", str(state.epoch)),
        ("thresholds", f"fail {spec.health.failure_threshold}, ok {spec.health.success_threshold}"),
    ]
    for site in spec.sites:
        zones = ", ".join(f"{z}={state.zone(ZoneKey(site.name, z)).state}" for z in site.zones)
        facts.append((f"site {site.name}", zones))
    return tuple(facts)


def _steady_summary(state: AppState, spec: ResilientAppSpec) -> str:
    active = spec.site(state.active_site)
    assert active is not None
    return (
        f"active site {active.name} serves with {_healthy_zones(state, active)}/"
        f"{len(active.zones)} zones healthy; nothing to do"
    )


def desired_traffic(state: AppState, spec: ResilientAppSpec) -> ShiftTraffic:
    """The DNS state for ``state``: the active site weighted 100, every other site 0."""
    targets = tuple(
        SiteTarget(
            s.name,
            s.traffic_targets,
            ACTIVE_WEIGHT if s.name == state.active_site else FENCED_WEIGHT,
            s.traffic_health_check_url,
        )
        for s in spec.sites
    )
    dns = DnsName.of(spec)
    previous = state.traffic.dns if state.traffic else None
    retire = previous if previous is not None and not previous.same_record(dns) else None
    return ShiftTraffic(state.active_site, state.epoch, dns, targets, retire, spec.traffic.routing)


def phase_of(state: AppState, spec: ResilientAppSpec) -> Phase:
    """The app's overall phase in ``state``."""
    active = spec.site(state.active_site)
    assert active is not None
    zones = [state.zone(ZoneKey(s.name, z)) for s in spec.sites for z in s.zones]
    active_zones = [state.zone(ZoneKey(active.name, z)) for z in active.zones]
    failover = state.last_failover
    if failover and failover.epoch == state.epoch and state.traffic_epoch < state.epoch:
        return Phase.FAILING_OVER
    if all(z.state is ZoneState.UNKNOWN for z in active_zones):
        return Phase.PENDING
    if _all_probed_zones_down(state, active):
        return Phase.DOWN
    if any(z.state not in (ZoneState.HEALTHY, ZoneState.UNKNOWN) for z in zones):
        return Phase.DEGRADED
    return Phase.HEALTHY
