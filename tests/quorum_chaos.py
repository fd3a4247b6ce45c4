"""Seeded randomized runs of the peers' leadership (issue 18, item 6 d, the election layer).

Three (or five) peers, each a :class:`~controller.operator.quorum.QuorumElector` with an
identity of its own, over in-memory Lease stores, one per peer cluster, with the timings
scaled down (a 1 s Lease). Each run applies a random sequence of faults: a peer's process
SIGKILLed (no release) and started again with a new identity, a cluster down (connections
refused), a cluster paused (calls hang until their deadline), one peer cut off from one
cluster, everything healed. It checks, every 10 ms:

* **safety**: at most one peer leads at any moment;
* **liveness**: whenever some live peer has reached a majority of the clusters for
  ``SETTLE`` (a Lease, its rank deferrals and a request, twice over), some peer leads.

A run ends with a region loss, the peer and its cluster killed together (the headline
scenario of the issue), then the liveness check. The stores are in memory (the Lease API
of a real kube-apiserver is what tests/integration/test_peer_quorum.py drives); what is
under test is the election, not the API server.

``python -m tests.quorum_chaos --runs 200 [--seed S] [--peers 5]`` prints the figures; a
failing run prints its seed and timeline so that ``--seed S --runs 1`` replays it.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from controller.operator.leader import LeaseTimings
from controller.operator.quorum import QuorumElector

TIMINGS = LeaseTimings.for_lease(1.0)
SETTLE = 2 * (TIMINGS.lease_seconds + 5 * TIMINGS.retry_seconds + TIMINGS.request_seconds)
"""How long a majority must have been reachable before a leader is required."""
STEP = (0.5, 2.5)
"""The time between two faults, in Leases."""


class Store:
    """One cluster's ``lifeboat`` Lease, with resourceVersions, safe across threads."""

    def __init__(self) -> None:
        self.lease: kubernetes.client.V1Lease | None = None
        self.version = 0
        self.down = False  # connections refused
        self.paused = False  # calls hang until their deadline
        self.lock = threading.Lock()

    def _store(self, lease: Any) -> Any:
        self.version += 1
        stored = copy.deepcopy(lease)
        if stored.metadata is None:
            stored.metadata = kubernetes.client.V1ObjectMeta()
        stored.metadata.resource_version = str(self.version)
        self.lease = stored
        return copy.deepcopy(stored)


class Path:
    """One peer's way to one cluster (what the elector uses of CoordinationV1Api)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cut = False

    def _enter(self, timeout: Any) -> None:
        if self.cut or self.store.down:
            raise ConnectionRefusedError("connection refused")
        if self.store.paused:
            time.sleep(float(timeout or 1.0))
            raise TimeoutError("read timed out")

    def read_namespaced_lease(self, name: str, namespace: str, **kw: Any) -> Any:
        self._enter(kw.get("_request_timeout"))
        with self.store.lock:
            if self.store.lease is None:
                raise ApiException(status=404, reason="Not Found")
            return copy.deepcopy(self.store.lease)

    def create_namespaced_lease(self, namespace: str, lease: Any, **kw: Any) -> Any:
        self._enter(kw.get("_request_timeout"))
        with self.store.lock:
            if self.store.lease is not None:
                raise ApiException(status=409, reason="Conflict")
            return self.store._store(lease)

    def replace_namespaced_lease(self, name: str, namespace: str, lease: Any, **kw: Any) -> Any:
        self._enter(kw.get("_request_timeout"))
        with self.store.lock:
            if str(lease.metadata.resource_version) != str(self.store.version):
                raise ApiException(status=409, reason="Conflict")
            return self.store._store(lease)


@dataclass
class Peer:
    name: str
    paths: dict[str, Path]
    elector: QuorumElector | None = None
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    lives: int = 0

    @property
    def leading(self) -> bool:
        return self.elector is not None and self.task is not None and self.elector.leading


@dataclass
class Outcome:
    seed: int
    violations: list[str]
    timeline: list[str]
    leaderless_max: float
    """The longest time without a leader while one was required (after SETTLE)."""


class Run:
    def __init__(self, seed: int, peers: int, steps: int, settle: float = SETTLE) -> None:
        self.seed = seed
        self.settle = settle
        self.rng = random.Random(seed)
        self.names = tuple(f"p{i}" for i in range(peers))
        self.stores = {name: Store() for name in self.names}
        self.peers = {
            name: Peer(name, {c: Path(self.stores[c]) for c in self.names}) for name in self.names
        }
        self.steps = steps
        self.timeline: list[str] = []
        self.violations: list[str] = []
        self.started = time.monotonic()
        self.required_since: float | None = None
        self.leaderless_max = 0.0

    def say(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.started:7.2f}s {what}")

    # ------------------------------------------------------------------ peers

    def start(self, peer: Peer) -> None:
        peer.lives += 1
        peer.stop = asyncio.Event()
        peer.elector = QuorumElector(
            [(c, peer.paths[c]) for c in self.names],  # type: ignore[misc]
            "ns",
            peer.name,
            identity=f"{peer.name}-{peer.lives}",
            timings=TIMINGS,
            rng=random.Random(self.rng.random()),
        )
        peer.task = asyncio.create_task(peer.elector.run(peer.stop))

    async def kill(self, peer: Peer) -> None:
        """SIGKILL: every path cut first, so that nothing is released on the way out."""
        if peer.task is None:
            return
        cut = {c: p.cut for c, p in peer.paths.items()}
        for path in peer.paths.values():
            path.cut = True
        peer.task.cancel()
        await asyncio.gather(peer.task, return_exceptions=True)
        peer.task = None
        peer.elector = None
        for c, path in peer.paths.items():
            path.cut = cut[c]

    # ------------------------------------------------------------------ checks

    def live(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.task is not None]

    def leader_required(self) -> bool:
        """A live peer reaches a majority of clusters that are up and not paused."""
        majority = len(self.names) // 2 + 1
        for peer in self.live():
            reach = [
                c
                for c, path in peer.paths.items()
                if not (path.cut or self.stores[c].down or self.stores[c].paused)
            ]
            if len(reach) >= majority:
                return True
        return False

    async def watch(self, done: asyncio.Event) -> None:
        while not done.is_set():
            now = time.monotonic()
            leaders = [p.name for p in self.peers.values() if p.leading]
            if len(leaders) > 1:
                seen = f"two leaders at once: {leaders}"
                if seen not in self.violations:  # once per pair, not every 10 ms
                    self.violations.append(seen)
                    self.say(f"VIOLATION {seen}")
            if self.leader_required():
                if self.required_since is None:
                    self.required_since = now
                if leaders:
                    self.required_since = now  # served: the clock starts again
                else:
                    waited = now - self.required_since
                    self.leaderless_max = max(self.leaderless_max, waited)
                    if waited > self.settle and not any("leaderless" in v for v in self.violations):
                        self.violations.append(
                            f"no leader for {waited:.1f}s with a majority reachable"
                        )
                        self.say("VIOLATION leaderless")
            else:
                self.required_since = None
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ faults

    async def fault(self) -> None:
        rng = self.rng
        kind = rng.choice(("kill", "start", "down", "up", "pause", "cut", "heal", "heal"))
        peer = self.peers[rng.choice(self.names)]
        cluster = rng.choice(self.names)
        if kind == "kill" and peer.task is not None:
            self.say(f"kill {peer.name}")
            await self.kill(peer)
        elif kind == "start" and peer.task is None:
            self.say(f"start {peer.name}")
            self.start(peer)
        elif kind == "down":
            self.say(f"cluster {cluster} down")
            self.stores[cluster].down = True
        elif kind == "up":
            self.say(f"cluster {cluster} up")
            self.stores[cluster].down = self.stores[cluster].paused = False
        elif kind == "pause":
            self.say(f"cluster {cluster} paused")
            self.stores[cluster].paused = True
        elif kind == "cut":
            self.say(f"{peer.name} cut off from {cluster}")
            peer.paths[cluster].cut = True
        elif kind == "heal":
            self.say("heal all")
            self.heal()
            for dead in self.peers.values():
                if dead.task is None:
                    self.start(dead)

    def heal(self) -> None:
        for store in self.stores.values():
            store.down = store.paused = False
        for peer in self.peers.values():
            for path in peer.paths.values():
                path.cut = False

    async def run(self) -> Outcome:
        done = asyncio.Event()
        for name in self.rng.sample(self.names, len(self.names)):
            self.start(self.peers[name])
            await asyncio.sleep(self.rng.uniform(0, TIMINGS.lease_seconds))
        watcher = asyncio.create_task(self.watch(done))
        try:
            for _ in range(self.steps):
                await self.fault()
                await asyncio.sleep(self.rng.uniform(*STEP) * TIMINGS.lease_seconds)
            # The headline: everything healed and settled, then a region lost whole.
            self.say("heal all")
            self.heal()
            for peer in self.peers.values():
                if peer.task is None:
                    self.start(peer)
            await asyncio.sleep(self.settle)
            leaders = [p for p in self.peers.values() if p.leading]
            victim = leaders[0] if leaders else self.peers[self.rng.choice(self.names)]
            self.say(f"region of {victim.name} lost (peer and cluster)")
            self.stores[victim.name].down = True
            await self.kill(victim)
            await asyncio.sleep(self.settle * 1.5)
        finally:
            done.set()
            await watcher
            for peer in self.peers.values():
                peer.stop.set()
            await asyncio.gather(
                *(p.task for p in self.peers.values() if p.task is not None),
                return_exceptions=True,
            )
        return Outcome(self.seed, self.violations, self.timeline, self.leaderless_max)


async def run_one(seed: int, peers: int = 3, steps: int = 8, settle: float = SETTLE) -> Outcome:
    """One run; ``settle``: how long a leader may be missing while one is required."""
    return await Run(seed, peers, steps, settle).run()


async def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.quorum_chaos")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="the first seed (default: random)")
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=8, help="runs at once")
    args = parser.parse_args(argv)
    first = args.seed if args.seed is not None else random.randrange(2**31)
    logging.basicConfig(level=logging.CRITICAL)
    started = time.monotonic()
    outcomes: list[Outcome] = []
    seeds = list(range(first, first + args.runs))
    for at in range(0, len(seeds), args.parallel):
        batch = seeds[at : at + args.parallel]
        done = await asyncio.gather(*(run_one(s, args.peers, args.steps) for s in batch))
        for outcome in done:  # at once: a long run that is stopped keeps what it found
            if outcome.violations:
                print(f"seed {outcome.seed}: {'; '.join(outcome.violations)}")
                print("\n".join(f"    {line}" for line in outcome.timeline), flush=True)
        outcomes += done
        bad = sum(1 for o in outcomes if o.violations)
        print(f"{len(outcomes)} runs done, {bad} with violations", file=sys.stderr, flush=True)
    failed = [o for o in outcomes if o.violations]
    worst = max(o.leaderless_max for o in outcomes)
    print(
        f"quorum chaos: {len(outcomes)} runs of {args.peers} peers, {args.steps} faults each "
        f"+ a region loss, seeds {first}..{first + args.runs - 1}: {len(failed)} with "
        f"violations; longest wait for a leader with a majority reachable {worst:.1f}s "
        f"(Lease {TIMINGS.lease_seconds:g}s, required within {SETTLE:.1f}s); "
        f"{time.monotonic() - started:.0f}s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
