"""Seeded randomized runs of Lifeboat's peers, whole (issue 18, item 6 d).

Three peers, each the product's own parts wired as ``lifeboat run --peer-name`` wires them —
a :class:`~controller.operator.quorum.QuorumElector`, the peer link
(:class:`~controller.operator.peers.Peers`), a
:class:`~controller.operator.peer_status.PeerStatusWriter` and the per-app
:class:`~controller.operator.app.AppWorker` running its own loop — over three in-memory peer
clusters (each a Lease, the app's status with the epoch fence, the ``LifeboatPeers``
publication), one DNS name fenced by its owner record as the conditional change fences it
(:class:`~tests.fixtures.worker.FakeTraffic`), and probes answered from the run's own world:
the peer ``p0`` and its cluster sit in the primary's region, ``p1`` beside the standby, ``p2``
in a third region. Time is scaled down: a 1 s Lease, a 0.5 s heartbeat, 1 s probe rounds.

Each run applies a random sequence of faults: a peer SIGKILLed (its calls cut first, so it
releases nothing) and started again with a new identity; a peer cluster down (refused) or
paused (calls hang until their deadline); a peer cut off from one cluster; a partition
between two peers (each still reaches its own cluster); a site's zones down for everyone
(an outage) or for one peer only (a broken path); one zone down; everything healed. It
ends with the headline: everything healed, then the active site's region lost whole (its
zones, the peer cluster in it and its peer). It checks after every change of DNS:

* at most one peer leads at any moment (checked every 50 ms as well);
* at most one site carries traffic weight;
* the epoch in DNS never goes down;
* every epoch names one site (two decisions never share an epoch);
* no move of traffic away from a site unless, within ``GRACE`` before it, a majority of
  the peers failed to reach enough of its zones for a failover (no failover while a
  quorum sees the active site healthy);

and, after the region loss, that traffic reaches the surviving site within ``RESCUE``.

``--peers 5`` runs five peers (p3 and p4 in regions of their own): a majority is then three,
and one region's loss leaves four.

What is under test is the peers' decisions and fencing; the API servers, DNS and probes
are in memory (``tests/integration/test_peers_e2e.py`` drives the real ones).
``python -m tests.peers_chaos --runs 200 [--seed S]`` prints the figures; a failing run
prints its seed and timeline, and ``--seed S --runs 1`` replays it (timing can differ).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import random
import signal
import sys
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.api.models import LifeboatPeersSpec, ResilientAppSpec
from controller.core.health import ProbeOutcome, ProbeResult, ZoneKey
from controller.operator.app import AppContext, AppWorker
from controller.operator.kube import ObjectRef, StaleEpoch
from controller.operator.leader import LeaseTimings
from controller.operator.peer_status import PeerStatusWriter
from controller.operator.peers import Conflict, Peers
from controller.operator.quorum import QuorumElector
from controller.providers.protocols import DnsReading, TrafficChange, TrafficPlan
from tests.factories import app_spec
from tests.fixtures.worker import REF, FakeKube, FakeProviders, FakeTraffic, merge_patch
from tests.quorum_chaos import Path, Store

TIMINGS = LeaseTimings.for_lease(1.0)
HEARTBEAT = 0.5
CALL_SECONDS = 0.5
"""Deadline of the status writes and reads (the peer link derives its own)."""
NAMES = ("p0", "p1", "p2")
"""The default three peers; ``--peers 5`` adds p3 and p4, each in a region of its own."""
SITE_OF = {"p0": "use1", "p1": "usw2"}
"""The peers beside a site (the others sit in regions of their own)."""


def names_of(count: int) -> tuple[str, ...]:
    if count < 3 or count % 2 == 0:
        raise ValueError("peers: an odd number, at least 3")
    return tuple(f"p{i}" for i in range(count))


"""Where each peer's cluster is: the primary's region, the standby's, a third one."""
SPEC = app_spec(
    failover={"minDwellSeconds": 2, "maxFailoversPerHour": 100},
)
ZONES = {
    site["name"]: tuple(endpoint["zone"] for endpoint in site["endpoints"])
    for site in SPEC["sites"]
}
GRACE = 6.0
"""How long after a majority of the peers last failed to reach a site a move away from it
may still land: a failover decided on that evidence (the peers' views a heartbeat and a
read late, the status written to a majority first) lands within a few seconds of it."""
RESCUE = 30.0
"""How long after the region loss traffic must be on the surviving site."""
STEP = (1.5, 5.0)
"""Seconds between two faults."""


# ---------------------------------------------------------------------- the peer clusters


class Cluster:
    """One peer cluster: its ``lifeboat`` Lease (``store``, whose ``down`` and ``paused``
    apply to every call into the cluster), the app's status, the LifeboatPeers object."""

    def __init__(self, name: str, peers_spec: Mapping[str, Any]) -> None:
        self.name = name
        self.store = Store()
        self.status: dict[str, Any] = {}
        self.publication: dict[str, Any] = {
            "metadata": {"name": "lifeboat", "uid": f"uid-{name}", "resourceVersion": "1"},
            "spec": copy.deepcopy(dict(peers_spec)),
        }


class Way(Path):
    """One peer's way into one cluster: the Lease calls (threads, as the elector makes
    them) and the status and publication calls (async, as the workers and the link make
    them), all refused while cut or down and hung while paused."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster.store)
        self.cluster = cluster

    async def _reach(self, seconds: float) -> None:
        await asyncio.sleep(0)
        if self.cut or self.store.down:
            raise ConnectionRefusedError("connection refused")
        if self.store.paused:
            await asyncio.sleep(seconds * 2)  # the caller's deadline ends it first
            raise TimeoutError("read timed out")

    # ------------------------------------------------ the app's status (StatusClient)

    async def patch_status(
        self, ref: ObjectRef, status: dict[str, Any], *, epoch: int | None = None
    ) -> None:
        await self._reach(CALL_SECONDS)
        stored = self.cluster.status.get("epoch") or 0
        if epoch is not None and stored > epoch:
            raise StaleEpoch(ref, stored, epoch)
        self.cluster.status = merge_patch(self.cluster.status, copy.deepcopy(status))

    async def read(self, ref: ObjectRef) -> dict[str, Any]:
        await self._reach(CALL_SECONDS)
        return {"status": copy.deepcopy(self.cluster.status)}


class Publication:
    """LifeboatPeers/lifeboat of one cluster as one peer reaches it (PeersObject)."""

    def __init__(self, way: Way) -> None:
        self.way = way

    async def get(self, seconds: float) -> Mapping[str, Any]:
        await self.way._reach(seconds)
        return copy.deepcopy(self.way.cluster.publication)

    async def patch_status(self, body: Mapping[str, Any], seconds: float) -> Mapping[str, Any]:
        await self.way._reach(seconds)
        found = self.way.cluster.publication
        meta = found["metadata"]
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version is not None and version != meta["resourceVersion"]:
            raise Conflict("changed")
        found["status"] = merge_patch(found.get("status") or {}, copy.deepcopy(body["status"]))
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return copy.deepcopy(found)


# ---------------------------------------------------------------------- DNS and probes


@dataclass(frozen=True)
class Change:
    at: float
    epoch: int
    site: str
    weighted: tuple[str, ...]
    by: str


class Dns(FakeTraffic):
    """The app's DNS name, shared by every peer; records every change it carried out."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[Change] = []

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        return await self.apply_as(plan, "")

    async def apply_as(self, plan: TrafficPlan, peer: str) -> TrafficChange:
        change = await super().apply(plan)
        if plan.owner is not None:
            weighted = tuple(r.site for r in plan.records if r.weight > 0)
            self.changes.append(
                Change(time.monotonic(), plan.owner.epoch, plan.owner.active_site, weighted, peer)
            )
        return change

    @property
    def site(self) -> str | None:
        return self.owner.active_site if self.owner is not None else None


class PeerDns:
    """The shared name as one peer changes it (so that each change names its peer)."""

    def __init__(self, shared: Dns, peer: str) -> None:
        self.shared = shared
        self.peer = peer

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        return await self.shared.apply_as(plan, self.peer)

    async def read(self, plan: TrafficPlan) -> DnsReading:
        return await self.shared.read(plan)

    async def weights(self, plan: TrafficPlan) -> dict[str, int]:
        return await self.shared.weights(plan)


class Prober:
    """Probes from one peer: a zone fails when it is down for everyone or cut off from
    this peer."""

    def __init__(self, run: Run, peer: str) -> None:
        self.run = run
        self.peer = peer

    async def probe_app(
        self, spec: ResilientAppSpec, namespace: str = "", app: Hashable = None
    ) -> tuple[ProbeResult, ...]:
        await asyncio.sleep(0.01)
        now = time.time()
        return tuple(
            ProbeResult(
                ZoneKey(site.name, e.zone),
                ProbeOutcome.OK
                if self.run.reaches(self.peer, site.name, e.zone)
                else ProbeOutcome.FAIL,
                now,
                0.001,
            )
            for site in spec.sites
            for e in site.endpoints
        )

    def problems(self, namespace: str) -> list[str]:
        return []

    def forget(self, app: Hashable) -> None:
        pass


# ---------------------------------------------------------------------- the peers


@dataclass
class Peer:
    name: str
    ways: dict[str, Way]
    lives: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    elector: QuorumElector | None = None

    @property
    def alive(self) -> bool:
        return bool(self.tasks)


@dataclass
class Outcome:
    seed: int
    violations: list[str]
    timeline: list[str]
    changes: int
    moves: int
    rescue: float | None


class Run:
    def __init__(self, seed: int, steps: int, names: tuple[str, ...] = NAMES) -> None:
        self.seed = seed
        self.steps = steps
        self.names = names
        self.rng = random.Random(seed)
        peers_spec = {
            "heartbeatSeconds": HEARTBEAT,
            "peers": [
                {"name": n, "kubeconfigSecretRef": {"name": f"peer-{n}", "key": "kubeconfig"}}
                for n in self.names
            ],
        }
        self.peers_spec = LifeboatPeersSpec.model_validate(peers_spec)
        self.clusters = {n: Cluster(n, peers_spec) for n in self.names}
        self.peers = {
            n: Peer(n, {c: Way(self.clusters[c]) for c in self.names}) for n in self.names
        }
        self.dns = Dns()
        self.down: set[str] = set()
        """Sites and ``site/zone``s down for everyone."""
        self.cuts: dict[str, set[str]] = {n: set() for n in self.names}
        """Per peer: sites and ``site/zone``s it cannot reach."""
        self.started = time.monotonic()
        self.timeline: list[str] = []
        self.violations: list[str] = []
        self.evidence: dict[str, float | None] = dict.fromkeys(ZONES)
        """Per site: when a majority of the peers last saw it failing (None: never)."""
        self.checked = 0

    def say(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.started:7.2f}s {what}")

    def violation(self, what: str) -> None:
        if what not in self.violations:
            self.violations.append(what)
            self.say(f"VIOLATION {what}")

    # ------------------------------------------------------------------ the world

    def reaches(self, peer: str, site: str, zone: str) -> bool:
        blocked = self.down | self.cuts[peer]
        return site not in blocked and f"{site}/{zone}" not in blocked

    def seen_failing(self, site: str) -> bool:
        """A majority of all peers are alive and each fails to reach enough zones of
        ``site`` for a failover (two, or all of a smaller site): the evidence a move away
        from it needs."""
        needed = min(2, len(ZONES[site]))
        failing = [
            p
            for p in self.peers.values()
            if p.alive and sum(not self.reaches(p.name, site, z) for z in ZONES[site]) >= needed
        ]
        return len(failing) >= len(self.names) // 2 + 1

    # ------------------------------------------------------------------ peers

    def start(self, peer: Peer) -> None:
        peer.lives += 1
        peer.stop = asyncio.Event()
        me = peer.name
        elector = QuorumElector(
            [(c, peer.ways[c]) for c in self.names],  # type: ignore[misc]
            "lifeboat-system",
            me,
            identity=f"{me}-{peer.lives}",
            timings=TIMINGS,
            rng=random.Random(self.rng.random()),
        )
        link = Peers(
            me,
            self.peers_spec,
            Publication(peer.ways[me]),
            {c: Publication(peer.ways[c]) for c in self.names if c != me},
        )
        link.follow(elector)
        order = [me] + [c for c in self.names if c != me]
        statuses = PeerStatusWriter([(c, peer.ways[c]) for c in order], seconds=CALL_SECONDS)
        providers = FakeProviders(PeerDns(self.dns, me))  # type: ignore[arg-type]
        context = AppContext(
            kube=FakeKube(check=False),
            providers=providers,
            prober=Prober(self, me),
            leadership=elector,
            peers=link,
            status_store=statuses,
        )
        worker = AppWorker(REF, context)
        body: dict[str, Any] = {"metadata": {"generation": 1}, "spec": SPEC, "status": {}}
        stop = peer.stop
        peer.elector = elector
        peer.tasks = [
            asyncio.create_task(elector.run(stop)),
            asyncio.create_task(link.run(stop)),
            asyncio.create_task(worker.run(body, stop.is_set)),
            asyncio.create_task(self._watch_own(peer, body, stop)),
        ]

    async def _watch_own(self, peer: Peer, body: dict[str, Any], stop: asyncio.Event) -> None:
        """What kopf's watch does: the app's body follows the own cluster's copy."""
        own = peer.ways[peer.name]
        while not stop.is_set():
            if not (own.cut or own.store.down or own.store.paused):
                body["status"] = copy.deepcopy(own.cluster.status)
            await asyncio.sleep(0.2)

    async def kill(self, peer: Peer) -> None:
        """SIGKILL: every call of the peer's cut first, so that it releases nothing."""
        if not peer.alive:
            return
        cut = {c: w.cut for c, w in peer.ways.items()}
        for way in peer.ways.values():
            way.cut = True
        # Its loops are told to stop as well as cancelled: on Python 3.11 asyncio.wait_for
        # can swallow a cancellation that lands as its inner call completes (fixed in
        # 3.12), and a loop that swallowed one would run on.
        peer.stop.set()
        for task in peer.tasks:
            task.cancel()
        await asyncio.wait(peer.tasks, timeout=10.0)
        peer.tasks, peer.elector = [], None
        for c, way in peer.ways.items():
            way.cut = cut[c]

    # ------------------------------------------------------------------ checks

    async def watch(self, done: asyncio.Event) -> None:
        while not done.is_set():
            self.check()
            await asyncio.sleep(0.05)
        self.check()

    def check(self) -> None:
        now = time.monotonic()
        leaders = [p.name for p in self.peers.values() if p.elector and p.elector.leading]
        if len(leaders) > 1:
            self.violation(f"two peers lead at once: {', '.join(leaders)}")
        for site in self.evidence:
            if self.seen_failing(site):
                self.evidence[site] = now
        changes = self.dns.changes
        for index in range(self.checked, len(changes)):
            change = changes[index]
            self.say(f"DNS epoch {change.epoch} -> {change.site} (by {change.by})")
            if len(change.weighted) > 1:
                self.violation(f"epoch {change.epoch}: traffic weight on {change.weighted}")
            earlier = changes[:index]
            if earlier and change.epoch < max(c.epoch for c in earlier):
                self.violation(f"DNS epoch went down to {change.epoch}")
            for other in earlier:
                if other.epoch == change.epoch and other.site != change.site:
                    self.violation(
                        f"epoch {change.epoch} named two sites: {other.site}, {change.site}"
                    )
            before = earlier[-1].site if earlier else None
            if before is not None and before != change.site:
                seen = self.evidence[before]
                if seen is None or change.at - seen > GRACE:
                    self.violation(
                        f"moved off {before} (epoch {change.epoch}) with no majority of the "
                        "peers seeing it fail "
                        + ("ever" if seen is None else f"for {change.at - seen:.1f}s")
                    )
        self.checked = len(changes)

    # ------------------------------------------------------------------ faults

    async def fault(self) -> None:
        rng = self.rng
        kind = rng.choice(
            (
                "kill", "start", "down", "pause", "up", "cut", "partition",
                "outage", "outage", "blind", "zone", "heal", "heal",
            )
        )  # fmt: skip
        # Half the time the fault aims where it hurts: the leader, the active site.
        leaders = [p for p in self.peers.values() if p.elector and p.elector.leading]
        aimed = rng.random() < 0.5
        peer = leaders[0] if aimed and leaders else self.peers[rng.choice(self.names)]
        cluster = rng.choice(self.names)
        active = self.dns.site
        site = active if aimed and active else rng.choice(sorted(ZONES))
        if kind == "kill" and peer.alive:
            self.say(f"kill {peer.name}")
            await self.kill(peer)
        elif kind == "start" and not peer.alive:
            self.say(f"start {peer.name}")
            self.start(peer)
        elif kind == "down":
            self.say(f"cluster {cluster} down")
            self.clusters[cluster].store.down = True
        elif kind == "pause":
            self.say(f"cluster {cluster} paused")
            self.clusters[cluster].store.paused = True
        elif kind == "up":
            self.say(f"cluster {cluster} up")
            self.clusters[cluster].store.down = self.clusters[cluster].store.paused = False
        elif kind == "cut":
            self.say(f"{peer.name} cut off from cluster {cluster}")
            peer.ways[cluster].cut = True
        elif kind == "partition" and cluster != peer.name:
            self.say(f"{peer.name} and {cluster} partitioned")
            peer.ways[cluster].cut = self.peers[cluster].ways[peer.name].cut = True
        elif kind == "outage":
            self.say(f"site {site} down")
            self.down.add(site)
        elif kind == "blind":
            self.say(f"{peer.name} cut off from site {site}")
            self.cuts[peer.name].add(site)
        elif kind == "zone":
            zone = rng.choice(ZONES[site])
            self.say(f"zone {site}/{zone} down")
            self.down.add(f"{site}/{zone}")
        elif kind == "heal":
            self.say("heal all")
            self.heal()

    def heal(self) -> None:
        self.down.clear()
        for cuts in self.cuts.values():
            cuts.clear()
        for cluster in self.clusters.values():
            cluster.store.down = cluster.store.paused = False
        for peer in self.peers.values():
            for way in peer.ways.values():
                way.cut = False
            if not peer.alive:
                self.start(peer)

    async def run(self) -> Outcome:
        done = asyncio.Event()
        watcher = asyncio.create_task(self.watch(done))
        rescue: float | None = None
        try:
            for name in self.rng.sample(self.names, len(self.names)):
                self.start(self.peers[name])
                await asyncio.sleep(self.rng.uniform(0, TIMINGS.lease_seconds))
            await self._until(lambda: self.dns.site == "use1", 20.0, "the app serving on use1")
            for _ in range(self.steps):
                await self.fault()
                await asyncio.sleep(self.rng.uniform(*STEP))
            self.say("heal all")
            self.heal()
            await asyncio.sleep(GRACE)
            active = self.dns.site or "use1"
            survivor = next(s for s in sorted(ZONES) if s != active)
            victim = next(n for n, s in SITE_OF.items() if s == active)
            self.say(f"region of {active} lost: its zones, cluster {victim} and peer {victim}")
            lost = time.monotonic()
            self.down.add(active)
            self.clusters[victim].store.down = True
            await self.kill(self.peers[victim])
            if await self._until(
                lambda: self.dns.site == survivor, RESCUE, f"traffic on {survivor}"
            ):
                rescue = time.monotonic() - lost
                self.say(f"traffic on {survivor} {rescue:.1f}s after the loss")
            await asyncio.sleep(2.0)  # a second move, if one were coming, would come now
        finally:
            done.set()
            await watcher
            for peer in self.peers.values():
                peer.stop.set()
            await asyncio.gather(
                *(t for p in self.peers.values() for t in p.tasks), return_exceptions=True
            )
        moves = sum(
            1
            for a, b in zip(self.dns.changes, self.dns.changes[1:], strict=False)
            if a.site != b.site
        )
        return Outcome(
            self.seed, self.violations, self.timeline, len(self.dns.changes), moves, rescue
        )

    async def _until(self, check: Any, seconds: float, what: str) -> bool:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                self.violation(f"not within {seconds:g}s: {what}")
                return False
            await asyncio.sleep(0.05)
        return True


LIMIT = 180.0
"""A run that takes longer than this has hung: it is a violation, and its tasks are shown."""


def tasks_now() -> list[str]:
    """Where every task of the event loop stands (innermost frame last)."""
    stacks = []
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=12)
        if frames:
            where = " > ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in frames)
            stacks.append(f"    task {task.get_name()}: {where}")
    return stacks


async def run_one(seed: int, steps: int = 8, peers: int = len(NAMES)) -> Outcome:
    run = Run(seed, steps, names_of(peers))
    task = asyncio.create_task(run.run())
    done, _ = await asyncio.wait({task}, timeout=LIMIT)
    if task in done:
        return task.result()
    run.violation(f"the run did not end within {LIMIT:g}s")
    run.timeline += tasks_now()
    task.cancel()  # not awaited: a hung run must not hang the others
    return Outcome(seed, run.violations, run.timeline, len(run.dns.changes), 0, None)


async def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.peers_chaos")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="the first seed (default: random)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=6, help="runs at once")
    parser.add_argument("--peers", type=int, default=len(NAMES), help="3 (default) or 5, ...")
    args = parser.parse_args(argv)
    first = args.seed if args.seed is not None else random.randrange(2**31)
    logging.basicConfig(level=logging.CRITICAL)
    # kill -USR1 <pid> shows where every task stands (a run that seems stuck).
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGUSR1, lambda: print("\n".join(tasks_now()), file=sys.stderr, flush=True)
    )
    started = time.monotonic()
    outcomes: list[Outcome] = []
    seeds = list(range(first, first + args.runs))
    for at in range(0, len(seeds), args.parallel):
        batch = seeds[at : at + args.parallel]
        done = await asyncio.gather(*(run_one(s, args.steps, args.peers) for s in batch))
        for outcome in done:  # at once: a long run that is stopped keeps what it found
            if outcome.violations:
                print(f"seed {outcome.seed}: {'; '.join(outcome.violations)}")
                print("\n".join(f"    {line}" for line in outcome.timeline), flush=True)
        outcomes += done
        bad = sum(1 for o in outcomes if o.violations)
        print(f"{len(outcomes)} runs done, {bad} with violations", file=sys.stderr, flush=True)
    failed = [o for o in outcomes if o.violations]
    rescues = sorted(o.rescue for o in outcomes if o.rescue is not None)
    print(
        f"peers chaos: {len(outcomes)} runs of {args.peers} peers, {args.steps} faults each "
        f"+ a region loss, seeds {first}..{first + args.runs - 1}: {len(failed)} with "
        f"violations; {sum(o.changes for o in outcomes)} DNS changes, "
        f"{sum(o.moves for o in outcomes)} site moves; region loss -> traffic on the survivor "
        + (
            f"{rescues[0]:.1f}-{rescues[-1]:.1f}s (median {rescues[len(rescues) // 2]:.1f}s)"
            if rescues
            else "never"
        )
        + f"; {time.monotonic() - started:.0f}s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
