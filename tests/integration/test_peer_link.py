"""The peer link on three real kube-apiserver + etcd pairs: each peer publishes its view in
its own cluster and hears the others through the clients peer_setup builds from their
kubeconfig Secrets; a stopped peer and a partitioned one are no longer heard; different
spec digests are drift; the calls stay within one per cluster per heartbeat.

Each cluster sits behind a TCP relay that every client goes through (its own peer's
included), so a test can silence one cluster (``blackhole``: every call hangs until its
deadline).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from controller import metrics
from controller.cli.main import EXIT_FAILED, main
from controller.core.health import ZoneKey, ZoneState
from controller.operator import peer_setup, runner
from controller.operator.peers import HEARD_HEARTBEATS, Peers
from controller.operator.runner import OperatorConfig
from controller.providers.kubernetes.capacity import client_from_kubeconfig
from sandbox.assets import Assets
from sandbox.kube import KubeControlPlane
from sandbox.tcp_relay import TcpRelay
from sandbox.world import manifests_dir

pytestmark = pytest.mark.integration

NAMES = ("use1", "usw2", "euc1")
NAMESPACE = "lifeboat-system"
HEARTBEAT = 1.0
APP = "shop/web"
ZONES = {
    ZoneKey("use1", "us-east-1a"): ZoneState.HEALTHY,
    ZoneKey("usw2", "us-west-2a"): ZoneState.HEALTHY,
}


@dataclass
class Clusters:
    planes: dict[str, KubeControlPlane]
    relays: dict[str, TcpRelay]
    kubeconfigs: dict[str, str]

    def heal(self) -> None:
        for relay in self.relays.values():
            relay.serve()


def _relayed_kubeconfig(plane: KubeControlPlane, port: int) -> str:
    document = yaml.safe_load(plane.kubeconfig_path.read_text(encoding="utf-8"))
    for cluster in document["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    return yaml.safe_dump(document)


def _peers_object() -> dict[str, object]:
    return {
        "apiVersion": "lifeboat.dev/v1alpha1",
        "kind": "LifeboatPeers",
        "metadata": {"name": "lifeboat"},
        "spec": {
            "heartbeatSeconds": HEARTBEAT,
            "peers": [
                {"name": name, "kubeconfigSecretRef": {"name": f"lifeboat-peer-{name}"}}
                for name in NAMES
            ],
        },
    }


@pytest.fixture(scope="module")
def clusters(kube_assets: Assets) -> Iterator[Clusters]:
    planes: dict[str, KubeControlPlane] = {}
    relays: dict[str, TcpRelay] = {}
    try:
        for name in NAMES:
            plane = KubeControlPlane(kube_assets)
            plane.start()
            planes[name] = plane
            host, _, port = plane.server_url.removeprefix("https://").rpartition(":")
            relays[name] = TcpRelay(host, int(port))
            relays[name].start()
        kubeconfigs = {name: _relayed_kubeconfig(planes[name], relays[name].port) for name in NAMES}
        for name, plane in planes.items():
            plane.install_crds([manifests_dir() / "crds"])
            plane.kubectl("create", "namespace", NAMESPACE)
            plane.kubectl("apply", "-f", "-", input=json.dumps(_peers_object()))
            for other in NAMES:
                if other != name:
                    secret = {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": f"lifeboat-peer-{other}", "namespace": NAMESPACE},
                        "data": {
                            "kubeconfig": base64.b64encode(kubeconfigs[other].encode()).decode()
                        },
                    }
                    plane.kubectl("apply", "-f", "-", input=json.dumps(secret))
        yield Clusters(planes, relays, kubeconfigs)
    finally:
        for relay in relays.values():
            relay.stop()
        for plane in planes.values():
            plane.stop()


@dataclass
class Running:
    """One Peers instance per peer, each running its heartbeat."""

    links: dict[str, Peers]
    stops: dict[str, asyncio.Event] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        self.stops[name] = asyncio.Event()
        self.tasks[name] = asyncio.create_task(self.links[name].run(self.stops[name]))

    async def stop(self, name: str) -> None:
        self.stops[name].set()
        await asyncio.wait_for(self.tasks.pop(name), 15)


@pytest.fixture
async def running(clusters: Clusters) -> AsyncIterator[Running]:
    clusters.heal()
    built = {}
    for name in NAMES:
        own = client_from_kubeconfig(clusters.kubeconfigs[name])
        built[name] = await peer_setup.build_async(own, name, NAMESPACE)
    world = Running({name: Peers.connect(c) for name, c in built.items()})
    for name in NAMES:
        world.links[name].publish(APP, "digest-1", ZONES)
        world.start(name)
    try:
        yield world
    finally:
        clusters.heal()
        for name in list(world.tasks):
            await world.stop(name)
        for name, c in built.items():
            world.links[name].close()
            c.close()
            c.own.api.close()  # type: ignore[no-untyped-call]


async def eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:g}s: {what}")
        await asyncio.sleep(0.1)


def heard_by(world: Running, name: str) -> set[str]:
    return set(world.links[name].heard())


def hears(world: Running, name: str, expected: set[str]) -> Callable[[], bool]:
    return lambda: heard_by(world, name) == expected


def lost(world: Running, name: str, other: str) -> Callable[[], bool]:
    return lambda: other not in heard_by(world, name)


# Heard again within a couple of heartbeats; not heard within three heartbeats after the
# last rise plus a deadline. The slack covers a shared, loaded test machine.
HEAR_SECONDS = 20.0
RESETUP_SECONDS = 90.0
LOSE_SECONDS = HEARD_HEARTBEATS * HEARTBEAT + 20.0


async def test_peers_publish_in_their_own_clusters_and_hear_each_other(
    clusters: Clusters, running: Running
) -> None:
    for name in NAMES:
        others = set(NAMES) - {name}
        await eventually(hears(running, name, others), HEAR_SECONDS, name)
    vantage = running.links["use1"].vantage(APP)
    assert vantage.total == 3
    assert [(v.peer, v.heard, dict(v.zones)) for v in vantage.peers] == [
        ("usw2", True, ZONES),
        ("euc1", True, ZONES),
    ]
    assert running.links["use1"].drift(APP, "digest-1") == ()
    stored = json.loads(
        clusters.planes["usw2"].kubectl("get", "lifeboatpeers", "lifeboat", "-o", "json").stdout
    )["status"]
    assert stored["peer"] == "usw2" and stored["sequence"] > 1
    assert stored["apps"] == [
        {
            "app": APP,
            "specDigest": "digest-1",
            "zones": [
                {"site": "use1", "zone": "us-east-1a", "state": "Healthy"},
                {"site": "usw2", "zone": "us-west-2a", "state": "Healthy"},
            ],
        }
    ]
    assert [c["type"] for c in stored["conditions"]] == ["Complete"]


async def test_a_changed_view_reaches_the_others(running: Running) -> None:
    await eventually(lambda: heard_by(running, "use1") == {"usw2", "euc1"}, HEAR_SECONDS, "all")
    down = {**ZONES, ZoneKey("use1", "us-east-1a"): ZoneState.DOWN}
    running.links["euc1"].publish(APP, "digest-1", down)

    def seen() -> bool:
        views = {v.peer: v for v in running.links["use1"].vantage(APP).peers}
        return dict(views["euc1"].zones) == down and dict(views["usw2"].zones) == ZONES

    await eventually(seen, HEAR_SECONDS, "euc1's new view at use1")


async def test_a_stopped_peer_is_not_heard_and_heard_again_when_it_resumes(
    running: Running,
) -> None:
    await eventually(lambda: heard_by(running, "use1") == {"usw2", "euc1"}, HEAR_SECONDS, "all")
    await running.stop("euc1")
    for name in ("use1", "usw2"):
        await eventually(lost(running, name, "euc1"), LOSE_SECONDS, f"{name} loses euc1")
    assert heard_by(running, "use1") == {"usw2"} and heard_by(running, "usw2") == {"use1"}
    views = {v.peer: v for v in running.links["use1"].vantage(APP).peers}
    assert not views["euc1"].heard and views["euc1"].zones == {}
    await eventually(  # the gauge follows at each peer's next read
        lambda: metrics.REGISTRY.get_sample_value("lifeboat_peer_heard", {"peer": "euc1"}) == 0,
        HEAR_SECONDS,
        "lifeboat_peer_heard{peer=euc1} 0",
    )
    running.start("euc1")  # its sequence goes on rising from where it stopped
    await eventually(lambda: "euc1" in heard_by(running, "use1"), HEAR_SECONDS, "euc1 back")


async def test_a_partitioned_peer_is_not_heard_without_a_traceback(
    clusters: Clusters, running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    await eventually(lambda: heard_by(running, "use1") == {"usw2", "euc1"}, HEAR_SECONDS, "all")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="controller.operator.peers"):
        clusters.relays["usw2"].blackhole()
        await eventually(
            lambda: heard_by(running, "use1") == {"euc1"}, LOSE_SECONDS, "use1 loses usw2"
        )
        await eventually(
            lambda: heard_by(running, "euc1") == {"use1"}, LOSE_SECONDS, "euc1 loses usw2"
        )
        # heard() reads the clock; the log line comes from the link's next report, which
        # a loaded machine may run later than that (its reads of usw2 are timing out):
        # heal only once it was said, or it may never be.
        await eventually(
            lambda: any("peer usw2 not heard" in r.getMessage() for r in caplog.records),
            LOSE_SECONDS,
            "a log line says usw2 is not heard",
        )
        # usw2 cannot publish (its own cluster is behind the same relay) nor read
        clusters.relays["usw2"].serve()
        await eventually(
            lambda: heard_by(running, "use1") == {"usw2", "euc1"}, HEAR_SECONDS, "healed"
        )
    assert all(record.exc_info is None for record in caplog.records)
    messages = [r.getMessage() for r in caplog.records]
    assert any("peer usw2 not heard" in m for m in messages)
    # Which calls fail first depends on the connections the relay had open when it went
    # silent: usw2's own writes, the others' reads of it, or both; each is one line.
    assert any(
        "peer usw2: cannot read its publication" in m or "cannot publish in usw2's own cluster" in m
        for m in messages
    )


async def test_different_digests_are_drift(running: Running) -> None:
    await eventually(lambda: heard_by(running, "use1") == {"usw2", "euc1"}, HEAR_SECONDS, "all")
    running.links["usw2"].publish(APP, "digest-2", ZONES)
    await eventually(
        lambda: running.links["use1"].drift(APP, "digest-1") == ("usw2",),
        HEAR_SECONDS,
        "use1 sees usw2 drift",
    )
    assert running.links["usw2"].drift(APP, "digest-2") == ("use1", "euc1")


async def test_one_patch_and_one_get_per_cluster_per_heartbeat(running: Running) -> None:
    """The cost bound: over a window, each cluster gets at most one PATCH (its own peer's)
    per heartbeat, and at most one GET per other peer per heartbeat."""
    await eventually(lambda: heard_by(running, "use1") == {"usw2", "euc1"}, HEAR_SECONDS, "all")

    def count(peer: str, verb: str) -> float:
        found = metrics.REGISTRY.get_sample_value(
            "lifeboat_peer_requests_total", {"peer": peer, "verb": verb}
        )
        return found or 0.0

    before = {(p, v): count(p, v) for p in NAMES for v in ("get", "patch")}
    started = time.monotonic()
    await asyncio.sleep(6 * HEARTBEAT)
    heartbeats = (time.monotonic() - started) / HEARTBEAT
    for peer in NAMES:
        patches = count(peer, "patch") - before[peer, "patch"]
        gets = count(peer, "get") - before[peer, "get"]
        assert 1 <= patches <= heartbeats + 1, (peer, patches, heartbeats)
        assert 1 <= gets <= (len(NAMES) - 1) * (heartbeats + 1), (peer, gets, heartbeats)


# ------------------------------------------------------------------ lifeboat run --peer-name


class PeerThread:
    """One peer's link running in a thread of its own (beside an operator in another)."""

    def __init__(self, clusters: Clusters, name: str) -> None:
        self.clusters, self.name = clusters, name
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"peer-{name}", daemon=True)
        self.link: Peers | None = None

    def _run(self) -> None:
        async def main() -> None:
            own = client_from_kubeconfig(self.clusters.kubeconfigs[self.name])
            built = await peer_setup.build_async(own, self.name, NAMESPACE)
            link = self.link = Peers.connect(built)
            stopping = asyncio.Event()
            task = asyncio.create_task(link.run(stopping))
            while not self.stop.is_set():  # noqa: ASYNC110 - a threading.Event
                await asyncio.sleep(0.1)
            stopping.set()
            await task
            link.close()
            built.close()
            own.close()  # type: ignore[no-untyped-call]

        asyncio.run(main())

    def __enter__(self) -> PeerThread:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(20)


class Watch:
    """Samples a condition on a thread of its own, every 0.2 s, while in its block."""

    def __init__(self, check: Callable[[], bool]) -> None:
        self.check, self.failed = check, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            self.failed += 0 if self.check() else 1

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(5)


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:g}s: {what}")
        time.sleep(0.2)


def test_lifeboat_run_as_a_peer_publishes_hears_and_follows_its_peer_list(
    clusters: Clusters, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clusters.heal()
    plane = clusters.planes["use1"]
    kubeconfig = tmp_path / "use1.kubeconfig"
    kubeconfig.write_text(clusters.kubeconfigs["use1"], encoding="utf-8")
    config = OperatorConfig(
        kubeconfig=str(kubeconfig),
        controller_namespace=NAMESPACE,
        metrics_address=None,
        liveness_endpoint=None,
        leader_election=False,
        peer_name="use1",
    )

    def sequence() -> int:
        found = plane.kubectl("get", "lifeboatpeers", "lifeboat", "-o", "json").stdout
        status = json.loads(found).get("status") or {}
        return int(status.get("sequence") or 0) if status.get("peer") == "use1" else 0

    def heard(peer: str) -> bool:
        return metrics.REGISTRY.get_sample_value("lifeboat_peer_heard", {"peer": peer}) == 1

    try:
        with (
            caplog.at_level(logging.INFO, logger="controller.operator"),
            PeerThread(clusters, "usw2") as usw2,
            runner.in_background(config),
        ):
            first = sequence()
            wait_for(lambda: sequence() > first + 1, HEAR_SECONDS, "use1 publishes")
            wait_for(lambda: heard("usw2"), HEAR_SECONDS, "use1 hears usw2")
            wait_for(lambda: usw2.link is not None, HEAR_SECONDS, "usw2's link")
            link = usw2.link
            assert link is not None
            wait_for(lambda: "use1" in link.heard(), HEAR_SECONDS, "usw2 hears use1")
            # the peer list changes (euc1 leaves): the peers are set up anew
            two = _peers_object()
            two["spec"]["peers"] = two["spec"]["peers"][:2]  # type: ignore[index]
            with Watch(lambda: "use1" in link.heard()) as watch:
                plane.kubectl("apply", "-f", "-", input=json.dumps(two))
                wait_for(
                    lambda: any(
                        "set up anew (use1, usw2)" in r.getMessage() for r in caplog.records
                    ),
                    HEAR_SECONDS,
                    "the new set-up",
                )
                again = sequence()
                # The old session's operator shuts down (kopf, its Leases given up), which
                # has taken over 20 s on a loaded two-core CI machine; its heartbeat goes
                # on meanwhile (it paused before: usw2 stopped hearing use1).
                wait_for(lambda: sequence() > again + 1, RESETUP_SECONDS, "use1 publishes again")
                wait_for(lambda: heard("usw2"), HEAR_SECONDS, "use1 hears usw2 again")
                wait_for(
                    lambda: any(
                        "of use1, usw2 (heartbeat" in r.getMessage() for r in caplog.records
                    ),
                    RESETUP_SECONDS,
                    "the new session",
                )
            assert watch.failed == 0, "usw2 stopped hearing use1 during the new set-up"
            # a new heartbeat applies without a new set-up
            two["spec"]["heartbeatSeconds"] = 2  # type: ignore[index]
            plane.kubectl("apply", "-f", "-", input=json.dumps(two))
            wait_for(
                lambda: any("heartbeat 2s" in r.getMessage() for r in caplog.records),
                HEAR_SECONDS,
                "the new heartbeat",
            )
        messages = [r.getMessage() for r in caplog.records]
        assert sum("set up anew" in m for m in messages) == 1
        assert all(r.exc_info is None for r in caplog.records if r.name.endswith("peers"))
    finally:
        plane.kubectl("apply", "-f", "-", input=json.dumps(_peers_object()))


def test_lifeboat_run_refuses_a_peer_name_that_is_not_listed(
    clusters: Clusters, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clusters.heal()
    kubeconfig = tmp_path / "use1.kubeconfig"
    kubeconfig.write_text(clusters.kubeconfigs["use1"], encoding="utf-8")
    code = main(
        [
            "run",
            f"--kubeconfig={kubeconfig}",
            f"--controller-namespace={NAMESPACE}",
            "--metrics-address=",
            "--health-endpoint=",
            "--peer-name=apse2",
        ]
    )
    assert code == EXIT_FAILED
    error = capsys.readouterr().err
    assert "this peer (apse2) is not listed in LifeboatPeers/lifeboat" in error
    assert "Traceback" not in error
