"""The decision core, situation by situation, and its invariants over random histories."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api.annotations import Request, RequestOp
from controller.api.models import ApiPlanePolicy, ResilientAppSpec, ResilientAppStatus
from controller.core import decide as core
from controller.core import model as m
from controller.core.apiplane import ApiPlaneState
from controller.core.capacity import CapacityReading, ZoneReading
from controller.core.health import ProbeOutcome, ProbeResult, ZoneKey, ZoneState
from controller.core.status import state_from_status, status_from_state
from tests.factories import app_spec

H, D, IMP = ApiPlaneState.HEALTHY, ApiPlaneState.DEGRADED, ApiPlaneState.IMPAIRED
EAST = ("aws-sandbox", "us-east-1")
WEST = ("aws-sandbox", "us-west-2")


def spec_of(**failover: Any) -> ResilientAppSpec:
    """Two sites with capacity and per-zone DNS values; failover policy overrides."""
    raw = app_spec()
    for index, site in enumerate(raw["sites"]):
        site["zoneTargets"] = [
            {"zone": zone, "values": [f"192.0.{index + 2}.{i + 1}"]}
            for i, zone in enumerate(site["zones"])
        ]
        site["trafficTargets"] = []
        site["capacity"] = {
            "perZone": 2,
            "standbyPerZone": 1,
            "autoScalingGroup": {"name": f"web-{site['name']}"},
        }
    raw["failover"] = {"mode": "Automatic", "minDwellSeconds": 0, **failover}
    return ResilientAppSpec.model_validate(raw)


SPEC = spec_of()
ZONES = [ZoneKey(s.name, z) for s in SPEC.sites for z in s.zones]


@dataclass
class Run:
    """Drives the core round by round (one second apart), applying actions as it goes."""

    spec: ResilientAppSpec = SPEC
    apply: bool = True
    t: float = 0.0
    state: m.AppState = field(default_factory=lambda: core.initial_state(SPEC))
    decisions: list[m.Decision] = field(default_factory=list)
    cap: dict[str, int] = field(default_factory=dict)
    """Sites whose capacity never comes up beyond this many instances Ready."""

    def __post_init__(self) -> None:
        self.state = core.initial_state(self.spec)

    def obs_of(
        self,
        down: Iterable[str] = (),
        api: Mapping[tuple[str, str], ApiPlaneState] | None = None,
        traffic_plane: ApiPlaneState = H,
        **extra: Any,
    ) -> m.Observations:
        """A round's observations: every zone probed, those in ``down`` failing."""
        down = set(down)
        probes = tuple(
            ProbeResult(
                k,
                ProbeOutcome.FAIL if k.site in down or str(k) in down else ProbeOutcome.OK,
                self.t,
                0.01,
            )
            for k in ZONES
        )
        planes = {EAST: H, WEST: H} if api is None else {EAST: H, WEST: H, **api}
        extra.setdefault("capacity", self.readings())
        return m.Observations(
            probes=probes, api_planes=planes, traffic_plane=traffic_plane, **extra
        )

    def readings(self) -> dict[str, CapacityReading]:
        """Every site's drivers report what was last set for it Ready (``cap``: at most
        that many instances of a site come up)."""
        found = {}
        for name, applied in self.state.capacity.items():
            left = self.cap.get(name)
            zones = []
            for zone, count in applied.zones:
                ready = count if left is None else min(count, left)
                left = None if left is None else left - ready
                zones.append(ZoneReading(zone, ready, count))
            found[name] = CapacityReading(self.t, tuple(zones))
        return found

    def round(
        self,
        down: Iterable[str] = (),
        api: Mapping[tuple[str, str], ApiPlaneState] | None = None,
        traffic_plane: ApiPlaneState = H,
        **extra: Any,
    ) -> m.Decision:
        obs = self.obs_of(down, api, traffic_plane, **extra)
        decision = core.decide(self.state, obs, self.spec, self.t)
        self.state = decision.state
        if self.apply:
            for action in decision.actions:
                self.state = core.complete(self.state, action, self.t + 0.5, "C")
        self.decisions.append(decision)
        self.t += 1.0
        return decision

    def rounds(self, n: int, **kwargs: Any) -> m.Decision:
        for _ in range(n):
            decision = self.round(**kwargs)
        return decision

    def notes(self, kind: m.NoteKind) -> list[str]:
        return [n.message for d in self.decisions for n in d.notes if n.kind is kind]

    def actions(self) -> list[m.Action]:
        return [a for d in self.decisions for a in d.actions]


def weights(action: m.Action) -> dict[str, int]:
    assert isinstance(action, m.ShiftTraffic)
    return dict(action.weights)


def values(action: m.Action, site: str) -> tuple[str, ...]:
    assert isinstance(action, m.ShiftTraffic)
    return next(t.values for t in action.targets if t.site == site)


# --------------------------------------------------------------------------- start


def test_first_round_publishes_dns_then_capacity() -> None:
    run = Run()
    first = run.round()
    kinds = [a.kind for a in first.actions]
    assert kinds == ["ShiftTraffic", "SetCapacity", "SetCapacity"]
    assert weights(first.actions[0]) == {"use1": 100, "usw2": 0}
    assert values(first.actions[0], "use1") == ("192.0.2.1", "192.0.2.2", "192.0.2.3")
    capacity = {a.site: dict(a.zones) for a in first.actions if isinstance(a, m.SetCapacity)}
    assert capacity["use1"] == {"us-east-1a": 2, "us-east-1b": 2, "us-east-1c": 2}
    assert capacity["usw2"] == {"us-west-2a": 1, "us-west-2b": 1}  # warm standby
    assert run.round().actions == ()  # applied: nothing left to do
    assert run.decisions[-1].phase is m.Phase.HEALTHY


def test_unapplied_actions_are_emitted_again_with_the_same_identity() -> None:
    run = Run(apply=False)
    first, second = run.round(), run.round()
    assert [a.id for a in first.actions] == [a.id for a in second.actions]


# --------------------------------------------------------------------------- situations


def test_lone_zone_failure_is_evacuated_inside_the_region() -> None:
    run = Run()
    run.round()
    decision = run.rounds(3, down={"use1/us-east-1b"})
    assert str(decision.trace.rule) == "lone-zone-failure"
    assert run.state.active_site == "use1"
    assert run.state.epoch == 1  # no failover
    assert ZoneKey("use1", "us-east-1b") in run.state.evacuated
    shift = next(a for a in decision.actions if isinstance(a, m.ShiftTraffic))
    assert values(shift, "use1") == ("192.0.2.1", "192.0.2.3")  # zone b's address is out
    capacity = next(a for a in decision.actions if isinstance(a, m.SetCapacity))
    assert dict(capacity.zones) == {"us-east-1a": 3, "us-east-1b": 0, "us-east-1c": 3}
    assert len(run.notes(m.NoteKind.EVACUATION)) == 1
    assert decision.phase is m.Phase.DEGRADED


def test_evacuated_zone_returns_after_a_stable_period() -> None:
    run = Run(spec=spec_of(zonalEvacuation={"restoreAfterSeconds": 5}))
    run.round()
    run.rounds(3, down={"use1/us-east-1b"})
    run.rounds(3)  # recovering then healthy again
    assert ZoneKey("use1", "us-east-1b") in run.state.evacuated
    run.rounds(6)
    assert ZoneKey("use1", "us-east-1b") not in run.state.evacuated
    assert run.notes(m.NoteKind.ZONE_RESTORED)
    assert run.decisions[-1].phase is m.Phase.HEALTHY


@pytest.mark.parametrize(
    ("down", "api", "rule"),
    [
        ({"use1"}, None, "site-down"),
        ({"use1/us-east-1a", "use1/us-east-1b"}, None, "multi-zone-failure"),
        ({"use1/us-east-1a"}, {EAST: IMP}, "cascade"),
    ],
)
def test_failures_beyond_one_zone_move_the_app(
    down: set[str], api: dict[tuple[str, str], ApiPlaneState] | None, rule: str
) -> None:
    run = Run()
    run.round()
    decision = run.rounds(3, down=down, api=api)
    failover = next(d for d in run.decisions if str(d.trace.rule) == rule)
    assert run.state.active_site == "usw2"
    assert run.state.epoch == 2
    shift = next(a for a in failover.actions if isinstance(a, m.ShiftTraffic))
    assert weights(shift) == {"use1": 0, "usw2": 100}  # the old primary fenced in the same change
    assert run.notes(m.NoteKind.FAILOVER)
    # static stability: nothing is ever aimed at the failing region during the cascade
    if api:
        assert not any(isinstance(a, m.SetCapacity) and a.region == EAST for a in run.actions()[3:])
    assert decision.state.last_failover is not None


def test_a_degraded_api_plane_can_be_the_cascade_level() -> None:
    run = Run(spec=spec_of(cascade={"apiPlane": "Degraded"}))
    run.round()
    run.rounds(3, down={"use1/us-east-1a"}, api={EAST: D})
    assert run.state.active_site == "usw2"


def test_api_plane_impairment_alone_freezes_and_keeps_serving() -> None:
    run = Run()
    run.round()
    decision = run.rounds(5, api={EAST: IMP})
    assert str(decision.trace.rule) == "api-plane-impairment"
    assert decision.phase is m.Phase.FROZEN
    assert run.state.active_site == "use1"
    assert len(run.notes(m.NoteKind.FROZEN)) == 1
    assert decision.actions == ()


def test_frozen_region_gets_no_action_even_when_one_is_due() -> None:
    spec = spec_of()
    run = Run(spec=spec, apply=False)
    decision = run.round(api={EAST: IMP})  # first round: capacity of use1 is due
    assert all(not (isinstance(a, m.SetCapacity) and a.region == EAST) for a in decision.actions)
    assert any(
        h.action.region == EAST for h in decision.held if isinstance(h.action, m.SetCapacity)
    )


def test_noisy_probes_do_nothing() -> None:
    run = Run()
    run.round()
    for i in range(30):
        run.round(down={"use1/us-east-1a"} if i % 3 == 0 else set())
    assert run.state.epoch == 1
    assert not run.state.evacuated
    assert {str(d.trace.rule) for d in run.decisions[1:]} <= {"steady", "healthy-but-noisy"}


def test_no_target_holds_and_says_so_once() -> None:
    run = Run()
    run.round()
    decision = run.rounds(6, down={"use1", "usw2"})
    assert str(decision.trace.rule) == "site-down-held"
    assert run.state.active_site == "use1"
    assert len(run.notes(m.NoteKind.NO_TARGET)) == 1
    assert decision.phase is m.Phase.DOWN


def test_target_in_an_impaired_region_is_refused() -> None:
    run = Run()
    run.round()
    decision = run.rounds(4, down={"use1"}, api={WEST: IMP})
    assert run.state.active_site == "use1"
    assert "API plane of us-west-2 Impaired" in dict(decision.trace.facts)["target usw2"]


def test_impaired_dns_service_holds_the_failover() -> None:
    run = Run()
    run.round()
    decision = run.rounds(4, down={"use1"}, traffic_plane=IMP)
    assert run.state.active_site == "use1"
    assert "DNS service" in decision.trace.summary


# --------------------------------------------------------------------------- anti-flapping


def test_dwell_and_budget_limit_failovers() -> None:
    run = Run(spec=spec_of(minDwellSeconds=20, maxFailoversPerHour=2))
    run.round()
    run.rounds(3, down={"use1"})
    assert run.state.epoch == 2
    run.rounds(3, down={"usw2"})  # the new site fails right away: dwell holds it
    assert run.state.epoch == 2
    assert run.decisions[-1].trace.summary == (
        "every probed zone of active site usw2 is Down; failover held: dwell: 3 s of 20 s"
    )
    run.rounds(20, down={"usw2"})
    assert run.state.epoch == 3  # dwell passed
    run.rounds(25, down={"use1"})
    assert run.state.epoch == 3  # budget: 2 per hour
    assert run.decisions[-1].trace.summary.endswith(
        "failover held: budget: 2 failovers in the last hour (max 2)"
    )


def test_a_change_of_causes_is_announced_again_and_a_countdown_is_not() -> None:
    run = Run(spec=spec_of(minDwellSeconds=20, maxFailoversPerHour=2))
    run.round()
    run.rounds(3, down={"use1"})
    run.rounds(25, down={"usw2"})  # dwell, then the second failover
    assert run.state.epoch == 3
    run.rounds(30, down={"use1"})  # dwell and budget, then the budget alone
    held = [m.split("failover held: ")[1] for m in run.notes(m.NoteKind.HELD)]
    assert held[0].startswith("dwell: ") and "budget" not in held[0]
    assert held[1].startswith("dwell: ") and held[1].endswith(
        "; budget: 2 failovers in the last hour (max 2)"
    )
    assert held[2:] == ["budget: 2 failovers in the last hour (max 2)"]


def test_a_hold_names_every_blocking_cause_with_its_figure() -> None:
    run = Run(spec=spec_of(minDwellSeconds=600, maxFailoversPerHour=1))
    run.round()
    run.rounds(3, down={"use1"})
    assert run.state.active_site == "usw2"
    reasons = {WEST: "throttle share 40% >= 30%", EAST: "error share 60% >= 50%"}
    decision = run.rounds(
        3, down={"usw2", "use1"}, api={EAST: IMP}, pinned="usw2", api_plane_reasons=reasons
    )
    assert decision.trace.rule == m.Verdict(m.Rule.SITE_DOWN, held=True)
    assert decision.trace.summary == (
        "every probed zone of active site usw2 is Down; failover held: pinned to usw2; "
        "dwell: 3 s of 600 s; budget: 1 failover in the last hour (max 1); "
        "use1: API plane of us-east-1 Impaired: error share 60% >= 50%"
    )
    held = run.round(down={"usw2", "use1"}, pinned="usw2")
    assert held.trace.summary.endswith("use1: 0/3 zones Healthy (needs 1)")


def test_a_refused_request_names_the_target_s_zones() -> None:
    run = Run()
    run.round()
    run.rounds(3, down={"usw2"})
    run.round(down={"usw2"}, request=Request("r1", RequestOp.FAILOVER, "usw2"))
    assert run.state.last_request is not None
    assert run.state.last_request.reason == (
        "requested by a user (failover); failover held: usw2: 0/2 zones Healthy (needs 1)"
    )
    assert run.notes(m.NoteKind.REQUEST_REFUSED) == [
        "failover request r1: " + run.state.last_request.reason
    ]


def test_held_actions_name_the_api_plane_figure() -> None:
    run = Run()
    decision = run.round(api={WEST: IMP}, api_plane_reasons={WEST: "throttle share 40% >= 30%"})
    assert [h.reason for h in decision.held] == [
        "API plane of us-west-2 Impaired: throttle share 40% >= 30% (static stability)"
    ]


# --------------------------------------------------------------------------- forced moves


def test_a_forced_move_onto_a_failing_site_does_not_block_the_rescue() -> None:
    """Regression: a forced failover to a site that is down started a dwell, and the
    automatic move away from that site waited for the whole dwell."""
    run = Run(spec=spec_of(minDwellSeconds=600, maxFailoversPerHour=1))
    run.round()
    run.rounds(3, down={"usw2"})
    forced = Request("r1", RequestOp.FAILOVER, "usw2", force=True)
    run.round(down={"usw2"}, request=forced)
    assert (run.state.active_site, run.state.epoch) == ("usw2", 2)
    assert run.state.last_failover is not None and run.state.last_failover.forced
    assert run.state.failover_times == ()  # no budget spent
    decision = run.round(down={"usw2"})
    assert (run.state.active_site, run.state.epoch) == ("use1", 3)
    assert decision.trace.rule == m.Verdict(m.Rule.SITE_DOWN)
    # The rescue was automatic: from now on dwell and budget hold again.
    run.rounds(3, down={"use1"})
    assert run.state.active_site == "use1"
    assert "dwell: " in run.decisions[-1].trace.summary


def test_a_forced_move_off_the_path_of_a_dwell_is_not_counted_either() -> None:
    run = Run(spec=spec_of(minDwellSeconds=600, maxFailoversPerHour=1))
    run.round()
    run.rounds(3, down={"use1"})  # automatic: use1 -> usw2 (dwell and budget spent)
    run.round(request=Request("r1", RequestOp.FAILOVER, "use1", force=True))
    assert run.state.active_site == "use1"
    run.rounds(3, down={"use1"})  # the forced site fails: left at once
    assert run.state.active_site == "usw2"


def test_a_drill_request_is_checked_like_any_but_starts_no_dwell_and_spends_no_budget() -> None:
    run = Run(spec=spec_of(minDwellSeconds=600, maxFailoversPerHour=1))
    run.round()
    # The same safety checks as any request: a target that is down is refused.
    run.rounds(3, down={"usw2"})
    drill = Request("d1", RequestOp.FAILOVER, "usw2", planned=True, drill=True)
    run.round(down={"usw2"}, request=drill)
    assert run.state.active_site == "use1"
    assert run.state.last_request is not None and not run.state.last_request.accepted
    run.rounds(3)
    run.round(request=Request("d2", RequestOp.FAILOVER, "usw2", planned=True, drill=True))
    run.rounds(2)  # planned: writes stopped (no fence declared), drained, then moved
    assert (run.state.active_site, run.state.epoch) == ("usw2", 2)
    record = run.state.last_failover
    assert record is not None and record.drill and record.manual and not record.forced
    assert "requested by a FailoverDrill" in record.reason
    assert run.state.failover_times == ()
    # Its revert comes at once (no dwell), and a budget of one is still whole afterwards.
    run.round(request=Request("d3", RequestOp.FAILOVER, "use1", planned=True, drill=True))
    run.rounds(2)
    assert (run.state.active_site, run.state.epoch) == ("use1", 3)
    assert run.state.failover_times == ()
    run.rounds(3, down={"use1"})
    assert run.state.active_site == "usw2", "the real failover was not blocked by the drill"
    assert run.state.last_failover is not None and not run.state.last_failover.drill


def test_a_drill_move_survives_the_status_round_trip() -> None:
    run = Run()
    run.rounds(3)
    decision = run.round(request=Request("d1", RequestOp.FAILOVER, "usw2", drill=True))
    status = status_from_state(
        decision,
        run.spec,
        ResilientAppStatus(),
        observations=m.Observations(api_planes={EAST: H, WEST: H}),
        running=None,
        generation=1,
        now=run.t,
    )
    assert status.last_failover is not None and status.last_failover.drill
    restored = state_from_status(status, run.spec)
    assert restored.last_failover is not None and restored.last_failover.drill


def test_capacity_of_the_old_site_falls_only_after_the_new_one_has_its_own() -> None:
    """Regression: a forced failover towards an Impaired region scaled the old site down
    while the new site's scale-up was held (serving capacity fell)."""
    run = Run()
    run.rounds(2)
    forced = Request("r1", RequestOp.FAILOVER, "usw2", force=True)
    decision = run.round(request=forced, api={WEST: IMP})
    assert run.state.active_site == "usw2"
    shrink = [a for a in decision.actions if isinstance(a, m.SetCapacity) and a.site == "use1"]
    assert shrink == []
    held = {h.action.site: h.reason for h in decision.held if isinstance(h.action, m.SetCapacity)}
    assert held["usw2"].startswith("API plane of us-west-2 Impaired")
    assert held["use1"] == "waits for usw2 to reach its capacity before use1 shrinks"
    assert run.state.capacity["use1"].zones == (
        ("us-east-1a", 2),
        ("us-east-1b", 2),
        ("us-east-1c", 2),
    )
    decision = run.round()  # the region recovers: usw2 grows first, then use1 shrinks
    kinds = [(a.kind, getattr(a, "site", "")) for a in decision.actions]
    assert ("SetCapacity", "usw2") in kinds
    assert ("SetCapacity", "use1") not in kinds
    decision = run.round()
    assert [a.site for a in decision.actions if isinstance(a, m.SetCapacity)] == ["use1"]


def test_pinned_app_does_not_move() -> None:
    run = Run()
    run.round()
    run.rounds(4, down={"use1"}, pinned="use1")
    assert run.state.active_site == "use1"
    assert "pinned" in run.decisions[-1].trace.summary


# --------------------------------------------------------------------------- modes


def test_observe_mode_recommends_and_never_acts() -> None:
    run = Run(spec=spec_of(mode="Observe"))
    run.rounds(5, down={"use1"})
    assert run.actions() == []
    assert run.state.active_site == "use1"
    assert run.state.recommendation is not None
    assert run.state.recommendation.response is m.Response.FAILOVER
    assert len(run.notes(m.NoteKind.RECOMMENDED)) == 1


def test_manual_mode_acts_only_on_approval() -> None:
    run = Run(spec=spec_of(mode="Manual"))
    run.round()
    run.rounds(4, down={"use1"})
    assert run.state.active_site == "use1"
    recommendation = run.state.recommendation
    assert recommendation is not None
    run.round(down={"use1"}, approval="something-else")
    assert run.state.active_site == "use1"
    decision = run.round(down={"use1"}, approval=recommendation.id)
    assert run.state.active_site == "usw2"
    assert any(isinstance(a, m.ShiftTraffic) for a in decision.actions)
    assert run.state.recommendation is None


def test_an_approval_is_used_once_and_never_approves_a_later_recommendation() -> None:
    """A zone evacuated on approval, restored on approval, fails again in the same epoch:
    the approvals still in the annotation must not act again; a new one is needed."""
    run = Run(spec=spec_of(mode="Manual", zonalEvacuation={"restoreAfterSeconds": 5}))
    zone = ZoneKey("use1", "us-east-1b")
    run.round()
    run.rounds(3, down={"use1/us-east-1b"})
    first = run.state.recommendation
    assert first is not None and first.response is m.Response.EVACUATE
    run.round(down={"use1/us-east-1b"}, approval=first.id)
    assert zone in run.state.evacuated
    run.rounds(10, approval=first.id)  # healthy again: a restore is recommended
    restore = run.state.recommendation
    assert restore is not None and restore.id != first.id
    run.round(approval=restore.id)
    assert zone not in run.state.evacuated

    run.rounds(4, down={"use1/us-east-1b"}, approval=restore.id)  # the zone fails again
    assert zone not in run.state.evacuated  # neither old approval acts
    again = run.state.recommendation
    assert again is not None and again.response is m.Response.EVACUATE
    assert again.id not in (first.id, restore.id)
    run.rounds(3, down={"use1/us-east-1b"}, approval=first.id)
    assert zone not in run.state.evacuated
    run.round(down={"use1/us-east-1b"}, approval=again.id)
    assert zone in run.state.evacuated


# --------------------------------------------------------------------------- requests


def test_manual_failover_request_is_checked_then_carried_out_once() -> None:
    run = Run()
    run.round()
    request = Request("r1", RequestOp.FAILOVER, "usw2")
    run.round(request=request)
    assert run.state.active_site == "usw2"
    assert run.state.last_request is not None and run.state.last_request.accepted
    assert run.state.last_failover is not None and run.state.last_failover.manual
    run.round(request=request)  # the same request again: already answered
    assert run.state.epoch == 2


def test_unsafe_request_is_refused_with_a_reason_unless_forced() -> None:
    run = Run()
    run.round()
    run.rounds(3, down={"usw2"})
    run.round(down={"usw2"}, request=Request("r1", RequestOp.FAILOVER, "usw2"))
    assert run.state.active_site == "use1"
    assert run.state.last_request is not None
    assert not run.state.last_request.accepted
    assert run.state.last_request.reason.endswith("usw2: 0/2 zones Healthy (needs 1)")
    run.round(down={"usw2"}, request=Request("r2", RequestOp.FAILOVER, "usw2", force=True))
    assert run.state.active_site == "usw2"


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (Request("r", RequestOp.FAILOVER, "nowhere"), "no site named 'nowhere'"),
        (Request("r", RequestOp.FAILOVER, "use1"), "already the active site"),
        (Request("r", RequestOp.FAILBACK), "already the active site"),
    ],
)
def test_requests_that_make_no_sense_are_refused(request_: Request, reason: str) -> None:
    run = Run()
    run.round()
    run.round(request=request_)
    assert run.state.last_request is not None
    assert reason in run.state.last_request.reason


# --------------------------------------------------------------------------- failback


def test_manual_failback_policy_never_fails_back_by_itself() -> None:
    run = Run()
    run.round()
    run.rounds(3, down={"use1"})
    run.rounds(40)
    assert run.state.active_site == "usw2"
    run.round(request=Request("back", RequestOp.FAILBACK))
    assert run.state.active_site == "use1"
    assert run.notes(m.NoteKind.FAILBACK)


def test_automatic_failback_after_a_stable_period_and_caught_up_replication() -> None:
    run = Run(spec=spec_of(failback={"mode": "Automatic", "stableSeconds": 10}))
    run.round()
    run.rounds(3, down={"use1"})
    assert run.state.active_site == "usw2"
    run.rounds(15, replication_lag={"use1": 120.0}, replication_target=30.0)
    assert run.state.active_site == "usw2"  # replication has not caught up
    run.rounds(2, replication_lag={"use1": 5.0}, replication_target=30.0)
    assert run.state.active_site == "use1"
    assert run.state.epoch == 3


# --------------------------------------------------------------------------- memory


def test_state_survives_a_round_trip_through_status() -> None:
    run = Run()
    run.round()
    run.rounds(3, down={"use1/us-east-1b"})
    run.rounds(3, down={"use1"})
    decision = replace(run.decisions[-1], state=run.state)
    status = status_from_state(
        decision,
        run.spec,
        ResilientAppStatus(),
        observations=m.Observations(api_planes={EAST: H, WEST: H}),
        running=None,
        generation=1,
        now=run.t,
    )
    restored = state_from_status(ResilientAppStatus.model_validate(status.to_wire()), run.spec)
    for attribute in ("active_site", "epoch", "evacuated", "traffic", "capacity"):
        assert getattr(restored, attribute) == getattr(run.state, attribute), attribute
    # Streak counters are kept up to the thresholds they are compared with.
    health = run.spec.health
    assert restored.zones == {
        key: replace(
            zone,
            consecutive_failures=min(zone.consecutive_failures, health.failure_threshold),
            consecutive_successes=min(zone.consecutive_successes, health.success_threshold),
        )
        for key, zone in run.state.zones.items()
    }
    # ... which changes no decision: the restored state goes on as the original does.
    for down in ({"use1"}, set(), set(), set()):
        observations, now = run.obs_of(down), run.t
        before = run.round(down=down)
        after = core.decide(restored, observations, run.spec, now)
        restored = after.state
        for action in after.actions:  # carried out as the run carries out its own
            restored = core.complete(restored, action, now + 0.5, "C")
        assert (after.trace.rule, after.actions) == (before.trace.rule, before.actions)
    assert restored.last_failover == run.state.last_failover
    assert restored.failover_times == run.state.failover_times


def test_stale_completion_is_ignored() -> None:
    state = m.AppState(active_site="usw2", epoch=3)
    old = core.desired_traffic(m.AppState(active_site="use1", epoch=2), SPEC)
    assert core.complete(state, old, 10.0) == state


def test_removed_active_site_returns_to_primary_with_new_epoch() -> None:
    state = m.AppState(active_site="gone", epoch=4)
    decision = core.decide(state, m.Observations(), SPEC, 0.0)
    assert decision.state.active_site == "use1"
    assert decision.state.epoch == 5


def test_slow_answers_count_as_failures_with_a_latency_threshold() -> None:
    raw = app_spec(
        health={"intervalSeconds": 1, "timeoutSeconds": 0.5, "latencyThresholdSeconds": 0.2}
    )
    spec = ResilientAppSpec.model_validate(raw)
    state = core.initial_state(spec)
    slow = tuple(ProbeResult(k, ProbeOutcome.OK, 0.0, 0.3) for k in ZONES)
    decision = core.decide(state, m.Observations(probes=slow), spec, 0.0)
    zone = decision.state.zone(ZONES[0])
    assert zone.state is ZoneState.SUSPECT
    assert "slow" in zone.last_detail


# --------------------------------------------------------------------------- invariants

zone_names = [str(k) for k in ZONES]
round_strategy = st.fixed_dictionaries(
    {
        "down": st.sets(st.sampled_from([*zone_names, "use1", "usw2"]), max_size=3),
        "east": st.sampled_from([H, D, IMP]),
        "west": st.sampled_from([H, D, IMP]),
        "dns": st.sampled_from([H, IMP]),
        "apply": st.booleans(),
        "request": st.sampled_from([None, "use1", "usw2"]),
        "force": st.booleans(),
    }
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(round_strategy, max_size=40),
    st.sampled_from(["Automatic", "Manual", "Observe"]),
    st.integers(0, 20),
    st.integers(1, 3),
)
def test_invariants(rounds: list[dict[str, Any]], mode: str, dwell: int, budget: int) -> None:
    spec = spec_of(mode=mode, minDwellSeconds=dwell, maxFailoversPerHour=budget)
    state, t = core.initial_state(spec), 0.0
    decided: list[tuple[float, bool]] = []
    rescues: set[float] = set()
    for i, r in enumerate(rounds):
        probes = tuple(
            ProbeResult(
                k,
                ProbeOutcome.FAIL
                if k.site in r["down"] or str(k) in r["down"]
                else ProbeOutcome.OK,
                t,
                0.01,
            )
            for k in ZONES
        )
        request = (
            Request(f"q{i}", RequestOp.FAILOVER, r["request"], force=r["force"])
            if r["request"]
            else None
        )
        planes = {EAST: r["east"], WEST: r["west"]}
        obs = m.Observations(probes, planes, r["dns"], request)
        first = core.decide(state, obs, spec, t)
        assert core.decide(state, obs, spec, t) == first  # same inputs, same outputs
        if mode == "Observe":
            assert first.actions == ()
        for action in first.actions:
            if isinstance(action, m.ShiftTraffic):
                assert r["dns"] is not IMP  # never through an impaired DNS API plane
                assert sorted(w for _, w in action.weights).count(100) == 1  # one primary
            elif not isinstance(action, m.FenceWrites):  # a webhook, no region's API plane
                assert planes[action.region] is not IMP  # static stability
        assert first.state.epoch >= state.epoch
        if first.state.epoch > state.epoch and first.state.last_failover is not None:
            record = first.state.last_failover
            if record.forced:
                assert record.manual and first.state.failover_times[-1:] != (t,)
            elif core.rescue_allowed(state):
                rescues.add(t)  # leaving a site a forced move put the app on
            decided.append((t, record.manual))
        state = first.state
        if r["apply"]:
            for action in first.actions:
                state = core.complete(state, action, t + 0.5)
        t += 1.0
    automatic = [at for at, manual in decided if not manual]
    for earlier, later in itertools.pairwise(automatic):
        assert later - earlier >= dwell or later in rescues  # dwell never broken by the rules
    for at in automatic:
        assert sum(1 for x, _ in decided if at - 3600 < x <= at) <= budget or any(
            manual for _, manual in decided
        )


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(zone_names), st.integers(0, 30))
def test_a_single_failed_probe_never_acts(zone: str, steady_rounds: int) -> None:
    run = Run()
    run.rounds(steady_rounds + 1)
    before = run.state
    decision = run.round(down={zone})
    assert decision.actions == ()
    assert run.state.active_site == before.active_site
    assert run.state.evacuated == before.evacuated


def test_api_plane_policy_defaults_are_sane() -> None:
    policy = ApiPlanePolicy()
    assert policy.degraded.error_share < policy.impaired.error_share
