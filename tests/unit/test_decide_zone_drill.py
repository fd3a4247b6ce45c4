"""The decision core and ZoneEvacuation drills: a Healthy zone taken out on purpose, kept
out until the drill puts it back, and given up the moment anything real happens."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api.annotations import Request, RequestOp
from controller.api.models import ResilientAppStatus
from controller.core import decide as core
from controller.core import model as m
from controller.core.health import ZoneKey
from controller.core.status import state_from_status, status_from_state
from tests.unit.test_decide import EAST, IMP, H, Run, spec_of, values, weights

B = ZoneKey("use1", "us-east-1b")
DRILL = "zone-weekly"


def evacuate(zone: str = "us-east-1b", site: str = "use1", **extra: Any) -> Request:
    fields: dict[str, Any] = {"drill": True, "lease_seconds": 600.0, **extra}
    return Request("drill/zone-weekly/1/evacuate", RequestOp.EVACUATE, site, zone=zone, **fields)


def restore(zone: str = "us-east-1b", site: str = "use1") -> Request:
    return Request("drill/zone-weekly/1/restore", RequestOp.RESTORE, site, drill=True, zone=zone)


def steady(**failover: Any) -> Run:
    failover = {"zonalEvacuation": {"restoreAfterSeconds": 5}, **failover}
    run = Run(spec=spec_of(**failover))
    run.rounds(3)
    assert run.decisions[-1].phase is m.Phase.HEALTHY
    return run


def out(run: Run) -> m.Decision:
    """A steady run with zone b taken out by the drill (the request still annotated)."""
    decision = run.round(request=evacuate(), drill=DRILL)
    assert run.state.last_request is not None and run.state.last_request.accepted, decision
    return decision


def shift(decision: m.Decision) -> m.ShiftTraffic:
    found = [a for a in decision.actions if isinstance(a, m.ShiftTraffic)]
    assert found, decision.actions
    return found[0]


def test_a_drill_takes_a_healthy_zone_out_like_an_evacuation_and_keeps_it_out() -> None:
    run = steady()
    decision = out(run)
    assert decision.trace.rule == core.ZONE_DRILL
    assert run.state.drill_evacuation is not None
    assert run.state.drill_evacuation.key == B
    assert run.state.drill_evacuation.expires_at == pytest.approx(run.t - 1 + 600)
    assert B in run.state.evacuated
    assert run.state.epoch == 1  # no failover: an evacuation inside the site
    assert values(shift(decision), "use1") == ("192.0.2.1", "192.0.2.3")
    assert weights(shift(decision)) == {"use1": 100, "usw2": 0}
    capacity = next(a for a in decision.actions if isinstance(a, m.SetCapacity))
    assert dict(capacity.zones) == {"us-east-1a": 3, "us-east-1b": 0, "us-east-1c": 3}
    # Taken out on purpose, the zone is no trouble of the app's: still Healthy.
    assert decision.phase is m.Phase.HEALTHY
    # Healthy all along, it is not put back by the restore rule (5 s), however long.
    last = run.rounds(30, request=evacuate(), drill=DRILL)
    assert B in run.state.evacuated and last.actions == ()
    assert not run.notes(m.NoteKind.ZONE_RESTORED)
    assert (
        "site use1",
        "us-east-1a=Healthy, us-east-1b=Healthy(out: drill zone-weekly), "
        "us-east-1c=Healthy; API plane Healthy",
    ) in last.trace.facts


def test_the_drill_puts_its_zone_back_at_once() -> None:
    run = steady()
    out(run)
    run.rounds(3, request=evacuate(), drill=DRILL)
    decision = run.round(request=restore(), drill=DRILL)
    assert run.state.last_request is not None
    assert (run.state.last_request.id, run.state.last_request.accepted) == (
        "drill/zone-weekly/1/restore",
        True,
    )
    assert B not in run.state.evacuated and run.state.drill_evacuation is None
    assert values(shift(decision), "use1") == ("192.0.2.1", "192.0.2.2", "192.0.2.3")
    assert decision.phase is m.Phase.HEALTHY
    # Asked again (the same ID is answered once) or anew: the zone is in traffic already.
    again = Request(
        "drill/zone-weekly/1/restore-1", RequestOp.RESTORE, "use1", drill=True, zone="us-east-1b"
    )
    run.round(request=again, drill=DRILL)
    assert run.state.last_request is not None and run.state.last_request.accepted
    assert "in traffic already" in run.state.last_request.reason


@pytest.mark.parametrize(
    ("request_", "drill", "failover", "down", "words"),
    [
        (evacuate(drill=False), DRILL, {}, (), "made by ZoneEvacuation drills only"),
        (evacuate(), None, {}, (), "no FailoverDrill holds the app"),
        (evacuate(site="usw2", zone="us-west-2a"), DRILL, {}, (), "usw2 is not the active site"),
        (evacuate(zone="us-east-1z"), DRILL, {}, (), "use1 has no zone 'us-east-1z'"),
        (
            evacuate(),
            DRILL,
            {"minHealthyTargetZones": 3},
            (),
            "without us-east-1b, use1 would serve from 2 Healthy zone(s) (us-east-1a, "
            "us-east-1c); needs 3 (failover.minHealthyTargetZones)",
        ),
        (
            evacuate(),
            DRILL,
            {"zonalEvacuation": {"enabled": False, "restoreAfterSeconds": 5}},
            (),
            "zonal evacuation is",
        ),
        (evacuate(), DRILL, {"mode": "Observe"}, (), "Observe mode never acts"),
        (evacuate(), DRILL, {}, ("use1/us-east-1c",), "active site use1 is not steady"),
        (evacuate(), DRILL, {}, ("use1/us-east-1b",), "is out of traffic already"),
    ],
)
def test_an_evacuation_is_refused_with_its_cause(
    request_: Request,
    drill: str | None,
    failover: dict[str, Any],
    down: tuple[str, ...],
    words: str,
) -> None:
    run = steady(**failover)
    run.rounds(4, down=down)
    before = run.state.evacuated
    run.round(down=down, request=request_, drill=drill)
    answer = run.state.last_request
    assert answer is not None and not answer.accepted
    assert words in answer.reason
    assert run.state.evacuated == before and run.state.drill_evacuation is None


def test_a_zone_still_suspect_refuses_the_evacuation_with_its_state() -> None:
    run = steady()
    run.round(down={"use1/us-east-1a"})  # one failed probe: Suspect, not Down
    run.round(down={"use1/us-east-1a"}, request=evacuate(), drill=DRILL)
    answer = run.state.last_request
    assert answer is not None and not answer.accepted
    assert "zones of use1 left to serve not Healthy: us-east-1a=Suspect" in answer.reason


def test_a_real_outage_of_another_zone_ends_the_drill_and_its_zone_comes_back() -> None:
    """The rule: a real outage of the site ends the drill's claim before anything else is
    decided; its zone, Healthy, goes back at once, and the real decision (here: evacuate
    the failed zone) is taken with it."""
    run = steady()
    out(run)
    run.rounds(2, request=evacuate(), drill=DRILL)
    decisions = [
        run.round(down={"use1/us-east-1c"}, request=evacuate(), drill=DRILL) for _ in range(3)
    ]
    last = decisions[-1]
    assert run.state.drill_evacuation is None
    assert run.state.evacuated == frozenset({ZoneKey("use1", "us-east-1c")})
    assert str(last.trace.rule) == "lone-zone-failure"
    # One DNS change: zone b back in, zone c out, in the round the outage was confirmed.
    assert values(shift(last), "use1") == ("192.0.2.1", "192.0.2.2")
    restored = run.notes(m.NoteKind.ZONE_RESTORED)
    assert len(restored) == 1
    assert (
        "zone use1/us-east-1b back in traffic (taken out by FailoverDrill zone-weekly)"
        in (restored[0])
    )
    assert "a real outage of use1: lone-zone-failure (zone(s) us-east-1c Down)" in restored[0]
    assert last.phase is m.Phase.DEGRADED


def test_two_zones_failing_during_a_drill_fail_the_app_over_with_its_zone_back() -> None:
    run = steady()
    out(run)
    down = {"use1/us-east-1a", "use1/us-east-1c"}
    last = run.rounds(3, down=down, request=evacuate(), drill=DRILL)
    assert run.state.active_site == "usw2" and run.state.epoch == 2
    assert str(last.trace.rule) == "multi-zone-failure"
    assert run.state.drill_evacuation is None
    assert B not in run.state.evacuated
    assert weights(shift(last)) == {"use1": 0, "usw2": 100}
    # Budget and dwell are the real failover's alone: the drill spent nothing.
    assert len(run.state.failover_times) == 1


def test_the_drills_own_zone_failing_turns_into_a_real_evacuation() -> None:
    run = steady()
    out(run)
    run.rounds(3, down={"use1/us-east-1b"}, request=evacuate(), drill=DRILL)
    assert run.state.drill_evacuation is None
    assert B in run.state.evacuated
    kept = [n for n in run.notes(m.NoteKind.EVACUATION) if "as a real evacuation" in n]
    assert len(kept) == 1 and "it is Down" in kept[0]
    assert run.decisions[-1].phase is m.Phase.DEGRADED
    # The drill's restore is refused: the zone is the automatic rules' now ...
    run.round(down={"use1/us-east-1b"}, request=restore(), drill=DRILL)
    answer = run.state.last_request
    assert answer is not None and not answer.accepted
    assert "under the automatic rules" in answer.reason
    # ... and they put it back once it is Healthy for restoreAfterSeconds (5 s).
    run.rounds(12, drill=DRILL)
    assert B not in run.state.evacuated


def test_a_drill_that_lets_go_of_the_app_gets_its_zone_put_back() -> None:
    run = steady()
    out(run)
    run.rounds(2, request=evacuate(), drill=DRILL)
    decision = run.round(request=evacuate(), drill=None)  # the drill was deleted
    assert B not in run.state.evacuated and run.state.drill_evacuation is None
    assert (
        "FailoverDrill zone-weekly no longer holds the app"
        in run.notes(m.NoteKind.ZONE_RESTORED)[0]
    )
    assert values(shift(decision), "use1") == ("192.0.2.1", "192.0.2.2", "192.0.2.3")


def test_the_lease_puts_the_zone_back_when_the_drill_never_does() -> None:
    run = steady()
    run.round(request=evacuate(lease_seconds=20.0), drill=DRILL)
    run.rounds(18, drill=DRILL)
    assert B in run.state.evacuated
    run.rounds(2, drill=DRILL)
    assert B not in run.state.evacuated
    assert "lease of 20 s ran out" in run.notes(m.NoteKind.ZONE_RESTORED)[0]


def test_an_impaired_api_plane_keeps_the_zone_out_under_the_automatic_rules() -> None:
    """Capacity cannot move back into an Impaired region: the claim ends (a real outage:
    api-plane-impairment), the zone stays out until the region recovers."""
    run = steady()
    out(run)
    run.round(api={EAST: IMP}, drill=DRILL)
    assert run.state.drill_evacuation is None and B in run.state.evacuated
    assert "region us-east-1's API plane Impaired" in run.notes(m.NoteKind.EVACUATION)[-1]
    run.rounds(8, drill=DRILL)
    assert B not in run.state.evacuated


def test_a_failover_asked_during_a_zone_drill_ends_its_claim() -> None:
    run = steady()
    out(run)
    ask = Request("u-1", RequestOp.FAILOVER, "usw2")
    run.round(request=ask, drill=DRILL)
    assert run.state.active_site == "usw2"
    assert run.state.drill_evacuation is None and B not in run.state.evacuated
    assert "the app fails over to usw2" in run.notes(m.NoteKind.ZONE_RESTORED)[0]


def test_the_claim_survives_a_restart_through_the_status() -> None:
    run = steady()
    decision = out(run)
    status = status_from_state(
        decision,
        run.spec,
        ResilientAppStatus(),
        observations=run.obs_of(drill=DRILL),
        running=None,
        generation=1,
        now=run.t,
    )
    assert status.drill_evacuation is not None
    assert (status.drill_evacuation.drill, status.drill_evacuation.zone) == (DRILL, "us-east-1b")
    assert status.phase == "Healthy"
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert degraded.status == "False"
    wire = ResilientAppStatus.model_validate(status.to_merge_patch())
    state = state_from_status(wire, run.spec)
    assert state.drill_evacuation == run.state.drill_evacuation
    assert B in state.evacuated
    # Rebuilt, the core keeps the zone out (the restore rule does not take it) ...
    again = Run(spec=run.spec, t=run.t)
    again.state = state
    again.rounds(10, drill=DRILL)
    assert B in again.state.evacuated
    # ... and a status whose zone is back in traffic holds no claim.
    back = wire.model_copy(
        update={"zones": tuple(z.model_copy(update={"in_traffic": True}) for z in wire.zones)}
    )
    assert state_from_status(back, run.spec).drill_evacuation is None


# --------------------------------------------------------------------------- invariants

ROUND = st.fixed_dictionaries(
    {
        "down": st.sets(
            st.sampled_from(
                ["use1/us-east-1a", "use1/us-east-1b", "use1/us-east-1c", "usw2/us-west-2a"]
            ),
            max_size=3,
        ),
        "holder": st.sampled_from([DRILL, DRILL, DRILL, None, "other"]),
        "ask": st.sampled_from(["evacuate", "restore", None, None, None]),
        "impaired": st.booleans(),
    }
)


@settings(max_examples=150, deadline=None)
@given(st.lists(ROUND, min_size=1, max_size=40))
def test_a_drill_zone_is_never_kept_out_against_the_rules(rounds: list[dict[str, Any]]) -> None:
    """Whatever happens: a claim exists only for a zone out of traffic, of the active
    site, while its drill holds the app within its lease and the site has no real outage;
    and when a claim ends with its zone Healthy in a region not Impaired, the zone is back
    in traffic in that same round."""
    run = steady()
    asked = 0
    for entry in rounds:
        request = None
        if entry["ask"] is not None:
            asked += 1
            maker = evacuate if entry["ask"] == "evacuate" else restore
            request = maker()
            request = Request(
                f"{request.id}-{asked}",
                request.op,
                request.site,
                drill=True,
                zone=request.zone,
                lease_seconds=30.0,
            )
        before = run.state.drill_evacuation
        api = {EAST: IMP} if entry["impaired"] else None
        decision = run.round(down=entry["down"], api=api, request=request, drill=entry["holder"])
        held = run.state.drill_evacuation
        if held is not None:
            assert held.key in run.state.evacuated
            assert held.site == run.state.active_site
            assert held.drill == entry["holder"]
            assert run.t - 1 < held.expires_at
            site = run.spec.site(held.site)
            assert site is not None
            situation, _ = core.classify(
                run.state,
                site,
                H if not entry["impaired"] else IMP,
                run.spec,
            )
            assert situation in (m.Situation.STEADY, m.Situation.NOISY)
        elif before is not None:
            zone = run.state.zone(before.key)
            if zone.healthy and not entry["impaired"] and run.state.active_site == before.site:
                assert before.key not in run.state.evacuated, decision.trace
        # Never an empty record, never two sites weighted 100.
        for action in decision.actions:
            if isinstance(action, m.ShiftTraffic):
                assert sorted(w for _, w in action.weights) == [0, 100]
                assert all(t.values for t in action.targets)
