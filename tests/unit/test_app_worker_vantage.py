"""The per-app loop with peers, against a fake PeerLink: what it publishes, how the other
peers' views enter its decisions, and what it says about disagreement and spec drift."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from controller import metrics
from controller.api.digest import spec_digest
from controller.api.models import ResilientAppSpec
from controller.core.health import ZoneKey, ZoneState
from controller.core.vantage import PeerView, Vantage
from controller.operator.app import AppContext, AppWorker
from controller.operator.kube import ObjectRef
from tests.factories import app_spec
from tests.fixtures.worker import FakeKube, FakeProber, FakeProviders, FakeTraffic, settle

SPEC = ResilientAppSpec.model_validate(app_spec())
ZONES = [ZoneKey(s.name, e.zone) for s in SPEC.sites for e in s.endpoints]
A = ZoneKey("use1", "us-east-1a")
OK, DOWN = ZoneState.HEALTHY, ZoneState.DOWN
_apps = itertools.count(1)


class FakePeers:
    """Two other peers (usw2, euc1) whose views the test sets; records what is published."""

    def __init__(self) -> None:
        self.views: dict[str, Mapping[ZoneKey, ZoneState]] = {
            "usw2": dict.fromkeys(ZONES, OK),
            "euc1": dict.fromkeys(ZONES, OK),
        }
        self.heard = {"usw2": True, "euc1": True}
        self.allow_solo = False
        self.drifting: tuple[str, ...] = ()
        self.published: list[tuple[str, str, dict[ZoneKey, ZoneState]]] = []
        self.drift_asked: list[tuple[str, str]] = []
        self.forgotten: list[str] = []

    def publish(self, app: str, spec_digest: str, zones: Mapping[ZoneKey, ZoneState]) -> None:
        self.published.append((app, spec_digest, dict(zones)))

    def vantage(self, app: str) -> Vantage | None:
        peers = tuple(PeerView(name, self.heard[name], zones) for name, zones in self.views.items())
        return Vantage(peers, 3, self.allow_solo, peer="use1")

    def drift(self, app: str, spec_digest: str) -> tuple[str, ...]:
        self.drift_asked.append((app, spec_digest))
        return self.drifting

    def forget(self, app: str) -> None:
        self.forgotten.append(app)

    def see(
        self, state: ZoneState, *zones: ZoneKey, peers: tuple[str, ...] = ("usw2", "euc1")
    ) -> None:
        for peer in peers:
            self.views[peer] = {**self.views[peer], **dict.fromkeys(zones, state)}


def make(
    peers: FakePeers | None = None,
) -> tuple[AppWorker, FakeKube, FakeTraffic, FakeProber, FakePeers, ObjectRef]:
    kube, prober, traffic = FakeKube(), FakeProber(), FakeTraffic()
    peers = peers or FakePeers()
    ref = ObjectRef("ResilientApp", "resilientapps", f"web{next(_apps)}", "peered", "uid-p")
    context = AppContext(kube=kube, providers=FakeProviders(traffic), prober=prober, peers=peers)
    return AppWorker(ref, context), kube, traffic, prober, peers, ref


def body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"generation": 1}, "spec": app_spec(), "status": status or {}}


async def rounds(worker: AppWorker, n: int, status: dict[str, Any] | None = None) -> None:
    for _ in range(n):
        await worker.round(body(status))
        await settle(worker)


def condition(kube: FakeKube, type_: str) -> dict[str, Any] | None:
    with_conditions = [p for p in kube.patches if "conditions" in p]
    if not with_conditions:
        return None
    return next((c for c in with_conditions[-1]["conditions"] if c["type"] == type_), None)


def events(kube: FakeKube, reason: str) -> list[tuple[str, str, str]]:
    return [e for e in kube.events if e[1] == reason]


def gauge(name: str, ref: ObjectRef, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        name, {"namespace": ref.namespace or "", "app": ref.name, **labels}
    )


async def test_each_round_publishes_its_own_zone_states_and_spec_digest() -> None:
    worker, _, _, prober, peers, ref = make()
    prober.down = {str(A)}
    await rounds(worker, 2)
    assert len(peers.published) == 2
    app, digest, zones = peers.published[-1]
    assert app == f"peered/{ref.name}"
    assert digest == spec_digest(SPEC)
    assert zones[A] is ZoneState.SUSPECT  # its own view: 2 failed rounds of 3
    assert {k: v for k, v in zones.items() if k != A} == dict.fromkeys(set(ZONES) - {A}, OK)
    assert peers.drift_asked[-1] == (app, digest)


async def test_a_zone_only_this_peer_cannot_reach_is_reported_never_evacuated() -> None:
    worker, kube, traffic, prober, peers, ref = make()
    await rounds(worker, 2)
    prober.down = {str(A)}
    await rounds(worker, 8)
    assert worker.state is not None
    assert worker.state.evacuated == frozenset() and worker.state.epoch == 1
    assert len(traffic.plans) == 1  # the first publication only
    agreement = condition(kube, "VantageAgreement")
    assert agreement is not None
    assert (agreement["status"], agreement["reason"]) == ("False", "VantageDisagreement")
    assert agreement["message"].startswith("peers disagree: use1/us-east-1a is Down for use1 only.")
    degraded = condition(kube, "Degraded")  # the zones as decisions see them
    assert degraded is not None and degraded["status"] == "False"
    assert kube.patches[-1]["phase"] == "Healthy"
    # The zone's status is the zone as decisions see it (the leader's status is written to
    # every peer cluster); this peer's own Down view is what it publishes.
    written = [p["zones"] for p in kube.patches if "zones" in p][-1]
    (entry,) = [z for z in written if (z["site"], z["zone"]) == (A.site, A.zone)]
    assert entry["state"] == "Healthy"
    assert peers.published[-1][2][A] is ZoneState.DOWN
    (said,) = events(kube, "VantageDisagreement")  # once, not round after round
    assert said[0] == "Warning" and said[2] == agreement["message"]
    zone = {"site": "use1", "zone": "us-east-1a"}
    assert gauge("lifeboat_vantage_disagreement", ref, **zone) == 1
    other = {"site": "use1", "zone": "us-east-1b"}
    assert gauge("lifeboat_vantage_disagreement", ref, **other) == 0
    assert gauge("lifeboat_vantage_peers_heard", ref) == 3
    assert gauge("lifeboat_vantage_quorum", ref) == 1

    prober.down = set()
    await rounds(worker, 3)
    agreement = condition(kube, "VantageAgreement")
    assert agreement is not None
    assert (agreement["status"], agreement["reason"]) == ("True", "VantageAgreed")
    assert [e[0] for e in events(kube, "VantageAgreed")] == ["Normal"]
    assert gauge("lifeboat_vantage_disagreement", ref, **zone) == 0


async def test_agreement_from_the_start_posts_no_event() -> None:
    worker, kube, _, _, _, _ = make()
    await rounds(worker, 3)
    agreement = condition(kube, "VantageAgreement")
    assert agreement is not None and agreement["status"] == "True"
    assert events(kube, "VantageAgreed") == events(kube, "VantageDisagreement") == []


async def test_the_others_majority_fails_over_a_site_this_peer_still_reaches() -> None:
    worker, kube, traffic, _, peers, _ = make()
    await rounds(worker, 2)
    peers.see(DOWN, *(k for k in ZONES if k.site == "use1"))
    await rounds(worker, 1)
    assert worker.state is not None and worker.state.active_site == "usw2"
    assert {r.site: r.weight for r in traffic.plans[-1].records} == {"use1": 0, "usw2": 100}
    assert kube.patches[-1]["lastDecision"]["rule"] == "site-down"


async def test_a_lone_peer_holds_and_says_how_many_peers_it_hears() -> None:
    worker, kube, traffic, prober, peers, ref = make()
    peers.heard = {"usw2": False, "euc1": False}
    prober.down = {"use1"}
    await rounds(worker, 6)
    assert worker.state is not None and worker.state.active_site == "use1"
    assert len(traffic.plans) == 1
    decision = kube.patches[-1]["lastDecision"]
    assert decision["rule"] == "site-down-held"
    assert "only 1 of 3 peers heard (use1)" in decision["summary"]
    agreement = condition(kube, "VantageAgreement")
    assert agreement is not None
    assert (agreement["status"], agreement["reason"]) == ("Unknown", "PeersUnheard")
    assert len(events(kube, "PeersUnheard")) == 1
    assert len(events(kube, "FailoverHeld")) == 1
    assert gauge("lifeboat_vantage_peers_heard", ref) == 1
    assert gauge("lifeboat_vantage_quorum", ref) == 0


async def test_spec_drift_is_reported_on_change_only() -> None:
    worker, kube, _, _, peers, ref = make()
    await rounds(worker, 1)
    drift = condition(kube, "PeerSpecDrift")
    assert drift is not None and (drift["status"], drift["reason"]) == ("False", "PeerSpecsAgree")
    peers.drifting = ("euc1",)
    await rounds(worker, 4)
    drift = condition(kube, "PeerSpecDrift")
    assert drift is not None
    assert (drift["status"], drift["reason"]) == ("True", "PeerSpecDrift")
    assert drift["message"].startswith("peer(s) euc1 read a different spec of this app")
    assert [e[0] for e in events(kube, "PeerSpecDrift")] == ["Warning"]
    assert gauge("lifeboat_peer_spec_drift", ref) == 1
    peers.drifting = ()
    await rounds(worker, 2)
    drift = condition(kube, "PeerSpecDrift")
    assert drift is not None and drift["status"] == "False"
    assert [e[0] for e in events(kube, "PeerSpecsAgree")] == ["Normal"]
    assert gauge("lifeboat_peer_spec_drift", ref) == 0


async def test_a_restarted_worker_does_not_say_a_disagreement_again() -> None:
    worker, kube, _, prober, _, _ = make()
    prober.down = {str(A)}
    await rounds(worker, 4)
    assert len(events(kube, "VantageDisagreement")) == 1
    stored = kube.stored  # the status as the API server holds it
    again = AppWorker(worker.ref, worker.ctx)
    await again.round(body(stored))
    await settle(again)
    assert len(events(kube, "VantageDisagreement")) == 1


async def test_single_cluster_mode_has_no_peer_conditions_and_drops_stale_ones() -> None:
    kube, prober, traffic = FakeKube(), FakeProber(), FakeTraffic()
    context = AppContext(kube=kube, providers=FakeProviders(traffic), prober=prober)
    ref = ObjectRef("ResilientApp", "resilientapps", f"web{next(_apps)}", "single", "uid-s")
    stale = {
        "type": "VantageAgreement",
        "status": "False",
        "reason": "VantageDisagreement",
        "message": "left by a multi-peer run",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    worker = AppWorker(ref, context)
    await worker.round(body({"conditions": [stale]}))
    await settle(worker)
    types = {c["type"] for c in kube.patches[-1]["conditions"]}
    assert "Ready" in types
    assert not types & {"VantageAgreement", "PeerSpecDrift"}
    assert gauge("lifeboat_vantage_peers_heard", ref) is None


async def test_a_stopping_worker_stops_publishing_the_app() -> None:
    worker, _, _, _, peers, ref = make()
    await worker.run(body(), lambda: bool(peers.published))  # stops after its first round
    assert peers.forgotten == [f"peered/{ref.name}"]


async def test_rounds_stay_fast_while_the_other_peers_have_not_confirmed_a_down_zone() -> None:
    """``suspectIntervalSeconds`` with peers: a zone Down here but not yet Down for the
    others counts as Suspect for decisions, and the rounds stay fast until their
    confirmation is read (it would otherwise wait a whole ``intervalSeconds``)."""
    fast = app_spec(
        health={
            "intervalSeconds": 2,
            "timeoutSeconds": 0.5,
            "failureThreshold": 3,
            "suspectIntervalSeconds": 0.5,
        }
    )
    worker, _, _, prober, peers, _ = make()

    def round_body() -> dict[str, Any]:
        return {"metadata": {"generation": 1}, "spec": fast, "status": {}}

    assert await worker.round(round_body()) == 2.0
    prober.down.add("use1/us-east-1a")
    peers.see(ZoneState.SUSPECT, A)  # the others' probes fail too, a little behind
    for _ in range(3):  # Suspect, Suspect, Down here
        interval = await worker.round(round_body())
    assert worker.state is not None and worker.state.zones[A].state is DOWN
    assert interval == 0.5  # the others have not confirmed it yet: still in doubt
    peers.see(DOWN, A)
    assert await worker.round(round_body()) == 2.0  # confirmed: back to the interval
    peers.see(OK, A)
    assert await worker.round(round_body()) == 2.0  # a minority's view: no faster rounds
    peers.see(ZoneState.SUSPECT, A)
    peers.heard = {"usw2": False, "euc1": False}
    assert await worker.round(round_body()) == 2.0  # no majority heard: nothing to settle
