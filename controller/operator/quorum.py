"""Leadership of the peers: the ``lifeboat`` Lease held in a majority of the peer clusters.

Every peer runs its workers (probe, decide, publish); only the leader acts. A peer leads
while it holds the ``lifeboat`` Lease of the controller namespace in a majority of the
peer clusters, each Lease taken and renewed with the single-cluster rules of
:mod:`.leader` (client-go's): expiry judged on the candidate's own monotonic clock from
the last change it *saw*, a deadline on every call, optimistic concurrency on every write.

**Counting a Lease.** The peer counts a cluster's Lease as held for ``renew_deadline``
from the *start* of its last successful take or renewal there. Another candidate takes
that Lease only ``lease_seconds`` after it saw it change, which is after that start; since
``renew_deadline < lease_seconds``, the holder has stopped counting a Lease before anyone
else can hold it. Two majorities of one set of clusters share a cluster, so two peers
never both count a majority: at most one leads at any moment, with ``lease_seconds -
renew_deadline`` (a third of the Lease with the default proportions) to spare for clock
rates that differ between hosts. :attr:`QuorumElector.leading` is computed from the
clock each time it is read, so leadership ends at that deadline even if the loop that
renews is stuck.

**Split votes.** Candidates that each take some Leases could all stay short of a majority.
Two rules keep that rare and short: a candidate of rank *r* (its position among the peer
names, sorted) waits ``r * retry_seconds`` longer than the Lease's duration before taking
an expired Lease, and as long before taking a free one (the leader takes a free one at
once), so the lowest-ranked live peer usually takes them all; and a peer that holds some
Leases but no majority while another peer holds one gives its own up after ``2 *
retry_seconds`` and stays away for a random ``retry_seconds`` to ``lease_seconds / 2``.

**How fast leadership moves.** When the leader's region is lost (the leader and its
cluster with it), the surviving clusters still hold its Leases as last renewed, at the
latest at the loss. A candidate sees that last renewal at most one period late, waits
``lease_seconds + rank * retry_seconds`` from then, and tries once a period: the
lowest-ranked survivor holds the surviving clusters' Leases — a majority of three, or of
five with two lost — within ``lease_seconds + (rank + 2) * retry_seconds +
request_seconds`` of the loss. With the defaults (10 s, 2 s, 3.3 s) that is 17.3 s when
the survivor ranks first and 19.3 s when it ranks second (the worst case with one peer
lost), plus the new leader's first round. A leader that loses its
majority (two of three clusters unreachable) stops within ``renew_deadline`` (≈6.7 s) of
its last successful renewals.

**A lone peer.** With ``allowSolo`` a peer also leads while it holds its own cluster's
Lease and reaches none of the other clusters (it cannot tell their loss from its own
isolation: an explicit choice, see docs/peers.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import kubernetes.client

from controller import metrics
from controller.operator.leader import LeaseElector, LeaseTimings, brief

log = logging.getLogger(__name__)


@dataclass
class Seat:
    """This peer's view of one cluster's Lease."""

    cluster: str
    held_until: float = 0.0
    """Monotonic time until which this peer counts the Lease as its own (0: not held)."""
    holder: str | None = None
    """The holder the last answer named (None: the cluster did not answer)."""
    answered_at: float | None = None
    """When the cluster last answered (monotonic)."""


@dataclass
class Seats:
    """The bookkeeping of a quorum of Leases, with time as an argument (pure)."""

    clusters: tuple[str, ...]
    own: str
    identity: str
    timings: LeaseTimings
    allow_solo: bool = False
    seats: dict[str, Seat] = field(init=False)

    def __post_init__(self) -> None:
        if self.own not in self.clusters:
            raise ValueError(f"the own cluster {self.own} is not among {self.clusters}")
        self.seats = {name: Seat(name) for name in self.clusters}

    @property
    def majority(self) -> int:
        return len(self.clusters) // 2 + 1

    def record(self, cluster: str, holder: str | None, started: float, now: float) -> None:
        """The answer to an attempt that started at ``started``: the holder afterwards
        (empty: the Lease is free and was left so for now; None: no answer)."""
        seat = self.seats[cluster]
        seat.holder = holder
        if holder is None:
            return  # unreachable: what was held lapses on its own
        seat.answered_at = now
        if holder == self.identity:
            seat.held_until = max(seat.held_until, started + self.timings.renew_deadline)
        else:
            seat.held_until = 0.0

    def drop(self, cluster: str) -> None:
        """Stop counting ``cluster``'s Lease (before giving it up)."""
        self.seats[cluster].held_until = 0.0

    def held(self, now: float) -> tuple[str, ...]:
        return tuple(name for name, seat in self.seats.items() if seat.held_until > now)

    def alone(self, now: float) -> bool:
        """No other cluster answered within the renew deadline."""
        horizon = now - self.timings.renew_deadline
        return all(
            seat.answered_at is None or seat.answered_at <= horizon
            for name, seat in self.seats.items()
            if name != self.own
        )

    def leading(self, now: float) -> bool:
        held = self.held(now)
        if len(held) >= self.majority:
            return True
        return self.allow_solo and self.own in held and self.alone(now)

    def until(self, now: float) -> float | None:
        """When leadership ends if no renewal succeeds from now on (None: not leading)."""
        if not self.leading(now):
            return None
        ends = sorted(
            (s.held_until for s in self.seats.values() if s.held_until > now), reverse=True
        )
        if len(ends) >= self.majority:
            return ends[self.majority - 1]
        return self.seats[self.own].held_until

    def contested(self, now: float) -> bool:
        """Holding some Leases but no majority while another peer holds one: a split."""
        return (
            bool(self.held(now))
            and not self.leading(now)
            and any(s.holder and s.holder != self.identity for s in self.seats.values())
        )


@dataclass
class QuorumElector:
    """Holds the ``lifeboat`` Lease in every peer cluster it can; leads on a majority.

    ``clusters``: (peer name, Lease API of that peer's cluster), the own cluster among
    them. Implements the Leadership protocol of :mod:`.context` (``leading``, ``term``).
    """

    clusters: Sequence[tuple[str, kubernetes.client.CoordinationV1Api]]
    namespace: str
    own: str
    name: str = "lifeboat"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}")
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    allow_solo: bool = False
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    _seats: Seats = field(init=False)
    _electors: dict[str, LeaseElector] = field(init=False)
    _pools: dict[str, ThreadPoolExecutor] = field(init=False)
    _term: int = field(default=0, init=False)
    _was_leading: bool = field(default=False, init=False)
    _stopped: bool = field(default=False, init=False)
    _defer: float = field(default=0.0, init=False)
    """How long a non-leader leaves a free Lease, or waits past an expired one (its rank)."""
    _contested_since: float | None = field(default=None, init=False)
    _away_until: float = field(default=0.0, init=False)
    _releasing: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    """Set whenever leadership is gained or lost (cleared by whoever waits on it)."""

    def __post_init__(self) -> None:
        names = [name for name, _ in self.clusters]
        self._seats = Seats(
            tuple(names), self.own, self.identity, self.timings, allow_solo=self.allow_solo
        )
        rank = sorted(names).index(self.own)
        self._defer = rank * self.timings.retry_seconds
        # Threads of its own per cluster (an attempt and a release may overlap): renewals
        # never wait behind the process's other blocking calls, nor one cluster's behind
        # another's that hang until their deadline.
        self._pools = {
            name: ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"lifeboat-lease-{name}")
            for name in names
        }
        self._electors = {
            name: LeaseElector(
                api,
                self.namespace,
                self.name,
                identity=self.identity,
                timings=self.timings,
                clock=self.clock,
                defer_seconds=self._defer,
                executor=self._pools[name],
            )
            for name, api in self.clusters
        }

    # ------------------------------------------------------------------ Leadership

    @property
    def leading(self) -> bool:
        return self._refresh()

    @property
    def term(self) -> int:
        self._refresh()
        return self._term

    def until(self) -> float | None:
        """The monotonic time leadership ends unless a renewal succeeds (None: not leading)."""
        return None if self._stopped else self._seats.until(self.clock())

    def held(self) -> tuple[str, ...]:
        """The clusters whose Lease this peer counts as its own now."""
        return self._seats.held(self.clock())

    def _refresh(self) -> bool:
        leading = not self._stopped and self._seats.leading(self.clock())
        if leading != self._was_leading:
            self._was_leading = leading
            self._term += 1
            # The leader takes a free Lease at once: the rank's wait is there to stagger
            # candidates, and kept by a leader it let a lower-ranked peer that had given up
            # its contested Lease take it back each time, for ever (never all the Leases).
            for elector in self._electors.values():
                elector.defer_seconds = 0.0 if leading else self._defer
            self.changed.set()
            metrics.LEADER.set(1 if leading else 0)
            if leading:
                log.info(
                    "quorum: %s leads, holding the Lease in %s of %d peer clusters (term %d)",
                    self.own,
                    ", ".join(self.held()),
                    len(self.clusters),
                    self._term,
                )
            else:
                metrics.LEADERSHIP_LOSSES.inc()
                log.warning(
                    "quorum: %s stops leading: holds the Lease in %s of %d peer clusters, "
                    "needs %d (term %d)",
                    self.own,
                    ", ".join(self.held()) or "none",
                    len(self.clusters),
                    self._seats.majority,
                    self._term,
                )
        return leading

    # ------------------------------------------------------------------ the loops

    def _export(self) -> None:
        held = set(self.held())
        for name in self._seats.clusters:
            metrics.PEER_LEASE_HELD.labels(cluster=name).set(1 if name in held else 0)

    async def run(self, stopping: asyncio.Event) -> None:
        """Take and renew the Leases until ``stopping`` is set, then give them up."""
        seats = [asyncio.create_task(self._seat(name, stopping)) for name, _ in self.clusters]
        metrics.PEER_LEASES_NEEDED.set(self._seats.majority)
        try:
            while not stopping.is_set():
                self._refresh()
                self._resolve_split()
                self._export()
                await _wait(stopping, min(0.5, self.timings.retry_seconds / 2))
        finally:
            self._stopped = True
            self._refresh()
            for task in seats:
                task.cancel()
            await asyncio.gather(*seats, return_exceptions=True)
            await self._release(self._seats.clusters)
            self._export()
            for pool in self._pools.values():
                pool.shutdown(wait=False, cancel_futures=True)

    async def _seat(self, cluster: str, stopping: asyncio.Event) -> None:
        """Take or renew one cluster's Lease once a period."""
        elector = self._electors[cluster]
        failing = False
        while not stopping.is_set():
            started = self.clock()
            if started >= self._away_until:
                holder: str | None
                try:
                    holder = await elector.attempt()
                except Exception as error:
                    holder = None
                    if not failing:
                        log.warning(
                            "quorum: cannot reach peer cluster %s for its Lease (%s); "
                            "retrying every %gs",
                            cluster,
                            brief(error),
                            self.timings.retry_seconds,
                        )
                    failing = True
                else:
                    if failing:
                        log.info("quorum: peer cluster %s answers again", cluster)
                    failing = False
                if not self._stopped and started >= self._away_until:
                    self._seats.record(cluster, holder, started, self.clock())
                self._refresh()
            await _wait(stopping, started + self.timings.retry_seconds - self.clock())

    def _resolve_split(self) -> None:
        """Give up a minority of Leases that another peer contests (see the module)."""
        now = self.clock()
        if not self._seats.contested(now):
            self._contested_since = None
            return
        if self._contested_since is None:
            self._contested_since = now
            return
        if now - self._contested_since < 2 * self.timings.retry_seconds:
            return
        held = self._seats.held(now)
        for cluster in held:
            self._seats.drop(cluster)
        away = self.rng.uniform(self.timings.retry_seconds, self.timings.lease_seconds / 2)
        self._away_until = now + away
        self._contested_since = None
        log.info(
            "quorum: %s gives up the Lease in %s (no majority, contested); away for %.1fs",
            self.own,
            ", ".join(held),
            away,
        )
        task = asyncio.create_task(self._release(held))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release(self, clusters: Sequence[str]) -> None:
        for cluster in clusters:
            self._seats.drop(cluster)
        await asyncio.gather(*(self._electors[c].release() for c in clusters))


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), max(0.0, seconds))
    except TimeoutError:
        return False
    return True
