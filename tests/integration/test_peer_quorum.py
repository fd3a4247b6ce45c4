"""Peers on three real kube-apiserver + etcd pairs: set-up from LifeboatPeers and kubeconfig
Secrets, leadership held on a majority of the clusters' Leases, and status on a majority.

Each cluster sits behind a TCP relay that every client goes through (its own peer's
included), so a test can take one cluster away (``refuse``: down) or silence it
(``blackhole``: a partition where every call hangs until its deadline).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes.client
import pytest
import yaml

from controller.operator import peer_setup
from controller.operator.kube import KubeClient, ObjectRef, StaleEpoch
from controller.operator.leader import LeaseTimings
from controller.operator.peer_status import NoMajority, PeerStatusWriter
from controller.operator.quorum import QuorumElector
from controller.providers.kubernetes.capacity import client_from_kubeconfig
from sandbox.assets import Assets
from sandbox.kube import KubeControlPlane
from sandbox.procs import free_loopback_port
from sandbox.tcp_relay import TcpRelay
from sandbox.world import manifests_dir
from tests.factories import app_spec
from tests.fixtures.process import OperatorProcess
from tests.integration.test_leader_outages import metric

pytestmark = pytest.mark.integration

NAMES = ("use1", "usw2", "euc1")
NAMESPACE = "lifeboat-system"
APP_NAMESPACE = "shop"


@dataclass
class PeerWorld:
    """Three peer clusters. Peer P reaches cluster C through its own relay (P, C), so a
    test can cut one peer off from one cluster, or a whole cluster from everyone. Each
    cluster holds LifeboatPeers/lifeboat and the Secrets of the other peers' kubeconfigs
    (through the relays of the peer whose cluster it is)."""

    planes: dict[str, KubeControlPlane]
    relays: dict[tuple[str, str], TcpRelay]
    kubeconfigs: dict[tuple[str, str], str]
    """Per (peer, cluster): an admin kubeconfig (text) reaching the cluster as that peer."""

    def client(self, peer: str, cluster: str | None = None) -> kubernetes.client.ApiClient:
        """A client of ``cluster`` (default: the peer's own) as ``peer`` reaches it."""
        return client_from_kubeconfig(self.kubeconfigs[(peer, cluster or peer)])

    def own_kubeconfig(self, peer: str, directory: Path) -> Path:
        path = directory / f"{peer}.kubeconfig"
        path.write_text(self.kubeconfigs[(peer, peer)], encoding="utf-8")
        return path

    def cut(self, cluster: str, *, peer: str | None = None, hang: bool = False) -> None:
        """Take ``cluster`` away from ``peer`` (default: from every peer)."""
        for (p, c), relay in self.relays.items():
            if c == cluster and peer in (None, p):
                relay.blackhole() if hang else relay.refuse()

    def heal(self) -> None:
        for relay in self.relays.values():
            relay.serve()


def _relayed_kubeconfig(plane: KubeControlPlane, port: int) -> str:
    document = yaml.safe_load(plane.kubeconfig_path.read_text(encoding="utf-8"))
    for cluster in document["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    return yaml.safe_dump(document)


def _peers_object(extra: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "apiVersion": "lifeboat.dev/v1alpha1",
        "kind": "LifeboatPeers",
        "metadata": {"name": "lifeboat"},
        "spec": {
            "heartbeatSeconds": 1,
            "peers": [
                {"name": name, "kubeconfigSecretRef": {"name": f"lifeboat-peer-{name}"}}
                for name in NAMES
            ],
            **(extra or {}),
        },
    }


@pytest.fixture(scope="module")
def peer_world(kube_assets: Assets) -> Iterator[PeerWorld]:
    planes: dict[str, KubeControlPlane] = {}
    relays: dict[tuple[str, str], TcpRelay] = {}
    try:
        for name in NAMES:
            plane = KubeControlPlane(kube_assets)
            plane.start()
            planes[name] = plane
            host, _, port = plane.server_url.removeprefix("https://").rpartition(":")
            for peer in NAMES:
                relays[(peer, name)] = TcpRelay(host, int(port))
                relays[(peer, name)].start()
        kubeconfigs = {
            (peer, cluster): _relayed_kubeconfig(planes[cluster], relays[(peer, cluster)].port)
            for peer in NAMES
            for cluster in NAMES
        }
        for name, plane in planes.items():
            plane.install_crds([manifests_dir() / "crds"])
            plane.kubectl("create", "namespace", NAMESPACE)
            plane.kubectl("create", "namespace", APP_NAMESPACE)
            plane.kubectl("apply", "-f", "-", input=json.dumps(_peers_object()))
            for other in NAMES:
                if other == name:
                    continue
                text = kubeconfigs[(name, other)]
                secret = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"lifeboat-peer-{other}", "namespace": NAMESPACE},
                    "data": {"kubeconfig": base64.b64encode(text.encode()).decode()},
                }
                plane.kubectl("apply", "-f", "-", input=json.dumps(secret))
        yield PeerWorld(planes, relays, kubeconfigs)
    finally:
        for relay in relays.values():
            relay.stop()
        for plane in planes.values():
            plane.stop()


@pytest.fixture
def world(peer_world: PeerWorld) -> Iterator[PeerWorld]:
    peer_world.heal()
    for plane in peer_world.planes.values():  # no Lease left over from an earlier test
        plane.kubectl("-n", NAMESPACE, "delete", "lease", "lifeboat", "--ignore-not-found")
    yield peer_world
    peer_world.heal()


def test_setup_builds_a_client_for_every_other_peer_from_its_secret(world: PeerWorld) -> None:
    own = world.client("usw2")
    clusters = peer_setup.build(own, "usw2", NAMESPACE)
    try:
        assert [c.name for c in clusters.clusters] == ["usw2", "use1", "euc1"]
        assert clusters.own.own and clusters.majority == 2
        for cluster in clusters.others:
            # each client reaches that peer's own cluster: its Secrets name the others
            names = {
                (s.metadata.name if s.metadata else None)
                for s in kubernetes.client.CoreV1Api(cluster.api)
                .list_namespaced_secret(NAMESPACE)
                .items
            }
            assert f"lifeboat-peer-{cluster.name}" not in names
            assert "lifeboat-peer-usw2" in names
    finally:
        clusters.close()
        own.close()  # type: ignore[no-untyped-call]


def test_setup_refuses_a_peer_that_is_not_listed_or_a_missing_secret(world: PeerWorld) -> None:
    own = world.client("euc1")
    try:
        with pytest.raises(peer_setup.PeerSetupError, match="not listed"):
            peer_setup.build(own, "apse2", NAMESPACE)
        with pytest.raises(peer_setup.PeerSetupError, match="not found"):
            peer_setup.build(own, "euc1", "default")
        world.planes["euc1"].kubectl(
            "-n", NAMESPACE, "create", "secret", "generic", "lifeboat-peer-bad",
            "--from-literal=kubeconfig=not: [a kubeconfig",
        )  # fmt: skip
        try:
            world.planes["euc1"].kubectl(
                "patch", "lifeboatpeers", "lifeboat", "--type=json", "-p",
                '[{"op":"replace","path":"/spec/peers/0/kubeconfigSecretRef/name",'
                '"value":"lifeboat-peer-bad"}]',
            )  # fmt: skip
            with pytest.raises(peer_setup.PeerSetupError) as raised:
                peer_setup.build(own, "euc1", NAMESPACE)
            assert "unusable kubeconfig" in str(raised.value)
            assert "a kubeconfig" not in str(raised.value)  # never quoted
        finally:
            world.planes["euc1"].kubectl("apply", "-f", "-", input=json.dumps(_peers_object()))
    finally:
        own.close()  # type: ignore[no-untyped-call]


def test_setup_without_a_peers_object_says_how_to_create_it(world: PeerWorld) -> None:
    own = world.client("use1")
    world.planes["use1"].kubectl("delete", "lifeboatpeers", "lifeboat")
    try:
        with pytest.raises(peer_setup.PeerSetupError, match="manifests/examples/peers"):
            peer_setup.build(own, "use1", NAMESPACE)
    finally:
        world.planes["use1"].kubectl("apply", "-f", "-", input=json.dumps(_peers_object()))
        own.close()  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------- leadership

TIMINGS = LeaseTimings.for_lease(6.0)  # 6 s Lease, 4 s renew deadline, 1.2 s period
BOUND = TIMINGS.lease_seconds + 3 * TIMINGS.retry_seconds + TIMINGS.request_seconds
"""How long a killed leader can keep the lowest-ranked survivor of three waiting (ADR 0010):
the Lease, a period to see the last renewal, one of rank deferral, one between attempts,
and the request that takes the Lease."""


def electors(world: PeerWorld) -> dict[str, QuorumElector]:
    """One elector per peer, each reaching the three clusters through its own relays."""
    return {
        peer: QuorumElector(
            [
                (cluster, kubernetes.client.CoordinationV1Api(world.client(peer, cluster)))
                for cluster in NAMES
            ],
            NAMESPACE,
            peer,
            identity=f"peer-{peer}",
            timings=TIMINGS,
        )
        for peer in NAMES
    }


class Watch:
    """Samples who leads every 20 ms: the longest overlap of two leaders, and when each
    peer's leadership started and ended."""

    def __init__(self, peers: dict[str, QuorumElector]) -> None:
        self.peers = peers
        self.overlaps = 0
        self.timeline: list[tuple[float, tuple[str, ...]]] = []
        self._task: asyncio.Task[None] | None = None

    def leaders(self) -> tuple[str, ...]:
        return tuple(name for name, elector in self.peers.items() if elector.leading)

    async def _run(self) -> None:
        while True:
            leaders = self.leaders()
            self.overlaps += len(leaders) > 1
            if not self.timeline or self.timeline[-1][1] != leaders:
                self.timeline.append((time.monotonic(), leaders))
            await asyncio.sleep(0.02)

    async def until(self, check: Callable[[tuple[str, ...]], bool], seconds: float) -> float:
        started = time.monotonic()
        while not check(self.leaders()):
            if time.monotonic() - started > seconds:
                raise AssertionError(f"not within {seconds}s; timeline {self.timeline}")
            await asyncio.sleep(0.02)
        return time.monotonic()

    async def __aenter__(self) -> Watch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def running(
    peers: dict[str, QuorumElector], body: Callable[[Watch], Awaitable[None]]
) -> Watch:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(e.run(stop)) for e in peers.values()]
    try:
        async with Watch(peers) as watch:
            await body(watch)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert watch.overlaps == 0, watch.timeline
    return watch


def holders(world: PeerWorld) -> dict[str, str]:
    found = {}
    for name, plane in world.planes.items():
        answer = plane.kubectl(
            "-n", NAMESPACE, "get", "lease", "lifeboat", "-o", "jsonpath={.spec.holderIdentity}",
            check=False,
        )  # fmt: skip
        found[name] = answer.stdout.strip()
    return found


async def test_one_peer_leads_on_a_majority_and_keeps_leading_with_its_own_cluster_down(
    world: PeerWorld,
) -> None:
    peers = electors(world)

    def settled(leaders: tuple[str, ...]) -> bool:
        # Leading on two Leases while a contender still holds the third (a start-up race
        # that load makes likely) is a majority that the cut below would break: it is the
        # leader holding all three that must survive losing its own cluster.
        return len(leaders) == 1 and set(peers[leaders[0]].held()) == set(NAMES)

    async def body(watch: Watch) -> None:
        await watch.until(settled, 60)
        (leader,) = watch.leaders()
        held = [c for c, h in holders(world).items() if h == f"peer-{leader}"]
        assert len(held) >= 2, holders(world)
        term = peers[leader].term
        world.cut(leader)  # the leader's own cluster goes down, for everyone
        await asyncio.sleep(2 * TIMINGS.lease_seconds)
        assert watch.leaders() == (leader,) and peers[leader].term == term
        assert set(peers[leader].held()) == set(NAMES) - {leader}

    await running(peers, body)


async def test_a_leader_cut_off_from_two_clusters_stops_before_another_peer_takes_over(
    world: PeerWorld,
) -> None:
    """The leader's paths to the two other clusters hang (a partition of the leader only):
    it must stop leading before either of those Leases can expire for the others, who then
    elect one of them. No moment with two leaders (sampled every 20 ms, and by
    construction: the deposed leader's end is fixed when the paths are cut)."""
    peers = electors(world)
    figures: dict[str, float] = {}

    async def body(watch: Watch) -> None:
        await watch.until(lambda leaders: len(leaders) == 1, 60)
        (leader,) = watch.leaders()
        for cluster in set(NAMES) - {leader}:
            world.cut(cluster, peer=leader, hang=True)
        cut = time.monotonic()
        while peers[leader].leading:
            ends = peers[leader].until()
            assert ends is not None and ends <= cut + TIMINGS.renew_deadline
            await asyncio.sleep(0.02)
        figures["stopped"] = time.monotonic() - cut
        taken = await watch.until(lambda leaders: bool(leaders) and leader not in leaders, 60)
        figures["new leader"] = taken - cut
        assert not peers[leader].leading

    await running(peers, body)
    print(f"\nleader partitioned from 2 of 3 clusters ({TIMINGS}): {figures}")


async def test_two_clusters_down_leave_no_leader(world: PeerWorld) -> None:
    peers = electors(world)

    async def body(watch: Watch) -> None:
        await watch.until(lambda leaders: len(leaders) == 1, 60)
        (leader,) = watch.leaders()
        others = sorted(set(NAMES) - {leader})
        world.cut(leader)
        world.cut(others[0], hang=True)
        cut = time.monotonic()
        await watch.until(lambda leaders: not leaders, TIMINGS.renew_deadline + 5)
        assert time.monotonic() - cut <= TIMINGS.lease_seconds  # before any Lease expires
        await asyncio.sleep(TIMINGS.lease_seconds * 2)
        assert watch.leaders() == ()  # one cluster left: no majority for anyone
        world.heal()
        await watch.until(lambda leaders: len(leaders) == 1, 60)

    await running(peers, body)


# --------------------------------------------------------------------------- status

APP = ObjectRef("ResilientApp", "resilientapps", "web", APP_NAMESPACE, "uid-web")


def status_writer(world: PeerWorld, peer: str) -> PeerStatusWriter:
    order = [peer, *(c for c in NAMES if c != peer)]
    return PeerStatusWriter([(c, KubeClient(world.client(peer, c))) for c in order], seconds=3)


def stored_epoch(world: PeerWorld, cluster: str) -> int:
    answer = world.planes[cluster].kubectl(
        "-n", APP_NAMESPACE, "get", "resilientapp", "web", "-o", "jsonpath={.status.epoch}"
    )  # fmt: skip
    return int(answer.stdout.strip() or 0)


async def test_a_deposed_leaders_status_write_is_refused_by_the_majority(
    world: PeerWorld,
) -> None:
    app = {
        "apiVersion": "lifeboat.dev/v1alpha1",
        "kind": "ResilientApp",
        "metadata": {"name": "web", "namespace": APP_NAMESPACE},
        "spec": app_spec(),
    }
    for plane in world.planes.values():
        plane.kubectl("apply", "-f", "-", input=json.dumps(app))
    old, new = status_writer(world, "use1"), status_writer(world, "usw2")
    await old.write(APP, {"epoch": 2, "activeSite": "use1"}, epoch=2)
    assert [stored_epoch(world, c) for c in NAMES] == [2, 2, 2]

    # usw2 leads now; it cannot reach use1's cluster, and writes its failover to the others
    world.cut("use1", peer="usw2")
    await new.write(APP, {"epoch": 3, "activeSite": "usw2"}, epoch=3)
    assert [stored_epoch(world, c) for c in NAMES] == [2, 3, 3]
    assert (await new.freshest(APP) or {}).get("epoch") == 3

    # the deposed leader, still at epoch 2, writes again: the majority refuses it
    with pytest.raises(StaleEpoch):
        await old.write(APP, {"epoch": 2, "activeSite": "use1", "phase": "Healthy"}, epoch=2)
    assert [stored_epoch(world, c) for c in ("usw2", "euc1")] == [3, 3]

    # with two clusters out of its reach a leader's write counts for nothing
    world.cut("euc1", peer="usw2")
    with pytest.raises(NoMajority):
        await new.write(APP, {"epoch": 4, "activeSite": "usw2"}, epoch=4)
    # a new leader rebuilding from a majority starts from epoch 3 or more, never 2
    world.heal()
    rebuilt = await status_writer(world, "euc1").freshest(APP)
    assert rebuilt is not None and rebuilt["epoch"] >= 3


# --------------------------------------------------------------------------- processes


def peer_process(world: PeerWorld, peer: str, directory: Path) -> OperatorProcess:
    """``lifeboat run --peer-name`` as a process of its own, reaching its own cluster
    through its relay (and the others through the Secrets there)."""
    metrics_port, health_port = free_loopback_port(), free_loopback_port()
    log = directory / f"{peer}.log"
    out = log.open("w+")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("lifeboat")),
            "run",
            f"--kubeconfig={world.own_kubeconfig(peer, directory)}",
            f"--controller-namespace={NAMESPACE}",
            f"--peer-name={peer}",
            f"--lease-seconds={TIMINGS.lease_seconds:g}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics_port}",
            f"--health-endpoint=http://127.0.0.1:{health_port}/healthz",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "KUBECONFIG": "/nonexistent"},
    )
    return OperatorProcess(process, metrics_port, health_port, log, out)


def leading_processes(processes: dict[str, OperatorProcess]) -> list[str]:
    return [name for name, p in processes.items() if metric(p, "lifeboat_leader") == 1.0]


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_another_peer_leads_when_the_leaders_process_ends(
    world: PeerWorld, tmp_path: Path, how: str
) -> None:
    """The leader's process is killed outright (its Leases stay until they expire) or
    stopped (it gives them up): another peer leads. The time it takes is a figure, printed
    (docs/peers.md and ADR 0010 quote it with this command)."""
    processes = {peer: peer_process(world, peer, tmp_path) for peer in NAMES}
    try:
        first = processes["use1"].wait_for(
            lambda: (leaders := leading_processes(processes)) and leaders, 90, "a leader"
        )
        assert len(first) == 1, first
        (leader,) = first
        others = {n: p for n, p in processes.items() if n != leader}
        started = time.monotonic()
        if how == "SIGKILL":
            processes[leader].kill()
        else:
            processes[leader].process.send_signal(signal.SIGTERM)  # as the kubelet does
        (successor,) = processes[next(iter(others))].wait_for(
            lambda: leading_processes(others) or None, 60, "another leader"
        )
        took = time.monotonic() - started
        assert "quorum: " in others[successor].log.read_text()
        print(
            f"\n{how} of the leader peer {leader}: {successor} leads after {took:.2f} s "
            f"(Lease {TIMINGS.lease_seconds:g} s, period {TIMINGS.retry_seconds:g} s; "
            f"bound when killed {BOUND:g} s)"
        )
    finally:
        for process in processes.values():
            process.stop()
