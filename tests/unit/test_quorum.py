"""Leadership on a majority of Leases: the bookkeeping (time as an argument) and the elector
against in-memory Lease stores, one per peer cluster (the real API servers are used by
tests/integration/test_peer_quorum.py)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from controller import metrics
from controller.operator.leader import LeaseTimings
from controller.operator.quorum import QuorumElector, Seats
from tests.unit.test_leader import Leases

FAST = LeaseTimings(lease_seconds=1.0, renew_deadline=0.7, retry_seconds=0.1, request_seconds=0.3)
NAMES = ("a", "b", "c")


# ---------------------------------------------------------------------- the bookkeeping


def seats(allow_solo: bool = False) -> Seats:
    return Seats(NAMES, "a", "me", LeaseTimings(), allow_solo=allow_solo)


def test_a_majority_of_leases_leads_and_each_counts_for_the_renew_deadline_only() -> None:
    s = seats()
    s.record("a", "me", started=100.0, now=100.1)
    assert not s.leading(100.2)
    s.record("b", "me", started=101.0, now=101.2)
    assert s.leading(101.5)
    assert s.until(101.5) == 107.0  # the older of the two renewals ends it
    assert s.leading(106.99) and not s.leading(107.0)
    s.record("c", "me", started=106.0, now=106.1)
    assert s.leading(107.5) and s.until(107.5) == 108.0


def test_a_lease_seen_held_by_another_is_no_longer_counted() -> None:
    s = seats()
    for name in NAMES:
        s.record(name, "me", started=10.0, now=10.0)
    s.record("b", "other", started=11.0, now=11.0)
    assert s.held(11.0) == ("a", "c") and s.leading(11.0)
    s.record("c", "other", started=11.5, now=11.5)
    assert not s.leading(11.5)


def test_an_unanswered_attempt_keeps_the_lease_counted_until_its_deadline_only() -> None:
    s = seats()
    for name in NAMES:
        s.record(name, "me", started=0.0, now=0.0)
    for name in ("b", "c"):
        s.record(name, None, started=2.0, now=5.0)
    s.record("a", "me", started=2.0, now=2.0)
    assert s.leading(6.9) and not s.leading(7.0)  # b and c lapse 7 s after their last renewal


def test_renew_deadline_ends_leadership_before_any_candidate_can_take_a_lease() -> None:
    timings = LeaseTimings()
    s = Seats(NAMES, "a", "me", timings)
    for name in NAMES:
        s.record(name, "me", started=0.0, now=0.0)
    until = s.until(0.0)
    assert until is not None and until < timings.lease_seconds


def test_a_lone_peer_leads_only_with_allow_solo_and_only_while_it_hears_no_other() -> None:
    strict, solo = seats(), seats(allow_solo=True)
    for s in (strict, solo):
        s.record("a", "me", started=0.0, now=0.0)
        s.record("b", None, started=0.0, now=0.0)
        s.record("c", None, started=0.0, now=0.0)
    assert not strict.leading(1.0)
    assert solo.leading(1.0)
    solo.record("b", "other", started=2.0, now=2.0)  # another peer's cluster answers
    assert not solo.leading(2.5)


def test_a_split_is_seen_only_while_holding_a_minority_another_peer_contests() -> None:
    s = seats()
    s.record("a", "me", started=0.0, now=0.0)
    s.record("b", None, started=0.0, now=0.0)
    assert not s.contested(0.5)  # nobody else holds anything: no split
    s.record("b", "other", started=0.4, now=0.4)
    assert s.contested(0.5)
    s.record("c", "", started=0.4, now=0.4)  # a free Lease is nobody's
    s.record("c", "me", started=0.6, now=0.6)
    assert s.leading(0.7) and not s.contested(0.7)


def test_the_own_cluster_must_be_one_of_the_peers() -> None:
    with pytest.raises(ValueError, match="own cluster"):
        Seats(NAMES, "z", "me", LeaseTimings())


# ---------------------------------------------------------------------- the elector


class View:
    """One peer's way to a cluster's Lease store; ``dead`` makes every call fail (the
    peer's process is gone, or this path is cut)."""

    def __init__(self, store: Leases) -> None:
        self.store = store
        self.dead = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise ConnectionRefusedError("connection refused")
            return method(*args, **kwargs)

        return call


def peer(
    own: str, stores: dict[str, Leases], *, seed: int = 0
) -> tuple[QuorumElector, dict[str, View]]:
    views = {name: View(store) for name, store in stores.items()}
    elector = QuorumElector(
        [(name, views[name]) for name in NAMES],  # type: ignore[misc]
        "ns",
        own,
        identity=f"peer-{own}",
        timings=FAST,
        rng=random.Random(seed),
    )
    return elector, views


def lease_held() -> dict[str, float | None]:
    return {
        name: metrics.REGISTRY.get_sample_value("lifeboat_peer_lease_held", {"cluster": name})
        for name in NAMES
    }


async def until(check: Callable[[], bool], seconds: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def running(electors: list[QuorumElector], body: Callable[[], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(e.run(stop)) for e in electors]
    try:
        await body()
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_one_peer_leads_on_a_majority_and_through_one_cluster_down() -> None:
    stores = {name: Leases() for name in NAMES}
    elector, views = peer("a", stores)

    async def body() -> None:
        await until(lambda: elector.leading, 3)
        assert elector.term == 1
        views["c"].dead = True
        await asyncio.sleep(FAST.lease_seconds * 2)
        assert elector.leading and elector.term == 1
        assert set(elector.held()) == {"a", "b"}
        await asyncio.sleep(FAST.retry_seconds)  # exported every half period at most
        assert lease_held() == {"a": 1.0, "b": 1.0, "c": 0.0}
        assert metrics.REGISTRY.get_sample_value("lifeboat_peer_leases_needed") == 2.0

    await running([elector], body)
    assert not elector.leading and elector.term == 2
    assert lease_held() == {"a": 0.0, "b": 0.0, "c": 0.0}  # given up on stop
    assert all(
        s.lease is None or s.lease.spec is None or not s.lease.spec.holder_identity
        for s in stores.values()
        if s is not stores["c"]
    )  # released on stop where reachable


async def test_two_clusters_down_end_leadership_within_the_renew_deadline() -> None:
    stores = {name: Leases() for name in NAMES}
    elector, views = peer("a", stores)

    async def body() -> None:
        await until(lambda: elector.leading, 3)
        views["b"].dead = views["c"].dead = True
        cut = time.monotonic()
        # From the cut on, no renewal started later can count: the end is known now.
        while time.monotonic() < cut + FAST.renew_deadline:
            ends = elector.until()
            assert ends is None or ends <= cut + FAST.renew_deadline
            await asyncio.sleep(0.05)
        assert not elector.leading
        views["b"].dead = False
        await until(lambda: elector.leading, 3)  # back on a majority
        assert elector.term == 3

    await running([elector], body)


async def test_at_most_one_peer_leads_and_another_takes_over_a_dead_leader() -> None:
    stores = {name: Leases() for name in NAMES}
    peers = {name: peer(name, stores, seed=i) for i, name in enumerate(NAMES)}
    electors = [e for e, _ in peers.values()]
    overlaps = 0

    async def watch(stop: asyncio.Event) -> None:
        nonlocal overlaps
        while not stop.is_set():
            overlaps += sum(e.leading for e in electors) > 1
            await asyncio.sleep(0.005)

    async def body() -> None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(stop))
        await until(lambda: sum(e.leading for e in electors) == 1, 10)
        leader = next(name for name, (e, _) in peers.items() if e.leading)
        for view in peers[leader][1].values():  # the leader's process is gone
            view.dead = True
        took = await until(lambda: any(e.leading for n, (e, _) in peers.items() if n != leader), 10)
        assert took <= FAST.lease_seconds + 4 * FAST.retry_seconds + 0.5
        stop.set()
        await watcher

    await running(electors, body)
    assert overlaps == 0


async def test_peers_that_split_the_leases_settle_on_one_leader() -> None:
    stores = {name: Leases() for name in NAMES}
    for name, holder in zip(NAMES, ("peer-a", "peer-b", "peer-c"), strict=True):
        stores[name].hold(holder, renewed=datetime.now(tz=UTC))  # each holds one: a split
    peers = [peer(name, stores, seed=i)[0] for i, name in enumerate(NAMES)]

    async def body() -> None:
        await until(lambda: sum(e.leading for e in peers) == 1, 15)

    await running(peers, body)


class Soonest(random.Random):
    """A peer that always comes back at the first moment its rule allows."""

    def uniform(self, a: float, b: float) -> float:
        return a


async def test_the_leader_takes_a_lease_a_lower_ranked_peer_gives_up() -> None:
    """Regression (seen in CI): c led on the Leases of b and c while a, ranked first, held
    its own. a gave it up as contested, came back after ``retry_seconds`` and took the free
    Lease again before c, which waited its rank's ``2 * retry_seconds`` before taking a
    free one: for ever, so c never held all three and lost leadership with any one
    cluster. The leader now takes a free Lease at once."""
    stores = {name: Leases() for name in NAMES}
    now = datetime.now(tz=UTC)
    stores["a"].hold("peer-a", renewed=now, duration=1)
    stores["b"].hold("peer-c", renewed=now, duration=1)
    stores["c"].hold("peer-c", renewed=now, duration=1)
    a, _ = peer("a", stores)
    a.rng = Soonest()
    c, _ = peer("c", stores)

    async def body() -> None:
        await until(lambda: c.leading, 3)
        await until(lambda: set(c.held()) == set(NAMES), 5)
        assert not a.leading

    await running([a, c], body)


async def test_leadership_holds_while_the_default_thread_pool_is_held_by_other_calls() -> None:
    """Calls to a lost cluster (status writes, reads) that each wait out their deadline can
    fill the event loop's default thread pool; the Leases are renewed on threads of their
    own, so leadership neither stalls nor lapses behind them."""
    stores = {name: Leases() for name in NAMES}
    elector, _ = peer("a", stores)
    release = threading.Event()
    loop = asyncio.get_running_loop()
    held = [loop.run_in_executor(None, release.wait, 30.0) for _ in range(64)]

    async def body() -> None:
        try:
            await until(lambda: elector.leading, 3)
            await asyncio.sleep(FAST.lease_seconds * 2)  # renewals go on, term unchanged
            assert elector.leading and elector.term == 1
        finally:
            release.set()

    await running([elector], body)
    await asyncio.gather(*held)


# ---------------------------------------------------------------------- the command line


def test_a_peer_needs_leader_election(capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli.main import EXIT_USAGE, main

    assert main(["run", "--peer-name", "use1", "--no-leader-election"]) == EXIT_USAGE
    assert "--peer-name needs leader election" in capsys.readouterr().err


def test_the_peer_name_reaches_the_operator_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.cli import main as cli
    from controller.operator import runner

    seen: list[runner.OperatorConfig] = []
    monkeypatch.setattr(runner, "run", seen.append)
    assert cli.main(["run", "--peer-name", "usw2", "--metrics-address", ""]) == cli.EXIT_OK
    assert seen[0].peer_name == "usw2"
    assert cli.main(["run", "--metrics-address", ""]) == cli.EXIT_OK
    assert seen[1].peer_name is None  # single-cluster mode, unchanged
