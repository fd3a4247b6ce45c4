"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's rules.

Only the holder of the Lease acts, so two Lifeboat instances (a second replica, a
workstation ``lifeboat run`` next to the in-cluster Deployment) never both decide and
move traffic. The rules are those of client-go's ``leaderelection`` package:

* **Expiry is judged on the candidate's own monotonic clock**, never by comparing another
  host's wall-clock ``renewTime`` with its own: a candidate remembers when it last *saw
  the Lease record change* and treats the Lease as expired only ``lease_seconds`` after
  that. Clock skew between hosts cannot make a held Lease look expired.
* **The holder renews every ``retry_seconds``** and gives up — stops acting — when it has
  not renewed for ``renew_deadline`` (counted from the start of its last successful
  renewal, as the request may have been stamped then). Because ``renew_deadline`` is
  shorter than ``lease_seconds``, the holder has stopped before any candidate, which
  waits ``lease_seconds`` from a later moment, can take the Lease.
* **Every call has a deadline** (``request_seconds``): a hung connection to the API server
  counts as a failed attempt instead of stalling the loop.
* Writes carry the Lease's resourceVersion (optimistic concurrency): two candidates racing
  for an expired Lease cannot both win.
* A clean shutdown releases the Lease so that a standby takes over at once.

Connection errors while waiting for the Lease are logged on one line and retried: a
candidate never crashes because the API server is away.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import kubernetes.client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def _lease_threads(prefix: str) -> ThreadPoolExecutor:
    """Two threads for one Lease: a renewal, and a release or a late answer beside it."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix=prefix)


def _now() -> datetime:
    return datetime.now(tz=UTC)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; whether it is set."""
    try:
        await asyncio.wait_for(event.wait(), max(0.0, seconds))
    except TimeoutError:
        return False
    return True


class LeadershipLost(RuntimeError):
    """The Lease could not be renewed in time, or another instance holds it: stop acting."""


@dataclass(frozen=True)
class LeaseTimings:
    """How long a Lease lasts and how its holder and candidates behave.

    ``lease_seconds``: how long candidates honour a Lease after they last saw it renewed.
    ``renew_deadline``: how long the holder keeps acting without a successful renewal.
    ``retry_seconds``: the period of renewals and of candidates' attempts.
    ``request_seconds``: the deadline of each call to the API server.

    A leader killed outright is replaced after at most ``lease_seconds + 2 *
    retry_seconds`` (the candidate may see the last renewal up to one period late, and
    tries once a period), plus the new leader's start-up.
    """

    lease_seconds: float = 10.0
    renew_deadline: float = 7.0
    retry_seconds: float = 2.0
    request_seconds: float = 3.5

    def __post_init__(self) -> None:
        if not 0 < self.retry_seconds < self.renew_deadline < self.lease_seconds:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration "
                f"(got {self.retry_seconds:g}s, {self.renew_deadline:g}s, "
                f"{self.lease_seconds:g}s)"
            )
        if not 0 < self.request_seconds <= self.renew_deadline:
            raise ValueError(
                f"the request deadline ({self.request_seconds:g}s) must be positive and no "
                f"longer than the renew deadline ({self.renew_deadline:g}s)"
            )

    @classmethod
    def for_lease(cls, lease_seconds: float) -> LeaseTimings:
        """client-go's proportions (15 s / 10 s / 2 s) scaled to ``lease_seconds``."""
        renew = lease_seconds * 2 / 3
        return cls(
            lease_seconds=lease_seconds,
            renew_deadline=renew,
            retry_seconds=min(2.0, lease_seconds / 5),
            request_seconds=renew / 2,  # a slow API server gets two tries per deadline
        )

    @property
    def takeover_bound(self) -> float:
        """The longest a killed leader's Lease keeps a candidate waiting."""
        return self.lease_seconds + 2 * self.retry_seconds


@dataclass(frozen=True)
class _Record:
    """What identifies one version of the Lease as a candidate saw it."""

    holder: str
    renew_time: datetime | None
    resource_version: str


@dataclass
class LeaseElector:
    """Takes and keeps one Lease. ``clock`` is monotonic (seconds); tests may replace it."""

    api: kubernetes.client.CoordinationV1Api
    namespace: str
    name: str = "lifeboat"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}")
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    clock: Callable[[], float] = time.monotonic
    defer_seconds: float = 0.0
    """How much longer than the Lease's duration to wait before taking another holder's
    expired Lease, and how long to leave a free one before taking it (peers stagger their
    candidates by rank with it, so that they rarely split the Leases; 0 in single-cluster
    mode)."""
    executor: Executor = field(default_factory=lambda: _lease_threads("lifeboat-lease"))
    """The threads the blocking calls run on: never the event loop's default pool, which
    is shared with every other blocking call of the process (status writes, reads of the
    apps): with a hundred apps writing their first status at start-up, a renewal queued
    behind them missed its deadline and the leader stood down. The peers' elector gives
    each cluster's Lease threads of its own, so that calls to a lost cluster, each waiting
    out its deadline, do not hold up the renewals in the others."""
    _observed: _Record | None = field(default=None, init=False)
    _observed_at: float = field(default=0.0, init=False)
    _renewed_at: float = field(default=0.0, init=False)
    """When the last successful take or renewal of the Lease started (monotonic)."""

    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Wait until this instance holds the Lease (True) or ``stopping`` is set (False)."""
        announced: str | None = None
        failing = False
        while not stopping.is_set():
            started = self.clock()
            try:
                holder = await self._attempt()
            except Exception as error:
                if not failing:
                    log.warning(
                        "leader election: cannot reach the API server for lease %s/%s "
                        "(%s); retrying every %gs",
                        self.namespace,
                        self.name,
                        brief(error),
                        self.timings.retry_seconds,
                    )
                failing = True
            else:
                if failing:
                    log.info("leader election: the API server answers again")
                failing = False
                if holder == self.identity:
                    self._renewed_at = started
                    log.info(
                        "leader election: %s holds lease %s/%s", holder, self.namespace, self.name
                    )
                    return True
                if holder != announced:
                    log.info(
                        "leader election: waiting; lease %s/%s is held by %s",
                        self.namespace,
                        self.name,
                        holder,
                    )
                    announced = holder
            await _wait(stopping, self.timings.retry_seconds)
        return False

    async def keep(self, stopping: asyncio.Event) -> None:
        """Renew until ``stopping`` is set, then release; raise LeadershipLost on failure.

        Leadership is lost when another instance holds the Lease, or the moment no renewal
        has succeeded for ``renew_deadline`` (from the start of the last successful one):
        a renewal still in flight then does not keep the holder acting.
        """
        renewed = self._renewed_at
        due = renewed + self.timings.retry_seconds
        while True:
            deadline = renewed + self.timings.renew_deadline
            if await _wait(stopping, min(due, deadline) - self.clock()):
                break
            attempt = self.clock()
            if attempt >= deadline:
                raise LeadershipLost(
                    f"lost lease {self.namespace}/{self.name}: not renewed for "
                    f"{attempt - renewed:.1f}s (renew deadline {self.timings.renew_deadline:g}s)"
                )
            if attempt < due:
                continue
            try:
                holder: str | None = await asyncio.wait_for(self._attempt(), deadline - attempt)
            except Exception as error:
                log.warning("leader election: renewing the lease failed: %s", brief(error))
                holder = None
            if holder == self.identity:
                renewed = self._renewed_at = attempt
            elif holder is not None:
                raise LeadershipLost(f"lost lease {self.namespace}/{self.name} to {holder}")
            due = attempt + self.timings.retry_seconds
        await self._release()

    # ------------------------------------------------------------------ one attempt

    async def attempt(self) -> str:
        """One take-or-renew of the Lease, bounded by the request deadline: the holder
        afterwards (this instance's identity when it holds it). Raises when the API
        server cannot be reached or does not answer in time."""
        return await self._attempt()

    async def release(self) -> None:
        """Give the Lease up if this instance holds it (errors are logged, not raised)."""
        await self._release()

    async def _attempt(self) -> str:
        """Take or renew the Lease if free, expired or ours; the holder afterwards.

        Bounded by the request deadline: the blocking call runs in a thread, which the
        per-request timeout of the API client ends as well.
        """
        budget = self.timings.request_seconds
        return await asyncio.wait_for(self._in_thread(self._try_acquire, budget), budget + 0.5)

    async def _in_thread(self, call: Callable[[float], _T], request_seconds: float) -> _T:
        """``call(request_seconds)`` on the elector's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, call, request_seconds)

    def _try_acquire(self, timeout: float) -> str:
        now = _now()
        try:
            lease = self.api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=timeout
            )
        except ApiException as error:
            if error.status != 404:
                raise
            return self._create(now, timeout)
        spec = lease.spec or kubernetes.client.V1LeaseSpec()
        holder = spec.holder_identity or ""
        metadata = lease.metadata or kubernetes.client.V1ObjectMeta()
        record = _Record(holder, spec.renew_time, str(metadata.resource_version or ""))
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        if holder != self.identity and not self._expired(spec):
            return holder  # empty: free, but not ours to take yet (defer_seconds)
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        lease.spec = kubernetes.client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=max(1, round(self.timings.lease_seconds)),
            acquire_time=spec.acquire_time if holder == self.identity else now,
            renew_time=now,
            lease_transitions=transitions,
        )
        try:
            written = self.api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=timeout
            )
        except ApiException as error:
            if error.status == 409:  # someone else wrote first
                return holder or "another candidate"
            raise
        self._observe_own(written)
        return self.identity

    def _expired(self, spec: kubernetes.client.V1LeaseSpec) -> bool:
        """Whether the Lease of another holder may be taken: it has not changed for the
        longer of its own stated duration and ours (plus ``defer_seconds``), on this host's
        monotonic clock. A free Lease may be taken once it was seen free for
        ``defer_seconds``."""
        unchanged = self.clock() - self._observed_at
        if not spec.holder_identity:
            return unchanged >= self.defer_seconds
        duration = max(float(spec.lease_duration_seconds or 0), self.timings.lease_seconds)
        return unchanged > duration + self.defer_seconds

    def _create(self, now: datetime, timeout: float) -> str:
        lease = kubernetes.client.V1Lease(
            metadata=kubernetes.client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=kubernetes.client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=max(1, round(self.timings.lease_seconds)),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            written = self.api.create_namespaced_lease(
                self.namespace, lease, _request_timeout=timeout
            )
        except ApiException as error:
            if error.status == 409:
                return "another candidate"
            raise
        self._observe_own(written)
        return self.identity

    def _observe_own(self, lease: kubernetes.client.V1Lease) -> None:
        spec = lease.spec or kubernetes.client.V1LeaseSpec()
        metadata = lease.metadata or kubernetes.client.V1ObjectMeta()
        self._observed = _Record(
            spec.holder_identity or "", spec.renew_time, str(metadata.resource_version or "")
        )
        self._observed_at = self.clock()

    async def _release(self) -> None:
        """Give the Lease up (a clean shutdown): the next candidate need not wait."""
        try:
            await asyncio.wait_for(
                self._in_thread(self._release_blocking, self.timings.request_seconds),
                self.timings.request_seconds * 2 + 0.5,
            )
        except Exception as error:
            log.warning("leader election: could not release the lease: %s", brief(error))

    def _release_blocking(self, timeout: float) -> None:
        lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout)
        if lease.spec is None or lease.spec.holder_identity != self.identity:
            return
        lease.spec.holder_identity = None
        lease.spec.lease_duration_seconds = 1
        self.api.replace_namespaced_lease(
            self.name, self.namespace, lease, _request_timeout=timeout
        )
        log.info("leader election: released lease %s/%s", self.namespace, self.name)


def brief(error: BaseException) -> str:
    """One line for a failed call: no traceback, no response body."""
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:200] if text else type(error).__name__
