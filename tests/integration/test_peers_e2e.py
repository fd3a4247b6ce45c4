"""Multi-region Lifeboat end to end, Jepsen-style, on the peer world: three peer clusters in
three sandbox regions, each running its own ``lifeboat run --peer-name`` probing from its own
address (issue 18, item 6 a-c).

(a) the primary region and the peer cluster in it die together: traffic ends on the standby
    with exactly one epoch rise, in every surviving cluster and in DNS;
(b) one peer cut off from every zone of the primary: nothing moves (no evacuation, no
    failover, no DNS change) and the disagreement is reported;
(c) the leader SIGKILLed mid-failover, its DNS change carried out but its answer lost:
    another peer completes the failover without making the DNS change again (counted at
    the Route 53 fault proxy).

Each test has a world of its own (about a minute to start on two shared cores).

They need ``lifeboat run --peer-name`` to lead on a majority of the peer clusters' Leases
and keep apps' status on a majority (``controller.operator.peer_status``), and skip where
that is not in the product yet.
"""

from __future__ import annotations

import time
from fnmatch import fnmatchcase
from typing import Any

import pytest

from controller.api.conditions import ConditionType
from controller.api.events import EventReason
from sandbox.faults import ROUTE53_CHANGE, Fault, FaultProxy, FaultSpec
from sandbox.peers import PeerWorld
from sandbox.world import GLOBAL
from tests.fixtures.peers import MakePeerWorld, PeerApp

pytestmark = pytest.mark.integration
pytest.importorskip(
    "controller.operator.peer_status",
    reason="lifeboat run --peer-name does not yet lead on a majority of the peer clusters' "
    "Leases nor keep status on a majority (controller.operator.peer_status)",
)
MOVES = {EventReason.FAILOVER_STARTED, EventReason.ZONE_EVACUATED}

START_TIMEOUT = 180.0
"""Three operators on two shared cores: leadership, the first rounds and DNS set-up."""
MOVE_TIMEOUT = 120.0
RESIZE = "UpdateAutoScalingGroup"


def _serving_world(make_peer_world: MakePeerWorld) -> tuple[PeerWorld, PeerApp]:
    world = make_peer_world()
    app = PeerApp(world)
    world.wait_for(
        lambda: app.serving("use1"), START_TIMEOUT, "the app serving on use1 in every cluster"
    )
    world.wait_for(world.leaders, 30, "one peer leading")
    return world, app


def _moved_to(app: PeerApp, site: str, lost: str | None = None) -> dict[str, dict[str, Any]] | None:
    """Every living cluster holds the app on ``site``, its DNS at the status's epoch and
    nothing outstanding but, with ``lost`` (a site whose region is gone), the shrinking of
    that site held by static stability: its API plane cannot be reached, so the action
    waits for the region to come back, as it should."""
    statuses = app.statuses()
    if len(statuses) < len(app.world.living()):
        return None
    for status in statuses.values():
        traffic = status.get("traffic") or {}
        outstanding = [a for a in status.get("actions") or [] if not _held_at(a, lost)]
        if (
            status.get("activeSite") != site
            or traffic.get("epoch") != status.get("epoch")
            or outstanding
        ):
            return None
    return statuses


def _held_at(action: dict[str, Any], lost: str | None) -> bool:
    """``action`` waits for the API plane of the lost site's region (static stability)."""
    return (
        lost is not None
        and action.get("state") == "Held"
        and str(action.get("target", "")).startswith(f"capacity of {lost} ")
        and "(static stability)" in str(action.get("reason", ""))
    )


def _succeeded(proxy: FaultProxy, action: str) -> int:
    """Mutating calls of ``action`` the cloud carried out (2xx upstream, whether or not
    the answer reached the caller)."""
    return sum(
        1
        for r in proxy.records()
        if r.mutating and fnmatchcase(r.action, action) and r.status is not None and r.status < 300
    )


def test_a_the_primary_region_and_its_peer_die_together_and_a_survivor_moves_traffic_once(
    make_peer_world: MakePeerWorld,
) -> None:
    world, app = _serving_world(make_peer_world)
    leader_before = world.leaders()
    assert set(app.epochs().values()) == {1}
    assert app.dns_epoch() == 1
    assert app.dns_weights() == {"use1": 100, "usw2": 0}
    killed = time.monotonic()

    world.kill_region("use1")
    world.wait_for(lambda: _moved_to(app, "usw2", lost="use1"), MOVE_TIMEOUT, "traffic on usw2")
    moved = time.monotonic() - killed
    time.sleep(10)  # a second rise, if any were coming, would come now

    assert app.dns_weights() == {"use1": 0, "usw2": 100}
    assert app.epochs() == {"usw2": 2, "euc1": 2}  # exactly one rise, in every survivor
    assert app.dns_epoch() == 2
    statuses = app.statuses()
    assert {s["lastFailover"]["epoch"] for s in statuses.values()} == {2}
    assert {s["lastFailover"]["toSite"] for s in statuses.values()} == {"usw2"}
    leader_after = world.leaders()
    assert len(leader_after) == 1 and leader_after[0] in {"usw2", "euc1"}
    record = next(iter(statuses.values()))["lastFailover"]
    print(
        f"\nleader before {leader_before}, after {leader_after}; region killed -> traffic on "
        f"usw2 in every surviving cluster after {moved:.1f}s (operator's RTO "
        f"{record.get('rtoSeconds')}s, detection {record.get('detectionSeconds')}s)"
    )


def test_b_one_peer_cut_off_from_the_primary_moves_nothing_and_is_reported(
    make_peer_world: MakePeerWorld,
) -> None:
    world, app = _serving_world(make_peer_world)
    leader = world.leaders()[0]  # the hardest case: the peer that would act is the one cut off
    changes = app.route53_changes()
    world.cut(leader, "use1")  # every zone of the primary, from this peer only

    def reported() -> bool:
        for status in app.statuses().values():
            for condition in status.get("conditions", []):
                agreement = condition["type"] == ConditionType.VANTAGE_AGREEMENT
                if agreement and condition["status"] == "False":
                    return True
        return any(
            e.reason == EventReason.VANTAGE_DISAGREEMENT
            for peer in world.living()
            for e in peer.events(app.namespace)
        )

    world.wait_for(reported, 60, f"the disagreement of {leader} reported")
    time.sleep(15)  # well past the failure threshold and any evacuation's dwell

    assert app.route53_changes() == changes  # no evacuation, no failover: DNS untouched
    assert app.dns_weights() == {"use1": 100, "usw2": 0}
    assert app.dns_epoch() == 1
    assert set(app.epochs().values()) == {1}
    assert app.active_sites() == {"use1"}
    reasons = {e.reason for peer in world.living() for e in peer.events(app.namespace)}
    assert not reasons & MOVES, f"something moved: {sorted(reasons)}"
    metrics = world.peer(leader).operator.metrics()
    assert 'lifeboat_vantage_disagreement{app="web",namespace="shop",site="use1"' in metrics


def test_c_the_leader_killed_mid_failover_another_peer_completes_it_without_a_second_dns_change(
    make_peer_world: MakePeerWorld,
) -> None:
    world, app = _serving_world(make_peer_world)
    leader = world.leaders()[0]
    route53 = world.sandbox.proxies[GLOBAL]
    # The failover's DNS change is carried out by Route 53 but its answer never comes back:
    # the leader cannot know whether it landed when it dies.
    route53.set_faults(FaultSpec(lost=1.0, action=ROUTE53_CHANGE, max_hold=120, times=1))
    before = _succeeded(route53, ROUTE53_CHANGE)
    resizes_before = _succeeded(world.sandbox.proxies["us-west-2"], RESIZE)
    for endpoint in world.sandbox.zones.site_endpoints("use1"):
        endpoint.down()

    def landed() -> bool:
        return any(r.fault is Fault.LOST and r.status is not None for r in route53.records())

    world.wait_for(landed, MOVE_TIMEOUT, "the leader's DNS change to land, answer lost")
    world.peer(leader).operator.kill()
    killed = time.monotonic()
    route53.clear_faults()

    world.wait_for(lambda: _moved_to(app, "usw2"), MOVE_TIMEOUT, "another peer to complete it")
    completed = time.monotonic() - killed
    time.sleep(5)  # any call still on its way lands before counting

    successor = world.leaders()
    assert successor and successor != [leader]
    assert _succeeded(route53, ROUTE53_CHANGE) - before == 1  # made once, never again
    assert app.dns_weights() == {"use1": 0, "usw2": 100}
    assert app.dns_epoch() == 2
    assert set(app.epochs().values()) == {2}
    resizes = _succeeded(world.sandbox.proxies["us-west-2"], RESIZE) - resizes_before
    print(
        f"\nleader {leader} killed mid-failover; {successor} completed it {completed:.1f}s "
        f"later; DNS changes carried out: 1; standby resizes: {resizes}"
    )
