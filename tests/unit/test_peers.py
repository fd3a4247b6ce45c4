"""The peer link: publishing in the own cluster, hearing the others by their rising
sequence on the reader's clock, their views and spec drift (fake objects, a fake clock)."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from controller import metrics
from controller.api.digest import canonical_json
from controller.api.models import LifeboatPeersSpec
from controller.core.health import ZoneKey, ZoneState
from controller.operator import peers as peers_module
from controller.operator.kube import NotFound
from controller.operator.peers import (
    ABSENT_HEARTBEATS,
    HEARD_HEARTBEATS,
    Conflict,
    Hearing,
    Peers,
    request_seconds,
)

HEARTBEAT = 2.0
UP = {ZoneKey("use1", "a"): ZoneState.HEALTHY, ZoneKey("usw2", "a"): ZoneState.HEALTHY}
DOWN = {ZoneKey("use1", "a"): ZoneState.DOWN, ZoneKey("usw2", "a"): ZoneState.HEALTHY}


def spec(*names: str, heartbeat: float = HEARTBEAT, allow_solo: bool = False) -> dict[str, Any]:
    return {
        "heartbeatSeconds": heartbeat,
        "allowSolo": allow_solo,
        "peers": [
            {"name": n, "kubeconfigSecretRef": {"name": f"peer-{n}", "key": "kubeconfig"}}
            for n in names
        ],
    }


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 merge patch (lists replaced whole)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeObject:
    """LifeboatPeers/lifeboat in one fake cluster: resourceVersion preconditions, calls
    recorded, failures on demand."""

    def __init__(self, peers_spec: dict[str, Any], uid: str = "uid-1") -> None:
        self.object: dict[str, Any] | None = {
            "metadata": {"name": "lifeboat", "uid": uid, "resourceVersion": "1", "generation": 1},
            "spec": copy.deepcopy(peers_spec),
        }
        self.calls: list[tuple[str, Any]] = []
        self.failure: BaseException | None = None
        self.hang = False

    def _bump(self) -> None:
        assert self.object is not None
        meta = self.object["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    def edit_spec(self, peers_spec: dict[str, Any]) -> None:
        assert self.object is not None
        self.object["spec"] = copy.deepcopy(peers_spec)
        self.object["metadata"]["generation"] += 1
        self._bump()

    async def _answer(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.failure is not None:
            raise self.failure
        if self.object is None:
            raise NotFound("LifeboatPeers/lifeboat not found")

    async def get(self, seconds: float) -> Mapping[str, Any]:
        self.calls.append(("get", None))
        await self._answer()
        return copy.deepcopy(self.object or {})

    async def patch_status(self, body: Mapping[str, Any], seconds: float) -> Mapping[str, Any]:
        self.calls.append(("patch", copy.deepcopy(body)))
        await self._answer()
        assert self.object is not None
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version is not None and version != self.object["metadata"]["resourceVersion"]:
            raise Conflict("changed")
        status = self.object.setdefault("status", {})
        merge(status, body["status"])
        self._bump()
        return copy.deepcopy(self.object)

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.calls]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class World:
    """Peers a, b (and c) with their own objects, on one fake clock."""

    def __init__(self, *names: str, **spec_options: Any) -> None:
        self.names = names
        self.spec = spec(*names, **spec_options)
        self.clock = Clock()
        self.objects = {n: FakeObject(self.spec, uid=f"uid-{n}") for n in names}
        self.peers = {n: self.link(n) for n in names}

    def link(self, me: str, *, reach: Mapping[str, str] | None = None) -> Peers:
        reach = reach or {}
        return Peers(
            me,
            LifeboatPeersSpec.model_validate(self.spec),
            self.objects[me],
            {n: self.objects[reach.get(n, n)] for n in self.names if n != me},
            clock=self.clock,
            wall=lambda: 1.8e9,
        )

    async def heartbeat(self, *publishing: str, seconds: float = HEARTBEAT) -> None:
        """One heartbeat: the named peers publish (default: all), then everyone reads."""
        for name in publishing or self.names:
            await self.peers[name].publish_once()
        for name, link in self.peers.items():
            for other in self.names:
                if other != name:
                    await link.read_once(other)
        self.clock.now += seconds


# ------------------------------------------------------------------ hearing


def test_the_first_sequence_seen_is_only_a_baseline() -> None:
    hearing = Hearing()
    assert not hearing.observe(57, at=10.0)
    assert not hearing.heard(10.0, HEARTBEAT)


def test_a_rise_is_heard_for_three_heartbeats_on_the_readers_clock() -> None:
    hearing = Hearing()
    hearing.observe(1, at=10.0)
    assert hearing.observe(2, at=12.0)
    assert hearing.heard(12.0, HEARTBEAT)
    assert hearing.heard(12.0 + HEARD_HEARTBEATS * HEARTBEAT, HEARTBEAT)
    assert not hearing.heard(12.0 + HEARD_HEARTBEATS * HEARTBEAT + 0.01, HEARTBEAT)


def test_the_same_sequence_again_is_no_rise() -> None:
    hearing = Hearing()
    hearing.observe(1, at=10.0)
    hearing.observe(2, at=12.0)
    assert not hearing.observe(2, at=14.0)
    assert hearing.rose_at == 12.0


def test_a_lower_sequence_is_a_new_baseline() -> None:
    """A peer that started over without its old status: heard again once it rises from
    there, not because its number changed."""
    hearing = Hearing()
    hearing.observe(40, at=10.0)
    assert not hearing.observe(3, at=12.0)
    assert hearing.rose_at is None
    assert hearing.observe(4, at=14.0)


def test_request_deadlines_follow_the_heartbeat_within_bounds() -> None:
    assert request_seconds(0.5) == 1.0
    assert request_seconds(2.0) == 2.0
    assert request_seconds(60.0) == 5.0


# ------------------------------------------------------------------ two peers


async def test_peers_hear_each_other_after_a_rise_and_see_each_others_views() -> None:
    world = World("a", "b")
    world.peers["b"].publish("ns/web", "d1", DOWN)
    await world.heartbeat()
    first = world.peers["a"].vantage("ns/web")
    assert [(v.peer, v.heard) for v in first.peers] == [("b", False)]  # a baseline only
    await world.heartbeat()
    vantage = world.peers["a"].vantage("ns/web")
    assert vantage.total == 2 and not vantage.allow_solo
    assert vantage.peer == "a"  # this peer's name, for the workers' reports
    (view,) = vantage.peers
    assert view.peer == "b" and view.heard
    assert view.zones == DOWN
    assert world.peers["b"].heard() == ("a",)


async def test_a_peer_that_stops_publishing_is_not_heard_after_three_heartbeats() -> None:
    world = World("a", "b")
    world.peers["b"].publish("ns/web", "d1", DOWN)
    await world.heartbeat()
    await world.heartbeat()
    assert world.peers["a"].heard() == ("b",)  # it rose one heartbeat ago
    for _ in range(HEARD_HEARTBEATS - 1):
        await world.heartbeat("a")  # b's object still answers, its sequence stays
        assert world.peers["a"].heard() == ("b",)
    await world.heartbeat("a")  # three heartbeats and a little more since it rose
    assert world.peers["a"].heard() == ()
    (view,) = world.peers["a"].vantage("ns/web").peers
    assert not view.heard and view.zones == {}  # nothing of a peer not heard counts
    await world.heartbeat("a")  # the metric follows at the next read
    assert metrics.REGISTRY.get_sample_value("lifeboat_peer_heard", {"peer": "b"}) == 0
    await world.heartbeat()
    assert world.peers["a"].heard() == ("b",)  # it publishes again: heard at once


async def test_an_unreachable_peer_is_not_heard_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World("a", "b")
    await world.heartbeat()
    await world.heartbeat()
    world.objects["b"].failure = ConnectionRefusedError("connection refused")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="controller.operator.peers"):
        for _ in range(HEARD_HEARTBEATS + 3):
            await world.heartbeat("a")
    assert world.peers["a"].heard() == ()
    lines = [r for r in caplog.records if "peer b" in r.getMessage()]
    assert [r.levelname for r in lines] == ["WARNING", "WARNING"]
    assert "cannot read its publication" in lines[0].getMessage()
    assert "not heard" in lines[1].getMessage()
    assert all(r.exc_info is None for r in caplog.records)


async def test_a_hung_peer_is_given_up_after_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(peers_module, "MIN_REQUEST_SECONDS", 0.05)
    monkeypatch.setattr(peers_module, "MAX_REQUEST_SECONDS", 0.05)
    world = World("a", "b")
    world.objects["b"].hang = True
    await asyncio.wait_for(world.peers["a"].read_once("b"), 5)
    assert world.peers["a"].heard() == ()


async def test_a_cluster_answering_as_another_peer_is_never_heard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """b's kubeconfig reaches a's own cluster: a would hear itself twice."""
    world = World("a", "b")
    world.peers["a"] = world.link("a", reach={"b": "a"})
    with caplog.at_level(logging.WARNING, logger="controller.operator.peers"):
        for _ in range(4):
            await world.heartbeat()
    assert world.peers["a"].heard() == ()
    assert any("publishes as peer a" in r.getMessage() for r in caplog.records)


async def test_three_peers_one_view_each() -> None:
    world = World("a", "b", "c", allow_solo=True)
    world.peers["b"].publish("ns/web", "d1", DOWN)
    world.peers["c"].publish("ns/web", "d1", UP)
    await world.heartbeat()
    await world.heartbeat("a", "b")  # c stopped after its first publication
    vantage = world.peers["a"].vantage("ns/web")
    assert vantage.total == 3 and vantage.allow_solo
    assert [(v.peer, v.heard, dict(v.zones)) for v in vantage.peers] == [
        ("b", True, DOWN),
        ("c", False, {}),
    ]


# ------------------------------------------------------------------ drift


async def test_drift_names_the_heard_peers_with_another_digest() -> None:
    world = World("a", "b", "c")
    for name, digest in (("a", "d1"), ("b", "d2"), ("c", "d1")):
        world.peers[name].publish("ns/web", digest, UP)
    await world.heartbeat()
    assert world.peers["a"].drift("ns/web", "d1") == ()  # nobody heard yet
    await world.heartbeat()
    assert world.peers["a"].drift("ns/web", "d1") == ("b",)
    assert world.peers["b"].drift("ns/web", "d2") == ("a", "c")
    world.peers["b"].publish("ns/web", "d1", UP)  # b's spec caught up
    await world.heartbeat()
    assert world.peers["a"].drift("ns/web", "d1") == ()


async def test_a_peer_not_heard_is_no_drift() -> None:
    world = World("a", "b")
    world.peers["a"].publish("ns/web", "d1", UP)
    world.peers["b"].publish("ns/web", "d2", UP)
    await world.heartbeat()
    await world.heartbeat()
    assert world.peers["a"].drift("ns/web", "d1") == ("b",)
    for _ in range(HEARD_HEARTBEATS + 1):
        await world.heartbeat("a")
    assert world.peers["a"].drift("ns/web", "d1") == ()


async def test_an_app_a_heard_peer_keeps_lacking_is_drift() -> None:
    """Its cluster lacks the app: after three of its heartbeats (a starting peer's workers
    publish within its first rounds), not before."""
    world = World("a", "b")
    world.peers["a"].publish("ns/web", "d1", UP)
    await world.heartbeat()
    await world.heartbeat()
    assert world.peers["a"].heard() == ("b",)
    assert world.peers["a"].drift("ns/web", "d1") == ()
    await world.heartbeat()
    assert world.peers["a"].drift("ns/web", "d1") == ()
    await world.heartbeat()  # b's fourth publication without it
    assert world.peers["a"].drift("ns/web", "d1") == ("b",)
    world.peers["b"].publish("ns/web", "d1", UP)
    await world.heartbeat()
    assert world.peers["a"].drift("ns/web", "d1") == ()


async def test_an_app_left_out_for_size_is_no_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World("a", "b")
    for app in ("ns/a", "ns/b", "ns/web"):
        world.peers["a"].publish(app, "d1", UP)
        world.peers["b"].publish(app, "d1", UP)
    one = len(canonical_json(peers_module._entry("ns/a", "d1", UP))) + 1
    monkeypatch.setattr(peers_module, "MAX_PUBLISHED_BYTES", 2 * one)
    for _ in range(6):
        await world.heartbeat()
    status = world.objects["b"].object["status"]  # type: ignore[index]
    assert [entry["app"] for entry in status["apps"]] == ["ns/a", "ns/b"]
    assert world.peers["a"].drift("ns/web", "d1") == ()
    assert world.peers["a"].drift("ns/a", "d1") == ()


async def test_a_peer_whose_session_ends_stays_heard_with_no_views_and_no_drift() -> None:
    """While a peer's session ends (a new peer list set up, its operator shutting down),
    its heartbeat goes on: the others keep hearing it, read no stale view and no drift."""
    world = World("a", "b")
    world.peers["a"].publish("ns/web", "d1", UP)
    world.peers["b"].publish("ns/web", "d1", DOWN)
    for _ in range(2):
        await world.heartbeat()
    assert world.peers["a"].vantage("ns/web").peers[0].zones == DOWN
    world.peers["b"].withdraw()
    world.peers["b"].publish("ns/web", "d1", DOWN)  # a worker still stopping: not published
    for _ in range(ABSENT_HEARTBEATS + HEARD_HEARTBEATS + 1):
        await world.heartbeat()
        assert world.peers["a"].heard() == ("b",)
    (view,) = world.peers["a"].vantage("ns/web").peers
    assert view.heard and view.zones == {}  # counts as seeing every zone Unknown
    assert world.peers["a"].drift("ns/web", "d1") == ()
    status = world.objects["b"].object["status"]  # type: ignore[index]
    assert status["apps"] == []
    (complete,) = status["conditions"]
    assert (complete["status"], complete["reason"]) == ("False", "SettingUpAnew")


# ------------------------------------------------------------------ publishing


async def test_a_publication_in_the_own_cluster() -> None:
    world = World("a", "b")
    link = world.peers["a"]
    link.publish("ns/web", "d1", DOWN)
    assert await link.publish_once()
    status = world.objects["a"].object["status"]  # type: ignore[index]
    assert status["peer"] == "a" and status["sequence"] == 1
    assert status["publishedAt"] == "2027-01-15T08:00:00Z"
    assert status["apps"] == [
        {
            "app": "ns/web",
            "specDigest": "d1",
            "zones": [
                {"site": "use1", "zone": "a", "state": "Down"},
                {"site": "usw2", "zone": "a", "state": "Healthy"},
            ],
        }
    ]
    (complete,) = status["conditions"]
    assert (complete["type"], complete["status"], complete["reason"]) == (
        "Complete",
        "True",
        "AllApps",
    )
    assert world.objects["b"].calls == []  # never written elsewhere


async def test_one_patch_per_heartbeat_with_the_apps_only_when_they_changed() -> None:
    world = World("a", "b")
    own = world.objects["a"]
    link = world.peers["a"]
    link.publish("ns/web", "d1", UP)
    for _ in range(3):
        await link.publish_once()
    assert own.verbs() == ["get", "patch", "patch", "patch"]  # one read, at the start
    sent = [body["status"] for verb, body in own.calls if verb == "patch"]
    assert [s["sequence"] for s in sent] == [1, 2, 3]
    assert ["apps" in s for s in sent] == [True, False, False]
    link.publish("ns/web", "d1", DOWN)
    await link.publish_once()
    assert own.calls[-1][1]["status"]["apps"][0]["zones"][0]["state"] == "Down"
    link.forget("ns/web")
    await link.publish_once()
    assert own.calls[-1][1]["status"]["apps"] == []
    assert own.object["status"]["apps"] == []  # type: ignore[index]


async def test_a_restarted_peer_goes_on_rising_from_its_stored_sequence() -> None:
    world = World("a", "b")
    for _ in range(5):
        await world.peers["a"].publish_once()
    restarted = world.link("a")
    await restarted.publish_once()
    assert world.objects["a"].object["status"]["sequence"] == 6  # type: ignore[index]


async def test_a_changed_object_costs_one_read_and_one_more_write() -> None:
    world = World("a", "b")
    own = world.objects["a"]
    link = world.peers["a"]
    link.publish("ns/web", "d1", UP)
    await link.publish_once()
    own.calls.clear()
    assert own.object is not None
    own.object["metadata"]["annotations"] = {"note": "edited"}
    own._bump()
    assert await link.publish_once()
    assert own.verbs() == ["patch", "get", "patch"]
    assert own.object["status"]["sequence"] == 2


async def test_a_recreated_object_gets_the_whole_publication_again() -> None:
    world = World("a", "b")
    link = world.peers["a"]
    link.publish("ns/web", "d1", UP)
    await link.publish_once()
    world.objects["a"].object = None  # deleted ...
    assert not await link.publish_once()
    fresh = FakeObject(world.spec, uid="uid-a-2")  # ... and applied again by GitOps
    world.objects["a"].object = fresh.object
    assert await link.publish_once()
    status = world.objects["a"].object["status"]  # type: ignore[index]
    assert [entry["app"] for entry in status["apps"]] == ["ns/web"]
    assert status["sequence"] == 2


async def test_another_writer_of_the_same_peer_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World("a", "b")
    first, second = world.peers["a"], world.link("a")
    await first.publish_once()
    await second.publish_once()
    await second.publish_once()
    with caplog.at_level(logging.WARNING, logger="controller.operator.peers"):
        assert await first.publish_once()
    assert any("another instance publishes as peer a" in r.getMessage() for r in caplog.records)
    assert world.objects["a"].object["status"]["sequence"] == 4  # type: ignore[index]


async def test_an_unreachable_own_cluster_is_logged_once_and_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World("a", "b")
    world.objects["a"].failure = TimeoutError()
    with caplog.at_level(logging.INFO, logger="controller.operator.peers"):
        for _ in range(3):
            assert not await world.peers["a"].publish_once()
        world.objects["a"].failure = None
        assert await world.peers["a"].publish_once()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "peers: cannot publish in a's own cluster: TimeoutError",
        "peers: publishing in a's own cluster again",
    ]


async def test_the_publication_stays_within_its_size_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World("a", "b")
    link = world.peers["a"]
    apps = [f"ns/app-{i:02d}" for i in range(10)]
    for app in apps:
        link.publish(app, "d" * 64, UP)
    one = len(canonical_json(peers_module._entry(apps[0], "d" * 64, UP))) + 1
    monkeypatch.setattr(peers_module, "MAX_PUBLISHED_BYTES", 4 * one)
    await link.publish_once()
    status = world.objects["a"].object["status"]  # type: ignore[index]
    assert [entry["app"] for entry in status["apps"]] == apps[:4]
    (complete,) = status["conditions"]
    assert (complete["status"], complete["reason"]) == ("False", "TooLarge")
    assert complete["message"].startswith("6 of 10 apps left out")
    assert metrics.REGISTRY.get_sample_value("lifeboat_peer_apps_left_out") == 6
    assert metrics.REGISTRY.get_sample_value("lifeboat_peer_published_bytes") == 4 * one


# ------------------------------------------------------------------ the spec changes


async def test_a_new_heartbeat_applies_at_the_next_publication() -> None:
    world = World("a", "b")
    link = world.peers["a"]
    await link.publish_once()
    world.objects["a"].edit_spec(spec("a", "b", heartbeat=5.0, allow_solo=True))
    await link.publish_once()
    assert link.heartbeat == 5.0 and link.vantage("ns/web").allow_solo
    assert not link.membership_changed.is_set()


async def test_a_new_peer_list_asks_for_a_new_set_up() -> None:
    world = World("a", "b")
    link = world.peers["a"]
    await link.publish_once()
    world.objects["a"].edit_spec(spec("a", "b", "c"))
    await link.publish_once()
    assert link.membership_changed.is_set()
    assert len(link.spec.peers) == 2  # the running set-up stays as it was until rebuilt


def test_a_peer_must_be_listed_and_linked_to_every_other() -> None:
    world = World("a", "b")
    parsed = LifeboatPeersSpec.model_validate(world.spec)
    with pytest.raises(ValueError, match="peer z is not listed"):
        Peers("z", parsed, world.objects["a"], {})
    with pytest.raises(ValueError, match="no link to peer"):
        Peers("a", parsed, world.objects["a"], {})


# ------------------------------------------------------------------ the loops


async def test_run_publishes_and_reads_once_per_heartbeat_until_stopped() -> None:
    """On the real clock: the calls of a run of about four heartbeats."""
    world = World("a", "b", heartbeat=0.5)
    link = world.link("a")
    link._clock = asyncio.get_running_loop().time
    stopping = asyncio.Event()
    task = asyncio.create_task(link.run(stopping))
    await asyncio.sleep(1.8)
    stopping.set()
    await asyncio.wait_for(task, 5)
    patches = world.objects["a"].verbs().count("patch")
    reads = world.objects["b"].verbs().count("get")
    assert 2 <= patches <= 5 and 2 <= reads <= 5


async def test_an_unchanged_apps_list_is_not_parsed_again() -> None:
    """Most heartbeats raise the sequence alone: the reader keeps what it parsed."""
    world = World("a", "b")
    world.peers["b"].publish("ns/web", "d1", UP)
    await world.heartbeat()
    await world.heartbeat()
    reader = world.peers["a"]
    parsed = reader._others["b"].apps
    await world.heartbeat()
    await world.heartbeat()
    assert reader._others["b"].apps is parsed and reader.heard() == ("b",)
    world.peers["b"].publish("ns/web", "d1", DOWN)
    await world.heartbeat()
    assert reader._others["b"].apps is not parsed
    assert dict(reader.vantage("ns/web").peers[0].zones) == DOWN


async def test_an_invalid_apps_list_is_a_problem_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World("a", "b")
    await world.heartbeat()
    assert world.objects["b"].object is not None
    world.objects["b"].object["status"]["apps"] = [{"app": "ns/web"}]  # no digest
    world.objects["b"].object["status"]["sequence"] += 1
    with caplog.at_level(logging.WARNING, logger="controller.operator.peers"):
        await world.peers["a"].read_once("b")
    assert any("its publication is invalid" in r.getMessage() for r in caplog.records)
    assert world.peers["a"].heard() == ()


# ------------------------------------------------------------------ who leads


@dataclass
class Holding:
    """A LeaseHolding whose answer a test sets."""

    leading: bool = False
    clusters: tuple[str, ...] = ()

    def held(self) -> tuple[str, ...]:
        return self.clusters


async def test_each_peer_publishes_whether_it_leads_and_who_it_sees_leading() -> None:
    world = World("a", "b", "c")
    holdings = {"a": Holding(), "b": Holding(True, ("b", "c")), "c": Holding(False, ("a",))}
    for name, holding in holdings.items():
        world.peers[name].follow(holding)
    for _ in range(2):  # the first sequence read is only a baseline
        await world.heartbeat()
    await world.heartbeat()  # now every peer has read the others' leading flags
    status = {n: world.objects[n].object["status"] for n in world.names}  # type: ignore[index]
    assert status["b"]["leading"] and status["b"]["leasesHeld"] == ["b", "c"]
    assert not status["c"]["leading"] and status["c"]["leasesHeld"] == ["a"]
    assert {n: s["leader"] for n, s in status.items()} == {"a": "b", "b": "b", "c": "b"}

    holdings["b"].leading, holdings["b"].clusters = False, ()  # b loses its majority
    await world.heartbeat()
    await world.heartbeat()
    assert world.peers["a"].leader() is None
    assert world.objects["b"].object["status"].get("leader") is None  # type: ignore[index]


async def test_a_leader_not_heard_is_not_named() -> None:
    world = World("a", "b")
    world.peers["b"].follow(Holding(True, ("a", "b")))
    for _ in range(2):
        await world.heartbeat()
    assert world.peers["a"].leader() == "b"
    for _ in range(4):  # b goes silent: after three heartbeats it is not heard
        await world.heartbeat("a")
    assert world.peers["a"].leader() is None
