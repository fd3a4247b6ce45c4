"""The per-app loop as one of several peers: followers never act, a decision acts only once
its status reached a majority of the peer clusters, and a new leader rebuilds from the
freshest status of a majority (and DNS)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from controller import metrics
from controller.operator.app import AppContext, AppWorker
from controller.operator.kube import NotFound, ObjectRef, StaleEpoch
from controller.operator.peer_status import NoMajority, PeerStatusWriter
from tests.fixtures.worker import (
    REF,
    FakeKube,
    FakeProber,
    FakeProviders,
    FakeTraffic,
    body,
    settle,
)
from tests.unit.test_app_worker import published, state_of


@dataclass
class Lead:
    """A Leadership whose answer a test sets."""

    leading: bool = False
    term: int = 0

    def become(self, leading: bool) -> None:
        self.leading, self.term = leading, self.term + 1


class Cluster:
    """One peer cluster's copy of the app: fenced status writes, reads, outages."""

    def __init__(self, status: dict[str, Any] | None = None) -> None:
        self.status: dict[str, Any] = dict(status or {})
        self.down = False
        self.missing = False
        self.writes = 0

    async def patch_status(
        self, ref: ObjectRef, status: dict[str, Any], *, epoch: int | None = None
    ) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise ConnectionError("connection refused")
        if self.missing:
            raise NotFound("gone")
        stored = self.status.get("epoch") or 0
        if epoch is not None and stored > epoch:
            raise StaleEpoch(ref, stored, epoch)
        self.status.update(status)
        self.writes += 1

    async def read(self, ref: ObjectRef) -> dict[str, Any]:
        if self.down:
            raise ConnectionError("connection refused")
        if self.missing:
            raise NotFound("gone")
        return {"status": dict(self.status)}


def peers(
    lead: Lead, clusters: Mapping[str, Cluster], traffic: FakeTraffic | None = None
) -> tuple[AppWorker, FakeKube, FakeTraffic, FakeProber]:
    kube, prober = FakeKube(), FakeProber()
    traffic = traffic or FakeTraffic()
    context = AppContext(
        kube=kube,
        providers=FakeProviders(traffic),
        prober=prober,
        leadership=lead,
        status_store=PeerStatusWriter(list(clusters.items())),
    )
    return AppWorker(REF, context), kube, traffic, prober


def three(status: dict[str, Any] | None = None) -> dict[str, Cluster]:
    return {name: Cluster(status) for name in ("use1", "usw2", "euc1")}


async def test_a_follower_probes_and_decides_but_writes_posts_and_moves_nothing() -> None:
    clusters = three()
    worker, kube, traffic, prober = peers(Lead(leading=False), clusters)
    prober.down = {"use1"}
    for _ in range(4):
        await worker.round(body())
        await settle(worker)
    assert prober.rounds == 4
    assert worker.state is not None  # it decides (its view is published by the peer link)
    assert published(traffic) == [] and kube.events == [] and kube.patches == []
    assert all(c.writes == 0 for c in clusters.values())
    assert traffic.reads == 0  # DNS is read back by the leader


async def test_the_leader_writes_status_to_every_peer_cluster_before_acting() -> None:
    clusters = three()
    worker, kube, traffic, _ = peers(Lead(leading=True, term=1), clusters)
    await worker.round(body())
    await settle(worker)
    assert published(traffic) == [{"use1": 100, "usw2": 0}]
    for cluster in clusters.values():
        assert cluster.status["traffic"]["epoch"] == 1
    assert kube.patches == []  # the own cluster is one of the peers' clusters, written there


async def test_a_decision_that_reaches_no_majority_is_held_and_said_once() -> None:
    clusters = three()
    worker, kube, traffic, prober = peers(Lead(leading=True, term=1), clusters)
    await worker.round(body())
    await settle(worker)
    clusters["usw2"].down = clusters["euc1"].down = True
    prober.down = {"use1"}
    for _ in range(4):
        await worker.round(body())
        await settle(worker)
    assert published(traffic) == [{"use1": 100, "usw2": 0}]  # the failover waits
    held = [m for _, reason, m in kube.events if reason == "NoMajority"]
    assert len(held) == 1 and "ShiftTraffic held" in held[0] and "1 of 3" in held[0]
    assert no_majority() == 1.0  # what LifeboatNoMajority watches
    clusters["euc1"].down = False  # a majority again: it goes ahead
    await worker.round(body())
    await settle(worker)
    assert published(traffic)[-1] == {"use1": 0, "usw2": 100}
    assert clusters["euc1"].status["epoch"] == 2 and clusters["use1"].status["epoch"] == 2
    assert no_majority() == 0.0


def no_majority() -> float | None:
    return metrics.REGISTRY.get_sample_value(
        "lifeboat_actions_no_majority", {"namespace": REF.namespace or "", "app": REF.name}
    )


async def test_one_peer_cluster_down_does_not_hold_anything() -> None:
    clusters = three()
    clusters["euc1"].down = True
    worker, kube, traffic, prober = peers(Lead(leading=True, term=1), clusters)
    await worker.round(body())
    await settle(worker)
    prober.down = {"use1"}
    for _ in range(3):
        await worker.round(body())
        await settle(worker)
    assert published(traffic)[-1] == {"use1": 0, "usw2": 100}
    assert not [r for _, r, _ in kube.events if r == "NoMajority"]


async def test_a_higher_epoch_in_any_peer_cluster_aborts_the_write() -> None:
    clusters = three()
    worker, _, traffic, prober = peers(Lead(leading=True, term=1), clusters)
    await worker.round(body())
    await settle(worker)
    clusters["usw2"].status["epoch"] = 9  # a newer leader wrote there meanwhile
    prober.down = {"use1"}
    raised = False
    for _ in range(3):
        try:
            await worker.round(body())
        except StaleEpoch:
            raised = True
        await settle(worker)
    assert raised
    assert published(traffic) == [{"use1": 100, "usw2": 0}]


async def test_a_new_leader_rebuilds_from_the_freshest_status_of_a_majority() -> None:
    """The own cluster holds an old status (its writes were lost with the old leader's
    region cut off); the others hold the epoch-3 failover the old leader acted on."""
    clusters = three({"activeSite": "usw2", "epoch": 3, "traffic": {"activeSite": "usw2"}})
    clusters["use1"].status = {"activeSite": "use1", "epoch": 1}
    lead = Lead(leading=False)
    traffic = FakeTraffic()
    worker, _, _, _ = peers(lead, clusters, traffic)
    own_body = body(status={"activeSite": "use1", "epoch": 1})
    await worker.round(own_body)
    state = state_of(worker)
    assert state is not None and state.epoch == 1  # a follower reads its own cluster
    lead.become(True)
    await worker.round(own_body)
    await settle(worker)
    state = state_of(worker)
    assert state is not None and (state.active_site, state.epoch) == ("usw2", 3)
    assert all(not p or p == {"use1": 0, "usw2": 100} for p in published(traffic))
    assert clusters["use1"].status["epoch"] == 3  # healed on the own cluster too


async def test_a_new_leader_that_hears_no_majority_holds() -> None:
    clusters = three({"activeSite": "usw2", "epoch": 3})
    clusters["usw2"].down = clusters["euc1"].down = True
    worker, _, traffic, _ = peers(Lead(leading=True, term=1), clusters)
    for _ in range(2):
        await worker.round(body(status={"activeSite": "use1", "epoch": 1}))
        await settle(worker)
    assert state_of(worker) is None and published(traffic) == []


async def test_losing_leadership_stops_a_running_action_at_once() -> None:
    clusters = three()
    lead = Lead(leading=True, term=1)
    worker, _, _, _ = peers(lead, clusters, FakeTraffic(delay=5.0))
    await worker.round(body())
    assert worker.actions.running is not None
    lead.become(False)
    await worker.pause(time.monotonic() + 1.0, lambda: False)
    assert worker.actions.running is None


async def test_the_freshest_status_prefers_the_highest_epoch_then_the_latest_decision() -> None:
    older = {"epoch": 2, "lastDecision": {"time": "2026-01-01T00:00:05Z"}}
    newer = {"epoch": 2, "lastDecision": {"time": "2026-01-01T00:00:09Z"}}
    clusters = {"a": Cluster(older), "b": Cluster(newer), "c": Cluster({"epoch": 1})}
    writer = PeerStatusWriter(list(clusters.items()))
    assert (await writer.freshest(REF)) == newer
    clusters["b"].down = True
    assert (await writer.freshest(REF)) == older
    clusters["c"].down = True
    with pytest.raises(NoMajority) as raised:
        await writer.freshest(REF)
    assert raised.value.accepted == ("a",) and raised.value.needed == 2


async def test_a_completion_only_a_minority_recorded_is_finished_by_the_next_leader_once() -> None:
    """The leader's failover reached DNS, but the write saying so reached only its own
    cluster before it lost its majority: the next leader starts from the majority's
    status (the failover decided, its DNS change outstanding), finds it done in DNS, and
    neither raises the epoch again nor moves traffic anywhere else."""
    clusters = three()
    traffic = FakeTraffic(delay=0.1)
    old_lead = Lead(leading=True, term=1)
    old, _, _, prober = peers(old_lead, clusters, traffic)
    await old.round(body())
    await settle(old)
    prober.down = {"use1"}
    for _ in range(5):
        await old.round(body())
        if old.actions.running is not None:
            break
    assert old.actions.running is not None  # the failover's DNS change, under way
    assert clusters["usw2"].status["epoch"] == 2  # the decision: on a majority first
    clusters["usw2"].down = clusters["euc1"].down = True
    await settle(old)  # done in DNS; the completion reaches the old leader's cluster only
    assert published(traffic)[-1] == {"use1": 0, "usw2": 100}
    assert clusters["use1"].status["traffic"]["epoch"] == 2
    assert clusters["usw2"].status["traffic"]["epoch"] == 1
    old_lead.become(False)
    clusters["use1"].down = True  # the old leader's region is lost
    clusters["usw2"].down = clusters["euc1"].down = False
    changes = len(traffic.plans)

    order = {name: clusters[name] for name in ("usw2", "euc1", "use1")}
    new, kube, _, new_prober = peers(Lead(leading=True, term=1), order, traffic)
    new_prober.down = {"use1"}
    for _ in range(3):
        await new.round(body(status=dict(clusters["usw2"].status)))
        await settle(new)
    state = state_of(new)
    assert state is not None and (state.active_site, state.epoch) == ("usw2", 2)
    assert all(p == {"use1": 0, "usw2": 100} for p in published(traffic)[changes:])
    assert traffic.owner is not None and traffic.owner.epoch == 2
    for name in ("usw2", "euc1"):
        assert clusters[name].status["epoch"] == 2
        assert clusters[name].status["traffic"]["epoch"] == 2
    assert not [r for _, r, _ in kube.events if r == "FailoverStarted"]  # not decided again
