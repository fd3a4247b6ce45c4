"""The decision core: failover rules, traffic reconciliation, Observe mode, invariants."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api.models import ResilientAppSpec
from controller.core import decide as core
from controller.core.health import ProbeOutcome, ProbeResult, ZoneKey, ZoneState
from controller.core.status import state_from_status, status_from_state
from tests.factories import app_spec

SPEC = ResilientAppSpec.model_validate(app_spec())
ZONES = [ZoneKey(s.name, z) for s in SPEC.sites for z in s.zones]


def spec_with(**overrides: Any) -> ResilientAppSpec:
    return ResilientAppSpec.model_validate(app_spec(**overrides))


def round_of(
    t: float, down: set[str] | frozenset[str] = frozenset(), keys: list[ZoneKey] | None = None
) -> core.Observations:
    """One probe round at ``t``: zones (``site/zone``) or whole sites in ``down`` fail."""

    def outcome(k: ZoneKey) -> ProbeOutcome:
        return ProbeOutcome.FAIL if k.site in down or str(k) in down else ProbeOutcome.OK

    return core.Observations(tuple(ProbeResult(k, outcome(k), t, 0.01) for k in keys or ZONES))


def drive(
    rounds: list[core.Observations], spec: ResilientAppSpec = SPEC, apply: bool = True
) -> tuple[core.AppState, list[core.Decision]]:
    state, decisions = core.AppState.initial(spec), []
    for i, obs in enumerate(rounds):
        decision = core.decide(state, obs, spec, float(i))
        state = decision.state
        if apply:
            for action in decision.actions:
                state = core.complete(state, action, float(i) + 0.5, f"C{i}")
        decisions.append(decision)
    return state, decisions


def test_first_round_publishes_traffic_for_the_primary() -> None:
    state, decisions = drive([round_of(0)])
    (action,) = decisions[0].actions
    assert action.active_site == "use1" and action.epoch == 1
    assert dict(action.weights) == {"use1": 100, "usw2": 0}
    assert state.traffic_epoch == 1
    assert decisions[0].phase is core.Phase.HEALTHY


def test_unapplied_traffic_is_retried_every_round() -> None:
    _, decisions = drive([round_of(0), round_of(1)], apply=False)
    ids = [d.actions[0].id for d in decisions]
    assert ids[0] == ids[1]
    assert ids[0].startswith("shift-traffic/epoch-1/")


def test_all_zones_of_primary_down_fails_over_and_fences() -> None:
    rounds = [round_of(0)] + [round_of(t, down={"use1"}) for t in (1, 2, 3)]
    state, decisions = drive(rounds)
    last = decisions[-1]
    assert last.trace.rule == "all-zones-down"
    (action,) = last.actions
    assert action.active_site == "usw2" and action.epoch == 2
    assert dict(action.weights) == {"use1": 0, "usw2": 100}  # old primary demoted, same change
    assert state.active_site == "usw2" and state.epoch == 2
    record = state.last_failover
    # The site last answered at t=0; the failover was decided at t=3 and applied at 3.5.
    assert record is not None and record.outage_start == 0.0
    assert record.detection_seconds == 3.0 and record.rto_seconds == 3.5
    assert any(n.kind is core.NoteKind.FAILOVER for n in last.notes)


def test_one_zone_down_does_not_fail_over() -> None:
    rounds = [round_of(0)] + [round_of(t, down={"use1/us-east-1a"}) for t in range(1, 8)]
    state, decisions = drive(rounds)
    assert state.active_site == "use1" and state.epoch == 1
    assert decisions[-1].phase is core.Phase.DEGRADED
    assert state.zone(ZoneKey("use1", "us-east-1a")).state is ZoneState.DOWN


def test_below_threshold_failures_never_act() -> None:
    rounds = [round_of(0), round_of(1, down={"use1"}), round_of(2, down={"use1"}), round_of(3)]
    state, decisions = drive(rounds)
    assert state.epoch == 1
    assert all(d.trace.rule == "steady" for d in decisions)


def test_no_healthy_target_stays_and_reports_down_once() -> None:
    rounds = [round_of(0)] + [round_of(t, down={"use1", "usw2"}) for t in range(1, 7)]
    state, decisions = drive(rounds)
    assert state.active_site == "use1" and state.epoch == 1
    assert decisions[-1].trace.rule == "no-failover-target"
    assert decisions[-1].phase is core.Phase.DOWN
    no_target = [n for d in decisions for n in d.notes if n.kind is core.NoteKind.NO_TARGET]
    assert len(no_target) == 1


def test_observe_mode_recommends_but_never_acts() -> None:
    spec = spec_with(failover={"mode": "Observe"})
    rounds = [round_of(0)] + [round_of(t, down={"use1"}) for t in range(1, 6)]
    state, decisions = drive(rounds, spec)
    assert all(not d.actions for d in decisions)
    assert state.active_site == "use1" and state.epoch == 1
    recommended = [
        n for d in decisions for n in d.notes if n.kind is core.NoteKind.FAILOVER_RECOMMENDED
    ]
    assert len(recommended) == 1 and "usw2" in recommended[0].message


def test_target_is_chosen_by_priority_then_order() -> None:
    raw = app_spec()
    third = {**raw["sites"][1], "name": "euc1", "region": "eu-central-1", "priority": 10}
    third["zones"] = ["eu-central-1a"]
    third["endpoints"] = [{"zone": "eu-central-1a", "url": "http://127.0.3.1:8080/"}]
    spec = spec_with(sites=[*raw["sites"], third])
    keys = [ZoneKey(s.name, z) for s in spec.sites for z in s.zones]
    rounds = [round_of(0, keys=keys)] + [round_of(t, {"use1"}, keys) for t in (1, 2, 3)]
    state, _ = drive(rounds, spec)
    assert state.active_site == "euc1"


def test_changed_traffic_targets_are_applied_again() -> None:
    state, _ = drive([round_of(0)])
    raw = app_spec()
    raw["sites"][0]["trafficTargets"] = ["192.0.2.99"]
    decision = core.decide(state, round_of(1), spec_with(sites=raw["sites"]), 1.0)
    (action,) = decision.actions
    assert action.epoch == 1  # not a failover: the same epoch, new content
    assert action.targets[0].values == ("192.0.2.99",)
    assert action.retire is None


def test_renamed_record_retires_the_old_name() -> None:
    state, _ = drive([round_of(0)])
    renamed = spec_with(traffic={**app_spec()["traffic"], "recordName": "shop.example.test."})
    (action,) = core.decide(state, round_of(1), renamed, 1.0).actions
    assert action.dns.name == "shop.example.test."
    assert action.retire is not None and action.retire.name == "web.example.test."


def test_zone_without_endpoints_forgets_its_verdict() -> None:
    state, _ = drive([round_of(0)])
    raw = app_spec()
    raw["sites"][0]["endpoints"] = raw["sites"][0]["endpoints"][:1]  # only us-east-1a
    spec = spec_with(sites=raw["sites"])
    decision = core.decide(state, round_of(1, keys=ZONES[:1] + ZONES[3:]), spec, 1.0)
    assert decision.state.zone(ZoneKey("use1", "us-east-1b")).state is ZoneState.UNKNOWN


def test_stale_completion_is_ignored() -> None:
    state = core.AppState(active_site="usw2", epoch=3)
    stale = core.desired_traffic(core.AppState(active_site="use1", epoch=2), SPEC)
    assert core.complete(state, stale, 10.0) == state


def test_removed_active_site_returns_to_primary_with_new_epoch() -> None:
    state = core.AppState(active_site="gone", epoch=4)
    decision = core.decide(state, round_of(0), SPEC, 0.0)
    assert decision.state.active_site == "use1" and decision.state.epoch == 5
    assert decision.actions[0].epoch == 5


def test_status_round_trip_restores_the_state() -> None:
    rounds = [round_of(0)] + [round_of(t, down={"use1"}) for t in (1, 2, 3, 4)]
    state, decisions = drive(rounds)
    from controller.api.models import ResilientAppStatus

    status = status_from_state(
        state,
        decisions[-1].phase,
        decisions[-1].trace,
        SPEC,
        ResilientAppStatus(),
        generation=1,
        now=5.0,
    )
    wire = ResilientAppStatus.model_validate(status.to_wire())
    restored = state_from_status(wire, SPEC)
    assert restored.active_site == state.active_site and restored.epoch == state.epoch
    assert restored.traffic == state.traffic
    assert restored.zones == state.zones
    assert restored.last_failover == state.last_failover
    assert wire.healthy_zones == "2/5"
    ready = next(c for c in wire.conditions if c.type == "Ready")
    assert ready.status == "True"


rounds_strategy = st.lists(
    st.tuples(st.sets(st.sampled_from([str(k) for k in ZONES])), st.booleans()),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(rounds_strategy, st.sampled_from(["Automatic", "Observe"]))
def test_invariants(seq: list[tuple[set[str], bool]], mode: str) -> None:
    spec = spec_with(failover={"mode": mode})
    state, epoch = core.AppState.initial(spec), 1
    for t, (down, apply) in enumerate(seq):
        obs = round_of(float(t), down=down)
        first = core.decide(state, obs, spec, float(t))
        again = core.decide(state, obs, spec, float(t))
        assert first == again  # same inputs, same outputs
        if mode == "Observe":
            assert not first.actions and first.state.active_site == "use1"
        assert first.state.epoch >= epoch  # epochs only rise
        if first.state.epoch > epoch:
            old = spec.site(state.active_site)
            assert old is not None
            assert all(
                state.zone(ZoneKey(old.name, z)).state is not ZoneState.HEALTHY for z in old.zones
            )
            target = spec.site(first.state.active_site)
            assert target is not None
            assert any(first.state.zone(ZoneKey(target.name, z)).healthy for z in target.zones)
        for action in first.actions:
            weights = dict(action.weights)
            assert sorted(weights.values()) == [0] * (len(weights) - 1) + [100]  # one active
        state, epoch = first.state, first.state.epoch
        if apply:
            for action in first.actions:
                state = core.complete(state, action, t + 0.5)
