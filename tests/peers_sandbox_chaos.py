"""Seeded randomized runs of Lifeboat's peers on the sandbox (issue 18, item 6 d), the real
parts: three kube-apiserver + etcd pairs, three ``lifeboat run --peer-name`` processes
probing from their own loopback addresses, moto's Route 53 and Auto Scaling behind the
sandbox's fault proxies, and the app's zonal HTTP endpoints (:class:`sandbox.peers.PeerWorld`).

:mod:`tests.peers_chaos` runs the same kind of sequence hundreds of times a minute with the
product's parts over in-memory clusters, DNS and probes; this one is slow (about four
minutes a run, most of it the world starting) and checks what only the real servers can
show: real Leases and status writes on real API servers, real processes SIGKILLed, the
conditional DNS change as Route 53 (moto) carries it out.

Each run applies a random sequence of faults, each held for a few seconds and healed or
left in place for the next: a peer's operator SIGKILLed (started again later, a new
process); a peer cluster's kube-apiserver paused (SIGSTOP: connections accepted, nothing
answers); two peers partitioned (their relays refuse, or hold every connection: timeouts);
a peer cut off from every zone of a site (its probes reset or time out; the others still
reach them); one zone down for everyone; every zone of a site down for everyone (an outage:
a failover is then right). Half of the faults aim at the leader or the active site. It ends
with the headline: everything healed and the app settled, then the active site's region lost
whole (its zones, cloud API, peer cluster and operator: :meth:`PeerWorld.kill_region`).

A thread samples Route 53 (straight from moto, every ``SAMPLE`` seconds: the weighted
record sets and the owner record of the app's name, from one listing) and checks each
state it has not seen before:

* at most one site carries traffic weight;
* the epoch in DNS never goes down;
* every epoch names one site (two decisions never share an epoch);
* no move of traffic away from a site unless, within ``GRACE`` before it, a majority of the
  peers were alive and failed to reach enough of its zones for a failover (what the run
  itself did to the world: no failover while a quorum sees the active site healthy);

and, at the end, that traffic reached the surviving site within ``RESCUE`` of the region
loss and that every surviving cluster's ``lastFailover`` names, for its epoch, the site DNS
named for it.

Where it differs from the invariants' wording: Route 53 is sampled, so two DNS changes
within one sample (a move and its reverse inside ``SAMPLE`` seconds) are seen as one state;
every change the operator makes also sets the owner record's epoch, so a reverse move
still shows as an epoch rise.

``python -m tests.peers_sandbox_chaos --runs N [--seed S] [--steps K]`` prints the figures
(``make chaos-peers-sandbox``); a failing run prints its seed and timeline, and
``--seed S --runs 1`` replays the same faults (timing differs: real processes).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from controller.providers.protocols import DnsOwner, owner_name
from sandbox.assets import Assets, ensure_assets
from sandbox.peers import PeerWorld
from sandbox.procs import SourceCut
from sandbox.world import HOSTED_ZONE

NAMESPACE, APP = "shop", "web"
RECORD = f"web.{HOSTED_ZONE}"
SITES = ("use1", "usw2")
SAMPLE = 0.4
"""Seconds between two readings of Route 53."""
GRACE = 12.0
"""How long after a majority of the peers last failed to reach a site a move away from it
may still land: three failed probes (1 s apart) to Down, the views a heartbeat late, the
decision written to a majority of the clusters, then the DNS change — on two shared cores
carrying three operators, three API servers and the cloud."""
HOLD = (4.0, 12.0)
"""Seconds a fault is held before the next step."""
SETTLE = 150.0
"""How long the healed world may take to serve again from one site before the region loss
(a peer restarted late has its first rounds to make)."""
RESCUE = 120.0
"""How long after the region loss traffic must be on the surviving site (as in
``tests/integration/test_peers_e2e.py``: three operators on two shared cores)."""
FAILOVER = {"minDwellSeconds": 5, "maxFailoversPerHour": 100}
"""The run's app: moves may follow each other (the example waits 30 s and allows 6 an hour,
which would make a long run's last moves refused by design, not by fault)."""


@dataclass(frozen=True)
class DnsState:
    """One reading of the app's name in Route 53."""

    at: float
    epoch: int | None
    site: str | None
    """The owner record's active site."""
    weighted: tuple[str, ...]
    """The sites whose weighted record set has a weight above 0."""


@dataclass
class Outcome:
    seed: int
    violations: list[str]
    timeline: list[str]
    states: int
    moves: int
    rescue: float | None
    seconds: float = 0.0


@dataclass
class Faults:
    """What the run has done to the world and not yet undone."""

    down: set[str] = field(default_factory=set)
    """Sites and ``site/zone``s down for everyone."""
    blind: dict[str, set[str]] = field(default_factory=dict)
    """Per peer: the sites it is cut off from."""
    killed: set[str] = field(default_factory=set)
    """Peers whose operator is SIGKILLed."""
    paused: set[str] = field(default_factory=set)
    """Peers whose kube-apiserver is paused."""
    partitions: set[frozenset[str]] = field(default_factory=set)


class Ledger:
    """The run's timeline, the DNS states seen and the invariants checked on each (no I/O:
    the states and the evidence come in as arguments, so the checks are tested alone)."""

    def __init__(self, sites: tuple[str, ...] = SITES, grace: float = GRACE) -> None:
        self.grace = grace
        self.started = time.monotonic()
        self.timeline: list[str] = []
        self.violations: list[str] = []
        self.evidence: dict[str, float | None] = dict.fromkeys(sites)
        """Per site: when a majority of the peers last failed to reach it (None: never)."""
        self.states: list[DnsState] = []
        self.lock = threading.Lock()

    def say(self, what: str) -> None:
        with self.lock:
            self.timeline.append(f"{time.monotonic() - self.started:7.2f}s {what}")

    def violation(self, what: str) -> None:
        with self.lock:
            fresh = what not in self.violations
            if fresh:
                self.violations.append(what)
        if fresh:
            self.say(f"VIOLATION {what}")

    def seen_failing(self, site: str, at: float) -> None:
        """A majority of the peers fail to reach ``site`` at ``at`` (monotonic)."""
        self.evidence[site] = at

    @property
    def dns(self) -> DnsState | None:
        with self.lock:
            return self.states[-1] if self.states else None

    @property
    def moves(self) -> int:
        served = [s.weighted for s in self.states if s.weighted]
        return sum(1 for a, b in itertools.pairwise(served) if a != b)

    def check(self, state: DnsState) -> None:
        """``state`` against the states seen before it."""
        with self.lock:
            earlier = list(self.states)
            if earlier and (earlier[-1].epoch, earlier[-1].weighted) == (
                state.epoch,
                state.weighted,
            ):
                return
            self.states.append(state)
        self.say(f"DNS epoch {state.epoch} owner {state.site}, weight on {state.weighted}")
        if len(state.weighted) > 1:
            self.violation(f"epoch {state.epoch}: traffic weight on {state.weighted}")
        epochs = [s.epoch for s in earlier if s.epoch is not None]
        if state.epoch is not None and epochs and state.epoch < max(epochs):
            self.violation(f"DNS epoch went down to {state.epoch} (was {max(epochs)})")
        for other in earlier:  # (weight on two sites is a violation of its own, above)
            single = len(other.weighted) == len(state.weighted) == 1
            if other.epoch == state.epoch and single and other.weighted != state.weighted:
                self.violation(
                    f"epoch {state.epoch} named two sites: {other.weighted}, {state.weighted}"
                )
        before = next((s.weighted for s in reversed(earlier) if s.weighted), ())
        left = before[0] if len(before) == 1 else None
        if left is not None and state.weighted and left not in state.weighted:
            seen = self.evidence.get(left)
            if seen is None or state.at - seen > self.grace:
                self.violation(
                    f"moved off {left} (epoch {state.epoch}) with no majority of the peers "
                    "seeing it fail " + ("ever" if seen is None else f"for {state.at - seen:.1f}s")
                )

    def check_last_failovers(self, last: dict[str, dict[str, Any]]) -> None:
        """Per cluster, its app's ``lastFailover`` names, for its epoch, the site DNS named
        for that epoch."""
        named = {s.epoch: s.weighted for s in self.states if s.weighted and s.epoch is not None}
        for cluster, record in last.items():
            epoch, to = record.get("epoch"), record.get("toSite")
            if epoch in named and named[epoch] != (to,):
                self.violation(
                    f"{cluster}'s lastFailover names {to} for epoch {epoch}; "
                    f"DNS named {named[epoch]}"
                )


class Run:
    def __init__(self, world: PeerWorld, seed: int, steps: int) -> None:
        self.world = world
        self.seed = seed
        self.steps = steps
        self.rng = random.Random(seed)
        self.names = tuple(world.peers)
        self.zones = {
            site: tuple(e.zone for e in world.sandbox.zones.site_endpoints(site)) for site in SITES
        }
        self.faults = Faults(blind={n: set() for n in self.names})
        self.ledger = Ledger()
        self.say, self.violation = self.ledger.say, self.ledger.violation
        self.sampler_error: str | None = None

    # ------------------------------------------------------------------ the world's state

    def reaches(self, peer: str, site: str, zone: str) -> bool:
        blocked = self.faults.down | self.faults.blind[peer]
        return site not in blocked and f"{site}/{zone}" not in blocked

    def seen_failing(self, site: str) -> bool:
        """A majority of all peers are alive and each fails to reach enough zones of
        ``site`` for a failover (two, or all of a smaller site)."""
        needed = min(2, len(self.zones[site]))
        failing = [
            p
            for p in self.names
            if p not in self.faults.killed
            and not self.world.peer(p).dead
            and sum(not self.reaches(p, site, z) for z in self.zones[site]) >= needed
        ]
        return len(failing) >= len(self.names) // 2 + 1

    def note_evidence(self) -> None:
        now = time.monotonic()
        for site in SITES:
            if self.seen_failing(site):
                self.ledger.seen_failing(site, now)

    def read_dns(self) -> DnsState:
        """The weighted record sets and the owner record of the app's name, from one
        listing of the zone straight from moto (the fault proxies are not in the way)."""
        route53 = self.world.sandbox.aws_client("route53")
        zone = route53.list_hosted_zones_by_name(DNSName=HOSTED_ZONE)["HostedZones"][0]["Id"]
        sets = route53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
        weighted, owner = [], None
        for record in sets:
            if record["Name"] == RECORD and "SetIdentifier" in record:
                if int(record["Weight"]) > 0:
                    weighted.append(record["SetIdentifier"])
            elif record["Name"] == owner_name(RECORD) and record["Type"] == "TXT":
                owner = DnsOwner.parse(record["ResourceRecords"][0]["Value"].strip('"'))
        return DnsState(
            time.monotonic(),
            owner.epoch if owner is not None else None,
            owner.active_site if owner is not None else None,
            tuple(sorted(weighted)),
        )

    @property
    def dns(self) -> DnsState | None:
        return self.ledger.dns

    def sample(self, done: threading.Event) -> None:
        while not done.is_set():
            self.note_evidence()
            try:
                self.ledger.check(self.read_dns())
            except Exception as exc:  # moto is part of the world: say it, keep sampling
                self.sampler_error = f"{type(exc).__name__}: {exc}"
            done.wait(SAMPLE)

    # ------------------------------------------------------------------ faults

    def leader(self) -> str | None:
        leaders = self.world.leaders()
        return leaders[0] if leaders else None

    def fault(self) -> None:
        rng, faults, world = self.rng, self.faults, self.world
        kind = rng.choice(
            ("kill", "pause", "partition", "blind", "zone", "outage", "outage", "heal")
        )
        aimed = rng.random() < 0.5
        # Drawn before looking at the world, so that a seed replays the same draws.
        peer, other = rng.sample(self.names, 2)
        site = rng.choice(SITES)
        silent = rng.random() < 0.5
        zone_index = rng.randrange(3)
        if aimed:
            peer = self.leader() or peer
            other = other if other != peer else next(n for n in self.names if n != peer)
            state = self.dns
            site = state.weighted[0] if state and len(state.weighted) == 1 else site
        if kind == "kill" and peer not in faults.killed:
            self.say(f"kill {peer}'s operator (SIGKILL)")
            world.peer(peer).operator.kill()
            faults.killed.add(peer)
        elif kind == "pause" and peer not in faults.paused:
            self.say(f"{peer}'s kube-apiserver paused")
            world.peer(peer).kube.pause()
            faults.paused.add(peer)
        elif kind == "partition":
            how = "silently" if silent else "refused"
            self.say(f"{peer} and {other} partitioned ({how})")
            world.partition(peer, other, silent=silent)
            faults.partitions.add(frozenset((peer, other)))
        elif kind == "blind":
            how = SourceCut.BLACKHOLE if silent else SourceCut.RESET
            self.say(f"{peer} cut off from every zone of {site} ({how})")
            world.cut(peer, site, how=how)
            faults.blind[peer].add(site)
        elif kind == "zone":
            zone = self.zones[site][zone_index % len(self.zones[site])]
            self.say(f"zone {site}/{zone} down")
            world.sandbox.zones.endpoint(site, zone).down()
            faults.down.add(f"{site}/{zone}")
        elif kind == "outage":
            self.say(f"every zone of {site} down")
            for endpoint in world.sandbox.zones.site_endpoints(site):
                endpoint.down()
            faults.down.add(site)
        else:
            self.heal()
            return
        self.note_evidence()

    def heal(self) -> None:
        """Undo every fault still in place (the zones first: a healed peer then probes a
        healthy world)."""
        self.say("heal all")
        faults, world = self.faults, self.world
        for endpoint in world.sandbox.zones.endpoints:
            endpoint.serve()
        faults.down.clear()
        world.heal()
        for blind in faults.blind.values():
            blind.clear()
        world.reconnect()
        faults.partitions.clear()
        for peer in sorted(faults.paused):
            world.peer(peer).kube.resume()
        faults.paused.clear()
        for peer in sorted(faults.killed):
            world.peer(peer).operator.start()
        faults.killed.clear()

    # ------------------------------------------------------------------ the run

    def until(self, check: Callable[[], bool], seconds: float, what: str) -> bool:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                self.violation(f"not within {seconds:g}s: {what}")
                return False
            time.sleep(0.25)
        return True

    def serving_from_one_site(self) -> bool:
        state = self.dns
        return state is not None and len(state.weighted) == 1 and state.site in state.weighted

    def run(self) -> Outcome:
        done = threading.Event()
        sampler = threading.Thread(target=self.sample, args=(done,), name="dns-sampler")
        sampler.start()
        rescue: float | None = None
        try:
            self.until(self.serving_from_one_site, SETTLE, "the app serving from one site")
            self.until(lambda: bool(self.world.leaders()), 60, "a peer leading")
            for _ in range(self.steps):
                self.fault()
                time.sleep(self.rng.uniform(*HOLD))
            self.heal()
            self.until(self.serving_from_one_site, SETTLE, "the healed app serving")
            time.sleep(GRACE)  # a move decided on the last faults lands before the loss
            state = self.dns
            active = state.weighted[0] if state and len(state.weighted) == 1 else "use1"
            survivor = next(s for s in SITES if s != active)
            victim = next(n for n in self.names if self.world.site_of(n) == active)
            self.say(f"region of {active} lost: its zones, cloud API, cluster and peer {victim}")
            lost = time.monotonic()
            self.faults.down.add(active)
            self.world.kill_region(victim)
            self.note_evidence()
            if self.until(
                lambda: (s := self.dns) is not None and s.weighted == (survivor,),
                RESCUE,
                f"traffic on {survivor}",
            ):
                rescue = time.monotonic() - lost
                self.say(f"traffic on {survivor} {rescue:.1f}s after the loss")
            time.sleep(5.0)  # a second move, if one were coming, would come now
            self.check_statuses()
        finally:
            done.set()
            sampler.join(10)
        ledger = self.ledger
        if self.sampler_error and not ledger.states:
            self.violation(f"Route 53 could not be read: {self.sampler_error}")
        return Outcome(
            self.seed,
            ledger.violations,
            ledger.timeline,
            len(ledger.states),
            ledger.moves,
            rescue,
            time.monotonic() - ledger.started,
        )

    def check_statuses(self) -> None:
        apps = self.world.apps(NAMESPACE, APP)
        self.ledger.check_last_failovers(
            {
                peer: (app.get("status") or {}).get("lastFailover") or {}
                for peer, app in apps.items()
            }
        )


def app_document(world: PeerWorld) -> dict[str, Any]:
    """The sandbox's example app with the run's failover settings."""
    (document,) = (
        copy.deepcopy(d) for d in world.sandbox.example_documents() if d["kind"] == "ResilientApp"
    )
    document["spec"]["failover"] = {**document["spec"]["failover"], **FAILOVER}
    return dict(document)


@contextlib.contextmanager
def world_for_a_run(assets: Assets) -> Iterator[PeerWorld]:
    """A peer world of its own (nothing a run did carries into the next), with the app."""
    world = PeerWorld(assets, apply_apps=False)
    with world:
        world.apply_everywhere([app_document(world)])
        yield world


def run_one(assets: Assets, seed: int, steps: int = 6) -> Outcome:
    with world_for_a_run(assets) as world:
        return Run(world, seed, steps).run()


def report(outcomes: list[Outcome], first: int, steps: int) -> str:
    failed = [o for o in outcomes if o.violations]
    rescues = sorted(o.rescue for o in outcomes if o.rescue is not None)
    return (
        f"peers chaos on the sandbox: {len(outcomes)} runs of 3 peers, {steps} faults each "
        f"+ a region loss, seeds {first}..{first + len(outcomes) - 1}: {len(failed)} with "
        f"violations; {sum(o.states for o in outcomes)} DNS states, "
        f"{sum(o.moves for o in outcomes)} site moves; region loss -> traffic on the survivor "
        + (
            f"{rescues[0]:.1f}-{rescues[-1]:.1f}s (median {rescues[len(rescues) // 2]:.1f}s)"
            if rescues
            else "never"
        )
        + f"; {sum(o.seconds for o in outcomes):.0f}s of runs"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.peers_sandbox_chaos")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None, help="the first seed (default: random)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--verbose", action="store_true", help="every run's timeline")
    args = parser.parse_args(argv)
    first = args.seed if args.seed is not None else random.randrange(2**31)
    logging.basicConfig(level=logging.WARNING)
    assets = ensure_assets()
    outcomes: list[Outcome] = []
    for seed in range(first, first + args.runs):
        outcome = run_one(assets, seed, args.steps)
        outcomes.append(outcome)
        status = "; ".join(outcome.violations) or "no violation"
        print(f"seed {seed}: {status} ({outcome.seconds:.0f}s)", flush=True)
        if outcome.violations or args.verbose:
            print("\n".join(f"    {line}" for line in outcome.timeline), flush=True)
    print(report(outcomes, first, args.steps))
    return 1 if any(o.violations for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
