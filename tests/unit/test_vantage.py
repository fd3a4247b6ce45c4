"""Several vantages, one verdict: the peers' views weighed into the zone states decisions
use (controller/core/vantage.py), and the decision core with them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core import decide as core
from controller.core import model as m
from controller.core.health import ProbeOutcome, ProbeResult, ZoneKey, ZoneState
from controller.core.vantage import Consensus, PeerView, Vantage, consensus, majority
from tests.unit.test_decide import EAST, IMP, WEST, ZONES, H, Run, spec_of

D, OK, S, U, R = (
    ZoneState.DOWN,
    ZoneState.HEALTHY,
    ZoneState.SUSPECT,
    ZoneState.UNKNOWN,
    ZoneState.RECOVERING,
)
A, B, C = (ZoneKey("use1", z) for z in ("us-east-1a", "us-east-1b", "us-east-1c"))
EAST_ZONES = (A, B, C)
WEST_ZONES = tuple(k for k in ZONES if k.site == "usw2")


def view(name: str, zones: Mapping[ZoneKey, ZoneState], heard: bool = True) -> PeerView:
    return PeerView(name, heard, dict(zones))


def everywhere(state: ZoneState, keys: Iterable[ZoneKey] = ZONES) -> dict[ZoneKey, ZoneState]:
    return dict.fromkeys(keys, state)


def peers(*views: PeerView, allow_solo: bool = False, total: int | None = None) -> Vantage:
    return Vantage(views, total or len(views) + 1, allow_solo, peer="use1")


# --------------------------------------------------------------------------- consensus


def test_one_vantage_decides_on_its_own_states() -> None:
    own = {A: D, B: S}
    weighed = consensus(own, None, [A, B, C])
    assert weighed.zones == {A: D, B: S, C: U}
    assert weighed.single and weighed.quorate and weighed.decides
    assert weighed.disagreements == () and weighed.why_not() is None


def test_majorities() -> None:
    assert [majority(n) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 2, 3, 3, 5]


def test_a_zone_only_this_peer_sees_down_is_a_disagreement_not_down() -> None:
    vantage = peers(view("usw2", everywhere(OK)), view("euc1", everywhere(OK)))
    weighed = consensus({A: D, B: OK, C: OK}, vantage, EAST_ZONES)
    assert weighed.zones == {A: OK, B: OK, C: OK}
    (disagreement,) = weighed.disagreements
    assert (disagreement.zone, disagreement.down) == (A, ("use1",))
    assert disagreement.others == ("usw2", "euc1")
    assert str(disagreement) == "use1/us-east-1a Down for use1 only (1 of 3 heard)"


def test_a_zone_only_another_peer_sees_down_is_a_disagreement() -> None:
    vantage = peers(view("usw2", {A: D, B: OK, C: OK}), view("euc1", everywhere(OK)))
    weighed = consensus({A: OK, B: OK, C: OK}, vantage, EAST_ZONES)
    assert weighed.zones[A] is OK
    assert [(d.zone, d.down) for d in weighed.disagreements] == [(A, ("usw2",))]


def test_a_majority_of_the_heard_peers_takes_a_zone_down_even_against_this_one() -> None:
    vantage = peers(view("usw2", {A: D}), view("euc1", {A: D}))
    weighed = consensus({A: OK}, vantage, [A])
    assert weighed.zones == {A: D}
    assert weighed.disagreements == ()  # a minority seeing it up is not reported


def test_with_two_of_three_heard_both_must_agree() -> None:
    silent = view("euc1", everywhere(D), heard=False)
    agree = consensus({A: D}, peers(view("usw2", {A: D}), silent), [A])
    assert agree.zones == {A: D} and agree.quorate
    split = consensus({A: D}, peers(view("usw2", {A: OK}), silent), [A])
    assert split.zones == {A: S}  # neither Down nor Healthy: nothing moves on it
    assert split.unconfirmed == (A,)
    assert [d.down for d in split.disagreements] == [("use1",)]


def test_unheard_peers_views_do_not_count() -> None:
    vantage = peers(view("usw2", {A: D}, heard=False), view("euc1", {A: D}, heard=False))
    weighed = consensus({A: OK}, vantage, [A])
    assert weighed.heard == ("use1",)
    assert weighed.zones == {A: S}


def test_a_lone_peer_confirms_nothing() -> None:
    vantage = peers(view("usw2", {}, heard=False), view("euc1", {}, heard=False))
    weighed = consensus({A: D, B: OK, C: R}, vantage, EAST_ZONES)
    assert weighed.zones == {A: S, B: S, C: R}
    assert not weighed.quorate and not weighed.decides
    assert weighed.why_not() == (
        "only 1 of 3 peers heard (use1); zone evidence needs a majority of the peers (2) "
        "and allowSolo is off"
    )


def test_allow_solo_lets_a_lone_peer_decide_on_its_own_view() -> None:
    vantage = peers(view("usw2", {}, heard=False), view("euc1", {}, heard=False), allow_solo=True)
    weighed = consensus({A: D, B: OK, C: R}, vantage, EAST_ZONES)
    assert weighed.zones == {A: D, B: OK, C: R}
    assert not weighed.quorate and weighed.decides and weighed.why_not() is None
    assert "allowSolo" in weighed.summary()


def test_a_healthy_verdict_needs_confirmation_too() -> None:
    """Peers that have not published the app yet confirm nothing: this peer's Healthy alone
    would otherwise fail back or restore zones on its own."""
    vantage = peers(view("usw2", {}), view("euc1", {}))
    assert consensus({A: OK}, vantage, [A]).zones == {A: S}
    assert consensus({A: OK}, peers(view("usw2", {A: OK}), view("euc1", {})), [A]).zones == {A: OK}


def test_five_peers_need_three_heard() -> None:
    down = {A: D}
    two = peers(
        view("b", down), view("c", down, False), view("d", down, False), view("e", down, False)
    )
    assert consensus(down, two, [A]).zones == {A: S}
    three = peers(view("b", down), view("c", down), view("d", {}, False), view("e", {}, False))
    assert consensus(down, three, [A]).zones == {A: D}


def test_a_total_below_the_peers_listed_counts_them_all() -> None:
    vantage = Vantage((view("b", {}, False), view("c", {}, False), view("d", {}, False)), 1)
    assert consensus({A: D}, vantage, [A]).total == 4


views_strategy = st.lists(
    st.tuples(
        st.booleans(),
        st.dictionaries(st.sampled_from(EAST_ZONES), st.sampled_from(list(ZoneState))),
    ),
    max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(EAST_ZONES), st.sampled_from(list(ZoneState))),
    views_strategy,
    st.booleans(),
    st.integers(0, 3),
)
def test_consensus_properties(
    own: dict[ZoneKey, ZoneState],
    others: list[tuple[bool, dict[ZoneKey, ZoneState]]],
    allow_solo: bool,
    extra: int,
) -> None:
    total = len(others) + 1 + extra
    vantage = Vantage(
        tuple(PeerView(f"p{i}", h, z) for i, (h, z) in enumerate(others)), total, allow_solo
    )
    weighed = consensus(own, vantage, EAST_ZONES)
    heard = [own] + [z for h, z in others if h]
    assert len(weighed.heard) == len(heard)
    quorate = len(heard) >= majority(total)
    assert weighed.quorate is quorate
    for key in EAST_ZONES:
        votes = [v.get(key, U) for v in heard]
        downs = votes.count(D)
        state = weighed.zones[key]
        # Down (Healthy) for decisions only on a majority of the heard, with a majority heard
        assert (state is D) == ((quorate or allow_solo) and 2 * downs > len(votes))
        if state is OK:
            assert (quorate or allow_solo) and 2 * votes.count(OK) > len(votes)
        # a minority seeing Down is a disagreement; nothing else is
        disagreed = [d for d in weighed.disagreements if d.zone == key]
        assert bool(disagreed) == (downs > 0 and 2 * downs <= len(votes))
        if disagreed:
            assert len(disagreed[0].down) == downs
        # one peer's view alone never makes a zone Down when two or more are heard
        if downs == 1 and len(votes) >= 2:
            assert state is not D
    if len(heard) == 1 + len(others) and all(z == own for _, z in others) and quorate:
        assert weighed.zones == {k: own.get(k, U) for k in EAST_ZONES}


# --------------------------------------------------------------------------- the core


def probes(t: float, down: Iterable[str] = ()) -> tuple[ProbeResult, ...]:
    down = set(down)
    return tuple(
        ProbeResult(
            k, ProbeOutcome.FAIL if k.site in down or str(k) in down else ProbeOutcome.OK, t, 0.01
        )
        for k in ZONES
    )


def others(
    *names: str, zones: Mapping[ZoneKey, ZoneState] | None = None, heard: bool = True
) -> tuple[PeerView, ...]:
    return tuple(view(n, everywhere(OK) if zones is None else zones, heard) for n in names)


def test_a_zone_only_this_peer_cannot_reach_is_never_evacuated() -> None:
    run = Run()
    vantage = peers(*others("usw2", "euc1"))
    run.rounds(3, vantage=vantage)
    decision = run.rounds(10, down={str(A)}, vantage=vantage)
    assert run.state.evacuated == frozenset() and run.state.epoch == 1
    assert run.notes(m.NoteKind.EVACUATION) == []
    assert run.state.zone(A).state is D  # this peer's own view is kept (and published)
    assert decision.vantage is not None
    assert [(d.zone, d.down) for d in decision.vantage.disagreements] == [(A, ("use1",))]
    assert "peers disagree on use1/us-east-1a" in decision.trace.summary
    facts = dict(decision.trace.facts)
    assert facts["disagreement"].startswith("use1/us-east-1a Down for use1 only")
    assert "us-east-1a=Healthy(here Down)" in facts["site use1"]
    assert decision.phase is m.Phase.HEALTHY


def test_a_site_only_this_peer_cannot_reach_is_never_failed_over() -> None:
    run = Run()
    vantage = peers(*others("usw2", "euc1"))
    run.rounds(10, down={"use1"}, vantage=vantage)
    assert run.state.active_site == "use1" and run.state.epoch == 1
    assert run.notes(m.NoteKind.FAILOVER) == []


def test_a_zone_a_majority_sees_down_is_evacuated_as_today() -> None:
    single, multi = Run(), Run()
    down = everywhere(OK) | {A: D}
    vantage = peers(*others("usw2", "euc1", zones=down))
    for _ in range(6):
        single.round(down={str(A)})
        multi.round(down={str(A)}, vantage=vantage)
    assert multi.state.evacuated == single.state.evacuated == frozenset({A})
    assert multi.notes(m.NoteKind.EVACUATION) == single.notes(m.NoteKind.EVACUATION)


def test_the_others_majority_fails_over_a_site_this_peer_still_reaches() -> None:
    run = Run()
    vantage = peers(*others("usw2", "euc1", zones=everywhere(OK) | everywhere(D, EAST_ZONES)))
    decision = run.round(vantage=vantage)
    assert run.state.active_site == "usw2" and run.state.epoch == 2
    assert decision.outcome is m.Outcome.FAILOVER
    assert "(here Healthy)" in dict(decision.trace.facts)["site use1"]


def test_a_lone_peer_holds_a_failover_and_says_why() -> None:
    run = Run()
    vantage = peers(*others("usw2", "euc1", heard=False))
    decisions = [run.round(down={"use1"}, vantage=vantage) for _ in range(6)]
    last = decisions[-1]
    assert run.state.active_site == "use1" and run.state.epoch == 1
    assert str(last.trace.rule) == "site-down-held"
    assert last.outcome is m.Outcome.HELD
    assert last.trace.summary == (
        "every probed zone of active site use1 is Down as this peer sees it; failover held: "
        "only 1 of 3 peers heard (use1); zone evidence needs a majority of the peers (2) "
        "and allowSolo is off"
    )
    held = run.notes(m.NoteKind.HELD)
    assert len(held) == 1  # said once, when it starts
    assert dict(last.trace.facts)["vantage"].startswith("1/3 peers heard (use1)")


def test_a_lone_peer_holds_an_evacuation() -> None:
    run = Run()
    vantage = peers(*others("usw2", "euc1", heard=False))
    last = run.rounds(6, down={str(A)}, vantage=vantage)
    assert run.state.evacuated == frozenset()
    assert str(last.trace.rule) == "lone-zone-failure-held"
    assert len(run.notes(m.NoteKind.EVACUATION_HELD)) == 1
    assert "evacuation held: only 1 of 3 peers heard" in last.trace.summary


def test_a_lone_peer_with_allow_solo_decides_as_a_single_operator() -> None:
    run = Run()
    vantage = peers(*others("usw2", "euc1", heard=False), allow_solo=True)
    run.rounds(6, down={"use1"}, vantage=vantage)
    assert run.state.active_site == "usw2" and run.state.epoch == 2


def test_evacuated_zone_comes_back_only_when_the_peers_see_it_healthy() -> None:
    run = Run(spec=spec_of(zonalEvacuation={"restoreAfterSeconds": 5}))
    agree = peers(*others("usw2", "euc1", zones=everywhere(OK) | {A: D}))
    run.rounds(5, down={str(A)}, vantage=agree)
    assert run.state.evacuated == frozenset({A})
    # this peer reaches it again; the others do not: it stays out
    run.rounds(20, vantage=agree)
    assert run.state.evacuated == frozenset({A})
    run.rounds(8, vantage=peers(*others("usw2", "euc1")))
    assert run.state.evacuated == frozenset()


def test_a_lone_peer_never_fails_back() -> None:
    run = Run(spec=spec_of(failback={"mode": "Automatic", "stableSeconds": 5}))
    run.rounds(5, down={"use1"})
    assert run.state.active_site == "usw2"
    lone = peers(*others("usw2", "euc1", heard=False))
    run.rounds(30, vantage=lone)
    assert run.state.active_site == "usw2"
    run.rounds(10, vantage=peers(*others("usw2", "euc1")))
    assert run.state.active_site == "use1"


def test_phase_follows_the_peers() -> None:
    spec = spec_of(mode="Observe")
    state = core.initial_state(spec)
    for t in range(4):
        state = core.decide(state, m.Observations(probes(t, {"use1"})), spec, t).state
    assert core.phase_of(state, spec, m.Observations()) is m.Phase.DOWN
    healthy = peers(*others("usw2", "euc1"))
    assert core.phase_of(state, spec, m.Observations(vantage=healthy)) is m.Phase.HEALTHY


# --------------------------------------------------------------------------- properties

AUTO = spec_of(
    zonalEvacuation={"restoreAfterSeconds": 3}, failback={"mode": "Automatic", "stableSeconds": 3}
)
downs = st.sets(st.sampled_from([*map(str, ZONES), "use1", "usw2"]), max_size=4)
plane_rounds = st.tuples(downs, st.sampled_from([H, IMP]), st.sampled_from([H, IMP]))


def without_vantage(decision: m.Decision) -> m.Decision:
    """The decision as a single operator would report it (no vantage facts)."""
    facts = tuple(f for f in decision.trace.facts if f[0] not in ("vantage", "disagreement"))
    return replace(decision, trace=replace(decision.trace, facts=facts), vantage=None)


def own_zones(state: m.AppState) -> dict[ZoneKey, ZoneState]:
    return {k: h.state for k, h in state.zones.items()}


@settings(max_examples=120, deadline=None)
@given(
    st.lists(plane_rounds, max_size=30),
    st.sampled_from([2, 4]),
    st.data(),
)
def test_every_peer_agreeing_decides_as_today(
    rounds: list[tuple[set[str], Any, Any]], n_others: int, data: st.DataObject
) -> None:
    """With a majority heard and every heard peer seeing what this one sees, the decision
    is exactly the single-cluster one (unheard peers' views do not matter)."""
    heard = data.draw(
        st.lists(st.booleans(), min_size=n_others, max_size=n_others).filter(
            lambda h: 1 + sum(h) >= majority(n_others + 1)
        )
    )
    noise = data.draw(st.sampled_from([D, OK, U]))
    state, t = core.initial_state(AUTO), 0.0
    for down, east, west in rounds:
        obs = m.Observations(probes(t, down), {EAST: east, WEST: west}, H)
        today = core.decide(state, obs, AUTO, t)
        seen = own_zones(today.state)
        vantage = Vantage(
            tuple(
                PeerView(f"p{i}", h, seen if h else everywhere(noise)) for i, h in enumerate(heard)
            ),
            n_others + 1,
        )
        peered = core.decide(state, replace(obs, vantage=vantage), AUTO, t)
        assert without_vantage(peered) == today
        assert peered.vantage is not None and peered.vantage.disagreements == ()
        state = today.state
        for action in today.actions:
            state = core.complete(state, action, t + 0.5)
        t += 1.0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(downs, st.sampled_from([H, IMP])), min_size=1, max_size=30),
    st.integers(0, 2),
    st.lists(st.sampled_from(["healthy", "silent", "unheard"]), min_size=2, max_size=4),
    st.sampled_from(["Automatic", "Manual"]),
)
def test_one_peers_view_alone_never_moves_an_app(
    rounds: list[tuple[set[str], Any]], odd: int, rest: list[str], mode: str
) -> None:
    """One peer (this one, or another) sees zones Down; every other peer sees them
    Healthy, has published nothing yet, or is not heard: no evacuation, no failover."""
    spec = spec_of(mode=mode)
    state, t = core.initial_state(spec), 0.0
    odd = min(odd, len(rest))  # 0: this peer is the odd one
    for down, east in rounds:
        obs_probes = probes(t, down) if odd == 0 else probes(t)
        views = []
        for i, kind in enumerate(rest, start=1):
            if i == odd:
                dark = {k for k in ZONES if k.site in down or str(k) in down}
                views.append(PeerView(f"p{i}", True, {k: D if k in dark else OK for k in ZONES}))
            else:
                zones = everywhere(OK) if kind == "healthy" else {}
                views.append(PeerView(f"p{i}", kind != "unheard", zones))
        vantage = Vantage(tuple(views), len(rest) + 1)
        obs = m.Observations(obs_probes, {EAST: east, WEST: H}, H, vantage=vantage)
        decision = core.decide(state, obs, spec, t)
        assert decision.outcome not in (m.Outcome.FAILOVER, m.Outcome.EVACUATION)
        assert decision.state.recommendation is None
        state = decision.state
        for action in decision.actions:
            state = core.complete(state, action, t + 0.5)
        t += 1.0
    assert state.active_site == "use1" and state.epoch == 1
    assert state.evacuated == frozenset()


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(downs, st.sampled_from([H, IMP])), max_size=30), st.booleans())
def test_a_lone_peer_holds_what_it_would_do_and_with_allow_solo_does_it(
    rounds: list[tuple[set[str], Any]], allow_solo: bool
) -> None:
    """A lone peer (no other heard) never moves the app, and holds, naming why, whatever a
    single operator would have moved; with allowSolo it decides as a single operator."""
    vantage = Vantage(
        (PeerView("p1", False, everywhere(D)), PeerView("p2", False, everywhere(D))),
        3,
        allow_solo,
    )
    single, lone, t = core.initial_state(AUTO), core.initial_state(AUTO), 0.0
    for down, east in rounds:
        obs = m.Observations(probes(t, down), {EAST: east, WEST: H}, H)
        today = core.decide(single, obs, AUTO, t)
        peered = core.decide(lone, replace(obs, vantage=vantage), AUTO, t)
        if allow_solo:
            assert without_vantage(peered) == today
        else:
            assert peered.outcome not in (m.Outcome.FAILOVER, m.Outcome.EVACUATION)
            assert peered.outcome is not m.Outcome.RESTORE
            moved = today.outcome in (m.Outcome.FAILOVER, m.Outcome.EVACUATION)
            if moved and (single.epoch, single.evacuated) == (lone.epoch, lone.evacuated):
                assert peered.outcome is m.Outcome.HELD
                assert "peers heard" in peered.trace.summary
        single, lone = today.state, peered.state
        for action in today.actions:
            single = core.complete(single, action, t + 0.5)
        for action in peered.actions:
            lone = core.complete(lone, action, t + 0.5)
        t += 1.0
    if not allow_solo:
        assert lone.epoch == 1 and lone.active_site == "use1" and lone.evacuated == frozenset()


def test_consensus_is_exported_for_single_cluster_too() -> None:
    spec = spec_of()
    state = core.initial_state(spec)
    weighed: Consensus = core.consensus_of(state, spec, None)
    assert weighed.single and set(weighed.zones) == set(ZONES)
    assert core.judged_state(state, spec, None) is state


@pytest.mark.parametrize("total", [3, 5])
def test_the_decision_carries_the_weighing(total: int) -> None:
    spec = spec_of()
    names = [f"p{i}" for i in range(1, total)]
    vantage = Vantage(tuple(view(n, everywhere(OK)) for n in names), total, peer="me")
    decision = core.decide(
        core.initial_state(spec), m.Observations(probes(0.0), vantage=vantage), spec, 0.0
    )
    assert decision.vantage is not None
    assert decision.vantage.heard == ("me", *names)
    assert (
        core.decide(core.initial_state(spec), m.Observations(probes(0.0)), spec, 0.0).vantage
        is None
    )
