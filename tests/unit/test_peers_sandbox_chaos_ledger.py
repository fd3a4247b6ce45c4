"""The invariants of the randomized runs on the sandbox (tests/peers_sandbox_chaos.py),
checked alone: each breach of them, fed in as Route 53 readings, is reported, and a
history that keeps them is not."""

from __future__ import annotations

from tests.peers_sandbox_chaos import DnsState, Ledger


def state(at: float, epoch: int | None, *weighted: str) -> DnsState:
    return DnsState(at, epoch, weighted[0] if len(weighted) == 1 else None, weighted)


def ledger_after(*states: DnsState, failing: dict[str, float] | None = None) -> Ledger:
    ledger = Ledger(grace=10.0)
    for site, at in (failing or {}).items():
        ledger.seen_failing(site, at)
    for s in states:
        ledger.check(s)
    return ledger


def test_a_failover_on_a_majoritys_evidence_keeps_every_invariant() -> None:
    ledger = ledger_after(
        state(0, None),
        state(1, 1, "use1"),
        state(20, 2, "usw2"),
        state(20.4, 2, "usw2"),  # the same state read again
        state(50, 3, "use1"),
        failing={"use1": 15, "usw2": 45},
    )
    assert ledger.violations == []
    assert (len(ledger.states), ledger.moves) == (4, 2)


def test_weight_on_two_sites_is_a_violation() -> None:
    ledger = ledger_after(state(1, 1, "use1"), state(2, 1, "use1", "usw2"))
    assert ledger.violations == ["epoch 1: traffic weight on ('use1', 'usw2')"]


def test_an_epoch_going_down_is_a_violation() -> None:
    ledger = ledger_after(state(1, 2, "use1"), state(9, 1, "use1"), failing={"use1": 5})
    assert ledger.violations == ["DNS epoch went down to 1 (was 2)"]


def test_one_epoch_naming_two_sites_is_a_violation() -> None:
    ledger = ledger_after(state(1, 2, "use1"), state(9, 2, "usw2"), failing={"use1": 5})
    assert ledger.violations == ["epoch 2 named two sites: ('use1',), ('usw2',)"]


def test_a_move_without_a_majority_seeing_the_site_fail_is_a_violation() -> None:
    never = ledger_after(state(1, 1, "use1"), state(9, 2, "usw2"))
    assert never.violations == [
        "moved off use1 (epoch 2) with no majority of the peers seeing it fail ever"
    ]
    stale = ledger_after(state(1, 1, "use1"), state(30, 2, "usw2"), failing={"use1": 5})
    assert stale.violations == [
        "moved off use1 (epoch 2) with no majority of the peers seeing it fail for 25.0s"
    ]


def test_a_last_failover_naming_another_site_than_dns_for_its_epoch_is_a_violation() -> None:
    ledger = ledger_after(state(1, 1, "use1"), state(9, 2, "usw2"), failing={"use1": 5})
    ledger.check_last_failovers(
        {"usw2": {"epoch": 2, "toSite": "usw2"}, "euc1": {"epoch": 2, "toSite": "use1"}, "x": {}}
    )
    assert ledger.violations == ["euc1's lastFailover names use1 for epoch 2; DNS named ('usw2',)"]
