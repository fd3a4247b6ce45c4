"""``lifeboat simulate APP.yaml TIMELINE.yaml``: the pure decision core on a scripted timeline.

Nothing is contacted: the simulator plays the operator's part, probing every zone each
``health.intervalSeconds`` with the outcome the timeline prescribes, judging each region's
API plane from the call outcomes the timeline prescribes (with the CloudProvider's
thresholds, default ones unless ``--provider`` files are given), passing requests and
approvals on, and carrying out every action at once. It prints the decisions as JSON and
a short human summary — the way to tune a policy offline and to test it in CI.

Timeline format (YAML)::

    duration: 120            # seconds to simulate (default: 60 after the last entry)
    timeline:                # each entry changes the world from its time on
      - at: 10
        zones:               # site/zone: ok | fail | timeout | slow:<seconds> | flaky:<share>
          use1/us-east-1a: fail
      - at: 20
        api:                 # provider/region: outcomes of the calls of each round
          aws-prod/us-east-1: [throttled, throttled, ok]
      - at: 40
        request: {op: failover, site: usw2, force: false}
      - at: 45
        approve: true        # approve the current recommendation (Manual mode)
      - at: 50
        pin: use1            # later: unpin: true
      - at: 60
        replicationLag: {use1: 12.5}

Zones and regions not mentioned answer ``ok``. ``flaky`` outcomes are pseudo-random but
reproducible (the same timeline always gives the same decisions).
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from controller.api.models import CloudProviderSpec, ResilientAppSpec
from controller.core import decide as core
from controller.core import model as m
from controller.core.apiplane import (
    ApiPlaneHealth,
    ApiPlaneState,
    CallOutcome,
    CallRecord,
    Levels,
    Thresholds,
    assess,
)
from controller.core.health import ProbeOutcome, ProbeResult, ZoneKey


class TimelineError(ValueError):
    """The app or the timeline cannot be used; the message says where and why."""


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    at: float = Field(ge=0)
    zones: dict[str, str] = Field(default_factory=dict)
    api: dict[str, list[CallOutcome]] = Field(default_factory=dict)
    request: dict[str, Any] | None = None
    approve: bool = False
    pin: str | None = Field(default=None)
    unpin: bool = False
    replication_lag: dict[str, float | None] = Field(default_factory=dict, alias="replicationLag")

    @field_validator("zones")
    @classmethod
    def _zone_outcomes(cls, value: dict[str, str]) -> dict[str, str]:
        for key, outcome in value.items():
            if "/" not in key:
                raise ValueError(f"zone {key!r} must be written site/zone")
            _zone_behaviour(outcome)
        return value


class Timeline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duration: float | None = Field(default=None, gt=0)
    timeline: list[Entry] = Field(default_factory=list)


def _zone_behaviour(text: str) -> tuple[ProbeOutcome | None, float]:
    """(fixed outcome or None for flaky, latency or flaky share)."""
    name, _, argument = text.partition(":")
    try:
        if name == "ok":
            return ProbeOutcome.OK, 0.01
        if name in ("fail", "down"):
            return ProbeOutcome.FAIL, 0.01
        if name == "timeout":
            return ProbeOutcome.TIMEOUT, 0.0
        if name == "slow":
            return ProbeOutcome.OK, float(argument)
        if name == "flaky":
            share = float(argument)
            if 0 <= share <= 1:
                return None, share
    except ValueError:
        pass
    raise ValueError(f"zone outcome {text!r}: use ok, fail, timeout, slow:<s> or flaky:<share>")


def _load_app(path: Path) -> ResilientAppSpec:
    document = _yaml(path)
    spec = document.get("spec", document) if isinstance(document, dict) else document
    try:
        return ResilientAppSpec.model_validate(spec)
    except ValidationError as error:
        raise TimelineError(f"{path}: {error}") from None


def _load_timeline(path: Path) -> Timeline:
    try:
        return Timeline.model_validate(_yaml(path) or {})
    except ValidationError as error:
        raise TimelineError(f"{path}: {error}") from None


def _load_provider(path: Path) -> tuple[str, CloudProviderSpec]:
    document = _yaml(path)
    try:
        name = str(document["metadata"]["name"])
        return name, CloudProviderSpec.model_validate(document["spec"])
    except (KeyError, TypeError, ValidationError) as error:
        raise TimelineError(f"{path}: not a CloudProvider ({error})") from None


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise TimelineError(f"{path}: {error}") from None


def _thresholds(spec: CloudProviderSpec | None) -> Thresholds:
    if spec is None:
        return Thresholds()
    p = spec.api_plane

    def levels(x: Any) -> Levels:
        return Levels(x.error_share, x.throttle_share, x.latency_p99_seconds)

    return Thresholds(float(p.window_seconds), p.min_calls, levels(p.degraded), levels(p.impaired))


@dataclass
class _World:
    """What the timeline has set so far."""

    zones: dict[str, str] = field(default_factory=dict)
    api: dict[str, list[CallOutcome]] = field(default_factory=dict)
    pinned: str | None = None
    lag: dict[str, float | None] = field(default_factory=dict)

    def apply(self, entry: Entry) -> None:
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
    """The decisions, one JSON-ready dict per round in which something happened."""
    providers = providers or {}
    interval = float(spec.health.interval_seconds)
    entries = sorted(timeline.timeline, key=lambda e: e.at)
    end = timeline.duration or ((entries[-1].at if entries else 0.0) + 60.0)
    world = _World()
    regions = {(s.provider, s.region) for s in spec.sites}
    calls: dict[tuple[str, str], deque[CallRecord]] = {r: deque() for r in regions}
    health: dict[tuple[str, str], ApiPlaneHealth] = {r: ApiPlaneHealth() for r in regions}
    state = core.initial_state(spec)
    decisions: list[dict[str, Any]] = []
    pending = deque(entries)
    t, round_no, requests = 0.0, 0, 0
    while t <= end:
        request, approve = None, False
        while pending and pending[0].at <= t:
            entry = pending.popleft()
            world.apply(entry)
            if entry.request is not None:
                requests += 1
                request = _request(entry.request, requests)
            approve = approve or entry.approve
        planes = {}
        for key in regions:
            outcomes = world.api.get(f"{key[0]}/{key[1]}", [CallOutcome.OK])
            for i, outcome in enumerate(outcomes):
                calls[key].append(CallRecord(t + i * 0.01, outcome, 0.05, probe=True))
            limits = _thresholds(providers.get(key[0]))
            health[key] = assess(health[key], calls[key], limits, t)
            planes[key] = health[key].state
        observations = m.Observations(
            probes=tuple(_probes(spec, world, t, round_no)),
            api_planes=planes,
            traffic_plane=ApiPlaneState.HEALTHY,
            request=request,
            approval=state.recommendation.id if approve and state.recommendation else None,
            pinned=world.pinned,
            replication_lag=dict(world.lag),
        )
        decision = core.decide(state, observations, spec, t)
        state = decision.state
        for action in decision.actions:
            state = core.complete(state, action, t, "simulated")
        decision = replace(decision, phase=core.phase_of(state, spec, observations))
        changed = not decisions or decisions[-1]["rule"] != decision.trace.rule
        if decision.actions or decision.notes or changed:
            decisions.append(_row(t, decision, state))
        t += interval
        round_no += 1
    return decisions


def _request(raw: Mapping[str, Any], serial: int) -> m.Request:
    try:
        return m.Request(
            id=str(raw.get("id", f"simulated-{serial}")),
            op=m.RequestOp(raw["op"]),
            site=raw.get("site"),
            force=bool(raw.get("force", False)),
        )
    except (KeyError, ValueError) as error:
        raise TimelineError(f"request {dict(raw)}: {error}") from None


def _probes(
    spec: ResilientAppSpec, world: _World, t: float, round_no: int
) -> Iterable[ProbeResult]:
    for site in spec.sites:
        for endpoint in site.endpoints:
            key = ZoneKey(site.name, endpoint.zone)
            fixed, parameter = _zone_behaviour(world.zones.get(str(key), "ok"))
            if fixed is None:
                failed = _pseudo_random(str(key), endpoint.url, round_no) < parameter
                outcome = ProbeOutcome.FAIL if failed else ProbeOutcome.OK
                yield ProbeResult(key, outcome, t, 0.01, "flaky" if failed else "")
            else:
                latency = parameter if fixed is ProbeOutcome.OK else 0.01
                detail = "" if fixed is ProbeOutcome.OK else str(fixed)
                yield ProbeResult(key, fixed, t, latency, detail)


def _row(t: float, decision: m.Decision, state: m.AppState) -> dict[str, Any]:
    return {
        "time": t,
        "rule": decision.trace.rule,
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
    }


def summarize(decisions: list[dict[str, Any]]) -> str:
    """A few lines a person reads: where the app ended, and every move on the way."""
    if not decisions:
        return "no rounds simulated"
    lines = []
    for row in decisions:
        moved = [n for n in row["notes"] if n["kind"] not in ("ZoneStateChanged",)]
        for note in moved:
            lines.append(f"t={row['time']:>7.1f}s  {note['kind']}: {note['message']}")
    last = decisions[-1]
    epochs = last["epoch"] - 1
    lines.append(
        f"end: active site {last['activeSite']}, epoch {last['epoch']} "
        f"({epochs} failover{'s' if epochs != 1 else ''}), phase {last['phase']}"
    )
    return "\n".join(lines)


def run(app: Path, timeline: Path, providers: Iterable[Path] = ()) -> tuple[str, str]:
    """(JSON document, human summary) for the files given."""
    spec = _load_app(app)
    named = dict(_load_provider(p) for p in providers)
    decisions = simulate(spec, _load_timeline(timeline), named)
    return json.dumps({"decisions": decisions}, indent=2), summarize(decisions)
