"""The core follows DNS as read back: toward the higher epoch, never down, and never over
another owner's record."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core import decide as core
from controller.core import model as m
from tests.unit.test_decide import SPEC, Run


def ours(epoch: int | None, site: str | None, fingerprint: str | None) -> m.DnsObservation:
    return m.DnsObservation(m.Ownership.OURS, epoch, site, fingerprint)


def shifts(decision: m.Decision) -> list[m.ShiftTraffic]:
    return [a for a in decision.actions if isinstance(a, m.ShiftTraffic)]


def test_a_newer_epoch_in_dns_is_followed_not_overwritten() -> None:
    """The status was lost (epoch 1 at the primary) while DNS says a failover to usw2
    happened at epoch 2: the worker follows DNS instead of moving traffic back."""
    run = Run()
    run.round()
    desired = core.desired_traffic(m.AppState("usw2", epoch=2), SPEC)
    decision = run.round(dns=ours(2, "usw2", desired.fingerprint))
    assert (decision.state.active_site, decision.state.epoch) == ("usw2", 2)
    assert not shifts(decision)
    assert any(n.kind is m.NoteKind.DNS_DIVERGED for n in decision.notes)


def test_what_dns_already_holds_is_recorded_not_applied_again() -> None:
    """A failover's DNS change went through but its completion was lost in a crash."""
    run = Run(apply=False)
    run.round()
    decided = m.AppState("usw2", epoch=2)
    run.state = decided
    fingerprint = core.desired_traffic(decided, SPEC).fingerprint
    decision = run.round(dns=ours(2, "usw2", fingerprint))
    assert not shifts(decision)
    assert decision.state.traffic_epoch == 2


def test_dns_changed_behind_lifeboats_back_is_set_again() -> None:
    run = Run()
    run.round()
    assert run.state.traffic_epoch == 1
    decision = run.round(dns=ours(1, "use1", "someone-else-edited"))
    assert [dict(a.weights) for a in shifts(decision)] == [{"use1": 100, "usw2": 0}]
    assert any(n.kind is m.NoteKind.DNS_DIVERGED for n in decision.notes)


def test_another_owner_holds_every_traffic_change_and_is_said_once() -> None:
    run = Run(apply=False)
    other = m.DnsObservation(m.Ownership.OTHER, 4, "usw2", "x", owner="shop/other-app")
    first = run.round(dns=other)
    assert not shifts(first)
    assert [h.reason for h in first.held] == ["DNS name held by shop/other-app"]
    second = run.round(dns=other)
    assert not any(n.kind is m.NoteKind.DNS_CONFLICT for n in second.notes)
    assert second.state.epoch == 1  # another owner's epoch is not ours to follow
    freed = run.round(dns=m.DnsObservation(m.Ownership.NONE))
    assert any(n.kind is m.NoteKind.DNS_RESOLVED for n in freed.notes)
    assert shifts(freed)


observations = st.one_of(
    st.none(),
    st.builds(
        m.DnsObservation,
        st.sampled_from(list(m.Ownership)),
        st.one_of(st.none(), st.integers(0, 8)),
        st.sampled_from([None, "use1", "usw2", "gone"]),
        st.sampled_from([None, "x", "y"]),
        st.sampled_from([None, "ns/other"]),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(observations, st.sampled_from([(), ("use1",), ("usw2",)])),
        min_size=1,
        max_size=30,
    )
)
def test_the_epoch_never_goes_down_whatever_dns_says(
    history: list[tuple[m.DnsObservation | None, tuple[str, ...]]],
) -> None:
    run = Run()
    epoch = run.state.epoch
    for dns, down in history:
        decision = run.round(down=down, dns=dns)
        assert decision.state.epoch >= epoch
        epoch = decision.state.epoch
        assert SPEC.site(decision.state.active_site) is not None
        for action in shifts(decision):
            assert action.epoch == decision.state.epoch


def test_dns_names_the_site_of_an_epoch_whose_state_lost_it() -> None:
    """Found by the worker fuzz suite: a status that kept its epoch but lost its active
    site is rebuilt at that epoch at the declared primary; DNS, written under that very
    epoch, holds usw2. The core follows DNS instead of moving traffic to the primary."""
    run = Run(apply=False)
    run.state = m.AppState("use1", epoch=4)  # rebuilt: epoch known, site guessed
    desired = core.desired_traffic(m.AppState("usw2", epoch=4), SPEC)
    decision = run.round(dns=ours(4, "usw2", desired.fingerprint))
    assert (decision.state.active_site, decision.state.epoch) == ("usw2", 4)
    assert not shifts(decision)
    assert any(n.kind is m.NoteKind.DNS_DIVERGED for n in decision.notes)


def test_at_the_same_epoch_what_was_applied_wins_over_dns() -> None:
    """The rule above only fills in what the state does not know: a state that recorded
    what its epoch applied sets DNS back when the record says another site."""
    run = Run()
    run.round()
    assert run.state.traffic_epoch == 1
    decision = run.round(dns=ours(1, "usw2", "edited"))
    assert decision.state.active_site == "use1"
    assert [dict(a.weights) for a in shifts(decision)] == [{"use1": 100, "usw2": 0}]


def test_no_failover_raises_the_epoch_beyond_its_bound() -> None:
    """Found by make fuzz (12 crashes in 10,000 cases): at the CRDs' epoch bound a failover
    raised the epoch past it and every round failed writing the failover's record."""
    from controller.api.models import MAX_EPOCH

    run = Run(apply=False)
    run.state = m.AppState("use1", epoch=MAX_EPOCH)
    for _ in range(5):
        decision = run.round(down=("use1",))
    assert decision.state.epoch == MAX_EPOCH
    assert decision.state.active_site == "use1"
    assert "the epoch is at its highest" in decision.trace.summary
