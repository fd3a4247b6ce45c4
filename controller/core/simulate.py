"""The simulation engine: the pure decision core driven on a scripted fault timeline.

Pure: no I/O and no clock: time is the timeline's. The engine plays the operator's part,
probing every zone each ``health.intervalSeconds`` (``suspectIntervalSeconds`` while a zone is
Suspect or Recovering, as the operator does) with the outcome the timeline prescribes,
judging each region's API plane from the call outcomes it prescribes (with the
CloudProviders' thresholds, default ones for a provider not given), passing requests and
approvals on, and carrying out every action at once. ``lifeboat simulate`` (the timeline
format is described in :mod:`controller.cli.simulate`) and ``Observe`` drills both run on it.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from controller.api.annotations import Request, RequestOp
from controller.api.models import CloudProviderSpec, HealthPolicy, ResilientAppSpec, ZoneEndpoint
from controller.core import decide as core
from controller.core import inputs
from controller.core import model as m
from controller.core.apiplane import (
    ApiPlaneHealth,
    ApiPlaneState,
    ApiPlaneThresholds,
    CallOutcome,
    CallRecord,
    assess,
)
from controller.core.capacity import CapacityReading, ZoneReading
from controller.core.health import ProbeOutcome, ProbeResult, ZoneKey, round_interval, zone_states

MAX_SECONDS = 86400.0
"""The longest timeline (and the latest entry): a day of rounds."""
MAX_SLOW_SECONDS = 3600.0
MAX_INSTANCES = 160000
"""perZone's bound (10,000) times a site's zones (16)."""


class RequestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: Literal["failover", "failback"]
    site: str | None = None
    force: bool = False
    planned: bool = False
    id: str | None = Field(default=None, min_length=1, max_length=63)


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    at: float = Field(ge=0, le=MAX_SECONDS)
    zones: dict[str, str] = Field(default_factory=dict)
    api: dict[str, list[CallOutcome]] = Field(default_factory=dict)
    request: RequestEntry | None = None
    approve: bool = False
    pin: str | None = Field(default=None)
    unpin: bool = False
    replication_lag: dict[str, float | None] = Field(default_factory=dict, alias="replicationLag")
    capacity: dict[str, int | Literal["ready"]] = Field(default_factory=dict)

    @field_validator("capacity")
    @classmethod
    def _capacities(cls, value: dict[str, int | Literal["ready"]]) -> dict[str, int | str]:
        for site, cap in value.items():
            if isinstance(cap, int) and not 0 <= cap <= MAX_INSTANCES:
                raise ValueError(
                    f"capacity of {site} must be between 0 and {MAX_INSTANCES} instances (or ready)"
                )
        return dict(value)

    @field_validator("zones")
    @classmethod
    def _zone_outcomes(cls, value: dict[str, str]) -> dict[str, str]:
        for key, outcome in value.items():
            if "/" not in key:
                raise ValueError(f"zone {key!r} must be written site/zone")
            _zone_behaviour(outcome)
        return value

    @field_validator("replication_lag")
    @classmethod
    def _lags(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        for site, lag in value.items():
            if lag is not None and not 0 <= lag <= MAX_SECONDS:
                raise ValueError(f"lag of {site} must be between 0 and {MAX_SECONDS:g} s (or null)")
        return value


class Timeline(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    duration: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    timeline: list[Entry] = Field(default_factory=list)


def _zone_behaviour(text: str) -> tuple[ProbeOutcome | None, float]:
    """(fixed outcome or None for flaky, latency or flaky share)."""
    name, _, argument = text.partition(":")
    try:
        if name == "ok" and not argument:
            return ProbeOutcome.OK, 0.01
        if name in ("fail", "down") and not argument:
            return ProbeOutcome.FAIL, 0.01
        if name == "timeout" and not argument:
            return ProbeOutcome.TIMEOUT, 0.0
        if name == "slow":
            latency = float(argument)
            if math.isfinite(latency) and 0 <= latency <= MAX_SLOW_SECONDS:
                return ProbeOutcome.OK, latency
        if name == "flaky":
            share = float(argument)
            if math.isfinite(share) and 0 <= share <= 1:
                return None, share
        if name == "status" and 100 <= int(argument) <= 599:
            return ProbeOutcome.OK, 0.01  # judged per endpoint: _answer
    except ValueError:
        pass
    raise ValueError(
        f"zone outcome {text!r}: use ok, fail, timeout, slow:<0..{MAX_SLOW_SECONDS:g} s>, "
        "flaky:<share 0..1> or status:<100..599>"
    )


def _answer(
    key: ZoneKey, endpoint: ZoneEndpoint, health: HealthPolicy, status: int, t: float
) -> ProbeResult:
    """An endpoint answering ``status``, judged by its HTTP settings as the prober does."""
    http, _ = endpoint.settings(health)
    if http is None:  # a TCP connect: the connection is accepted
        return ProbeResult(key, ProbeOutcome.OK, t, 0.01, "connected")
    if http.accepts(status):
        return ProbeResult(key, ProbeOutcome.OK, t, 0.01, f"HTTP {status}")
    expected = ",".join(http.expected_status)
    return ProbeResult(key, ProbeOutcome.FAIL, t, 0.01, f"HTTP {status}, expected {expected}")


def entry_problem(entry: Entry, spec: ResilientAppSpec) -> tuple[str, str] | None:
    """The field of ``entry`` that names something the app does not have, and why."""
    sites = [s.name for s in spec.sites]
    for key in entry.zones:
        site_name, _, zone = key.partition("/")
        site = spec.site(site_name)
        if site is None:
            return f"zones.{key}", f"the app has no site {site_name!r} (sites: {', '.join(sites)})"
        if zone not in site.zones:
            return (
                f"zones.{key}",
                f"site {site_name} has no zone {zone!r} ({', '.join(site.zones)})",
            )
        if not any(e.zone == zone for e in site.endpoints):
            return f"zones.{key}", f"zone {zone} of {site_name} has no endpoint: nothing probes it"
    known = [f"{p}/{r}" for p, r in inputs.regions(spec)]
    for key in entry.api:
        if key not in known:
            return f"api.{key}", f"not a provider/region of the app's sites ({', '.join(known)})"
    for site_name in entry.capacity:
        if spec.site(site_name) is None:
            return (
                f"capacity.{site_name}",
                f"the app has no site {site_name!r} (sites: {', '.join(sites)})",
            )
        site = spec.site(site_name)
        if site is not None and site.capacity is None:
            return f"capacity.{site_name}", f"site {site_name} declares no capacity"
    for site_name in entry.replication_lag:
        if spec.site(site_name) is None:
            return (
                f"replicationLag.{site_name}",
                f"the app has no site {site_name!r} (sites: {', '.join(sites)})",
            )
    if entry.pin is not None and spec.site(entry.pin) is None:
        return "pin", f"the app has no site {entry.pin!r} (sites: {', '.join(sites)})"
    if entry.pin is not None and entry.unpin:
        return "unpin", "an entry cannot both pin and unpin"
    request = entry.request
    if request is not None:
        if request.op == "failover" and request.site is None:
            return "request.site", "a failover request names the site to move to"
        if request.site is not None and spec.site(request.site) is None:
            return (
                "request.site",
                f"the app has no site {request.site!r} (sites: {', '.join(sites)})",
            )
    return None


# --------------------------------------------------------------------------- the run


@dataclass
class _World:
    """What the timeline has set so far."""

    zones: dict[str, str] = field(default_factory=dict)
    api: dict[str, list[CallOutcome]] = field(default_factory=dict)
    pinned: str | None = None
    lag: dict[str, float | None] = field(default_factory=dict)
    capacity: dict[str, int] = field(default_factory=dict)
    """Sites whose Ready instances are capped."""

    def apply(self, entry: Entry) -> None:
        for site, cap in entry.capacity.items():
            if cap == "ready":
                self.capacity.pop(site, None)
            else:
                self.capacity[site] = int(cap)
        self.zones.update(entry.zones)
        self.api.update(entry.api)
        if entry.pin is not None:
            self.pinned = entry.pin
        if entry.unpin:
            self.pinned = None
        self.lag.update(entry.replication_lag)


def _pseudo_random(*parts: object) -> float:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def simulate(
    spec: ResilientAppSpec,
    timeline: Timeline,
    providers: Mapping[str, CloudProviderSpec] | None = None,
) -> list[dict[str, Any]]:
    """The decisions, one JSON-ready dict per round in which something changed: an action,
    a note, or the phase, rule, reason (its figures aside), active site, epoch, held
    actions or any region's API-plane verdict."""
    providers = providers or {}
    entries = sorted(timeline.timeline, key=lambda e: e.at)
    end = timeline.duration or ((entries[-1].at if entries else 0.0) + 60.0)
    world = _World()
    regions = inputs.regions(spec)
    calls: dict[m.RegionKey, deque[CallRecord]] = {r: deque() for r in regions}
    health: dict[m.RegionKey, ApiPlaneHealth] = {r: ApiPlaneHealth() for r in regions}
    state = core.initial_state(spec)
    decisions: list[dict[str, Any]] = []
    published: tuple[m.SiteTarget, ...] = ()
    pending = deque(entries)
    t, round_no, requests = 0.0, 0, 0
    last_key: tuple[Any, ...] | None = None
    while t <= end:
        request, approve = None, False
        while pending and pending[0].at <= t:
            entry = pending.popleft()
            world.apply(entry)
            if entry.request is not None:
                requests += 1
                request = _request(entry.request, requests)
            approve = approve or entry.approve
        on_grid = _on_grid(t, float(spec.health.interval_seconds))
        for key in regions:
            outcomes = world.api.get(f"{key[0]}/{key[1]}", [CallOutcome.OK])
            for i, outcome in enumerate(outcomes if on_grid else ()):
                # API-plane calls at the app's interval only: the operator's API-plane
                # checks do not come faster when a zone is in doubt.
                calls[key].append(CallRecord(t + i * 0.01, outcome, 0.05, probe=True))
            provider = providers.get(key[0])
            limits = ApiPlaneThresholds.of(provider.api_plane if provider else None)
            while calls[key] and calls[key][0].at < t - limits.window:
                calls[key].popleft()
            health[key] = assess(health[key], calls[key], limits, t)
        observations = inputs.observations(
            spec,
            probes=_probes(spec, world, t, round_no),
            api_planes=health,
            traffic_plane=ApiPlaneState.HEALTHY,
            request=request,
            approval=state.recommendation.id if approve and state.recommendation else None,
            pinned=world.pinned,
            replication_lag=world.lag,
            capacity=_capacity(spec, state, world, t),
            now=t,
            replication_flows=_flows(spec, state, world, t),
        )
        decision = core.decide(state, observations, spec, t)
        state = decision.state
        for action in decision.actions:
            state = core.complete(state, action, t, "simulated")
            if isinstance(action, m.ShiftTraffic):
                published = action.targets
        decision = replace(decision, phase=core.phase_of(state, spec, observations))
        row = _row(t, decision, state, spec, observations, published)
        key = _change_key(row)
        if decision.actions or decision.notes or key != last_key:
            decisions.append(row)
        last_key = key
        t = _next_slot(t, round_interval(zone_states(state.zones), spec.health))
        round_no += 1
    return decisions


def _next_slot(t: float, step: float) -> float:
    """The first multiple of ``step`` after ``t``, as the operator's round grid has it
    (:class:`~controller.operator.probes.RoundSchedule`): after a run of fast rounds the
    app is back on its ``intervalSeconds`` grid. Rounded to the microsecond, so that
    times stay those of the timeline (60.3, not 60.300000000000004)."""
    return round((math.floor(t / step + 1e-9) + 1) * step, 6)


def _on_grid(t: float, interval: float) -> bool:
    """Whether ``t`` is a slot of the app's ``intervalSeconds`` grid."""
    slots = t / interval
    return abs(slots - round(slots)) < 1e-9


def _capacity(
    spec: ResilientAppSpec, state: m.AppState, world: _World, t: float
) -> dict[str, CapacityReading]:
    """Every site's capacity as its driver would report it at ``t``: what was last set for
    it (before anything was set: what the spec asks of it now) Ready, zone by zone, up to
    the timeline's cap."""
    wanted = {change.site: change.zones for change in core.desired_capacity(state, spec)}
    readings = {}
    for site in spec.sites:
        if site.capacity is None:
            continue
        applied = state.capacity.get(site.name)
        zones = applied.zones if applied is not None else wanted.get(site.name, ())
        left = world.capacity.get(site.name)
        found = []
        for zone, count in zones:
            ready = count if left is None else min(count, left)
            if left is not None:
                left -= ready
            found.append(ZoneReading(zone, ready, count))
        readings[site.name] = CapacityReading(t, tuple(found))
    return readings


def _flows(
    spec: ResilientAppSpec, state: m.AppState, world: _World, t: float
) -> tuple[m.FlowProgress, ...]:
    """Every dataset's flow from the active site to its other sites as the timeline's
    replication lag makes it: a destination ``lag`` seconds behind holds what was made up to
    ``t - lag`` and has changes pending unless the lag is 0 (not given: 0; null: unknown)."""
    if spec.replication is None:
        return ()
    located = [(d.name, [loc.site for loc in d.locations]) for d in spec.replication.objects]
    located += [(d.name, [loc.site for loc in d.locations]) for d in spec.replication.volumes]
    flows = []
    for name, sites in located:
        if state.active_site not in sites:
            continue
        for site in sites:
            if site == state.active_site:
                continue
            lag = world.lag.get(site, 0.0)
            flows.append(
                m.FlowProgress(
                    name,
                    site,
                    state.active_site,
                    state.epoch,
                    0 if lag == 0 else 1,
                    None if lag is None else t - lag,
                )
            )
    return tuple(flows)


def _change_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a round worth printing when it acts on nothing: figures that count up
    (the dwell's seconds) are not a change, a new cause is."""
    held = tuple((h["kind"], h["target"], core.hold_key(h["reason"])) for h in row["held"])
    return (
        row["phase"],
        row["rule"],
        core.hold_key(row["reason"]),
        row["activeSite"],
        row["epoch"],
        held,
        tuple(sorted(row["apiPlanes"].items())),
        tuple(sorted((site, s["ready"]) for site, s in row["standby"].items())),
    )


def _request(raw: RequestEntry, serial: int) -> Request:
    return Request(
        id=raw.id or f"simulated-{serial}",
        op=RequestOp(raw.op),
        site=raw.site,
        force=raw.force,
        planned=raw.planned,
    )


def _probes(
    spec: ResilientAppSpec, world: _World, t: float, round_no: int
) -> Iterable[ProbeResult]:
    for site in spec.sites:
        for endpoint in site.endpoints:
            key = ZoneKey(site.name, endpoint.zone)
            behaviour = world.zones.get(str(key), "ok")
            if behaviour.startswith("status:"):
                yield _answer(key, endpoint, spec.health, int(behaviour[7:]), t)
                continue
            fixed, parameter = _zone_behaviour(behaviour)
            if fixed is None:
                failed = _pseudo_random(str(key), endpoint.url, round_no) < parameter
                outcome = ProbeOutcome.FAIL if failed else ProbeOutcome.OK
                yield ProbeResult(key, outcome, t, 0.01, "flaky" if failed else "")
            else:
                latency = parameter if fixed is ProbeOutcome.OK else 0.01
                detail = "" if fixed is ProbeOutcome.OK else str(fixed)
                yield ProbeResult(key, fixed, t, latency, detail)


def _row(
    t: float,
    decision: m.Decision,
    state: m.AppState,
    spec: ResilientAppSpec,
    observations: m.Observations,
    published: Sequence[m.SiteTarget],
) -> dict[str, Any]:
    return {
        "time": t,
        "rule": str(decision.trace.rule),
        "phase": decision.phase.value,
        "activeSite": state.active_site,
        "epoch": state.epoch,
        "reason": decision.trace.summary,
        "actions": [{"kind": a.kind, "target": a.target, "id": a.id} for a in decision.actions],
        "held": [
            {"kind": h.action.kind, "target": h.action.target, "reason": h.reason}
            for h in decision.held
        ],
        "notes": [{"kind": n.kind.value, "message": n.message} for n in decision.notes],
        "recommendation": state.recommendation.id if state.recommendation else None,
        "apiPlanes": {
            f"{p}/{r}": observations.api_planes[(p, r)].value for p, r in inputs.regions(spec)
        },
        "zones": {
            s.name: {z: state.zone(ZoneKey(s.name, z)).state.value for z in s.zones}
            for s in spec.sites
        },
        "dns": [_dns_target(spec, target) for target in published],
        "standby": {
            r.site: {"ready": r.ready, "reasons": list(r.causes)} for r in decision.readiness
        },
    }


def _dns_target(spec: ResilientAppSpec, target: m.SiteTarget) -> dict[str, Any]:
    """A site's record set as published: its weight, its values and the zones they are."""
    site = spec.site(target.site)
    values = set(target.values)
    zones = [z for z in site.zones if set(site.values({z})) & values] if site else []
    return {
        "site": target.site,
        "weight": target.weight,
        "zones": zones,
        "values": list(target.values),
    }


def injected(timeline: Timeline) -> list[dict[str, Any]]:
    """The timeline's entries as events: when, and what they change."""
    return [
        {"time": e.at, "inject": e.model_dump(mode="json", by_alias=True, exclude_defaults=True)}
        for e in sorted(timeline.timeline, key=lambda e: e.at)
    ]
