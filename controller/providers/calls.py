"""How every cloud call is made: off the event loop, bounded, judged, retried sparingly.

One :class:`CloudCalls` per CloudProvider runs the SDKs' blocking calls in worker threads
(at most ``max_concurrency`` at a time per region), classifies each outcome, and passes
every call through the region's :class:`RegionGate`:

* the gate keeps the region's recent calls and judges its API plane with the pure
  :func:`controller.core.apiplane.assess`;
* a retry needs a token from the region's **retry budget** (a token bucket); the bucket
  shrinks to a quarter when the API plane is Degraded and to nothing when it is Impaired,
  so Lifeboat never joins the thundering herd that deepens a cascade;
* once the region is **Impaired**, only API-plane probes get through: every other call —
  above all every mutating one — is refused before it leaves the process
  (:class:`RegionImpaired`), which is what static stability asks of a failover.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from controller.api.models import ApiPlanePolicy, CloudProviderSpec, EndpointOverride, RetryBudget
from controller.core.apiplane import (
    ApiPlaneHealth,
    ApiPlaneState,
    ApiPlaneThresholds,
    CallRecord,
    assess,
)
from controller.providers.outcomes import Classified
from controller.providers.retry import DEFAULT_POLICY, RetryPolicy, with_retries

T = TypeVar("T")
log = logging.getLogger(__name__)

READ_PREFIXES = ("Describe", "List", "Get", "Head", "Lookup", "Search", "Check")
TRANSFER_OPERATIONS = frozenset({"GetObject", "PutObject", "UploadPart"})
"""Calls that carry an object's bytes: their latency is left out of the API plane's."""

# Judging a region costs time linear in the calls in its window: with few calls every call
# is judged at once; with many (replication copying thousands of objects) at most every
# JUDGE_INTERVAL seconds, so a verdict lags a busy region by a quarter of a second at most
# instead of each call paying for the whole window.
EAGER_JUDGE_CALLS = 256
JUDGE_INTERVAL = 0.25

# How much of the retry budget is usable in each API-plane state.
BUDGET_SCALE = {
    ApiPlaneState.UNKNOWN: 1.0,
    ApiPlaneState.HEALTHY: 1.0,
    ApiPlaneState.DEGRADED: 0.25,
    ApiPlaneState.IMPAIRED: 0.0,
}


class RegionImpaired(RuntimeError):
    """The call was not sent: the region's API plane is Impaired (static stability)."""

    def __init__(self, provider: str, region: str, why: str) -> None:
        super().__init__(
            f"{provider} {region}: API plane impaired ({why}); only probes are sent there"
        )
        self.provider = provider
        self.region = region


@dataclass
class TokenBucket:
    """A region's retry budget at work: ``capacity`` tokens, ``refill_per_second``; one
    token per retry (the CloudProvider's ``apiPlane.retryBudget`` sets both)."""

    capacity: float
    refill_per_second: float
    scale: float = 1.0
    tokens: float = field(init=False)
    stamp: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.capacity

    @classmethod
    def of(cls, budget: RetryBudget | None = None) -> TokenBucket:
        """A full bucket of ``budget``'s size (default: the API's default budget)."""
        budget = budget or RetryBudget()
        return cls(float(budget.tokens), budget.refill_per_minute / 60)

    def level(self, now: float) -> float:
        """Tokens available at ``now`` (after refilling)."""
        limit = self.capacity * self.scale
        self.tokens = min(limit, self.tokens + (now - self.stamp) * self.refill_per_second)
        self.stamp = now
        return self.tokens

    def take(self, now: float) -> bool:
        if self.level(now) >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class RegionGate:
    """One region's API-plane verdict, retry budget and admission rule."""

    provider: str
    region: str
    thresholds: ApiPlaneThresholds = field(default_factory=ApiPlaneThresholds.of)
    budget: TokenBucket = field(default_factory=TokenBucket.of)
    clock: Callable[[], float] = time.time
    health: ApiPlaneHealth = field(default_factory=ApiPlaneHealth)
    _calls: deque[CallRecord] = field(default_factory=lambda: deque(maxlen=10_000))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _judged_at: float = float("-inf")
    refused: int = 0

    def admit(self, *, probe: bool) -> None:
        """Raise :class:`RegionImpaired` for anything but a probe to an Impaired region."""
        if self.health.state is ApiPlaneState.IMPAIRED and not probe:
            self.refused += 1
            raise RegionImpaired(self.provider, self.region, self.health.reason)

    def record(self, record: CallRecord) -> ApiPlaneHealth:
        """Add a call's outcome and judge the region again."""
        with self._lock:
            self._calls.append(record)
            busy = len(self._calls) > EAGER_JUDGE_CALLS
            if busy and self.clock() - self._judged_at < JUDGE_INTERVAL:
                return self.health
            return self.judge()

    def judge(self) -> ApiPlaneHealth:
        """The verdict at the current time (also when no call was made for a while)."""
        now = self.clock()
        self._judged_at = now
        cutoff = now - self.thresholds.window
        while self._calls and self._calls[0].at < cutoff:
            self._calls.popleft()
        before = self.health.state
        self.health = assess(self.health, self._calls, self.thresholds, now)
        self.budget.scale = BUDGET_SCALE[self.health.state]
        if self.health.state is not before:
            worse = self.health.state in (ApiPlaneState.DEGRADED, ApiPlaneState.IMPAIRED)
            log.log(
                logging.WARNING if worse else logging.INFO,
                "%s %s API plane %s -> %s: %s",
                self.provider,
                self.region,
                before,
                self.health.state,
                self.health.reason,
            )
        return self.health

    def may_retry(self) -> bool:
        return self.budget.take(time.monotonic())


OutcomeHook = Callable[[str, str, str, Classified, float], None]
"""Called after every call: (region, service, operation, outcome, latency seconds)."""


class CloudCalls:
    """Every call of one CloudProvider goes through here."""

    def __init__(
        self,
        provider: str,
        classify: Callable[[BaseException | None], Classified],
        *,
        api_plane: ApiPlanePolicy | None = None,
        max_concurrency: int = 4,
        retry_policy: RetryPolicy = DEFAULT_POLICY,
        on_outcome: OutcomeHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self._classify = classify
        api_plane = api_plane or ApiPlanePolicy()
        self._thresholds = ApiPlaneThresholds.of(api_plane)
        self._budget = api_plane.retry_budget
        self._max_concurrency = max_concurrency
        self._policy = retry_policy
        self._on_outcome = on_outcome
        self._clock = clock
        self._gates: dict[str, RegionGate] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._executors_lock = threading.Lock()

    @classmethod
    def from_spec(
        cls,
        provider: str,
        spec: CloudProviderSpec,
        classify: Callable[[BaseException | None], Classified],
        *,
        max_concurrency: int = 4,
        retry_policy: RetryPolicy = DEFAULT_POLICY,
        on_outcome: OutcomeHook | None = None,
    ) -> CloudCalls:
        """The calls of a CloudProvider, judged and budgeted as its ``apiPlane`` says."""
        return cls(
            provider,
            classify,
            api_plane=spec.api_plane,
            max_concurrency=max_concurrency,
            retry_policy=retry_policy,
            on_outcome=on_outcome,
        )

    def executor(self, region: str) -> ThreadPoolExecutor:
        """The region's worker threads: its SDK calls and the body reads of its streams.

        Each region has its own (``max_concurrency`` calls plus as many streams), so that
        neither the event loop's small default pool nor a slow region limits the others.
        """
        with self._executors_lock:
            if region not in self._executors:
                self._executors[region] = ThreadPoolExecutor(
                    max_workers=2 * self._max_concurrency,
                    thread_name_prefix=f"{self.provider}-{region}",
                )
            return self._executors[region]

    async def blocking(self, region: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the region's threads, outside the gate (a read of a body already
        being received, say: not a call of its own)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor(region), fn)

    def close(self) -> None:
        """Let the worker threads go (calls under way finish on their own)."""
        with self._executors_lock:
            for pool in self._executors.values():
                pool.shutdown(wait=False, cancel_futures=True)
            self._executors.clear()

    def gate(self, region: str) -> RegionGate:
        if region not in self._gates:
            self._gates[region] = RegionGate(
                self.provider,
                region,
                self._thresholds,
                TokenBucket.of(self._budget),
                self._clock,
            )
        return self._gates[region]

    @property
    def gates(self) -> dict[str, RegionGate]:
        return dict(self._gates)

    async def call(
        self,
        region: str,
        service: str,
        operation: str,
        fn: Callable[[], T],
        *,
        mutating: bool | None = None,
        probe: bool = False,
    ) -> T:
        """Run the blocking SDK call ``fn`` (one ``operation`` of ``service``) in ``region``.

        ``mutating`` defaults to "the operation's name does not start like a read".
        """
        gate = self.gate(region)
        changes = mutating if mutating is not None else not operation.startswith(READ_PREFIXES)
        semaphore = self._semaphores.setdefault(region, asyncio.Semaphore(self._max_concurrency))

        async def once() -> T:
            gate.admit(probe=probe)
            async with semaphore:
                started = time.monotonic()
                error: BaseException | None = None
                try:
                    return await self.blocking(region, fn)
                except Exception as raised:
                    error = raised
                    raise
                finally:
                    verdict = self._classify(error)
                    latency = time.monotonic() - started
                    gate.record(
                        CallRecord(
                            self._clock(),
                            verdict.outcome,
                            latency,
                            probe,
                            changes,
                            transfer=operation in TRANSFER_OPERATIONS,
                        )
                    )
                    if self._on_outcome is not None:
                        self._on_outcome(region, service, operation, verdict, latency)

        def retryable(error: BaseException) -> bool:
            if probe or isinstance(error, RegionImpaired):
                return False  # a probe measures the region; it never retries
            return self._classify(error).outcome.transient and gate.may_retry()

        return await with_retries(once, self._policy, retryable)

    def evidence(self, region: str, service: str, operation: str, verdict: Classified) -> None:
        """Count an outcome the cloud reported after the fact (a scaling activity that
        failed for capacity, a server Nova could not place) as evidence about the region's
        API plane, as if a call had ended so now (with no latency of its own)."""
        gate = self.gate(region)
        gate.record(CallRecord(self._clock(), verdict.outcome, 0.0, observed=True))
        if self._on_outcome is not None:
            self._on_outcome(region, service, operation, verdict, 0.0)


def resolve_endpoint(
    overrides: tuple[EndpointOverride, ...], service: str, region: str
) -> str | None:
    """The override URL for ``service`` in ``region``; the most specific entry wins.

    Precedence: service and region, then service alone, then region alone, then an entry
    with neither.
    """

    def rank(o: EndpointOverride) -> int | None:
        if o.service not in (None, service) or o.region not in (None, region):
            return None
        return (0 if o.service else 2) + (0 if o.region else 1)

    ranked = [(r, o.url) for o in overrides if (r := rank(o)) is not None]
    return min(ranked)[1] if ranked else None
