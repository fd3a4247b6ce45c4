"""``lifeboat-sandbox demo --peers``: Lifeboat survives the loss of its own region.

Starts a :class:`~sandbox.peers.PeerWorld` — three peer clusters in us-east-1 (the app's
primary site), us-west-2 (its standby) and eu-central-1 (no site: the tie-breaker), each
running its own ``lifeboat run --peer-name`` — waits until the app is Ready, then kills
us-east-1 whole: its zones, its cloud API, and the peer cluster in it with its operator. It
narrates what the surviving peers saw and did, from the Events and status in their clusters
and from Route 53 in moto, the way a user would watch it, then cleans up.

``lifeboat-sandbox up --peers`` starts the same world and keeps it running.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from sandbox.assets import AssetsError, ensure_assets
from sandbox.demo import APP, NAMESPACE, REPORTER, Narrator, start_alerting
from sandbox.peers import PeerCluster, PeerWorld
from sandbox.world import HOSTED_ZONE

READY_TIMEOUT = 90.0
FAILOVER_TIMEOUT = 120.0
PRIMARY_PEER = "use1"


class PeerWatcher(threading.Thread):
    """Prints new Events in every living peer cluster, and every change of the DNS weights."""

    def __init__(self, world: PeerWorld, narrator: Narrator) -> None:
        super().__init__(name="demo-peer-watcher", daemon=True)
        self.world = world
        self.narrator = narrator
        self.stop_flag = threading.Event()
        self.seen: set[str] = set()
        self.weights: dict[str, int] = {}
        self.exited: set[str] = set()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_flag.wait(0.5):
            self.poll()

    def poll(self) -> None:
        with self.lock:
            for peer in self.world.living():
                self._events(peer)
                self._operator(peer)
            weights = self.world.sandbox.dns_weights()
            if weights and weights != self.weights:
                self.weights = weights
                shown = ", ".join(f"{site}={weight}" for site, weight in sorted(weights.items()))
                self.narrator.say(f" Route 53 web.{HOSTED_ZONE} weights: {shown}")

    def _events(self, peer: PeerCluster) -> None:
        items: list[Any] = sorted(
            peer.events(NAMESPACE),
            key=lambda e: (e.first_timestamp or e.event_time or 0, e.metadata.name),
        )
        for event in items:
            if event.metadata.uid in self.seen or event.reporting_component != REPORTER:
                continue
            self.seen.add(event.metadata.uid)
            marker = "!" if event.type == "Warning" else " "
            self.narrator.say(
                f"{marker}[in {peer.name}] {event.involved_object.kind}/"
                f"{event.involved_object.name} {event.reason}: {event.message}"
            )

    def _operator(self, peer: PeerCluster) -> None:
        code = peer.operator.exit_code()
        if code is not None and peer.name not in self.exited:
            self.exited.add(peer.name)
            self.narrator.say(f"!peer {peer.name}'s lifeboat run exited with code {code}:")
            self.narrator.block(peer.operator.tail(15))

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(5)
        self.poll()


def _status(peer: PeerCluster) -> dict[str, Any]:
    app = peer.app(NAMESPACE, APP) or {}
    status = app.get("status")
    return status if isinstance(status, dict) else {}


def _ready(peer: PeerCluster) -> bool:
    status = _status(peer)
    ready = [c for c in status.get("conditions", []) if c.get("type") == "Ready"]
    return bool(ready) and ready[0]["status"] == "True" and status.get("healthyZones") == "6/6"


def _failed_over(peer: PeerCluster, primary: str) -> bool:
    status = _status(peer)
    traffic = status.get("traffic") or {}
    return status.get("activeSite") not in (None, primary) and traffic.get("epoch") == status.get(
        "epoch"
    )


def _leaders(world: PeerWorld) -> str:
    """Which peer acts now, as the operators' own metrics say (``lifeboat_leader``)."""
    leaders = world.leaders()
    return f"peer {', '.join(leaders)} leads" if leaders else "no peer leads"


def run_peers_demo(verbose: bool = False, out: Callable[[str], None] = print) -> int:
    """The demo; 0 when a surviving peer moved the traffic as it should."""
    if not verbose:
        # the demo's own reads of a cluster that just died are retried and then shown as
        # nothing; urllib3's retry warnings would only clutter the story
        for name in ("kopf", "controller", "aiohttp", "sandbox", "urllib3"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    narrator = Narrator(out)
    out(
        "Lifeboat peers demo: the primary region dies with the Lifeboat peer in it; "
        "watch a surviving peer move the app.\n"
    )
    try:
        assets = ensure_assets(log=lambda line: narrator.say(f"build: {line}"))
    except AssetsError as error:
        out(f"lifeboat-sandbox demo --peers: {error}")
        return 1
    narrator.say("starting three peer clusters, moto, zonal endpoints and fault proxies")
    with PeerWorld(assets) as world:
        return _story(world, narrator)


def _story(world: PeerWorld, narrator: Narrator) -> int:
    say = narrator.say
    for peer in world.peers.values():
        site = f"site {peer.layout.site}" if peer.layout.site else "no site: tie-breaker"
        say(
            f"peer {peer.name} ({peer.region}, {site}): kube-apiserver {peer.kube.server_url}, "
            f"probes from {peer.source_address}, operator pid {peer.operator.pid}"
        )
    for layout in world.sandbox.sites():
        urls = ", ".join(world.sandbox.zones.url(layout.site, z) for z in layout.zones)
        say(f"site {layout.site} ({layout.region}) zonal endpoints: {urls}")
    say("every peer cluster holds the same ResilientApp, CloudProvider and LifeboatPeers")
    watcher = PeerWatcher(world, narrator)
    watcher.start()
    try:
        return _outage(world, narrator, watcher)
    finally:
        watcher.stop()


def _outage(world: PeerWorld, narrator: Narrator, watcher: PeerWatcher) -> int:
    say = narrator.say
    survivor = next(p for p in world.peers.values() if p.name != PRIMARY_PEER)
    try:
        world.wait_for(lambda: _ready(survivor), READY_TIMEOUT, "the app to become Ready")
    except AssertionError as error:
        say(f"the app did not become Ready in {survivor.name}'s cluster:")
        narrator.block(str(error))
        return 1
    watcher.poll()
    say(f"app is Ready; leadership: {_leaders(world)}")
    say(f"$ kubectl get resilientapps -n {NAMESPACE}   (in {survivor.name}'s cluster)")
    narrator.block(survivor.kube.kubectl("get", "resilientapps", "-n", NAMESPACE).stdout)

    primary = world.peer(PRIMARY_PEER)
    say(
        f">>> OUTAGE: region {primary.region} is lost: every zone of site "
        f"{primary.layout.site}, its cloud API, and peer {primary.name}'s cluster and operator"
    )
    world.kill_region(primary.name)
    site = primary.layout.site or ""
    try:
        moved = world.wait_for(
            lambda: next((p for p in world.living() if _failed_over(p, site)), None),
            FAILOVER_TIMEOUT,
            "a surviving peer to fail the app over",
        )
    except AssertionError as error:
        say("no failover:")
        narrator.block(str(error))
        return 1
    watcher.poll()
    record = _status(moved).get("lastFailover", {})
    say(
        f"failover done: {record.get('fromSite')} -> {record.get('toSite')}, epoch "
        f"{record.get('epoch')}; detection {record.get('detectionSeconds')}s, RTO "
        f"{record.get('rtoSeconds')}s; leadership: {_leaders(world)}"
    )
    for peer in world.living():
        say(f"$ kubectl get resilientapps -n {NAMESPACE} -o wide   (in {peer.name}'s cluster)")
        narrator.block(
            peer.kube.kubectl("get", "resilientapps", "-n", NAMESPACE, "-o", "wide").stdout
        )
    say("cleaning up")
    return 0


def run_peers_sandbox() -> int:
    """``lifeboat-sandbox up --peers``: the peer world, until Ctrl-C."""
    try:
        assets = ensure_assets(log=lambda line: print(f"build: {line}", file=sys.stderr))
    except AssetsError as error:
        print(f"lifeboat-sandbox up --peers: {error}", file=sys.stderr)
        return 1
    with PeerWorld(assets) as world, ExitStack() as stack:
        for peer in world.peers.values():
            site = f"site {peer.layout.site}" if peer.layout.site else "no site"
            print(f"peer {peer.name} ({peer.region}, {site}):")
            print(f"  kube-apiserver:   {peer.kube.server_url}")
            print(f"  admin kubeconfig: {peer.kube.kubeconfig_path}")
            print(f"  probes from:      {peer.source_address}")
            print(f"  operator:         pid {peer.operator.pid}, log {peer.operator.log_path}")
            print(f"  metrics:          {peer.operator.metrics_url}")
        print(f"moto: {world.sandbox.moto.url}")
        targets = [f"127.0.0.1:{peer.operator.metrics_port}" for peer in world.peers.values()]
        if start_alerting(stack, targets) is not None:
            print("alerts notified by Alertmanager are printed here as they come.")
        print("Ctrl-C stops the world.")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopping")
    return 0
